import ForwardProtocols
import Testing

@Suite struct HTTPRequestHeadTests {
    func probe(_ text: String) -> ProbeResult<HTTPRequestHead> { HTTPRequestHead.probe(Array(text.utf8)) }

    @Test func curlRequest() {
        let head = HTTPRequestHead.probe(Fixture.bytes("http", "curl-get.bin")).details
        #expect(head == HTTPRequestHead(method: "GET", target: "/", minorVersion: 1, host: "127.0.0.1", port: 21005))
    }

    @Test func otherRealClients() {
        // Python puts Accept-Encoding before Host; curl -0 posts with HTTP/1.0.
        let python = HTTPRequestHead.probe(Fixture.bytes("http", "python-urllib.bin")).details
        #expect(python == HTTPRequestHead(method: "GET", target: "/x", minorVersion: 1, host: "127.0.0.1", port: 21021))
        let post = HTTPRequestHead.probe(Fixture.bytes("http", "curl-post-http1.0.bin")).details
        #expect(
            post == HTTPRequestHead(method: "POST", target: "/form", minorVersion: 0, host: "one.test", port: 21020))
    }

    @Test func bracketedIPv6HostLosesBracketsAndPort() {
        let head = HTTPRequestHead.probe(Fixture.bytes("http", "curl-host-ipv6-port.bin")).details
        #expect(head?.host == "::1")
        #expect(head?.port == 8080)
    }

    /// Every prefix up to the end of the Host line asks for more; from there on the answer is fixed.
    @Test func everyPrefixNeedsMoreUntilHost() {
        let bytes = Fixture.bytes("http", "curl-get.bin")
        let hostLineEnd = Array("GET / HTTP/1.1\r\nHost: 127.0.0.1:21005\r\n".utf8).count
        for count in 0..<hostLineEnd {
            let answer = HTTPRequestHead.probe(Array(bytes[0..<count]))
            #expect(answer.asksForMore(than: count), "prefix \(count): \(answer)")
        }
        let full = HTTPRequestHead.probe(bytes)
        for count in hostLineEnd...bytes.count {
            #expect(HTTPRequestHead.probe(Array(bytes[0..<count])) == full)
        }
    }

    @Test func requestWithoutHostMatchesAtEndOfHeaders() {
        #expect(
            probe("GET / HTTP/1.0\r\n\r\n").details
                == HTTPRequestHead(method: "GET", target: "/", minorVersion: 0, host: nil, port: nil))
        #expect(probe("GET / HTTP/1.0\r\nAccept: */*\r\n").asksForMore(than: 29))
        #expect(probe("OPTIONS * HTTP/1.1\r\nUser-Agent: x\r\n\r\n").details?.host == nil)
    }

    /// Bare LF line endings are accepted; a CR not followed by LF is not.
    @Test func lineFeedOnlyLinesAreAccepted() {
        #expect(probe("GET /x HTTP/1.1\nHost: Example.COM\n\n").details?.host == "example.com")
        #expect(probe("GET /x HTTP/1.1\nX: y\n\n").details?.host == nil)
        #expect(probe("GET /x HTTP/1.1\rHost: a\r\n").isNoMatch)
        #expect(probe("GET /x HTTP/1.1\r\nHost: a\rb\r\n").isNoMatch)
    }

    @Test func hostHeaderForms() {
        #expect(probe("GET / HTTP/1.1\r\nhOsT:example.com.\r\n").details?.host == "example.com")
        #expect(probe("GET / HTTP/1.1\r\nHost: \t WWW.Example.com:443 \r\n").details?.port == 443)
        #expect(probe("GET / HTTP/1.1\r\nHost: 10.0.0.1:80\r\n").details?.host == "10.0.0.1")
        #expect(probe("GET / HTTP/1.1\r\nHost: [2001:DB8::1]\r\n").details?.host == "2001:db8::1")
        #expect(probe("GET / HTTP/1.1\r\nHost: example.com:\r\n").details?.port == nil)
        let empty = probe("GET / HTTP/1.1\r\nHost:\r\n").details
        #expect(empty != nil && empty?.host == nil)
        // The first Host wins: the probe stops there.
        #expect(probe("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n").details?.host == "a.test")
        #expect(probe("GET / HTTP/1.1\r\nHosts: a.test\r\nHost: b.test\r\n").details?.host == "b.test")
    }

    @Test func malformedHostIsRejected() {
        for value in [
            "a b", "a/b", "[::1", "[::1]x", "[zz::1]:80", "a.test:65536", "a.test:8x", "a.test:123456", "..",
            "user@a.test",
        ] {
            #expect(probe("GET / HTTP/1.1\r\nHost: \(value)\r\n").isNoMatch, "\(value)")
        }
    }

    @Test func malformedRequestLinesAreRejected() {
        for text in [
            " GET / HTTP/1.1\r\n", "GET  / HTTP/1.1\r\n", "GET / HTTP/2.0\r\n", "GET / HTTP/1.x\r\n",
            "GET / HTTP/1.1 \r\n", "GET / http/1.1\r\n", "G(T / HTTP/1.1\r\n", "GET /\u{7F} HTTP/1.1\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "GET / HTTP/1.1\r\n folded\r\n", "GET / HTTP/1.1\r\nName : v\r\n",
            "GET / HTTP/1.1\r\n: v\r\n", "GET / HTTP/1.1\r\nX: a\u{1}b\r\n",
        ] {
            #expect(probe(text).isNoMatch, "\(text.debugDescription)")
        }
        // Other protocols are refused at their first bytes.
        #expect(HTTPRequestHead.probe(Fixture.bytes("tls", "openssl-no-sni.bin")).isNoMatch)
        #expect(HTTPRequestHead.probe(Fixture.bytes("ssh", "openssh-9.2.bin")).isNoMatch)
        #expect(HTTPRequestHead.probe(Fixture.bytes("proxy", "haproxy-send-proxy-v2-tcp4.bin")).isNoMatch)
    }

    @Test func lengthIsBounded() {
        #expect(probe(String(repeating: "A", count: 25) + " / HTTP/1.1\r\n").isNoMatch)
        let longTarget = "GET /" + String(repeating: "a", count: HTTPRequestHead.maximumLength)
        #expect(
            probe(String(longTarget.prefix(HTTPRequestHead.maximumLength - 1))).asksForMore(
                than: HTTPRequestHead.maximumLength - 1))
        #expect(probe(longTarget).isNoMatch)
        let manyHeaders = "GET / HTTP/1.1\r\n" + String(repeating: "X: y\r\n", count: 2000)
        #expect(probe(manyHeaders).isNoMatch)
    }
}

