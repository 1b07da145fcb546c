import Logging
import Prefork
import Systemd

/// Log set-up for the executable (library code only ever receives a `Logger`).
enum LogSetup {
    /// The level every logger of this process uses. The engine changes it through
    /// `Logger.logLevel` when a generation takes over (``Prefork/ServerSetup/logLevel``): in the
    /// supervisor, and in each worker it forks for that generation. The supervisor is
    /// single-threaded and a worker has one thread: no lock needed.
    nonisolated(unsafe) static var level = Logger.Level.info

    /// Bootstraps swift-log once and returns the supervisor's logger.
    ///
    /// `auto` writes structured journald entries when stderr is journald's stream (systemd sets
    /// JOURNAL_STREAM for `StandardError=journal`), text lines otherwise. Journal entries need
    /// libsystemd: when it cannot be loaded, text lines go to stderr instead, after one warning.
    static func bootstrap(level: Logger.Level, format: Settings.LogFormat) -> Logger {
        self.level = level
        var journal = format == .journal || (format == .auto && Journal.isStandardErrorJournalStream())
        var unavailable: SystemCallError?
        if journal {
            do {
                try LibSystemd.load()
            } catch {
                journal = false
                unavailable = error
            }
        }
        if journal {
            LoggingSystem.bootstrap { label in
                PreforkdLogHandler(JournalLogHandler(label: label, identifier: "preforkd"), addsRole: true)
            }
        } else {
            let textFormat: TextLogHandler.Format = format == .json ? .json : .text
            LoggingSystem.bootstrap { _ in
                PreforkdLogHandler(TextLogHandler(format: textFormat), addsRole: false)
            }
        }
        let logger = Logger(label: "preforkd")
        if let unavailable {
            logger.warning("Logging text to stderr instead of entries to the journal: \(unavailable)")
        }
        return logger
    }
}

/// Wraps the chosen log handler: its level is ``LogSetup/level`` (so `log-level` follows a
/// reload), and for journald it adds the process role (ROLE=supervisor / worker N), which the
/// text format prints in every line.
struct PreforkdLogHandler<Wrapped: LogHandler>: LogHandler {
    var wrapped: Wrapped
    let addsRole: Bool

    init(_ wrapped: Wrapped, addsRole: Bool) {
        self.wrapped = wrapped
        self.wrapped.logLevel = .trace  // filtering happens here, by LogSetup.level
        self.addsRole = addsRole
    }

    var logLevel: Logger.Level {
        get { LogSetup.level }
        set { LogSetup.level = newValue }
    }

    var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        guard addsRole else { return wrapped.log(event: event) }
        var event = event
        var metadata = event.metadata ?? [:]
        metadata["role"] = "\(ProcessRole.current)"
        event.metadata = metadata
        wrapped.log(event: event)
    }
}
