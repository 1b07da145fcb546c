import Foundation
import Glibc
import TestSupport
import Testing

/// The metrics handler on a listener of its own, read the way Prometheus reads it.
@Suite struct MetricsHandlerTests {
    /// One HTTP/1.1 request on a fresh connection; the whole response.
    static func get(_ path: String, port: UInt16, host: String) throws -> String {
        let client = try Client(host: host, port: port)
        defer { client.close() }
        try client.send("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nUser-Agent: test\r\n\r\n")
        return try client.readToEnd()
    }

    /// The samples of a text exposition, by name and labels; fails on any line that is neither a
    /// comment nor a well-formed sample, or a sample whose family has no TYPE line before it.
    static func samples(_ exposition: String) -> [String: Double] {
        var typed = Set<String>()
        var samples: [String: Double] = [:]
        let sample = /^([a-z_:][a-z0-9_:]*)(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? ([0-9.eE+-]+)$/
        for line in exposition.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") {
                typed.insert(String(line.split(separator: " ")[2]))
                continue
            }
            if line.hasPrefix("# HELP ") { continue }
            guard let match = line.wholeMatch(of: sample), let value = Double(match.4) else {
                Issue.record("not a sample: \(line)")
                continue
            }
            #expect(typed.contains(String(match.1)), "TYPE before \(match.1)")
            samples[String(match.1) + String(match.2 ?? "")] = value
        }
        return samples
    }

    @Test func servesTheScoreboardAsAPrometheusExposition() throws {
        let config = try TestConfigFile(
            """
            listen = ["127.0.0.1:0", "127.0.0.2:0"]
            workers = 2
            initial-timeout = 0.2
            defer-accept = false
            [listeners."127.0.0.2:0"]
            handler = "metrics"
            """)
        defer { config.remove() }
        let daemon = try Daemon(["--config", config.path])
        defer { daemon.stop() }
        try daemon.waitForReady()
        let (echo, metrics) = (try daemon.port(host: "127.0.0.1"), try daemon.port(host: "127.0.0.2"))
        for index in 0..<5 { _ = try Client.exchange(port: echo, "\(index)<EOF>") }
        // A client that sends nothing times out; a killed worker is a crash; a reload commits.
        let silent = try Client(port: echo)
        #expect(try silent.readToEnd() == "")
        silent.close()
        kill(daemon.workerPIDs()[0], SIGKILL)
        try waitUntil("a replacement worker") { daemon.workerPIDs().count == 2 }
        daemon.signal(SIGHUP)
        try waitUntil("READY=1 after the reload") {
            daemon.notify.poll(seconds: 0.05)
            return daemon.notify.count(of: "READY=1", from: daemon.pid) == 2
        }
        var values: [String: Double] = [:]
        try waitUntil("the supervisor to publish the reload") {
            let response = try Self.get("/metrics", port: metrics, host: "127.0.0.2")
            #expect(response.hasPrefix("HTTP/1.1 200 OK\r\n"))
            #expect(response.contains("Content-Type: text/plain; version=0.0.4"))
            let body = response.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            values = Self.samples(body)
            return values["preforkd_reloads_total{result=\"committed\"}"] == 1
        }
        #expect(values["preforkd_connections_failed_total{outcome=\"initial_read_timeout\"}"] == 1)
        #expect((values["preforkd_connections_handled_total"] ?? 0) >= 5)
        #expect(values["preforkd_worker_exits_total{cause=\"crash\"}"] == 1)
        #expect(values["preforkd_generation"] == 2)
        let stages = ["starting", "accepting", "reading", "handling", "paused", "exiting"]
        #expect(stages.compactMap { values["preforkd_workers{stage=\"\($0)\"}"] }.reduce(0, +) >= 2)
        #expect(try Self.get("/nothing", port: metrics, host: "127.0.0.2").hasPrefix("HTTP/1.1 404 "))
    }
}
