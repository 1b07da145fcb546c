internal import CPreforkShims
import Glibc
import SystemPackage

// In-place upgrade (SIGUSR2): the supervisor re-executes the binary at its path and stays the
// same process, so systemd's MainPID, the workers' parent and their parent-death signal all
// stay right (HAProxy's master re-exec, not nginx's or gunicorn's fork of a second master).
//
// 1. The old image runs the new binary once as a probe (`PREFORKD_UPGRADE_PROBE=NONCE`, the
//    same command line): it must load, parse the command line and the configuration, and answer
//    with the nonce and its scoreboard layout. A missing, non-executable or broken binary, a
//    script, a bad configuration or a layout the old workers' board does not have all fail here,
//    while the old image still runs: it logs, sends READY=1 with `STATUS=Upgrade failed: …` and
//    carries on.
// 2. Only when the pool is steady (no reload under way) does it exec, passing the listeners and
//    the scoreboard's descriptor (their FD_CLOEXEC cleared, and nothing else) and describing them
//    in `PREFORKD_UPGRADE`. The handled signals stay blocked across exec, so one that arrives in
//    the window stays pending and the new image's signalfd reads it.
// 3. The new image maps the same scoreboard, adopts every worker it lists as the generation that
//    serves, and starts its own generation beside them, as a reload does: the old workers are
//    told to stop only once the new generation is whole. If it cannot boot, the reload machinery
//    rolls back and the adopted workers go on serving (`STATUS=Upgrade failed: …`).

/// What an old image hands the new one across `exec`: the scoreboard (the table of running
/// workers, with the counters) and the listeners, as inherited descriptors.
struct UpgradeHandover {
    /// The environment variable that carries it (unset by the new image once read).
    static let variable = "PREFORKD_UPGRADE"
    /// Bumped when the text below changes meaning.
    static let format = "1"

    /// One listener as the old image had it.
    struct Entry {
        let fileDescriptor: Int32
        let origin: Listener.Origin
        let name: String
        let configured: ListenAddress?
        /// Its FDNAME when systemd's fd store holds a copy (the new image must not store it again).
        let storedName: String?
    }

    let scoreboard: Int32
    let statusFile: String?
    let listeners: [Entry]

    /// `format;scoreboard=FD;file=HEX;listener=FD,ORIGIN,NAMEHEX,CONFIGUREDHEX,STOREDHEX;…`
    /// (strings hex-encoded: addresses and unix paths may hold any separator).
    var encoded: String {
        var fields = [Self.format, "scoreboard=\(scoreboard)", "file=\(Self.hex(statusFile ?? ""))"]
        for entry in listeners {
            let parts = [
                "\(entry.fileDescriptor)", entry.origin.rawValue, Self.hex(entry.name),
                Self.hex(entry.configured?.description ?? ""), Self.hex(entry.storedName ?? ""),
            ]
            fields.append("listener=" + parts.joined(separator: ","))
        }
        return fields.joined(separator: ";")
    }

    init(scoreboard: Int32, statusFile: String?, listeners: [Entry]) {
        self.scoreboard = scoreboard
        self.statusFile = statusFile
        self.listeners = listeners
    }

