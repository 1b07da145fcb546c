import Logging
import SystemPackage

/// Every decision about the worker pool, as a function of events and time: what to fork and
/// when, whom to stop and when to kill them, when a reload commits or rolls back, when the
/// service is ready, when to give up.
///
/// It forks nothing, sends no signal and reads no clock: ``Supervisor`` feeds it what happened
/// (with the monotonic time) and carries out the ``Action``s it returns; unit tests drive it with
/// made-up events and a fake clock. In the spirit of gunicorn's `Arbiter.manage_workers` and
/// `murder_workers`, as plain functions of (workers, time, settings).
struct PoolPolicy {
    /// What one generation's configuration asks of the pool.
    struct Limits: Equatable {
        /// Workers to keep running.
        var workers: Int
        /// How long a worker told to stop may take before it is killed.
        var gracefulTimeoutNs: UInt64
        /// How long a new worker may take from fork to its first accept.
        var bootTimeoutNs: UInt64
        /// How long a connection may take to send its first bytes (the worker's own timeout; the
        /// supervisor kills a worker still reading a second past it).
        var initialTimeoutNs: UInt64 = 0
        /// How long a handler may run on one connection; 0 for no limit.
        var handlerTimeoutNs: UInt64 = 0
        /// Idle workers to keep when every one is busy: more are forked, up to `maximumWorkers`
        /// (0: the pool stays at `workers`).
        var minimumSpare = 0
        /// The most workers the pool grows to (never below `workers`).
        var maximumWorkers = 0
        /// How long a worker beyond `workers` may sit idle before it is retired.
        var spareTimeoutNs: UInt64 = 10_000_000_000

        /// Whether the pool grows and shrinks with demand.
        var scales: Bool { minimumSpare > 0 && maximumWorkers > workers }
    }

    /// A worker's stage as its scoreboard slot shows it.
    struct Progress: Equatable {
        let pid: Int32
        let stage: Scoreboard.Stage
        /// When it entered the stage (monotonic, coarse).
        let since: UInt64
    }

    /// Grace beyond the initial timeout before the supervisor steps in: the worker's own receive
    /// timeout normally ends the read first.
    static let initialReadGraceNs: UInt64 = 1_000_000_000

    /// A live worker process, as far as decisions go.
    struct Worker: Equatable {
        let pid: Int32
        /// Its scoreboard slot (its number in logs is slot + 1).
        let slot: Int
        let generation: Int
        let forkedAt: UInt64
        /// It reached its first accept.
        var booted = false
        /// When it was told to stop; nil while it serves.
        var retiredAt: UInt64?
        /// When it began draining (its accept loop over, its handler's `finish` running), told to
        /// or not (recycled); nil before. A draining worker takes no connection.
        var drainingSince: UInt64?
        /// When it is killed if it has not exited by then (set with `retiredAt`).
        var killAt: UInt64?
        /// SIGKILL was sent.
        var killed = false
        /// It was killed for overstaying a stage (its exit is no crash).
        var overdue = false

        var number: Int { slot + 1 }
        var isServing: Bool { retiredAt == nil && drainingSince == nil && !killed }
        var tag: WorkerTag { WorkerTag(pid: pid, generation: generation) }
    }

    /// Who a log line is about (journald's WORKER_PID and WORKER_GENERATION).
    struct WorkerTag: Equatable {
        let pid: Int32
        let generation: Int
    }

    /// What an operator asked for (the supervisor's signals).
    enum Command: Equatable {
        /// TERM, INT: finish current connections, then exit.
        case stop
        /// QUIT: exit now.
        case stopNow
        /// HUP: load the configuration again into a new generation.
        case reload
        /// TTIN / TTOU.
        case addWorker, removeWorker
        /// USR2: re-execute the binary in place (see Upgrade.swift).
        case upgrade
    }

    /// A worker an upgraded image found in the scoreboard its previous image handed over.
    struct Adoptee: Equatable {
        let pid: Int32
        let slot: Int
        let generation: Int
        let booted: Bool
    }

