import ForwardProtocols

/// `accept-proxy`: whether a listener's connections must start with a PROXY protocol header (as
/// a load balancer in front of it writes one), and in which version.
public enum AcceptProxy: String, Sendable, CaseIterable {
    /// No header: the bytes are the client's from the first.
    case off
    /// The text header only.
    case v1
    /// The binary header only.
    case v2
    /// Either version.
    case any

    /// The versions ``ProxyHeader/parse(_:accepting:)-(UnsafeRawBufferPointer,_)`` takes.
    var versions: Set<ProxyProtocolVersion> {
        switch self {
        case .off: []
        case .v1: [.v1]
        case .v2: [.v2]
        case .any: [.v1, .v2]
        }
    }
}

/// What a listener requires of a connection's first bytes when a proxy stands in front of it: a
/// PROXY header (``accept``) from one of the ``trustedPeers``. The header's source is then the
/// client everywhere — ``Connection/clientAddress``, log lines, `preforkd status`.
public struct ProxyProtocolPolicy: Sendable, Equatable {
    /// `accept-proxy`.
    public var accept: AcceptProxy = .off
    /// `accept-proxy-from`: the peers allowed to send a header; a connection from any other is
    /// closed with a log line. Empty: any peer.
    public var trustedPeers: [CIDRBlock] = []

    /// No header required.
    public init() {}

    /// A header of `accept`'s versions, from `trustedPeers` (empty: from anyone).
    public init(accept: AcceptProxy, trustedPeers: [CIDRBlock] = []) {
        self.accept = accept
        self.trustedPeers = trustedPeers
    }

    /// Whether a header is required at all.
    public var isRequired: Bool { accept != .off }

    /// Whether a connection from `peer` may send a header: any peer when the list is empty.
    public func trusts(_ peer: IPAddress) -> Bool {
        trustedPeers.isEmpty || trustedPeers.contains { $0.contains(peer) }
    }

    /// The two settings, at the top level of a config file and in each `[listeners.NAME]` table.
    package static let settings = SettingsTable<ProxyProtocolPolicy>([
        .choice(
            "accept-proxy", \.accept,
            help: "off | v1 | v2 | any: connections must start with a PROXY protocol header of that version.",
            valueName: "version"),
        Setting(
            key: "accept-proxy-from",
            help: "Peers allowed to send a PROXY header, as CIDR blocks (repeatable; none listed: any peer).",
            flag: .value(name: "cidr", repeatable: true),
            read: { value, policy throws(SettingError) in
                let texts: [SettingValue]
                switch value {
                case .string: texts = [value]
                case .array(let values): texts = values
                default: throw SettingError("expected a CIDR block or a list of them, got \(value.kindDescription)")
                }
                var blocks: [CIDRBlock] = []
                for text in texts {
                    guard case .string(let string) = text else {
                        throw SettingError("expected a string, got \(text.kindDescription)", value: text)
                    }
                    guard let block = CIDRBlock(string) else {
                        throw SettingError("expected a CIDR block such as 10.0.0.0/8 or ::1/128", value: text)
                    }
                    blocks.append(block)
                }
                policy.trustedPeers = blocks
            },
            parseFlag: { .string($0) },
            render: { .array($0.trustedPeers.map { .string($0.description) }) }),
    ])
}
