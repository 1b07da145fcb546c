#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
import SystemPackage

/// A socket address (`struct sockaddr_storage` and its length), and the one place that turns
/// socket addresses into text.
///
/// The text forms, the same for every module that prints an address:
///
/// | address | text |
/// |---|---|
/// | IPv4 | `1.2.3.4:80` |
/// | IPv6 | `[::1]:80`, with a scope id `[fe80::1%2]:80` |
/// | unix path | `unix:/run/x.sock` |
/// | unix abstract name | `unix:@name`: every byte after the leading NUL, up to the length; bytes outside printable ASCII, and `\`, as `\xNN` |
/// | unnamed unix socket | `unix:` |
/// | no address (length shorter than the family field) | `unknown` |
/// | a family's address cut short | `unknown (family 2, 8 bytes)` |
/// | another family | `family 16` |
public struct SocketAddress: Sendable, CustomStringConvertible {
    private var storage: sockaddr_storage
    /// The number of meaningful bytes of the address, as the kernel reported it.
    public let length: socklen_t

    /// The address in `storage`, of which the first `length` bytes count (at most the size of
    /// `sockaddr_storage`: a longer length is cut to it).
    public init(_ storage: UnsafePointer<sockaddr_storage>, length: socklen_t) {
        self.storage = storage.pointee
        self.length = min(length, socklen_t(MemoryLayout<sockaddr_storage>.size))
    }

