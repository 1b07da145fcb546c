#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
import SystemPackage

/// The service manager's notification socket (`NOTIFY_SOCKET`), written without ever blocking.
///
/// ``ServiceManager/notify(_:)`` goes through libsystemd's `sd_notify`, which blocks once the
/// receiver's queue is full (ten datagrams on a default system): a process that must keep
/// working while the manager does not read — a supervisor reaping and respawning workers — sends
/// through this instead, and decides itself what to keep for later.
public struct NotificationSocket {
    /// How one send went.
    public enum Outcome: Equatable, Sendable {
        /// The manager has the datagram.
        case sent
        /// Its queue is full: send again later.
        case wouldBlock
        /// Sending failed for good (the socket is gone, the datagram too large…).
        case failed(SystemCallError)
    }

    private let socket: FileDescriptor
    private let address: SocketAddress

    /// The socket `NOTIFY_SOCKET` names: a path, or `@name` in the abstract namespace. Nil when
    /// the variable is unset or empty, or names a kind of socket this type cannot reach (then
    /// nothing is sent, as with `sd_notify`), or when no socket can be made.
    public init?() {
        self.init(environmentValue: Environment.value("NOTIFY_SOCKET"))
    }

    /// The socket `value` names, as ``init()`` reads `NOTIFY_SOCKET`.
    public init?(environmentValue value: String?) {
        guard let value, let first = value.utf8.first else { return nil }
        var bytes = Array(value.utf8)
        switch first {
        case UInt8(ascii: "/"): break
        case UInt8(ascii: "@"): bytes[0] = 0  // abstract: a leading NUL, exactly this long
        default: return nil
        }
        guard let address = SocketAddress(unixPath: bytes),
            case .success(let socket) = FileDescriptor.socket(family: AF_UNIX, type: Int32(SOCK_DGRAM.rawValue))
        else { return nil }
        self.address = address
        self.socket = socket
    }

    /// Sends `notifications` as one datagram, with `descriptors` attached (for
    /// ``ServiceNotification/fileDescriptorStore(name:)``), without waiting.
    public func send(_ notifications: [ServiceNotification], passing descriptors: [FileDescriptor] = [])
        -> Outcome
    {
        var text = notifications.map(\.assignment).joined(separator: "\n")
        let result = text.withUTF8 { bytes in
            socket.sendDatagram(UnsafeRawBufferPointer(bytes), to: address, passing: descriptors, waiting: false)
        }
        switch result {
        case .success: return .sent
        case .failure(let errno) where errno == .wouldBlock || errno == .resourceTemporarilyUnavailable:
            return .wouldBlock
        case .failure(let errno): return .failed(SystemCallError("sendmsg", "NOTIFY_SOCKET", errno: errno))
        }
    }
}
