// An example of embedding the Prefork engine with a handler of your own: each connection's
// first line comes back in upper case. Run it, then: printf 'hello\n' | nc 127.0.0.1 12000
import Glibc
import Logging
import Prefork

/// Reads one line (the initial data, completed if needed) and writes it back upper-cased.
struct UppercaseHandler: ConnectionHandler {
    private var line: [UInt8] = []
    private var chunk: [UInt8] = []

    // Runs in each worker after fork: per-worker buffers belong here. A throw is a boot failure.
    mutating func prepare(_ context: WorkerContext) throws {
        line.reserveCapacity(4096)
        chunk = [UInt8](repeating: 0, count: 1024)
    }

    // initialData: the client's first 1…initial-bytes bytes, from one read.
    mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        line.removeAll(keepingCapacity: true)
        for index in initialData.indices { line.append(initialData[index]) }
        while !line.contains(UInt8(ascii: "\n")) && line.count < 4096 {
            let count = try connection.read(into: &chunk)
            if count == 0 { break }
            line.append(contentsOf: chunk[..<count])
        }
        for index in line.indices where (97...122).contains(line[index]) { line[index] -= 32 }
        try connection.write(line)
        connection.shutdown()  // the worker closes the socket when handle returns
    }
}

LoggingSystem.bootstrap { _ in TextLogHandler(level: .info) }
let address = CommandLine.arguments.dropFirst().first ?? "127.0.0.1:12000"
// The loader runs at start and again on SIGHUP; a bad address ends the process with one line
// on stderr and exit status 78, as any configuration error does.
let server = PreforkServer(logger: Logger(label: "uppercase")) {
    var configuration = ServerConfiguration()
    configuration.listen = [try ListenAddress(parsing: address)]
    configuration.workers = 2
    // Started as root, serve as nobody (the listener is bound first); the engine refuses to serve
    // as root unless told `allowRoot`.
    if geteuid() == 0 { configuration.user = "nobody" }
    return ServerSetup(configuration: configuration, handler: UppercaseHandler())
}
server.runAndExit()
