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
        guard let header = ScoreboardHeader.read(UnsafeRawPointer(memory)),
            size >= ScoreboardHeader.size + header.capacity * MemoryLayout<pf_slot>.stride
        else { throw SystemCallError("read", path + " (not a status file)", errno: .noSuchProcess) }
        // A file left by a supervisor that died without removing it describes nothing.
        guard kill(header.supervisor, 0) == 0 || errno == EPERM else {
            throw SystemCallError(
                "read", path + " (its supervisor, pid \(header.supervisor), is gone)", errno: .noSuchProcess)
        }
        let slots = (memory + ScoreboardHeader.size).bindMemory(to: pf_slot.self, capacity: header.capacity)
        let now = Monotonic.now()
        var workers: [Worker] = []
        for index in 0..<header.capacity {
            let slot = slots + index
            let stage = Scoreboard.Stage(rawValue: pf_slot_load_stage(slot)) ?? .free
            let pid = pf_slot_load_pid(slot)
            guard stage != .free, pid > 0 else { continue }
            let since = pf_slot_load_stage_since(slot)
            let buffer = PeerAddressBuffer.inSlot(UnsafeMutablePointer(mutating: slot))
            let busy = stage == .reading || stage == .handling
            workers.append(
                Worker(
                    number: index + 1, pid: pid, generation: Int(pf_slot_load_generation(slot)),
                    stage: "\(stage)", seconds: now > since ? Double(now - since) / 1e9 : 0,
                    connections: pf_slot_load_connections(slot),
                    peer: busy ? SocketAddress.describe(buffer.storage, length: buffer.length.pointee) : nil))
        }
        return StatusReport(
            supervisor: header.supervisor, startedAt: header.startedAt, generation: header.generation,
            listening: header.listening, workers: workers, retiredConnections: header.retiredConnections)
    }
}
