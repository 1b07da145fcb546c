import Glibc
import Testing

@testable import Prefork

/// The safe forms of Connection's reads and writes, over a socketpair.
@Suite struct ConnectionTests {
    /// A connection on one end of a socketpair, and the other end; both closed by `body`'s caller.
    func withPair(_ body: (Connection, Int32) throws -> Void) throws {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        defer { fds.forEach { _ = close($0) } }
        // A deadline for every read in these tests, whichever end.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        for fd in fds { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
        let connection = Connection(fileDescriptor: fds[0], listener: Listener(adopting: -1, name: "t", origin: .bound))
        try body(connection, fds[1])
    }

    @Test func writesArraysAndSpansAndReadsIntoAnArray() throws {
        try withPair { connection, peer in
            try connection.write(Array("one ".utf8))
            let two: [UInt8] = Array("two".utf8)
            try connection.write(two.span)
            var received = [UInt8](repeating: 0, count: 16)
            var total = 0
            while total < 7 {
                let n = received.withUnsafeMutableBytes { read(peer, $0.baseAddress! + total, $0.count - total) }
                try #require(n > 0)
                total += n
            }
            #expect(String(decoding: received[..<total], as: UTF8.self) == "one two")

            _ = "reply".withCString { write(peer, $0, 5) }
            var buffer = [UInt8](repeating: 0, count: 3)
            #expect(try connection.read(into: &buffer) == 3)
            #expect(buffer == Array("rep".utf8))
            #expect(try connection.read(into: &buffer) == 2)
            #expect(buffer[..<2] == Array("ly".utf8)[...])
            shutdown(peer, Int32(SHUT_WR))
            #expect(try connection.read(into: &buffer) == 0)
        }
    }

    @Test func aReceiveTimeoutEndsAReadWithTimedOut() throws {
        try withPair { connection, _ in
            try connection.setReceiveTimeout(.milliseconds(50))
            var buffer = [UInt8](repeating: 0, count: 8)
            #expect(throws: ConnectionError.timedOut) { _ = try connection.read(into: &buffer) }
        }
    }

    @Test func detachingMarksTheWorkersStateAndHandsBackTheSameSocket() throws {
        let listener = Listener(adopting: -1, name: "t", origin: .bound)
        let connection = Connection(fileDescriptor: 42, listener: listener)
        #expect(!ConnectionState.takeDetached())
        #expect(connection.detach() == 42)
        #expect(ConnectionState.takeDetached(), "the worker does not close it")
        #expect(!ConnectionState.takeDetached(), "the mark is the one connection's")
    }
}
