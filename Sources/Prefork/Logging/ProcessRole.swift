import Glibc

/// Which process of the pool this is; log lines carry it ("supervisor", "worker 3").
public enum ProcessRole: Sendable, Equatable, CustomStringConvertible {
    /// The process that owns the listeners and the workers.
    case supervisor
    /// A worker, by number (from 1).
    case worker(Int)

    /// The role of the running process. Set once after fork, before any log line; the supervisor
    /// is single-threaded and a worker has one thread, so no lock is needed.
    public internal(set) static var current: ProcessRole {
        get { _current }
        set {
            _current = newValue
            _pid = getpid()
        }
    }

    /// This process's pid, cached when the role is set.
    public static var pid: Int32 { _pid }

    public var description: String {
        switch self {
        case .supervisor: "supervisor"
        case .worker(let number): "worker \(number)"
        }
    }
}

nonisolated(unsafe) private var _current = ProcessRole.supervisor
nonisolated(unsafe) private var _pid = getpid()
