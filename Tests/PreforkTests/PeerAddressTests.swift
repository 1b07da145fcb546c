import ForwardProtocols
import Glibc
import SystemPackage
import Testing

@testable import Prefork

/// The client's address as the worker captures it with accept4, and as `Connection.peer` shows it.
@Suite struct PeerAddressTests {
    /// A captured address built by hand: what accept4 would leave in the worker's buffer.
    struct Captured {
        var storage = sockaddr_storage()
        var length: socklen_t = 0

        func peer() -> String {
            withUnsafePointer(to: storage) { pointer in
                // fd -1: formatting must not need the socket at all.
                Connection(
                    fileDescriptor: -1, listener: Listener(adopting: -1, name: "test", origin: .bound),
                    peerAddress: pointer, peerAddressLength: length
                ).peer
            }
        }

        static func ipv4(_ host: String, _ port: UInt16) -> Captured {
            var captured = Captured()
            withUnsafeMutablePointer(to: &captured.storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    sin.pointee.sin_family = sa_family_t(AF_INET)
                    sin.pointee.sin_port = port.bigEndian
                    #expect(inet_pton(AF_INET, host, &sin.pointee.sin_addr) == 1)
                }
            }
            captured.length = socklen_t(MemoryLayout<sockaddr_in>.size)
            return captured
        }

