import Glibc

/// The engine's settings: where to listen, how many workers, and the limits every connection gets.
///
/// A plain value: set its properties and hand it to ``PreforkServer``. Each property is also a
/// command-line flag and a config-file key of `preforkd` (named in its doc comment);
/// ``validate()`` checks each against the range preforkd accepts.
public struct ServerConfiguration: Sendable, Equatable {
    /// `listen`: addresses to bind. Ignored when systemd passes sockets (socket activation).
    public var listen: [ListenAddress] = [.default]
    /// `workers`: worker processes in the pool.
    public var workers: Int = ServerConfiguration.onlineProcessors()
    /// `initial-bytes`: the most bytes taken by the initial read (the seed's `receiveSize`).
    public var initialBytes: Int = 1024
    /// `initial-timeout`: how long a new connection may take to send its first bytes. It is the
    /// listener's receive timeout, which every read on an accepted connection inherits.
    public var initialTimeout: Duration = .seconds(10)
    /// `send-timeout`: how long a write may block on a client that does not read.
    public var sendTimeout: Duration = .seconds(30)
    /// `write-deadline`: the most one write to a client may take in all (zero: no limit). The
    /// send timeout bounds each `send` only, and a client that reads a byte now and then makes
    /// every one of them progress; past the deadline the write fails and the connection closes.
    public var writeDeadline: Duration = .seconds(60)
    /// `graceful-timeout`: how long the workers get to finish their connections on stop or
    /// reload, before they are killed.
    public var gracefulTimeout: Duration = .seconds(30)
    /// `boot-timeout`: how long a new worker may take from its fork to its first accept (the
    /// handler's `prepare` included). One that takes longer is killed as a boot failure; a
    /// reload whose new generation is not whole by then is rolled back.
    public var bootTimeout: Duration = .seconds(30)
    /// `handler-timeout`: how long a handler may take over one connection before the supervisor
    /// kills its worker (and replaces it); zero, the default, sets no limit — right for
    /// long-lived protocols.
    public var handlerTimeout: Duration = .zero
    /// `max-connections-per-worker`: connections after which a worker exits and is replaced by a
    /// fresh one — a bound on what a slow leak can grow to. Each worker draws its own limit
    /// between this and a quarter more, so workers are never all replaced at once. 0, the
    /// default, keeps workers for good.
    public var maxConnectionsPerWorker: Int = 0
    /// `min-spare`: idle workers to keep at hand. When fewer wait in accept, the supervisor forks
    /// more, up to `max-workers` (Apache's MinSpareServers). 0, the default, keeps the pool at
    /// `workers`.
    public var minimumSpare: Int = 0
    /// `max-workers`: the most workers `min-spare` may grow the pool to; 0 means `workers`.
    public var maximumWorkers: Int = 0
    /// `spare-timeout`: how long a worker beyond `workers` may sit idle before it is retired.
    public var spareTimeout: Duration = .seconds(10)
    /// `defer-accept`: on the TCP listeners preforkd binds, let the kernel hold a connection until
    /// its first bytes arrive (TCP_DEFER_ACCEPT), so that clients that send nothing never occupy
    /// a worker; they are closed once `initial-timeout` (rounded up to TCP's retransmission
    /// schedule) has passed. Turn it off for protocols where the server speaks first.
    public var deferAccept: Bool = true
    /// `runtime-directory`: where the supervisor keeps its status file (`status`: the scoreboard
    /// `preforkd status` reads). Defaults to systemd's `$RUNTIME_DIRECTORY` (the unit's
    /// `RuntimeDirectory=`), else `/run/preforkd`; empty for no status file.
    public var runtimeDirectory: String = ServerConfiguration.defaultRuntimeDirectory()
    /// `backlog`: the accept queue of each bound listener (the kernel clamps it to somaxconn).
    public var backlog: Int = 4096
    /// `unix-mode`: permissions of the unix socket files preforkd creates.
    public var unixMode: UInt32 = 0o660
    /// `fd-store`: hand self-bound listeners to systemd's file descriptor store (FDSTORE=1), so
    /// that `systemctl restart` keeps the port and its queued connections. Defaults to on when
    /// systemd announces a store (`$FDSTORE`, systemd 254 and later); set it where the unit has
    /// `FileDescriptorStoreMax=` on an older systemd.
    public var fileDescriptorStore: Bool = (getenv("FDSTORE").flatMap { Int(String(cString: $0)) } ?? 0) > 0
    /// `open-files`: the open-file limit (RLIMIT_NOFILE) the supervisor sets at start, and its
    /// workers inherit. 0, the default, raises the soft limit to the hard one (systemd's advice
    /// for services); a number above the hard limit needs CAP_SYS_RESOURCE, or preforkd refuses
    /// to start.
    public var openFiles: Int = 0
    /// `user`: the user (a name or a numeric uid) the workers serve as, and the supervisor runs as
    /// once it has bound its listeners; empty to stay who preforkd was started as. Started as
    /// root, the supervisor keeps only CAP_NET_BIND_SERVICE, so that a reload can bind new ports.
    public var user: String = ""
    /// `group`: the group (a name or a numeric gid) to serve as; empty for `user`'s primary group.
    public var group: String = ""
    /// `allow-root`: serve as root when started as root with no `user` (or `user = "root"`);
    /// without it preforkd refuses to start.
    public var allowRoot: Bool = false
    /// `accept-proxy` and `accept-proxy-from`: the PROXY protocol header required of connections
    /// on every listener that ``listenerProxyProtocol`` does not name.
    public var proxyProtocol = ProxyProtocolPolicy()
    /// `[listeners.NAME]`'s `accept-proxy` and `accept-proxy-from`, by listener name (systemd's
    /// `FileDescriptorName=`, or the address as written in `listen`).
    public var listenerProxyProtocol: [String: ProxyProtocolPolicy] = [:]

