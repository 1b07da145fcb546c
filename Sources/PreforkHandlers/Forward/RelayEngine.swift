internal import CPreforkShims
import Glibc
import Prefork
import Synchronization

/// The relay loop's thread: an epoll set over every pair's two sockets and the channel that
/// brings new pairs. Everything here is touched by that thread alone (after `start` built it).
///
/// Edge-triggered, with each socket registered once for input and output: backpressure is then
/// just *not reading* from a source whose destination is full — no `epoll_ctl` to switch interest
/// on and off per short write, and no wake-ups for a readable socket the loop is deliberately
/// leaving alone (level-triggered would report it on every wait). The price is the flags in
/// ``RelayDirection``: a socket is read or written until `EAGAIN`, or its turn's budget is spent
/// and the pair is queued to be served again without waiting for an event.
final class RelayEngine {
    private static let channelTag = UInt64.max
    private static let eventsPerWait = 64
    /// The most bytes one direction moves per turn, so one fast pair cannot starve the others.
    private static let turnBudget = 1 << 20
    /// Empty pipes kept for reuse.
    private static let sparePipes = 8
    /// Pipes in use at once, at most, by default: with four workers, 32 × 256 KiB each stays at
    /// half the kernel's default per-user allowance for pipes (see ``RelayPipePool``).
    static let defaultPipesInUse = 32

    private let epoll: Int32
    private var channel: Int32 = -1
    /// The eventfd written when the last pair finishes (set by the loop's owner before the thread starts).
    var drainedSignal: Int32 = -1
    private let method: RelayMethod
    private let idleTimeoutNs: UInt64
    private let scanIntervalNs: UInt64
    private let buffer: UnsafeMutableRawBufferPointer
    private let counters: RelayCounters
    private let pool: RelayPipePool
    /// Pairs by slot; a finished pair's slot is reused, with a new generation.
    private var slots: [RelayPair?] = []
    private var freeSlots: [Int] = []
    private var generations: [UInt32] = []
    /// Pairs that spent their budget with more to do, served again before the next wait blocks.
    private var again: [RelayPair] = []
    /// The list being served (swapped with `again`, so no turn allocates).
    private var serving: [RelayPair] = []
    /// Where the channel's messages are read to.
    private var messages = [RelayChannel.Message](repeating: .stop, count: 64)
    private var now: UInt64 = 0
    private var nextScan: UInt64 = 0
    private var stopping = false
    private var tags = [UInt64](repeating: 0, count: eventsPerWait)
    private var flags = [UInt32](repeating: 0, count: eventsPerWait)

    /// The size asked for each pool pipe: a bigger pipe moves more per `splice` (on loopback
    /// 256 KiB relayed about 10 % faster than the default 64 KiB; 1 MiB a little more again, at
    /// four times the charge against the per-user pipe allowance).
    static let pipeBytes = 256 * 1024

    init(
        idleTimeout: Duration, method: RelayMethod, pipesInUse: Int, buffer: UnsafeMutableRawBufferPointer,
        counters: RelayCounters
    ) throws(SystemCallError) {
        epoll = try valueOrErrno { pf_epoll_create() }.get("epoll_create1", "relay loop")
        self.method = method
        self.buffer = buffer
        self.counters = counters
        let (seconds, attoseconds) = idleTimeout.components
        idleTimeoutNs = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        // Idle deadlines are checked by a scan of every pair: once a second (500 pairs cost
        // microseconds), more often only for a short timeout, so none overstays it by much.
        scanIntervalNs = idleTimeoutNs == 0 ? 0 : min(1_000_000_000, max(10_000_000, idleTimeoutNs / 4))
        pool = RelayPipePool(pipeBytes: Self.pipeBytes, spareLimit: Self.sparePipes, inUseLimit: pipesInUse)
    }

    /// Adds the channel's read end to the epoll set (level-triggered: it is read a batch at a time).
    func watchChannel(_ fd: Int32) throws(SystemCallError) {
        try nothingOrErrno { pf_epoll_add_tagged(epoll, fd, PF_EPOLL_IN, Self.channelTag) }
            .get("epoll_ctl", "relay channel")
        channel = fd
    }

