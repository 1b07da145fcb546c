import Glibc

/// Conversions between `sockaddr` storage and text, kept in one place.
enum SocketAddress {
    /// A `sockaddr_un` for `path` (shorter than 108 bytes: ``ListenAddress`` checks it).
    static func unix(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
    /// The text of a NUL-terminated C buffer.
    private static func cText(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func isValidIPv4(_ text: String) -> Bool {
        var addr = in_addr()
        return inet_pton(AF_INET, text, &addr) == 1
    }

    static func isValidIPv6(_ text: String) -> Bool {
        var addr = in6_addr()
        return inet_pton(AF_INET6, text, &addr) == 1
    }

    /// Renders a socket address as `1.2.3.4:80`, `[::1]:80` or `unix:/path` (`unix:` when unnamed).
    static func describe(_ storage: UnsafePointer<sockaddr_storage>, length: socklen_t) -> String {
        // Too short to hold even the family: the kernel gave no address (never seen for stream sockets).
        guard Int(length) >= MemoryLayout<sa_family_t>.size else { return "unknown" }
        switch Int32(storage.pointee.ss_family) {
        case AF_INET:
            return storage.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                var addr = sin.pointee.sin_addr
                var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                inet_ntop(AF_INET, &addr, &text, socklen_t(text.count))
                return "\(cText(text)):\(UInt16(bigEndian: sin.pointee.sin_port))"
            }
        case AF_INET6:
            return storage.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                var addr = sin6.pointee.sin6_addr
                var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                inet_ntop(AF_INET6, &addr, &text, socklen_t(text.count))
                return "[\(cText(text))]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
            }
        case AF_UNIX:
            return storage.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
                let pathLength = Int(length) - pathOffset
                guard pathLength > 0 else { return "unix:" }
                return withUnsafeBytes(of: sun.pointee.sun_path) { raw in
                    let bytes = raw.prefix(pathLength)
                    if bytes.first == 0 {  // abstract namespace
                        return "unix:@" + String(decoding: bytes.dropFirst().prefix { $0 != 0 }, as: UTF8.self)
                    }
                    return "unix:" + String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                }
            }
        default:
            return "family \(storage.pointee.ss_family)"
        }
    }

    /// The local address of a socket (getsockname), rendered by ``describe(_:length:)``.
    static func local(of fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return "fd \(fd)" }
        return describe(&storage, length: length)
    }

    /// The peer address of a connected socket (getpeername).
    static func peer(of fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        guard rc == 0 else { return "unknown" }
        return describe(&storage, length: length)
    }
}
