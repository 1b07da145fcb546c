import ArgumentParser
import Glibc
import Logging
import Prefork
import PreforkHandlers

/// `preforkd`: the command line. Synchronous on purpose — no async runtime may start before fork.
public struct PreforkdCommand: ParsableCommand {
    public static let version = "0.1.0"

    public static let configuration = CommandConfiguration(
        commandName: "preforkd",
        abstract: "A pre-fork TCP acceptor daemon: a supervisor, forked workers, blocking accept + initial read.",
        discussion: """
            Every option is also a config-file key (TOML), named as the long option without its dashes; \
            the echo handler's options sit in an [echo] table (--echo-keep-alive ↔ [echo] keep-alive). \
            The command line wins over the file. With no --listen and no socket from systemd, preforkd \
            listens on 127.0.0.1:11000.

            Signals: TERM/INT graceful stop, QUIT immediate stop, HUP reload, TTIN/TTOU one worker more/less.
            Exit status: 0 stopped, 1 runtime failure, 64 usage error, 69 cannot listen, 78 configuration error.
            """,
        version: version
    )

    @Option(
        name: .long, help: ArgumentHelp("Read settings from this TOML file (re-read on SIGHUP).", valueName: "file"))
    var config: String?

    @Option(
        name: [.short, .long],
        help: ArgumentHelp(
            "Listen on ADDR: 127.0.0.1:11000, [::1]:11000, *:11000 or unix:/path (repeatable; port 0 = ephemeral).",
            valueName: "addr"))
    var listen: [String] = []

    @Option(name: [.short, .long], help: ArgumentHelp("Worker processes (default: number of CPUs).", valueName: "n"))
    var workers: Int?

