import Prefork

/// A small binary form of a parsed config file, for the pipe from the parse child to the
/// supervisor (see ``ConfigFile/parseIsolated(path:)``): either the file's values or the
/// ``ConfigurationError`` that refused it.
///
/// Each value is a tag byte, then its payload: a Bool as one byte, an Int or a Double (its bit
/// pattern) as 8 bytes little-endian, a string as its UTF-8 length (8 bytes) and bytes, an array
/// as its count and elements, a table as its count and key/value pairs.
package enum SettingWire {
    private enum Tag: UInt8 {
        case boolean = 1
        case integer = 2
        case number = 3
        case string = 4
        case array = 5
        case table = 6
        case values = 0x56  // "V": a reply holding the file's table
        case error = 0x45  // "E": a reply holding a ConfigurationError
    }

    /// The reply for a parse that gave `table`.
    package static func encode(_ table: [String: SettingValue]) -> [UInt8] {
        var bytes: [UInt8] = [Tag.values.rawValue]
        append(.table(table), to: &bytes)
        return bytes
    }

    /// The reply for a parse refused with `error`.
    package static func encode(_ error: ConfigurationError) -> [UInt8] {
        var bytes: [UInt8] = [Tag.error.rawValue]
        for text in [error.source, error.key, error.value, error.reason] { append(text, to: &bytes) }
        return bytes
    }

    /// A decoded reply: the values, or the error the child found.
    package enum Reply: Equatable {
        case values([String: SettingValue])
        case error(ConfigurationError)
    }

    /// Decodes a whole reply; nil when `bytes` is cut short, has bytes left over or is not one.
    package static func decode(_ bytes: [UInt8]) -> Reply? {
        var reader = Reader(bytes: bytes)
        let reply: Reply
        switch reader.byte().flatMap(Tag.init(rawValue:)) {
        case .values:
            guard case .table(let table)? = reader.value() else { return nil }
            reply = .values(table)
        case .error:
            guard let source = reader.string(), let key = reader.string(), let value = reader.string(),
                let reason = reader.string()
            else { return nil }
            reply = .error(ConfigurationError(source: source, key: key, value: value, reason: reason))
        default: return nil
        }
        return reader.atEnd ? reply : nil
    }

    private static func append(_ value: SettingValue, to bytes: inout [UInt8]) {
        switch value {
        case .boolean(let on):
            bytes += [Tag.boolean.rawValue, on ? 1 : 0]
        case .integer(let number):
            bytes.append(Tag.integer.rawValue)
            append(UInt64(bitPattern: Int64(number)), to: &bytes)
        case .number(let number):
            bytes.append(Tag.number.rawValue)
            append(number.bitPattern, to: &bytes)
        case .string(let text):
            bytes.append(Tag.string.rawValue)
            append(text, to: &bytes)
        case .array(let elements):
            bytes.append(Tag.array.rawValue)
            append(UInt64(elements.count), to: &bytes)
            for element in elements { append(element, to: &bytes) }
        case .table(let table):
            bytes.append(Tag.table.rawValue)
            append(UInt64(table.count), to: &bytes)
            for (key, element) in table {
                append(key, to: &bytes)
                append(element, to: &bytes)
            }
        }
    }

    private static func append(_ text: String, to bytes: inout [UInt8]) {
        append(UInt64(text.utf8.count), to: &bytes)
        bytes += text.utf8
    }

    private static func append(_ word: UInt64, to bytes: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: word >> UInt64(shift))) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        var atEnd: Bool { offset == bytes.count }

        mutating func byte() -> UInt8? {
            guard offset < bytes.count else { return nil }
            defer { offset += 1 }
            return bytes[offset]
        }

        mutating func word() -> UInt64? {
            guard bytes.count - offset >= 8 else { return nil }
            var word: UInt64 = 0
            for index in 0..<8 { word |= UInt64(bytes[offset + index]) << UInt64(index * 8) }
            offset += 8
            return word
        }

        /// A count of things each at least one byte long: no more than the bytes left.
        mutating func count() -> Int? {
            guard let word = word(), word <= UInt64(bytes.count - offset) else { return nil }
            return Int(word)
        }

        mutating func string() -> String? {
            guard let length = count() else { return nil }
            defer { offset += length }
            return String(validating: bytes[offset..<offset + length], as: UTF8.self)
        }

        mutating func value() -> SettingValue? {
            switch byte().flatMap(Tag.init(rawValue:)) {
            case .boolean:
                switch byte() {
                case 0: return .boolean(false)
                case 1: return .boolean(true)
                default: return nil
                }
            case .integer: return word().map { .integer(Int(Int64(bitPattern: $0))) }
            case .number: return word().map { .number(Double(bitPattern: $0)) }
            case .string: return string().map { .string($0) }
            case .array:
                guard let count = count() else { return nil }
                var elements: [SettingValue] = []
                for _ in 0..<count {
                    guard let element = value() else { return nil }
                    elements.append(element)
                }
                return .array(elements)
            case .table:
                guard let count = count() else { return nil }
                var table: [String: SettingValue] = [:]
                for _ in 0..<count {
                    guard let key = string(), let element = value() else { return nil }
                    table[key] = element
                }
                return .table(table)
            default: return nil
            }
        }
    }
}
