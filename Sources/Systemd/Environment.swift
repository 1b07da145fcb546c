#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Process environment access without Foundation (this module runs in forked worker processes).
///
/// `getenv`/`setenv`/`unsetenv` are not thread-safe against each other: callers read the
/// environment at start-up, before any thread that could modify it exists.
enum Environment {
    /// The value of `name`, or nil when unset. The corresponding C function is `getenv(3)`.
    static func value(_ name: String) -> String? {
        guard let pointer = getenv(name) else { return nil }
        return String(cString: pointer)
    }
}
