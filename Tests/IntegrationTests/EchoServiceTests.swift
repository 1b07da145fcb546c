import Foundation
import Glibc
import TestSupport
import Testing

/// The seed's exchange and the echo protocol against the real binary.
@Suite struct EchoServiceTests {
    @Test func seedExchangeWithATenByteInitialRead() throws {
        let daemon = try Daemon([
            "--listen", "127.0.0.1:0", "--workers", "2", "--initial-bytes", "10", "--log-level", "debug",
        ])
        defer { daemon.stop() }
        let ready = try daemon.waitForReady()
        let port = try daemon.port()
        let message = "This is a test message longer than ten bytes<EOF>"
        #expect(try Client.exchange(port: port, message) == message)
        try daemon.waitForLog("Size of data transferred is 10")
        // READY=1 came from the supervisor itself, with a status line naming the address.
        #expect(
            ready.contains {
                $0.pid == daemon.pid && $0.text.contains("STATUS=") && $0.text.contains("127.0.0.1:\(port)")
            })
    }

    @Test func manyConcurrentClientsAllServedByEveryWorker() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "3", "--log-level", "debug"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let failures = Counter()
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for index in 0..<50 {
                let message = "client \(thread) message \(index) " + String(repeating: "x", count: index) + "<EOF>"
                if (try? Client.exchange(port: port, message)) != message { failures.increment() }
            }
        }
        #expect(failures.value == 0)
        // Every worker took part: each logs the initial read of the connections it served.
        let workers = daemon.workerPIDs()
        #expect(workers.count == 3)
        try waitUntil("log lines from every worker") {
            workers.allSatisfy {
                daemon.log.contains("[\($0)] worker") && daemon.log.contains("Size of data transferred")
            }
        }
        for pid in workers {
            let served = daemon.log.split(separator: "\n").filter {
                $0.contains("[\(pid)]") && $0.contains("Size of data transferred")
            }
            #expect(served.count > 0, "worker \(pid) served nothing")
        }
    }

    @Test func keepAliveServesSeveralMessagesOnOneConnection() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--echo-keep-alive"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: try daemon.port())
        defer { client.close() }
        for index in 0..<20 {
            let message = "message \(index)<EOF>"
            try client.send(message)
            #expect(try client.read(count: message.utf8.count) == message)
        }
    }

    @Test func ipv6AndUnixListenersServeToo() throws {
        let path = NSTemporaryDirectory() + "preforkd-it-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let daemon = try Daemon(["--listen", "[::1]:0", "--listen", "unix:\(path)", "--workers", "2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        #expect(try Client.exchange(port: port, "over ipv6<EOF>", ipv6: true) == "over ipv6<EOF>")
        let unixClient = try Client(unixPath: path)
        defer { unixClient.close() }
        try unixClient.send("over unix<EOF>")
        #expect(try unixClient.readToEnd() == "over unix<EOF>")
        daemon.signal(SIGTERM)
        #expect(try daemon.waitForExit() == 0)
        #expect(access(path, F_OK) != 0, "the socket file preforkd created is removed on stop")
    }

    @Test func oversizeMessageIsClosedAndTheWorkerCarriesOn() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--echo-max-message-bytes", "64"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let worker = daemon.workerPIDs()
        let big = try Client(port: port)
        defer { big.close() }
        try? big.send(String(repeating: "A", count: 500) + "<EOF>")
        #expect((try? big.readToEnd()) ?? "" == "")
        try daemon.waitForLog("exceeds 64 bytes")
        #expect(try Client.exchange(port: port, "small<EOF>") == "small<EOF>")
        #expect(daemon.workerPIDs() == worker, "the same worker still serves")
    }

    @Test func silentClientIsClosedAfterTheInitialTimeoutAndTheWorkerFreed() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--initial-timeout", "0.5"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let silent = try Client(port: port)
        defer { silent.close() }
        // The only worker is busy with the silent client; this one waits in the backlog.
        let waiting = try Client(port: port)
        defer { waiting.close() }
        try waiting.send("after the silent one<EOF>")
        #expect(try silent.readToEnd() == "", "the silent client is closed by the server")
        #expect(try waiting.readToEnd() == "after the silent one<EOF>")
        try daemon.waitForLog("initial read timed out")
    }

    @Test func clientThatResetsOrClosesEarlyCostsNothing() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        for _ in 0..<20 {
            let client = try Client(port: port)
            var linger = linger(l_onoff: 1, l_linger: 0)  // close → RST
            setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
            try client.send("half a mess")
            client.close()
            let quiet = try Client(port: port)
            quiet.close()
        }
        let worker = daemon.workerPIDs()
        #expect(try Client.exchange(port: port, "still fine<EOF>") == "still fine<EOF>")
        #expect(daemon.workerPIDs() == worker)
    }
}

/// A thread-safe counter for concurrent client loops.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() {
        lock.lock()
        count += 1
        lock.unlock()
    }
    var value: Int {
        lock.lock()
        defer { lock.unlock() }
        return count
    }
}

/// A handler that throws costs one connection; one that crashes costs one connection and one
/// worker process, which is replaced; neither touches the other workers or the supervisor.
@Suite struct HandlerFaultTests {
    static var probe: String { Binaries.handlerFaultProbe }

