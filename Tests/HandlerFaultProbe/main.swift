// A server embedding the engine with a handler that misbehaves on request, for the integration
// tests of fault isolation: "throw<EOF>" makes the handler throw, "crash<EOF>" makes it trap,
// "slow<EOF>" answers after half a second, anything else is echoed. With a third argument, a
// worker's set-up hangs while that file exists (a reload whose generation cannot start), and new
// workers must start within two seconds; while that file with ".fatal" appended exists, a
// worker's set-up finds the service cannot run (FatalHandlerError, EPERM).
// "detach<EOF>" makes the handler keep the socket (Connection.detach) without a reply;
// "release<EOF>" writes "released" to the socket kept last and closes it, then echoes.
// Environment: PROBE_SILENT=1 answers silent clients with "hello\n" (defer-accept off);
// PROBE_DRAIN_FILE=PATH makes finish() wait until PATH exists (at most a minute);
// PROBE_INITIAL_TIMEOUT, PROBE_GRACEFUL_TIMEOUT (seconds), PROBE_MAX_CONNECTIONS and
// PROBE_ACCEPT_PROXY (v1, v2, any) set those.
// Usage: HandlerFaultProbe ADDRESS WORKERS [HANG_FILE]
import Glibc
import Logging
import Prefork

struct FaultyHandler: ConnectionHandler {
    struct Requested: Error {}

    /// While this file exists, `prepare` does not return.
    let hangFile: String?
    /// Whether a client that sends nothing is greeted instead of closed.
    let answersSilentClients: Bool
    /// `finish` waits until this file exists.
    let drainFile: String?
    /// The socket the last "detach" request left with the handler, or -1.
    var detached: Int32 = -1

    mutating func finish(_ context: WorkerContext) {
        guard let drainFile else { return }
        context.logger.info("Draining until \(drainFile) exists")
        // Bounded, so that a test that forgets the file leaves no worker behind for long.
        for _ in 0..<6000 where access(drainFile, F_OK) != 0 && !context.isStoppingImmediately {
            usleep(10_000)
        }
    }

    mutating func prepare(_ context: WorkerContext) throws {
        guard let hangFile else { return }
        if access(hangFile + ".fatal", F_OK) == 0 {
            throw FatalHandlerError("\(hangFile).fatal exists", errno: .notPermitted)
        }
        while access(hangFile, F_OK) == 0 { usleep(10_000) }
    }

    mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        var message: [UInt8] = []
        for index in initialData.indices { message.append(initialData[index]) }
        if initialData.isEmpty {
            try connection.write(Array("hello\n".utf8))
            // The greeted client gets as long as any to answer, not the short initial timeout.
            try connection.setReceiveTimeout(.seconds(5))
        }
        var chunk = [UInt8](repeating: 0, count: 1024)
        while !message.suffix(5).elementsEqual("<EOF>".utf8) {
            let n = try connection.read(into: &chunk)
            if n == 0 { return }
            message += chunk[..<n]
        }
        switch String(decoding: message, as: UTF8.self) {
        case "throw<EOF>": throw Requested()
        case "crash<EOF>": fatalError("crash requested by the client")
        case "slow<EOF>": usleep(500_000)
        case "detach<EOF>":
            detached = connection.detach()
            return
        case "release<EOF>":
            guard detached >= 0 else { break }
            _ = "released".withCString { send(detached, $0, 8, Int32(MSG_NOSIGNAL)) }
            close(detached)
            detached = -1
        default: break
        }
        try connection.write(message)
        connection.shutdown()
    }
}

/// The variable `name` of this process's environment, if set.
func environment(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

LoggingSystem.bootstrap { _ in TextLogHandler(level: .info) }
var configuration = ServerConfiguration()
do {
    configuration.listen = [try ListenAddress(parsing: CommandLine.arguments[1])]
    configuration.workers = Int(CommandLine.arguments[2]) ?? 2
    // A test probe, run as whoever runs the tests (root on CI): privileges are not what it tests.
    configuration.allowRoot = true
    if CommandLine.arguments.count > 3 { configuration.bootTimeout = .seconds(2) }
    if let seconds = environment("PROBE_INITIAL_TIMEOUT").flatMap(Double.init) {
        configuration.initialTimeout = .milliseconds(Int(seconds * 1000))
    }
    if let seconds = environment("PROBE_GRACEFUL_TIMEOUT").flatMap(Double.init) {
        configuration.gracefulTimeout = .milliseconds(Int(seconds * 1000))
    }
    if let count = environment("PROBE_MAX_CONNECTIONS").flatMap(Int.init) {
        configuration.maxConnectionsPerWorker = count
    }
    if environment("PROBE_SILENT") == "1" { configuration.deferAccept = false }
    if let version = environment("PROBE_ACCEPT_PROXY").flatMap(AcceptProxy.init(rawValue:)) {
        configuration.proxyProtocol.accept = version
    }
} catch {
    print("HandlerFaultProbe: \(error)")
    exit(PreforkExitCode.configuration.rawValue)
}
let hangFile = CommandLine.arguments.count > 3 ? CommandLine.arguments[3] : nil
let handler = FaultyHandler(
    hangFile: hangFile, answersSilentClients: environment("PROBE_SILENT") == "1",
    drainFile: environment("PROBE_DRAIN_FILE"))
PreforkServer(configuration: configuration, handler: handler, logger: Logger(label: "probe")).runAndExit()
