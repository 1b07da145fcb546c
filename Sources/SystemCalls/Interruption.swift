#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
import SystemPackage

// The errno rule, owned here and nowhere else: a call interrupted by a signal handler (EINTR) is
// made again when the caller asks for it, and any other failure is returned at once. The two
// helpers below differ only in how a failure is spelled: the kernel's -1 and errno, or
// libsystemd's negative errno.

/// Runs `attempt` again for as long as it fails with `EINTR` and `retryOnInterrupt` is true.
@inlinable
func retryingOnInterrupt<Value>(_ retryOnInterrupt: Bool, _ attempt: () -> Result<Value, Errno>) -> Result<Value, Errno>
{
    while true {
        let result = attempt()
        if retryOnInterrupt, case .failure(let errno) = result, errno == .interrupted { continue }
        return result
    }
}

/// Makes a system call that returns -1 and sets `errno` on failure, and returns its value or
/// the errno.
///
/// With `retryOnInterrupt` (the default) a call interrupted by a signal (`EINTR`) is made again.
/// Pass false where a signal must get the caller out of a blocking call: a worker blocked in
/// `accept4` when it is asked to stop. Every other errno is returned from the first failure.
///
/// `errno` is read right after `body` returns, so `body` should be the call and nothing more.
@inlinable
public func valueOrErrno<Value: FixedWidthInteger>(
    retryOnInterrupt: Bool = true, _ body: () -> Value
) -> Result<Value, Errno> {
    retryingOnInterrupt(retryOnInterrupt) {
        let value = body()
        return value == -1 ? .failure(Errno(rawValue: Glibc.errno)) : .success(value)
    }
}

/// Like ``valueOrErrno(retryOnInterrupt:_:)`` for a call that returns 0 on success.
@inlinable
public func nothingOrErrno<Value: FixedWidthInteger>(
    retryOnInterrupt: Bool = true, _ body: () -> Value
) -> Result<Void, Errno> {
    valueOrErrno(retryOnInterrupt: retryOnInterrupt, body).map { _ in () }
}

/// Makes a call that follows libsystemd's convention — a negative return value is `-errno`,
/// anything else is success — and returns its value or the errno.
///
/// `retryOnInterrupt` works as in ``valueOrErrno(retryOnInterrupt:_:)``.
@inlinable
public func valueOrNegatedErrno(retryOnInterrupt: Bool = true, _ body: () -> Int32) -> Result<Int32, Errno> {
    retryingOnInterrupt(retryOnInterrupt) {
        let value = body()
        return value < 0 ? .failure(Errno(rawValue: -value)) : .success(value)
    }
}
