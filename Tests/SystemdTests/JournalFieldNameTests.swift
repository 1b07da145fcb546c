import Testing

@testable import Systemd

@Suite struct JournalFieldNameTests {
    static let cases: [(String, String?)] = [
        ("connection.peer", "CONNECTION_PEER"),
        ("worker-pid", "WORKER_PID"),
        ("WORKER_PID", "WORKER_PID"),
        ("requestID", "REQUESTID"),
        ("a b/c:d", "A_B_C_D"),
        ("_private", "PRIVATE"),
        ("__cursor", "CURSOR"),
        ("2fa", "X_2FA"),
        ("_9lives", "X_9LIVES"),
        ("é.key", "KEY"),
        ("ключ", nil),
        ("", nil),
        ("...", nil),
        ("_", nil),
        (String(repeating: "k", count: 70), String(repeating: "K", count: 64)),
        ("1" + String(repeating: "k", count: 70), "X_1" + String(repeating: "K", count: 61)),
    ]

    @Test(arguments: Self.cases)
    func metadataKeyMapsToFieldName(key: String, expected: String?) {
        let name = Journal.fieldName(forMetadataKey: key)
        #expect(name == expected)
        if let name { #expect(Journal.isValidFieldName(name)) }
    }

    @Test(arguments: [
        ("MESSAGE", true), ("CODE_LINE", true), ("X_1", true), ("_PID", false), ("1X", false),
        ("message", false), ("A-B", false), ("", false), (String(repeating: "A", count: 65), false),
        (String(repeating: "A", count: 64), true),
    ])
    func fieldNameValidity(name: String, valid: Bool) {
        #expect(Journal.isValidFieldName(name) == valid)
    }

    @Test func sendRejectsInvalidFieldNamesBeforeSending() {
        #expect(throws: SystemCallError("sd_journal_sendv", "field \"bad-name\"", errno: .invalidArgument)) {
            try Journal.send([("MESSAGE", "x"), ("bad-name", "y")])
        }
        #expect(throws: SystemCallError("sd_journal_sendv", "(no fields)", errno: .invalidArgument)) {
            try Journal.send([])
        }
    }
}
