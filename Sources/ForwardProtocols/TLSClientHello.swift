/// The parts of a TLS ClientHello that routing needs: the server name (SNI, RFC 6066) and the
/// offered application protocols (ALPN, RFC 7301).
///
/// ``probe(_:)-(UnsafeRawBufferPointer)`` reassembles the handshake message from as many TLS
/// records as it spans (a ClientHello may be fragmented across records and arrive across several
/// reads), checks every length against its enclosing one, and answers ``ProbeResult/needMore(atLeast:)``
/// until the whole ClientHello is there. It never allocates more than the bytes it was given.
public struct TLSClientHello: Sendable, Equatable {
    /// The ClientHello's `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    public var legacyVersion: UInt16
    /// The `host_name` from the server_name extension, lower-cased; nil when the client sent none.
    /// A name that is not a DNS host name (letters, digits, `-`, `_`, dot-separated labels of 1–63
    /// bytes, at most 253 bytes, no trailing dot) makes the whole ClientHello malformed.
    public var serverName: String?
    /// The ALPN protocol names in the client's order; empty when the client sent no ALPN extension.
    public var alpnProtocols: [String]

    /// Creates a value (for tests and for callers that build routes by hand).
    public init(legacyVersion: UInt16, serverName: String?, alpnProtocols: [String]) {
        self.legacyVersion = legacyVersion
        self.serverName = serverName
        self.alpnProtocols = alpnProtocols
    }

    /// The largest ClientHello accepted, in handshake bytes (16 KiB: today's largest real ones,
    /// with post-quantum key shares, are about 2 KiB). A longer declared length is `noMatch`.
    public static let maximumHandshakeLength = 16384

    /// Probes bytes a client sent first. `.match` for a well-formed ClientHello, `.needMore` while
    /// the bytes are a well-formed beginning of one, `.noMatch` for anything else (SSLv2-style
    /// hellos, other record types, malformed or oversized lengths).
    public static func probe(_ bytes: [UInt8]) -> ProbeResult<TLSClientHello> {
        bytes.withUnsafeBytes { probe($0) }
    }

    /// Probes bytes a client sent first; see ``probe(_:)-([UInt8])``.
    public static func probe(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<TLSClientHello> {
        // Fast path: the whole ClientHello sits in the first record, as real clients send it.
        if bytes.count >= 9, bytes[0] == 22, bytes[1] == 3, bytes[2] <= 3, bytes[5] == 1 {
            let recordLength = Int(bytes[3]) << 8 | Int(bytes[4])
            let bodyLength = Int(bytes[6]) << 16 | Int(bytes[7]) << 8 | Int(bytes[8])
            if recordLength <= maximumRecordLength, bodyLength <= maximumHandshakeLength - 4,
                4 + bodyLength <= recordLength, 9 + bodyLength <= bytes.count
            {
                return parseBody(ByteCursor(bytes, from: 9, to: 9 + bodyLength))
            }
        }
        return reassembleAndParse(bytes)
    }

    /// TLS records carry at most 2^14 bytes of plaintext (RFC 8446 §5.1).
    static let maximumRecordLength = 16384

    /// The general path: walks the records, copying only handshake bytes actually present.
    private static func reassembleAndParse(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<TLSClientHello> {
        var message: [UInt8] = []
        var messageLength: Int?  // 4 + body length, known once the handshake header is in
        var offset = 0
        while true {
            if let messageLength, message.count >= messageLength { break }
            let stillNeeded = (messageLength ?? 4) - message.count
            // The next record header.
            let headerBytes = bytes.count - offset
            if headerBytes < 5 {
                if headerBytes >= 1, bytes[offset] != 22 { return .noMatch }
                if headerBytes >= 2, bytes[offset + 1] != 3 { return .noMatch }
                if headerBytes >= 3, bytes[offset + 2] > 3 { return .noMatch }
                if headerBytes == 4, bytes[offset + 3] > 0x40 { return .noMatch }
                return .needMore(atLeast: offset + 5 + stillNeeded)
            }
            guard bytes[offset] == 22, bytes[offset + 1] == 3, bytes[offset + 2] <= 3 else { return .noMatch }
            let recordLength = Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4])
            // Empty handshake fragments are forbidden (RFC 8446 §5.1) and would let a client feed
            // the probe headers forever.
            guard recordLength >= 1, recordLength <= maximumRecordLength else { return .noMatch }
            let fragmentStart = offset + 5
            let present = min(recordLength, bytes.count - fragmentStart)
            // Copy no more than the message still needs: bytes after the ClientHello are ignored.
            var index = fragmentStart
            while index < fragmentStart + present {
                if let messageLength, message.count >= messageLength { break }
                message.append(bytes[index])
                index += 1
                if messageLength == nil, message.count == 4 {
                    guard message[0] == 1 else { return .noMatch }
                    let bodyLength = Int(message[1]) << 16 | Int(message[2]) << 8 | Int(message[3])
                    guard bodyLength <= maximumHandshakeLength - 4 else { return .noMatch }
                    messageLength = 4 + bodyLength
                } else if message.count == 1, message[0] != 1 {
                    return .noMatch
                }
            }
            if let messageLength, message.count >= messageLength { break }
            if present < recordLength {
                // The least a match needs: the rest of the message, plus another record header
                // if this record ends before the message does.
                let missing = (messageLength ?? 4) - message.count
                let leftInRecord = recordLength - present
                if missing <= leftInRecord { return .needMore(atLeast: bytes.count + missing) }
                return .needMore(atLeast: fragmentStart + recordLength + 5 + missing - leftInRecord)
            }
            offset = fragmentStart + recordLength
        }
        return message.withUnsafeBytes { parseBody(ByteCursor($0, from: 4)) }
    }

