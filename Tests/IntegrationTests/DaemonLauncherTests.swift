import Foundation
import Glibc
import TestSupport
import Testing

/// The launcher the other suites start daemons with: what a started process gets, as a service
/// manager would give it, and the variations tests ask for.
@Suite struct DaemonLauncherTests {
    /// A field of /proc/PID/status as a number (SigIgn, SigBlk are hexadecimal masks).
    static func statusMask(_ pid: Int32, _ field: String) throws -> UInt64 {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix(field + ":") })
        return try #require(UInt64(line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces), radix: 16))
    }

    static func bit(_ signal: Int32) -> UInt64 { 1 << UInt64(signal - 1) }

    @Test func anUnreapedChildIsAZombieOfItsParent() throws {
        // `sleep 60` takes the shell's place and never reaps the shell's child.
        let daemon = try Daemon(["-c", "sleep 0 & exec sleep 60"], binary: "/bin/sh")
        defer { daemon.stop() }
        try waitUntil("the child to be a zombie of sleep") { ProcessTable.zombies(of: daemon.pid).count == 1 }
        #expect(ProcessTable.children(of: daemon.pid).isEmpty, "children(of:) leaves zombies out")
        #expect(ProcessTable.state(of: daemon.pid) == "S")
    }

    @Test func aLogLineThatNeverComesIsReportedWithTheProcessStateAndTheLogsTail() throws {
        let daemon = try Daemon(["-c", "echo started; exec sleep 60"], binary: "/bin/sh")
        defer { daemon.stop() }
        try daemon.waitForLog("started")
        try waitUntil("sleep to run") {
            (try? String(contentsOfFile: "/proc/\(daemon.pid)/comm", encoding: .utf8)) == "sleep\n"
        }
        let error = #expect(throws: TestFailure.self) { try daemon.waitForLog("never printed", seconds: 0.2) }
        let text = error?.description ?? ""
        #expect(text.contains("log line 'never printed'"), "\(text)")
        #expect(text.contains("pid \(daemon.pid) state S, waiting in "), "\(text)")
        #expect(text.hasSuffix("log:\nstarted"), "\(text)")
    }

    /// The standard signals (1–31) ignored and blocked in `pid`, as masks. (glibc's posix_spawn
    /// leaves its own real-time signals 32 and 33 ignored in every child.)
    static func signals(_ pid: Int32) throws -> (ignored: UInt64, blocked: UInt64) {
        (try statusMask(pid, "SigIgn") & 0x7FFF_FFFF, try statusMask(pid, "SigBlk") & 0x7FFF_FFFF)
    }

    /// Starts `sleep` through the launcher and waits until it runs as `sleep` (past any wrapper).
    static func sleeper(_ configure: (inout [Int32], inout [Int32]) -> Void = { _, _ in }) throws -> Daemon {
        var ignoring: [Int32] = []
        var blocking: [Int32] = []
        configure(&ignoring, &blocking)
        let daemon = try Daemon(["60"], binary: "/bin/sleep", ignoring: ignoring, blocking: blocking)
        do {
            try waitUntil("sleep to run") {
                (try? String(contentsOfFile: "/proc/\(daemon.pid)/comm", encoding: .utf8)) == "sleep\n"
            }
        } catch {
            daemon.stop()
            throw error
        }
        return daemon
    }

    @Test func startsWithDefaultSignalsAndOnlyItsOwnDescriptors() throws {
        let daemon = try Self.sleeper()
        defer { daemon.stop() }
        let signals = try Self.signals(daemon.pid)
        #expect(signals.ignored == 0 && signals.blocked == 0, "\(signals)")
        // Right after exec the dynamic loader opens libraries for a moment: wait for those to go.
        var descriptors: [String] = []
        let settled =
            (try? waitUntil("only descriptors 0, 1 and 2") {
                descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.pid)/fd").sorted()
                return descriptors == ["0", "1", "2"]
            }) != nil
        #expect(settled, "descriptors: \(descriptors)")
        #expect(getpgid(daemon.pid) == daemon.pid, "a process group of its own")
    }

    @Test func ignoredSignalsStayIgnoredPastTheWrapper() throws {
        let daemon = try Self.sleeper { ignoring, _ in ignoring = [SIGCHLD, SIGPIPE] }
        defer { daemon.stop() }
        let signals = try Self.signals(daemon.pid)
        #expect(signals.ignored == Self.bit(SIGCHLD) | Self.bit(SIGPIPE) && signals.blocked == 0, "\(signals)")
    }

    @Test func blockedSignalsAreBlocked() throws {
        let daemon = try Self.sleeper { _, blocking in blocking = [SIGTERM, SIGUSR1] }
        defer { daemon.stop() }
        let signals = try Self.signals(daemon.pid)
        #expect(signals.blocked == Self.bit(SIGTERM) | Self.bit(SIGUSR1) && signals.ignored == 0, "\(signals)")
    }

    @Test func stderrPipeWithoutReaderRaisesSIGPIPEUnlessIgnored() throws {
        let script = "echo lost >&2; echo after"
        let killed = try Daemon(["-c", script], binary: "/bin/sh", standardError: .pipeWithoutReader)
        defer { killed.stop() }
        #expect(try killed.waitForExit() == 128 + SIGPIPE)
        #expect(!killed.log.contains("after"))
        let ignoring = try Daemon(
            ["-c", script], binary: "/bin/sh", standardError: .pipeWithoutReader, ignoring: [SIGPIPE])
        defer { ignoring.stop() }
        #expect(try ignoring.waitForExit() == 0)
        #expect(ignoring.log.contains("after"))
    }

    @Test func stderrPipeNobodyReadsHoldsTheWriterUntilDrained() throws {
        // More than a pipe holds (64 KiB): the writer can only finish once the test reads it all.
        let size = 200_000
        let daemon = try Daemon(
            ["-c", "head -c \(size) /dev/zero >&2; echo done"], binary: "/bin/sh", standardError: .pipeNobodyReads)
        defer { daemon.stop() }
        let readEnd = try #require(daemon.standardErrorReadEnd)
        try waitUntil("the pipe to fill") {
            var available: Int32 = 0
            return ioctl(readEnd, UInt(FIONREAD), &available) == 0 && available >= 65536
        }
        #expect(daemon.isRunning && !daemon.log.contains("done"), "blocked on the full pipe")
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        let deadline = Deadline(seconds: 10)
        while total < size && !deadline.hasPassed {
            var entry = pollfd(fd: readEnd, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, deadline.remainingMilliseconds) > 0 else { break }
            let n = read(readEnd, &buffer, buffer.count)
            guard n > 0 else { break }
            total += n
        }
        #expect(total == size)
        #expect(try daemon.waitForExit() == 0)
        #expect(daemon.log == "done\n")
    }

    @Test func closedStderrIsNoDescriptorAtAll() throws {
        let daemon = try Daemon(
            ["-c", "if [ -e /proc/self/fd/2 ]; then echo open; else echo closed; fi"], binary: "/bin/sh",
            standardError: .closed)
        defer { daemon.stop() }
        #expect(try daemon.waitForExit() == 0)
        #expect(daemon.log == "closed\n")
    }

    @Test func stopKillsAndReaps() throws {
        let daemon = try Self.sleeper()
        let pid = daemon.pid
        daemon.stop()
        var status: Int32 = 0
        #expect(waitpid(pid, &status, WNOHANG) == -1 && errno == ECHILD, "already reaped")
        #expect(!FileManager.default.fileExists(atPath: daemon.directory))
    }
}
