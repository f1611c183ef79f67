// swift-tools-version:6.0
// SPDX-License-Identifier: Apache-2.0
import PackageDescription

// The C targets facing the OS, split by the libraries they link, so that each program links only
// what it uses (the CLI links neither libnuma, libmicrohttpd, libcurl nor nats.c). CPortcullis: the
// system headers, libbpf, libxdp, liburing, PCRE2 and libsystemd, with the shims every program needs.
// The daemon's libraries have a module each. Each of these modules includes glibc headers itself
// (CPortcullisHTTP <sys/socket.h>, CPortcullisNATS and CPortcullisNUMA through the library's
// header); imported together into one Swift module (PortcullisFleet: CPortcullis and
// CPortcullisNATS) they build in debug and release on this toolchain (Swift 6.3): the clash once seen
// with several system-library modules did not come back with C targets that each own one library.
let cTargets: [Target] = [
    .target(
        name: "CPortcullis",
        cSettings: [.define("_GNU_SOURCE")],
        linkerSettings: ["bpf", "xdp", "elf", "z", "uring", "pcre2-8", "systemd"].map { .linkedLibrary($0) }
    ),
    // The offence tables' placement (OffenceTable, PortcullisDaemon).
    .target(name: "CPortcullisNUMA", linkerSettings: [.linkedLibrary("numa")]),
    // The metrics endpoint's HTTP server (PortcullisMetrics).
    .target(name: "CPortcullisHTTP", linkerSettings: [.linkedLibrary("microhttpd")]),
    // The CrowdSec client's requests (PortcullisCrowdSec).
    .target(name: "CPortcullisCurl", linkerSettings: [.linkedLibrary("curl")]),
    // The fleet's bucket (PortcullisFleet).
    .target(name: "CPortcullisNATS", linkerSettings: [.linkedLibrary("nats")]),
]
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let toml = Target.Dependency.product(name: "TOMLKit", package: "TOMLKit")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")

// The product: two programs and the libraries they are made of, laid out along a line's path
// (BUILD.md, "Layout"). The lab (testbed, test helpers) is in Lab/ and the timing harness in perf/;
// neither is a product, and no product target depends on them.
let product: [Target] = [
    .target(name: "PortcullisCore"),
    .target(name: "PortcullisSystem", dependencies: ["CPortcullis", "PortcullisCore", logging]),
    .target(name: "LogTransport", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    .target(
        name: "OffenceTable", dependencies: ["CPortcullis", "CPortcullisNUMA", "PortcullisCore", "PortcullisSystem"]
    ),
    .target(name: "XDPFirewall", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    // fail2ban's configuration and filters, read and matched as fail2ban does.
    .target(name: "Fail2ban", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    .target(
        name: "PortcullisDaemon",
        dependencies: [
            "CPortcullisNUMA", "PortcullisCore", "PortcullisSystem", "OffenceTable", "LogTransport", "XDPFirewall",
            "Fail2ban",
        ]
    ),
    .target(
        name: "PortcullisConfiguration",
        dependencies: [
            "PortcullisDaemon", "PortcullisCrowdSec", "PortcullisFleet", "Fail2ban", "LogTransport", "PortcullisCore",
            "PortcullisSystem", toml, "PortcullisCommandLine", "PortcullisControl", "XDPFirewall", argumentParser,
        ]
    ),
    .target(name: "PortcullisControl", dependencies: ["CPortcullis", "PortcullisCore", "PortcullisSystem"]),
    // CrowdSec: a bouncer of a Local API's decisions and a pusher of the jails' alerts (libcurl).
    .target(
        name: "PortcullisCrowdSec",
        dependencies: ["CPortcullis", "CPortcullisCurl", "PortcullisCore", "PortcullisSystem", "XDPFirewall", logging]
    ),
    // The fleet: bans shared between hosts through a NATS JetStream key-value bucket (nats.c).
    .target(
        name: "PortcullisFleet",
        dependencies: ["CPortcullis", "CPortcullisNATS", "PortcullisCore", "PortcullisSystem", "XDPFirewall", logging]
    ),
    // The Prometheus endpoint: swift-prometheus's registry and text format, libmicrohttpd's HTTP.
    .target(
        name: "PortcullisMetrics",
        dependencies: [
            "CPortcullis", "CPortcullisHTTP", "PortcullisCore", "PortcullisDaemon", "PortcullisSystem", "XDPFirewall",
            prometheus,
        ]
    ),
    // The service: the supervisor and its components (the daemon, the firewall, the control
    // socket, the metrics endpoint, the companions), started in order, reloaded as one diff.
    .target(
        name: "PortcullisService",
        dependencies: [
            "PortcullisCore", "PortcullisSystem", "PortcullisConfiguration", "PortcullisDaemon", "PortcullisControl",
            "PortcullisMetrics", "PortcullisCrowdSec", "PortcullisFleet", "XDPFirewall", "LogTransport", logging,
        ]
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
            "PortcullisService", "PortcullisDaemon", "PortcullisConfiguration", "PortcullisCore", "PortcullisSystem",
            "XDPFirewall", "LogTransport", "PortcullisMetrics", argumentParser,
        ]
    ),
]

// The lab (Lab/) and the timing harness (perf/): what measures and exercises the product. Their
// targets may use the product's; never the other way round.
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
    .target(name: "PerfReference", path: "perf/reference/c"),
    .executableTarget(
        name: "portcullis-perf",
        dependencies: [
            "XDPTesting", "XDPFirewall", "LogTransport", "OffenceTable", "PortcullisCore", "PortcullisSystem",
            "PortcullisDaemon", "PortcullisCommandLine", "PerfReference", "CPortcullis", "CPortcullisNATS", "Fail2ban",
            "PortcullisCrowdSec", "PortcullisFleet",
            argumentParser, logging,
        ],
        path: "perf/portcullis-perf"
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
        name: "TestSupport",
        dependencies: ["XDPFirewall", "PortcullisSystem", "XDPTesting", "CPortcullis", "CPortcullisNATS", "CLab"],
        path: "Tests/TestSupport"),
    .testTarget(
        name: "PortcullisCoreTests", dependencies: ["PortcullisCore", "PortcullisSystem", "XDPFirewall", logging]),
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
    .testTarget(
        name: "ServiceTests",
        dependencies: [
            "PortcullisService", "PortcullisConfiguration", "PortcullisControl", "PortcullisCore", "PortcullisSystem",
        ]
    ),
    .testTarget(name: "Fail2banTests", dependencies: ["Fail2ban", "PortcullisCore", "TestSupport"]),
    .testTarget(
        name: "XDPFirewallTests",
        dependencies: [
            "XDPFirewall", "XDPTesting", "PortcullisCore", "PortcullisSystem", "CPortcullis", "CLab", "TestSupport",
        ]
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
        // swift-log's API (Logger, LogHandler): PortcullisSystem's ConsoleLogHandler writes it.
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: cTargets + product + lab + tests
)
