import ArgumentParser
import Glibc
import Prefork

/// One run of preforkd as a command line asks for it: the config file, `--check-config`, and
/// the text of each flag given. swift-argument-parser's ``PreforkdCommand`` and the plain reader
/// (``PlainCommandLine``) both produce one, so that the settings, the messages and the exit
/// status are the same either way.
struct Invocation {
    /// What a flag was given: its texts (each use of a repeatable one), or a toggle's state.
    enum FlagInput {
        case texts([String])
        case toggle(Bool?)
    }

    /// `--config FILE`.
    var config: String?
    /// `--check-config`.
    var checkConfig = false
    /// Each flag by its setting's key, in the order of the settings tables.
    var flags: [(key: String, input: FlagInput)] = []

    /// Validates the settings, then prints them (`--check-config`) or runs the server until it
    /// stops; exits with the status of the README's table.
    func run() throws {
        let settings: Settings
        do {
            settings = try loadSettings()
        } catch {
            throw fatal(error.source.isEmpty ? .usage : .configuration, error.description)
        }
        if checkConfig {
            print(settings.renderTOML(), terminator: "")
            return
        }
        let logger = LogSetup.bootstrap(level: settings.logLevel, format: settings.logFormat)
        // The loader's first call is the start-up's, in-process; later ones are reloads in the
        // running supervisor, which parses the file in a child so as not to keep TOMLKit's leak.
        let loads = LoadCount()
        let server = PreforkServer(logger: logger) { [self] in
            defer { loads.count += 1 }
            return try reloadSetup(isolated: loads.count > 0)
        }
        let status: PreforkExitCode
        do {
            status = try server.run()
        } catch {
            // One line on stderr, as for a bad flag (journald gets it through the stream too).
            throw fatal(error.exitCode, error.description)
        }
        if status != .success { throw ExitCode(status.rawValue) }
    }

    /// The setup at start and on each reload: the file again, the same command line on top.
    ///
    /// It changes nothing in the running process: the log level travels in the setup, and the
    /// engine applies it once the new generation takes over (a refused reload keeps the old one).
    /// `isolated` parses the file in a child process (``ConfigFile/apply(path:to:isolated:)``).
    func reloadSetup(isolated: Bool = false) throws -> ServerSetup {
        try loadSettings(isolated: isolated).makeSetup()
    }

    /// Defaults, then the config file, then the command line; validated.
    func loadSettings(isolated: Bool = false) throws(ConfigurationError) -> Settings {
        var settings = Settings()
        if let config {
            try ConfigFile.apply(path: config, to: &settings, isolated: isolated)
            do {
                try settings.validate()
            } catch {
                throw ConfigurationError(source: config, key: error.key, value: error.value, reason: error.reason)
            }
        }
        // The text of each flag given, by key: what a message about its value quotes.
        var given: [String: String] = [:]
        for (key, input) in flags {
            let flag = FlagSetting.named(key)
            let value: SettingValue
            switch input {
            case .texts(let texts) where !texts.isEmpty:
                var values: [SettingValue] = []
                for text in texts {
                    do {
                        values.append(try flag.parse(text))
                    } catch {
                        throw ConfigurationError(key: "--" + flag.flagName, value: text, reason: error.reason)
                    }
                }
                value = flag.isRepeatable ? .array(values) : values.last!
                given[key] = texts.joined(separator: " ")
            case .toggle(let on?):
                value = .boolean(on)
                given[key] = "\(on)"
            default:
                continue
            }
            do {
                try flag.apply(value, to: &settings)
            } catch {
                throw ConfigurationError(
                    key: "--" + flag.flagName, value: error.value?.plainText ?? given[key]!, reason: error.reason)
            }
        }
        do {
            try settings.validate()
        } catch {
            // Only a command-line value can be wrong now: name it as its flag (a handler's flag
            // also reaches the listener tables; the message names the flag all the same).
            var key = error.key
            for name in settings.listeners.keys where key.hasPrefix("listeners.\(name).") {
                key.removeFirst("listeners.\(name).".count)
            }
            guard let text = given[key] else { throw error }
            let flag = FlagSetting.named(key)
            // The text as typed ("0.0", not "0"), but the one address at fault of a list.
            let repeatable = flag.isRepeatable
            throw ConfigurationError(
                key: "--" + flag.flagName, value: repeatable ? error.value : text, reason: error.reason)
        }
        return settings
    }

    private func fatal(_ code: PreforkExitCode, _ message: String) -> ExitCode {
        let line = "preforkd: \(message)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
        return ExitCode(code.rawValue)
    }
}

/// How many times the server's loader has run: the first is at start-up, the rest are reloads.
private final class LoadCount {
    var count = 0
}
