/// The start of an HTTP/1.x request, read far enough to route it: the request line and the
/// `Host` header.
///
/// Lines end in CRLF; a bare LF is accepted as well (RFC 9112 §2.2 allows a recipient to), since
/// hand-typed and scripted clients send it and the upstream, not the router, is the judge of
/// strictness. A CR anywhere else makes the request malformed. The probe stops at the first
/// `Host` header or at the end of the headers, whichever comes first: headers after `Host` are
/// not examined.
public struct HTTPRequestHead: Sendable, Equatable {
    /// The method token, as sent (methods are case-sensitive).
    public var method: String
    /// The request target, as sent.
    public var target: String
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: UInt8
    /// The `Host` header's host, lower-cased, without port, trailing dot or IPv6 brackets
    /// (`[::1]:8080` gives `::1`); nil when the request has no `Host` header or an empty one.
    public var host: String?
    /// The `Host` header's port, when it names one.
    public var port: UInt16?

    /// Creates a value.
    public init(method: String, target: String, minorVersion: UInt8, host: String?, port: UInt16?) {
        self.method = method
        self.target = target
        self.minorVersion = minorVersion
        self.host = host
        self.port = port
    }

    /// The most bytes the probe reads before it gives up (`noMatch`): the request line and the
    /// headers up to `Host` must fit.
    public static let maximumLength = 8192
    /// The longest method token accepted.
    static let maximumMethodLength = 24

    /// Probes bytes a client sent first. `.match` once the request line and either the `Host`
    /// header or the end of the headers are in; `.needMore` while the bytes are a well-formed
    /// beginning of such a request (at most ``maximumLength`` bytes); `.noMatch` otherwise —
    /// including a malformed `Host` value, which a server would refuse with 400.
    public static func probe(_ bytes: [UInt8]) -> ProbeResult<HTTPRequestHead> {
        bytes.withUnsafeBytes { probe($0) }
    }

    /// Probes bytes a client sent first; see ``probe(_:)-([UInt8])``.
    public static func probe(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<HTTPRequestHead> {
        let count = min(bytes.count, maximumLength)
        // Whatever ran out of bytes asks for one more, up to the limit.
        let more: ProbeResult<HTTPRequestHead> = count < maximumLength ? .needMore(atLeast: count + 1) : .noMatch
        // Method: a token, then one space.
        var index = 0
        while index < count, isTokenByte(bytes[index]) {
            index += 1
            if index > maximumMethodLength { return .noMatch }
        }
        guard index < count else { return more }
        guard index > 0, bytes[index] == 0x20 else { return .noMatch }
        let methodEnd = index
        index += 1
        // Target: visible ASCII, then one space.
        let targetStart = index
        while index < count, bytes[index] > 0x20, bytes[index] < 0x7F { index += 1 }
        guard index < count else { return more }
        guard index > targetStart, bytes[index] == 0x20 else { return .noMatch }
        let targetEnd = index
        index += 1
        // Version: HTTP/1.<digit>.
        let matched = bytes.matchedPrefixLength("HTTP/1.", at: index)
        if matched < 7 { return index + matched == count ? more : .noMatch }
        index += 7
        guard index < count else { return more }
        guard bytes[index].isASCIIDigit else { return .noMatch }
        let minorVersion = bytes[index] - 0x30
        index += 1
        switch lineEnd(bytes, index, count) {
        case .incomplete: return more
        case .invalid: return .noMatch
        case .next(let next): index = next
        }
        var head = HTTPRequestHead(
            method: string(bytes, 0, methodEnd), target: string(bytes, targetStart, targetEnd),
            minorVersion: minorVersion, host: nil, port: nil)
        // Header lines until Host or the empty line.
        while true {
            guard index < count else { return more }
            if bytes[index] == 0x0D || bytes[index] == 0x0A {
                switch lineEnd(bytes, index, count) {
                case .incomplete: return more
                case .invalid: return .noMatch
                case .next: return .match(head)  // end of headers, no Host
                }
            }
            // Field name: a token and a colon (no space before it, RFC 9112 §5.1); a line starting
            // with white space is obsolete folding, refused.
            let nameStart = index
            while index < count, isTokenByte(bytes[index]) { index += 1 }
            guard index < count else { return more }
            guard index > nameStart, bytes[index] == 0x3A else { return .noMatch }
            let isHost =
                index - nameStart == 4 && bytes[nameStart].asciiLowercased == 0x68
                && bytes[nameStart + 1].asciiLowercased == 0x6F && bytes[nameStart + 2].asciiLowercased == 0x73
                && bytes[nameStart + 3].asciiLowercased == 0x74
            index += 1
            // Field value: visible bytes, spaces and tabs, up to the line end.
            let valueStart = index
            while index < count, bytes[index] >= 0x20 || bytes[index] == 0x09, bytes[index] != 0x7F { index += 1 }
            let valueEnd = index
            switch lineEnd(bytes, index, count) {
            case .incomplete: return more
            case .invalid: return .noMatch
            case .next(let next): index = next
            }
            if isHost {
                guard parseHost(bytes, valueStart, valueEnd, into: &head) else { return .noMatch }
                return .match(head)
            }
        }
    }

    private enum LineEnd {
        case next(Int)
        case incomplete
        case invalid
    }

    /// CRLF or LF at `index`.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, _ index: Int, _ count: Int) -> LineEnd {
        guard index < count else { return .incomplete }
        if bytes[index] == 0x0A { return .next(index + 1) }
        guard bytes[index] == 0x0D else { return .invalid }
        guard index + 1 < count else { return .incomplete }
        return bytes[index + 1] == 0x0A ? .next(index + 2) : .invalid
    }

    /// RFC 9110 `tchar`.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        if byte.isASCIILetter || byte.isASCIIDigit { return true }
        switch byte {
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: return true
        default: return false
        }
    }

    private static func string(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
    }

    /// `host [":" port]`, host a DNS name, a dotted quad or a bracketed IPv6 literal; surrounding
    /// white space ignored; empty is allowed (no host). False when malformed.
    private static func parseHost(
        _ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, into head: inout HTTPRequestHead
    ) -> Bool {
        var start = start
        var end = end
        while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
        while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 { end -= 1 }
        if start == end { return true }
        var hostEnd = end
        var portStart: Int?
        if bytes[start] == 0x5B {  // "[" IPv6 "]"
            guard let close = bytes.firstIndex(of: 0x5D, from: start + 1, to: end),
                IPAddress.parseIPv6(bytes, start + 1, close) != nil
            else { return false }
            if close + 1 < end {
                guard bytes[close + 1] == 0x3A else { return false }
                portStart = close + 2
            }
            head.host = string(bytes, start + 1, close).lowercased()
        } else {
            if let colon = bytes.firstIndex(of: 0x3A, from: start, to: end) {
                hostEnd = colon
                portStart = colon + 1
            }
            // A fully qualified name's trailing dot names the same host.
            var nameEnd = hostEnd
            if nameEnd - start > 1, bytes[nameEnd - 1] == 0x2E { nameEnd -= 1 }
            guard let name = HostName.validatedLowercased(bytes, start, nameEnd) else { return false }
            head.host = name
        }
        if let portStart, portStart < end {
            guard end - portStart <= 5 else { return false }
            var port = 0
            for index in portStart..<end {
                guard bytes[index].isASCIIDigit else { return false }
                port = port * 10 + Int(bytes[index] - 0x30)
            }
            guard port <= 65535 else { return false }
            head.port = UInt16(port)
        }
        return true
    }
}
