internal import CPreforkShims
import Glibc
import Logging
import SystemPackage

/// Exit statuses of a worker process, read by the supervisor (as nginx and Apache do).
enum WorkerExitStatus: Int32 {
    /// Stopped when asked.
    case stopped = 0
    /// Could not start serving (the handler's `prepare` threw, set-up failed).
    case bootFailure = 3
    /// Its listener disappeared or accept failed in a way retrying cannot fix.
    case listenerFailure = 4
    /// It served its `max-connections-per-worker` and made way for a fresh process.
    case recycled = 5
    /// It found a condition no worker can get past (``FatalHandlerError``): the service stops.
    case fatal = 6
}

/// One worker process: after fork, it loops on accept + initial read + handler until told to stop.
struct Worker<Handler: ConnectionHandler> {
    var handler: Handler
    let listeners: [Listener]
    let initialBytes: Int
    /// `max-connections-per-worker` (0: no limit).
    let maxConnections: Int
    /// `initial-timeout`, which also bounds reading a PROXY header.
    let initialTimeout: Duration
    /// Per listener: the PROXY header its connections must start with, if any.
    let proxyPolicies: [ProxyProtocolPolicy]
    var context: WorkerContext
    let slot: SlotWriter
    /// Write end of the supervisor's boot pipe: a byte here wakes the supervisor once this worker
    /// is about to accept (the scoreboard says so; the byte only wakes it up).
    let bootPipe: Int32

    /// Runs the worker and exits the process; never returns.
    mutating func run() -> Never {
        let deadSocket = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var wakePipe: [Int32] = [-1, -1]
        if listeners.count > 1 {
            guard pf_pipe2(&wakePipe, O_CLOEXEC | O_NONBLOCK) == 0 else {
                exitWorker(.bootFailure, "pipe2: \(Errno(rawValue: Glibc.errno).text)")
            }
        }
        let listenerFDs = listeners.map(\.fileDescriptor)
        guard deadSocket >= 0,
            pf_worker_install_stop_handler(listenerFDs, Int32(listenerFDs.count), deadSocket, wakePipe[1]) == 0
        else {
            exitWorker(.bootFailure, "installing the stop handler: \(Errno(rawValue: Glibc.errno).text)")
        }
        pf_ignore_sigpipe()
        // The supervisor's signals were blocked for its signalfd; a stop that came meanwhile runs now.
        _ = pf_sigmask(SIG_SETMASK, nil, 0)

        do {
            try handler.prepare(context)
        } catch {
            if let error = error as? any ErrnoCarrying { slot.recordBootFailure(errno: error.errno.rawValue) }
            if error is FatalHandlerError { exitWorker(.fatal, "handler cannot run: \(error)") }
            exitWorker(.bootFailure, "handler failed to start: \(error)")
        }
        let epoll = listeners.count > 1 ? makeEpoll(wakeFD: wakePipe[0]) : -1
        var answersSilentClients: [Bool] = []
        for listener in listeners { answersSilentClients.append(handler.answersSilentClients(on: listener)) }
        let loop = ServeLoop(
            listeners: listeners, epoll: epoll, context: context, slot: slot,
            connectionLimit: Self.connectionLimit(maxConnections),
            buffer: UnsafeMutableRawBufferPointer.allocate(byteCount: initialBytes, alignment: 16),
            peer: PeerAddressBuffer.inSlot(slot.slot),
            answersSilentClients: answersSilentClients, proxyPolicies: proxyPolicies, initialTimeout: initialTimeout)
        // The loop works on its own copy of the handler: a local the compiler sees whole, where a
        // stored property of this generic struct would be reached through its type's metadata.
        var handler = self.handler
        slot.enter(.accepting)
        reportBooted()
        let status = loop.run(&handler)
        // An immediate stop abandons everything; any other end lets the handler wind down what
        // outlives a connection, under the supervisor's graceful-timeout.
        if StopRequest.current != .immediate {
            slot.enter(.draining)
            handler.finish(context)
        }
        slot.enter(.exiting)
        _exit(status.rawValue)
    }

