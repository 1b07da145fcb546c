import CSystemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The service manager's notification and watchdog protocol (`sd-daemon(3)`).
public enum ServiceManager {
    /// True when `NOTIFY_SOCKET` is set, that is, a service manager (or a test) listens for
    /// notifications.
    public static var isNotifySocketSet: Bool {
        Environment.value("NOTIFY_SOCKET").map { !$0.isEmpty } ?? false
    }

    /// Sends `notifications` as one datagram, newline-separated.
    ///
    /// The corresponding C function is `sd_pid_notify(3)` with pid 0 (the calling process), which is
    /// `sd_notify(3)`. The environment is left untouched, so forked children could notify too (the
    /// service manager ignores them under `NotifyAccess=main`).
    ///
    /// - Returns: false, having done nothing, when `NOTIFY_SOCKET` is unset; true when sent.
    /// - Throws: ``SystemdError`` when the datagram cannot be sent (for example `ECONNREFUSED`).
    @discardableResult
    public static func notify(_ notifications: [ServiceNotification]) throws(SystemdError) -> Bool {
        try self.notify(notifications, passing: [])
    }

    /// Sends `notifications` as one datagram and passes `fileDescriptors` along with it
    /// (`SCM_RIGHTS`), for ``ServiceNotification/fileDescriptorStore(name:)``.
    ///
    /// The corresponding C function is `sd_pid_notify_with_fds(3)` with pid 0.
    ///
    /// - Returns: false, having done nothing, when `NOTIFY_SOCKET` is unset; true when sent.
    /// - Throws: ``SystemdError`` when the datagram cannot be sent.
    @discardableResult
    public static func notify(
        _ notifications: [ServiceNotification],
        passing fileDescriptors: [Int32]
    ) throws(SystemdError) -> Bool {
        guard self.isNotifySocketSet else { return false }
        let state = notifications.map(\.assignment).joined(separator: "\n")
        let result: Int32
        if fileDescriptors.isEmpty {
            result = sd_pid_notify(0, 0, state)
        } else {
            result = fileDescriptors.withUnsafeBufferPointer { fds in
                sd_pid_notify_with_fds(0, 0, state, fds.baseAddress, UInt32(fds.count))
            }
        }
        let operation = fileDescriptors.isEmpty ? "sd_pid_notify" : "sd_pid_notify_with_fds"
        return try SystemdError.check(result, operation) > 0
    }

    /// The watchdog interval when the service manager expects keep-alive pings from this process:
    /// `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or names this process. Ping at half of it.
    ///
    /// The corresponding C function is `sd_watchdog_enabled(3)`, without unsetting the environment.
    ///
    /// - Returns: nil when the watchdog is off for this process.
    /// - Throws: ``SystemdError`` (`EINVAL`) when the variables cannot be parsed.
    public static func watchdogInterval() throws(SystemdError) -> Duration? {
        var microseconds: UInt64 = 0
        guard try SystemdError.check(sd_watchdog_enabled(0, &microseconds), "sd_watchdog_enabled") > 0 else {
            return nil
        }
        return .microseconds(microseconds)
    }

    /// The current `CLOCK_MONOTONIC` time in microseconds, as `MONOTONIC_USEC=` expects it.
    ///
    /// The corresponding C function is `clock_gettime(2)`.
    public static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        // CLOCK_MONOTONIC cannot fail on Linux with a valid pointer.
        _ = clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
