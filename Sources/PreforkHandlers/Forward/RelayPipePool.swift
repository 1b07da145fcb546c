internal import CPreforkShims
import Glibc

/// A pipe that carries one direction's bytes for `splice(2)`: socket → pipe, pipe → socket.
struct RelayPipe {
    let readEnd: Int32
    let writeEnd: Int32
}

/// The relay loop's spare pipes.
///
/// A direction takes a pipe only while bytes are in flight and gives it back once the pipe is
/// empty (HAProxy does the same), so a thousand idle pairs hold no pipe at all, and a busy loop
/// keeps a few at hand instead of creating two fds per transfer.
final class RelayPipePool {
    /// How many bytes one pipe holds: one `splice` moves at most this much.
    let pipeBytes: Int
    /// The most empty pipes kept for reuse; beyond that a returned pipe is closed.
    let spareLimit: Int
    private var spares: [RelayPipe] = []

    init(pipeBytes: Int, spareLimit: Int) {
        self.pipeBytes = pipeBytes
        self.spareLimit = spareLimit
        spares.reserveCapacity(spareLimit)
    }

    /// An empty pipe, or nil when none can be made (out of fds): the caller then copies instead.
    func take() -> RelayPipe? {
        if let pipe = spares.popLast() { return pipe }
        var ends: [Int32] = [-1, -1]
        guard pf_pipe2(&ends, O_CLOEXEC | O_NONBLOCK) == 0 else { return nil }
        // The default (64 KiB) is kept when the size is refused: a smaller pipe only means more calls.
        _ = pf_set_pipe_size(ends[1], Int32(pipeBytes))
        return RelayPipe(readEnd: ends[0], writeEnd: ends[1])
    }

    /// Takes back an empty pipe.
    func give(_ pipe: RelayPipe) {
        if spares.count < spareLimit {
            spares.append(pipe)
        } else {
            Self.discard(pipe)
        }
    }

    /// Closes a pipe that still holds bytes nobody will deliver, or one the pool does not keep.
    static func discard(_ pipe: RelayPipe) {
        close(pipe.readEnd)
        close(pipe.writeEnd)
    }

    /// Closes every spare pipe.
    func closeAll() {
        spares.forEach(Self.discard)
        spares.removeAll()
    }

    /// Spare pipes held now.
    var spareCount: Int { spares.count }
}
