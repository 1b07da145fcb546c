import SystemPackage
import TestSupport
import Testing

@testable import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Tests that change the process environment (NOTIFY_SOCKET, WATCHDOG_*, JOURNAL_STREAM) run one at
/// a time: the environment is shared by every test in the process.
@Suite(.serialized) struct ProcessEnvironmentTests {
    @Suite struct Notify {
        static let cases: [(ServiceNotification, String)] = ServiceNotificationTests.cases

        @Test(arguments: Self.cases)
        func notificationArrivesAsSent(notification: ServiceNotification, expected: String) throws {
            let receiver = try NotifyReceiver()
            try withEnvironment(["NOTIFY_SOCKET": receiver.path]) { () throws -> Void in
                #expect(ServiceManager.isNotifySocketSet)
                #expect(try ServiceManager.notify([notification]))
            }
            let datagram = try #require(receiver.receive(timeout: 5))
            #expect(datagram.text == expected)
            #expect(datagram.pid == getpid())
        }

        @Test func reloadingSendsMonotonicTimestamp() throws {
            let receiver = try NotifyReceiver()
            let before = ServiceManager.monotonicMicroseconds()
            try withEnvironment(["NOTIFY_SOCKET": receiver.path]) { () throws -> Void in
                #expect(try ServiceManager.notify([.reloading]))
            }
            let after = ServiceManager.monotonicMicroseconds()
            let datagram = try #require(receiver.receive(timeout: 5))
            let lines = datagram.text.split(separator: "\n")
            try #require(lines.count == 2, "\(datagram.text)")
            #expect(lines[0] == "RELOADING=1")
            let stamp = try #require(UInt64(lines[1].dropFirst("MONOTONIC_USEC=".count)))
            #expect(lines[1].hasPrefix("MONOTONIC_USEC=") && before <= stamp && stamp <= after)
        }

        @Test func severalNotificationsShareOneDatagramWithOurCredentials() throws {
            let receiver = try NotifyReceiver()
            try withEnvironment(["NOTIFY_SOCKET": receiver.path]) { () throws -> Void in
                #expect(try ServiceManager.notify([.ready, .status("Serving\n2 workers"), .mainPID(getpid())]))
            }
            let datagram = try #require(receiver.receive(timeout: 5))
            #expect(datagram.text == "READY=1\nSTATUS=Serving 2 workers\nMAINPID=\(getpid())")
            #expect(datagram.pid == getpid())
            #expect(datagram.passed.isEmpty)
            #expect(receiver.receive(timeout: 0.05) == nil, "exactly one datagram")
        }

        @Test func fileDescriptorStorePassesTheSocketItself() throws {
            let receiver = try NotifyReceiver(keepingPassedDescriptors: true)
            let (listener, port) = try makeTCPSocket()
            defer { close(listener) }
            try withEnvironment(["NOTIFY_SOCKET": receiver.path]) { () throws -> Void in
                #expect(
                    try ServiceManager.notify(
                        [.fileDescriptorStore(name: "web")], passing: [FileDescriptor(rawValue: listener)]))
            }
            let datagram = try #require(receiver.receive(timeout: 5))
            #expect(datagram.text == "FDSTORE=1\nFDNAME=web")
            #expect(datagram.pid == getpid())
            try #require(datagram.descriptors.count == 1)
            let received = datagram.descriptors[0]
            #expect(received != listener)
            let ours = try #require(fileIdentity(listener))
            let theirs = try #require(fileIdentity(received))
            #expect(ours.device == theirs.device && ours.inode == theirs.inode, "the same open socket")
            let socket = try SocketActivation.examine(FileDescriptor(rawValue: received), name: "web")
            #expect(socket.localAddress == "127.0.0.1:\(port)")
            #expect(socket.isListeningStream)
        }

