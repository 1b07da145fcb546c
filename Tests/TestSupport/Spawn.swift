import Foundation
import Glibc

/// Starts programs the way a service manager does: every signal at its default disposition and
/// none blocked (unless asked), in a process group of their own, with exactly the descriptors
/// given and no other descriptor of the test process (many tests run at once in it).
public enum Spawn {
    /// What a child's descriptor `target` becomes: a copy of `source`, or closed when nil.
    public typealias Descriptor = (target: Int32, source: Int32?)

    /// Spawns `path` with `arguments`, exactly `environment` ("NAME=value"), `descriptors` set up
    /// and `blocked` signals blocked. Descriptors 0–2 not named are inherited; every other is closed.
    public static func start(
        _ path: String,
        _ arguments: [String],
        environment: [String],
        descriptors: [Descriptor] = [],
        blocked: [Int32] = []
    ) throws -> pid_t {
        // First move every source above the targets: dup2 onto itself would keep FD_CLOEXEC set,
        // and a later dup2 could overwrite a source still needed.
        var high: [Int32: Int32] = [:]
        defer { for fd in high.values { close(fd) } }
        for case (_, let source?) in descriptors where high[source] == nil {
            let fd = fcntl(source, F_DUPFD_CLOEXEC, 200)
            guard fd >= 0 else { throw TestFailure("F_DUPFD_CLOEXEC \(source): errno \(errno)") }
            high[source] = fd
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, source) in descriptors {
            if let source {
                posix_spawn_file_actions_adddup2(&actions, high[source]!, target)
            } else {
                posix_spawn_file_actions_addclose(&actions, target)
            }
        }
        let targets = Set(descriptors.map(\.target))
        let lowestToClose = max(3, (targets.max() ?? 0) + 1)
        for fd in 3..<lowestToClose where !targets.contains(fd) { posix_spawn_file_actions_addclose(&actions, fd) }
        try closeEverything(from: lowestToClose, in: &actions)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in 1...64 where signal != SIGKILL && signal != SIGSTOP { sigaddset(&defaults, Int32(signal)) }
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in blocked { sigaddset(&mask, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup($0) } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw TestFailure("posix_spawn \(path): \(String(cString: strerror(spawned)))") }
        return pid
    }

    /// The exit status of `pid` as a shell reports it (128+N for signal N), nil while it runs.
    /// Reaps it.
    public static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(pid, &status, WNOHANG) } while result < 0 && errno == EINTR
        guard result == pid else { return nil }
        return decode(status)
    }

    /// Waits up to `seconds` for `pid` to end and reaps it; nil when it still runs.
    public static func wait(_ pid: pid_t, seconds: Double) -> Int32? {
        let deadline = Deadline(seconds: seconds)
        while true {
            if let status = reap(pid) { return status }
            if deadline.hasPassed { return nil }
            sleepMilliseconds(5)
        }
    }

    /// A wait status as a shell reports it: the exit code, or 128+N for signal N.
    public static func decode(_ status: Int32) -> Int32 {
        status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
    }

    /// posix_spawn_file_actions_addclosefrom_np (glibc 2.34), looked up at run time: Glibc's
    /// Swift module does not declare it.
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static func closeEverything(from lowest: Int32, in actions: inout posix_spawn_file_actions_t) throws {
        if let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
            let result = addCloseFrom(&actions, lowest)
            guard result == 0 else { throw TestFailure("addclosefrom_np: errno \(result)") }
            return
        }
        // An older C library: close what is open now (racy with other threads, but only a fallback).
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for fd in open.compactMap(Int32.init) where fd >= lowest { posix_spawn_file_actions_addclose(&actions, fd) }
    }

    /// A pipe whose two ends are close-on-exec (set before any other spawn of ours could see them:
    /// every spawn closes the descriptors it was not given).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard Glibc.pipe(&fds) == 0 else { throw TestFailure("pipe: errno \(errno)") }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }
}

/// How a child process ended, and what it wrote to standard output.
public struct ChildResult: Sendable {
    /// The raw wait status.
    public var status: Int32
    public var bytes: [UInt8]
    public var output: String { String(decoding: self.bytes, as: UTF8.self) }
    public var exitedNormally: Bool { status & 0x7F == 0 }
    public var exitCode: Int32 { (status >> 8) & 0xFF }
}

/// Spawns `path` with exactly `environment`, the descriptors in `descriptors` (source → target)
/// and standard output captured; waits for it until `timeout` seconds, then kills it and throws.
public func runChild(
    _ path: String,
    _ arguments: [String],
    environment: [String],
    descriptors: [(source: Int32, target: Int32)] = [],
    timeout: Double = 10
) throws -> ChildResult {
    var pair: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        throw TestFailure("socketpair: errno \(errno)")
    }
    defer { close(pair[0]) }
    let pid: pid_t
    do {
        pid = try Spawn.start(
            path, arguments, environment: environment,
            descriptors: [(1, pair[1])] + descriptors.map { ($0.target, $0.source) })
        close(pair[1])
    } catch {
        close(pair[1])
        throw error
    }

    var output: [UInt8] = []
    let deadline = Deadline(seconds: timeout)
    var buffer = [UInt8](repeating: 0, count: 4096)
    var timedOut = false
    reading: while true {
        var poller = pollfd(fd: pair[0], events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, deadline.remainingMilliseconds)
        if ready < 0 && errno == EINTR { continue }
        if ready <= 0 {
            timedOut = true
            break reading
        }
        let count = read(pair[0], &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break reading }
        output += buffer.prefix(count)
    }
    if timedOut { kill(pid, SIGKILL) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    if timedOut { throw TestFailure("\(path) did not finish within \(timeout) s") }
    return ChildResult(status: status, bytes: output)
}
