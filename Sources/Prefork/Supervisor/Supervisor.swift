internal import CPreforkShims
import Glibc
import Logging
import SystemPackage
import Systemd

/// The supervisor: owns the listeners, forks the workers, reaps and replaces them, drains them on
/// stop, and starts a new generation on reload. A single-threaded poll loop over a signalfd and
/// the workers' boot pipe; it never serves traffic and never blocks on a client.
final class Supervisor {
    /// A live worker process.
    struct WorkerRecord {
        let pid: Int32
        let slot: Int
        let generation: Int
        let startedAt: UInt64
        /// It reported that it is about to accept (its boot finished).
        var booted = false
        /// It was told to stop (old generation, TTOU, stop): it is not replaced.
        var retiring = false
        var number: Int { slot + 1 }
    }

    /// What a reload replaced, kept until its new generation accepts.
    private struct PendingReload {
        let setup: ServerSetup
        let generation: Int
        let targetWorkers: Int
        let listeners: [Listener]
        /// Listeners the new configuration dropped: closed once the new generation accepts.
        let removed: [Listener]
        /// Listeners the new configuration added: closed if the reload is rolled back.
        let added: [Listener]
    }

    private enum State: Equatable {
        case running
        case stopping(deadline: UInt64, killed: Bool)
    }

    /// Consecutive workers that died before accepting, after which the supervisor gives up.
    static let maximumBootFailures = 5
    /// A worker that dies sooner than this after its fork counts as dying young: respawns back off.
    static let youngDeathNs: UInt64 = 2_000_000_000

    private var setup: ServerSetup
    private let loader: PreforkServer.Loader
    private var logger: Logger
    private var listeners: [Listener]
    private let scoreboard: Scoreboard
    private let signals: SignalChannel
    private let bootPipe: (read: Int32, write: Int32)
    private let pid = getpid()
    private var reporter: ServiceReporter

    /// The generation new workers join; earlier (or abandoned) ones drain.
    private var generation = 1
    /// The highest generation number given out (a rolled-back reload's number is not reused).
    private var lastGeneration = 1
    /// A reload whose generation is still booting: what to restore if it cannot.
    private var pendingReload: PendingReload?
    /// A SIGHUP that came while a reload was still booting: done once that one is ready.
    private var reloadRequested = false
    /// For the STATUS= rate: connections and time at the previous status line.
    private var rateSample: (connections: UInt64, at: UInt64) = (0, 0)
    /// Listening fds systemd holds a copy of (FDSTORE=1).
    private var storedInManager: Set<Int32> = []
    private var targetWorkers: Int
    private var workers: [Int32: WorkerRecord] = [:]
    private var state = State.running
    private var exitCode = PreforkExitCode.success
    /// Not before this time (monotonic ns) may missing workers be forked again.
    private var nextSpawnAt: UInt64 = 0
    private var respawnDelayNs: UInt64 = 0
    private var consecutiveBootFailures = 0
    /// Connections served by workers already reaped.
    private var retiredConnections: UInt64 = 0
    /// The generation whose readiness has been announced.
    private var announcedGeneration = 0

    init(setup: ServerSetup, inherited: [ActivatedSocket], loader: @escaping PreforkServer.Loader, logger: Logger)
        throws(StartupError)
    {
        self.setup = setup
        self.loader = loader
        self.logger = logger
        self.targetWorkers = setup.configuration.workers
        ProcessRole.current = .supervisor
        listeners = try ListenerAcquisition.acquire(setup.configuration, inherited: inherited, logger: logger)
        do throws(SystemCallError) {
            try Self.prepare(listeners, setup.configuration)
            scoreboard = try Scoreboard(capacity: 2 * ServerConfiguration.maximumWorkers + 2)
            signals = try SignalChannel()
            var fds: [Int32] = [-1, -1]
            guard pf_pipe2(&fds, O_CLOEXEC | O_NONBLOCK) == 0 else { throw SystemCallError.current("pipe2") }
            bootPipe = (fds[0], fds[1])
        } catch {
            for listener in listeners where listener.origin == .bound { listener.close() }
            throw StartupError(.failure, error.description)
        }
        reporter = ServiceReporter(logger: logger)
        for listener in listeners {
            announce(listener)
        }
    }

