// The build-tool plugin that gives preforkd its version. The version lives in one place, the top
// entry of packaging/debian/changelog (what the Debian package's Version says); this plugin turns
// it into `let packageVersion = "…"` in the target it is applied to, before that target compiles,
// and again whenever the changelog changes.
import Foundation
import PackagePlugin

@main
struct PackageVersion: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let changelog = context.package.directoryURL.appending(path: "packaging/debian/changelog")
        let output = context.pluginWorkDirectoryURL.appending(path: "PackageVersion.swift")
        return [
            .buildCommand(
                displayName: "Taking the version from packaging/debian/changelog",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: ["-c", Self.script, "package-version", changelog.path, output.path],
                inputFiles: [changelog],
                outputFiles: [output]
            )
        ]
    }

    /// $1: the changelog, $2: the Swift file to write. The first line is `preforkd (VERSION) …`;
    /// anything else, or a version with characters Debian does not allow, fails the build.
    static let script = """
        set -eu
        version=$(sed -n '1s/^preforkd (\\([^)]*\\)) .*/\\1/p' "$1")
        case $version in
            ''|*[!0-9A-Za-z.+~:-]*)
                echo "$1:1: error: expected 'preforkd (VERSION) DISTRIBUTION; urgency=…'" >&2; exit 1 ;;
        esac
        printf '%s\\n' \\
            '// Generated from packaging/debian/changelog by packaging/version-plugin: do not edit.' \\
            '/// The version of preforkd: the top entry of packaging/debian/changelog.' \\
            "let packageVersion = \\"$version\\"" > "$2.tmp"
        mv "$2.tmp" "$2"
        """
}
