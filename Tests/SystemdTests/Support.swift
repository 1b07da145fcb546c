import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A point in CLOCK_MONOTONIC time that a wait must not pass.
struct Deadline {
    let microseconds: UInt64

    init(seconds: Double) {
        self.microseconds = ServiceManager.monotonicMicroseconds() + UInt64(seconds * 1_000_000)
    }

    var hasPassed: Bool { ServiceManager.monotonicMicroseconds() >= self.microseconds }

    /// Milliseconds left, for poll(2); 0 once passed.
    var remainingMilliseconds: Int32 {
        let now = ServiceManager.monotonicMicroseconds()
        return now >= self.microseconds ? 0 : Int32(min((self.microseconds - now) / 1_000 + 1, 60_000))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func sleepMilliseconds(_ milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1_000, tv_nsec: (milliseconds % 1_000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
}

/// Sets (or, with nil, unsets) environment variables for the duration of `body`, then restores them.
/// Only for tests in the serialized process-environment suite.
@discardableResult
func withEnvironment<T>(_ changes: [String: String?], _ body: () throws -> T) throws -> T {
    var saved: [String: String?] = [:]
    for (name, value) in changes {
        saved[name] = getenv(name).map { String(cString: $0) }
        if let value { setenv(name, value, 1) } else { unsetenv(name) }
    }
    defer {
        for (name, value) in saved {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
    }
    return try body()
}

/// A file's identity, to tell whether two descriptors refer to the same open socket.
func fileIdentity(_ fd: Int32) -> (device: UInt64, inode: UInt64)? {
    var status = stat()
    guard fstat(fd, &status) == 0 else { return nil }
    return (UInt64(status.st_dev), UInt64(status.st_ino))
}

// MARK: - Sockets

/// Creates a socket with FD_CLOEXEC set atomically, so no concurrently spawned child inherits it.
func makeSocket(_ family: Int32, _ type: __socket_type) throws -> Int32 {
    let fd = socket(family, Int32(type.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: errno \(errno)") }
    return fd
}

func bindAddress<Address>(_ fd: Int32, _ address: Address, length: Int? = nil) throws {
    var address = address
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(length ?? MemoryLayout<Address>.size))
        }
    }
    guard result == 0 else { throw TestFailure("bind: errno \(errno)") }
}

/// A TCP socket bound to an ephemeral loopback port, listening unless `listening` is false.
func makeTCPSocket(ipv6: Bool = false, listening: Bool = true) throws -> (fd: Int32, port: UInt16) {
    let fd = try makeSocket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM)
    if ipv6 {
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_addr = in6addr_loopback
        try bindAddress(fd, address)
    } else {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        try bindAddress(fd, address)
    }
    if listening { guard listen(fd, 16) == 0 else { throw TestFailure("listen: errno \(errno)") } }
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    let port = withUnsafeBytes(of: storage) { raw in
        ipv6 ? raw.load(as: sockaddr_in6.self).sin6_port : raw.load(as: sockaddr_in.self).sin_port
    }
    return (fd, UInt16(bigEndian: port))
}

/// A `sockaddr_un` for `path`; a leading "@" means the abstract namespace. Returns the address length.
func unixAddress(_ path: String) -> (sockaddr_un, Int) {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    var bytes = Array(path.utf8)
    if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in bytes.enumerated() { raw[index] = byte }
    }
    let pathOffset = MemoryLayout<sa_family_t>.size
    // Abstract names use exactly their length; paths include the terminating NUL.
    return (address, pathOffset + bytes.count + (bytes.first == 0 ? 0 : 1))
}

/// A unique name for this test process.
func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(getpid())-\(ServiceManager.monotonicMicroseconds())-\(UInt32.random(in: 0...UInt32.max))"
}

// MARK: - A notification receiver, as systemd listens

/// One datagram as received on a notify socket.
struct ReceivedNotification {
    var text: String
    /// The sender's pid from SCM_CREDENTIALS, if the kernel attached it.
    var senderPID: Int32?
    /// Descriptors received with SCM_RIGHTS (the caller closes them).
    var fileDescriptors: [Int32]
}

/// An AF_UNIX SOCK_DGRAM socket in the abstract namespace with SO_PASSCRED set, like PID 1's
/// notification socket.
final class NotifyReceiver {
    let fd: Int32
    /// The value for NOTIFY_SOCKET ("@name").
    let socketAddress: String

