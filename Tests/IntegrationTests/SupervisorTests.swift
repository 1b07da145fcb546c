import Foundation
import Glibc
import TestSupport
import Testing

/// Signals, respawns and stops against the real binary.
@Suite struct SupervisorTests {
    @Test func workerKilledWithSIGKILLIsReplacedAndServiceContinues() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let before = daemon.workerPIDs()
        #expect(before.count == 2)
        for round in 0..<20 {
            if round == 5 {
                // Between two exchanges, so the victim holds no connection; wait for it to be
                // gone so it cannot take the next one either: what is queued survives.
                kill(before[0], SIGKILL)
                try waitUntil("the killed worker to die") { !ProcessTable.isAlive(before[0]) }
            }
            #expect(try Client.exchange(port: port, "round \(round)<EOF>") == "round \(round)<EOF>")
        }
        try waitUntil("a replacement worker") {
            let now = daemon.workerPIDs()
            return now.count == 2 && !now.contains(before[0])
        }
        try daemon.waitForLog("killed by SIGKILL")
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
    }

    @Test func sigtermLetsTheInFlightClientFinishThenExitsZero() throws {
        let (daemon, slow, port) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "2"], sent: "the first half, ")
        defer { daemon.stop() }
        defer { slow.close() }
        daemon.signal(SIGTERM)
        try daemon.notify.waitFor("STOPPING=1", from: daemon.pid)
        try slow.send("then the rest<EOF>")
        #expect(try slow.readToEnd() == "the first half, then the rest<EOF>")
        #expect(try daemon.waitForExit() == 0)
        #expect(throws: (any Error).self) { try Client(port: port) }
    }

    @Test func stragglersAreKilledAfterTheGracefulTimeoutWhileSystemdIsToldToWait() throws {
        let (daemon, stuck, _) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--graceful-timeout", "1.5", "--initial-timeout", "30"],
            sent: "never finished")
        defer { daemon.stop() }
        defer { stuck.close() }
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit(seconds: 10) == 0)
        #expect(daemon.log.contains("still busy 1.5 s after it was told to stop; killing it"))
        // While it drained, systemd heard how much longer to wait: what is left plus 5 s.
        daemon.notify.poll(seconds: 0.2)
        let extensions = daemon.notify.received.flatMap(\.assignments).compactMap { line in
            line.hasPrefix("EXTEND_TIMEOUT_USEC=") ? UInt64(line.dropFirst("EXTEND_TIMEOUT_USEC=".count)) : nil
        }
        #expect(extensions.count >= 2, "about once a second: \(extensions)")
        #expect(extensions.allSatisfy { (5_000_000...6_600_000).contains($0) }, "\(extensions)")
    }

    @Test func sigquitStopsAtOnce() throws {
        // A worker holds a client mid-message, and would wait a minute for the rest: a graceful
        // stop would take that long.
        let (daemon, stuck, _) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "2", "--graceful-timeout", "60", "--initial-timeout", "60"],
            sent: "never finished")
        defer { daemon.stop() }
        defer { stuck.close() }
        let workers = daemon.workerPIDs()
        #expect(workers.count == 2)
        daemon.signal(SIGQUIT)
        #expect(try daemon.waitForExit(seconds: 15) == 0)
        // The client is cut off, without an echo: its worker is gone (a read that waits instead
        // throws EAGAIN after the client's 5 s timeout).
        do {
            #expect(try stuck.readToEnd() == "", "closed without a reply")
        } catch let error as POSIXError {
            #expect(error.code == .ECONNRESET, "cut off, not left waiting: \(error)")
        }
        try waitUntil("every worker to be gone") { workers.allSatisfy { !ProcessTable.isAlive($0) } }
    }

    @Test func ttinAndTtouAddAndRemoveAWorker() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        daemon.signal(SIGTTIN)
        try waitUntil("3 workers") { daemon.workerPIDs().count == 3 }
        // One at a time: the kernel merges a signal sent while the same one is still pending.
        daemon.signal(SIGTTOU)
        try waitUntil("2 workers") { daemon.workerPIDs().count == 2 }
        daemon.signal(SIGTTOU)
        try waitUntil("1 worker") { daemon.workerPIDs().count == 1 }
        daemon.signal(SIGTTOU)  // the last one stays
        try daemon.waitForLog("keeping the last worker")
        #expect(daemon.workerPIDs().count == 1)
        #expect(try Client.exchange(port: try daemon.port(), "one left<EOF>") == "one left<EOF>")
    }

    @Test func workersIgnoreTheSupervisorsSignals() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let worker = daemon.workerPIDs()
        #expect(worker.count == 1)
        // As from `pkill -HUP preforkd`: HUP would kill a worker by default, TTIN/TTOU stop it.
        for signal in [SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2] { kill(worker[0], signal) }
        #expect(try Client.exchange(port: port, "still serving<EOF>") == "still serving<EOF>")
        #expect(daemon.workerPIDs() == worker)
        #expect(ProcessTable.state(of: worker[0]) == "S", "not stopped (T) nor gone")
    }

    @Test func killingTheSupervisorLeavesNoWorkerBehind() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "3"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let workers = daemon.workerPIDs()
        #expect(workers.count == 3)
        daemon.signal(SIGKILL)
        try waitUntil("every worker to exit") { workers.allSatisfy { !ProcessTable.isAlive($0) } }
    }

    @Test func hupReloadsTheConfigFileIntoANewGeneration() throws {
        let config = try TestConfigFile("listen = \"127.0.0.1:0\"\nworkers = 2\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let first = daemon.workerPIDs()
        // A broken file is refused and the running generation keeps serving.
        try config.write("workers = \"many\"\n")
        daemon.signal(SIGHUP)
        try daemon.waitForLog("reload rejected")
        #expect(daemon.workerPIDs() == first)
        #expect(try Client.exchange(port: port, "before<EOF>") == "before<EOF>")
        #expect(!daemon.log.contains("Size of data transferred"), "info level: no per-connection line")
        // A good one: a new generation of 3 at debug level, the old one drained, READY=1 again.
        try config.write("listen = \"127.0.0.1:0\"\nworkers = 3\nlog-level = \"debug\"\n")
        daemon.signal(SIGHUP)
        try daemon.notify.waitFor("RELOADING=1", from: daemon.pid)
        try waitUntil("a second READY=1") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        try waitUntil("the new generation alone") {
            let now = daemon.workerPIDs()
            return now.count == 3 && Set(now).isDisjoint(with: first)
        }
        #expect(
            try Client.exchange(port: port, "after reload<EOF>") == "after reload<EOF>",
            "the listener is kept across the reload")
        try daemon.waitForLog("Size of data transferred is 17")
        let reloading = daemon.notify.received.first { $0.assignments.contains("RELOADING=1") }
        #expect(reloading?.assignments.contains { $0.hasPrefix("MONOTONIC_USEC=") } == true)
    }

    /// A reload parses the file in a child process (TOMLKit leaks what it parses); its refusal
    /// is the very line the in-process parse at start gives for the same file.
    @Test func aReloadRefusesABrokenFileWithTheSameLineAsAStart() throws {
        let good = "listen = \"127.0.0.1:0\"\nworkers = 1\n"
        let config = try TestConfigFile(good)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let broken = [
            "workers = \n", "workers = \"many\"\n", "backlogg = 5\n", "started = 1979-05-27T07:32:00Z\n",
            "initial-timeout = inf\n", "[echo]\nkeep-alive = 3\n", "handler = \"nope — ü\"\n",
        ]
        for text in broken {
            let file = try TestConfigFile(text)
            defer { file.remove() }
            let started = try Daemon(["--config", file.path])
            defer { started.stop() }
            #expect(try started.waitForExit(seconds: 10) == 78)
            let line = try #require(started.log.split(separator: "\n").first { $0.hasPrefix("preforkd: ") })
            let error = line.dropFirst("preforkd: ".count).replacingOccurrences(of: file.path, with: config.path)
            try config.write(text)
            daemon.signal(SIGHUP)
            try daemon.waitForLog("reload rejected, keeping generation 1: \(error)")
        }
        #expect(try Client.exchange(port: port, "still<EOF>") == "still<EOF>")
    }
}