    /// What happened.
    enum Event: Equatable {
        case command(Command)
        /// A worker of `generation` was forked into `slot`.
        case forked(pid: Int32, slot: Int, generation: Int)
        /// `fork` failed (EAGAIN, ENOMEM): a resource shortage, not a worker's fault.
        case forkFailed(SystemCallError)
        /// Every scoreboard slot is taken (retiring workers hold them).
        case noFreeSlot
        /// The supervisor has more than one thread: forking is unsafe.
        case unsafeToFork(threads: Int)
        /// The worker reached its first accept (read from the scoreboard).
        case booted(pid: Int32)
        /// The worker was reaped; `errno` is what it recorded when it gave up booting (0: none).
        case exited(pid: Int32, status: WaitStatus, errno: Int32)
        /// A reload's new configuration is valid and its listeners are bound.
        case reloadPrepared(Limits)
        /// A reload's new configuration was refused; the running generation goes on.
        case reloadRejected(reason: String)
        /// Each live worker's stage, read from the scoreboard (deadlines are judged on it).
        case progress([Progress])
        /// The new image of an in-place upgrade found these workers running; `serving` is the
        /// generation that served before the exec.
        case adopted([Adoptee], serving: Int)
        /// An upgrade failed before exec (probe, exec): the old image carries on.
        case upgradeFailed(reason: String)
        /// Time passed.
        case tick
    }

    /// What the supervisor is to do, in order.
    enum Action: Equatable {
        /// Fork one worker of `generation` (then report ``Event/forked(pid:slot:generation:)`` or a failure).
        case fork(generation: Int)
        /// SIGTERM: finish the current connection, then exit.
        case terminate(pid: Int32)
        /// SIGKILL.
        case kill(pid: Int32)
        /// SIGKILL a worker that overstayed `stage` (`elapsedNs` in it, `limitNs` allowed); the
        /// supervisor logs it with the client's address from the scoreboard.
        case killOverdue(pid: Int32, stage: Scoreboard.Stage, elapsedNs: UInt64, limitNs: UInt64)
        /// Load the configuration and bind new listeners; report ``Event/reloadPrepared(_:)`` or
        /// ``Event/reloadRejected(reason:)``. Nothing the running generation uses may change yet.
        case prepareReload
        /// The new generation serves and the old one was told to stop: apply what the reload
        /// changes on shared sockets, close dropped listeners, switch the log level.
        case commitReload(generation: Int)
        /// The new generation cannot boot: close the listeners it added, restore the old setup.
        case rollBackReload(generation: Int, restoring: Int)
        /// Probe the binary for an in-place upgrade, then exec it once the pool is steady; report
        /// ``Event/upgradeFailed(reason:)`` when it cannot be done.
        case prepareUpgrade
        /// RELOADING=1.
        case notifyReloading
        /// STOPPING=1.
        case notifyStopping
        /// READY=1 (after start, a reload, or a rollback), with a note for STATUS=.
        case notifyReady(note: String?)
        /// A graceful stop began: stop taking new connections where that is ours to decide.
        case closeListenersForDrain
        /// A fatal condition: STATUS=Failed and ERRNO= for systemd.
        case fail(reason: String, errno: Errno)
        /// A log line about the pool.
        case log(Logger.Level, String, worker: WorkerTag? = nil)
        /// Every worker is gone after a stop: exit with this status.
        case exit(PreforkExitCode)
    }

    /// A reload whose generation has not taken over yet.
    struct PendingReload: Equatable {
        /// The new generation.
        let generation: Int
        /// The generation that serves until this one commits, and its limits.
        let previous: Int
        let previousLimits: Limits
        /// The new generation must be whole by then, or the reload is rolled back.
        let deadline: UInt64
        /// Started by a new image after an in-place upgrade, beside the adopted workers.
        var upgrade = false
    }

    enum Phase: Equatable {
        case running
        /// Stopping; `graceful` is false after QUIT or a fatal failure.
        case stopping(graceful: Bool, deadline: UInt64)
        case stopped
    }

    /// Consecutive boot failures after which the pool gives up (or a reload rolls back).
    static let maximumBootFailures = 5
    /// A booted worker dying sooner than this after its fork died young: respawns back off.
    static let youngDeathNs: UInt64 = 2_000_000_000
    static let minimumRespawnDelayNs: UInt64 = 100_000_000
    static let maximumRespawnDelayNs: UInt64 = 10_000_000_000
    /// How long to wait for a scoreboard slot to free up.
    static let slotRetryNs: UInt64 = 1_000_000_000

