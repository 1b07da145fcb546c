import Foundation
import Glibc
import TestSupport
import Testing

/// In-place upgrade on SIGUSR2: the supervisor re-executes the binary at its path and keeps its
/// pid; the new image adopts the old workers and retires them once its own generation serves.
///
/// Each test runs its own copy of the built binary from a temporary directory, so that the file
/// can be replaced (or broken) under the running daemon as a package upgrade would.
@Suite struct UpgradeTests {
    /// A copy of the built preforkd that a test may replace.
    final class BinaryCopy {
        let directory: String
        var path: String { directory + "/preforkd" }

        init() throws {
            directory = NSTemporaryDirectory() + "preforkd-upgrade-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try install(contentsOf: Binaries.preforkd, mode: 0o755)
        }

        deinit { try? FileManager.default.removeItem(atPath: directory) }

        /// Puts `source`'s bytes at the path under a new inode, atomically (write then rename), as
        /// dpkg does.
        func install(contentsOf source: String, mode: mode_t) throws {
            let staging = directory + "/.staging"
            unlink(staging)
            try FileManager.default.copyItem(atPath: source, toPath: staging)
            chmod(staging, mode)
            guard rename(staging, path) == 0 else { throw TestFailure("rename \(staging): errno \(errno)") }
        }

        /// Puts a file with `contents` at the path instead of a binary.
        func replace(with contents: String, mode: mode_t) throws {
            let staging = directory + "/.staging"
            try contents.write(toFile: staging, atomically: false, encoding: .utf8)
            chmod(staging, mode)
            guard rename(staging, path) == 0 else { throw TestFailure("rename \(staging): errno \(errno)") }
        }

        var inode: UInt64 {
            var info = stat()
            return stat(path, &info) == 0 ? UInt64(info.st_ino) : 0
        }
    }

    static func inodeOfExecutable(_ pid: Int32) -> UInt64 {
        var info = stat()
        return stat("/proc/\(pid)/exe", &info) == 0 ? UInt64(info.st_ino) : 0
    }

