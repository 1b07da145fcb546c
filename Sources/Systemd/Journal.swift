import CSystemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// The systemd journal (`sd-journal(3)`), written through journald's native protocol.
public enum Journal {
    /// The longest field name journald accepts.
    public static let maximumFieldNameLength = 64

    /// True when standard error is connected to journald's stream socket, as for a service with
    /// `StandardError=journal`: `JOURNAL_STREAM` ("device:inode", decimal) matches `fstat(2)` of fd 2.
    ///
    /// A process that sees true should log natively (``send(_:)``, ``JournalLogHandler``) instead of
    /// writing text to standard error, so that fields and priorities survive.
    public static func isStandardErrorJournalStream() -> Bool {
        guard let value = Environment.value("JOURNAL_STREAM") else { return false }
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else {
            return false
        }
        var status = stat()
        guard fstat(STDERR_FILENO, &status) == 0 else { return false }
        return UInt64(status.st_dev) == device && UInt64(status.st_ino) == inode
    }

    /// Maps a swift-log metadata key to a valid journald field name, or nil when nothing valid remains.
    ///
    /// ASCII letters are upper-cased, digits kept, every other character becomes `_`; leading
    /// underscores are stripped (they mark fields only journald itself may set); a name that would
    /// start with a digit is prefixed with `X_`; the result is cut to 64 characters.
    /// "connection.peer" → "CONNECTION_PEER", "worker-pid" → "WORKER_PID".
    public static func fieldName(forMetadataKey key: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(key.utf8.count)
        for scalar in key.unicodeScalars {
            switch scalar.value {
            case 0x61...0x7A: bytes.append(UInt8(scalar.value) - 0x20)  // a-z
            case 0x41...0x5A, 0x30...0x39: bytes.append(UInt8(scalar.value))  // A-Z, 0-9
            default: bytes.append(UInt8(ascii: "_"))
            }
        }
        var name = bytes.drop(while: { $0 == UInt8(ascii: "_") })
        guard let first = name.first else { return nil }
        if (0x30...0x39).contains(first) {
            name = (Array("X_".utf8) + name)[...]
        }
        return String(decoding: name.prefix(self.maximumFieldNameLength), as: UTF8.self)
    }

    /// Whether `name` is a field name an application may send: 1 to 64 characters of `[A-Z0-9_]`,
    /// not starting with a digit or `_`.
    public static func isValidFieldName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard let first = utf8.first, utf8.count <= self.maximumFieldNameLength else { return false }
        guard (0x41...0x5A).contains(first) else { return false }
        return utf8.allSatisfy { (0x41...0x5A).contains($0) || (0x30...0x39).contains($0) || $0 == UInt8(ascii: "_") }
    }

    /// Sends one entry with the given fields, in order. Values may contain newlines and any bytes;
    /// a field may repeat. Without a `SYSLOG_IDENTIFIER` field, libsystemd adds the program name.
    ///
    /// The corresponding C function is `sd_journal_sendv(3)`. It adds no `CODE_FILE`/`CODE_LINE`
    /// here: pass them as fields. When no journald listens, the entry is dropped silently.
    ///
    /// - Throws: ``SystemCallError`` `EINVAL` for an invalid field name (see ``isValidFieldName(_:)``)
    ///   or an empty entry, the loader's error when libsystemd cannot be loaded, or the error
    ///   `sd_journal_sendv` reports. A send interrupted by a signal is made again.
    public static func send(_ fields: [(name: String, value: String)]) throws(SystemCallError) {
        guard !fields.isEmpty else {
            throw SystemCallError("sd_journal_sendv", "(no fields)", errno: .invalidArgument)
        }
        // One contiguous buffer holding every "NAME=value", and the ranges the iovecs point at.
        var buffer: [UInt8] = []
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(fields.count)
        for field in fields {
            guard self.isValidFieldName(field.name) else {
                throw SystemCallError("sd_journal_sendv", "field \"\(field.name)\"", errno: .invalidArgument)
            }
            let start = buffer.count
            buffer.append(contentsOf: field.name.utf8)
            buffer.append(UInt8(ascii: "="))
            buffer.append(contentsOf: field.value.utf8)
            ranges.append(start..<buffer.count)
        }
        try LibSystemd.load()
        _ = try buffer.withUnsafeMutableBytes { bytes in
            let vectors = ranges.map { range in
                iovec(iov_base: bytes.baseAddress! + range.lowerBound, iov_len: range.count)
            }
            return vectors.withUnsafeBufferPointer { vectors in
                valueOrNegatedErrno { pf_sd_journal_sendv(vectors.baseAddress, Int32(vectors.count)) }
            }
        }.get("sd_journal_sendv")
    }
}