    /// The most workers one pool may have (TTIN stops there).
    public static let maximumWorkers = 512

    /// The defaults.
    public init() {}

    /// Checks every value; throws for the first one out of range, naming its key.
    public func validate() throws(ConfigurationError) {
        try Self.settings.validate(self)
        for name in listenerProxyProtocol.keys.sorted() {
            try ProxyProtocolPolicy.settings.validate(listenerProxyProtocol[name]!, prefix: "listeners.\(name).")
        }
    }

    /// The PROXY protocol policy of the listener called `name`: its own, else the top level's.
    public func proxyProtocol(forListenerNamed name: String) -> ProxyProtocolPolicy {
        listenerProxyProtocol[name] ?? proxyProtocol
    }

    /// `$RUNTIME_DIRECTORY`'s first directory when systemd sets it, else `/run/preforkd`.
    public static func defaultRuntimeDirectory() -> String {
        guard let value = getenv("RUNTIME_DIRECTORY").map({ String(cString: $0) }), !value.isEmpty else {
            return "/run/preforkd"
        }
        return String(value.split(separator: ":").first ?? "/run/preforkd")
    }

    /// The send timeout each connection gets from its listener (SO_SNDTIMEO): `send-timeout`,
    /// or `write-deadline` when that is shorter, so that no single send outlasts the deadline.
    public var sendTimeoutPerCall: Duration {
        writeDeadline > .zero ? min(sendTimeout, writeDeadline) : sendTimeout
    }

    /// `user` and `group` resolved, or nil when no `user` is set.
    public func serviceAccount() throws(ConfigurationError) -> ServiceAccount? {
        guard !user.isEmpty else { return nil }
        do throws(SettingError) {
            return try ServiceAccount.resolve(user: user, group: group)
        } catch {
            throw ConfigurationError(key: "user", value: user, reason: error.reason)
        }
    }

    /// The status file's path, or nil when `runtimeDirectory` is empty.
    public var statusFile: String? { runtimeDirectory.isEmpty ? nil : runtimeDirectory + "/status" }

