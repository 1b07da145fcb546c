import Logging
import Prefork
import PreforkHandlers

/// Everything `preforkd` can be told, from defaults, the config file and the command line, in
/// that order of precedence (the command line wins, inside `[listeners.NAME]` tables too).
package struct Settings: Equatable, Sendable {
    /// Where log lines go and how they look.
    package enum LogFormat: String, Sendable, CaseIterable {
        /// Text when stderr is a terminal or a file; journald fields when stderr is journald's stream.
        case auto
        case text, json, journal
    }

    /// The engine's settings.
    package var server = ServerConfiguration()
    /// `handler`: a registered handler's name.
    package var handler = HandlerRegistry.all[0].name
    /// `[NAME]`: each registered handler's options, by handler name.
    package var handlerOptions = Settings.defaultHandlerOptions
    /// `log-level`.
    package var logLevel = Logger.Level.info
    /// `log-format`.
    package var logFormat = LogFormat.auto
    /// `[listeners.NAME]`: a handler and its options for the listener called NAME (systemd's
    /// `FileDescriptorName=`, or the address as written in `listen`). Its `accept-proxy` and
    /// `accept-proxy-from` go to the engine's `server.listenerProxyProtocol`.
    package var listeners: [String: ListenerSettings] = [:]

    /// What one named listener does differently.
    package struct ListenerSettings: Equatable, Sendable {
        /// `handler`.
        package var handler: String
        /// `[listeners.NAME.HANDLER]`: options by handler name; they start as the top-level
        /// `[HANDLER]` tables'.
        package var handlerOptions: [String: HandlerOptions]
    }

    /// The defaults.
    package init() {}

    /// Every registered handler's default options.
    package static var defaultHandlerOptions: [String: HandlerOptions] {
        Dictionary(uniqueKeysWithValues: HandlerRegistry.all.map { ($0.name, $0.defaults) })
    }

    /// The top-level settings, said once: the engine's, then preforkd's own. (Each handler's
    /// options are in its own table, see ``HandlerRegistry``.)
    package static let table: SettingsTable<Settings> = {
        var settings = ServerConfiguration.settings.lifted(\Settings.server)
        let handler = Setting<Settings>(
            key: "handler", help: "Handler: \(HandlerRegistry.names.joined(separator: " | ")).",
            flag: .value(name: "name"),
            read: { value, settings throws(SettingError) in settings.handler = try handlerName(value) },
            parseFlag: { .string($0) }, render: { .string($0.handler) })
        // Listed after the workers, as in the README's table.
        settings.insert(handler, at: min(2, settings.count))
        settings += [
            .choice(
                "log-level", \.logLevel, help: "trace | debug | info | notice | warning | error | critical.",
                valueName: "level"),
            .choice(
                "log-format", \.logFormat,
                help: "auto | text | json | journal (auto: journal when stderr is journald's stream).",
                valueName: "format"),
        ]
        return SettingsTable(settings)
    }()

    /// A registered handler's name, or why `value` is not one.
    static func handlerName(_ value: SettingValue) throws(SettingError) -> String {
        guard case .string(let name) = value else {
            throw SettingError("expected a string, got \(value.kindDescription)")
        }
        guard HandlerRegistry.handler(named: name) != nil else {
            throw SettingError("expected one of \(HandlerRegistry.names.joined(separator: ", "))")
        }
        return name
    }

    /// Checks every value; the error names the key (`workers`, `echo.idle-timeout`,
    /// `listeners.admin.echo.idle-timeout`).
    package func validate() throws(ConfigurationError) {
        try Self.table.validate(self)
        for registered in HandlerRegistry.all {
            try registered.settings.validate(handlerOptions[registered.name]!, prefix: registered.name + ".")
        }
        for name in listeners.keys.sorted() {
            for registered in HandlerRegistry.all {
                try registered.settings.validate(
                    listeners[name]!.handlerOptions[registered.name]!,
                    prefix: "listeners.\(name).\(registered.name).")
            }
        }
        // The handlers that serve something: the default one, and each listener's own.
        try HandlerRegistry.handler(named: handler)!.checkInUse(handlerOptions[handler]!)
        for name in listeners.keys.sorted() {
            let listener = listeners[name]!
            try HandlerRegistry.handler(named: listener.handler)!.checkInUse(
                listener.handlerOptions[listener.handler]!, prefix: "listeners.\(name).")
        }
    }

    /// The engine setup these settings describe; its log level is ``logLevel``.
    package func makeSetup() -> ServerSetup {
        func make(_ name: String, _ options: [String: HandlerOptions]) -> any ConnectionHandler {
            HandlerRegistry.handler(named: name)!.makeHandler(options[name]!)
        }
        let fallback = make(handler, handlerOptions)
        let routed: any ConnectionHandler =
            listeners.isEmpty
            ? fallback
            : ListenerRouter(fallback: fallback, routes: listeners.mapValues { make($0.handler, $0.handlerOptions) })
        return ServerSetup(configuration: server, handler: routed, logLevel: logLevel)
    }

    // MARK: - the config file

    /// Applies a config file's top-level table: keys of ``table``, a `[NAME]` table per
    /// registered handler, and `[listeners.NAME]` tables. Throws for the first unknown key or
    /// value of the wrong type (without the file's name: the caller adds it).
    package mutating func read(file: [String: SettingValue]) throws(ConfigurationError) {
        // Top-level keys first: a [listeners.NAME] table starts from the file's own defaults.
        for key in file.keys.sorted() where key != "listeners" {
            let value = file[key]!
            if let registered = HandlerRegistry.handler(named: key) {
                try Self.readOptions(of: registered, value, key: key, into: &handlerOptions)
            } else {
                try Self.table.read([key: value], into: &self)
            }
        }
        guard let listenerTables = file["listeners"] else { return }
        guard case .table(let tables) = listenerTables else {
            throw ConfigurationError(
                key: "listeners", value: listenerTables.toml, reason: "expected tables [listeners.NAME]")
        }
        for name in tables.keys.sorted() {
            let prefix = "listeners.\(name)"
            guard case .table(let entries) = tables[name]! else {
                throw ConfigurationError(key: prefix, value: tables[name]!.toml, reason: "expected a table [\(prefix)]")
            }
            var listener =
                listeners[name] ?? ListenerSettings(handler: handler, handlerOptions: handlerOptions)
            for key in entries.keys.sorted() {
                let value = entries[key]!
                if key == "handler" {
                    do {
                        listener.handler = try Self.handlerName(value)
                    } catch {
                        throw ConfigurationError(key: prefix + ".handler", value: value.toml, reason: error.reason)
                    }
                } else if ProxyProtocolPolicy.settings[key] != nil {
                    // Starts from the top level's policy: a table may set just one of the two keys.
                    var policy = server.proxyProtocol(forListenerNamed: name)
                    try ProxyProtocolPolicy.settings.read([key: value], into: &policy, prefix: prefix + ".")
                    server.listenerProxyProtocol[name] = policy
                } else if let registered = HandlerRegistry.handler(named: key) {
                    try Self.readOptions(
                        of: registered, value, key: prefix + "." + key, into: &listener.handlerOptions)
                } else {
                    throw ConfigurationError(key: prefix + "." + key, value: value.toml, reason: "unknown key")
                }
            }
            listeners[name] = listener
        }
    }

    private static func readOptions(
        of registered: RegisteredHandler, _ value: SettingValue, key: String,
        into options: inout [String: HandlerOptions]
    ) throws(ConfigurationError) {
        guard case .table(let table) = value else {
            throw ConfigurationError(key: key, value: value.toml, reason: "expected a table [\(key)]")
        }
        try registered.settings.read(table, into: &options[registered.name]!, prefix: key + ".")
    }

    /// The effective settings as a config file (what `--check-config` prints); reading it back
    /// gives these settings.
    package func renderTOML() -> String {
        var lines = Self.table.tomlLines(self)
        for registered in HandlerRegistry.all {
            lines += ["", "[\(SettingValue.tomlKey(registered.name))]"]
            lines += registered.settings.tomlLines(handlerOptions[registered.name]!)
        }
        for name in listeners.keys.sorted() {
            let listener = listeners[name]!
            let table = "listeners.\(SettingValue.tomlKey(name))"
            lines += ["", "[\(table)]", "handler = \(SettingValue.string(listener.handler).toml)"]
            if let policy = server.listenerProxyProtocol[name] {
                lines += ProxyProtocolPolicy.settings.tomlLines(policy)
            }
            for registered in HandlerRegistry.all {
                lines += ["", "[\(table).\(SettingValue.tomlKey(registered.name))]"]
                lines += registered.settings.tomlLines(listener.handlerOptions[registered.name]!)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