    /// Logs a new listener and, when preforkd bound it, hands a copy to systemd's fd store so a
    /// restart finds it again (kept only where the unit sets FileDescriptorStoreMax=).
    private func announce(_ listener: Listener) {
        logger.info(
            "Listening on \(listener.address)",
            metadata: ["listener": "\(listener.name)", "origin": "\(listener.origin.rawValue)"])
        if listener.origin == .bound, setup.configuration.fileDescriptorStore, let address = listener.configured,
            reporter.store(listener.fileDescriptor, name: ListenerAcquisition.storedName(for: address))
        {
            storedInManager.insert(listener.fileDescriptor)
        }
    }

    /// Closes a listener preforkd no longer needs; never an activated one. A socket file is kept
    /// when systemd holds a copy of the socket in its fd store.
    private func release(_ listener: Listener) {
        guard listener.origin != .activated else { return }
        if storedInManager.remove(listener.fileDescriptor) != nil, let address = listener.configured {
            reporter.unstore(name: ListenerAcquisition.storedName(for: address))
        }
        listener.close(unlinkingSocketFile: listener.origin == .bound)
    }

    // MARK: - main loop

    func run() -> PreforkExitCode {
        logger.info("Starting \(targetWorkers) workers", metadata: ["generation": "\(generation)"])
        while true {
            if case .running = state { topUpPool() }
            waitForEvents()
            for signal in signals.drain() { handle(signal) }
            readBootReports()
            reapWorkers()
            if case .running = state { announceReadiness() }
            if case .stopping(let deadline, let killed) = state {
                if workers.isEmpty { break }
                let now = Monotonic.now()
                if !killed && now >= deadline {
                    logger.warning("Graceful timeout passed; killing \(workers.count) workers")
                    signalWorkers(SIGKILL) { _ in true }
                    state = .stopping(deadline: deadline, killed: true)
                } else if !killed {
                    reporter.draining(remainingNs: deadline - now)
                }
            }
            reporter.tick(status: statusLine(), healthy: isHealthy)
        }
        for listener in listeners where listener.origin != .activated {
            // On a stop the store keeps its copy for the next start: close ours, keep the file.
            listener.close(
                unlinkingSocketFile: listener.origin == .bound && !storedInManager.contains(listener.fileDescriptor))
        }
        logger.info("Stopped", metadata: ["connections": "\(totalConnections)"])
        return exitCode
    }

    private func waitForEvents() {
        var timeoutMs: Int32 = 1000
        if let period = reporter.watchdogPeriodNs { timeoutMs = min(timeoutMs, Int32(max(1, period / 2_000_000))) }
        let now = Monotonic.now()
        if case .stopping(let deadline, false) = state {
            timeoutMs = min(timeoutMs, Self.milliseconds(until: deadline, from: now))
        } else if case .running = state, liveCount() < targetWorkers {
            timeoutMs = min(timeoutMs, Self.milliseconds(until: nextSpawnAt, from: now))
        }
        var fds = [
            pollfd(fd: signals.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: bootPipe.read, events: Int16(POLLIN), revents: 0),
        ]
        _ = poll(&fds, nfds_t(fds.count), timeoutMs)
    }

    private static func milliseconds(until deadline: UInt64, from now: UInt64) -> Int32 {
        deadline <= now ? 0 : Int32(min((deadline - now) / 1_000_000 + 1, 1000))
    }

    // MARK: - signals

