// An example of embedding the Prefork engine with a handler of your own: each connection's
// first line comes back in upper case. Run it, then: printf 'hello\n' | nc 127.0.0.1 12000
import Glibc
import Logging
import Prefork

/// Reads one line (the initial data, completed if needed) and writes it back upper-cased.
struct UppercaseHandler: ConnectionHandler {
    private var line: [UInt8] = []

    mutating func prepare(_ context: WorkerContext) throws {
        line.reserveCapacity(4096)
    }

    mutating func handle(_ connection: Connection, initialData: UnsafeRawBufferPointer, context: WorkerContext) throws {
        line.removeAll(keepingCapacity: true)
        line.append(contentsOf: initialData)
        var chunk = [UInt8](repeating: 0, count: 1024)
        while !line.contains(UInt8(ascii: "\n")) && line.count < 4096 {
            let n = try chunk.withUnsafeMutableBytes { try connection.read(into: $0) }
            if n == 0 { break }
            line.append(contentsOf: chunk[..<n])
        }
        for index in line.indices where (97...122).contains(line[index]) { line[index] -= 32 }
        try line.withUnsafeBytes { try connection.write($0) }
        connection.shutdown()
    }
}

LoggingSystem.bootstrap { _ in TextLogHandler(level: .info) }
var configuration = ServerConfiguration()
configuration.workers = 2
let address = CommandLine.arguments.dropFirst().first ?? "127.0.0.1:12000"
do {
    configuration.listen = [try ListenAddress(parsing: address)]
    let server = PreforkServer(
        configuration: configuration, handler: UppercaseHandler(), logger: Logger(label: "uppercase"))
    exit(try server.run().rawValue)
} catch {
    print("uppercase-server: \(error)")
    exit(PreforkExitCode.configuration.rawValue)
}
