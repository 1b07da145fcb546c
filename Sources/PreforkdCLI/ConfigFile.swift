import CPreforkShims
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
    ///
    /// `isolated` parses it in a short-lived child process and takes the values back over a
    /// pipe: TOMLKit 0.6.0 never frees what its C++ side hands out (LebJe/TOMLKit#26), and the
    /// running supervisor, which parses the file again on every reload, must not grow by it.
    /// The child `_exit`s and its leak goes with it. The result, and any error, is the same as
    /// in-process.
    package static func apply(path: String, to settings: inout Settings, isolated: Bool = false)
        throws(ConfigurationError)
    {
        let values = isolated ? try parseIsolated(path: path) : try parse(text: try read(path), source: path)
        try apply(values, source: path, to: &settings)
    }

    /// Applies TOML `text` (from `source`, for messages) onto `settings`.
    package static func apply(text: String, source: String, to settings: inout Settings) throws(ConfigurationError) {
        try apply(try parse(text: text, source: source), source: source, to: &settings)
    }

    static func apply(_ values: [String: SettingValue], source: String, to settings: inout Settings)
        throws(ConfigurationError)
    {
        do {
            try settings.read(file: values)
        } catch {
            throw ConfigurationError(source: source, key: error.key, value: error.value, reason: error.reason)
        }
    }

    /// TOML `text` (from `source`, for messages) as plain values: what TOMLKit is needed for.
    static func parse(text: String, source: String) throws(ConfigurationError) -> [String: SettingValue] {
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
            return try values(of: table, key: "")
        } catch {
            throw ConfigurationError(source: source, key: error.key, value: error.value, reason: error.reason)
        }
    }

    /// Reads and parses the file at `path` in a child process, which writes a ``SettingWire``
    /// reply to a pipe and `_exit`s; the child is reaped here before returning, so the
    /// supervisor's `waitpid(-1)` loop, which runs only between turns, never meets it.
    ///
    /// Forking is safe only in a single-threaded process, as the supervisor is (it checks the
    /// same before forking a worker); in any other, or when the fork itself fails, the file is
    /// parsed in-process.
    static func parseIsolated(path: String) throws(ConfigurationError) -> [String: SettingValue] {
        guard pf_thread_count() == 1 else { return try parse(text: try read(path), source: path) }
        return try parseInChild(path: path)
    }

    /// ``parseIsolated(path:)`` without the thread check: tests call it from their threaded
    /// runner, where the child only reads, parses and writes.
    static func parseInChild(path: String) throws(ConfigurationError) -> [String: SettingValue] {
        func failed(_ what: String) -> ConfigurationError {
            ConfigurationError(source: path, key: "(file)", value: path, reason: "the parse process \(what)")
        }
        var ends: [Int32] = [-1, -1]
        guard pf_pipe2(&ends, O_CLOEXEC) == 0 else {
            return try parse(text: try read(path), source: path)
        }
        let child = fork()
        if child < 0 {
            close(ends[0])
            close(ends[1])
            return try parse(text: try read(path), source: path)
        }
        if child == 0 {
            close(ends[0])
            let reply: [UInt8]
            do {
                reply = SettingWire.encode(try parse(text: try read(path), source: path))
            } catch {
                reply = SettingWire.encode(error)
            }
            _exit(writeAll(reply, to: ends[1]) ? 0 : 1)
        }
        close(ends[1])
        // The reply is small; a buffer on the stack leaves no 64 KiB hole in the supervisor's heap
        // for its small allocations to split (which would grow it by a block once more).
        var bytes: [UInt8] = []
        var readError: Errno?
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { chunk in
            while true {
                switch valueOrErrno({ Glibc.read(ends[0], chunk.baseAddress, chunk.count) }) {
                case .success(0): return
                case .success(let count): bytes.append(contentsOf: chunk[..<count])
                case .failure(let error):
                    readError = error
                    return
                }
            }
        }
        close(ends[0])
        var status: Int32 = 0
        if case .failure(let error) = valueOrErrno({ waitpid(child, &status, 0) }) {
            throw failed("could not be waited for: \(error.text)")
        }
        if let readError { throw failed("could not be read from: \(readError.text)") }
        let signal = status & 0x7f
        if signal != 0 { throw failed("was killed by signal \(signal)") }
        let code = (status >> 8) & 0xff
        if code != 0 { throw failed("ended with exit status \(code)") }
        switch SettingWire.decode(bytes) {
        case .values(let values)?: return values
        case .error(let error)?: throw error
        case nil: throw failed("gave a reply cut short or malformed (\(bytes.count) bytes)")
        }
    }

    /// Writes all of `bytes` to `fd`; false if it could not.
    private static func writeAll(_ bytes: [UInt8], to fd: Int32) -> Bool {
        var written = 0
        while written < bytes.count {
            let result = valueOrErrno({
                bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            })
            guard case .success(let count) = result, count > 0 else { return false }
            written += count
        }
        return true
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
