import Foundation
import Glibc
import TestSupport
import Testing

/// `open-files`: the supervisor raises its open-file limit at start, and its workers inherit it.
/// Each daemon starts under `prlimit` with a soft limit of 512 and a hard one of 2048, lower
/// than this process's: lowering needs no privilege.
@Suite struct OpenFileLimitTests {
    /// The daemon under `prlimit --nofile=512:2048` (and, as root, without CAP_SYS_RESOURCE in
    /// its bounding set, so that it cannot raise the hard limit either).
    static func daemon(_ arguments: [String]) throws -> Daemon {
        let limited = ["/usr/bin/prlimit", "--nofile=512:2048", "--", Binaries.preforkd] + arguments
        if geteuid() == 0 {
            return try Daemon(
                ["--bounding-set=-sys_resource", "--"] + limited, binary: "/usr/bin/setpriv")
        }
        return try Daemon(Array(limited.dropFirst()), binary: limited[0])
    }

    /// The soft and hard "Max open files" of `pid`, from /proc.
    static func openFiles(of pid: Int32) throws -> [String] {
        let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        let line = try #require(limits.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        return line.dropFirst("Max open files".count).split(separator: " ").prefix(2).map(String.init)
    }

    @Test func theSoftLimitIsRaisedToTheHardOneForTheWorkersToo() throws {
        let daemon = try Self.daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--log-level", "debug"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        try daemon.waitForLog("Open-file limit: 2048 (hard 2048)")
        #expect(try Self.openFiles(of: daemon.pid) == ["2048", "2048"])
        let worker = try #require(daemon.workerPIDs().first)
        #expect(try Self.openFiles(of: worker) == ["2048", "2048"])
    }

    @Test func anExplicitLimitWithinTheHardOneIsTaken() throws {
        let daemon = try Self.daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--open-files", "1000"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let worker = try #require(daemon.workerPIDs().first)
        #expect(try Self.openFiles(of: worker) == ["1000", "2048"])
    }

    @Test func anExplicitLimitAboveTheHardOneIsRefusedInOneLine() throws {
        let daemon = try Self.daemon(["--listen", "127.0.0.1:0", "--open-files", "4096"])
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 78)
        let lines = daemon.log.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(lines.first?.hasPrefix("preforkd: open-files = 4096 is above the hard limit of 2048") == true)
    }
}
