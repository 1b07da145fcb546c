/// The PROXY protocol versions (HAProxy's `doc/proxy-protocol.txt`).
public enum ProxyProtocolVersion: Sendable, Hashable {
    /// The text header: `PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\n`, at most 107 bytes.
    case v1
    /// The binary header: a 12-byte signature, 4 bytes of version, command, family and length,
    /// then the addresses and optional TLVs.
    case v2
}

/// A PROXY protocol header that a trusted proxy put in front of a connection's first bytes.
public struct ProxyHeader: Sendable, Equatable {
    /// The version the header was written in.
    public var version: ProxyProtocolVersion
    /// The client's address and port; nil when the header carries none (v1 `UNKNOWN`, v2
    /// `LOCAL`, the unspecified or the unix family). The caller then uses the connection's own peer.
    public var source: IPEndpoint?
    /// The address and port the client connected to; nil exactly when `source` is.
    public var destination: IPEndpoint?
    /// The header's length in bytes: the client's own data starts after it.
    public var length: Int

    /// Creates a value.
    public init(version: ProxyProtocolVersion, source: IPEndpoint?, destination: IPEndpoint?, length: Int) {
        self.version = version
        self.source = source
        self.destination = destination
        self.length = length
    }

    /// The longest v1 header, CRLF included (the specification's limit).
    public static let maximumV1Length = 107
    /// The longest v2 header accepted: 16 bytes plus an address block of at most 2 KiB (the unix
    /// addresses take 216; the rest is room for TLVs such as a unique id or TLS details).
    public static let maximumV2Length = 16 + 2048

    static let v2Signature: StaticString = "\r\n\r\n\0\r\nQUIT\n"

    /// Reads a PROXY header at the start of `bytes`, accepting the given versions (both when
    /// `versions` holds both). `.needMore` while the bytes are a valid beginning of a header;
    /// `.noMatch` for anything malformed, truncated by its own length fields, over the limits,
    /// or of a version not accepted. Bytes after the header are not looked at.
    public static func parse(_ bytes: [UInt8], accepting versions: Set<ProxyProtocolVersion> = [.v1, .v2])
        -> ProbeResult<ProxyHeader>
    {
        bytes.withUnsafeBytes { parse($0, accepting: versions) }
    }

