// swift-tools-version:6.0
import PackageDescription

// One C target faces the OS (libbpf, libxdp, liburing, libnuma, PCRE2, sd-journal, libmicrohttpd, libcurl, nats.c, socket shims): several system
// library modules that each include glibc headers clash in debug builds on this toolchain.
let systemLibraries: [LinkerSetting] = [
    "bpf", "xdp", "elf", "z", "uring", "numa", "pcre2-8", "systemd", "microhttpd", "curl", "nats",
].map {
    .linkedLibrary($0)
}
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let toml = Target.Dependency.product(name: "TOMLKit", package: "TOMLKit")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")

// The product: two programs and the libraries they are made of, laid out along a line's path
// (BUILD.md, "Layout"). The lab (testbed, perf harness, test helpers) is in Lab/ and is not a
// product; no product target depends on it.
let product: [Target] = [
    .target(
        name: "CPortcullis",
        cSettings: [.define("_GNU_SOURCE")],
        linkerSettings: systemLibraries
    ),
    .target(name: "PortcullisCore"),
    .target(name: "PortcullisSystem", dependencies: ["CPortcullis", "PortcullisCore"]),
    .target(name: "LogTransport", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    .target(name: "OffenceTable", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    .target(name: "XDPFirewall", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    // fail2ban's configuration and filters, read and matched as fail2ban does.
    .target(name: "Fail2ban", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    .target(
        name: "PortcullisDaemon",
        dependencies: ["PortcullisCore", "PortcullisSystem", "OffenceTable", "LogTransport", "XDPFirewall", "Fail2ban"]
    ),
    .target(
        name: "PortcullisConfiguration",
        dependencies: [
            "PortcullisDaemon", "PortcullisCrowdSec", "PortcullisFleet", "Fail2ban", "LogTransport", "PortcullisCore",
            "PortcullisSystem", toml,
        ]
    ),
    .target(name: "PortcullisControl", dependencies: ["CPortcullis", "PortcullisSystem"]),
    // CrowdSec: a bouncer of a Local API's decisions and a pusher of the jails' alerts (libcurl).
    .target(
        name: "PortcullisCrowdSec",
        dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem", "XDPFirewall", "PortcullisDaemon"]
    ),
    // The fleet: bans shared between hosts through a NATS JetStream key-value bucket (nats.c).
    .target(
        name: "PortcullisFleet",
        dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem", "XDPFirewall", "PortcullisDaemon"]
    ),
    // The Prometheus endpoint: swift-prometheus's registry and text format, libmicrohttpd's HTTP.
    .target(
        name: "PortcullisMetrics",
        dependencies: ["CPortcullis", "PortcullisDaemon", "PortcullisSystem", "XDPFirewall", prometheus]
    ),
    .target(
        name: "PortcullisCommandLine",
        dependencies: ["LogTransport", "PortcullisSystem", argumentParser]
    ),
    .executableTarget(
        name: "portcullis",
        dependencies: [
            "XDPFirewall", "LogTransport", "PortcullisCore", "PortcullisSystem", "PortcullisCommandLine", "Fail2ban",
            "PortcullisControl",
            argumentParser,
        ]
    ),
    .executableTarget(
        name: "portcullisd",
        dependencies: [
            "PortcullisDaemon", "PortcullisConfiguration", "PortcullisControl", "PortcullisCommandLine",
            "PortcullisCore", "PortcullisSystem", "XDPFirewall", "LogTransport", "PortcullisMetrics",
            "PortcullisCrowdSec", "PortcullisFleet", argumentParser,
        ]
    ),
]

// The lab: what measures and exercises the product. Its targets may use the product's; never the
// other way round.
let lab: [Target] = [
    .target(name: "CLab", path: "Lab/Sources/CLab"),
    .target(
        name: "XDPTesting",
        dependencies: ["XDPFirewall", "PortcullisCore", "PortcullisSystem", "CPortcullis", "CLab"],
        path: "Lab/Sources/XDPTesting"
    ),
    .executableTarget(
        name: "portcullis-testbed",
        dependencies: [
            "XDPTesting", "XDPFirewall", "LogTransport", "PortcullisCore", "PortcullisSystem", "PortcullisCommandLine",
            "CPortcullis", "CLab", argumentParser,
        ],
        path: "Lab/Sources/portcullis-testbed"
    ),
    .target(name: "PerfReference", path: "Lab/perf/reference/c"),
    .executableTarget(
        name: "portcullis-perf",
        dependencies: [
            "XDPTesting", "XDPFirewall", "LogTransport", "OffenceTable", "PortcullisCore", "PortcullisSystem",
            "PortcullisDaemon", "PortcullisCommandLine", "PerfReference", "CPortcullis", "Fail2ban",
            "PortcullisCrowdSec", "PortcullisFleet",
            argumentParser,
        ],
        path: "Lab/perf/portcullis-perf"
    ),
    .testTarget(
        name: "LabTests",
        dependencies: ["XDPTesting", "CLab", "CPortcullis", "TestSupport", "PortcullisCore"],
        path: "Lab/Tests/LabTests"
    ),
]

let tests: [Target] = [
    .executableTarget(
        name: "transport-probe",
        dependencies: ["LogTransport", "PortcullisCore", "PortcullisSystem", "PortcullisCommandLine", argumentParser],
        path: "Tests/TransportProbe"
    ),
    .target(
        name: "TestSupport", dependencies: ["XDPFirewall", "PortcullisSystem", "XDPTesting", "CPortcullis", "CLab"],
        path: "Tests/TestSupport"),
    .testTarget(name: "PortcullisCoreTests", dependencies: ["PortcullisCore", "PortcullisSystem", "XDPFirewall"]),
    .testTarget(name: "OffenceTableTests", dependencies: ["OffenceTable", "PortcullisCore"]),
    .testTarget(
        name: "CrowdSecTests",
        dependencies: ["PortcullisCrowdSec", "PortcullisCore", "PortcullisSystem", "XDPFirewall", "TestSupport"]
    ),
    .testTarget(
        name: "ConfigurationTests",
        dependencies: [
            "PortcullisConfiguration", "PortcullisDaemon", "LogTransport", "PortcullisCore", "TestSupport",
            "PortcullisFleet",
        ]
    ),
    .testTarget(name: "Fail2banTests", dependencies: ["Fail2ban", "PortcullisCore", "TestSupport"]),
    .testTarget(
        name: "XDPFirewallTests",
        dependencies: ["XDPFirewall", "XDPTesting", "PortcullisCore", "CPortcullis", "CLab", "TestSupport"]
    ),
    .testTarget(
        name: "DaemonTests",
        dependencies: [
            "PortcullisDaemon", "PortcullisConfiguration", "Fail2ban", "OffenceTable", "PortcullisCore",
            "PortcullisSystem", "LogTransport", "XDPFirewall", "XDPTesting", "TestSupport", "PortcullisMetrics",
            "PortcullisCrowdSec", "PortcullisFleet", "PortcullisControl",
        ]
    ),
    .testTarget(name: "LogTransportTests", dependencies: ["LogTransport", "PortcullisSystem", "TestSupport"]),
    .testTarget(name: "EndToEndTests", dependencies: ["XDPFirewall", "PortcullisCore", "TestSupport"]),
]

let package = Package(
    name: "Portcullis",
    products: [
        .executable(name: "portcullis", targets: ["portcullis"]),
        .executable(name: "portcullisd", targets: ["portcullisd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // The configuration file (toml++ underneath: TOML 1.0, with the line of a syntax error).
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // The metrics registry and Prometheus' text format (swift-atomics and swift-metrics underneath).
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: product + lab + tests
)
