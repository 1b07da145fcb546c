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
    /// The configured address it was bound from; nil for an activated socket.
    public let configured: ListenAddress?
    /// A name to tell listeners apart: systemd's `FileDescriptorName=` or the configured address.
    public let name: String
    /// Where it came from.
    public let origin: Origin

    /// Wraps an already listening socket (activated or stored).
    init(adopting fileDescriptor: Int32, name: String, origin: Origin, configured: ListenAddress? = nil) {
        self.fileDescriptor = fileDescriptor
        self.address = SocketAddress.local(of: fileDescriptor)
        self.configured = configured
        self.name = name
        self.origin = origin
    }

    private init(fileDescriptor: Int32, configured: ListenAddress) {
        self.fileDescriptor = fileDescriptor
        self.address = SocketAddress.local(of: fileDescriptor)
        self.configured = configured
        self.name = configured.description
        self.origin = .bound
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
    static func bind(
        _ address: ListenAddress, backlog: Int32, unixMode: mode_t = 0o660
    ) throws(SystemCallError) -> Listener {
        let text = address.description
        switch address {
        case .ipv4(let host, let port):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &sin.sin_addr)
            let fd = try makeSocket(AF_INET, text)
            try bindAndListen(fd, &sin, backlog: backlog, text)
            return Listener(fileDescriptor: fd, configured: address)
        case .ipv6(let host, let port):
            let fd = try makeSocket(AF_INET6, text)
            try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "IPV6_V6ONLY", text)
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &sin6.sin6_addr)
            try bindAndListen(fd, &sin6, backlog: backlog, text)
            return Listener(fileDescriptor: fd, configured: address)
        case .any(let port):
            return try bindAnyAddress(port: port, backlog: backlog, configured: address)
        case .unix(let path):
            try removeStaleUnixSocket(at: path, text)
            let fd = try makeSocket(AF_UNIX, text)
            var sun = SocketAddress.unix(path)
            try bindAndListen(
                fd, &sun, backlog: backlog, text,
                beforeListen: { () throws(SystemCallError) in
                    if chmod(path, unixMode) != 0 { throw SystemCallError.current("chmod", path) }
                })
            return Listener(fileDescriptor: fd, configured: address)
        }
    }

    /// Sets the receive and send timeouts on the listening socket. Accepted sockets inherit them,
    /// so a worker bounds every blocking read and write without a syscall per connection.
    func setTimeouts(receive: Double, send: Double) throws(SystemCallError) {
        try Self.setTimeout(fileDescriptor, SO_RCVTIMEO, receive, "SO_RCVTIMEO", address)
        try Self.setTimeout(fileDescriptor, SO_SNDTIMEO, send, "SO_SNDTIMEO", address)
    }

    /// Sets the receive and send timeouts on the listening socket (see ``setTimeouts(receive:send:)``).
    func setTimeouts(receive: Duration, send: Duration) throws(SystemCallError) {
        try setTimeouts(receive: receive.inSeconds, send: send.inSeconds)
    }

    /// Closes the socket and, when asked, removes the unix socket file preforkd created. Never
    /// call it on an activated socket: systemd owns those.
    func close(unlinkingSocketFile: Bool = true) {
        _ = Glibc.close(fileDescriptor)
        if unlinkingSocketFile, origin == .bound, case .unix(let path)? = configured {
            _ = unlink(path)
        }
    }

    // MARK: - helpers

    private static func makeSocket(_ family: Int32, _ text: String) throws(SystemCallError) -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemCallError.current("socket", text) }
        if family != AF_UNIX {
            do {
                try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR", text)
            } catch {
                _ = Glibc.close(fd)
                throw error
            }
        }
        return fd
    }

    private static func bindAndListen<Address>(
        _ fd: Int32, _ address: inout Address, backlog: Int32, _ text: String,
        beforeListen: () throws(SystemCallError) -> Void = {}
    ) throws(SystemCallError) {
        let length = socklen_t(MemoryLayout<Address>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, length) }
        }
        do throws(SystemCallError) {
            guard bound == 0 else { throw SystemCallError.current("bind", text) }
            try beforeListen()
            guard listen(fd, backlog) == 0 else { throw SystemCallError.current("listen", text) }
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
    }

    private static func bindAnyAddress(
        port: UInt16, backlog: Int32, configured: ListenAddress
    ) throws(SystemCallError) -> Listener {
        let text = configured.description
        let fd6 = socket(AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd6 >= 0 {
            _ = Glibc.close(fd6)
            let fd = try makeSocket(AF_INET6, text)
            try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 0, "IPV6_V6ONLY", text)
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            sin6.sin6_addr = in6addr_any
            try bindAndListen(fd, &sin6, backlog: backlog, text)
            return Listener(fileDescriptor: fd, configured: configured)
        }
        // No IPv6 on this host: every IPv4 address.
        let fd = try makeSocket(AF_INET, text)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = INADDR_ANY
        try bindAndListen(fd, &sin, backlog: backlog, text)
        return Listener(fileDescriptor: fd, configured: configured)
    }

    /// Removes a socket file left by a process that no longer listens on it; refuses anything else.
    private static func removeStaleUnixSocket(at path: String, _ text: String) throws(SystemCallError) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }  // nothing there
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw SystemCallError("bind", text + " (exists and is not a socket)", errno: .fileExists)
        }
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard probe >= 0 else { throw SystemCallError.current("socket", text) }
        defer { _ = Glibc.close(probe) }
        var sun = SocketAddress.unix(path)
        let connected = withUnsafePointer(to: &sun) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 {
            throw SystemCallError("bind", text + " (another process is listening on it)", errno: .addressInUse)
        }
        guard Glibc.errno == ECONNREFUSED else { return }  // let bind report whatever is wrong
        guard unlink(path) == 0 else { throw SystemCallError.current("unlink stale socket", path) }
    }

    static func setOption(
        _ fd: Int32, _ level: Int32, _ option: Int32, _ value: Int32, _ name: String, _ text: String
    ) throws(SystemCallError) {
        var value = value
        guard setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SystemCallError.current("setsockopt \(name)", text)
        }
    }

    private static func setTimeout(
        _ fd: Int32, _ option: Int32, _ seconds: Double, _ name: String, _ text: String
    ) throws(SystemCallError) {
        let whole = seconds.rounded(.down)
        var value = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        guard setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw SystemCallError.current("setsockopt \(name)", text)
        }
    }
}
