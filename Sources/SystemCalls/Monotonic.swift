#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// `CLOCK_MONOTONIC` time points in nanoseconds: cheap (the vDSO answers without entering the
/// kernel), never jumps with the wall clock, and plain integers fit in shared memory.
public enum Monotonic {
    /// Now, in nanoseconds since an arbitrary start (boot, on Linux).
    ///
    /// The corresponding C function is `clock_gettime(2)` with `CLOCK_MONOTONIC`.
    // Inlinable: handlers read it around every read of a message, in another module.
    @inlinable
    public static func now() -> UInt64 {
        var time = timespec()
        // Cannot fail on Linux for CLOCK_MONOTONIC and a valid pointer.
        _ = clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// `seconds` as nanoseconds: 0 for a negative value, `UInt64.max` when it does not fit.
    public static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds > 0 else { return 0 }
        let value = seconds * 1e9
        return value >= Double(UInt64.max) ? UInt64.max : UInt64(value)
    }
}
