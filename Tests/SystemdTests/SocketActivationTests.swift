import TestSupport
import Testing

@testable import Systemd

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Socket activation for real: the sockets sit at fd 3, 4, … of a child process whose LISTEN_PID
/// is its own pid, as systemd passes them. The child (SystemdProbe) prints what it took.
@Suite struct SocketActivationTests {
    /// One "socket …" line of the probe's output.
    struct ProbedSocket: Equatable {
        var fd: Int32
        var name: String
        var family: Int32
        var listening: Bool
        var cloexec: Bool
        var address: String
    }

    struct Probe {
        var sockets: [ProbedSocket] = []
        var environment: [String: String] = [:]
        /// Whether libsystemd was loaded once the sockets were taken.
        var mapsLibsystemd: Bool?
        var error: String?
        var exitCode: Int32
    }

    static var probePath: String { Binaries.systemdProbe }

    /// Runs the probe with `sockets` at fd 3, 4, …; through `sh` so that LISTEN_PID is the probe's pid,
    /// unless `listenPID` is given. `listenFDs` overrides LISTEN_FDS; "" leaves it unset.
    func probe(
        _ sockets: [Int32],
        names: String? = nil,
        listenFDs: String? = nil,
        listenPID: String? = nil
    ) throws -> Probe {
        var environment = ["PATH=/usr/bin:/bin"]
        if listenFDs != "" { environment.append("LISTEN_FDS=\(listenFDs ?? String(sockets.count))") }
        if let names { environment.append("LISTEN_FDNAMES=\(names)") }
        let descriptors = sockets.enumerated().map { (source: $1, target: Int32(3 + $0)) }
        let result: ChildResult
        if let listenPID {
            environment.append("LISTEN_PID=\(listenPID)")
            result = try runChild(Self.probePath, [], environment: environment, descriptors: descriptors)
        } else {
            result = try runChild(
                "/bin/sh",
                ["-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"", "sh", Self.probePath],
                environment: environment,
                descriptors: descriptors
            )
        }
        #expect(result.exitedNormally, "probe status \(result.status): \(result.output)")
        var probe = Probe(exitCode: result.exitCode)
        for line in result.output.split(separator: "\n") {
            let words = line.split(separator: " ")
            let pairs = Dictionary(
                words.dropFirst().compactMap { word -> (String, String)? in
                    guard let equals = word.firstIndex(of: "=") else { return nil }
                    return (String(word[..<equals]), String(word[word.index(after: equals)...]))
                },
                uniquingKeysWith: { first, _ in first }
            )
            switch words.first {
            case "socket":
                probe.sockets.append(
                    ProbedSocket(
                        fd: Int32(pairs["fd"] ?? "") ?? -1,
                        name: pairs["name"] ?? "",
                        family: Int32(pairs["family"] ?? "") ?? -1,
                        listening: pairs["listening"] == "1",
                        cloexec: pairs["cloexec"] == "1",
                        address: pairs["address"] ?? ""
                    )
                )
            case "env": probe.environment = pairs
            case "mapped": probe.mapsLibsystemd = pairs["libsystemd"] == "1"
            case "error": probe.error = String(line.dropFirst("error ".count))
            default: Issue.record("unexpected probe output: \(line)")
            }
        }
        return probe
    }

    static let unsetEnvironment = ["LISTEN_FDS": "<unset>", "LISTEN_PID": "<unset>", "LISTEN_FDNAMES": "<unset>"]

    @Test func oneTCPSocketUnnamed() throws {
        let (fd, port) = try makeTCPSocket()
        defer { close(fd) }
        let probe = try probe([fd])
        #expect(probe.error == nil)
        #expect(
            probe.sockets == [
                ProbedSocket(
                    fd: 3,
                    name: "unknown",
                    family: AF_INET,
                    listening: true,
                    cloexec: true,
                    address: "127.0.0.1:\(port)"
                )
            ]
        )
        #expect(probe.environment == Self.unsetEnvironment)
        #expect(probe.mapsLibsystemd == true)
    }

