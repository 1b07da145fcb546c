import ForwardProtocols
import Glibc

/// Real first bytes captured from clients on loopback; they double as the fuzzers' seed corpus.
enum Fixture {
    /// The bytes of `Fuzz/corpus/<parser>/<name>`.
    static func bytes(_ parser: String, _ name: String, filePath: String = #filePath) -> [UInt8] {
        let root = filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let path = "/\(root)/Fuzz/corpus/\(parser)/\(name)"
        guard let file = fopen(path, "rb") else { fatalError("missing fixture \(path)") }
        defer { fclose(file) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = fread(&chunk, 1, chunk.count, file)
            if count <= 0 { break }
            contents.append(contentsOf: chunk[0..<count])
        }
        return contents
    }
}

extension ProbeResult {
    /// True for `.needMore` asking for more than `count` bytes (what a probe must say before it
    /// can answer on a prefix of `count` bytes).
    func asksForMore(than count: Int) -> Bool {
        if case .needMore(let atLeast) = self { return atLeast > count }
        return false
    }

    var isNoMatch: Bool {
        if case .noMatch = self { return true }
        return false
    }
}
