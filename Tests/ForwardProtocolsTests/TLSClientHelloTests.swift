import ForwardProtocols
import Testing

/// Builds ClientHellos field by field, so that each length can be made to lie on its own.
struct HelloBuilder {
    var legacyVersion: [UInt8] = [3, 3]
    var sessionID: [UInt8] = Array(repeating: 7, count: 32)
    var cipherSuites: [UInt8] = [0x13, 0x01, 0x13, 0x02]
    var compression: [UInt8] = [0]
    var extensions: [[UInt8]] = []
    var omitExtensionsBlock = false

    static func u16(_ value: Int) -> [UInt8] { [UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)] }

    static func serverNameExtension(_ name: String, nameType: UInt8 = 0) -> [UInt8] {
        let entry = [nameType] + u16(name.utf8.count) + Array(name.utf8)
        let list = u16(entry.count) + entry
        return [0, 0] + u16(list.count) + list
    }

    static func alpnExtension(_ names: [String]) -> [UInt8] {
        let entries = names.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
        let list = u16(entries.count) + entries
        return [0, 16] + u16(list.count) + list
    }

    /// The handshake message: type, 3-byte length, body.
    var handshake: [UInt8] {
        var body = legacyVersion + Array(repeating: 0xAB, count: 32)
        body += [UInt8(sessionID.count)] + sessionID
        body += HelloBuilder.u16(cipherSuites.count) + cipherSuites
        body += [UInt8(compression.count)] + compression
        if !omitExtensionsBlock {
            let all = extensions.flatMap { $0 }
            body += HelloBuilder.u16(all.count) + all
        }
        return [1, UInt8(body.count >> 16), UInt8(body.count >> 8 & 0xFF), UInt8(body.count & 0xFF)] + body
    }

    /// `message` cut into handshake records of the given fragment sizes (the last one repeats).
    static func records(_ message: [UInt8], fragments: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        var offset = 0
        var index = 0
        while offset < message.count {
            let size = min(fragments[min(index, fragments.count - 1)], message.count - offset)
            out += [22, 3, 1] + u16(size) + message[offset..<offset + size]
            offset += size
            index += 1
        }
        return out
    }
}

