import Glibc

/// Writes log lines without ever blocking the process on its log.
///
/// A daemon's stderr is a pipe or a socket someone else reads (journald, a shell pipeline, a
/// supervisor of supervisors). When that reader stalls, a blocking write would stop the
/// supervisor from reaping and respawning, and a worker from serving. So a line is written only
/// when the descriptor can take it now (`poll` says so; a line of at most `PIPE_BUF` bytes then
/// goes into a pipe whole), and dropped otherwise. Dropped lines are counted, and the first line
/// that gets through afterwards is preceded by one saying how many were lost.
enum LogLineWriter {
    /// Lines dropped since the last one that was written (this process only: each process logs
    /// from one thread, so no lock is needed).
    nonisolated(unsafe) private static var dropped = 0

    /// Lines dropped since the last report; for tests and status.
    static var droppedSinceLastReport: Int { dropped }

    /// Writes `line` and a newline to `fileDescriptor`, or drops it when that would block.
    static func write(_ line: String, to fileDescriptor: Int32) {
        guard isWritableNow(fileDescriptor) else {
            dropped += 1
            return
        }
        if dropped > 0 {
            let note = "\(dropped) log lines were dropped while the log was not being read"
            dropped = 0
            guard writeWhole(note + "\n", to: fileDescriptor), isWritableNow(fileDescriptor) else {
                dropped += 1
                return
            }
        }
        if !writeWhole(line + "\n", to: fileDescriptor) { dropped += 1 }
    }

    private static func isWritableNow(_ fileDescriptor: Int32) -> Bool {
        var entry = pollfd(fd: fileDescriptor, events: Int16(POLLOUT), revents: 0)
        let ready = valueOrErrno { poll(&entry, 1, 0) }
        guard case .success(let count) = ready, count == 1 else { return false }
        return entry.revents & Int16(POLLOUT) != 0 && entry.revents & Int16(POLLERR | POLLHUP | POLLNVAL) == 0
    }

    /// One write of the whole line (retried only if the kernel took part of it); false when it
    /// could not be written.
    private static func writeWhole(_ text: String, to fileDescriptor: Int32) -> Bool {
        var text = text
        return text.withUTF8 { raw in
            var offset = 0
            while offset < raw.count {
                guard
                    case .success(let n) = valueOrErrno({
                        Glibc.write(fileDescriptor, raw.baseAddress! + offset, raw.count - offset)
                    }),
                    n > 0
                else { return false }
                offset += n
            }
            return true
        }
    }
}
