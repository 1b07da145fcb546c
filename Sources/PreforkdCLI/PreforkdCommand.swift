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

    /// Each flag's raw input, by its setting's key. A flag added above without an entry here is
    /// caught by the tests (every setting's flag must reach the setting).
    var flagInputs: [(key: String, input: Invocation.FlagInput)] {
        func text(_ value: String?) -> Invocation.FlagInput { .texts(value.map { [$0] } ?? []) }
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

    /// What the command line asks for, as ``Invocation`` runs it.
    var invocation: Invocation { Invocation(config: config, checkConfig: checkConfig, flags: flagInputs) }

    /// Validates the settings, then prints them (`--check-config`) or runs the server until it
    /// stops; exits with the status of the README's table.
    public func run() throws { try invocation.run() }

    /// The setup at start and on each reload (see ``Invocation/reloadSetup(isolated:)``).
    func reloadSetup(isolated: Bool = false) throws -> ServerSetup {
        try invocation.reloadSetup(isolated: isolated)
    }

    /// Defaults, then the config file, then the command line; validated.
    func loadSettings(isolated: Bool = false) throws(ConfigurationError) -> Settings {
        try invocation.loadSettings(isolated: isolated)
    }
}