/// Workers that cannot start: at boot the daemon gives up with a clear error; on reload the
/// old generation keeps serving.
@Suite struct BootFailureTests {
    /// Under a 900 MB address-space limit a worker cannot allocate a 1 GiB message buffer, so
    /// the echo handler's `prepare` fails in every worker: a real boot failure.
    static let limit = "--as=900000000"
    static let hugeBuffer = "1073741824"

    @Test func workersThatCannotBootStopTheDaemonWithAFailureStatus() throws {
        let daemon = try Daemon(
            [
                Self.limit, Binaries.preforkd, "--listen", "127.0.0.1:0", "--workers", "2",
                "--echo-max-message-bytes", Self.hugeBuffer,
            ], binary: "/usr/bin/prlimit")
        defer { daemon.stop() }
        #expect(try daemon.waitForExit(seconds: 30) == 1)
        #expect(daemon.log.contains("handler failed to start: cannot allocate the 1073741824-byte message buffer"))
        #expect(daemon.log.contains("Workers cannot boot: 5 consecutive failures; giving up"))
        daemon.notify.poll(seconds: 0.2)
        let failure = daemon.notify.received.first { $0.assignments.contains { $0.hasPrefix("ERRNO=") } }
        #expect(failure?.text.contains("STATUS=Failed: workers cannot boot") == true)
        #expect(!daemon.notify.received.contains { $0.assignments.contains("READY=1") })
    }

