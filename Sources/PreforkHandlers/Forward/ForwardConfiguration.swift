import ForwardProtocols
import Prefork

extension ForwardHandler {
    /// The forward handler's settings: the `[forward]` table, its `[[forward.route]]` list, and
    /// the `--forward-…` flags for the scalars.
    public struct Configuration: Sendable, Equatable, HandlerConfiguration {
        /// `probe-timeout`: how long a client may take, from its first bytes, to send enough for
        /// the routes to decide.
        public var probeTimeout: Duration = .seconds(2)
        /// `connect-timeout`: how long a connection to one upstream address may take.
        public var connectTimeout: Duration = .seconds(3)
        /// `idle-timeout`: a relayed connection with no traffic either way for this long is closed.
        public var idleTimeout: Duration = .seconds(300)
        /// `probe-bytes`: the most bytes read from a client while deciding its route.
        public var probeBytes = 16384
        /// `relay`: how bytes move between client and upstream.
        package var relay = RelayMethod.splice
        /// `route`: the routes, tried in order; the first that matches wins.
        public var routes: [ForwardRoute] = []

        /// The defaults: no routes (a forward handler in use needs at least one).
        public init() {}

        /// Every option, said once.
        package static let settings = SettingsTable<Configuration>([
            .seconds(
                "probe-timeout", \.probeTimeout, in: .milliseconds(1)...(.seconds(3600)),
                help: "Forward: seconds a client may take to send enough bytes for the routes to decide."),
            .seconds(
                "connect-timeout", \.connectTimeout, in: .milliseconds(1)...(.seconds(3600)),
                help: "Forward: seconds a connection to one upstream address may take."),
            .seconds(
                "idle-timeout", \.idleTimeout, in: .seconds(1)...(.seconds(30 * 86400)),
                help: "Forward: seconds a relayed connection may pass with no traffic either way."),
            .integer(
                "probe-bytes", \.probeBytes, in: 64...(1 << 20),
                help: "Forward: most bytes read from a client while deciding its route.", valueName: "bytes"),
            .choice(
                "relay", \.relay, help: "Forward: splice | copy (splice(2) through pipes, or read/write).",
                valueName: "method"),
            routeSetting,
        ])

        /// `[[forward.route]]`: config file only.
        private static let routeSetting = Setting<Configuration>(
            key: "route", help: "Forward: the routes, tried in order ([[forward.route]] tables).", flag: .none,
            read: { value, configuration throws(SettingError) in
                guard case .array(let tables) = value else {
                    throw SettingError("expected [[forward.route]] tables, got \(value.kindDescription)")
                }
                var routes: [ForwardRoute] = []
                for (index, table) in tables.enumerated() {
                    routes.append(try ForwardRoute.read(table, index: index))
                }
                // Checked here too, so that the error names the file the routes came from.
                try checkRoutes(routes)
                configuration.routes = routes
            },
            parseFlag: { _ throws(SettingError) in throw SettingError("routes are set in the config file") },
            render: { .array($0.routes.map(\.settingValue)) },
            check: { configuration throws(SettingError) in try checkRoutes(configuration.routes) })

        /// Routes that can all be reached, with distinct names.
        private static func checkRoutes(_ routes: [ForwardRoute]) throws(SettingError) {
            var names: Set<String> = []
            for (index, route) in routes.enumerated() {
                guard names.insert(route.name).inserted else {
                    throw SettingError(
                        "route \"\(route.name)\": the name is used by an earlier route", value: .string(route.name),
                        subkey: "[\(index)].name")
                }
                if let catchAll = routes[..<index].first(where: \.isCatchAll) {
                    throw SettingError(
                        "route \"\(route.name)\" comes after the catch-all route \"\(catchAll.name)\" and can never match",
                        value: .string(route.name), subkey: "[\(index)].name")
                }
            }
        }

        /// A forward handler that is used needs a route.
        package func checkInUse() throws(SettingError) {
            guard !routes.isEmpty else {
                throw SettingError(
                    "the forward handler needs at least one [[forward.route]]", value: .array([]), subkey: ".route")
            }
        }
    }
}
