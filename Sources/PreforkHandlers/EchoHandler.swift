import Glibc
import Logging
import Prefork

/// The seed's echo protocol: the client sends a message ending with `<EOF>`; the handler reads
/// until it has the tag, sends the whole message back (tag included), then shuts the connection
/// down and closes it — the server closes first, so the client never holds TIME_WAIT.
///
/// With ``Configuration-swift.struct/keepAlive`` it instead waits on the same connection for the
/// next message, until the client closes or ``Configuration-swift.struct/idleTimeout`` passes.
/// A message over ``Configuration-swift.struct/maxMessageBytes``, or one that does not complete
/// within ``Configuration-swift.struct/messageTimeout``, closes the connection with a log line.
/// Bytes after the tag belong to the next message (keep-alive) or are dropped.
public struct EchoHandler: ConnectionHandler, BuiltInHandler {
    /// The name preforkd knows it by: `handler = "echo"`, the `[echo]` table, the `--echo-…` flags.
    package static let name = "echo"

    /// The echo handler's settings (config-file table `[echo]`, flags `--echo-…`).
    public struct Configuration: Sendable, Equatable, HandlerConfiguration {
        /// `keep-alive`: serve further messages on the connection.
        public var keepAlive = false
        /// `idle-timeout`: how long to wait for the next message with keep-alive.
        public var idleTimeout: Duration = .seconds(15)
        /// `max-message-bytes`: the largest message accepted, tag included.
        public var maxMessageBytes = 1 << 20
        /// `message-timeout`: how long a message may take to arrive completely (checked between reads).
        public var messageTimeout: Duration = .seconds(30)
        /// `max-messages`: with keep-alive, the most messages one connection is served; it is
        /// closed after the reply to the last (nginx's `keepalive_requests`). 0: no limit.
        public var maxMessages = 0
        /// `max-lifetime`: with keep-alive, how long one connection is served; it is closed after
        /// the first reply sent past it (nginx's `keepalive_time`). 0: no limit.
        public var maxLifetime: Duration = .zero

        /// The defaults.
        public init() {}

        /// Throws for the first value out of range, naming its key (`echo.max-message-bytes`).
        public func validate() throws(ConfigurationError) {
            try Self.settings.validate(self, prefix: EchoHandler.name + ".")
        }

        /// Every option, said once.
        package static let settings = SettingsTable<Configuration>([
            .boolean("keep-alive", \.keepAlive, help: "Echo: serve further messages on a connection."),
            .seconds(
                "idle-timeout", \.idleTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Echo: seconds to wait for the next message with keep-alive."),
            .integer(
                "max-message-bytes", \.maxMessageBytes, in: tag.count...(1 << 30),
                help: "Echo: largest message accepted, tag included.", valueName: "bytes"),
            .seconds(
                "message-timeout", \.messageTimeout, in: .milliseconds(1)...(.seconds(86400)),
                help: "Echo: seconds a whole message may take to arrive."),
            .integer(
                "max-messages", \.maxMessages, in: 0...(1 << 40),
                help: "Echo: with keep-alive, messages served per connection before it is closed; 0 for no limit."),
            .seconds(
                "max-lifetime", \.maxLifetime, in: .zero...(.seconds(86400 * 365)),
                help: "Echo: with keep-alive, seconds a connection is served before it is closed; 0 for no limit."),
        ])

        static let tag: [UInt8] = Array("<EOF>".utf8)
    }

    /// The end-of-message tag.
    public static let tag = "<EOF>"

    private let configuration: Configuration
    /// `message-timeout` in the monotonic clock's unit, worked out once rather than per message.
    private let messageTimeoutNs: UInt64
    /// `max-lifetime` likewise; 0 for none.
    private let maxLifetimeNs: UInt64
    /// One buffer per worker (allocated after fork, in `prepare`), reused by every connection.
    private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    /// Creates an echo handler.
    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        let (seconds, attoseconds) = max(configuration.messageTimeout, .zero).components
        self.messageTimeoutNs = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        let (lifetimeSeconds, lifetimeAttoseconds) = max(configuration.maxLifetime, .zero).components
        self.maxLifetimeNs = UInt64(lifetimeSeconds) * 1_000_000_000 + UInt64(lifetimeAttoseconds / 1_000_000_000)
    }

