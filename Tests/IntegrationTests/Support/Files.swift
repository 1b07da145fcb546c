import Foundation
import Glibc

/// A config file of a test's own, in the temporary directory; `remove()` deletes it.
struct TestConfigFile {
    let path = NSTemporaryDirectory() + "preforkd-config-\(UUID().uuidString.prefix(8)).toml"

    init(_ contents: String) throws { try write(contents) }

    /// Replaces the file's contents (atomically: a reload never reads half a file).
    func write(_ contents: String) throws {
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
    }

    func remove() { unlink(path) }
}

/// A `sockaddr_un` for `path`.
func unixSocketAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return address
}
