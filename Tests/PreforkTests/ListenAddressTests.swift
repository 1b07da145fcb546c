import Testing

@testable import Prefork

@Suite struct ListenAddressTests {
    @Test(arguments: [
        ("127.0.0.1:11000", ListenAddress.ipv4(host: "127.0.0.1", port: 11000)),
        ("[::1]:8080", .ipv6(host: "::1", port: 8080)),
        ("*:0", .any(port: 0)),
        ("unix:/run/preforkd.sock", .unix(path: "/run/preforkd.sock")),
        ("0.0.0.0:65535", .ipv4(host: "0.0.0.0", port: 65535)),
    ])
    func parsesValidForms(text: String, expected: ListenAddress) throws {
        let parsed = try ListenAddress(parsing: text)
        #expect(parsed == expected)
        #expect(parsed.description == text)
    }

    @Test(arguments: [
        ("localhost:80", "not an IPv4 address"),
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:70000", "the port must be a number"),
        ("127.0.0.1:-1", "the port must be a number"),
        ("::1:80", "needs brackets"),
        ("[::zz]:80", "is not an IPv6 address"),
        ("unix:relative.sock", "must be absolute"),
        ("unix:/" + String(repeating: "x", count: 120), "shorter than 108"),
    ])
    func rejectsInvalidFormsNamingTheText(text: String, reason: String) {
        #expect {
            try ListenAddress(parsing: text)
        } throws: { error in
            let description = "\(error)"
            return description.contains("'\(text)'") && description.contains(reason)
        }
    }
}

@Suite struct StoredNameTests {
    @Test(arguments: [
        ("127.0.0.1:11000", "stored-127.0.0.1_11000"),
        ("[::1]:80", "stored-[__1]_80"),
        ("*:0", "stored-*_0"),
        ("unix:/run/preforkd.sock", "stored-unix_/run/preforkd.sock"),
    ])
    func storedNamesAreValidSystemdFdNames(text: String, expected: String) throws {
        let name = ListenerAcquisition.storedName(for: try ListenAddress(parsing: text))
        #expect(name == expected)
        // systemd's fdname_is_valid: printable ASCII, no ':', at most 255 bytes.
        #expect(name.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") })
        #expect(name.utf8.count <= 255)
    }
}