    init() throws {
        self.fd = try makeSocket(AF_UNIX, SOCK_DGRAM)
        self.socketAddress = "@" + uniqueName("systemd-tests-notify")
        let (address, length) = unixAddress(self.socketAddress)
        try bindAddress(self.fd, address, length: length)
        var on: Int32 = 1
        guard setsockopt(self.fd, SOL_SOCKET, SO_PASSCRED, &on, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw TestFailure("setsockopt SO_PASSCRED: errno \(errno)")
        }
    }

    deinit { close(self.fd) }

    /// Waits for one datagram until `timeout` seconds have passed; nil when none came.
    func receive(timeout: Double) throws -> ReceivedNotification? {
        let deadline = Deadline(seconds: timeout)
        var poller = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&poller, 1, deadline.remainingMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            guard ready >= 0 else { throw TestFailure("poll: errno \(errno)") }
            if ready == 0 { return nil }
            break
        }
        var data = [UInt8](repeating: 0, count: 4096)
        var control = [UInt64](repeating: 0, count: 64)  // 512 bytes, 8-aligned like CMSG_ALIGN
        let (received, controlLength) = data.withUnsafeMutableBytes { dataBytes in
            control.withUnsafeMutableBytes { controlBytes in
                var vector = iovec(iov_base: dataBytes.baseAddress, iov_len: dataBytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    let received = recvmsg(self.fd, &message, Int32(MSG_DONTWAIT) | 0x4000_0000)  // MSG_CMSG_CLOEXEC
                    return (received, Int(message.msg_controllen))
                }
            }
        }
        guard received >= 0 else { throw TestFailure("recvmsg: errno \(errno)") }
        var notification = ReceivedNotification(
            text: String(decoding: data.prefix(received), as: UTF8.self),
            senderPID: nil,
            fileDescriptors: []
        )
        // Walk the control messages as CMSG_FIRSTHDR/CMSG_NXTHDR do (64-bit Linux layout).
        control.withUnsafeBytes { raw in
            let align = { (length: Int) in (length + 7) & ~7 }
            let headerSize = align(MemoryLayout<cmsghdr>.size)
            var offset = 0
            while offset + headerSize <= controlLength {
                let header = raw.load(fromByteOffset: offset, as: cmsghdr.self)
                let length = Int(header.cmsg_len)
                guard length >= headerSize, offset + length <= controlLength else { break }
                let dataOffset = offset + headerSize
                let dataLength = length - headerSize
                if header.cmsg_level == SOL_SOCKET && header.cmsg_type == 1 {  // SCM_RIGHTS
                    for index in 0..<(dataLength / 4) {
                        notification.fileDescriptors.append(
                            raw.loadUnaligned(fromByteOffset: dataOffset + index * 4, as: Int32.self)
                        )
                    }
                } else if header.cmsg_level == SOL_SOCKET && header.cmsg_type == 2 && dataLength >= 12 {
                    // SCM_CREDENTIALS: struct ucred { pid_t pid; uid_t uid; gid_t gid; }
                    notification.senderPID = raw.loadUnaligned(fromByteOffset: dataOffset, as: Int32.self)
                }
                offset += align(length)
            }
        }
        return notification
    }
}

// MARK: - Child processes

/// How a child process ended, and what it wrote to standard output.
struct ChildResult {
    var status: Int32
    var bytes: [UInt8]
    var output: String { String(decoding: self.bytes, as: UTF8.self) }
    var exitedNormally: Bool { status & 0x7F == 0 }
    var exitCode: Int32 { (status >> 8) & 0xFF }
}

/// Spawns `path` with exactly `environment`, the descriptors in `descriptors` (source → target)
/// and standard output captured; waits for it until `timeout` seconds, then kills it.
func runChild(
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

    // First move every source above the targets: dup2 onto itself would keep FD_CLOEXEC set.
    var high: [Int32] = []
    defer { for fd in high { close(fd) } }
    for descriptor in descriptors {
        let fd = fcntl(descriptor.source, F_DUPFD_CLOEXEC, 200)
        guard fd >= 0 else { throw TestFailure("F_DUPFD_CLOEXEC: errno \(errno)") }
        high.append(fd)
    }

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pair[1], 1)
    for (index, descriptor) in descriptors.enumerated() {
        posix_spawn_file_actions_adddup2(&actions, high[index], descriptor.target)
    }

    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    let envp = environment.map { strdup($0) } + [nil]
    defer {
        for pointer in argv { free(pointer) }
        for pointer in envp { free(pointer) }
    }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, path, &actions, nil, argv, envp)
    close(pair[1])
    guard spawned == 0 else { throw TestFailure("posix_spawn \(path): errno \(spawned)") }

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

/// The absolute path of this test process's executable's directory (the build products directory).
func buildProductsDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(length > 0, "readlink /proc/self/exe")
    let path = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}
