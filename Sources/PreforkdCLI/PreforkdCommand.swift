import ArgumentParser
import Glibc
import Logging
import Prefork
import PreforkHandlers

/// `preforkd`: the command line. Synchronous on purpose — no async runtime may start before fork.
public struct PreforkdCommand: ParsableCommand {
    /// The version `--version` prints: the top entry of packaging/debian/changelog.
    public static let version = packageVersion

    /// The command's name, summary and help text.
    public static let configuration = CommandConfiguration(
        commandName: "preforkd",
        abstract: "A pre-fork TCP acceptor daemon: a supervisor, forked workers, blocking accept + initial read.",
        discussion: """
            Every option is also a config-file key (TOML), named as the long option without its dashes; \
            a handler's options sit in a table named after it (--echo-keep-alive ↔ [echo] keep-alive), \
            and [listeners.NAME] tables give one listener its own handler and options. \
            The command line wins over the file, listener tables included. With no --listen and no socket from systemd, preforkd \
            listens on 127.0.0.1:11000.

            `preforkd status [--runtime-directory DIR] [--json]` shows a running instance's workers.

            Signals: TERM/INT graceful stop, QUIT immediate stop, HUP reload, TTIN/TTOU one worker more/less.
            Exit status: 0 stopped, 1 runtime failure, 64 usage error, 69 cannot listen, 78 configuration error.
            """,
        version: version
    )

    @Option(
        name: .long, help: ArgumentHelp("Read settings from this TOML file (re-read on SIGHUP).", valueName: "file"))
    var config: String?

    // One property per flag, as swift-argument-parser needs; each name and help comes from the
    // settings tables (Settings.table, each handler's table), and the raw text is applied
    // through them (see `flagInputs`).
    @Option(name: .setting("listen"), help: .setting("listen")) var listen: [String] = []
    @Option(name: .setting("workers"), help: .setting("workers")) var workers: String?
    @Option(name: .setting("initial-bytes"), help: .setting("initial-bytes")) var initialBytes: String?
    @Option(name: .setting("initial-timeout"), help: .setting("initial-timeout")) var initialTimeout: String?
    @Option(name: .setting("send-timeout"), help: .setting("send-timeout")) var sendTimeout: String?
    @Option(name: .setting("write-deadline"), help: .setting("write-deadline")) var writeDeadline: String?
    @Option(name: .setting("handler"), help: .setting("handler")) var handler: String?
    @Option(name: .setting("graceful-timeout"), help: .setting("graceful-timeout")) var gracefulTimeout: String?
    @Option(name: .setting("boot-timeout"), help: .setting("boot-timeout")) var bootTimeout: String?
    @Option(name: .setting("handler-timeout"), help: .setting("handler-timeout")) var handlerTimeout: String?
    @Option(name: .setting("max-connections-per-worker"), help: .setting("max-connections-per-worker"))
    var maxConnectionsPerWorker: String?
    @Option(name: .setting("min-spare"), help: .setting("min-spare")) var minSpare: String?
    @Option(name: .setting("max-workers"), help: .setting("max-workers")) var maxWorkers: String?
    @Option(name: .setting("spare-timeout"), help: .setting("spare-timeout")) var spareTimeout: String?
    @Option(name: .setting("runtime-directory"), help: .setting("runtime-directory")) var runtimeDirectory: String?
    @Option(name: .setting("backlog"), help: .setting("backlog")) var backlog: String?
    @Option(name: .setting("unix-mode"), help: .setting("unix-mode")) var unixMode: String?
    @Flag(name: .setting("fd-store"), inversion: .prefixedNo, help: .setting("fd-store")) var fdStore: Bool?
    @Flag(name: .setting("defer-accept"), inversion: .prefixedNo, help: .setting("defer-accept"))
    var deferAccept: Bool?
    @Option(name: .setting("open-files"), help: .setting("open-files")) var openFiles: String?
    @Option(name: .setting("user"), help: .setting("user")) var user: String?
    @Option(name: .setting("group"), help: .setting("group")) var group: String?
    @Flag(name: .setting("allow-root"), inversion: .prefixedNo, help: .setting("allow-root")) var allowRoot: Bool?
    @Option(name: .setting("accept-proxy"), help: .setting("accept-proxy")) var acceptProxy: String?
    @Option(name: .setting("accept-proxy-from"), help: .setting("accept-proxy-from")) var acceptProxyFrom: [String] = []
    @Option(name: .setting("log-level"), help: .setting("log-level")) var logLevel: String?
    @Option(name: .setting("log-format"), help: .setting("log-format")) var logFormat: String?
    @Flag(name: .setting("echo.keep-alive"), inversion: .prefixedNo, help: .setting("echo.keep-alive"))
    var echoKeepAlive: Bool?
    @Option(name: .setting("echo.idle-timeout"), help: .setting("echo.idle-timeout")) var echoIdleTimeout: String?
    @Option(name: .setting("echo.max-message-bytes"), help: .setting("echo.max-message-bytes"))
    var echoMaxMessageBytes: String?
    @Option(name: .setting("echo.message-timeout"), help: .setting("echo.message-timeout"))
    var echoMessageTimeout: String?
    @Option(name: .setting("echo.max-messages"), help: .setting("echo.max-messages")) var echoMaxMessages: String?
    @Option(name: .setting("echo.max-lifetime"), help: .setting("echo.max-lifetime")) var echoMaxLifetime: String?
    @Option(name: .setting("forward.probe-timeout"), help: .setting("forward.probe-timeout"))
    var forwardProbeTimeout: String?
    @Option(name: .setting("forward.connect-timeout"), help: .setting("forward.connect-timeout"))
    var forwardConnectTimeout: String?
    @Option(name: .setting("forward.idle-timeout"), help: .setting("forward.idle-timeout"))
    var forwardIdleTimeout: String?
    @Option(name: .setting("forward.probe-bytes"), help: .setting("forward.probe-bytes"))
    var forwardProbeBytes: String?
    @Option(name: .setting("forward.relay"), help: .setting("forward.relay")) var forwardRelay: String?

