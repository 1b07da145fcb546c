/// DNS host names as SNI and HTTP Host carry them, and the patterns routes match them against.
enum HostName {
    /// The longest host name accepted, in bytes (a DNS name's presentation form without the root dot).
    static let maximumLength = 253

    /// The bytes `start..<end` lower-cased as a String when they form a host name: dot-separated
    /// labels of 1–63 letters, digits, `-` or `_`, at most 253 bytes, no trailing dot. `_` is
    /// accepted because real names (service records, some internal hosts) use it.
    static func validatedLowercased(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String? {
        guard start >= 0, end <= bytes.count, start < end, end - start <= maximumLength else { return nil }
        var labelLength = 0
        for index in start..<end {
            let byte = bytes[index]
            if byte == 0x2E {  // "."
                guard labelLength > 0 else { return nil }
                labelLength = 0
            } else if byte.isASCIILetter || byte.isASCIIDigit || byte == 0x2D || byte == 0x5F {
                labelLength += 1
                guard labelLength <= 63 else { return nil }
            } else {
                return nil
            }
        }
        guard labelLength > 0 else { return nil }
        return String(unsafeUninitializedCapacity: end - start) { buffer in
            for index in start..<end { buffer[index - start] = bytes[index].asciiLowercased }
            return end - start
        }
    }

    static func validatedLowercased(_ text: String) -> String? {
        var text = text
        return text.withUTF8 { validatedLowercased(UnsafeRawBufferPointer($0), 0, $0.count) }
    }
}

/// One entry of a route's `sni` (or `host`) list: an exact host name (`example.com`) or a
/// wildcard (`*.example.org`) that, as in TLS certificate name rules (RFC 6125 §6.4.3), stands
/// for exactly one label: it matches `www.example.org` but neither `example.org` nor
/// `a.b.example.org`. Matching ignores ASCII case.
public struct ServerNamePattern: Sendable, Hashable, CustomStringConvertible {
    /// Lower-cased: the whole name, or for a wildcard the suffix after `*` (starting with ".").
    private let name: [UInt8]
    /// True for `*.suffix`.
    public let isWildcard: Bool

    /// Parses `example.com` or `*.example.org`; nil for anything else (empty, a `*` other than a
    /// whole leftmost label, invalid characters, a trailing dot).
    public init?(_ text: String) {
        if text.hasPrefix("*.") {
            guard let suffix = HostName.validatedLowercased(String(text.dropFirst(2))) else { return nil }
            name = Array(("." + suffix).utf8)
            isWildcard = true
        } else {
            guard let exact = HostName.validatedLowercased(text) else { return nil }
            name = Array(exact.utf8)
            isWildcard = false
        }
    }

    /// The pattern as written, lower-cased.
    public var description: String { (isWildcard ? "*" : "") + String(decoding: name, as: UTF8.self) }

    /// True when `hostName` (any case) matches this pattern.
    public func matches(_ hostName: String) -> Bool {
        var hostName = hostName
        return hostName.withUTF8 { host in
            if !isWildcard {
                guard host.count == name.count else { return false }
                for index in 0..<host.count where host[index].asciiLowercased != name[index] { return false }
                return true
            }
            // One label, then the suffix (which begins with the dot).
            guard host.count > name.count else { return false }
            let labelLength = host.count - name.count
            for index in 0..<labelLength where host[index] == 0x2E { return false }
            for index in 0..<name.count where host[labelLength + index].asciiLowercased != name[index] {
                return false
            }
            return true
        }
    }
}

extension Array where Element == ServerNamePattern {
    /// True when any pattern matches `hostName`.
    public func matches(_ hostName: String) -> Bool {
        contains { $0.matches(hostName) }
    }
}
