import Foundation
import Logging
import Prefork
import PreforkHandlers
import Testing

@testable import PreforkdCLI

/// A config file in the temporary directory, removed by the caller.
struct ConfigFixture {
    let path: String

    init(_ text: String) throws {
        path = NSTemporaryDirectory() + "preforkd-cli-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).toml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite struct CommandLineTests {
    /// A flag text for every setting with a flag, each different from the default.
    static let samples: [String: String] = [
        "listen": "[::1]:9", "workers": "7", "initial-bytes": "77", "initial-timeout": "2.5",
        "send-timeout": "0.125", "write-deadline": "9.5", "handler": "echo", "graceful-timeout": "0",
        "boot-timeout": "2.5",
        "handler-timeout": "7", "max-connections-per-worker": "1000", "min-spare": "2", "max-workers": "9",
        "spare-timeout": "4.5", "runtime-directory": "/run/preforkd-sample", "backlog": "99",
        "unix-mode": "0600", "open-files": "4096", "user": "nobody", "group": "nogroup",
        "accept-proxy": "v2", "accept-proxy-from": "10.0.0.0/8",
        "log-level": "debug", "log-format": "json", "echo.idle-timeout": "3.75", "echo.max-message-bytes": "64",
        "echo.message-timeout": "12",
        "echo.max-messages": "100", "echo.max-lifetime": "300", "forward.probe-timeout": "0.5",
        "forward.connect-timeout": "1.5",
        "forward.idle-timeout": "60", "forward.probe-bytes": "4096", "forward.relay": "copy",
    ]

    /// The command-line words that set `flag` to a value other than its default.
    func arguments(for flag: FlagSetting) throws -> [String] {
        switch flag.flag {
        case .toggle:
            return [flag.render(Settings()) == .boolean(true) ? "--no-\(flag.flagName)" : "--\(flag.flagName)"]
        default:
            // A group is only taken with a user.
            let prerequisite = flag.key == "group" ? ["--user", "nobody"] : []
            return prerequisite + [
                "--\(flag.flagName)", try #require(Self.samples[flag.key], "a sample for \(flag.key)"),
            ]
        }
    }

    @Test func everyFlagReachesItsSettingAndRoundTripsThroughTOML() throws {
        let withFlags = Set(FlagSetting.all.filter { $0.flag != .toggle }.map(\.key))
        #expect(Set(Self.samples.keys) == withFlags)
        for flag in FlagSetting.all {
            let command = try PreforkdCommand.parse(try arguments(for: flag))
            let settings = try command.loadSettings()
            // The handler has one registered value only: it cannot differ from the default yet.
            if flag.key != "handler" {
                #expect(flag.render(settings) != flag.render(Settings()), "\(flag.key) reaches the settings")
            }
            if let text = Self.samples[flag.key] {
                let value = try flag.parse(text)
                #expect(flag.render(settings) == (flag.isRepeatable ? .array([value]) : value), "\(flag.key)")
            }
            var reread = Settings()
            try ConfigFile.apply(text: settings.renderTOML(), source: "rendered", to: &reread)
            #expect(reread == settings, "\(flag.key) reads back from --check-config's output")
        }
    }

    @Test func everyTableSettingWithAFlagHasOne() throws {
        // The flags swift-argument-parser knows are exactly those the tables describe.
        let help = PreforkdCommand.helpMessage(columns: 400)
        for flag in FlagSetting.all {
            #expect(help.contains("--\(flag.flagName)"), "\(flag.key)")
            #expect(help.contains(flag.help), "\(flag.key): help from the table")
        }
        #expect(help.contains("-l, --listen"))
        #expect(help.contains("--no-echo-keep-alive"))
    }

    @Test func badFlagValuesNameTheFlagAndTheTextAsTyped() throws {
        let cases: [([String], String)] = [
            (["--workers", "0"], "--workers = 0: must be between 1 and 512"),
            (["--workers", "many"], "--workers = many: expected an integer"),
            (["--initial-timeout", "0.0"], "--initial-timeout = 0.0: must be between 0.001 and 86400"),
            (
                ["--listen", "localhost:80"],
                "--listen = localhost:80: 'localhost' is not an IPv4 address (use an address, not a host name)"
            ),
            (["-l", "*:1", "-l", "*:1"], "--listen = *:1: is listed twice"),
            (["--handler", "nope"], "--handler = nope: expected one of echo, metrics, forward"),
            (
                ["--log-level", "loud"],
                "--log-level = loud: expected one of trace, debug, info, notice, warning, error, critical"
            ),
            (["--unix-mode", "8"], "--unix-mode = 8: expected an octal mode such as \"0660\""),
            (["--echo-idle-timeout", "0"], "--echo-idle-timeout = 0: must be between 0.001 and 86400"),
        ]
        for (arguments, message) in cases {
            let command = try PreforkdCommand.parse(arguments)
            #expect(throws: ConfigurationError.self) { _ = try command.loadSettings() }
            do {
                _ = try command.loadSettings()
            } catch {
                #expect(error.description == message)
                #expect(error.source.isEmpty, "a command-line error exits with the usage status")
            }
        }
    }

    @Test func handlerFlagsWinOverListenerTablesToo() throws {
        let config = try ConfigFixture(
            """
            [echo]
            keep-alive = false
            [listeners.admin.echo]
            keep-alive = false
            idle-timeout = 3
            [listeners.public]
            handler = "echo"
            """)
        defer { config.remove() }
        let command = try PreforkdCommand.parse([
            "--config", config.path, "--echo-keep-alive", "--echo-idle-timeout", "7",
        ])
        let settings = try command.loadSettings()
        #expect(echo(settings.handlerOptions).keepAlive)
        for name in ["admin", "public"] {
            let listener = try #require(settings.listeners[name])
            #expect(echo(listener.handlerOptions).keepAlive, "\(name)")
            #expect(echo(listener.handlerOptions).idleTimeout == .seconds(7), "\(name)")
        }
        // Options no flag names keep the file's value.
        let file = try PreforkdCommand.parse(["--config", config.path]).loadSettings()
        #expect(echo(file.listeners["admin"]!.handlerOptions).idleTimeout == .seconds(3))
    }

    @Test func proxyFlagsWinOverListenerTablesToo() throws {
        let config = try ConfigFixture(
            """
            [listeners.lb]
            accept-proxy = "v1"
            accept-proxy-from = ["10.0.0.0/8"]
            """)
        defer { config.remove() }
        let settings = try PreforkdCommand.parse([
            "--config", config.path, "--accept-proxy", "any", "--accept-proxy-from", "127.0.0.1",
            "--accept-proxy-from", "::1/128",
        ]).loadSettings()
        for policy in [settings.server.proxyProtocol, settings.server.proxyProtocol(forListenerNamed: "lb")] {
            #expect(policy.accept == .any)
            #expect(policy.trustedPeers.map(\.description) == ["127.0.0.1/32", "::1/128"])
        }
    }

    @Test func loadingASetupLeavesTheLogLevelToTheEngine() throws {
        let config = try ConfigFixture("log-level = \"debug\"\n")
        defer { config.remove() }
        let command = try PreforkdCommand.parse(["--config", config.path])
        let before = LogSetup.level
        let setup = try command.reloadSetup()
        // Loading (as a reload does before the engine validates and binds) changes nothing yet.
        #expect(LogSetup.level == before)
        #expect(setup.logLevel == .debug)
        // The command line wins here too.
        let quiet = try PreforkdCommand.parse(["--config", config.path, "--log-level", "error"]).reloadSetup()
        #expect(quiet.logLevel == .error)
    }

    @Test func checkConfigOutputIsReadBackTheSameWithListenerTables() throws {
        let config = try ConfigFixture(
            """
            workers = 2
            [listeners.admin.echo]
            keep-alive = true
            """)
        defer { config.remove() }
        let settings = try PreforkdCommand.parse(["--config", config.path, "--echo-max-message-bytes", "128"])
            .loadSettings()
        let rendered = try ConfigFixture(settings.renderTOML())
        defer { rendered.remove() }
        let reread = try PreforkdCommand.parse(["--config", rendered.path]).loadSettings()
        #expect(reread == settings)
        #expect(echo(reread.listeners["admin"]!.handlerOptions).maxMessageBytes == 128)
    }
}
