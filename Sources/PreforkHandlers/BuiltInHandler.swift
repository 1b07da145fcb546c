import Prefork

/// A handler `preforkd` runs by name, with options from its `[NAME]` table (and
/// `[listeners.X.NAME]`) and its `--NAME-…` flags. See ``HandlerRegistry`` for adding one.
package protocol BuiltInHandler: ConnectionHandler, SendableMetatype {
    /// The handler's options.
    associatedtype Configuration: HandlerConfiguration

    /// The name: `handler = "NAME"`, `--handler NAME`, the `[NAME]` table, the `--NAME-…` flags.
    static var name: String { get }

    /// A handler with these options (already validated).
    init(configuration: Configuration)
}

/// A built-in handler's options: a plain value with defaults, described by a settings table that
/// gives each option's key, help, range and TOML form.
package protocol HandlerConfiguration: Sendable, Equatable {
    /// The defaults.
    init()

    /// Every option, said once. Keys are relative to the handler's table (`keep-alive`, not
    /// `echo.keep-alive`).
    static var settings: SettingsTable<Self> { get }

    /// Checks what only matters when the handler serves a listener (the forward handler's
    /// routes): run for the handlers in use, after every value passed its range check.
    func checkInUse() throws(SettingError)
}

extension HandlerConfiguration {
    /// Nothing more to check.
    package func checkInUse() throws(SettingError) {}
}

extension HandlerConfiguration {
    fileprivate func isEqual(to other: any HandlerConfiguration) -> Bool {
        (other as? Self) == self
    }
}

/// The options of one built-in handler, whichever handler it is.
package struct HandlerOptions: Sendable, Equatable {
    /// The options themselves.
    package fileprivate(set) var value: any HandlerConfiguration

    /// Wraps one handler's options.
    package init(_ value: some HandlerConfiguration) {
        self.value = value
    }

    /// The options as `Configuration`, or nil when they belong to another handler.
    package func `as`<Configuration: HandlerConfiguration>(_: Configuration.Type) -> Configuration? {
        value as? Configuration
    }

    /// Whether both hold the same handler's options, with equal values.
    package static func == (lhs: HandlerOptions, rhs: HandlerOptions) -> Bool {
        lhs.value.isEqual(to: rhs.value)
    }
}

/// One entry of ``HandlerRegistry``: a built-in handler's name, its options' settings (over the
/// type-erased ``HandlerOptions``), and how to make it.
package struct RegisteredHandler: Sendable {
    /// The handler's name.
    package let name: String
    /// Its options as they are when nothing sets them.
    package let defaults: HandlerOptions
    /// Its options' settings, keys relative to its table.
    package let settings: SettingsTable<HandlerOptions>
    private let make: @Sendable (HandlerOptions) -> any ConnectionHandler
    private let checkOptionsInUse: @Sendable (HandlerOptions) throws(SettingError) -> Void

    /// The entry for `Handler`.
    package init<Handler: BuiltInHandler>(_: Handler.Type) {
        name = Handler.name
        defaults = HandlerOptions(Handler.Configuration())
        // Options are kept per handler name, so the box always holds this handler's type.
        settings = SettingsTable(
            Handler.Configuration.settings.settings.map { setting in
                setting.lifted(
                    get: { $0.value as! Handler.Configuration }, set: { $0.value = $1 })
            })
        make = { Handler(configuration: $0.value as! Handler.Configuration) }
        checkOptionsInUse = { options throws(SettingError) in
            try (options.value as! Handler.Configuration).checkInUse()
        }
    }

    /// Checks `options` (this handler's) for a listener that uses the handler; the error names
    /// the handler's table, prefixed with `prefix` (`listeners.lb.`).
    package func checkInUse(_ options: HandlerOptions, prefix: String = "") throws(ConfigurationError) {
        do {
            try checkOptionsInUse(options)
        } catch {
            throw ConfigurationError(
                key: prefix + name + error.subkey, value: (error.value ?? .table([:])).plainText, reason: error.reason)
        }
    }

    /// The handler, with `options` (this handler's, validated).
    package func makeHandler(_ options: HandlerOptions) -> any ConnectionHandler {
        make(options)
    }
}
