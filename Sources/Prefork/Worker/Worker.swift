import CPreforkShims
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
}

/// One worker process: after fork, it loops on accept + initial read + handler until told to stop.
struct Worker<Handler: ConnectionHandler> {
    var handler: Handler
    let listeners: [Listener]
    let initialBytes: Int
    var context: WorkerContext
    let slot: SlotWriter
    /// Write end of the supervisor's boot pipe: the worker reports here once it is about to accept.
    let bootPipe: Int32
    let slotIndex: Int

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
        guard deadSocket >= 0, pf_worker_install_stop_handler(listenerFDs, Int32(listenerFDs.count), deadSocket, wakePipe[1]) == 0
        else {
            exitWorker(.bootFailure, "installing the stop handler: \(Errno(rawValue: Glibc.errno).text)")
        }
        pf_ignore_sigpipe()
        _ = pf_sigmask(SIG_SETMASK, nil, 0)  // the supervisor blocks its signals for signalfd

        do {
            try handler.prepare(context)
        } catch {
            exitWorker(.bootFailure, "handler failed to start: \(error)")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: initialBytes, alignment: 16)
        reportBooted()
        let status: WorkerExitStatus
        if listeners.count == 1 {
            status = serve(buffer) { () throws(AcceptError) in (try acceptBlocking(on: listenerFDs[0]), 0) }
        } else {
            let epoll = makeEpoll(wakeFD: wakePipe[0])
            let all = listeners
            status = serve(buffer) { () throws(AcceptError) in try Self.acceptFromAny(all, epoll: epoll) }
        }
        slot.enter(.exiting)
        _exit(status.rawValue)
    }

    /// The accept loop. `accept` returns a connected socket and the index of its listener.
    private mutating func serve(
        _ buffer: UnsafeMutableRawBufferPointer, accept: () throws(AcceptError) -> (Int32, Int)
    ) -> WorkerExitStatus {
        var backoff = Backoff()
        while pf_worker_stop_requested() == 0 {
            slot.enter(.accepting)
            let fd: Int32
            let listenerIndex: Int
            do {
                (fd, listenerIndex) = try accept()
                backoff.reset()
            } catch .stopRequested {
                break
            } catch .resourcesExhausted(let error) {
                // Out of fds or memory: the connection stays queued; try again after a pause.
                backoff.wait(logging: error, to: context.logger)
                continue
            } catch .listenerClosed {
                context.logger.error("Listener closed; worker exits")
                return .listenerFailure
            } catch {
                context.logger.error("\(error)")
                backoff.wait(logging: nil, to: context.logger)
                continue
            }
            slot.enter(.reading)
            serveConnection(fd, listener: listeners[listenerIndex], buffer: buffer)
            close(fd)
        }
        return .stopped
    }

    @inline(__always)
    private mutating func serveConnection(_ fd: Int32, listener: Listener, buffer: UnsafeMutableRawBufferPointer) {
        let count: Int
        do {
            count = try readInitialData(from: fd, into: buffer)
        } catch {
            logInitialReadFailure(error, fd: fd)
            return
        }
        slot.enter(.handling)
        slot.countConnection()
        context.logger.debug("Size of data transferred is \(count)", metadata: ["initial.bytes": "\(count)", "listener": "\(listener.name)"])
        let connection = Connection(fileDescriptor: fd, listener: listener)
        do {
            try handler.handle(connection, initialData: UnsafeRawBufferPointer(rebasing: buffer[..<count]), context: context)
        } catch {
            let peer = connection.peer
            context.logger.warning("Connection from \(peer) failed: \(error)", metadata: ["peer": "\(peer)", "listener": "\(listener.name)"])
        }
    }

    private func logInitialReadFailure(_ error: AcceptError, fd: Int32) {
        let level: Logger.Level
        switch error {
        case .peerClosedBeforeSending, .stopRequested: level = .debug
        default: level = .info
        }
        guard context.logger.logLevel <= level else { return }
        let peer = SocketAddress.peer(of: fd)
        context.logger.log(level: level, "Connection from \(peer) closed: \(error)", metadata: ["peer": "\(peer)"])
    }

    /// Tells the supervisor this worker is about to park in accept (its slot index, 4 bytes).
    private func reportBooted() {
        var index = UInt32(slotIndex)
        _ = withUnsafeBytes(of: &index) { Glibc.write(bootPipe, $0.baseAddress, 4) }
        close(bootPipe)
    }

    private func makeEpoll(wakeFD: Int32) -> Int32 {
        let epoll = pf_epoll_create()
        guard epoll >= 0, pf_epoll_add(epoll, wakeFD, -1, 0) == 0 else {
            exitWorker(.bootFailure, "epoll: \(Errno(rawValue: Glibc.errno).text)")
        }
        for (index, listener) in listeners.enumerated() {
            // The listeners are non-blocking in this mode (set by the supervisor).
            guard pf_epoll_add(epoll, listener.fileDescriptor, Int32(index), 1) == 0 else {
                exitWorker(.bootFailure, "epoll_ctl \(listener.address): \(Errno(rawValue: Glibc.errno).text)")
            }
        }
        return epoll
    }

    /// Waits in epoll for any listener, then accepts from it.
    private static func acceptFromAny(_ listeners: [Listener], epoll: Int32) throws(AcceptError) -> (Int32, Int) {
        while true {
            let tag = pf_epoll_wait_one(epoll, -1)
            if tag < 0 {
                if Glibc.errno == EINTR || Glibc.errno == EAGAIN {
                    if pf_worker_stop_requested() != 0 { throw .stopRequested }
                    continue
                }
                throw .failed(SystemCallError.current("epoll_wait"))
            }
            if pf_worker_stop_requested() != 0 { throw .stopRequested }
            guard tag < listeners.count else { continue }  // the wake pipe
            do {
                return (try acceptConnection(on: listeners[Int(tag)].fileDescriptor), Int(tag))
            } catch .wouldBlock {
                continue  // another worker took it
            }
        }
    }

    private func exitWorker(_ status: WorkerExitStatus, _ message: String) -> Never {
        context.logger.critical("\(message)")
        _exit(status.rawValue)
    }
}

/// Exponential back-off for accept errors that retrying at once cannot fix (EMFILE, ENOBUFS…):
/// 10 ms doubling to 1 s, with at most one log line every 10 s.
private struct Backoff {
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
