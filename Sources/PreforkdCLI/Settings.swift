import Logging
import Prefork
import PreforkHandlers

/// Everything `preforkd` can be told, from defaults, the config file and the command line, in
/// that order of precedence (the command line wins).
public struct Settings: Equatable, Sendable {
    /// The built-in handlers.
    public enum HandlerName: String, Sendable, CaseIterable {
        case echo
    }

    /// Where log lines go and how they look.
    public enum LogFormat: String, Sendable, CaseIterable {
        /// Text when stderr is a terminal or a file; journald fields when stderr is journald's stream.
        case auto
        case text, json, journal
    }

    /// The engine's settings.
    public var server = ServerConfiguration()
    /// `handler`.
    public var handler = HandlerName.echo
    /// `[echo]`.
    public var echo = EchoHandler.Configuration()
    /// `log-level`.
    public var logLevel = Logger.Level.info
    /// `log-format`.
    public var logFormat = LogFormat.auto
    /// `[listeners.NAME]`: a handler and its options for the listener called NAME (systemd's
    /// `FileDescriptorName=`, or the address as written in `listen`).
    public var listeners: [String: ListenerSettings] = [:]

    /// What one named listener does differently.
    public struct ListenerSettings: Equatable, Sendable {
        /// `handler`.
        public var handler: HandlerName
        /// `[listeners.NAME.echo]`.
        public var echo: EchoHandler.Configuration
    }

    /// The defaults.
    public init() {}

    /// Checks every value; the error names the key.
    public func validate() throws(ConfigurationError) {
        try server.validate()
        try echo.validate()
        for (name, listener) in listeners {
            do {
                try listener.echo.validate()
            } catch {
                throw ConfigurationError(
                    key: "listeners.\(name).\(error.key)", value: error.value, reason: error.reason)
            }
        }
    }

    /// The engine setup these settings describe.
    public func makeSetup() -> ServerSetup {
        let fallback = Self.makeHandler(handler, echo: echo)
        guard !listeners.isEmpty else { return ServerSetup(configuration: server, handler: fallback) }
        let routes = listeners.mapValues { Self.makeHandler($0.handler, echo: $0.echo) }
        return ServerSetup(configuration: server, handler: ListenerRouter(fallback: fallback, routes: routes))
    }

    private static func makeHandler(_ name: HandlerName, echo: EchoHandler.Configuration) -> any ConnectionHandler {
        switch name {
        case .echo: EchoHandler(configuration: echo)
        }
    }

    /// The effective settings as a config file (what `--check-config` prints).
    public func renderTOML() -> String {
        func quoted(_ text: String) -> String { TextLogHandler.jsonString(text) }
        var lines: [String] = []
        lines.append("listen = [\(server.listen.map { quoted($0.description) }.joined(separator: ", "))]")
        lines.append("workers = \(server.workers)")
        lines.append("handler = \(quoted(handler.rawValue))")
        lines.append("initial-bytes = \(server.initialBytes)")
        lines.append("initial-timeout = \(server.initialTimeout)")
        lines.append("send-timeout = \(server.sendTimeout)")
        lines.append("graceful-timeout = \(server.gracefulTimeout)")
        lines.append("backlog = \(server.backlog)")
        lines.append("unix-mode = \(quoted("0" + String(server.unixMode, radix: 8)))")
        lines.append("fd-store = \(server.fileDescriptorStore)")
        lines.append("log-level = \(quoted(logLevel.rawValue))")
        lines.append("log-format = \(quoted(logFormat.rawValue))")
        lines.append("")
        lines.append("[echo]")
        lines.append("keep-alive = \(echo.keepAlive)")
        lines.append("idle-timeout = \(echo.idleTimeout)")
        lines.append("max-message-bytes = \(echo.maxMessageBytes)")
        lines.append("message-timeout = \(echo.messageTimeout)")
        for name in listeners.keys.sorted() {
            let listener = listeners[name]!
            lines.append("")
            lines.append("[listeners.\(quoted(name))]")
            lines.append("handler = \(quoted(listener.handler.rawValue))")
            lines.append("")
            lines.append("[listeners.\(quoted(name)).echo]")
            lines.append("keep-alive = \(listener.echo.keepAlive)")
            lines.append("idle-timeout = \(listener.echo.idleTimeout)")
            lines.append("max-message-bytes = \(listener.echo.maxMessageBytes)")
            lines.append("message-timeout = \(listener.echo.messageTimeout)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
