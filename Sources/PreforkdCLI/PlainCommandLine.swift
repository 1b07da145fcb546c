/// The common command lines, read without swift-argument-parser.
///
/// swift-argument-parser builds its whole model of the command (reflection, generic metadata,
/// protocol conformance lookups) on every start: ~1.2 ms of a ~7 ms exec → `READY=1`. A command
/// line made only of the settings' long flags (`--workers 4`, `--listen ADDR` again and again,
/// `--fd-store`, `--no-echo-keep-alive`) and `--config FILE` is read here instead, into the same
/// properties swift-argument-parser would set; ``PreforkdCommand/run()`` then does the rest, so
/// the settings, the messages and the exit status are the same either way. Anything else —
/// `--help`, `--version`, `--check-config`, a short flag, `--flag=value`, a value that starts
/// with `-`, a flag said twice that is not repeatable, an unknown word — returns nil and is left
/// to swift-argument-parser, with its messages.
enum PlainCommandLine {
    /// The command `arguments` (without the program name) stand for, or nil when they are not
    /// in the plain form.
    static func command(_ arguments: [String]) -> PreforkdCommand? {
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
        var command = PreforkdCommand()
        command.config = config
        command.checkConfig = false
        for flag in FlagSetting.all {
            let input: PreforkdCommand.FlagInput =
                flag.flag == .toggle ? .toggle(toggles[flag.key]) : .texts(texts[flag.key] ?? [])
            // A flag with no property here means the table grew without this file: let
            // swift-argument-parser read the command line.
            guard let set = setters[flag.key] else { return nil }
            set(&command, input)
        }
        return command
    }

    /// Stores one flag's input in its property, as swift-argument-parser would.
    typealias Setter = @Sendable (inout PreforkdCommand, PreforkdCommand.FlagInput) -> Void

    /// The property of each flag, by its setting's key (the inverse of `flagInputs`).
    static let setters: [String: Setter] = [
        "listen": { $0.listen = texts($1) },
        "workers": { $0.workers = text($1) },
        "initial-bytes": { $0.initialBytes = text($1) },
        "initial-timeout": { $0.initialTimeout = text($1) },
        "send-timeout": { $0.sendTimeout = text($1) },
        "write-deadline": { $0.writeDeadline = text($1) },
        "handler": { $0.handler = text($1) },
        "graceful-timeout": { $0.gracefulTimeout = text($1) },
        "boot-timeout": { $0.bootTimeout = text($1) },
        "handler-timeout": { $0.handlerTimeout = text($1) },
        "max-connections-per-worker": { $0.maxConnectionsPerWorker = text($1) },
        "min-spare": { $0.minSpare = text($1) },
        "max-workers": { $0.maxWorkers = text($1) },
        "spare-timeout": { $0.spareTimeout = text($1) },
        "runtime-directory": { $0.runtimeDirectory = text($1) },
        "backlog": { $0.backlog = text($1) },
        "unix-mode": { $0.unixMode = text($1) },
        "fd-store": { $0.fdStore = toggle($1) },
        "defer-accept": { $0.deferAccept = toggle($1) },
        "open-files": { $0.openFiles = text($1) },
        "user": { $0.user = text($1) },
        "group": { $0.group = text($1) },
        "allow-root": { $0.allowRoot = toggle($1) },
        "accept-proxy": { $0.acceptProxy = text($1) },
        "accept-proxy-from": { $0.acceptProxyFrom = texts($1) },
        "log-level": { $0.logLevel = text($1) },
        "log-format": { $0.logFormat = text($1) },
        "echo.keep-alive": { $0.echoKeepAlive = toggle($1) },
        "echo.idle-timeout": { $0.echoIdleTimeout = text($1) },
        "echo.max-message-bytes": { $0.echoMaxMessageBytes = text($1) },
        "echo.message-timeout": { $0.echoMessageTimeout = text($1) },
        "echo.max-messages": { $0.echoMaxMessages = text($1) },
        "echo.max-lifetime": { $0.echoMaxLifetime = text($1) },
        "forward.probe-timeout": { $0.forwardProbeTimeout = text($1) },
        "forward.connect-timeout": { $0.forwardConnectTimeout = text($1) },
        "forward.idle-timeout": { $0.forwardIdleTimeout = text($1) },
        "forward.probe-bytes": { $0.forwardProbeBytes = text($1) },
        "forward.relay": { $0.forwardRelay = text($1) },
    ]

    private static func texts(_ input: PreforkdCommand.FlagInput) -> [String] {
        if case .texts(let texts) = input { return texts }
        return []
    }

    private static func text(_ input: PreforkdCommand.FlagInput) -> String? { texts(input).last }

    private static func toggle(_ input: PreforkdCommand.FlagInput) -> Bool? {
        if case .toggle(let on) = input { return on }
        return nil
    }
}

extension PreforkdCommand {
    /// Runs preforkd with the process's arguments: `preforkd status …` as ``StatusCommand``, a
    /// plain command line (see ``PlainCommandLine``) without swift-argument-parser, anything else
    /// through it.
    public static func start() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "status" { return StatusCommand.main(Array(arguments.dropFirst())) }
        guard let command = PlainCommandLine.command(Array(CommandLine.arguments.dropFirst())) else {
            return main()
        }
        do {
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
