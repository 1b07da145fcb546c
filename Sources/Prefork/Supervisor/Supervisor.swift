internal import CPreforkShims
import Glibc
import Logging
import SystemPackage
import Systemd

/// The supervisor process: a single-threaded loop that reads signals, worker exits, boot reports
/// and the clock, hands each to the ``PoolPolicy`` and carries out what it decides — forking,
/// signalling, reloading, telling systemd. It owns the listeners and never serves traffic.
///
/// Read it top to bottom: ``run()`` is the loop, ``dispatch(_:)`` the one place where events
/// meet decisions, ``perform(_:)`` the one place where decisions meet system calls.
final class Supervisor {
    private var setup: ServerSetup
    private let loader: PreforkServer.Loader
    private var logger: Logger
    private var listeners: ListenerBook
    private var policy: PoolPolicy
    private let scoreboard: Scoreboard
    private let signals: SignalChannel
    private let bootPipe: (read: Int32, write: Int32)
    private let pid = getpid()
    private var reporter: ServiceReporter
    /// For the STATUS= rate: connections and time at the previous status line.
    private var rateSample: (connections: UInt64, at: UInt64) = (0, 0)
    /// Connections served by workers already reaped, and how those that went wrong ended.
    private var retiredConnections: UInt64 = 0
    private var retiredOutcomes = [UInt64](repeating: 0, count: Scoreboard.Outcome.allCases.count)
    private var exitCode: PreforkExitCode?
    /// The status file the scoreboard lives in, removed on exit; nil without one.
    private var statusFile: String?
    /// The binary's path at start: where an in-place upgrade finds the new one.
    private let executablePath = UpgradeAttempt.executablePath()
    /// An in-place upgrade under way (its probe running, or passed and waiting to exec).
    private var upgrade: UpgradeAttempt?
    /// What the previous image handed over when this one was started by an in-place upgrade.
    private let handover: UpgradeHandover?

    /// Binds or takes the listeners (or adopts the previous image's, after an in-place upgrade)
    /// and maps the scoreboard, then switches to `account` (the configuration's `user`), when
    /// there is one.
    init(
        setup: ServerSetup, inherited: [ActivatedSocket], handover: UpgradeHandover? = nil, account: ServiceAccount?,
        loader: @escaping PreforkServer.Loader, logger: Logger
    ) throws(StartupError) {
        self.setup = setup
        self.loader = loader
        self.logger = logger
        self.handover = handover
        ProcessRole.current = .supervisor
        // Started with stderr closed, the next socket would become fd 2 and receive log lines;
        // with stderr a pipe nobody reads, a log line must fail with EPIPE, not kill us.
        _ = pf_ensure_standard_fds()
        pf_ignore_sigpipe()
        // After an in-place upgrade the listeners are the previous image's, as they were: a
        // change of `listen` in the configuration takes a reload.
        let bound: [Listener]
        if let handover {
            bound = try handover.adoptListeners()
        } else {
            bound = try ListenerAcquisition.acquire(setup.configuration, inherited: inherited, logger: logger)
        }
        do throws(SystemCallError) {
            try ListenerBook.apply(setup, to: bound, listenerCount: bound.count)
            if let handover {
                scoreboard = try Scoreboard(adopting: handover.scoreboard, file: handover.statusFile)
            } else {
                scoreboard = try Self.makeScoreboard(setup.configuration, owner: account, logger: logger)
            }
            signals = try SignalChannel()
            var fds: [Int32] = [-1, -1]
            guard pf_pipe2(&fds, O_CLOEXEC | O_NONBLOCK) == 0 else { throw SystemCallError.current("pipe2") }
            bootPipe = (fds[0], fds[1])
        } catch {
            for listener in bound where listener.origin == .bound { listener.close() }
            throw StartupError(.failure, error.description)
        }
        statusFile = scoreboard.file
        Scoreboard.ofThisProcess = scoreboard
        Self.registerRoutes(of: setup.handler, in: scoreboard, logger: logger)
        listeners = ListenerBook(bound, logger: logger)
        policy = PoolPolicy(limits: Self.limits(of: setup.configuration))
        reporter = ServiceReporter(logger: logger)
        if let handover {
            takeOver(handover)
        } else {
            for listener in bound {
                listeners.announce(listener, configuration: setup.configuration, reporter: &reporter)
            }
        }
        // After an upgrade this process runs as the account already: the switch is a no-op.
        if let account { try Privileges.switchSupervisor(to: account, logger: logger) }
    }