    private func handle(_ signal: Int32) {
        switch signal {
        case SIGTERM, SIGINT:
            beginStop(graceful: true, signal: signal)
        case SIGQUIT:
            beginStop(graceful: false, signal: signal)
        case SIGHUP:
            reload()
        case SIGTTIN:
            guard case .running = state else { return }
            guard targetWorkers < ServerConfiguration.maximumWorkers else {
                logger.warning("SIGTTIN: already at the maximum of \(ServerConfiguration.maximumWorkers) workers")
                return
            }
            targetWorkers += 1
            logger.info("SIGTTIN: workers \(targetWorkers - 1) → \(targetWorkers)")
        case SIGTTOU:
            guard case .running = state else { return }
            guard targetWorkers > 1 else {
                logger.warning("SIGTTOU: keeping the last worker")
                return
            }
            targetWorkers -= 1
            logger.info("SIGTTOU: workers \(targetWorkers + 1) → \(targetWorkers)")
            retireSurplus()
        default:
            break  // SIGCHLD only wakes the loop; reaping follows.
        }
    }

    private func beginStop(graceful: Bool, signal: Int32) {
        if case .stopping(_, let killed) = state, graceful || killed { return }
        reporter.stopping()
        if graceful {
            let timeout = setup.configuration.gracefulTimeout
            logger.info("\(signalName(signal)): graceful stop; draining \(workers.count) workers (up to \(timeout) s)")
            state = .stopping(deadline: Monotonic.now() + Monotonic.nanoseconds(timeout), killed: false)
            retire { _ in true }
        } else {
            logger.info("\(signalName(signal)): immediate stop")
            state = .stopping(deadline: 0, killed: true)
            signalWorkers(SIGKILL) { _ in true }
        }
    }

    /// Asks the matching workers to finish their connection and exit.
    private func retire(where matches: (WorkerRecord) -> Bool) {
        for (pid, record) in workers where matches(record) && !record.retiring {
            workers[pid]!.retiring = true
            kill(pid, SIGTERM)
        }
    }

    private func signalWorkers(_ signal: Int32, where matches: (WorkerRecord) -> Bool) {
        for (pid, record) in workers where matches(record) { kill(pid, signal) }
    }

    /// TTOU: retire the newest current workers beyond the target.
    private func retireSurplus() {
        let current = workers.values.filter { $0.generation == generation && !$0.retiring }
            .sorted { $0.slot > $1.slot }
        for record in current.prefix(max(0, current.count - targetWorkers)) {
            workers[record.pid]!.retiring = true
            kill(record.pid, SIGTERM)
        }
    }

    // MARK: - reload

    /// SIGHUP: load the setup again; start a new generation with it; retire the old one once
    /// the new one accepts. An invalid setup is logged and the running generation kept; so is a
    /// valid one whose workers cannot boot (the reload is rolled back).
    private func reload() {
        guard case .running = state else { return }
        if pendingReload != nil {
            logger.info("SIGHUP: generation \(generation) is still starting; reloading again once it accepts")
            reloadRequested = true
            return
        }
        let next: ServerSetup
        var newListeners: [Listener] = []
        do {
            next = try loader()
            try next.configuration.validate()
            newListeners = try reconcileListeners(next.configuration)
            try Self.prepare(newListeners, next.configuration)
        } catch {
            for listener in newListeners
            where !listeners.contains(where: { $0.fileDescriptor == listener.fileDescriptor }) {
                listener.close(unlinkingSocketFile: true)
            }
            logger.error("SIGHUP: reload rejected, keeping generation \(generation): \(error)")
            return
        }
        reporter.reloading()
        let added = newListeners.filter { new in !listeners.contains { $0.fileDescriptor == new.fileDescriptor } }
        let removed = listeners.filter { old in !newListeners.contains { $0.fileDescriptor == old.fileDescriptor } }
        pendingReload = PendingReload(
            setup: setup, generation: generation, targetWorkers: targetWorkers,
            listeners: listeners, removed: removed, added: added)
        for listener in added { announce(listener) }
        listeners = newListeners
        setup = next
        lastGeneration += 1
        generation = lastGeneration
        targetWorkers = next.configuration.workers
        nextSpawnAt = 0
        respawnDelayNs = 0
        consecutiveBootFailures = 0
        logger.info("SIGHUP: reloading; starting generation \(generation) with \(targetWorkers) workers")
    }

