import Glibc
import SystemPackage

/// An accepted client connection, as a handler sees it.
///
/// The worker owns the socket: it closes it after the handler returns, so a handler never closes
/// it itself — unless it takes the socket over with ``detach()``. Reads and writes block, bounded by the timeouts inherited from the listener
/// (`SO_RCVTIMEO` = `initial-timeout`, `SO_SNDTIMEO` = `send-timeout`) unless the handler sets others.
public struct Connection {
    /// The connected socket.
    @usableFromInline
    package let fileDescriptor: Int32
    /// The listener it arrived on.
    public let listener: Listener
    /// The client's address as `accept4` returned it, in the worker's buffer for it; nil when the
    /// connection was made some other way (then ``peer`` asks the kernel).
    let peerAddress: UnsafePointer<sockaddr_storage>?
    /// The length `accept4` returned with ``peerAddress``.
    let peerAddressLength: socklen_t

    init(
        fileDescriptor: Int32, listener: Listener,
        peerAddress: UnsafePointer<sockaddr_storage>? = nil, peerAddressLength: socklen_t = 0
    ) {
        self.fileDescriptor = fileDescriptor
        self.listener = listener
        self.peerAddress = peerAddress
        self.peerAddressLength = peerAddressLength
    }

    /// Takes the socket over: the worker will not close it after the handler returns, and the
    /// caller must close it itself (typically a relay thread that outlives the handler's call).
    /// Returns the socket. Costs no system call; the descriptor keeps its flags and timeouts.
    ///
    /// Connections a handler keeps this way are its to wind down in
    /// ``ConnectionHandler/finish(_:)`` when the worker stops.
    public func detach() -> Int32 {
        ConnectionState.markDetached()
        return fileDescriptor
    }

    /// The client's address: behind a listener with `accept-proxy`, the source the PROXY header
    /// named; otherwise the peer `accept4` returned. A header without addresses (v2 `LOCAL`, v1
    /// `UNKNOWN`) leaves the connection's own peer.
    public var clientAddress: SocketAddress {
        if let peerAddress { return SocketAddress(peerAddress, length: peerAddressLength) }
        return (try? SocketAddress.peer(of: FileDescriptor(rawValue: fileDescriptor)).get()) ?? .none
    }

    /// The address the client connected to: behind a listener with `accept-proxy`, the
    /// destination the PROXY header named; otherwise the socket's own (`getsockname`, asked only
    /// when this is read).
    public var localAddress: SocketAddress {
        if let proxied = ConnectionState.proxiedLocal(on: listener.fileDescriptor) { return proxied }
        return (try? SocketAddress.local(of: FileDescriptor(rawValue: fileDescriptor)).get()) ?? .none
    }

    /// The client's address, `1.2.3.4:5678`, `[::1]:5678` or `unix:` (``clientAddress`` as text).
    ///
    /// Formatted on demand from the address `accept4` captured with the connection, so it costs
    /// nothing unless asked for, needs no system call, and still names a client that has since
    /// reset the connection. Like the connection itself, it is meant for use during the handler's
    /// call: the worker reuses the buffer for its next connection.
    public var peer: String {
        guard let peerAddress else {
            return (try? SocketAddress.peer(of: FileDescriptor(rawValue: fileDescriptor)).get())?.description
                ?? "unknown"
        }
        return SocketAddress.describe(peerAddress, length: peerAddressLength)
    }

    /// Reads at most `buffer.count` bytes into the start of `buffer`; returns how many, and 0
    /// when the peer has closed its side.
    ///
    /// A graceful stop does not interrupt it: the current connection is finished. Pass
    /// `interruptible: true` while waiting for a *new* request (keep-alive) to get
    /// ``ConnectionError/stopRequested`` as soon as the worker is asked to stop.
    public func read(into buffer: inout [UInt8], interruptible: Bool = false) throws(ConnectionError) -> Int {
        let result = buffer.withUnsafeMutableBytes { bytes in
            Result { () throws(ConnectionError) in try read(into: bytes, interruptible: interruptible) }
        }
        return try result.get()
    }

    /// Writes all of `bytes` (retrying short writes); never raises SIGPIPE.
    public func write(_ bytes: [UInt8]) throws(ConnectionError) {
        try bytes.withUnsafeBytes { bytes in Result { () throws(ConnectionError) in try write(bytes) } }.get()
    }

