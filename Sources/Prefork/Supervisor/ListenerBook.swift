import Glibc
import Logging
import Systemd

/// The supervisor's listening sockets across reloads: the ones the serving generation uses,
/// what a pending reload adds and drops (kept apart until it commits or rolls back), and which
/// of them systemd's fd store holds a copy of.
///
/// A listener outlives every worker and every reload. One passed by systemd is never closed or
/// unlinked here; one held by the fd store keeps its socket file on a stop, and leaves the store
/// (FDSTOREREMOVE) when a reload drops it.
struct ListenerBook {
    /// What a reload replaced, kept until its generation commits or rolls back.
    struct Transaction {
        /// The setup and listeners of the generation that serves until the commit.
        let previousSetup: ServerSetup
        let previousListeners: [Listener]
        /// Listeners the new configuration added: closed if the reload is rolled back.
        let added: [Listener]
        /// Listeners it dropped: closed once the new generation serves.
        let removed: [Listener]
    }

    /// The listeners of the generation new workers join.
    private(set) var current: [Listener]
    private(set) var transaction: Transaction?
    /// Listening fds systemd's fd store holds a copy of, with their FDNAME.
    private var storedNames: [Int32: String] = [:]
    private let logger: Logger

    init(_ listeners: [Listener], logger: Logger) {
        current = listeners
        self.logger = logger
        for listener in listeners where listener.origin == .stored {
            if let address = listener.configured {
                storedNames[listener.fileDescriptor] = ListenerAcquisition.storedName(for: address)
            }
        }
    }

    /// The FDNAME under which systemd's fd store holds `listener`, if it does.
    func storedName(of listener: Listener) -> String? { storedNames[listener.fileDescriptor] }

    /// Notes that the fd store holds `fileDescriptor` already (an image before an in-place
    /// upgrade stored it): it is not stored twice, and leaves the store as any stored one does.
    mutating func markStored(_ fileDescriptor: Int32, name: String) { storedNames[fileDescriptor] = name }

    /// Descriptors a freshly forked worker must close: listeners a pending reload dropped.
    var droppedDescriptors: [Int32] { transaction?.removed.map(\.fileDescriptor) ?? [] }

    /// Every address the current listeners listen on, for STATUS=.
    var addresses: String { current.map(\.address).joined(separator: ", ") }

    // MARK: - start

    /// Logs a new listener and, when preforkd bound it and the configuration asks for it, hands
    /// a copy to systemd's fd store so that a restart finds it again.
    mutating func announce(_ listener: Listener, configuration: ServerConfiguration, reporter: inout ServiceReporter) {
        logger.info(
            "Listening on \(listener.address)",
            metadata: ["listener": "\(listener.name)", "origin": "\(listener.origin.rawValue)"])
        guard listener.origin == .bound, configuration.fileDescriptorStore, let address = listener.configured else {
            return
        }
        let name = ListenerAcquisition.storedName(for: address)
        if reporter.store(listener.fileDescriptor, name: name) { storedNames[listener.fileDescriptor] = name }
    }

    // MARK: - reload

    /// Binds what `next` adds and notes what it drops; the serving generation's sockets are not
    /// touched (their settings change at the commit). Activated sockets are always kept.
    mutating func prepareReload(
        to next: ServerSetup, from previous: ServerSetup, reporter: inout ServiceReporter
    ) throws(SystemCallError) {
        let configuration = next.configuration
        var wanted: [Listener] = []
        var added: [Listener] = []
        if current.contains(where: { $0.origin == .activated }) {
            wanted = current
        } else {
            do throws(SystemCallError) {
                for address in configuration.listen {
                    if let existing = current.first(where: { $0.configured == address }) {
                        wanted.append(existing)
                        continue
                    }
                    let listener = try Listener.bind(
                        address, backlog: Int32(configuration.backlog), unixMode: mode_t(configuration.unixMode))
                    added.append(listener)
                    wanted.append(listener)
                }
                // New sockets get the new settings now; kept ones only may have to become
                // non-blocking early (workers waiting in epoll need it; a worker parked in
                // accept copes with it), and get the rest at the commit.
                try Self.apply(next, to: added, listenerCount: wanted.count)
                if wanted.count > 1 { try Self.makeNonBlocking(wanted) }
            } catch {
                for listener in added { listener.close(unlinkingSocketFile: true) }
                throw error
            }
        }
        let removed = current.filter { old in !wanted.contains(old) }
        transaction = Transaction(
            previousSetup: previous, previousListeners: current, added: added, removed: removed)
        for listener in added { announce(listener, configuration: configuration, reporter: &reporter) }
        current = wanted
    }

    /// The new generation serves and the old one was told to stop: the kept sockets get the new
    /// settings, and the dropped ones are closed.
    mutating func commit(_ setup: ServerSetup, reporter: inout ServiceReporter) {
        guard let transaction else { return }
        self.transaction = nil
        do {
            try Self.apply(setup, to: current, listenerCount: current.count)
        } catch {
            logger.error("Applying the reloaded socket settings: \(error)")
        }
        for listener in transaction.removed {
            logger.info("No longer listening on \(listener.address)")
            release(listener, reporter: &reporter)
        }
    }