    /// Allocates the worker's message buffer (`max-message-bytes`).
    public mutating func prepare(_ context: WorkerContext) throws {
        // Only the pages a message touches become resident. malloc, not allocate(): running out
        // of memory here is a boot failure to report, not a crash.
        guard let memory = malloc(configuration.maxMessageBytes) else {
            throw EchoHandlerError.cannotAllocate(bytes: configuration.maxMessageBytes)
        }
        buffer = UnsafeMutableRawBufferPointer(start: memory, count: configuration.maxMessageBytes)
    }

    /// Echoes each message of the connection, as the type's description says.
    public mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        try initialData.withUnsafeBytes { (initialData) throws in
            try handle(connection, initialData: initialData, context: context)
        }
    }

    @inline(__always)
    private mutating func handle(
        _ connection: Connection, initialData: UnsafeRawBufferPointer, context: WorkerContext
    ) throws {
        var filled: Int
        var overflowed: Bool
        // How far the message buffer has been searched for the tag already.
        var searchedUpTo = 0
        // What fits in the message buffer; anything beyond it makes the message too long.
        let usable = min(initialData.count, buffer.count)
        // Messages served, and when the connection began (only read with max-lifetime).
        var served = 0
        let began = maxLifetimeNs > 0 ? Monotonic.now() : 0
        if let end = Self.tagEnd(in: initialData.baseAddress!, from: 0, to: usable) {
            // The usual case: the whole message came with the initial read. Echo it from there,
            // without copying it into the message buffer first.
            try connection.write(UnsafeRawBufferPointer(start: initialData.baseAddress, count: end))
            served = 1
            guard configuration.keepAlive, !context.isStopping, mayServeMore(served, began: began, context) else {
                connection.shutdown()
                return
            }
            // Keep what followed the tag: the start of the next message.
            let rest = UnsafeRawBufferPointer(start: initialData.baseAddress! + end, count: initialData.count - end)
            filled = copyIn(rest, at: 0)
            overflowed = rest.count > buffer.count
        } else {
            filled = copyIn(initialData, at: 0)
            overflowed = initialData.count > buffer.count
            searchedUpTo = max(0, filled - (Self.tagLength - 1))
        }
        var idleTimeoutSet = false
        while true {
            if filled == 0 {
                if !idleTimeoutSet {
                    try connection.setReceiveTimeout(configuration.idleTimeout)
                    idleTimeoutSet = true
                }
                let n: Int
                do throws(ConnectionError) {
                    n = try connection.read(into: buffer, interruptible: true)
                } catch {
                    switch error {
                    case .timedOut:
                        context.logger.debug(
                            "Keep-alive connection idle for \(configuration.idleTimeout.secondsText) s; closing")
                        return
                    case .stopRequested:
                        return
                    default:
                        throw error
                    }
                }
                if n == 0 { return }  // the client is done
                filled = n
                overflowed = false
            }
            let messageLength: Int
            switch try receiveMessage(
                connection, filled: &filled, searchedUpTo: searchedUpTo, overflowed: overflowed, context: context)
            {
            case .message(let length): messageLength = length
            case .closed: return
            }
            searchedUpTo = 0
            try connection.write(UnsafeRawBufferPointer(start: buffer.baseAddress, count: messageLength))
            served &+= 1
            guard configuration.keepAlive, !context.isStopping, mayServeMore(served, began: began, context) else {
                connection.shutdown()
                return
            }
            // Keep what followed the tag: the start of the next message.
            let rest = filled - messageLength
            if rest > 0 { buffer.baseAddress!.copyMemory(from: buffer.baseAddress! + messageLength, byteCount: rest) }
            filled = rest
            overflowed = false
        }
    }

    /// Whether a keep-alive connection that has been served `served` messages, since `began`,
    /// may be served another (`max-messages`, `max-lifetime`).
    @inline(__always)
    private func mayServeMore(_ served: Int, began: UInt64, _ context: WorkerContext) -> Bool {
        let limit = configuration.maxMessages
        if limit > 0 && served >= limit {
            context.logger.debug("Keep-alive connection served \(served) messages (max-messages); closing")
            return false
        }
        if maxLifetimeNs > 0 && Monotonic.now() &- began >= maxLifetimeNs {
            context.logger.debug(
                "Keep-alive connection open for \(configuration.maxLifetime.secondsText) s (max-lifetime); closing")
            return false
        }
        return true
    }

    private enum Received {
        case message(length: Int)
        case closed
    }

    /// Reads until `buffer[..<filled]` contains the tag; the message length includes it.
    /// `buffer[..<searchedUpTo]` is known to hold no complete tag.
    // Always inlined: left to the optimiser, the call (with the connection and the context
    // passed by value) cost about 80 instructions per keep-alive message under callgrind.
    @inline(__always)
    private func receiveMessage(
        _ connection: Connection, filled: inout Int, searchedUpTo: Int, overflowed: Bool, context: WorkerContext
    ) throws -> Received {
        let tagLength = Self.tagLength
        var searchedUpTo = searchedUpTo
        var deadline: UInt64 = 0
        while true {
            if let end = findTag(from: searchedUpTo, to: filled) { return .message(length: end) }
            searchedUpTo = max(0, filled - (tagLength - 1))
            if overflowed || filled == buffer.count {
                context.logger.warning(
                    "Message from \(connection.peer) exceeds \(configuration.maxMessageBytes) bytes; closing")
                return .closed
            }
            let now = Monotonic.now()
            if deadline == 0 {
                deadline = now + messageTimeoutNs
            } else if now >= deadline {
                context.logger.info(
                    "Message from \(connection.peer) incomplete after \(configuration.messageTimeout.secondsText) s; closing"
                )
                return .closed
            }
            let n: Int
            do throws(ConnectionError) {
                n = try connection.read(
                    into: UnsafeMutableRawBufferPointer(
                        start: buffer.baseAddress! + filled, count: buffer.count - filled))
            } catch {
                guard error == .timedOut else { throw error }
                context.logger.info("Client \(connection.peer) went silent mid-message; closing")
                return .closed
            }
            if n == 0 {
                context.logger.debug("Client closed before sending \(Self.tag) (\(filled) bytes received)")
                return .closed
            }
            filled += n
        }
    }

    /// The tag's length in bytes, as a constant the compiler folds.
    private static var tagLength: Int { 5 }

    /// The end offset of the first tag in `buffer[start..<end]`, if any.
    @inline(__always)
    private func findTag(from start: Int, to end: Int) -> Int? {
        Self.tagEnd(in: UnsafeRawPointer(buffer.baseAddress!), from: start, to: end)
    }

    /// The end offset (from `bytes`) of the first tag in `bytes[start..<end]`, if any.
    ///
    /// `memchr` for the tag's first byte, then one 4-byte compare for the rest: on a short
    /// message that costs a few dozen instructions, where the C library's `memmem` first builds
    /// its search tables (some 300 instructions for a 64-byte message).
    @inline(__always)
    private static func tagEnd(in bytes: UnsafeRawPointer, from start: Int, to end: Int) -> Int? {
        let tagLength = Self.tagLength
        // "EOF>", the bytes after the "<", as the word they load as on this machine.
        let rest = UInt32(littleEndian: 0x3E46_4F45)
        var from = start
        while end - from >= tagLength {
            // Only where a whole tag still fits.
            guard let found = memchr(bytes + from, 0x3C, end - from - (tagLength - 1)) else { return nil }
            let offset = UnsafeRawPointer(found) - bytes
            if (bytes + offset + 1).loadUnaligned(as: UInt32.self) == rest { return offset + tagLength }
            from = offset + 1
        }
        return nil
    }

    /// Copies as much of `bytes` as fits at `offset`; returns the new fill level.
    private func copyIn(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int {
        let count = min(bytes.count, buffer.count - offset)
        if count > 0 { (buffer.baseAddress! + offset).copyMemory(from: bytes.baseAddress!, byteCount: count) }
        return offset + count
    }
}

/// Why the echo handler could not start in a worker.
public enum EchoHandlerError: Error, CustomStringConvertible {
    /// The message buffer (`max-message-bytes`) could not be allocated.
    case cannotAllocate(bytes: Int)

    /// What failed, on one line.
    public var description: String {
        switch self {
        case .cannotAllocate(let bytes): "cannot allocate the \(bytes)-byte message buffer (max-message-bytes)"
        }
    }
}
