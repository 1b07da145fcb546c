import ForwardProtocols
import Glibc
import Logging
import Prefork

/// One port for many services: routes each connection by its first bytes — an SSH banner, a TLS
/// ClientHello's server name and ALPN, an HTTP request's Host, a byte prefix, a regular
/// expression, or silence — to an upstream, then relays it both ways.
///
/// The worker's accepting thread does what needs a decision: it reads until the routes can
/// decide (within `probe-timeout` and `probe-bytes`), connects to the route's first upstream
/// that answers (within `connect-timeout` each), writes the optional PROXY header and the bytes
/// read so far, and hands both sockets to the worker's ``RelayLoop``, a thread that carries
/// every established connection of the worker with epoll. The worker is back in `accept` at
/// once: long-lived connections (SSH sessions) do not hold it, so a few workers carry thousands
/// of them.
public struct ForwardHandler: ConnectionHandler, BuiltInHandler {
    /// The name preforkd knows it by: `handler = "forward"`, the `[forward]` table.
    package static let name = "forward"

    private let configuration: Configuration
    private let matcher: RouteMatcher
    private let connector: UpstreamConnector
    /// `probe-timeout` in nanoseconds.
    private let probeTimeoutNs: UInt64
    /// Per worker, from `prepare`: the probe buffer (`probe-bytes`), reused by every connection.
    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    /// Per worker: each route's upstream addresses, resolved once.
    private var upstreams: [[Upstream]] = []
    /// Per worker: the thread relaying established connections.
    private var relay: RelayLoop?
    /// Per worker: bounds the lines clients can cause (no route, stalled probes).
    private var clientEvents: ClientEventLimiter?
    /// Per worker: each route's tally in the status file (nil without one).
    private var counters: [RouteCounter?] = []

    /// A forward handler with these (validated) settings.
    public init(configuration: Configuration) {
        self.configuration = configuration
        self.matcher = RouteMatcher(configuration.routes.map(\.condition))
        self.connector = UpstreamConnector(timeout: configuration.connectTimeout)
        let (seconds, attoseconds) = configuration.probeTimeout.components
        self.probeTimeoutNs = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    /// With a `protocol = "timeout"` route, a client that sends nothing within `initial-timeout`
    /// is routed there (a protocol where the server speaks first) rather than closed.
    public var answersSilentClients: Bool {
        configuration.routes.contains { $0.condition == .timeout }
    }

    /// The routes' names: each is counted in the status file (`STATUS=`, `preforkd status`,
    /// metrics).
    public var routeNames: [String] { configuration.routes.map(\.name) }

    /// Allocates the probe buffer, resolves the upstreams and starts the relay thread.
    public mutating func prepare(_ context: WorkerContext) throws {
        guard let memory = malloc(configuration.probeBytes) else {
            throw ForwardError.cannotAllocate(bytes: configuration.probeBytes)
        }
        buffer = UnsafeMutableRawBufferPointer(start: memory, count: configuration.probeBytes)
        upstreams = configuration.routes.map { $0.upstreams.map(Upstream.init) }
        let counters = configuration.routes.map { context.routeCounter(named: $0.name) }
        self.counters = counters
        let relay = try RelayLoop(
            idleTimeout: configuration.idleTimeout, method: configuration.relay, routes: configuration.routes.count,
            onFinish: { route in counters[route]?.closed() })
        try relay.start()
        self.relay = relay
        clientEvents = ClientEventLimiter()
    }

    /// Routes the connection, connects it to its upstream and hands it to the relay.
    public mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        var received = min(initialData.count, buffer.count)
        initialData.withUnsafeBytes { bytes in
            buffer.baseAddress!.copyMemory(from: bytes.baseAddress!, byteCount: received)
        }
        let decision = try probe(connection, received: &received)
        guard case .route(let index) = decision else {
            logClientEvent("Connection from \(connection.peer) matches no route; closing", connection, context)
            return
        }
        let route = configuration.routes[index]
        let socket: Int32
        let upstream: Upstream
        let header = route.sendProxy.map { proxyHeader($0, for: connection) } ?? []
        let connected = header.withUnsafeBytes { header in
            connector.connect(
                upstreams[index], opening: [header, UnsafeRawBufferPointer(start: buffer.baseAddress, count: received)])
        }
        switch connected {
        case .success(let connected):
            socket = connected.socket
            upstream = upstreams[index][connected.index]
        case .failure(let failure):
            context.logger.warning(
                "Route \(route.name): no upstream answered for \(connection.peer): \(failure)",
                metadata: ["peer": "\(connection.peer)", "route": "\(route.name)"])
            return
        }
        // Counted open before the relay can end it.
        counters[index]?.opened()
        do {
            try relay!.adopt(
                client: connection.fileDescriptor, upstream: socket, route: index, upstreamIsNonBlocking: true)
        } catch {
            counters[index]?.closed()
            close(socket)
            throw error
        }
        _ = connection.detach()
        if context.logger.logLevel <= .info {
            let peer = connection.peer
            context.logger.info(
                "Connection from \(peer) forwarded to \(upstream.text) (route \(route.name))",
                metadata: [
                    "peer": "\(peer)", "route": "\(route.name)", "upstream": "\(upstream.text)",
                    "listener": "\(connection.listener.name)",
                ])
        }
    }

