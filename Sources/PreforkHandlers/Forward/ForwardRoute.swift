import ForwardProtocols
import Prefork

/// One `[[forward.route]]` table: what a connection's first bytes must look like, where such a
/// connection goes, and whether the upstream is told the client's address.
public struct ForwardRoute: Sendable, Equatable {
    /// `name`: how logs, `ROUTE=` and the status counters call the route.
    public var name: String
    /// `protocol` (with `sni`, `alpn`, `host`), `prefix` or `regex`; none of them: any connection.
    public var condition: RouteCondition
    /// `upstream`: the addresses to connect to, tried in order (`HOST:PORT`, `[IPv6]:PORT`,
    /// `unix:/path`).
    public var upstreams: [ListenAddress]
    /// `send-proxy`: the PROXY protocol header written to the upstream before the client's bytes.
    public var sendProxy: ProxyProtocolVersion?

    /// A route; see the properties for each part.
    public init(
        name: String, condition: RouteCondition = .catchAll, upstreams: [ListenAddress],
        sendProxy: ProxyProtocolVersion? = nil
    ) {
        self.name = name
        self.condition = condition
        self.upstreams = upstreams
        self.sendProxy = sendProxy
    }

    /// Whether the route takes every connection (no match key).
    public var isCatchAll: Bool { condition == .catchAll }
}

// MARK: - the config file's form

extension ForwardRoute {
    /// The keys a route table may hold.
    static let keys: Set<String> = [
        "name", "protocol", "sni", "alpn", "host", "prefix", "regex", "upstream", "send-proxy",
    ]

    /// Reads the `index`th route table (from 0). Errors name the key within the route
    /// (`[2].upstream`) and the route's name when it has one.
    static func read(_ value: SettingValue, index: Int) throws(SettingError) -> ForwardRoute {
        guard case .table(let table) = value else {
            throw SettingError(
                "expected a table [[forward.route]], got \(value.kindDescription)", value: value, subkey: "[\(index)]")
        }
        let name: String
        switch table["name"] {
        case nil: name = "route-\(index + 1)"
        case .string(let text) where !text.isEmpty: name = text
        case let other?:
            throw SettingError("expected a non-empty string", value: other, subkey: "[\(index)].name")
        }
        func fail(_ key: String, _ reason: String, _ value: SettingValue?) -> SettingError {
            SettingError("route \"\(name)\": \(reason)", value: value, subkey: "[\(index)].\(key)")
        }
        if let unknown = table.keys.sorted().first(where: { !keys.contains($0) }) {
            throw fail(unknown, "unknown key (a route takes \(keys.sorted().joined(separator: ", ")))", table[unknown])
        }
        let condition = try readCondition(table, fail: fail)
        guard case .array(let list)? = table["upstream"] else {
            throw fail("upstream", "expected a list of addresses", table["upstream"] ?? .array([]))
        }
        guard !list.isEmpty else { throw fail("upstream", "needs at least one address", .array([])) }
        var upstreams: [ListenAddress] = []
        for item in list {
            guard case .string(let text) = item else { throw fail("upstream", "expected a string", item) }
            let address: ListenAddress
            do {
                address = try ListenAddress(parsing: text)
            } catch {
                // The listen form's message offers *:PORT, which an upstream cannot be.
                let reason =
                    error.reason.hasPrefix("expected HOST:PORT")
                    ? "expected HOST:PORT, [IPv6]:PORT or unix:/path" : error.reason
                throw fail("upstream", reason, item)
            }
            if case .any = address { throw fail("upstream", "an upstream needs an address, not *", item) }
            upstreams.append(address)
        }
        var sendProxy: ProxyProtocolVersion?
        switch table["send-proxy"] {
        case nil, .string("none")?: sendProxy = nil
        case .string("v1")?: sendProxy = .v1
        case .string("v2")?: sendProxy = .v2
        case let other?: throw fail("send-proxy", "expected \"v1\", \"v2\" or \"none\"", other)
        }
        return ForwardRoute(name: name, condition: condition, upstreams: upstreams, sendProxy: sendProxy)
    }

