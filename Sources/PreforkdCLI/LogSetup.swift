import Logging
import Prefork

/// Log set-up for the executable (library code only ever receives a `Logger`).
enum LogSetup {
    /// Bootstraps swift-log once and returns the supervisor's logger.
    static func bootstrap(level: Logger.Level, format: Settings.LogFormat) -> Logger {
        let textFormat: TextLogHandler.Format = format == .json ? .json : .text
        LoggingSystem.bootstrap { _ in TextLogHandler(level: level, format: textFormat) }
        return Logger(label: "preforkd")
    }
}