    /// Closes the epoll set of a loop whose thread never started.
    func closeEpoll() {
        close(epoll)
    }

    /// The thread's body: serves events until a stop request arrives, then closes everything.
    func run() {
        now = pf_monotonic_coarse_ns()
        nextScan = now &+ scanIntervalNs
        while !stopping {
            let count = pf_epoll_wait_tagged(epoll, &tags, &flags, Int32(Self.eventsPerWait), waitTimeoutMs())
            now = pf_monotonic_coarse_ns()
            if count > 0 {
                for index in 0..<Int(count) { dispatch(tag: tags[index], events: flags[index]) }
            }
            serveAgain()
            if scanIntervalNs > 0, now >= nextScan {
                closeIdlePairs()
                nextScan = now &+ scanIntervalNs
            }
        }
        tearDown()
    }

    private func waitTimeoutMs() -> Int32 {
        if !again.isEmpty { return 0 }
        if scanIntervalNs == 0 { return -1 }
        let current = pf_monotonic_coarse_ns()
        return nextScan <= current ? 0 : Int32((nextScan - current) / 1_000_000 + 1)
    }

    // MARK: - events

    private func dispatch(tag: UInt64, events: UInt32) {
        if tag == Self.channelTag {
            readChannel()
            return
        }
        let slot = Int((tag >> 1) & 0x7FFF_FFFF)
        guard slot < slots.count, let pair = slots[slot], pair.generation == UInt32(tag >> 32) else { return }
        // A socket error (a reset, a timeout) is fatal to a TCP connection, and is passed on at
        // once: waiting for a read or write to report it could wait for ever when the failed
        // socket's direction has already ended and the other one is quiet.
        if events & PF_EPOLL_ERR != 0 {
            finish(pair, .reset)
            return
        }
        // A hang-up makes both calls worth trying: they return the end (or the error) that says
        // what happened, and the pair ends the way it should.
        let readable = events & (PF_EPOLL_IN | PF_EPOLL_RDHUP | PF_EPOLL_HUP) != 0
        let writable = events & (PF_EPOLL_OUT | PF_EPOLL_HUP) != 0
        if tag & 1 == 0 {
            if readable { pair.toUpstream.sourceReadable = true }
            if writable { pair.toClient.destinationWritable = true }
        } else {
            if readable { pair.toClient.sourceReadable = true }
            if writable { pair.toUpstream.destinationWritable = true }
        }
        serve(pair)
    }

    private func serveAgain() {
        guard !again.isEmpty else { return }
        swap(&again, &serving)
        for pair in serving where slots[pair.slot] === pair {
            pair.queuedAgain = false
            serve(pair)
        }
        serving.removeAll(keepingCapacity: true)
    }

    /// Moves what can be moved both ways, then ends the pair if it is done or broken.
    private func serve(_ pair: RelayPair) {
        let up = transfer(
            &pair.toUpstream, delivered: counters.bytesClientToUpstream, otherIsOver: pair.toClient.destinationShut)
        let down = transfer(
            &pair.toClient, delivered: counters.bytesUpstreamToClient, otherIsOver: pair.toUpstream.destinationShut)
        if up.moved > 0 || down.moved > 0 { pair.lastActivity = now }
        if up.outcome == .failed || down.outcome == .failed {
            finish(pair, .reset)
        } else if pair.isComplete {
            finish(pair, .completed)
        } else if up.outcome == .budgetSpent || down.outcome == .budgetSpent, !pair.queuedAgain {
            pair.queuedAgain = true
            again.append(pair)
        }
    }

    // MARK: - moving bytes

    enum TransferOutcome {
        /// Nothing more to do until an event.
        case waiting
        /// More could be moved, but the turn's budget is spent.
        case budgetSpent
        /// A socket error (a reset, a broken pipe): the pair must end.
        case failed
    }

