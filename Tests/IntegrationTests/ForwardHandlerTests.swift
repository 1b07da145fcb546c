import Foundation
import Glibc
import TestSupport
import Testing

/// The forward handler in the real daemon: routes chosen by first bytes, upstreams tried in
/// order, PROXY headers sent, relays that outlive their worker's attention.
@Suite struct ForwardHandlerTests {
    /// A running daemon with the forward handler, its port, and its config file.
    struct Forwarder {
        let daemon: Daemon
        let port: UInt16
        let config: TestConfigFile

        init(routes: String, settings: String = "", workers: Int = 2) throws {
            config = try TestConfigFile(
                """
                listen = ["127.0.0.1:0"]
                workers = \(workers)
                handler = "forward"
                defer-accept = false
                \(settings)
                [forward]
                probe-timeout = 0.5
                connect-timeout = 1
                \(routes)
                """)
            daemon = try Daemon(["--config", config.path])
            try daemon.waitForReady()
            port = try daemon.port()
        }

        func stop() {
            daemon.stop()
            config.remove()
        }

        /// `preforkd status --json`'s routes: name → (connections, open).
        func routes() throws -> [String: (connections: Int, open: Int)] {
            let result = try runChild(
                Binaries.preforkd, ["status", "--json", "--runtime-directory", daemon.directory], environment: [])
            let object = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any]
            var routes: [String: (connections: Int, open: Int)] = [:]
            for route in object?["routes"] as? [[String: Any]] ?? [] {
                routes[route["name"] as! String] = (route["connections"] as! Int, route["open"] as! Int)
            }
            return routes
        }