    /// Parses ``encoded``; a startup failure naming the variable when it does not parse.
    init(parsing text: String) throws(StartupError) {
        func bad(_ what: String) -> StartupError {
            StartupError(.configuration, "\(Self.variable): \(what) in '\(text)'")
        }
        let fields = text.split(separator: ";", omittingEmptySubsequences: false).map(String.init)
        guard fields.first == Self.format else { throw bad("not format \(Self.format)") }
        var scoreboard: Int32?
        var file: String?
        var listeners: [Entry] = []
        for field in fields.dropFirst() {
            guard let equals = field.firstIndex(of: "=") else { throw bad("'\(field)' is no key=value") }
            let key = field[..<equals]
            let value = String(field[field.index(after: equals)...])
            switch key {
            case "scoreboard": scoreboard = Int32(value)
            case "file":
                guard let path = Self.unhex(value) else { throw bad("bad file") }
                file = path.isEmpty ? nil : path
            case "listener":
                let parts = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 5, let fd = Int32(parts[0]), let origin = Listener.Origin(rawValue: parts[1]),
                    let name = Self.unhex(parts[2]), let configured = Self.unhex(parts[3]),
                    let stored = Self.unhex(parts[4])
                else { throw bad("bad listener '\(value)'") }
                let address: ListenAddress?
                do {
                    address = configured.isEmpty ? nil : try ListenAddress(parsing: configured)
                } catch {
                    throw bad("\(error)")
                }
                listeners.append(
                    Entry(
                        fileDescriptor: fd, origin: origin, name: name, configured: address,
                        storedName: stored.isEmpty ? nil : stored))
            default: throw bad("unknown key '\(key)'")
            }
        }
        guard let scoreboard else { throw bad("no scoreboard") }
        self.init(scoreboard: scoreboard, statusFile: file, listeners: listeners)
    }

    /// The handover this process was started with, if any; the variable is unset at once, so
    /// that neither workers nor a later upgrade's probe see it.
    static func take() throws(StartupError) -> UpgradeHandover? {
        guard let pointer = getenv(variable) else { return nil }
        let text = String(cString: pointer)
        unsetenv(variable)
        return try UpgradeHandover(parsing: text)
    }

    /// The listeners, adopted: close-on-exec again, with the scoreboard's descriptor (a later
    /// probe must not inherit them).
    func adoptListeners() throws(StartupError) -> [Listener] {
        for fd in listeners.map(\.fileDescriptor) + [scoreboard] where pf_set_cloexec(fd, 1) != 0 {
            throw StartupError(
                .failure, "\(Self.variable): fd \(fd) was not passed: \(SystemCallError.current("fcntl"))")
        }
        return listeners.map {
            Listener(adopting: $0.fileDescriptor, name: $0.name, origin: $0.origin, configured: $0.configured)
        }
    }

