// A server embedding the engine with a handler that misbehaves on request, for the integration
// tests of fault isolation: "throw<EOF>" makes the handler throw, "crash<EOF>" makes it trap,
// "slow<EOF>" answers after half a second, anything else is echoed. With a third argument, a
// worker's set-up hangs while that file exists (a reload whose generation cannot start), and new
// workers must start within two seconds; while that file with ".fatal" appended exists, a
// worker's set-up finds the service cannot run (FatalHandlerError, EPERM).
// Usage: HandlerFaultProbe ADDRESS WORKERS [HANG_FILE]
import Glibc
import Logging
import Prefork

struct FaultyHandler: ConnectionHandler {
    struct Requested: Error {}

    /// While this file exists, `prepare` does not return.
    let hangFile: String?

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
        default: break
        }
        try connection.write(message)
        connection.shutdown()
    }
}

LoggingSystem.bootstrap { _ in TextLogHandler(level: .info) }
var configuration = ServerConfiguration()
do {
    configuration.listen = [try ListenAddress(parsing: CommandLine.arguments[1])]
    configuration.workers = Int(CommandLine.arguments[2]) ?? 2
    if CommandLine.arguments.count > 3 { configuration.bootTimeout = .seconds(2) }
} catch {
    print("HandlerFaultProbe: \(error)")
    exit(PreforkExitCode.configuration.rawValue)
}
let hangFile = CommandLine.arguments.count > 3 ? CommandLine.arguments[3] : nil
PreforkServer(configuration: configuration, handler: FaultyHandler(hangFile: hangFile), logger: Logger(label: "probe"))
    .runAndExit()
