import Testing

@testable import Prefork

@Suite struct ServerConfigurationTests {
    @Test func defaultsAreValid() throws {
        let configuration = ServerConfiguration()
        try configuration.validate()
        #expect(configuration.listen == [.ipv4(host: "127.0.0.1", port: 11000)])
        #expect(configuration.workers >= 1)
    }

    @Test func outOfRangeValuesNameTheirKey() {
        var configuration = ServerConfiguration()
        configuration.workers = 0
        #expect(throws: ConfigurationError(key: "workers", value: "0", reason: "must be between 1 and 512")) {
            try configuration.validate()
        }
        configuration = ServerConfiguration()
        configuration.initialBytes = 0
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
        configuration = ServerConfiguration()
        configuration.initialTimeout = .zero
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
    }

    @Test func duplicateListenAddressesAreRefused() {
        var configuration = ServerConfiguration()
        configuration.listen = [.any(port: 1), .any(port: 1)]
        #expect(throws: ConfigurationError(key: "listen", value: "*:1", reason: "is listed twice")) {
            try configuration.validate()
        }
    }

    @Test func errorDescriptionNamesSourceKeyAndValue() {
        let error = ConfigurationError(
            source: "/etc/preforkd.toml", key: "workers", value: "0", reason: "must be between 1 and 512")
        #expect(error.description == "/etc/preforkd.toml: workers = 0: must be between 1 and 512")
    }

    @Test func everyPropertyIsInTheSettingsTable() {
        // A property without a table entry would have no flag, no key and no range check.
        let properties = Mirror(reflecting: ServerConfiguration()).children.count
        #expect(ServerConfiguration.settings.settings.count == properties)
        #expect(Set(ServerConfiguration.settings.settings.map(\.key)).count == properties)
    }

    @Test func timeoutsAreCheckedAsDurations() {
        var configuration = ServerConfiguration()
        configuration.gracefulTimeout = .zero
        #expect(throws: Never.self) { try configuration.validate() }
        configuration.sendTimeout = .microseconds(999)
        #expect(
            throws: ConfigurationError(
                key: "send-timeout", value: "0.000999", reason: "must be between 0.001 and 86400")
        ) { try configuration.validate() }
    }

    @Test func secondsRoundTripThroughTheirTOMLForm() throws {
        let setting = try #require(ServerConfiguration.settings["initial-timeout"])
        for seconds in [0.001, 0.1, 2.5, 10, 86400, 1.0 / 3.0] {
            var configuration = ServerConfiguration()
            try setting.read(.number(seconds), into: &configuration)
            var reread = ServerConfiguration()
            try setting.read(setting.render(configuration), into: &reread)
            #expect(reread.initialTimeout == configuration.initialTimeout, "\(seconds)")
        }
        var configuration = ServerConfiguration()
        try setting.read(.integer(7), into: &configuration)
        #expect(configuration.initialTimeout == .seconds(7))
        #expect(setting.render(configuration) == .integer(7))
    }
}