    private(set) var limits: Limits
    /// The generation new workers join.
    private(set) var generation = 1
    /// The highest generation number given out (a rolled-back one is not reused).
    private var lastGeneration = 1
    private(set) var workers: [Int32: Worker] = [:]
    private(set) var reload: PendingReload?
    /// A HUP that came while a reload (or a rollback's recovery) was still under way.
    private(set) var reloadQueued = false
    /// A USR2 that came while the pool was not steady: it is carried out once it is.
    private(set) var upgradeQueued = false
    /// READY=1 is owed once the current generation is whole (at start, after a reload or a rollback).
    private var readyOwed = true
    private var readyNote: String?
    private(set) var phase = Phase.running
    private var exitCode = PreforkExitCode.success
    private(set) var consecutiveBootFailures = 0
    /// Not before this time may a missing worker be forked.
    private(set) var nextForkAt: UInt64 = 0
    private var respawnDelayNs: UInt64 = 0
    /// Workers forked beyond `limits.workers` because every one was busy.
    private(set) var extraWorkers = 0
    /// How many extra workers the next growth step may add (1, doubling while demand lasts, as
    /// Apache's prefork does), and when the next step may come.
    private var growthStep = 1
    private var nextGrowthAt: UInt64 = 0
    /// When the spare-worker rule last looked at the pool (it looks again a step later).
    private var lastScaleCheckAt: UInt64 = 0
    /// The interval between growth steps.
    static let growthIntervalNs: UInt64 = 100_000_000
    /// The most one growth step adds.
    static let maximumGrowthStep = 32
    /// What happened to the pool since start, for the status file and metrics: worker exits by
    /// cause, deadline kills by stage, reloads by result (connection outcomes are the workers').
    private(set) var counters = ScoreboardHeader.Counters()
    /// One "no free slot" line per shortage, not one per retry.
    private var slotShortageReported = false
    let maximumWorkers: Int

    init(limits: Limits, maximumWorkers: Int = ServerConfiguration.maximumWorkers) {
        self.limits = limits
        self.maximumWorkers = maximumWorkers
    }

    // MARK: - queries

    /// The workers the pool keeps now: the configured ones and those demand added.
    var targetCount: Int { limits.workers + extraWorkers }

    /// Workers of the current generation that serve (not told to stop).
    var servingCount: Int { workers.values.reduce(0) { $0 + ($1.generation == generation && $1.isServing ? 1 : 0) } }

    /// Workers killed past a deadline since a worker was last seen waiting in accept: a pool's
    /// worth of them means every worker wedges on what it is given (a client or a handler that
    /// never finishes), and the service stops telling the watchdog it is well until a worker is
    /// free again — replacements that boot only to wedge in turn do not count as health.
    private(set) var deadlineKillsSinceAccepting = 0

    /// What the watchdog vouches for: the pool runs, it has a worker that accepts, and workers
    /// are not failing to boot.
    var isHealthy: Bool {
        phase == .running && consecutiveBootFailures < Self.maximumBootFailures
            && workers.values.contains { $0.booted && !$0.killed }
            && deadlineKillsSinceAccepting < max(1, limits.workers)
    }

    /// Running, with no reload under way and READY=1 sent: an upgrade may exec now.
    var isSteady: Bool { phase == .running && reload == nil && !readyOwed }

    /// Takes the counters an earlier image of this process published (an in-place upgrade).
    mutating func restore(counters: ScoreboardHeader.Counters) { self.counters = counters }

    /// When the drain of a stop ends (SIGKILL for the rest), while one runs.
    var drainDeadline: UInt64? {
        if case .stopping(true, let deadline) = phase { return deadline }
        return nil
    }

    /// The earliest time at which ``handle(_:now:)`` with ``Event/tick`` has something to do;
    /// nil when only an event can change anything.
    func nextDeadline() -> UInt64? {
        var times: [UInt64] = []
        if phase == .running && servingCount < targetCount { times.append(nextForkAt) }
        if let reload { times.append(reload.deadline) }
        if limits.scales && phase == .running {
            times.append(max(nextGrowthAt, lastScaleCheckAt + Self.growthIntervalNs))
        }
        for worker in workers.values where !worker.killed {
            if let killAt = worker.killAt { times.append(killAt) }
            if !worker.booted { times.append(worker.forkedAt &+ limits.bootTimeoutNs) }
        }
        return times.min()
    }

    // MARK: - events

