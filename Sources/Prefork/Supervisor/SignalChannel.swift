internal import CPreforkShims
import Glibc

/// The supervisor's signals, read from a `signalfd` in its poll loop.
///
/// The signals are blocked for normal delivery, so nothing runs in a signal handler and the
/// supervisor stays a single-threaded loop (gunicorn's arbiter and nginx's master only set flags
/// in their handlers; a signalfd goes one step further and needs no handler at all).
struct SignalChannel {
    /// The signals the supervisor acts on.
    static let handled: [Int32] = [SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD, SIGUSR1, SIGUSR2]

    let fileDescriptor: Int32

    /// Restores the handled signals' default dispositions, blocks them, and opens the signalfd.
    ///
    /// A parent may have left some ignored (`nohup`, a shell's `trap '' …`): an ignored signal is
    /// discarded before a signalfd can read it, and an ignored SIGCHLD even makes the kernel reap
    /// the workers itself, so that none would ever be replaced.
    init() throws(SystemCallError) {
        guard pf_default_signal_dispositions(Self.handled, Int32(Self.handled.count)) == 0 else {
            throw SystemCallError.current("sigaction")
        }
        guard pf_sigmask(SIG_BLOCK, Self.handled, Int32(Self.handled.count)) == 0 else {
            throw SystemCallError.current("sigprocmask")
        }
        let fd = pf_signalfd(Self.handled, Int32(Self.handled.count))
        guard fd >= 0 else { throw SystemCallError.current("signalfd") }
        fileDescriptor = fd
    }

    /// The signals pending now, in arrival order (duplicates of a pending signal are merged by
    /// the kernel, as always).
    func drain() -> [Int32] {
        var signals: [Int32] = []
        while true {
            let signal = pf_signalfd_read(fileDescriptor, nil, nil)
            if signal <= 0 { return signals }
            signals.append(signal)
        }
    }

}

/// The text name of a signal, "SIGTERM".
func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGTERM: "SIGTERM"
    case SIGINT: "SIGINT"
    case SIGQUIT: "SIGQUIT"
    case SIGHUP: "SIGHUP"
    case SIGTTIN: "SIGTTIN"
    case SIGTTOU: "SIGTTOU"
    case SIGCHLD: "SIGCHLD"
    case SIGKILL: "SIGKILL"
    case SIGSEGV: "SIGSEGV"
    case SIGABRT: "SIGABRT"
    case SIGILL: "SIGILL"
    case SIGBUS: "SIGBUS"
    case SIGTRAP: "SIGTRAP"
    case SIGUSR1: "SIGUSR1"
    case SIGUSR2: "SIGUSR2"
    case SIGPIPE: "SIGPIPE"
    default: "signal \(signal)"
    }
}
