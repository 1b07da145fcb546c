import CSystemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A socket passed by the service manager (`LISTEN_FDS`), examined with `sd_is_socket(3)` and
/// `getsockname(2)`.
public struct ActivatedSocket: Sendable, Equatable {
    /// The file descriptor (3, 4, … in the order of the socket unit's `Listen*=` lines). `FD_CLOEXEC` is set.
    public let fileDescriptor: Int32
    /// The name from `LISTEN_FDNAMES` (`FileDescriptorName=`), "unknown" when unnamed, as systemd does.
    public let name: String
    /// The address family: `AF_INET`, `AF_INET6`, `AF_UNIX`, …
    public let family: Int32
    /// Whether it is a `SOCK_STREAM` socket in the listening state (what `accept(2)` needs).
    public let isListeningStream: Bool
    /// The bound address: "127.0.0.1:11000", "[::1]:11000", "unix:/run/x.sock", "unix:@abstract".
    public let localAddress: String

    /// Creates a description of an activated socket (the library fills these in; tests and
    /// callers that assemble their own sockets may too).
    public init(fileDescriptor: Int32, name: String, family: Int32, isListeningStream: Bool, localAddress: String) {
        self.fileDescriptor = fileDescriptor
        self.name = name
        self.family = family
        self.isListeningStream = isListeningStream
        self.localAddress = localAddress
    }
}

/// Socket activation: sockets the service manager opened and passed on (`sd_listen_fds(3)`).
public enum SocketActivation {
    /// Takes the sockets passed by the service manager, once.
    ///
    /// The corresponding C function is `sd_listen_fds_with_names(3)` with `unset_environment` set:
    /// it checks that `LISTEN_PID` is this process, sets `FD_CLOEXEC` on every descriptor, and unsets
    /// `LISTEN_FDS`, `LISTEN_PID` and `LISTEN_FDNAMES` so that children never take them again. Call it
    /// at start-up, before other threads read the environment.
    ///
    /// Each descriptor is examined with `sd_is_socket(3)` and `getsockname(2)`.
    ///
    /// - Returns: an empty array when `LISTEN_FDS` is unset or `LISTEN_PID` names another process.
    /// - Throws: ``SystemdError`` `EINVAL` when the variables are malformed (as libsystemd sees it,
    ///   `LISTEN_FDS=0` is malformed, and so is a `LISTEN_FDNAMES` whose count differs), or when a
    ///   passed descriptor is not a socket (`ENOTSOCK`) or cannot be examined.
    public static func takeSockets() throws(SystemdError) -> [ActivatedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let result = sd_listen_fds_with_names(1, &names)
        defer { freeStringVector(names) }
        let count = try SystemdError.check(result, "sd_listen_fds_with_names")

        var sockets: [ActivatedSocket] = []
        sockets.reserveCapacity(Int(count))
        for index in 0..<count {
            let fd = SD_LISTEN_FDS_START + index
            let name = names?[Int(index)].map { String(cString: $0) } ?? "unknown"
            sockets.append(try self.examine(fd, name: name))
        }
        return sockets
    }

    /// Describes one passed descriptor.
    static func examine(_ fd: Int32, name: String) throws(SystemdError) -> ActivatedSocket {
        let object = "fd \(fd) (\(name))"
        let isSocket = try SystemdError.check(sd_is_socket(fd, AF_UNSPEC, 0, -1), "sd_is_socket", object: object)
        guard isSocket > 0 else {
            throw SystemdError(operation: "sd_is_socket", errno: ENOTSOCK, object: object)
        }
        let listening = try SystemdError.check(
            sd_is_socket(fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1),
            "sd_is_socket",
            object: object
        )
        let (family, address) = try SocketAddress.local(of: fd, object: object)
        return ActivatedSocket(
            fileDescriptor: fd,
            name: name,
            family: family,
            isListeningStream: listening > 0,
            localAddress: address
        )
    }

    /// Frees a NULL-terminated `char **` allocated by libsystemd (`strv_free`).
    private static func freeStringVector(_ vector: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        guard let vector else { return }
        var index = 0
        while let element = vector[index] {
            free(element)
            index += 1
        }
        free(vector)
    }
}

/// Formats socket addresses the way this project prints them.
enum SocketAddress {
    /// The family and printable local address of `fd`. The corresponding C function is `getsockname(2)`.
    static func local(of fd: Int32, object: String) throws(SystemdError) -> (family: Int32, address: String) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        // errno is read right after the call, before anything else can overwrite it.
        let failure: Int32 = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getsockname(fd, $0, &length) == 0 ? 0 : errno
            }
        }
        guard failure == 0 else {
            throw SystemdError(operation: "getsockname", errno: failure, object: object)
        }
        return (Int32(storage.ss_family), self.format(storage, length: Int(length)))
    }

    /// "127.0.0.1:80", "[::1]:80", "[fe80::1%2]:80", "unix:/path", "unix:@abstract", "unix:" (unnamed).
    static func format(_ storage: sockaddr_storage, length: Int) -> String {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { raw in
                let address = raw.load(as: sockaddr_in.self)
                let port = UInt16(bigEndian: address.sin_port)
                let host = raw.baseAddress! + MemoryLayout<sockaddr_in>.offset(of: \.sin_addr)!
                return "\(self.presentation(AF_INET, host)):\(port)"
            }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { raw in
                let address = raw.load(as: sockaddr_in6.self)
                let port = UInt16(bigEndian: address.sin6_port)
                let scope = address.sin6_scope_id == 0 ? "" : "%\(address.sin6_scope_id)"
                let host = raw.baseAddress! + MemoryLayout<sockaddr_in6>.offset(of: \.sin6_addr)!
                return "[\(self.presentation(AF_INET6, host))\(scope)]:\(port)"
            }
        case AF_UNIX:
            let pathOffset = MemoryLayout<sa_family_t>.size
            let pathLength = max(0, min(length, MemoryLayout<sockaddr_un>.size) - pathOffset)
            return withUnsafeBytes(of: &storage) { raw in
                let path = raw[pathOffset..<(pathOffset + pathLength)]
                guard let first = path.first else { return "unix:" }
                if first == 0 {
                    // Abstract namespace: every byte of the given length counts, NULs included.
                    return "unix:@" + String(decoding: path.dropFirst(), as: UTF8.self)
                }
                return "unix:" + String(decoding: path.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
        default:
            return "family \(storage.ss_family)"
        }
    }

    /// The corresponding C function is `inet_ntop(3)`.
    private static func presentation(_ family: Int32, _ address: UnsafeRawPointer) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(family, address, &buffer, socklen_t(buffer.count)) != nil else { return "?" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