    @Flag(name: .long, help: "Validate everything, print the effective configuration, and exit.")
    var checkConfig = false

    /// What one flag was given as: the texts of each use, or the toggle's state.
    enum FlagInput {
        case texts([String])
        case toggle(Bool?)
    }

    /// Each flag's raw input, by its setting's key. A flag added above without an entry here is
    /// caught by the tests (every setting's flag must reach the setting).
    var flagInputs: [(key: String, input: FlagInput)] {
        func text(_ value: String?) -> FlagInput { .texts(value.map { [$0] } ?? []) }
        return [
            ("listen", .texts(listen)), ("workers", text(workers)), ("initial-bytes", text(initialBytes)),
            ("initial-timeout", text(initialTimeout)), ("send-timeout", text(sendTimeout)),
            ("write-deadline", text(writeDeadline)),
            ("handler", text(handler)), ("graceful-timeout", text(gracefulTimeout)),
            ("boot-timeout", text(bootTimeout)), ("handler-timeout", text(handlerTimeout)),
            ("max-connections-per-worker", text(maxConnectionsPerWorker)), ("min-spare", text(minSpare)),
            ("max-workers", text(maxWorkers)), ("spare-timeout", text(spareTimeout)),
            ("runtime-directory", text(runtimeDirectory)),
            ("backlog", text(backlog)),
            ("unix-mode", text(unixMode)), ("fd-store", .toggle(fdStore)), ("defer-accept", .toggle(deferAccept)),
            ("open-files", text(openFiles)), ("user", text(user)), ("group", text(group)),
            ("allow-root", .toggle(allowRoot)), ("accept-proxy", text(acceptProxy)),
            ("accept-proxy-from", .texts(acceptProxyFrom)),
            ("log-level", text(logLevel)),
            ("log-format", text(logFormat)), ("echo.keep-alive", .toggle(echoKeepAlive)),
            ("echo.idle-timeout", text(echoIdleTimeout)), ("echo.max-message-bytes", text(echoMaxMessageBytes)),
            ("echo.message-timeout", text(echoMessageTimeout)),
            ("echo.max-messages", text(echoMaxMessages)), ("echo.max-lifetime", text(echoMaxLifetime)),
            ("forward.probe-timeout", text(forwardProbeTimeout)),
            ("forward.connect-timeout", text(forwardConnectTimeout)),
            ("forward.idle-timeout", text(forwardIdleTimeout)), ("forward.probe-bytes", text(forwardProbeBytes)),
            ("forward.relay", text(forwardRelay)),
        ]
    }

