import Glibc

/// The engine's settings: where to listen, how many workers, and the limits every connection gets.
///
/// Each property is also a command-line flag and a config-file key of `preforkd`
/// (named in its doc comment).
public struct ServerConfiguration: Sendable, Equatable {
    /// `listen`: addresses to bind. Ignored when systemd passes sockets (socket activation).
    public var listen: [ListenAddress] = [.default]
    /// `workers`: worker processes in the pool.
    public var workers: Int = ServerConfiguration.onlineProcessors()
    /// `initial-bytes`: the most bytes taken by the initial read (the seed's `receiveSize`).
    public var initialBytes: Int = 1024
    /// `initial-timeout`: seconds a new connection may take to send its first bytes. It is the
    /// listener's receive timeout, which every read on an accepted connection inherits.
    public var initialTimeout: Double = 10
    /// `send-timeout`: seconds a write may block on a client that does not read.
    public var sendTimeout: Double = 30
    /// `graceful-timeout`: seconds the workers get to finish their connections on stop or reload,
    /// before they are killed.
    public var gracefulTimeout: Double = 30
    /// `boot-timeout`: seconds a new worker may take from its fork to its first accept (the
    /// handler's `prepare` included). One that takes longer is killed as a boot failure; a
    /// reload whose new generation is not whole by then is rolled back.
    public var bootTimeout: Double = 30
    /// `backlog`: the accept queue of each bound listener (the kernel clamps it to somaxconn).
    public var backlog: Int = 4096
    /// `unix-mode`: permissions of the unix socket files preforkd creates.
    public var unixMode: UInt32 = 0o660
    /// `fd-store`: hand self-bound listeners to systemd's file descriptor store (FDSTORE=1), so
    /// that `systemctl restart` keeps the port and its queued connections. Defaults to on when
    /// systemd announces a store (`$FDSTORE`, systemd 254 and later); set it where the unit has
    /// `FileDescriptorStoreMax=` on an older systemd.
    public var fileDescriptorStore: Bool = (getenv("FDSTORE").flatMap { Int(String(cString: $0)) } ?? 0) > 0

    /// The most workers one pool may have (TTIN stops there).
    public static let maximumWorkers = 512

    /// The defaults.
    public init() {}

    /// Checks every value; throws for the first one out of range, naming its key.
    public func validate() throws(ConfigurationError) {
        try Self.check("workers", workers, 1...Self.maximumWorkers)
        try Self.check("initial-bytes", initialBytes, 1...(16 << 20))
        try Self.check("backlog", backlog, 1...65535)
        try Self.check("initial-timeout", initialTimeout, 0.001...86400)
        try Self.check("send-timeout", sendTimeout, 0.001...86400)
        try Self.check("graceful-timeout", gracefulTimeout, 0...86400)
        try Self.check("boot-timeout", bootTimeout, 0.001...86400)
        guard unixMode <= 0o777 else {
            throw ConfigurationError(
                key: "unix-mode", value: String(unixMode, radix: 8), reason: "must be an octal mode from 0 to 777")
        }
        guard !listen.isEmpty else {
            throw ConfigurationError(key: "listen", value: "[]", reason: "needs at least one address")
        }
        var seen = Set<ListenAddress>()
        for address in listen where !seen.insert(address).inserted {
            throw ConfigurationError(key: "listen", value: address.description, reason: "is listed twice")
        }
    }

    /// Processors online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
    public static func onlineProcessors() -> Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    private static func check<Value: Comparable>(
        _ key: String, _ value: Value, _ range: ClosedRange<Value>
    ) throws(ConfigurationError) {
        guard range.contains(value) else {
            throw ConfigurationError(
                key: key, value: "\(value)",
                reason: "must be between \(range.lowerBound) and \(range.upperBound)")
        }
    }
}

/// An invalid setting: which key, the value given, and why it is refused.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Where the value came from, e.g. a config file path; empty for the command line.
    public var source: String
    /// The key (config-file spelling), e.g. `workers`.
    public var key: String
    /// The offending value as text.
    public var value: String
    /// Why it is refused.
    public var reason: String

    /// Creates an error for `key` = `value`.
    public init(source: String = "", key: String, value: String, reason: String) {
        self.source = source
        self.key = key
        self.value = value
        self.reason = reason
    }

    public var description: String {
        let prefix = source.isEmpty ? "" : "\(source): "
        return "\(prefix)\(key) = \(value): \(reason)"
    }
}
