/// What a probe concluded from the bytes a client has sent so far.
///
/// Probes are pure: they look only at the bytes they are given, never read past them, and answer
/// the same for the same bytes. A `match` or `noMatch` is final: more bytes never change it. A
/// caller that gets ``needMore(atLeast:)`` reads more (within its own byte cap and deadline) and
/// asks again with *all* the bytes received so far, from the first.
public enum ProbeResult<Details> {
    /// The bytes are this protocol; `details` is what the probe extracted.
    case match(Details)
    /// The bytes are not this protocol (or are malformed). More bytes will not change the answer.
    case noMatch
    /// The bytes so far are a valid beginning of this protocol, but undecided. A match needs at
    /// least this many bytes **in total** (always more than the probe was given), so a caller
    /// whose byte cap is smaller can give up at once; a refusal may come sooner.
    case needMore(atLeast: Int)
}

extension ProbeResult: Sendable where Details: Sendable {}
extension ProbeResult: Equatable where Details: Equatable {}

extension ProbeResult {
    /// The details of a match, or nil.
    public var details: Details? {
        if case .match(let details) = self { return details }
        return nil
    }

    /// The same answer with the details transformed.
    func map<Other>(_ transform: (Details) -> Other) -> ProbeResult<Other> {
        switch self {
        case .match(let details): return .match(transform(details))
        case .noMatch: return .noMatch
        case .needMore(let atLeast): return .needMore(atLeast: atLeast)
        }
    }
}
