import Glibc
import Logging
import Systemd

/// Finds the listeners a new supervisor starts with, in this order:
///
/// 1. sockets from a socket unit (systemd's `LISTEN_FDS`): used as they are, named by their
///    `FileDescriptorName=`; the configured `listen` addresses are then not bound;
/// 2. sockets an earlier run put in systemd's file descriptor store (named `stored-ADDRESS`):
///    reused for the configured addresses they match, so a restart keeps the port and its queue;
/// 3. the remaining configured addresses, bound afresh.
enum ListenerAcquisition {
    /// The FDNAME prefix of listening sockets preforkd hands to systemd's fd store.
    static let storedPrefix = "stored-"

    /// The FDNAME under which the listener bound from `address` is stored: systemd refuses
    /// names with ':' (it separates LISTEN_FDNAMES) or control characters, so those become '_'.
    /// Only compared, never parsed back: the configured address is the key.
    static func storedName(for address: ListenAddress) -> String {
        let escaped = address.description.unicodeScalars.map { scalar -> Character in
            scalar == ":" || scalar.value < 0x20 || scalar.value >= 0x7f ? "_" : Character(scalar)
        }
        return String((storedPrefix + String(escaped)).prefix(255))
    }

    static func acquire(
        _ configuration: ServerConfiguration, inherited: [ActivatedSocket], logger: Logger
    ) throws(StartupError) -> [Listener] {
        for socket in inherited where !socket.isListeningStream {
            throw StartupError(
                .configuration,
                "socket fd \(socket.fileDescriptor.rawValue) (\(socket.name), \(socket.localAddress)) passed by the service manager is not a listening stream socket"
            )
        }
        let stored = inherited.filter { $0.name.hasPrefix(storedPrefix) }
        let activated = inherited.filter { !$0.name.hasPrefix(storedPrefix) }
        if !activated.isEmpty {
            for socket in stored { discardStored(socket) }
            if configuration.listen != [.default] {
                logger.info(
                    "Using the \(activated.count) sockets passed by systemd; the configured listen addresses are not bound"
                )
            }
            return activated.map { Listener(adopting: $0.fileDescriptor.rawValue, name: $0.name, origin: .activated) }
        }
        var listeners: [Listener] = []
        var unused = stored
        do throws(SystemCallError) {
            for address in configuration.listen {
                if let index = unused.firstIndex(where: { $0.name == storedName(for: address) }) {
                    let socket = unused.remove(at: index)
                    listeners.append(
                        Listener(
                            adopting: socket.fileDescriptor.rawValue, name: address.description, origin: .stored,
                            configured: address))
                } else {
                    listeners.append(
                        try Listener.bind(
                            address, backlog: Int32(configuration.backlog), unixMode: mode_t(configuration.unixMode)))
                }
            }
        } catch {
            for listener in listeners where listener.origin == .bound { listener.close() }
            throw StartupError(.unavailable, error.description)
        }
        for socket in unused { discardStored(socket) }
        return listeners
    }

    /// A stored socket the configuration no longer wants: out of the store, closed.
    private static func discardStored(_ socket: ActivatedSocket) {
        _ = try? ServiceManager.notify([.fileDescriptorStoreRemove(name: socket.name)])
        try? socket.fileDescriptor.close()
    }
}
