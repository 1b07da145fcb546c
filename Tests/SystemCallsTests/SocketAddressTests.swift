import SystemCalls
import SystemPackage
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Every text form of ``SocketAddress``, from addresses built byte by byte as the kernel would
/// return them.
@Suite struct SocketAddressFormatTests {
    /// `length` bytes of a `sockaddr_storage` filled by `fill`, formatted by the hot-path entry.
    static func text(length: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) -> String {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { fill($0) }
        return SocketAddress.describe(&storage, length: socklen_t(length))
    }

    static func ipv4(_ host: String, _ port: UInt16, length: Int = MemoryLayout<sockaddr_in>.size) -> String {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        #expect(inet_pton(AF_INET, host, &sin.sin_addr) == 1)
        return text(length: length) { $0.copyBytes(from: withUnsafeBytes(of: sin) { Array($0) }) }
    }

    static func ipv6(
        _ host: String, _ port: UInt16, scope: UInt32 = 0, length: Int = MemoryLayout<sockaddr_in6>.size
    ) -> String {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_scope_id = scope
        #expect(inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1)
        return text(length: length) { $0.copyBytes(from: withUnsafeBytes(of: sin6) { Array($0) }) }
    }

    /// A unix address whose `sun_path` holds `path`, with the length covering exactly those bytes.
    static func unix(_ path: [UInt8]) -> String {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        return text(length: offset + path.count) { raw in
            raw.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
            UnsafeMutableRawBufferPointer(rebasing: raw[offset...]).copyBytes(from: path)
        }
    }

    @Test func ipv4() {
        #expect(Self.ipv4("1.2.3.4", 80) == "1.2.3.4:80")
        #expect(Self.ipv4("127.0.0.1", 65535) == "127.0.0.1:65535")
        #expect(Self.ipv4("0.0.0.0", 0) == "0.0.0.0:0")
    }

    @Test func ipv6IsBracketed() {
        #expect(Self.ipv6("::1", 80) == "[::1]:80")
        #expect(Self.ipv6("2001:db8::1", 443) == "[2001:db8::1]:443")
        #expect(Self.ipv6("::ffff:127.0.0.1", 8080) == "[::ffff:127.0.0.1]:8080")
    }

    @Test func ipv6ScopeIDFollowsThePercentSign() {
        #expect(Self.ipv6("fe80::1", 80, scope: 2) == "[fe80::1%2]:80")
    }

    @Test func unixPathEndsAtItsNUL() {
        #expect(Self.unix(Array("/path".utf8)) == "unix:/path")
        // Some callers count the terminating NUL in the length, or pass the whole structure.
        #expect(Self.unix(Array("/path".utf8) + [0]) == "unix:/path")
        #expect(Self.unix(Array("/path".utf8) + [0, 0, 0, 0x41]) == "unix:/path")
    }

    @Test func abstractNameIsEveryByteOfTheLength() {
        #expect(Self.unix([0] + Array("name".utf8)) == "unix:@name")
        #expect(Self.unix([0] + Array("name".utf8) + [0, 0]) == "unix:@name\\x00\\x00")
        #expect(Self.unix([0] + Array("a".utf8) + [0] + Array("b".utf8)) == "unix:@a\\x00b")
        #expect(Self.unix([0, 0x0A, 0x5C, 0xC3, 0xA9]) == "unix:@\\x0a\\x5c\\xc3\\xa9")
        #expect(Self.unix([0]) == "unix:@")
    }

    @Test func unnamedUnixSocketHasOnlyTheFamily() {
        #expect(Self.unix([]) == "unix:")
    }

    @Test func tooShortForAFamilyIsUnknown() {
        #expect(Self.text(length: 0) { _ in } == "unknown")
        #expect(Self.text(length: 1) { $0[0] = UInt8(AF_INET) } == "unknown")
    }

    @Test func aFamilysAddressCutShortSaysSo() {
        #expect(Self.ipv4("1.2.3.4", 80, length: 8) == "unknown (family 2, 8 bytes)")
        #expect(Self.ipv6("::1", 80, length: 24) == "unknown (family 10, 24 bytes)")
    }

    @Test func anotherFamilyIsNamedByNumber() {
        #expect(
            Self.text(length: 16) { $0.storeBytes(of: sa_family_t(AF_NETLINK), as: sa_family_t.self) } == "family 16")
    }

    @Test func aLengthBeyondTheStorageIsClamped() {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let text = Self.text(length: 100_000) { raw in
            raw.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
            UnsafeMutableRawBufferPointer(rebasing: raw[offset...]).copyBytes(from: Array("/p".utf8))
        }
        #expect(text == "unix:/p")
    }

    @Test func anAbstractNameEndsWithSunPath() {
        // A length of the whole sockaddr_storage: the bytes after sun_path are not part of the name.
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        let text = Self.text(length: MemoryLayout<sockaddr_storage>.size) { raw in
            raw.storeBytes(of: sa_family_t(AF_UNIX), as: sa_family_t.self)
            UnsafeMutableRawBufferPointer(rebasing: raw[offset...]).copyBytes(from: [0] + Array("n".utf8))
            for index in MemoryLayout<sockaddr_un>.size..<raw.count { raw[index] = 0x7A }  // "z", not the name
        }
        #expect(text == "unix:@n" + String(repeating: "\\x00", count: 108 - 2))
    }
}