    /// An upgraded image takes what its previous image counted and stored; the workers are
    /// adopted when the loop starts.
    private func takeOver(_ handover: UpgradeHandover) {
        for entry in handover.listeners {
            logger.info(
                "Listening on \(listeners.current.first { $0.fileDescriptor == entry.fileDescriptor }?.address ?? entry.name) (kept across the upgrade)",
                metadata: ["listener": "\(entry.name)", "origin": "\(entry.origin.rawValue)"])
            if let name = entry.storedName { listeners.markStored(entry.fileDescriptor, name: name) }
        }
        if let header = scoreboard.headerContents {
            policy.restore(counters: header.counters)
            retiredConnections = header.retiredConnections
            retiredOutcomes = header.counters.failedConnections
        }
    }

    // MARK: - the loop

    /// Runs until every worker is gone after a stop; returns the exit status.
    func run() -> PreforkExitCode {
        if handover != nil, let header = scoreboard.headerContents {
            dispatch(.adopted(scoreboard.liveWorkers(), serving: header.generation))
        } else {
            logger.info("Starting \(policy.limits.workers) workers", metadata: ["generation": "\(policy.generation)"])
        }
        dispatch(.tick)
        publishScoreboard()
        while exitCode == nil {
            waitForEvents()
            for signal in signals.drain() {
                // One upgrade at a time: a second USR2 would only announce another RELOADING=1.
                if signal == SIGUSR2, upgrade != nil {
                    logger.info("SIGUSR2: an upgrade is already under way")
                    continue
                }
                if let command = Self.command(for: signal) { dispatch(.command(command)) }
            }
            drainBootPipe()
            noticeBootedWorkers()
            dispatch(.progress(progressOfWorkers()))
            reapWorkers()
            dispatch(.tick)
            if let deadline = policy.drainDeadline {
                let now = Monotonic.now()
                reporter.draining(remainingNs: deadline > now ? deadline - now : 0)
            }
            reporter.tick(status: statusLine(), healthy: policy.isHealthy)
            publishScoreboard()
            // Last in the turn: every signal drained so far has been acted on; those that come
            // later stay pending across the exec.
            advanceUpgrade()
        }
        listeners.closeAll()
        if let statusFile { unlink(statusFile) }
        logger.info("Stopped", metadata: ["connections": "\(totalConnections)"])
        return exitCode ?? .failure
    }

    /// Sleeps until a signal, a boot report, or the policy's next deadline (at most a second,
    /// and half the watchdog interval when it is on).
    private func waitForEvents() {
        var timeoutMs: Int32 = 1000
        if let period = reporter.watchdogPeriodNs { timeoutMs = min(timeoutMs, Int32(max(1, period / 2_000_000))) }
        if let deadline = policy.nextDeadline() {
            let now = Monotonic.now()
            timeoutMs = min(timeoutMs, deadline <= now ? 0 : Int32(min((deadline - now) / 1_000_000 + 1, 1000)))
        }
        var fds = [
            pollfd(fd: signals.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: bootPipe.read, events: Int16(POLLIN), revents: 0),
        ]
        // Interrupted or not, the loop looks at everything next: no retry.
        _ = valueOrErrno(retryOnInterrupt: false) { poll(&fds, nfds_t(fds.count), timeoutMs) }
    }

    private static func command(for signal: Int32) -> PoolPolicy.Command? {
        switch signal {
        case SIGTERM, SIGINT: .stop
        case SIGQUIT: .stopNow
        case SIGHUP: .reload
        case SIGTTIN: .addWorker
        case SIGTTOU: .removeWorker
        case SIGUSR2: .upgrade
        default: nil  // SIGCHLD only wakes the loop; reaping follows.
        }
    }

    /// Hands one event to the policy and carries out its decisions (which may raise events of
    /// their own: a fork's outcome, a reload's preparation).
    private func dispatch(_ event: PoolPolicy.Event) {
        for action in policy.handle(event, now: Monotonic.now()) { perform(action) }
    }

