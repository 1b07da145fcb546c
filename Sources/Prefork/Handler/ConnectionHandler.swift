import Logging

/// What a worker does with a connection once it has accepted it and read its first bytes.
///
/// A handler is a value copied into every worker process after `fork()`: allocate per-worker
/// buffers in ``prepare(_:)``, not in `init`, so the supervisor stays small. Everything a handler
/// does runs in one worker; if it throws, that one connection is closed and logged; if it crashes,
/// that one worker dies and the supervisor replaces it — its neighbours never notice.
///
/// ```swift
/// struct Reverse: ConnectionHandler {
///     mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
///         var reply: [UInt8] = []
///         for index in initialData.indices.reversed() { reply.append(initialData[index]) }
///         try connection.write(reply)
///     }
/// }
/// ```
public protocol ConnectionHandler {
    /// Called once in each worker process, after fork and before the first accept. A throw here
    /// is a boot failure: the worker exits and the supervisor stops respawning after a few in a row.
    mutating func prepare(_ context: WorkerContext) throws

    /// Serves one connection.
    ///
    /// - Parameters:
    ///   - connection: the accepted socket; the worker closes it when this returns or throws,
    ///     unless the handler took it over with ``Connection/detach()``.
    ///   - initialData: the first bytes the client sent — between 1 and `initial-bytes` of them,
    ///     from one read (the `EndAccept(out buffer, out bytesTransferred)` pair), in the
    ///     worker's buffer; a span cannot outlive this call (copy what must be kept). Empty only
    ///     when the handler ``answersSilentClients`` and the client sent nothing within
    ///     `initial-timeout`. Behind a listener with `accept-proxy`, the bytes after the PROXY
    ///     header.
    ///   - context: the worker's logger and identity, and whether it is asked to stop.
    mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws

    /// Whether a client that sends nothing within `initial-timeout` is still handed to
    /// ``handle(_:initialData:context:)``, with empty initial data, instead of being closed: for
    /// protocols where the server speaks first (SMTP, FTP, SSH banners). A client that closes
    /// before sending a byte is closed either way.
    var answersSilentClients: Bool { get }

    /// The same question for connections arriving on `listener`: the worker asks it once per
    /// listener when it starts. By default, ``answersSilentClients``; a handler that serves
    /// listeners differently (``ListenerRouter``) answers for each.
    func answersSilentClients(on listener: Listener) -> Bool

    /// Called once after the worker's accept loop has ended — a graceful stop, a reload's
    /// retirement, recycling after `max-connections-per-worker`, a spare worker's retirement —
    /// and before the worker exits; not after an immediate stop. Wind down what outlives a
    /// connection here (connections handed to threads with ``Connection/detach()``).
    ///
    /// While it runs the worker's stage is `draining`: the supervisor kills the worker once
    /// `graceful-timeout` has passed since it began, and never counts it as available.
    mutating func finish(_ context: WorkerContext)

    /// The routes the handler sorts connections into (the forward handler's), each counted in the
    /// status file — connections in total and open now — for `STATUS=`, `preforkd status` and
    /// the metrics. The supervisor names them before it forks the workers; a worker counts
    /// through ``WorkerContext/routeCounter(named:)``.
    var routeNames: [String] { get }
}

extension ConnectionHandler {
    /// No per-worker preparation.
    public mutating func prepare(_ context: WorkerContext) throws {}

    /// Silent clients are closed.
    public var answersSilentClients: Bool { false }

    /// The handler's one answer, whatever the listener.
    public func answersSilentClients(on listener: Listener) -> Bool { answersSilentClients }

    /// Nothing outlives a connection.
    public mutating func finish(_ context: WorkerContext) {}

    /// No routes to count.
    public var routeNames: [String] { [] }
}

/// A worker's identity and logger, handed to its handler.
public struct WorkerContext {
    /// The worker's number, from 1; stable for a slot across respawns.
    public let workerNumber: Int
    /// The configuration generation it serves (1, then +1 per reload).
    public let generation: Int
    /// The worker's logger (metadata: worker number and pid).
    public var logger: Logger

    /// True once the worker has been asked to stop (gracefully or not): finish the current
    /// request, then return instead of waiting for another one.
    @inlinable
    public var isStopping: Bool { StopRequest.current != .none }

    /// True once the worker has been asked to stop at once (SIGQUIT): abandon what is under way.
    /// In ``ConnectionHandler/finish(_:)``, the sign to stop waiting for connections to end.
    @inlinable
    public var isStoppingImmediately: Bool { StopRequest.current == .immediate }

    /// The status file's tally for the route `name` (one of the handler's
    /// ``ConnectionHandler/routeNames``), or nil when there is no status file or no such route.
    /// Look it up once, in ``ConnectionHandler/prepare(_:)``.
    public func routeCounter(named name: String) -> RouteCounter? {
        Scoreboard.ofThisProcess?.routes.counter(named: name)
    }
}
