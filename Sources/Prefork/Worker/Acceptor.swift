import CPreforkShims
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

/// Blocking `accept4` on a listener.
///
/// Transient errors (ECONNABORTED, EPROTO, EINTR without a stop request) are retried here; the
/// rest become ``AcceptError``s.
@inline(__always)
func acceptConnection(on listener: Int32) throws(AcceptError) -> Int32 {
    while true {
        let fd = pf_accept4(listener, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
        if fd >= 0 { return fd }
        let error = Errno(rawValue: Glibc.errno)
        switch error {
        case .interrupted:
            if pf_worker_stop_requested() != 0 { throw .stopRequested }
        case .connectionAbort, .protocolError:
            continue
        case .wouldBlock, .resourceTemporarilyUnavailable:
            throw .wouldBlock
        case .tooManyOpenFiles, .tooManyOpenFilesInSystem, .noBufferSpace, .noMemory:
            throw .resourcesExhausted(SystemCallError("accept4", errno: error))
        case .badFileDescriptor, .invalidArgument, .notSocket:
            // The stop handler swaps a non-listening socket in over the listener.
            throw pf_worker_stop_requested() != 0 ? .stopRequested : .listenerClosed
        default:
            throw .failed(SystemCallError("accept4", errno: error))
        }
    }
}

/// The initial read: one `read` of at most `buffer.count` bytes, bounded by the listener's
/// receive timeout. Returns the byte count (≥ 1).
@inline(__always)
func readInitialData(from fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(AcceptError) -> Int {
    while true {
        let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
        if n > 0 { return n }
        if n == 0 { throw .peerClosedBeforeSending }
        let error = Errno(rawValue: Glibc.errno)
        switch error {
        case .interrupted:
            // A graceful stop lets this connection finish; an immediate one does not.
            if pf_worker_stop_requested() == 2 { throw .stopRequested }
        case .wouldBlock, .resourceTemporarilyUnavailable:
            throw .initialReadTimedOut
        case .connectionReset, .brokenPipe, .timedOut:
            throw .connectionReset
        default:
            throw .failed(SystemCallError("read", errno: error))
        }
    }
}

/// Blocking accept on one listener, also when the socket was made non-blocking by someone else
/// (systemd's `NonBlocking=yes`, or several listeners in another generation): waits in poll then.
@inline(__always)
func acceptBlocking(on listener: Int32) throws(AcceptError) -> Int32 {
    while true {
        do {
            return try acceptConnection(on: listener)
        } catch .wouldBlock {
            var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            if poll(&entry, 1, -1) < 0, pf_worker_stop_requested() != 0 { throw .stopRequested }
        }
    }
}
