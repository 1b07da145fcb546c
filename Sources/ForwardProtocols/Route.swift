/// What a route of the forward handler asks of a connection's first bytes.
public enum RouteCondition: Sendable, Equatable {
    /// An SSH client identification line.
    case ssh
    /// A TLS ClientHello; when the lists are non-empty, its server name must match one of
    /// `serverNames` and it must offer one of `alpn`.
    case tls(serverNames: [ServerNamePattern], alpn: [String])
    /// An HTTP/1.x request; when `hosts` is non-empty, its `Host` must match one of them.
    case http(hosts: [ServerNamePattern])
    /// The bytes start with these bytes.
    case prefix([UInt8])
    /// The bytes received so far match this expression (see ``RoutePattern``).
    case regex(RoutePattern)
    /// The client sent nothing before the probe deadline.
    case timeout
    /// Any connection (a route with no match key).
    case catchAll
}

/// The decision a ``RouteMatcher`` reaches on the bytes so far.
public enum RouteDecision: Sendable, Equatable {
    /// Use the route at this index.
    case route(Int)
    /// A route cannot decide yet and no earlier one matched: the deciding route needs at least
    /// this many bytes in total to match. Read more (within the cap and deadline) and ask again.
    case needMore(atLeast: Int)
    /// No route takes the connection: close it.
    case noRoute
}

/// Chooses the first route, in configuration order, whose condition the bytes meet.
///
/// Order is respected strictly: when an earlier route needs more bytes to decide, the answer is
/// `.needMore` even if a later route already matches. When the caller can read no more (its byte
/// cap or probe deadline is reached) it asks with `final: true`: conditions still undecided then
/// count as not met, `timeout` routes apply when the client sent nothing, and a catch-all takes
/// the rest. Each protocol is parsed at most once per call.
public struct RouteMatcher: Sendable {
    /// The conditions, in route order.
    public let conditions: [RouteCondition]

    /// Creates a matcher over routes' conditions, in configuration order.
    public init(_ conditions: [RouteCondition]) {
        self.conditions = conditions
    }

    /// Decides on the bytes received so far; see the type's description for `final`.
    public func decide(_ bytes: [UInt8], final: Bool) -> RouteDecision {
        bytes.withUnsafeBytes { decide($0, final: final) }
    }

    /// Decides on the bytes received so far; see the type's description for `final`.
    public func decide(_ bytes: UnsafeRawBufferPointer, final: Bool) -> RouteDecision {
        var tls: ProbeResult<TLSClientHello>?
        var http: ProbeResult<HTTPRequestHead>?
        var ssh: ProbeResult<SSHBanner>?
        for (index, condition) in conditions.enumerated() {
            let answer: ProbeResult<Bool>
            switch condition {
            case .catchAll:
                return .route(index)
            case .timeout:
                if bytes.isEmpty {
                    if final { return .route(index) }
                    answer = .needMore(atLeast: 1)
                } else {
                    answer = .noMatch
                }
            case .prefix(let prefix):
                answer = BytePrefix.probe(prefix, bytes).map { _ in true }
            case .regex(let pattern):
                answer = pattern.matches(bytes) ? .match(true) : .noMatch
            case .ssh:
                if ssh == nil { ssh = SSHBanner.probe(bytes) }
                answer = ssh!.map { _ in true }
            case .tls(let serverNames, let alpn):
                if tls == nil { tls = TLSClientHello.probe(bytes) }
                answer = tls!.map { hello in
                    (serverNames.isEmpty || hello.serverName.map { serverNames.matches($0) } == true)
                        && hello.offersALPN(anyOf: alpn)
                }
            case .http(let hosts):
                if http == nil { http = HTTPRequestHead.probe(bytes) }
                answer = http!.map { head in hosts.isEmpty || head.host.map { hosts.matches($0) } == true }
            }
            switch answer {
            case .match(true): return .route(index)
            case .match(false), .noMatch: continue
            case .needMore(let atLeast): if !final { return .needMore(atLeast: atLeast) }
            }
        }
        return .noRoute
    }
}

/// A raw byte prefix, as a route's `prefix` condition.
public enum BytePrefix {
    /// `.match(prefix.count)` when `bytes` start with `prefix`, `.needMore` while they are a
    /// shorter beginning of it, `.noMatch` once a byte differs. An empty prefix matches anything.
    public static func probe(_ prefix: [UInt8], _ bytes: UnsafeRawBufferPointer) -> ProbeResult<Int> {
        let compared = min(prefix.count, bytes.count)
        for index in 0..<compared where bytes[index] != prefix[index] { return .noMatch }
        return compared == prefix.count ? .match(prefix.count) : .needMore(atLeast: prefix.count)
    }

    /// See ``probe(_:_:)-(_,UnsafeRawBufferPointer)``.
    public static func probe(_ prefix: [UInt8], _ bytes: [UInt8]) -> ProbeResult<Int> {
        bytes.withUnsafeBytes { probe(prefix, $0) }
    }
}
