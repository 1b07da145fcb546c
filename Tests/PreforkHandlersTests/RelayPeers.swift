import Glibc
import TestSupport

@testable import PreforkHandlers

/// One relayed connection as a test sees it: the two ends the test plays (`client` and
/// `upstream`), and the two the loop was given (`relayClient`, `relayUpstream`), which the test
/// must not touch once adopted.
struct RelayedConnection {
    let client: Int32
    let upstream: Int32
    let relayClient: Int32
    let relayUpstream: Int32

    /// Closes the test's ends.
    func closeTestEnds() {
        close(client)
        close(upstream)
    }
}

/// A loopback TCP listener that makes connected socket pairs: the connecting end and the
/// accepted one.
final class LoopbackListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        (fd, port) = try makeTCPSocket()
        guard listen(fd, 1024) == 0 else { throw TestFailure("listen: errno \(errno)") }
    }

    deinit { close(fd) }

    /// A connected TCP pair over 127.0.0.1.
    func connectedPair() throws -> (connecting: Int32, accepted: Int32) {
        let connecting = try makeSocket(AF_INET, SOCK_STREAM)
        guard connectAddress(connecting, loopbackAddress(port: port)) == 0 else {
            close(connecting)
            throw TestFailure("connect: errno \(errno)")
        }
        let accepted = accept(fd, nil, nil)
        guard accepted >= 0 else {
            close(connecting)
            throw TestFailure("accept4: errno \(errno)")
        }
        return (connecting, accepted)
    }

    /// A client connection and an upstream connection, as a forward handler would hold them,
    /// adopted by `loop`. The test's ends get 10-second send and receive timeouts: every blocking
    /// call on them has a deadline.
    func relayedConnection(through loop: RelayLoop, route: Int = 0) throws -> RelayedConnection {
        let (client, relayClient) = try connectedPair()
        let (relayUpstream, upstream) = try connectedPair()
        for fd in [client, upstream] { setTimeouts(fd, seconds: 10) }
        try loop.adopt(client: relayClient, upstream: relayUpstream, route: route)
        return RelayedConnection(
            client: client, upstream: upstream, relayClient: relayClient, relayUpstream: relayUpstream)
    }
}

/// A socketpair pair handed to `loop`: the unit case without TCP.
func relayedSocketpairs(through loop: RelayLoop) throws -> RelayedConnection {
    var clientSide: [Int32] = [-1, -1]
    var upstreamSide: [Int32] = [-1, -1]
    let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
    guard socketpair(AF_UNIX, type, 0, &clientSide) == 0, socketpair(AF_UNIX, type, 0, &upstreamSide) == 0 else {
        throw TestFailure("socketpair: errno \(errno)")
    }
    for fd in [clientSide[0], upstreamSide[0]] { setTimeouts(fd, seconds: 10) }
    try loop.adopt(client: clientSide[1], upstream: upstreamSide[1], route: 0)
    return RelayedConnection(
        client: clientSide[0], upstream: upstreamSide[0], relayClient: clientSide[1], relayUpstream: upstreamSide[1])
}

func setTimeouts(_ fd: Int32, seconds: Int) {
    var value = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
}

/// Writes all of `bytes` (blocking, within the socket's send timeout).
func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
        guard n > 0 else { throw TestFailure("send: errno \(errno)") }
        offset += n
    }
}

func sendAll(_ fd: Int32, _ text: String) throws { try sendAll(fd, Array(text.utf8)) }

/// How a read of everything ended.
enum StreamEnd: Equatable {
    case endOfFile
    case error(Int32)
}

/// Reads until end of file or an error (a receive timeout is an error: EAGAIN).
func readToEnd(_ fd: Int32) -> (bytes: [UInt8], end: StreamEnd) {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n == 0 { return (bytes, .endOfFile) }
        if n < 0 {
            if errno == EINTR { continue }
            return (bytes, .error(errno))
        }
        bytes += chunk[..<n]
    }
}

/// Reads exactly `count` bytes as text (within the receive timeout).
func readText(_ fd: Int32, count: Int) throws -> String {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: count)
    while bytes.count < count {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, count - bytes.count) }
        guard n > 0 else { throw TestFailure("read: \(n == 0 ? "end of file" : "errno \(errno)")") }
        bytes += chunk[..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The number of open file descriptors of this process.
func openDescriptorCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while readdir(directory) != nil { count += 1 }
    return count - 3  // ".", ".." and the directory's own fd
}

/// A stream of pseudo-random bytes both ends can produce and check: the byte at offset `i` of
/// stream `seed` is `pattern[(i + seed) % pattern.count]`; the pattern's length is prime, so no
/// read or write boundary lines up with it.
struct PatternStream {
    static let pattern: [UInt8] = {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return (0..<1_000_003).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }()

    let seed: Int
    let total: Int
    /// Bytes sent (by the writing end) or checked (by the reading end) so far.
    var offset = 0

