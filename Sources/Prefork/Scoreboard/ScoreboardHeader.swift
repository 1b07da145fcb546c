internal import CPreforkShims
import Glibc

/// The page in front of the scoreboard's slots: who wrote it and what the pool serves, at fixed
/// offsets, so that `preforkd status` can read a running supervisor's board from its file.
///
/// Only the supervisor writes it; a reader may see a field mid-update, which for a status display
/// is harmless (the slots themselves are read with the same atomics the workers write with).
enum ScoreboardHeader {
    /// Bytes before the first slot.
    static let size = 4096
    /// "PFKD", then a layout version: a reader refuses anything else.
    static let magic: UInt32 = 0x444B_4650
    static let version: UInt32 = 1

    private static let magicOffset = 0
    private static let versionOffset = 4
    private static let pidOffset = 8
    private static let capacityOffset = 12
    private static let startedOffset = 16
    private static let generationOffset = 24
    private static let retiredOffset = 32
    private static let listeningLengthOffset = 40
    private static let listeningOffset = 44
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

    static func writeState(
        to header: UnsafeMutableRawPointer, generation: Int, retiredConnections: UInt64, listening: [String]
    ) {
        header.storeBytes(of: UInt64(generation), toByteOffset: generationOffset, as: UInt64.self)
        header.storeBytes(of: retiredConnections, toByteOffset: retiredOffset, as: UInt64.self)
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
            listening: text.split(separator: "\n").map(String.init))
    }
}
