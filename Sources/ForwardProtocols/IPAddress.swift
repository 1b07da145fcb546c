/// An IPv4 or IPv6 address, as PROXY headers and `accept-proxy-from` lists carry them.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    /// An IPv4 address; the most significant byte is the first one written.
    case v4(UInt32)
    /// An IPv6 address as two 64-bit halves, most significant first.
    case v6(high: UInt64, low: UInt64)

    /// Parses the standard text forms: dotted-quad IPv4 (no leading zeros, as `inet_pton`) and
    /// IPv6 with at most one `::` and an optional trailing dotted quad. No brackets, zone or prefix.
    public init?(_ text: String) {
        var text = text
        guard let address = text.withUTF8({ IPAddress.parse(UnsafeRawBufferPointer($0), 0, $0.count) }) else {
            return nil
        }
        self = address
    }

    /// The address as 16 bytes' worth of integers: an IPv4 address as its IPv4-mapped IPv6 form
    /// (`::ffff:a.b.c.d`), so that both families compare in one space.
    var mapped: (high: UInt64, low: UInt64) {
        switch self {
        case .v4(let value): return (0, 0xFFFF_0000_0000 | UInt64(value))
        case .v6(let high, let low): return (high, low)
        }
    }

    /// The IPv4 address an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) stands for; otherwise self.
    public var unmapped: IPAddress {
        if case .v6(0, let low) = self, low >> 32 == 0xFFFF { return .v4(UInt32(truncatingIfNeeded: low)) }
        return self
    }

    /// RFC 5952 text: lower-case hex, the longest run of two or more zero groups as `::`, and
    /// IPv4-mapped addresses as `::ffff:a.b.c.d`.
    public var description: String {
        switch self {
        case .v4(let value):
            return "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
        case .v6(let high, let low):
            if high == 0, low >> 32 == 0xFFFF {
                return "::ffff:" + IPAddress.v4(UInt32(truncatingIfNeeded: low)).description
            }
            var groups = [UInt16](repeating: 0, count: 8)
            for index in 0..<4 {
                groups[index] = UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64(index)))
                groups[index + 4] = UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64(index)))
            }
            var bestStart = -1
            var bestLength = 1  // a single zero group is not compressed
            var index = 0
            while index < 8 {
                if groups[index] == 0 {
                    var end = index
                    while end < 8, groups[end] == 0 { end += 1 }
                    if end - index > bestLength {
                        bestStart = index
                        bestLength = end - index
                    }
                    index = end
                } else {
                    index += 1
                }
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            if bestStart < 0 { return hex(0..<8) }
            return hex(0..<bestStart) + "::" + hex(bestStart + bestLength..<8)
        }
    }

    /// Parses `bytes[start..<end]` as an IPv4 or IPv6 address.
    static func parse(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> IPAddress? {
        guard start >= 0, end <= bytes.count, start < end, end - start <= 45 else { return nil }
        if bytes.firstIndex(of: 0x3A, from: start, to: end) != nil { return parseIPv6(bytes, start, end) }
        return parseIPv4(bytes, start, end).map { .v4($0) }
    }

    static func parseIPv4(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> UInt32? {
        var value: UInt32 = 0
        var parts = 0
        var index = start
        while parts < 4 {
            var part: UInt32 = 0
            var digits = 0
            let partStart = index
            while index < end, bytes[index].isASCIIDigit, digits < 3 {
                part = part * 10 + UInt32(bytes[index] - 0x30)
                digits += 1
                index += 1
            }
            // No empty parts, no leading zeros (they read as octal elsewhere), no value over 255.
            guard digits > 0, part <= 255, !(digits > 1 && bytes[partStart] == 0x30) else { return nil }
            value = value << 8 | part
            parts += 1
            if parts < 4 {
                guard index < end, bytes[index] == 0x2E else { return nil }
                index += 1
            }
        }
        return index == end ? value : nil
    }

    static func parseIPv6(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> IPAddress? {
        var groups = [UInt16]()
        groups.reserveCapacity(8)
        var gap: Int?  // where `::` stands, as an index into groups
        var index = start
        if bytes.hasBytes("::", at: index) {
            gap = 0
            index += 2
        }
        while index < end {
            guard groups.count < 8 else { return nil }
            var value: UInt16 = 0
            var digits = 0
            let groupStart = index
            while index < end, digits <= 4, let digit = hexValue(bytes[index]) {
                value = value &<< 4 | UInt16(digit)
                digits += 1
                index += 1
            }
            if index < end, bytes[index] == 0x2E {
                // A trailing dotted quad takes the last two groups.
                guard groups.count <= 6, let v4 = parseIPv4(bytes, groupStart, end) else { return nil }
                groups.append(UInt16(truncatingIfNeeded: v4 >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4))
                index = end
                break
            }
            guard digits >= 1, digits <= 4 else { return nil }
            groups.append(value)
            if index == end { break }
            guard bytes[index] == 0x3A else { return nil }
            index += 1
            if index < end, bytes[index] == 0x3A {
                guard gap == nil else { return nil }
                gap = groups.count
                index += 1
            } else if index == end {
                return nil  // a single trailing colon
            }
        }
        if let gap {
            guard groups.count <= 7 else { return nil }
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for index in 0..<4 {
            high = high << 16 | UInt64(groups[index])
            low = low << 16 | UInt64(groups[index + 4])
        }
        return .v6(high: high, low: low)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        if byte.isASCIIDigit { return byte - 0x30 }
        let lower = byte | 0x20
        if lower >= 0x61, lower <= 0x66 { return lower - 0x61 + 10 }
        return nil
    }
}

/// An address and port: one end of a proxied connection.
public struct IPEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The address.
    public var address: IPAddress
    /// The TCP port.
    public var port: UInt16

    /// Creates an endpoint.
    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// `1.2.3.4:80` or `[::1]:80`.
    public var description: String {
        if case .v6 = address { return "[\(address)]:\(port)" }
        return "\(address):\(port)"
    }
}
