import ForwardProtocols

// Shared by every fuzz target: the contract each probe keeps, checked on every input.

/// Stops the run with a message: libFuzzer reports it as a crash and saves the input.
func failure(_ message: String) -> Never {
    fatalError("invariant broken: \(message)")
}

/// Runs `body` over an exactly-sized heap copy of the first `count` bytes, so that AddressSanitizer
/// sees any read past the prefix (a slice of the fuzzer's own buffer would not trip it).
func withExactCopy<Result>(
    _ data: UnsafePointer<UInt8>, _ count: Int, _ body: (UnsafeRawBufferPointer) -> Result
) -> Result {
    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 1)
    defer { copy.deallocate() }
    if count > 0 { copy.copyMemory(from: UnsafeRawBufferPointer(start: data, count: count)) }
    return body(UnsafeRawBufferPointer(copy))
}

/// The contract every probe keeps, checked on the whole input and on a few of its prefixes:
/// `needMore` asks for more than it was given; a match or a refusal on a prefix is final (more
/// bytes never change it); and a match on the whole input was not ruled out by a prefix that
/// asked for more than the whole.
func checkProbe<Details: Equatable>(
    _ name: String, _ data: UnsafePointer<UInt8>, _ size: Int,
    _ probe: (UnsafeRawBufferPointer) -> ProbeResult<Details>
) {
    let whole = probe(UnsafeRawBufferPointer(start: data, count: size))
    if case .needMore(let atLeast) = whole, atLeast <= size {
        failure("\(name): needMore(\(atLeast)) for \(size) bytes")
    }
    if probe(UnsafeRawBufferPointer(start: data, count: size)) != whole { failure("\(name): not deterministic") }
    guard size > 0 else { return }
    var cuts = [size - 1, size / 2, Int(data[0]) % size]
    if size > 1 { cuts.append(Int(data[size - 1]) % size) }
    for cut in cuts {
        let part = withExactCopy(data, cut, probe)
        switch part {
        case .match, .noMatch:
            if part != whole { failure("\(name): prefix of \(cut) said \(part), \(size) bytes say \(whole)") }
        case .needMore(let atLeast):
            if atLeast <= cut { failure("\(name): needMore(\(atLeast)) for \(cut) bytes") }
            if case .match = whole, atLeast > size { failure("\(name): prefix asked for \(atLeast), \(size) matched") }
        }
    }
}
