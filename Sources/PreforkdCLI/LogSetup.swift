import Logging
import Prefork
import Systemd

/// Log set-up for the executable (library code only ever receives a `Logger`).
enum LogSetup {
    /// Bootstraps swift-log once and returns the supervisor's logger.
    ///
    /// `auto` writes structured journald entries when stderr is journald's stream (systemd sets
    /// JOURNAL_STREAM for `StandardError=journal`), text lines otherwise.
    static func bootstrap(level: Logger.Level, format: Settings.LogFormat) -> Logger {
        let journal = format == .journal || (format == .auto && Journal.isStandardErrorJournalStream())
        if journal {
            LoggingSystem.bootstrap { label in
                var handler = JournalLogHandler(label: label, identifier: "preforkd")
                handler.logLevel = level
                return RoleMetadataHandler(handler)
            }
        } else {
            let textFormat: TextLogHandler.Format = format == .json ? .json : .text
            LoggingSystem.bootstrap { _ in TextLogHandler(level: level, format: textFormat) }
        }
        return Logger(label: "preforkd")
    }
}

/// Adds the process role (ROLE=supervisor / worker N) to each journald entry, as the text
/// format prints it in every line.
struct RoleMetadataHandler<Wrapped: LogHandler>: LogHandler {
    var wrapped: Wrapped

    init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
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
        var event = event
        var metadata = event.metadata ?? [:]
        metadata["role"] = "\(ProcessRole.current)"
        event.metadata = metadata
        wrapped.log(event: event)
    }
}
