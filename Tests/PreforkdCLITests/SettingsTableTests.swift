import Prefork
import TOMLKit
import Testing

@testable import PreforkdCLI

/// The table machinery takes options whose values are tables and arrays of tables, as a
/// handler's `[[NAME.route]]` will be.
@Suite struct SettingsTableTests {
    struct Route: Equatable, Sendable {
        var match: String
        var upstream: String
    }

    struct Routed: Equatable, Sendable {
        var routes: [Route] = []
        var limits: [String: Int] = [:]
    }

    static let table = SettingsTable<Routed>([
        Setting(
            key: "route", help: "Routes, in order.", flag: .none,
            read: { value, routed throws(SettingError) in
                guard case .array(let entries) = value else { throw SettingError("expected [[route]] tables") }
                var routes: [Route] = []
                for entry in entries {
                    guard case .table(let fields) = entry, case .string(let match)? = fields["match"],
                        case .string(let upstream)? = fields["upstream"], fields.count == 2
                    else { throw SettingError("expected a table with match and upstream", value: entry) }
                    routes.append(Route(match: match, upstream: upstream))
                }
                routed.routes = routes
            },
            parseFlag: { _ throws(SettingError) in throw SettingError("not a flag") },
            render: { routed in
                .array(routed.routes.map { .table(["match": .string($0.match), "upstream": .string($0.upstream)]) })
            }),
        Setting(
            key: "limits", help: "Per-route limits.", flag: .none,
            read: { value, routed throws(SettingError) in
                guard case .table(let fields) = value else { throw SettingError("expected a table") }
                var limits: [String: Int] = [:]
                for (key, field) in fields {
                    guard case .integer(let limit) = field else {
                        throw SettingError("expected an integer", value: field)
                    }
                    limits[key] = limit
                }
                routed.limits = limits
            },
            parseFlag: { _ throws(SettingError) in throw SettingError("not a flag") },
            render: { .table($0.limits.mapValues { .integer($0) }) }),
    ])

    func read(_ text: String) throws -> Routed {
        var routed = Routed()
        try Self.table.read(ConfigFile.values(of: try TOMLTable(string: text), key: ""), into: &routed)
        return routed
    }

    @Test func arraysOfTablesReadAndRenderBack() throws {
        let routed = try read(
            """
            [[route]]
            match = "ssh"
            upstream = "127.0.0.1:22"

            [[route]]
            match = "tls \\"sni\\""
            upstream = "[::1]:443"

            [limits]
            ssh = 3
            "odd key" = 4
            """)
        #expect(
            routed.routes == [
                Route(match: "ssh", upstream: "127.0.0.1:22"), Route(match: "tls \"sni\"", upstream: "[::1]:443"),
            ])
        #expect(routed.limits == ["ssh": 3, "odd key": 4])
        let rendered = Self.table.tomlLines(routed).joined(separator: "\n")
        #expect(try read(rendered) == routed)
    }

    @Test func aBadEntryIsNamedWithTheKey() {
        #expect {
            _ = try read("[[route]]\nmatch = \"ssh\"\n")
        } throws: {
            "\($0)" == "route = { match = \"ssh\" }: expected a table with match and upstream"
        }
    }
}
