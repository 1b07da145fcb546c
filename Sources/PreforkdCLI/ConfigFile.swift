import Glibc
import SystemPackage
import Logging
import Prefork
import TOMLKit

/// Reads a TOML config file onto ``Settings``.
///
/// Keys are the long flag names without dashes in front: `workers = 4`, `listen = ["127.0.0.1:11000"]`;
/// each handler's keys sit in a table named after it (`[echo]`). An unknown key, a wrong type or
/// a value out of range is one ``ConfigurationError`` naming the file, the key and the value.
package enum ConfigFile {
    /// Applies the file at `path` onto `settings`.
    package static func apply(path: String, to settings: inout Settings) throws(ConfigurationError) {
        let text = try read(path)
        try apply(text: text, source: path, to: &settings)
    }

    /// Applies TOML `text` (from `source`, for messages) onto `settings`.
    package static func apply(text: String, source: String, to settings: inout Settings) throws(ConfigurationError) {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(
                source: source, key: "(syntax)", value: "line \(error.source.begin.line)", reason: error.description)
        } catch {
            throw ConfigurationError(source: source, key: "(syntax)", value: "?", reason: "\(error)")
        }
        do {
            try settings.read(file: try values(of: table, key: ""))
        } catch {
            throw ConfigurationError(source: source, key: error.key, value: error.value, reason: error.reason)
        }
    }

    /// The file's table as plain values; dates and times, which no setting takes, are refused
    /// here, naming their key.
    static func values(of table: TOMLTable, key prefix: String) throws(ConfigurationError) -> [String: SettingValue] {
        var values: [String: SettingValue] = [:]
        for (key, value) in table {
            values[key] = try self.value(value, key: prefix.isEmpty ? key : prefix + "." + key)
        }
        return values
    }

    private static func value(_ value: any TOMLValueConvertible, key: String) throws(ConfigurationError) -> SettingValue
    {
        switch value.type {
        case .bool: return .boolean(value.bool ?? false)
        case .int: return .integer(value.int ?? 0)
        case .double:
            guard let number = value.double, number.isFinite else {
                throw ConfigurationError(key: key, value: value.debugDescription, reason: "expected a finite number")
            }
            return .number(number)
        case .string: return .string(value.string ?? "")
        case .array:
            var elements: [SettingValue] = []
            for element in value.array ?? [] { elements.append(try self.value(element, key: key)) }
            return .array(elements)
        case .table: return .table(try values(of: value.table ?? TOMLTable(), key: key))
        default:
            throw ConfigurationError(
                key: key, value: value.debugDescription, reason: "dates and times are not taken by any setting")
        }
    }

    private static func read(_ path: String) throws(ConfigurationError) -> String {
        func unreadable(_ error: Errno) -> ConfigurationError {
            ConfigurationError(source: path, key: "(file)", value: path, reason: "cannot be read: \(error.text)")
        }
        let fd: Int32
        switch valueOrErrno({ open(path, O_RDONLY | O_CLOEXEC) }) {
        case .success(let opened): fd = opened
        case .failure(let error): throw unreadable(error)
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n: Int
            switch valueOrErrno({ chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) } }) {
            case .success(let count): n = count
            case .failure(let error): throw unreadable(error)
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
}
