import Glibc
import SystemPackage
import Testing

@testable import Prefork
@testable import Systemd

/// Prefork (a listener's address, a connection's peer) and Systemd (an activated socket's address)
/// print socket addresses through the one formatter, so they agree on the cases they used to
/// disagree on: IPv6 scope ids and abstract unix names.
@Suite struct AddressTextTests {
    /// Both views of one listening socket: as Prefork adopts it, and as socket activation examines it.
    func bothViews(of fd: Int32) throws -> (prefork: String, systemd: String) {
        let listener = Listener(adopting: fd, name: "test", origin: .activated)
        let activated = try SocketActivation.examine(FileDescriptor(rawValue: fd), name: "test")
        return (listener.address, activated.localAddress)
    }

    @Test func abstractNamesWithNULsReadTheSame() throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        // Bound with the whole structure's length, as many programs do: the name is every byte of
        // sun_path after the leading NUL, mostly NULs. Prefork used to stop at the first NUL, Systemd kept the NULs raw.
        var sun = sockaddr_un()
        sun.sun_family = sa_family_t(AF_UNIX)
        let name = Array("prefork-address-\(getpid())".utf8)
        withUnsafeMutableBytes(of: &sun.sun_path) { $0.copyBytes(from: [0] + name) }
        let bound = withUnsafePointer(to: &sun) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try #require(bound == 0)
        try #require(listen(fd, 1) == 0)
        let views = try bothViews(of: fd)
        let padding = String(repeating: "\\x00", count: MemoryLayout.size(ofValue: sun.sun_path) - 1 - name.count)
        #expect(views.prefork == "unix:@prefork-address-\(getpid())" + padding)
        #expect(views.systemd == views.prefork)
    }

    @Test func ipv6ReadsTheSame() throws {
        let listener = try Listener.bind(.ipv6(host: "::1", port: 0), backlog: 1)
        defer { listener.close() }
        let views = try bothViews(of: listener.fileDescriptor)
        #expect(views.prefork.hasPrefix("[::1]:"))
        #expect(views.systemd == views.prefork)
    }

    @Test func aPeerWithAScopeIDShowsIt() {
        // Link-local peers cannot be made on loopback: the address accept4 would capture, by hand.
        var storage = sockaddr_storage()
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                sin6.pointee.sin6_port = UInt16(80).bigEndian
                sin6.pointee.sin6_scope_id = 2
                _ = inet_pton(AF_INET6, "fe80::1", &sin6.pointee.sin6_addr)
            }
        }
        let peer = withUnsafePointer(to: storage) { pointer in
            Connection(
                fileDescriptor: -1, listener: Listener(adopting: -1, name: "test", origin: .bound),
                peerAddress: pointer, peerAddressLength: socklen_t(MemoryLayout<sockaddr_in6>.size)
            ).peer
        }
        #expect(peer == "[fe80::1%2]:80")  // Prefork used to drop the scope id
    }
}
