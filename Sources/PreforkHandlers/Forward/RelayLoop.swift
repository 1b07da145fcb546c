internal import CPreforkShims
import Glibc
import Prefork
import Synchronization
import SystemPackage

/// How bytes move between the two sockets of a relayed pair.
package enum RelayMethod: String, Sendable, CaseIterable {
    /// `splice(2)` through a pipe taken from a small per-loop pool: the bytes never enter user space.
    case splice
    /// `read(2)` into one per-loop buffer, then `send(2)`.
    case copy
}

/// What a relay loop has done since it started.
package struct RelayStatistics: Sendable, Equatable {
    /// Pairs that ended, for whatever reason (both directions done, a reset, idle timeout, stop).
    package var finished = 0
    /// Bytes relayed from clients to upstreams.
    package var bytesClientToUpstream = 0
    /// Bytes relayed from upstreams to clients.
    package var bytesUpstreamToClient = 0
    /// Pairs closed because no byte moved either way for the idle timeout.
    package var idleTimeouts = 0
    /// Pairs ended by a reset or another socket error on either side (the other side was reset too).
    package var resets = 0
}

/// Carries established (client, upstream) connection pairs in a thread of its own: one per worker
/// process, beside the worker's accepting thread, so that a worker holds any number of long-lived
/// relays while it goes on accepting.
///
/// The accepting thread hands a pair over with ``adopt(client:upstream:route:)``; the loop's
/// thread relays both directions — half-closes and resets passed on, idle pairs closed — and
/// closes both sockets when the pair is done. Counters and ``drain(until:shouldGiveUp:)`` are safe
/// from any thread.
///
/// Create it anywhere (before fork too: it holds no kernel object until ``start()``), start it in
/// the worker, and ``stop()`` it — or let the last reference go — when it must end before the
/// process does (tests; a worker simply exits, and the kernel closes what it still relays).
///
/// Of the two methods, ``RelayMethod/splice`` relayed a single loopback stream a little faster
/// than ``RelayMethod/copy`` and with about 30 % less of the loop thread's CPU
/// (`Benchmarks/scripts/relay-throughput.sh`).
package final class RelayLoop: @unchecked Sendable {
    // @unchecked: `channel`, `drained` and `thread` are written only by `start()` and `stop()`,
    // which the owner calls before and after any other use; everything else is immutable or atomic.

    /// How long a pair may go without a byte moving either way before it is closed (.zero: never).
    package let idleTimeout: Duration
    /// How bytes move.
    package let method: RelayMethod
    private let counters: RelayCounters
    private let pipesInUse: Int
    /// The per-loop copy buffer, allocated here so that running out of memory is an error at start-up.
    private let buffer: UnsafeMutableRawBufferPointer
    /// The pipe that carries adopted pairs (and the stop request) to the loop's thread.
    private var channel = RelayChannel(readEnd: -1, writeEnd: -1)
    /// Readable once the last pair has finished: what ``drain(until:shouldGiveUp:)`` waits on.
    private var drained: Int32 = -1
    private var thread: pthread_t?

    /// The copy method's buffer: one read's worth of bytes, shared by every pair of the loop.
    package static let copyBufferBytes = 64 * 1024

    /// A loop relaying with `method`, closing pairs idle for `idleTimeout` (.zero: never), and
    /// counting pairs per route for routes `0..<routes` (``activeCount(route:)``). `onFinish`,
    /// when given, is called on the loop's thread with a pair's route as the pair ends.
    ///
    /// Throws when the copy buffer cannot be allocated.
    package convenience init(
        idleTimeout: Duration, method: RelayMethod, routes: Int = 0, onFinish: (@Sendable (Int) -> Void)? = nil
    ) throws(SystemCallError) {
        try self.init(
            idleTimeout: idleTimeout, method: method, routes: routes, pipesInUse: RelayEngine.defaultPipesInUse,
            onFinish: onFinish)
    }

    /// The same, with at most `pipesInUse` pipes taken from the loop's pool at once (splice):
    /// directions that find none free copy instead.
    init(
        idleTimeout: Duration, method: RelayMethod, routes: Int, pipesInUse: Int,
        onFinish: (@Sendable (Int) -> Void)? = nil
    ) throws(SystemCallError) {
        self.idleTimeout = max(idleTimeout, .zero)
        self.method = method
        self.pipesInUse = pipesInUse
        counters = RelayCounters(routes: routes, onFinish: onFinish)
        // Untouched pages are not resident: a loop made before fork costs nothing until it copies.
        guard let memory = malloc(Self.copyBufferBytes) else {
            throw SystemCallError("malloc", "relay buffer", errno: .noMemory)
        }
        buffer = UnsafeMutableRawBufferPointer(start: memory, count: Self.copyBufferBytes)
    }

    deinit {
        // The thread uses the buffer: it ends first.
        stop()
        free(buffer.baseAddress)
    }

    /// Starts the loop's thread: call it once, after fork, in the process that relays.
    ///
    /// The thread runs with every signal blocked, so signals keep going to the accepting thread
    /// (whose blocking `accept4` must see `EINTR`).
    package func start() throws(SystemCallError) {
        precondition(thread == nil, "RelayLoop.start() called twice")
        let engine = try RelayEngine(
            idleTimeout: idleTimeout, method: method, pipesInUse: pipesInUse, buffer: buffer, counters: counters)
        var pipeEnds: [Int32] = [-1, -1]
        do throws(SystemCallError) {
            try nothingOrErrno { pf_pipe2(&pipeEnds, O_CLOEXEC | O_NONBLOCK) }.get("pipe2", "relay channel")
            try engine.watchChannel(pipeEnds[0])
            drained = try valueOrErrno { pf_eventfd() }.get("eventfd", "relay drain")
            try startThread(engine)
        } catch {
            for fd in pipeEnds where fd >= 0 { close(fd) }
            if drained >= 0 { close(drained) }
            drained = -1
            engine.closeEpoll()
            throw error
        }
        engine.drainedSignal = drained
        channel = RelayChannel(readEnd: pipeEnds[0], writeEnd: pipeEnds[1])
    }

    /// Creates the thread with every signal blocked in it: a new thread inherits its creator's
    /// mask, so the creator blocks everything for the moment of `pthread_create`. Blocked, a
    /// SIGPIPE that `splice` raises on a reset socket (it has no `MSG_NOSIGNAL`) stays pending on
    /// this thread and harms nothing, whatever the process's disposition for it.
    private func startThread(_ engine: RelayEngine) throws(SystemCallError) {
        var blockAll = sigset_t()
        var previous = sigset_t()
        sigfillset(&blockAll)
        pthread_sigmask(SIG_SETMASK, &blockAll, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        var created = pthread_t()
        let context = Unmanaged.passRetained(engine).toOpaque()
        let status = pthread_create(
            &created, nil,
            { context in
                let engine = Unmanaged<RelayEngine>.fromOpaque(context!).takeRetainedValue()
                _ = "preforkd relay".withCString { pf_set_process_name($0) }
                engine.run()
                return nil
            }, context)
        guard status == 0 else {
            Unmanaged<RelayEngine>.fromOpaque(context).release()
            throw SystemCallError("pthread_create", "relay loop", errno: Errno(rawValue: status))
        }
        thread = created
    }

    /// Hands a connected pair to the loop, which from now on owns both sockets: it makes them
    /// non-blocking and relays between them until both directions are done, either side resets,
    /// or neither moves a byte for the idle timeout; then it closes both.
    ///
    /// `route` is the caller's index for the pair (its counters). An `upstream` opened with
    /// `SOCK_NONBLOCK` can say so (`upstreamIsNonBlocking`) and spare a system call. Callable from
    /// any thread while the loop runs. Costs one or two `ioctl`s and one `write` to the loop's
    /// channel; allocates nothing.
    ///
    /// Throws — and the sockets stay the caller's to close — when the loop is not running, the
    /// two are one socket (`EINVAL`), or thousands of handed-over pairs are still waiting for the
    /// loop's thread (`EAGAIN`).
    package func adopt(client: Int32, upstream: Int32, route: Int, upstreamIsNonBlocking: Bool = false)
        throws(SystemCallError)
    {
        guard channel.writeEnd >= 0 else { throw SystemCallError("relay adopt", errno: .badFileDescriptor) }
        // One socket as both sides would be registered twice and closed twice.
        guard client != upstream, client >= 0, upstream >= 0 else {
            throw SystemCallError("relay adopt", "fd \(client) and fd \(upstream)", errno: .invalidArgument)
        }
        try nothingOrErrno { pf_set_nonblocking(client) }.get("ioctl FIONBIO", "fd \(client)")
        if !upstreamIsNonBlocking {
            try nothingOrErrno { pf_set_nonblocking(upstream) }.get("ioctl FIONBIO", "fd \(upstream)")
        }
        counters.adopt(route: route)
        do throws(SystemCallError) {
            try channel.send(RelayChannel.Message(client: client, upstream: upstream, route: route))
        } catch {
            counters.unadopt(route: route)
            throw error
        }
    }

    /// Pairs handed over and not finished yet.
    package var activeCount: Int { counters.active.load(ordering: .relaxed) }

    /// Pairs of `route` handed over and not finished yet (0 for a route outside `0..<routes`).
    package func activeCount(route: Int) -> Int { counters.routeActive(route) }

    /// Pairs of `route` finished since start (0 for a route outside `0..<routes`).
    package func finishedCount(route: Int) -> Int { counters.routeFinished(route) }

    /// Totals since start.
    package var statistics: RelayStatistics { counters.snapshot() }

    /// Blocks until no pair is left (true), or `deadline` passes or `shouldGiveUp()` returns true
    /// (false: pairs are still open). `shouldGiveUp` is asked at least every 100 ms, and after any
    /// signal that interrupts the wait.
    package func drain(until deadline: ContinuousClock.Instant?, shouldGiveUp: () -> Bool) -> Bool {
        while true {
            if activeCount == 0 { return true }
            if shouldGiveUp() { return false }
            var waitMs: Int32 = 100
            if let deadline {
                let left = ContinuousClock.now.duration(to: deadline)
                if left <= .zero { return false }
                // Rounded up, so the wait never ends just short of the deadline.
                waitMs = left >= .milliseconds(100) ? 100 : Int32(left / .milliseconds(1)) + 1
            }
            guard drained >= 0 else {
                usleep(UInt32(waitMs) * 1000)  // not started: nothing will finish; wait out the deadline
                continue
            }
            var wait = pollfd(fd: drained, events: Int16(POLLIN), revents: 0)
            if poll(&wait, 1, waitMs) > 0 {
                var value: UInt64 = 0
                _ = read(drained, &value, MemoryLayout<UInt64>.size)
            }
        }
    }

    /// Ends the loop's thread, closing every pair it still holds, and waits for it. A loop is not
    /// started again.
    package func stop() {
        guard let thread, channel.writeEnd >= 0 else { return }
        // The channel is the loop's only input that is not a pair; a full channel only delays this.
        while true {
            do throws(SystemCallError) {
                try channel.send(RelayChannel.Message.stop)
                break
            } catch {
                guard error.errno == .resourceTemporarilyUnavailable else { break }
                usleep(1000)
            }
        }
        pthread_join(thread, nil)
        self.thread = nil
        close(channel.writeEnd)
        channel = RelayChannel(readEnd: -1, writeEnd: -1)
        close(drained)
        drained = -1
    }
}

/// The loop's counters: written by its thread (and `adopt`), read from anywhere.
final class RelayCounters: @unchecked Sendable {
    // @unchecked: `routeCounts` is allocated once and only reached through atomics.
    let active = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let bytesClientToUpstream = Atomic<Int>(0)
    let bytesUpstreamToClient = Atomic<Int>(0)
    let idleTimeouts = Atomic<Int>(0)
    let resets = Atomic<Int>(0)
    /// Per route: pairs active at `2 × route`, finished at `2 × route + 1`.
    private let routeCounts: UnsafeMutablePointer<Atomic<Int>>
    private let routes: Int
    /// Told of each pair that ends, with its route.
    private let onFinish: (@Sendable (Int) -> Void)?

    init(routes: Int, onFinish: (@Sendable (Int) -> Void)? = nil) {
        self.routes = max(routes, 0)
        self.onFinish = onFinish
        routeCounts = .allocate(capacity: 2 * self.routes)
        for index in 0..<2 * self.routes { (routeCounts + index).initialize(to: Atomic(0)) }
    }

    deinit {
        routeCounts.deinitialize(count: 2 * routes)
        routeCounts.deallocate()
    }

    func adopt(route: Int) {
        active.add(1, ordering: .relaxed)
        if route >= 0, route < routes { routeCounts[2 * route].add(1, ordering: .relaxed) }
    }

    /// Takes back an adoption that did not reach the loop.
    func unadopt(route: Int) {
        active.subtract(1, ordering: .relaxed)
        if route >= 0, route < routes { routeCounts[2 * route].subtract(1, ordering: .relaxed) }
    }

    /// Counts a pair finished; returns how many are still active.
    func finish(route: Int) -> Int {
        finished.add(1, ordering: .relaxed)
        if route >= 0, route < routes {
            routeCounts[2 * route].subtract(1, ordering: .relaxed)
            routeCounts[2 * route + 1].add(1, ordering: .relaxed)
        }
        onFinish?(route)
        return active.subtract(1, ordering: .relaxed).newValue
    }

    func routeActive(_ route: Int) -> Int {
        route >= 0 && route < routes ? routeCounts[2 * route].load(ordering: .relaxed) : 0
    }

    func routeFinished(_ route: Int) -> Int {
        route >= 0 && route < routes ? routeCounts[2 * route + 1].load(ordering: .relaxed) : 0
    }

    func snapshot() -> RelayStatistics {
        RelayStatistics(
            finished: finished.load(ordering: .relaxed),
            bytesClientToUpstream: bytesClientToUpstream.load(ordering: .relaxed),
            bytesUpstreamToClient: bytesUpstreamToClient.load(ordering: .relaxed),
            idleTimeouts: idleTimeouts.load(ordering: .relaxed),
            resets: resets.load(ordering: .relaxed))
    }
}

/// The pipe from the threads that adopt pairs to the loop's thread. Each message is far smaller
/// than `PIPE_BUF`, so a write is atomic: several threads may adopt at once without a lock.
struct RelayChannel {
    /// One handed-over pair, or the request to stop (`client` -1). 16 bytes, with no padding
    /// (size and stride agree), so an array of messages is exactly the bytes the pipe carries.
    struct Message {
        var client: Int32
        var upstream: Int32
        var route: Int

        static let stop = Message(client: -1, upstream: -1, route: 0)
    }

    let readEnd: Int32
    let writeEnd: Int32

    func send(_ message: Message) throws(SystemCallError) {
        var message = message
        let size = MemoryLayout<Message>.size
        let written = try valueOrErrno { write(writeEnd, &message, size) }.get("write", "relay channel")
        // A pipe write of at most PIPE_BUF bytes is all or nothing.
        precondition(written == size)
    }
}
