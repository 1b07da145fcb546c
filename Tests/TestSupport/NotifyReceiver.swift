import Foundation
import Glibc

/// An sd_notify receiver as systemd has it: an AF_UNIX datagram socket with SO_PASSCRED, so each
/// datagram carries the sender's pid (what `NotifyAccess=main` checks). Like systemd it reads all
/// the time, on a thread of its own: the kernel queues only a few datagrams (net.unix.max_dgram_qlen,
/// 10 here) and a sender blocks once they are taken. Each datagram also carries the kernel's time of
/// arrival (SO_TIMESTAMP), so intervals between notifications do not depend on when this thread ran.
///
/// Closed by `close()` or when released.
public final class NotifyReceiver: @unchecked Sendable {
    /// One datagram as received.
    public struct Datagram: CustomStringConvertible, Sendable {
        /// The sender's pid from SCM_CREDENTIALS; -1 if the kernel attached none.
        public let pid: Int32
        public let text: String
        /// When the kernel queued it (CLOCK_REALTIME, seconds).
        public let arrival: Double
        /// Identities of the file descriptors passed along (SCM_RIGHTS).
        public var passed: [FileIdentity] = []
        /// The passed descriptors themselves, open until the receiver closes, when it was made
        /// with `keepingPassedDescriptors`; otherwise empty (they are closed on receipt).
        public var descriptors: [Int32] = []
        public var description: String { "[\(pid)] \(text.replacingOccurrences(of: "\n", with: " | "))" }
        /// The assignments, one per line.
        public var assignments: [String] { text.split(separator: "\n").map(String.init) }
    }

    /// The value for NOTIFY_SOCKET: a file-system path, or "@name" in the abstract namespace.
    public let path: String
    private let state: State

    /// Everything received so far, in order.
    public var received: [Datagram] { state.snapshot() }

    /// Binds `path` (a file-system path, or "@name"); by default a fresh abstract name. Passed
    /// descriptors are closed on receipt unless `keepingPassedDescriptors`: then they stay open
    /// (in `Datagram.descriptors`) until the receiver is closed.
    public init(path: String? = nil, keepingPassedDescriptors: Bool = false) throws {
        self.path = path ?? "@" + uniqueName("preforkd-tests-notify")
        let fd = try makeSocket(AF_UNIX, SOCK_DGRAM)
        var on: Int32 = 1
        guard setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size)) == 0,
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMP, &on, socklen_t(MemoryLayout<Int32>.size)) == 0
        else {
            let error = errno
            Glibc.close(fd)
            throw TestFailure("setsockopt on the notify socket: errno \(error)")
        }
        let (address, length) = unixAddress(self.path)
        do { try bindAddress(fd, address, length: length) } catch {
            Glibc.close(fd)
            throw TestFailure("bind \(self.path): \(error)")
        }
        state = State(fd: fd, keepingDescriptors: keepingPassedDescriptors)
        let state = self.state
        let thread = Thread { state.readUntilClosed() }
        thread.name = "notify receiver"
        thread.start()
    }

    deinit { state.close() }

    /// Waits up to `seconds` for a datagram newer than those seen so far.
    public func poll(seconds: Double) { state.waitForMore(than: state.count, seconds: seconds) }

    /// The next datagram not yet returned by `receive`, waiting up to `timeout` seconds for one;
    /// nil when none came.
    public func receive(timeout: Double) -> Datagram? { state.next(seconds: timeout) }

    /// Waits until a datagram from `pid` contains the assignment `assignment`; returns all
    /// datagrams received so far. `check` runs between polls (to give up early).
    @discardableResult
    public func waitFor(_ assignment: String, from pid: Int32, seconds: Double = 10, check: () throws -> Void = {})
        throws -> [Datagram]
    {
        let deadline = Deadline(seconds: seconds)
        while true {
            let all = received
            if all.contains(where: { $0.pid == pid && $0.assignments.contains(assignment) }) { return all }
            guard !deadline.hasPassed else { throw Timeout(what: "\(assignment) (received: \(all))") }
            try check()
            poll(seconds: min(0.05, deadline.remainingSeconds))
        }
    }

    /// How many datagrams from `pid` contain the assignment `assignment`.
    public func count(of assignment: String, from pid: Int32) -> Int {
        received.filter { $0.pid == pid && $0.assignments.contains(assignment) }.count
    }

    /// Stops the reader, closes the socket and any kept descriptors.
    public func close() { state.close() }
}

/// The receiver's state, shared with its reading thread (which must not keep the receiver alive).
private final class State: @unchecked Sendable {
    let fd: Int32
    let keepingDescriptors: Bool
    private let condition = NSCondition()
    private var datagrams: [NotifyReceiver.Datagram] = []
    private var taken = 0
    private var closing = false
    private var finished = false

    init(fd: Int32, keepingDescriptors: Bool) {
        self.fd = fd
        self.keepingDescriptors = keepingDescriptors
    }

