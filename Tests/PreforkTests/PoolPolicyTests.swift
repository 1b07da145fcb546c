import SystemPackage
import Testing

@testable import Prefork

/// The pool's decisions, driven with made-up events and a fake clock: no process is forked.
@Suite struct PoolPolicyTests {
    typealias Action = PoolPolicy.Action

    /// A policy, a clock, and a stand-in for the supervisor that forks instantly.
    struct Pool {
        var policy: PoolPolicy
        var now: UInt64 = 1_000_000_000
        var nextPID: Int32 = 100
        var nextSlot = 0
        /// Every action returned so far.
        var log: [Action] = []

        init(workers: Int = 2, graceful: Double = 30, boot: Double = 30) {
            policy = PoolPolicy(limits: Self.limits(workers: workers, graceful: graceful, boot: boot))
        }

        static func limits(workers: Int, graceful: Double = 30, boot: Double = 30) -> PoolPolicy.Limits {
            PoolPolicy.Limits(
                workers: workers, gracefulTimeoutNs: UInt64(graceful * 1e9), bootTimeoutNs: UInt64(boot * 1e9))
        }

        /// Feeds `event`, then plays the supervisor's part for forks and reload preparations
        /// (`prepared` answers a `.prepareReload`); returns every action, in order.
        @discardableResult
        mutating func send(
            _ event: PoolPolicy.Event, prepared: PoolPolicy.Event? = nil, forks: Bool = true
        ) -> [Action] {
            var all: [Action] = []
            var queue = [event]
            while !queue.isEmpty {
                let actions = policy.handle(queue.removeFirst(), now: now)
                all += actions
                for action in actions {
                    switch action {
                    case .fork(let generation) where forks:
                        queue.append(.forked(pid: nextPID, slot: nextSlot, generation: generation))
                        nextPID += 1
                        nextSlot += 1
                    case .prepareReload:
                        if let prepared { queue.append(prepared) }
                    default: break
                    }
                }
            }
            log += all
            return all
        }

        mutating func advance(seconds: Double) -> [Action] {
            now += UInt64(seconds * 1e9)
            return send(.tick)
        }

        mutating func bootAll() -> [Action] {
            var all: [Action] = []
            for pid in policy.workers.keys.sorted() where !policy.workers[pid]!.booted {
                all += send(.booted(pid: pid))
            }
            return all
        }

        func pids(generation: Int) -> [Int32] {
            policy.workers.values.filter { $0.generation == generation && $0.isServing }.map(\.pid).sorted()
        }

        /// A running pool of `workers`, READY sent.
        static func ready(workers: Int = 2, graceful: Double = 30, boot: Double = 30) -> Pool {
            var pool = Pool(workers: workers, graceful: graceful, boot: boot)
            pool.send(.tick)
            _ = pool.bootAll()
            return pool
        }
    }

    /// The errno of the `.fail` action among `actions`, if there is one.
    static func failureErrno(_ actions: [Action]) -> Errno? {
        for action in actions { if case .fail(_, let errno) = action { return errno } }
        return nil
    }

    static func notices(_ actions: [Action]) -> [String] {
        actions.compactMap { if case .log(_, let text, _) = $0 { text } else { nil } }
    }

    @Test func startForksEveryWorkerAndIsReadyOnlyOnceAllHaveBooted() {
        var pool = Pool(workers: 3)
        let start = pool.send(.tick)
        #expect(start.filter { $0 == .fork(generation: 1) }.count == 3)
        #expect(!start.contains(.notifyReady(note: nil)))
        let pids = pool.pids(generation: 1)
        pool.send(.booted(pid: pids[0]))
        #expect(!pool.send(.booted(pid: pids[1])).contains(.notifyReady(note: nil)))
        #expect(pool.send(.booted(pid: pids[2])).contains(.notifyReady(note: nil)))
        #expect(!pool.send(.tick).contains(.notifyReady(note: nil)), "READY=1 once")
    }

    @Test func aReportFromAnUnknownWorkerChangesNothing() {
        var pool = Pool(workers: 1)
        pool.send(.tick)
        #expect(pool.send(.booted(pid: 4242)).isEmpty)
        #expect(pool.policy.workers.values.allSatisfy { !$0.booted })
    }

