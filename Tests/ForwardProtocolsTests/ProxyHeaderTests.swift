import ForwardProtocols
import Testing

@Suite struct ProxyHeaderTests {
    func endpoint(_ address: String, _ port: UInt16) -> IPEndpoint {
        IPEndpoint(address: IPAddress(address)!, port: port)
    }

    @Test func haproxyV1TCP4() throws {
        let bytes = Fixture.bytes("proxy", "haproxy-send-proxy-v1-tcp4.bin")
        let header = try #require(ProxyHeader.parse(bytes).details)
        #expect(
            header
                == ProxyHeader(
                    version: .v1, source: endpoint("127.0.0.1", 43088), destination: endpoint("127.0.0.1", 21010),
                    length: 44))
        #expect(bytes[header.length...].starts(with: Array("GET / HTTP/1.0\r\n".utf8)))
        // What we send is what haproxy sends.
        #expect(ProxyHeader.encode(.v1, source: header.source, destination: header.destination) == Array(bytes[0..<44]))
    }

    @Test func haproxyV1TCP6AndCurl() throws {
        let tcp6 = try #require(ProxyHeader.parse(Fixture.bytes("proxy", "haproxy-send-proxy-v1-tcp6.bin")).details)
        #expect(tcp6.source == endpoint("::1", 45352))
        #expect(tcp6.destination == endpoint("::1", 21014))
        let curl = try #require(ProxyHeader.parse(Fixture.bytes("proxy", "curl-haproxy-protocol-v1.bin")).details)
        #expect(curl.source?.address == IPAddress("127.0.0.1"))
        #expect(curl.destination?.port == 21006)
    }

    @Test func haproxyV2TCP4() throws {
        let bytes = Fixture.bytes("proxy", "haproxy-send-proxy-v2-tcp4.bin")
        let header = try #require(ProxyHeader.parse(bytes).details)
        #expect(
            header
                == ProxyHeader(
                    version: .v2, source: endpoint("127.0.0.1", 60196), destination: endpoint("127.0.0.1", 21012),
                    length: 28))
        #expect(ProxyHeader.encode(.v2, source: header.source, destination: header.destination) == Array(bytes[0..<28]))
    }

    @Test func haproxyV2TCP6WithTLVs() throws {
        let bytes = Fixture.bytes("proxy", "haproxy-send-proxy-v2-tcp6-tlvs.bin")
        let header = try #require(ProxyHeader.parse(bytes).details)
        #expect(header.length == 16 + 128)
        #expect(header.source == endpoint("::1", 60960))
        #expect(Array(bytes[header.length...]) == Array("hello".utf8))
    }

    @Test(arguments: [
        "haproxy-send-proxy-v1-tcp4.bin", "haproxy-send-proxy-v1-tcp6.bin", "haproxy-send-proxy-v2-tcp4.bin",
        "haproxy-send-proxy-v2-tcp6-tlvs.bin",
    ])
    func everyPrefixNeedsMore(name: String) throws {
        let bytes = Fixture.bytes("proxy", name)
        let length = try #require(ProxyHeader.parse(bytes).details?.length)
        for count in 0..<length {
            let answer = ProxyHeader.parse(Array(bytes[0..<count]))
            #expect(answer.asksForMore(than: count), "prefix \(count): \(answer)")
            if case .needMore(let atLeast) = answer { #expect(atLeast <= length) }
        }
    }

    @Test func onlyTheAcceptedVersionsAreRead() {
        let v1 = Fixture.bytes("proxy", "haproxy-send-proxy-v1-tcp4.bin")
        let v2 = Fixture.bytes("proxy", "haproxy-send-proxy-v2-tcp4.bin")
        #expect(ProxyHeader.parse(v1, accepting: [.v2]).isNoMatch)
        #expect(ProxyHeader.parse(v2, accepting: [.v1]).isNoMatch)
        #expect(ProxyHeader.parse(v1, accepting: [.v1]).details != nil)
        #expect(ProxyHeader.parse(v2, accepting: [.v2]).details != nil)
        #expect(ProxyHeader.parse(Array("GET / HTTP/1.1\r\n".utf8)).isNoMatch)
        #expect(ProxyHeader.parse(Array("PROXX".utf8)).isNoMatch)
        #expect(ProxyHeader.parse(v1, accepting: []).isNoMatch)
        #expect(ProxyHeader.parse([], accepting: [.v1, .v2]) == .needMore(atLeast: 15))
        #expect(ProxyHeader.parse([], accepting: [.v2]) == .needMore(atLeast: 16))
    }

    @Test func v1UnknownAndLimits() {
        let unknown = ProxyHeader.parse(Array("PROXY UNKNOWN\r\nrest".utf8)).details
        #expect(unknown == ProxyHeader(version: .v1, source: nil, destination: nil, length: 15))
        #expect(ProxyHeader.parse(Array("PROXY UNKNOWN ffff::1 ::1 1 2\r\n".utf8)).details?.source == nil)
        // 107 bytes is the longest line; a longer one is refused however it goes on.
        let padded = "PROXY UNKNOWN " + String(repeating: "x", count: 91) + "\r\n"
        #expect(padded.utf8.count == 107)
        #expect(ProxyHeader.parse(Array(padded.utf8)).details?.length == 107)
        let tooLong = "PROXY UNKNOWN " + String(repeating: "x", count: 92) + "\r\n"
        #expect(ProxyHeader.parse(Array(tooLong.utf8)).isNoMatch)
        #expect(ProxyHeader.parse(Array(String(repeating: "PROXY ", count: 30).utf8)).isNoMatch)
    }

    @Test func malformedV1IsRejected() {
        for line in [
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "PROXY UNKNOWNX\r\n", "PROXY \r\n", "PROXY TCP4 \r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\u{1}\r\n", "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
        ] {
            #expect(ProxyHeader.parse(Array(line.utf8)).isNoMatch, "\(line.debugDescription)")
        }
        // A control byte ends the wait for the line at once.
        #expect(ProxyHeader.parse(Array("PROXY TCP4 1.2\u{0}".utf8)).isNoMatch)
    }

    func v2(command: UInt8 = 0x21, family: UInt8 = 0x11, block: [UInt8]) -> [UInt8] {
        Array("\r\n\r\n\0\r\nQUIT\n".utf8) + [command, family, UInt8(block.count >> 8), UInt8(block.count & 0xFF)]
            + block
    }

    @Test func v2LocalUnspecAndUnix() {
        let local = ProxyHeader.encodeV2Local()
        #expect(
            ProxyHeader.parse(local).details == ProxyHeader(version: .v2, source: nil, destination: nil, length: 16))
        // LOCAL skips whatever block it carries.
        #expect(ProxyHeader.parse(v2(command: 0x20, family: 0x11, block: [1, 2, 3])).details?.length == 19)
        #expect(ProxyHeader.parse(v2(family: 0x00, block: [])).details?.source == nil)
        let unix = ProxyHeader.parse(v2(family: 0x31, block: Array(repeating: 0, count: 216)))
        #expect(unix.details?.length == 232)
        #expect(unix.details?.source == nil)
    }

    @Test func malformedV2IsRejected() {
        let block: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 0, 80, 0, 81]
        #expect(ProxyHeader.parse(v2(block: block)).details?.source == endpoint("1.2.3.4", 80))
        #expect(ProxyHeader.parse(v2(command: 0x11, block: block)).isNoMatch)  // version 1
        #expect(ProxyHeader.parse(v2(command: 0x22, block: block)).isNoMatch)  // command 2
        #expect(ProxyHeader.parse(v2(family: 0x41, block: block)).isNoMatch)  // family 4
        #expect(ProxyHeader.parse(v2(family: 0x12, block: block)).isNoMatch)  // datagram
        #expect(ProxyHeader.parse(v2(block: Array(block.dropLast()))).isNoMatch)  // short for IPv4
        #expect(ProxyHeader.parse(v2(family: 0x21, block: block)).isNoMatch)  // short for IPv6
        // TLVs: one that fits, one whose length runs past the block, a truncated TLV header.
        #expect(ProxyHeader.parse(v2(block: block + [0x05, 0, 2, 9, 9])).details?.length == 33)
        #expect(ProxyHeader.parse(v2(block: block + [0x05, 0, 3, 9, 9])).isNoMatch)
        #expect(ProxyHeader.parse(v2(block: block + [0x05, 0])).isNoMatch)
        // A block over the 2 KiB limit is refused before it arrives.
        let huge = Array("\r\n\r\n\0\r\nQUIT\n".utf8) + [0x21, 0x11, 0x08, 0x01]
        #expect(ProxyHeader.parse(huge).isNoMatch)
        #expect(ProxyHeader.parse(Array("\r\n\r\n\0\r\nQUIT\n".utf8) + [0x21, 0x11, 0xFF, 0xFF]).isNoMatch)
        #expect(ProxyHeader.parse(Array("\r\n\r\n\0\r\nQUIX".utf8)).isNoMatch)
    }

    /// The length field set to every value: shorter than the addresses is malformed, longer than
    /// the bytes asks for exactly the claimed length, and only TLV boundaries parse.
    @Test func v2LengthFieldLyingEverywhere() {
        let bytes = Fixture.bytes("proxy", "haproxy-send-proxy-v2-tcp6-tlvs.bin")
        let realLength = 128
        for claimed in 0...600 {
            var edited = bytes
            edited[14] = UInt8(claimed >> 8)
            edited[15] = UInt8(claimed & 0xFF)
            let answer = ProxyHeader.parse(edited)
            if claimed < 36 {
                #expect(answer.isNoMatch, "\(claimed)")
            } else if 16 + claimed > edited.count {
                #expect(answer == .needMore(atLeast: 16 + claimed), "\(claimed)")
            } else if claimed == 36 || claimed == realLength {
                #expect(answer.details?.length == 16 + claimed, "\(claimed)")
            } else {
                // Inside a TLV or running into the payload: never a header of the wrong length
                // unless the payload bytes happen to form TLVs.
                if let header = answer.details { #expect(header.length == 16 + claimed) }
            }
        }
    }

    @Test func encodingRoundTrips() {
        let pairs: [(IPEndpoint?, IPEndpoint?)] = [
            (endpoint("192.0.2.1", 1), endpoint("198.51.100.2", 65535)),
            (endpoint("2001:db8::1", 443), endpoint("::1", 0)),
            (nil, nil),
        ]
        for (source, destination) in pairs {
            for version in [ProxyProtocolVersion.v1, .v2] {
                let bytes = ProxyHeader.encode(version, source: source, destination: destination)
                let header = ProxyHeader.parse(bytes + [0x47]).details
                #expect(header?.source == source)
                #expect(header?.destination == destination)
                #expect(header?.length == bytes.count)
                #expect(header?.version == version)
            }
        }
        #expect(ProxyHeader.encode(.v1, source: nil, destination: nil) == Array("PROXY UNKNOWN\r\n".utf8))
    }

    @Test func mixedFamiliesAreSentAsIPv6() {
        let source = endpoint("192.0.2.1", 1000)
        let destination = endpoint("2001:db8::2", 443)
        let line = ProxyHeader.encode(.v1, source: source, destination: destination)
        #expect(String(decoding: line, as: UTF8.self) == "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1000 443\r\n")
        let header = ProxyHeader.parse(ProxyHeader.encode(.v2, source: source, destination: destination)).details
        #expect(header?.source?.address.unmapped == source.address)
        #expect(header?.destination == destination)
    }
}
