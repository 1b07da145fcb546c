extension Monotonic {
    /// `duration` as nanoseconds, saturating (none when negative).
    static func nanoseconds(_ duration: Duration) -> UInt64 { nanoseconds(duration.inSeconds) }
}