    /// Takes in one event at time `now` and returns what to do about it, in order.
    mutating func handle(_ event: Event, now: UInt64) -> [Action] {
        var actions: [Action] = []
        switch event {
        case .command(let command): obey(command, now: now, into: &actions)
        case .forked(let pid, let slot, let generation):
            workers[pid] = Worker(pid: pid, slot: slot, generation: generation, forkedAt: now)
            slotShortageReported = false
        case .forkFailed(let error):
            backOff(now: now)
            actions.append(.log(.error, "\(error); forking again in \(respawnDelayNs / 1_000_000) ms"))
        case .noFreeSlot:
            nextForkAt = now + Self.slotRetryNs
            if !slotShortageReported {
                slotShortageReported = true
                actions.append(.log(.error, "No free scoreboard slot (retiring workers hold them all); not forking"))
            }
        case .unsafeToFork(let threads):
            fail(
                "the supervisor has \(threads) threads; fork is only safe with one", errno: .deadlock,
                into: &actions)
        case .booted(let pid):
            guard workers[pid] != nil, !workers[pid]!.booted else { break }
            workers[pid]!.booted = true
            consecutiveBootFailures = 0
        case .exited(let pid, let status, let errno):
            guard let worker = workers.removeValue(forKey: pid) else { break }
            workerExited(worker, status: status, errno: errno, now: now, into: &actions)
        case .reloadPrepared(let next):
            startGeneration(next, now: now, into: &actions)
        case .progress(let samples):
            noticeDraining(samples, now: now)
            killOverdue(samples, now: now, into: &actions)
            if samples.contains(where: { $0.stage == .accepting && workers[$0.pid].map { !$0.killed } == true }) {
                deadlineKillsSinceAccepting = 0
            }
            if limits.scales, phase == .running {
                // Looked at now, whether or not it may act: the next look is a step away.
                lastScaleCheckAt = now
                if reload == nil { scale(samples, now: now, into: &actions) }
            }
        case .adopted(let adoptees, let serving):
            adopt(adoptees, serving: serving, now: now, into: &actions)
        case .upgradeFailed(let reason):
            counters.upgradesFailed += 1
            actions.append(.log(.error, "SIGUSR2: upgrade failed, generation \(generation) keeps serving: \(reason)"))
            actions.append(.notifyReady(note: "Upgrade failed: \(reason)"))
            startQueuedReload(into: &actions)
        case .reloadRejected(let reason):
            counters.reloadsRejected += 1
            actions.append(.log(.error, "SIGHUP: reload rejected, keeping generation \(generation): \(reason)"))
            startQueuedReload(into: &actions)
        case .tick:
            break
        }
        enforceDeadlines(now: now, into: &actions)
        advance(now: now, into: &actions)
        return actions
    }

    private mutating func obey(_ command: Command, now: UInt64, into actions: inout [Action]) {
        switch command {
        case .stop:
            guard phase == .running else { return }
            let deadline = now + limits.gracefulTimeoutNs
            phase = .stopping(graceful: true, deadline: deadline)
            reload = nil
            actions.append(.notifyStopping)
            actions.append(
                .log(
                    .info,
                    "Graceful stop; draining \(workers.count) workers (up to \(Self.seconds(limits.gracefulTimeoutNs)) s)"
                ))
            actions.append(.closeListenersForDrain)
            for pid in workers.keys.sorted() where workers[pid]!.isServing {
                retire(pid, now: now, killAt: deadline, into: &actions)
            }
            // Workers draining on their own (recycled) hear of the stop too: their handler's
            // `finish` sees `isStopping`. Their drain's deadline stands when it comes first.
            for pid in workers.keys.sorted() {
                guard let worker = workers[pid], worker.drainingSince != nil, worker.retiredAt == nil, !worker.killed
                else { continue }
                workers[pid]!.retiredAt = now
                workers[pid]!.killAt = min(deadline, worker.killAt ?? .max)
                actions.append(.terminate(pid: pid))
            }
        case .stopNow:
            if case .stopping(false, _) = phase { return }
            if phase == .running { actions.append(.notifyStopping) }
            phase = .stopping(graceful: false, deadline: now)
            reload = nil
            actions.append(.log(.info, "Immediate stop"))
            killAll(into: &actions)
        case .reload:
            guard phase == .running else { return }
            if reload != nil || readyOwed {
                reloadQueued = true
                actions.append(
                    .log(.info, "SIGHUP: generation \(generation) is still starting; reloading again once it serves"))
                return
            }
            actions.append(.prepareReload)
        case .addWorker:
            guard phase == .running else { return }
            guard limits.workers < maximumWorkers else {
                actions.append(.log(.warning, "SIGTTIN: already at the maximum of \(maximumWorkers) workers"))
                return
            }
            limits.workers += 1
            actions.append(.log(.info, "SIGTTIN: workers \(limits.workers - 1) → \(limits.workers)"))
        case .removeWorker:
            guard phase == .running else { return }
            guard limits.workers > 1 else {
                actions.append(.log(.warning, "SIGTTOU: keeping the last worker"))
                return
            }
            limits.workers -= 1
            actions.append(.log(.info, "SIGTTOU: workers \(limits.workers + 1) → \(limits.workers)"))
            retireSurplus(now: now, into: &actions)
        case .upgrade:
            guard phase == .running else { return }
            guard isSteady else {
                upgradeQueued = true
                actions.append(
                    .log(.info, "SIGUSR2: generation \(generation) is still starting; upgrading once it serves"))
                return
            }
            actions.append(.notifyReloading)
            actions.append(.prepareUpgrade)
        }
    }

