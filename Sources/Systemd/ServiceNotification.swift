/// One `sd_notify(3)` assignment, sent to the service manager by ``ServiceManager/notify(_:)``.
public enum ServiceNotification: Sendable, Equatable {
    /// `READY=1`: start-up finished (for `Type=notify` services).
    case ready
    /// `RELOADING=1` followed by `MONOTONIC_USEC=` with the current `CLOCK_MONOTONIC` time in
    /// microseconds, added automatically (required by `Type=notify-reload`).
    case reloading
    /// `STOPPING=1`: the service is beginning its shutdown.
    case stopping
    /// `STATUS=…`: a free-form status line shown by `systemctl status`. Newlines become spaces.
    case status(String)
    /// `WATCHDOG=1`: keep-alive ping for the service watchdog.
    case watchdog
    /// `WATCHDOG=trigger`: asks the service manager to act as if the watchdog timed out.
    case watchdogTrigger
    /// `WATCHDOG_USEC=`: changes the watchdog interval at runtime.
    case watchdogInterval(microseconds: UInt64)
    /// `EXTEND_TIMEOUT_USEC=`: extends the current start, reload or stop timeout.
    case extendTimeout(microseconds: UInt64)
    /// `ERRNO=`: reports a failure as an `errno` value.
    case errno(Int32)
    /// `MAINPID=`: tells the service manager which process is the main one.
    case mainPID(Int32)
    /// `FDSTORE=1` and `FDNAME=`: stores the file descriptors passed with
    /// ``ServiceManager/notify(_:passing:)`` in the service manager under `name`.
    case fileDescriptorStore(name: String)
    /// `FDSTOREREMOVE=1` and `FDNAME=`: removes the stored file descriptors named `name`.
    case fileDescriptorStoreRemove(name: String)
    /// `name=value`: any other assignment. Newlines in the value become spaces.
    case custom(name: String, value: String)

    /// The exact text sent, for example `"READY=1"` or `"RELOADING=1\nMONOTONIC_USEC=123"`.
    ///
    /// ``reloading`` reads the monotonic clock each time this property is evaluated.
    public var assignment: String {
        switch self {
        case .ready: "READY=1"
        case .reloading: "RELOADING=1\nMONOTONIC_USEC=\(ServiceManager.monotonicMicroseconds())"
        case .stopping: "STOPPING=1"
        case .status(let text): "STATUS=\(Self.singleLine(text))"
        case .watchdog: "WATCHDOG=1"
        case .watchdogTrigger: "WATCHDOG=trigger"
        case .watchdogInterval(let microseconds): "WATCHDOG_USEC=\(microseconds)"
        case .extendTimeout(let microseconds): "EXTEND_TIMEOUT_USEC=\(microseconds)"
        case .errno(let value): "ERRNO=\(value)"
        case .mainPID(let pid): "MAINPID=\(pid)"
        case .fileDescriptorStore(let name): "FDSTORE=1\nFDNAME=\(Self.singleLine(name))"
        case .fileDescriptorStoreRemove(let name): "FDSTOREREMOVE=1\nFDNAME=\(Self.singleLine(name))"
        case .custom(let name, let value): "\(name)=\(Self.singleLine(value))"
        }
    }

    /// The notification protocol is newline-separated: a newline inside a value would start a new,
    /// unintended assignment.
    private static func singleLine(_ text: String) -> String {
        guard text.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return text }
        return String(decoding: text.utf8.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 }, as: UTF8.self)
    }
}