    @Test func bootFailuresInARowStopTheServiceWithTheErrnoTheWorkerRecorded() {
        var pool = Pool(workers: 1)
        pool.send(.tick)
        var last: [Action] = []
        for _ in 0..<PoolPolicy.maximumBootFailures {
            let pid = pool.pids(generation: 1)[0]
            last = pool.send(.exited(pid: pid, status: .exited(3), errno: Errno.noMemory.rawValue))
            pool.now += 11_000_000_000  // past any back-off
            pool.send(.tick)
        }
        let stopping = last.firstIndex(of: .notifyStopping)
        let failed = last.firstIndex { if case .fail = $0 { true } else { false } }
        #expect(stopping != nil && failed != nil && stopping! < failed!, "STOPPING=1 first, then the failure")
        #expect(Self.failureErrno(last) == .noMemory)
        #expect(last.contains(.exit(.failure)))
    }

    @Test func withNoRecordedErrnoAFatalBootFailureSaysNoChildProcess() {
        var pool = Pool(workers: 1)
        pool.send(.tick)
        var last: [Action] = []
        for _ in 0..<PoolPolicy.maximumBootFailures {
            last = pool.send(
                .exited(pid: pool.pids(generation: 1)[0], status: .killed(signal: 9, coreDumped: false), errno: 0))
            _ = pool.advance(seconds: 11)
        }
        #expect(Self.failureErrno(last) == .noChildProcess)
    }

    @Test func aBootedWorkerThatCrashesIsReplacedAndIsNoBootFailure() {
        var pool = Pool.ready(workers: 2)
        pool.now += 5_000_000_000
        for _ in 0..<(PoolPolicy.maximumBootFailures + 2) {
            let victim = pool.pids(generation: 1)[0]
            let actions = pool.send(.exited(pid: victim, status: .killed(signal: 11, coreDumped: true), errno: 0))
            #expect(actions.contains(.fork(generation: 1)), "replaced at once")
            _ = pool.bootAll()
            pool.now += 5_000_000_000
        }
        #expect(pool.policy.consecutiveBootFailures == 0)
        #expect(pool.policy.phase == .running)
        #expect(!pool.log.contains { if case .fail = $0 { true } else { false } })
    }

    @Test func forkFailuresBackOffAndAreNoBootFailures() {
        var pool = Pool(workers: 1)
        pool.send(.tick, forks: false)
        let error = SystemCallError("fork", errno: .resourceTemporarilyUnavailable)
        for round in 0..<8 {
            let actions = pool.send(.forkFailed(error), forks: false)
            #expect(!actions.contains(.fork(generation: 1)), "round \(round): no retry at once")
            pool.now = pool.policy.nextForkAt
        }
        #expect(pool.policy.consecutiveBootFailures == 0)
        #expect(pool.policy.phase == .running)
        #expect(pool.policy.nextDeadline() == pool.policy.nextForkAt)
        #expect(pool.send(.tick).contains(.fork(generation: 1)), "forks again once the delay passed")
    }

