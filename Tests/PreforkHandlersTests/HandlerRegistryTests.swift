import Testing

@testable import Prefork
@testable import PreforkHandlers

@Suite struct HandlerRegistryTests {
    @Test func namesAreUniqueAndEchoIsTheDefault() {
        #expect(HandlerRegistry.names.first == "echo")
        #expect(Set(HandlerRegistry.names).count == HandlerRegistry.all.count)
        #expect(HandlerRegistry.handler(named: "echo")?.name == "echo")
        #expect(HandlerRegistry.handler(named: "nope") == nil)
    }

    @Test func optionsAreReadThroughTheHandlersOwnTable() throws {
        let echo = try #require(HandlerRegistry.handler(named: "echo"))
        var options = echo.defaults
        try echo.settings.read(
            ["keep-alive": .boolean(true), "idle-timeout": .number(2.5)], into: &options, prefix: "echo.")
        let configuration = try #require(options.as(EchoHandler.Configuration.self))
        #expect(configuration.keepAlive)
        #expect(configuration.idleTimeout == .milliseconds(2500))
        #expect(options != echo.defaults)
        #expect(echo.makeHandler(options) is EchoHandler)
    }

    @Test func anUnknownOptionIsNamedWithItsTable() throws {
        let echo = try #require(HandlerRegistry.handler(named: "echo"))
        var options = echo.defaults
        #expect(throws: ConfigurationError(key: "echo.bogus", value: "1", reason: "unknown key")) {
            try echo.settings.read(["bogus": .integer(1)], into: &options, prefix: "echo.")
        }
    }
}