    private func perform(_ action: PoolPolicy.Action) {
        switch action {
        case .fork(let generation): fork(generation: generation)
        case .terminate(let pid): kill(pid, SIGTERM)
        case .kill(let pid): kill(pid, SIGKILL)
        case .killOverdue(let pid, let stage, let elapsed, let limit):
            logOverdue(pid: pid, stage: stage, elapsedNs: elapsed, limitNs: limit)
            kill(pid, SIGKILL)
        case .prepareReload: prepareReload()
        case .prepareUpgrade: prepareUpgrade()
        case .commitReload:
            listeners.commit(setup, reporter: &reporter)
            // The new level, like every other setting, is in force once its generation is.
            if let level = setup.logLevel { logger.logLevel = level }
        case .rollBackReload:
            if let previous = listeners.rollBack(reporter: &reporter) { setup = previous }
        case .notifyReloading: reporter.reloading()
        case .notifyStopping: reporter.stopping()
        case .notifyReady(let note): reporter.ready(status: (note.map { "\($0); " } ?? "") + statusLine())
        case .closeListenersForDrain: listeners.closeForDrain()
        case .fail(let reason, let errno): reporter.failed(status: reason, errno: errno.rawValue)
        case .log(let level, let message, let worker):
            logger.log(
                level: level, "\(message)",
                metadata: worker.map { ["worker.pid": "\($0.pid)", "worker.generation": "\($0.generation)"] })
        case .exit(let code): exitCode = code
        }
    }

    // MARK: - workers

    /// Forks one worker of `generation` into a slot reserved beforehand.
    private func fork(generation: Int) {
        let threads = pf_thread_count()
        guard threads == 1 else { return dispatch(.unsafeToFork(threads: Int(threads))) }
        guard let slot = scoreboard.firstFreeSlot() else { return dispatch(.noFreeSlot) }
        scoreboard.reserve(slot, generation: generation)
        // Made before fork(), not in the child: the first use of a type costs the runtime work
        // (metadata, copies of pages it writes) that is done once here rather than in every child.
        let launch = WorkerProcess.Launch(
            supervisorPID: pid, slotIndex: slot, slot: scoreboard.slot(slot), generation: generation,
            setup: setup, listeners: listeners.current,
            inheritedToClose: [signals.fileDescriptor, bootPipe.read, scoreboard.descriptor]
                + (upgrade.flatMap { $0.passed ? nil : [$0.output] } ?? []) + listeners.droppedDescriptors,
            bootPipe: bootPipe.write, logger: WorkerProcess.workerLogger(logger, generation: generation))
        let child = Glibc.fork()
        if child < 0 {
            let error = SystemCallError.current("fork")
            _ = scoreboard.release(slot)
            return dispatch(.forkFailed(error))
        }
        if child == 0 { WorkerProcess.run(launch) }
        scoreboard.assign(slot, pid: child)
        logger.debug(
            "Forked worker \(slot + 1)", metadata: ["worker.pid": "\(child)", "worker.generation": "\(generation)"])
        dispatch(.forked(pid: child, slot: slot, generation: generation))
    }

    /// The boot pipe only wakes the loop: the scoreboard says who booted.
    private func drainBootPipe() {
        var bytes = [UInt8](repeating: 0, count: 64)
        while case .success(let count) = valueOrErrno({
            bytes.withUnsafeMutableBytes { read(bootPipe.read, $0.baseAddress, $0.count) }
        }), count > 0 {}
    }

    private func noticeBootedWorkers() {
        for worker in policy.workers.values where !worker.booted {
            if scoreboard.hasBooted(worker.slot, pid: worker.pid) { dispatch(.booted(pid: worker.pid)) }
        }
    }

    /// Every live worker's stage and since when, from the scoreboard.
    private func progressOfWorkers() -> [PoolPolicy.Progress] {
        policy.workers.values.map { worker in
            let (stage, since) = scoreboard.stage(worker.slot, pid: worker.pid)
            return PoolPolicy.Progress(pid: worker.pid, stage: stage, since: since)
        }
    }

    private func logOverdue(pid: Int32, stage: Scoreboard.Stage, elapsedNs: UInt64, limitNs: UInt64) {
        guard let worker = policy.workers[pid] else { return }
        let what = stage == .reading ? "reading a client's first bytes" : "handling a connection"
        let limitName = stage == .reading ? "initial-timeout" : "handler-timeout"
        let peer = scoreboard.peer(worker.slot)
        let allowed = PoolPolicy.seconds(limitNs)
        logger.warning(
            "Worker \(worker.number) killed: \(what) for \(PoolPolicy.seconds(elapsedNs)) s, past \(limitName) (\(allowed) s allowed); peer \(peer)",
            metadata: [
                "worker.pid": "\(pid)", "worker.generation": "\(worker.generation)", "peer": "\(peer)",
                "stage": "\(stage.name)",
            ])
    }