    @Test func workersDyingYoungAfterBootingRespawnWithAGrowingDelayThatResets() {
        // Two workers, one of them dying each round: the other still serves (the last one
        // would be replaced at once, see below).
        var pool = Pool.ready(workers: 2)
        var delays: [UInt64] = []
        for _ in 0..<4 {
            let pid = pool.pids(generation: 1)[0]
            pool.now += 500_000_000
            #expect(
                !pool.send(.exited(pid: pid, status: .killed(signal: 9, coreDumped: false), errno: 0)).contains(
                    .fork(generation: 1)))
            delays.append(pool.policy.nextForkAt - pool.now)
            pool.now = pool.policy.nextForkAt
            pool.send(.tick)
            _ = pool.bootAll()
        }
        #expect(delays == [100_000_000, 200_000_000, 400_000_000, 800_000_000])
        // One that lived long is replaced at once, and the delay starts over.
        pool.now += 60_000_000_000
        let pid = pool.pids(generation: 1)[0]
        #expect(pool.send(.exited(pid: pid, status: .exited(1), errno: 0)).contains(.fork(generation: 1)))
    }

    @Test func theLastWorkerDyingYoungIsReplacedAtOnceWhileTheOthersBackOff() {
        // Workers killed one after another soon after their fork (an operator's or the fault
        // suite's SIGKILLs): the pool must never stand empty for the back-off.
        var pool = Pool.ready(workers: 3)
        pool.now += 500_000_000
        let pids = pool.pids(generation: 1)
        for pid in pids.dropLast() {
            let actions = pool.send(.exited(pid: pid, status: .killed(signal: 9, coreDumped: false), errno: 0))
            #expect(!actions.contains(.fork(generation: 1)), "backs off while another worker serves")
        }
        let last = pool.send(.exited(pid: pids.last!, status: .killed(signal: 9, coreDumped: false), errno: 0))
        #expect(last.filter { $0 == .fork(generation: 1) }.count == 1, "the last one is replaced at once")
        #expect(pool.pids(generation: 1).count == 1)
        #expect(pool.policy.nextForkAt > pool.now, "the others still wait for the back-off")
        #expect(!pool.send(.tick).contains(.fork(generation: 1)))
        pool.now = pool.policy.nextForkAt
        #expect(pool.send(.tick).contains(.fork(generation: 1)), "then the pool is topped up")
    }

    @Test func noFreeSlotWaitsASecondAndSaysSoOnce() {
        var pool = Pool(workers: 1)
        pool.send(.tick, forks: false)
        let first = pool.send(.noFreeSlot, forks: false)
        #expect(Self.notices(first).count == 1)
        #expect(!first.contains(.fork(generation: 1)), "no busy loop")
        #expect(pool.policy.nextDeadline() == pool.now + PoolPolicy.slotRetryNs)
        pool.now += PoolPolicy.slotRetryNs
        #expect(pool.send(.tick, forks: false).contains(.fork(generation: 1)))
        #expect(Self.notices(pool.send(.noFreeSlot, forks: false)).isEmpty, "one line per shortage")
    }

    @Test func aReloadCommitsWhenTheNewGenerationIsWholeAndItsPredecessorIsKilledAtTheGracefulTimeout() {
        var pool = Pool.ready(workers: 2, graceful: 2)
        let old = pool.pids(generation: 1)
        let start = pool.send(
            .command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 3, graceful: 2)))
        #expect(start.contains(.prepareReload) && start.contains(.notifyReloading))
        #expect(start.filter { $0 == .fork(generation: 2) }.count == 3)
        #expect(!start.contains { if case .terminate = $0 { true } else { false } }, "the old one serves meanwhile")
        let commit = pool.bootAll()
        #expect(commit.contains(.commitReload(generation: 2)))
        #expect(Set(commit.compactMap { if case .terminate(let pid) = $0 { pid } else { nil } }) == Set(old))
        let terminate = commit.firstIndex(of: .terminate(pid: old[0]))!
        #expect(terminate < commit.firstIndex(of: .commitReload(generation: 2))!, "told to stop before sockets change")
        #expect(commit.last == .notifyReady(note: nil))
        // One of the old workers finishes; the other holds a slow client past the graceful timeout.
        pool.send(.exited(pid: old[0], status: .exited(0), errno: 0))
        #expect(pool.advance(seconds: 1.9).filter { if case .kill = $0 { true } else { false } }.isEmpty)
        #expect(pool.advance(seconds: 0.2).contains(.kill(pid: old[1])))
        #expect(pool.advance(seconds: 1).filter { if case .kill = $0 { true } else { false } }.isEmpty, "once")
    }

    @Test func aWorkerRetiredByTtouIsKilledAtTheGracefulTimeout() {
        var pool = Pool.ready(workers: 3, graceful: 5)
        let newest = pool.pids(generation: 1).last!
        let actions = pool.send(.command(.removeWorker))
        #expect(actions.contains(.terminate(pid: newest)))
        #expect(pool.policy.nextDeadline() == pool.now + 5_000_000_000)
        #expect(pool.advance(seconds: 5).contains(.kill(pid: newest)))
        #expect(
            !pool.send(.exited(pid: newest, status: .killed(signal: 9, coreDumped: false), errno: 0))
                .contains(.fork(generation: 1)), "not replaced")
    }

    @Test func aReloadWhoseWorkersHangWhileStartingIsRolledBackAtTheBootDeadline() {
        var pool = Pool.ready(workers: 2)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 2, boot: 3)))
        let hung = pool.pids(generation: 2)
        #expect(hung.count == 2)
        #expect(pool.advance(seconds: 2.9).isEmpty)
        let rollback = pool.advance(seconds: 0.2)
        #expect(rollback.contains(.rollBackReload(generation: 2, restoring: 1)))
        #expect(hung.allSatisfy { rollback.contains(.kill(pid: $0)) }, "never booted: no client to wait for")
        #expect(rollback.contains(.notifyReady(note: "Reload failed (did not start within 3 s)")))
        #expect(pool.policy.generation == 1)
    }

    @Test func afterARollbackReadyWaitsUntilTheOldGenerationIsWholeAgain() {
        var pool = Pool.ready(workers: 2)
        let old = pool.pids(generation: 1)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 2, boot: 600)))
        // An old worker dies while the reload boots: not replaced yet.
        #expect(
            !pool.send(.exited(pid: old[0], status: .killed(signal: 9, coreDumped: false), errno: 0))
                .contains(.fork(generation: 1)))
        // The new generation fails to boot, five times in a row.
        var rollback: [Action] = []
        for _ in 0..<PoolPolicy.maximumBootFailures {
            guard let pid = pool.pids(generation: 2).first else { break }
            rollback = pool.send(.exited(pid: pid, status: .exited(3), errno: 0), forks: false)
            if !rollback.contains(.rollBackReload(generation: 2, restoring: 1)) {
                pool.now = pool.policy.nextForkAt
                pool.send(.tick)
            }
        }
        #expect(rollback.contains(.rollBackReload(generation: 2, restoring: 1)))
        #expect(!rollback.contains { if case .notifyReady = $0 { true } else { false } }, "one old worker is missing")
        #expect(
            rollback.contains(.fork(generation: 1)) || pool.send(.tick, forks: false).contains(.fork(generation: 1)))
        pool.send(.forked(pid: 999, slot: 99, generation: 1))
        #expect(
            pool.send(.booted(pid: 999)).contains(.notifyReady(note: "Reload failed (failed to boot 5 times in a row)"))
        )
    }

    @Test func aHupDuringAReloadRunsAfterItEvenWhenItRollsBack() {
        var pool = Pool.ready(workers: 1)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 1, boot: 2)))
        let queued = pool.send(.command(.reload))
        #expect(!queued.contains(.prepareReload))
        #expect(pool.policy.reloadQueued)
        let rollback = pool.advance(seconds: 2)
        #expect(rollback.contains(.rollBackReload(generation: 2, restoring: 1)))
        let ready = rollback.firstIndex(of: .notifyReady(note: "Reload failed (did not start within 2 s)"))
        let again = rollback.firstIndex(of: .prepareReload)
        #expect(
            ready != nil && again != nil && ready! < again!, "READY=1 closes the first reload, then the next one starts"
        )
    }

    @Test func aHupDuringAReloadRunsOnceItCommits() {
        var pool = Pool.ready(workers: 1)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 1)))
        pool.send(.command(.reload))
        let commit = pool.bootAll()
        #expect(commit.contains(.commitReload(generation: 2)))
        #expect(commit.last == .prepareReload)
    }

    @Test func aRejectedReloadKeepsTheGenerationAndSendsNoReloading() {
        var pool = Pool.ready(workers: 1)
        let actions = pool.send(.command(.reload), prepared: .reloadRejected(reason: "workers = many"))
        #expect(!actions.contains(.notifyReloading))
        #expect(Self.notices(actions).contains { $0.contains("reload rejected, keeping generation 1: workers = many") })
        #expect(pool.policy.generation == 1)
    }

    @Test func aGracefulStopClosesOurListenersDrainsAndKillsStragglersAtTheDeadline() {
        var pool = Pool.ready(workers: 2, graceful: 4)
        let pids = pool.pids(generation: 1)
        let stop = pool.send(.command(.stop))
        #expect(stop.first == .notifyStopping)
        #expect(stop.contains(.closeListenersForDrain))
        #expect(pids.allSatisfy { stop.contains(.terminate(pid: $0)) })
        #expect(pool.policy.drainDeadline == pool.now + 4_000_000_000)
        #expect(
            pool.send(.exited(pid: pids[0], status: .exited(0), errno: 0)) == [
                .log(.debug, "Worker 1 exited (exit status 0)", worker: .init(pid: pids[0], generation: 1))
            ])
        #expect(pool.advance(seconds: 4).contains(.kill(pid: pids[1])))
        #expect(
            pool.send(.exited(pid: pids[1], status: .killed(signal: 9, coreDumped: false), errno: 0)).last
                == .exit(.success))
    }

    @Test func quitKillsEveryWorkerAtOnce() {
        var pool = Pool.ready(workers: 2)
        let actions = pool.send(.command(.stopNow))
        #expect(pool.pids(generation: 1).isEmpty)
        #expect(actions.filter { if case .kill = $0 { true } else { false } }.count == 2)
        #expect(!pool.send(.command(.stop)).contains(.closeListenersForDrain), "a later TERM changes nothing")
    }

    @Test func aSupervisorWithThreadsRefusesToForkAndFails() {
        var pool = Pool(workers: 1)
        pool.send(.tick, forks: false)
        let actions = pool.send(.unsafeToFork(threads: 3))
        #expect(Self.failureErrno(actions) == .deadlock)
        #expect(actions.last == .exit(.failure))
    }

    @Test func aWorkerThatDoesNotBootInTimeIsKilledAndCountsAsABootFailure() {
        var pool = Pool(workers: 1, boot: 2)
        pool.send(.tick)
        let pid = pool.pids(generation: 1)[0]
        #expect(pool.advance(seconds: 2).contains(.kill(pid: pid)))
        pool.send(.exited(pid: pid, status: .killed(signal: 9, coreDumped: false), errno: 0))
        #expect(pool.policy.consecutiveBootFailures == 1)
    }

    @Test func theWatchdogIsOnlyPingedWhileAWorkerAccepts() {
        var pool = Pool(workers: 1)
        pool.send(.tick)
        #expect(!pool.policy.isHealthy)
        _ = pool.bootAll()
        #expect(pool.policy.isHealthy)
        pool.send(.command(.stop))
        #expect(!pool.policy.isHealthy)
    }

    /// Two booted workers with the given timeouts (seconds), found in `stages` since start, and
    /// the clock `after` seconds later.
    static func twoWorkers(
        initialTimeout: Double, handlerTimeout: Double, stages: (Scoreboard.Stage, Scoreboard.Stage), after: Double,
        graceful: Double = 30
    ) -> (Pool, [PoolPolicy.Progress]) {
        var pool = Pool(workers: 2)
        pool.policy = PoolPolicy(
            limits: PoolPolicy.Limits(
                workers: 2, gracefulTimeoutNs: UInt64(graceful * 1e9), bootTimeoutNs: 30_000_000_000,
                initialTimeoutNs: UInt64(initialTimeout * 1e9), handlerTimeoutNs: UInt64(handlerTimeout * 1e9)))
        pool.send(.tick)
        _ = pool.bootAll()
        let pids = pool.pids(generation: 1)
        let samples = [
            PoolPolicy.Progress(pid: pids[0], stage: stages.0, since: pool.now),
            PoolPolicy.Progress(pid: pids[1], stage: stages.1, since: pool.now),
        ]
        pool.now += UInt64(after * 1e9)
        return (pool, samples)
    }

    @Test func aPoolWhoseWorkersAllWedgeStopsPingingTheWatchdogUntilOneIsFreeAgain() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 10, handlerTimeout: 5, stages: (.handling, .handling), after: 5.1)
        #expect(pool.policy.isHealthy)
        _ = pool.send(.progress(samples))
        for sample in samples {
            _ = pool.send(.exited(pid: sample.pid, status: .killed(signal: 9, coreDumped: false), errno: 0))
        }
        // The replacements boot, and are taken by the same kind of client at once: no worker is
        // seen free, so booting alone is no health.
        _ = pool.bootAll()
        let replacements = pool.pids(generation: 1)
        #expect(replacements.count == 2 && Set(replacements).isDisjoint(with: samples.map(\.pid)))
        _ = pool.send(.progress(replacements.map { .init(pid: $0, stage: .handling, since: pool.now) }))
        #expect(!pool.policy.isHealthy)
        // One waits in accept again: the pool can serve.
        _ = pool.send(
            .progress([
                .init(pid: replacements[0], stage: .accepting, since: pool.now),
                .init(pid: replacements[1], stage: .handling, since: pool.now),
            ]))
        #expect(pool.policy.isHealthy)
    }

    @Test func oneWedgedWorkerOfTwoLeavesThePoolHealthy() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 10, handlerTimeout: 5, stages: (.handling, .handling), after: 5.1)
        _ = pool.send(.progress([samples[0]]))
        _ = pool.send(.exited(pid: samples[0].pid, status: .killed(signal: 9, coreDumped: false), errno: 0))
        _ = pool.bootAll()
        #expect(pool.policy.isHealthy)
    }

    @Test func aWorkerPastTheHandlerTimeoutIsKilledAndReplacedWithoutBackOff() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 10, handlerTimeout: 5, stages: (.handling, .accepting), after: 4.9)
        let busy = samples[0].pid
        #expect(pool.send(.progress(samples)).isEmpty)
        pool.now += 200_000_000
        let kill = pool.send(.progress(samples))
        // Killed, and replaced at once: it no longer counts as serving.
        #expect(
            kill == [
                .killOverdue(pid: busy, stage: .handling, elapsedNs: 5_100_000_000, limitNs: 5_000_000_000),
                .fork(generation: 1),
            ])
        #expect(pool.send(.progress(samples)).isEmpty, "once")
        let exit = pool.send(.exited(pid: busy, status: .killed(signal: 9, coreDumped: false), errno: 0))
        #expect(
            exit == [.log(.debug, "Worker 1 exited (killed by SIGKILL)", worker: .init(pid: busy, generation: 1))],
            "no back-off, no crash")
        #expect(pool.policy.consecutiveBootFailures == 0)
    }

    @Test func theInitialReadIsKilledOnlyAGraceBeyondTheWorkersOwnTimeoutAndHandlersNeverWithoutALimit() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 2, handlerTimeout: 0, stages: (.reading, .handling), after: 2.9)
        let reading = samples[0].pid
        #expect(pool.send(.progress(samples)).isEmpty)
        pool.now += 3_600_000_000_000
        #expect(
            pool.send(.progress(samples)) == [
                .killOverdue(pid: reading, stage: .reading, elapsedNs: 3_602_900_000_000, limitNs: 3_000_000_000),
                .fork(generation: 1),
            ])
    }

    @Test func aRecycledWorkerIsReplacedAtOnceAndIsNoCrash() {
        var pool = Pool.ready(workers: 2)
        let pid = pool.pids(generation: 1)[0]
        let actions = pool.send(.exited(pid: pid, status: .exited(5), errno: 0))
        #expect(actions.contains(.fork(generation: 1)))
        #expect(Self.notices(actions) == ["Worker 1 served its max-connections-per-worker; replacing it"])
        #expect(pool.policy.nextForkAt <= pool.now, "no back-off")
    }

    @Test func aDrainingWorkerIsReplacedKilledAtTheGracefulTimeoutAndNeverAtTheHandlerTimeout() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 10, handlerTimeout: 1, stages: (.draining, .accepting), after: 0, graceful: 5)
        let draining = samples[0].pid
        // Recycled on its own: it no longer serves, so a replacement is forked at once.
        #expect(pool.send(.progress(samples)) == [.fork(generation: 1)])
        #expect(pool.policy.workers[draining]!.drainingSince == pool.now)
        #expect(!pool.pids(generation: 1).contains(draining))
        pool.now += 4_900_000_000
        #expect(pool.send(.progress(samples)).isEmpty, "past handler-timeout, within graceful-timeout")
        #expect(pool.policy.nextDeadline() == samples[0].since + 5_000_000_000)
        pool.now += 100_000_000
        let kill = pool.send(.tick)
        #expect(kill.contains(.kill(pid: draining)))
        #expect(
            Self.notices(kill) == ["Worker 1 of generation 1 still busy 5 s after it began draining; killing it"])
        let exit = pool.send(.exited(pid: draining, status: .killed(signal: 9, coreDumped: false), errno: 0))
        #expect(
            exit == [.log(.debug, "Worker 1 exited (killed by SIGKILL)", worker: .init(pid: draining, generation: 1))],
            "no crash, no second replacement")
        #expect(pool.policy.counters.exitsCrash == 0)
    }

    @Test func aGracefulStopTellsAWorkerDrainingOnItsOwnWithoutExtendingItsDeadline() {
        var (pool, samples) = Self.twoWorkers(
            initialTimeout: 10, handlerTimeout: 0, stages: (.draining, .accepting), after: 0, graceful: 5)
        let draining = samples[0].pid
        pool.send(.progress(samples))
        pool.now += 2_000_000_000
        let stop = pool.send(.command(.stop))
        #expect(stop.contains(.terminate(pid: draining)))
        #expect(pool.policy.workers[draining]!.killAt == samples[0].since + 5_000_000_000, "not the stop's later one")
    }

    @Test func aDrainingWorkerIsNeverCountedAsSpare() {
        var pool = Self.scalingPool(workers: 2, spare: 1, maximum: 4)
        let pids = pool.pids(generation: 1)
        // One worker handles a connection, the other drains: none is idle, so one more is forked
        // (and one more to replace the drained one).
        let samples = Self.samples(pool, .handling, since: pool.now, others: [pids[1]: .draining])
        let actions = pool.send(.progress(samples))
        #expect(actions.filter { $0 == .fork(generation: 1) }.count == 2)
        #expect(Self.notices(actions).contains("0 idle of 1 workers; forking 1 more (up to 4)"))
    }

    @Test func aRecycledWorkerThatDrainedStillCountsAsRecycled() {
        var pool = Pool.ready(workers: 2)
        let pid = pool.pids(generation: 1)[0]
        pool.send(.progress([PoolPolicy.Progress(pid: pid, stage: .draining, since: pool.now)]))
        let actions = pool.send(.exited(pid: pid, status: .exited(5), errno: 0))
        #expect(Self.notices(actions) == ["Worker 1 served its max-connections-per-worker; replacing it"])
        #expect(pool.policy.counters.exitsRecycled == 1)
    }

    @Test func eachWorkerDrawsItsOwnConnectionLimitWithinAQuarterAbove() {
        #expect(Worker<EchoLike>.connectionLimit(0) == .max)
        let limits = (0..<200).map { _ in Worker<EchoLike>.connectionLimit(100) }
        #expect(limits.allSatisfy { (100...125).contains($0) })
        #expect(Set(limits).count > 1, "not all the same")
    }

    /// A handler type to name Worker's generic parameter with.
    struct EchoLike: ConnectionHandler {
        mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {}
    }

    /// A pool of `workers` that keeps `spare` idle ones, up to `maximum`.
    static func scalingPool(workers: Int, spare: Int, maximum: Int) -> Pool {
        var pool = Pool(workers: workers)
        pool.policy = PoolPolicy(
            limits: PoolPolicy.Limits(
                workers: workers, gracefulTimeoutNs: 30_000_000_000, bootTimeoutNs: 30_000_000_000,
                initialTimeoutNs: 10_000_000_000, minimumSpare: spare, maximumWorkers: maximum,
                spareTimeoutNs: 5_000_000_000))
        pool.send(.tick)
        _ = pool.bootAll()
        return pool
    }

    /// Every worker of generation 1 in `stage` since `since`, but `others` in theirs.
    static func samples(
        _ pool: Pool, _ stage: Scoreboard.Stage, since: UInt64, others: [Int32: Scoreboard.Stage] = [:]
    ) -> [PoolPolicy.Progress] {
        pool.pids(generation: 1).map { PoolPolicy.Progress(pid: $0, stage: others[$0] ?? stage, since: since) }
    }

    @Test func whenEveryWorkerIsBusyThePoolGrowsBySpareWorkersUpToTheMaximum() {
        var pool = Self.scalingPool(workers: 2, spare: 1, maximum: 4)
        var forks = 0
        for _ in 0..<10 {
            let busy = Self.samples(pool, .handling, since: pool.now)
            forks += pool.send(.progress(busy), forks: true).filter { $0 == .fork(generation: 1) }.count
            _ = pool.bootAll()
            pool.now += PoolPolicy.growthIntervalNs
        }
        #expect(forks == 2, "two more, to the maximum of 4")
        #expect(pool.policy.targetCount == 4)
        #expect(pool.pids(generation: 1).count == 4)
    }

    @Test func aWorkerStillStartingCountsAsSpareSoTheShortageIsNotAnsweredTwice() {
        var pool = Self.scalingPool(workers: 2, spare: 1, maximum: 8)
        let first = pool.send(.progress(Self.samples(pool, .handling, since: pool.now)), forks: true)
        #expect(first.filter { $0 == .fork(generation: 1) }.count == 1)
        pool.now += PoolPolicy.growthIntervalNs
        // The new one has not reached accept yet.
        let newest = pool.pids(generation: 1).last!
        let again = pool.send(
            .progress(Self.samples(pool, .handling, since: pool.now, others: [newest: .starting])), forks: true)
        #expect(!again.contains(.fork(generation: 1)))
    }

    @Test func extraWorkersIdleForTheSpareTimeoutAreRetiredDownToTheConfiguredPool() {
        var pool = Self.scalingPool(workers: 1, spare: 1, maximum: 3)
        for _ in 0..<4 {
            pool.send(.progress(Self.samples(pool, .handling, since: pool.now)), forks: true)
            _ = pool.bootAll()
            pool.now += PoolPolicy.growthIntervalNs
        }
        #expect(pool.pids(generation: 1).count == 3)
        let idleSince = pool.now
        pool.now += 4_000_000_000
        #expect(
            !pool.send(.progress(Self.samples(pool, .accepting, since: idleSince))).contains {
                if case .terminate = $0 { true } else { false }
            })
        pool.now += 1_000_000_000
        var retired: [Int32] = []
        for _ in 0..<5 {
            let actions = pool.send(.progress(Self.samples(pool, .accepting, since: idleSince)))
            retired += actions.compactMap { if case .terminate(let pid) = $0 { pid } else { nil } }
            pool.now += PoolPolicy.growthIntervalNs
        }
        #expect(retired.count == 2, "down to the one configured worker")
        #expect(pool.policy.targetCount == 1)
    }

    @Test func aScalingPoolLooksAgainAStepLaterAndNeverAskToBeWokenInThePast() {
        var pool = Self.scalingPool(workers: 1, spare: 1, maximum: 3)
        pool.send(.progress(Self.samples(pool, .accepting, since: pool.now)))
        #expect(pool.policy.nextDeadline() == pool.now + PoolPolicy.growthIntervalNs)
        // While a reload boots, the rule does not act, but it still looks a step later.
        pool.send(.command(.reload), prepared: .reloadPrepared(pool.policy.limits))
        pool.now += 5_000_000_000
        pool.send(.progress(Self.samples(pool, .accepting, since: pool.now)))
        #expect(pool.policy.nextDeadline().map { $0 > pool.now } == true)
    }

    @Test func theRespawnDelayStartsOverOnceThePoolHasBeenWholeForAWhile() {
        var pool = Pool.ready(workers: 1)
        for _ in 0..<3 {
            let pid = pool.pids(generation: 1)[0]
            pool.now += 100_000_000
            pool.send(.exited(pid: pid, status: .killed(signal: 9, coreDumped: false), errno: 0))
            pool.now = pool.policy.nextForkAt
            pool.send(.tick)
            _ = pool.bootAll()
        }
        // Whole and booted for longer than a young death's span: a new worker that fails to boot
        // waits the shortest delay again, not the grown one.
        _ = pool.advance(seconds: 3)
        pool.send(.command(.addWorker))
        let added = pool.pids(generation: 1).last!
        let failed = pool.send(.exited(pid: added, status: .exited(3), errno: 0))
        #expect(Self.notices(failed).contains("Respawning in 100 ms"), "\(Self.notices(failed))")
    }

    @Test func aFatalExitStopsTheServiceAtOnceWithTheWorkersErrno() {
        var pool = Pool.ready(workers: 3)
        let pid = pool.pids(generation: 1)[0]
        let actions = pool.send(.exited(pid: pid, status: .exited(6), errno: Errno.notPermitted.rawValue))
        #expect(Self.failureErrno(actions) == .notPermitted)
        #expect(actions.contains(.notifyStopping))
        #expect(pool.policy.phase != .running)
        #expect(!actions.contains(.fork(generation: 1)))
    }

    @Test func aLostListenerIsFatalToo() {
        var pool = Pool.ready(workers: 1)
        let actions = pool.send(.exited(pid: pool.pids(generation: 1)[0], status: .exited(4), errno: 0))
        #expect(Self.failureErrno(actions) == .invalidArgument)
    }

    @Test func aFatalExitInAReloadsGenerationRollsTheReloadBack() {
        var pool = Pool.ready(workers: 1)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 1)))
        let new = pool.pids(generation: 2)[0]
        let actions = pool.send(.exited(pid: new, status: .exited(6), errno: 0))
        #expect(actions.contains(.rollBackReload(generation: 2, restoring: 1)))
        #expect(pool.policy.phase == .running)
    }
}