    /// The first event of an upgraded image: the workers its previous image left are the serving
    /// generation (older ones were already told to stop), and a generation of this image's own
    /// starts beside them, as on a reload; they are told to stop once it is whole. RELOADING=1
    /// went out before the exec.
    private mutating func adopt(_ adoptees: [Adoptee], serving: Int, now: UInt64, into actions: inout [Action]) {
        generation = serving
        lastGeneration = max(serving, adoptees.map(\.generation).max() ?? 0)
        readyOwed = false
        for adoptee in adoptees {
            var worker = Worker(
                pid: adoptee.pid, slot: adoptee.slot, generation: adoptee.generation, forkedAt: now,
                booted: adoptee.booted)
            if adoptee.generation != serving {
                worker.retiredAt = now
                worker.killAt = now + limits.gracefulTimeoutNs
            }
            workers[adoptee.pid] = worker
        }
        actions.append(
            .log(
                .info,
                "SIGUSR2: upgraded in place; adopted \(adoptees.count) workers of generation \(serving), starting generation \(lastGeneration + 1) with \(limits.workers) workers"
            ))
        startGeneration(limits, now: now, upgrade: true, into: &actions)
    }

    /// A reload's configuration is ready: its generation starts beside the serving one.
    private mutating func startGeneration(
        _ next: Limits, now: UInt64, upgrade: Bool = false, into actions: inout [Action]
    ) {
        guard phase == .running else { return }
        lastGeneration += 1
        reload = PendingReload(
            generation: lastGeneration, previous: generation, previousLimits: limits,
            deadline: now + next.bootTimeoutNs, upgrade: upgrade)
        generation = lastGeneration
        limits = next
        extraWorkers = 0
        growthStep = 1
        consecutiveBootFailures = 0
        respawnDelayNs = 0
        nextForkAt = 0
        guard !upgrade else { return }
        actions.append(.notifyReloading)
        actions.append(
            .log(.info, "SIGHUP: reloading; starting generation \(generation) with \(limits.workers) workers"))
    }

    private mutating func workerExited(
        _ worker: Worker, status: WaitStatus, errno: Int32, now: UInt64, into actions: inout [Action]
    ) {
        let name = "Worker \(worker.number)"
        if status.isFatal && phase == .running && worker.retiredAt == nil {
            let code = errno != 0 ? Errno(rawValue: errno) : Errno.invalidArgument
            if let reload, worker.generation == reload.generation {
                rollBack(reason: "\(name) cannot run (\(status))", now: now, into: &actions)
            } else {
                actions.append(
                    .log(.critical, "\(name) found the service cannot run (\(status)); stopping", worker: worker.tag))
                fail("\(name.lowercased()) cannot run (\(status))", errno: code, into: &actions)
            }
            return
        }
        if status.isRecycled && worker.booted && phase == .running && worker.retiredAt == nil {
            counters.exitsRecycled += 1
            actions.append(
                .log(.info, "\(name) served its max-connections-per-worker; replacing it", worker: worker.tag))
            return
        }
        if worker.overdue && phase == .running && worker.retiredAt == nil {
            counters.exitsDeadline += 1
            // Killed for a client that held it too long: replace it at once, no back-off.
            actions.append(.log(.debug, "\(name) exited (\(status))", worker: worker.tag))
            return
        }
        // Retired, or killed at the end of a drain it began itself: an exit it was due, no crash.
        if worker.retiredAt != nil || worker.drainingSince != nil || phase != .running {
            actions.append(.log(.debug, "\(name) exited (\(status))", worker: worker.tag))
            if worker.generation != generation, !workers.values.contains(where: { $0.generation == worker.generation })
            {
                actions.append(.log(.info, "Generation \(worker.generation) drained"))
            }
            return
        }
        if !worker.booted || status.isBootFailure {
            counters.exitsBootFailure += 1
            consecutiveBootFailures += 1
            actions.append(
                .log(
                    .error, "\(name) failed to boot (\(status)); \(consecutiveBootFailures) in a row",
                    worker: worker.tag))
            if consecutiveBootFailures >= Self.maximumBootFailures {
                if let reload, worker.generation == reload.generation {
                    rollBack(
                        reason: "failed to boot \(consecutiveBootFailures) times in a row", now: now, into: &actions)
                } else {
                    let code = errno != 0 ? Errno(rawValue: errno) : Errno.noChildProcess
                    actions.append(
                        .log(
                            .critical,
                            "Workers cannot boot: \(consecutiveBootFailures) consecutive failures; giving up"))
                    fail("workers cannot boot (last: \(status))", errno: code, into: &actions)
                }
                return
            }
            backOff(now: now)
            actions.append(.log(.info, "Respawning in \(respawnDelayNs / 1_000_000) ms"))
            return
        }
        counters.exitsCrash += 1
        if worker.generation != generation {
            // The previous generation still serves while a reload boots; it is not topped up.
            actions.append(.log(.warning, "\(name) of generation \(worker.generation) died (\(status))"))
            return
        }
        actions.append(.log(.warning, "\(name) died (\(status)); replacing it", worker: worker.tag))
        if now - worker.forkedAt < Self.youngDeathNs {
            backOff(now: now)
            guard servingCount == 0 else {
                actions.append(.log(.info, "Workers die young; respawning in \(respawnDelayNs / 1_000_000) ms"))
                return
            }
            // The last one is replaced at once, or every client would wait out the back-off (up
            // to 10 s) in the accept queue. The rest of the pool still waits: a handler that
            // crashes on every connection costs one fork per connection, not a fork storm.
            actions.append(
                .log(
                    .info,
                    "Workers die young; replacing the last one at once, the others in \(respawnDelayNs / 1_000_000) ms"
                ))
            actions.append(.fork(generation: generation))
        } else {
            respawnDelayNs = 0
        }
    }

