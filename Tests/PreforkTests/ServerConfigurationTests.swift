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
        configuration.initialTimeout = 0
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
}
