import Foundation
import Glibc

/// Where the built binaries are: beside the test bundle, unless PREFORKD_BIN names another
/// preforkd (a release build, say) or SYSTEMD_PROBE another probe.
public enum Binaries {
    public static var directory: URL {
        Bundle.main.bundleURL
    }

    /// A binary built by this package.
    public static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    public static var preforkd: String { ProcessInfo.processInfo.environment["PREFORKD_BIN"] ?? path("preforkd") }

    public static var uppercaseServer: String { path("UppercaseServer") }

    public static var handlerFaultProbe: String { path("HandlerFaultProbe") }

    public static var systemdProbe: String {
        ProcessInfo.processInfo.environment["SYSTEMD_PROBE"] ?? path("SystemdProbe")
    }
}

/// A preforkd (or other) process started by a test, with a notify socket of its own and its
/// stdout and stderr captured in a file (or stderr connected otherwise: `StandardError`). Always
/// call `stop()` (in a `defer`): it kills and reaps whatever is left, so a failing test never
/// leaves a daemon behind. It is started as a service manager starts a service: default signal
/// dispositions, nothing blocked, stdin /dev/null, no descriptor of the test process.
public final class Daemon: @unchecked Sendable {
    /// Where the daemon's stderr goes.
    public enum StandardError: Sendable {
        /// Into the log file, with stdout: `log`.
        case captured
        /// A pipe whose read end the test holds and never reads: once the pipe buffer (64 KiB) is
        /// full, every write to stderr blocks. `closeStandardErrorPipe()` turns it into
        /// `.pipeWithoutReader` mid-run.
        case pipeNobodyReads
        /// A pipe whose read end is closed before the daemon starts: every write fails with EPIPE
        /// (raising SIGPIPE unless that is ignored or blocked).
        case pipeWithoutReader
        /// No descriptor 2 at all.
        case closed
    }

    public let pid: Int32
    /// The daemon's temporary directory (log, notify socket), removed by `stop()`.
    public let directory: String
    /// The file stdout (and, when `.captured`, stderr) is written to.
    public let logPath: String
    public let notify: NotifyReceiver
    private let lock = NSLock()
    private var status: Int32?
    private var standardErrorPipe: Int32 = -1
    private var stopped = false

    /// Starts `binary` with `arguments`; NOTIFY_SOCKET points at this daemon's receiver,
    /// RUNTIME_DIRECTORY at its own directory (where its status file goes), and systemd variables of the test's own environment (LISTEN_*, WATCHDOG_*, JOURNAL_STREAM) are
    /// dropped before `environment` is applied.
    ///
    /// - Parameters:
    ///   - standardError: where stderr goes (default: the log file).
    ///   - ignoring: signals the daemon starts with ignored (SIG_IGN, kept across exec), as a
    ///     parent could leave them; set by `env --ignore-signal=N… -- BINARY …`, which execs the
    ///     binary in the same process, so `pid` is the daemon's.
    ///   - blocking: signals the daemon starts with blocked.
    ///   - allowRoot: run as root, the test runs preforkd with `--allow-root` (added after the
    ///     preforkd binary wherever it is in the command, a wrapper's arguments included): tests
    ///     that are not about privileges serve as whoever runs them. False for the tests of the
    ///     refusal and of `user`.
    ///
    /// Signals 32 and 33, glibc's own, start ignored whatever is asked: glibc's posix_spawn sets
    /// them so in every child.
    public init(
        _ arguments: [String],
        binary: String = Binaries.preforkd,
        environment: [String: String] = [:],
        standardError: StandardError = .captured,
        ignoring: [Int32] = [],
        blocking: [Int32] = [],
        allowRoot: Bool = true
    ) throws {
        let directory = NSTemporaryDirectory() + "preforkd-it-\(UUID().uuidString.prefix(8))"
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + "/stderr.log"
        let log = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        let null = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer {
            close(log)
            close(null)
        }
        do {
            guard log >= 0, null >= 0 else { throw TestFailure("open \(logPath) or /dev/null: errno \(errno)") }
            notify = try NotifyReceiver(path: directory + "/notify.sock")
            // A daemon that switches to another user (`user`) still sends to it, as systemd's
            // socket lets any process send.
            chmod(notify.path, 0o666)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }

        var env = ProcessInfo.processInfo.environment
        for key in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            env.removeValue(forKey: key)
        }
        env["NOTIFY_SOCKET"] = notify.path
        env["RUNTIME_DIRECTORY"] = directory
        env.merge(environment) { $1 }

        var program = binary
        var argv = allowRoot ? Self.allowingRoot(arguments, binary: binary) : arguments
        if !ignoring.isEmpty {
            // env sets SIG_IGN and execs the binary in place (same pid). Not dash's `trap '' CHLD`:
            // dash keeps SIGCHLD for itself and execs with it at its default.
            program = "/usr/bin/env"
            argv = ignoring.map { "--ignore-signal=\($0)" } + ["--", binary] + argv
        }