    /// Doubles the respawn delay (100 ms up to 10 s) and holds forks until it passes.
    private mutating func backOff(now: UInt64) {
        respawnDelayNs = min(max(respawnDelayNs * 2, Self.minimumRespawnDelayNs), Self.maximumRespawnDelayNs)
        nextForkAt = now + respawnDelayNs
    }

    /// The new generation cannot boot: go back to the one that serves. READY=1 follows once
    /// that one is whole again.
    private mutating func rollBack(reason: String, now: UInt64, into actions: inout [Action]) {
        guard let pending = reload else { return }
        if pending.upgrade { counters.upgradesFailed += 1 } else { counters.reloadsRolledBack += 1 }
        actions.append(
            .log(
                .error,
                "\(pending.upgrade ? "Upgrade" : "Reload") abandoned: generation \(pending.generation) \(reason); generation \(pending.previous) keeps serving"
            ))
        generation = pending.previous
        limits = pending.previousLimits
        extraWorkers = 0
        reload = nil
        for pid in workers.keys.sorted() where workers[pid]!.generation == pending.generation {
            // One that never booted has no client: kill it (it may hang in its set-up).
            if workers[pid]!.booted {
                retire(pid, now: now, killAt: now + limits.gracefulTimeoutNs, into: &actions)
            } else if !workers[pid]!.killed {
                workers[pid]!.retiredAt = now
                workers[pid]!.killed = true
                actions.append(.kill(pid: pid))
            }
        }
        actions.append(.rollBackReload(generation: pending.generation, restoring: pending.previous))
        consecutiveBootFailures = 0
        respawnDelayNs = 0
        nextForkAt = 0
        readyOwed = true
        readyNote =
            pending.upgrade ? "Upgrade failed: generation \(pending.generation) \(reason)" : "Reload failed (\(reason))"
    }

    private mutating func fail(_ reason: String, errno: Errno, into actions: inout [Action]) {
        exitCode = .failure
        let wasRunning = phase == .running
        phase = .stopping(graceful: false, deadline: 0)
        reload = nil
        if wasRunning { actions.append(.notifyStopping) }
        actions.append(.fail(reason: reason, errno: errno))
        killAll(into: &actions)
    }

    /// Workers seen draining for the first time: they no longer serve (a replacement is forked
    /// when the pool is short, and spare-worker decisions leave them out), and they get
    /// `graceful-timeout` from the start of their drain, or what remains of a stop's allowance.
    private mutating func noticeDraining(_ samples: [Progress], now: UInt64) {
        for sample in samples where sample.stage == .draining {
            guard let worker = workers[sample.pid], !worker.killed, worker.drainingSince == nil else { continue }
            let since = min(sample.since, now)
            workers[sample.pid]!.drainingSince = since
            workers[sample.pid]!.killAt = min(since + limits.gracefulTimeoutNs, worker.killAt ?? .max)
        }
    }

