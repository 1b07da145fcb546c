import Logging
import SystemPackage
import Systemd

/// What the supervisor tells the service manager through sd_notify: readiness, reloads, stops,
/// a live STATUS= line, and watchdog keep-alives. Does nothing when NOTIFY_SOCKET is unset.
///
/// Only the supervisor sends (systemd's `NotifyAccess=main` drops anything a worker would send).
struct ServiceReporter {
    private let logger: Logger
    private let enabled = ServiceManager.isNotifySocketSet
    /// Half the watchdog interval, in ns, when systemd's watchdog is on for this process.
    let watchdogPeriodNs: UInt64?
    private var lastStatus = ""
    private var lastStatusAt: UInt64 = 0
    private var lastWatchdogAt: UInt64 = 0
    private var lastExtendAt: UInt64 = 0
    private var warned = false

    init(logger: Logger) {
        self.logger = logger
        var period: UInt64?
        do {
            if let interval = try ServiceManager.watchdogInterval() {
                let (seconds, attoseconds) = interval.components
                period = (UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)) / 2
            }
        } catch {
            logger.warning("Ignoring the watchdog setting: \(error)")
        }
        watchdogPeriodNs = period
        if let period { logger.info("Watchdog on: pinging every \(period / 1_000_000) ms") }
    }

    /// READY=1 with the status line; the first watchdog ping goes with it.
    mutating func ready(status: String) {
        var messages: [ServiceNotification] = [.ready, .status(status)]
        if watchdogPeriodNs != nil {
            messages.append(.watchdog)
            lastWatchdogAt = Monotonic.now()
        }
        send(messages)
        lastStatus = status
        lastStatusAt = Monotonic.now()
    }

    /// RELOADING=1 (with MONOTONIC_USEC).
    mutating func reloading() { send([.reloading, .status("Reloading")]) }

    /// STOPPING=1.
    mutating func stopping() { send([.stopping, .status("Stopping")]) }

    /// While a drain runs: about once a second, EXTEND_TIMEOUT_USEC for what is left of it plus a
    /// margin, so systemd's stop timeout neither fires during a long graceful timeout nor waits
    /// on a supervisor that stopped turning.
    mutating func draining(remainingNs: UInt64) {
        let now = Monotonic.now()
        guard lastExtendAt == 0 || now - lastExtendAt >= 1_000_000_000 else { return }
        lastExtendAt = now
        send([.extendTimeout(microseconds: remainingNs / 1_000 + 5_000_000)])
    }

    /// A fatal exit: STATUS= with the reason and ERRNO=.
    mutating func failed(status: String, errno: Int32) {
        send([.status("Failed: \(status)"), .errno(errno)])
    }

    /// FDSTORE=1: hands systemd a copy of a listening socket under `name`. True when sent.
    mutating func store(_ fileDescriptor: Int32, name: String) -> Bool {
        guard enabled else { return false }
        do {
            return try ServiceManager.notify(
                [.fileDescriptorStore(name: name)], passing: [FileDescriptor(rawValue: fileDescriptor)])
        } catch {
            logger.warning("Could not hand \(name) to systemd's fd store: \(error)")
            return false
        }
    }

    /// FDSTOREREMOVE=1 for `name`.
    mutating func unstore(name: String) { send([.fileDescriptorStoreRemove(name: name)]) }

    /// Called on every turn of the supervisor loop: refreshes STATUS= at most once a second when
    /// it changed, and pings the watchdog every half interval while `healthy`.
    mutating func tick(status: @autoclosure () -> String, healthy: Bool) {
        guard enabled else { return }
        let now = Monotonic.now()
        if let period = watchdogPeriodNs, healthy, now - lastWatchdogAt >= period {
            send([.watchdog])
            lastWatchdogAt = now
        }
        guard now - lastStatusAt >= 1_000_000_000 else { return }
        let line = status()
        lastStatusAt = now
        guard line != lastStatus else { return }
        lastStatus = line
        send([.status(line)])
    }

    private mutating func send(_ messages: [ServiceNotification]) {
        guard enabled else { return }
        do {
            try ServiceManager.notify(messages)
        } catch {
            if !warned { logger.warning("sd_notify failed: \(error)") }
            warned = true
        }
    }
}
