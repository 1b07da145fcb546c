import SystemCalls
import Testing

@Suite struct MemmemTests {
    static let cases: [(haystack: String, needle: String, offset: Int?)] = [
        ("hello<EOF>", "<EOF>", 5),
        ("<EOF>", "<EOF>", 0),
        ("a<EOF>b<EOF>", "<EOF>", 1),
        ("hello<EOF", "<EOF>", nil),
        ("<EO", "<EOF>", nil),
        ("", "<EOF>", nil),
        ("anything", "", 0),
        ("", "", 0),
    ]

    @Test(arguments: cases)
    func findsTheFirstOccurrence(_ test: (haystack: String, needle: String, offset: Int?)) {
        let found = Array(test.haystack.utf8).withUnsafeBytes { haystack in
            Array(test.needle.utf8).withUnsafeBytes { needle in memmem(haystack, needle) }
        }
        #expect(found == test.offset)
    }

    @Test func searchesASliceOfALargerBuffer() {
        let bytes = Array("<EOF>xx<EOF>".utf8)
        let found = bytes.withUnsafeBytes { all in
            Array("<EOF>".utf8).withUnsafeBytes { memmem(UnsafeRawBufferPointer(rebasing: all[1...]), $0) }
        }
        #expect(found == 6)  // the second tag, counted from the slice's start
    }
}

@Suite struct MonotonicTests {
    @Test func neverGoesBackwards() {
        var previous = Monotonic.now()
        for _ in 0..<1_000 {
            let now = Monotonic.now()
            #expect(now >= previous)
            previous = now
        }
    }

    @Test func secondsToNanosecondsSaturates() {
        #expect(Monotonic.nanoseconds(1.5) == 1_500_000_000)
        #expect(Monotonic.nanoseconds(0) == 0)
        #expect(Monotonic.nanoseconds(-3) == 0)
        #expect(Monotonic.nanoseconds(1e30) == UInt64.max)
    }
}