    /// Parses a complete ClientHello body (after the 4-byte handshake header). Every field must
    /// fit its enclosing length exactly; anything else is malformed.
    static func parseBody(_ body: ByteCursor) -> ProbeResult<TLSClientHello> {
        var body = body
        guard let legacyVersion = body.readUInt16(), legacyVersion >> 8 == 3 else { return .noMatch }
        guard body.skip(32) else { return .noMatch }  // random
        guard let sessionIDLength = body.readUInt8(), sessionIDLength <= 32, body.skip(Int(sessionIDLength)) else {
            return .noMatch
        }
        guard let suitesLength = body.readUInt16(), suitesLength >= 2, suitesLength % 2 == 0,
            body.skip(Int(suitesLength))
        else { return .noMatch }
        guard let compressionLength = body.readUInt8(), compressionLength >= 1, body.skip(Int(compressionLength))
        else { return .noMatch }
        var hello = TLSClientHello(legacyVersion: legacyVersion, serverName: nil, alpnProtocols: [])
        // A TLS 1.2 hello may end here: extensions are optional.
        if body.isAtEnd { return .match(hello) }
        guard let extensionsLength = body.readUInt16(), var extensions = body.slice(Int(extensionsLength)),
            body.isAtEnd
        else { return .noMatch }
        var sawServerName = false
        var sawALPN = false
        while !extensions.isAtEnd {
            guard let type = extensions.readUInt16(), let length = extensions.readUInt16(),
                let data = extensions.slice(Int(length))
            else { return .noMatch }
            switch type {
            case 0:
                guard !sawServerName, case .some(let name) = parseServerName(data) else { return .noMatch }
                sawServerName = true
                hello.serverName = name
            case 16:
                guard !sawALPN, let protocols = parseALPN(data) else { return .noMatch }
                sawALPN = true
                hello.alpnProtocols = protocols
            default:
                break
            }
        }
        return .match(hello)
    }

    /// The server_name extension: a non-empty list holding at most one `host_name` (type 0);
    /// entries of other name types are skipped. nil when malformed; `.some(nil)` when the list
    /// is well-formed but names no host.
    private static func parseServerName(_ data: ByteCursor) -> String?? {
        var data = data
        guard let listLength = data.readUInt16(), listLength >= 3, Int(listLength) == data.remaining else {
            return nil
        }
        var hostName: String?
        while !data.isAtEnd {
            guard let nameType = data.readUInt8(), let length = data.readUInt16(), let name = data.slice(Int(length))
            else { return nil }
            if nameType == 0 {
                guard hostName == nil, let valid = HostName.validatedLowercased(name.bytes, name.offset, name.end)
                else { return nil }
                hostName = valid
            }
        }
        return .some(hostName)
    }

    /// The ALPN extension: a non-empty list of non-empty names (RFC 7301 §3.1).
    private static func parseALPN(_ data: ByteCursor) -> [String]? {
        var data = data
        guard let listLength = data.readUInt16(), listLength >= 2, Int(listLength) == data.remaining else {
            return nil
        }
        var protocols: [String] = []
        while !data.isAtEnd {
            guard let length = data.readUInt8(), length >= 1, let name = data.slice(Int(length)) else { return nil }
            let raw = UnsafeRawBufferPointer(rebasing: name.bytes[name.offset..<name.end])
            protocols.append(String(decoding: raw, as: UTF8.self))
        }
        return protocols
    }

    /// True when the client offered at least one of `protocols` (exact, case-sensitive names as
    /// RFC 7301 defines them). An empty `protocols` list is "no ALPN condition" and is true.
    public func offersALPN(anyOf protocols: [String]) -> Bool {
        protocols.isEmpty || firstOfferedALPN(among: protocols) != nil
    }

    /// The first protocol, in the client's order of preference, that is also in `protocols`.
    public func firstOfferedALPN(among protocols: [String]) -> String? {
        alpnProtocols.first { protocols.contains($0) }
    }
}
