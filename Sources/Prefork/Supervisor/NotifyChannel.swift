internal import CPreforkShims
import SystemPackage
import Glibc

/// The service manager's notification socket, written without ever blocking.
///
/// libsystemd's `sd_notify` blocks once the receiver's queue is full (ten datagrams on a default
/// system): a notify socket nobody reads would stop the supervisor from reaping and respawning.
/// Here a send that would block reports so, and ``ServiceReporter`` decides what to retry.
struct NotifyChannel {
    /// How one send went.
    enum Outcome: Equatable {
        case sent
        /// The receiver's queue is full: try again later.
        case wouldBlock
        case failed(Errno)
    }

    private let fd: Int32
    private let address: sockaddr_un
    private let addressLength: socklen_t

    /// The channel `NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace); nil when
    /// it is unset, empty, or of a kind this channel cannot reach (then nothing is sent, as with
    /// `sd_notify`).
    init?(environmentValue value: String?) {
        guard let value, let first = value.utf8.first, first == UInt8(ascii: "/") || first == UInt8(ascii: "@"),
            value.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        else { return nil }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(value.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            if first == UInt8(ascii: "@") { raw[0] = 0 }  // abstract: a leading NUL, no terminator
        }
        let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
        // An abstract name is exactly its bytes long; a path includes its terminating NUL.
        addressLength = socklen_t(pathOffset + bytes.count + (first == UInt8(ascii: "@") ? 0 : 1))
        self.address = address
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
    }

    /// Sends `text` as one datagram, with `fileDescriptors` attached (SCM_RIGHTS).
    func send(_ text: String, passing fileDescriptors: [Int32] = []) -> Outcome {
        var address = self.address
        let result = text.withCString { pointer in
            withUnsafePointer(to: &address) { addressPointer in
                fileDescriptors.withUnsafeBufferPointer { fds in
                    pf_send_datagram(
                        fd, addressPointer, addressLength, pointer, strlen(pointer), fds.baseAddress,
                        Int32(fds.count))
                }
            }
        }
        if result == 0 { return .sent }
        let error = Errno(rawValue: Glibc.errno)
        return error == .wouldBlock || error == .resourceTemporarilyUnavailable ? .wouldBlock : .failed(error)
    }
}