    private static func hex(_ text: String) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in text.utf8 {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func unhex(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard bytes.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for index in stride(from: 0, to: bytes.count, by: 2) {
            guard let high = UInt8(String(decoding: bytes[index...index], as: UTF8.self), radix: 16),
                let low = UInt8(String(decoding: bytes[index + 1...index + 1], as: UTF8.self), radix: 16)
            else { return nil }
            out.append(high << 4 | low)
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The new binary's side of the probe: run with `PREFORKD_UPGRADE_PROBE=NONCE`, the engine loads
/// and validates its setup, prints one line and exits 0, binding and forking nothing.
enum UpgradeProbe {
    static let variable = "PREFORKD_UPGRADE_PROBE"

    /// The line a binary that can take over answers with: the nonce, and the scoreboard layout it
    /// would map (the old workers' board must be of that layout).
    static func answer(nonce: String) -> String {
        "preforkd upgrade probe \(nonce) layout \(ScoreboardHeader.version)"
    }

    /// The nonce, when this process is a probe.
    static var requestedNonce: String? { getenv(variable).map { String(cString: $0) } }

    /// Writes the answer to stdout.
    static func respond(nonce: String) {
        let line = answer(nonce: nonce) + "\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
    }
}

/// The old image's side: the probe in flight, and the exec.
struct UpgradeAttempt {
    /// The binary, as its path was when the supervisor started (what a package upgrade replaces).
    let path: String
    let probe: pid_t
    /// The read end of the probe's stdout.
    let output: Int32
    let nonce: String
    /// The probe is killed if it has not exited by then.
    let deadline: UInt64
    var timedOut = false
    /// The probe answered: exec once the pool is steady.
    var passed = false

    /// How long a probe may take.
    static let probeTimeoutNs: UInt64 = 10_000_000_000

    /// The path of the running binary: /proc/self/exe names the inode that runs, with
    /// " (deleted)" appended once a package upgrade replaced the file; the path without it is
    /// where the new binary is.
    static func executablePath() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        var path = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if path.hasSuffix(" (deleted)") { path.removeLast(" (deleted)".count) }
        return path
    }

    /// Starts the probe: `path` with the supervisor's own arguments and `PREFORKD_UPGRADE_PROBE`.
    static func start(path: String, arguments: [String]) -> Result<UpgradeAttempt, SystemCallError> {
        var fds: [Int32] = [-1, -1]
        guard pf_pipe2(&fds, O_CLOEXEC | O_NONBLOCK) == 0 else { return .failure(.current("pipe2")) }
        let nonce = "\(getpid())-\(Monotonic.now())"
        var child: pid_t = 0
        let result = withCStrings(arguments) { argv in
            withCStrings(environment(adding: "\(UpgradeProbe.variable)=\(nonce)")) { envp in
                pf_spawn_probe(path, argv, envp, fds[1], &child)
            }
        }
        close(fds[1])
        guard result == 0 else {
            close(fds[0])
            return .failure(SystemCallError("posix_spawn", path, errno: Errno(rawValue: result)))
        }
        return .success(
            UpgradeAttempt(
                path: path, probe: child, output: fds[0], nonce: nonce,
                deadline: Monotonic.now() + probeTimeoutNs))
    }

    /// Judges the reaped probe: nil when it answered as it should, else why not. Closes its pipe.
    func verdict(status: WaitStatus) -> String? {
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = bytes.withUnsafeMutableBytes { read(output, $0.baseAddress, $0.count) }
        close(output)
        let text = count > 0 ? String(decoding: bytes[..<count], as: UTF8.self) : ""
        let firstLine = text.split(separator: "\n").first.map(String.init) ?? ""
        if timedOut { return "\(path) did not answer the probe within \(PoolPolicy.seconds(Self.probeTimeoutNs)) s" }
        guard status == .exited(0) else { return "\(path) failed its probe (\(status))" }
        guard firstLine.hasPrefix("preforkd upgrade probe \(nonce) ") else {
            return "\(path) exited 0 but is no preforkd that can take over (answered '\(firstLine.prefix(80))')"
        }
        guard firstLine == UpgradeProbe.answer(nonce: nonce) else {
            return
                "\(path) maps another scoreboard layout (\(firstLine.split(separator: " ").last ?? "?"), this one \(ScoreboardHeader.version)); restart instead"
        }
        return nil
    }

    /// Replaces this process's image with `path`, passing `handover`. Returns only on failure,
    /// with the error; the listeners are close-on-exec again then.
    static func exec(path: String, arguments: [String], handover: UpgradeHandover) -> SystemCallError {
        let passed = handover.listeners.map(\.fileDescriptor) + [handover.scoreboard]
        for fd in passed { _ = pf_set_cloexec(fd, 0) }
        _ = withCStrings(arguments) { argv in
            withCStrings(environment(adding: "\(UpgradeHandover.variable)=\(handover.encoded)")) { envp in
                pf_execve(path, argv, envp)
            }
        }
        let error = SystemCallError.current("execve", path)
        for fd in passed { _ = pf_set_cloexec(fd, 1) }
        return error
    }

    /// This process's environment without any earlier upgrade variables, plus `entry`.
    private static func environment(adding entry: String) -> [String] {
        var result: [String] = []
        var cursor = environ
        while let pointer = cursor.pointee {
            let item = String(cString: pointer)
            if !item.hasPrefix(UpgradeHandover.variable + "=") && !item.hasPrefix(UpgradeProbe.variable + "=") {
                result.append(item)
            }
            cursor += 1
        }
        result.append(entry)
        return result
    }
}

/// Calls `body` with a NULL-terminated C array of `strings`, freed afterwards.
private func withCStrings<Result>(
    _ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result
) -> Result {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
