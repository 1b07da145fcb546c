import Prefork

/// The handlers `preforkd` can run, by name: what `handler = "NAME"` and `--handler NAME` accept.
///
/// ## Adding a built-in handler
///
/// 1. One new file, `Sources/PreforkHandlers/NAMEHandler.swift`, with a type that conforms to
///    ``BuiltInHandler``:
///    - `static let name = "NAME"`;
///    - a `Configuration` that conforms to ``HandlerConfiguration``: a plain struct whose
///      defaults are its property values, and a `settings` table with one entry per option —
///      `.integer`, `.seconds`, `.boolean` or `.choice` for a scalar, or `Setting(key:help:flag:
///      .none, read:parseFlag:render:check:)` for a table or an array of tables (such as
///      `[[NAME.route]]`), reading and writing the option's ``SettingValue``;
///    - `init(configuration:)`, and the ``ConnectionHandler`` methods.
/// 2. One line in ``all``.
///
/// The config file then accepts `handler = "NAME"`, the `[NAME]` table, and per listener
/// `[listeners.X] handler = "NAME"` with `[listeners.X.NAME]`; unknown keys, wrong types and
/// values out of range are refused with a line naming file, key and value; `--check-config`
/// prints the options. A scalar option can also get a flag, `--NAME-KEY`: one `@Option` (or
/// `@Flag` for a toggle) in `PreforkdCommand`, its name and help taken from the table.
package enum HandlerRegistry {
    /// Every built-in handler, one line each; the first is the default.
    package static let all: [RegisteredHandler] = [
        RegisteredHandler(EchoHandler.self),
        RegisteredHandler(MetricsHandler.self),
        RegisteredHandler(ForwardHandler.self),
    ]

    /// The handler called `name`, if there is one.
    package static func handler(named name: String) -> RegisteredHandler? {
        all.first { $0.name == name }
    }

    /// The registered names, in registration order.
    package static var names: [String] { all.map(\.name) }
}
