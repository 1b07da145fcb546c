/// Why a value cannot be taken for a setting: the reason, and the part of the value at fault when
/// it is not the whole value (one address of a list).
package struct SettingError: Error, Sendable {
    /// Why the value is refused.
    package var reason: String
    /// The offending part of the value, when not the whole of it.
    package var value: SettingValue?
    /// Where inside the value the fault is, appended to the setting's key: `[2].upstream` for a
    /// key of the third table of an array of tables. Empty for the whole value.
    package var subkey: String

    /// Refuses a value for `reason`; `value` is the part at fault, when not the whole value, and
    /// `subkey` says where that part sits in it.
    package init(_ reason: String, value: SettingValue? = nil, subkey: String = "") {
        self.reason = reason
        self.value = value
        self.subkey = subkey
    }
}

/// How a setting appears on the command line.
package enum SettingFlag: Sendable, Equatable {
    /// Config file only (a table, or an array of tables).
    case none
    /// `--key VALUE`, with `-c` when `short` is set; `repeatable` gathers each use into a list.
    case value(name: String, short: Character? = nil, repeatable: Bool = false)
    /// `--key` and `--no-key`.
    case toggle
}

/// One setting of a configuration type `Root`, said once: its key (the config-file key and the
/// long flag name), its help, its default, how a value or a flag's text becomes the stored value,
/// its range check, and how the stored value is written back as TOML.
///
/// A setting is only a description: `Root` stays a plain value type that code sets directly.
package struct Setting<Root>: Sendable {
    /// How the setting appears on the command line.
    package typealias Flag = SettingFlag

    /// The config-file key, and the long flag name without its dashes.
    package let key: String
    /// One line for `--help` and the README, without the default.
    package let help: String
    /// How the setting appears on the command line.
    package let flag: Flag
    /// Says what the default is when the rendered default value would not (a computed default).
    package let defaultDescription: String?

    private let readValue: @Sendable (SettingValue, inout Root) throws(SettingError) -> Void
    private let parseText: @Sendable (String) throws(SettingError) -> SettingValue
    private let renderValue: @Sendable (Root) -> SettingValue
    private let checkValue: @Sendable (Root) throws(SettingError) -> Void

    /// A setting from its parts; the typed constructors below cover the usual kinds.
    ///
    /// - Parameters:
    ///   - read: stores a value (from a file or a flag) in `Root`, or refuses its type or form.
    ///   - parseFlag: turns a flag's text into a value for `read`.
    ///   - render: the stored value, for TOML output and `--help` defaults.
    ///   - check: the range check on the stored value, run by validation.
    package init(
        key: String, help: String, flag: Flag, defaultDescription: String? = nil,
        read: @escaping @Sendable (SettingValue, inout Root) throws(SettingError) -> Void,
        parseFlag: @escaping @Sendable (String) throws(SettingError) -> SettingValue,
        render: @escaping @Sendable (Root) -> SettingValue,
        check: @escaping @Sendable (Root) throws(SettingError) -> Void = { _ throws(SettingError) in }
    ) {
        self.key = key
        self.help = help
        self.flag = flag
        self.defaultDescription = defaultDescription
        self.readValue = read
        self.parseText = parseFlag
        self.renderValue = render
        self.checkValue = check
    }

    /// Stores `value` in `root`, or says why it cannot.
    package func read(_ value: SettingValue, into root: inout Root) throws(SettingError) {
        try readValue(value, &root)
    }

    /// The value a flag's text stands for (each use of a repeatable flag is one element).
    package func parse(flagText text: String) throws(SettingError) -> SettingValue {
        try parseText(text)
    }

    /// The value stored in `root`.
    package func render(_ root: Root) -> SettingValue { renderValue(root) }

    /// Checks the value stored in `root` against the setting's range.
    package func check(_ root: Root) throws(SettingError) { try checkValue(root) }

    /// This setting, for a configuration that holds a `Root` somewhere (in a property, or behind
    /// a type-erased box): the same key, help and rules.
    package func lifted<Outer>(
        get: @escaping @Sendable (Outer) -> Root, set: @escaping @Sendable (inout Outer, Root) -> Void
    ) -> Setting<Outer> {
        let (read, render, check) = (readValue, renderValue, checkValue)
        return Setting<Outer>(
            key: key, help: help, flag: flag, defaultDescription: defaultDescription,
            read: { value, outer throws(SettingError) in
                var inner = get(outer)
                try read(value, &inner)
                set(&outer, inner)
            },
            parseFlag: parseText, render: { render(get($0)) },
            check: { outer throws(SettingError) in try check(get(outer)) })
    }

    /// This setting for a configuration that stores a `Root` at `path`.
    package func lifted<Outer>(_ path: WritableKeyPath<Outer, Root> & Sendable) -> Setting<Outer> {
        lifted(get: { $0[keyPath: path] }, set: { $0[keyPath: path] = $1 })
    }
}

