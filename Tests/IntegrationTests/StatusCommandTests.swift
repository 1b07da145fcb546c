import Foundation
import Glibc
import TestSupport
import Testing

/// `preforkd status` against running instances, through their status files.
@Suite struct StatusCommandTests {
    /// `preforkd status ARGUMENTS…` run to completion: its exit code and what it printed.
    static func status(_ arguments: [String]) throws -> (code: Int32, output: String) {
        let result = try runChild(Binaries.preforkd, ["status"] + arguments, environment: [])
        return (result.exitCode, result.output)
    }

    @Test func showsEachWorkerItsStageAndTheClientItServes() throws {
        let (daemon, held, port) = try startWithClientMidMessage(
            ["--listen", "127.0.0.1:0", "--workers", "2", "--initial-timeout", "30"], sent: "held ")
        defer { daemon.stop() }
        defer { held.close() }
        let workers = daemon.workerPIDs()
        let client = try SocketAddressText.local(of: held.fd)
        let (code, table) = try Self.status(["--runtime-directory", daemon.directory])
        #expect(code == 0)
        #expect(table.hasPrefix("preforkd \(daemon.pid): up "))
        #expect(table.contains("listening on 127.0.0.1:\(port)"))
        for pid in workers { #expect(table.contains(" \(pid) ")) }
        #expect(table.split(separator: "\n").contains { $0.contains("handling") && $0.hasSuffix(client) })
        #expect(table.contains("2 workers: 1 idle, 1 busy, 0 starting"))

        let (_, json) = try Self.status(["--runtime-directory", daemon.directory, "--json"])
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(document["supervisor"] as? Int == Int(daemon.pid))
        let rows = try #require(document["workers"] as? [[String: Any]])
        #expect(Set(rows.compactMap { $0["pid"] as? Int }) == Set(workers.map(Int.init)))
        #expect(rows.contains { $0["stage"] as? String == "handling" && $0["peer"] as? String == client })
    }

    @Test func withNoInstanceItSaysSoAndExits69() throws {
        let directory = NSTemporaryDirectory() + "preforkd-none-\(UInt32.random(in: 0...UInt32.max))"
        let (code, output) = try Self.status(["--runtime-directory", directory])
        #expect(code == 69)
        #expect(output.isEmpty, "the error goes to stderr")
    }

    @Test func theStatusFileGoesWithItsInstanceAndASecondOneNeverTakesItOver() throws {
        let first = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        defer { first.stop() }
        try first.waitForReady()
        // Told to use the first one's directory, the second runs without a status file.
        let second = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "1", "--runtime-directory", first.directory])
        defer { second.stop() }
        try second.waitForReady()
        try second.waitForLog("No status file, preforkd status will not find this instance")
        #expect(try Self.status(["--runtime-directory", first.directory]).output.hasPrefix("preforkd \(first.pid):"))
        #expect(try Client.exchange(port: try first.port(), "first<EOF>") == "first<EOF>")
        first.signal(SIGTERM)
        #expect(try first.waitForExit() == 0)
        #expect(access(first.directory + "/status", F_OK) != 0, "removed on exit")
        #expect(try Self.status(["--runtime-directory", first.directory]).code == 69)
    }

    @Test func aFileLeftByASupervisorThatDiedIsReplaced() throws {
        let gone = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1"])
        try gone.waitForReady()
        let directory = NSTemporaryDirectory() + "preforkd-stale-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: gone.directory + "/status", toPath: directory + "/status")
        gone.stop()
        #expect(try Self.status(["--runtime-directory", directory]).code == 69, "its writer is gone")
        let next = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--runtime-directory", directory])
        defer { next.stop() }
        try next.waitForReady()
        #expect(try Self.status(["--runtime-directory", directory]).output.hasPrefix("preforkd \(next.pid):"))
    }
}