    @Option(name: .long, help: ArgumentHelp("Most bytes taken by the initial read (default 1024).", valueName: "n"))
    var initialBytes: Int?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Seconds a new connection may take to send its first bytes; also bounds each later read (default 10).",
            valueName: "s"))
    var initialTimeout: Double?

    @Option(
        name: .long,
        help: ArgumentHelp("Seconds a write may block on a client that does not read (default 30).", valueName: "s"))
    var sendTimeout: Double?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Handler: \(Settings.HandlerName.allCases.map(\.rawValue).joined(separator: " | ")) (default echo).",
            valueName: "name"))
    var handler: String?

    @Option(
        name: .long,
        help: ArgumentHelp("Seconds to drain on SIGTERM or reload before SIGKILL (default 30).", valueName: "s"))
    var gracefulTimeout: Double?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Accept queue length of bound listeners (default 4096, clamped by the kernel).", valueName: "n"))
    var backlog: Int?

    @Option(
        name: .long, help: ArgumentHelp("Octal permissions of unix socket files (default 0660).", valueName: "mode"))
    var unixMode: String?

    @Flag(
        name: .long, inversion: .prefixedNo,
        help:
            "Hand self-bound listeners to systemd's fd store so a restart keeps them (default: on when $FDSTORE is set)."
    )
    var fdStore: Bool?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "trace | debug | info | notice | warning | error | critical (default info).", valueName: "level"))
    var logLevel: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "auto | text | json | journal (default auto: journal when stderr is journald's stream).",
            valueName: "format"))
    var logFormat: String?

    @Flag(name: .long, inversion: .prefixedNo, help: "Echo: serve further messages on a connection (default off).")
    var echoKeepAlive: Bool?

    @Option(
        name: .long,
        help: ArgumentHelp("Echo: seconds to wait for the next message with keep-alive (default 15).", valueName: "s"))
    var echoIdleTimeout: Double?

    @Option(
        name: .long,
        help: ArgumentHelp("Echo: largest message accepted, tag included (default 1048576).", valueName: "bytes"))
    var echoMaxMessageBytes: Int?

    @Option(
        name: .long,
        help: ArgumentHelp("Echo: seconds a whole message may take to arrive (default 30).", valueName: "s"))
    var echoMessageTimeout: Double?

    @Flag(name: .long, help: "Validate everything, print the effective configuration, and exit.")
    var checkConfig = false

    public init() {}

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
        let server = PreforkServer(logger: logger) {
            // Reload: the file again, the same command line on top.
            let reloaded = try self.loadSettings()
            // The level applies to the new generation and the supervisor at once; the format
            // stays what it was at start (the log sink is chosen once).
            LogSetup.level = reloaded.logLevel
            return reloaded.makeSetup()
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

    /// Defaults, then the config file, then the command line; validated.
    func loadSettings() throws(ConfigurationError) -> Settings {
        var settings = Settings()
        if let config {
            try ConfigFile.apply(path: config, to: &settings)
            do {
                try settings.validate()
            } catch {
                throw ConfigurationError(source: config, key: error.key, value: error.value, reason: error.reason)
            }
        }
        try applyCommandLine(to: &settings)
        do {
            try settings.validate()
        } catch {
            // Only a command-line value can be wrong now: name it as its flag.
            let flag = "--" + error.key.replacingDots()
            throw ConfigurationError(key: flag, value: error.value, reason: error.reason)
        }
        return settings
    }

    private func applyCommandLine(to settings: inout Settings) throws(ConfigurationError) {
        if !listen.isEmpty {
            var addresses: [ListenAddress] = []
            for text in listen {
                do {
                    addresses.append(try ListenAddress(parsing: text))
                } catch {
                    throw ConfigurationError(key: "--listen", value: text, reason: error.reason)
                }
            }
            settings.server.listen = addresses
        }
        if let workers { settings.server.workers = workers }
        if let initialBytes { settings.server.initialBytes = initialBytes }
        if let initialTimeout { settings.server.initialTimeout = initialTimeout }
        if let sendTimeout { settings.server.sendTimeout = sendTimeout }
        if let gracefulTimeout { settings.server.gracefulTimeout = gracefulTimeout }
        if let backlog { settings.server.backlog = backlog }
        if let echoIdleTimeout { settings.echo.idleTimeout = echoIdleTimeout }
        if let echoMaxMessageBytes { settings.echo.maxMessageBytes = echoMaxMessageBytes }
        if let echoMessageTimeout { settings.echo.messageTimeout = echoMessageTimeout }
        if let echoKeepAlive { settings.echo.keepAlive = echoKeepAlive }
        if let fdStore { settings.server.fileDescriptorStore = fdStore }
        if let unixMode {
            guard let mode = UInt32(unixMode, radix: 8), mode <= 0o777 else {
                throw ConfigurationError(
                    key: "--unix-mode", value: unixMode, reason: "expected an octal mode such as 0660")
            }
            settings.server.unixMode = mode
        }
        if let handler { settings.handler = try choice("--handler", handler, Settings.HandlerName.self) }
        if let logLevel { settings.logLevel = try choice("--log-level", logLevel, Logger.Level.self) }
        if let logFormat { settings.logFormat = try choice("--log-format", logFormat, Settings.LogFormat.self) }
    }

    /// One of a fixed set of names, or an error listing them.
    private func choice<T: RawRepresentable & CaseIterable>(
        _ flag: String, _ text: String, _: T.Type
    ) throws(ConfigurationError) -> T where T.RawValue == String {
        guard let value = T(rawValue: text) else {
            let names = T.allCases.map(\.rawValue).joined(separator: ", ")
            throw ConfigurationError(key: flag, value: text, reason: "expected one of \(names)")
        }
        return value
    }

    private func fatal(_ code: PreforkExitCode, _ message: String) -> ExitCode {
        let line = "preforkd: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return ExitCode(code.rawValue)
    }
}

extension String {
    /// `echo.keep-alive` → `echo-keep-alive`.
    fileprivate func replacingDots() -> String {
        String(map { $0 == "." ? "-" : $0 })
    }
}