    /// The new generation of a reload cannot boot: stop it, and go back to the one that serves.
    private func rollBackReload(_ pending: PendingReload, reason: String) {
        logger.error(
            "Reload abandoned: generation \(generation) \(reason); generation \(pending.generation) keeps serving")
        let abandoned = generation
        retire { $0.generation == abandoned }
        for listener in pending.added { release(listener) }
        // The old generation's listeners are all still open: the dropped ones were not closed yet.
        listeners = pending.listeners
        setup = pending.setup
        generation = pending.generation
        targetWorkers = pending.targetWorkers
        pendingReload = nil
        reloadRequested = false
        consecutiveBootFailures = 0
        respawnDelayNs = 0
        nextSpawnAt = 0
        // systemd waits for READY=1 after RELOADING=1: the service is ready, with the old setup.
        reporter.ready(status: "Reload failed (\(reason)); " + statusLine())
    }

    /// The listeners the new configuration wants: kept where the address is unchanged, bound where
    /// new. Activated sockets are always kept.
    private func reconcileListeners(_ configuration: ServerConfiguration) throws(SystemCallError) -> [Listener] {
        if listeners.contains(where: { $0.origin == .activated }) { return listeners }
        var result: [Listener] = []
        var bound: [Listener] = []
        for address in configuration.listen {
            if let existing = listeners.first(where: { $0.configured == address }) {
                result.append(existing)
                continue
            }
            do {
                let listener = try Listener.bind(
                    address, backlog: Int32(configuration.backlog), unixMode: mode_t(configuration.unixMode))
                bound.append(listener)
                result.append(listener)
            } catch {
                for listener in bound { listener.close(unlinkingSocketFile: true) }
                throw error
            }
        }
        return result
    }

    // MARK: - the pool

    private func liveCount() -> Int {
        workers.values.reduce(0) { $0 + ($1.generation == generation && !$1.retiring ? 1 : 0) }
    }

    private func topUpPool() {
        guard Monotonic.now() >= nextSpawnAt else { return }
        while liveCount() < targetWorkers {
            guard spawnWorker() else { return }
        }
    }

    /// Forks one worker of the current generation. False when it could not.
    private func spawnWorker() -> Bool {
        let threads = pf_thread_count()
        guard threads == 1 else {
            logger.critical("Refusing to fork: the supervisor has \(threads) threads (fork is only safe with one)")
            fail()
            return false
        }
        guard let slot = (0..<scoreboard.capacity).first(where: { scoreboard.stage($0) == .free }) else {
            logger.error("No free scoreboard slot; not forking")
            return false
        }
        let child = fork()
        if child < 0 {
            logger.error("\(SystemCallError.current("fork"))")
            delayRespawn()
            return false
        }
        if child == 0 { runWorker(slot: slot) }
        scoreboard.claim(slot, pid: child, generation: generation)
        workers[child] = WorkerRecord(pid: child, slot: slot, generation: generation, startedAt: Monotonic.now())
        logger.debug(
            "Forked worker \(slot + 1)", metadata: ["worker.pid": "\(child)", "worker.generation": "\(generation)"])
        return true
    }

