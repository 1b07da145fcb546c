import Foundation
import Glibc
import TestSupport
import Testing

/// Bad input of every kind: one clear line, a documented exit status, nothing bound or forked.
@Suite struct CommandLineTests {
    func run(_ arguments: [String], binary: String = Binaries.preforkd) throws -> (status: Int32, output: String) {
        let daemon = try Daemon(arguments, binary: binary)
        defer { daemon.stop() }
        let status = try daemon.waitForExit(seconds: 10)
        return (status, daemon.log)
    }

    @Test func badFlagsExitWithUsageStatus() throws {
        let unknown = try run(["--wrokers", "2"])
        #expect(unknown.status == 64)
        #expect(unknown.output.contains("--wrokers"))
        let range = try run(["--workers", "0"])
        #expect(range.status == 64)
        #expect(range.output.contains("preforkd: --workers = 0: must be between 1 and 512"))
        let address = try run(["--listen", "localhost:80"])
        #expect(address.status == 64)
        #expect(address.output.contains("preforkd: --listen = localhost:80: 'localhost' is not an IPv4 address"))
    }

    @Test func badConfigFileExitsWithConfigStatusNamingFileKeyAndValue() throws {
        let config = try TestConfigFile("workers = 2\nbacklogg = 5\n")
        defer { config.remove() }
        let path = config.path
        let unknown = try run(["--config", path])
        #expect(unknown.status == 78)
        #expect(unknown.output == "preforkd: \(path): backlogg = 5: unknown key\n")
        let missing = try run(["--config", path + ".missing"])
        #expect(missing.status == 78)
        #expect(missing.output.contains("No such file or directory"))
    }

    @Test func portInUseExitsWithUnavailableStatusAndForksNothing() throws {
        let blocker = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(blocker) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(blocker, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        listen(blocker, 1)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(blocker, $0, &length) }
        }
        let port = UInt16(bigEndian: address.sin_port)
        let result = try run(["--listen", "127.0.0.1:\(port)"])
        #expect(result.status == 69)
        #expect(result.output == "preforkd: bind 127.0.0.1:\(port): Address already in use (errno 98)\n")
        #expect(!result.output.contains("Starting"))
    }

    @Test func checkConfigPrintsTheEffectiveConfiguration() throws {
        let result = try run(["--check-config", "-w", "3", "--echo-keep-alive"])
        #expect(result.status == 0)
        #expect(result.output.contains("workers = 3"))
        #expect(result.output.contains("keep-alive = true"))
    }

    @Test(arguments: [
        ("accept-proxy-from = [\"10.0.0.0/33\"]", "accept-proxy-from = \"10.0.0.0/33\": expected a CIDR block"),
        (
            "[listeners.lb]\naccept-proxy = \"v3\"",
            "listeners.lb.accept-proxy = \"v3\": expected one of off, v1, v2, any"
        ),
    ])
    func checkConfigRefusesABadProxySettingInOneLine(text: String, message: String) throws {
        let config = try TestConfigFile(text + "\n")
        defer { config.remove() }
        let result = try run(["--config", config.path, "--check-config"])
        #expect(result.status == 78)
        #expect(result.output.hasPrefix("preforkd: \(config.path): \(message)"))
        #expect(result.output.split(separator: "\n").count == 1)
    }

    @Test func checkConfigOutputIsAcceptedBackUnchanged() throws {
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0", "unix:/tmp/preforkd-check.sock"]
            initial-timeout = 2.5
            [echo]
            idle-timeout = 0.25
            [listeners.admin]
            handler = "echo"
            [listeners.admin.echo]
            keep-alive = true
            """)
        defer { config.remove() }
        let first = try run(["--config", config.path, "--check-config", "-w", "3", "--echo-max-message-bytes", "64"])
        #expect(first.status == 0)
        #expect(first.output.contains("[listeners.admin.echo]"))
        let printed = try TestConfigFile(first.output)
        defer { printed.remove() }
        let second = try run(["--config", printed.path, "--check-config"])
        #expect(second.status == 0)
        #expect(second.output == first.output)
    }

    @Test func echoFlagsReachListenerTablesOfTheRunningDaemon() throws {
        // The file turns keep-alive off for this listener; the command line turns it on everywhere.
        let config = try TestConfigFile(
            """
            listen = "127.0.0.1:0"
            [listeners."127.0.0.1:0".echo]
            keep-alive = false
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path, "--workers", "1", "--echo-keep-alive"])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: try daemon.port())
        defer { client.close() }
        try client.send("one<EOF>")
        #expect(try client.read(count: 8) == "one<EOF>")
        try client.send("two<EOF>")
        #expect(try client.read(count: 8) == "two<EOF>", "the connection is kept alive")
    }

    @Test func versionAndHelp() throws {
        #expect(try run(["--version"]).output.hasPrefix("0."))
        let help = try run(["--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("--initial-bytes"))
    }

    @Test func embeddedEngineExampleServes() throws {
        let daemon = try Daemon(["127.0.0.1:0"], binary: Binaries.uppercaseServer)
        defer { daemon.stop() }
        try daemon.waitForReady()
        let client = try Client(port: try daemon.port())
        defer { client.close() }
        try client.send("hello\n")
        #expect(try client.readToEnd() == "HELLO\n")
    }

    @Test func embeddedEngineExampleExitsWithTheConfigurationStatusOnABadAddress() throws {
        let result = try run(["localhost:1"], binary: Binaries.uppercaseServer)
        #expect(result.status == 78)
        #expect(result.output.hasPrefix("UppercaseServer: invalid listen address 'localhost:1'"))
        #expect(result.output.filter { $0 == "\n" }.count == 1)
    }
}
