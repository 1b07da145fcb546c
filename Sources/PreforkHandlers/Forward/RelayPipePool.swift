internal import CPreforkShims
import Glibc

/// A pipe that carries one direction's bytes for `splice(2)`: socket → pipe, pipe → socket.
struct RelayPipe {
    let readEnd: Int32
    let writeEnd: Int32
}

/// The relay loop's pipes.
///
/// A direction takes a pipe only while bytes are in flight and gives it back once the pipe is
/// empty (HAProxy does the same), so a thousand idle pairs hold no pipe at all, and a busy loop
/// keeps a few spare instead of creating two fds per transfer.
///
/// The number in use at once is capped: the kernel charges every pipe's capacity to its user
/// (`fs.pipe-user-pages-soft`, 64 MiB by default, for all of that user's processes), and a user
/// over it gets pipes of two pages. A direction that finds the cap reached copies instead.
final class RelayPipePool {
    /// How many bytes one pipe holds: one `splice` moves at most this much.
    let pipeBytes: Int
    /// The most empty pipes kept for reuse; beyond that a returned pipe is closed.
    let spareLimit: Int
    /// The most pipes out of the pool at once.
    let inUseLimit: Int
    private var spares: [RelayPipe] = []
    private(set) var inUse = 0

    init(pipeBytes: Int, spareLimit: Int, inUseLimit: Int) {
        self.pipeBytes = pipeBytes
        self.spareLimit = spareLimit
        self.inUseLimit = inUseLimit
        spares.reserveCapacity(spareLimit)
    }

    /// An empty pipe; nil when the cap is reached or no pipe can be made (out of fds): the
    /// caller then copies instead.
    func take() -> RelayPipe? {
        guard inUse < inUseLimit else { return nil }
        if let pipe = spares.popLast() {
            inUse += 1
            return pipe
        }
        var ends: [Int32] = [-1, -1]
        guard pf_pipe2(&ends, O_CLOEXEC | O_NONBLOCK) == 0 else { return nil }
        // The default (64 KiB) is kept when the size is refused: a smaller pipe only means more calls.
        _ = pf_set_pipe_size(ends[1], Int32(pipeBytes))
        inUse += 1
        return RelayPipe(readEnd: ends[0], writeEnd: ends[1])
    }

    /// Takes back a pipe that is empty.
    func give(_ pipe: RelayPipe) {
        inUse -= 1
        if spares.count < spareLimit {
            spares.append(pipe)
        } else {
            Self.close(pipe)
        }
    }

    /// Takes back a pipe that still holds bytes nobody will deliver (its pair ended): it is closed.
    func discard(_ pipe: RelayPipe) {
        inUse -= 1
        Self.close(pipe)
    }

    /// Closes every spare pipe.
    func closeAll() {
        spares.forEach(Self.close)
        spares.removeAll()
    }

    private static func close(_ pipe: RelayPipe) {
        Glibc.close(pipe.readEnd)
        Glibc.close(pipe.writeEnd)
    }
}
