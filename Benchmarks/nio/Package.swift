// swift-tools-version:5.9
// SwiftNIO peer for the benchmark: same "echo <EOF>" protocol as preforkd's echo handler.
import PackageDescription

let package = Package(
    name: "nio-peer",
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "NIOEchoEOF",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ]
)
