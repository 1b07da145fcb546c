import Foundation
import Glibc
import TestSupport
import Testing

/// The pool through odd moments, against the real binary: idle workers, reloads that leave
/// stragglers, hostile start-up conditions, stops with clients waiting, many listeners.
@Suite struct PoolLifecycleTests {
    /// accept4's and poll's numbers in /proc/PID/syscall on this architecture.
    static let (accept4, poll): (String, String) = {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return machine == "aarch64" ? ("242", "73") : ("288", "7")
    }()

    /// The system call a process is blocked in ("288"), or "running".
    static func blockedIn(_ pid: Int32) -> String {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8)) ?? ""
        return String(text.split(separator: " ").first ?? "")
    }

    @Test func idleWorkersWaitInAcceptEvenAfterTheInitialTimeoutHasPassed() throws {
        // The initial timeout is the listener's SO_RCVTIMEO, which also times out accept4: a
        // worker must go back into accept4, not park in poll (where a connection would wake
        // every idle worker instead of the longest-waiting one).
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "3", "--initial-timeout", "0.3"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let started = Date()
        let workers = daemon.workerPIDs()
        #expect(workers.count == 3)
        var seen: [String] = []
        try waitUntil("every worker blocked in accept4 after 3 initial timeouts", seconds: 10) {
            seen = workers.map(Self.blockedIn)
            return Date().timeIntervalSince(started) > 0.9 && seen.allSatisfy { $0 == Self.accept4 }
        }
        #expect(!seen.contains(Self.poll))
        #expect(try Client.exchange(port: try daemon.port(), "served<EOF>") == "served<EOF>")
    }

    @Test func aWorkerRetiredByAReloadIsKilledAfterTheGracefulTimeout() throws {
        let config = try TestConfigFile(
            "listen = \"127.0.0.1:0\"\nworkers = 1\ngraceful-timeout = 1\ninitial-timeout = 30\n")
        defer { config.remove() }
        let (daemon, slow, _) = try startWithClientMidMessage(["--config", config.path], sent: "trickle")
        defer { daemon.stop() }
        defer { slow.close() }
        let old = daemon.workerPIDs()
        #expect(old.count == 1)
        daemon.signal(SIGHUP)
        try waitUntil("a second READY=1") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        // The client keeps trickling; the old worker still has to go once its second is up.
        try waitUntil("the old worker to be killed", seconds: 8) {
            try? slow.send(".")
            return !ProcessTable.isAlive(old[0])
        }
        try daemon.waitForLog("still busy 1 s after it was told to stop; killing it")
    }

    @Test func aReloadWhoseWorkersHangWhileStartingIsRolledBackAtTheBootTimeout() throws {
        let hang = NSTemporaryDirectory() + "preforkd-hang-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(hang) }
        let daemon = try Daemon(["127.0.0.1:0", "2", hang], binary: HandlerFaultTests.probe)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let serving = daemon.workerPIDs()
        #expect(FileManager.default.createFile(atPath: hang, contents: nil))
        daemon.signal(SIGHUP)
        try daemon.notify.waitFor("RELOADING=1", from: daemon.pid)
        // The new generation never gets past its set-up: after the boot timeout (2 s) it is
        // abandoned, systemd hears READY=1 again, and a later HUP is not stuck behind it.
        try waitUntil("READY=1 after the rollback", seconds: 10) {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.received.contains {
                $0.pid == daemon.pid && $0.text.contains("READY=1")
                    && $0.text.contains("STATUS=Reload failed (did not start within 2 s)")
            }
        }
        #expect(daemon.workerPIDs() == serving || Set(serving).isSubset(of: Set(daemon.workerPIDs())))
        #expect(try Client.exchange(port: port, "old generation<EOF>") == "old generation<EOF>")
        unlink(hang)
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after a reload that starts", seconds: 10) {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 3
        }
        try waitUntil("the new generation alone") { Set(daemon.workerPIDs()).isDisjoint(with: serving) }
    }

    @Test func aWorkerHeldPastTheHandlerTimeoutIsKilledNamingItsClientAndReplaced() throws {
        let (daemon, held, port) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--handler-timeout", "3"], sent: "never ends")
        defer { daemon.stop() }
        defer { held.close() }
        let worker = daemon.workerPIDs()
        let clientAddress = try SocketAddressText.local(of: held.fd)
        try waitUntil("the held worker to be killed", seconds: 10) {
            try? held.send(".")  // a trickle keeps the handler's own read timeout from ending it
            return !ProcessTable.isAlive(worker[0])
        }
        try daemon.waitForLog("Worker 1 killed: handling a connection for 3")
        try daemon.waitForLog("past handler-timeout (3 s allowed); peer \(clientAddress)")
        #expect(try Client.exchange(port: port, "next client<EOF>") == "next client<EOF>")
        #expect(!daemon.log.contains("failed to boot"))
    }

    @Test func workersAreRecycledAfterTheirShareOfConnectionsWithoutLosingOne() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2", "--max-connections-per-worker", "10"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let first = daemon.workerPIDs()
        for round in 0..<80 {
            #expect(try Client.exchange(port: port, "round \(round)<EOF>") == "round \(round)<EOF>")
        }
        let recycled = daemon.log.components(separatedBy: "served its max-connections-per-worker; replacing it")
        #expect(recycled.count - 1 >= 4, "80 connections over limits of 10 to 12 each")
        #expect(Set(daemon.workerPIDs()).isDisjoint(with: first))
        #expect(!daemon.log.contains("died"))
    }

    @Test func thePoolGrowsWhileEveryWorkerIsBusyAndShrinksBackOnceIdle() throws {
        let daemon = try Daemon(
            [
                "--listen", "127.0.0.1:0", "--workers", "1", "--min-spare", "1", "--max-workers", "3",
                "--spare-timeout", "0.5", "--initial-timeout", "30",
            ])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        // Two clients hold two workers mid-message; one idle worker more is kept at hand.
        var held: [Client] = []
        defer { for client in held { client.close() } }
        for index in 0..<2 {
            let client = try Client(port: port)
            try client.send("held \(index) ")
            held.append(client)
            try waitUntil("worker \(index + 2) to be forked") { daemon.workerPIDs().count == index + 2 }
        }
        try waitUntil("a third worker, the spare") { daemon.workerPIDs().count == 3 }
        #expect(try Client.exchange(port: port, "served by the spare<EOF>") == "served by the spare<EOF>")
        for (index, client) in held.enumerated() {
            try client.send("done<EOF>")
            #expect(try client.readToEnd() == "held \(index) done<EOF>")
        }
        try waitUntil("the pool back at one worker", seconds: 10) { daemon.workerPIDs().count == 1 }
        try daemon.waitForLog("retiring it")
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
    }

    @Test func aRolledBackReloadLeavesTheServingListenerAsItWas() throws {
        // The new configuration adds a listener (workers over two listeners need them
        // non-blocking) and cannot boot (a 1 GiB buffer under a 900 MB address-space limit).
        // Rolled back, the old generation's listener must be blocking again: its workers wait
        // in accept4, not in poll.
        let config = try TestConfigFile("listen = \"127.0.0.1:0\"\nworkers = 1\n")
        defer { config.remove() }
        let daemon = try Daemon(
            ["--as=900000000", Binaries.preforkd, "--config", config.path], binary: "/usr/bin/prlimit")
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        try config.write(
            """
            listen = ["127.0.0.1:0", "127.0.0.2:0"]
            workers = 1
            [echo]
            max-message-bytes = 1073741824
            """)
        daemon.signal(SIGHUP)
        try daemon.waitForLog("Reload abandoned", seconds: 30)
        try waitUntil("READY=1 after the rollback", seconds: 10) {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        // One exchange sends the worker back into accept.
        #expect(try Client.exchange(port: port, "after the rollback<EOF>") == "after the rollback<EOF>")
        let worker = daemon.workerPIDs()
        #expect(worker.count == 1)
        var seen = ""
        try waitUntil("the worker blocked in accept4") {
            seen = Self.blockedIn(worker[0])
            return seen == Self.accept4 || seen == Self.poll
        }
        #expect(seen == Self.accept4)
    }

    @Test func clientsThatSendNothingNeverOccupyAWorker() throws {
        // One worker, a 30 s initial timeout, and 50 clients that connect and send nothing: the
        // kernel holds them (TCP_DEFER_ACCEPT), so the worker stays in accept4 and a client that
        // does send is served at once.
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--initial-timeout", "30"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        var silent: [Client] = []
        defer { for client in silent { client.close() } }
        for _ in 0..<50 { silent.append(try Client(port: port)) }
        for round in 0..<20 {
            let client = try Client(port: port, timeout: 2)
            defer { client.close() }
            try client.send("round \(round)<EOF>")
            #expect(try client.readToEnd() == "round \(round)<EOF>")
        }
        #expect(Self.blockedIn(daemon.workerPIDs()[0]) == Self.accept4)
    }

    @Test func withoutDeferAcceptASilentClientHoldsTheWorkerUntilItsTimeout() throws {
        // What --no-defer-accept is for (a server that speaks first sees the client at once),
        // and what it costs.
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--initial-timeout", "30", "--no-defer-accept"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let silent = try Client(port: try daemon.port())
        defer { silent.close() }
        try waitUntil("the worker to read from the silent client") { (try? busyWorkers(daemon)) == 1 }
    }

    @Test func reloadsAndConnectionsLeaveNoDescriptorZombieOrSocketFileBehind() throws {
        let pool = try AlternatingListeners()
        let (daemon, port, directory) = (pool.daemon, pool.port, pool.directory)
        func descriptors() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/fd")) ?? []).count
        }
        func exchanges(_ count: Int) throws {
            for index in 0..<count { _ = try Client.exchange(port: port, "\(index)<EOF>") }
        }
        try exchanges(100)
        let before = descriptors()
        for round in 1...20 {
            try pool.reload(round)
            try waitUntil("READY=1 number \(round + 1)") {
                daemon.notify.poll(seconds: 0.02)
                return daemon.notify.count(of: "READY=1", from: daemon.pid) == round + 1
            }
            try exchanges(50)
        }
        try waitUntil("the old generations drained") { daemon.workerPIDs().count == 2 }
        #expect(descriptors() == before, "the supervisor holds as many descriptors as before")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(files == ["r0.sock"], "only the socket the configuration names: \(files)")
        #expect(ProcessTable.zombies(of: daemon.pid).isEmpty)
    }

    @Test func connectionsRacingReloadsOfTwoListenersAreAllServed() throws {
        // Workers over two listeners wait in epoll (EPOLLEXCLUSIVE: one waiter woken per
        // connection). One told to stop right after its wake-up leaves the connection behind, and
        // epoll tells no other waiter: it must still be served, not wait for the next client.
        let pool = try AlternatingListeners()
        for round in 1...40 {
            try pool.reload(round)
            for index in 0..<30 {
                let client = try Client(port: pool.port, timeout: 3)
                defer { client.close() }
                try client.send("\(round).\(index)<EOF>")
                #expect(try client.readToEnd() == "\(round).\(index)<EOF>")
            }
        }
    }

    @Test func aHandlerThatFindsTheServiceCannotRunStopsItWithItsErrno() throws {
        let control = NSTemporaryDirectory() + "preforkd-fatal-\(UInt32.random(in: 0...UInt32.max))"
        #expect(FileManager.default.createFile(atPath: control + ".fatal", contents: nil))
        defer { unlink(control + ".fatal") }
        let daemon = try Daemon(["127.0.0.1:0", "2", control], binary: HandlerFaultTests.probe)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit(seconds: 15) == 1)
        #expect(daemon.log.contains("handler cannot run: \(control).fatal exists"))
        #expect(daemon.log.contains("found the service cannot run (exit status 6); stopping"))
        #expect(!daemon.log.contains("Respawning"), "not retried as a boot failure")
        daemon.notify.poll(seconds: 0.2)
        let texts = daemon.notify.received.filter { $0.pid == daemon.pid }.flatMap(\.assignments)
        #expect(texts.contains("STOPPING=1") && texts.contains("ERRNO=\(EPERM)"), "\(texts)")
    }

    @Test func aReloadWhoseHandlerCannotRunIsRolledBack() throws {
        let control = NSTemporaryDirectory() + "preforkd-fatal-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(control + ".fatal") }
        let daemon = try Daemon(["127.0.0.1:0", "2", control], binary: HandlerFaultTests.probe)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        #expect(FileManager.default.createFile(atPath: control + ".fatal", contents: nil))
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the rollback") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.received.contains {
                $0.pid == daemon.pid && $0.text.contains("READY=1") && $0.text.contains("STATUS=Reload failed")
            }
        }
        #expect(try Client.exchange(port: port, "still served<EOF>") == "still served<EOF>")
    }

    @Test func aWorkerOutOfFileDescriptorsPausesShowsItAndServesOnceItCan() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let worker = daemon.workerPIDs()[0]
        // No descriptor left for the next accept: its own lowest free one is the limit.
        let open = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker)/fd")) ?? [])
            .compactMap(Int.init).sorted()
        let lowestFree = (0...).first { !open.contains($0) }!
        func limit(_ value: String) throws {
            let result = try runChild(
                "/usr/bin/prlimit", ["--pid", "\(worker)", "--nofile=\(value)"], environment: [])
            #expect(result.exitedNormally && result.exitCode == 0, "\(result.output)")
        }
        try limit("\(lowestFree):")
        // The accept the worker is blocked in already holds its descriptor: this one is served.
        #expect(try Client.exchange(port: port, "first<EOF>") == "first<EOF>")
        let client = try Client(port: port, timeout: 10)
        defer { client.close() }
        try client.send("waited<EOF>")
        try waitUntil("STATUS= to show the pause") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.received.last { $0.text.contains("STATUS=") }?.text
                .contains("1 paused (out of file descriptors or memory)") == true
        }
        try daemon.waitForLog("Too many open files")
        try limit("1024:")
        #expect(try client.readToEnd() == "waited<EOF>", "the queued client is served once the worker can accept")
    }

    @Test func startedWithChildAndStopSignalsIgnoredItStillReapsRespawnsAndStops() throws {
        // A parent (nohup, a shell's trap) may leave signals ignored across exec. Ignored
        // SIGCHLD makes the kernel reap workers itself; ignored SIGTERM is never seen.
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "2"], ignoring: [SIGCHLD, SIGTERM, SIGHUP, SIGTTIN])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let before = daemon.workerPIDs()
        #expect(before.count == 2)
        kill(before[0], SIGKILL)
        try waitUntil("a replacement worker") {
            let now = daemon.workerPIDs()
            return now.count == 2 && !now.contains(before[0])
        }
        daemon.signal(SIGTTIN)
        try waitUntil("a third worker") { daemon.workerPIDs().count == 3 }
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
    }

    @Test func aStderrPipeNobodyReadsDoesNotKillTheSupervisor() throws {
        // stderr is a pipe whose reader is gone, and SIGPIPE has its default (fatal) disposition.
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "2"], standardError: .pipeWithoutReader)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try portFromStatus(daemon)
        #expect(try Client.exchange(port: port, "no log, still served<EOF>") == "no log, still served<EOF>")
        daemon.signal(SIGHUP)  // a reload logs several lines
        try waitUntil("a second READY=1") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
    }

    @Test func aStderrPipeNobodyReadsButNobodyClosedEitherBlocksNoProcess() throws {
        // The reader holds the pipe open and never reads: after 64 KiB every write would block.
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "2", "--log-level", "debug"], standardError: .pipeNobodyReads)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try portFromStatus(daemon)
        // A debug line per connection: 600 of them are well past the pipe's 64 KiB.
        for round in 0..<600 {
            #expect(try Client.exchange(port: port, "round \(round)<EOF>") == "round \(round)<EOF>")
        }
        let before = daemon.workerPIDs()
        kill(before[0], SIGKILL)
        try waitUntil("a replacement worker") {
            let now = daemon.workerPIDs()
            return now.count == 2 && !now.contains(before[0])
        }
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
    }

    @Test func startedWithStderrClosedNoSocketBecomesStderr() throws {
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1"], standardError: .closed)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try portFromStatus(daemon)
        // Were a listener fd 2, every log line would go out on it; a client sees only its echo.
        #expect(try Client.exchange(port: port, "clean<EOF>") == "clean<EOF>")
        let stderr = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(daemon.pid)/fd/2")) ?? ""
        #expect(stderr == "/dev/null")
    }

    @Test func aStoredListenerDroppedByAReloadLeavesSystemdsFdStore() throws {
        // The socket comes back from systemd's fd store at start (LISTEN_FDNAMES=stored-…).
        let port = SystemdIntegrationTests.freePort()
        let config = try TestConfigFile("listen = \"127.0.0.1:\(port)\"\nworkers = 1\n")
        defer { config.remove() }
        let launcher = """
            import os, socket, sys
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(sys.argv[1])))
            s.listen(16)
            os.dup2(s.fileno(), 3)
            os.set_inheritable(3, True)
            os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()),
                              LISTEN_FDNAMES="stored-127.0.0.1_" + sys.argv[1])
            os.execv(sys.argv[2], sys.argv[2:])
            """
        let daemon = try Daemon(
            ["-c", launcher, "\(port)", Binaries.preforkd, "--config", config.path], binary: "/usr/bin/python3")
        defer { daemon.stop() }
        try daemon.waitForReady()
        try daemon.waitForLog("Listening on 127.0.0.1:\(port) listener=127.0.0.1:\(port) origin=stored")
        try config.write("listen = \"127.0.0.1:0\"\nworkers = 1\n")
        daemon.signal(SIGHUP)
        try waitUntil("FDSTOREREMOVE for the dropped socket") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.received.contains {
                $0.pid == daemon.pid && $0.assignments.contains("FDSTOREREMOVE=1")
                    && $0.assignments.contains("FDNAME=stored-127.0.0.1_\(port)")
            }
        }
    }

    @Test func aGracefulStopRefusesNewClientsAtOnceWhileTheBusyOneFinishes() throws {
        let (daemon, slow, port) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--graceful-timeout", "20"], sent: "first half, ")
        defer { daemon.stop() }
        defer { slow.close() }
        daemon.signal(SIGTERM)
        try daemon.notify.waitFor("STOPPING=1", from: daemon.pid)
        // Not a handshake and a long wait for a reset: refused, as by a server that is gone.
        var refused = false
        try waitUntil("new connections to be refused") {
            do {
                let client = try Client(port: port, timeout: 1)
                client.close()
                return false
            } catch let error as POSIXError {
                refused = error.code == .ECONNREFUSED
                return true
            }
        }
        #expect(refused)
        try slow.send("second half<EOF>")
        #expect(try slow.readToEnd() == "first half, second half<EOF>")
        #expect(try daemon.waitForExit() == 0)
    }

    @Test func sixtyFiveListenersAllServe() throws {
        let arguments = (1...65).flatMap { ["--listen", "127.0.0.\($0):0"] }
        let daemon = try Daemon(arguments + ["--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let ports = daemon.log.split(separator: "\n").compactMap { line -> UInt16? in
            guard let range = line.range(of: "Listening on 127.0.0.1:") else { return nil }
            return UInt16(line[range.upperBound...].prefix { $0.isNumber })
        }
        #expect(ports.count == 1, "127.0.0.1 is the first of 65 loopback addresses")
        #expect(try Client.exchange(port: ports[0], "the first listener<EOF>") == "the first listener<EOF>")
        #expect(daemon.log.components(separatedBy: "Listening on 127.0.0.").count - 1 == 65)
    }

    @Test func clientsThatNeverSendCauseABoundedNumberOfLogLines() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--initial-timeout", "0.05"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        var clients: [Client] = []
        for _ in 0..<40 { clients.append(try Client(port: port)) }
        defer { for client in clients { client.close() } }
        #expect(try Client.exchange(port: port, "after the silent ones<EOF>") == "after the silent ones<EOF>")
        // Each silent one is closed by the server once its initial timeout (rounded up to TCP's
        // retransmission schedule: 1 s here) has passed.
        for client in clients { #expect(try client.readToEnd() == "") }
        let lines = daemon.log.split(separator: "\n").filter { $0.contains("initial read timed out") }
        #expect((5...10).contains(lines.count), "\(lines.count) lines")
    }

    @Test func aFatalFailureTellsSystemdStoppingAndTheWorkersErrno() throws {
        // Under a 900 MB address-space limit no worker can allocate a 1 GiB message buffer.
        let daemon = try Daemon(
            [
                "--as=900000000", Binaries.preforkd, "--listen", "127.0.0.1:0", "--workers", "1",
                "--echo-max-message-bytes", "1073741824",
            ], binary: "/usr/bin/prlimit")
        defer { daemon.stop() }
        #expect(try daemon.waitForExit(seconds: 30) == 1)
        daemon.notify.poll(seconds: 0.2)
        let texts = daemon.notify.received.filter { $0.pid == daemon.pid }.flatMap(\.assignments)
        let stopping = texts.firstIndex(of: "STOPPING=1")
        let errno = texts.firstIndex(of: "ERRNO=\(ENOMEM)")
        #expect(stopping != nil && errno != nil && stopping! < errno!, "\(texts)")
    }

    /// The port in the supervisor's first STATUS= line ("listening on 127.0.0.1:PORT").
    private func portFromStatus(_ daemon: Daemon) throws -> UInt16 {
        var port: UInt16?
        try waitUntil("a STATUS= line with the address") {
            daemon.notify.poll(seconds: 0.05)
            for datagram in daemon.notify.received {
                guard let range = datagram.text.range(of: "listening on 127.0.0.1:") else { continue }
                port = UInt16(datagram.text[range.upperBound...].prefix { $0.isNumber })
                if port != nil { return true }
            }
            return false
        }
        return port!
    }
}

