import CPreforkShims
import Glibc
import Testing

@testable import Prefork

@Suite struct ScoreboardTests {
    @Test func summaryCountsStagesAndConnections() throws {
        let board = try Scoreboard(capacity: 4)
        board.claim(0, pid: 10, generation: 1)
        board.claim(1, pid: 11, generation: 1)
        board.claim(2, pid: 12, generation: 1)
        SlotWriter(slot: board.slot(1)).enter(.accepting)
        SlotWriter(slot: board.slot(2)).enter(.handling)
        SlotWriter(slot: board.slot(2)).countConnection()
        SlotWriter(slot: board.slot(2)).countConnection()
        let summary = board.summary(of: [0, 1, 2])
        #expect(summary == Scoreboard.Summary(starting: 1, idle: 1, busy: 1, connections: 2))
        #expect(board.release(2) == 2)
        #expect(board.stage(2) == .free)
    }

    @Test func aForkedChildWritesWhatTheParentReads() throws {
        let board = try Scoreboard(capacity: 2)
        board.claim(0, pid: 1, generation: 1)
        let child = fork()
        if child == 0 {
            SlotWriter(slot: board.slot(0)).enter(.accepting)
            SlotWriter(slot: board.slot(0)).countConnection()
            _exit(0)
        }
        var status: Int32 = 0
        waitpid(child, &status, 0)
        #expect(board.stage(0) == .accepting)
        #expect(pf_slot_load_connections(board.slot(0)) == 1)
    }

    @Test func threadCountIsOneInAFreshChild() {
        // The supervisor's fork guard reads this; a test process has several threads, a fresh
        // child of it has exactly one.
        #expect(pf_thread_count() >= 1)
        var pipe: [Int32] = [0, 0]
        #expect(Glibc.pipe(&pipe) == 0)
        let child = fork()
        if child == 0 {
            var count = Int32(pf_thread_count())
            _ = write(pipe[1], &count, 4)
            _exit(0)
        }
        var count: Int32 = 0
        _ = read(pipe[0], &count, 4)
        var status: Int32 = 0
        waitpid(child, &status, 0)
        #expect(count == 1)
    }
}
