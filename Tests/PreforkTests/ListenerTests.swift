import Glibc
import Testing

@testable import Prefork

@Suite struct ListenerTests {
    @Test func portZeroBindsAnEphemeralPortAndReportsIt() throws {
        let listener = try Listener.bind(.ipv4(host: "127.0.0.1", port: 0), backlog: 16)
        defer { listener.close() }
        #expect(listener.address.hasPrefix("127.0.0.1:"))
        #expect(!listener.address.hasSuffix(":0"))
        #expect(listener.origin == .bound)
        #expect(fcntl(listener.fileDescriptor, F_GETFD) & FD_CLOEXEC != 0)
    }

    @Test func ipv6LoopbackBinds() throws {
        let listener = try Listener.bind(.ipv6(host: "::1", port: 0), backlog: 16)
        defer { listener.close() }
        #expect(listener.address.hasPrefix("[::1]:"))
    }

    @Test func addressInUseNamesTheAddressAndErrno() throws {
        let first = try Listener.bind(.ipv4(host: "127.0.0.1", port: 0), backlog: 16)
        defer { first.close() }
        let port = UInt16(first.address.split(separator: ":").last!)!
        #expect {
            try Listener.bind(.ipv4(host: "127.0.0.1", port: port), backlog: 16)
        } throws: { error in
            "\(error)" == "bind 127.0.0.1:\(port): Address already in use (errno 98)"
        }
    }

    @Test func unixSocketIsCreatedWithItsModeAndRemovedOnClose() throws {
        let path = "/tmp/preforkd-test-\(getpid())-mode.sock"
        let listener = try Listener.bind(.unix(path: path), backlog: 16, unixMode: 0o600)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(listener.address == "unix:\(path)")
        listener.close()
        #expect(access(path, F_OK) != 0)
    }

    @Test func staleUnixSocketIsReplacedButALiveOneAndAFileAreRefused() throws {
        let path = "/tmp/preforkd-test-\(getpid())-stale.sock"
        defer { unlink(path) }
        // A stale socket: bound, then its process "died" (closed without unlinking).
        let stale = try Listener.bind(.unix(path: path), backlog: 1)
        close(stale.fileDescriptor)
        let replacement = try Listener.bind(.unix(path: path), backlog: 1)
        // A live one: refused, and it keeps working.
        #expect {
            try Listener.bind(.unix(path: path), backlog: 1)
        } throws: { "\($0)".contains("another process is listening") }
        replacement.close()
        // A regular file is never removed.
        let fd = open(path, O_CREAT | O_WRONLY, 0o600)
        close(fd)
        #expect {
            try Listener.bind(.unix(path: path), backlog: 1)
        } throws: { "\($0)".contains("exists and is not a socket") }
        #expect(access(path, F_OK) == 0)
    }
}

@Suite struct ListenerIdentityTests {
    @Test func listenersAreEqualWhenTheyNameTheSameSocket() {
        let a = Listener(adopting: 7, name: "public", origin: .activated)
        #expect(a == a)
        #expect(a == Listener(adopting: 7, name: "public", origin: .activated))
        #expect(a != Listener(adopting: 8, name: "public", origin: .activated))
        #expect(a != Listener(adopting: 7, name: "admin", origin: .activated))
    }

    @Test func copiesShareOneListener() {
        let a = Listener(adopting: 7, name: "public", origin: .activated)
        let copies = [a, a]
        #expect(copies.allSatisfy { $0 === a })
    }
}
