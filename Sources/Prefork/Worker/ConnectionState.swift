internal import CPreforkShims
import ForwardProtocols
import Glibc

/// The worker's record of its current connection beyond the socket (`pf_connection`): whether
/// the handler detached it, and the destination a PROXY header named.
enum ConnectionState {
    /// Marks the current connection as taken over by its handler.
    static func markDetached() { pf_connection_detach() }

    /// Whether the handler took the current connection over; clears the mark for the next one.
    @inline(__always)
    static func takeDetached() -> Bool { pf_connection_take_detached() != 0 }

    /// Sets the worker's `write-deadline` and the per-call send timeout its connections inherit.
    static func setWriteLimits(deadlineNs: UInt64, sendTimeoutNs: UInt64) {
        let state = pf_connection_current()!
        state.pointee.write_deadline_ns = deadlineNs
        state.pointee.send_timeout_ns = sendTimeoutNs
    }

    /// `write-deadline` in nanoseconds; 0 when off.
    static var writeDeadlineNs: UInt64 { pf_connection_current()!.pointee.write_deadline_ns }

    /// The send timeout a connection has from its listener.
    static var sendTimeoutNs: UInt64 { pf_connection_current()!.pointee.send_timeout_ns }

    /// Forgets any PROXY destination: the next connection on `listener` starts without one.
    static func beginProxied(on listener: Int32) {
        let state = pf_connection_current()!
        state.pointee.proxied_listener = listener
        state.pointee.proxied_local_length = 0
    }

    /// Records a PROXY header's destination for the current connection on the listener given to
    /// ``beginProxied(on:)``.
    static func recordProxiedLocal(_ destination: IPEndpoint) {
        let state = pf_connection_current()!
        state.pointee.proxied_local_length = destination.store(in: &state.pointee.proxied_local)
    }

    /// The destination a PROXY header named for the current connection, when it came on
    /// `listener` (a connection on any other listener never sees it).
    static func proxiedLocal(on listener: Int32) -> SocketAddress? {
        let state = pf_connection_current()!
        guard state.pointee.proxied_listener == listener, state.pointee.proxied_local_length > 0 else { return nil }
        return withUnsafePointer(to: &state.pointee.proxied_local) {
            SocketAddress($0, length: state.pointee.proxied_local_length)
        }
    }
}
