import CPreforkShims
import Glibc
import Testing

@testable import Prefork

@Suite struct ScoreboardTests {
    @Test func summaryCountsStagesAndConnections() throws {
        let board = try Scoreboard(capacity: 4)
        for index in 0..<3 {
            board.reserve(index, generation: 1)
            board.assign(index, pid: Int32(10 + index))
        }
        SlotWriter(slot: board.slot(1)).enter(.accepting)
        SlotWriter(slot: board.slot(2)).enter(.handling)
        SlotWriter(slot: board.slot(2)).countConnection()
        SlotWriter(slot: board.slot(2)).countConnection()
        let summary = board.summary(of: [0, 1, 2])
        #expect(summary == Scoreboard.Summary(starting: 1, idle: 1, busy: 1, connections: 2))
        #expect(board.release(2).connections == 2)
        #expect(board.stage(2) == .free)
    }

    @Test func aForkedChildWritesWhatTheParentReads() throws {
        let board = try Scoreboard(capacity: 2)
        board.reserve(0, generation: 1)
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

    /// The slot is reserved before the fork: a child that reaches accept before the parent
    /// records its pid is not turned back into a "starting" worker (a phantom in STATUS=).
    @Test func assigningThePidAfterTheForkKeepsTheStageTheChildWrote() throws {
        let board = try Scoreboard(capacity: 2)
        board.reserve(1, generation: 3)
        SlotWriter(slot: board.slot(1)).enter(.accepting)  // the child, first
        board.assign(1, pid: 4242)  // the parent, after fork returned
        #expect(board.stage(1) == .accepting)
        #expect(board.hasBooted(1, pid: 4242))
        #expect(!board.hasBooted(1, pid: 4243), "a report names its worker by pid")
        #expect(board.summary(of: [1]) == Scoreboard.Summary(starting: 0, idle: 1, busy: 0, connections: 0))
        #expect(board.firstFreeSlot() == 0)
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
