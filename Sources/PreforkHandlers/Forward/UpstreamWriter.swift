internal import CPreforkShims
import Glibc
import Prefork
import SystemPackage

/// Writes the first bytes to a freshly connected, non-blocking upstream socket: `sendmsg` of all
/// the parts, then, if the socket's buffer was full, waits for room within a deadline.
struct UpstreamWriter {
    let socket: Int32
    let timeoutMs: Int32

    /// What one `sendmsg` did.
    enum SendOutcome {
        case sent
        /// No room yet, or (on a socket still connecting) no connection yet.
        case wouldBlock
        case failed(Int32)
    }

    /// One `sendmsg` of `parts` (not empty); consumes what it sent.
    func sendOnce(_ parts: inout [UnsafeRawBufferPointer]) -> SendOutcome {
        var vectors = parts.map {
            iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count)
        }
        let sent = vectors.withUnsafeMutableBufferPointer { vectors in
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = vectors.count
            return sendmsg(socket, &message, Int32(MSG_NOSIGNAL))
        }
        if sent >= 0 {
            consume(sent, of: &parts)
            return .sent
        }
        return errno == EAGAIN ? .wouldBlock : .failed(errno)
    }

    /// Writes every byte of `parts`, in order; consumes them as it goes.
    func writeAll(_ parts: inout [UnsafeRawBufferPointer]) throws(ConnectionError) {
        parts.removeAll { $0.isEmpty }
        let deadline = Monotonic.now() + UInt64(timeoutMs) * 1_000_000
        while !parts.isEmpty {
            switch sendOnce(&parts) {
            case .sent:
                continue
            case .wouldBlock:
                try waitForRoom(until: deadline)
            case .failed(EINTR):
                if StopRequest.current == .immediate { throw .stopRequested }
            case .failed(ECONNRESET), .failed(EPIPE):
                throw .reset
            case .failed(let error):
                throw .failed(SystemCallError("sendmsg", errno: Errno(rawValue: error)))
            }
        }
    }

    private func consume(_ count: Int, of parts: inout [UnsafeRawBufferPointer]) {
        var left = count
        while left > 0, let first = parts.first {
            if first.count <= left {
                left -= first.count
                parts.removeFirst()
            } else {
                parts[0] = UnsafeRawBufferPointer(rebasing: first[left...])
                left = 0
            }
        }
    }

    private func waitForRoom(until deadline: UInt64) throws(ConnectionError) {
        switch waitForEvents(Int16(POLLOUT), on: socket, until: deadline) {
        case .ready: break
        case .deadlinePassed: throw .timedOut
        case .stopRequested: throw .stopRequested
        case .failed(let error): throw .failed(error)
        }
    }
}
