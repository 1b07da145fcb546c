import Glibc
import Logging
import Testing

@testable import Prefork
@testable import PreforkHandlers

/// Runs the echo handler in-process on one end of a socketpair; the test is the client.
@Suite struct EchoHandlerTests {
    struct Pair {
        let server: Int32
        let client: Int32
    }

    func makePair() -> Pair {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        for fd in fds { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
        return Pair(server: fds[0], client: fds[1])
    }

    func context() -> WorkerContext {
        WorkerContext(workerNumber: 1, generation: 1, logger: Logger(label: "test"))
    }

    func listener() -> Listener { Listener(adopting: -1, name: "test", origin: .bound) }

    func send(_ fd: Int32, _ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Reads until EOF (the handler closed) or timeout.
    func readAll(_ fd: Int32) -> String {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += chunk[..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }

    func run(_ handler: inout EchoHandler, _ pair: Pair, initial: String) throws {
        let connection = Connection(fileDescriptor: pair.server, listener: listener())
        try Array(initial.utf8).withUnsafeBytes { bytes in
            try handler.handle(connection, initialData: bytes, context: context())
        }
    }

    @Test func echoesAMessageLongerThanTheInitialReadThenCloses() throws {
        var handler = EchoHandler()
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        send(pair.client, ", world<EOF>")
        try run(&handler, pair, initial: "hello")  // the initial read took 5 bytes
        close(pair.server)
        #expect(readAll(pair.client) == "hello, world<EOF>")
    }

    @Test func aTagSplitAcrossReadsIsFound() throws {
        var handler = EchoHandler()
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        send(pair.client, "OF>")
        try run(&handler, pair, initial: "abc<E")
        close(pair.server)
        #expect(readAll(pair.client) == "abc<EOF>")
    }

    @Test func anOversizeMessageIsClosedWithoutReply() throws {
        var configuration = EchoHandler.Configuration()
        configuration.maxMessageBytes = 16
        var handler = EchoHandler(configuration: configuration)
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        send(pair.client, String(repeating: "x", count: 40) + "<EOF>")
        try run(&handler, pair, initial: "0123456789")
        close(pair.server)
        #expect(readAll(pair.client) == "")
    }

    @Test func keepAliveServesSeveralMessagesIncludingPipelinedOnes() throws {
        var configuration = EchoHandler.Configuration()
        configuration.keepAlive = true
        var handler = EchoHandler(configuration: configuration)
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        send(pair.client, "two<EOF>three<EOF>")
        shutdown(pair.client, Int32(SHUT_WR))  // the client is done after these
        try run(&handler, pair, initial: "one<EOF>")
        close(pair.server)
        #expect(readAll(pair.client) == "one<EOF>two<EOF>three<EOF>")
    }

    @Test func keepAliveServesMessagesPipelinedInTheInitialRead() throws {
        var configuration = EchoHandler.Configuration()
        configuration.keepAlive = true
        var handler = EchoHandler(configuration: configuration)
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        send(pair.client, "ee<EOF>")
        shutdown(pair.client, Int32(SHUT_WR))
        try run(&handler, pair, initial: "one<EOF>two<EOF>thr")
        close(pair.server)
        #expect(readAll(pair.client) == "one<EOF>two<EOF>three<EOF>")
    }

    @Test func aMessageCompleteInTheInitialReadIsEchoedAndTheRestDropped() throws {
        var handler = EchoHandler()
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        try run(&handler, pair, initial: "hi<EOF>trailing")
        close(pair.server)
        #expect(readAll(pair.client) == "hi<EOF>")
    }

    @Test func anInitialReadLongerThanTheLimitIsJudgedByTheLimit() throws {
        var configuration = EchoHandler.Configuration()
        configuration.maxMessageBytes = 16
        // The tag ends within the first 16 bytes: a message.
        var handler = EchoHandler(configuration: configuration)
        try handler.prepare(context())
        var pair = makePair()
        try run(&handler, pair, initial: "short<EOF>" + String(repeating: "x", count: 30))
        close(pair.server)
        #expect(readAll(pair.client) == "short<EOF>")
        close(pair.client)
        // The tag ends past byte 16: too long, closed without a reply.
        handler = EchoHandler(configuration: configuration)
        try handler.prepare(context())
        pair = makePair()
        try run(&handler, pair, initial: String(repeating: "x", count: 14) + "<EOF>")
        close(pair.server)
        #expect(readAll(pair.client) == "")
        close(pair.client)
    }

    @Test func clientClosingMidMessageGetsNothing() throws {
        var handler = EchoHandler()
        try handler.prepare(context())
        let pair = makePair()
        defer { close(pair.client) }
        shutdown(pair.client, Int32(SHUT_WR))
        try run(&handler, pair, initial: "no tag here")
        close(pair.server)
        #expect(readAll(pair.client) == "")
    }

    @Test func arbitraryBinaryBytesComeBackExactly() throws {
        // Any byte values, NULs and partial tags included; deterministic, so a failure repeats.
        var generator = SplitMix(seed: 0x5eed)
        for round in 0..<50 {
            var message = (0..<Int(generator.next() % 3000)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            message += Array("<EO".utf8) + [0] + Array("<EOF>".utf8)
            var handler = EchoHandler()
            try handler.prepare(context())
            let pair = makePair()
            let split = min(message.count, Int(generator.next() % 64) + 1)
            _ = message[split...].withUnsafeBytes { write(pair.client, $0.baseAddress, $0.count) }
            let connection = Connection(fileDescriptor: pair.server, listener: listener())
            try message[..<split].withUnsafeBytes {
                try handler.handle(connection, initialData: $0, context: context())
            }
            close(pair.server)
            var echoed: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(pair.client, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                echoed += chunk[..<n]
            }
            close(pair.client)
            // The reply ends at the first complete tag (which may come earlier by chance).
            let tag = Array("<EOF>".utf8)
            let end = (tag.count...message.count).first { Array(message[($0 - tag.count)..<$0]) == tag }!
            #expect(echoed == Array(message[..<end]), "round \(round)")
        }
    }

    @Test func invalidSettingsNameTheirKey() {
        var configuration = EchoHandler.Configuration()
        configuration.maxMessageBytes = 2
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
        configuration = EchoHandler.Configuration()
        configuration.idleTimeout = -1
        #expect { try configuration.validate() } throws: { "\($0)".contains("echo.idle-timeout") }
    }
}

/// A small deterministic generator for reproducible test data.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
