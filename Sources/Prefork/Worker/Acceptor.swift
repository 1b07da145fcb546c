internal import CPreforkShims
import Glibc
import SystemPackage

/// Why accepting a connection with its initial data failed.
///
/// The first four mirror what a caller of .NET's `EndAccept(out buffer, out bytesTransferred)`
/// must handle; the worker loop decides for each whether to carry on or stop.
public enum AcceptError: Error, Equatable, CustomStringConvertible {
    /// The client closed the connection before sending a byte.
    case peerClosedBeforeSending
    /// The client sent nothing within the initial timeout.
    case initialReadTimedOut
    /// The client reset the connection before or during the initial read.
    case connectionReset
    /// The listening socket is gone (closed, or replaced because the worker is stopping).
    case listenerClosed
    /// A stop signal interrupted the wait.
    case stopRequested
    /// The listener is non-blocking and no connection is queued (another worker took it).
    case wouldBlock
    /// Out of file descriptors or kernel memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): back off and retry.
    case resourcesExhausted(SystemCallError)
    /// Any other failure.
    case failed(SystemCallError)

    public var description: String {
        switch self {
        case .peerClosedBeforeSending: "peer closed the connection before sending"
        case .initialReadTimedOut: "initial read timed out"
        case .connectionReset: "connection reset by peer"
        case .listenerClosed: "listener closed"
        case .wouldBlock: "no connection queued"
        case .stopRequested: "worker stopping"
        case .resourcesExhausted(let error), .failed(let error): error.description
        }
    }
}

/// Where `accept4` writes the client's address: one per worker, reused by every connection.
///
/// The kernel fills it in during the accept itself, so the client's address is known for free —
/// no getpeername later, which fails once the client has reset the connection.
struct PeerAddressBuffer {
    let storage: UnsafeMutablePointer<sockaddr_storage>
    let length: UnsafeMutablePointer<socklen_t>

    /// The buffer in the worker's scoreboard slot: the supervisor reads the peer from there.
    static func inSlot(_ slot: UnsafeMutablePointer<pf_slot>) -> PeerAddressBuffer {
        let base = UnsafeMutableRawPointer(slot)
        return PeerAddressBuffer(
            storage: (base + MemoryLayout<pf_slot>.offset(of: \.peer)!).assumingMemoryBound(to: sockaddr_storage.self),
            length: (base + MemoryLayout<pf_slot>.offset(of: \.peer_length)!).assumingMemoryBound(to: socklen_t.self))
    }
}

/// Blocking `accept4` on a listener; the client's address goes to `peer`.
///
/// Transient errors (ECONNABORTED, EPROTO, EINTR without a stop request) are retried here; the
/// rest become ``AcceptError``s.
@inline(__always)
func acceptConnection(on listener: Int32, peer: PeerAddressBuffer) throws(AcceptError) -> Int32 {
    while true {
        // Value-result: the capacity in, the address's length out.
        peer.length.pointee = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = peer.storage.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            pf_accept4(listener, $0, peer.length, Int32(SOCK_CLOEXEC.rawValue))
        }
        if fd >= 0 { return fd }
        let error = Errno(rawValue: Glibc.errno)
        switch error {
        case .interrupted:
            if StopRequest.current != .none { throw .stopRequested }
        case .connectionAbort, .protocolError:
            continue
        case .wouldBlock, .resourceTemporarilyUnavailable:
            throw .wouldBlock
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
            throw .resourcesExhausted(SystemCallError("accept4", errno: error))
        case .badFileDescriptor, .invalidArgument, .notSocket:
            // The stop handler swaps a non-listening socket in over the listener.
            throw StopRequest.current != .none ? .stopRequested : .listenerClosed
        default:
            throw .failed(SystemCallError("accept4", errno: error))
        }
    }
}

/// The initial read: one `recv` of at most `buffer.count` bytes, bounded by the listener's
/// receive timeout. Returns the byte count (≥ 1).
///
/// `immediate`: the listener holds connections back until their first bytes arrive
/// (TCP_DEFER_ACCEPT), so the bytes are there already or never came: read without waiting.
@inline(__always)
func readInitialData(
    from fd: Int32, into buffer: UnsafeMutableRawBufferPointer, immediate: Bool = false
) throws(AcceptError) -> Int {
    let flags = immediate ? Int32(MSG_DONTWAIT) : 0
    while true {
        let n = recv(fd, buffer.baseAddress, buffer.count, flags)
        if n > 0 { return n }
        if n == 0 { throw .peerClosedBeforeSending }
        let error = Errno(rawValue: Glibc.errno)
        switch error {
        case .interrupted:
            // A graceful stop lets this connection finish; an immediate one does not.
            if StopRequest.current == .immediate { throw .stopRequested }
        case .wouldBlock, .resourceTemporarilyUnavailable:
            throw .initialReadTimedOut
        case .connectionReset, .brokenPipe, .timedOut:
            throw .connectionReset
        default:
            throw .failed(SystemCallError("read", errno: error))
        }
    }
}

/// Blocking accept on one listener, parked in `accept4` itself so that the kernel hands each new
/// connection to the longest-waiting worker.
///
/// `accept4` can still come back empty-handed: the listener's receive timeout (set for the
/// initial read, which accepted sockets inherit) also times out the accept itself, with EAGAIN.
/// That only means "nothing yet": accept again. Only a listener someone made non-blocking
/// (systemd's `NonBlocking=yes`, or several listeners in another generation) makes the worker
/// wait in poll instead; the mode is looked up only when an accept returns EAGAIN, never per
/// connection.
@inline(__always)
func acceptBlocking(on listener: Int32, peer: PeerAddressBuffer) throws(AcceptError) -> Int32 {
    while true {
        do {
            return try acceptConnection(on: listener, peer: peer)
        } catch .wouldBlock {
            if StopRequest.current != .none { throw .stopRequested }
            guard isNonBlocking(listener) else { continue }  // the receive timeout: accept again
            var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, -1) < 0, StopRequest.current != .none { throw .stopRequested }
        }
    }
}

/// Whether O_NONBLOCK is set on the open file description of `fd`.
private func isNonBlocking(_ fd: Int32) -> Bool {
    let flags = fcntl(fd, F_GETFL)
    return flags >= 0 && (flags & O_NONBLOCK) != 0
}
