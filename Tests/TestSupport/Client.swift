import Foundation
import Glibc

/// A blocking client of a loopback TCP or unix stream socket, with a deadline on every call
/// (SO_RCVTIMEO / SO_SNDTIMEO): a read that passes it throws instead of hanging the test.
public struct Client: Sendable {
    public let fd: Int32

    /// Connects to 127.0.0.1:`port` (or [::1] with `ipv6`).
    public init(port: UInt16, ipv6: Bool = false, timeout: Double = 5) throws {
        fd = try makeSocket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM)
        Self.setTimeouts(fd, timeout)
        let rc =
            ipv6 ? connectAddress(fd, loopbackAddress6(port: port)) : connectAddress(fd, loopbackAddress(port: port))
        guard rc == 0 else { throw Self.failure(closing: fd) }
    }

    /// Connects to `host`:`port`, an IPv4 loopback address such as 127.0.0.2.
    public init(host: String, port: UInt16, timeout: Double = 5) throws {
        fd = try makeSocket(AF_INET, SOCK_STREAM)
        Self.setTimeouts(fd, timeout)
        var address = loopbackAddress(port: port)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1, connectAddress(fd, address) == 0 else {
            throw Self.failure(closing: fd)
        }
    }

    /// Connects to a unix socket.
    public init(unixPath: String, timeout: Double = 5) throws {
        fd = try makeSocket(AF_UNIX, SOCK_STREAM)
        Self.setTimeouts(fd, timeout)
        guard connectAddress(fd, unixSocketAddress(unixPath)) == 0 else { throw Self.failure(closing: fd) }
    }

    private static func setTimeouts(_ fd: Int32, _ timeout: Double) {
        var value = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func failure(closing fd: Int32) -> POSIXError {
        let error = errno
        Glibc.close(fd)
        return POSIXError(POSIXErrorCode(rawValue: error) ?? .EIO)
    }

    public func send(_ text: String) throws {
        try send(bytes: Array(text.utf8))
    }

    /// Sends `bytes` whole (one write when the socket buffer has room: one TCP segment on loopback).
    public func send(bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            offset += n
        }
    }

    /// Reads until the server closes (or the receive timeout passes: then throws).
    public func readToEnd() throws -> String {
        String(decoding: try readAllBytes(), as: UTF8.self)
    }

    /// ``readToEnd()``, byte for byte.
    public func readAllBytes() throws -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { return out }
            guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            out += chunk[..<n]
        }
    }

    /// Reads exactly `count` bytes.
    public func read(count: Int) throws -> String {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: count)
        while out.count < count {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, count - out.count) }
            guard n > 0 else { throw POSIXError(POSIXErrorCode(rawValue: n == 0 ? ECONNRESET : errno) ?? .EIO) }
            out += chunk[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public func close() { Glibc.close(fd) }

    /// One whole echo exchange on a new connection.
    public static func exchange(port: UInt16, _ message: String, ipv6: Bool = false) throws -> String {
        let client = try Client(port: port, ipv6: ipv6)
        defer { client.close() }
        try client.send(message)
        return try client.readToEnd()
    }
}