    /// Kills workers that stay in the initial read or in their handler past the limits.
    private mutating func killOverdue(_ samples: [Progress], now: UInt64, into actions: inout [Action]) {
        for sample in samples {
            guard let worker = workers[sample.pid], !worker.killed, now > sample.since else { continue }
            let limit: UInt64
            switch sample.stage {
            case .reading: limit = limits.initialTimeoutNs + Self.initialReadGraceNs
            case .handling where limits.handlerTimeoutNs > 0: limit = limits.handlerTimeoutNs
            default: continue
            }
            let elapsed = now - sample.since
            guard elapsed >= limit else { continue }
            workers[sample.pid]!.killed = true
            workers[sample.pid]!.overdue = true
            if sample.stage == .reading { counters.killsReading += 1 } else { counters.killsHandling += 1 }
            deadlineKillsSinceAccepting += 1
            actions.append(.killOverdue(pid: sample.pid, stage: sample.stage, elapsedNs: elapsed, limitNs: limit))
        }
    }

    /// Spare workers (Apache's MinSpare/MaxRequestWorkers): when fewer than `minimumSpare` of the
    /// current generation wait in accept, fork more — a step every 100 ms, doubling from one up
    /// to 32 while the shortage lasts — up to `maximumWorkers`. A worker beyond `workers` that
    /// has waited in accept for `spareTimeout` is retired, one per step.
    private mutating func scale(_ samples: [Progress], now: UInt64, into actions: inout [Action]) {
        guard now >= nextGrowthAt else { return }
        let current = samples.filter { workers[$0.pid].map { $0.generation == generation && $0.isServing } ?? false }
        let idle = current.filter { $0.stage == .accepting }
        let starting = servingCount - current.filter { $0.stage >= .accepting }.count
        let ceiling = max(limits.maximumWorkers, limits.workers)
        let missing = limits.minimumSpare - idle.count - starting
        if missing > 0, targetCount < ceiling {
            let added = min(missing, growthStep, ceiling - targetCount)
            extraWorkers += added
            actions.append(
                .log(
                    .info,
                    "\(idle.count) idle of \(servingCount) workers; forking \(added) more (up to \(ceiling))"))
            growthStep = min(growthStep * 2, Self.maximumGrowthStep)
            nextGrowthAt = now + Self.growthIntervalNs
            return
        }
        growthStep = 1
        guard extraWorkers > 0, idle.count > limits.minimumSpare,
            let longest = idle.filter({ now >= $0.since && now - $0.since >= limits.spareTimeoutNs })
                .min(by: { $0.since < $1.since })
        else { return }
        extraWorkers -= 1
        actions.append(
            .log(
                .info,
                "Worker \(workers[longest.pid]!.number) idle for \(Self.seconds(limits.spareTimeoutNs)) s; retiring it (\(targetCount) workers)"
            ))
        retire(longest.pid, now: now, killAt: now + limits.gracefulTimeoutNs, into: &actions)
        nextGrowthAt = now + Self.growthIntervalNs
    }

    // MARK: - after every event

    /// Kills workers past their stop deadline, rolls back a reload past its boot deadline, and
    /// kills workers that take too long to boot.
    private mutating func enforceDeadlines(now: UInt64, into actions: inout [Action]) {
        for pid in workers.keys.sorted() {
            guard let worker = workers[pid], !worker.killed, let killAt = worker.killAt, now >= killAt else { continue }
            workers[pid]!.killed = true
            // The allowance, not the measured wait: the loop may wake a little late.
            let start = worker.retiredAt ?? worker.drainingSince ?? killAt
            let allowed = Self.seconds(killAt - min(start, killAt))
            let what = worker.retiredAt != nil ? "after it was told to stop" : "after it began draining"
            actions.append(
                .log(
                    .warning,
                    "Worker \(worker.number) of generation \(worker.generation) still busy \(allowed) s \(what); killing it",
                    worker: worker.tag))
            actions.append(.kill(pid: pid))
        }
        if let pending = reload, now >= pending.deadline {
            rollBack(
                reason: "did not start within \(Self.seconds(limits.bootTimeoutNs)) s", now: now, into: &actions)
        }
        for pid in workers.keys.sorted() {
            guard let worker = workers[pid], !worker.booted, !worker.killed,
                now >= worker.forkedAt &+ limits.bootTimeoutNs
            else { continue }
            workers[pid]!.killed = true
            actions.append(
                .log(
                    .error,
                    "Worker \(worker.number) did not start within \(Self.seconds(limits.bootTimeoutNs)) s; killing it",
                    worker: worker.tag))
            actions.append(.kill(pid: pid))
        }
    }