    /// Lets the established relays finish: the worker stops accepting first, and the supervisor
    /// kills it once `graceful-timeout` has passed.
    public mutating func finish(_ context: WorkerContext) {
        guard let relay, relay.activeCount > 0 else { return }
        context.logger.debug("Waiting for \(relay.activeCount) relayed connections to finish")
        _ = relay.drain(until: nil) { context.isStoppingImmediately }
    }

    // MARK: - probing

    /// Reads until the routes decide, within the probe deadline and byte cap; `received` is how
    /// much of the buffer holds the client's bytes. An empty start is a silent client (see
    /// ``answersSilentClients``): the routes decide at once.
    private func probe(_ connection: Connection, received: inout Int) throws -> RouteDecision {
        guard received > 0 else { return decide(received, final: true) }
        let deadline = Monotonic.now() + probeTimeoutNs
        var decision = decide(received, final: false)
        while case .needMore(let atLeast) = decision {
            // A route that needs more than the cap can never match: decide with what there is.
            guard atLeast <= buffer.count,
                let more = try readMore(connection.fileDescriptor, after: received, deadline: deadline)
            else { return decide(received, final: true) }
            received += more
            decision = decide(received, final: false)
        }
        return decision
    }

    private func decide(_ received: Int, final: Bool) -> RouteDecision {
        matcher.decide(UnsafeRawBufferPointer(start: buffer.baseAddress, count: received), final: final)
    }

    /// Reads what the client sent next into the buffer after `received` bytes; nil when the
    /// deadline passes or the client closes its side first.
    private func readMore(_ fd: Int32, after received: Int, deadline: UInt64) throws -> Int? {
        while true {
            switch waitForEvents(Int16(POLLIN), on: fd, until: deadline) {
            case .ready: break
            case .deadlinePassed: return nil
            case .stopRequested: throw ConnectionError.stopRequested
            case .failed(let error): throw ConnectionError.failed(error)
            }
            let count = recv(fd, buffer.baseAddress! + received, buffer.count - received, Int32(MSG_DONTWAIT))
            if count > 0 { return count }
            if count == 0 { return nil }
            switch errno {
            case EAGAIN, EINTR: continue
            case ECONNRESET: throw ConnectionError.reset
            default: throw ConnectionError.failed(SystemCallError.current("recv"))
            }
        }
    }

    // MARK: - the upstream's first bytes

    /// The PROXY header telling the upstream who the client is and what it connected to.
    private func proxyHeader(_ version: ProxyProtocolVersion, for connection: Connection) -> [UInt8] {
        // A dual-stack listener's IPv4 client is written as the IPv4 address it stands for.
        func endpoint(_ address: SocketAddress) -> IPEndpoint? {
            IPEndpoint(address).map { IPEndpoint(address: $0.address.unmapped, port: $0.port) }
        }
        return ProxyHeader.encode(
            version, source: endpoint(connection.clientAddress), destination: endpoint(connection.localAddress))
    }

    // MARK: - logging

    private func logClientEvent(
        _ message: @autoclosure () -> String, _ connection: Connection, _ context: WorkerContext
    ) {
        guard context.logger.logLevel <= .info, let clientEvents else { return }
        let (allowed, suppressed) = clientEvents.admit(now: Monotonic.now())
        guard allowed else { return }
        let note = suppressed > 0 ? " (\(suppressed) similar lines left out before this one)" : ""
        context.logger.info("\(message())\(note)", metadata: ["peer": "\(connection.peer)"])
    }
}

/// Why the forward handler cannot start in a worker.
enum ForwardError: Error, CustomStringConvertible {
    case cannotAllocate(bytes: Int)

    var description: String {
        switch self {
        case .cannotAllocate(let bytes): "cannot allocate the \(bytes)-byte probe buffer"
        }
    }
}
