#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
import SystemPackage

/// A failed system call: which operation, on what, and the errno.
///
/// The one error type for a failed call into the kernel or libsystemd, in every module of the
/// package. Its description is the one-line message preforkd logs and prints, e.g.
/// `bind 127.0.0.1:11000: Address already in use (errno 98)`, or without an object
/// `sd_notify: Connection refused (errno 111)`.
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call or step that failed ("bind", "accept4", "setsockopt SO_RCVTIMEO", "sd_notify").
    public let operation: String
    /// What it was applied to (an address, a path, "fd 3"); empty when there is nothing to name.
    public let object: String
    /// The errno the kernel (or libsystemd, as a negative return value) reported.
    public let errno: Errno

    /// Creates an error for `operation` on `object` with `errno`.
    public init(_ operation: String, _ object: String = "", errno: Errno) {
        self.operation = operation
        self.object = object
        self.errno = errno
    }

    /// Creates an error for `operation` on `object` from the calling thread's errno.
    ///
    /// Call it straight after the failed call: anything in between may overwrite errno.
    @inline(never)
    public static func current(_ operation: String, _ object: String = "") -> SystemCallError {
        SystemCallError(operation, object, errno: Errno(rawValue: Glibc.errno))
    }

    /// `operation object: strerror text (errno N)`; without an object, `operation: … (errno N)`.
    public var description: String {
        let target = object.isEmpty ? "" : " \(object)"
        return "\(operation)\(target): \(errno.text) (errno \(errno.rawValue))"
    }
}

extension Errno {
    /// The C library's text for this errno (`strerror(3)`), e.g. "Address already in use": the
    /// same text as `description`, under the name this project's messages use.
    public var text: String { String(cString: strerror(rawValue)) }
}

extension Result where Failure == Errno {
    /// The value, or a ``SystemCallError`` naming `operation` and `object` with the errno.
    ///
    /// The step from the typed layer — the `Result<_, Errno>` the wrappers in this module return —
    /// to a message a log line or an exit status can use:
    ///
    /// ```swift
    /// try socket.bind(to: address).get("bind", "127.0.0.1:11000")
    /// ```
    ///
    /// (`get()` without arguments throws the bare `Errno`.)
    @inlinable
    public func get(_ operation: String, _ object: String = "") throws(SystemCallError) -> Success {
        switch self {
        case .success(let value): return value
        case .failure(let errno): throw SystemCallError(operation, object, errno: errno)
        }
    }
}
