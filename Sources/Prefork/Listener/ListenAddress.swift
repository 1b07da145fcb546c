/// Where a listener listens, as written on the command line or in the config file.
///
/// Accepted forms: `127.0.0.1:11000`, `[::1]:11000`, `*:11000` (every address, IPv6 and IPv4),
/// `unix:/run/preforkd.sock`. Port 0 asks the kernel for an ephemeral port.
public enum ListenAddress: Sendable, Hashable, CustomStringConvertible {
    /// An IPv4 address in dotted form and a port.
    case ipv4(host: String, port: UInt16)
    /// An IPv6 address (without brackets) and a port.
    case ipv6(host: String, port: UInt16)
    /// Every local address, IPv6 and IPv4 (a dual-stack `[::]` socket, or `0.0.0.0` without IPv6).
    case any(port: UInt16)
    /// A unix-domain stream socket at a filesystem path.
    case unix(path: String)

    /// The address preforkd listens on when nothing else is configured (the seed's port).
    public static let `default` = ListenAddress.ipv4(host: "127.0.0.1", port: 11000)

    /// Parses `text`; throws a ``ListenAddressError`` naming what is wrong with it.
    public init(parsing text: String) throws(ListenAddressError) {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst(5))
            guard path.hasPrefix("/") else { throw ListenAddressError(text, "a unix socket path must be absolute") }
            guard path.utf8.count < 108 else {
                throw ListenAddressError(text, "a unix socket path must be shorter than 108 bytes")
            }
            self = .unix(path: path)
            return
        }
        guard let colon = text.lastIndex(of: ":") else {
            throw ListenAddressError(text, "expected HOST:PORT, [IPv6]:PORT, *:PORT or unix:/path")
        }
        let host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = UInt16(portText) else {
            throw ListenAddressError(text, "the port must be a number from 0 to 65535")
        }
        if host == "*" {
            self = .any(port: port)
        } else if host.hasPrefix("[") && host.hasSuffix("]") {
            let inner = String(host.dropFirst().dropLast())
            guard SocketAddress(ipv6: inner, port: port) != nil else {
                throw ListenAddressError(text, "'\(inner)' is not an IPv6 address")
            }
            self = .ipv6(host: inner, port: port)
        } else if SocketAddress(ipv4: host, port: port) != nil {
            self = .ipv4(host: host, port: port)
        } else if host.contains(":") {
            throw ListenAddressError(text, "an IPv6 address needs brackets: [\(host)]:\(port)")
        } else {
            throw ListenAddressError(text, "'\(host)' is not an IPv4 address (use an address, not a host name)")
        }
    }

    /// The canonical text form, which ``init(parsing:)`` accepts back.
    public var description: String {
        switch self {
        case .ipv4(let host, let port): "\(host):\(port)"
        case .ipv6(let host, let port): "[\(host)]:\(port)"
        case .any(let port): "*:\(port)"
        case .unix(let path): "unix:\(path)"
        }
    }
}

/// A listen address that cannot be parsed: the text and why.
public struct ListenAddressError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text as given.
    public let text: String
    /// What is wrong with it.
    public let reason: String

    init(_ text: String, _ reason: String) {
        self.text = text
        self.reason = reason
    }

    public var description: String { "invalid listen address '\(text)': \(reason)" }
}