@Suite struct SSHBannerTests {
    @Test func openSSHBanner() {
        let banner = SSHBanner.probe(Fixture.bytes("ssh", "openssh-9.2.bin")).details
        #expect(
            banner == SSHBanner(protocolVersion: "2.0", softwareVersion: "OpenSSH_9.2p1", comments: "Debian-2+deb12u10")
        )
    }

    @Test func everyPrefixNeedsMore() {
        let bytes = Fixture.bytes("ssh", "openssh-9.2.bin")
        for count in 0..<bytes.count {
            #expect(SSHBanner.probe(Array(bytes[0..<count])).asksForMore(than: count), "prefix \(count)")
        }
    }

    @Test func versionsAndLineEnds() {
        #expect(SSHBanner.probe(Array("SSH-1.99-Old_1\r\n".utf8)).details?.protocolVersion == "1.99")
        #expect(SSHBanner.probe(Array("SSH-2.0-Go\n".utf8)).details?.softwareVersion == "Go")
        #expect(SSHBanner.probe(Array("SSH-1.".utf8)) == .needMore(atLeast: 9))
        #expect(SSHBanner.probe(Array("SSH-".utf8)) == .needMore(atLeast: 8))
    }

    @Test func malformedBannersAreRejected() {
        for text in [
            "SSH-1.5-old\r\n", "SSH-2.0-\r\n", "SSH-2.0- x\r\n", "SSH-2.0-a\rb\n", "SSH-2.0-a\u{1}\r\n",
            "ssh-2.0-a\r\n",
            "GET / HTTP/1.1\r\n",
        ] {
            #expect(SSHBanner.probe(Array(text.utf8)).isNoMatch, "\(text.debugDescription)")
        }
        #expect(SSHBanner.probe(Array(("SSH-2.0-" + String(repeating: "x", count: 300)).utf8)).isNoMatch)
        #expect(SSHBanner.probe(Array(("SSH-2.0-" + String(repeating: "x", count: 200)).utf8)).asksForMore(than: 208))
    }
}
