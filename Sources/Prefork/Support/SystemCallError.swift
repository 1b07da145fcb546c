import CPreforkShims
import Glibc
import SystemPackage

/// A failed system call: which operation, on what, and the errno.
///
/// Its description is the one-line message preforkd logs and prints, e.g.
/// `bind 127.0.0.1:11000: Address already in use (errno 98)`.
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The call or step that failed ("bind", "accept4", "setsockopt SO_RCVTIMEO").
    public let operation: String
    /// What it was applied to (an address, a path); empty when there is nothing to name.
    public let object: String
    /// The errno the kernel returned.
    public let errno: Errno

    /// Creates an error for `operation` on `object` with `errno`.
    public init(_ operation: String, _ object: String = "", errno: Errno) {
        self.operation = operation
        self.object = object
        self.errno = errno
    }

    /// Creates an error for `operation` on `object` from the current thread's errno.
    @inline(never)
    public static func current(_ operation: String, _ object: String = "") -> SystemCallError {
        SystemCallError(operation, object, errno: Errno(rawValue: Glibc.errno))
    }

    public var description: String {
        let target = object.isEmpty ? "" : " \(object)"
        return "\(operation)\(target): \(errno.text) (errno \(errno.rawValue))"
    }
}

extension Errno {
    /// The C library's text for this errno (strerror), e.g. "Address already in use".
    public var text: String { String(cString: strerror(rawValue)) }
}

/// Runs a system call that returns -1 and sets errno on failure; retries on EINTR when asked.
@inline(__always)
func valueOrErrno<T: FixedWidthInteger>(
    retryOnInterrupt: Bool = true, _ body: () -> T
) -> Result<T, Errno> {
    while true {
        let value = body()
        if value != -1 { return .success(value) }
        let error = Errno(rawValue: Glibc.errno)
        if retryOnInterrupt && error == .interrupted { continue }
        return .failure(error)
    }
}