    /// Reads a PROXY header at the start of `bytes`; see ``parse(_:accepting:)-([UInt8],_)``.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, accepting versions: Set<ProxyProtocolVersion> = [.v1, .v2]
    )
        -> ProbeResult<ProxyHeader>
    {
        guard !versions.isEmpty else { return .noMatch }
        // The shortest headers: `PROXY UNKNOWN\r\n` (15 bytes) and a v2 header with no block (16).
        guard let first = bytes.first else { return .needMore(atLeast: versions.contains(.v1) ? 15 : 16) }
        if first == 0x50, versions.contains(.v1) { return parseV1(bytes) }
        if first == 0x0D, versions.contains(.v2) { return parseV2(bytes) }
        return .noMatch
    }

    // MARK: v1

    static func parseV1(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<ProxyHeader> {
        let matched = bytes.matchedPrefixLength("PROXY ")
        if matched < 6 { return matched == bytes.count ? .needMore(atLeast: 6) : .noMatch }
        // The line ends within 107 bytes or the header is invalid.
        let searchEnd = min(bytes.count, maximumV1Length)
        guard let lineFeed = bytes.firstIndex(of: 0x0A, from: 6, to: searchEnd) else {
            if bytes.count >= maximumV1Length { return .noMatch }
            // Only printable ASCII (and a final CR) can still become a valid header.
            for index in 6..<bytes.count where !(bytes[index] >= 0x20 && bytes[index] < 0x7F) {
                if !(index == bytes.count - 1 && bytes[index] == 0x0D) { return .noMatch }
            }
            return .needMore(atLeast: bytes.count + 1)
        }
        guard lineFeed >= 7, bytes[lineFeed - 1] == 0x0D else { return .noMatch }
        let lineEnd = lineFeed - 1
        for index in 6..<lineEnd where !(bytes[index] >= 0x20 && bytes[index] < 0x7F) { return .noMatch }
        let length = lineFeed + 1
        if bytes.hasBytes("UNKNOWN", at: 6), lineEnd == 13 || bytes[13] == 0x20 {
            // The rest of an UNKNOWN line is to be ignored (the specification says so).
            return .match(ProxyHeader(version: .v1, source: nil, destination: nil, length: length))
        }
        let isIPv6: Bool
        if bytes.hasBytes("TCP4 ", at: 6) {
            isIPv6 = false
        } else if bytes.hasBytes("TCP6 ", at: 6) {
            isIPv6 = true
        } else {
            return .noMatch
        }
        // Exactly four fields, single spaces between them.
        var fields: [Range<Int>] = []
        var fieldStart = 11
        for index in 11...lineEnd where index == lineEnd || bytes[index] == 0x20 {
            guard index > fieldStart, fields.count < 4 else { return .noMatch }
            fields.append(fieldStart..<index)
            fieldStart = index + 1
        }
        guard fields.count == 4,
            let sourceAddress = IPAddress.parse(bytes, fields[0].lowerBound, fields[0].upperBound),
            let destinationAddress = IPAddress.parse(bytes, fields[1].lowerBound, fields[1].upperBound),
            let sourcePort = parsePort(bytes, fields[2]), let destinationPort = parsePort(bytes, fields[3])
        else { return .noMatch }
        // The family named must be the family written.
        for address in [sourceAddress, destinationAddress] {
            switch address {
            case .v4: if isIPv6 { return .noMatch }
            case .v6: if !isIPv6 { return .noMatch }
            }
        }
        return .match(
            ProxyHeader(
                version: .v1, source: IPEndpoint(address: sourceAddress, port: sourcePort),
                destination: IPEndpoint(address: destinationAddress, port: destinationPort), length: length))
    }

    /// A decimal port, 0–65535, without leading zeros.
    private static func parsePort(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> UInt16? {
        guard range.count >= 1, range.count <= 5, !(range.count > 1 && bytes[range.lowerBound] == 0x30) else {
            return nil
        }
        var value = 0
        for index in range {
            guard bytes[index].isASCIIDigit else { return nil }
            value = value * 10 + Int(bytes[index] - 0x30)
        }
        return value <= 65535 ? UInt16(value) : nil
    }

    // MARK: v2

    static func parseV2(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<ProxyHeader> {
        let matched = bytes.matchedPrefixLength(v2Signature)
        if matched < 12 { return matched == bytes.count ? .needMore(atLeast: 16) : .noMatch }
        // Version 2; command LOCAL (0) or PROXY (1).
        if bytes.count > 12, bytes[12] != 0x20, bytes[12] != 0x21 { return .noMatch }
        guard bytes.count >= 16 else { return .needMore(atLeast: 16) }
        let isLocal = bytes[12] == 0x20
        let family = bytes[13] >> 4
        let transport = bytes[13] & 0x0F
        let blockLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = 16 + blockLength
        guard length <= maximumV2Length else { return .noMatch }
        guard bytes.count >= length else { return .needMore(atLeast: length) }
        if isLocal {
            // The proxy's own connection (a health check): the block is to be skipped unread.
            return .match(ProxyHeader(version: .v2, source: nil, destination: nil, length: length))
        }
        // Families: 0 unspecified, 1 IPv4, 2 IPv6, 3 unix. Transports: 0 unspecified, 1 stream;
        // datagrams (2) cannot arrive on a TCP connection.
        guard family <= 3, transport <= 1 else { return .noMatch }
        let addressLength = [0, 12, 36, 216][Int(family)]
        guard blockLength >= addressLength else { return .noMatch }
        var tlvs = ByteCursor(bytes, from: 16 + addressLength, to: length)
        while !tlvs.isAtEnd {
            guard tlvs.readUInt8() != nil, let tlvLength = tlvs.readUInt16(), tlvs.skip(Int(tlvLength)) else {
                return .noMatch
            }
        }
        var block = ByteCursor(bytes, from: 16, to: 16 + addressLength)
        var source: IPEndpoint?
        var destination: IPEndpoint?
        switch family {
        case 1:
            guard let sourceAddress = block.readUInt32(), let destinationAddress = block.readUInt32(),
                let sourcePort = block.readUInt16(), let destinationPort = block.readUInt16()
            else { return .noMatch }
            source = IPEndpoint(address: .v4(sourceAddress), port: sourcePort)
            destination = IPEndpoint(address: .v4(destinationAddress), port: destinationPort)
        case 2:
            guard let sourceAddress = readIPv6(&block), let destinationAddress = readIPv6(&block),
                let sourcePort = block.readUInt16(), let destinationPort = block.readUInt16()
            else { return .noMatch }
            source = IPEndpoint(address: sourceAddress, port: sourcePort)
            destination = IPEndpoint(address: destinationAddress, port: destinationPort)
        default:
            break  // unspecified or unix: no IP endpoints to report
        }
        return .match(ProxyHeader(version: .v2, source: source, destination: destination, length: length))
    }

    private static func readIPv6(_ cursor: inout ByteCursor) -> IPAddress? {
        guard let a = cursor.readUInt32(), let b = cursor.readUInt32(), let c = cursor.readUInt32(),
            let d = cursor.readUInt32()
        else { return nil }
        return .v6(high: UInt64(a) << 32 | UInt64(b), low: UInt64(c) << 32 | UInt64(d))
    }

    // MARK: Writing

    /// The header to send an upstream for a client at `source` that connected to `destination`.
    /// When either is nil the header says so (v1 `UNKNOWN`, v2 `PROXY` with the unspecified
    /// family); when their families differ, the IPv4 one is written IPv4-mapped as IPv6.
    public static func encode(_ version: ProxyProtocolVersion, source: IPEndpoint?, destination: IPEndpoint?)
        -> [UInt8]
    {
        guard var source, var destination else {
            switch version {
            case .v1: return Array("PROXY UNKNOWN\r\n".utf8)
            case .v2: return v2Head(command: 0x21, familyAndTransport: 0x00, blockLength: 0)
            }
        }
        var isIPv4 = false
        switch (source.address, destination.address) {
        case (.v4, .v4):
            isIPv4 = true
        case (.v6, .v6):
            break
        default:
            source.address = .v6(high: source.address.mapped.high, low: source.address.mapped.low)
            destination.address = .v6(high: destination.address.mapped.high, low: destination.address.mapped.low)
        }
        switch version {
        case .v1:
            let family = isIPv4 ? "TCP4" : "TCP6"
            let line = "PROXY \(family) \(source.address) \(destination.address) \(source.port) \(destination.port)\r\n"
            return Array(line.utf8)
        case .v2:
            var header = v2Head(
                command: 0x21, familyAndTransport: isIPv4 ? 0x11 : 0x21, blockLength: isIPv4 ? 12 : 36)
            for address in [source.address, destination.address] {
                switch address {
                case .v4(let value):
                    for shift in stride(from: 24, through: 0, by: -8) {
                        header.append(UInt8(truncatingIfNeeded: value >> shift))
                    }
                case .v6(let high, let low):
                    for half in [high, low] {
                        for shift in stride(from: 56, through: 0, by: -8) {
                            header.append(UInt8(truncatingIfNeeded: half >> UInt64(shift)))
                        }
                    }
                }
            }
            for port in [source.port, destination.port] {
                header.append(UInt8(port >> 8))
                header.append(UInt8(port & 0xFF))
            }
            return header
        }
    }

    /// A v2 `LOCAL` header: the upstream is to use the connection's own addresses (for health
    /// checks and connections the proxy makes on its own behalf).
    public static func encodeV2Local() -> [UInt8] {
        v2Head(command: 0x20, familyAndTransport: 0x00, blockLength: 0)
    }

    private static func v2Head(command: UInt8, familyAndTransport: UInt8, blockLength: UInt16) -> [UInt8] {
        var header: [UInt8] = []
        header.reserveCapacity(16 + Int(blockLength))
        header.append(contentsOf: UnsafeBufferPointer(start: v2Signature.utf8Start, count: 12))
        header.append(command)
        header.append(familyAndTransport)
        header.append(UInt8(blockLength >> 8))
        header.append(UInt8(blockLength & 0xFF))
        return header
    }
}