    /// Writes all of `bytes` (retrying short writes); never raises SIGPIPE.
    public func write(_ bytes: Span<UInt8>) throws(ConnectionError) {
        try bytes.withUnsafeBytes { bytes in Result { () throws(ConnectionError) in try write(bytes) } }.get()
    }

    /// The read above, into raw memory, for the built-in handlers.
    // Inlinable: a handler in another module calls it once or more per message, and the call
    // would cost as much as the loop around the system call.
    @inlinable
    package func read(into buffer: UnsafeMutableRawBufferPointer, interruptible: Bool = false)
        throws(ConnectionError) -> Int
    {
        while true {
            let n = Glibc.read(fileDescriptor, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let error = Errno(rawValue: Glibc.errno)
            if error == .interrupted {
                let stop = StopRequest.current
                if stop == .immediate || (stop == .graceful && interruptible) { throw .stopRequested }
                continue
            }
            throw ConnectionError(readError: error)
        }
    }

    /// The write above, from raw memory, for the built-in handlers.
    ///
    /// The whole call is bounded by `write-deadline`: each `send` by the socket's SO_SNDTIMEO
    /// (at most the deadline), and once a send comes back short, the next ones by what is left
    /// of it — a client that reads a byte now and then keeps every single send making progress,
    /// and would otherwise hold the worker for as long as it likes. A write that one send
    /// completes, nearly every one, reads no clock.
    @inlinable
    package func write(_ bytes: UnsafeRawBufferPointer) throws(ConnectionError) {
        guard bytes.count > 0 else { return }
        // Inlined: the one send that nearly every write is. Anything else — a short send, a
        // signal, an error, the deadline — is left to a call out of line.
        let n = send(fileDescriptor, bytes.baseAddress!, bytes.count, Int32(MSG_NOSIGNAL))
        if n == bytes.count { return }
        try _finishWrite(fileDescriptor, bytes, firstResult: n, firstErrno: n < 0 ? Glibc.errno : 0)
    }

    /// Shuts down both directions (`shutdown(SHUT_RDWR)`), as the seed's server does before
    /// closing: the client sees the end of the reply at once.
    public func shutdown() {
        _ = Glibc.shutdown(fileDescriptor, Int32(SHUT_RDWR))
    }

    /// Changes how long each later read may wait for data (`SO_RCVTIMEO`) before it throws
    /// ``ConnectionError/timedOut``; `.zero` waits forever.
    public func setReceiveTimeout(_ timeout: Duration) throws(ConnectionError) {
        let (seconds, attoseconds) = max(timeout, .zero).components
        // A positive timeout under a microsecond becomes one microsecond: a zero timeval would
        // mean waiting forever.
        let microseconds = max(timeout > .zero && seconds == 0 ? 1 : 0, Int(attoseconds / 1_000_000_000_000))
        var value = timeval(tv_sec: Int(seconds), tv_usec: microseconds)
        guard setsockopt(fileDescriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size)) == 0
        else { throw .failed(SystemCallError.current("setsockopt SO_RCVTIMEO")) }
    }
}

/// Why a read or write on a connection failed.
public enum ConnectionError: Error, Equatable, CustomStringConvertible {
    /// The receive timeout passed with nothing to read.
    case timedOut
    /// The peer reset the connection (ECONNRESET / EPIPE).
    case reset
    /// The worker was asked to stop while this call waited.
    case stopRequested
    /// `write-deadline` passed before the whole of one write was sent: `sent` of `total` bytes.
    case writeDeadlinePassed(sent: Int, total: Int)
    /// Any other failure.
    case failed(SystemCallError)

    @usableFromInline
    init(readError error: Errno) {
        switch error {
        case .wouldBlock, .resourceTemporarilyUnavailable: self = .timedOut
        case .connectionReset, .brokenPipe: self = .reset
        default: self = .failed(SystemCallError("read", errno: error))
        }
    }

    @usableFromInline
    init(writeError error: Errno) {
        switch error {
        case .wouldBlock, .resourceTemporarilyUnavailable: self = .timedOut
        case .connectionReset, .brokenPipe: self = .reset
        default: self = .failed(SystemCallError("send", errno: error))
        }
    }

    /// What went wrong, on one line.
    public var description: String {
        switch self {
        case .timedOut: "timed out"
        case .reset: "connection reset by peer"
        case .stopRequested: "worker stopping"
        case .writeDeadlinePassed(let sent, let total):
            "write-deadline passed with \(sent) of \(total) bytes sent (the client reads too slowly); closing"
        case .failed(let error): error.description
        }
    }
}
