import ArgumentParser
import Prefork
import PreforkHandlers

/// A setting as the command line sees it: a top-level setting (`--workers`), or a handler's
/// option (`--echo-keep-alive`), which applies to the handler's `[NAME]` table and to every
/// `[listeners.X.NAME]` table, so that the command line wins everywhere (`--handler`,
/// `--accept-proxy` and `--accept-proxy-from` likewise set those of every `[listeners.X]` table).
struct FlagSetting: Sendable {
    /// The qualified key: `workers`, `echo.keep-alive`.
    let key: String
    /// The long flag name: `workers`, `echo-keep-alive`.
    let flagName: String
    /// How it is spelt on the command line.
    let flag: SettingFlag
    /// The help line, with the default (made when asked: only `--help` and swift-argument-parser
    /// need it, and rendering every default costs each start-up).
    var help: String { makeHelp() }
    private let makeHelp: @Sendable () -> String
    private let parseText: @Sendable (String) throws(SettingError) -> SettingValue
    private let applyValue: @Sendable (SettingValue, inout Settings) throws(SettingError) -> Void
    private let renderValue: @Sendable (Settings) -> SettingValue

    private init<Root>(
        key: String, setting: Setting<Root>, defaults: @escaping @Sendable () -> Root,
        apply: @escaping @Sendable (SettingValue, inout Settings) throws(SettingError) -> Void,
        render: @escaping @Sendable (Settings) -> SettingValue
    ) {
        self.key = key
        // Not `replacing(_:with:)`: its generic string algorithms cost start-up more than the
        // loop does.
        self.flagName = String(key.map { $0 == "." ? "-" : $0 })
        self.flag = setting.flag
        self.makeHelp = {
            let defaultText: String
            if let description = setting.defaultDescription {
                defaultText = ": " + description
            } else if case .boolean(let on) = setting.render(defaults()) {
                defaultText = on ? " on" : " off"
            } else {
                defaultText = " " + setting.render(defaults()).plainText
            }
            return "\(setting.help.dropLast(setting.help.hasSuffix(".") ? 1 : 0)) (default\(defaultText))."
        }
        self.parseText = { text throws(SettingError) in try setting.parse(flagText: text) }
        self.applyValue = apply
        self.renderValue = render
    }

    /// Every setting that has a flag, top-level first, then each handler's.
    static let all: [FlagSetting] = {
        var flags: [FlagSetting] = []
        for setting in Settings.table.settings where setting.flag != .none {
            flags.append(
                FlagSetting(
                    key: setting.key, setting: setting, defaults: { Settings() },
                    apply: { value, settings throws(SettingError) in
                        try setting.read(value, into: &settings)
                        // `handler` and the PROXY keys are also keys of each [listeners.NAME] table:
                        // the flag wins there too.
                        if setting.key == "handler" {
                            for listener in settings.listeners.keys {
                                settings.listeners[listener]!.handler = settings.handler
                            }
                        }
                        if let proxySetting = ProxyProtocolPolicy.settings[setting.key] {
                            for listener in settings.server.listenerProxyProtocol.keys {
                                try proxySetting.read(value, into: &settings.server.listenerProxyProtocol[listener]!)
                            }
                        }
                    },
                    render: { setting.render($0) }))
        }
        for registered in HandlerRegistry.all {
            let name = registered.name
            for setting in registered.settings.settings where setting.flag != .none {
                flags.append(
                    FlagSetting(
                        key: "\(name).\(setting.key)", setting: setting, defaults: { registered.defaults },
                        apply: { value, settings throws(SettingError) in
                            try setting.read(value, into: &settings.handlerOptions[name]!)
                            for listener in settings.listeners.keys {
                                try setting.read(value, into: &settings.listeners[listener]!.handlerOptions[name]!)
                            }
                        },
                        render: { setting.render($0.handlerOptions[name]!) }))
            }
        }
        return flags
    }()

    /// The flag for `key`; the command line names only keys of the tables.
    static func named(_ key: String) -> FlagSetting {
        guard let flag = all.first(where: { $0.key == key }) else {
            preconditionFailure("no setting \(key) with a flag in the settings tables")
        }
        return flag
    }

    /// Whether each use of the flag adds one element to a list.
    var isRepeatable: Bool {
        if case .value(_, _, repeatable: true) = flag { return true }
        return false
    }

    /// The value a use of the flag stands for.
    func parse(_ text: String) throws(SettingError) -> SettingValue { try parseText(text) }

    /// Stores `value` wherever the setting lives in `settings`.
    func apply(_ value: SettingValue, to settings: inout Settings) throws(SettingError) {
        try applyValue(value, &settings)
    }

    /// The value `settings` holds (the top-level one, for a handler's option).
    func render(_ settings: Settings) -> SettingValue { renderValue(settings) }

    /// The flag's names for swift-argument-parser.
    var names: NameSpecification {
        if case .value(_, let short?, _) = flag { return [.customShort(short), .customLong(flagName)] }
        return [.customLong(flagName)]
    }

    /// The flag's help for swift-argument-parser.
    var argumentHelp: ArgumentHelp {
        if case .value(let valueName, _, _) = flag {
            return ArgumentHelp(help, valueName: valueName)
        }
        return ArgumentHelp(help)
    }
}

extension NameSpecification {
    /// The names of the setting `key` (`workers`, `echo.keep-alive`) in the settings tables.
    static func setting(_ key: String) -> NameSpecification { FlagSetting.named(key).names }
}

extension ArgumentHelp {
    /// The help of the setting `key` in the settings tables, with its default.
    static func setting(_ key: String) -> ArgumentHelp { FlagSetting.named(key).argumentHelp }
}