/// The supervisor and a service manager that stops reading its notifications.
@Suite struct NotifyBackpressureTests {
    @Test func aNotifySocketNobodyReadsNeitherBlocksTheSupervisorNorLosesReadiness() throws {
        let receiver = try SilentDatagramReceiver()
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "2"], environment: ["NOTIFY_SOCKET": receiver.path])
        defer { daemon.stop() }
        let port = try daemon.port()
        // Reloads fill the receiver's queue (ten datagrams) with RELOADING=1 and READY=1.
        for round in 1...6 {
            try daemon.waitForLog("Ready: 2 workers accepting (generation \(round))")
            daemon.signal(SIGHUP)
        }
        try daemon.waitForLog("The service manager is not reading notifications")
        try daemon.waitForLog("Ready: 2 workers accepting (generation 7)")
        // Still reaping and respawning.
        let before = daemon.workerPIDs()
        kill(before[0], SIGKILL)
        try waitUntil("a replacement worker") {
            let now = daemon.workerPIDs()
            return now.count == 2 && !now.contains(before[0])
        }
        #expect(try Client.exchange(port: port, "still served<EOF>") == "still served<EOF>")
        // Once the manager reads again, every held READY=1 arrives, in order after its RELOADING=1.
        var texts: [String] = []
        try waitUntil("seven READY=1") {
            texts += receiver.drain()
            return texts.filter { $0.contains("READY=1") }.count == 7
        }
        let kinds = texts.compactMap { text -> String? in
            text.contains("READY=1") ? "R" : text.contains("RELOADING=1") ? "L" : nil
        }
        #expect(kinds.joined() == "R" + String(repeating: "LR", count: 6))
        try daemon.waitForLog("reads notifications again")
    }
}