        /// Waits until the route `name` shows these figures in `preforkd status`.
        func waitForRoute(_ name: String, connections: Int, open: Int, seconds: Double = 5) throws {
            let deadline = Date().addingTimeInterval(seconds)
            var last = try routes()[name]
            while Date() < deadline {
                if let figures = last, figures == (connections, open) { return }
                usleep(10_000)
                last = try routes()[name]
            }
            throw TestFailure(
                "route \(name): expected \(connections) connections, \(open) open; got \(String(describing: last))")
        }
    }

    static func route(_ name: String, _ match: String, _ upstreams: [String], extra: String = "") -> String {
        let list = upstreams.map { "\"\($0)\"" }.joined(separator: ", ")
        return "[[forward.route]]\nname = \"\(name)\"\n\(match)\nupstream = [\(list)]\n\(extra)\n"
    }

    /// Sends `bytes` (in `segments` pieces), half-closes, and returns everything the upstream
    /// sent back: its name line, then the echo.
    static func exchange(_ port: UInt16, _ bytes: [UInt8], segments: Int = 1) throws -> String {
        String(decoding: try exchangeBytes(port, bytes, segments: segments), as: UTF8.self)
    }

    /// ``exchange(_:_:segments:)``, byte for byte.
    static func exchangeBytes(_ port: UInt16, _ bytes: [UInt8], segments: Int = 1) throws -> [UInt8] {
        let client = try Client(port: port)
        defer { client.close() }
        let size = (bytes.count + segments - 1) / segments
        for start in stride(from: 0, to: bytes.count, by: size) {
            try client.send(bytes: Array(bytes[start..<min(start + size, bytes.count)]))
            if segments > 1 { usleep(20_000) }  // separate segments, not a timing assertion
        }
        shutdown(client.fd, Int32(SHUT_WR))
        return try client.readAllBytes()
    }

    @Test func eachConnectionReachesTheRouteItsFirstBytesChoose() throws {
        let upstreams = try ["ssh", "tls", "web", "alpha", "ws", "other"].map { try TestUpstream(name: $0) }
        defer { upstreams.forEach { $0.stop() } }
        let (ssh, tls, web, alpha, ws, other) = (
            upstreams[0], upstreams[1], upstreams[2], upstreams[3], upstreams[4], upstreams[5]
        )
        let forwarder = try Forwarder(
            routes: Self.route("ssh", "protocol = \"ssh\"", [ssh.address()])
                + Self.route("tls", "protocol = \"tls\"\nsni = [\"*.test\"]", [tls.address()])
                + Self.route("web", "protocol = \"http\"\nhost = [\"example.com\"]", [web.address()])
                + Self.route("alpha", "prefix = \"alpha:\"", [alpha.address()])
                + Self.route("ws", "regex = \"^GET /ws \"", [ws.address()])
                + Self.route("other", "", [other.address()]))
        defer { forwarder.stop() }
        let hello = Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin")
        let banner = Array("SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".utf8)
        #expect(try Self.exchange(forwarder.port, banner) == "ssh\n" + String(decoding: banner, as: UTF8.self))
        // A ClientHello in three segments: the route waits for the whole of it.
        #expect(try Self.exchangeBytes(forwarder.port, hello, segments: 3) == Array("tls\n".utf8) + hello)
        let request = "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
        #expect(try Self.exchange(forwarder.port, Array(request.utf8)) == "web\n" + request)
        #expect(try Self.exchange(forwarder.port, Array("alpha:one".utf8)) == "alpha\nalpha:one")
        #expect(try Self.exchange(forwarder.port, Array("GET /ws HTTP/1.1\r\n\r\n".utf8)).hasPrefix("ws\n"))
        #expect(
            try Self.exchange(forwarder.port, Array("GET / HTTP/1.1\r\nHost: other.org\r\n\r\n".utf8)).hasPrefix(
                "other\n"))
        #expect(try Self.exchange(forwarder.port, Array("\u{1}binary".utf8)) == "other\n\u{1}binary")
        #expect(tls.received.first == hello, "the upstream gets the client's bytes unchanged")
        // Each route counted its connection, none still open.
        try forwarder.waitForRoute("alpha", connections: 1, open: 0)
        try forwarder.waitForRoute("other", connections: 2, open: 0)
        #expect(try forwarder.routes().count == 6)
        try forwarder.daemon.waitForLog("forwarded to \(alpha.address()) (route alpha)")
        #expect(forwarder.daemon.log.contains("route=ssh"))
        #expect(forwarder.daemon.log.contains("upstream=\(ssh.address())"))
    }

    @Test func silentAndStalledClientsGetTheirRoutesOrAClose() throws {
        let banner = try TestUpstream(name: "smtp")
        let fallback = try TestUpstream(name: "fallback")
        defer { [banner, fallback].forEach { $0.stop() } }
        let forwarder = try Forwarder(
            routes: Self.route("ssh", "protocol = \"ssh\"", ["127.0.0.1:9"])
                + Self.route("smtp", "protocol = \"timeout\"", [banner.address()])
                + Self.route("fallback", "", [fallback.address()]),
            settings: "initial-timeout = 0.3")
        defer { forwarder.stop() }
        // Silent: after initial-timeout, the server-speaks-first upstream greets it.
        let silent = try Client(port: forwarder.port)
        defer { silent.close() }
        #expect(try silent.read(count: 5) == "smtp\n")
        // Stalled mid-banner: the ssh route cannot decide; at probe-timeout the catch-all wins,
        // and the upstream gets the bytes that did come.
        let stalled = try Client(port: forwarder.port)
        defer { stalled.close() }
        try stalled.send("SSH-2.0-Open")
        #expect(try stalled.read(count: 9) == "fallback\n")
        #expect(try stalled.read(count: 12) == "SSH-2.0-Open")
    }

    @Test func aTimeoutRouteTurnsDeferAcceptOffOnItsListener() throws {
        let banner = try TestUpstream(name: "smtp")
        defer { banner.stop() }
        // defer-accept is on by default: the kernel would hold a silent client for about
        // initial-timeout (2 s → SYN-ACK retransmits until ~3 s) before the worker's own 2 s
        // wait even began. With the timeout route the listener does not defer, so the banner
        // comes at initial-timeout — well inside the client's 3.5 s deadline, well outside 5 s.
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0"]
            workers = 1
            handler = "forward"
            initial-timeout = 2
            [[forward.route]]
            name = "smtp"
            protocol = "timeout"
            upstream = ["\(banner.address())"]
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let silent = try Client(port: try daemon.port(), timeout: 3.5)
        defer { silent.close() }
        #expect(try silent.read(count: 5) == "smtp\n")
    }

    @Test func noRouteAndNoUpstreamCloseTheClientWithALogLine() throws {
        let deadPorts = try (0..<2).map { _ -> UInt16 in
            let (fd, port) = try makeTCPSocket()
            close(fd)
            return port
        }
        let forwarder = try Forwarder(
            routes: Self.route("alpha", "prefix = \"alpha:\"", deadPorts.map { "127.0.0.1:\($0)" }))
        defer { forwarder.stop() }
        #expect(try Self.exchange(forwarder.port, Array("alpha:x".utf8)) == "")
        try forwarder.daemon.waitForLog(
            "Route alpha: no upstream answered for 127.0.0.1:")
        #expect(
            forwarder.daemon.log.contains(
                "127.0.0.1:\(deadPorts[0]): Connection refused; 127.0.0.1:\(deadPorts[1]): Connection refused"))
        #expect(try Self.exchange(forwarder.port, Array("beta:x".utf8)) == "")
        try forwarder.daemon.waitForLog("matches no route; closing")
    }

    @Test func upstreamsAreTriedInOrderOverIPv6AndUnixSockets() throws {
        let (dead, deadPort) = try makeTCPSocket()
        close(dead)
        let ipv6 = try TestUpstream(name: "six", ipv6: true)
        let unix = try TestUpstream(name: "unix", unixPath: NSTemporaryDirectory() + uniqueName("up") + ".sock")
        defer { [ipv6, unix].forEach { $0.stop() } }
        let forwarder = try Forwarder(
            routes: Self.route("six", "prefix = \"6\"", ["127.0.0.1:\(deadPort)", ipv6.address(ipv6: true)])
                + Self.route("unix", "", [unix.address()]))
        defer { forwarder.stop() }
        #expect(try Self.exchange(forwarder.port, Array("6x".utf8)) == "six\n6x")
        #expect(try Self.exchange(forwarder.port, Array("ux".utf8)) == "unix\nux")
    }

    @Test(arguments: ["v1", "v2"])
    func sendProxyTellsTheUpstreamTheClientsAddress(version: String) throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let forwarder = try Forwarder(
            routes: Self.route("up", "", [upstream.address()], extra: "send-proxy = \"\(version)\""))
        defer { forwarder.stop() }
        let client = try Client(port: forwarder.port)
        defer { client.close() }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(client.fd, $0, &length) }
        }
        let clientPort = UInt16(bigEndian: address.sin_port)
        try client.send("hello")
        let received = try upstream.waitForConnections(1, bytes: 5)[0]
        if version == "v1" {
            #expect(
                String(decoding: received, as: UTF8.self)
                    == "PROXY TCP4 127.0.0.1 127.0.0.1 \(clientPort) \(forwarder.port)\r\nhello")
        } else {
            let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
            #expect(Array(received.prefix(12)) == signature)
            #expect(received[12] == 0x21 && received[13] == 0x11, "v2 PROXY over TCP4")
            #expect(Array(received[16..<24]) == [127, 0, 0, 1, 127, 0, 0, 1])
            #expect(UInt16(received[24]) << 8 | UInt16(received[25]) == clientPort)
            #expect(UInt16(received[26]) << 8 | UInt16(received[27]) == forwarder.port)
            #expect(Array(received.suffix(5)) == Array("hello".utf8))
        }
    }

    @Test func aClientAddressFromATrustedProxyHeaderTravelsOnToTheUpstream() throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let forwarder = try Forwarder(
            routes: Self.route("up", "", [upstream.address()], extra: "send-proxy = \"v1\""),
            settings: "accept-proxy = \"v1\"\naccept-proxy-from = [\"127.0.0.0/8\"]")
        defer { forwarder.stop() }
        let client = try Client(port: forwarder.port)
        defer { client.close() }
        try client.send("PROXY TCP4 192.0.2.7 198.51.100.1 1234 443\r\nhello")
        let received = try upstream.waitForConnections(1, bytes: 5)[0]
        #expect(String(decoding: received, as: UTF8.self) == "PROXY TCP4 192.0.2.7 198.51.100.1 1234 443\r\nhello")
        try forwarder.daemon.waitForLog("Connection from 192.0.2.7:1234 forwarded to")
    }

    @Test func relayedConnectionsDoNotHoldTheirWorkers() throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let forwarder = try Forwarder(routes: Self.route("up", "", [upstream.address()]), workers: 2)
        defer { forwarder.stop() }
        // Far more open relays than workers, all idle at once.
        var held: [Client] = []
        defer { held.forEach { $0.close() } }
        for index in 0..<64 {
            let client = try Client(port: forwarder.port)
            held.append(client)
            try client.send("open \(index)")
            #expect(try client.read(count: 3) == "up\n")
        }
        // The status file counts them open on their route.
        try forwarder.waitForRoute("up", connections: 64, open: 64)
        let deadline = Date().addingTimeInterval(5)
        func statusShowsRoute() -> Bool {
            forwarder.daemon.notify.received.contains { datagram in
                datagram.pid == forwarder.daemon.pid
                    && datagram.assignments.contains {
                        $0.hasPrefix("STATUS=") && $0.contains("routes: up 64 (64 open)")
                    }
            }
        }
        while !statusShowsRoute() && Date() < deadline { forwarder.daemon.notify.poll(seconds: 0.1) }
        #expect(statusShowsRoute(), "STATUS= counts the route's open relays")
        // A new connection is still routed and answered.
        #expect(try Self.exchange(forwarder.port, Array("new".utf8)) == "up\nnew")
        // And every held relay still carries bytes both ways.
        for (index, client) in held.enumerated() {
            let opening = "open \(index)"
            #expect(try client.read(count: opening.utf8.count) == opening)
            try client.send("poke")
            #expect(try client.read(count: 4) == "poke")
        }
    }

    @Test func theMetricsListenerCountsConnectionsPerRoute() throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0", "127.0.0.2:0"]
            workers = 2
            handler = "forward"
            defer-accept = false
            [[forward.route]]
            name = "my \\"web\\""
            upstream = ["\(upstream.address())"]
            [listeners."127.0.0.2:0"]
            handler = "metrics"
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let (forwardPort, metricsPort) = (try daemon.port(host: "127.0.0.1"), try daemon.port(host: "127.0.0.2"))
        let held = try Client(port: forwardPort)
        defer { held.close() }
        try held.send("x")
        #expect(try held.read(count: 4) == "up\nx")
        #expect(try Self.exchange(forwardPort, Array("y".utf8)) == "up\ny")
        let deadline = Date().addingTimeInterval(5)
        var exposition = ""
        repeat {
            exposition = try MetricsHandlerTests.get("/metrics", port: metricsPort, host: "127.0.0.2")
            if exposition.contains("preforkd_route_connections_open{route=\"my \\\"web\\\"\"} 1") { break }
            usleep(20_000)
        } while Date() < deadline
        #expect(exposition.contains("preforkd_route_connections_total{route=\"my \\\"web\\\"\"} 2"))
        #expect(exposition.contains("preforkd_route_connections_open{route=\"my \\\"web\\\"\"} 1"))
    }

    @Test func aHalfClosedRequestStillGetsItsWholeReply() throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let forwarder = try Forwarder(routes: Self.route("up", "", [upstream.address()]))
        defer { forwarder.stop() }
        // The upstream replies (echoes) only what it read before the client's FIN reached it,
        // and closes after: the client reads all of it, then the end.
        let payload = [UInt8](repeating: 0x61, count: 300_000)
        #expect(try Self.exchange(forwarder.port, payload) == "up\n" + String(repeating: "a", count: 300_000))
    }

    @Test func aGracefulStopLetsEstablishedRelaysFinish() throws {
        let upstream = try TestUpstream(name: "up")
        defer { upstream.stop() }
        let forwarder = try Forwarder(
            routes: Self.route("up", "", [upstream.address()]), settings: "graceful-timeout = 20")
        defer { forwarder.stop() }
        let client = try Client(port: forwarder.port)
        try client.send("before")
        #expect(try client.read(count: 9) == "up\nbefore")
        forwarder.daemon.signal(SIGTERM)
        _ = try forwarder.daemon.notify.waitFor("STOPPING=1", from: forwarder.daemon.pid)
        // The worker no longer accepts, but the relay it carries still flows.
        try client.send("during")
        #expect(try client.read(count: 6) == "during")
        shutdown(client.fd, Int32(SHUT_WR))
        #expect(try client.readToEnd() == "")
        client.close()
        #expect(try forwarder.daemon.waitForExit(seconds: 10) == 0)
    }
}

/// Real first bytes captured from clients: the fuzzers' seed corpus.
enum Fixture {
    /// The bytes of `Fuzz/corpus/<parser>/<name>`.
    static func bytes(_ parser: String, _ name: String, filePath: String = #filePath) -> [UInt8] {
        let root = URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("Fuzz/corpus/\(parser)/\(name)").path
        guard let data = FileManager.default.contents(atPath: path) else { fatalError("missing fixture \(path)") }
        return Array(data)
    }
}