    @Test func twoNamedSockets() throws {
        let (web, webPort) = try makeTCPSocket()
        let (admin, adminPort) = try makeTCPSocket()
        defer {
            close(web)
            close(admin)
        }
        let probe = try probe([web, admin], names: "web:admin")
        #expect(
            probe.sockets == [
                ProbedSocket(
                    fd: 3,
                    name: "web",
                    family: AF_INET,
                    listening: true,
                    cloexec: true,
                    address: "127.0.0.1:\(webPort)"
                ),
                ProbedSocket(
                    fd: 4,
                    name: "admin",
                    family: AF_INET,
                    listening: true,
                    cloexec: true,
                    address: "127.0.0.1:\(adminPort)"
                ),
            ]
        )
        #expect(probe.environment == Self.unsetEnvironment)
    }

    @Test func ipv6Loopback() throws {
        let (fd, port) = try makeTCPSocket(ipv6: true)
        defer { close(fd) }
        let probe = try probe([fd], names: "v6")
        #expect(
            probe.sockets == [
                ProbedSocket(
                    fd: 3,
                    name: "v6",
                    family: AF_INET6,
                    listening: true,
                    cloexec: true,
                    address: "[::1]:\(port)"
                )
            ]
        )
    }

    @Test func unixSocketsByPathAndAbstractName() throws {
        let path = "/tmp/" + uniqueName("systemd-tests") + ".sock"
        let abstract = "@" + uniqueName("systemd-tests-abstract")
        var fds: [Int32] = []
        defer {
            for fd in fds { close(fd) }
            unlink(path)
        }
        for name in [path, abstract] {
            let fd = try makeSocket(AF_UNIX, SOCK_STREAM)
            fds.append(fd)
            let (address, length) = unixAddress(name)
            try bindAddress(fd, address, length: length)
            try #require(listen(fd, 8) == 0)
        }
        let probe = try probe(fds, names: "path:abstract")
        #expect(
            probe.sockets == [
                ProbedSocket(
                    fd: 3,
                    name: "path",
                    family: AF_UNIX,
                    listening: true,
                    cloexec: true,
                    address: "unix:\(path)"
                ),
                ProbedSocket(
                    fd: 4,
                    name: "abstract",
                    family: AF_UNIX,
                    listening: true,
                    cloexec: true,
                    address: "unix:\(abstract)"
                ),
            ]
        )
    }

    @Test func nonListeningSocketsAreReportedSo() throws {
        let (bound, port) = try makeTCPSocket(listening: false)
        let datagram = try makeSocket(AF_INET, SOCK_DGRAM)
        defer {
            close(bound)
            close(datagram)
        }
        let probe = try probe([bound, datagram], names: "bound:datagram")
        try #require(probe.sockets.count == 2)
        #expect(probe.sockets[0].address == "127.0.0.1:\(port)")
        #expect(!probe.sockets[0].listening)
        #expect(probe.sockets[1].family == AF_INET)
        #expect(probe.sockets[1].address == "0.0.0.0:0")
        #expect(!probe.sockets[1].listening)
    }

    @Test func listenPIDOfAnotherProcessTakesNothing() throws {
        let (fd, _) = try makeTCPSocket()
        defer { close(fd) }
        let probe = try probe([fd], names: "web", listenPID: "1")
        #expect(probe.error == nil)
        #expect(probe.sockets.isEmpty)
        #expect(probe.environment == Self.unsetEnvironment)
    }

    @Test func nothingPassedTakesNothing() throws {
        let probe = try probe([], listenFDs: "")
        #expect(probe.error == nil)
        #expect(probe.sockets.isEmpty)
        #expect(probe.environment == Self.unsetEnvironment)
        #expect(probe.mapsLibsystemd == false, "nothing to take: libsystemd is not loaded")
    }

    @Test func descriptorThatIsNotASocketIsAnError() throws {
        let file = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(file >= 0)
        defer { close(file) }
        let probe = try probe([file], names: "file")
        #expect(probe.exitCode == 1)
        #expect(probe.error == "sd_is_socket fd 3 (file): Socket operation on non-socket (errno 88)")
    }

    @Test(arguments: ["many", "0", "-1"])
    func malformedListenFDsIsAnError(value: String) throws {
        let probe = try probe([], listenFDs: value)
        #expect(probe.exitCode == 1)
        #expect(probe.error == "sd_listen_fds_with_names: Invalid argument (errno 22)")
        #expect(probe.sockets.isEmpty)
    }

    @Test func moreNamesThanSocketsIsAnError() throws {
        let (fd, _) = try makeTCPSocket()
        defer { close(fd) }
        let probe = try probe([fd], names: "web:admin")
        #expect(probe.exitCode == 1)
        #expect(probe.error == "sd_listen_fds_with_names: Invalid argument (errno 22)")
    }
}
