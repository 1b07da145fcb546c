import Glibc
import Logging
import Testing

@testable import Prefork
@testable import PreforkHandlers

/// Runs the echo handler in-process on one end of a socketpair; the test is the client.
@Suite struct EchoHandlerTests {
    /// One connection through a fresh handler: the client has already sent `rest` (and, when
    /// `clientDone`, shut its side) when the handler gets `initial` as the initial data; returns
    /// everything the client reads until the server closes.
    func exchange(
        _ configuration: EchoHandler.Configuration = EchoHandler.Configuration(),
        initial: [UInt8], then rest: [UInt8] = [], clientDone: Bool = false
    ) throws -> [UInt8] {
        var fds: [Int32] = [0, 0]
        precondition(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        let (server, client) = (fds[0], fds[1])
        defer { close(client) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        for fd in fds { setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
        _ = rest.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
        if clientDone { shutdown(client, Int32(SHUT_WR)) }
        let context = WorkerContext(workerNumber: 1, generation: 1, logger: Logger(label: "test"))
        var handler = EchoHandler(configuration: configuration)
        try handler.prepare(context)
        let connection = Connection(
            fileDescriptor: server, listener: Listener(adopting: -1, name: "test", origin: .bound))
        try handler.handle(connection, initialData: initial.span, context: context)
        close(server)
        var echoed: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(client, $0.baseAddress, $0.count) }
            if n <= 0 { return echoed }
            echoed += chunk[..<n]
        }
    }

    /// ``exchange(_:initial:then:clientDone:)`` in text.
    func exchange(
        _ configuration: EchoHandler.Configuration = EchoHandler.Configuration(),
        initial: String, then rest: String = "", clientDone: Bool = false
    ) throws -> String {
        let echoed = try exchange(
            configuration, initial: Array(initial.utf8), then: Array(rest.utf8), clientDone: clientDone)
        return String(decoding: echoed, as: UTF8.self)
    }

    func configuration(keepAlive: Bool = false, maxMessageBytes: Int? = nil) -> EchoHandler.Configuration {
        var configuration = EchoHandler.Configuration()
        configuration.keepAlive = keepAlive
        if let maxMessageBytes { configuration.maxMessageBytes = maxMessageBytes }
        return configuration
    }

    @Test func echoesAMessageLongerThanTheInitialReadThenCloses() throws {
        // The initial read took 5 bytes.
        #expect(try exchange(initial: "hello", then: ", world<EOF>") == "hello, world<EOF>")
    }

    @Test func aTagSplitAcrossReadsIsFound() throws {
        #expect(try exchange(initial: "abc<E", then: "OF>") == "abc<EOF>")
    }

    @Test(arguments: ["<<EOF>", "a<b<E<EO<EOF<EOF>", "<EOF<EOF>", "<EO" + "F>", "<EOF>"])
    func theTagIsFoundAfterFalseStartsOfIt(message: String) throws {
        #expect(try exchange(initial: Array(message.utf8)) == Array(message.utf8))
    }

    @Test(arguments: [1, 2, 3, 4])
    func aTagSplitAfterAnyOfItsBytesIsFound(split: Int) throws {
        let message = Array("abc<EOF>".utf8)
        let cut = 3 + split
        #expect(try exchange(initial: Array(message[..<cut]), then: Array(message[cut...])) == message)
    }

    @Test func anOversizeMessageIsClosedWithoutReply() throws {
        let limited = configuration(maxMessageBytes: 16)
        #expect(try exchange(limited, initial: "0123456789", then: String(repeating: "x", count: 40) + "<EOF>") == "")
    }

    @Test func keepAliveServesSeveralMessagesIncludingPipelinedOnes() throws {
        let echoed = try exchange(
            configuration(keepAlive: true), initial: "one<EOF>", then: "two<EOF>three<EOF>", clientDone: true)
        #expect(echoed == "one<EOF>two<EOF>three<EOF>")
    }

    @Test func keepAliveServesMessagesPipelinedInTheInitialRead() throws {
        let echoed = try exchange(
            configuration(keepAlive: true), initial: "one<EOF>two<EOF>thr", then: "ee<EOF>", clientDone: true)
        #expect(echoed == "one<EOF>two<EOF>three<EOF>")
    }

    @Test func aMessageCompleteInTheInitialReadIsEchoedAndTheRestDropped() throws {
        #expect(try exchange(initial: "hi<EOF>trailing") == "hi<EOF>")
    }

    @Test func anInitialReadLongerThanTheLimitIsJudgedByTheLimit() throws {
        let limited = configuration(maxMessageBytes: 16)
        // The tag ends within the first 16 bytes: a message.
        #expect(try exchange(limited, initial: "short<EOF>" + String(repeating: "x", count: 30)) == "short<EOF>")
        // The tag ends past byte 16: too long, closed without a reply.
        #expect(try exchange(limited, initial: String(repeating: "x", count: 14) + "<EOF>") == "")
    }

    @Test func clientClosingMidMessageGetsNothing() throws {
        #expect(try exchange(initial: "no tag here", clientDone: true) == "")
    }

    @Test func arbitraryBinaryBytesComeBackExactly() throws {
        // Any byte values, NULs and partial tags included; deterministic, so a failure repeats.
        var generator = SplitMix(seed: 0x5eed)
        let tag = Array("<EOF>".utf8)
        for round in 0..<50 {
            var message = (0..<Int(generator.next() % 3000)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            message += Array("<EO".utf8) + [0] + tag
            let split = min(message.count, Int(generator.next() % 64) + 1)
            let echoed = try exchange(initial: Array(message[..<split]), then: Array(message[split...]))
            // The reply ends at the first complete tag (which may come earlier by chance).
            let end = (tag.count...message.count).first { Array(message[($0 - tag.count)..<$0]) == tag }!
            #expect(echoed == Array(message[..<end]), "round \(round)")
        }
    }

    @Test func invalidSettingsNameTheirKey() {
        var configuration = EchoHandler.Configuration()
        configuration.maxMessageBytes = 2
        #expect(throws: ConfigurationError.self) { try configuration.validate() }
        configuration = EchoHandler.Configuration()
        configuration.idleTimeout = .seconds(-1)
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
