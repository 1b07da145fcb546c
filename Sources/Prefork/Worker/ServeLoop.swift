internal import CPreforkShims
import Glibc
import Logging

/// A worker's accept loop, once it is set up: accept, read the initial data, run the handler,
/// close — until the worker is asked to stop.
///
/// Everything the loop touches per connection is a constant of this non-generic struct or a
/// local, so the compiler reaches it directly: no copies of the logger or the listener per
/// connection, no reads through the handler type's metadata, no dynamic exclusivity checks.
struct ServeLoop {
    /// The epoll tag of the stop handler's wake pipe; listeners are tagged with their index.
    static let wakeTag = UInt32.max
    /// How often a worker waiting in epoll looks again without an event (see ``acceptFromAny()``).
    static let epollRecheckMs: Int32 = 100

    let listeners: [Listener]
    /// The epoll set over all listeners when there are several; -1 with just one.
    let epoll: Int32
    let context: WorkerContext
    let slot: SlotWriter
    /// Connections after which this worker exits to be replaced by a fresh one (Int.max: never).
    let connectionLimit: Int
    /// Per listener: how its connections start (deferred accept, silent clients).
    let modes: [ListenerMode]
    /// The initial read's buffer: one per worker, reused by every connection.
    let buffer: UnsafeMutableRawBufferPointer
    /// Where accept4 leaves the client's address.
    let peer: PeerAddressBuffer
    /// Per listener: the PROXY header its connections must start with, if any.
    let proxyPolicies: [ProxyProtocolPolicy]
    /// Reads PROXY headers; nil when no listener requires one.
    let proxyIntake: ProxyHeaderIntake?
    /// Keeps the lines clients can cause (initial reads that time out or are reset) to a few per
    /// ten seconds.
    let clientEvents = ClientEventLimiter()
    /// Whether the logger emits debug messages. The worker's logger is its own copy, fixed at
    /// fork (the project's log handlers are structs), so asking once spares every connection a
    /// check that copies the log handler out of the logger's shared storage.
    let logsDebug: Bool

    init(
        listeners: [Listener], epoll: Int32, context: WorkerContext, slot: SlotWriter, connectionLimit: Int,
        buffer: UnsafeMutableRawBufferPointer, peer: PeerAddressBuffer, answersSilentClients: [Bool],
        proxyPolicies: [ProxyProtocolPolicy], initialTimeout: Duration
    ) {
        self.connectionLimit = connectionLimit
        self.modes = listeners.indices.map { index in
            ListenerMode(
                defersAccept: Self.defersAccept(listeners[index].fileDescriptor),
                answersSilentClients: answersSilentClients[index], acceptsProxy: proxyPolicies[index].isRequired)
        }
        self.proxyPolicies = proxyPolicies
        self.proxyIntake =
            proxyPolicies.contains(where: \.isRequired) ? ProxyHeaderIntake(initialTimeout: initialTimeout) : nil
        self.listeners = listeners
        self.epoll = epoll
        self.context = context
        self.slot = slot
        self.buffer = buffer
        self.peer = peer
        self.logsDebug = context.logger.logLevel <= .debug
    }

