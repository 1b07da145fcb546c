/// An address prefix such as `127.0.0.1/32`, `10.0.0.0/8` or `::1/128`, as an
/// `accept-proxy-from` list holds them.
///
/// IPv4 and IPv6 are compared in one space, IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`): a peer
/// that reaches a dual-stack socket as `::ffff:127.0.0.1` matches `127.0.0.0/8`, and an IPv6 block
/// covering `::ffff:0:0/96` matches IPv4 peers.
public struct CIDRBlock: Sendable, Hashable, CustomStringConvertible {
    private let high: UInt64
    private let low: UInt64
    /// The prefix length in the mapped 128-bit space.
    private let mappedLength: Int
    private let writtenAsIPv4: Bool

    /// Parses `ADDRESS/LENGTH` (0–32 for IPv4, 0–128 for IPv6) or a bare address (a single host).
    /// Host bits set past the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else { return nil }
        let isIPv4: Bool
        if case .v4 = address { isIPv4 = true } else { isIPv4 = false }
        let bits = isIPv4 ? 32 : 128
        var length = bits
        if parts.count == 2 {
            guard let written = Int(parts[1]), (0...bits).contains(written),
                parts[1].allSatisfy({ $0.isASCII && $0.isNumber }), parts[1].count <= 3
            else { return nil }
            length = written
        }
        let mappedLength = isIPv4 ? 96 + length : length
        let (high, low) = address.mapped
        let masks = CIDRBlock.masks(mappedLength)
        self.high = high & masks.high
        self.low = low & masks.low
        self.mappedLength = mappedLength
        self.writtenAsIPv4 = isIPv4
    }

    private static func masks(_ length: Int) -> (high: UInt64, low: UInt64) {
        let high: UInt64 = length >= 64 ? .max : (length == 0 ? 0 : ~0 << UInt64(64 - length))
        let low: UInt64 = length <= 64 ? 0 : (length >= 128 ? .max : ~0 << UInt64(128 - length))
        return (high, low)
    }

    /// True when `address` lies in this block.
    public func contains(_ address: IPAddress) -> Bool {
        let (high, low) = address.mapped
        let masks = CIDRBlock.masks(mappedLength)
        return high & masks.high == self.high && low & masks.low == self.low
    }

    /// The block in canonical form: `10.0.0.0/8`, `::1/128`.
    public var description: String {
        if writtenAsIPv4 {
            return "\(IPAddress.v6(high: high, low: low).unmapped)/\(mappedLength - 96)"
        }
        return "\(IPAddress.v6(high: high, low: low))/\(mappedLength)"
    }
}

extension Array where Element == CIDRBlock {
    /// True when any block contains `address` (an empty list contains nothing).
    public func contains(_ address: IPAddress) -> Bool {
        contains { $0.contains(address) }
    }
}
