import Glibc
import Logging
import Systemd

/// What the engine runs: its configuration, the handler its workers use, and their log level.
public struct ServerSetup {
    /// Listeners, pool size, timeouts.
    public var configuration: ServerConfiguration
    /// The handler each worker copies after fork.
    public var handler: any ConnectionHandler
    /// The log level of this setup's generation, or nil to keep the level the engine's logger has.
    ///
    /// The engine sets it on its loggers (`Logger.logLevel`) only once the setup is in force:
    /// at start, and on a reload when the new generation takes over — in the supervisor then,
    /// and in each worker of that generation as it is forked. A reload that is refused or rolled
    /// back leaves the level as it was.
    public var logLevel: Logger.Level?

    /// Pairs a configuration with a handler, and optionally a log level.
    public init(configuration: ServerConfiguration, handler: any ConnectionHandler, logLevel: Logger.Level? = nil) {
        self.configuration = configuration
        self.handler = handler
        self.logLevel = logLevel
    }
}

/// Exit statuses of a preforkd process (the contract systemd's `RestartPreventExitStatus=` and
/// scripts rely on; documented in the README).
public enum PreforkExitCode: Int32, Sendable {
    /// Stopped on request.
    case success = 0
    /// A runtime failure: workers cannot boot, or the supervisor could not keep the pool.
    case failure = 1
    /// Bad command-line usage (EX_USAGE).
    case usage = 64
    /// A listener could not be bound: address in use, permission denied (EX_UNAVAILABLE).
    case unavailable = 69
    /// Invalid configuration: a bad flag value, config file, or environment (EX_CONFIG).
    case configuration = 78
}

/// A startup failure: nothing was forked, and the one-line description says why.
public struct StartupError: Error, CustomStringConvertible {
    /// The exit status that fits this failure.
    public let exitCode: PreforkExitCode
    /// One line naming the bad value or the failed operation.
    public let description: String

    /// Creates an error with its exit status.
    public init(_ exitCode: PreforkExitCode, _ description: String) {
        self.exitCode = exitCode
        self.description = description
    }
}

/// The pre-fork engine: bind, fork the workers, supervise them until stopped.
///
/// Embedding it takes a few lines:
///
/// ```swift
/// var configuration = ServerConfiguration()
/// configuration.listen = [try ListenAddress(parsing: "127.0.0.1:12000")]
/// PreforkServer(configuration: configuration, handler: MyHandler(), logger: logger).runAndExit()
/// ```
///
/// `run()` must be called from a single-threaded process (no Dispatch queue or Swift `Task`
/// used before it): it forks, and it checks the thread count before every fork.
public struct PreforkServer {
    /// Produces the setup at start and again on each SIGHUP (reload). A throw on reload keeps
    /// the running generation.
    public typealias Loader = () throws -> ServerSetup

    private let loader: Loader
    private let logger: Logger

    /// Creates a server whose setup comes from `loader` (re-run on reload).
    ///
    /// Sockets passed by systemd (socket activation, or its fd store) are taken when `run()`
    /// starts: activated ones replace the configured `listen` addresses and are never closed.
    public init(logger: Logger, loader: @escaping Loader) {
        self.loader = loader
        self.logger = logger
    }

    /// Creates a server with a fixed configuration and handler.
    public init(configuration: ServerConfiguration, handler: some ConnectionHandler, logger: Logger) {
        self.init(logger: logger) { ServerSetup(configuration: configuration, handler: handler) }
    }

    /// Runs until stopped by a signal, then ends the process with its exit status; a startup
    /// failure ends it too, with one line on stderr (`NAME: reason`, NAME being the program's
    /// name) and the failure's status (``StartupError/exitCode``).
    ///
    /// The whole of a `main.swift` can be building the configuration and calling this.
    public func runAndExit() -> Never {
        let status: PreforkExitCode
        do {
            status = try run()
        } catch {
            let program = CommandLine.arguments.first?.split(separator: "/").last.map(String.init) ?? "prefork"
            let line = "\(program): \(error.description)\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
            status = error.exitCode
        }
        exit(status.rawValue)
    }

    /// Runs until stopped by a signal; returns the exit status for the process.
    ///
    /// - Throws: ``StartupError`` when the setup is invalid or a listener cannot be bound;
    ///   nothing has been forked then.
    public func run() throws(StartupError) -> PreforkExitCode {
        let setup: ServerSetup
        do {
            setup = try loader()
            try setup.configuration.validate()
        } catch let error as ConfigurationError {
            throw StartupError(.configuration, error.description)
        } catch let error as StartupError {
            throw error
        } catch {
            throw StartupError(.configuration, "\(error)")
        }
        // The probe of an in-place upgrade: this binary loads and its setup is valid; answer, and
        // touch nothing of the running service.
        if let nonce = UpgradeProbe.requestedNonce {
            UpgradeProbe.respond(nonce: nonce)
            return .success
        }
        let handover = try UpgradeHandover.take()
        let inherited: [ActivatedSocket]
        do {
            // Unsets LISTEN_*: workers and anything they run never see them.
            inherited = try SocketActivation.takeSockets()
        } catch {
            throw StartupError(.configuration, "socket activation: \(error)")
        }
        var logger = logger
        // The first generation is in force from here on.
        if let level = setup.logLevel { logger.logLevel = level }
        // Before anything is bound: a start that could not switch user stops here.
        let account = try Privileges.plan(for: setup.configuration)
        // Before any socket is opened, and inherited by every worker.
        try OpenFileLimit.apply(setup.configuration.openFiles, logger: logger)
        let supervisor = try Supervisor(
            setup: setup, inherited: inherited, handover: handover, account: account, loader: loader,
            logger: logger)
        return supervisor.run()
    }
}
