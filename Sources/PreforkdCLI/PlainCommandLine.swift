/// The common command lines, read without swift-argument-parser.
///
/// swift-argument-parser builds its whole model of the command (reflection, generic metadata,
/// protocol conformance lookups) on every start: ~1.2 ms of a ~7 ms exec → `READY=1`. A command
/// line made only of the settings' long flags (`--workers 4`, `--listen ADDR` again and again,
/// `--fd-store`, `--no-echo-keep-alive`) and `--config FILE` is read here instead, into the same
/// ``Invocation`` swift-argument-parser's ``PreforkdCommand`` makes, which does the rest, so the
/// settings, the messages and the exit status are the same either way. (Not by making a
/// `PreforkdCommand`: its property wrappers build every flag's help at once.) Anything else —
/// `--help`, `--version`, `--check-config`, a short flag, `--flag=value`, a value that starts
/// with `-`, a flag said twice that is not repeatable, an unknown word — returns nil and is left
/// to swift-argument-parser, with its messages.
enum PlainCommandLine {
    /// The run `arguments` (without the program name) ask for, or nil when they are not in the
    /// plain form.
    static func command(_ arguments: [String]) -> Invocation? {
        var config: String?
        var texts: [String: [String]] = [:]
        var toggles: [String: Bool] = [:]
        var index = arguments.startIndex
        func value() -> String? {
            guard index < arguments.endIndex, !arguments[index].hasPrefix("-") else { return nil }
            defer { index += 1 }
            return arguments[index]
        }
        while index < arguments.endIndex {
            let word = arguments[index]
            index += 1
            // firstIndex(of:), not contains("="): with Foundation imported elsewhere in the module,
            // that one resolves to Foundation's string search and links ICU (+47 MB) into the binary.
            guard word.hasPrefix("--"), word.count > 2, word.firstIndex(of: "=") == nil else { return nil }
            let name = word.dropFirst(2)
            if name == "config" {
                guard config == nil, let text = value() else { return nil }
                config = text
            } else if let flag = FlagSetting.all.first(where: { $0.flagName == name }) {
                switch flag.flag {
                case .value(_, _, let repeatable):
                    guard repeatable || texts[flag.key] == nil, let text = value() else { return nil }
                    texts[flag.key, default: []].append(text)
                case .toggle:
                    guard toggles[flag.key] == nil else { return nil }
                    toggles[flag.key] = true
                case .none:
                    return nil
                }
            } else if name.hasPrefix("no-"),
                let flag = FlagSetting.all.first(where: { $0.flag == .toggle && $0.flagName == name.dropFirst(3) })
            {
                guard toggles[flag.key] == nil else { return nil }
                toggles[flag.key] = false
            } else {
                return nil
            }
        }
        var invocation = Invocation(config: config)
        for flag in FlagSetting.all {
            invocation.flags.append(
                (flag.key, flag.flag == .toggle ? .toggle(toggles[flag.key]) : .texts(texts[flag.key] ?? [])))
        }
        return invocation
    }
}

extension PreforkdCommand {
    /// Runs preforkd with the process's arguments: `preforkd status …` as ``StatusCommand``, a
    /// plain command line (see ``PlainCommandLine``) without swift-argument-parser, anything else
    /// through it.
    public static func start() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "status" { return StatusCommand.main(Array(arguments.dropFirst())) }
        guard let invocation = PlainCommandLine.command(arguments) else { return main() }
        do {
            try invocation.run()
        } catch {
            exit(withError: error)
        }
    }
}
