// swift-tools-version:6.2
//
// preforkd — a systemd-native pre-fork TCP acceptor daemon.
//
// Module layout (each folder under Sources/ is one concern):
//   CPreforkShims    C wrappers for Linux calls Glibc's Swift module lacks (accept4, signalfd, …)
//   CSystemd         libsystemd, loaded with dlopen on first use (not linked: see its header)
//   SystemCalls      the syscall layer Systemd and Prefork share: errno rule, error type, addresses
//   Systemd          a reusable Swift API over libsystemd (no dependency on the engine)
//   Prefork          the engine: listeners, supervisor, workers, scoreboard, handler protocol
//   ForwardProtocols pure parsers of first bytes and of the PROXY protocol (no system calls)
//   PreforkHandlers  built-in handlers (echo, metrics, forward) and their registry
//   PreforkdCLI      the command line and the TOML configuration file
//   preforkd         the executable: a one-line main
import PackageDescription

/// Warnings are errors for the project's own code: "no warnings" is checked by every build.
let strict: [SwiftSetting] = [.treatAllWarnings(as: .error)]

let package = Package(
    name: "preforkd",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "preforkd", targets: ["preforkd"]),
        .library(name: "Prefork", targets: ["Prefork"]),
        .library(name: "PreforkHandlers", targets: ["PreforkHandlers"]),
        .library(name: "Systemd", targets: ["Systemd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .target(name: "CPreforkShims"),
        // Compiled against libsystemd-dev's headers; the library itself is dlopen'ed when used.
        .target(name: "CSystemd"),
        .target(
            name: "SystemCalls",
            dependencies: [
                "CPreforkShims",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                "SystemCalls",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Prefork",
            dependencies: [
                "CPreforkShims",
                "ForwardProtocols",
                "SystemCalls",
                "Systemd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PreforkHandlers",
            dependencies: [
                "CPreforkShims",
                "Prefork",
                "ForwardProtocols",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PreforkdCLI",
            dependencies: [
                "CPreforkShims",
                "Prefork",
                "PreforkHandlers",
                "Systemd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict,
            plugins: ["PackageVersion"]
        ),
        .executableTarget(name: "preforkd", dependencies: ["PreforkdCLI"], swiftSettings: strict),
        // `packageVersion` (what --version prints) from the top entry of packaging/debian/changelog.
        .plugin(name: "PackageVersion", capability: .buildTool(), path: "packaging/version-plugin"),
        .executableTarget(
            name: "UppercaseServer",
            dependencies: ["Prefork", .product(name: "Logging", package: "swift-log")],
            path: "Examples/UppercaseServer",
            swiftSettings: strict
        ),
        .executableTarget(
            name: "SystemdProbe",
            dependencies: ["Systemd"],
            path: "Tests/SystemdProbe",
            swiftSettings: strict
        ),
        // What every test suite shares: the daemon launcher, the notify receiver, clients, sockets,
        // journald, deadlines. Only test targets depend on it.
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(
            name: "SystemdTests",
            dependencies: ["Systemd", "CSystemd", "SystemdProbe", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(name: "SystemCallsTests", dependencies: ["SystemCalls", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "PreforkTests", dependencies: ["Prefork", "ForwardProtocols", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "PreforkHandlersTests",
            dependencies: ["PreforkHandlers", "Prefork", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(name: "PreforkdCLITests", dependencies: ["PreforkdCLI", "TestSupport"], swiftSettings: strict),
        .executableTarget(
            name: "HandlerFaultProbe",
            dependencies: ["Prefork", .product(name: "Logging", package: "swift-log")],
            path: "Tests/HandlerFaultProbe",
            swiftSettings: strict
        ),
        // Pure parsers of the forward handler's probes and of the PROXY protocol: bytes from
        // unauthenticated clients in, a decision out; fuzzed from Fuzz/ (standard library only).
        .target(name: "ForwardProtocols", swiftSettings: strict),
        .testTarget(name: "ForwardProtocolsTests", dependencies: ["ForwardProtocols"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            // The executables too, so that `swift test` builds the binaries the tests start.
            dependencies: ["preforkd", "UppercaseServer", "HandlerFaultProbe", "TestSupport"],
            swiftSettings: strict
        ),
    ]
)
