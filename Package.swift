// swift-tools-version:6.2
//
// preforkd — a systemd-native pre-fork TCP acceptor daemon.
//
// Module layout (each folder under Sources/ is one concern):
//   CPreforkShims    C wrappers for Linux calls Glibc's Swift module lacks (accept4, signalfd, …)
//   CSystemd         libsystemd, linked through pkg-config
//   Systemd          a reusable Swift API over libsystemd (no dependency on the engine)
//   Prefork          the engine: listeners, supervisor, workers, scoreboard, handler protocol
//   PreforkHandlers  built-in handlers (echo)
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
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .target(
            name: "Systemd",
            dependencies: [
                "CSystemd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Prefork",
            dependencies: [
                "CPreforkShims",
                "Systemd",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PreforkHandlers",
            dependencies: [
                "Prefork",
                "CPreforkShims",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "PreforkdCLI",
            dependencies: [
                "Prefork",
                "PreforkHandlers",
                "Systemd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(name: "preforkd", dependencies: ["PreforkdCLI"], swiftSettings: strict),
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
        .testTarget(
            name: "SystemdTests",
            dependencies: ["Systemd", "CSystemd", "SystemdProbe"],
            swiftSettings: strict
        ),
        .testTarget(name: "PreforkTests", dependencies: ["Prefork"], swiftSettings: strict),
        .testTarget(
            name: "PreforkHandlersTests",
            dependencies: ["PreforkHandlers", "Prefork"],
            swiftSettings: strict
        ),
        .testTarget(name: "PreforkdCLITests", dependencies: ["PreforkdCLI"], swiftSettings: strict),
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
            dependencies: ["preforkd", "UppercaseServer", "HandlerFaultProbe"],
            swiftSettings: strict
        ),
    ]
)
