/// A route's `regex` condition: a regular expression over the client's first bytes.
///
/// The bytes are read as ISO-8859-1 (each byte one character, U+0000–U+00FF), so any byte
/// sequence can be matched, `.` matches any one byte, and a pattern written in ASCII means the
/// same bytes it spells. The expression is tried on the bytes received when its route is
/// consulted: a miss is final, so anchor it (`^GET /ws `) and keep it to what the first
/// segment carries. An unanchored pattern scans every byte it is given; the handler bounds that
/// by its probe byte cap.
public struct RoutePattern: @unchecked Sendable, Equatable, CustomStringConvertible {
    // Regex values are immutable once built, and matching never mutates them: sharing one
    // between threads is safe even though the standard library does not declare it Sendable.
    private let regex: Regex<AnyRegexOutput>
    /// The pattern as written.
    public let source: String

    /// Compiles `source`; throws the compiler's message for an invalid pattern.
    public init(_ source: String) throws {
        self.regex = try Regex(source)
        self.source = source
    }

    /// True when the pattern matches somewhere in `bytes` (at the start, if it is anchored).
    public func matches(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var text = String()
        text.unicodeScalars.reserveCapacity(bytes.count)
        for byte in bytes { text.unicodeScalars.append(Unicode.Scalar(byte)) }
        return (try? regex.firstMatch(in: text)) != nil
    }

    public var description: String { source }

    /// Two patterns are equal when their sources are.
    public static func == (lhs: RoutePattern, rhs: RoutePattern) -> Bool { lhs.source == rhs.source }
}
