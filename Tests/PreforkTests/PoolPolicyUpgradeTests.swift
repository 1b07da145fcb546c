import SystemPackage
import Testing

@testable import Prefork

/// In-place upgrades as the pool sees them: USR2 on the old image, adoption in the new one.
@Suite struct PoolPolicyUpgradeTests {
    typealias Pool = PoolPolicyTests.Pool

    /// A fresh policy (the new image's), given the workers the previous image left.
    static func adopting(_ adoptees: [PoolPolicy.Adoptee], serving: Int, workers: Int = 2, boot: Double = 30) -> (
        Pool, [PoolPolicy.Action]
    ) {
        var pool = Pool(workers: workers, boot: boot)
        pool.nextPID = 500
        pool.nextSlot = 10
        let actions = pool.send(.adopted(adoptees, serving: serving))
        return (pool, actions)
    }

    @Test func usr2OnASteadyPoolSendsReloadingAndAsksForTheProbe() {
        var pool = Pool.ready(workers: 2)
        let actions = pool.send(.command(.upgrade))
        #expect(actions == [.notifyReloading, .prepareUpgrade])
    }

    @Test func usr2WhileAReloadBootsWaitsUntilTheReloadIsDone() {
        var pool = Pool.ready(workers: 1)
        pool.send(.command(.reload), prepared: .reloadPrepared(Pool.limits(workers: 1)))
        #expect(!pool.send(.command(.upgrade)).contains(.prepareUpgrade))
        #expect(pool.policy.upgradeQueued)
        let commit = pool.bootAll()
        #expect(commit.contains(.commitReload(generation: 2)))
        #expect(commit.suffix(2) == [.notifyReloading, .prepareUpgrade], "after READY=1 of the reload")
    }

    @Test func aFailedProbeCountsAndSendsReadyWithTheReason() {
        var pool = Pool.ready(workers: 2)
        pool.send(.command(.upgrade))
        let actions = pool.send(.upgradeFailed(reason: "/x failed its probe (exit status 1)"))
        #expect(actions.contains(.notifyReady(note: "Upgrade failed: /x failed its probe (exit status 1)")))
        #expect(pool.policy.counters.upgradesFailed == 1)
        #expect(pool.policy.isSteady)
        #expect(pool.pids(generation: 1).count == 2, "the workers serve on")
    }

    @Test func theNewImageStartsItsGenerationBesideTheAdoptedOneAndRetiresItOnceWhole() {
        let old = [
            PoolPolicy.Adoptee(pid: 40, slot: 0, generation: 3, booted: true),
            PoolPolicy.Adoptee(pid: 41, slot: 1, generation: 3, booted: true),
        ]
        var (pool, start) = Self.adopting(old, serving: 3)
        #expect(start.filter { $0 == .fork(generation: 4) }.count == 2)
        #expect(!start.contains(.notifyReloading), "the old image sent it before the exec")
        #expect(!start.contains { if case .terminate = $0 { true } else { false } }, "the old ones serve meanwhile")
        #expect(!pool.policy.isSteady)
        let commit = pool.bootAll()
        #expect(commit.contains(.terminate(pid: 40)) && commit.contains(.terminate(pid: 41)))
        #expect(commit.contains(.commitReload(generation: 4)))
        #expect(commit.last == .notifyReady(note: nil))
        #expect(pool.policy.counters.upgradesCompleted == 1)
        #expect(pool.policy.counters.reloadsCommitted == 0)
        // The adopted workers are the new image's children like any other: reaped, not replaced.
        let exit = pool.send(.exited(pid: 40, status: .exited(0), errno: 0))
        #expect(!exit.contains { if case .fork = $0 { true } else { false } })
    }

    @Test func anOlderDrainingGenerationIsKilledAtItsGracefulTimeout() {
        let old = [
            PoolPolicy.Adoptee(pid: 40, slot: 0, generation: 2, booted: true),
            PoolPolicy.Adoptee(pid: 41, slot: 1, generation: 3, booted: true),
        ]
        var (pool, _) = Self.adopting(old, serving: 3)
        _ = pool.bootAll()
        #expect(pool.advance(seconds: 31).contains(.kill(pid: 40)))
    }

    @Test func aNewImageWhoseWorkersCannotBootKeepsTheAdoptedOnesServing() {
        let old = [
            PoolPolicy.Adoptee(pid: 40, slot: 0, generation: 1, booted: true),
            PoolPolicy.Adoptee(pid: 41, slot: 1, generation: 1, booted: true),
        ]
        var (pool, _) = Self.adopting(old, serving: 1, boot: 3)
        let rollback = pool.advance(seconds: 3)
        #expect(rollback.contains(.rollBackReload(generation: 2, restoring: 1)))
        #expect(!rollback.contains(.terminate(pid: 40)) && !rollback.contains(.kill(pid: 40)))
        #expect(
            rollback.contains(.notifyReady(note: "Upgrade failed: generation 2 did not start within 3 s")))
        #expect(pool.policy.counters.upgradesFailed == 1)
        #expect(pool.policy.generation == 1)
    }
}