    @Test func aThrowingHandlerCostsOneConnection() throws {
        let daemon = try Daemon(["127.0.0.1:0", "1"], binary: Self.probe)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let worker = daemon.workerPIDs()
        #expect(try Client.exchange(port: port, "throw<EOF>") == "")
        try daemon.waitForLog("failed: Requested()")
        #expect(try Client.exchange(port: port, "fine<EOF>") == "fine<EOF>")
        #expect(daemon.workerPIDs() == worker, "the same worker serves on")
    }

    @Test func aCrashingHandlerCostsOneWorkerAndItsNeighboursFinish() throws {
        let daemon = try Daemon(["127.0.0.1:0", "2"], binary: Self.probe)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let before = daemon.workerPIDs()
        // One worker is busy with a slow exchange while the other one crashes.
        let slow = try Client(port: port)
        defer { slow.close() }
        try slow.send("slow<EOF>")
        let crashed = try Client(port: port)
        defer { crashed.close() }
        try crashed.send("crash<EOF>")
        #expect((try? crashed.readToEnd()) ?? "" == "", "the crashing connection is lost")
        #expect(try slow.readToEnd() == "slow<EOF>", "the neighbour's connection completes")
        try daemon.waitForLog("died (killed by SIG")
        try waitUntil("a replacement worker") {
            let now = daemon.workerPIDs()
            return now.count == 2 && now != before
        }
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
        #expect(ProcessTable.isAlive(daemon.pid))
    }
}

/// What the engine offers a handler beyond one connection at a time: taking a socket over,
/// greeting clients that send nothing, and winding down after the accept loop.
@Suite struct HandlerHandoverTests {
    static var probe: String { Binaries.handlerFaultProbe }

    @Test func aDetachedSocketOutlivesTheHandlersCallUntilTheHandlerClosesIt() throws {
        let daemon = try Daemon(["127.0.0.1:0", "1"], binary: Self.probe)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let kept = try Client(port: port)
        defer { kept.close() }
        try kept.send("detach<EOF>")
        // One worker: it has returned from the detaching call before it serves this one, and
        // the kept socket is still open for the handler to write to.
        #expect(try Client.exchange(port: port, "release<EOF>") == "release<EOF>")
        #expect(try kept.readToEnd() == "released")
    }

    @Test func aHandlerThatAnswersSilentClientsGetsThemWithNoInitialData() throws {
        let daemon = try Daemon(
            ["127.0.0.1:0", "1"], binary: Self.probe,
            environment: ["PROBE_SILENT": "1", "PROBE_INITIAL_TIMEOUT": "0.2"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        let silent = try Client(port: port)
        defer { silent.close() }
        #expect(try silent.read(count: 6) == "hello\n", "greeted once the initial read timed out")
        try silent.send("then<EOF>")
        #expect(try silent.readToEnd() == "then<EOF>")
        // A client that speaks first is served as before, and one that closes at once is closed.
        #expect(try Client.exchange(port: port, "first<EOF>") == "first<EOF>")
        try Client(port: port).close()
        #expect(try Client.exchange(port: port, "after<EOF>") == "after<EOF>")
        #expect(!daemon.log.contains("initial read timed out"))
    }

    @Test func aRecycledWorkerDrainsInStatusWhileAReplacementServesAndIsKilledAtTheGracefulTimeout() throws {
        let daemon = try Daemon(
            ["127.0.0.1:0", "1"], binary: Self.probe,
            environment: [
                "PROBE_MAX_CONNECTIONS": "1", "PROBE_GRACEFUL_TIMEOUT": "2",
                "PROBE_DRAIN_FILE": NSTemporaryDirectory() + "never-\(UUID().uuidString)",
            ])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let port = try daemon.port()
        #expect(try Client.exchange(port: port, "one<EOF>") == "one<EOF>")
        try waitUntil("a draining worker in preforkd status --json") {
            let (_, json) = try StatusCommandTests.status(["--runtime-directory", daemon.directory, "--json"])
            return json.contains("\"draining\"")
        }
        // The draining worker takes no connection: its replacement serves.
        #expect(try Client.exchange(port: port, "two<EOF>") == "two<EOF>")
        try daemon.waitForLog("after it began draining; killing it")
        #expect(try Client.exchange(port: port, "three<EOF>") == "three<EOF>")
        #expect(!daemon.log.contains("died"), "a drain cut short is no crash")
    }

    @Test func aGracefulStopDrainsUntilTheHandlerIsDone() throws {
        let drainFile = NSTemporaryDirectory() + "drained-\(UUID().uuidString)"
        defer { unlink(drainFile) }
        let daemon = try Daemon(
            ["127.0.0.1:0", "1"], binary: Self.probe, environment: ["PROBE_DRAIN_FILE": drainFile])
        defer { daemon.stop() }
        try daemon.waitForReady()
        daemon.signal(SIGTERM)
        try daemon.waitForLog("Draining until")
        let (_, table) = try StatusCommandTests.status(["--runtime-directory", daemon.directory])
        #expect(table.contains("1 draining"))
        #expect(daemon.isRunning)
        #expect(FileManager.default.createFile(atPath: drainFile, contents: nil))
        #expect(try daemon.waitForExit() == 0)
        #expect(!daemon.log.contains("killing it"))
    }
}
