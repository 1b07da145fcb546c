internal import CPreforkShims
import Glibc
import SystemPackage

// The slow path of ``Connection``'s inlinable write, with `write-deadline`: out of line, behind a
// symbol inlinable code may call (the C module is an implementation detail of this one).

/// The rest of a write whose first send did not send it all (`firstResult` bytes, or -1 with
/// `firstErrno`): sends on, retrying short sends and interruptions, within `write-deadline`.
@usableFromInline
func _finishWrite(
    _ fd: Int32, _ bytes: UnsafeRawBufferPointer, firstResult: Int, firstErrno: Int32
) throws(ConnectionError) {
    // When the write began, as worked out at its first short send (0: none yet, or no deadline).
    var started: UInt64 = 0
    defer { if started > 0 { setSendTimeout(fd, nanoseconds: ConnectionState.sendTimeoutNs) } }
    var offset = 0
    var result = firstResult
    var error = Errno(rawValue: firstErrno)
    while true {
        if result >= 0 {
            offset += result
            if offset >= bytes.count { return }
            try afterShortSend(fd, started: &started, sent: offset, total: bytes.count)
        } else if error == .interrupted {
            if StopRequest.current == .immediate { throw .stopRequested }
        } else {
            throw writeFailed(fd, error, started: started, sent: offset, total: bytes.count)
        }
        result = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
        error = Errno(rawValue: result < 0 ? Glibc.errno : 0)
    }
}

/// A send of a write came back short: throws when `write-deadline` has passed, else sets the
/// socket's send timeout to what is left of it. Nothing when the deadline is off.
///
/// A blocking send comes back short only once it has waited its whole send timeout (or a signal
/// cut the wait short), so at the first short send the write began that long ago: `started` is
/// set to then, and the deadline counts from it without reading a clock for every write.
private func afterShortSend(_ fd: Int32, started: inout UInt64, sent: Int, total: Int) throws(ConnectionError) {
    let deadline = ConnectionState.writeDeadlineNs
    guard deadline > 0 else { return }
    let now = pf_monotonic_ns()
    if started == 0 { started = now &- ConnectionState.sendTimeoutNs }
    let elapsed = now &- started
    guard elapsed < deadline else { throw deadlinePassed(fd, sent: sent, total: total) }
    // The rest of the deadline, whole: a later send that times out has then reached it.
    setSendTimeout(fd, nanoseconds: deadline - elapsed)
}

/// The error a failed send of a write stands for. A send timeout is the deadline's after a short
/// send (the timeout was then what was left of it), and on the first send when the send timeout
/// is the deadline itself; otherwise `send-timeout` passed with nothing sent.
private func writeFailed(_ fd: Int32, _ error: Errno, started: UInt64, sent: Int, total: Int) -> ConnectionError {
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