@Suite struct TLSClientHelloTests {
    @Test func opensslClientHelloGivesServerNameAndALPN() {
        let bytes = Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin")
        let hello = TLSClientHello.probe(bytes).details
        #expect(
            hello == TLSClientHello(legacyVersion: 0x0303, serverName: "one.test", alpnProtocols: ["h2", "http/1.1"]))
    }

    @Test func helloWithoutServerNameHasNone() {
        let hello = TLSClientHello.probe(Fixture.bytes("tls", "openssl-no-sni.bin")).details
        #expect(hello != nil)
        #expect(hello?.serverName == nil)
        #expect(hello?.alpnProtocols == [])
    }

    @Test func serverNameIsLowerCased() {
        let hello = TLSClientHello.probe(Fixture.bytes("tls", "openssl-tls1.2-sni-mixed-case.bin")).details
        #expect(hello?.serverName == "two.example.org")
    }

    @Test func curlClientHello() {
        let hello = TLSClientHello.probe(Fixture.bytes("tls", "curl-https-one.test.bin")).details
        #expect(hello?.serverName == "one.test")
        #expect(hello?.alpnProtocols.contains("http/1.1") == true)
    }

    /// Every prefix of a real ClientHello asks for more, never for more than the whole, and the
    /// complete one gives the answer.
    @Test(arguments: ["openssl-sni-one.test-alpn-h2-http1.1.bin", "openssl-no-sni.bin", "curl-https-one.test.bin"])
    func everyPrefixNeedsMoreUntilComplete(name: String) {
        let bytes = Fixture.bytes("tls", name)
        for count in 0..<bytes.count {
            let answer = TLSClientHello.probe(Array(bytes[0..<count]))
            #expect(answer.asksForMore(than: count), "prefix \(count): \(answer)")
            if case .needMore(let atLeast) = answer { #expect(atLeast <= bytes.count) }
        }
        #expect(TLSClientHello.probe(bytes).details != nil)
    }

    /// The same ClientHello cut into records of many sizes (down to one byte, which also splits
    /// the handshake header) and read byte by byte gives the same answer once complete.
    @Test(arguments: [[1], [3], [7, 1000], [100], [4, 1], [5000]])
    func helloSplitAcrossRecordsAndReads(fragments: [Int]) {
        let original = Fixture.bytes("tls", "openssl-sni-one.test-alpn-h2-http1.1.bin")
        let expected = TLSClientHello.probe(original)
        let message = Array(original[5...])
        let bytes = HelloBuilder.records(message, fragments: fragments)
        var previous = 0
        for count in 0..<bytes.count {
            let answer = TLSClientHello.probe(Array(bytes[0..<count]))
            #expect(answer.asksForMore(than: count), "prefix \(count) of \(fragments): \(answer)")
            if case .needMore(let atLeast) = answer {
                #expect(atLeast <= bytes.count)
                #expect(atLeast >= previous)
                previous = atLeast
            }
        }
        #expect(TLSClientHello.probe(bytes) == expected)
    }

    @Test func builtHelloParses() {
        var builder = HelloBuilder()
        builder.extensions = [HelloBuilder.serverNameExtension("A.Example.COM"), HelloBuilder.alpnExtension(["h2"])]
        let hello = TLSClientHello.probe(HelloBuilder.records(builder.handshake, fragments: [16384])).details
        #expect(hello == TLSClientHello(legacyVersion: 0x0303, serverName: "a.example.com", alpnProtocols: ["h2"]))
    }

    @Test func helloWithoutExtensionsBlockMatches() {
        var builder = HelloBuilder()
        builder.omitExtensionsBlock = true
        let hello = TLSClientHello.probe(HelloBuilder.records(builder.handshake, fragments: [16384])).details
        #expect(hello == TLSClientHello(legacyVersion: 0x0303, serverName: nil, alpnProtocols: []))
    }

    @Test func otherProtocolsAndGarbageDoNotMatch() {
        // An SSLv2-compatible hello, HTTP, SSH, an alert record, an application-data record.
        #expect(TLSClientHello.probe([0x80, 0x2E, 0x01, 0x03, 0x01, 0x00, 0x15]).isNoMatch)
        #expect(TLSClientHello.probe(Array("GET / HTTP/1.1\r\n".utf8)).isNoMatch)
        #expect(TLSClientHello.probe(Array("SSH-2.0-x\r\n".utf8)).isNoMatch)
        #expect(TLSClientHello.probe([21, 3, 3, 0, 2, 2, 40]).isNoMatch)
        #expect(TLSClientHello.probe([23, 3, 3, 0, 1, 0]).isNoMatch)
        // A handshake record that is not a ClientHello (a ServerHello), a record version 4.0.
        #expect(TLSClientHello.probe([22, 3, 3, 0, 4, 2, 0, 0, 0]).isNoMatch)
        #expect(TLSClientHello.probe([22, 4, 0, 0, 4]).isNoMatch)
        #expect(TLSClientHello.probe([]) == .needMore(atLeast: 9))
    }

    @Test func recordLengthsThatLieAreRejected() {
        // Zero-length handshake records, and records longer than TLS allows.
        #expect(TLSClientHello.probe([22, 3, 1, 0, 0, 22, 3, 1, 0, 0]).isNoMatch)
        #expect(TLSClientHello.probe([22, 3, 1, 0x40, 0x01, 1, 0, 0, 0]).isNoMatch)
        #expect(TLSClientHello.probe([22, 3, 1, 0xFF, 0xFF]).isNoMatch)
        // A record shorter than the handshake it starts, followed by a non-handshake record.
        var builder = HelloBuilder()
        builder.extensions = [HelloBuilder.serverNameExtension("one.test")]
        var bytes = HelloBuilder.records(builder.handshake, fragments: [10, 100_000])
        bytes[15] = 23
        #expect(TLSClientHello.probe(bytes).isNoMatch)
    }

    @Test func handshakeLengthsThatLie() {
        var builder = HelloBuilder()
        builder.extensions = [HelloBuilder.serverNameExtension("one.test")]
        let handshake = builder.handshake
        // Longer than the bytes present: more is needed (the claim is not allocated up front).
        var longer = handshake
        longer[3] &+= 1
        #expect(
            TLSClientHello.probe(HelloBuilder.records(longer, fragments: [16384])).asksForMore(
                than: handshake.count + 5))
        // Shorter than its fields: malformed.
        var shorter = handshake
        shorter[3] &-= 1
        #expect(TLSClientHello.probe(HelloBuilder.records(Array(shorter.dropLast()), fragments: [16384])).isNoMatch)
        // Over the 16 KiB cap: rejected at once, before any body byte arrives.
        #expect(TLSClientHello.probe([22, 3, 1, 0x40, 0x00, 1, 0x00, 0x40, 0x00]).isNoMatch)
        #expect(TLSClientHello.probe([22, 3, 1, 0x40, 0x00, 1, 0xFF, 0xFF, 0xFF]).isNoMatch)
    }

    @Test func everyInnerLengthThatLiesIsMalformed() {
        func probe(_ edit: (inout HelloBuilder) -> Void, patch: ((inout [UInt8]) -> Void)? = nil) -> ProbeResult<
            TLSClientHello
        > {
            var builder = HelloBuilder()
            builder.extensions = [HelloBuilder.serverNameExtension("one.test"), HelloBuilder.alpnExtension(["h2"])]
            edit(&builder)
            var handshake = builder.handshake
            patch?(&handshake)
            return TLSClientHello.probe(HelloBuilder.records(handshake, fragments: [16384]))
        }
        #expect(probe { _ in }.details != nil)
        #expect(probe { $0.legacyVersion = [2, 0] }.isNoMatch)
        #expect(probe { $0.sessionID = Array(repeating: 1, count: 33) }.isNoMatch)
        #expect(probe { $0.cipherSuites = [0x13] }.isNoMatch)
        #expect(probe { $0.cipherSuites = [] }.isNoMatch)
        #expect(probe { $0.compression = [] }.isNoMatch)
        // Session id length byte is at 4 + 2 + 32.
        #expect(probe({ _ in }, patch: { $0[38] = 200 }).isNoMatch)
        // Extensions block length, one too long and one too short.
        let extensionsAt = 4 + 2 + 32 + 33 + 2 + 4 + 2
        #expect(probe({ _ in }, patch: { $0[extensionsAt + 1] &+= 1 }).isNoMatch)
        #expect(probe({ _ in }, patch: { $0[extensionsAt + 1] &-= 1 }).isNoMatch)
        // The SNI extension's own length, its list length, its name length.
        let sniAt = extensionsAt + 2
        for (offset, delta) in [(3, 1), (3, -1), (5, 1), (5, -1), (8, 1), (8, -1)] {
            #expect(
                probe({ _ in }, patch: { $0[sniAt + offset] = UInt8(Int($0[sniAt + offset]) + delta) }).isNoMatch,
                "SNI byte \(offset) \(delta)")
        }
        // The ALPN list length and a name length.
        let alpnAt = sniAt + HelloBuilder.serverNameExtension("one.test").count
        for (offset, delta) in [(3, 1), (5, 1), (5, -1), (6, 1), (6, -1)] {
            #expect(
                probe({ _ in }, patch: { $0[alpnAt + offset] = UInt8(Int($0[alpnAt + offset]) + delta) }).isNoMatch,
                "ALPN byte \(offset) \(delta)")
        }
    }

    @Test func malformedServerNamesAndALPNAreRejected() {
        func probe(_ extensions: [[UInt8]]) -> ProbeResult<TLSClientHello> {
            var builder = HelloBuilder()
            builder.extensions = extensions
            return TLSClientHello.probe(HelloBuilder.records(builder.handshake, fragments: [16384]))
        }
        #expect(probe([HelloBuilder.serverNameExtension("one.test")]).details?.serverName == "one.test")
        for bad in [
            "", "one.test.", ".one.test", "one..test", "one test", "one.test\0", "bad/name", "ü.test",
            String(repeating: "a", count: 64) + ".test", String(repeating: "a.", count: 127) + "ab",
        ] {
            #expect(probe([HelloBuilder.serverNameExtension(bad)]).isNoMatch, "\(bad)")
        }
        // Two server_name extensions, two host_names in one, an empty list.
        let sni = HelloBuilder.serverNameExtension("one.test")
        #expect(probe([sni, sni]).isNoMatch)
        let twoNames: [UInt8] = [0, 0, 0, 14, 0, 12, 0, 0, 3] + Array("a.b".utf8) + [0, 0, 3] + Array("c.d".utf8)
        #expect(probe([twoNames]).isNoMatch)
        #expect(probe([[0, 0, 0, 2, 0, 0]]).isNoMatch)
        // Another name type alone is skipped: no host name.
        let otherType = HelloBuilder.serverNameExtension("x", nameType: 9)
        #expect(probe([otherType]).details?.serverName == nil)
        #expect(probe([otherType]).details != nil)
        // ALPN: empty name, empty list, duplicated extension.
        #expect(probe([HelloBuilder.alpnExtension(["h2", ""])]).isNoMatch)
        #expect(probe([[0, 16, 0, 2, 0, 0]]).isNoMatch)
        #expect(probe([HelloBuilder.alpnExtension(["h2"]), HelloBuilder.alpnExtension(["h2"])]).isNoMatch)
    }

    @Test func alpnHelpers() {
        let hello = TLSClientHello(legacyVersion: 0x0303, serverName: nil, alpnProtocols: ["h2", "http/1.1"])
        #expect(hello.offersALPN(anyOf: []))
        #expect(hello.offersALPN(anyOf: ["http/1.1"]))
        #expect(!hello.offersALPN(anyOf: ["HTTP/1.1", "acme-tls/1"]))
        #expect(hello.firstOfferedALPN(among: ["http/1.1", "h2"]) == "h2")
        let none = TLSClientHello(legacyVersion: 0x0303, serverName: nil, alpnProtocols: [])
        #expect(!none.offersALPN(anyOf: ["h2"]))
    }
}

