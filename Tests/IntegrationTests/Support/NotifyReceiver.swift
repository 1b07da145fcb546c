import Foundation
import Glibc

/// An sd_notify receiver as systemd has it: an AF_UNIX datagram socket with SO_PASSCRED, so each
/// datagram carries the sender's pid (what `NotifyAccess=main` checks). Like systemd it reads all
/// the time, on a thread of its own: the kernel queues only a few datagrams (net.unix.max_dgram_qlen,
/// 10 here) and a sender blocks once they are taken.
final class NotifyReceiver: @unchecked Sendable {
    struct Datagram: CustomStringConvertible {
        let pid: Int32
        let text: String
        /// Identities (device, inode) of the file descriptors passed along (SCM_RIGHTS); the fds
        /// themselves are closed on receipt.
        var passed: [(device: UInt64, inode: UInt64)] = []
        var description: String { "[\(pid)] \(text.replacingOccurrences(of: "\n", with: " | "))" }
        /// The assignments, one per line.
        var assignments: [String] { text.split(separator: "\n").map(String.init) }
    }

    let path: String
    private let fd: Int32
    private let condition = NSCondition()
    private var datagrams: [Datagram] = []
    private var closed = false
    private var reader: Thread?

    /// Everything received so far, in order.
    var received: [Datagram] {
        condition.lock()
        defer { condition.unlock() }
        return datagrams
    }

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var on: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = unixSocketAddress(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let thread = Thread { [self] in readUntilClosed() }
        reader = thread
        thread.start()
    }

    private func readUntilClosed() {
        while true {
            condition.lock()
            let done = closed
            condition.unlock()
            if done { return }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&entry, 1, 50) > 0 else { continue }
            var batch: [Datagram] = []
            while let datagram = receiveOne() { batch.append(datagram) }
            condition.lock()
            datagrams += batch
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Waits up to `seconds` for a datagram newer than those seen so far.
    func poll(seconds: Double) {
        condition.lock()
        defer { condition.unlock() }
        let seen = datagrams.count
        let deadline = Date().addingTimeInterval(seconds)
        while datagrams.count == seen && condition.wait(until: deadline) {}
    }

    private func receiveOne() -> Datagram? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var control = [UInt8](repeating: 0, count: 64)
        return buffer.withUnsafeMutableBytes { data -> Datagram? in
            control.withUnsafeMutableBytes { control -> Datagram? in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &iov) { iovPointer -> Datagram? in
                    var message = msghdr()
                    message.msg_iov = iovPointer
                    message.msg_iovlen = 1
                    message.msg_control = control.baseAddress
                    message.msg_controllen = control.count
                    let n = recvmsg(fd, &message, Int32(MSG_DONTWAIT))
                    guard n >= 0 else { return nil }
                    var pid: Int32 = -1
                    var passed: [(device: UInt64, inode: UInt64)] = []
                    // Each struct cmsghdr is { size_t len; int level; int type; } + data, 8-byte aligned.
                    var offset = 0
                    while offset + 16 <= message.msg_controllen {
                        let length = control.load(fromByteOffset: offset, as: Int.self)
                        guard length >= 16 else { break }
                        let level = control.load(fromByteOffset: offset + 8, as: Int32.self)
                        let type = control.load(fromByteOffset: offset + 12, as: Int32.self)
                        if level == SOL_SOCKET && type == 2 /* SCM_CREDENTIALS: ucred { pid, uid, gid } */ {
                            pid = control.load(fromByteOffset: offset + 16, as: Int32.self)
                        } else if level == SOL_SOCKET && type == 1 /* SCM_RIGHTS */ {
                            for index in 0..<((length - 16) / 4) {
                                let passedFD = control.load(fromByteOffset: offset + 16 + 4 * index, as: Int32.self)
                                var info = stat()
                                fstat(passedFD, &info)
                                passed.append((UInt64(info.st_dev), UInt64(info.st_ino)))
                                Glibc.close(passedFD)
                            }
                        }
                        offset += (length + 7) & ~7
                    }
                    return Datagram(pid: pid, text: String(decoding: data.prefix(n), as: UTF8.self), passed: passed)
                }
            }
        }
    }

    /// Waits until a datagram from `pid` contains the assignment `assignment`; returns all
    /// datagrams received so far. `check` runs between polls (to give up early).
    @discardableResult
    func waitFor(_ assignment: String, from pid: Int32, seconds: Double = 10, check: () throws -> Void = {}) throws
        -> [Datagram]
    {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if received.contains(where: { $0.pid == pid && $0.assignments.contains(assignment) }) { return received }
            guard Date() < deadline else { throw Timeout(what: "\(assignment) (received: \(received))") }
            try check()
            poll(seconds: 0.05)
        }
    }

    /// Datagrams after the first `index`, with a new wait for `assignment`.
    func count(of assignment: String, from pid: Int32) -> Int {
        received.filter { $0.pid == pid && $0.assignments.contains(assignment) }.count
    }

    /// Stops the reader and closes the socket.
    func close() {
        condition.lock()
        closed = true
        condition.unlock()
        while reader?.isFinished == false { usleep(1_000) }
        Glibc.close(fd)
    }
}