    private func reapWorkers() {
        while true {
            var status: Int32 = 0
            guard case .success(let pid) = valueOrErrno({ waitpid(-1, &status, WNOHANG) }), pid > 0 else { return }
            if pid == upgrade?.probe {
                probeEnded(WaitStatus(rawValue: status))
                continue
            }
            guard let worker = policy.workers[pid] else { continue }
            // It may have booted and died between two turns of the loop.
            if !worker.booted && scoreboard.hasBooted(worker.slot, pid: pid) { dispatch(.booted(pid: pid)) }
            let errno = scoreboard.bootErrno(worker.slot)
            let served = scoreboard.release(worker.slot)
            retiredConnections += served.connections
            for (index, count) in served.outcomes.enumerated() { retiredOutcomes[index] += count }
            dispatch(.exited(pid: pid, status: WaitStatus(rawValue: status), errno: errno))
        }
    }

    // MARK: - upgrade

    /// SIGUSR2 on a steady pool: start the probe of the binary at the path this one started from.
    private func prepareUpgrade() {
        guard upgrade == nil else { return logger.info("SIGUSR2: an upgrade is already under way") }
        guard let path = executablePath else {
            return dispatch(.upgradeFailed(reason: "the running binary's path is unknown (/proc/self/exe)"))
        }
        switch UpgradeAttempt.start(path: path, arguments: CommandLine.arguments) {
        case .success(let attempt):
            upgrade = attempt
            logger.info(
                "SIGUSR2: upgrading in place to \(path); probing it first", metadata: ["probe.pid": "\(attempt.probe)"])
        case .failure(let error):
            dispatch(.upgradeFailed(reason: "\(error)"))
        }
    }

    private func probeEnded(_ status: WaitStatus) {
        guard var attempt = upgrade else { return }
        if let reason = attempt.verdict(status: status) {
            upgrade = nil
            return dispatch(.upgradeFailed(reason: reason))
        }
        attempt.passed = true
        upgrade = attempt
    }

    /// Once a turn: kills a probe past its time, and execs once the probe passed and the pool is
    /// steady (a reload that began meanwhile finishes first). A stop cancels the upgrade.
    private func advanceUpgrade() {
        guard var attempt = upgrade else { return }
        if policy.phase != .running {
            // Its exit is reaped as a stranger's; its pipe is closed here.
            if !attempt.passed {
                kill(attempt.probe, SIGKILL)
                close(attempt.output)
            }
            upgrade = nil
            return
        }
        if !attempt.passed {
            if !attempt.timedOut, Monotonic.now() >= attempt.deadline {
                attempt.timedOut = true
                upgrade = attempt
                kill(attempt.probe, SIGKILL)
            }
            return
        }
        guard policy.isSteady else { return }
        upgrade = nil
        publishScoreboard()
        let handover = UpgradeHandover(
            scoreboard: scoreboard.descriptor, statusFile: statusFile,
            listeners: listeners.current.map {
                UpgradeHandover.Entry(
                    fileDescriptor: $0.fileDescriptor, origin: $0.origin, name: $0.name, configured: $0.configured,
                    storedName: listeners.storedName(of: $0))
            })
        logger.info("SIGUSR2: the probe answered; executing \(attempt.path) in place (pid \(pid))")
        let error = UpgradeAttempt.exec(path: attempt.path, arguments: CommandLine.arguments, handover: handover)
        dispatch(.upgradeFailed(reason: "\(error)"))
    }

    // MARK: - reload

    /// SIGHUP: load the setup again and bind what it adds. The serving generation's sockets and
    /// the log level are left alone until the new generation commits.
    private func prepareReload() {
        let next: ServerSetup
        do {
            next = try loader()
            try next.configuration.validate()
            try Self.checkAccountUnchanged(from: setup.configuration, to: next.configuration)
            try listeners.prepareReload(to: next, from: setup, reporter: &reporter)
        } catch {
            return dispatch(.reloadRejected(reason: "\(error)"))
        }
        setup = next
        Self.registerRoutes(of: next.handler, in: scoreboard, logger: logger)
        dispatch(.reloadPrepared(Self.limits(of: next.configuration)))
    }

    /// Names a tally in the status file for each route the handler counts, before the workers
    /// that count there are forked.
    private static func registerRoutes(of handler: any ConnectionHandler, in scoreboard: Scoreboard, logger: Logger) {
        let uncounted = scoreboard.routes.register(handler.routeNames)
        if !uncounted.isEmpty {
            logger.warning(
                "Routes not counted (the status file has room for \(RouteTallies.capacity)): \(uncounted.joined(separator: ", "))"
            )
        }
    }

