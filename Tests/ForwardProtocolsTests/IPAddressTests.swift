import ForwardProtocols
import Testing

@Suite struct IPAddressTests {
    @Test func canonicalText() {
        for (text, canonical) in [
            ("127.0.0.1", "127.0.0.1"), ("0.0.0.0", "0.0.0.0"), ("::", "::"), ("::1", "::1"),
            ("1::", "1::"), ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"), ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"), ("::ffff:10.1.2.3", "::ffff:10.1.2.3"),
            ("::FFFF:a01:203", "::ffff:10.1.2.3"), ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"),
            ("fe80:0:0:0:1:0:0:0", "fe80::1:0:0:0"),
        ] {
            #expect(IPAddress(text)?.description == canonical, "\(text)")
        }
    }

    @Test func invalidAddresses() {
        for text in [
            "", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1.2.3.4 ", "1..2.3", ":", ":::", "1::2::3",
            "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:1.2.3.4", "12345::", "::1:", ":1::", "g::", "[::1]", "::1%eth0",
            "1:2:3:4:5:6:7:8::", "::1.2.3",
        ] {
            #expect(IPAddress(text) == nil, "\(text)")
        }
    }

    @Test func mappedAddressesUnmap() {
        #expect(IPAddress("::ffff:127.0.0.1")?.unmapped == IPAddress("127.0.0.1"))
        #expect(IPAddress("::1")?.unmapped == IPAddress("::1"))
    }
}

@Suite struct CIDRBlockTests {
    @Test func hostsAndPrefixes() throws {
        let one = try #require(CIDRBlock("127.0.0.1/32"))
        #expect(one.contains(IPAddress("127.0.0.1")!))
        #expect(!one.contains(IPAddress("127.0.0.2")!))
        let ten = try #require(CIDRBlock("10.1.2.3/8"))
        #expect(ten.description == "10.0.0.0/8")
        #expect(ten.contains(IPAddress("10.255.0.1")!))
        #expect(!ten.contains(IPAddress("11.0.0.1")!))
        let loopback6 = try #require(CIDRBlock("::1/128"))
        #expect(loopback6.contains(IPAddress("::1")!))
        #expect(!loopback6.contains(IPAddress("127.0.0.1")!))
        let documentation = try #require(CIDRBlock("2001:db8::/32"))
        #expect(documentation.contains(IPAddress("2001:db8:ffff::1")!))
        #expect(!documentation.contains(IPAddress("2001:db9::1")!))
        #expect(CIDRBlock("192.0.2.7")?.description == "192.0.2.7/32")
        #expect(CIDRBlock("2001:db8::1:2/127")?.description == "2001:db8::1:2/127")
        #expect(CIDRBlock("2001:db8::ffff/65")?.description == "2001:db8::/65")
    }

    @Test func ipv4MappedAddressesMatchIPv4Blocks() throws {
        let block = try #require(CIDRBlock("127.0.0.0/8"))
        #expect(block.contains(IPAddress("::ffff:127.9.9.9")!))
        #expect(!block.contains(IPAddress("::127.9.9.9")!))
        let mapped = try #require(CIDRBlock("::ffff:0:0/96"))
        #expect(mapped.contains(IPAddress("8.8.8.8")!))
        #expect(!mapped.contains(IPAddress("::1")!))
    }

    @Test func wholeSpaces() throws {
        let allIPv4 = try #require(CIDRBlock("0.0.0.0/0"))
        #expect(allIPv4.contains(IPAddress("203.0.113.9")!))
        #expect(!allIPv4.contains(IPAddress("::1")!))
        let everything = try #require(CIDRBlock("::/0"))
        #expect(everything.contains(IPAddress("203.0.113.9")!))
        #expect(everything.contains(IPAddress("fe80::1")!))
        #expect([CIDRBlock]().contains(IPAddress("::1")!) == false)
    }

    @Test func invalidBlocks() {
        for text in [
            "", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/ 8", "::/129",
            "::/0128", "10.0.0.0/8/8", "host/8",
        ] {
            #expect(CIDRBlock(text) == nil, "\(text)")
        }
    }
}
