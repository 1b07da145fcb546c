import TestSupport
import Testing

@testable import Systemd

@Suite struct ServiceNotificationTests {
    static let cases: [(ServiceNotification, String)] = [
        (.ready, "READY=1"),
        (.stopping, "STOPPING=1"),
        (.status("Serving 4 workers"), "STATUS=Serving 4 workers"),
        (.status("two\nlines\r\n"), "STATUS=two lines  "),
        (.watchdog, "WATCHDOG=1"),
        (.watchdogTrigger, "WATCHDOG=trigger"),
        (.watchdogInterval(microseconds: 30_000_000), "WATCHDOG_USEC=30000000"),
        (.extendTimeout(microseconds: 5_000_000), "EXTEND_TIMEOUT_USEC=5000000"),
        (.errno(111), "ERRNO=111"),
        (.mainPID(4242), "MAINPID=4242"),
        (.fileDescriptorStore(name: "web"), "FDSTORE=1\nFDNAME=web"),
        (.fileDescriptorStoreRemove(name: "web"), "FDSTOREREMOVE=1\nFDNAME=web"),
        (.custom(name: "X_PREFORKD_WORKERS", value: "4"), "X_PREFORKD_WORKERS=4"),
        (.custom(name: "BUSERROR", value: "a\nb"), "BUSERROR=a b"),
    ]

    @Test(arguments: Self.cases)
    func assignmentText(notification: ServiceNotification, expected: String) {
        #expect(notification.assignment == expected)
    }

    @Test func reloadingCarriesTheMonotonicClock() throws {
        let before = ServiceManager.monotonicMicroseconds()
        let text = ServiceNotification.reloading.assignment
        let after = ServiceManager.monotonicMicroseconds()
        let lines = text.split(separator: "\n")
        try #require(lines.count == 2)
        #expect(lines[0] == "RELOADING=1")
        #expect(lines[1].hasPrefix("MONOTONIC_USEC="))
        let value = try #require(UInt64(lines[1].dropFirst("MONOTONIC_USEC=".count)))
        #expect(before <= value && value <= after)
    }

    @Test func monotonicClockAdvancesInMicroseconds() {
        let first = ServiceManager.monotonicMicroseconds()
        sleepMilliseconds(20)
        let elapsed = ServiceManager.monotonicMicroseconds() - first
        #expect(elapsed >= 20_000 && elapsed < 5_000_000)
    }
}
