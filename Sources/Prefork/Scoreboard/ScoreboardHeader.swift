internal import CPreforkShims
import Glibc

/// The page in front of the scoreboard's slots: who wrote it and what the pool serves, at fixed
/// offsets, so that `preforkd status` can read a running supervisor's board from its file.
///
/// Only the supervisor writes it; a reader may see a field mid-update, which for a status display
/// is harmless (the slots themselves are read with the same atomics the workers write with).
package enum ScoreboardHeader {
    /// Bytes before the first slot.
    static let size = 4096
    /// "PFKD", then a layout version: a reader refuses anything else.
    static let magic: UInt32 = 0x444B_4650
    static let version: UInt32 = 4

    private static let magicOffset = 0
    private static let versionOffset = 4
    private static let pidOffset = 8
    private static let capacityOffset = 12
    private static let startedOffset = 16
    private static let generationOffset = 24
    private static let retiredOffset = 32
    private static let countersOffset = 64
    private static let listeningLengthOffset = countersOffset + Counters.count * 8
    private static let listeningOffset = listeningLengthOffset + 4
    private static let listeningCapacity = size - listeningOffset

    static func writeIdentity(to header: UnsafeMutableRawPointer, supervisor: Int32, capacity: Int) {
        header.storeBytes(of: magic, toByteOffset: magicOffset, as: UInt32.self)
        header.storeBytes(of: version, toByteOffset: versionOffset, as: UInt32.self)
        header.storeBytes(of: supervisor, toByteOffset: pidOffset, as: Int32.self)
        header.storeBytes(of: UInt32(capacity), toByteOffset: capacityOffset, as: UInt32.self)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        header.storeBytes(of: UInt64(now.tv_sec), toByteOffset: startedOffset, as: UInt64.self)
    }

    /// The pool's counters since the supervisor started: outcomes of connections served by
    /// workers that have exited (live ones keep theirs in their slots), worker exits by cause,
    /// deadline kills by stage, reloads by result.
    package struct Counters: Equatable, Sendable {
        /// Connections that ended before their handler or with its error, indexed by
        /// ``Scoreboard/Outcome``'s raw value.
        var failedConnections = [UInt64](repeating: 0, count: Scoreboard.Outcome.allCases.count)
        var exitsBootFailure: UInt64 = 0
        var exitsCrash: UInt64 = 0
        var exitsRecycled: UInt64 = 0
        var exitsDeadline: UInt64 = 0
        var killsReading: UInt64 = 0
        var killsHandling: UInt64 = 0
        var reloadsCommitted: UInt64 = 0
        var reloadsRolledBack: UInt64 = 0
        var reloadsRejected: UInt64 = 0
        /// In-place upgrades (SIGUSR2): a new image whose generation took over; one that failed
        /// (probe, exec, or the new generation's boot) with the old workers still serving.
        var upgradesCompleted: UInt64 = 0
        var upgradesFailed: UInt64 = 0

        /// The number of words ``values`` has in the header.
        static let count = Scoreboard.Outcome.allCases.count + 11

        init() {}

        /// The counters as the header stores them, in this order.
        var values: [UInt64] {
            failedConnections + [
                exitsBootFailure, exitsCrash, exitsRecycled, exitsDeadline, killsReading, killsHandling,
                reloadsCommitted, reloadsRolledBack, reloadsRejected, upgradesCompleted, upgradesFailed,
            ]
        }

        /// The counters read back from ``values``' order.
        init(values: [UInt64]) {
            let outcomes = Scoreboard.Outcome.allCases.count
            failedConnections = Array(values[..<outcomes])
            let rest = Array(values[outcomes...])
            (exitsBootFailure, exitsCrash, exitsRecycled, exitsDeadline) = (rest[0], rest[1], rest[2], rest[3])
            (killsReading, killsHandling) = (rest[4], rest[5])
            (reloadsCommitted, reloadsRolledBack, reloadsRejected) = (rest[6], rest[7], rest[8])
            (upgradesCompleted, upgradesFailed) = (rest[9], rest[10])
        }

        /// Connections that did not end well, by outcome label: `initial_read_timeout`,
        /// `closed_before_sending`, `reset`, `handler_error`.
        package var outcomes: [(label: String, count: UInt64)] {
            Scoreboard.Outcome.allCases.map { ($0.label, failedConnections[Int($0.rawValue)]) }
        }
        /// Worker exits by cause: `boot_failure`, `crash`, `recycled`, `deadline`.
        package var exits: [(cause: String, count: UInt64)] {
            [
                ("boot_failure", exitsBootFailure), ("crash", exitsCrash), ("recycled", exitsRecycled),
                ("deadline", exitsDeadline),
            ]
        }
        /// Workers killed past a deadline, by stage: `reading`, `handling`.
        package var deadlineKills: [(stage: String, count: UInt64)] {
            [("reading", killsReading), ("handling", killsHandling)]
        }
        /// Reloads by result: `committed`, `rolled_back`, `rejected`.
        package var reloads: [(result: String, count: UInt64)] {
            [("committed", reloadsCommitted), ("rolled_back", reloadsRolledBack), ("rejected", reloadsRejected)]
        }
        /// In-place upgrades by result: `completed`, `failed`.
        package var upgrades: [(result: String, count: UInt64)] {
            [("completed", upgradesCompleted), ("failed", upgradesFailed)]
        }
    }

    static func writeState(
        to header: UnsafeMutableRawPointer, generation: Int, retiredConnections: UInt64, counters: Counters,
        listening: [String]
    ) {
        header.storeBytes(of: UInt64(generation), toByteOffset: generationOffset, as: UInt64.self)
        header.storeBytes(of: retiredConnections, toByteOffset: retiredOffset, as: UInt64.self)
        for (index, value) in counters.values.enumerated() {
            header.storeBytes(of: value, toByteOffset: countersOffset + index * 8, as: UInt64.self)
        }
        var text = Array(listening.joined(separator: "\n").utf8.prefix(listeningCapacity))
        header.storeBytes(of: UInt32(text.count), toByteOffset: listeningLengthOffset, as: UInt32.self)
        text.withUnsafeMutableBytes {
            (header + listeningOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
        }
    }

    /// What a header says; nil when it is not a scoreboard of this layout.
    struct Contents {
        let supervisor: Int32
        let capacity: Int
        let startedAt: UInt64
        let generation: Int
        let retiredConnections: UInt64
        let counters: Counters
        let listening: [String]
    }

    static func read(_ header: UnsafeRawPointer) -> Contents? {
        guard header.load(fromByteOffset: magicOffset, as: UInt32.self) == magic,
            header.load(fromByteOffset: versionOffset, as: UInt32.self) == version
        else { return nil }
        let length = min(
            Int(header.load(fromByteOffset: listeningLengthOffset, as: UInt32.self)), listeningCapacity)
        let text = String(
            decoding: UnsafeRawBufferPointer(start: header + listeningOffset, count: length), as: UTF8.self)
        return Contents(
            supervisor: header.load(fromByteOffset: pidOffset, as: Int32.self),
            capacity: Int(header.load(fromByteOffset: capacityOffset, as: UInt32.self)),
            startedAt: header.load(fromByteOffset: startedOffset, as: UInt64.self),
            generation: Int(header.load(fromByteOffset: generationOffset, as: UInt64.self)),
            retiredConnections: header.load(fromByteOffset: retiredOffset, as: UInt64.self),
            counters: Counters(
                values: (0..<Counters.count).map {
                    header.load(fromByteOffset: countersOffset + $0 * 8, as: UInt64.self)
                }),
            listening: text.split(separator: "\n").map(String.init))
    }
}
