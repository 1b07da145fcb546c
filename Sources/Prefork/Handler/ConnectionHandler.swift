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
    ///   - connection: the accepted socket; the worker closes it when this returns or throws.
    ///   - initialData: the first bytes the client sent — between 1 and `initial-bytes` of them,
    ///     from one read (the `EndAccept(out buffer, out bytesTransferred)` pair), in the
    ///     worker's buffer; a span cannot outlive this call (copy what must be kept).
    ///   - context: the worker's logger and identity, and whether it is asked to stop.
    mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws
}

extension ConnectionHandler {
    /// No per-worker preparation.
    public mutating func prepare(_ context: WorkerContext) throws {}
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
}