    /// One direction's turn: delivers what it holds, then reads and delivers more until a socket
    /// would block, the source ends or the budget is spent; passes an end on once all is delivered.
    /// When the other direction is over already (`otherIsOver`), the pair is done with this end:
    /// both sockets are closed next, and the close sends the FIN a shutdown would.
    private func transfer(
        _ direction: inout RelayDirection, delivered: borrowing Atomic<Int>, otherIsOver: Bool
    ) -> (outcome: TransferOutcome, moved: Int) {
        var moved = 0
        var outcome = TransferOutcome.waiting
        loop: while true {
            // Bytes held from an earlier read go on first; then, within the budget, a new read.
            let step: (result: StepResult, bytes: Int)
            if direction.heldBytes > 0 {
                step = deliver(&direction)
            } else {
                guard direction.sourceReadable, direction.destinationWritable, !direction.sourceEnded else { break }
                if moved >= Self.turnBudget {
                    outcome = .budgetSpent
                    break
                }
                step = receive(&direction)
            }
            moved += step.bytes
            switch step.result {
            case .progress: continue loop
            case .blocked: break loop
            case .failed:
                outcome = .failed
                break loop
            }
        }
        if moved > 0 { delivered.add(moved, ordering: .relaxed) }
        if let pipe = direction.pipe, direction.pipeBytes == 0 {
            pool.give(pipe)
            direction.pipe = nil
        }
        if outcome != .failed, direction.sourceEnded, direction.heldBytes == 0, !direction.destinationShut {
            // The peer may be gone already (ENOTCONN): its own events end the pair. Both sockets
            // have been read to their end by now when the other direction is over, so closing
            // them cannot reset either: the shutdown would be a system call for nothing.
            if !otherIsOver { _ = shutdown(direction.destination, Int32(SHUT_WR)) }
            direction.destinationShut = true
        }
        return (outcome, moved)
    }

    enum StepResult {
        case progress
        case blocked
        case failed
    }

    /// Reads once from the source into the direction's pipe (splice) or the shared buffer (copy,
    /// and splice when no pipe can be had), writing straight on in the copy case.
    /// Returns the bytes written on (copy), besides what the step means.
    private func receive(_ direction: inout RelayDirection) -> (result: StepResult, bytes: Int) {
        if method == .splice, let pipe = direction.pipe ?? pool.take() {
            direction.pipe = pipe
            let n = pf_splice(direction.source, pipe.writeEnd, pool.pipeBytes)
            guard n > 0 else { return (sourceEnd(&direction, result: n), 0) }
            direction.pipeBytes = n
            return (.progress, 0)
        }
        let n = read(direction.source, buffer.baseAddress, buffer.count)
        guard n > 0 else { return (sourceEnd(&direction, result: n), 0) }
        let written = send(direction.destination, buffer.baseAddress, n, Int32(MSG_NOSIGNAL))
        if written == n { return (.progress, n) }
        if written < 0, !Self.wouldBlock(Glibc.errno) { return (.failed, 0) }
        // A short write: keep the rest, and read no more until it is delivered.
        let kept = n - max(written, 0)
        guard let pending = malloc(kept) else { return (.failed, 0) }
        pending.copyMemory(from: buffer.baseAddress! + max(written, 0), byteCount: kept)
        direction.pending = pending
        direction.pendingStart = 0
        direction.pendingEnd = kept
        direction.destinationWritable = false
        // The bytes written count now; the kept ones when they are delivered.
        return (.blocked, max(written, 0))
    }

    /// What a read that moved nothing means: end of file, would block, or a failure.
    private func sourceEnd(_ direction: inout RelayDirection, result: Int) -> StepResult {
        if result == 0 {
            direction.sourceEnded = true
            return .blocked
        }
        let error = Glibc.errno
        if error == EINTR { return .progress }
        if Self.wouldBlock(error) {
            direction.sourceReadable = false
            return .blocked
        }
        return .failed
    }

    /// Writes what the direction holds (pending copy bytes first, then the pipe).
    private func deliver(_ direction: inout RelayDirection) -> (result: StepResult, bytes: Int) {
        guard direction.destinationWritable else { return (.blocked, 0) }
        let n: Int
        if let pending = direction.pending {
            n = send(
                direction.destination, pending + direction.pendingStart,
                direction.pendingEnd - direction.pendingStart, Int32(MSG_NOSIGNAL))
            if n > 0 {
                direction.pendingStart += n
                if direction.pendingStart == direction.pendingEnd {
                    free(pending)
                    direction.pending = nil
                    direction.pendingStart = 0
                    direction.pendingEnd = 0
                }
            }
        } else if let pipe = direction.pipe {
            n = pf_splice(pipe.readEnd, direction.destination, direction.pipeBytes)
            if n > 0 { direction.pipeBytes -= n }
        } else {
            return (.progress, 0)
        }
        if n > 0 { return (.progress, n) }
        let error = Glibc.errno
        if n < 0, error == EINTR { return (.progress, 0) }
        if n < 0, Self.wouldBlock(error) {
            direction.destinationWritable = false
            return (.blocked, 0)
        }
        return (.failed, 0)
    }

