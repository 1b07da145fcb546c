import ForwardProtocols
import Testing

@Suite struct RouteMatcherTests {
    static func patterns(_ names: [String]) -> [ServerNamePattern] { names.compactMap(ServerNamePattern.init) }

    /// ssh, tls for one.test, http for example.com, "alpha:", silence, then anything.
    let matcher = RouteMatcher([
        .ssh,
        .tls(serverNames: RouteMatcherTests.patterns(["one.test", "*.example.org"]), alpn: []),
        .http(hosts: RouteMatcherTests.patterns(["example.com"])),
        .prefix(Array("alpha:".utf8)),
        .timeout,
        .catchAll,
    ])

    @Test func realClientsReachTheirRoutes() {
        #expect(matcher.decide(Fixture.bytes("ssh", "openssh-9.2.bin"), final: false) == .route(0))
        #expect(
            matcher.decide(Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin"), final: false) == .route(1))
        #expect(matcher.decide(Fixture.bytes("tls", "openssl-tls1.2-sni-mixed-case.bin"), final: false) == .route(1))
        // A ClientHello without a matching name falls through to the catch-all.
        #expect(matcher.decide(Fixture.bytes("tls", "openssl-no-sni.bin"), final: false) == .route(5))
        // Host 127.0.0.1 is not example.com.
        #expect(matcher.decide(Fixture.bytes("http", "curl-get.bin"), final: false) == .route(5))
        #expect(matcher.decide(Array("GET / HTTP/1.1\r\nHost: Example.com:80\r\n".utf8), final: false) == .route(2))
        #expect(matcher.decide(Array("alpha:rest".utf8), final: false) == .route(3))
    }

    @Test func earlierRoutesThatCannotDecideYetWait() {
        #expect(matcher.decide([], final: false) == .needMore(atLeast: 8))
        #expect(matcher.decide(Array("SSH-2.0-Open".utf8), final: false) == .needMore(atLeast: 13))
        // "alp" could still begin an HTTP method, and the http route comes first.
        #expect(matcher.decide(Array("alp".utf8), final: false) == .needMore(atLeast: 4))
        #expect(
            RouteMatcher([.prefix(Array("alpha:".utf8))]).decide(Array("alp".utf8), final: false)
                == .needMore(atLeast: 6))
        let hello = Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin")
        #expect(matcher.decide(Array(hello[0..<100]), final: false) == .needMore(atLeast: hello.count))
    }

    @Test func atTheDeadlineSilenceAndStallsHaveTheirRoutes() {
        #expect(matcher.decide([], final: true) == .route(4))
        let hello = Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin")
        #expect(matcher.decide(Array(hello[0..<100]), final: true) == .route(5))
        let strict = RouteMatcher([.ssh, .tls(serverNames: [], alpn: ["h2"])])
        #expect(strict.decide(Array(hello[0..<100]), final: true) == .noRoute)
        #expect(strict.decide(hello, final: false) == .route(1))
        #expect(strict.decide(Array("x".utf8), final: false) == .noRoute)
    }

    @Test func alpnConditionNarrowsTLS() {
        let matcher = RouteMatcher([
            .tls(serverNames: [], alpn: ["acme-tls/1"]), .tls(serverNames: [], alpn: ["http/1.1"]),
        ])
        #expect(matcher.decide(Fixture.bytes("tls", "curl-https-one.test.bin"), final: false) == .route(1))
        #expect(matcher.decide(Fixture.bytes("tls", "openssl-no-sni.bin"), final: false) == .noRoute)
    }

    @Test func prefixProbe() {
        #expect(BytePrefix.probe(Array("ab".utf8), Array("abc".utf8)) == .match(2))
        #expect(BytePrefix.probe(Array("abc".utf8), Array("ab".utf8)) == .needMore(atLeast: 3))
        #expect(BytePrefix.probe(Array("abc".utf8), Array("ax".utf8)) == .noMatch)
        #expect(BytePrefix.probe([], []) == .match(0))
        #expect(BytePrefix.probe([0x00, 0xFF], [0x00, 0xFF, 0x01]) == .match(2))
    }

    @Test func regexRoutesMatchTheBytesAsLatin1() throws {
        let matcher = RouteMatcher([
            .regex(try RoutePattern("^GET /ws ")), .regex(try RoutePattern("^\\x16\\x03[\\x00-\\x04]")), .catchAll,
        ])
        #expect(matcher.decide(Array("GET /ws HTTP/1.1\r\n".utf8), final: false) == .route(0))
        #expect(matcher.decide(Array("GET /wsx HTTP/1.1\r\n".utf8), final: false) == .route(2))
        // Bytes above 0x7F are one character each, not UTF-8 sequences.
        #expect(matcher.decide([0x16, 0x03, 0x01, 0xFF, 0xC3], final: false) == .route(1))
        #expect(matcher.decide([0x16, 0x03, 0x05], final: false) == .route(2))
        #expect(throws: (any Error).self) { try RoutePattern("^(unclosed") }
    }
}
