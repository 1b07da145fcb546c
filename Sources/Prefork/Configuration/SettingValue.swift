/// A setting's value in one of the shapes a TOML file can hold, independent of any TOML library:
/// what a config file's value or a flag's text becomes before a ``Setting`` checks it and stores it.
package enum SettingValue: Sendable, Equatable {
    case boolean(Bool)
    case integer(Int)
    /// A finite floating-point number.
    case number(Double)
    case string(String)
    case array([SettingValue])
    /// A table; rendered with its keys sorted.
    case table([String: SettingValue])

    /// What kind of value this is, as a message names it: "an integer", "a string".
    package var kindDescription: String {
        switch self {
        case .boolean: "a boolean"
        case .integer: "an integer"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .table: "a table"
        }
    }

    /// The value in TOML syntax, on one line (a table as an inline table), so that reading it
    /// back gives the same value.
    package var toml: String {
        switch self {
        case .boolean(let value): "\(value)"
        case .integer(let value): "\(value)"
        // Swift prints the shortest text that reads back as the same Double ("2.5", "1e-05"),
        // which is also a TOML float.
        case .number(let value): "\(value)"
        case .string(let value): TextLogHandler.jsonString(value)
        case .array(let values): "[" + values.map(\.toml).joined(separator: ", ") + "]"
        case .table(let table):
            table.isEmpty
                ? "{}"
                : "{ " + table.keys.sorted().map { "\(Self.tomlKey($0)) = \(table[$0]!.toml)" }.joined(separator: ", ")
                    + " }"
        }
    }

    /// The value as a person writes it on a command line: strings without quotes, lists joined
    /// with ", ".
    package var plainText: String {
        switch self {
        case .string(let value): value
        case .array(let values): values.map(\.plainText).joined(separator: ", ")
        default: toml
        }
    }

    /// `key` as a TOML key: bare when it can be, quoted otherwise.
    package static func tomlKey(_ key: String) -> String {
        let bare =
            !key.isEmpty
            && key.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || byte == 0x2D || byte == 0x5F
            }
        return bare ? key : TextLogHandler.jsonString(key)
    }
}