    /// This worker's share of `max-connections-per-worker`: the setting plus up to a quarter more,
    /// drawn per worker, so that workers started together are not all replaced together.
    static func connectionLimit(_ maximum: Int) -> Int {
        guard maximum > 0 else { return .max }
        return maximum + Int.random(in: 0...(maximum / 4))
    }

    /// Wakes the supervisor: this worker's slot now says it is about to park in accept.
    private func reportBooted() {
        var byte: UInt8 = 1
        _ = Glibc.write(bootPipe, &byte, 1)
        close(bootPipe)
    }

    private func makeEpoll(wakeFD: Int32) -> Int32 {
        let epoll = pf_epoll_create()
        guard epoll >= 0, pf_epoll_add(epoll, wakeFD, ServeLoop.wakeTag, 0) == 0 else {
            exitWorker(.bootFailure, "epoll: \(Errno(rawValue: Glibc.errno).text)")
        }
        for (index, listener) in listeners.enumerated() {
            // The listeners are non-blocking in this mode (set by the supervisor).
            guard pf_epoll_add(epoll, listener.fileDescriptor, UInt32(index), 1) == 0 else {
                exitWorker(.bootFailure, "epoll_ctl \(listener.address): \(Errno(rawValue: Glibc.errno).text)")
            }
        }
        return epoll
    }

    private func exitWorker(_ status: WorkerExitStatus, _ message: String) -> Never {
        context.logger.critical("\(message)")
        _exit(status.rawValue)
    }
}

/// An error that knows the errno behind it. When a handler's `prepare` throws one in every
/// worker, the supervisor gives up with that errno in `ERRNO=` (what systemd shows as the
/// service's error), rather than a generic one.
public protocol ErrnoCarrying: Error {
    /// The errno that explains the failure, e.g. `Errno.noMemory`.
    var errno: Errno { get }
}

extension SystemCallError: ErrnoCarrying {}

/// Thrown from a handler's `prepare`, it stops the whole service instead of counting as one
/// worker's boot failure: for a condition no worker can get past (a certificate that is not
/// there, a setting the handler cannot work with). The worker logs it; the supervisor stops the
/// pool, tells systemd `STOPPING=1`, `STATUS=Failed: …` and `ERRNO=` with ``errno``, and exits
/// with status 1 — or, in a reload's new generation, rolls the reload back.
public struct FatalHandlerError: ErrnoCarrying, CustomStringConvertible {
    /// What cannot work, for the log.
    public let reason: String
    /// The errno systemd hears.
    public let errno: Errno

    /// A fatal condition described by `reason`, reported to systemd as `errno`.
    public init(_ reason: String, errno: Errno = .invalidArgument) {
        self.reason = reason
        self.errno = errno
    }

    public var description: String { reason }
}

/// Exponential back-off for accept errors that retrying at once cannot fix (EMFILE, ENOBUFS…):
/// 10 ms doubling to 1 s, with at most one log line every 10 s.
struct Backoff {
    private var delayMs = 10
    private var lastLogNs: UInt64 = 0
    private var suppressed = 0

    mutating func reset() { delayMs = 10 }

    mutating func wait(logging error: SystemCallError?, to logger: Logger) {
        let now = Monotonic.now()
        if let error, lastLogNs == 0 || now - lastLogNs >= 10_000_000_000 {
            let extra = suppressed > 0 ? " (\(suppressed) more since the last report)" : ""
            logger.error("\(error); backing off \(delayMs) ms\(extra)")
            lastLogNs = now
            suppressed = 0
        } else if error != nil {
            suppressed += 1
        }
        var pause = timespec(tv_sec: delayMs / 1000, tv_nsec: (delayMs % 1000) * 1_000_000)
        _ = nanosleep(&pause, nil)  // a stop signal cuts it short
        delayMs = min(delayMs * 2, 1000)
    }
}
