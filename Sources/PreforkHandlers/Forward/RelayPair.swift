import Glibc

/// One direction of a relayed pair: bytes read from `source` and written to `destination`.
///
/// The loop is edge-triggered, so the readiness flags are the loop's memory of what epoll said:
/// set by an event, cleared when a call returns `EAGAIN`.
struct RelayDirection {
    let source: Int32
    let destination: Int32
    /// epoll said `source` has bytes or an end to read, and no read has said `EAGAIN` since.
    var sourceReadable = false
    /// epoll said `destination` has room, and no write has said `EAGAIN` since.
    var destinationWritable = false
    /// `source` returned end of file: the peer will send nothing more this way.
    var sourceEnded = false
    /// The end was passed on: `shutdown(destination, SHUT_WR)` is done, so this direction is over.
    var destinationShut = false
    /// The pipe holding bytes in flight (splice), taken from the pool for as long as it is not empty.
    var pipe: RelayPipe?
    var pipeBytes = 0
    /// Bytes a short write left over (copy): allocated only while some are waiting.
    var pending: UnsafeMutableRawPointer?
    var pendingStart = 0
    var pendingEnd = 0

    init(source: Int32, destination: Int32) {
        self.source = source
        self.destination = destination
    }

    /// Bytes read from `source` and not yet written to `destination`.
    var heldBytes: Int { pipeBytes + pendingEnd - pendingStart }

    /// Returns what the direction holds: the pipe to `pool` when it is empty (closed when not),
    /// the pending buffer to the allocator.
    mutating func release(to pool: RelayPipePool) {
        if let pipe {
            if pipeBytes == 0 { pool.give(pipe) } else { pool.discard(pipe) }
            self.pipe = nil
            pipeBytes = 0
        }
        free(pending)
        pending = nil
        pendingStart = 0
        pendingEnd = 0
    }
}

/// A relayed (client, upstream) pair: its sockets, its two directions, and when it last moved a byte.
final class RelayPair {
    let client: Int32
    let upstream: Int32
    /// The caller's index of the route the pair took.
    let route: Int
    /// Client → upstream.
    var toUpstream: RelayDirection
    /// Upstream → client.
    var toClient: RelayDirection
    /// `CLOCK_MONOTONIC_COARSE` time of the last byte moved either way (or of adoption).
    var lastActivity: UInt64
    /// The pair's slot in the loop's table, and that slot's use count when it got it: together
    /// the epoll tag, so that an event left over for a finished pair never reaches a new one.
    let slot: Int
    let generation: UInt32
    /// Waiting in the loop's list of pairs to serve again without an event (it spent its turn's budget).
    var queuedAgain = false

    init(client: Int32, upstream: Int32, route: Int, slot: Int, generation: UInt32, now: UInt64) {
        self.client = client
        self.upstream = upstream
        self.route = route
        self.slot = slot
        self.generation = generation
        self.lastActivity = now
        toUpstream = RelayDirection(source: client, destination: upstream)
        toClient = RelayDirection(source: upstream, destination: client)
    }

    /// Both ends passed on: nothing more will move either way.
    var isComplete: Bool { toUpstream.destinationShut && toClient.destinationShut }
}
