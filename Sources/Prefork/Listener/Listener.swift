import Glibc
import SystemPackage

/// A listening stream socket owned by the supervisor and shared by every worker.
///
/// A listener outlives every worker and every reload. One passed by systemd (``Origin-swift.enum/activated``)
/// is never closed or unlinked by preforkd.
///
/// A class with only constant properties: every accepted ``Connection`` refers to its listener,
/// and sharing one reference costs a retain, where copying a struct of strings and a
/// ``ListenAddress`` cost several on every connection. Two values are equal when they name the
/// same socket under the same name.
public final class Listener: Sendable, Equatable {
    /// Where a listener came from.
    public enum Origin: String, Sendable {
        /// Bound by preforkd from a `--listen` address.
        case bound
        /// Passed by the service manager (socket activation).
        case activated
        /// Bound by an earlier run of preforkd and handed back by systemd's file descriptor store.
        case stored
    }

    /// The listening socket.
    let fileDescriptor: Int32
    /// The address it actually listens on (port 0 resolved), e.g. `127.0.0.1:41234`.
    public let address: String

    /// Whether it is a TCP socket (IPv4 or IPv6) rather than a unix one.
    var isTCP: Bool {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fileDescriptor, $0, &length) }
        }
        return named == 0 && (Int32(storage.ss_family) == AF_INET || Int32(storage.ss_family) == AF_INET6)
    }
    /// The configured address it was bound from; nil for an activated socket.
    public let configured: ListenAddress?
    /// A name to tell listeners apart: systemd's `FileDescriptorName=` or the configured address.
    public let name: String
    /// Where it came from.
    public let origin: Origin

    /// Wraps an already listening socket (activated or stored).
    init(adopting fileDescriptor: Int32, name: String, origin: Origin, configured: ListenAddress? = nil) {
        self.fileDescriptor = fileDescriptor
        self.address = Self.localAddress(of: FileDescriptor(rawValue: fileDescriptor))
        self.configured = configured
        self.name = name
        self.origin = origin
    }

    private init(_ socket: FileDescriptor, configured: ListenAddress) {
        self.fileDescriptor = socket.rawValue
        self.address = Self.localAddress(of: socket)
        self.configured = configured
        self.name = configured.description
        self.origin = .bound
    }

    /// The socket's bound address as text, or `fd N` when the kernel cannot tell (not a socket).
    private static func localAddress(of socket: FileDescriptor) -> String {
        (try? SocketAddress.local(of: socket).get())?.description ?? "fd \(socket.rawValue)"
    }

    public static func == (lhs: Listener, rhs: Listener) -> Bool {
        lhs === rhs || (lhs.fileDescriptor == rhs.fileDescriptor && lhs.name == rhs.name)
    }

    /// Creates, binds and listens on `address` with close-on-exec set.
    ///
    /// - Parameters:
    ///   - backlog: the accept queue length; the kernel clamps it to `net.core.somaxconn`.
    ///   - unixMode: permissions of a unix socket file. A stale socket file nobody listens on is
    ///     replaced; a live one, or a path that is not a socket, is refused.
    /// - Throws: ``SystemCallError`` naming the step that failed (`socket`, `setsockopt …`,
    ///   `bind`, `chmod`, `listen`) and the address; nothing is left open.
    static func bind(
        _ address: ListenAddress, backlog: Int32, unixMode: mode_t = 0o660
    ) throws(SystemCallError) -> Listener {
        let text = address.description
        switch address {
        case .ipv4(let host, let port):
            let socket = try makeSocket(AF_INET, text)
            try bindAndListen(socket, try socketAddress(SocketAddress(ipv4: host, port: port), text), backlog, text)
            return Listener(socket, configured: address)
        case .ipv6(let host, let port):
            let socket = try makeSocket(AF_INET6, text)
            try withClosing(socket) { () throws(SystemCallError) in
                try socket.setOption(level: Int32(IPPROTO_IPV6), IPV6_V6ONLY, to: 1).get("setsockopt IPV6_V6ONLY", text)
            }
            try bindAndListen(socket, try socketAddress(SocketAddress(ipv6: host, port: port), text), backlog, text)
            return Listener(socket, configured: address)
        case .any(let port):
            return try bindAnyAddress(port: port, backlog: backlog, configured: address)
        case .unix(let path):
            let unixAddress = try socketAddress(SocketAddress(unixPath: path), text)
            try removeStaleUnixSocket(at: path, unixAddress, text)
            let socket = try makeSocket(AF_UNIX, text)
            try bindAndListen(
                socket, unixAddress, backlog, text,
                beforeListen: { () throws(SystemCallError) in
                    try nothingOrErrno { chmod(path, unixMode) }.get("chmod", path)
                })
            return Listener(socket, configured: address)
        }
    }

    /// Sets the receive and send timeouts on the listening socket. Accepted sockets inherit them,
    /// so a worker bounds every blocking read and write without a syscall per connection.
    func setTimeouts(receive: Double, send: Double) throws(SystemCallError) {
        let socket = FileDescriptor(rawValue: fileDescriptor)
        try socket.setTimeoutOption(SO_RCVTIMEO, seconds: receive).get("setsockopt SO_RCVTIMEO", address)
        try socket.setTimeoutOption(SO_SNDTIMEO, seconds: send).get("setsockopt SO_SNDTIMEO", address)
    }

    /// Sets the receive and send timeouts on the listening socket (see ``setTimeouts(receive:send:)``).
    func setTimeouts(receive: Duration, send: Duration) throws(SystemCallError) {
        try setTimeouts(receive: receive.inSeconds, send: send.inSeconds)
    }

    /// Closes the socket and, when asked, removes the unix socket file preforkd created. Never
    /// call it on an activated socket: systemd owns those.
    func close(unlinkingSocketFile: Bool = true) {
        // close(2) is not retried on EINTR: on Linux the descriptor is released either way.
        try? FileDescriptor(rawValue: fileDescriptor).close()
        if unlinkingSocketFile, origin == .bound, case .unix(let path)? = configured {
            _ = unlink(path)
        }
    }

    // MARK: - helpers

    /// The address a validated ``ListenAddress`` names; `EINVAL` if it cannot be represented.
    private static func socketAddress(_ address: SocketAddress?, _ text: String) throws(SystemCallError)
        -> SocketAddress
    {
        guard let address else { throw SystemCallError("bind", text, errno: .invalidArgument) }
        return address
    }

    /// Runs `body`; closes `socket` if it throws.
    private static func withClosing(_ socket: FileDescriptor, _ body: () throws(SystemCallError) -> Void)
        throws(SystemCallError)
    {
        do throws(SystemCallError) {
            try body()
        } catch {
            try? socket.close()
            throw error
        }
    }

    private static func makeSocket(_ family: Int32, _ text: String) throws(SystemCallError) -> FileDescriptor {
        let socket = try FileDescriptor.socket(family: family, type: Int32(SOCK_STREAM.rawValue)).get("socket", text)
        if family != AF_UNIX {
            try withClosing(socket) { () throws(SystemCallError) in
                try socket.setOption(level: SOL_SOCKET, SO_REUSEADDR, to: 1).get("setsockopt SO_REUSEADDR", text)
            }
        }
        return socket
    }

    private static func bindAndListen(
        _ socket: FileDescriptor, _ address: SocketAddress, _ backlog: Int32, _ text: String,
        beforeListen: () throws(SystemCallError) -> Void = {}
    ) throws(SystemCallError) {
        try withClosing(socket) { () throws(SystemCallError) in
            try socket.bind(to: address).get("bind", text)
            try beforeListen()
            try socket.listen(backlog: backlog).get("listen", text)
        }
    }

    private static func bindAnyAddress(
        port: UInt16, backlog: Int32, configured: ListenAddress
    ) throws(SystemCallError) -> Listener {
        let text = configured.description
        if case .success(let probe) = FileDescriptor.socket(family: AF_INET6, type: Int32(SOCK_STREAM.rawValue)) {
            try? probe.close()
            let socket = try makeSocket(AF_INET6, text)
            try withClosing(socket) { () throws(SystemCallError) in
                try socket.setOption(level: Int32(IPPROTO_IPV6), IPV6_V6ONLY, to: 0).get("setsockopt IPV6_V6ONLY", text)
            }
            try bindAndListen(socket, .anyIPv6(port: port), backlog, text)
            return Listener(socket, configured: configured)
        }
        // No IPv6 on this host: every IPv4 address.
        let socket = try makeSocket(AF_INET, text)
        try bindAndListen(socket, .anyIPv4(port: port), backlog, text)
        return Listener(socket, configured: configured)
    }

    /// Removes a socket file left by a process that no longer listens on it; refuses anything else.
    private static func removeStaleUnixSocket(
        at path: String, _ address: SocketAddress, _ text: String
    ) throws(SystemCallError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // nothing there
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SystemCallError("bind", text + " (exists and is not a socket)", errno: .fileExists)
        }
        let probe = try FileDescriptor.socket(family: AF_UNIX, type: Int32(SOCK_STREAM.rawValue)).get("socket", text)
        defer { try? probe.close() }
        switch probe.connect(to: address) {
        case .success:
            throw SystemCallError("bind", text + " (another process is listening on it)", errno: .addressInUse)
        case .failure(let errno) where errno == .connectionRefused:
            try nothingOrErrno { unlink(path) }.get("unlink stale socket", path)
        case .failure:
            return  // let bind report whatever is wrong
        }
    }
}
