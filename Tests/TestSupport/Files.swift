import Foundation
import Glibc

/// A config file of a test's own, in the temporary directory; `remove()` deletes it.
public struct TestConfigFile: Sendable {
    public let path = NSTemporaryDirectory() + "preforkd-config-\(UUID().uuidString.prefix(8)).toml"

    public init(_ contents: String) throws { try write(contents) }

    /// Replaces the file's contents (atomically: a reload never reads half a file).
    public func write(_ contents: String) throws {
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
    }

    public func remove() { unlink(path) }
}

/// A name unique to this test process and moment, for sockets, journal identifiers and files.
public func uniqueName(_ prefix: String) -> String {
    "\(prefix)-\(getpid())-\(monotonicMicroseconds())-\(UInt32.random(in: 0...UInt32.max))"
}

/// Sets (or, with nil, unsets) environment variables for the duration of `body`, then restores them.
/// Only for tests in a serialized suite: the environment is shared by every test in the process.
@discardableResult
public func withEnvironment<T>(_ changes: [String: String?], _ body: () throws -> T) throws -> T {
    var saved: [String: String?] = [:]
    for (name, value) in changes {
        saved[name] = getenv(name).map { String(cString: $0) }
        if let value { setenv(name, value, 1) } else { unsetenv(name) }
    }
    defer {
        for (name, value) in saved {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
    }
    return try body()
}
