import Logging
import Testing

@testable import Systemd

@Suite struct JournalLogHandlerFieldTests {
    struct Failure: Error, CustomStringConvertible {
        var description: String { "disk on fire" }
    }

    func event(
        _ level: Logger.Level,
        metadata: Logger.Metadata? = nil,
        error: (any Error)? = nil
    ) -> LogEvent {
        LogEvent(
            level: level,
            message: "hello",
            error: error,
            metadata: metadata,
            source: "Tests",
            file: "SystemdTests/File.swift",
            function: "run()",
            line: 42
        )
    }

    func dictionary(_ fields: [(name: String, value: String)]) -> [String: [String]] {
        fields.reduce(into: [:]) { $0[$1.name, default: []].append($1.value) }
    }

    @Test(arguments: [
        (Logger.Level.trace, "7"), (.debug, "7"), (.info, "6"), (.notice, "5"), (.warning, "4"),
        (.error, "3"), (.critical, "2"),
    ])
    func priorityFollowsSyslogLevels(level: Logger.Level, priority: String) {
        let fields = dictionary(JournalLogHandler(label: "l", identifier: "id").fields(for: event(level)))
        #expect(fields["PRIORITY"] == [priority])
    }

    @Test func standardFieldsComeFirstInOrder() {
        let fields = JournalLogHandler(label: "app.main", identifier: "preforkd").fields(for: event(.info))
        #expect(
            fields.map(\.name) == [
                "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC", "LOGGER_LABEL",
            ]
        )
        #expect(
            fields.map(\.value) == ["hello", "6", "preforkd", "SystemdTests/File.swift", "42", "run()", "app.main"]
        )
        let unlabelled = JournalLogHandler(label: "", identifier: "preforkd").fields(for: event(.info))
        #expect(!unlabelled.contains { $0.name == "LOGGER_LABEL" })
    }

    @Test func metadataMergesHandlerProviderAndCallInThatOrder() {
        var handler = JournalLogHandler(
            label: "l",
            identifier: "id",
            metadataProvider: Logger.MetadataProvider { ["shared": "provider", "provided.only": "p"] }
        )
        handler.metadata = ["shared": "handler", "handler.only": "h"]
        handler[metadataKey: "worker-pid"] = "7"
        #expect(handler[metadataKey: "worker-pid"] == "7")
        let fields = dictionary(
            handler.fields(for: event(.info, metadata: ["shared": "call", "nested": ["a": ["1", "2"]]]))
        )
        #expect(fields["SHARED"] == ["call"])
        #expect(fields["PROVIDED_ONLY"] == ["p"])
        #expect(fields["HANDLER_ONLY"] == ["h"])
        #expect(fields["WORKER_PID"] == ["7"])
        #expect(fields["NESTED"] == ["\(Logger.MetadataValue.dictionary(["a": ["1", "2"]]))"])
        #expect(fields["NESTED"]?.first?.contains("1") == true)
    }

    @Test func metadataNeverOverridesTheHandlersOwnFields() {
        let fields = dictionary(
            JournalLogHandler(label: "l", identifier: "id").fields(
                for: event(.info, metadata: ["message": "spoof", "priority": "0", "...": "dropped"])
            )
        )
        #expect(fields["MESSAGE"] == ["hello"])
        #expect(fields["PRIORITY"] == ["6"])
        #expect(fields["METADATA_MESSAGE"] == ["spoof"])
        #expect(fields["METADATA_PRIORITY"] == ["0"])
        #expect(fields.values.allSatisfy { !$0.contains("dropped") })
    }

    @Test func attachedErrorIsRecorded() {
        let fields = dictionary(
            JournalLogHandler(label: "l", identifier: "id").fields(for: event(.error, error: Failure()))
        )
        #expect(fields["ERROR_MESSAGE"] == ["disk on fire"])
        #expect(fields["ERROR_TYPE"]?.first?.hasSuffix("Failure") == true)
    }
}
