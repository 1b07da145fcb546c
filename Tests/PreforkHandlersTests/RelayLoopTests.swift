import Glibc
import Prefork
import Testing
import TestSupport

@testable import PreforkHandlers

/// The relay loop over real loopback TCP (and socketpairs for the plain cases), with both methods.
///
/// Serialized: several tests count the process's descriptors or its relay threads.
@Suite(.serialized) struct RelayLoopTests {
    /// A started loop; `body` runs with it, and the loop is stopped afterwards whatever happens.
    func withLoop<Result>(
        _ method: RelayMethod, idleTimeout: Duration = .seconds(60), _ body: (RelayLoop) throws -> Result
    ) throws -> Result {
        let loop = try RelayLoop(idleTimeout: idleTimeout, method: method)
        try loop.start()
        defer { loop.stop() }
        return try body(loop)
    }

    /// Waits until the loop has no pair left.
    func waitUntilIdle(_ loop: RelayLoop, seconds: Double = 10) throws {
        try waitUntil("no pair left", seconds: seconds) { loop.activeCount == 0 }
    }

    // MARK: - bytes

    @Test(arguments: RelayMethod.allCases)
    func bytesFlowBothWaysInOrderOverSocketpairs(method: RelayMethod) throws {
        try withLoop(method) { loop in
            let pair = try relayedSocketpairs(through: loop)
            defer { pair.closeTestEnds() }
            for round in 0..<20 {
                try sendAll(pair.client, "request \(round);")
                #expect(try readText(pair.upstream, count: "request \(round);".utf8.count) == "request \(round);")
                try sendAll(pair.upstream, "reply \(round);")
                #expect(try readText(pair.client, count: "reply \(round);".utf8.count) == "reply \(round);")
            }
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func sixtyFourMebibytesEachWayAtOnceArriveUnchangedOverTCP(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        let count = 64 << 20
        let statistics = try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { pair.closeTestEnds() }
            try exchangeBothWays(pair.client, pair.upstream, count: count)
            try waitUntilIdle(loop)
            return loop.statistics
        }
        #expect(statistics.bytesClientToUpstream == count)
        #expect(statistics.bytesUpstreamToClient == count)
        #expect(statistics.finished == 1)
        #expect(statistics.resets == 0)
    }

    @Test(arguments: RelayMethod.allCases)
    func fiftyBusyPairsAtOnceAllArriveUnchanged(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        let count = 2 << 20
        // 100 directions busy at once: more than the pipes a loop lends, so splice copies for some.
        let statistics = try withLoop(method) { loop in
            let pairs = try (0..<50).map { _ in try listener.relayedConnection(through: loop) }
            defer { pairs.forEach { $0.closeTestEnds() } }
            try exchangeBothWays(pairs.map { ($0.client, $0.upstream) }, count: count)
            try waitUntilIdle(loop)
            return loop.statistics
        }
        #expect(statistics.bytesClientToUpstream == 50 * count)
        #expect(statistics.bytesUpstreamToClient == 50 * count)
        #expect(statistics.finished == 50)
        #expect(statistics.resets == 0)
    }

    @Test(arguments: [0, 1])
    func spliceDirectionsThatFindNoPipeFreeCopyInstead(pipesInUse: Int) throws {
        let listener = try LoopbackListener()
        // With one pipe, the two directions of the pair take turns with it, copying when it is out.
        let loop = try RelayLoop(idleTimeout: .seconds(60), method: .splice, routes: 0, pipesInUse: pipesInUse)
        try loop.start()
        defer { loop.stop() }
        let pair = try listener.relayedConnection(through: loop)
        defer { pair.closeTestEnds() }
        try exchangeBothWays(pair.client, pair.upstream, count: 16 << 20)
        try waitUntilIdle(loop)
        #expect(loop.statistics.bytesClientToUpstream == 16 << 20)
        #expect(loop.statistics.bytesUpstreamToClient == 16 << 20)
    }

    @Test func thePipePoolLendsUpToItsCapAndKeepsAFewSpares() throws {
        let pool = RelayPipePool(pipeBytes: 65536, spareLimit: 1, inUseLimit: 2)
        defer { pool.closeAll() }
        let first = try #require(pool.take())
        let second = try #require(pool.take())
        #expect(pool.take() == nil)
        pool.give(first)
        pool.give(second)
        // One spare kept open, the other closed.
        let open = [first, second].filter { fcntl($0.readEnd, F_GETFD) >= 0 && fcntl($0.writeEnd, F_GETFD) >= 0 }
        #expect(open.count == 1)
        #expect(pool.inUse == 0)
        let again = try #require(pool.take())
        #expect(again.readEnd == open.first?.readEnd)
        pool.discard(again)
        #expect(fcntl(again.readEnd, F_GETFD) == -1)
    }

    @Test func pairsAreCountedPerRoute() throws {
        let listener = try LoopbackListener()
        let loop = try RelayLoop(idleTimeout: .seconds(60), method: .copy, routes: 2)
        try loop.start()
        defer { loop.stop() }
        let first = try listener.relayedConnection(through: loop, route: 1)
        let second = try listener.relayedConnection(through: loop, route: 1)
        let unrouted = try listener.relayedConnection(through: loop, route: 7)
        defer { [second, unrouted].forEach { $0.closeTestEnds() } }
        #expect(loop.activeCount(route: 1) == 2)
        #expect(loop.activeCount(route: 0) == 0)
        #expect(loop.activeCount == 3)
        first.closeTestEnds()
        try waitUntil("the first pair finished") { loop.finishedCount(route: 1) == 1 }
        #expect(loop.activeCount(route: 1) == 1)
        #expect(loop.activeCount(route: 7) == 0)
        #expect(loop.finishedCount(route: 7) == 0)
    }

    // MARK: - ends

    @Test(arguments: RelayMethod.allCases)
    func bytesAndAnEndSentBeforeAdoptionAreRelayed(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let (client, relayClient) = try listener.connectedPair()
            let (relayUpstream, upstream) = try listener.connectedPair()
            defer {
                close(client)
                close(upstream)
            }
            for fd in [client, upstream] { setTimeouts(fd, seconds: 10) }
            // Everything is queued before the loop sees the sockets: epoll reports it on registration.
            try sendAll(client, "early request")
            shutdown(client, Int32(SHUT_WR))
            try sendAll(upstream, "early banner")
            try loop.adopt(client: relayClient, upstream: relayUpstream, route: 0)
            let request = readToEnd(upstream)
            #expect(String(decoding: request.bytes, as: UTF8.self) == "early request")
            #expect(request.end == .endOfFile)
            #expect(try readText(client, count: 12) == "early banner")
            shutdown(upstream, Int32(SHUT_WR))
            #expect(readToEnd(client).end == .endOfFile)
            try waitUntilIdle(loop)
        }
    }

