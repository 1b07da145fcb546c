// Same contract as floor.c: bind and listen, fork N children; each reports on a boot pipe just
// before it blocks in accept(); once all N have, the parent sends READY=1 to $NOTIFY_SOCKET.
// Glibc only: no Foundation, no packages. Glibc's Swift module lacks accept4, pipe2 and prctl,
// so this uses accept and pipe and sets no parent-death signal: a syscall or two less than C.
import Glibc

func fail(_ message: String, _ status: Int32) -> Never {
    let line = Array("swift-floor: \(message)\n".utf8)
    _ = write(2, line, line.count)
    exit(status)
}

func notifyReady() {
    guard let path = getenv("NOTIFY_SOCKET").map({ Array(String(cString: $0).utf8) }), !path.isEmpty else { return }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard path.count < capacity else { return }
    withUnsafeMutableBytes(of: &address.sun_path) { bytes in
        bytes.copyBytes(from: path)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
    }
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return }
    let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + path.count)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, "READY=1", 7, 0, $0, length) }
    }
    close(fd)
}

var listenAt = "127.0.0.1:0"
var workers = 4
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let word = arguments.next() {
    switch word {
    case "--listen": listenAt = arguments.next() ?? ""
    case "--workers": workers = Int(arguments.next() ?? "") ?? 0
    default: fail("usage: swift-floor --listen HOST:PORT --workers N", 64)
    }
}
guard let colon = listenAt.lastIndex(of: ":"), let port = UInt16(listenAt[listenAt.index(after: colon)...]),
    workers >= 1
else { fail("bad arguments", 64) }
var address = sockaddr_in()
address.sin_family = sa_family_t(AF_INET)
address.sin_port = port.bigEndian
guard inet_pton(AF_INET, String(listenAt[..<colon]), &address.sin_addr) == 1 else { fail("bad host", 64) }
let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
var one: Int32 = 1
setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
let bound = withUnsafePointer(to: &address) {
    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
}
guard bound == 0, listen(listener, 4096) == 0 else { fail("bind \(listenAt): \(String(cString: strerror(errno)))", 69) }
var boot: [Int32] = [-1, -1]
guard pipe(&boot) == 0 else { fail("pipe", 1) }
let parent = getpid()
for _ in 0..<workers {
    let pid = fork()
    if pid < 0 { fail("fork", 1) }
    if pid == 0 {
        close(boot[0])
        if getppid() != parent { _exit(0) }
        var byte: UInt8 = 1
        if write(boot[1], &byte, 1) != 1 { _exit(3) }
        close(boot[1])
        while true {
            let client = accept(listener, nil, nil)
            if client >= 0 { close(client) } else if errno != EINTR && errno != ECONNABORTED { _exit(4) }
        }
    }
}
close(boot[1])
var booted = 0
var bytes = [UInt8](repeating: 0, count: 64)
while booted < workers {
    let count = read(boot[0], &bytes, bytes.count)
    if count > 0 {
        booted += count
    } else if count < 0 && errno == EINTR {
        continue
    } else {
        fail("a worker failed to boot", 1)
    }
}
notifyReady()
while wait(nil as UnsafeMutablePointer<Int32>?) >= 0 || errno != ECHILD {}