    private static func wouldBlock(_ error: Int32) -> Bool { error == EAGAIN || error == EWOULDBLOCK }

    // MARK: - pairs coming and going

    /// Takes every pair waiting in the channel (a batch per event: the channel is level-triggered).
    private func readChannel() {
        let size = MemoryLayout<RelayChannel.Message>.stride
        let n = messages.withUnsafeMutableBytes { read(channel, $0.baseAddress, $0.count) }
        guard n > 0 else { return }
        // Whole messages only: each was written atomically, and the read asked for whole ones.
        for message in messages[..<(n / size)] {
            if message.client < 0 {
                stopping = true
            } else {
                add(message)
            }
        }
    }

    private func add(_ message: RelayChannel.Message) {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
        } else {
            slot = slots.count
            slots.append(nil)
            generations.append(0)
        }
        generations[slot] = (generations[slot] &+ 1) & 0x7FFF_FFFF
        let pair = RelayPair(
            client: message.client, upstream: message.upstream, route: message.route, slot: slot,
            generation: generations[slot], now: now)
        slots[slot] = pair
        let tag = UInt64(pair.generation) << 32 | UInt64(slot) << 1
        let interest = PF_EPOLL_IN | PF_EPOLL_OUT | PF_EPOLL_RDHUP | PF_EPOLL_ET
        // Registering reports what is ready already (bytes the client sent after its first ones,
        // an upstream banner): no read is tried before epoll says so.
        guard pf_epoll_add_tagged(epoll, pair.client, interest, tag) == 0,
            pf_epoll_add_tagged(epoll, pair.upstream, interest, tag | 1) == 0
        else {
            finish(pair, .reset)
            return
        }
    }

    enum Ending {
        case completed
        case reset
        case idle
        case stopped
    }

    /// Closes both sockets — a reset one with an RST to its peer — and frees the pair's slot.
    private func finish(_ pair: RelayPair, _ ending: Ending) {
        switch ending {
        case .reset:
            // SO_LINGER {1, 0}: close sends RST, so the other peer learns at once the relay broke.
            _ = pf_set_linger_reset(pair.client)
            _ = pf_set_linger_reset(pair.upstream)
            counters.resets.add(1, ordering: .relaxed)
        case .idle:
            counters.idleTimeouts.add(1, ordering: .relaxed)
        case .completed, .stopped:
            break
        }
        close(pair.client)
        close(pair.upstream)
        pair.toUpstream.release(to: pool)
        pair.toClient.release(to: pool)
        slots[pair.slot] = nil
        freeSlots.append(pair.slot)
        if counters.finish(route: pair.route) == 0, drainedSignal >= 0 {
            var one: UInt64 = 1
            _ = write(drainedSignal, &one, MemoryLayout<UInt64>.size)
        }
    }

    private func closeIdlePairs() {
        for slot in slots.indices {
            if let pair = slots[slot], now &- pair.lastActivity >= idleTimeoutNs { finish(pair, .idle) }
        }
    }

    /// After a stop request: ends every pair, including those still in the channel, and closes
    /// the loop's own descriptors.
    private func tearDown() {
        for slot in slots.indices {
            if let pair = slots[slot] { finish(pair, .stopped) }
        }
        while true {
            var message = RelayChannel.Message.stop
            let n = read(channel, &message, MemoryLayout<RelayChannel.Message>.size)
            guard n == MemoryLayout<RelayChannel.Message>.size else { break }
            guard message.client >= 0 else { continue }
            close(message.client)
            close(message.upstream)
            _ = counters.finish(route: message.route)
        }
        pool.closeAll()
        close(channel)
        close(epoll)
    }
}
