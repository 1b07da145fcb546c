internal import CPreforkShims
import Glibc
import Logging

/// The child side of `fork`: everything a worker process does, from the fork to its exit.
///
/// The supervisor calls ``run(_:)`` in the child right after `fork` returns 0; it never returns.
enum WorkerProcess {
    /// What a freshly forked worker needs from its supervisor.
    struct Launch {
        /// The supervisor's pid: a worker whose parent is already gone exits at once.
        let supervisorPID: Int32
        /// Its scoreboard slot (its worker number is slot + 1) and generation.
        let slotIndex: Int
        let slot: UnsafeMutablePointer<pf_slot>
        let generation: Int
        /// The generation's setup: the handler and its configuration.
        let setup: ServerSetup
        /// The listeners it accepts on.
        let listeners: [Listener]
        /// Descriptors of the supervisor's that this process must not keep open: the signalfd,
        /// the boot pipe's read end, and listeners a pending reload dropped (a worker holding
        /// one would keep it queueing connections nobody accepts once the old generation is gone).
        let inheritedToClose: [Int32]
        /// Where the worker says it is about to accept (a byte that wakes the supervisor).
        let bootPipe: Int32
        /// The supervisor's logger, as ``workerLogger(_:generation:)`` makes it for a worker.
        let logger: Logger
    }

    /// `supervisorLogger` for a worker of `generation`: every line it logs carries the worker's
    /// pid and generation (`worker.pid`, `worker.generation`; WORKER_PID and WORKER_GENERATION
    /// in the journal). Made in the supervisor, as a metadata provider read per line: metadata
    /// that each child set at boot cost every worker its first dictionary (~10 page faults).
    static func workerLogger(_ supervisorLogger: Logger, generation: Int) -> Logger {
        var logger = supervisorLogger
        let identity = Logger.MetadataProvider {
            ["worker.pid": "\(ProcessRole.pid)", "worker.generation": "\(generation)"]
        }
        if let existing = logger.handler.metadataProvider {
            logger.handler.metadataProvider = .multiplex([existing, identity])
        } else {
            logger.handler.metadataProvider = identity
        }
        return logger
    }

    static func run(_ launch: Launch) -> Never {
        let number = launch.slotIndex + 1
        ProcessRole.current = .worker(number)
        for fd in launch.inheritedToClose { close(fd) }
        // Before anything else the worker runs, and before the parent-death signal, which a
        // change of credentials clears.
        dropPrivileges(launch)
        // A worker must not outlive its supervisor, even one killed with SIGKILL.
        _ = pf_set_parent_death_signal(SIGTERM)
        if getppid() != launch.supervisorPID { _exit(WorkerExitStatus.stopped.rawValue) }
        _ = pf_set_process_name("preforkd w\(number)")
        pf_slot_store_pid(launch.slot, getpid())
        var logger = launch.logger
        // A worker of a reload's generation logs at that generation's level from the start.
        if let level = launch.setup.logLevel { logger.logLevel = level }
        let configuration = launch.setup.configuration
        ConnectionState.setWriteLimits(
            deadlineNs: Monotonic.nanoseconds(configuration.writeDeadline),
            sendTimeoutNs: Monotonic.nanoseconds(configuration.sendTimeoutPerCall))
        let context = WorkerContext(workerNumber: number, generation: launch.generation, logger: logger)
        start(launch.setup.handler, launch, context: context)
    }

    /// Gives up every capability and any way back to root; a worker that cannot is one no
    /// worker of this setup can get past, so it exits as fatal and the service stops.
    private static func dropPrivileges(_ launch: Launch) {
        do throws(SystemCallError) {
            try Privileges.dropInWorker()
        } catch {
            SlotWriter(slot: launch.slot).recordBootFailure(errno: error.errno.rawValue)
            launch.logger.critical("cannot drop privileges: \(error)")
            _exit(WorkerExitStatus.fatal.rawValue)
        }
    }

    /// Opens the handler's existential once, so the worker loop runs on the concrete type.
    private static func start<Handler: ConnectionHandler>(
        _ handler: Handler, _ launch: Launch, context: WorkerContext
    ) -> Never {
        var worker = Worker(
            handler: handler, listeners: launch.listeners, initialBytes: launch.setup.configuration.initialBytes,
            maxConnections: launch.setup.configuration.maxConnectionsPerWorker,
            initialTimeout: launch.setup.configuration.initialTimeout,
            proxyPolicies: launch.listeners.map { launch.setup.configuration.proxyProtocol(forListenerNamed: $0.name) },
            context: context, slot: SlotWriter(slot: launch.slot), bootPipe: launch.bootPipe)
        worker.run()
    }
}
