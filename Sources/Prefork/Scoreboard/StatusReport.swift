internal import CPreforkShims
import Glibc
import SystemPackage

/// A running supervisor's scoreboard, read from its status file by another process — what
/// `preforkd status` prints. Reading needs no more than read access to that file.
package struct StatusReport: Sendable {
    /// One live worker, as its slot shows it.
    package struct Worker: Sendable, Equatable {
        package let number: Int
        package let pid: Int32
        package let generation: Int
        /// starting, accepting, reading, handling, exiting or paused.
        package let stage: String
        /// Seconds in that stage.
        package let seconds: Double
        /// Connections it handed to its handler.
        package let connections: UInt64
        /// The client of its current connection, while it reads or handles one.
        package let peer: String?
    }

    package let supervisor: Int32
    /// When the supervisor started, in seconds since the epoch.
    package let startedAt: UInt64
    package let generation: Int
    package let listening: [String]
    package let workers: [Worker]
    /// Connections served by workers that have exited.
    package let retiredConnections: UInt64
    /// Connection outcomes (live workers' and exited ones'), worker exits by cause, deadline
    /// kills by stage, reloads by result.
    package let counters: ScoreboardHeader.Counters

    /// Connections served in all, by live workers and exited ones.
    package var totalConnections: UInt64 { retiredConnections + workers.reduce(0) { $0 + $1.connections } }

    /// Reads the status file at `path`.
    ///
    /// - Throws: ``SystemCallError`` when the file cannot be opened or mapped, and one with
    ///   `ESRCH` when it is not a scoreboard or the supervisor that wrote it is gone.
    package static func read(path: String) throws(SystemCallError) -> StatusReport {
        let fd: Int32
        switch valueOrErrno({ open(path, O_RDONLY | O_CLOEXEC) }) {
        case .success(let opened): fd = opened
        case .failure(let errno): throw SystemCallError("open", path, errno: errno)
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemCallError.current("fstat", path) }
        let size = Int(info.st_size)
        guard size >= ScoreboardHeader.size else {
            throw SystemCallError("read", path + " (not a status file)", errno: .noSuchProcess)
        }
        guard let memory = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), memory != MAP_FAILED else {
            throw SystemCallError.current("mmap", path)
        }
        defer { munmap(memory, size) }
        guard let report = StatusReport(memory: UnsafeRawPointer(memory), size: size) else {
            throw SystemCallError("read", path + " (not a status file)", errno: .noSuchProcess)
        }
        // A file left by a supervisor that died without removing it describes nothing.
        guard kill(report.supervisor, 0) == 0 || errno == EPERM else {
            throw SystemCallError(
                "read", path + " (its supervisor, pid \(report.supervisor), is gone)", errno: .noSuchProcess)
        }
        return report
    }

    /// The report of this process's own scoreboard (in a worker: its supervisor's), if any.
    package static func current() -> StatusReport? {
        guard let board = Scoreboard.ofThisProcess else { return nil }
        return StatusReport(memory: board.memory, size: board.size)
    }

    private init(
        supervisor: Int32, startedAt: UInt64, generation: Int, listening: [String], workers: [Worker],
        retiredConnections: UInt64, counters: ScoreboardHeader.Counters
    ) {
        self.supervisor = supervisor
        self.startedAt = startedAt
        self.generation = generation
        self.listening = listening
        self.workers = workers
        self.retiredConnections = retiredConnections
        self.counters = counters
    }

    /// Reads a scoreboard mapped at `memory`; nil when it is not one of this layout.
    private init?(memory: UnsafeRawPointer, size: Int) {
        guard size >= ScoreboardHeader.size, let header = ScoreboardHeader.read(memory),
            size >= ScoreboardHeader.size + header.capacity * MemoryLayout<pf_slot>.stride
        else { return nil }
        let slots = (memory + ScoreboardHeader.size).bindMemory(to: pf_slot.self, capacity: header.capacity)
        let now = Monotonic.now()
        var workers: [Worker] = []
        var counters = header.counters
        for index in 0..<header.capacity {
            let slot = slots + index
            let stage = Scoreboard.Stage(rawValue: pf_slot_load_stage(slot)) ?? .free
            let pid = pf_slot_load_pid(slot)
            guard stage != .free, pid > 0 else { continue }
            let since = pf_slot_load_stage_since(slot)
            let buffer = PeerAddressBuffer.inSlot(UnsafeMutablePointer(mutating: slot))
            let busy = stage == .reading || stage == .handling
            for outcome in Scoreboard.Outcome.allCases {
                counters[outcome: outcome] += pf_slot_load_outcome(slot, outcome.rawValue)
            }
            workers.append(
                Worker(
                    number: index + 1, pid: pid, generation: Int(pf_slot_load_generation(slot)),
                    stage: "\(stage)", seconds: now > since ? Double(now - since) / 1e9 : 0,
                    connections: pf_slot_load_connections(slot),
                    peer: busy ? SocketAddress.describe(buffer.storage, length: buffer.length.pointee) : nil))
        }
        self.init(
            supervisor: header.supervisor, startedAt: header.startedAt, generation: header.generation,
            listening: header.listening, workers: workers, retiredConnections: header.retiredConnections,
            counters: counters)
    }
}