    /// The new generation could not boot: close what it added, give the old generation's
    /// sockets their settings back. Returns the setup that serves again.
    mutating func rollBack(reporter: inout ServiceReporter) -> ServerSetup? {
        guard let transaction else { return nil }
        self.transaction = nil
        for listener in transaction.added { release(listener, reporter: &reporter) }
        current = transaction.previousListeners
        do {
            try Self.apply(transaction.previousSetup, to: current, listenerCount: current.count)
        } catch {
            logger.error("Restoring the socket settings: \(error)")
        }
        return transaction.previousSetup
    }

    // MARK: - stop

    /// A graceful stop began: close the sockets preforkd bound itself and nothing else holds, so
    /// that new clients are refused at once instead of waiting in a queue nobody will accept
    /// from. Activated sockets and those in systemd's fd store stay: their queue waits for the
    /// next start. (Each worker drops its own copy when it is told to stop.)
    mutating func closeForDrain() {
        var kept: [Listener] = []
        for listener in current {
            if listener.origin == .bound && storedNames[listener.fileDescriptor] == nil {
                logger.info("No longer accepting on \(listener.address)")
                listener.close(unlinkingSocketFile: true)
            } else {
                kept.append(listener)
            }
        }
        current = kept
    }

    /// The supervisor exits: close what is ours. A socket file stays when systemd's fd store
    /// keeps the socket for the next start.
    mutating func closeAll() {
        let all = current + (transaction?.removed ?? [])
        for listener in all where listener.origin != .activated {
            let stored = storedNames[listener.fileDescriptor] != nil
            listener.close(unlinkingSocketFile: listener.origin == .bound && !stored)
        }
        current = []
        transaction = nil
    }

    // MARK: - helpers

    /// Closes a listener preforkd no longer needs; never an activated one. One in systemd's fd
    /// store leaves the store too, or systemd would keep it listening.
    private mutating func release(_ listener: Listener, reporter: inout ServiceReporter) {
        guard listener.origin != .activated else { return }
        if let name = storedNames.removeValue(forKey: listener.fileDescriptor) {
            reporter.unstore(name: name)
        }
        listener.close(unlinkingSocketFile: listener.origin == .bound)
    }

    /// Per-listener socket settings every worker inherits: timeouts, and the blocking mode the
    /// workers' accept loop needs (non-blocking when they wait in epoll over several).
    static func apply(_ setup: ServerSetup, to listeners: [Listener], listenerCount: Int) throws(SystemCallError) {
        let configuration = setup.configuration
        for listener in listeners {
            try listener.setTimeouts(receive: configuration.initialTimeout, send: configuration.sendTimeoutPerCall)
            // A handler that answers silent clients must see them at initial-timeout, not after
            // the kernel has held them for as long again.
            let defers = configuration.deferAccept && !setup.handler.answersSilentClients(on: listener)
            try deferAccepts(on: listener, defers ? configuration.initialTimeout : nil)
            let flags = fcntl(listener.fileDescriptor, F_GETFL)
            guard flags >= 0 else { throw SystemCallError.current("fcntl F_GETFL", listener.address) }
            let wanted = listenerCount > 1 ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
            if wanted != flags, fcntl(listener.fileDescriptor, F_SETFL, wanted) != 0 {
                throw SystemCallError.current("fcntl F_SETFL", listener.address)
            }
        }
    }

    /// TCP_DEFER_ACCEPT (for `timeout`; off when nil) on the TCP listeners preforkd owns: the kernel completes a connection
    /// for accept only once its first bytes arrive, so a client that sends nothing never holds
    /// a worker; after `initial-timeout` (rounded up to TCP's retransmission schedule: 1, 3, 7,
    /// 15, 31… s) it is handed over empty, and closed at once. Sockets from systemd keep what
    /// their unit says (`DeferAcceptSec=`).
    private static func deferAccepts(on listener: Listener, _ timeout: Duration?) throws(SystemCallError) {
        guard listener.origin != .activated, listener.isTCP else { return }
        let seconds = timeout.map { Int32(max(1, $0.inSeconds.rounded(.up))) } ?? 0
        var value = seconds
        guard
            setsockopt(
                listener.fileDescriptor, Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT, &value,
                socklen_t(MemoryLayout<Int32>.size)
            ) == 0
        else { throw SystemCallError.current("setsockopt TCP_DEFER_ACCEPT", listener.address) }
    }

    private static func makeNonBlocking(_ listeners: [Listener]) throws(SystemCallError) {
        for listener in listeners {
            let flags = fcntl(listener.fileDescriptor, F_GETFL)
            if flags >= 0, flags & O_NONBLOCK == 0, fcntl(listener.fileDescriptor, F_SETFL, flags | O_NONBLOCK) != 0 {
                throw SystemCallError.current("fcntl F_SETFL", listener.address)
            }
        }
    }
}
