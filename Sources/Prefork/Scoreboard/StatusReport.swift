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
        /// starting, accepting, reading, handling, exiting, paused or draining.
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
    /// Per route a handler counts (the forward handler's), connections in total and open now.
    package let routes: [RouteCount]

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
        guard let header = ScoreboardHeader.read(UnsafeRawPointer(memory)) else {
            throw SystemCallError("read", path + " (not a status file)", errno: .noSuchProcess)
        }
        // A file left by a supervisor that died without removing it describes nothing (checked
        // first: a start-up that finds such a file need not read its slots).
        guard kill(header.supervisor, 0) == 0 || errno == EPERM else {
            throw SystemCallError(
                "read", path + " (its supervisor, pid \(header.supervisor), is gone)", errno: .noSuchProcess)
        }
        guard let report = parse(memory: UnsafeRawPointer(memory), size: size) else {
            throw SystemCallError("read", path + " (not a status file)", errno: .noSuchProcess)
        }
        return report
    }

    /// The report of this process's own scoreboard (in a worker: its supervisor's), if any.
    package static func current() -> StatusReport? {
        guard let board = Scoreboard.ofThisProcess else { return nil }
        return parse(memory: board.memory, size: board.size)
    }

    /// Reads a scoreboard mapped at `memory`; nil when it is not one of this layout.
    private static func parse(memory: UnsafeRawPointer, size: Int) -> StatusReport? {
        guard let board = Scoreboard(reading: memory, size: size), let header = ScoreboardHeader.read(memory) else {
            return nil
        }
        let now = Monotonic.now()
        var workers: [Worker] = []
        var counters = header.counters
        for index in 0..<board.capacity {
            let pid = board.pid(index)
            let (stage, since) = board.stage(index, pid: pid)
            guard stage != .free, pid > 0 else { continue }
            for (outcome, count) in board.outcomes(index).enumerated() { counters.failedConnections[outcome] += count }
            workers.append(
                Worker(
                    number: index + 1, pid: pid, generation: board.generation(index), stage: stage.name,
                    seconds: now > since ? Double(now - since) / 1e9 : 0, connections: board.connections(index),
                    peer: stage == .reading || stage == .handling ? board.peer(index) : nil))
        }
        return StatusReport(
            supervisor: header.supervisor, startedAt: header.startedAt, generation: header.generation,
            listening: header.listening, workers: workers, retiredConnections: header.retiredConnections,
            counters: counters, routes: board.routes.entries)
    }
}