    var isComplete: Bool { offset == total }

    /// Sends as much of the rest as `fd` takes now; false when it would block.
    mutating func send(to fd: Int32) throws -> Bool {
        let pattern = Self.pattern
        while offset < total {
            let start = (offset + seed) % pattern.count
            let length = min(pattern.count - start, total - offset, 256 * 1024)
            let n = pattern.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + start, length, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EAGAIN { return false }
                throw TestFailure("send: errno \(errno)")
            }
            offset += n
        }
        return true
    }

    /// Reads what `fd` has now and checks it against the stream; false when it would block.
    /// Throws on a mismatch, an error, or bytes past the end; returns true at end of file.
    mutating func receive(from fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        let pattern = Self.pattern
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n == 0 { return true }
            if n < 0 {
                if errno == EAGAIN { return false }
                throw TestFailure("read: errno \(errno) after \(offset) bytes")
            }
            guard offset + n <= total else { throw TestFailure("\(offset + n) bytes, \(total) expected") }
            var checked = 0
            while checked < n {
                let start = (offset + seed) % pattern.count
                let length = min(pattern.count - start, n - checked)
                let same = pattern.withUnsafeBytes {
                    memcmp($0.baseAddress! + start, buffer.baseAddress! + checked, length)
                }
                guard same == 0 else { throw TestFailure("bytes differ near offset \(offset)") }
                offset += length
                checked += length
            }
        }
    }
}

/// Sends `count` bytes each way at once — `a` to `b` and `b` to `a` — each end shutting its
/// write side when done, and checks every byte that arrives and the end of file after it.
/// Both fds are made non-blocking; the whole exchange has `seconds` to finish.
func exchangeBothWays(_ a: Int32, _ b: Int32, count: Int, seconds: Double = 60) throws {
    try exchangeBothWays([(a, b)], count: count, seconds: seconds)
}

/// ``exchangeBothWays(_:_:count:seconds:)`` over several connections at once, from one thread.
func exchangeBothWays(_ connections: [(Int32, Int32)], count: Int, seconds: Double = 60) throws {
    // Ends in pairs: end 2k and end 2k+1 are the two sides of connection k.
    let ends = connections.flatMap { [$0.0, $0.1] }
    for fd in ends { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    // Each connection's two streams differ (seed), so a crossed or looped-back byte shows.
    var outgoing = ends.indices.map { PatternStream(seed: $0 * 7919, total: count) }
    var incoming = ends.indices.map { PatternStream(seed: ($0 ^ 1) * 7919, total: count) }
    var sentAll = [Bool](repeating: false, count: ends.count)
    var ended = [Bool](repeating: false, count: ends.count)
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 16)
    defer { buffer.deallocate() }
    let deadline = Deadline(seconds: seconds)
    while ended.contains(false) {
        guard !deadline.hasPassed else {
            throw Timeout(what: "the exchange (\(incoming.map(\.offset).reduce(0, +)) bytes received)")
        }
        var polls = ends.indices.map { index in
            pollfd(
                fd: ends[index], events: Int16(ended[index] ? 0 : POLLIN) | Int16(sentAll[index] ? 0 : POLLOUT),
                revents: 0)
        }
        guard poll(&polls, nfds_t(polls.count), deadline.remainingMilliseconds) >= 0 || errno == EINTR else {
            throw TestFailure("poll: errno \(errno)")
        }
        for index in ends.indices where polls[index].revents != 0 {
            if !sentAll[index], try outgoing[index].send(to: ends[index]) {
                sentAll[index] = true
                shutdown(ends[index], Int32(SHUT_WR))
            }
            if !ended[index], try incoming[index].receive(from: ends[index], into: buffer) {
                guard incoming[index].isComplete else {
                    throw TestFailure("end of file after \(incoming[index].offset) of \(count) bytes")
                }
                ended[index] = true
            }
        }
    }
}

/// The signals blocked in the threads of this process named `name` (bit n-1 for signal n).
func blockedSignals(ofThreadsNamed name: String) -> [UInt64] {
    guard let tasks = opendir("/proc/self/task") else { return [] }
    defer { closedir(tasks) }
    var masks: [UInt64] = []
    while let entry = readdir(tasks) {
        let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard tid.first?.isNumber == true,
            let comm = readSmallFile("/proc/self/task/\(tid)/comm"),
            comm.trimmingSuffix("\n") == name,
            let status = readSmallFile("/proc/self/task/\(tid)/status"),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") }),
            let mask = UInt64(line.dropFirst("SigBlk:".count).trimmingPrefix("\t"), radix: 16)
        else { continue }
        masks.append(mask)
    }
    return masks
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 4096)
    let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    return n > 0 ? String(decoding: bytes[..<n], as: UTF8.self) : nil
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> Substring {
        hasSuffix(suffix) ? dropLast(suffix.count) : self[...]
    }
}
