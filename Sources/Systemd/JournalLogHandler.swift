import Logging

/// A swift-log `LogHandler` writing structured entries to the systemd journal (``Journal/send(_:)``).
///
/// Each entry carries `MESSAGE`, `PRIORITY` (trace and debug 7, info 6, notice 5, warning 4,
/// error 3, critical 2), `SYSLOG_IDENTIFIER`, `CODE_FILE`, `CODE_LINE`, `CODE_FUNC`, `LOGGER_LABEL`
/// (when the label is not empty), `ERROR_MESSAGE`/`ERROR_TYPE` when an error is attached, and every
/// metadata entry — the handler's, the metadata provider's and the call's, merged in that order,
/// later ones winning — under its ``Journal/fieldName(forMetadataKey:)`` name. A key that maps to a
/// field the handler sets itself is sent as `METADATA_<NAME>`; a key with no valid name is dropped.
/// Nested metadata values are rendered with their description.
///
/// A value type, like swift-log's `StreamLogHandler`: copies have independent levels and metadata.
/// Sending failures are ignored, as a log call cannot report them.
public struct JournalLogHandler: LogHandler {
    /// The logger's label, sent as `LOGGER_LABEL`.
    public let label: String
    /// The `SYSLOG_IDENTIFIER`, what `journalctl -t` selects.
    public let identifier: String
    /// The minimum level logged; `Logger` filters before calling ``log(event:)``.
    public var logLevel: Logger.Level = .info
    /// Contextual metadata added to every entry (after ``metadata``, before per-call metadata).
    public var metadataProvider: Logger.MetadataProvider?
    /// Metadata added to every entry.
    public var metadata: Logger.Metadata = [:]

    /// Creates a handler for the logger `label`, writing entries identified as `identifier`.
    public init(label: String, identifier: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.identifier = identifier
        self.metadataProvider = metadataProvider
    }

    /// Reads or writes one entry of ``metadata``.
    public subscript(metadataKey metadataKey: String) -> Logger.Metadata.Value? {
        get { self.metadata[metadataKey] }
        set { self.metadata[metadataKey] = newValue }
    }

    /// The journald `PRIORITY` (a syslog level) for a swift-log level.
    public static func priority(for level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    /// Fields this handler sets itself; metadata never overrides them.
    private static let reservedFields: Set<String> = [
        "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
        "LOGGER_LABEL", "ERROR_MESSAGE", "ERROR_TYPE",
    ]

    /// The fields of the entry ``log(event:)`` sends, in order.
    public func fields(for event: LogEvent) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = [
            ("MESSAGE", event.message.description),
            ("PRIORITY", String(Self.priority(for: event.level))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("CODE_FILE", event.file),
            ("CODE_LINE", String(event.line)),
            ("CODE_FUNC", event.function),
        ]
        if !self.label.isEmpty {
            fields.append(("LOGGER_LABEL", self.label))
        }
        if let error = event.error {
            fields.append(("ERROR_MESSAGE", "\(error)"))
            fields.append(("ERROR_TYPE", String(reflecting: type(of: error))))
        }

        var merged = self.metadata
        if let provided = self.metadataProvider?.get(), !provided.isEmpty {
            merged.merge(provided) { _, provided in provided }
        }
        if let explicit = event.metadata, !explicit.isEmpty {
            merged.merge(explicit) { _, explicit in explicit }
        }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            guard var name = Journal.fieldName(forMetadataKey: key) else { continue }
            if Self.reservedFields.contains(name) {
                name = String("METADATA_\(name)".prefix(Journal.maximumFieldNameLength))
            }
            fields.append((name, "\(value)"))
        }
        return fields
    }

    /// Sends the event as one journal entry (`sd_journal_sendv(3)`).
    public func log(event: LogEvent) {
        try? Journal.send(self.fields(for: event))
    }
}
