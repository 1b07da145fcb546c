import Prefork

/// Prometheus metrics over HTTP/1.x: give a listener this handler (`[listeners.NAME] handler =
/// "metrics"`) and `GET /metrics` on it returns the pool's figures in the text exposition format
/// — the same scoreboard `preforkd status` reads: workers by stage, connections by outcome,
/// worker exits by cause, deadline kills by stage, reloads by result.
///
/// One request per connection (`Connection: close`); anything but `GET` or `HEAD` of `/metrics`
/// (or `/`) gets a 404 or 405.
public struct MetricsHandler: ConnectionHandler, BuiltInHandler {
    /// The name preforkd knows it by: `handler = "metrics"`.
    package static let name = "metrics"

    /// The metrics handler has no options.
    public struct Configuration: Sendable, Equatable, HandlerConfiguration {
        /// The defaults.
        public init() {}

        /// None.
        package static let settings = SettingsTable<Configuration>([])
    }

    /// The most bytes of a request head read before answering 431.
    static let maximumRequestHead = 8192

    /// A metrics handler.
    public init(configuration: Configuration = Configuration()) {}

    public mutating func handle(_ connection: Connection, initialData: Span<UInt8>, context: WorkerContext) throws {
        var head: [UInt8] = []
        for index in initialData.indices { head.append(initialData[index]) }
        var chunk = [UInt8](repeating: 0, count: 2048)
        while Self.endOfHead(head) == nil && head.count < Self.maximumRequestHead {
            let count = try connection.read(into: &chunk)
            if count == 0 { break }
            head += chunk[..<count]
        }
        let response: [UInt8]
        if let (method, path) = Self.requestLine(head) {
            if method != "GET" && method != "HEAD" {
                response = Self.response("405 Method Not Allowed", body: "only GET\n", head: false)
            } else if path == "/metrics" || path == "/" {
                response = Self.response(
                    "200 OK", body: Self.exposition(StatusReport.current()), head: method == "HEAD")
            } else {
                response = Self.response("404 Not Found", body: "try /metrics\n", head: method == "HEAD")
            }
        } else {
            response = Self.response("400 Bad Request", body: "not an HTTP/1 request\n", head: false)
        }
        try connection.write(response)
        connection.shutdown()
    }

    /// Where the blank line ending the request head is, if it came.
    private static func endOfHead(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 2 else { return nil }
        for index in 1..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            if bytes[index - 1] == UInt8(ascii: "\n") { return index }
            if index >= 3, bytes[index - 1] == UInt8(ascii: "\r"), bytes[index - 2] == UInt8(ascii: "\n") {
                return index
            }
        }
        return nil
    }

    /// The method and path of an HTTP/1.x request line.
    private static func requestLine(_ bytes: [UInt8]) -> (method: String, path: String)? {
        guard let end = bytes.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let line = String(decoding: bytes[..<end], as: UTF8.self)
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2].hasPrefix("HTTP/1.") else { return nil }
        let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        return (String(parts[0]), path)
    }

    private static func response(_ status: String, body: String, head: Bool) -> [UInt8] {
        let type = status.hasPrefix("200") ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
        let bytes = Array(body.utf8)
        var text = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(bytes.count)\r\n"
        text += "Connection: close\r\n\r\n"
        return Array(text.utf8) + (head ? [] : bytes)
    }

    /// `text` as a label value: backslash, double quote and line feed escaped.
    private static func labelValue(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// The Prometheus text exposition of `report` (an empty one without a scoreboard).
    static func exposition(_ report: StatusReport?) -> String {
        guard let report else { return "" }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { out += "\(name)\(sample.labels) \(sample.value)\n" }
        }
        let stages = ["starting", "accepting", "reading", "handling", "paused", "draining", "exiting"]
        family(
            "preforkd_workers", "gauge", "Worker processes by what they are doing.",
            stages.map { stage in ("{stage=\"\(stage)\"}", "\(report.workers.filter { $0.stage == stage }.count)") })
        family(
            "preforkd_connections_handled_total", "counter",
            "Connections handed to a handler with their first bytes.", [("", "\(report.totalConnections)")])
        family(
            "preforkd_connections_failed_total", "counter",
            "Connections that ended before their handler, or with its error, by outcome.",
            report.counters.outcomes.map { ("{outcome=\"\($0.label)\"}", "\($0.count)") })
        family(
            "preforkd_worker_exits_total", "counter", "Worker processes that ended unasked, by cause.",
            report.counters.exits.map { ("{cause=\"\($0.cause)\"}", "\($0.count)") })
        family(
            "preforkd_deadline_kills_total", "counter", "Workers killed past a deadline, by the stage they overstayed.",
            report.counters.deadlineKills.map { ("{stage=\"\($0.stage)\"}", "\($0.count)") })
        family(
            "preforkd_reloads_total", "counter", "Reloads (SIGHUP), by result.",
            report.counters.reloads.map { ("{result=\"\($0.result)\"}", "\($0.count)") })
        family(
            "preforkd_upgrades_total", "counter", "In-place upgrades (SIGUSR2), by result.",
            report.counters.upgrades.map { ("{result=\"\($0.result)\"}", "\($0.count)") })
        if !report.routes.isEmpty {
            family(
                "preforkd_route_connections_total", "counter", "Connections routed, by route (the forward handler's).",
                report.routes.map { ("{route=\"\(labelValue($0.name))\"}", "\($0.connections)") })
            family(
                "preforkd_route_connections_open", "gauge", "Routed connections open now (relayed), by route.",
                report.routes.map { ("{route=\"\(labelValue($0.name))\"}", "\($0.open)") })
        }
        family("preforkd_generation", "gauge", "The worker generation serving now.", [("", "\(report.generation)")])
        family(
            "preforkd_start_time_seconds", "gauge", "When the supervisor started, in seconds since the epoch.",
            [("", "\(report.startedAt)")])
        return out
    }
}
