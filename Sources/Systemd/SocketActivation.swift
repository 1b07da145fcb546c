import CSystemd
import SystemPackage

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A socket passed by the service manager (`LISTEN_FDS`), examined with `sd_is_socket(3)` and
/// `getsockname(2)`.
public struct ActivatedSocket: Sendable, Equatable {
    /// The file descriptor (3, 4, … in the order of the socket unit's `Listen*=` lines). `FD_CLOEXEC` is set.
    public let fileDescriptor: FileDescriptor
    /// The name from `LISTEN_FDNAMES` (`FileDescriptorName=`), "unknown" when unnamed, as systemd does.
    public let name: String
    /// The address family: `AF_INET`, `AF_INET6`, `AF_UNIX`, …
    public let family: Int32
    /// Whether it is a `SOCK_STREAM` socket in the listening state (what `accept(2)` needs).
    public let isListeningStream: Bool
    /// The bound address, as ``SocketAddress`` writes it: "127.0.0.1:11000", "[::1]:11000",
    /// "[fe80::1%2]:11000", "unix:/run/x.sock", "unix:@abstract".
    public let localAddress: String

    /// Creates a description of an activated socket (the library fills these in; tests and
    /// callers that assemble their own sockets may too).
    public init(
        fileDescriptor: FileDescriptor, name: String, family: Int32, isListeningStream: Bool, localAddress: String
    ) {
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
    /// Each descriptor is examined with `sd_is_socket(3)` and `getsockname(2)`. libsystemd is only
    /// loaded when `LISTEN_PID` and `LISTEN_FDS` are both set.
    ///
    /// - Returns: an empty array when `LISTEN_FDS` is unset or `LISTEN_PID` names another process.
    /// - Throws: ``SystemCallError`` `EINVAL` when the variables are malformed (as libsystemd sees it,
    ///   `LISTEN_FDS=0` is malformed, and so is a `LISTEN_FDNAMES` whose count differs), when a
    ///   passed descriptor is not a socket (`ENOTSOCK`) or cannot be examined, or the loader's error
    ///   when libsystemd cannot be loaded.
    public static func takeSockets() throws(SystemCallError) -> [ActivatedSocket] {
        // Without either, sd_listen_fds_with_names takes nothing and only unsets the variables.
        guard Environment.value("LISTEN_PID") != nil, Environment.value("LISTEN_FDS") != nil else {
            for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] { unsetenv(name) }
            return []
        }
        try LibSystemd.load()
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        defer { freeStringVector(names) }
        let count = try valueOrNegatedErrno { pf_sd_listen_fds_with_names(1, &names) }
            .get("sd_listen_fds_with_names")

        var sockets: [ActivatedSocket] = []
        sockets.reserveCapacity(Int(count))
        for index in 0..<count {
            let fd = PF_SD_LISTEN_FDS_START + index
            let name = names?[Int(index)].map { String(cString: $0) } ?? "unknown"
            sockets.append(try self.examine(FileDescriptor(rawValue: fd), name: name))
        }
        return sockets
    }

    /// Describes one passed descriptor.
    static func examine(_ fd: FileDescriptor, name: String) throws(SystemCallError) -> ActivatedSocket {
        try LibSystemd.load()
        let object = "fd \(fd.rawValue) (\(name))"
        let isSocket = try valueOrNegatedErrno { pf_sd_is_socket(fd.rawValue, AF_UNSPEC, 0, -1) }
            .get("sd_is_socket", object)
        guard isSocket > 0 else {
            throw SystemCallError("sd_is_socket", object, errno: .notSocket)
        }
        let listening = try valueOrNegatedErrno {
            pf_sd_is_socket(fd.rawValue, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1)
        }
        .get("sd_is_socket", object)
        let address = try SocketAddress.local(of: fd).get("getsockname", object)
        return ActivatedSocket(
            fileDescriptor: fd,
            name: name,
            family: address.family,
            isListeningStream: listening > 0,
            localAddress: address.description
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