    /// The child side of fork: never returns.
    private func runWorker(slot: Int) -> Never {
        ProcessRole.current = .worker(slot + 1)
        signals.closeInChild()
        close(bootPipe.read)
        // Listeners a pending reload dropped stay open in the supervisor until the old generation
        // is retired; this worker must not keep them alive (they would queue connections nobody
        // accepts once the old generation is gone).
        for listener in pendingReload?.removed ?? [] { close(listener.fileDescriptor) }
        // A worker must not outlive its supervisor, even one killed with SIGKILL.
        _ = pf_set_parent_death_signal(SIGTERM)
        if getppid() != pid { _exit(WorkerExitStatus.stopped.rawValue) }
        _ = pf_set_process_name("preforkd w\(slot + 1)")
        let scoreSlot = scoreboard.slot(slot)
        pf_slot_store_pid(scoreSlot, getpid())
        var workerLogger = logger
        workerLogger[metadataKey: "worker.pid"] = "\(getpid())"
        workerLogger[metadataKey: "worker.generation"] = "\(generation)"
        let context = WorkerContext(workerNumber: slot + 1, generation: generation, logger: workerLogger)
        Self.startWorker(
            setup.handler, listeners: listeners, configuration: setup.configuration,
            context: context, slot: scoreSlot, slotIndex: slot, bootPipe: bootPipe.write)
    }

    private static func startWorker<H: ConnectionHandler>(
        _ handler: H, listeners: [Listener], configuration: ServerConfiguration, context: WorkerContext,
        slot: UnsafeMutablePointer<pf_slot>, slotIndex: Int, bootPipe: Int32
    ) -> Never {
        var worker = Worker(
            handler: handler, listeners: listeners, initialBytes: configuration.initialBytes,
            context: context, slot: SlotWriter(slot: slot), bootPipe: bootPipe, slotIndex: slotIndex)
        worker.run()
    }

    private func readBootReports() {
        var index: UInt32 = 0
        while withUnsafeMutableBytes(of: &index, { read(bootPipe.read, $0.baseAddress, 4) }) == 4 {
            guard let entry = workers.first(where: { $0.value.slot == Int(index) }) else { continue }
            workers[entry.key]!.booted = true
            consecutiveBootFailures = 0
        }
    }

