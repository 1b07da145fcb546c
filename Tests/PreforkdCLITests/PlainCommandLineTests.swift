import Testing

@testable import PreforkdCLI

@Suite struct PlainCommandLineTests {
    @Test func swiftArgumentParsersCommandReadsEveryFlag() throws {
        #expect(Set(try PreforkdCommand.parse([]).flagInputs.map(\.key)) == Set(FlagSetting.all.map(\.key)))
    }

    /// The plain reading and swift-argument-parser's give the same settings.
    func expectSameSettings(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let plain = try #require(PlainCommandLine.command(arguments), "\(arguments) is plain")
        let parsed = try PreforkdCommand.parse(arguments)
        #expect(try plain.loadSettings() == parsed.loadSettings(), "\(arguments)", sourceLocation: sourceLocation)
    }

    @Test func eachFlagReadsAsSwiftArgumentParserReadsIt() throws {
        for flag in FlagSetting.all {
            try expectSameSettings(try CommandLineTests().arguments(for: flag))
        }
    }

    @Test func aFullCommandLineReadsAsSwiftArgumentParserReadsIt() throws {
        let fixture = try ConfigFixture("workers = 3\n[echo]\nkeep-alive = true\n")
        defer { fixture.remove() }
        try expectSameSettings([])
        try expectSameSettings(["--listen", "127.0.0.1:0", "--workers", "4"])
        try expectSameSettings([
            "--fd-store", "--config", fixture.path, "--listen", "127.0.0.1:0", "--listen", "[::1]:9",
            "--no-echo-keep-alive", "--log-level", "debug", "--echo-idle-timeout", "3.75",
        ])
    }

    @Test func anythingElseIsLeftToSwiftArgumentParser() {
        for arguments in [
            ["--help"], ["--version"], ["--check-config"], ["-w", "3"], ["--workers=3"], ["--workers", "-1"],
            ["--workers"], ["--workers", "1", "--workers", "2"], ["--fd-store", "--no-fd-store"],
            ["--config", "a.toml", "--config", "b.toml"], ["--"], ["workers"], ["--no-workers"], ["--bogus", "1"],
            ["--generate-completion-script", "bash"],
        ] {
            #expect(PlainCommandLine.command(arguments) == nil, "\(arguments)")
        }
    }
}
