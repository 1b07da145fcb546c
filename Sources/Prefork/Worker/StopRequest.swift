internal import CPreforkShims

/// What a worker has been asked to do by a stop signal, as its async-signal-safe handler recorded
/// it (SIGTERM/SIGINT: graceful; SIGQUIT: immediate).
public enum StopRequest: Int32, Sendable, Comparable {
    /// Keep serving.
    case none = 0
    /// Finish the current connection, then exit: no new connection is accepted.
    case graceful = 1
    /// Exit now: the current connection is abandoned.
    case immediate = 2

    /// The request in force in this process. Reading it costs a load and a call.
    @inlinable
    public static var current: StopRequest { StopRequest(rawValue: _workerStopRequest()) ?? .immediate }

    public static func < (lhs: StopRequest, rhs: StopRequest) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The C handler's flag, behind a Swift symbol that inlinable code may call (the C module is an
/// implementation detail of this one).
@usableFromInline
func _workerStopRequest() -> Int32 { pf_worker_stop_requested() }
