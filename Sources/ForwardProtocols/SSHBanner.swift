/// An SSH client's identification string (RFC 4253 §4.2): `SSH-2.0-softwareversion [comments]`
/// and CRLF, at most 255 bytes. `SSH-1.99-` (a client that speaks both versions) is accepted too.
public struct SSHBanner: Sendable, Equatable {
    /// "2.0" or "1.99".
    public var protocolVersion: String
    /// The software version, such as `OpenSSH_9.2p1`.
    public var softwareVersion: String
    /// What follows the software version after a space, if anything.
    public var comments: String?

    /// Creates a value.
    public init(protocolVersion: String, softwareVersion: String, comments: String?) {
        self.protocolVersion = protocolVersion
        self.softwareVersion = softwareVersion
        self.comments = comments
    }

    /// The longest identification line, CRLF included.
    public static let maximumLength = 255

    /// Probes bytes a client sent first. Clients send the line at once without waiting for the
    /// server's, so the probe waits for the whole line (`.needMore`) and then checks it; a bare
    /// LF ending is accepted as OpenSSH does. Printable ASCII only.
    public static func probe(_ bytes: [UInt8]) -> ProbeResult<SSHBanner> {
        bytes.withUnsafeBytes { probe($0) }
    }

    /// Probes bytes a client sent first; see ``probe(_:)-([UInt8])``.
    public static func probe(_ bytes: UnsafeRawBufferPointer) -> ProbeResult<SSHBanner> {
        let protocolVersion: String
        var index: Int
        let two = bytes.matchedPrefixLength("SSH-2.0-")
        let old = bytes.matchedPrefixLength("SSH-1.99-")
        if two == 8 {
            protocolVersion = "2.0"
            index = 8
        } else if old == 9 {
            protocolVersion = "1.99"
            index = 9
        } else if two == bytes.count || old == bytes.count {
            return .needMore(atLeast: two == bytes.count ? 8 : 9)
        } else {
            return .noMatch
        }
        let count = min(bytes.count, maximumLength)
        let softwareStart = index
        while index < count, bytes[index] > 0x20, bytes[index] < 0x7F { index += 1 }
        let softwareEnd = index
        var comments: String?
        if index < count, bytes[index] == 0x20 {
            index += 1
            let commentsStart = index
            while index < count, bytes[index] >= 0x20, bytes[index] < 0x7F { index += 1 }
            comments = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[commentsStart..<index]), as: UTF8.self)
        }
        if index == count {
            return count < maximumLength ? .needMore(atLeast: count + 1) : .noMatch
        }
        if bytes[index] == 0x0D {
            guard index + 1 < count else { return count < maximumLength ? .needMore(atLeast: count + 1) : .noMatch }
            index += 1
        }
        guard bytes[index] == 0x0A, softwareEnd > softwareStart else { return .noMatch }
        let software = String(
            decoding: UnsafeRawBufferPointer(rebasing: bytes[softwareStart..<softwareEnd]), as: UTF8.self)
        return .match(SSHBanner(protocolVersion: protocolVersion, softwareVersion: software, comments: comments))
    }
}
