import Glibc
import Prefork

/// Why no upstream of a route took the connection: each address tried, with what went wrong.
struct UpstreamFailure: Error, CustomStringConvertible {
    /// Each address, in the order tried, and its error.
    var attempts: [(address: String, error: String)] = []

    /// `127.0.0.1:22: connection refused; [::1]:22: timed out after 3 s`.
    var description: String { attempts.map { "\($0.address): \($0.error)" }.joined(separator: "; ") }
}

/// Opens a connection to the first of a route's upstream addresses that answers within the
/// connect timeout, trying them in order.
///
/// Sockets are non-blocking from the start (the relay wants them so) and the wait is a `poll`,
/// so a stop request interrupts it; the accepting thread is the one that waits, as nginx's
/// stream proxy and sslh do, since a loopback or LAN upstream answers in microseconds.
struct UpstreamConnector {
    /// The connect timeout, in milliseconds for `poll`.
    let timeoutMs: Int32

    init(timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        timeoutMs = Int32(clamping: seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    /// A socket connected to the first address of `upstreams` that answers, and its index, with
    /// `opening` (the PROXY header, the client's bytes so far) written to it.
    func connect(_ upstreams: [Upstream], opening: [UnsafeRawBufferPointer])
        -> Result<(socket: Int32, index: Int), UpstreamFailure>
    {
        var failure = UpstreamFailure()
        for (index, upstream) in upstreams.enumerated() {
            switch open(upstream, opening: opening.filter { !$0.isEmpty }) {
            case .success(let socket): return .success((socket, index))
            case .failure(let error): failure.attempts.append((upstream.text, error.reason))
            }
        }
        return .failure(failure)
    }

    /// A socket connected to `upstream` with `opening` written, or the error in words.
    ///
    /// The first bytes go out optimistically: a TCP connect to a nearby upstream has usually
    /// completed by the time `connect` returns `EINPROGRESS`, and `sendmsg` then succeeds, which
    /// spares a `poll` and a `getsockopt(SO_ERROR)` per connection. While the handshake is still
    /// under way `sendmsg` says `EAGAIN`, and a refusal comes back as its error.
    private func open(_ upstream: Upstream, opening: [UnsafeRawBufferPointer]) -> Result<Int32, AttemptError> {
        let fd = socket(
            upstream.address.family,
            Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(AttemptError(errno: errno)) }
        let result = connectAndSend(fd, to: upstream, opening: opening)
        if case .failure = result { close(fd) }
        return result
    }

    private func connectAndSend(_ fd: Int32, to upstream: Upstream, opening: [UnsafeRawBufferPointer])
        -> Result<Int32, AttemptError>
    {
        let started = upstream.address.withUnsafeSockaddr { Glibc.connect(fd, $0, $1) }
        // Unix sockets answer EAGAIN when the server's backlog is full: as good as a refusal.
        if started != 0 && errno != EINPROGRESS { return .failure(AttemptError(errno: errno)) }
        let writer = UpstreamWriter(socket: fd, timeoutMs: timeoutMs)
        var parts = opening
        if started != 0 {
            var connected = false
            if !parts.isEmpty {
                switch writer.sendOnce(&parts) {
                case .sent: connected = true
                // Still connecting (ENOTCONN is what an older kernel may say for it).
                case .wouldBlock, .failed(ENOTCONN), .failed(EINTR): break
                case .failed(let error): return .failure(AttemptError(errno: error))
                }
            }
            if !connected, let error = waitUntilConnected(fd) { return .failure(AttemptError(reason: error)) }
        }
        if upstream.address.family != AF_UNIX {
            // Relayed bytes go out as they come: an interactive protocol (SSH) must not wait
            // for Nagle's acknowledgement round trip.
            var on: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        }
        do {
            try writer.writeAll(&parts)
        } catch {
            return .failure(AttemptError(reason: "\(error)"))
        }
        return .success(fd)
    }

    /// Waits for a non-blocking connect to finish; nil once connected, else what went wrong.
    private func waitUntilConnected(_ fd: Int32) -> String? {
        let deadline = Monotonic.now() + UInt64(timeoutMs) * 1_000_000
        switch waitForEvents(Int16(POLLOUT), on: fd, until: deadline) {
        case .ready: break
        case .deadlinePassed: return "timed out after \(Double(timeoutMs) / 1000) s"
        case .stopRequested: return "worker stopping"
        case .failed(let error): return error.description
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else {
            return String(cString: strerror(errno))
        }
        return error == 0 ? nil : String(cString: strerror(error))
    }
}

/// Why one address did not take the connection.
private struct AttemptError: Error {
    var reason: String

    init(reason: String) { self.reason = reason }
    init(errno: Int32) { reason = String(cString: strerror(errno)) }
}

/// One upstream address of a route, resolved once per worker.
struct Upstream {
    /// As written in the config (`127.0.0.1:22`, `unix:/run/web.sock`).
    let text: String
    /// The address to connect to.
    let address: SocketAddress

    /// The socket address of `address` (which is never `*:PORT`: the config reader refuses it).
    init(_ address: ListenAddress) {
        text = address.description
        switch address {
        case .ipv4(let host, let port): self.address = SocketAddress(ipv4: host, port: port)!
        case .ipv6(let host, let port): self.address = SocketAddress(ipv6: host, port: port)!
        case .unix(let path): self.address = SocketAddress(unixPath: path)!
        case .any(let port): self.address = .anyIPv4(port: port)
        }
    }
}
