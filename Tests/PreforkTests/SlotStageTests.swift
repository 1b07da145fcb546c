import CPreforkShims
import Testing

@testable import Prefork

/// The worker's hot-path stage stores: the coarse clock must never run ahead of the one the
/// supervisor reads, or "time in stage" would underflow.
@Suite struct SlotStageTests {
    @Test func stageStoresStampACoarseTimeNotAheadOfTheMonotonicClock() throws {
        let board = try Scoreboard(capacity: 1)
        let slot = board.slot(0)
        pf_slot_enter_stage(slot, Scoreboard.Stage.accepting.rawValue)
        #expect(board.stage(0) == .accepting)
        let since = pf_slot_load_stage_since(slot)
        #expect(since > 0)
        #expect(since <= pf_monotonic_ns())
        pf_slot_enter_stage(slot, Scoreboard.Stage.reading.rawValue)
        #expect(board.stage(0) == .reading)
        #expect(pf_slot_load_stage_since(slot) >= since)
    }

    @Test func enteringHandlingCountsTheConnection() throws {
        let board = try Scoreboard(capacity: 1)
        let slot = board.slot(0)
        pf_slot_enter_handling(slot)
        pf_slot_enter_handling(slot)
        #expect(board.stage(0) == .handling)
        #expect(board.summary(of: 0..<1) == Scoreboard.Summary(starting: 0, idle: 0, busy: 1, connections: 2))
    }
}