    /// Commits a reload or announces readiness once the current generation is whole, then tops
    /// the pool up; after a stop, exits once every worker is gone.
    private mutating func advance(now: UInt64, into actions: inout [Action]) {
        guard phase == .running else {
            if workers.isEmpty, phase != .stopped {
                phase = .stopped
                actions.append(.exit(exitCode))
            }
            return
        }
        let current = workers.values.filter { $0.generation == generation && $0.isServing }
        if current.count >= limits.workers, current.allSatisfy(\.booted) {
            if let pending = reload {
                let old = workers.values.filter { $0.generation != generation && $0.isServing }.map(\.pid).sorted()
                actions.append(
                    .log(
                        .info, "Generation \(generation) accepting; retiring \(old.count) workers of the previous one"))
                for pid in old { retire(pid, now: now, killAt: now + limits.gracefulTimeoutNs, into: &actions) }
                actions.append(.commitReload(generation: pending.generation))
                if pending.upgrade { counters.upgradesCompleted += 1 } else { counters.reloadsCommitted += 1 }
                reload = nil
                readyOwed = true
            }
            if readyOwed {
                readyOwed = false
                actions.append(.log(.info, "Ready: \(current.count) workers accepting (generation \(generation))"))
                actions.append(.notifyReady(note: readyNote))
                readyNote = nil
                startQueuedReload(into: &actions)
                startQueuedUpgrade(into: &actions)
            }
        }
        // Healthy again: the pool is whole and booted, and has stayed so past a young death's span.
        if respawnDelayNs > 0, servingCount >= targetCount, current.allSatisfy(\.booted),
            now >= nextForkAt + Self.youngDeathNs
        {
            respawnDelayNs = 0
        }
        if now >= nextForkAt, servingCount < targetCount {
            actions.append(.fork(generation: generation))
        }
    }

    private mutating func startQueuedUpgrade(into actions: inout [Action]) {
        guard upgradeQueued, isSteady else { return }
        upgradeQueued = false
        actions.append(.notifyReloading)
        actions.append(.prepareUpgrade)
    }

    private mutating func startQueuedReload(into actions: inout [Action]) {
        guard reloadQueued, reload == nil, !readyOwed, phase == .running else { return }
        reloadQueued = false
        actions.append(.prepareReload)
    }

    // MARK: - helpers

    private mutating func retire(_ pid: Int32, now: UInt64, killAt: UInt64, into actions: inout [Action]) {
        guard workers[pid] != nil, workers[pid]!.isServing else { return }
        workers[pid]!.retiredAt = now
        workers[pid]!.killAt = min(killAt, workers[pid]!.killAt ?? .max)
        actions.append(.terminate(pid: pid))
    }

    /// TTOU: the newest serving workers of the current generation beyond the target stop.
    private mutating func retireSurplus(now: UInt64, into actions: inout [Action]) {
        let serving = workers.values.filter { $0.generation == generation && $0.isServing }
        let surplus = serving.count - targetCount
        guard surplus > 0 else { return }
        // Not yet booted ones first (they serve nobody), then the newest.
        let unbooted = serving.filter { !$0.booted }.sorted { $0.pid < $1.pid }
        let booted = serving.filter(\.booted).sorted { ($0.forkedAt, $0.pid) > ($1.forkedAt, $1.pid) }
        for worker in (unbooted + booted).prefix(surplus) {
            retire(worker.pid, now: now, killAt: now + limits.gracefulTimeoutNs, into: &actions)
        }
    }

    private mutating func killAll(into actions: inout [Action]) {
        for pid in workers.keys.sorted() where !workers[pid]!.killed {
            workers[pid]!.killed = true
            actions.append(.kill(pid: pid))
        }
    }

    /// Seconds for log lines, to the millisecond without trailing zeros: "30", "1.5", "0.05".
    static func seconds(_ nanoseconds: UInt64) -> String {
        let milliseconds = (nanoseconds + 500_000) / 1_000_000
        var fraction = String(milliseconds % 1000)
        guard fraction != "0" else { return "\(milliseconds / 1000)" }
        fraction = String(repeating: "0", count: 3 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return "\(milliseconds / 1000).\(fraction)"
    }
}