    static func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// VmRSS in KiB.
    static func residentKiB(_ pid: Int32) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
    }

    /// Sends USR2 and waits for the `count`-th READY=1.
    static func upgrade(_ daemon: Daemon, toReadyCount count: Int) throws {
        daemon.signal(SIGUSR2)
        try waitUntil("READY=1 number \(count) after SIGUSR2", seconds: 20) {
            daemon.notify.poll(seconds: 0.05)
            if let status = daemon.exitStatus { throw TestFailure("exited with \(status): \(daemon.log)") }
            return daemon.notify.count(of: "READY=1", from: daemon.pid) >= count
        }
    }

    @Test func usr2ThreeTimesUnderLoadKeepsThePidAndFailsNoExchange() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let firstWorkers = daemon.workerPIDs()
        let failures = Counter()
        let served = Counter()
        let stop = Counter()
        let clients = Thread {
            // Bounded: at most 20,000 exchanges, 60 s, or until told to stop.
            let deadline = Deadline(seconds: 60)
            for index in 0..<20_000 where stop.value == 0 && !deadline.hasPassed {
                if (try? Client.exchange(port: port, "load \(index)<EOF>")) == "load \(index)<EOF>" {
                    served.increment()
                } else {
                    failures.increment()
                }
            }
            stop.increment()
        }
        clients.start()
        defer {
            stop.increment()
            try? waitUntil("the client loop to finish", seconds: 30) { stop.value >= 2 }
        }
        for round in 1...3 {
            try binary.install(contentsOf: Binaries.preforkd, mode: 0o755)
            let before = Self.inodeOfExecutable(daemon.pid)
            #expect(before != binary.inode, "the file was replaced under the running image")
            try Self.upgrade(daemon, toReadyCount: round + 1)
            let after = Self.inodeOfExecutable(daemon.pid)
            #expect(after == binary.inode, "round \(round): the new file runs")
            let maps = try ProcessTable.procFile("/proc/\(daemon.pid)/maps")
            #expect(maps.contains(" \(after)    ") || maps.contains(" \(after) "), "its text is mapped")
            #expect(!maps.contains(" \(before) "), "round \(round): the old image is gone from the maps")
            #expect(daemon.notify.count(of: "RELOADING=1", from: daemon.pid) == round)
        }
        // Every datagram came from the one pid, RELOADING=1 then READY=1 each time.
        let states = daemon.notify.received.filter { $0.pid == daemon.pid }.flatMap(\.assignments).filter {
            $0 == "READY=1" || $0 == "RELOADING=1"
        }
        #expect(states == ["READY=1"] + Array(repeating: ["RELOADING=1", "READY=1"], count: 3).flatMap { $0 })
        #expect(daemon.notify.received.allSatisfy { $0.pid == daemon.pid })
        let reloading = daemon.notify.received.first { $0.assignments.contains("RELOADING=1") }
        #expect(reloading?.assignments.contains { $0.hasPrefix("MONOTONIC_USEC=") } == true)
        // Let the load run on the last generation a little, then stop it.
        let servedAtReady = served.value
        try waitUntil("exchanges with the last image") { served.value > servedAtReady + 50 || stop.value > 0 }
        stop.increment()
        try waitUntil("the client loop to finish", seconds: 30) { stop.value >= 2 }
        #expect(failures.value == 0, "\(failures.value) failed exchanges out of \(served.value + failures.value)")
        #expect(served.value > 0)
        try waitUntil("the first generation to drain") { firstWorkers.allSatisfy { !ProcessTable.isAlive($0) } }
        try waitUntil("two workers of the last generation") { daemon.workerPIDs().count == 2 }
        try daemon.waitForLog("adopted 2 workers of generation 3, starting generation 4")
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit(seconds: 30) == 0)
    }

    @Test func aBinaryThatCannotTakeOverLeavesTheOldImageServing() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let workers = daemon.workerPIDs()
        let image = Self.inodeOfExecutable(daemon.pid)
        let broken: [(contents: String, mode: mode_t, log: String)] = [
            ("not a program\n", 0o644, "Permission denied"),
            ("#!/bin/sh\nexit 1\n", 0o755, "failed its probe (exit status 1)"),
            ("#!/bin/sh\necho hello\n", 0o755, "is no preforkd that can take over (answered 'hello')"),
        ]
        for (index, replacement) in broken.enumerated() {
            try binary.replace(with: replacement.contents, mode: replacement.mode)
            try Self.upgrade(daemon, toReadyCount: index + 2)
            try daemon.waitForLog(replacement.log)
            let ready = daemon.notify.received.last { $0.pid == daemon.pid && $0.assignments.contains("READY=1") }
            #expect(ready?.assignments.contains { $0.hasPrefix("STATUS=Upgrade failed: ") } == true, "\(ready as Any)")
            #expect(Self.inodeOfExecutable(daemon.pid) == image, "the old image runs on")
            #expect(daemon.workerPIDs() == workers, "and its workers serve on")
            #expect(try Client.exchange(port: port, "still \(index)<EOF>") == "still \(index)<EOF>")
        }
        // A good binary again: the upgrade goes through.
        try binary.install(contentsOf: Binaries.preforkd, mode: 0o755)
        try Self.upgrade(daemon, toReadyCount: broken.count + 2)
        #expect(Self.inodeOfExecutable(daemon.pid) == binary.inode)
    }

    @Test(.enabled(if: geteuid() == 0, "needs root: the supervisor switches to nobody before the upgrade"))
    func anUpgradeAfterThePrivilegeDropKeepsTheUserThePidAndTheBindCapability() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--user", "nobody"], binary: binary.path, allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        try binary.install(contentsOf: Binaries.preforkd, mode: 0o755)
        try Self.upgrade(daemon, toReadyCount: 2)
        #expect(Self.inodeOfExecutable(daemon.pid) == binary.inode, "the new image runs")
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
        let status = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
        let field = { (name: String) in
            status.split(separator: "\n").first { $0.hasPrefix(name + ":") }.map {
                $0.split(separator: "\t").dropFirst().joined(separator: " ")
            }
        }
        #expect(field("Uid") == "65534 65534 65534 65534", "still nobody after the exec")
        #expect(field("NoNewPrivs") == "1")
        // CAP_NET_BIND_SERVICE (bit 10) survives the exec, for reloads that bind low ports.
        #expect(field("CapEff") == "0000000000000400")
    }

    @Test func usr2SentToTheWholeServiceAsSystemctlKillDoesStillUpgrades() throws {
        // `systemctl kill -s USR2` signals every process of the service, over and over until
        // no new one appears: the probe the supervisor forks meanwhile gets it too.
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        try binary.install(contentsOf: Binaries.preforkd, mode: 0o755)
        daemon.signal(SIGUSR2)
        let until = Date().addingTimeInterval(0.5)
        while Date() < until {
            for child in ProcessTable.children(of: daemon.pid) { kill(child, SIGUSR2) }
        }
        try waitUntil("READY=1 after the upgrade", seconds: 20) {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) >= 2
        }
        #expect(!daemon.log.contains("upgrade failed"), "\(daemon.log)")
        #expect(Self.inodeOfExecutable(daemon.pid) == binary.inode)
    }

    @Test func aHangupRightAfterTheExecIsNotLost() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        daemon.signal(SIGUSR2)
        // This line is written just before execve: the HUP reaches the old image with its
        // signals blocked, or the new one before it reads its signalfd; either way it is pending.
        try daemon.waitForLog("the probe answered; executing")
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the upgrade and after the reload", seconds: 20) {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) >= 3
        }
        try daemon.waitForLog("SIGHUP: reloading; starting generation 3")
        #expect(daemon.notify.count(of: "RELOADING=1", from: daemon.pid) == 2)
    }

    @Test func tenUpgradesLeaveNoDescriptorZombieOrSocketFileBehind() throws {
        let binary = try BinaryCopy()
        let socketPath = binary.directory + "/echo.sock"
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--listen", "unix:\(socketPath)", "--workers", "2"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let descriptors = Self.openDescriptors(daemon.pid)
        let resident = Self.residentKiB(daemon.pid)
        for round in 1...10 {
            try Self.upgrade(daemon, toReadyCount: round + 1)
        }
        try waitUntil("every adopted generation to drain") {
            daemon.workerPIDs().count == 2 && ProcessTable.zombies(of: daemon.pid).isEmpty
        }
        #expect(Self.openDescriptors(daemon.pid) == descriptors, "descriptors: \(descriptors) before")
        let residentAfter = Self.residentKiB(daemon.pid)
        #expect(residentAfter < 2 * resident, "VmRSS \(resident) KiB before, \(residentAfter) KiB after")
        #expect(try Client.exchange(port: port, "tenth<EOF>") == "tenth<EOF>")
        let unix = try Client(unixPath: socketPath)
        try unix.send("unix<EOF>")
        #expect(try unix.readToEnd() == "unix<EOF>")
        unix.close()
        #expect(FileManager.default.fileExists(atPath: daemon.directory + "/status"), "the status file is kept")
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit(seconds: 30) == 0)
        #expect(!FileManager.default.fileExists(atPath: socketPath), "the socket file is removed at exit")
        #expect(!FileManager.default.fileExists(atPath: daemon.directory + "/status"), "so is the status file")
    }

    @Test func aStoredListenerStaysInTheFdStoreOnceAcrossUpgrades() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--fd-store"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        #expect(daemon.notify.count(of: "FDSTORE=1", from: daemon.pid) == 1)
        try Self.upgrade(daemon, toReadyCount: 2)
        try Self.upgrade(daemon, toReadyCount: 3)
        #expect(daemon.notify.count(of: "FDSTORE=1", from: daemon.pid) == 1, "not stored again")
        #expect(daemon.notify.count(of: "FDSTOREREMOVE=1", from: daemon.pid) == 0, "nor removed")
        #expect(try Client.exchange(port: try daemon.port(), "stored<EOF>") == "stored<EOF>")
    }

    @Test func aNewImageWhoseGenerationCannotBootKeepsTheAdoptedWorkersServing() throws {
        // HandlerFaultProbe's workers hang in their set-up while the hang file exists, and must
        // start within 2 s: the probe (which forks nothing) passes, the new generation does not.
        let binary = try BinaryCopy()
        try binary.install(contentsOf: Binaries.handlerFaultProbe, mode: 0o755)
        let hang = binary.directory + "/hang"
        // The fault probe allows root itself and takes no flags.
        let daemon = try Daemon(["127.0.0.1:0", "2", hang], binary: binary.path, allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let workers = daemon.workerPIDs()
        try "".write(toFile: hang, atomically: false, encoding: .utf8)
        try Self.upgrade(daemon, toReadyCount: 2)
        let ready = daemon.notify.received.last { $0.pid == daemon.pid && $0.assignments.contains("READY=1") }
        #expect(
            ready?.assignments.contains { $0.hasPrefix("STATUS=Upgrade failed: generation 2 did not start within 2 s") }
                == true, "\(ready as Any)")
        try daemon.waitForLog("Upgrade abandoned: generation 2")
        #expect(try Client.exchange(port: port, "adopted<EOF>") == "adopted<EOF>")
        #expect(Set(daemon.workerPIDs()).isSuperset(of: workers), "the adopted workers serve on")
        // Once set-up works again, the next USR2 goes through and retires them.
        unlink(hang)
        try Self.upgrade(daemon, toReadyCount: 3)
        try waitUntil("the adopted workers to drain") { workers.allSatisfy { !ProcessTable.isAlive($0) } }
    }

    @Test func theCountersCarryAcrossTheExecAndCountUpgrades() throws {
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0", "127.0.0.2:0"]
            workers = 1
            [listeners."127.0.0.2:0"]
            handler = "metrics"
            """)
        defer { config.remove() }
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--config", config.path], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let marker = "Listening on 127.0.0.2:"
        let line = try #require(daemon.log.split(separator: "\n").first { $0.contains(marker) })
        let range = try #require(line.range(of: marker))
        let metrics = try #require(UInt16(line[range.upperBound...].prefix { $0.isNumber }))
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the reload") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        try Self.upgrade(daemon, toReadyCount: 3)
        try binary.replace(with: "#!/bin/sh\nexit 1\n", mode: 0o755)
        try Self.upgrade(daemon, toReadyCount: 4)
        var values: [String: Double] = [:]
        try waitUntil("the supervisor to publish the counters") {
            let response = try MetricsHandlerTests.get("/metrics", port: metrics, host: "127.0.0.2")
            values = MetricsHandlerTests.samples(
                response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n"))
            return values["preforkd_upgrades_total{result=\"failed\"}"] == 1
        }
        #expect(values["preforkd_upgrades_total{result=\"completed\"}"] == 1)
        #expect(values["preforkd_reloads_total{result=\"committed\"}"] == 1, "counted before the exec, kept after")
        #expect(values["preforkd_generation"] == 3)
    }

    @Test func aStopDuringTheProbeKillsItAndASecondUsr2WaitsForTheFirst() throws {
        let binary = try BinaryCopy()
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"], binary: binary.path)
        defer { daemon.stop() }
        try daemon.waitForReady()
        // A "binary" that never answers: the probe is this very process (exec), so killing it
        // leaves nothing behind.
        try binary.replace(with: "#!/bin/sh\nexec sleep 30\n", mode: 0o755)
        daemon.signal(SIGUSR2)
        try daemon.waitForLog("probing it first")
        let probe = try #require(
            daemon.log.split(separator: "\n").last { $0.contains("probing it first") }?
                .split(separator: "probe.pid=").last.flatMap { Int32($0.prefix { $0.isNumber }) })
        #expect(ProcessTable.isAlive(probe))
        daemon.signal(SIGUSR2)
        try daemon.waitForLog("SIGUSR2: an upgrade is already under way")
        #expect(daemon.notify.count(of: "RELOADING=1", from: daemon.pid) == 1)
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit(seconds: 30) == 0)
        try waitUntil("the probe to be gone") { !ProcessTable.isAlive(probe) }
    }
}