        @Test func unsetNotifySocketSendsNothing() throws {
            let receiver = try NotifyReceiver()
            try withEnvironment(["NOTIFY_SOCKET": nil]) { () throws -> Void in
                #expect(!ServiceManager.isNotifySocketSet)
                #expect(try ServiceManager.notify([.ready]) == false)
                #expect(
                    try ServiceManager.notify([.fileDescriptorStore(name: "x")], passing: [.standardInput]) == false)
            }
            #expect(receiver.receive(timeout: 0.2) == nil)
        }

        @Test func unreachableNotifySocketThrows() throws {
            let absent = "@" + uniqueName("systemd-tests-nobody")
            try withEnvironment(["NOTIFY_SOCKET": absent]) { () throws -> Void in
                #expect(throws: SystemCallError("sd_pid_notify", errno: .connectionRefused)) {
                    try ServiceManager.notify([.ready])
                }
            }
            try withEnvironment(["NOTIFY_SOCKET": "/nonexistent/\(uniqueName("dir"))/notify"]) { () throws -> Void in
                let error = #expect(throws: SystemCallError.self) {
                    try ServiceManager.notify([.ready], passing: [.standardOutput])
                }
                #expect(error == SystemCallError("sd_pid_notify_with_fds", errno: .noSuchFileOrDirectory))
                #expect(error?.description == "sd_pid_notify_with_fds: No such file or directory (errno 2)")
            }
        }
    }

    @Suite struct Watchdog {
        @Test func enabledForThisProcess() throws {
            try withEnvironment(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "\(getpid())"]) { () throws -> Void in
                #expect(try ServiceManager.watchdogInterval() == .seconds(2))
                // Not consumed: the variables stay for a later look.
                #expect(getenv("WATCHDOG_USEC") != nil)
            }
        }

        @Test func enabledWithoutPID() throws {
            try withEnvironment(["WATCHDOG_USEC": "1500", "WATCHDOG_PID": nil]) { () throws -> Void in
                #expect(try ServiceManager.watchdogInterval() == .microseconds(1500))
            }
        }

        @Test func disabledForAnotherProcess() throws {
            try withEnvironment(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "\(getpid() + 1)"]) { () throws -> Void in
                #expect(try ServiceManager.watchdogInterval() == nil)
            }
        }

        @Test func disabledWhenUnset() throws {
            try withEnvironment(["WATCHDOG_USEC": nil, "WATCHDOG_PID": "\(getpid())"]) { () throws -> Void in
                #expect(try ServiceManager.watchdogInterval() == nil)
            }
        }

        @Test func malformedIntervalThrows() throws {
            try withEnvironment(["WATCHDOG_USEC": "soon", "WATCHDOG_PID": nil]) { () throws -> Void in
                #expect(throws: SystemCallError("sd_watchdog_enabled", errno: .invalidArgument)) {
                    try ServiceManager.watchdogInterval()
                }
            }
        }
    }

    @Suite struct JournalStream {
        func standardErrorIdentity() throws -> String {
            let identity = try #require(fileIdentity(STDERR_FILENO))
            return "\(identity.device):\(identity.inode)"
        }

        @Test func matchingDeviceAndInode() throws {
            let value = try standardErrorIdentity()
            try withEnvironment(["JOURNAL_STREAM": value]) { () throws -> Void in
                #expect(Journal.isStandardErrorJournalStream())
            }
        }

        @Test(arguments: ["wrong-inode", "0:0", "", "12", "a:b", "1:2:3"])
        func otherValues(kind: String) throws {
            let identity = try #require(fileIdentity(STDERR_FILENO))
            let value = kind == "wrong-inode" ? "\(identity.device):\(identity.inode + 1)" : kind
            try withEnvironment(["JOURNAL_STREAM": value]) { () throws -> Void in
                #expect(!Journal.isStandardErrorJournalStream())
            }
        }

        @Test func unset() throws {
            try withEnvironment(["JOURNAL_STREAM": nil]) { () throws -> Void in
                #expect(!Journal.isStandardErrorJournalStream())
            }
        }
    }
}
