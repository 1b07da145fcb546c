/// Bounds the log lines that clients can cause: a flood of clients that time out, reset or send
/// garbage must not become a flood of log lines (the journal rate-limits whole services, and
/// would then drop the lines that matter).
///
/// At most ``burst`` lines per ``windowNs`` per worker; the first line of the next window says
/// how many were left out.
package final class ClientEventLimiter {
    /// Lines allowed per window.
    let burst: Int
    /// The window's length, in nanoseconds.
    let windowNs: UInt64
    private var windowStart: UInt64 = 0
    private var emitted = 0
    private var suppressed = 0

    package init(burst: Int = 10, windowNs: UInt64 = 10_000_000_000) {
        self.burst = burst
        self.windowNs = windowNs
    }

    /// Whether a line may be logged at `now`; when it may, how many lines were left out since the
    /// last one that was.
    package func admit(now: UInt64) -> (allowed: Bool, suppressedBefore: Int) {
        if windowStart == 0 || now - windowStart >= windowNs {
            windowStart = now
            emitted = 0
        }
        guard emitted < burst else {
            suppressed += 1
            return (false, 0)
        }
        emitted += 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}
