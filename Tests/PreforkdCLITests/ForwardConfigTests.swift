import ForwardProtocols
import Prefork
import PreforkHandlers
import Testing

@testable import PreforkdCLI

/// The `[forward]` table and its `[[forward.route]]` list, through the real config reader.
@Suite struct ForwardConfigTests {
    func apply(_ text: String) throws(ConfigurationError) -> Settings {
        var settings = Settings()
        try ConfigFile.apply(text: text, source: "test.toml", to: &settings)
        try settings.validate()
        return settings
    }

    func forward(_ settings: Settings) -> ForwardHandler.Configuration {
        settings.handlerOptions["forward"]!.as(ForwardHandler.Configuration.self)!
    }

    /// The issue's example, whole.
    static let example = withoutCatchAll + catchAll

    static let withoutCatchAll = """
        listen = ["127.0.0.1:0"]
        handler = "forward"

        [forward]
        probe-timeout = 2
        connect-timeout = 3
        idle-timeout = 300

        [[forward.route]]
        name = "ssh"
        protocol = "ssh"
        upstream = ["127.0.0.1:22"]

        [[forward.route]]
        name = "site"
        protocol = "tls"
        sni = ["example.com", "*.example.org"]
        alpn = ["h2", "http/1.1"]
        upstream = ["127.0.0.1:8443", "[::1]:8443"]
        send-proxy = "v2"

        [[forward.route]]
        name = "plain-web"
        protocol = "http"
        host = ["example.com"]
        upstream = ["unix:/run/web.sock"]

        [[forward.route]]
        name = "alpha"
        prefix = "alpha:"
        upstream = ["127.0.0.1:7000"]

        [[forward.route]]
        name = "ws"
        regex = "^GET /ws "
        upstream = ["127.0.0.1:7001"]

        [[forward.route]]
        name = "server-speaks-first"
        protocol = "timeout"
        upstream = ["127.0.0.1:2525"]

        """

    static let catchAll = """
        [[forward.route]]
        name = "default"
        upstream = ["127.0.0.1:8080"]
        """

    @Test func theIssuesExampleIsRead() throws {
        let configuration = forward(try apply(Self.example))
        #expect(configuration.probeTimeout == .seconds(2))
        #expect(configuration.connectTimeout == .seconds(3))
        #expect(configuration.idleTimeout == .seconds(300))
        #expect(
            configuration.routes.map(\.name) == [
                "ssh", "site", "plain-web", "alpha", "ws", "server-speaks-first", "default",
            ])
        let site = configuration.routes[1]
        #expect(
            site.condition
                == .tls(
                    serverNames: ["example.com", "*.example.org"].compactMap(ServerNamePattern.init),
                    alpn: ["h2", "http/1.1"]))
        #expect(site.upstreams.map(\.description) == ["127.0.0.1:8443", "[::1]:8443"])
        #expect(site.sendProxy == .v2)
        #expect(configuration.routes[2].upstreams == [.unix(path: "/run/web.sock")])
        #expect(configuration.routes[3].condition == .prefix(Array("alpha:".utf8)))
        #expect(configuration.routes[4].condition == .regex(try RoutePattern("^GET /ws ")))
        #expect(configuration.routes[5].condition == .timeout)
        #expect(configuration.routes[6].isCatchAll)
        #expect(ForwardHandler(configuration: configuration).answersSilentClients)
    }

    @Test func renderedSettingsReadBackEqual() throws {
        let settings = try apply(
            Self.withoutCatchAll + """
                [[forward.route]]
                name = "binary"
                prefix = [0, 255, 22]
                upstream = ["127.0.0.1:9"]

                """ + Self.catchAll)
        var again = Settings()
        try ConfigFile.apply(text: settings.renderTOML(), source: "rendered.toml", to: &again)
        #expect(again == settings)
        #expect(forward(again).routes.first { $0.name == "binary" }?.condition == .prefix([0, 255, 22]))
    }

    @Test(arguments: [
        (
            "[[forward.route]]\nname = \"x\"\nprotocol = \"smtp\"\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].protocol = \"smtp\": route \"x\": expected one of ssh, tls, http, timeout"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nupstream = [\"localhost:22\"]",
            "test.toml: forward.route[0].upstream = \"localhost:22\": route \"x\": 'localhost' is not an IPv4 address (use an address, not a host name)"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nupstream = [\"*:22\"]",
            "test.toml: forward.route[0].upstream = \"*:22\": route \"x\": an upstream needs an address, not *"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nregex = \"^(GET\"\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].regex = \"^(GET\": route \"x\": invalid regular expression"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nupstream = []",
            "test.toml: forward.route[0].upstream = []: route \"x\": needs at least one address"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nprotocol = \"ssh\"",
            "test.toml: forward.route[0].upstream = []: route \"x\": expected a list of addresses"
        ),
        (
            "[[forward.route]]\nname = \"any\"\nupstream = [\"127.0.0.1:1\"]\n[[forward.route]]\nname = \"ssh\"\nprotocol = \"ssh\"\nupstream = [\"127.0.0.1:2\"]",
            "test.toml: forward.route[1].name = \"ssh\": route \"ssh\" comes after the catch-all route \"any\" and can never match"
        ),
        (
            "[[forward.route]]\nname = \"a\"\nprotocol = \"ssh\"\nupstream = [\"127.0.0.1:1\"]\n[[forward.route]]\nname = \"a\"\nupstream = [\"127.0.0.1:2\"]",
            "test.toml: forward.route[1].name = \"a\": route \"a\": the name is used by an earlier route"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nprotocol = \"ssh\"\nsni = [\"a.test\"]\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].sni = [\"a.test\"]: route \"x\": only a protocol = \"tls\" route takes sni"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nprefix = \"a\"\nregex = \"b\"\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].regex = \"b\": route \"x\": a route matches by one of protocol, prefix or regex, not prefix and regex"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nupstreams = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].upstreams = [\"127.0.0.1:1\"]: route \"x\": unknown key (a route takes alpn, host, name, prefix, protocol, regex, send-proxy, sni, upstream)"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nsend-proxy = \"v3\"\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].send-proxy = \"v3\": route \"x\": expected \"v1\", \"v2\" or \"none\""
        ),
        (
            "[[forward.route]]\nname = \"x\"\nprotocol = \"tls\"\nsni = [\"bad name!\"]\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].sni = \"bad name!\": route \"x\": expected a host name or *.domain"
        ),
        (
            "[[forward.route]]\nname = \"x\"\nprefix = [256]\nupstream = [\"127.0.0.1:1\"]",
            "test.toml: forward.route[0].prefix = 256: route \"x\": expected byte values from 0 to 255"
        ),
    ])
    func badRoutesAreRefusedNamingFileRouteAndKey(routes: String, message: String) {
        #expect {
            _ = try apply("handler = \"forward\"\n[forward]\n" + routes)
        } throws: { error in
            let text = "\(error)"
            // The regex compiler's own wording follows the prefix; the rest is exact.
            return message.hasSuffix("invalid regular expression") ? text.hasPrefix(message) : text == message
        }
    }

    @Test func aForwardHandlerInUseNeedsARoute() throws {
        #expect(throws: ConfigurationError.self) { _ = try apply("handler = \"forward\"") }
        let error = #expect(throws: ConfigurationError.self) {
            _ = try apply("[listeners.lb]\nhandler = \"forward\"")
        }
        #expect(error?.key == "listeners.lb.forward.route")
        // Unused, the empty default is fine.
        _ = try apply("handler = \"echo\"")
    }
}
