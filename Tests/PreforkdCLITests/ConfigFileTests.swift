import Prefork
import PreforkHandlers
import Testing

@testable import PreforkdCLI

/// The echo handler's options in `options` (top-level or a listener's).
func echo(_ options: [String: HandlerOptions]) -> EchoHandler.Configuration {
    options["echo"]!.as(EchoHandler.Configuration.self)!
}

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
            fd-store = true
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
        #expect(settings.server.initialTimeout == .milliseconds(2500))
        #expect(settings.server.sendTimeout == .seconds(7))
        #expect(settings.server.gracefulTimeout == .seconds(4))
        #expect(settings.server.backlog == 128)
        #expect(settings.server.unixMode == 0o600)
        #expect(settings.server.fileDescriptorStore)
        #expect(settings.logLevel == .debug)
        #expect(settings.logFormat == .json)
        #expect(echo(settings.handlerOptions).keepAlive)
        #expect(echo(settings.handlerOptions).idleTimeout == .seconds(3))
        #expect(echo(settings.handlerOptions).maxMessageBytes == 4096)
        #expect(echo(settings.handlerOptions).messageTimeout == .seconds(9))
    }

    @Test(arguments: [
        ("workrs = 4", "test.toml: workrs = 4: unknown key"),
        ("workers = \"four\"", "test.toml: workers = \"four\": expected an integer, got a string"),
        ("workers = 0", "workers = 0: must be between 1 and 512"),
        (
            "listen = [\"localhost:80\"]",
            "test.toml: listen = \"localhost:80\": 'localhost' is not an IPv4 address (use an address, not a host name)"
        ),
        ("listen = 80", "test.toml: listen = 80: expected an address or a list of addresses, got an integer"),
        ("handler = \"nope\"", "test.toml: handler = \"nope\": expected one of echo, metrics, forward"),
        (
            "log-level = \"loud\"",
            "test.toml: log-level = \"loud\": expected one of trace, debug, info, notice, warning, error, critical"
        ),
        ("[echo]\nkeep-alive = 1", "test.toml: echo.keep-alive = 1: expected true or false, got an integer"),
        ("[echo]\nbogus = 1", "test.toml: echo.bogus = 1: unknown key"),
        ("echo = 1", "test.toml: echo = 1: expected a table [echo]"),
        ("[echo]\nidle-timeout = 0", "echo.idle-timeout = 0: must be between 0.001 and 86400"),
        (
            "initial-timeout = \"soon\"",
            "test.toml: initial-timeout = \"soon\": expected a number of seconds, got a string"
        ),
        ("initial-timeout = 1e300", "test.toml: initial-timeout = 1e+300: must be between 0.001 and 86400"),
        ("unix-mode = \"999\"", "test.toml: unix-mode = \"999\": expected an octal mode such as \"0660\""),
        ("started = 1979-05-27", "test.toml: started = 1979-05-27: dates and times are not taken by any setting"),
        (
            "[listeners.a]\nhandler = \"nope\"",
            "test.toml: listeners.a.handler = \"nope\": expected one of echo, metrics, forward"
        ),
        ("[listeners.a]\nworkers = 2", "test.toml: listeners.a.workers = 2: unknown key"),
        (
            "[listeners.a.echo]\nkeep-alive = \"yes\"",
            "test.toml: listeners.a.echo.keep-alive = \"yes\": expected true or false, got a string"
        ),
        (
            "[listeners.a.echo]\nmax-message-bytes = 1",
            "listeners.a.echo.max-message-bytes = 1: must be between 5 and 1073741824"
        ),
        ("listeners = 1", "test.toml: listeners = 1: expected tables [listeners.NAME]"),
        (
            "[listeners.lb]\naccept-proxy = \"v3\"",
            "test.toml: listeners.lb.accept-proxy = \"v3\": expected one of off, v1, v2, any"
        ),
        (
            "[listeners.lb]\naccept-proxy-from = [\"127.0.0.1/32\", \"10.0.0.0/33\"]",
            "test.toml: listeners.lb.accept-proxy-from = \"10.0.0.0/33\": expected a CIDR block such as 10.0.0.0/8 or ::1/128"
        ),
        (
            "accept-proxy-from = 8",
            "test.toml: accept-proxy-from = 8: expected a CIDR block or a list of them, got an integer"
        ),
        ("open-files = -1", "open-files = -1: must be between 0 and 1073741824"),
    ])
    func badValuesGiveOneLineNamingKeyAndValue(text: String, message: String) {
        #expect {
            _ = try apply(text)
        } throws: { error in
            "\(error)".hasSuffix(message) && !"\(error)".contains("\n")
        }
    }

    @Test func handlerTablesDoNotShadowTopLevelKeys() {
        let topLevel = Set(Settings.table.settings.map(\.key) + ["listeners"])
        #expect(topLevel.isDisjoint(with: HandlerRegistry.names))
        #expect(!HandlerRegistry.names.contains("handler"), "[listeners.X] handler is taken")
    }

    @Test func syntaxErrorsNameTheLine() {
        #expect {
            _ = try apply("workers = \n")
        } throws: { "\($0)".contains("test.toml") && "\($0)".contains("line 1") }
    }

    @Test func listenerTablesStartFromTheFilesOwnHandlerOptions() throws {
        let settings = try apply(
            """
            [echo]
            max-message-bytes = 100
            [listeners.admin]
            handler = "echo"
            [listeners.admin.echo]
            keep-alive = true
            """)
        let admin = try #require(settings.listeners["admin"])
        #expect(admin.handler == "echo")
        #expect(echo(admin.handlerOptions).keepAlive)
        #expect(echo(admin.handlerOptions).maxMessageBytes == 100)
        #expect(!echo(settings.handlerOptions).keepAlive)
    }

    @Test func renderedConfigurationReadsBackTheSame() throws {
        let settings = try apply(
            """
            listen = ["127.0.0.1:1234", "unix:/tmp/a b.sock"]
            workers = 5
            initial-timeout = 0.25
            log-level = "notice"
            [echo]
            keep-alive = true
            message-timeout = 1.5
            [listeners.admin.echo]
            idle-timeout = 0.125
            [listeners."127.0.0.1:1234"]
            handler = "echo"
            """)
        var reread = Settings()
        try ConfigFile.apply(text: settings.renderTOML(), source: "rendered", to: &reread)
        try reread.validate()
        #expect(reread == settings)
        #expect(settings.renderTOML().contains("[listeners.\"127.0.0.1:1234\".echo]"))
    }

    @Test func listenerTablesTakeThePROXYKeysStartingFromTheTopLevels() throws {
        let settings = try apply(
            """
            accept-proxy-from = ["127.0.0.1/32", "::1/128"]
            [listeners.lb]
            accept-proxy = "v2"
            [listeners.direct]
            handler = "echo"
            """)
        let lb = settings.server.proxyProtocol(forListenerNamed: "lb")
        #expect(lb.accept == .v2)
        #expect(lb.trustedPeers.map(\.description) == ["127.0.0.1/32", "::1/128"])
        #expect(settings.server.proxyProtocol(forListenerNamed: "direct").accept == .off)
        #expect(settings.server.proxyProtocol(forListenerNamed: "127.0.0.1:11000").accept == .off)
        var reread = Settings()
        try ConfigFile.apply(text: settings.renderTOML(), source: "rendered", to: &reread)
        #expect(reread == settings)
    }
}