    /// Serves connections with `handler` until a stop is requested or the listener fails.
    func run<Handler: ConnectionHandler>(_ handler: inout Handler) -> WorkerExitStatus {
        var backoff = Backoff()
        // One listener (the usual case): accept on it directly, no epoll.
        let onlyFD = epoll < 0 ? listeners[0].fileDescriptor : -1
        // Looked up once: the one listener's mode, or per connection with several.
        let onlyMode = modes[0]
        var served = 0
        while StopRequest.current == .none {
            slot.enter(.accepting)
            let fd: Int32
            // An index rather than the listener itself: the connection takes the one reference
            // it needs straight from the array.
            let listenerIndex: Int
            do throws(AcceptError) {
                if onlyFD >= 0 {
                    fd = try acceptBlocking(on: onlyFD, peer: peer)
                    listenerIndex = 0
                } else {
                    (fd, listenerIndex) = try acceptFromAny()
                }
                backoff.reset()
            } catch .stopRequested {
                break
            } catch .resourcesExhausted(let error) {
                // Out of fds or memory: the connection stays queued; try again after a pause,
                // which the supervisor's STATUS= shows.
                slot.enter(.paused)
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
            let mode = onlyFD >= 0 ? onlyMode : modes[listenerIndex]
            serveConnection(fd, listenerIndex: listenerIndex, mode: mode, handler: &handler)
            // A detached socket is the handler's now; the flag is reset for the next connection.
            if !ConnectionState.takeDetached() { close(fd) }
            served &+= 1
            if served >= connectionLimit { return .recycled }
        }
        return .stopped
    }

    @inline(__always)
    private func serveConnection<Handler: ConnectionHandler>(
        _ fd: Int32, listenerIndex: Int, mode: ListenerMode, handler: inout Handler
    ) {
        let count: Int
        if mode.acceptsProxy {
            guard let received = readBehindProxy(fd, listenerIndex: listenerIndex, mode: mode) else { return }
            count = received
        } else {
            do {
                count = try readInitialData(from: fd, into: buffer, immediate: mode.defersAccept)
            } catch .initialReadTimedOut where mode.answersSilentClients {
                // The server speaks first: the handler gets the connection with no initial data.
                count = 0
            } catch {
                countAndLog(error)
                return
            }
        }
        slot.enterHandling()
        if logsDebug {
            context.logger.debug(
                "Size of data transferred is \(count)",
                metadata: ["initial.bytes": "\(count)", "listener": "\(listeners[listenerIndex].name)"])
        }
        let connection = Connection(
            fileDescriptor: fd, listener: listeners[listenerIndex],
            peerAddress: UnsafePointer(peer.storage), peerAddressLength: peer.length.pointee)
        do {
            // 1 ≤ count ≤ buffer.count from the read above (0 for a silent client its handler
            // answers). The span only borrows the worker's buffer: the handler cannot keep it
            // past this call.
            let initialData = Span<UInt8>(
                _unsafeElements: UnsafeBufferPointer(
                    start: buffer.baseAddress!.bindMemory(to: UInt8.self, capacity: count), count: count))
            try handler.handle(connection, initialData: initialData, context: context)
        } catch {
            slot.count(.handlerError)
            let peer = connection.peer
            context.logger.warning(
                "Connection from \(peer) failed: \(error)",
                metadata: ["peer": "\(peer)", "listener": "\(connection.listener.name)"])
        }
    }

    /// The initial read that failed, counted in the slot and logged (a few lines per window).
    private func countAndLog(_ error: AcceptError) {
        switch error {
        case .initialReadTimedOut: slot.count(.initialReadTimeout)
        case .peerClosedBeforeSending: slot.count(.closedBeforeSending)
        case .connectionReset: slot.count(.reset)
        default: break
        }
        logInitialReadFailure(error)
    }

    /// The initial read of a listener with `accept-proxy`: the peer's trust, the header, then the
    /// client's first bytes (see ``ProxyHeaderIntake``). Their count, or nil when the connection
    /// is to be closed (counted and logged here). Out of line: no other listener pays for it.
    @inline(never)
    private func readBehindProxy(_ fd: Int32, listenerIndex: Int, mode: ListenerMode) -> Int? {
        do {
            return try proxyIntake!.read(
                from: fd, policy: proxyPolicies[listenerIndex], listener: listeners[listenerIndex].fileDescriptor,
                peer: peer, into: buffer, answersSilentClients: mode.answersSilentClients)
        } catch .connection(let error) {
            countAndLog(error)
        } catch .headerTimedOut {
            slot.count(.initialReadTimeout)
            logClientEvent(level: .info, "\(ProxyIntakeError.headerTimedOut)")
        } catch {
            logClientEvent(level: .warning, "\(error)")
        }
        return nil
    }

    /// How one listener's connections start; a few flags, copied per connection at no cost.
    struct ListenerMode {
        /// It defers accepts until the first bytes arrive (TCP_DEFER_ACCEPT), so the initial read
        /// need not wait.
        let defersAccept: Bool
        /// Its handler takes clients that send nothing within `initial-timeout`.
        let answersSilentClients: Bool
        /// Its connections start with a PROXY header (`accept-proxy`).
        let acceptsProxy: Bool
    }

    /// Whether `listener` has TCP_DEFER_ACCEPT set (by preforkd, or by systemd's `DeferAcceptSec=`).
    static func defersAccept(_ listener: Int32) -> Bool {
        var seconds: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(listener, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &seconds, &length) == 0 && seconds > 0
    }

    /// A connection some listener holds that no wake-up announced, if any.
    private func acceptStranded() throws(AcceptError) -> (Int32, Int)? {
        for index in listeners.indices {
            do {
                return (try acceptConnection(on: listeners[index].fileDescriptor, peer: peer), index)
            } catch .wouldBlock {
                continue
            }
        }
        return nil
    }

    /// The client's address as accept4 captured it, as text.
    private var peerText: String { SocketAddress.describe(peer.storage, length: peer.length.pointee) }

    private func logInitialReadFailure(_ error: AcceptError) {
        let level: Logger.Level
        switch error {
        case .peerClosedBeforeSending, .stopRequested: level = .debug
        default: level = .info
        }
        logClientEvent(level: level, "\(error)")
    }

    /// "Connection from PEER closed: REASON", within the limit on lines clients can cause.
    private func logClientEvent(level: Logger.Level, _ reason: String) {
        guard context.logger.logLevel <= level else { return }
        let (allowed, suppressed) = clientEvents.admit(now: Monotonic.now())
        guard allowed else { return }
        let peer = peerText
        let note = suppressed > 0 ? " (\(suppressed) similar lines left out before this one)" : ""
        context.logger.log(
            level: level, "Connection from \(peer) closed: \(reason)\(note)", metadata: ["peer": "\(peer)"])
    }

    /// Waits in epoll for any listener, then accepts from it; returns the socket and the
    /// listener's index.
    ///
    /// With EPOLLEXCLUSIVE the kernel wakes one waiter per new connection, and a waiter told to
    /// stop in that instant exits without accepting it; epoll never reports that connection to
    /// the others (it only looks at what a wake-up put on its ready list). So a wait that ends
    /// without an event, every `epollRecheckMs`, tries each listener once itself: a connection
    /// left behind waits no longer than that.
    private func acceptFromAny() throws(AcceptError) -> (Int32, Int) {
        var tag: UInt32 = 0
        while true {
            let events = pf_epoll_wait_one(epoll, Self.epollRecheckMs, &tag)
            if events < 0 {
                if Glibc.errno == EINTR {
                    if StopRequest.current != .none { throw .stopRequested }
                    continue
                }
                throw .failed(SystemCallError.current("epoll_wait"))
            }
            if events == 0, StopRequest.current == .none, let stranded = try acceptStranded() { return stranded }
            if StopRequest.current != .none { throw .stopRequested }
            guard events == 1, tag != Self.wakeTag, Int(tag) < listeners.count else { continue }
            do {
                return (try acceptConnection(on: listeners[Int(tag)].fileDescriptor, peer: peer), Int(tag))
            } catch .wouldBlock {
                continue  // another worker took it
            }
        }
    }
}