    private func reapWorkers() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            guard let record = workers.removeValue(forKey: pid) else { continue }
            retiredConnections += scoreboard.release(record.slot)
            workerExited(record, status: status)
        }
    }

    private func workerExited(_ record: WorkerRecord, status: Int32) {
        let how = Self.describe(status: status)
        let metadata: Logger.Metadata = ["worker.pid": "\(record.pid)", "worker.generation": "\(record.generation)"]
        if record.retiring {
            logger.debug("Worker \(record.number) exited (\(how))", metadata: metadata)
            if record.generation != generation, !workers.values.contains(where: { $0.generation == record.generation })
            {
                logger.info("Generation \(record.generation) drained")
            }
            return
        }
        guard case .running = state else { return }
        let exitedNormally = (status & 0x7f) == 0
        let exitStatus = (status >> 8) & 0xff
        if !record.booted || (exitedNormally && exitStatus == WorkerExitStatus.bootFailure.rawValue) {
            consecutiveBootFailures += 1
            logger.error(
                "Worker \(record.number) failed to boot (\(how)); \(consecutiveBootFailures) in a row",
                metadata: metadata)
            if consecutiveBootFailures >= Self.maximumBootFailures, let pending = pendingReload,
                workers.values.contains(where: { $0.generation == pending.generation })
            {
                rollBackReload(pending, reason: "failed to boot \(consecutiveBootFailures) times in a row")
                return
            }
            if consecutiveBootFailures >= Self.maximumBootFailures {
                logger.critical("Workers cannot boot: \(consecutiveBootFailures) consecutive failures; giving up")
                fail()
                return
            }
        } else {
            logger.warning("Worker \(record.number) died (\(how)); replacing it", metadata: metadata)
        }
        if Monotonic.now() - record.startedAt < Self.youngDeathNs { delayRespawn() } else { respawnDelayNs = 0 }
    }

    /// Workers die young: wait before forking again, doubling up to 10 s.
    private func delayRespawn() {
        respawnDelayNs = min(max(respawnDelayNs * 2, 100_000_000), 10_000_000_000)
        nextSpawnAt = Monotonic.now() + respawnDelayNs
        logger.info("Respawning in \(respawnDelayNs / 1_000_000) ms")
        if respawnDelayNs == 10_000_000_000 {
            // Workers keep dying young: a crash loop. Let systemd's watchdog policy act now.
            logger.error("Workers are crash-looping")
            reporter.triggerWatchdog()
        }
    }

    /// A fatal runtime failure: kill the pool and exit with a failure status.
    private func fail() {
        exitCode = .failure
        reporter.failed(status: "workers cannot boot", errno: ECHILD)
        state = .stopping(deadline: 0, killed: true)
        signalWorkers(SIGKILL) { _ in true }
    }

    // MARK: - readiness and status

    /// What the watchdog vouches for: the loop turns, and at least one worker lives, and workers
    /// are not dying young in a row.
    private var isHealthy: Bool {
        !workers.isEmpty && consecutiveBootFailures < Self.maximumBootFailures && respawnDelayNs < 10_000_000_000
    }

    /// Once every worker of the current generation has booted: READY=1, and the previous
    /// generation is retired (it drains while the new one already accepts).
    private func announceReadiness() {
        guard announcedGeneration < generation else { return }
        let current = workers.values.filter { $0.generation == generation && !$0.retiring }
        guard current.count >= targetWorkers, current.allSatisfy(\.booted) else { return }
        let old = workers.values.filter { $0.generation != generation && !$0.retiring }.count
        if old > 0 {
            logger.info("Generation \(generation) accepting; retiring \(old) workers of the previous one")
            retire { $0.generation != self.generation }
        }
        if let pending = pendingReload {
            // Workers of the old generation still hold their copies; new ones never see these.
            for listener in pending.removed {
                logger.info("No longer listening on \(listener.address)")
                release(listener)
            }
            pendingReload = nil
        }
        announcedGeneration = generation
        logger.info("Ready: \(current.count) workers accepting", metadata: ["generation": "\(generation)"])
        reporter.ready(status: statusLine())
        if reloadRequested {
            reloadRequested = false
            reload()
        }
    }

    private var totalConnections: UInt64 {
        retiredConnections + scoreboard.summary(of: workers.values.map(\.slot)).connections
    }

    /// A human-readable one-line status (systemd's STATUS=), e.g. "4 idle, 0 busy, 0 starting;
    /// 1200 connections, 35/s; listening on 127.0.0.1:11000". The rate is over the time since the
    /// previous status line (about a second).
    private func statusLine() -> String {
        let summary = scoreboard.summary(of: workers.values.map(\.slot))
        let served = retiredConnections + summary.connections
        let now = Monotonic.now()
        var rate: UInt64 = 0
        if rateSample.at > 0, now > rateSample.at, served >= rateSample.connections {
            rate = (served - rateSample.connections) * 1_000_000_000 / (now - rateSample.at)
        }
        rateSample = (served, now)
        let addresses = listeners.map(\.address).joined(separator: ", ")
        return "\(summary.idle) idle, \(summary.busy) busy, \(summary.starting) starting; "
            + "\(served) connections, \(rate)/s; listening on \(addresses)"
    }

    // MARK: - helpers

    /// Per-listener socket settings every worker inherits: timeouts, and non-blocking mode when
    /// workers wait in epoll over several listeners.
    private static func prepare(_ listeners: [Listener], _ configuration: ServerConfiguration) throws(SystemCallError) {
        for listener in listeners {
            try listener.setTimeouts(receive: configuration.initialTimeout, send: configuration.sendTimeout)
            let flags = fcntl(listener.fileDescriptor, F_GETFL)
            let wanted = listeners.count > 1 ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
            if flags >= 0 && wanted != flags { _ = fcntl(listener.fileDescriptor, F_SETFL, wanted) }
        }
    }

    static func describe(status: Int32) -> String {
        let signal = status & 0x7f
        if signal == 0 { return "exit status \((status >> 8) & 0xff)" }
        return "killed by \(signalName(signal))" + ((status & 0x80) != 0 ? ", core dumped" : "")
    }
}