        static func ipv6(_ host: String, _ port: UInt16) -> Captured {
            var captured = Captured()
            withUnsafeMutablePointer(to: &captured.storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    sin6.pointee.sin6_family = sa_family_t(AF_INET6)
                    sin6.pointee.sin6_port = port.bigEndian
                    #expect(inet_pton(AF_INET6, host, &sin6.pointee.sin6_addr) == 1)
                }
            }
            captured.length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            return captured
        }

        /// A unix address; `path` nil is an unnamed client socket (only the family is returned).
        static func unix(_ path: [UInt8]?) -> Captured {
            var captured = Captured()
            let pathOffset = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)!
            withUnsafeMutablePointer(to: &captured.storage) {
                $0.withMemoryRebound(to: sockaddr_un.self, capacity: 1) { sun in
                    sun.pointee.sun_family = sa_family_t(AF_UNIX)
                    withUnsafeMutableBytes(of: &sun.pointee.sun_path) { raw in
                        if let path { raw.copyBytes(from: path) }
                    }
                }
            }
            captured.length = socklen_t(pathOffset + (path?.count ?? 0))
            return captured
        }
    }

    @Test func ipv4IsAddressColonPort() {
        #expect(Captured.ipv4("192.0.2.7", 54321).peer() == "192.0.2.7:54321")
    }

    @Test func ipv6IsBracketedAddressColonPort() {
        #expect(Captured.ipv6("2001:db8::1", 443).peer() == "[2001:db8::1]:443")
        #expect(Captured.ipv6("::ffff:127.0.0.1", 8080).peer() == "[::ffff:127.0.0.1]:8080")
    }

    @Test func unixPeersAreNamedUnnamedOrAbstract() {
        #expect(Captured.unix(nil).peer() == "unix:")
        #expect(Captured.unix(Array("/run/client.sock".utf8) + [0]).peer() == "unix:/run/client.sock")
        #expect(Captured.unix([0] + Array("abstract-name".utf8)).peer() == "unix:@abstract-name")
    }

    @Test func anEmptyCaptureIsUnknown() {
        #expect(Captured().peer() == "unknown")
    }

    @Test func withoutACaptureTheKernelIsAsked() {
        // fd -1: getpeername fails, which is what "unknown" reports.
        let connection = Connection(fileDescriptor: -1, listener: Listener(adopting: -1, name: "test", origin: .bound))
        #expect(connection.peer == "unknown")
    }

    /// A listener on an ephemeral 127.0.0.1 port whose accepts give up after 5 s: a failing
    /// accept must not hang the suite.
    func loopbackListener() throws -> Listener {
        let listener = try Listener.bind(.ipv4(host: "127.0.0.1", port: 0), backlog: 4)
        try listener.setTimeouts(receive: 5, send: 5)
        return listener
    }

    /// Accepts the next connection as a worker does: accept4 writes the client's address straight
    /// into a scoreboard slot (of the board returned), which the connection then reads.
    func acceptIntoSlot(_ listener: Listener) throws -> (board: Scoreboard, fd: Int32, connection: Connection) {
        let board = try Scoreboard(capacity: 1)
        let peer = PeerAddressBuffer.inSlot(board.slot(0))
        let fd = try acceptConnection(on: listener.fileDescriptor, peer: peer)
        let connection = Connection(
            fileDescriptor: fd, listener: listener,
            peerAddress: UnsafePointer(peer.storage), peerAddressLength: peer.length.pointee)
        return (board, fd, connection)
    }

    /// Connects a TCP client to `listener`; returns the client socket and its own address as text.
    func connectClient(to listener: Listener) -> (fd: Int32, address: String) {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #expect(client >= 0)
        var server = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &server) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener.fileDescriptor, $0, &length) }
        }
        let rc = withUnsafePointer(to: &server) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
        }
        #expect(rc == 0)
        return (client, (try? SocketAddress.local(of: FileDescriptor(rawValue: client)).get())?.description ?? "?")
    }

    @Test func acceptCapturesTheClientAddress() throws {
        let listener = try loopbackListener()
        defer { listener.close() }
        let client = connectClient(to: listener)
        defer { close(client.fd) }
        let (board, fd, connection) = try acceptIntoSlot(listener)
        defer { close(fd) }
        #expect(connection.peer == client.address)
        #expect(board.peer(0) == client.address, "the supervisor reads the same address")
        #expect(try connection.peer == SocketAddress.peer(of: FileDescriptor(rawValue: fd)).get().description)
    }

    @Test func aClientThatResetStillHasItsAddress() throws {
        let listener = try loopbackListener()
        defer { listener.close() }
        let client = connectClient(to: listener)
        // Close with SO_LINGER 0: the client sends a reset instead of a FIN.
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(client.fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(client.fd)
        let (_, fd, connection) = try acceptIntoSlot(listener)
        defer { close(fd) }
        var byte: UInt8 = 0
        #expect(read(fd, &byte, 1) < 0 && errno == ECONNRESET)
        // getpeername fails once the peer reset: the log line used to say "unknown".
        #expect(throws: Errno.socketNotConnected) { try SocketAddress.peer(of: FileDescriptor(rawValue: fd)).get() }
        #expect(connection.peer == client.address)
    }

    @Test func theAddressesAreTheAcceptedPeerAndTheSocketsOwnUnlessAProxyHeaderNamedOthers() throws {
        let listener = try loopbackListener()
        defer { listener.close() }
        let client = connectClient(to: listener)
        defer { close(client.fd) }
        let (_, fd, connection) = try acceptIntoSlot(listener)
        defer { close(fd) }
        #expect(connection.clientAddress.description == client.address)
        #expect(connection.localAddress.description == listener.address)
        // A PROXY header's destination replaces the socket's own, for that listener only.
        ConnectionState.beginProxied(on: -2)
        ConnectionState.recordProxiedLocal(
            IPEndpoint(address: try #require(IPAddress("192.0.2.80")), port: 443))
        #expect(connection.localAddress.description == listener.address, "a header of another listener's")
        ConnectionState.beginProxied(on: listener.fileDescriptor)
        #expect(connection.localAddress.description == listener.address, "none yet on this one")
        ConnectionState.recordProxiedLocal(
            IPEndpoint(address: try #require(IPAddress("192.0.2.80")), port: 443))
        #expect(connection.localAddress.description == "192.0.2.80:443")
        ConnectionState.beginProxied(on: -1)
    }
}
