import Glibc
import Logging
import Prefork
import TOMLKit

/// Reads a TOML config file onto ``Settings``.
///
/// Keys are the long flag names without dashes in front: `workers = 4`, `listen = ["127.0.0.1:11000"]`;
/// the echo handler's keys sit in an `[echo]` table. An unknown key, a wrong type or a value out
/// of range is one ``ConfigurationError`` naming the file, the key and the value.
public enum ConfigFile {
    /// Applies the file at `path` onto `settings`.
    public static func apply(path: String, to settings: inout Settings) throws(ConfigurationError) {
        let text = try read(path)
        try apply(text: text, source: path, to: &settings)
    }

    /// Applies TOML `text` (from `source`, for messages) onto `settings`.
    public static func apply(text: String, source: String, to settings: inout Settings) throws(ConfigurationError) {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(
                source: source, key: "(syntax)", value: "line \(error.source.begin.line)", reason: error.description)
        } catch {
            throw ConfigurationError(source: source, key: "(syntax)", value: "?", reason: "\(error)")
        }
        var reader = Reader(source: source)
        // Top-level keys first: a [listeners.NAME] table starts from the file's own defaults.
        for (key, value) in table where key != "listeners" {
            try reader.applyTop(key, value, to: &settings)
        }
        if let listeners = table["listeners"] {
            try reader.applyListeners(listeners, to: &settings)
        }
    }

    private static func read(_ path: String) throws(ConfigurationError) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ConfigurationError(
                source: path, key: "(file)", value: path, reason: "cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw ConfigurationError(
                    source: path, key: "(file)", value: path,
                    reason: "cannot be read: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
            guard bytes.count <= 1 << 20 else {
                throw ConfigurationError(source: path, key: "(file)", value: path, reason: "is larger than 1 MiB")
            }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigurationError(source: path, key: "(file)", value: path, reason: "is not valid UTF-8")
        }
        return text
    }

    /// Typed access to TOML values with messages that name the key.
    private struct Reader {
        let source: String

        func fail(_ key: String, _ value: any TOMLValueConvertible, _ reason: String) -> ConfigurationError {
            ConfigurationError(source: source, key: key, value: render(value), reason: reason)
        }

        func render(_ value: any TOMLValueConvertible) -> String {
            switch value.type {
            case .string: return TextLogHandler.jsonString(value.string ?? "")
            case .array: return "[" + (value.array.map { $0.map(render).joined(separator: ", ") } ?? "") + "]"
            case .table: return "{…}"
            default: return value.debugDescription
            }
        }

        func integer(_ key: String, _ value: any TOMLValueConvertible) throws(ConfigurationError) -> Int {
            guard value.type == .int, let int = value.int else {
                throw fail(key, value, "expected an integer, got a \(value.type)")
            }
            return int
        }

        func seconds(_ key: String, _ value: any TOMLValueConvertible) throws(ConfigurationError) -> Double {
            if value.type == .int, let int = value.int { return Double(int) }
            if value.type == .double, let double = value.double, double.isFinite { return double }
            throw fail(key, value, "expected a number of seconds, got a \(value.type)")
        }

        func boolean(_ key: String, _ value: any TOMLValueConvertible) throws(ConfigurationError) -> Bool {
            guard value.type == .bool, let bool = value.bool else {
                throw fail(key, value, "expected true or false, got a \(value.type)")
            }
            return bool
        }

        func string(_ key: String, _ value: any TOMLValueConvertible) throws(ConfigurationError) -> String {
            guard value.type == .string, let string = value.string else {
                throw fail(key, value, "expected a string, got a \(value.type)")
            }
            return string
        }

        func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ value: any TOMLValueConvertible, _: T.Type)
            throws(ConfigurationError) -> T
        where T.RawValue == String {
            let text = try string(key, value)
            guard let choice = T(rawValue: text) else {
                throw fail(key, value, "expected one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return choice
        }

        mutating func applyTop(_ key: String, _ value: any TOMLValueConvertible, to settings: inout Settings)
            throws(ConfigurationError)
        {
            switch key {
            case "listen":
                let texts: [String]
                if value.type == .string, let text = value.string {
                    texts = [text]
                } else if value.type == .array, let array = value.array {
                    var collected: [String] = []
                    for element in array { collected.append(try string("listen", element)) }
                    texts = collected
                } else {
                    throw fail(key, value, "expected an address or a list of addresses")
                }
                var addresses: [ListenAddress] = []
                for text in texts {
                    do {
                        addresses.append(try ListenAddress(parsing: text))
                    } catch {
                        throw ConfigurationError(
                            source: source, key: key, value: TextLogHandler.jsonString(text), reason: error.reason)
                    }
                }
                settings.server.listen = addresses
            case "workers": settings.server.workers = try integer(key, value)
            case "initial-bytes": settings.server.initialBytes = try integer(key, value)
            case "initial-timeout": settings.server.initialTimeout = try seconds(key, value)
            case "send-timeout": settings.server.sendTimeout = try seconds(key, value)
            case "graceful-timeout": settings.server.gracefulTimeout = try seconds(key, value)
            case "backlog": settings.server.backlog = try integer(key, value)
            case "unix-mode":
                let text = try string(key, value)
                guard let mode = UInt32(text, radix: 8), mode <= 0o777 else {
                    throw fail(key, value, "expected an octal mode such as \"0660\"")
                }
                settings.server.unixMode = mode
            case "fd-store": settings.server.fileDescriptorStore = try boolean(key, value)
            case "handler": settings.handler = try choice(key, value, Settings.HandlerName.self)
            case "log-level": settings.logLevel = try choice(key, value, Logger.Level.self)
            case "log-format": settings.logFormat = try choice(key, value, Settings.LogFormat.self)
            case "echo":
                guard value.type == .table, let table = value.table else {
                    throw fail(key, value, "expected a table [echo]")
                }
                for (echoKey, echoValue) in table {
                    try applyEcho("echo." + echoKey, echoValue, to: &settings.echo)
                }
            default:
                throw fail(key, value, "unknown key")
            }
        }

        func applyListeners(_ value: any TOMLValueConvertible, to settings: inout Settings) throws(ConfigurationError) {
            guard value.type == .table, let table = value.table else {
                throw fail("listeners", value, "expected tables [listeners.NAME]")
            }
            for (name, entry) in table {
                let prefix = "listeners.\(name)"
                guard entry.type == .table, let entryTable = entry.table else {
                    throw fail(prefix, entry, "expected a table [\(prefix)]")
                }
                var listener =
                    settings.listeners[name]
                    ?? Settings.ListenerSettings(handler: settings.handler, echo: settings.echo)
                for (key, item) in entryTable {
                    switch key {
                    case "handler":
                        listener.handler = try choice(prefix + ".handler", item, Settings.HandlerName.self)
                    case "echo":
                        guard item.type == .table, let echoTable = item.table else {
                            throw fail(prefix + ".echo", item, "expected a table [\(prefix).echo]")
                        }
                        for (echoKey, echoValue) in echoTable {
                            do {
                                try applyEcho("echo." + echoKey, echoValue, to: &listener.echo)
                            } catch {
                                throw ConfigurationError(
                                    source: source, key: prefix + "." + error.key, value: error.value,
                                    reason: error.reason)
                            }
                        }
                    default:
                        throw fail(prefix + "." + key, item, "unknown key")
                    }
                }
                settings.listeners[name] = listener
            }
        }

        func applyEcho(_ key: String, _ value: any TOMLValueConvertible, to echo: inout EchoConfiguration)
            throws(ConfigurationError)
        {
            switch key {
            case "echo.keep-alive": echo.keepAlive = try boolean(key, value)
            case "echo.idle-timeout": echo.idleTimeout = try seconds(key, value)
            case "echo.max-message-bytes": echo.maxMessageBytes = try integer(key, value)
            case "echo.message-timeout": echo.messageTimeout = try seconds(key, value)
            default: throw fail(key, value, "unknown key")
            }
        }
    }
}

import PreforkHandlers
typealias EchoConfiguration = EchoHandler.Configuration