    /// An IPv4 address in dotted form and a port; nil when `host` is not one (`inet_pton(3)`).
    public init?(ipv4 host: String, port: UInt16) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &sin.sin_addr) == 1 else { return nil }
        self.init(copying: sin)
    }

    /// An IPv6 address (without brackets), a port and a scope id; nil when `host` is not one.
    public init?(ipv6 host: String, port: UInt16, scopeID: UInt32 = 0) {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_scope_id = scopeID
        guard inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1 else { return nil }
        self.init(copying: sin6)
    }

    /// No address (length 0), described as `unknown`: what is left when the kernel cannot say.
    public static var none: SocketAddress {
        var storage = sockaddr_storage()
        return SocketAddress(&storage, length: 0)
    }

    /// Every local IPv6 address (`in6addr_any`) and a port.
    public static func anyIPv6(port: UInt16) -> SocketAddress {
        var sin6 = sockaddr_in6()
        sin6.sin6_family = sa_family_t(AF_INET6)
        sin6.sin6_port = port.bigEndian
        sin6.sin6_addr = in6addr_any
        return SocketAddress(copying: sin6)
    }

    /// Every local IPv4 address (`INADDR_ANY`) and a port.
    public static func anyIPv4(port: UInt16) -> SocketAddress {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = INADDR_ANY
        return SocketAddress(copying: sin)
    }

    /// A unix socket at a filesystem path, or in the abstract namespace when `path` starts with a
    /// NUL byte; nil when it does not fit `sun_path` (107 bytes and the terminating NUL).
    ///
    /// A path's length counts its terminating NUL; an abstract name's counts exactly its bytes.
    public init?(unixPath path: some Collection<UInt8>) {
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: sun.sun_path)
        let isAbstract = path.first == 0
        guard path.count < capacity || (isAbstract && path.count == capacity) else { return nil }
        withUnsafeMutableBytes(of: &sun.sun_path) { raw in raw.copyBytes(from: path) }
        let offset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        self.init(copying: sun, length: offset + path.count + (isAbstract ? 0 : 1))
    }

    /// A unix socket at `path`, given as text: its UTF-8 bytes, as the byte form above takes them.
    public init?(unixPath path: String) {
        self.init(unixPath: Array(path.utf8))
    }

    private init<Address>(copying address: Address, length: Int = MemoryLayout<Address>.size) {
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { target in
            withUnsafeBytes(of: address) { target.copyMemory(from: $0) }
        }
        self.storage = storage
        self.length = socklen_t(length)
    }

    /// The address family (`AF_INET`, `AF_INET6`, `AF_UNIX`, …); `AF_UNSPEC` when the length
    /// leaves no room for it.
    public var family: Int32 {
        Int(length) >= MemoryLayout<sa_family_t>.size ? Int32(storage.ss_family) : AF_UNSPEC
    }

    /// The address as text, in the forms listed on the type.
    public var description: String {
        withUnsafePointer(to: storage) { Self.describe($0, length: length) }
    }

    /// Calls `body` with the address as the `sockaddr` pointer and length system calls take.
    public func withUnsafeSockaddr<Result, Failure: Error>(
        _ body: (UnsafePointer<sockaddr>, socklen_t) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        var storage = self.storage
        return try withUnsafePointer(to: &storage) { pointer throws(Failure) in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddr throws(Failure) in
                try body(sockaddr, length)
            }
        }
    }

    // MARK: - formatting

    /// The text of `length` bytes of `storage`, in the forms listed on the type. Allocates only
    /// the returned string: a worker formats the peer address `accept4` left in its buffer with
    /// it, on demand.
    public static func describe(_ storage: UnsafePointer<sockaddr_storage>, length: socklen_t) -> String {
        let length = min(Int(length), MemoryLayout<sockaddr_storage>.size)
        guard length >= MemoryLayout<sa_family_t>.size else { return "unknown" }
        let family = Int32(storage.pointee.ss_family)
        switch family {
        case AF_INET:
            guard length >= MemoryLayout<sockaddr_in>.size else { return truncated(family, length) }
            return storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var address = sin.pointee.sin_addr
                let host = presentation(AF_INET, &address)
                return "\(host):\(UInt16(bigEndian: sin.pointee.sin_port))"
            }
        case AF_INET6:
            guard length >= MemoryLayout<sockaddr_in6>.size else { return truncated(family, length) }
            return storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var address = sin6.pointee.sin6_addr
                let host = presentation(AF_INET6, &address)
                let scope = sin6.pointee.sin6_scope_id == 0 ? "" : "%\(sin6.pointee.sin6_scope_id)"
                return "[\(host)\(scope)]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
            }
        case AF_UNIX:
            let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
            // Never past sun_path, whatever length the caller claims: the rest is not the name.
            let end = min(length, MemoryLayout<sockaddr_un>.size)
            let path = UnsafeRawBufferPointer(start: storage, count: end)[pathOffset...]
            guard let first = path.first else { return "unix:" }
            if first == 0 { return "unix:@" + escaped(path.dropFirst()) }
            // A filesystem path ends at its NUL (some callers count it in the length, some not).
            return "unix:" + String(decoding: path.prefix { $0 != 0 }, as: UTF8.self)
        default:
            return "family \(family)"
        }
    }

    private static func truncated(_ family: Int32, _ length: Int) -> String {
        "unknown (family \(family), \(length) bytes)"
    }

    /// `inet_ntop(3)` into a stack buffer.
    private static func presentation(_ family: Int32, _ address: UnsafeRawPointer) -> String {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: Int(INET6_ADDRSTRLEN)) { buffer in
            guard inet_ntop(family, address, buffer.baseAddress, socklen_t(buffer.count)) != nil else { return "?" }
            return String(cString: buffer.baseAddress!)
        }
    }

    /// An abstract name with NULs and other bytes that are not printable ASCII written `\xNN`
    /// (as systemd writes them), so the text stays one line and shows where the name really ends;
    /// `\` too, so the text cannot be mistaken for an escape.
    private static func escaped(_ bytes: Slice<UnsafeRawBufferPointer>) -> String {
        guard bytes.contains(where: { $0 < 0x20 || $0 >= 0x7F || $0 == UInt8(ascii: "\\") }) else {
            return String(decoding: bytes, as: UTF8.self)
        }
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(bytes.count * 4)
        for byte in bytes {
            if byte < 0x20 || byte >= 0x7F || byte == UInt8(ascii: "\\") {
                text += [UInt8(ascii: "\\"), UInt8(ascii: "x"), digits[Int(byte >> 4)], digits[Int(byte & 0xF)]]
            } else {
                text.append(byte)
            }
        }
        return String(decoding: text, as: UTF8.self)
    }

    // MARK: - the kernel's view of a socket

    /// The address `fd` is bound to. The corresponding C function is `getsockname(2)`.
    public static func local(of fd: FileDescriptor) -> Result<SocketAddress, Errno> {
        query(fd) { getsockname($0, $1, $2) }
    }

    /// The address of the peer `fd` is connected to. The corresponding C function is
    /// `getpeername(2)`; it fails with `ENOTCONN` once the peer has reset the connection.
    public static func peer(of fd: FileDescriptor) -> Result<SocketAddress, Errno> {
        query(fd) { getpeername($0, $1, $2) }
    }

    private static func query(
        _ fd: FileDescriptor, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> Result<SocketAddress, Errno> {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                nothingOrErrno { call(fd.rawValue, address, &length) }
            }
        }.map { SocketAddress(&storage, length: length) }
    }
}
