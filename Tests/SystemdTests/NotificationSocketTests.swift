import Glibc
import SystemPackage
import TestSupport
import Testing

@testable import Systemd

/// The non-blocking notification socket against a receiver that reads, and one that does not yet.
@Suite struct NotificationSocketTests {
    @Test func sendsOneDatagramPerCallToAnAbstractSocket() throws {
        // Abstract: a leading NUL instead of a path, as systemd's own socket is.
        let name = "preforkd-notify-test-\(UInt32.random(in: 0...UInt32.max))"
        let fd = try makeSocket(AF_UNIX, SOCK_DGRAM)
        defer { close(fd) }
        let address = SocketAddress(unixPath: [0] + Array(name.utf8))!
        #expect(address.withUnsafeSockaddr { Glibc.bind(fd, $0, $1) } == 0)
        let socket = try #require(NotificationSocket(environmentValue: "@" + name))
        #expect(socket.send([.ready, .status("serving")]) == .sent)
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        #expect(n > 0 && String(decoding: buffer[..<n], as: UTF8.self) == "READY=1\nSTATUS=serving")
    }

    @Test func aFullQueueSaysSoInsteadOfBlocking() throws {
        let receiver = try SilentDatagramReceiver()
        let socket = try #require(NotificationSocket(environmentValue: receiver.path))
        var outcomes: [NotificationSocket.Outcome] = []
        for index in 0..<200 { outcomes.append(socket.send([.status("line \(index)")])) }
        #expect(outcomes.contains(.wouldBlock), "the queue holds far fewer than 200 datagrams")
        #expect(outcomes.first == .sent)
        let queued = receiver.drain()
        #expect(queued.count == outcomes.filter { $0 == .sent }.count)
        #expect(socket.send([.ready]) == .sent, "room again once read")
    }

    @Test func unsetEmptyOrUnreachableNamesGiveNoSocket() {
        #expect(NotificationSocket(environmentValue: nil) == nil)
        #expect(NotificationSocket(environmentValue: "") == nil)
        #expect(NotificationSocket(environmentValue: "vsock:2:1234") == nil)
    }

    @Test func aReceiverThatIsGoneIsAFailureNamingTheCall() throws {
        let socket = try #require(NotificationSocket(environmentValue: "/nonexistent/preforkd-notify.sock"))
        guard case .failed(let error) = socket.send([.ready]) else {
            Issue.record("expected a failure")
            return
        }
        #expect(error.errno == .noSuchFileOrDirectory)
        #expect(error.description.hasPrefix("sendmsg NOTIFY_SOCKET: "))
    }
}
