import Prefork
import Testing

@testable import PreforkdCLI

@Suite struct ConfigFileTests {
    func apply(_ text: String) throws(ConfigurationError) -> Settings {
        var settings = Settings()
        try ConfigFile.apply(text: text, source: "test.toml", to: &settings)
        try settings.validate()
        return settings
    }

    @Test func everyKeyIsRead() throws {
        let settings = try apply(
            """
            listen = ["127.0.0.1:1234", "[::1]:0", "unix:/tmp/x.sock"]
            workers = 3
            initial-bytes = 10
            initial-timeout = 2.5
            send-timeout = 7
            graceful-timeout = 4
            backlog = 128
            unix-mode = "0600"
            handler = "echo"
            log-level = "debug"
            log-format = "json"
            [echo]
            keep-alive = true
            idle-timeout = 3
            max-message-bytes = 4096
            message-timeout = 9
            """)
        #expect(settings.server.listen.map(\.description) == ["127.0.0.1:1234", "[::1]:0", "unix:/tmp/x.sock"])
        #expect(settings.server.workers == 3)
        #expect(settings.server.initialBytes == 10)
        #expect(settings.server.initialTimeout == 2.5)
        #expect(settings.server.sendTimeout == 7)
        #expect(settings.server.gracefulTimeout == 4)
        #expect(settings.server.backlog == 128)
        #expect(settings.server.unixMode == 0o600)
        #expect(settings.logLevel == .debug)
        #expect(settings.logFormat == .json)
        #expect(settings.echo.keepAlive)
        #expect(settings.echo.idleTimeout == 3)
        #expect(settings.echo.maxMessageBytes == 4096)
        #expect(settings.echo.messageTimeout == 9)
    }

    @Test(arguments: [
        ("workrs = 4", "test.toml: workrs = 4: unknown key"),
        ("workers = \"four\"", "test.toml: workers = \"four\": expected an integer, got a string"),
        ("workers = 0", "workers = 0: must be between 1 and 512"),
        (
            "listen = [\"localhost:80\"]",
            "test.toml: listen = \"localhost:80\": 'localhost' is not an IPv4 address (use an address, not a host name)"
        ),
        ("handler = \"nope\"", "test.toml: handler = \"nope\": expected one of echo"),
        ("[echo]\nkeep-alive = 1", "test.toml: echo.keep-alive = 1: expected true or false, got a integer"),
        ("[echo]\nbogus = 1", "test.toml: echo.bogus = 1: unknown key"),
        (
            "initial-timeout = \"soon\"",
            "test.toml: initial-timeout = \"soon\": expected a number of seconds, got a string"
        ),
        ("unix-mode = \"999\"", "test.toml: unix-mode = \"999\": expected an octal mode such as \"0660\""),
    ])
    func badValuesGiveOneLineNamingKeyAndValue(text: String, message: String) {
        #expect {
            _ = try apply(text)
        } throws: { error in
            "\(error)".hasSuffix(message) && !"\(error)".contains("\n")
        }
    }

    @Test func syntaxErrorsNameTheLine() {
        #expect {
            _ = try apply("workers = \n")
        } throws: { "\($0)".contains("test.toml") && "\($0)".contains("line 1") }
    }

    @Test func commandLineOverridesTheFileAndNamesItsFlag() throws {
        let command = try PreforkdCommand.parse(["--workers", "0"])
        #expect { _ = try command.loadSettings() } throws: { "\($0)" == "--workers = 0: must be between 1 and 512" }
        let ok = try PreforkdCommand.parse([
            "-w", "2", "-l", "[::1]:9", "--echo-keep-alive", "--echo-max-message-bytes", "64",
        ])
        let settings = try ok.loadSettings()
        #expect(settings.server.workers == 2)
        #expect(settings.server.listen == [.ipv6(host: "::1", port: 9)])
        #expect(settings.echo.keepAlive)
        #expect(settings.echo.maxMessageBytes == 64)
    }

    @Test func renderedConfigurationReadsBackTheSame() throws {
        var settings = Settings()
        settings.server.workers = 5
        settings.echo.keepAlive = true
        var reread = Settings()
        try ConfigFile.apply(text: settings.renderTOML(), source: "rendered", to: &reread)
        #expect(reread == settings)
    }
}