    @Test func aReloadWhoseWorkersCannotBootIsRolledBack() throws {
        let config = try TestConfigFile("listen = \"127.0.0.1:0\"\nworkers = 2\n")
        defer { config.remove() }
        let daemon = try Daemon([Self.limit, Binaries.preforkd, "--config", config.path], binary: "/usr/bin/prlimit")
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let serving = daemon.workerPIDs()
        try config.write("listen = \"127.0.0.1:0\"\nworkers = 2\n[echo]\nmax-message-bytes = \(Self.hugeBuffer)\n")
        daemon.signal(SIGHUP)
        try daemon.waitForLog("Reload abandoned", seconds: 30)
        // systemd hears READY=1 again (it waits for it after RELOADING=1), and the old workers serve on.
        try waitUntil("READY=1 after the rollback") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        #expect(
            daemon.notify.received.last { $0.assignments.contains("READY=1") }?.text.contains("Reload failed") == true)
        #expect(try Client.exchange(port: port, "still here<EOF>") == "still here<EOF>")
        try waitUntil("only the old generation") { Set(daemon.workerPIDs()) == Set(serving) }
        // A good config afterwards reloads normally.
        try config.write("listen = \"127.0.0.1:0\"\nworkers = 1\n")
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the good reload") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 3
        }
        try waitUntil("one new worker") { daemon.workerPIDs().count == 1 && !serving.contains(daemon.workerPIDs()[0]) }
    }

    @Test func aReloadMovesListenersWithoutRefusingConnections() throws {
        let first = SystemdIntegrationTests.freePort()
        let second = SystemdIntegrationTests.freePort()
        let config = try TestConfigFile("listen = \"127.0.0.1:\(first)\"\nworkers = 2\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        try config.write("listen = [\"127.0.0.1:\(first)\", \"127.0.0.1:\(second)\"]\nworkers = 2\n")
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after adding a listener") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        #expect(try Client.exchange(port: first, "first<EOF>") == "first<EOF>")
        #expect(try Client.exchange(port: second, "second<EOF>") == "second<EOF>")
        try config.write("listen = \"127.0.0.1:\(second)\"\nworkers = 2\n")
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after dropping a listener") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 3
        }
        try daemon.waitForLog("No longer listening on 127.0.0.1:\(first)")
        #expect(try Client.exchange(port: second, "second again<EOF>") == "second again<EOF>")
        try waitUntil("the dropped port to close") { (try? Client(port: first)) == nil }
    }
}

/// Signals at odd moments: a storm of reloads and pool changes while clients are served.
@Suite struct SignalStormTests {
    @Test func survivesASignalStormWithoutFailingAClient() throws {
        let config = try TestConfigFile("listen = \"127.0.0.1:0\"\nworkers = 2\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let failures = Counter()
        let served = Counter()
        let stop = Counter()
        let clients = Thread {
            // Bounded: at most 3000 exchanges or until told to stop.
            for index in 0..<3000 where stop.value == 0 {
                if (try? Client.exchange(port: port, "storm \(index)<EOF>")) == "storm \(index)<EOF>" {
                    served.increment()
                } else {
                    failures.increment()
                }
            }
            stop.increment()
        }
        clients.start()
        let storm: [Int32] = [SIGHUP, SIGTTIN, SIGHUP, SIGTTOU, SIGCHLD, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2]
        for round in 0..<60 {
            daemon.signal(storm[round % storm.count])
            usleep(5_000)
        }
        try waitUntil("the client loop to finish", seconds: 60) {
            if stop.value == 0 { return false }
            return true
        }
        #expect(failures.value == 0, "\(failures.value) failed exchanges out of \(served.value + failures.value)")
        #expect(served.value > 0)
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit(seconds: 30) == 0)
    }
}
