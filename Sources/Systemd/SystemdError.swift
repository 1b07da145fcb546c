import SystemPackage

/// An error from libsystemd or the kernel: the operation that failed and the `errno` it reported.
///
/// libsystemd returns negative errno values (`-ECONNREFUSED`); this type stores the positive value.
public struct SystemdError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The C call that failed, for example `sd_notify` or `sd_listen_fds_with_names`.
    public let operation: String
    /// The positive `errno` value (`ECONNREFUSED` is 111 on Linux).
    public let errno: Int32
    /// What the operation acted on, when there is something worth naming (a file descriptor, a field).
    public let object: String?

    /// Creates an error for `operation` failing with `errno` (a positive value), optionally naming its object.
    public init(operation: String, errno: Int32, object: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.object = object
    }

    /// The error as swift-system's typed `Errno`.
    public var code: Errno { Errno(rawValue: self.errno) }

    /// "sd_notify: Connection refused (errno 111)", or "getsockname fd 3: Bad file descriptor (errno 9)"
    /// when an object is named. The text comes from `strerror(3)`.
    public var description: String {
        let subject = self.object.map { "\(self.operation) \($0)" } ?? self.operation
        return "\(subject): \(self.code.description) (errno \(self.errno))"
    }
}

extension SystemdError {
    /// Turns a libsystemd return value into a result: negative values are `-errno`.
    ///
    /// The single place that owns libsystemd's error convention.
    @inline(__always)
    static func check(
        _ result: Int32,
        _ operation: String,
        object: String? = nil
    ) throws(SystemdError) -> Int32 {
        guard result >= 0 else {
            throw SystemdError(operation: operation, errno: -result, object: object)
        }
        return result
    }
}
