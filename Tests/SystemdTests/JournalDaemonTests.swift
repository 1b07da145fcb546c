import Logging
import TestSupport
import Testing

@testable import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Entries written through journald and read back with journalctl. Uses the running journald, or
/// starts a standalone one for the suite's duration and removes its runtime files afterwards.
@Suite(.serialized) struct JournalDaemonTests {
    /// Runs `body` with a journald listening (see `Journald.with`).
    func withJournald(_ body: () throws -> Void) throws { try Journald.with(body) }

    /// The entries journalctl finds for `identifier`, each a field → values map, retried until at least
    /// `count` are there (deadline 10 s). Parses journalctl's export format, binary fields included.
    func readEntries(identifier: String, count: Int = 1) throws -> [[String: [String]]] {
        let deadline = Deadline(seconds: 10)
        while true {
            let result = try runChild(
                "/usr/bin/journalctl",
                ["--no-pager", "-o", "export", "-t", identifier],
                environment: ["PATH=/usr/bin:/bin"]
            )
            let entries = Self.parseExport(result.bytes)
            if entries.count >= count { return entries }
            try #require(!deadline.hasPassed, "no journal entry for \(identifier) within 10 s: \(result.output)")
            sleepMilliseconds(20)
        }
    }

    /// journalctl -o export: "NAME=value\n" lines, or "NAME\n" + 64-bit LE size + data + "\n";
    /// a blank line ends an entry.
    static func parseExport(_ bytes: [UInt8]) -> [[String: [String]]] {
        var entries: [[String: [String]]] = []
        var entry: [String: [String]] = [:]
        var index = 0
        while index < bytes.count {
            guard let newline = bytes[index...].firstIndex(of: 0x0A) else { break }
            let line = bytes[index..<newline]
            index = newline + 1
            if line.isEmpty {
                if !entry.isEmpty { entries.append(entry) }
                entry = [:]
            } else if let equals = line.firstIndex(of: UInt8(ascii: "=")) {
                let name = String(decoding: line[..<equals], as: UTF8.self)
                entry[name, default: []].append(String(decoding: line[(equals + 1)...], as: UTF8.self))
            } else {
                guard index + 8 <= bytes.count else { break }
                let size = (0..<8).reduce(0) { $0 | Int(bytes[index + $1]) << (8 * $1) }
                index += 8
                guard index + size <= bytes.count else { break }
                entry[String(decoding: line, as: UTF8.self), default: []].append(
                    String(decoding: bytes[index..<(index + size)], as: UTF8.self)
                )
                index += size + 1
            }
        }
        if !entry.isEmpty { entries.append(entry) }
        return entries
    }

    @Test func handlerWritesStructuredEntry() throws {
        try withJournald {
            let identifier = uniqueName("systemd-tests")
            var handler = JournalLogHandler(
                label: "preforkd.tests",
                identifier: identifier,
                metadataProvider: Logger.MetadataProvider { ["request.id": "r-17"] }
            )
            handler.metadata["worker-pid"] = "4242"
            handler.logLevel = .debug
            let logger = Logger(label: "preforkd.tests") { _ in handler }
            logger.trace("dropped below the level")
            logger.warning("accept failed", metadata: ["connection.peer": "127.0.0.1:5555", "detail": "two\nlines"])
            let line = #line - 1

            let entries = try readEntries(identifier: identifier)
            try #require(entries.count == 1, "only the warning passes the level: \(entries)")
            let entry = entries[0]
            #expect(entry["MESSAGE"] == ["accept failed"])
            #expect(entry["PRIORITY"] == ["4"])
            #expect(entry["SYSLOG_IDENTIFIER"] == [identifier])
            #expect(entry["CODE_FILE"] == [#fileID])
            #expect(entry["CODE_LINE"] == ["\(line)"])
            #expect(entry["CODE_FUNC"] == [#function])
            #expect(entry["LOGGER_LABEL"] == ["preforkd.tests"])
            #expect(entry["CONNECTION_PEER"] == ["127.0.0.1:5555"])
            #expect(entry["WORKER_PID"] == ["4242"])
            #expect(entry["REQUEST_ID"] == ["r-17"])
            #expect(entry["DETAIL"] == ["two\nlines"])
            #expect(entry["_PID"] == ["\(getpid())"])
        }
    }

    @Test func sendKeepsFieldOrderRepeatsAndBinaryValues() throws {
        try withJournald {
            let identifier = uniqueName("systemd-tests")
            let binary = "tab\there\u{1}\nnext"
            try Journal.send([
                ("MESSAGE", "first"), ("SYSLOG_IDENTIFIER", identifier), ("PRIORITY", "6"),
                ("TAG", "a"), ("TAG", "b"), ("PAYLOAD", binary), ("EMPTY", ""),
            ])
            try Journal.send([("MESSAGE", "second"), ("SYSLOG_IDENTIFIER", identifier), ("PRIORITY", "3")])
            let entries = try readEntries(identifier: identifier, count: 2)
            try #require(entries.count == 2)
            #expect(entries[0]["MESSAGE"] == ["first"])
            #expect(entries[0]["TAG"] == ["a", "b"])
            #expect(entries[0]["PAYLOAD"] == [binary])
            #expect(entries[0]["EMPTY"] == [""])
            #expect(entries[1]["MESSAGE"] == ["second"])
            #expect(entries[1]["PRIORITY"] == ["3"])
        }
    }
}