@Suite struct ServerNamePatternTests {
    @Test func exactNamesIgnoreCase() throws {
        let pattern = try #require(ServerNamePattern("Example.COM"))
        #expect(pattern.description == "example.com")
        #expect(pattern.matches("example.com"))
        #expect(pattern.matches("EXAMPLE.com"))
        #expect(!pattern.matches("www.example.com"))
        #expect(!pattern.matches("example.co"))
    }

    @Test func wildcardStandsForExactlyOneLabel() throws {
        let pattern = try #require(ServerNamePattern("*.example.org"))
        #expect(pattern.isWildcard)
        #expect(pattern.description == "*.example.org")
        #expect(pattern.matches("www.example.org"))
        #expect(pattern.matches("A.Example.Org"))
        #expect(!pattern.matches("example.org"))
        #expect(!pattern.matches(".example.org"))
        #expect(!pattern.matches("a.b.example.org"))
        #expect(!pattern.matches("wwwexample.org"))
        #expect(!pattern.matches("www.example.org.evil"))
    }

    @Test func invalidPatternsAreRefused() {
        for text in [
            "", "*", "*.", "**.a", "a.*.b", "f*.example.com", "*example.com", "example.com.", "a b",
            "*.*.example.com",
        ] {
            #expect(ServerNamePattern(text) == nil, "\(text)")
        }
    }

    @Test func aListMatchesWhenAnyEntryDoes() {
        let list = ["example.com", "*.example.org"].compactMap(ServerNamePattern.init)
        #expect(list.matches("x.example.org"))
        #expect(list.matches("example.com"))
        #expect(!list.matches("example.org"))
    }
}