    @Test func oneSocketAsBothSidesIsRefused() throws {
        try withLoop(.copy) { loop in
            let listener = try LoopbackListener()
            let (a, b) = try listener.connectedPair()
            defer {
                close(a)
                close(b)
            }
            #expect(throws: SystemCallError.self) { try loop.adopt(client: a, upstream: a, route: 0) }
            #expect(loop.activeCount == 0)
            #expect(fcntl(a, F_GETFD) >= 0)
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func aClientHalfCloseReachesTheUpstreamAndTheWholeReplyStillComesBack(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { pair.closeTestEnds() }
            try sendAll(pair.client, "GET everything")
            shutdown(pair.client, Int32(SHUT_WR))
            // The upstream sees the request, then end of file: the client's shutdown passed on.
            let request = readToEnd(pair.upstream)
            #expect(String(decoding: request.bytes, as: UTF8.self) == "GET everything")
            #expect(request.end == .endOfFile)
            // Only then does it answer — a large reply, so it takes many turns of the loop.
            let reply = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try sendAll(pair.upstream, reply)
            shutdown(pair.upstream, Int32(SHUT_WR))
            let received = readToEnd(pair.client)
            #expect(received.bytes == reply)
            #expect(received.end == .endOfFile)
            try waitUntilIdle(loop)
            #expect(loop.statistics.finished == 1)
            #expect(loop.statistics.resets == 0)
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func anUpstreamHalfCloseLeavesTheClientSending(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { pair.closeTestEnds() }
            // A server that speaks first and is done (a banner), while the client goes on.
            try sendAll(pair.upstream, "BANNER")
            shutdown(pair.upstream, Int32(SHUT_WR))
            let banner = readToEnd(pair.client)
            #expect(String(decoding: banner.bytes, as: UTF8.self) == "BANNER")
            #expect(banner.end == .endOfFile)
            try sendAll(pair.client, "still talking")
            #expect(try readText(pair.upstream, count: 13) == "still talking")
            #expect(loop.activeCount == 1)
            shutdown(pair.client, Int32(SHUT_WR))
            #expect(readToEnd(pair.upstream).end == .endOfFile)
            try waitUntilIdle(loop)
        }
    }

    @Test(arguments: RelayMethod.allCases, [true, false])
    func aResetOnOneSideResetsTheOther(method: RelayMethod, upstreamResets: Bool) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            let (resetting, other) = upstreamResets ? (pair.upstream, pair.client) : (pair.client, pair.upstream)
            defer { close(other) }
            try sendAll(resetting, "hello")
            #expect(try readText(other, count: 5) == "hello")
            // SO_LINGER {1, 0}: close sends RST.
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(resetting, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            close(resetting)
            #expect(readToEnd(other).end == .error(ECONNRESET))
            try waitUntilIdle(loop)
            #expect(loop.statistics.resets == 1)
            #expect(loop.statistics.finished == 1)
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func aResetAfterAHalfCloseReachesAQuietUpstream(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { close(pair.upstream) }
            try sendAll(pair.client, "request")
            shutdown(pair.client, Int32(SHUT_WR))
            let request = readToEnd(pair.upstream)
            #expect(request.end == .endOfFile)
            // The client gives up while the upstream is still thinking: nothing more moves either
            // way, so only the error itself can tell the upstream.
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            setsockopt(pair.client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
            close(pair.client)
            // A read would still say end of file (the FIN came first); poll reports the reset.
            var probe = pollfd(fd: pair.upstream, events: 0, revents: 0)
            #expect(poll(&probe, 1, 10_000) == 1)
            #expect(Int32(probe.revents) & Int32(POLLERR) != 0)
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(pair.upstream, SOL_SOCKET, SO_ERROR, &error, &length)
            // Linux reports an RST received in CLOSE_WAIT as EPIPE, elsewhere as ECONNRESET.
            #expect(error == EPIPE || error == ECONNRESET)
            try waitUntilIdle(loop)
            #expect(loop.statistics.resets == 1)
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func writingToAClosedUpstreamResetsTheClient(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { close(pair.client) }
            // The upstream goes away entirely; whatever the client sends next hits a dead socket.
            close(pair.upstream)
            let end = readToEnd(pair.client)
            #expect(end.end == .endOfFile)
            var outcome = StreamEnd.endOfFile
            let deadline = Deadline(seconds: 10)
            while outcome == .endOfFile, !deadline.hasPassed {
                if send(pair.client, "x", 1, Int32(MSG_NOSIGNAL)) < 0 { outcome = .error(errno) }
                var probe = pollfd(fd: pair.client, events: Int16(POLLIN), revents: 0)
                _ = poll(&probe, 1, 10)
            }
            #expect(outcome == .error(ECONNRESET) || outcome == .error(EPIPE))
            try waitUntilIdle(loop)
            #expect(loop.statistics.resets == 1)
        }
    }

    // MARK: - idle timeout

    @Test(arguments: RelayMethod.allCases)
    func anIdlePairIsClosedAndABusyOneIsNot(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        let timeout = Duration.milliseconds(400)
        try withLoop(method, idleTimeout: timeout) { loop in
            let idle = try listener.relayedConnection(through: loop)
            let busy = try listener.relayedConnection(through: loop)
            defer {
                idle.closeTestEnds()
                busy.closeTestEnds()
            }
            // Traffic every 20 ms, alternating directions, until the idle pair has been closed
            // and then for three more timeouts.
            var round = 0
            var idleClosedAt: Deadline?
            let deadline = Deadline(seconds: 20)
            while !deadline.hasPassed {
                let (from, to) = round % 2 == 0 ? (busy.client, busy.upstream) : (busy.upstream, busy.client)
                try sendAll(from, "ping")
                #expect(try readText(to, count: 4) == "ping")
                round += 1
                if idleClosedAt == nil, loop.statistics.idleTimeouts == 1 { idleClosedAt = Deadline(seconds: 1.2) }
                if let idleClosedAt, idleClosedAt.hasPassed { break }
                sleepMilliseconds(20)
            }
            #expect(idleClosedAt != nil)
            #expect(readToEnd(idle.client).end == .endOfFile)
            #expect(readToEnd(idle.upstream).end == .endOfFile)
            #expect(loop.activeCount == 1)
            #expect(loop.statistics.idleTimeouts == 1)
        }
    }

    // MARK: - backpressure

    @Test(arguments: RelayMethod.allCases)
    func aReceiverThatDoesNotReadStopsTheSenderThenEverythingArrives(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { pair.closeTestEnds() }
            _ = fcntl(pair.client, F_SETFL, fcntl(pair.client, F_GETFL) | O_NONBLOCK)
            // The upstream reads nothing: the client can write only until the socket buffers on
            // the way are full, because the loop stops reading from it.
            let limit = 256 << 20
            var sender = PatternStream(seed: 7, total: limit)
            while !sender.isComplete {
                if try sender.send(to: pair.client) { break }
                var writable = pollfd(fd: pair.client, events: Int16(POLLOUT), revents: 0)
                if poll(&writable, 1, 500) == 0 { break }  // stalled: nothing drains the buffers
            }
            #expect(sender.offset < 64 << 20, "the relay kept reading while nobody read from it")
            // Now the upstream reads it all, and the client finishes with what it has sent.
            let sent = sender.offset
            shutdown(pair.client, Int32(SHUT_WR))
            var receiver = PatternStream(seed: 7, total: sent)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)
            defer { buffer.deallocate() }
            #expect(try receiver.receive(from: pair.upstream, into: buffer))
            #expect(receiver.isComplete)
        }
    }

    // MARK: - cost of idle pairs, and descriptors

    @Test(arguments: RelayMethod.allCases)
    func fiveHundredIdlePairsHoldTwoDescriptorsEachAndAllStillRelay(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        try withLoop(method) { loop in
            let before = openDescriptorCount()
            var pairs: [RelayedConnection] = []
            defer { pairs.forEach { $0.closeTestEnds() } }
            for _ in 0..<500 { pairs.append(try listener.relayedConnection(through: loop)) }
            // Every pair poked once each way: each takes a pipe for its transfer and gives it back.
            for pair in pairs {
                try sendAll(pair.client, "?")
                #expect(try readText(pair.upstream, count: 1) == "?")
                try sendAll(pair.upstream, "!")
                #expect(try readText(pair.client, count: 1) == "!")
            }
            // The test's two ends and the loop's two per pair; the loop's pipe pool on top.
            let added = openDescriptorCount() - before
            #expect(added >= 4 * 500)
            #expect(added <= 4 * 500 + 32, "\(added - 4 * 500) descriptors beyond the pairs' own")
            #expect(loop.activeCount == 500)
        }
    }

    @Test(arguments: RelayMethod.allCases)
    func everyDescriptorIsClosedOnceAllPairsEnd(method: RelayMethod) throws {
        let listener = try LoopbackListener()
        let baseline = openDescriptorCount()
        try withLoop(method) { loop in
            var handedOver: [FileIdentity] = []
            for index in 0..<200 {
                let pair = try listener.relayedConnection(through: loop)
                handedOver += [pair.relayClient, pair.relayUpstream].compactMap(fileIdentity)
                try sendAll(pair.client, "ping \(index)")
                #expect(try readText(pair.upstream, count: "ping \(index)".utf8.count) == "ping \(index)")
                // A third end with both sides shut first, a third by a client's reset, a third by plain closes.
                switch index % 3 {
                case 0:
                    shutdown(pair.client, Int32(SHUT_WR))
                    shutdown(pair.upstream, Int32(SHUT_WR))
                    _ = readToEnd(pair.client)
                    _ = readToEnd(pair.upstream)
                    pair.closeTestEnds()
                case 1:
                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                    setsockopt(pair.client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                    pair.closeTestEnds()
                default:
                    pair.closeTestEnds()
                }
            }
            try waitUntilIdle(loop)
            #expect(loop.statistics.finished == 200)
            // No descriptor of this process is still one of the sockets the loop was given.
            let stillOpen = openIdentities().filter { open in
                handedOver.contains { $0.device == open.device && $0.inode == open.inode }
            }
            #expect(stillOpen.isEmpty)
        }
        // The stopped loop's epoll set, channel, eventfd and spare pipes are gone too.
        #expect(openDescriptorCount() <= baseline + 8)
    }

    // MARK: - drain

    @Test func drainReturnsTrueWhenTheLastPairFinishes() throws {
        let listener = try LoopbackListener()
        try withLoop(.splice) { loop in
            let pair = try listener.relayedConnection(through: loop)
            shutdown(pair.client, Int32(SHUT_WR))
            shutdown(pair.upstream, Int32(SHUT_WR))
            let finished = loop.drain(until: .now + .seconds(10)) { false }
            pair.closeTestEnds()
            #expect(finished)
            #expect(loop.activeCount == 0)
        }
    }

    @Test func drainReturnsFalseAtTheDeadlineOrWhenToldToGiveUp() throws {
        let listener = try LoopbackListener()
        try withLoop(.copy) { loop in
            let pair = try listener.relayedConnection(through: loop)
            defer { pair.closeTestEnds() }
            #expect(!loop.drain(until: .now + .milliseconds(150)) { false })
            var asked = 0
            #expect(
                !loop.drain(until: nil) {
                    asked += 1
                    return asked == 3
                })
            #expect(loop.activeCount == 1)
            // The pair is untouched: it still relays.
            try sendAll(pair.client, "after")
            #expect(try readText(pair.upstream, count: 5) == "after")
        }
    }

    // MARK: - the thread

    @Test func theLoopsThreadBlocksEverySignal() throws {
        try withLoop(.splice) { _ in
            // The thread names itself as it starts; its mask is set from its first instruction.
            var masks: [UInt64] = []
            try waitUntil("the relay thread") {
                masks = blockedSignals(ofThreadsNamed: "preforkd relay")
                return !masks.isEmpty
            }
            for signal in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD, SIGTTOU] {
                for mask in masks { #expect(mask & (1 << UInt64(signal - 1)) != 0, "signal \(signal)") }
            }
        }
    }

    @Test func adoptBeforeStartLeavesTheSocketsToTheCaller() throws {
        let loop = try RelayLoop(idleTimeout: .seconds(1), method: .splice)
        let listener = try LoopbackListener()
        let (a, b) = try listener.connectedPair()
        defer {
            close(a)
            close(b)
        }
        #expect(throws: SystemCallError.self) { try loop.adopt(client: a, upstream: b, route: 0) }
        #expect(loop.activeCount == 0)
        #expect(loop.drain(until: .now) { false })
    }

    @Test func droppingTheLoopStopsItsThreadAndClosesItsPairs() throws {
        let listener = try LoopbackListener()
        var pairs: [RelayedConnection] = []
        defer { pairs.forEach { $0.closeTestEnds() } }
        do {
            let loop = try RelayLoop(idleTimeout: .zero, method: .copy)
            try loop.start()
            pairs = try (0..<3).map { _ in try listener.relayedConnection(through: loop) }
        }
        for pair in pairs {
            #expect(readToEnd(pair.client).end == .endOfFile)
            #expect(readToEnd(pair.upstream).end == .endOfFile)
        }
        #expect(blockedSignals(ofThreadsNamed: "preforkd relay").isEmpty)
    }

    @Test func stopClosesThePairsStillRelaying() throws {
        let listener = try LoopbackListener()
        let loop = try RelayLoop(idleTimeout: .zero, method: .splice)
        try loop.start()
        let pairs = try (0..<5).map { _ in try listener.relayedConnection(through: loop) }
        defer { pairs.forEach { $0.closeTestEnds() } }
        loop.stop()
        for pair in pairs {
            #expect(readToEnd(pair.client).end == .endOfFile)
            #expect(readToEnd(pair.upstream).end == .endOfFile)
        }
        #expect(loop.activeCount == 0)
        #expect(loop.statistics.finished == 5)
    }
}

/// The identities of every descriptor open in this process.
private func openIdentities() -> [FileIdentity] {
    guard let directory = opendir("/proc/self/fd") else { return [] }
    defer { closedir(directory) }
    var identities: [FileIdentity] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let fd = Int32(name), let identity = fileIdentity(fd) { identities.append(identity) }
    }
    return identities
}
