import Glibc
import Testing
import TestSupport

@testable import PreforkHandlers

/// splice against copy for one relayed pair over loopback TCP, beside the same transfer with no
/// relay at all and through HAProxy (when installed): prints, asserts nothing. Opt-in (`PREFORKD_RELAY_BENCH=MiB`), best in release:
/// `Benchmarks/scripts/relay-throughput.sh`.
@Suite(.serialized, .enabled(if: relayBenchmarkMebibytes != nil))
struct RelayThroughputTests {
    static var mebibytes: Int? { relayBenchmarkMebibytes }

    @Test func spliceAgainstCopyAgainstDirect() throws {
        let bytes = (Self.mebibytes ?? 0) << 20
        let rounds = 3
        print("relay throughput: \(bytes >> 20) MiB one way per run, \(rounds) rounds, best of each")
        // HAProxy, relaying the same transfer on the same machine, is the reference when installed.
        let haproxy = access(Self.haproxy, X_OK) == 0
        let contenders = ["direct"] + RelayMethod.allCases.map(\.rawValue) + (haproxy ? ["haproxy"] : [])
        var best: [String: Measurement] = [:]
        for _ in 0..<rounds {
            for method in contenders {
                let measurement =
                    method == "haproxy"
                    ? try measureThroughHAProxy(bytes: bytes)
                    : try measure(method: RelayMethod(rawValue: method), bytes: bytes)
                if best[method].map({ measurement.seconds < $0.seconds }) ?? true { best[method] = measurement }
            }
        }
        let direct = best["direct"]!.seconds
        for method in contenders {
            let result = best[method]!
            let rate = Double(bytes) / result.seconds / 1e9
            let relayCPU = result.relayCPUSeconds.map { String(format: ", relay CPU %.2f s", $0) } ?? ""
            print(
                String(
                    format: "relay throughput: %-6@ %.2f GB/s (%.2f× direct), process CPU %.2f s%@", method, rate,
                    direct / result.seconds, result.processCPUSeconds, relayCPU))
        }
    }

    @Test func residentMemoryOfTwoThousandIdlePairs() throws {
        let listener = try LoopbackListener()
        let loop = try RelayLoop(idleTimeout: .zero, method: .splice)
        try loop.start()
        defer { loop.stop() }
        // Warm up: the loop's tables and the pool reach their working size with a first batch.
        var pairs = try (0..<100).map { _ in try listener.relayedConnection(through: loop) }
        defer { pairs.forEach { $0.closeTestEnds() } }
        let before = residentKiB()
        for _ in 0..<2000 {
            let pair = try listener.relayedConnection(through: loop)
            try sendAll(pair.client, "?")
            _ = try readText(pair.upstream, count: 1)
            pairs.append(pair)
        }
        let after = residentKiB()
        print("relay memory: 2000 idle pairs (each poked once) add \(after - before) KiB resident to the process")
    }

