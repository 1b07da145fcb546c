internal import CPreforkShims
import Glibc
import SystemPackage

/// Shared memory with one slot per worker: what it is doing, since when, and how many
/// connections it has served — the one truth about a worker's stage.
///
/// Mapped `MAP_SHARED | MAP_ANONYMOUS` by the supervisor before the first fork, so every worker
/// writes its own slot and the supervisor reads them all without a syscall — for readiness,
/// STATUS= and deadlines (as Apache's prefork scoreboard). A slot is reserved before the fork
/// and freed after the reap, so a slot never speaks for two workers.
struct Scoreboard {
    /// What a worker is doing.
    enum Stage: UInt32, Sendable, Comparable {
        case free = 0
        case starting, accepting, reading, handling, exiting
        /// Not accepting for a moment: out of file descriptors or kernel memory (nginx's pause).
        case paused
        /// Done accepting for good: the handler's `finish` winds down what outlives a connection,
        /// under `graceful-timeout`. Never available for a connection.
        case draining

        static func < (lhs: Stage, rhs: Stage) -> Bool { lhs.rawValue < rhs.rawValue }

        /// The stage as `preforkd status` and the logs name it. Spelt out rather than
        /// interpolated: describing an enum case goes through runtime reflection, which costs a
        /// start-up that finds a stale status file a fifth of a millisecond.
        var name: String {
            switch self {
            case .free: "free"
            case .starting: "starting"
            case .accepting: "accepting"
            case .reading: "reading"
            case .handling: "handling"
            case .exiting: "exiting"
            case .paused: "paused"
            case .draining: "draining"
            }
        }
    }

    /// How a connection ended when it did not end well, counted per slot.
    enum Outcome: UInt32, CaseIterable, Sendable {
        case initialReadTimeout = 0
        case closedBeforeSending = 1
        case reset = 2
        case handlerError = 3

        /// The label in the metrics (`outcome="initial_read_timeout"`).
        var label: String {
            switch self {
            case .initialReadTimeout: "initial_read_timeout"
            case .closedBeforeSending: "closed_before_sending"
            case .reset: "reset"
            case .handlerError: "handler_error"
            }
        }
    }

    /// Counts across the whole pool.
    struct Summary: Sendable, Equatable {
        /// Workers between fork and their first accept.
        var starting = 0
        /// Workers parked in accept: ready for a connection now.
        var idle = 0
        /// Workers reading initial data or running their handler.
        var busy = 0
        /// Workers pausing their accepts: out of file descriptors or memory.
        var paused = 0
        /// Workers done accepting, winding down in their handler's `finish`.
        var draining = 0
        /// Connections handed to handlers by live workers.
        var connections: UInt64 = 0
    }

    private let base: UnsafeMutablePointer<pf_slot>
    /// The header page before the slots: who wrote the board and what it serves (see
    /// ``ScoreboardHeader``), for `preforkd status` in another process.
    private let header: UnsafeMutableRawPointer
    /// The number of slots (the most workers that can exist at once, old generations included).
    let capacity: Int
    /// Per route, connections routed there in total and open now.
    let routes: RouteTallies
    /// The file it lives in, when it has one.
    let file: String?
    /// The status file or memfd the board is mapped from, kept open (close-on-exec) by the
    /// supervisor for an in-place upgrade; -1 for a board mapped only for reading.
    let descriptor: Int32
    /// Its header and slots, for a reader in this process (a worker's metrics handler).
    let memory: UnsafeRawPointer
    let size: Int

    /// The supervisor's board, in the supervisor and (inherited across fork) in every worker.
    nonisolated(unsafe) static var ofThisProcess: Scoreboard?

    /// Maps a zeroed scoreboard with `capacity` slots: in anonymous shared memory, or, with
    /// `file`, in that file (created mode 0644; one left by a supervisor that is gone is
    /// replaced, one a running supervisor uses is refused), so that another process can read it.
    /// Every worker inherits the mapping across fork either way.
    init(capacity: Int, file: String? = nil) throws(SystemCallError) {
        let bytes = Self.size(capacity: capacity)
        // Never an existing file: another supervisor's workers may have it mapped, and
        // truncating it under them would crash them. A stale one (its writer gone) is replaced;
        // only then is an existing file read. Without a file, a memfd: anonymous shared memory
        // that an in-place upgrade can still map after exec, through its descriptor.
        let fd: Int32
        if let file {
            fd = try Self.createExclusively(file)
        } else {
            fd = try valueOrErrno { pf_memfd_create("preforkd-scoreboard") }.get("memfd_create", "scoreboard")
        }
        if case .failure(let errno) = nothingOrErrno({ ftruncate(fd, off_t(bytes)) }) {
            close(fd)
            throw SystemCallError("ftruncate", file ?? "scoreboard", errno: errno)
        }
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let memory, memory != MAP_FAILED else {
            let error = SystemCallError.current("mmap", file ?? "scoreboard")
            close(fd)
            throw error
        }
        self.init(mappedAt: memory, size: bytes, capacity: capacity, file: file, descriptor: fd)
        ScoreboardHeader.writeIdentity(to: header, supervisor: getpid(), capacity: capacity)
    }

