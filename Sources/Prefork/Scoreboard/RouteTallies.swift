internal import CPreforkShims

/// The status file's route counts, after the slots: for each route a handler sorts connections
/// into (``ConnectionHandler/routeNames``), the connections routed there in total and those still
/// open — what `STATUS=`, `preforkd status` and the metrics show per route.
///
/// The supervisor names the tallies before it forks a generation that uses them, and never
/// renames one, so a worker finds its routes' tallies by name without a lock; workers (and their
/// relay threads) only add to them, with atomics. A route dropped by a reload keeps its tally.
struct RouteTallies {
    /// Routes the file has room for; names beyond are not counted (and logged once).
    static let capacity = 64
    /// Bytes the region takes.
    static let size = capacity * MemoryLayout<pf_route_tally>.stride

    private let base: UnsafeMutablePointer<pf_route_tally>

    init(at memory: UnsafeMutableRawPointer) {
        base = memory.bindMemory(to: pf_route_tally.self, capacity: Self.capacity)
    }

    /// Names a tally for each of `names` that has none yet; returns the names left without one
    /// (the region is full).
    func register(_ names: [String]) -> [String] {
        var known = Set(entries.map(\.name))
        var next = (0..<Self.capacity).first { pf_route_tally_is_named(base + $0) == 0 } ?? Self.capacity
        var left: [String] = []
        for name in names where !known.contains(name) {
            guard next < Self.capacity else {
                left.append(name)
                continue
            }
            pf_route_tally_name(base + next, name)
            known.insert(name)
            next += 1
        }
        return left
    }

    /// The tally called `name`, for a worker to count into.
    func counter(named name: String) -> RouteCounter? {
        for index in 0..<Self.capacity where pf_route_tally_is_named(base + index) != 0 {
            if self.name(index) == name { return RouteCounter(tally: UnsafeMutableRawPointer(base + index)) }
        }
        return nil
    }

    /// Every named tally, in the order they were named.
    var entries: [RouteCount] {
        (0..<Self.capacity).filter { pf_route_tally_is_named(base + $0) != 0 }.map { index in
            RouteCount(
                name: name(index), connections: pf_route_tally_total(base + index),
                open: max(0, Int(pf_route_tally_open_count(base + index))))
        }
    }

    private func name(_ index: Int) -> String {
        withUnsafeBytes(of: base[index].name) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }
}

/// One route's figures in the status file.
package struct RouteCount: Sendable, Equatable {
    /// The route's name.
    package let name: String
    /// Connections routed there since the supervisor started.
    package let connections: UInt64
    /// Those still open.
    package let open: Int
}

/// A worker's handle on one route's tally in the status file (see
/// ``WorkerContext/routeCounter(named:)``); safe to use from any thread of the worker.
public struct RouteCounter: @unchecked Sendable {
    // A pf_route_tally in the shared mapping, which outlives every worker thread.
    private let tally: UnsafeMutableRawPointer

    init(tally: UnsafeMutableRawPointer) {
        self.tally = tally
    }

    /// One more connection routed there, now open.
    public func opened() {
        pf_route_tally_open(tally.assumingMemoryBound(to: pf_route_tally.self))
    }

    /// One of the route's connections has closed.
    public func closed() {
        pf_route_tally_close(tally.assumingMemoryBound(to: pf_route_tally.self))
    }
}