// MARK: - the usual kinds

extension Setting {
    /// A whole number in `range`.
    package static func integer(
        _ key: String, _ path: WritableKeyPath<Root, Int> & Sendable, in range: ClosedRange<Int>, help: String,
        valueName: String = "n", short: Character? = nil, defaultDescription: String? = nil
    ) -> Setting {
        Setting(
            key: key, help: help, flag: .value(name: valueName, short: short), defaultDescription: defaultDescription,
            read: { value, root throws(SettingError) in
                guard case .integer(let number) = value else {
                    throw SettingError("expected an integer, got \(value.kindDescription)")
                }
                root[keyPath: path] = number
            },
            parseFlag: { text throws(SettingError) in
                guard let number = Int(text) else { throw SettingError("expected an integer") }
                return .integer(number)
            },
            render: { .integer($0[keyPath: path]) },
            check: { root throws(SettingError) in
                guard range.contains(root[keyPath: path]) else {
                    throw SettingError("must be between \(range.lowerBound) and \(range.upperBound)")
                }
            })
    }

    /// A time span, written as a number of seconds (fractions allowed), in `range`.
    package static func seconds(
        _ key: String, _ path: WritableKeyPath<Root, Duration> & Sendable, in range: ClosedRange<Duration>,
        help: String
    ) -> Setting {
        Setting(
            key: key, help: help, flag: .value(name: "s"),
            read: { value, root throws(SettingError) in
                let seconds: Double
                switch value {
                case .integer(let whole): seconds = Double(whole)
                case .number(let number): seconds = number
                default: throw SettingError("expected a number of seconds, got \(value.kindDescription)")
                }
                // Far beyond any range a setting allows, and beyond what a Duration holds in
                // nanoseconds: refused with the range's message.
                guard seconds.isFinite, abs(seconds) < 1e9 else {
                    throw SettingError(
                        "must be between \(range.lowerBound.secondsText) and \(range.upperBound.secondsText)")
                }
                root[keyPath: path] = .seconds(rounding: seconds)
            },
            parseFlag: { text throws(SettingError) in
                if let whole = Int(text) { return .integer(whole) }
                guard let seconds = Double(text), seconds.isFinite else {
                    throw SettingError("expected a number of seconds")
                }
                return .number(seconds)
            },
            render: { $0[keyPath: path].settingValue },
            check: { root throws(SettingError) in
                guard range.contains(root[keyPath: path]) else {
                    throw SettingError(
                        "must be between \(range.lowerBound.secondsText) and \(range.upperBound.secondsText)")
                }
            })
    }

    /// On or off: `--key` / `--no-key` on the command line, `true` / `false` in the file.
    package static func boolean(
        _ key: String, _ path: WritableKeyPath<Root, Bool> & Sendable, help: String,
        defaultDescription: String? = nil
    ) -> Setting {
        Setting(
            key: key, help: help, flag: .toggle, defaultDescription: defaultDescription,
            read: { value, root throws(SettingError) in
                guard case .boolean(let on) = value else {
                    throw SettingError("expected true or false, got \(value.kindDescription)")
                }
                root[keyPath: path] = on
            },
            parseFlag: { text throws(SettingError) in
                switch text {
                case "true": return .boolean(true)
                case "false": return .boolean(false)
                default: throw SettingError("expected true or false")
                }
            },
            render: { .boolean($0[keyPath: path]) })
    }