    /// VmRSS of this process, in KiB.
    func residentKiB() -> Int {
        guard let status = readSmallFile("/proc/self/status"),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    struct Measurement {
        var seconds: Double
        var processCPUSeconds: Double
        var relayCPUSeconds: Double?
    }

    static let haproxy = "/usr/sbin/haproxy"

    /// Sends `bytes` from a client to an upstream through HAProxy in TCP mode (one thread, splice
    /// where it helps), listening on a socket the test passes it; the relay's CPU is HAProxy's.
    func measureThroughHAProxy(bytes: Int) throws -> Measurement {
        let upstreams = try LoopbackListener()
        let (frontend, frontendPort) = try makeTCPSocket()
        defer { close(frontend) }
        let configuration = try TestConfigFile(
            """
            global
                nbthread 1
            defaults
                mode tcp
                timeout connect 5s
                timeout client 60s
                timeout server 60s
            listen relay
                bind fd@3
                option splice-auto
                server upstream 127.0.0.1:\(upstreams.port)

            """)  // HAProxy refuses a last line without its newline
        defer { configuration.remove() }
        let pid = try Spawn.start(
            Self.haproxy, ["-db", "-q", "-f", configuration.path], environment: [], descriptors: [(3, frontend)])
        defer {
            kill(pid, SIGKILL)
            _ = Spawn.wait(pid, seconds: 10)
        }
        let sender = try makeSocket(AF_INET, SOCK_STREAM)
        guard connectAddress(sender, loopbackAddress(port: frontendPort)) == 0 else {
            close(sender)
            throw TestFailure("connect: errno \(errno)")
        }
        setTimeouts(upstreams.fd, seconds: 10)  // accept's deadline: HAProxy connects once it runs
        let receiver = accept(upstreams.fd, nil, nil)
        defer {
            close(sender)
            if receiver >= 0 { close(receiver) }
        }
        guard receiver >= 0 else { throw TestFailure("accept: errno \(errno)") }
        let cpuBefore = childCPUSeconds(pid)
        let processBefore = processCPUSeconds()
        let seconds = try transfer(bytes, from: sender, to: receiver)
        return Measurement(
            seconds: seconds, processCPUSeconds: processCPUSeconds() - processBefore,
            relayCPUSeconds: childCPUSeconds(pid) - cpuBefore)
    }

    /// A process's user and system time (`/proc/PID/stat` fields 14 and 15), in seconds.
    func childCPUSeconds(_ pid: pid_t) -> Double {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let end = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        // After the command: field 3 is fields[0], so 14 and 15 are fields[11] and fields[12].
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Sends `bytes` from `sender` while another thread reads `receiver` to its end; the seconds it took.
    func transfer(_ bytes: Int, from sender: Int32, to receiver: Int32) throws -> Double {
        let start = monotonicMicroseconds()
        let reading = try startThread { discardToEnd(receiver) }
        let chunk = [UInt8](repeating: 0x5A, count: 256 * 1024)
        var sent = 0
        while sent < bytes {
            let n = chunk.withUnsafeBytes {
                send(sender, $0.baseAddress, min($0.count, bytes - sent), Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw TestFailure("send: errno \(errno)") }
            sent += n
        }
        shutdown(sender, Int32(SHUT_WR))
        pthread_join(reading, nil)
        return Double(monotonicMicroseconds() - start) / 1e6
    }

    /// Sends `bytes` from a client to an upstream, through a relay loop using `method` (nil: directly).
    func measure(method: RelayMethod?, bytes: Int) throws -> Measurement {
        let listener = try LoopbackListener()
        let loop = try method.map { try RelayLoop(idleTimeout: .zero, method: $0) }
        try loop?.start()
        defer { loop?.stop() }
        let sender: Int32
        let receiver: Int32
        if let loop {
            let pair = try listener.relayedConnection(through: loop)
            (sender, receiver) = (pair.client, pair.upstream)
        } else {
            (sender, receiver) = try listener.connectedPair()
        }
        defer {
            close(sender)
            close(receiver)
        }
        let relayTask = loop == nil ? nil : try relayThreadID()
        let relayBefore = relayTask.map(threadCPUSeconds) ?? 0
        let cpuBefore = processCPUSeconds()
        let seconds = try transfer(bytes, from: sender, to: receiver)
        return Measurement(
            seconds: seconds, processCPUSeconds: processCPUSeconds() - cpuBefore,
            relayCPUSeconds: relayTask.map { threadCPUSeconds($0) - relayBefore })
    }

    /// The relay thread's task id (only one loop runs at a time here).
    func relayThreadID() throws -> String {
        var found: String?
        try waitUntil("the relay thread") {
            found = taskIDs().first { readSmallFile("/proc/self/task/\($0)/comm") == "preforkd relay\n" }
            return found != nil
        }
        return found!
    }

    func threadCPUSeconds(_ task: String) -> Double {
        // schedstat: nanoseconds on the CPU, then waiting, then time slices.
        guard let text = readSmallFile("/proc/self/task/\(task)/schedstat"),
            let running = text.split(separator: " ").first.flatMap({ Double($0) })
        else { return 0 }
        return running / 1e9
    }

    func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }

    func taskIDs() -> [String] {
        guard let tasks = opendir("/proc/self/task") else { return [] }
        defer { closedir(tasks) }
        var ids: [String] = []
        while let entry = readdir(tasks) {
            let id = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if id.first?.isNumber == true { ids.append(id) }
        }
        return ids
    }
}

/// Reads and drops everything until end of file or an error.
func discardToEnd(_ fd: Int32) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 * 1024, alignment: 4096)
    defer { buffer.deallocate() }
    while read(fd, buffer.baseAddress, buffer.count) > 0 {}
}

/// The benchmark's size, from `PREFORKD_RELAY_BENCH`; nil when unset (the benchmark is skipped).
let relayBenchmarkMebibytes: Int? = getenv("PREFORKD_RELAY_BENCH").flatMap { Int(String(cString: $0)) }

/// Runs `body` on a new thread; join it with `pthread_join`.
func startThread(_ body: @escaping @Sendable () -> Void) throws -> pthread_t {
    final class Box: Sendable {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let status = pthread_create(
        &thread, nil,
        { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, box)
    guard status == 0 else { throw TestFailure("pthread_create: \(status)") }
    return thread
}
