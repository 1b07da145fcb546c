import CSystemd
import SystemPackage

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
    /// - Throws: ``SystemCallError`` when the datagram cannot be sent (for example `ECONNREFUSED`),
    ///   or libsystemd cannot be loaded. A send interrupted by a signal is made again.
    @discardableResult
    public static func notify(_ notifications: [ServiceNotification]) throws(SystemCallError) -> Bool {
        try self.notify(notifications, passing: [])
    }

    /// Sends `notifications` as one datagram and passes `fileDescriptors` along with it
    /// (`SCM_RIGHTS`), for ``ServiceNotification/fileDescriptorStore(name:)``.
    ///
    /// The corresponding C function is `sd_pid_notify_with_fds(3)` with pid 0.
    ///
    /// - Returns: false, having done nothing, when `NOTIFY_SOCKET` is unset; true when sent.
    /// - Throws: ``SystemCallError`` when the datagram cannot be sent, or libsystemd cannot be
    ///   loaded. A send interrupted by a signal is made again.
    @discardableResult
    public static func notify(
        _ notifications: [ServiceNotification],
        passing fileDescriptors: [FileDescriptor]
    ) throws(SystemCallError) -> Bool {
        guard self.isNotifySocketSet else { return false }
        try LibSystemd.load()
        let state = notifications.map(\.assignment).joined(separator: "\n")
        if fileDescriptors.isEmpty {
            return try valueOrNegatedErrno { pf_sd_pid_notify(0, 0, state) }.get("sd_pid_notify") > 0
        }
        let fds = fileDescriptors.map(\.rawValue)
        return try fds.withUnsafeBufferPointer { fds in
            valueOrNegatedErrno { pf_sd_pid_notify_with_fds(0, 0, state, fds.baseAddress, UInt32(fds.count)) }
        }.get("sd_pid_notify_with_fds") > 0
    }

    /// The watchdog interval when the service manager expects keep-alive pings from this process:
    /// `WATCHDOG_USEC` is set and `WATCHDOG_PID` is unset or names this process. Ping at half of it.
    ///
    /// The corresponding C function is `sd_watchdog_enabled(3)`, without unsetting the environment;
    /// libsystemd is only loaded when `WATCHDOG_USEC` is set.
    ///
    /// - Returns: nil when the watchdog is off for this process.
    /// - Throws: ``SystemCallError`` (`EINVAL`) when the variables cannot be parsed, or the
    ///   loader's error when libsystemd cannot be loaded.
    public static func watchdogInterval() throws(SystemCallError) -> Duration? {
        // Unset, sd_watchdog_enabled says 0 without looking further.
        guard Environment.value("WATCHDOG_USEC") != nil else { return nil }
        try LibSystemd.load()
        var microseconds: UInt64 = 0
        guard try valueOrNegatedErrno({ pf_sd_watchdog_enabled(0, &microseconds) }).get("sd_watchdog_enabled") > 0
        else {
            return nil
        }
        return .microseconds(microseconds)
    }

    /// The current `CLOCK_MONOTONIC` time in microseconds, as `MONOTONIC_USEC=` expects it.
    ///
    /// The corresponding C function is `clock_gettime(2)`.
    public static func monotonicMicroseconds() -> UInt64 {
        Monotonic.now() / 1_000
    }
}