    /// Processors online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1.
    public static func onlineProcessors() -> Int { max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))) }

    /// Every setting of the engine, said once: key, flag, help, default, range and rendering.
    /// `preforkd` builds its flags, its config-file keys, `--check-config` and `--help` from it.
    /// A new engine setting is a stored property above and one entry here; its flag is one
    /// `@Option` line in `PreforkdCommand` with its `flagInputs` entry (the tests fail until
    /// every property has an entry and every entry a working flag).
    package static let settings = SettingsTable<ServerConfiguration>(
        [
            Setting(
                key: "listen",
                help:
                    "Listen on ADDR: 127.0.0.1:11000, [::1]:11000, *:11000 or unix:/path (repeatable; port 0 = ephemeral).",
                flag: .value(name: "addr", short: "l", repeatable: true),
                read: { value, configuration throws(SettingError) in
                    let texts: [SettingValue]
                    switch value {
                    case .string: texts = [value]
                    case .array(let values): texts = values
                    default:
                        throw SettingError("expected an address or a list of addresses, got \(value.kindDescription)")
                    }
                    var addresses: [ListenAddress] = []
                    for text in texts {
                        guard case .string(let string) = text else {
                            throw SettingError("expected a string, got \(text.kindDescription)", value: text)
                        }
                        do throws(ListenAddressError) {
                            addresses.append(try ListenAddress(parsing: string))
                        } catch {
                            throw SettingError(error.reason, value: text)
                        }
                    }
                    configuration.listen = addresses
                },
                parseFlag: { .string($0) },
                render: { .array($0.listen.map { .string($0.description) }) },
                check: { configuration throws(SettingError) in
                    guard !configuration.listen.isEmpty else { throw SettingError("needs at least one address") }
                    var seen = Set<ListenAddress>()
                    for address in configuration.listen where !seen.insert(address).inserted {
                        throw SettingError("is listed twice", value: .string(address.description))
                    }
                }),
            .integer(
                "workers", \.workers, in: 1...maximumWorkers, help: "Worker processes.", short: "w",
                defaultDescription: "number of CPUs"),
            .integer(
                "initial-bytes", \.initialBytes, in: 1...(16 << 20), help: "Most bytes taken by the initial read."),
            .seconds(
                "initial-timeout", \.initialTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Seconds a new connection may take to send its first bytes; also bounds each later read."),
            .seconds(
                "send-timeout", \.sendTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Seconds a write may block on a client that does not read."),
            .seconds(
                "write-deadline", \.writeDeadline, in: .zero...(.seconds(86400)),
                help: "Seconds one write to a client may take in all (a slow reader is cut off); 0 for no limit."),
            .seconds(
                "graceful-timeout", \.gracefulTimeout, in: .zero...(.seconds(86400)),
                help: "Seconds to drain on SIGTERM or reload before SIGKILL."),
            .seconds(
                "boot-timeout", \.bootTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Seconds a new worker may take to start accepting; a reload that takes longer is rolled back."),
            .seconds(
                "handler-timeout", \.handlerTimeout, in: .zero...(.seconds(86400)),
                help: "Seconds a handler may take over one connection before its worker is killed; 0 for no limit."),
            .integer(
                "max-connections-per-worker", \.maxConnectionsPerWorker, in: 0...(1 << 40),
                help: "Connections after which a worker is replaced (plus up to a quarter, per worker); 0 for never."),
            .integer(
                "min-spare", \.minimumSpare, in: 0...maximumWorkers,
                help:
                    "Idle workers to keep at hand: fork more, up to max-workers, when fewer wait; 0 to stay at workers."
            ),
            Setting(
                key: "max-workers", help: "The most workers min-spare may grow the pool to (0: workers).",
                flag: .value(name: "n"),
                read: { value, configuration throws(SettingError) in
                    guard case .integer(let count) = value else {
                        throw SettingError("expected an integer, got \(value.kindDescription)")
                    }
                    configuration.maximumWorkers = count
                },
                parseFlag: { text throws(SettingError) in
                    guard let count = Int(text) else { throw SettingError("expected an integer") }
                    return .integer(count)
                },
                render: { .integer($0.maximumWorkers) },
                check: { configuration throws(SettingError) in
                    let count = configuration.maximumWorkers
                    guard count == 0 || (configuration.workers...maximumWorkers).contains(count) else {
                        throw SettingError(
                            "must be 0 or between workers (\(configuration.workers)) and \(maximumWorkers)",
                            value: .integer(count))
                    }
                }),
            .seconds(
                "spare-timeout", \.spareTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Seconds a worker beyond workers may sit idle before it is retired."),
            .integer(
                "backlog", \.backlog, in: 1...65535,
                help: "Accept queue length of bound listeners (clamped by the kernel)."),
            Setting(
                key: "unix-mode", help: "Octal permissions of unix socket files.", flag: .value(name: "mode"),
                read: { value, configuration throws(SettingError) in
                    guard case .string(let text) = value, let mode = UInt32(text, radix: 8), mode <= 0o777 else {
                        throw SettingError("expected an octal mode such as \"0660\"")
                    }
                    configuration.unixMode = mode
                },
                parseFlag: { .string($0) },
                render: { .string("0" + String($0.unixMode, radix: 8)) },
                check: { configuration throws(SettingError) in
                    guard configuration.unixMode <= 0o777 else {
                        throw SettingError("must be an octal mode from 0 to 777")
                    }
                }),
            Setting(
                key: "runtime-directory",
                help: "Directory of the status file preforkd status reads (empty: none).",
                flag: .value(name: "dir"), defaultDescription: "$RUNTIME_DIRECTORY, else /run/preforkd",
                read: { value, configuration throws(SettingError) in
                    guard case .string(let path) = value else {
                        throw SettingError("expected a string, got \(value.kindDescription)")
                    }
                    guard path.isEmpty || (path.hasPrefix("/") && path.utf8.count < 100) else {
                        throw SettingError("must be empty or an absolute path shorter than 100 bytes")
                    }
                    configuration.runtimeDirectory = path
                },
                parseFlag: { .string($0) },
                render: { .string($0.runtimeDirectory) }),
            .boolean(
                "defer-accept", \.deferAccept,
                help:
                    "Hold TCP connections in the kernel until their first bytes arrive (off where the server speaks first).",
                defaultDescription: "on"),
            .boolean(
                "fd-store", \.fileDescriptorStore,
                help: "Hand self-bound listeners to systemd's fd store so a restart keeps them.",
                defaultDescription: "on when $FDSTORE is set"),
            .integer(
                "open-files", \.openFiles, in: 0...(1 << 30),
                help: "Open-file limit of the supervisor and its workers; 0 for the hard limit."),
            .account(
                "user", \.user,
                help: "Serve as this user (name or uid) once the listeners are bound; empty to stay as started.",
                valueName: "user",
                check: { configuration throws(SettingError) in
                    guard !configuration.user.isEmpty else { return }
                    let (uid, primaryGroup) = try ServiceAccount.uid(of: configuration.user)
                    if primaryGroup == nil && configuration.group.isEmpty {
                        throw SettingError("uid \(uid) has no passwd entry: set group as well")
                    }
                }),
            .account(
                "group", \.group, help: "Serve as this group (name or gid); empty for the user's primary group.",
                valueName: "group",
                check: { configuration throws(SettingError) in
                    guard !configuration.group.isEmpty else { return }
                    guard !configuration.user.isEmpty else { throw SettingError("needs user") }
                    _ = try ServiceAccount.gid(of: configuration.group)
                }),
            .boolean(
                "allow-root", \.allowRoot,
                help: "Serve as root when started as root without user (refused otherwise).", defaultDescription: "off"),
        ] + ProxyProtocolPolicy.settings.lifted(\ServerConfiguration.proxyProtocol))
}

extension Setting where Root == ServerConfiguration {
    /// `user` or `group`: a name or a number, in a string (a bare integer is taken as well) or a
    /// flag; `check` resolves it.
    fileprivate static func account(
        _ key: String, _ path: WritableKeyPath<ServerConfiguration, String> & Sendable, help: String,
        valueName: String, check: @escaping @Sendable (ServerConfiguration) throws(SettingError) -> Void
    ) -> Setting {
        Setting(
            key: key, help: help, flag: .value(name: valueName),
            read: { value, configuration throws(SettingError) in
                switch value {
                case .string(let text): configuration[keyPath: path] = text
                case .integer(let number) where number >= 0: configuration[keyPath: path] = "\(number)"
                default: throw SettingError("expected a name or a number, got \(value.kindDescription)")
                }
            },
            parseFlag: { .string($0) },
            render: { .string($0[keyPath: path]) },
            check: check)
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

    /// `source: key = value: reason`, on one line.
    public var description: String {
        let prefix = source.isEmpty ? "" : "\(source): "
        return "\(prefix)\(key) = \(value): \(reason)"
    }
}
