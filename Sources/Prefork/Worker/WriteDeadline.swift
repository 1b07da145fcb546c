internal import CPreforkShims
import Glibc
import SystemPackage

// `write-deadline`, for ``Connection``'s inlinable write: the clock and the socket option, behind
// symbols inlinable code may call (the C module is an implementation detail of this one).

/// When a write started, on the coarse monotonic clock; 0 when `write-deadline` is off.
@usableFromInline
func _writeStarted() -> UInt64 {
    ConnectionState.writeDeadlineNs > 0 ? pf_monotonic_coarse_ns() : 0
}

/// A send of a write that began at `started` came back short: throws when `write-deadline` has
/// passed, else lowers the socket's send timeout to what is left of it.
@usableFromInline
func _lowerSendTimeout(_ fd: Int32, started: UInt64, sent: Int, total: Int) throws(ConnectionError) {
    let elapsed = pf_monotonic_coarse_ns() &- started
    let deadline = ConnectionState.writeDeadlineNs
    guard elapsed < deadline else { throw deadlinePassed(fd, sent: sent, total: total) }
    setSendTimeout(fd, nanoseconds: min(deadline - elapsed, ConnectionState.sendTimeoutNs))
}

/// Puts back the send timeout the connection had from its listener.
@usableFromInline
func _restoreSendTimeout(_ fd: Int32) { setSendTimeout(fd, nanoseconds: ConnectionState.sendTimeoutNs) }

/// The error a failed send of a write stands for: a send timeout once `write-deadline` has
/// passed is the deadline's.
@usableFromInline
func _writeFailed(_ fd: Int32, _ error: Errno, started: UInt64, sent: Int, total: Int) -> ConnectionError {
    let failure = ConnectionError(writeError: error)
    if failure == .timedOut, started > 0, pf_monotonic_coarse_ns() &- started >= ConnectionState.writeDeadlineNs {
        return deadlinePassed(fd, sent: sent, total: total)
    }
    return failure
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