        var descriptors: [Spawn.Descriptor] = [(0, null), (1, log)]
        var pipeWrite: Int32 = -1
        defer { if pipeWrite >= 0 { close(pipeWrite) } }
        switch standardError {
        case .captured:
            descriptors.append((2, log))
        case .pipeNobodyReads, .pipeWithoutReader:
            let pipe = try Spawn.pipe()
            pipeWrite = pipe.write
            if standardError == .pipeNobodyReads { standardErrorPipe = pipe.read } else { close(pipe.read) }
            descriptors.append((2, pipe.write))
        case .closed:
            descriptors.append((2, nil))
        }
        do {
            pid = try Spawn.start(
                program, argv, environment: env.map { "\($0)=\($1)" }, descriptors: descriptors, blocked: blocking)
        } catch {
            if standardErrorPipe >= 0 { close(standardErrorPipe) }
            notify.close()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    deinit { stop() }

    /// `arguments` with `--allow-root` after the preforkd binary (the program itself, or a word
    /// of a wrapper's command line), when this process is root; `preforkd status` has no such flag.
    static func allowingRoot(_ arguments: [String], binary: String) -> [String] {
        guard geteuid() == 0 else { return arguments }
        // The built binary, or a copy of it under its own name (the upgrade tests run one).
        if binary == Binaries.preforkd || binary.hasSuffix("/preforkd") {
            return arguments.first == "status" ? arguments : ["--allow-root"] + arguments
        }
        guard let index = arguments.firstIndex(of: Binaries.preforkd), arguments.dropFirst(index + 1).first != "status"
        else { return arguments }
        var result = arguments
        result.insert("--allow-root", at: index + 1)
        return result
    }

    /// Everything the process wrote to stdout and (when captured) stderr so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The read end of stderr's pipe with `.pipeNobodyReads` (the test may read or close it), else nil.
    public var standardErrorReadEnd: Int32? {
        lock.lock()
        defer { lock.unlock() }
        return standardErrorPipe >= 0 ? standardErrorPipe : nil
    }

    /// Closes the read end of stderr's pipe: from now on the daemon's writes to stderr fail (EPIPE).
    public func closeStandardErrorPipe() {
        lock.lock()
        defer { lock.unlock() }
        if standardErrorPipe >= 0 { close(standardErrorPipe) }
        standardErrorPipe = -1
    }

    /// Whether the process has not exited yet (reaps it when it has).
    public var isRunning: Bool { exitStatus == nil }

    /// The exit status once it has exited (128+N for signal N), nil while it runs.
    public var exitStatus: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if status == nil { status = Spawn.reap(pid) }
        return status
    }

    /// Waits for READY=1 from the supervisor's pid and returns the datagrams seen until then.
    @discardableResult
    public func waitForReady(seconds: Double = 10) throws -> [NotifyReceiver.Datagram] {
        try notify.waitFor("READY=1", from: pid, seconds: seconds) { [self] in
            if let status = exitStatus { throw Timeout(what: "READY=1 (the daemon exited with \(status): \(log))") }
        }
    }

    /// The port of the first "Listening on HOST:PORT" line of the log (any host when nil).
    public func port(host: String? = nil) throws -> UInt16 {
        var found: UInt16?
        try waitUntil("a Listening line") {
            for line in log.split(separator: "\n") {
                guard let range = line.range(of: "Listening on " + (host.map { $0 + ":" } ?? "")) else { continue }
                let address = line[range.upperBound...].split(separator: " ").first ?? ""
                if let port = UInt16(address.split(separator: ":").last ?? "") {
                    found = port
                    return true
                }
            }
            return false
        }
        return found!
    }

    /// The port from the READY status line ("listening on 127.0.0.1:PORT"), for when stderr is
    /// not text or not captured.
    public func portFromStatus() throws -> UInt16 {
        let status = notify.received.first { $0.text.contains("listening on 127.0.0.1:") }?.text ?? ""
        guard let range = status.range(of: "listening on 127.0.0.1:") else {
            throw Timeout(what: "a status line with the address")
        }
        return UInt16(status[range.upperBound...].prefix { $0.isNumber }) ?? 0
    }

    /// Waits until the log contains `text`.
    /// On time-out, the error says what the process was doing: its state and the last lines of
    /// its log (``diagnosis()``).
    public func waitForLog(_ text: String, seconds: Double = 10) throws {
        do {
            try waitUntil("log line '\(text)'", seconds: seconds) { log.contains(text) }
        } catch {
            throw TestFailure("\(error); \(diagnosis())")
        }
    }