    /// The command with no flags given.
    public init() {}

    /// Validates the settings, then prints them (`--check-config`) or runs the server until it
    /// stops; exits with the status of the README's table.
    public func run() throws {
        let settings: Settings
        do {
            settings = try loadSettings()
        } catch {
            throw fatal(error.source.isEmpty ? .usage : .configuration, error.description)
        }
        if checkConfig {
            print(settings.renderTOML(), terminator: "")
            return
        }
        let logger = LogSetup.bootstrap(level: settings.logLevel, format: settings.logFormat)
        // The loader's first call is the start-up's, in-process; later ones are reloads in the
        // running supervisor, which parses the file in a child so as not to keep TOMLKit's leak.
        let loads = LoadCount()
        let server = PreforkServer(logger: logger) { [self] in
            defer { loads.count += 1 }
            return try reloadSetup(isolated: loads.count > 0)
        }
        let status: PreforkExitCode
        do {
            status = try server.run()
        } catch {
            // One line on stderr, as for a bad flag (journald gets it through the stream too).
            throw fatal(error.exitCode, error.description)
        }
        if status != .success { throw ExitCode(status.rawValue) }
    }

    /// The setup at start and on each reload: the file again, the same command line on top.
    ///
    /// It changes nothing in the running process: the log level travels in the setup, and the
    /// engine applies it once the new generation takes over (a refused reload keeps the old one).
    /// `isolated` parses the file in a child process (``ConfigFile/apply(path:to:isolated:)``).
    func reloadSetup(isolated: Bool = false) throws -> ServerSetup {
        try loadSettings(isolated: isolated).makeSetup()
    }

    /// Defaults, then the config file, then the command line; validated.
    func loadSettings(isolated: Bool = false) throws(ConfigurationError) -> Settings {
        var settings = Settings()
        if let config {
            try ConfigFile.apply(path: config, to: &settings, isolated: isolated)
            do {
                try settings.validate()
            } catch {
                throw ConfigurationError(source: config, key: error.key, value: error.value, reason: error.reason)
            }
        }
        // The text of each flag given, by key: what a message about its value quotes.
        var given: [String: String] = [:]
        for (key, input) in flagInputs {
            let flag = FlagSetting.named(key)
            let value: SettingValue
            switch input {
            case .texts(let texts) where !texts.isEmpty:
                var values: [SettingValue] = []
                for text in texts {
                    do {
                        values.append(try flag.parse(text))
                    } catch {
                        throw ConfigurationError(key: "--" + flag.flagName, value: text, reason: error.reason)
                    }
                }
                value = flag.isRepeatable ? .array(values) : values.last!
                given[key] = texts.joined(separator: " ")
            case .toggle(let on?):
                value = .boolean(on)
                given[key] = "\(on)"
            default:
                continue
            }
            do {
                try flag.apply(value, to: &settings)
            } catch {
                throw ConfigurationError(
                    key: "--" + flag.flagName, value: error.value?.plainText ?? given[key]!, reason: error.reason)
            }
        }
        do {
            try settings.validate()
        } catch {
            // Only a command-line value can be wrong now: name it as its flag (a handler's flag
            // also reaches the listener tables; the message names the flag all the same).
            var key = error.key
            for name in settings.listeners.keys where key.hasPrefix("listeners.\(name).") {
                key.removeFirst("listeners.\(name).".count)
            }
            guard let text = given[key] else { throw error }
            let flag = FlagSetting.named(key)
            // The text as typed ("0.0", not "0"), but the one address at fault of a list.
            let repeatable = flag.isRepeatable
            throw ConfigurationError(
                key: "--" + flag.flagName, value: repeatable ? error.value : text, reason: error.reason)
        }
        return settings
    }

    private func fatal(_ code: PreforkExitCode, _ message: String) -> ExitCode {
        let line = "preforkd: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return ExitCode(code.rawValue)
    }
}

/// How many times the server's loader has run: the first is at start-up, the rest are reloads.
private final class LoadCount {
    var count = 0
}
