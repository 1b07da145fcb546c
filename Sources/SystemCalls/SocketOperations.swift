#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
internal import CPreforkShims
import SystemPackage

// Socket calls swift-system does not offer. Each returns the `Result<_, Errno>` that
// ``valueOrErrno(retryOnInterrupt:_:)`` makes of the C call, rather than throwing: the caller
// chooses between `.get()`, which throws the bare `Errno`, and `.get(operation, object)`, which
// throws a ``SystemCallError`` naming what failed on what. (A typed-throws wrapper could not be
// given that context by a closure: Swift 6 does not infer a closure's thrown type from its context.)

extension FileDescriptor {
    /// A new socket of `family` and `type` (`SOCK_STREAM`, `SOCK_DGRAM`), with close-on-exec set
    /// so no child started with `exec` inherits it.
    ///
    /// The corresponding C function is `socket(2)` with `SOCK_CLOEXEC`.
    public static func socket(family: Int32, type: Int32) -> Result<FileDescriptor, Errno> {
        valueOrErrno { Glibc.socket(family, type | Int32(SOCK_CLOEXEC.rawValue), 0) }.map(
            FileDescriptor.init(rawValue:))
    }

    /// Binds the socket to `address`. The corresponding C function is `bind(2)`.
    public func bind(to address: SocketAddress) -> Result<Void, Errno> {
        address.withUnsafeSockaddr { pointer, length in
            nothingOrErrno { Glibc.bind(rawValue, pointer, length) }
        }
    }

    /// Marks the socket as listening with an accept queue of `backlog` (the kernel clamps it to
    /// `net.core.somaxconn`). The corresponding C function is `listen(2)`.
    public func listen(backlog: Int32) -> Result<Void, Errno> {
        nothingOrErrno { Glibc.listen(rawValue, backlog) }
    }

    /// Connects the socket to `address`. The corresponding C function is `connect(2)`.
    ///
    /// `EINTR` is returned, never retried: the kernel goes on with an interrupted connection
    /// attempt, and a second `connect` would fail with `EALREADY`.
    public func connect(to address: SocketAddress) -> Result<Void, Errno> {
        address.withUnsafeSockaddr { pointer, length in
            nothingOrErrno(retryOnInterrupt: false) { Glibc.connect(rawValue, pointer, length) }
        }
    }

    /// Sets an integer socket option (`SO_REUSEADDR`, `IPV6_V6ONLY`, …).
    ///
    /// The corresponding C function is `setsockopt(2)`.
    public func setOption(level: Int32, _ option: Int32, to value: Int32) -> Result<Void, Errno> {
        var value = value
        return nothingOrErrno {
            setsockopt(rawValue, level, option, &value, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Sets a timeout option (`SO_RCVTIMEO`, `SO_SNDTIMEO`) at `SOL_SOCKET` to `seconds`, with
    /// microsecond resolution; 0 waits forever.
    ///
    /// The corresponding C function is `setsockopt(2)` with a `struct timeval`.
    public func setTimeoutOption(_ option: Int32, seconds: Double) -> Result<Void, Errno> {
        let whole = seconds.rounded(.down)
        var value = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        return nothingOrErrno {
            setsockopt(rawValue, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    /// Sends `bytes` as one datagram to `address`, with `descriptors` attached (SCM_RIGHTS, at
    /// most 16). With `waiting` false, a full receive queue fails at once with `EAGAIN`
    /// (`Errno.wouldBlock`) instead of blocking. Never raises SIGPIPE.
    ///
    /// The corresponding C function is `sendmsg(2)`.
    public func sendDatagram(
        _ bytes: UnsafeRawBufferPointer, to address: SocketAddress, passing descriptors: [FileDescriptor] = [],
        waiting: Bool = true
    ) -> Result<Void, Errno> {
        let fds = descriptors.map(\.rawValue)
        return address.withUnsafeSockaddr { pointer, length in
            fds.withUnsafeBufferPointer { fds in
                nothingOrErrno {
                    pf_send_datagram(
                        rawValue, pointer, length, bytes.baseAddress, bytes.count, fds.baseAddress, Int32(fds.count),
                        waiting ? 0 : 1)
                }
            }
        }
    }
}
