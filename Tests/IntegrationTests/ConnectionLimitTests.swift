import Foundation
import Glibc
import TestSupport
import Testing

/// Per-connection limits: `write-deadline` bounds one write whatever the client's pace, and the
/// echo handler's `max-messages` and `max-lifetime` end a keep-alive connection after a reply.
@Suite struct ConnectionLimitTests {
    /// A client whose receive buffer is as small as the kernel allows, set before connecting so
    /// the window it advertises stays small: the server's sends stall on it.
    static func slowReader(port: UInt16) throws -> Int32 {
        let fd = try makeSocket(AF_INET, SOCK_STREAM)
        var size: Int32 = 1024
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard connectAddress(fd, loopbackAddress(port: port)) == 0 else {
            close(fd)
            throw TestFailure("connect: errno \(errno)")
        }
        return fd
    }

    /// With the send timeout above the deadline, the first send is cut at the deadline; below
    /// it, the first send comes back short at the send timeout and the next gets what is left.
    @Test(arguments: [["--write-deadline", "2"], ["--write-deadline", "2", "--send-timeout", "1.5"]])
    func aClientThatReadsAByteEvery100msIsCutAtTheWriteDeadlineAndTheWorkerServesOthers(limits: [String]) throws {
        // 8 MiB: on loopback the kernel takes a reply of a few MiB into the socket's send buffer
        // at once (autotuned up to tcp_wmem's 4 MiB), and the write is done before the client
        // reads anything; only what does not fit makes the worker wait on the client.
        let size = 8 << 20
        let daemon = try Daemon(
            [
                "--listen", "127.0.0.1:0", "--workers", "1", "--echo-max-message-bytes", "\(size)",
            ] + limits)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let fd = try Self.slowReader(port: port)
        defer { close(fd) }
        let message = [UInt8](repeating: UInt8(ascii: "x"), count: size - 5) + Array("<EOF>".utf8)
        var offset = 0
        while offset < message.count {
            let n = message.withUnsafeBytes {
                send(fd, $0.baseAddress! + offset, message.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw TestFailure("send: errno \(errno)") }
            offset += n
        }
        // Read one byte every 100 ms (from what the kernel had queued: it may take minutes to
        // drain at this pace) until the worker logs that it gave up on the reply; the deadline
        // of the loop is the test's, not the server's.
        var byte: UInt8 = 0
        let giveUp = monotonicMicroseconds() + 30_000_000
        while !daemon.log.contains("write-deadline passed with "), monotonicMicroseconds() < giveUp {
            guard Glibc.read(fd, &byte, 1) == 1 else { break }
            sleepMilliseconds(100)
        }
        try daemon.waitForLog(" of \(size) bytes sent (the client reads too slowly); closing", seconds: 1)
        #expect(try Client.exchange(port: port, "next<EOF>") == "next<EOF>")
        #expect(daemon.isRunning)
    }

    @Test func keepAliveClosesAfterMaxMessages() throws {
        let daemon = try Daemon([
            "--listen", "127.0.0.1:0", "--workers", "1", "--echo-keep-alive", "--echo-max-messages", "3",
        ])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: daemon.port())
        defer { client.close() }
        for index in 1...3 {
            try client.send("message \(index)<EOF>")
            #expect(try client.read(count: "message \(index)<EOF>".utf8.count) == "message \(index)<EOF>")
        }
        // The server closed after the third reply: the end of the stream, not a wait for more.
        #expect(try client.readToEnd() == "")
    }

    @Test func keepAliveClosesAfterTheFirstReplyPastMaxLifetime() throws {
        let daemon = try Daemon([
            "--listen", "127.0.0.1:0", "--workers", "1", "--echo-keep-alive", "--echo-max-lifetime", "0.5",
        ])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: daemon.port())
        defer { client.close() }
        try client.send("first<EOF>")
        #expect(try client.read(count: 10) == "first<EOF>")
        // Wait until the lifetime has surely passed by the server's clock: the connection is
        // still open (the limit is checked after a reply), and the next reply is the last.
        let began = monotonicMicroseconds()
        while monotonicMicroseconds() - began < 600_000 { sleepMilliseconds(50) }
        try client.send("second<EOF>")
        #expect(try client.read(count: 11) == "second<EOF>")
        #expect(try client.readToEnd() == "")
    }

    @Test func withoutLimitsAKeepAliveConnectionServesOnAfterManyMessages() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--echo-keep-alive"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: daemon.port())
        defer { client.close() }
        for index in 1...50 {
            try client.send("m\(index)<EOF>")
            #expect(try client.read(count: "m\(index)<EOF>".utf8.count) == "m\(index)<EOF>")
        }
    }
}
