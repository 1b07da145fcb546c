import Foundation
import Glibc

/// CLOCK_MONOTONIC in microseconds: what every deadline in the tests is measured on, so that a
/// wall-clock step never shortens or stretches a wait.
public func monotonicMicroseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
}

/// A point in CLOCK_MONOTONIC time that a wait must not pass.
public struct Deadline: Sendable {
    public let microseconds: UInt64

    public init(seconds: Double) {
        self.microseconds = monotonicMicroseconds() + UInt64(max(0, seconds) * 1_000_000)
    }

    public var hasPassed: Bool { monotonicMicroseconds() >= self.microseconds }

    /// Seconds left; 0 once passed.
    public var remainingSeconds: Double {
        let now = monotonicMicroseconds()
        return now >= self.microseconds ? 0 : Double(self.microseconds - now) / 1_000_000
    }

    /// Milliseconds left, for poll(2); 0 once passed.
    public var remainingMilliseconds: Int32 {
        let now = monotonicMicroseconds()
        return now >= self.microseconds ? 0 : Int32(min((self.microseconds - now) / 1_000 + 1, 60_000))
    }
}

/// Thrown when a wait runs past its deadline.
public struct Timeout: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Thrown when a helper cannot do its part (a failed system call, unexpected output).
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Sleeps `milliseconds`, resuming after a signal.
public func sleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1_000, tv_nsec: (milliseconds % 1_000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass; then throws `Timeout`.
public func waitUntil(_ what: String, seconds: Double = 10, _ condition: () throws -> Bool) throws {
    let deadline = Deadline(seconds: seconds)
    while !deadline.hasPassed {
        if try condition() { return }
        sleepMilliseconds(10)
    }
    if try condition() { return }
    throw Timeout(what: what)
}
