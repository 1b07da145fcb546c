import Glibc
import Logging
import SystemPackage
import Systemd

/// What the supervisor tells the service manager through the notification socket: readiness,
/// reloads, stops, a live STATUS= line, and watchdog keep-alives. Does nothing when
/// NOTIFY_SOCKET is unset.
///
/// It never blocks: when the receiver stops reading, READY, RELOADING, STOPPING, WATCHDOG and
/// the rest wait in order and are sent again on every turn of the loop, while STATUS= lines are
/// replaced by the newest one. Only the supervisor sends (systemd's `NotifyAccess=main` drops
/// anything a worker would send).
struct ServiceReporter {
    /// A datagram that could not be sent yet.
    private struct Held {
        let notifications: [ServiceNotification]
        let fileDescriptors: [FileDescriptor]
    }

    private let logger: Logger
    private let channel = NotificationSocket()
    private var enabled: Bool { channel != nil }
    /// Half the watchdog interval, in ns, when systemd's watchdog is on for this process.
    let watchdogPeriodNs: UInt64?
    private var lastStatus = ""
    private var lastStatusAt: UInt64 = 0
    private var lastWatchdogAt: UInt64 = 0
    private var lastExtendAt: UInt64 = 0
    private var warned = false
    /// Datagrams that must reach the manager, oldest first.
    private var held: [Held] = []
    /// The newest STATUS= line that could not be sent.
    private var heldStatus: String?
    /// STATUS= lines replaced before they could be sent, since the way was last clear.
    private var droppedStatusLines = 0

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

    /// FDSTORE=1: hands systemd a copy of a listening socket under `name`. True when sent or
    /// held to be sent (the socket stays open meanwhile: it is a listener).
    mutating func store(_ fileDescriptor: Int32, name: String) -> Bool {
        guard enabled else { return false }
        return send([.fileDescriptorStore(name: name)], passing: [FileDescriptor(rawValue: fileDescriptor)])
    }

    /// FDSTOREREMOVE=1 for `name`.
    mutating func unstore(name: String) { send([.fileDescriptorStoreRemove(name: name)]) }

    /// Called on every turn of the supervisor loop: sends what was held back, refreshes STATUS=
    /// at most once a second when it changed, and pings the watchdog every half interval while
    /// `healthy`.
    mutating func tick(status: @autoclosure () -> String, healthy: Bool) {
        guard enabled else { return }
        flush()
        let now = Monotonic.now()
        if let period = watchdogPeriodNs, healthy, now - lastWatchdogAt >= period {
            lastWatchdogAt = now
            // One pending ping says as much as several.
            if !held.contains(where: { $0.notifications == [.watchdog] }) { send([.watchdog]) }
        }
        guard now - lastStatusAt >= 1_000_000_000 else { return }
        let line = status()
        lastStatusAt = now
        guard line != lastStatus else { return }
        lastStatus = line
        sendStatus(line)
    }

    /// Sends `messages` as one datagram, or holds it (in order) until the receiver reads again.
    /// False only when sending failed for good.
    @discardableResult
    private mutating func send(
        _ messages: [ServiceNotification], passing fileDescriptors: [FileDescriptor] = []
    ) -> Bool {
        guard let channel else { return false }
        guard held.isEmpty else {
            held.append(Held(notifications: messages, fileDescriptors: fileDescriptors))
            return true
        }
        switch channel.send(messages, passing: fileDescriptors) {
        case .sent:
            return true
        case .wouldBlock:
            logger.warning("The service manager is not reading notifications; holding them until it does")
            held.append(Held(notifications: messages, fileDescriptors: fileDescriptors))
            return true
        case .failed(let error):
            if !warned { logger.warning("\(error)") }
            warned = true
            return false
        }
    }

    /// STATUS= alone: never held in the queue, only the newest line is kept for later.
    private mutating func sendStatus(_ line: String) {
        guard let channel else { return }
        guard held.isEmpty, heldStatus == nil else {
            if heldStatus != nil { droppedStatusLines += 1 }
            heldStatus = line
            return
        }
        if channel.send([.status(line)]) == .wouldBlock { heldStatus = line }
    }

    /// Sends what was held, in order, as far as the receiver takes it.
    private mutating func flush() {
        guard let channel, !held.isEmpty || heldStatus != nil else { return }
        while let next = held.first {
            switch channel.send(next.notifications, passing: next.fileDescriptors) {
            case .wouldBlock: return
            case .sent, .failed: held.removeFirst()
            }
        }
        if let line = heldStatus {
            guard channel.send([.status(line)]) != .wouldBlock else { return }
            heldStatus = nil
        }
        let dropped = droppedStatusLines > 0 ? " (\(droppedStatusLines) STATUS= lines were replaced by newer ones)" : ""
        logger.info("The service manager reads notifications again; every held one is sent\(dropped)")
        droppedStatusLines = 0
    }
}
