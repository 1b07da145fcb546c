/// How a worker process ended, decoded once from `waitpid(2)`'s status word.
enum WaitStatus: Equatable, CustomStringConvertible {
    /// It called `exit`/`_exit` with this status.
    case exited(Int32)
    /// A signal ended it (with a core dump when `coreDumped`).
    case killed(signal: Int32, coreDumped: Bool)

    /// Decodes a status word as `waitpid` fills it in (the WIFEXITED / WTERMSIG macros).
    init(rawValue status: Int32) {
        let signal = status & 0x7f
        if signal == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .killed(signal: signal, coreDumped: (status & 0x80) != 0)
        }
    }

    /// The worker served its share of connections and made way for a fresh one.
    var isRecycled: Bool { self == .exited(WorkerExitStatus.recycled.rawValue) }

    /// The worker found the service cannot run (``WorkerExitStatus/fatal``), or lost its
    /// listener (``WorkerExitStatus/listenerFailure``, which no other worker could get past
    /// either).
    var isFatal: Bool {
        self == .exited(WorkerExitStatus.fatal.rawValue) || self == .exited(WorkerExitStatus.listenerFailure.rawValue)
    }

    /// The worker gave up before serving (``WorkerExitStatus/bootFailure``).
    var isBootFailure: Bool { self == .exited(WorkerExitStatus.bootFailure.rawValue) }

    /// "exit status 3", "killed by SIGSEGV, core dumped".
    var description: String {
        switch self {
        case .exited(let code): "exit status \(code)"
        case .killed(let signal, let core): "killed by \(signalName(signal))" + (core ? ", core dumped" : "")
        }
    }
}
