// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import LogTransport
import PortcullisCommandLine
import PortcullisControl
import PortcullisCore
import PortcullisDaemon
import XDPFirewall

/// `portcullisd`'s flags. The `[daemon]` table of `--config` sets them by name (the command line
/// overrides it); `ConfigurationLoader` reads them with the file and checks them.
public struct DaemonOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "A configuration file (TOML): [daemon] settings (these flags by name), [defaults] and "
                + "[jail.NAME] tables.", valueName: "path"))
    public var config: String?

    @Flag(
        help: "Check the configuration (file, jails, filters, flags) and exit: 0 if it is usable, else the first error."
    )
    public var checkConfig = false

    @Option(
        help: ArgumentHelp(
            "A fail2ban configuration directory (jail.conf, jail.local, jail.d, filter.d): its enabled jails "
                + "run too, their actions replaced by XDP enforcement.", valueName: "path"))
    public var fail2banConfig: String?

    @Option(
        help: ArgumentHelp(
            "Where jails find fail2ban filters by name that filter.d beside --config lacks (default: filter.d "
                + "of --fail2ban-config, else /etc/fail2ban/filter.d).", valueName: "path"))
    public var filterDir: String?

    @Option(
        name: .customLong("interface"),
        help: ArgumentHelp(
            "Network interface to protect (the filter is attached to it if it is not yet); repeatable. Default: "
                + "the interfaces that carry the default routes (IPv4 and IPv6)."))
    public var interfaces: [String] = []

    @Option(help: "XDP attach mode when attaching: native, generic or auto.")
    public var mode: AttachMode = .auto

    @OptionGroup public var transport: TransportOptions

    @Option(help: "block (lossless: writers wait for the daemon, up to --block-timeout) or drop (never).")
    public var readerPolicy: SlowReaderPolicy = .block

    @Option(help: "Offences that get a client banned (default 3); with jails, overrides each jail's maxretry.")
    public var threshold: UInt32?

    @Option(
        help: ArgumentHelp(
            "Seconds a ban lasts, 0 for good (default 30); with jails, overrides each jail's bantime.",
            valueName: "seconds"))
    public var banTime: UInt64?

    @Option(
        help: ArgumentHelp(
            "Offences further apart than this start a new count; 0 counts until the ban ends (default 0); "
                + "with jails, overrides each jail's findtime.", valueName: "seconds"))
    public var findTime: UInt32?

    @Option(
        help:
            "Ban worker threads (shm: they share the rings; socket: they share the writers' connections; a file: one tails it)."
    )
    public var workers = 1

    @Option(help: ArgumentHelp("CPUs to pin the workers to, in turn, e.g. 2-5,8.", valueName: "list"))
    public var cpus: String?

    @Option(help: "NUMA node for the offence table (default: the node of the first --cpus CPU).")
    public var numaNode: Int?

    @Option(help: "Bins of the offence table (open addressing, 32 bytes each).")
    public var tableBins = 6_000_011

    @Option(
        help: ArgumentHelp(
            "With --find-time 0: a client below the threshold not seen for this long gives "
                + "its table bin up to a new one.", valueName: "seconds"))
    public var idleHorizon: UInt32 = 86_400

    @Option(
        help: ArgumentHelp(
            "Wake-up moderation: a worker that read few lines waits this long before it reads again, so that "
                + "lines coming one by one are read together (0: read each as it comes).", valueName: "microseconds"))
    public var wakeDelay = DaemonConfiguration.defaultWakeDelayMicroseconds

    @Option(help: "Entries per ban map (IPv4 and IPv6) when the maps are created.")
    public var mapEntries: UInt32?

    @Option(
        help: ArgumentHelp(
            "A fail2ban-style pattern with <HOST> where the address stands (repeatable); "
                + "replaces the built-in line format.", valueName: "regex"))
    public var failregex: [String] = []

    @Option(
        help: ArgumentHelp(
            "A network never banned, e.g. 203.0.113.0/24 (repeatable); loopback always is.",
            valueName: "cidr"))
    public var allow: [String] = []

    @Option(
        help: ArgumentHelp(
            "The shortest IPv4 prefix a blocklist, a CrowdSec decision or an operator's network ban (unless forced) "
                + "may install; shorter ones are refused and counted.", valueName: "length"))
    public var minPrefixV4 = ListPolicy.listFloor.ipv4

    @Option(
        help: ArgumentHelp(
            "The shortest IPv6 prefix a blocklist, a CrowdSec decision or an operator's network ban (unless forced) "
                + "may install.", valueName: "length"))
    public var minPrefixV6 = ListPolicy.listFloor.ipv6

    @Flag(
        help: ArgumentHelp(
            "Put the filter back on an --interface when it is found detached (checked every 2 s); never one "
                + "the operator detached with portcullis detach."))
    public var reattach = false

    @Flag(help: "Also ban this host's own addresses and default gateways (by default they never are).")
    public var banHostAddresses = false

    @Option(help: "Steps one --failregex match may take; a line needing more counts as over the match limit.")
    public var regexMatchLimit: UInt32 = 10_000

    @Option(help: "Longest line considered, in bytes; longer ones are counted and skipped.")
    public var maxLine = 512

    @Option(help: ArgumentHelp("Print a one-line status every this many seconds (0: never).", valueName: "seconds"))
    public var statusInterval: Double = 0

    @Option(
        help: ArgumentHelp(
            "Say again every this many seconds what keeps the daemon DEGRADED (a filter detached, a source not "
                + "read, a companion down), while it lasts.", valueName: "seconds"))
    public var degradedWarningInterval: Double = 60

    @Option(name: .customLong("pin-dir"), help: ArgumentHelp("Where the filter's maps are pinned.", valueName: "path"))
    public var pinDirectory = PinDirectory.defaultPath

    @Option(
        help: ArgumentHelp(
            "Append a line per ban and per lift to this file (TIME ban|unban ADDRESS); reopened on SIGHUP and "
                + "SIGUSR1 (logrotate), and a reload may name another.",
            valueName: "path"))
    public var banLog: String?

    @Option(
        help: ArgumentHelp(
            "At exit, write the summary's counters and the process's CPU seconds here as JSON.",
            valueName: "path"))
    public var summaryJson: String?

    @Option(
        help: ArgumentHelp(
            "Once the workers read, write what the daemon runs on here as JSON (replaced atomically).",
            valueName: "path"))
    public var readyFile: String?

    @Option(
        help: ArgumentHelp(
            "Where the daemon keeps, across restarts, its place in each log file, its journal cursors, the ban "
                + "history of escalating jails and the fleet hosts it ignores.", valueName: "path"))
    public var stateDir = "/var/lib/portcullis"

    @Option(help: ArgumentHelp("The filter object (portcullis.bpf.o).", valueName: "path"))
    public var bpfObject: String?

    @Option(
        help: ArgumentHelp(
            "The control socket (portcullis status, ban, list, reload...); none: no control socket.",
            valueName: "path"))
    public var control = ControlClient.defaultPath

    @Option(
        help: ArgumentHelp(
            "A group (name or number) whose members may use the control socket besides root.", valueName: "group"))
    public var controlGroup: String?

    @Option(
        help: ArgumentHelp(
            "Serve Prometheus metrics over HTTP at ADDRESS:PORT (/metrics), e.g. 127.0.0.1:9617; none: off.",
            valueName: "address"))
    public var metrics = "none"

    @Option(
        help: ArgumentHelp(
            "The IPv4 prefix lengths banned through the prefix hash (comma-separated, at most 4; default 24); "
                + "other lengths go to the CIDR trie. Changed only while no IPv4 prefix ban is in the maps.",
            valueName: "lengths"))
    public var prefixLengthsV4: String?

    @Option(
        help: ArgumentHelp(
            "The IPv6 prefix lengths banned through the prefix hash (default 64,56,48).", valueName: "lengths"))
    public var prefixLengthsV6: String?

    @Option(help: "Clients the ban history of escalating jails holds at most (the oldest go first).")
    public var historyEntries = 100_000

    @Option(
        help: ArgumentHelp(
            "Seconds after its last ban that a client's history is forgotten (fail2ban's dbpurgeage).",
            valueName: "seconds"))
    public var historyAge: UInt64 = 86_400

    public init() {}

    /// The settings only a restart applies: a reload that changes one is refused.
    public var restartOnly: RestartOnlySettings {
        RestartOnlySettings(
            interface: interfaces, pinDir: pinDirectory, mode: mode, mapEntries: mapEntries ?? 0,
            bpfObject: bpfObject ?? "", stateDir: stateDir, readyFile: readyFile ?? "",
            summaryJson: summaryJson ?? "", statusInterval: statusInterval,
            degradedWarningInterval: degradedWarningInterval, reattach: reattach,
            historyEntries: historyEntries, historyAge: historyAge, control: control,
            controlGroup: controlGroup ?? "", metrics: metrics, prefixLengthsV4: prefixLengthsV4 ?? "",
            prefixLengthsV6: prefixLengthsV6 ?? "")
    }
}

/// The settings a reload cannot change (they are what the daemon attached, opened and pinned at
/// its start), named as their flags: compared whole at a reload, the first that differs is named in
/// the refusal. An absent value is "" (or 0), as the flag's default.
public struct RestartOnlySettings: Equatable, Sendable {
    public var interface: [String]
    public var pinDir: String
    public var mode: AttachMode
    public var mapEntries: UInt32
    public var bpfObject: String
    public var stateDir: String
    public var readyFile: String
    public var summaryJson: String
    public var statusInterval: Double
    public var degradedWarningInterval: Double
    public var reattach: Bool
    public var historyEntries: Int
    public var historyAge: UInt64
    public var control: String
    public var controlGroup: String
    public var metrics: String
    public var prefixLengthsV4: String
    public var prefixLengthsV6: String
}

extension AttachMode: ExpressibleByArgument {}