    /// The supervisor switched user at start and cannot switch again: a reload keeps the account.
    private static func checkAccountUnchanged(from current: ServerConfiguration, to next: ServerConfiguration) throws {
        for (key, old, new) in [("user", current.user, next.user), ("group", current.group, next.group)]
        where old != new {
            throw ConfigurationError(
                key: key, value: new, reason: "cannot change on reload (it was \(old)): restart preforkd")
        }
    }

    /// The scoreboard, in the status file under the runtime directory when there is one (created
    /// if missing, and then given to `owner`, so that the supervisor can remove the file at exit
    /// once it runs as that user); in anonymous memory when there is none or it cannot be written (then one
    /// warning says `preforkd status` will not find this instance).
    private static func makeScoreboard(
        _ configuration: ServerConfiguration, owner: ServiceAccount?, logger: Logger
    ) throws(SystemCallError) -> Scoreboard {
        let capacity = 2 * ServerConfiguration.maximumWorkers + 2
        guard let file = configuration.statusFile else { return try Scoreboard(capacity: capacity) }
        if mkdir(configuration.runtimeDirectory, 0o755) == 0 {
            if let owner { _ = chown(configuration.runtimeDirectory, owner.uid, owner.gid) }
        } else if errno != EEXIST {
            logger.warning(
                "No status file, preforkd status will not find this instance: \(SystemCallError.current("mkdir", configuration.runtimeDirectory))"
            )
            return try Scoreboard(capacity: capacity)
        }
        do {
            return try Scoreboard(capacity: capacity, file: file)
        } catch {
            logger.warning("No status file, preforkd status will not find this instance: \(error)")
            return try Scoreboard(capacity: capacity)
        }
    }

    private static func limits(of configuration: ServerConfiguration) -> PoolPolicy.Limits {
        PoolPolicy.Limits(
            workers: configuration.workers,
            gracefulTimeoutNs: Monotonic.nanoseconds(configuration.gracefulTimeout),
            bootTimeoutNs: Monotonic.nanoseconds(configuration.bootTimeout),
            initialTimeoutNs: Monotonic.nanoseconds(configuration.initialTimeout),
            handlerTimeoutNs: Monotonic.nanoseconds(configuration.handlerTimeout),
            minimumSpare: configuration.minimumSpare, maximumWorkers: configuration.maximumWorkers,
            spareTimeoutNs: Monotonic.nanoseconds(configuration.spareTimeout))
    }

    // MARK: - status

    /// Brings the status file's header up to date: every turn of the loop, so that what a worker
    /// served is never missing between its reap and the next STATUS= line.
    private func publishScoreboard() {
        scoreboard.publish(
            generation: policy.generation, retiredConnections: retiredConnections, counters: counters,
            listening: listeners.current.map(\.address))
    }

    /// The counters the status file and the metrics handler show: the pool's, and the outcomes
    /// of connections served by workers already reaped.
    private var counters: ScoreboardHeader.Counters {
        var counters = policy.counters
        counters.failedConnections = retiredOutcomes
        return counters
    }

    private var totalConnections: UInt64 {
        retiredConnections + scoreboard.summary(of: policy.workers.values.map(\.slot)).connections
    }

    /// A human-readable one-line status (systemd's STATUS=), e.g. "4 idle, 0 busy, 0 starting;
    /// 1200 connections, 35/s; listening on 127.0.0.1:11000". The rate is over the time since the
    /// previous status line (about a second).
    private func statusLine() -> String {
        let summary = scoreboard.summary(of: policy.workers.values.map(\.slot))
        let served = retiredConnections + summary.connections
        let now = Monotonic.now()
        var rate: UInt64 = 0
        if rateSample.at > 0, now > rateSample.at, served >= rateSample.connections {
            rate = (served - rateSample.connections) * 1_000_000_000 / (now - rateSample.at)
        }
        rateSample = (served, now)
        let paused = summary.paused > 0 ? ", \(summary.paused) paused (out of file descriptors or memory)" : ""
        let draining = summary.draining > 0 ? ", \(summary.draining) draining" : ""
        let routes = scoreboard.routes.entries
        let perRoute =
            routes.isEmpty
            ? ""
            : "; routes: " + routes.map { "\($0.name) \($0.connections) (\($0.open) open)" }.joined(separator: ", ")
        return "\(summary.idle) idle, \(summary.busy) busy, \(summary.starting) starting\(paused)\(draining); "
            + "\(served) connections, \(rate)/s; listening on \(listeners.addresses)\(perRoute)"
    }
}
