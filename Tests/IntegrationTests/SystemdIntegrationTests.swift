import Foundation
import Glibc
import TestSupport
import Testing

/// preforkd with the real systemd pieces that run outside PID 1: sd_notify to a real socket,
/// socket activation through systemd-socket-activate, journald.
@Suite struct SystemdIntegrationTests {
    /// A port free right now on both 127.0.0.1 and [::1], for a test that must name a port up
    /// front. Taken below the kernel's ephemeral range (32768 and up), so that no other test's
    /// `:0` listener or client connection can take it meanwhile.
    static func freePort() -> UInt16 {
        while true {
            let port = UInt16.random(in: 20000...32000)
            if canBindLoopback(port: port) && canBindLoopback(port: port, ipv6: true) { return port }
        }
    }

    @Test func notificationsComeFromTheSupervisorInOrder() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
        daemon.notify.poll(seconds: 0.2)
        let received = daemon.notify.received
        #expect(received.allSatisfy { $0.pid == daemon.pid }, "only the supervisor notifies: \(received)")
        let order = received.flatMap(\.assignments).compactMap { line -> String? in
            ["READY=1", "STOPPING=1"].contains(line) ? line : nil
        }
        #expect(order == ["READY=1", "STOPPING=1"])
    }

    @Test func watchdogIsPingedAtReadyAndEveryHalfInterval() throws {
        // systemd acts when a whole interval passes without a ping; the daemon pings every half
        // interval (1 s here), so a gap of 3/4 of the interval is a ping half a period late, and
        // one of a quarter is far too early.
        let interval = 2.0
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1"], environment: ["WATCHDOG_USEC": "\(Int(interval * 1e6))"])
        defer { daemon.stop() }
        let ready = try daemon.waitForReady()
        #expect(
            ready.contains {
                $0.pid == daemon.pid && $0.assignments.contains("READY=1") && $0.assignments.contains("WATCHDOG=1")
            })
        // The kernel's arrival times: how late this test's threads run does not matter.
        var pings: [Double] = []
        let six =
            (try? waitUntil("six watchdog pings", seconds: 30) {
                daemon.notify.poll(seconds: 0.05)
                pings = daemon.notify.received.filter { $0.pid == daemon.pid && $0.assignments.contains("WATCHDOG=1") }
                    .map(\.arrival)
                return pings.count >= 6
            }) != nil
        let gaps = zip(pings.dropFirst(), pings).map { $0 - $1 }
        #expect(six, "six pings within 30 s; gaps between pings (s): \(gaps)")
        #expect(gaps.allSatisfy { $0 < 0.75 * interval }, "gaps between pings (s): \(gaps)")
        #expect(gaps.allSatisfy { $0 > 0.25 * interval }, "gaps between pings (s): \(gaps)")
    }

    @Test func workersDyingYoungAreRespawnedWithGrowingDelaysWithoutRestartingTheService() throws {
        // Booted workers that keep dying soon after they start (a handler crashing on every
        // client, say) are replaced after a doubling delay; they are no boot failures, so the
        // service neither gives up nor asks systemd to restart it (that would drop every queued
        // connection along with the bad ones). One worker is left alone: the last one serving
        // would be replaced at once.
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "2"], environment: ["WATCHDOG_USEC": "60000000"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        var killed = Set<Int32>()
        try waitUntil("two workers") { daemon.workerPIDs().count == 2 }
        let survivor = daemon.workerPIDs()[0]
        try waitUntil("a respawn delay of 800 ms", seconds: 30) {
            // Only once it waits in accept4: one killed earlier would be a boot failure.
            for pid in daemon.workerPIDs()
            where pid != survivor && !killed.contains(pid)
                && PoolLifecycleTests.blockedIn(pid) == PoolLifecycleTests.accept4
            {
                kill(pid, SIGKILL)
                killed.insert(pid)
            }
            return daemon.log.contains("respawning in 800 ms")
        }
        for delay in [100, 200, 400] { #expect(daemon.log.contains("respawning in \(delay) ms")) }
        #expect(!daemon.log.contains("failed to boot"))
        daemon.notify.poll(seconds: 0.2)
        #expect(!daemon.notify.received.contains { $0.assignments.contains("WATCHDOG=trigger") })
        #expect(ProcessTable.isAlive(daemon.pid))
        try waitUntil("a replacement worker") { daemon.workerPIDs().count == 2 }
        #expect(try Client.exchange(port: try daemon.port(), "still here<EOF>") == "still here<EOF>")
    }

    @Test func watchdogForAnotherProcessIsIgnored() throws {
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1"],
            environment: ["WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        daemon.notify.poll(seconds: 0.5)
        #expect(daemon.notify.count(of: "WATCHDOG=1", from: daemon.pid) == 0)
    }

    @Test func socketActivationWithNamedSocketsAndPerListenerSettings() throws {
        let web = Self.freePort()
        let admin = Self.freePort()
        let v6 = Self.freePort()
        let config = try TestConfigFile(
            """
            listen = "127.0.0.1:1"   # not bound: activated sockets take precedence
            workers = 2
            [listeners.admin.echo]
            keep-alive = true
            """)
        defer { config.remove() }
        let daemon = try Daemon(
            [
                "-l", "127.0.0.1:\(web)", "--fdname=web", "-l", "127.0.0.1:\(admin)", "--fdname=admin",
                "-l", "[::1]:\(v6)", "--fdname=v6", "-E", "NOTIFY_SOCKET",
                Binaries.preforkd, "--config", config.path,
            ],
            binary: "/usr/bin/systemd-socket-activate")
        defer { daemon.stop() }
        // Without --accept, systemd-socket-activate execs preforkd on the first connection.
        try daemon.waitForLog("Listening on", seconds: 30)  // systemd-socket-activate's line
        #expect(try Client.exchange(port: web, "first<EOF>") == "first<EOF>")
        try daemon.waitForReady()
        try daemon.waitForLog("Listening on 127.0.0.1:\(web) listener=web origin=activated")
        try daemon.waitForLog("Listening on 127.0.0.1:\(admin) listener=admin origin=activated")
        #expect(!daemon.log.contains("127.0.0.1:1 "), "the configured address is not bound")
        // admin keeps the connection open for a second message; web closes after one.
        let client = try Client(port: admin)
        defer { client.close() }
        for index in 0..<3 {
            try client.send("admin \(index)<EOF>")
            #expect(try client.read(count: "admin \(index)<EOF>".utf8.count) == "admin \(index)<EOF>")
        }
        #expect(try Client.exchange(port: web, "web<EOF>") == "web<EOF>")
        try daemon.waitForLog("Listening on [::1]:\(v6) listener=v6 origin=activated")
        #expect(try Client.exchange(port: v6, "over ipv6<EOF>", ipv6: true) == "over ipv6<EOF>")
    }

    @Test func activatedUnixSocketIsNeverUnlinked() throws {
        let path = NSTemporaryDirectory() + "preforkd-act-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(path) }
        let daemon = try Daemon(
            ["-l", path, "--fdname=local", "-E", "NOTIFY_SOCKET", Binaries.preforkd, "--workers", "1"],
            binary: "/usr/bin/systemd-socket-activate")
        defer { daemon.stop() }
        // The file appears at bind(), a moment before listen(): until then a connect is refused.
        var connected: Client?
        try waitUntil("the socket to listen") {
            connected = try? Client(unixPath: path)
            return connected != nil
        }
        let client = connected!
        try client.send("unix<EOF>")
        #expect(try client.readToEnd() == "unix<EOF>")
        client.close()
        try daemon.waitForReady()
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
        #expect(access(path, F_OK) == 0, "systemd owns the activated socket's file")
    }

    @Test func selfBoundListenersAreOfferedToTheFdStoreWhenAsked() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--fd-store"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let stored = daemon.notify.received.first {
            $0.pid == daemon.pid && $0.assignments.contains("FDSTORE=1")
                && $0.assignments.contains("FDNAME=stored-127.0.0.1_0")
        }
        #expect(stored?.passed.count == 1, "the listening socket itself is passed along")
        // Without --fd-store (and no $FDSTORE) nothing is offered.
        let plain = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        defer { plain.stop() }
        try plain.waitForReady()
        #expect(!plain.notify.received.contains { $0.assignments.contains("FDSTORE=1") })
    }

    @Test func journaldEntriesCarryStructuredFields() throws {
        try Journald.with {
            let daemon = try Daemon([
                "--listen", "127.0.0.1:0", "--workers", "1", "--log-format", "journal", "--log-level", "debug",
            ])
            defer { daemon.stop() }
            try daemon.waitForReady()
            let port = try daemon.portFromStatus()
            #expect(try Client.exchange(port: port, "journal<EOF>") == "journal<EOF>")
            let worker = daemon.workerPIDs().first ?? -1
            var entries: [[String: Any]] = []
            try waitUntil("the worker's entry in the journal", seconds: 10) {
                entries = try Journald.entries(["SYSLOG_IDENTIFIER=preforkd", "_PID=\(worker)"])
                return entries.contains { ($0["MESSAGE"] as? String)?.hasPrefix("Size of data transferred is") == true }
            }
            let entry = entries.first { ($0["MESSAGE"] as? String)?.hasPrefix("Size of data transferred is") == true }!
            #expect(entry["PRIORITY"] as? String == "7")
            #expect(entry["WORKER_PID"] as? String == "\(worker)")
            #expect(entry["WORKER_GENERATION"] as? String == "1")
            #expect(entry["INITIAL_BYTES"] as? String == "12")
            #expect(entry["LISTENER"] as? String == "127.0.0.1:0")
            #expect(entry["ROLE"] as? String == "worker 1")
            #expect((entry["CODE_FILE"] as? String).map { $0.contains("Prefork/") && $0.hasSuffix(".swift") } == true)
            #expect(Int(entry["CODE_LINE"] as? String ?? "") != nil)
            let supervisor = try Journald.entries(["SYSLOG_IDENTIFIER=preforkd", "_PID=\(daemon.pid)"])
            #expect(
                supervisor.contains {
                    ($0["MESSAGE"] as? String)?.hasPrefix("Listening on 127.0.0.1:\(port)") == true
                        && $0["ORIGIN"] as? String == "bound"
                })
        }
    }

    @Test func forwardedConnectionsAreJournaledWithRouteUpstreamAndPeer() throws {
        try Journald.with {
            let upstream = try TestUpstream(name: "up")
            defer { upstream.stop() }
            let config = try TestConfigFile(
                """
                listen = ["127.0.0.1:0"]
                workers = 1
                handler = "forward"
                log-format = "journal"
                [[forward.route]]
                name = "journaled"
                upstream = ["\(upstream.address())"]
                """)
            defer { config.remove() }
            let daemon = try Daemon(["--config", config.path])
            defer { daemon.stop() }
            try daemon.waitForReady()
            let client = try Client(port: try daemon.portFromStatus())
            defer { client.close() }
            try client.send("hi")
            #expect(try client.read(count: 5) == "up\nhi")
            let worker = daemon.workerPIDs().first ?? -1
            var entries: [[String: Any]] = []
            try waitUntil("the forwarded connection's entry in the journal", seconds: 10) {
                entries = try Journald.entries(["SYSLOG_IDENTIFIER=preforkd", "_PID=\(worker)", "ROUTE=journaled"])
                return !entries.isEmpty
            }
            #expect(entries[0]["UPSTREAM"] as? String == upstream.address())
            #expect((entries[0]["PEER"] as? String)?.hasPrefix("127.0.0.1:") == true)
            #expect((entries[0]["MESSAGE"] as? String)?.contains("forwarded to \(upstream.address())") == true)
        }
    }

    // libsystemd is loaded with dlopen when first needed, not linked: a start without socket
    // activation, watchdog or journal never maps it (nor its six dependencies).

    /// Whether the supervisor, and each worker, of a ready `daemon` map libsystemd.
    static func mapsLibsystemd(_ daemon: Daemon) throws -> (supervisor: Bool, workers: [Bool]) {
        try waitUntil("the workers") { !daemon.workerPIDs().isEmpty }
        let workers = try daemon.workerPIDs().map { try ProcessTable.maps($0, fileNamed: "libsystemd.so.") }
        return (try ProcessTable.maps(daemon.pid, fileNamed: "libsystemd.so."), workers)
    }

    @Test func aPlainStartNeverMapsLibsystemd() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        #expect(try Client.exchange(port: try daemon.port(), "plain<EOF>") == "plain<EOF>")
        let mapped = try Self.mapsLibsystemd(daemon)
        #expect(!mapped.supervisor)
        #expect(mapped.workers == [false, false])
    }

    @Test func journalLoggingAndTheWatchdogMapLibsystemd() throws {
        let journal = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--log-format", "journal"])
        defer { journal.stop() }
        let watchdog = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1"], environment: ["WATCHDOG_USEC": "60000000"])
        defer { watchdog.stop() }
        try journal.waitForReady()
        try watchdog.waitForReady()
        // Loaded before the first fork: the workers have it from the supervisor.
        let journalMapped = try Self.mapsLibsystemd(journal)
        #expect(journalMapped.supervisor && journalMapped.workers == [true])
        #expect(try Self.mapsLibsystemd(watchdog).supervisor)
    }

    @Test func anActivatedStartMapsLibsystemdAndServes() throws {
        let port = Self.freePort()
        let daemon = try Daemon(
            ["-l", "127.0.0.1:\(port)", "-E", "NOTIFY_SOCKET", Binaries.preforkd, "--workers", "1"],
            binary: "/usr/bin/systemd-socket-activate")
        defer { daemon.stop() }
        try daemon.waitForLog("Listening on", seconds: 30)  // systemd-socket-activate's line
        #expect(try Client.exchange(port: port, "activated<EOF>") == "activated<EOF>")
        try daemon.waitForReady()
        try daemon.waitForLog("Listening on 127.0.0.1:\(port) listener=unknown origin=activated")
        #expect(try Self.mapsLibsystemd(daemon).supervisor)
    }

    /// Runs the rest of its command line with libsystemd.so.0 unloadable: /dev/null mounted over
    /// the file the loader's cache names, in a mount namespace of its own (unshare -m).
    static let withoutLibsystemd = """
        lib=$(/sbin/ldconfig -p | awk '$1 == "libsystemd.so.0" { print $NF; exit }')
        [ -n "$lib" ] && mount --bind /dev/null "$(readlink -f "$lib")" && exec "$@"
        echo "cannot hide libsystemd.so.0 ('$lib')" >&2
        exit 99
        """

    static var isRoot: Bool { geteuid() == 0 }

    @Test(.enabled(if: isRoot, "needs root: it mounts over libsystemd in a mount namespace"))
    func withoutLibsystemdJournalLoggingFallsBackToText() throws {
        let daemon = try Daemon(
            [
                "-m", "--propagation", "private", "/bin/sh", "-c", Self.withoutLibsystemd, "sh",
                Binaries.preforkd, "--listen", "127.0.0.1:0", "--workers", "1", "--log-format", "journal",
            ],
            binary: "/usr/bin/unshare")
        defer { daemon.stop() }
        try daemon.waitForReady()
        #expect(try Client.exchange(port: try daemon.port(), "text<EOF>") == "text<EOF>")
        let warning = daemon.log.split(separator: "\n").filter { $0.contains("instead of entries to the journal") }
        #expect(warning.count == 1, "\(daemon.log)")
        #expect(
            warning.first?.contains(
                "warning [\(daemon.pid)] supervisor: Logging text to stderr instead of entries to the journal:"
                    + " dlopen libsystemd.so.0 (") == true, "\(daemon.log)")
        #expect(warning.first?.hasSuffix("): Can not access a needed shared library (errno 79)") == true)
        #expect(daemon.log.contains("info [\(daemon.pid)] supervisor: Ready: 1 workers accepting"))
        #expect(try !ProcessTable.maps(daemon.pid, fileNamed: "libsystemd.so."))
    }

    @Test(.enabled(if: isRoot, "needs root: it mounts over libsystemd in a mount namespace"))
    func withoutLibsystemdSocketActivationFailsWithOneLine() throws {
        let port = Self.freePort()
        let daemon = try Daemon(
            [
                "-m", "--propagation", "private", "/bin/sh", "-c", Self.withoutLibsystemd, "sh",
                "/usr/bin/systemd-socket-activate", "-l", "127.0.0.1:\(port)", "-E", "NOTIFY_SOCKET",
                Binaries.preforkd, "--workers", "1",
            ],
            binary: "/usr/bin/unshare")
        defer { daemon.stop() }
        try daemon.waitForLog("Listening on", seconds: 30)  // systemd-socket-activate's line
        // The first connection execs preforkd, which stops before it serves.
        let client = try Client(port: port)
        defer { client.close() }
        #expect(try daemon.waitForExit() == 78)
        let lines = daemon.log.split(separator: "\n").filter { $0.hasPrefix("preforkd:") }
        #expect(lines.count == 1, "\(daemon.log)")
        #expect(
            lines.first?.hasPrefix("preforkd: socket activation: dlopen libsystemd.so.0 (") == true, "\(daemon.log)")
        #expect(lines.first?.hasSuffix("): Can not access a needed shared library (errno 79)") == true)
    }
}
