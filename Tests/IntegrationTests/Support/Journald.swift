import Foundation
import Glibc
import Testing

/// A journald for tests: the running one, or a standalone one started for the duration of
/// `body` (and stopped, with its runtime files removed, afterwards). One user at a time across
/// the test process, by an advisory lock the Systemd module's tests take too.
enum Journald {
    static let socketPath = "/run/systemd/journal/socket"

    static func isListening() -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(fd) }
        var address = unixSocketAddress(socketPath)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        } == 0
    }

    static func with(_ body: () throws -> Void) throws {
        let lock = open("/run/preforkd-tests-journald.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        defer { close(lock) }
        try waitUntil("the journald test lock", seconds: 60) { flock(lock, LOCK_EX | LOCK_NB) == 0 }
        if isListening() {
            try body()
            return
        }
        let journald = Process()
        journald.executableURL = URL(fileURLWithPath: "/lib/systemd/systemd-journald")
        journald.standardOutput = FileHandle.nullDevice
        journald.standardError = FileHandle.nullDevice
        try journald.run()
        defer {
            journald.terminate()
            try? waitUntil("journald to stop", seconds: 5) { !journald.isRunning }
            if journald.isRunning { kill(journald.processIdentifier, SIGKILL) }
            try? FileManager.default.removeItem(atPath: "/run/systemd/journal")
            try? FileManager.default.removeItem(atPath: "/run/log/journal")
        }
        try waitUntil("journald's socket", seconds: 5) { isListening() }
        try body()
    }

    /// journalctl's JSON entries for `pid`'s process tree matching `filter` (e.g. "SYSLOG_IDENTIFIER=preforkd").
    static func entries(_ filters: [String]) throws -> [[String: Any]] {
        let journalctl = Process()
        journalctl.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
        journalctl.arguments = ["--no-pager", "-o", "json"] + filters
        let pipe = Pipe()
        journalctl.standardOutput = pipe
        journalctl.standardError = FileHandle.nullDevice
        try journalctl.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        journalctl.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
}