@Suite struct SocketAddressValueTests {
    @Test func constructedAddressesDescribeThemselves() throws {
        #expect(try #require(SocketAddress(ipv4: "192.0.2.7", port: 54321)).description == "192.0.2.7:54321")
        #expect(try #require(SocketAddress(ipv6: "fe80::1", port: 80, scopeID: 3)).description == "[fe80::1%3]:80")
        #expect(SocketAddress.anyIPv4(port: 9).description == "0.0.0.0:9")
        #expect(SocketAddress.anyIPv6(port: 9).description == "[::]:9")
        #expect(try #require(SocketAddress(unixPath: "/run/x.sock")).description == "unix:/run/x.sock")
        #expect(try #require(SocketAddress(unixPath: [0] + Array("ab".utf8))).description == "unix:@ab")
    }

    @Test func familyAndLength() throws {
        let v4 = try #require(SocketAddress(ipv4: "127.0.0.1", port: 1))
        #expect(v4.family == AF_INET && Int(v4.length) == MemoryLayout<sockaddr_in>.size)
        let path = try #require(SocketAddress(unixPath: "/a"))
        #expect(path.family == AF_UNIX && path.length == 2 + 3)  // family, "/a", NUL
        let abstract = try #require(SocketAddress(unixPath: [0, 0x61]))
        #expect(abstract.length == 2 + 2)  // no NUL added to an abstract name
    }

    @Test func textThatIsNotAnAddressIsRefused() {
        #expect(SocketAddress(ipv4: "localhost", port: 1) == nil)
        #expect(SocketAddress(ipv4: "::1", port: 1) == nil)
        #expect(SocketAddress(ipv6: "127.0.0.1", port: 1) == nil)
        #expect(SocketAddress(ipv6: "[::1]", port: 1) == nil)
    }

    @Test func unixPathsMustFitSunPath() {
        #expect(SocketAddress(unixPath: "/" + String(repeating: "a", count: 106)) != nil)  // 107 + NUL
        #expect(SocketAddress(unixPath: "/" + String(repeating: "a", count: 107)) == nil)
        #expect(SocketAddress(unixPath: [0] + [UInt8](repeating: 0x61, count: 107)) != nil)  // no NUL needed
        #expect(SocketAddress(unixPath: [0] + [UInt8](repeating: 0x61, count: 108)) == nil)
    }
}

/// ``SocketAddress/local(of:)``, ``SocketAddress/peer(of:)`` and the socket wrappers on real sockets.
@Suite struct SocketOperationTests {
    @Test func boundTCPSocketReportsItsPort() throws {
        let socket = try FileDescriptor.socket(family: AF_INET, type: Int32(SOCK_STREAM.rawValue)).get()
        defer { try? socket.close() }
        #expect(fcntl(socket.rawValue, F_GETFD) & FD_CLOEXEC != 0)
        try socket.bind(to: #require(SocketAddress(ipv4: "127.0.0.1", port: 0))).get()
        try socket.listen(backlog: 4).get()
        let local = try SocketAddress.local(of: socket).get()
        #expect(local.family == AF_INET)
        #expect(local.description.hasPrefix("127.0.0.1:"))
        #expect(local.description != "127.0.0.1:0")

        let client = try FileDescriptor.socket(family: AF_INET, type: Int32(SOCK_STREAM.rawValue)).get()
        defer { try? client.close() }
        try client.connect(to: local).get()
        #expect(try SocketAddress.peer(of: client).get().description == local.description)
    }

    @Test func abstractUnixSocketKeepsItsWholeName() throws {
        let name: [UInt8] = [0] + Array("systemcalls-test-\(getpid())".utf8) + [0, 0x78]
        let socket = try FileDescriptor.socket(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue)).get()
        defer { try? socket.close() }
        try socket.bind(to: #require(SocketAddress(unixPath: name))).get()
        let text = try SocketAddress.local(of: socket).get().description
        #expect(text == "unix:@systemcalls-test-\(getpid())\\x00x")
    }

    @Test func failuresCarryTheErrno() throws {
        #expect(throws: Errno.badFileDescriptor) { try SocketAddress.local(of: FileDescriptor(rawValue: -1)).get() }
        let socket = try FileDescriptor.socket(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue)).get()
        defer { try? socket.close() }
        #expect(throws: Errno.socketNotConnected) { try SocketAddress.peer(of: socket).get() }
        let nowhere = try #require(SocketAddress(unixPath: "/nonexistent-\(getpid())/x.sock"))
        #expect(
            throws: SystemCallError("connect", "unix:/nonexistent-\(getpid())/x.sock", errno: .noSuchFileOrDirectory)
        ) {
            try socket.connect(to: nowhere).get("connect", nowhere.description)
        }
    }

    @Test func optionsAreSet() throws {
        let socket = try FileDescriptor.socket(family: AF_INET, type: Int32(SOCK_STREAM.rawValue)).get()
        defer { try? socket.close() }
        try socket.setOption(level: SOL_SOCKET, SO_REUSEADDR, to: 1).get()
        var flag: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        #expect(getsockopt(socket.rawValue, SOL_SOCKET, SO_REUSEADDR, &flag, &length) == 0 && flag == 1)
        try socket.setTimeoutOption(SO_RCVTIMEO, seconds: 2.5).get()
        var timeout = timeval()
        length = socklen_t(MemoryLayout<timeval>.size)
        #expect(getsockopt(socket.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, &length) == 0)
        // The kernel keeps the timeout in clock ticks: the value read back is rounded to one.
        #expect(timeout.tv_sec == 2 && abs(timeout.tv_usec - 500_000) <= 10_000)
    }
}
