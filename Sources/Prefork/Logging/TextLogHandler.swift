import Glibc
import Logging

/// A swift-log handler writing one text line per entry to stderr:
///
///     2026-11-24T22:10:00.123Z info [4711] supervisor: Listening on 127.0.0.1:11000 listener=web
///
/// Each line is one `write(2)`, so lines from concurrent workers never interleave, and a line
/// is dropped rather than block the process when nobody reads the log (see ``LogLineWriter``).
/// No Foundation, no locale: the timestamp is formatted by hand (UTC).
public struct TextLogHandler: LogHandler {
    /// Log lines as text, or one JSON object per line.
    public enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let format: Format
    private let fileDescriptor: Int32

    /// Creates a handler writing to `fileDescriptor` (stderr by default).
    public init(
        level: Logger.Level = .info, format: Format = .text, fileDescriptor: Int32 = 2,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.logLevel = level
        self.format = format
        self.fileDescriptor = fileDescriptor
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let line: String
        switch format {
        case .text: line = textLine(event.level, event.message.description, merged)
        case .json: line = jsonLine(event.level, event.message.description, merged)
        }
        LogLineWriter.write(line, to: fileDescriptor)
    }

    private func textLine(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) -> String {
        var line = "\(Self.timestamp()) \(level) [\(ProcessRole.pid)] \(ProcessRole.current): \(message)"
        for key in metadata.keys.sorted() {
            line += " \(key)=\(metadata[key]!)"
        }
        return line
    }

    private func jsonLine(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) -> String {
        var line = "{\"time\":\"\(Self.timestamp())\",\"level\":\"\(level)\",\"pid\":\(ProcessRole.pid)"
        line += ",\"role\":\(Self.jsonString(ProcessRole.current.description)),\"message\":\(Self.jsonString(message))"
        for key in metadata.keys.sorted() {
            line += ",\(Self.jsonString(key)):\(Self.jsonString(metadata[key]!.description))"
        }
        return line + "}"
    }

    /// `2026-11-24T22:10:00.123Z`, from CLOCK_REALTIME.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + "\(pad(Int32(now.tv_nsec / 1_000_000), 3))Z"
    }

    /// `text` as a double-quoted string with JSON escapes — also a valid TOML basic string, which
    /// is how the command line prints configuration values (visible within this package only).
    package static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
