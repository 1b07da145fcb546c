import ArgumentParser
import Glibc
import Prefork

/// `preforkd status`: a running instance's scoreboard, read from the status file in its runtime
/// directory — per worker its pid, generation, stage and since when, connections and current
/// client; the listeners and totals. Needs read access to that file and nothing more.
public struct StatusCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "preforkd status",
        abstract: "Show a running preforkd's workers, listeners and connections.",
        discussion: """
            Reads the status file (RUNTIME-DIRECTORY/status) the running supervisor keeps its \
            scoreboard in. Exit status: 0 shown, 69 no running instance there.
            """)

    @Option(
        name: .long,
        help: ArgumentHelp(
            "The instance's runtime-directory (default: $RUNTIME_DIRECTORY, else /run/preforkd).",
            valueName: "dir"))
    var runtimeDirectory: String?

    @Flag(name: .long, help: "Print JSON instead of a table.")
    var json = false

    public init() {}

    public func run() throws {
        let directory = runtimeDirectory ?? ServerConfiguration.defaultRuntimeDirectory()
        let report: StatusReport
        do {
            report = try StatusReport.read(path: directory + "/status")
        } catch {
            let line = "preforkd status: \(error)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            throw ExitCode(PreforkExitCode.unavailable.rawValue)
        }
        print(json ? Self.json(report) : Self.table(report), terminator: "")
    }

    static func table(_ report: StatusReport) -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let up = UInt64(now.tv_sec) > report.startedAt ? UInt64(now.tv_sec) - report.startedAt : 0
        var lines = [
            "preforkd \(report.supervisor): up \(up / 60) min \(up % 60) s, generation \(report.generation), "
                + "\(report.totalConnections) connections served",
            "listening on " + report.listening.joined(separator: ", "),
            Self.row(["worker", "pid", "gen", "stage", "since", "connections", "peer"]),
        ]
        for worker in report.workers {
            lines.append(
                Self.row([
                    "\(worker.number)", "\(worker.pid)", "\(worker.generation)", worker.stage,
                    Self.seconds(worker.seconds), "\(worker.connections)", worker.peer ?? "",
                ]))
        }
        let count = { (stages: Set<String>) in report.workers.filter { stages.contains($0.stage) }.count }
        lines.append(
            "\(report.workers.count) workers: \(count(["accepting"])) idle, \(count(["reading", "handling"])) busy, "
                + "\(count(["starting"])) starting, \(count(["paused"])) paused, \(count(["draining"])) draining, "
                + "\(count(["exiting"])) exiting")
        if !report.routes.isEmpty {
            lines.append(
                "routes: "
                    + report.routes.map { "\($0.name) \($0.connections) (\($0.open) open)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Columns padded to fixed widths, the last one free.
    private static func row(_ cells: [String]) -> String {
        let widths = [6, 8, 4, 10, 8, 12]
        var line = ""
        for (index, cell) in cells.enumerated() {
            guard index < widths.count else {
                line += "  " + cell
                continue
            }
            line += (index == 0 ? "" : "  ") + String(repeating: " ", count: max(0, widths[index] - cell.count)) + cell
        }
        while line.hasSuffix(" ") { line.removeLast() }
        return line
    }

    /// "2.1s", "3m04s".
    private static func seconds(_ value: Double) -> String {
        if value < 60 {
            let tenths = Int((value * 10).rounded())
            return "\(tenths / 10).\(tenths % 10)s"
        }
        let whole = Int(value)
        let rest = whole % 60
        return "\(whole / 60)m\(rest < 10 ? "0" : "")\(rest)s"
    }

    static func json(_ report: StatusReport) -> String {
        func quoted(_ text: String) -> String { TextLogHandler.jsonString(text) }
        let workers = report.workers.map { worker in
            "{\"number\":\(worker.number),\"pid\":\(worker.pid),\"generation\":\(worker.generation),"
                + "\"stage\":\(quoted(worker.stage)),\"seconds\":\(worker.seconds),"
                + "\"connections\":\(worker.connections),\"peer\":\(worker.peer.map(quoted) ?? "null")}"
        }
        let routes = report.routes.map { route in
            "{\"name\":\(quoted(route.name)),\"connections\":\(route.connections),\"open\":\(route.open)}"
        }
        return "{\"supervisor\":\(report.supervisor),\"started_at\":\(report.startedAt),"
            + "\"generation\":\(report.generation),\"connections\":\(report.totalConnections),"
            + "\"listening\":[\(report.listening.map(quoted).joined(separator: ","))],"
            + "\"workers\":[\(workers.joined(separator: ","))],"
            + "\"routes\":[\(routes.joined(separator: ","))]}\n"
    }
}
