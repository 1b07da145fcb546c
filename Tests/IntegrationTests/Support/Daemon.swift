import Foundation
import Glibc
import Testing

/// Where the built binaries are: beside the test bundle, unless PREFORKD_BIN names another
/// preforkd (a release build, say).
enum Binaries {
    static var directory: URL {
        Bundle.main.bundleURL
    }

    static var preforkd: String {
        ProcessInfo.processInfo.environment["PREFORKD_BIN"] ?? directory.appendingPathComponent("preforkd").path
    }

    static var uppercaseServer: String { directory.appendingPathComponent("UppercaseServer").path }
}

/// Thrown when a wait runs past its deadline.
struct Timeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Polls `condition` every 10 ms until it holds or `seconds` pass.
func waitUntil(_ what: String, seconds: Double = 10, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return }
        usleep(10_000)
    }
    if try condition() { return }
    throw Timeout(what: what)
}

/// A preforkd (or other) process started by a test, with its stderr captured in a file and a
/// notify socket of its own. Always call `stop()` (in a `defer`): it kills and reaps whatever is
/// left, so a failing test never leaves a daemon behind.
final class Daemon {
    let process = Process()
    let logPath: String
    let directory: String
    let notify: NotifyReceiver
    private(set) var exitStatus: Int32?

    /// Starts `binary` with `arguments`; NOTIFY_SOCKET points at this daemon's receiver.
    init(_ arguments: [String], binary: String = Binaries.preforkd, environment: [String: String] = [:]) throws {
        directory = NSTemporaryDirectory() + "preforkd-it-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        logPath = directory + "/stderr.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        notify = try NotifyReceiver(path: directory + "/notify.sock")
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notify.path
        for key in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            env.removeValue(forKey: key)
        }
        env.merge(environment) { $1 }
        process.environment = env
        process.standardError = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = FileHandle(forWritingAtPath: logPath)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }

    /// Everything the process wrote to stderr so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits for READY=1 from the supervisor's pid and returns the datagrams seen until then.
    @discardableResult
    func waitForReady(seconds: Double = 10) throws -> [NotifyReceiver.Datagram] {
        try notify.waitFor("READY=1", from: pid, seconds: seconds) { [self] in
            if !process.isRunning { throw Timeout(what: "READY=1 (the daemon exited: \(log))") }
        }
    }

    /// The port of the first "Listening on 127.0.0.1:PORT" line.
    func port() throws -> UInt16 {
        var found: UInt16?
        try waitUntil("a Listening line") {
            for line in log.split(separator: "\n") {
                guard let range = line.range(of: "Listening on ") else { continue }
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

    /// Waits until the log contains `text`.
    func waitForLog(_ text: String, seconds: Double = 10) throws {
        try waitUntil("log line '\(text)'", seconds: seconds) { log.contains(text) }
    }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the process to exit; returns its exit status (128+N for a signal).
    @discardableResult
    func waitForExit(seconds: Double = 15) throws -> Int32 {
        try waitUntil("preforkd to exit", seconds: seconds) { !process.isRunning }
        let status =
            process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
        exitStatus = status
        return status
    }

    /// The live worker processes (children of the supervisor).
    func workerPIDs() -> [Int32] { ProcessTable.children(of: pid) }

    /// Kills the whole tree if still running and removes the temp directory.
    func stop() {
        let children = workerPIDs()
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
        for child in children { kill(child, SIGKILL) }
        notify.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// Reads /proc to find processes by parent.
enum ProcessTable {
    /// Pids whose parent is `parent`.
    static func children(of parent: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { Int32($0) }.filter { parentPID(of: $0) == parent }.sorted()
    }

    /// The parent pid of `pid` from /proc/PID/stat, nil when gone.
    static func parentPID(of pid: Int32) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 2, fields[0] != "Z" else { return nil }  // a zombie is as good as gone
        return Int32(fields[1])
    }

    static func isAlive(_ pid: Int32) -> Bool { parentPID(of: pid) != nil }
}
