// swift-tools-version:6.0
//
// swift-floor: floor.c in Swift — the least a pre-fork server written in Swift can do between
// exec and READY=1, built as preforkd ships (the Swift runtime linked statically, BIND_NOW). It
// splits preforkd's start-up into what the language runtime costs any Swift program and what
// preforkd itself adds (Benchmarks/Makefile's `startup` target runs it beside the C floor).
import PackageDescription

let package = Package(
    name: "swift-floor",
    targets: [.executableTarget(name: "swift-floor", path: "Sources/swift-floor")]
)