    /// The board an earlier image of this same supervisor process handed over across an in-place
    /// upgrade: `descriptor` (the status file or the memfd) is mapped again, slots and header as
    /// they are, so that the workers it lists can be adopted. Throws when it is no scoreboard of
    /// this layout (an upgrade across layout versions).
    init(adopting descriptor: Int32, file: String?) throws(SystemCallError) {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw SystemCallError.current("fstat", "scoreboard") }
        let bytes = Int(info.st_size)
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let memory, memory != MAP_FAILED else { throw SystemCallError.current("mmap", file ?? "scoreboard") }
        guard bytes >= ScoreboardHeader.size, let contents = ScoreboardHeader.read(memory),
            bytes >= Self.size(capacity: contents.capacity)
        else {
            munmap(memory, bytes)
            throw SystemCallError("mmap", "scoreboard of another layout version", errno: .invalidArgument)
        }
        _ = pf_set_cloexec(descriptor, 1)
        self.init(mappedAt: memory, size: bytes, capacity: contents.capacity, file: file, descriptor: descriptor)
    }

    /// What the header says now (counters, generation), for an adopting image.
    var headerContents: ScoreboardHeader.Contents? { ScoreboardHeader.read(header) }

    /// Creates `file` for a new board: O_EXCL, so an existing one is looked at first, and
    /// replaced only when the supervisor that wrote it is gone.
    private static func createExclusively(_ file: String) throws(SystemCallError) -> Int32 {
        func create() -> Result<Int32, Errno> {
            valueOrErrno { open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        }
        var created = create()
        if case .failure(.fileExists) = created {
            if let existing = try? StatusReport.read(path: file) {
                throw SystemCallError("open", file + " (preforkd \(existing.supervisor) uses it)", errno: .fileExists)
            }
            unlink(file)
            created = create()
        }
        return try created.get("open", file)
    }

    /// A board someone else maps at `memory` (`size` bytes), for reading only: `preforkd
    /// status` and the metrics handler read slots through the same accessors the supervisor uses.
    /// Nil when it is not a scoreboard of this layout.
    init?(reading memory: UnsafeRawPointer, size: Int) {
        guard size >= ScoreboardHeader.size, let contents = ScoreboardHeader.read(memory),
            size >= Self.size(capacity: contents.capacity)
        else { return nil }
        self.init(
            mappedAt: UnsafeMutableRawPointer(mutating: memory), size: size, capacity: contents.capacity, file: nil,
            descriptor: -1)
    }

    /// The bytes of a board with `capacity` slots: the header, the slots, the route tallies.
    static func size(capacity: Int) -> Int {
        ScoreboardHeader.size + capacity * MemoryLayout<pf_slot>.stride + RouteTallies.size
    }

    private init(
        mappedAt memory: UnsafeMutableRawPointer, size: Int, capacity: Int, file: String?, descriptor: Int32
    ) {
        self.descriptor = descriptor
        header = memory
        base = (memory + ScoreboardHeader.size).bindMemory(to: pf_slot.self, capacity: capacity)
        routes = RouteTallies(at: memory + ScoreboardHeader.size + capacity * MemoryLayout<pf_slot>.stride)
        self.capacity = capacity
        self.file = file
        self.memory = UnsafeRawPointer(memory)
        self.size = size
    }

    /// The pid, generation and connections count the worker in `index` recorded.
    func pid(_ index: Int) -> Int32 { pf_slot_load_pid(slot(index)) }
    func generation(_ index: Int) -> Int { Int(pf_slot_load_generation(slot(index))) }
    func connections(_ index: Int) -> UInt64 { pf_slot_load_connections(slot(index)) }

    /// Publishes what `preforkd status` shows besides the slots.
    func publish(
        generation: Int, retiredConnections: UInt64, counters: ScoreboardHeader.Counters, listening: [String]
    ) {
        ScoreboardHeader.writeState(
            to: header, generation: generation, retiredConnections: retiredConnections, counters: counters,
            listening: listening)
    }

    /// The outcome counts of the worker in `index`.
    func outcomes(_ index: Int) -> [UInt64] {
        Outcome.allCases.map { pf_slot_load_outcome(slot(index), $0.rawValue) }
    }

    /// The slot at `index` (0-based).
    func slot(_ index: Int) -> UnsafeMutablePointer<pf_slot> {
        precondition(index >= 0 && index < capacity, "scoreboard slot \(index) out of range")
        return base + index
    }

    /// Every worker the board lists (pid recorded, slot not free): what an upgraded image adopts.
    func liveWorkers() -> [PoolPolicy.Adoptee] {
        (0..<capacity).compactMap { index in
            let pid = self.pid(index)
            let stage = self.stage(index)
            guard pid > 0, stage != .free else { return nil }
            return PoolPolicy.Adoptee(
                pid: pid, slot: index, generation: generation(index), booted: stage >= .accepting)
        }
    }

    /// A slot no worker holds, if any.
    func firstFreeSlot() -> Int? {
        (0..<capacity).first { stage($0) == .free }
    }

    /// Takes a slot for a worker about to be forked (supervisor side, before `fork`): the child
    /// may write its stage at once, and nothing the parent does after the fork overwrites it.
    func reserve(_ index: Int, generation: Int) {
        let slot = self.slot(index)
        slot.pointee = pf_slot()
        pf_slot_store_generation(slot, UInt64(generation))
        pf_slot_store_stage(slot, Stage.starting.rawValue, Monotonic.now())
    }

    /// Records the forked child's pid in its reserved slot (the child stores the same value).
    func assign(_ index: Int, pid: Int32) {
        pf_slot_store_pid(slot(index), pid)
    }

    /// Whether the worker `pid` in `index` has reached its first accept.
    func hasBooted(_ index: Int, pid: Int32) -> Bool {
        let slot = self.slot(index)
        return pf_slot_load_pid(slot) == pid && stage(index) >= .accepting
    }

    /// The stage of the worker `pid` in `index` and when it entered it; `.free` when the slot is
    /// not (or no longer) that worker's.
    func stage(_ index: Int, pid: Int32) -> (stage: Stage, since: UInt64) {
        let slot = self.slot(index)
        guard pf_slot_load_pid(slot) == pid else { return (.free, 0) }
        return (stage(index), pf_slot_load_stage_since(slot))
    }

    /// The client of the worker in `index`'s current connection, as accept4 recorded it.
    func peer(_ index: Int) -> String {
        let buffer = PeerAddressBuffer.inSlot(slot(index))
        return SocketAddress.describe(buffer.storage, length: buffer.length.pointee)
    }

    /// The errno a worker recorded when it gave up booting (0: none).
    func bootErrno(_ index: Int) -> Int32 { pf_slot_load_boot_errno(slot(index)) }

    /// Frees a slot after its worker was reaped; returns the connections it had served.
    func release(_ index: Int) -> (connections: UInt64, outcomes: [UInt64]) {
        let slot = self.slot(index)
        let served = (pf_slot_load_connections(slot), outcomes(index))
        slot.pointee = pf_slot()
        return served
    }

    /// The stage of the worker in `index`.
    func stage(_ index: Int) -> Stage {
        Stage(rawValue: pf_slot_load_stage(slot(index))) ?? .free
    }

    /// Counts over the given slots.
    func summary<Slots: Sequence<Int>>(of indices: Slots) -> Summary {
        var summary = Summary()
        for index in indices {
            let slot = self.slot(index)
            summary.connections += pf_slot_load_connections(slot)
            switch Stage(rawValue: pf_slot_load_stage(slot)) ?? .free {
            case .starting: summary.starting += 1
            case .accepting: summary.idle += 1
            case .reading, .handling: summary.busy += 1
            case .paused: summary.paused += 1
            case .draining: summary.draining += 1
            case .free, .exiting: break
            }
        }
        return summary
    }
}

/// A worker's own view of its slot: cheap stage updates on the hot path. Stages are stamped with
/// CLOCK_MONOTONIC_COARSE (a tick's resolution, never ahead of CLOCK_MONOTONIC), which is all a
/// supervisor deadline needs.
struct SlotWriter {
    let slot: UnsafeMutablePointer<pf_slot>

    @inline(__always)
    func enter(_ stage: Scoreboard.Stage) {
        pf_slot_enter_stage(slot, stage.rawValue)
    }

    /// Enters the handling stage and counts the connection, in one call.
    @inline(__always)
    func enterHandling() { pf_slot_enter_handling(slot) }

    @inline(__always)
    func countConnection() { pf_slot_add_connection(slot) }

    /// Counts a connection that ended before its handler, or with the handler's error.
    func count(_ outcome: Scoreboard.Outcome) { pf_slot_count_outcome(slot, outcome.rawValue) }

    /// Records why this worker could not boot, just before it exits.
    func recordBootFailure(errno: Int32) { pf_slot_store_boot_errno(slot, errno) }
}
