import Glibc

/// What waiting for events on one descriptor came to (see ``waitForEvents(_:on:until:)``).
package enum DescriptorWait: Equatable {
    /// The descriptor is ready: poll's reported events.
    case ready(Int16)
    /// The deadline passed first.
    case deadlinePassed
    /// The worker was asked to stop at once while it waited.
    case stopRequested
    /// poll itself failed.
    case failed(SystemCallError)
}

/// Waits until `fd` reports one of `events` (or an error or hang-up), up to `deadline`
/// (monotonic ns). A signal that interrupts the wait resumes it, unless it asked the worker to
/// stop at once: a graceful stop lets the current connection's wait go on.
package func waitForEvents(_ events: Int16, on fd: Int32, until deadline: UInt64) -> DescriptorWait {
    var entry = pollfd(fd: fd, events: events, revents: 0)
    while true {
        let now = Monotonic.now()
        guard now < deadline else { return .deadlinePassed }
        let ready = poll(&entry, 1, Int32(min((deadline - now) / 1_000_000 + 1, UInt64(Int32.max))))
        if ready > 0 { return .ready(entry.revents) }
        if ready == 0 { continue }
        guard Glibc.errno == EINTR else { return .failed(SystemCallError.current("poll")) }
        if StopRequest.current == .immediate { return .stopRequested }
    }
}
