// swift-tools-version:6.0
import PackageDescription

// One C target faces the OS (libbpf, libxdp, liburing, libnuma, socket shims): several system
// library modules that each include glibc headers clash in debug builds on this toolchain.
let systemLibraries: [LinkerSetting] = ["bpf", "xdp", "elf", "z", "uring", "numa", "pcre2-8"].map { .linkedLibrary($0) }

let package = Package(
    name: "Portcullis",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
        .executable(name: "portcullisd", targets: ["portcullisd"]),
        .executable(name: "portcullis-perf", targets: ["portcullis-perf"]),
        .executable(name: "portcullis-testbed", targets: ["portcullis-testbed"]),
        .library(name: "XDPFirewall", targets: ["XDPFirewall"]),
        .library(name: "LogTransport", targets: ["LogTransport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .target(
            name: "CPortcullis",
            linkerSettings: systemLibraries
        ),
        .target(
            name: "XDPFirewall",
            dependencies: ["CPortcullis"]
        ),
        .target(
            name: "LogTransport",
            dependencies: ["CPortcullis"]
        ),
        .target(
            name: "BanEngine",
            dependencies: ["CPortcullis"]
        ),
        .target(
            name: "PortcullisDaemon",
            dependencies: ["BanEngine", "LogTransport", "XDPFirewall", "CPortcullis"]
        ),
        .target(
            name: "PortcullisCommandLine",
            dependencies: [
                "LogTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "portcullis",
            dependencies: [
                "XDPFirewall",
                "LogTransport",
                "PortcullisCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "PerfReference",
            path: "perf/reference/c"
        ),
        .executableTarget(
            name: "portcullisd",
            dependencies: [
                "PortcullisDaemon",
                "PortcullisCommandLine",
                "XDPFirewall",
                "BanEngine",
                "LogTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "portcullis-perf",
            dependencies: [
                "XDPFirewall",
                "LogTransport",
                "BanEngine",
                "PortcullisDaemon",
                "PortcullisCommandLine",
                "PerfReference",
                "CPortcullis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "perf/portcullis-perf"
        ),
        .executableTarget(
            name: "portcullis-testbed",
            dependencies: [
                "XDPFirewall",
                "LogTransport",
                "PortcullisCommandLine",
                "CPortcullis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "transport-probe",
            dependencies: [
                "LogTransport",
                "PortcullisCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/TransportProbe"
        ),
        .target(
            name: "TestSupport",
            dependencies: ["XDPFirewall"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "XDPFirewallTests",
            dependencies: ["XDPFirewall", "CPortcullis", "TestSupport"]
        ),
        .testTarget(
            name: "BanEngineTests",
            dependencies: ["BanEngine"]
        ),
        .testTarget(
            name: "DaemonTests",
            dependencies: ["PortcullisDaemon", "BanEngine", "LogTransport", "XDPFirewall", "TestSupport"]
        ),
        .testTarget(
            name: "LogTransportTests",
            dependencies: ["LogTransport", "TestSupport"]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["XDPFirewall", "TestSupport"]
        ),
    ]
)
