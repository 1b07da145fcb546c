/// A bounds-checked reader over bytes a client sent. Every read that would pass the end returns
/// nil instead, so a lying length field can only ever make a parse fail, never read out of bounds.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    private(set) var offset: Int
    let end: Int

    init(_ bytes: UnsafeRawBufferPointer, from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.end = min(end ?? bytes.count, bytes.count)
        self.offset = min(max(start, 0), self.end)
    }

    var remaining: Int { end - offset }
    var isAtEnd: Bool { offset == end }

    mutating func readUInt8() -> UInt8? {
        guard offset < end else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func readUInt16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readUInt24() -> Int? {
        guard remaining >= 3 else { return nil }
        defer { offset += 3 }
        return Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
    }

    mutating func readUInt32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        var value: UInt32 = 0
        for index in offset..<offset + 4 { value = value << 8 | UInt32(bytes[index]) }
        offset += 4
        return value
    }

    /// Skips `count` bytes; false (and no move) when fewer remain.
    mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, remaining >= count else { return false }
        offset += count
        return true
    }

    /// A cursor over the next `count` bytes, which this one then skips; nil when fewer remain.
    mutating func slice(_ count: Int) -> ByteCursor? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return ByteCursor(bytes, from: offset, to: offset + count)
    }
}

extension UnsafeRawBufferPointer {
    /// True when the bytes from `offset` start with `prefix` (false when they are shorter).
    func hasBytes(_ prefix: StaticString, at offset: Int) -> Bool {
        let length = prefix.utf8CodeUnitCount
        guard offset >= 0, count - offset >= length else { return false }
        let pattern = prefix.utf8Start
        for index in 0..<length where self[offset + index] != pattern[index] { return false }
        return true
    }

    /// How many of the leading bytes agree with `prefix`, comparing at most `count` bytes: the
    /// length of `prefix` when all of it is there, less when the bytes end early or differ.
    func matchedPrefixLength(_ prefix: StaticString, at offset: Int = 0) -> Int {
        let length = prefix.utf8CodeUnitCount
        let pattern = prefix.utf8Start
        var index = 0
        while index < length, offset + index < count, self[offset + index] == pattern[index] { index += 1 }
        return index
    }

    /// Index of the first `byte` in `start..<end`, or nil.
    func firstIndex(of byte: UInt8, from start: Int, to end: Int) -> Int? {
        var index = Swift.max(start, 0)
        let limit = Swift.min(end, count)
        while index < limit {
            if self[index] == byte { return index }
            index += 1
        }
        return nil
    }
}

extension UInt8 {
    /// ASCII lower case (other bytes unchanged).
    var asciiLowercased: UInt8 { self >= 0x41 && self <= 0x5A ? self | 0x20 : self }
    var isASCIIDigit: Bool { self >= 0x30 && self <= 0x39 }
    var isASCIILetter: Bool { (self | 0x20) >= 0x61 && (self | 0x20) <= 0x7A }
}

/// Runs `body` over the bytes of an array: the public `[UInt8]` entry points use it.
@inline(__always)
func withBytes<Result>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
    array.withUnsafeBytes(body)
}