    func snapshot() -> [NotifyReceiver.Datagram] {
        condition.lock()
        defer { condition.unlock() }
        return datagrams
    }

    var count: Int {
        condition.lock()
        defer { condition.unlock() }
        return datagrams.count
    }

    func waitForMore(than seen: Int, seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while datagrams.count <= seen && !finished && condition.wait(until: deadline) {}
    }

    func next(seconds: Double) -> NotifyReceiver.Datagram? {
        let deadline = Date().addingTimeInterval(seconds)
        condition.lock()
        defer { condition.unlock() }
        while datagrams.count <= taken && !finished && condition.wait(until: deadline) {}
        guard datagrams.count > taken else { return nil }
        taken += 1
        return datagrams[taken - 1]
    }

    func readUntilClosed() {
        while true {
            condition.lock()
            let stop = closing
            condition.unlock()
            if stop { break }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard Glibc.poll(&entry, 1, 50) > 0 else { continue }
            var batch: [NotifyReceiver.Datagram] = []
            while let datagram = receiveOne() { batch.append(datagram) }
            condition.lock()
            datagrams += batch
            condition.broadcast()
            condition.unlock()
        }
        condition.lock()
        finished = true
        condition.broadcast()
        condition.unlock()
    }

    /// Stops the reader (waiting for it, bounded), then closes the socket and kept descriptors.
    func close() {
        condition.lock()
        if closing {
            condition.unlock()
            return
        }
        closing = true
        let deadline = Date().addingTimeInterval(5)
        while !finished && condition.wait(until: deadline) {}
        let done = finished
        let kept = datagrams.flatMap(\.descriptors)
        condition.unlock()
        // A reader that did not stop in time may still use the socket: leave it open then.
        guard done else { return }
        Glibc.close(fd)
        for descriptor in kept { Glibc.close(descriptor) }
    }

    private func receiveOne() -> NotifyReceiver.Datagram? {
        var data = [UInt8](repeating: 0, count: 16384)
        var control = [UInt64](repeating: 0, count: 64)  // 512 bytes, 8-aligned like CMSG_ALIGN
        let (received, controlLength) = data.withUnsafeMutableBytes { dataBytes in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: dataBytes.baseAddress, iov_len: dataBytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    // MSG_CMSG_CLOEXEC: no child spawned meanwhile inherits a passed descriptor.
                    let received = recvmsg(fd, &message, Int32(MSG_DONTWAIT) | 0x4000_0000)
                    return (received, Int(message.msg_controllen))
                }
            }
        }
        guard received >= 0 else { return nil }
        var pid: Int32 = -1
        var arrival: Double?
        var passed: [FileIdentity] = []
        var descriptors: [Int32] = []
        // Walk the control messages as CMSG_FIRSTHDR/CMSG_NXTHDR do (64-bit Linux layout).
        control.withUnsafeBytes { raw in
            let align = { (length: Int) in (length + 7) & ~7 }
            let headerSize = align(MemoryLayout<cmsghdr>.size)
            var offset = 0
            while offset + headerSize <= controlLength {
                let header = raw.load(fromByteOffset: offset, as: cmsghdr.self)
                let length = Int(header.cmsg_len)
                guard length >= headerSize, offset + length <= controlLength else { break }
                let dataOffset = offset + headerSize
                let dataLength = length - headerSize
                if header.cmsg_level == SOL_SOCKET && header.cmsg_type == 1 {  // SCM_RIGHTS
                    for index in 0..<(dataLength / 4) {
                        let passedFD = raw.loadUnaligned(fromByteOffset: dataOffset + index * 4, as: Int32.self)
                        passed.append(fileIdentity(passedFD) ?? (0, 0))
                        if keepingDescriptors { descriptors.append(passedFD) } else { Glibc.close(passedFD) }
                    }
                } else if header.cmsg_level == SOL_SOCKET && header.cmsg_type == 2 && dataLength >= 12 {
                    // SCM_CREDENTIALS: struct ucred { pid_t pid; uid_t uid; gid_t gid; }
                    pid = raw.loadUnaligned(fromByteOffset: dataOffset, as: Int32.self)
                } else if header.cmsg_level == SOL_SOCKET && header.cmsg_type == SO_TIMESTAMP
                    && dataLength >= MemoryLayout<timeval>.size
                {
                    let time = raw.loadUnaligned(fromByteOffset: dataOffset, as: timeval.self)
                    arrival = Double(time.tv_sec) + Double(time.tv_usec) / 1e6
                }
                offset += align(length)
            }
        }
        return NotifyReceiver.Datagram(
            pid: pid,
            text: String(decoding: data.prefix(received), as: UTF8.self),
            arrival: arrival ?? Date().timeIntervalSince1970,
            passed: passed,
            descriptors: descriptors
        )
    }
}
