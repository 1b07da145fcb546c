// A helper for SystemdTests: takes the sockets passed through LISTEN_FDS and prints one line per
// socket, then the activation variables as they are left afterwards.
//
//   socket fd=3 name=web family=2 listening=1 cloexec=1 address=127.0.0.1:40000
//   env LISTEN_FDS=<unset> LISTEN_PID=<unset> LISTEN_FDNAMES=<unset>
//   mapped libsystemd=0            (1 once libsystemd.so.0 is loaded)
//   error <description>            (exit status 1)
import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

func environmentValue(_ name: String) -> String {
    getenv(name).map { String(cString: $0) } ?? "<unset>"
}

do {
    for socket in try SocketActivation.takeSockets() {
        let cloexec = fcntl(socket.fileDescriptor.rawValue, F_GETFD) & FD_CLOEXEC != 0
        print(
            "socket fd=\(socket.fileDescriptor.rawValue) name=\(socket.name) family=\(socket.family)"
                + " listening=\(socket.isListeningStream ? 1 : 0) cloexec=\(cloexec ? 1 : 0)"
                + " address=\(socket.localAddress)"
        )
    }
    print(
        "env LISTEN_FDS=\(environmentValue("LISTEN_FDS")) LISTEN_PID=\(environmentValue("LISTEN_PID"))"
            + " LISTEN_FDNAMES=\(environmentValue("LISTEN_FDNAMES"))"
    )
    // RTLD_NOLOAD: a handle only when the library is loaded already, and never a load.
    let loaded = dlopen("libsystemd.so.0", RTLD_NOW | RTLD_NOLOAD)
    print("mapped libsystemd=\(loaded != nil ? 1 : 0)")
    if let loaded { dlclose(loaded) }
} catch {
    print("error \(error)")
    exit(1)
}
