import CPreforkShims

/// CLOCK_MONOTONIC time points in nanoseconds: cheap (vDSO), never jumps, fine in shared memory.
enum Monotonic {
    /// Now, in nanoseconds since an arbitrary start.
    @inline(__always)
    static func now() -> UInt64 { pf_monotonic_ns() }

    /// `seconds` as nanoseconds, saturating.
    static func nanoseconds(_ seconds: Double) -> UInt64 {
        guard seconds > 0 else { return 0 }
        let value = seconds * 1e9
        return value >= Double(UInt64.max) ? UInt64.max : UInt64(value)
    }

    /// `duration` as nanoseconds, saturating (none when negative).
    static func nanoseconds(_ duration: Duration) -> UInt64 { nanoseconds(duration.inSeconds) }
}
