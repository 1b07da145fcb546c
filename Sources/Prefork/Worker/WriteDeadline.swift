internal import CPreforkShims
import Glibc
import SystemPackage

// `write-deadline`, for ``Connection``'s inlinable write: the clock and the socket option, behind
// symbols inlinable code may call (the C module is an implementation detail of this one).

/// A send of a write came back short: throws when `write-deadline` has passed, else sets the
/// socket's send timeout to what is left of it. Nothing when the deadline is off.
///
/// A blocking send comes back short only once it has waited its whole send timeout (or a signal
/// cut the wait short), so at the first short send the write began that long ago: `started` is
/// set to then, and the deadline counts from it without reading a clock for every write.
@usableFromInline
func _afterShortSend(_ fd: Int32, started: inout UInt64, sent: Int, total: Int) throws(ConnectionError) {
    let deadline = ConnectionState.writeDeadlineNs
    guard deadline > 0 else { return }
    let now = pf_monotonic_ns()
    if started == 0 { started = now &- ConnectionState.sendTimeoutNs }
    let elapsed = now &- started
    guard elapsed < deadline else { throw deadlinePassed(fd, sent: sent, total: total) }
    // The rest of the deadline, whole: a later send that times out has then reached it.
    setSendTimeout(fd, nanoseconds: deadline - elapsed)
}

/// Puts back the send timeout the connection had from its listener.
@usableFromInline
func _restoreSendTimeout(_ fd: Int32) { setSendTimeout(fd, nanoseconds: ConnectionState.sendTimeoutNs) }

/// The error a failed send of a write stands for. A send timeout is the deadline's after a short
/// send (the timeout was then what was left of it), and on the first send when the send timeout
/// is the deadline itself; otherwise `send-timeout` passed with nothing sent.
@usableFromInline
func _writeFailed(_ fd: Int32, _ error: Errno, started: UInt64, sent: Int, total: Int) -> ConnectionError {
    let failure = ConnectionError(writeError: error)
    let deadline = ConnectionState.writeDeadlineNs
    guard failure == .timedOut, deadline > 0 else { return failure }
    guard started > 0 || ConnectionState.sendTimeoutNs >= deadline else { return failure }
    return deadlinePassed(fd, sent: sent, total: total)
}

/// The deadline's error, with the socket set to reset on close: what the client has not read yet
/// is dropped, rather than left in the kernel for it to trickle out.
private func deadlinePassed(_ fd: Int32, sent: Int, total: Int) -> ConnectionError {
    var abort = linger(l_onoff: 1, l_linger: 0)
    _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort, socklen_t(MemoryLayout<linger>.size))
    return .writeDeadlinePassed(sent: sent, total: total)
}

private func setSendTimeout(_ fd: Int32, nanoseconds: UInt64) {
    // Never zero: a zero timeval means no timeout at all.
    let microseconds = max(1, nanoseconds / 1000)
    var value = timeval(tv_sec: Int(microseconds / 1_000_000), tv_usec: Int(microseconds % 1_000_000))
    _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
}