    /// The condition from `protocol` (with its lists), `prefix` or `regex` — at most one of them.
    private static func readCondition(
        _ table: [String: SettingValue], fail: (String, String, SettingValue?) -> SettingError
    ) throws(SettingError) -> RouteCondition {
        let keys = ["protocol", "prefix", "regex"].filter { table[$0] != nil }
        if keys.count > 1 {
            throw fail(
                keys[1], "a route matches by one of protocol, prefix or regex, not \(keys.joined(separator: " and "))",
                table[keys[1]])
        }
        let kind: String?
        switch table["protocol"] {
        case nil: kind = nil
        case .string(let name)?: kind = name
        case let other?: throw fail("protocol", "expected a string", other)
        }
        for (key, owner) in [("sni", "tls"), ("alpn", "tls"), ("host", "http")] where table[key] != nil && kind != owner
        {
            throw fail(key, "only a protocol = \"\(owner)\" route takes \(key)", table[key])
        }
        if let prefix = table["prefix"] { return .prefix(try readPrefix(prefix, fail: fail)) }
        if let regex = table["regex"] {
            guard case .string(let source) = regex, !source.isEmpty else {
                throw fail("regex", "expected a non-empty string", regex)
            }
            do {
                return .regex(try RoutePattern(source))
            } catch {
                throw fail("regex", "invalid regular expression: \(error)", regex)
            }
        }
        switch kind {
        case nil: return .catchAll
        case "ssh": return .ssh
        case "timeout": return .timeout
        case "tls":
            return .tls(
                serverNames: try readNames("sni", table, fail: fail),
                alpn: try readStrings("alpn", table, fail: fail))
        case "http": return .http(hosts: try readNames("host", table, fail: fail))
        case let other?:
            throw fail("protocol", "expected one of ssh, tls, http, timeout", .string(other))
        }
    }

    /// `prefix`: a string (its UTF-8 bytes; TOML escapes such as `"\u0016"` for control bytes) or
    /// a list of byte values (`[0x16, 0x03]`) for bytes a TOML string cannot spell alone.
    private static func readPrefix(
        _ value: SettingValue, fail: (String, String, SettingValue?) -> SettingError
    ) throws(SettingError) -> [UInt8] {
        switch value {
        case .string(let text) where !text.isEmpty:
            return Array(text.utf8)
        case .array(let items) where !items.isEmpty:
            var bytes: [UInt8] = []
            for item in items {
                guard case .integer(let number) = item, (0...255).contains(number) else {
                    throw fail("prefix", "expected byte values from 0 to 255", item)
                }
                bytes.append(UInt8(number))
            }
            return bytes
        default:
            throw fail("prefix", "expected a non-empty string or list of byte values", value)
        }
    }

    private static func readStrings(
        _ key: String, _ table: [String: SettingValue], fail: (String, String, SettingValue?) -> SettingError
    ) throws(SettingError) -> [String] {
        guard let value = table[key] else { return [] }
        guard case .array(let items) = value else { throw fail(key, "expected a list of strings", value) }
        var strings: [String] = []
        for item in items {
            guard case .string(let text) = item, !text.isEmpty else {
                throw fail(key, "expected a non-empty string", item)
            }
            strings.append(text)
        }
        return strings
    }

    private static func readNames(
        _ key: String, _ table: [String: SettingValue], fail: (String, String, SettingValue?) -> SettingError
    ) throws(SettingError) -> [ServerNamePattern] {
        var patterns: [ServerNamePattern] = []
        for text in try readStrings(key, table, fail: fail) {
            guard let pattern = ServerNamePattern(text) else {
                throw fail(key, "expected a host name or *.domain", .string(text))
            }
            patterns.append(pattern)
        }
        return patterns
    }

    /// The route as a table the reader above takes back.
    var settingValue: SettingValue {
        var table: [String: SettingValue] = [
            "name": .string(name), "upstream": .array(upstreams.map { .string($0.description) }),
        ]
        func strings(_ list: [some CustomStringConvertible]) -> SettingValue { .array(list.map { .string("\($0)") }) }
        switch condition {
        case .catchAll: break
        case .ssh: table["protocol"] = .string("ssh")
        case .timeout: table["protocol"] = .string("timeout")
        case .tls(let serverNames, let alpn):
            table["protocol"] = .string("tls")
            if !serverNames.isEmpty { table["sni"] = strings(serverNames) }
            if !alpn.isEmpty { table["alpn"] = strings(alpn) }
        case .http(let hosts):
            table["protocol"] = .string("http")
            if !hosts.isEmpty { table["host"] = strings(hosts) }
        case .prefix(let bytes):
            // Text when the bytes are UTF-8 (TOML escapes control characters); byte values otherwise.
            if let text = String(validating: bytes, as: UTF8.self) {
                table["prefix"] = .string(text)
            } else {
                table["prefix"] = .array(bytes.map { .integer(Int($0)) })
            }
        case .regex(let pattern): table["regex"] = .string(pattern.source)
        }
        switch sendProxy {
        case nil: break
        case .v1: table["send-proxy"] = .string("v1")
        case .v2: table["send-proxy"] = .string("v2")
        }
        return .table(table)
    }
}
