import Foundation
import Glibc
import TestSupport
import Testing

/// `user`, `group` and `allow-root`: started as root, preforkd binds first, then the supervisor
/// switches to the user keeping only CAP_NET_BIND_SERVICE, and every worker serves with no
/// capability, no supplementary group and PR_SET_NO_NEW_PRIVS; without a user it refuses to
/// serve as root. Tests that need root skip, saying so, when the tests do not run as root.
@Suite struct PrivilegeTests {
    static let isRoot = geteuid() == 0
    static let nobody = "65534"

    /// The lines of /proc/PID/status that say who a process is and what it may do, by name.
    static func credentials(of pid: Int32) throws -> [String: String] {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in status.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            fields[String(parts[0])] = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(
                separator: " ")
        }
        return fields
    }

    /// A TCP port below 1024 on 127.0.0.1 that nothing listens on now.
    static func freeLowPort() throws -> UInt16 {
        for port in UInt16(600)..<1000 where canBindLoopback(port: port) { return port }
        throw TestFailure("no free port below 1024 on 127.0.0.1")
    }

    @Test(.enabled(if: isRoot, "needs root: it switches to nobody"))
    func workersServeAsTheUserWithNoCapabilityAndNoNewPrivileges() throws {
        let daemon = try Daemon(
            ["--listen", "127.0.0.1:0", "--workers", "2", "--user", "nobody"], allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        #expect(try Client.exchange(port: daemon.port(), "as nobody<EOF>") == "as nobody<EOF>")
        let workers = daemon.workerPIDs()
        #expect(workers.count == 2)
        for worker in workers {
            let fields = try Self.credentials(of: worker)
            #expect(fields["Uid"] == Array(repeating: Self.nobody, count: 4).joined(separator: " "))
            #expect(fields["Gid"] == Array(repeating: "65534", count: 4).joined(separator: " "))
            #expect(fields["Groups"] == "")
            #expect(fields["NoNewPrivs"] == "1")
            for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] { #expect(fields[set] == "0000000000000000", "\(set)") }
        }
        // The supervisor: the same user, with CAP_NET_BIND_SERVICE (bit 10) alone, for reloads.
        let supervisor = try Self.credentials(of: daemon.pid)
        #expect(supervisor["Uid"] == Array(repeating: Self.nobody, count: 4).joined(separator: " "))
        #expect(supervisor["Groups"] == "")
        #expect(supervisor["NoNewPrivs"] == "1")
        #expect(supervisor["CapEff"] == "0000000000000400")
        #expect(supervisor["CapPrm"] == "0000000000000400")
        try daemon.waitForLog("Running as user nobody (uid 65534, gid 65534), keeping CAP_NET_BIND_SERVICE")
    }

    @Test(.enabled(if: isRoot, "needs root: it switches to nobody and binds a port below 1024"))
    func aReloadAfterTheSwitchBindsAPortBelow1024() throws {
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0"]
            workers = 1
            user = "nobody"
            group = "nogroup"
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path], allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let low = try Self.freeLowPort()
        try config.write(
            """
            listen = ["127.0.0.1:0", "127.0.0.1:\(low)"]
            workers = 1
            user = "nobody"
            group = "nogroup"
            """)
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the reload") { daemon.notify.count(of: "READY=1", from: daemon.pid) >= 2 }
        #expect(try Client.exchange(port: low, "low port<EOF>") == "low port<EOF>")
        let worker = try #require(daemon.workerPIDs().first)
        #expect(try Self.credentials(of: worker)["Uid"]?.hasPrefix(Self.nobody) == true)
    }

    @Test(.enabled(if: isRoot, "needs root: it switches to nobody"))
    func aReloadCannotChangeTheUser() throws {
        let config = try TestConfigFile("listen = [\"127.0.0.1:0\"]\nworkers = 1\nuser = \"nobody\"\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path], allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        try config.write("listen = [\"127.0.0.1:0\"]\nworkers = 1\nuser = \"daemon\"\n")
        daemon.signal(SIGHUP)
        try daemon.waitForLog(
            "reload rejected, keeping generation 1: user = daemon: cannot change on reload (it was nobody)")
        #expect(try Client.exchange(port: daemon.port(), "still<EOF>") == "still<EOF>")
    }

    @Test(.enabled(if: isRoot, "needs root: the refusal is of root"))
    func rootWithoutAUserIsRefusedInOneLine() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0"], allowRoot: false)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 78)
        #expect(daemon.log == "preforkd: refusing to serve as root: set user = \"NAME\" (or allow-root = true)\n")
    }

    @Test(.enabled(if: isRoot, "needs root: it is root that allow-root lets serve"))
    func allowRootServesAsRoot() throws {
        let daemon = try Daemon(["--listen", "127.0.0.1:0", "--workers", "1", "--allow-root"], allowRoot: false)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let worker = try #require(daemon.workerPIDs().first)
        let fields = try Self.credentials(of: worker)
        #expect(fields["Uid"] == "0 0 0 0")
        #expect(fields["NoNewPrivs"] == "1")
    }

    @Test func anUnknownUserIsAConfigurationError() throws {
        let config = try TestConfigFile("user = \"no-such-user-here\"\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path], allowRoot: false)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 78)
        #expect(daemon.log == "preforkd: \(config.path): user = no-such-user-here: no such user\n")
    }

    @Test func anUnknownGroupIsAConfigurationError() throws {
        let config = try TestConfigFile("user = \"nobody\"\ngroup = \"no-such-group-here\"\n")
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path], allowRoot: false)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 78)
        #expect(daemon.log == "preforkd: \(config.path): group = no-such-group-here: no such group\n")
    }

    @Test(.enabled(if: isRoot, "needs root to start preforkd as nobody with setpriv"))
    func aUserThatCannotBeSwitchedToIsRefusedBeforeBinding() throws {
        let daemon = try Daemon(
            [
                "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", Binaries.preforkd,
                "--listen", "127.0.0.1:0", "--user", "daemon", "--runtime-directory", "",
            ], binary: "/usr/bin/setpriv", allowRoot: false)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 78)
        #expect(
            daemon.log
                == "preforkd: cannot switch to user daemon (uid 1, gid 1) from uid 65534: Operation not permitted (errno 1)\n"
        )
    }
}
