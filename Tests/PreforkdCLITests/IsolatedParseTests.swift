import Foundation
import Prefork
import Testing

@testable import PreforkdCLI

@Suite struct SettingWireTests {
    @Test func everyKindOfValueRoundTrips() {
        let table: [String: SettingValue] = [
            "on": .boolean(true), "off": .boolean(false),
            "zero": .integer(0), "max": .integer(.max), "min": .integer(.min), "minus": .integer(-42),
            "half": .number(0.5), "tiny": .number(1e-300), "huge": .number(-1.7976931348623157e308),
            "negativeZero": .number(-0.0), "third": .number(1.0 / 3.0),
            "empty": .string(""), "unicode": .string("héllo wörld — 日本語 🚀 \u{0}\n\"quoted\""),
            "list": .array([.integer(1), .string("two"), .array([.number(3.5), .boolean(false)]), .table([:])]),
            "emptyList": .array([]),
            "nested": .table([
                "a": .table(["b": .table(["c": .array([.table(["d": .string("ünïcode key ✓")])])])]),
                "ключ": .integer(7), "": .string("empty key"),
            ]),
            "emptyTable": .table([:]),
        ]
        let bytes = SettingWire.encode(table)
        #expect(SettingWire.decode(bytes) == .values(table))
        #expect(SettingWire.decode(SettingWire.encode([:])) == .values([:]))
    }

    @Test func errorsRoundTrip() {
        let error = ConfigurationError(
            source: "/etc/preforkd/prefork.toml", key: "listeners.lb.workers", value: "\"два\"",
            reason: "expected an integer")
        #expect(SettingWire.decode(SettingWire.encode(error)) == .error(error))
        let bare = ConfigurationError(key: "", value: "", reason: "")
        #expect(SettingWire.decode(SettingWire.encode(bare)) == .error(bare))
    }

    @Test func cutOrPaddedRepliesAreRefused() {
        let bytes = SettingWire.encode(["listen": .array([.string("127.0.0.1:1")]), "workers": .integer(3)])
        for length in 0..<bytes.count { #expect(SettingWire.decode(Array(bytes[..<length])) == nil) }
        #expect(SettingWire.decode(bytes + [0]) == nil)
        #expect(SettingWire.decode([0x56, 9]) == nil)
        // A count far larger than the bytes that follow is refused before anything is allocated.
        #expect(SettingWire.decode([0x56, 6] + [UInt8](repeating: 0xff, count: 8)) == nil)
    }
}

@Suite struct IsolatedParseTests {
    /// `apply(path:to:isolated:)`, forking even though the test runner has threads.
    static func apply(path: String, isolated: Bool) throws(ConfigurationError) -> Settings {
        var settings = Settings()
        if isolated {
            try ConfigFile.apply(try ConfigFile.parseInChild(path: path), source: path, to: &settings)
        } else {
            try ConfigFile.apply(path: path, to: &settings)
        }
        return settings
    }

    /// The file applied in-process and in a child: the same settings, or the same error line.
    func both(_ text: String) throws -> (
        inProcess: Result<String, ConfigurationError>, isolated: Result<String, ConfigurationError>
    ) {
        let file = try ConfigFixture(text)
        defer { file.remove() }
        func run(_ isolated: Bool) -> Result<String, ConfigurationError> {
            do {
                return .success(try Self.apply(path: file.path, isolated: isolated).renderTOML())
            } catch {
                return .failure(error)
            }
        }
        return (run(false), run(true))
    }

    @Test func goodFilesGiveTheSameSettings() throws {
        let (inProcess, isolated) = try both(
            """
            listen = ["127.0.0.1:1234", "unix:/tmp/x — ü.sock"]
            workers = 3
            initial-timeout = 2.5
            fd-store = true
            handler = "echo"
            [echo]
            keep-alive = true
            max-message-bytes = 4096
            [listeners.lb]
            handler = "echo"
            accept-proxy = "v2"
            [listeners.lb.echo]
            idle-timeout = 3
            """)
        guard case .success(let rendered) = inProcess else {
            Issue.record("in-process: \(inProcess)")
            return
        }
        #expect(isolated == .success(rendered))
    }

    @Test(arguments: [
        "workers = \n",
        "workers = \"four\"",
        "no-such-key = 1",
        "started = 1979-05-27T07:32:00Z",
        "initial-timeout = nan",
        "[echo]\nkeep-alive = 3",
        "[listeners.lb]\naccept-proxy = \"v3\"",
        "open-files = -1",
        "workers = 9223372036854775807",
        "listen = [\"nowhere: ü\"]",
    ])
    func errorLinesAreTheSame(text: String) throws {
        let (inProcess, isolated) = try both(text)
        guard case .failure(let error) = inProcess else {
            // A value only validate() refuses: both paths must still agree.
            #expect(isolated == inProcess)
            return
        }
        #expect(isolated == .failure(error))
        if case .failure(let other) = isolated { #expect(other.description == error.description) }
    }

    @Test func unreadableAndInvalidFilesGiveTheSameErrors() throws {
        let missing = NSTemporaryDirectory() + "preforkd-cli-missing-\(getpid()).toml"
        var errors: [String] = []
        for isolated in [false, true] {
            do {
                _ = try Self.apply(path: missing, isolated: isolated)
            } catch {
                errors.append(error.description)
            }
        }
        #expect(errors.count == 2 && errors[0] == errors[1] && errors[0].contains("cannot be read"))

        let path = NSTemporaryDirectory() + "preforkd-cli-latin1-\(getpid()).toml"
        try Data([0x77, 0x3d, 0x22, 0xe9, 0x22, 0x0a]).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        errors = []
        for isolated in [false, true] {
            do {
                _ = try Self.apply(path: path, isolated: isolated)
            } catch {
                errors.append(error.description)
            }
        }
        #expect(errors.count == 2 && errors[0] == errors[1] && errors[0].contains("UTF-8"))
    }
}
