import Glibc
import SystemPackage
import TestSupport
import Testing

@testable import Systemd

/// The non-blocking notification socket against a receiver that reads, and one that does not.
@Suite struct NotificationSocketTests {
    /// A bound datagram socket in the abstract namespace; `read` takes what is queued.
    struct Receiver {
        let name = "preforkd-notify-test-\(UInt32.random(in: 0...UInt32.max))"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)

        init() throws {
            let address = SocketAddress(unixPath: [0] + Array(name.utf8))!
            let bound = address.withUnsafeSockaddr { Glibc.bind(fd, $0, $1) }
            guard bound == 0 else { throw TestFailure("bind: errno \(errno)") }
        }

        func read() -> [String] {
            var texts: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n <= 0 { return texts }
                texts.append(String(decoding: buffer[..<n], as: UTF8.self))
            }
        }
    }

    @Test func sendsOneDatagramPerCallToAnAbstractSocket() throws {
        let receiver = try Receiver()
        defer { close(receiver.fd) }
        let socket = try #require(NotificationSocket(environmentValue: "@" + receiver.name))
        #expect(socket.send([.ready, .status("serving")]) == .sent)
        #expect(receiver.read() == ["READY=1\nSTATUS=serving"])
    }

    @Test func aFullQueueSaysSoInsteadOfBlocking() throws {
        let receiver = try Receiver()
        defer { close(receiver.fd) }
        let socket = try #require(NotificationSocket(environmentValue: "@" + receiver.name))
        var outcomes: [NotificationSocket.Outcome] = []
        for index in 0..<200 { outcomes.append(socket.send([.status("line \(index)")])) }
        #expect(outcomes.contains(.wouldBlock), "the queue holds far fewer than 200 datagrams")
        #expect(outcomes.first == .sent)
        let queued = receiver.read()
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