/// The local address of a connected socket as preforkd prints peers ("127.0.0.1:5555").
enum SocketAddressText {
    static func local(of fd: Int32) throws -> String {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
        let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return "\(host):\(UInt16(bigEndian: address.sin_port))"
    }
}

/// preforkd with two listeners whose configuration alternates, reload after reload: a TCP one it
/// keeps, and one of two unix sockets, so that every reload binds one listener and drops another.
final class AlternatingListeners {
    let directory = NSTemporaryDirectory() + "preforkd-alt-\(UInt32.random(in: 0...UInt32.max))"
    let file: TestConfigFile
    let daemon: Daemon
    let port: UInt16

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        file = try TestConfigFile("")
        daemon = try Self.start(file, directory)
        try daemon.waitForReady()
        port = try daemon.port()
    }

    private static func start(_ file: TestConfigFile, _ directory: String) throws -> Daemon {
        try file.write(configuration(round: 0, directory))
        return try Daemon(["--config", file.path])
    }

    private static func configuration(round: Int, _ directory: String) -> String {
        "listen = [\"127.0.0.1:0\", \"unix:\(directory)/r\(round % 2).sock\"]\nworkers = 2\n"
    }

    /// Writes the configuration of `round` and sends SIGHUP.
    func reload(_ round: Int) throws {
        try file.write(Self.configuration(round: round, directory))
        daemon.signal(SIGHUP)
    }

    deinit {
        daemon.stop()
        file.remove()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