    /// One of a fixed set of names (an enumeration's raw values).
    package static func choice<Value: RawRepresentable & CaseIterable & Sendable>(
        _ key: String, _ path: WritableKeyPath<Root, Value> & Sendable, help: String, valueName: String
    ) -> Setting where Value.RawValue == String {
        let names = Value.allCases.map(\.rawValue)
        return Setting(
            key: key, help: help, flag: .value(name: valueName),
            read: { value, root throws(SettingError) in
                guard case .string(let name) = value else {
                    throw SettingError("expected a string, got \(value.kindDescription)")
                }
                guard let choice = Value(rawValue: name) else {
                    throw SettingError("expected one of \(names.joined(separator: ", "))")
                }
                root[keyPath: path] = choice
            },
            parseFlag: { .string($0) },
            render: { .string($0[keyPath: path].rawValue) })
    }
}

extension Duration {
    /// `seconds` to the nearest nanosecond: the same text always gives the same duration, and a
    /// duration written back as seconds reads back equal.
    package static func seconds(rounding seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }

    /// The duration in seconds, as a Double (what `setsockopt` and log lines take).
    package var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }

    /// The duration as a setting's value: whole seconds as an integer, otherwise a number.
    package var settingValue: SettingValue {
        components.attoseconds == 0 ? .integer(Int(components.seconds)) : .number(inSeconds)
    }

    /// The duration as seconds without a unit: `30`, `0.001`.
    package var secondsText: String { settingValue.toml }
}

/// The settings of one configuration type, in the order `--help` and `--check-config` list them.
package struct SettingsTable<Root>: Sendable {
    /// Every setting, in order.
    package let settings: [Setting<Root>]

    /// A table of `settings`, in the order given; keys must be unique.
    package init(_ settings: [Setting<Root>]) {
        assert(Set(settings.map(\.key)).count == settings.count, "a key is said twice")
        self.settings = settings
    }

    /// The setting with this key.
    package subscript(key: String) -> Setting<Root>? {
        settings.first { $0.key == key }
    }

    /// Checks every value of `root`; the error names the first setting out of range, its key
    /// prefixed with `prefix` (`echo.`).
    package func validate(_ root: Root, prefix: String = "") throws(ConfigurationError) {
        for setting in settings {
            do {
                try setting.check(root)
            } catch {
                throw ConfigurationError(
                    key: prefix + setting.key + error.subkey, value: (error.value ?? setting.render(root)).plainText,
                    reason: error.reason)
            }
        }
    }

    /// Stores each entry of a table (a config file's, or one of its sub-tables) through its
    /// setting; throws for an unknown key or a value of the wrong type, naming the key with
    /// `prefix` and the value in TOML syntax.
    package func read(_ table: [String: SettingValue], into root: inout Root, prefix: String = "")
        throws(ConfigurationError)
    {
        for key in table.keys.sorted() {
            let value = table[key]!
            guard let setting = self[key] else {
                throw ConfigurationError(key: prefix + key, value: value.toml, reason: "unknown key")
            }
            do {
                try setting.read(value, into: &root)
            } catch {
                throw ConfigurationError(
                    key: prefix + key + error.subkey, value: (error.value ?? value).toml, reason: error.reason)
            }
        }
    }

    /// `key = value` lines for every setting of `root`, in table order.
    package func tomlLines(_ root: Root) -> [String] {
        settings.map { "\(SettingValue.tomlKey($0.key)) = \($0.render(root).toml)" }
    }

    /// Each setting's lifted form (see ``Setting/lifted(_:)``).
    package func lifted<Outer>(_ path: WritableKeyPath<Outer, Root> & Sendable) -> [Setting<Outer>] {
        settings.map { $0.lifted(path) }
    }
}
