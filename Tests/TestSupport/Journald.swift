import Foundation
import Glibc

/// A journald for tests: the running one, or a standalone one started for the duration of
/// `body` (and stopped, with its runtime files removed, afterwards). One user at a time across
/// the test process (and other test processes), by an advisory lock.
public enum Journald {
    public static let socketPath = "/run/systemd/journal/socket"

    /// Whether a journald listens on its native socket: connecting a datagram socket to a stale
    /// socket file fails with ECONNREFUSED.
    public static func isListening() -> Bool {
        guard let fd = try? makeSocket(AF_UNIX, SOCK_DGRAM) else { return false }
        defer { close(fd) }
        let (address, length) = unixAddress(socketPath)
        return connectAddress(fd, address, length: length) == 0
    }

    /// Runs `body` with a journald listening.
    public static func with(_ body: () throws -> Void) throws {
        let lock = open("/run/preforkd-tests-journald.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw TestFailure("open the journald test lock: errno \(errno)") }
        defer { close(lock) }
        try waitUntil("the journald test lock", seconds: 60) { flock(lock, LOCK_EX | LOCK_NB) == 0 }
        if isListening() {
            try body()
            return
        }
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        defer { close(null) }
        let journald = try Spawn.start(
            "/lib/systemd/systemd-journald", [], environment: ["PATH=/usr/bin:/bin"],
            descriptors: [(0, null), (1, null), (2, null)])
        defer {
            kill(journald, SIGTERM)
            if Spawn.wait(journald, seconds: 5) == nil {
                kill(journald, SIGKILL)
                _ = Spawn.wait(journald, seconds: 30)
            }
            // Stale sockets would fool the next check into thinking a journald listens.
            try? FileManager.default.removeItem(atPath: "/run/systemd/journal")
            try? FileManager.default.removeItem(atPath: "/run/log/journal")
        }
        try waitUntil("journald to listen on \(socketPath)", seconds: 5) {
            if let status = Spawn.reap(journald) { throw TestFailure("systemd-journald exited with \(status)") }
            return isListening()
        }
        try body()
    }

    /// journalctl's JSON entries matching `filters` (e.g. "SYSLOG_IDENTIFIER=preforkd", "_PID=42").
    public static func entries(_ filters: [String]) throws -> [[String: Any]] {
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(null) }
        let result = try runChild(
            "/usr/bin/journalctl", ["--no-pager", "-o", "json"] + filters, environment: ["PATH=/usr/bin:/bin"],
            descriptors: [(source: null, target: 2)])
        return result.output.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
