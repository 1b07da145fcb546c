import Foundation
import Glibc
import TestSupport
import Testing

/// Listeners with `accept-proxy`: the PROXY header's source is the client everywhere, and
/// connections without a valid header from a trusted peer never reach the handler.
@Suite struct ProxyProtocolTests {
    /// The client a load balancer would name: 192.0.2.7:1234 (TEST-NET-1), to 127.0.0.1:11000.
    static let v1Header = Array("PROXY TCP4 192.0.2.7 127.0.0.1 1234 11000\r\n".utf8)
    static let v2Header: [UInt8] =
        Array("\r\n\r\n\0\r\nQUIT\n".utf8) + [0x21, 0x11, 0x00, 12] + [192, 0, 2, 7] + [127, 0, 0, 1]
        + [0x04, 0xD2] + [0x2A, 0xF8]
    /// v2 LOCAL: a health check of the proxy's own, with no addresses.
    static let v2Local: [UInt8] = Array("\r\n\r\n\0\r\nQUIT\n".utf8) + [0x20, 0x00, 0x00, 0x00]

    static func daemon(_ arguments: [String]) throws -> (Daemon, UInt16) {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"] + arguments)
        try daemon.waitForReady()
        return (daemon, try daemon.port())
    }

    /// Sends `header` and `message` (in one write, or two when `split`), returns the whole reply.
    static func exchange(port: UInt16, header: [UInt8], _ message: String, split: Bool = false) throws -> String {
        let client = try Client(port: port)
        defer { client.close() }
        if split {
            // Half the header, then the rest, then the data: three segments, the worker waiting
            // for each (the second waits for a byte the first cannot contain).
            try client.send(bytes: Array(header[..<(header.count / 2)]))
            sleepMilliseconds(50)
            try client.send(bytes: Array(header[(header.count / 2)...]))
            sleepMilliseconds(50)
            try client.send(message)
        } else {
            try client.send(bytes: header + Array(message.utf8))
        }
        return try client.readToEnd()
    }

    @Test(arguments: ["v1", "v2", "any"])
    func echoesBehindAHeaderInOneSegmentOrSeveral(version: String) throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", version])
        defer { daemon.stop() }
        let headers =
            version == "v1" ? [Self.v1Header] : version == "v2" ? [Self.v2Header] : [Self.v1Header, Self.v2Header]
        for header in headers {
            #expect(try Self.exchange(port: port, header: header, "together<EOF>") == "together<EOF>")
            #expect(try Self.exchange(port: port, header: header, "apart<EOF>", split: true) == "apart<EOF>")
        }
        #expect(
            try Self.exchange(
                port: port, header: version == "v1" ? Array("PROXY UNKNOWN\r\n".utf8) : Self.v2Local, "local<EOF>")
                == "local<EOF>")
        #expect(!daemon.log.contains("closed:"))
    }

    /// A refused connection: nothing comes back (a reset, when the refusal left bytes unread).
    static func refused(port: UInt16, header: [UInt8], _ message: String) -> Bool {
        ((try? exchange(port: port, header: header, message)) ?? "") == ""
    }

    @Test func theHeadersSourceIsThePeerInStatus() throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", "v2"])
        defer { daemon.stop() }
        let held = try Client(port: port)
        defer { held.close() }
        try held.send(bytes: Self.v2Header + Array("held ".utf8))
        try waitUntil("the held connection in preforkd status --json") {
            let (_, json) = try StatusCommandTests.status(["--runtime-directory", daemon.directory, "--json"])
            let document = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
            let rows = document?["workers"] as? [[String: Any]] ?? []
            return rows.contains { $0["stage"] as? String == "handling" && $0["peer"] as? String == "192.0.2.7:1234" }
        }
    }

    @Test func theHeadersSourceIsThePeerOfTheHandlersLogLines() throws {
        let daemon = try Daemon(
            ["127.0.0.1:0", "1"], binary: Binaries.handlerFaultProbe, environment: ["PROBE_ACCEPT_PROXY": "v1"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        #expect(Self.refused(port: try daemon.port(), header: Self.v1Header, "throw<EOF>"))
        try daemon.waitForLog("Connection from 192.0.2.7:1234 failed: Requested()")
    }

    @Test func aPeerOutsideAcceptProxyFromIsClosedWithALogLine() throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", "v1", "--accept-proxy-from", "10.0.0.0/8"])
        defer { daemon.stop() }
        #expect(Self.refused(port: port, header: Self.v1Header, "refused<EOF>"))
        try daemon.waitForLog("Connection from 127.0.0.1:")
        try daemon.waitForLog("closed: peer not in accept-proxy-from")
        #expect(!daemon.log.contains("192.0.2.7"))
    }

    @Test func aTrustedPeerIsServed() throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", "v1", "--accept-proxy-from", "127.0.0.0/8"])
        defer { daemon.stop() }
        #expect(try Self.exchange(port: port, header: Self.v1Header, "trusted<EOF>") == "trusted<EOF>")
    }

    @Test func garbageAndTheWrongVersionAreClosedWithALogLine() throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", "v2"])
        defer { daemon.stop() }
        #expect(Self.refused(port: port, header: [], "GET / HTTP/1.0\r\n\r\n<EOF>"))
        #expect(Self.refused(port: port, header: Self.v1Header, "v1<EOF>"))
        try waitUntil("two refusals in the log") {
            daemon.log.components(separatedBy: "closed: no valid PROXY header (accept-proxy = v2)").count == 3
        }
        #expect(try Self.exchange(port: port, header: Self.v2Header, "fine<EOF>") == "fine<EOF>")
    }

    @Test func aHeaderThatNeverCompletesIsClosedAtTheInitialTimeout() throws {
        let (daemon, port) = try Self.daemon(["--accept-proxy", "any", "--initial-timeout", "0.3"])
        defer { daemon.stop() }
        let client = try Client(port: port)
        defer { client.close() }
        try client.send("PROXY TCP4 192.0.2.7")
        #expect(((try? client.readToEnd()) ?? "") == "")
        try daemon.waitForLog("closed: PROXY header not received within initial-timeout")
        #expect(try Self.exchange(port: port, header: Self.v1Header, "next<EOF>") == "next<EOF>")
    }

    @Test func aListenerTableRequiresTheHeaderOnThatListenerOnly() throws {
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0", "[::1]:0"]
            workers = 1
            [listeners."127.0.0.1:0"]
            accept-proxy = "v1"
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        #expect(try Self.exchange(port: port, header: Self.v1Header, "behind<EOF>") == "behind<EOF>")
        let log = daemon.log
        let ipv6Port = try #require(
            log.components(separatedBy: "[::1]:").dropFirst().compactMap { UInt16($0.prefix { $0.isNumber }) }.first)
        #expect(try Client.exchange(port: ipv6Port, "direct<EOF>", ipv6: true) == "direct<EOF>")
    }
}