    /// The process's state and kernel wait channel (from /proc) and the last ten lines of its log.
    public func diagnosis() -> String {
        let state = ProcessTable.state(of: pid) ?? "gone"
        let channel = (try? ProcessTable.procFile("/proc/\(pid)/wchan")) ?? ""
        let tail = log.split(separator: "\n").suffix(10).joined(separator: "\n")
        return "pid \(pid) state \(state), waiting in \(channel.isEmpty ? "-" : channel); log:\n\(tail)"
    }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the process to exit; returns its exit status (128+N for a signal).
    @discardableResult
    public func waitForExit(seconds: Double = 15) throws -> Int32 {
        var result: Int32?
        try waitUntil("the process to exit", seconds: seconds) {
            result = exitStatus
            return result != nil
        }
        return result!
    }

    /// The live worker processes (children of the supervisor).
    public func workerPIDs() -> [Int32] { ProcessTable.children(of: pid) }

    /// Kills the whole tree if still running, reaps it and removes the temporary directory.
    public func stop() {
        lock.lock()
        let first = !stopped
        stopped = true
        lock.unlock()
        guard first else { return }
        let children = workerPIDs()
        if isRunning {
            kill(pid, SIGKILL)
            // SIGKILL cannot be caught: the wait ends unless the kernel itself is stuck.
            if Spawn.wait(pid, seconds: 30) == nil {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            }
        }
        for child in children { kill(child, SIGKILL) }
        closeStandardErrorPipe()
        notify.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Starts preforkd with `arguments` and a client that has sent `sent` (no tag) and is held by a
/// worker; the caller stops both.
public func startWithClientMidMessage(_ arguments: [String], sent: String) throws -> (Daemon, Client, UInt16) {
    let daemon = try Daemon(arguments)
    do {
        try daemon.waitForReady()
        let port = try daemon.port()
        let client = try Client(port: port)
        try client.send(sent)
        try waitUntil("a worker to take the client") { (try? busyWorkers(daemon)) == 1 }
        return (daemon, client, port)
    } catch {
        daemon.stop()
        throw error
    }
}

/// Workers busy with a connection, from the supervisor's STATUS= line; -1 before there is one.
public func busyWorkers(_ daemon: Daemon) throws -> Int {
    daemon.notify.poll(seconds: 0.05)
    guard let status = daemon.notify.received.last(where: { $0.text.contains("STATUS=") && $0.text.contains("busy") })
    else { return -1 }
    let text = status.text
    guard let range = text.range(of: " busy") else { return -1 }
    let before = text[..<range.lowerBound].split(separator: " ").last ?? ""
    return Int(before) ?? -1
}

/// Reads /proc to find processes by parent.
public enum ProcessTable {
    /// Pids whose parent is `parent`.
    public static func children(of parent: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { parentPID(of: $0) == parent }.sorted()
    }

    /// The parent pid of `pid` from /proc/PID/stat, nil when gone.
    public static func parentPID(of pid: Int32) -> Int32? {
        // A zombie is as good as gone.
        guard let fields = statFields(of: pid), fields.count > 2, fields[0] != "Z" else { return nil }
        return Int32(fields[1])
    }

    /// The fields of /proc/PID/stat after the command name (which may hold spaces): the state,
    /// the parent pid, …; nil when the process is gone.
    public static func statFields(of pid: Int32) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// The state of `pid` (R, S, D, T, Z…), nil when it is gone.
    public static func state(of pid: Int32) -> String? { statFields(of: pid)?.first.map(String.init) }

    /// Children of `parent` that have exited and are not reaped yet (`children(of:)` leaves
    /// them out).
    public static func zombies(of parent: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let fields = statFields(of: pid), fields.count > 2 else { return false }
            return fields[0] == "Z" && Int32(fields[1]) == parent
        }.sorted()
    }

    public static func isAlive(_ pid: Int32) -> Bool { parentPID(of: pid) != nil }

    /// Whether `pid` has a file whose name starts with `prefix` mapped (a shared library, say
    /// "libsystemd.so."), from /proc/PID/maps; throws when that cannot be read.
    public static func maps(_ pid: Int32, fileNamed prefix: String) throws -> Bool {
        try procFile("/proc/\(pid)/maps").split(separator: "\n").contains { line in
            // "start-end perms offset dev inode   /path/to/file"
            guard let slash = line.lastIndex(of: "/") else { return false }
            return line[line.index(after: slash)...].hasPrefix(prefix)
        }
    }

    /// The whole text of a /proc file, read(2) to the end: Foundation's String(contentsOfFile:)
    /// stops after the first 4 KiB of one (procfs reports size 0), and maps run longer than that.
    public static func procFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TestFailure("open \(path): errno \(errno)") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { throw TestFailure("read \(path): errno \(errno)") }
            if count == 0 { break }
            bytes += chunk[..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
