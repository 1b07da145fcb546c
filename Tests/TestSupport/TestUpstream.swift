import Foundation
import Glibc

/// A loopback server for the forward handler's tests, on a thread of its own: on each connection
/// it first writes `NAME\n` (so a client knows where its connection was routed, and a silent
/// client still gets an answer, as from a server that speaks first), then echoes every byte back
/// until the client closes its side, then closes. It keeps what each connection sent.
public final class TestUpstream: @unchecked Sendable {
    /// The name written first on every connection.
    public let name: String
    /// The TCP port (0 for a unix socket).
    public let port: UInt16
    /// The unix socket's path, when it is one.
    public let unixPath: String?
    private let listener: Int32
    private let lock = NSLock()
    private var connections: [[UInt8]] = []
    private var closed = false

    /// Listens on 127.0.0.1 (or [::1] with `ipv6`) on a free port.
    public init(name: String, ipv6: Bool = false) throws {
        self.name = name
        (listener, port) = try makeTCPSocket(ipv6: ipv6)
        unixPath = nil
        start()
    }

    /// Listens on a unix socket at `path` (removed by ``stop()``).
    public init(name: String, unixPath path: String) throws {
        self.name = name
        listener = try makeSocket(AF_UNIX, SOCK_STREAM)
        unlink(path)
        try bindAddress(listener, unixSocketAddress(path))
        guard listen(listener, 128) == 0 else { throw TestFailure("listen \(path): errno \(errno)") }
        port = 0
        unixPath = path
        start()
    }

    /// `127.0.0.1:PORT`, `[::1]:PORT` or `unix:/path`, as a route's upstream list takes it.
    public func address(ipv6: Bool = false) -> String {
        if let unixPath { return "unix:\(unixPath)" }
        return ipv6 ? "[::1]:\(port)" : "127.0.0.1:\(port)"
    }

    /// What each connection sent so far, in the order they were accepted.
    public var received: [[UInt8]] { lock.withLock { connections } }

    /// Waits until `count` connections were accepted and the last has sent at least `bytes`.
    public func waitForConnections(_ count: Int, bytes: Int = 0, seconds: Double = 5) throws -> [[UInt8]] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let now = received
            if now.count >= count && now[count - 1].count >= bytes { return now }
            usleep(2000)
        }
        throw TestFailure("\(name): expected \(count) connections (\(bytes) bytes), got \(received.map(\.count))")
    }

    /// Stops accepting (connections being served finish on their own threads).
    public func stop() {
        let alreadyClosed = lock.withLock {
            defer { closed = true }
            return closed
        }
        guard !alreadyClosed else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        if let unixPath { unlink(unixPath) }
    }

    private func start() {
        Thread.detachNewThread { [self] in
            while true {
                let fd = accept(listener, nil, nil)
                if fd < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                let index = lock.withLock {
                    connections.append([])
                    return connections.count - 1
                }
                Thread.detachNewThread { [self] in serve(fd, index: index) }
            }
        }
    }

    private func serve(_ fd: Int32, index: Int) {
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard writeAll(fd, Array("\(name)\n".utf8)) else { return }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }
            lock.withLock { if connections[index].count < 1 << 20 { connections[index] += chunk[..<n] } }
            guard writeAll(fd, Array(chunk[..<n])) else { return }
        }
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}
