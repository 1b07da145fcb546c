// A SwiftNIO server speaking the "echo <EOF>" protocol, written with NIO's documented
// ServerBootstrap. Usage: NIOEchoEOF HOST PORT THREADS [--keep-alive]
//
// conn mode:       read until the message ends with "<EOF>", write it back, then close
//                  (the server closes first).
// keep-alive mode: after each echoed message wait for the next one until the client closes.
import NIOCore
import NIOPosix

private let tag: [UInt8] = Array("<EOF>".utf8)
private let maxMessage = 64 * 1024

private final class EchoEOFHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let keepAlive: Bool
    private var pending: ByteBuffer?

    init(keepAlive: Bool) { self.keepAlive = keepAlive }

    private static func endsWithTag(_ buf: ByteBuffer) -> Bool {
        guard buf.readableBytes >= tag.count else { return false }
        return buf.withUnsafeReadableBytes { raw in
            let base = raw.count - tag.count
            for i in 0..<tag.count where raw[base + i] != tag[i] { return false }
            return true
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = self.unwrapInboundIn(data)
        if self.pending == nil {
            self.pending = incoming
        } else {
            self.pending!.writeBuffer(&incoming)
        }
        guard let message = self.pending else { return }
        if message.readableBytes > maxMessage {
            context.close(promise: nil)
            return
        }
        guard Self.endsWithTag(message) else { return }
        self.pending = nil
        if self.keepAlive {
            context.writeAndFlush(self.wrapOutboundOut(message), promise: nil)
        } else {
            let ctx = context
            context.writeAndFlush(self.wrapOutboundOut(message)).whenComplete { _ in
                ctx.close(promise: nil)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

let args = CommandLine.arguments
guard args.count >= 4, let port = Int(args[2]), let threads = Int(args[3]) else {
    print("usage: NIOEchoEOF HOST PORT THREADS [--keep-alive]")
    exit(2)
}
let host = args[1]
let keepAlive = args.dropFirst(4).contains("--keep-alive")

let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 1024)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(EchoEOFHandler(keepAlive: keepAlive))
        }
    }
    .childChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.maxMessagesPerRead, value: 16)
    .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator())

let channel = try bootstrap.bind(host: host, port: port).wait()
print("NIOEchoEOF listening on \(channel.localAddress!) threads=\(threads) keepAlive=\(keepAlive)")
try channel.closeFuture.wait()
try group.syncShutdownGracefully()
