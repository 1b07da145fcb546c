import Glibc

/// A file's identity (device, inode): two descriptors with the same one refer to the same open
/// socket or file.
public typealias FileIdentity = (device: UInt64, inode: UInt64)

/// The identity of `fd`, nil when it is not open.
public func fileIdentity(_ fd: Int32) -> FileIdentity? {
    var status = stat()
    guard fstat(fd, &status) == 0 else { return nil }
    return (UInt64(status.st_dev), UInt64(status.st_ino))
}

/// Creates a socket with FD_CLOEXEC set atomically, so no concurrently spawned child inherits it.
public func makeSocket(_ family: Int32, _ type: __socket_type) throws -> Int32 {
    let fd = socket(family, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
    return fd
}

/// bind(2) with any sockaddr_* value; `length` defaults to the value's size.
public func bindAddress<Address>(_ fd: Int32, _ address: Address, length: Int? = nil) throws {
    var address = address
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(length ?? MemoryLayout<Address>.size))
        }
    }
    guard result == 0 else { throw TestFailure("bind: errno \(errno)") }
}

/// connect(2) with any sockaddr_* value; returns connect's result (errno is left as it set it).
public func connectAddress<Address>(_ fd: Int32, _ address: Address, length: Int? = nil) -> Int32 {
    var address = address
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(length ?? MemoryLayout<Address>.size))
        }
    }
}

/// A loopback address, 127.0.0.1 or [::1], with `port`.
public func loopbackAddress(port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

/// [::1] with `port`.
public func loopbackAddress6(port: UInt16) -> sockaddr_in6 {
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_port = port.bigEndian
    address.sin6_addr = in6addr_loopback
    return address
}

/// Whether a TCP socket could bind `port` on 127.0.0.1 (or [::1]) right now.
public func canBindLoopback(port: UInt16, ipv6: Bool = false) -> Bool {
    guard let fd = try? makeSocket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM) else { return false }
    defer { close(fd) }
    if ipv6 { return (try? bindAddress(fd, loopbackAddress6(port: port))) != nil }
    return (try? bindAddress(fd, loopbackAddress(port: port))) != nil
}

/// A TCP socket bound to an ephemeral loopback port, listening unless `listening` is false.
public func makeTCPSocket(ipv6: Bool = false, listening: Bool = true) throws -> (fd: Int32, port: UInt16) {
    let fd = try makeSocket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM)
    do {
        if ipv6 {
            try bindAddress(fd, loopbackAddress6(port: 0))
        } else {
            try bindAddress(fd, loopbackAddress(port: 0))
        }
        if listening { guard listen(fd, 16) == 0 else { throw TestFailure("listen: errno \(errno)") } }
    } catch {
        close(fd)
        throw error
    }
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    let port = withUnsafeBytes(of: storage) { raw in
        ipv6 ? raw.load(as: sockaddr_in6.self).sin6_port : raw.load(as: sockaddr_in.self).sin_port
    }
    return (fd, UInt16(bigEndian: port))
}

/// A `sockaddr_un` for `path`; a leading "@" means the abstract namespace. Returns the address
/// length to pass to bind/connect.
public func unixAddress(_ path: String) -> (sockaddr_un, Int) {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    var bytes = Array(path.utf8)
    if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
    precondition(bytes.count < MemoryLayout.size(ofValue: address.sun_path), "unix socket path too long: \(path)")
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in bytes.enumerated() { raw[index] = byte }
    }
    let pathOffset = MemoryLayout<sa_family_t>.size
    // Abstract names use exactly their length; paths include the terminating NUL.
    return (address, pathOffset + bytes.count + (bytes.first == 0 ? 0 : 1))
}

/// A `sockaddr_un` for a file-system `path` (to pass with the full `sockaddr_un` size).
public func unixSocketAddress(_ path: String) -> sockaddr_un { unixAddress(path).0 }

/// A bound unix datagram socket in a temporary path that reads nothing until asked: a
/// notification receiver that has stopped reading, whose queue fills after a few datagrams.
public final class SilentDatagramReceiver: @unchecked Sendable {
    /// The socket's path, as NOTIFY_SOCKET names it.
    public let path: String
    public let fd: Int32

    public init() throws {
        path = "/tmp/preforkd-silent-\(UInt32.random(in: 0...UInt32.max)).sock"
        fd = try makeSocket(AF_UNIX, SOCK_DGRAM)
        do {
            try bindAddress(fd, unixSocketAddress(path))
        } catch {
            close(fd)
            throw error
        }
    }

    /// Every datagram queued now, without waiting.
    public func drain() -> [String] {
        var texts: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if n <= 0 { return texts }
            texts.append(String(decoding: buffer[..<n], as: UTF8.self))
        }
    }

    deinit {
        close(fd)
        unlink(path)
    }
}
