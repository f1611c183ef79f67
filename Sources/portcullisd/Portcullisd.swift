import ArgumentParser
import Glibc
import LogTransport
import PortcullisCommandLine
import PortcullisConfiguration
import PortcullisControl
import PortcullisCore
import PortcullisDaemon
import PortcullisMetrics
import PortcullisSystem
import XDPFirewall

@main
struct Portcullisd: ParsableCommand {
    /// The command line, after the `[daemon]` settings of `--config FILE` (so the flags override
    /// the file's).
    static func main() {
        let arguments = Array(CommandLine.arguments.dropFirst())
        do throws(ConfigurationError) {
            main(try withFileSettings(arguments))
        } catch {
            Console.fail("portcullisd: \(error)")
        }
    }

    /// `arguments` with the `[daemon]` settings of the file `--config` names before them.
    /// Each `[daemon]` value is parsed as its flag would be first, so that a bad one is named with
    /// its file, line and key (not as a command-line error).
    static func withFileSettings(_ arguments: [String]) throws(ConfigurationError) -> [String] {
        guard let path = configurationPath(in: arguments) else { return arguments }
        let file = try ConfigurationFile.load(path)
        for setting in file.daemonSettings {
            do {
                _ = try Portcullisd.parse(setting.arguments)
            } catch {
                let message =
                    Portcullisd.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                throw ConfigurationError(file: path, line: setting.line, key: setting.key, message)
            }
        }
        return file.daemonArguments + arguments
    }

    /// The value of `--config FILE` or `--config=FILE` (the last one, as for any option).
    static func configurationPath(in arguments: [String]) -> String? {
        var path: String?
        for (index, argument) in arguments.enumerated() {
            if argument == "--" { break }
            if argument == "--config", index + 1 < arguments.count { path = arguments[index + 1] }
            if argument.hasPrefix("--config=") { path = String(argument.dropFirst("--config=".count)) }
        }
        return path
    }

    static let configuration = CommandConfiguration(
        commandName: "portcullisd",
        abstract: "The Portcullis daemon: read offence lines, ban clients that cross the threshold in the XDP filter.",
        discussion: """
            Attaches the filter to --interface (or finds it attached), reuses the maps pinned in --pin-dir \
            and resumes the expiry of the bans in them, then runs its jails: each reads offence lines from \
            its source and bans a client that crosses its threshold; its packets are dropped in the driver. \
            Without --config or --fail2ban-config the flags make one jail, `default`: --threshold offences \
            on the transport ban for --ban-time seconds. With --config FILE, the file's [daemon] settings \
            are these flags by name (the command line overrides them) and its [jail.NAME] tables are the \
            jails; --fail2ban-config DIR adds the enabled jails of a fail2ban configuration. SIGHUP re-reads \
            the configuration (bans in force and the counts of unchanged jails are kept; a configuration \
            with an error is refused and the running one stays). SIGINT or SIGTERM stop it cleanly with a \
            summary; the filter and the bans stay in force. Under systemd (Type=notify) it says when it is \
            ready, reloading and stopping, and keeps the watchdog fed.
            """,
        version: PortcullisVersion.current)

    @Option(
        help: ArgumentHelp(
            "A configuration file (TOML): [daemon] settings (these flags by name), [defaults] and "
                + "[jail.NAME] tables.", valueName: "path"))
    var config: String?

    @Flag(
        help: "Check the configuration (file, jails, filters, flags) and exit: 0 if it is usable, else the first error."
    )
    var checkConfig = false

    @Option(
        help: ArgumentHelp(
            "A fail2ban configuration directory (jail.conf, jail.local, jail.d, filter.d): its enabled jails "
                + "run too, their actions replaced by XDP enforcement.", valueName: "path"))
    var fail2banConfig: String?

    @Option(
        help: ArgumentHelp(
            "Where jails find fail2ban filters by name (default: filter.d of --fail2ban-config, else "
                + "/etc/fail2ban/filter.d).", valueName: "path"))
    var filterDir: String?

    @Option(
        name: .customLong("interface"),
        help: "Network interface to protect (the filter is attached to it if it is not yet); repeatable, one required.")
    var interfaces: [String] = []

    @Option(help: "XDP attach mode when attaching: native, generic or auto.")
    var mode: AttachMode = .auto

    @OptionGroup var transport: TransportOptions

    @Option(help: "block (lossless: writers wait for the daemon, up to --block-timeout) or drop (never).")
    var readerPolicy: SlowReaderPolicy = .block

    @Option(help: "Offences that get a client banned (default 3); with jails, overrides each jail's maxretry.")
    var threshold: UInt32?

    @Option(
        help: ArgumentHelp(
            "Seconds a ban lasts, 0 for good (default 30); with jails, overrides each jail's bantime.",
            valueName: "seconds"))
    var banTime: UInt64?

    @Option(
        help: ArgumentHelp(
            "Offences further apart than this start a new count; 0 counts until the ban ends (default 0); "
                + "with jails, overrides each jail's findtime.", valueName: "seconds"))
    var findTime: UInt32?

    @Option(help: "Ban worker threads (shm: they share the rings; socket: they share the writers' connections).")
    var workers = 1

    @Option(help: ArgumentHelp("CPUs to pin the workers to, in turn, e.g. 2-5,8.", valueName: "list"))
    var cpus: String?

    @Option(help: "NUMA node for the offence table (default: the node of the first --cpus CPU).")
    var numaNode: Int?

    @Option(help: "Bins of the offence table (open addressing, 32 bytes each).")
    var tableBins = 6_000_011

    @Option(
        help: ArgumentHelp(
            "With --find-time 0: a client below the threshold not seen for this long gives "
                + "its table bin up to a new one.", valueName: "seconds"))
    var idleHorizon: UInt32 = 86_400

    @Option(
        help: ArgumentHelp(
            "Wake-up moderation: a worker that read few lines waits this long before it reads again, so that "
                + "lines coming one by one are read together (0: read each as it comes).", valueName: "microseconds"))
    var wakeDelay = DaemonConfiguration.defaultWakeDelayMicroseconds

    @Option(help: "Entries per ban map (IPv4 and IPv6) when the maps are created.")
    var mapEntries: UInt32?

    @Option(
        help: ArgumentHelp(
            "A fail2ban-style pattern with <HOST> where the address stands (repeatable); "
                + "replaces the built-in line format.", valueName: "regex"))
    var failregex: [String] = []

    @Option(
        help: ArgumentHelp(
            "A network never banned, e.g. 203.0.113.0/24 (repeatable); loopback always is.",
            valueName: "cidr"))
    var allow: [String] = []

    @Option(
        help: ArgumentHelp(
            "The shortest IPv4 prefix a blocklist, a CrowdSec decision or an operator's network ban (unless forced) "
                + "may install; shorter ones are refused and counted.", valueName: "length"))
    var minPrefixV4 = ListPolicy.listFloor.ipv4

    @Option(
        help: ArgumentHelp(
            "The shortest IPv6 prefix a blocklist, a CrowdSec decision or an operator's network ban (unless forced) "
                + "may install.", valueName: "length"))
    var minPrefixV6 = ListPolicy.listFloor.ipv6

    @Flag(help: "Put the filter back on an --interface when it is found detached (checked every 2 s).")
    var reattach = false

    @Flag(help: "Also ban this host's own addresses and default gateways (by default they never are).")
    var banHostAddresses = false

    @Option(help: "Steps one --failregex match may take; a line needing more counts as over the match limit.")
    var regexMatchLimit: UInt32 = 10_000

    @Option(help: "Longest line considered, in bytes; longer ones are counted and skipped.")
    var maxLine = 512

    @Option(help: ArgumentHelp("Print a one-line status every this many seconds (0: never).", valueName: "seconds"))
    var statusInterval: Double = 0

    @Option(name: .customLong("pin-dir"), help: ArgumentHelp("Where the filter's maps are pinned.", valueName: "path"))
    var pinDirectory = PinDirectory.defaultPath

    @Option(
        help: ArgumentHelp(
            "Append a line per ban and per lift to this file (TIME ban|unban ADDRESS).",
            valueName: "path"))
    var banLog: String?

    @Option(
        help: ArgumentHelp(
            "At exit, write the summary's counters and the process's CPU seconds here as JSON.",
            valueName: "path"))
    var summaryJson: String?

    @Option(
        help: ArgumentHelp(
            "Once the workers read, write what the daemon runs on here as JSON (replaced atomically).",
            valueName: "path"))
    var readyFile: String?

    @Option(
        help: ArgumentHelp(
            "Where the daemon keeps its place in a log file (file transport) across restarts.", valueName: "path"))
    var stateDir = "/var/lib/portcullis"

    @Option(help: ArgumentHelp("The filter object (portcullis.bpf.o).", valueName: "path"))
    var bpfObject: String?

    @Option(
        help: ArgumentHelp(
            "The control socket (portcullis status, ban, list, reload...); none: no control socket.",
            valueName: "path"))
    var control = ControlClient.defaultPath

    @Option(
        help: ArgumentHelp(
            "A group (name or number) whose members may use the control socket besides root.", valueName: "group"))
    var controlGroup: String?

    @Option(
        help: ArgumentHelp(
            "Serve Prometheus metrics over HTTP at ADDRESS:PORT (/metrics), e.g. 127.0.0.1:9617; none: off.",
            valueName: "address"))
    var metrics = "none"

    @Option(
        help: ArgumentHelp(
            "The IPv4 prefix lengths banned through the prefix hash (comma-separated, at most 4; default 24); "
                + "other lengths go to the CIDR trie. Changed only while no IPv4 prefix ban is in the maps.",
            valueName: "lengths"))
    var prefixLengthsV4: String?

    @Option(
        help: ArgumentHelp(
            "The IPv6 prefix lengths banned through the prefix hash (default 64,56,48).", valueName: "lengths"))
    var prefixLengthsV6: String?

    @Option(help: "Clients the ban history of escalating jails holds at most (the oldest go first).")
    var historyEntries = 100_000

    @Option(
        help: ArgumentHelp(
            "Seconds after its last ban that a client's history is forgotten (fail2ban's dbpurgeage).",
            valueName: "seconds"))
    var historyAge: UInt64 = 86_400

    func run() throws {
        do {
            if checkConfig {
                // What `serve` would refuse before touching anything, refused here too.
                guard !interfaces.isEmpty else { throw Self.interfaceRequired }
                let configuration = try checkedConfiguration(creatingStateDirectory: false)
                // What each file reader checks when it opens its file (type, owner, parents).
                for jail in configuration.effectiveJails {
                    for source in jail.sources where source.kind == .file {
                        do throws(TransportError) {
                            try FileReader.checkOpen(source.file)
                        } catch {
                            throw DaemonError.invalidSetting("jail \(jail.name): source: \(error)")
                        }
                    }
                }
                for interface in interfaces { _ = try Attachment.index(of: interface) }
                _ = try BPFObjectLocator().locate(explicit: bpfObject)
                try checkOutputDirectories()
                _ = try metricsEndpoint()
                _ = try prefixLengths()
                if let config {
                    for list in try BlocklistFeeds.settings(config: config) {
                        let networks = try BlocklistFeeds.read(list, config: config)
                        say("portcullisd: blocklist \(list.name): \(networks.count) entries in \(list.file)")
                    }
                }
                let jails = configuration.effectiveJails
                for jail in jails { say("portcullisd: " + jail.description) }
                for note in configuration.notes { say("portcullisd: note: \(note)") }
                say(
                    "portcullisd: configuration OK: \(jails.count) jail(s): "
                        + jails.map(\.name).joined(separator: ", "))
                return
            }
            try serve()
        } catch let error as DaemonError {
            fail(error.description)
        } catch let error as FirewallError {
            fail(error.description)
        } catch let error as SettingError {
            fail(error.description)
        } catch let error as ConfigurationError {
            fail(error.description)
        }
    }

    static let interfaceRequired = DaemonError.invalidSetting(
        "--interface is required (or interface = \"NAME\" in [daemon] of --config)")

    /// The files the daemon writes must have a writable directory.
    /// `--control-group` as a group id (a name is looked up in the group database).
    private func controlGroupID() throws(DaemonError) -> gid_t? {
        guard let controlGroup else { return nil }
        if let number = gid_t(controlGroup) { return number }
        guard let entry = getgrnam(controlGroup) else {
            throw DaemonError.invalidSetting(
                "--control-group \(controlGroup): no such group; give a group name or number")
        }
        return entry.pointee.gr_gid
    }

    /// `--prefix-lengths-v4/-v6` parsed: (family, lengths) for each given.
    private func prefixLengths() throws(DaemonError) -> [(IPAddress.Family, [Int])] {
        var result: [(IPAddress.Family, [Int])] = []
        for (flag, text, family) in [
            ("--prefix-lengths-v4", prefixLengthsV4, IPAddress.Family.ipv4),
            ("--prefix-lengths-v6", prefixLengthsV6, .ipv6),
        ] {
            guard let text else { continue }
            let full = IPNetwork.fullLength(family)
            let lengths = text.split(separator: ",").map { Int($0.filter { $0 != " " }) }
            guard !lengths.isEmpty, lengths.count <= 4,
                lengths.allSatisfy({ $0.map { (1..<full).contains($0) } ?? false })
            else {
                throw DaemonError.invalidSetting(
                    "\(flag) \(text): give 1 to 4 lengths of 1...\(full - 1), comma-separated (e.g. "
                        + (family == .ipv4 ? "24" : "64,56,48") + ")")
            }
            result.append((family, lengths.compactMap { $0 }))
        }
        return result
    }

    /// `--metrics` parsed (nil: none).
    private func metricsEndpoint() throws(DaemonError) -> MetricsEndpoint? {
        guard metrics != "none" else { return nil }
        do throws(MetricsError) {
            return try MetricsEndpoint(metrics)
        } catch {
            throw DaemonError.invalidSetting("--metrics: \(error)")
        }
    }

    private func checkOutputDirectories() throws(DaemonError) {
        for (option, path) in [("--summary-json", summaryJson), ("--ready-file", readyFile), ("--ban-log", banLog)] {
            if let path, access(directoryOf(path), W_OK) != 0 {
                throw DaemonError.invalidSetting("\(option) \(path): its directory is not writable")
            }
        }
    }

    private func fail(_ message: String) -> Never {
        Console.fail("portcullisd: \(message)")
    }

    /// The daemon's settings from the flags, the configuration file and the fail2ban files,
    /// checked: nothing is touched before this passes.
    /// - Parameter creatingStateDirectory: false for --check-config, which changes nothing.
    func checkedConfiguration(creatingStateDirectory: Bool = true) throws -> DaemonConfiguration {
        var configuration = DaemonConfiguration(transport: transport.configuration)
        configuration.threshold = threshold ?? 3
        configuration.banTime = banTime ?? 30
        configuration.findTime = findTime ?? 0
        configuration.workers = workers
        configuration.readerPolicy = readerPolicy
        configuration.cpus = try cpus.map { (list) throws(SettingError) in try CPUList.parse(list) } ?? []
        configuration.numaNode = numaNode
        configuration.tableBins = tableBins
        configuration.idleHorizon = idleHorizon
        configuration.wakeDelayMicroseconds = wakeDelay
        configuration.failRegexes = failregex
        var allowlist = Allowlist.loopback
        for network in allow { try allowlist.add(network) }
        configuration.allowlist = allowlist
        guard (0...32).contains(minPrefixV4), (0...128).contains(minPrefixV6) else {
            throw DaemonError.invalidSetting("--min-prefix-v4 takes 0 to 32, --min-prefix-v6 0 to 128")
        }
        configuration.shortestListPrefix = (minPrefixV4, minPrefixV6)
        configuration.maxLineLength = maxLine
        configuration.regexMatchLimit = regexMatchLimit
        configuration.protectHost = !banHostAddresses
        configuration.historyEntries = historyEntries
        configuration.historyAge = historyAge

        var jails: [JailConfiguration] = []
        let filterDirectory = filterDir ?? (fail2banConfig.map { $0 + "/filter.d" } ?? "/etc/fail2ban/filter.d")
        var definesJails = fail2banConfig != nil
        if let config {
            let file = try ConfigurationFile.load(config)
            definesJails = definesJails || file.definesJails
            jails += try file.jails(defaultSource: configuration.transport, filterDirectory: filterDirectory)
        }
        if let fail2banConfig {
            let imported = try Fail2banImport.jails(directory: fail2banConfig, defaultSource: configuration.transport)
            jails += imported.jails
            configuration.notes += imported.notes
        }
        if jails.isEmpty && definesJails {
            throw DaemonError.invalidSetting(
                "no enabled jail in " + ([config, fail2banConfig].compactMap { $0 }.joined(separator: " or "))
                    + "; enable one (enabled = true) or add a [jail.NAME] table")
        }
        // The jail flags given on the command line itself (not through [daemon], which the file's
        // jails do not follow) override every jail.
        let typed = (try? Portcullisd.parse(Array(CommandLine.arguments.dropFirst()))) ?? self
        for index in jails.indices {
            if let threshold = typed.threshold { jails[index].policy.threshold = threshold }
            if let banTime = typed.banTime { jails[index].policy.banTime = banTime }
            if let findTime = typed.findTime { jails[index].policy.findTime = findTime }
        }
        if !jails.isEmpty && !failregex.isEmpty {
            throw DaemonError.invalidSetting(
                "--failregex sets the filter of the jail the flags make, and the configuration has jails of its "
                    + "own: give the patterns in a jail (failregex = [...])")
        }
        configuration.jails = jails
        // A restarted daemon reads on from where the last one stopped in each file and journal, and escalation
        // remembers the bans it counts.
        let files = configuration.effectiveJails.filter {
            $0.sources.contains { $0.kind == .file || $0.kind == .journal }
        }
        let escalates = configuration.effectiveJails.contains { $0.escalation != nil }
        if !files.isEmpty || escalates {
            // Positions and history written to /proc or /sys go nowhere (or somewhere worse).
            if PseudoFileSystem.holds(stateDir) {
                throw DaemonError.invalidSetting(
                    "--state-dir \(stateDir): on /proc or /sys; give a directory on a real file system (e.g. /var/lib/portcullis)"
                )
            }
        }
        if (!files.isEmpty || escalates) && creatingStateDirectory {
            if mkdir(stateDir, 0o700) != 0 && errno != EEXIST || access(stateDir, W_OK) != 0 {
                throw DaemonError.invalidSetting(
                    "--state-dir \(stateDir): cannot create or write it (\(Errno(errno))); give a directory root can write"
                )
            }
        }
        func withPosition(_ source: TransportConfiguration) -> TransportConfiguration {
            var source = source
            switch source.kind {
            case .file:
                source.file.positionPath = stateDir + "/file-\(String(source.file.path.stableTag, radix: 16)).position"
            case .journal:
                // One cursor per journal and match: jails reading the same entries share it.
                let journal = (source.journal.directory ?? "system") + " " + source.journal.match
                source.journal.cursorPath = stateDir + "/journal-\(String(journal.stableTag, radix: 16)).cursor"
            case .shm, .socket, .syslog: break
            }
            return source
        }
        configuration.transport = withPosition(configuration.transport)
        for index in configuration.jails.indices {
            configuration.jails[index].sources = configuration.jails[index].sources.map(withPosition)
        }
        if escalates { configuration.historyPath = stateDir + "/ban-history.json" }
        try configuration.validate()
        if mapEntries == 0 { throw DaemonError.invalidSetting("--map-entries must be at least 1") }
        if !(statusInterval >= 0 && statusInterval <= 86_400) {
            throw DaemonError.invalidSetting("--status-interval must be 0 (never) to 86400 seconds")
        }
        return configuration
    }

    private func serve() throws {
        // The soft descriptor limit up to the hard one (systemd's default soft limit of 1024 is
        // meant for programs that still use select()): every source, peer and map holds some.
        Descriptors.raiseSoftLimit()
        // Everything is checked before the interface is touched: bad input changes nothing.
        guard !interfaces.isEmpty else { throw Self.interfaceRequired }
        var seen = Set<String>()
        let interfaces = self.interfaces.filter { seen.insert($0).inserted }
        let configuration = try checkedConfiguration()
        for interface in interfaces { _ = try Attachment.index(of: interface) }
        let objectPath = try BPFObjectLocator().locate(explicit: bpfObject)
        try checkOutputDirectories()
        let controlGroupID = try controlGroupID()
        let metricsEndpoint = try metricsEndpoint()
        let prefixLengths = try prefixLengths()
        let blocklists = BlocklistFeeds()
        // The file's lists, [crowdsec] and [fleet], read once (its jails and flags are in `configuration`).
        let file = try config.map { (path) throws(ConfigurationError) in try ConfigurationFile.load(path) }
        let blocklistSettings = file?.blocklists ?? []
        let crowdsecSettings = file?.crowdsec
        let fleetSettings = file?.fleet
        let fleet = FleetLink(stateDirectory: stateDir)
        let crowdsec = CrowdSecLink { [fleet] changes, now, whole in
            fleet.publishDecisions(changes, now: now, whole: whole)
        }
        // Read and checked before the interface is touched; loaded once the maps are open.
        if let config { for list in blocklistSettings { _ = try BlocklistFeeds.read(list, config: config) } }
        let log = try banLog.map { (path) throws(DaemonError) in try BanLog(path: path) }
        let pins = PinDirectory(pinDirectory)

        // Block the stop signals (and SIGHUP) before attaching and before any thread starts (they
        // inherit the mask): a SIGTERM during the attach waits for its rollback or its end. A
        // reader gone from a pipe or socket is an error return, not our end.
        var signals = StopSignals(alsoWaitingFor: [SIGHUP])
        StopSignals.ignoreBrokenPipes()
        // The control socket is made before the interface is touched (a path in use refuses the
        // start); it answers once the daemon runs.
        let controlled = ControlledDaemon()
        var server: ControlServer?
        if control != "none" {
            do throws(ControlError) {
                server = try ControlServer(path: control, allowedGroup: controlGroupID) { controlled.handle($0) }
                server?.streamer = { controlled.stream($0, to: $1) }
            } catch {
                throw DaemonError.invalidSetting(error.description)
            }
            controlled.server = server
        }
        // The metrics endpoint too: a port in use refuses the start before anything is attached.
        var publishers: [BanPublisher] = (log.map { [$0] } ?? []) + [crowdsec, fleet]
        var metricsServer: MetricsServer?
        if let metricsEndpoint {
            let metrics = DaemonMetrics(version: PortcullisVersion.current)
            do throws(MetricsError) {
                metricsServer = try MetricsServer(endpoint: metricsEndpoint) {
                    metrics.render(controlled.metricsInputs())
                }
            } catch {
                server?.close()
                throw DaemonError.invalidSetting(error.description)
            }
            publishers.append(metrics)
        }
        // Every interface reads the same pinned maps: one ban drops on all of them.
        var outcomes: [(interface: String, outcome: Attachment.Outcome)] = []
        let daemon: Daemon
        let maps: BanMaps
        do {
            for interface in interfaces {
                outcomes.append(
                    (
                        interface,
                        try Attachment.attach(
                            interface: interface, objectPath: objectPath, pinDirectory: pins, mode: mode,
                            mapEntries: mapEntries)
                    ))
            }
            maps = try BanMaps.open(pinnedIn: pins)
            // The kernel ban installer, from the object the filter came from.
            if let problem = maps.loadInstaller(objectPath: objectPath) {
                say(
                    "portcullisd: the kernel ban installer cannot be used: \(problem); bans go in "
                        + "with one system call each (it needs a kernel with bpf_loop, 5.17 or later, and the "
                        + "portcullis.bpf.o of this build: tools/build-bpf)", to: STDERR_FILENO)
            }
            for (family, lengths) in prefixLengths { try maps.setPrefixLengths(lengths, family: family) }
            // The bans must reach the packets: the filter found on each interface reads these maps.
            for interface in interfaces where try Attachment.enforcement(of: maps, on: interface) == .otherMaps {
                throw DaemonError.firewall(
                    "the filter on \(interface) reads other maps than those pinned under \(pins): bans written "
                        + "there would drop nothing; pass the --pin-dir it was attached with, or detach it first "
                        + "(portcullis detach \(interface))")
            }
            // The alert pusher before the daemon: its first bans are alerts too.
            for line in try crowdsec.startAlerts(crowdsecSettings, jails: configuration) { say("portcullisd: " + line) }
            daemon = try Daemon(configuration: configuration, maps: maps, publishers: publishers)
            // The lists once the daemon knows its allowlist (what they must not drop).
            if let config {
                for line in try blocklists.load(
                    blocklistSettings, config: config, maps: maps, policy: daemon.listPolicy)
                {
                    say("portcullisd: " + line)
                }
            }
            // The fleet before the workers too (their first bans are put), with the allowlist the
            // other hosts' bans are not enforced in.
            for line in try fleet.start(
                fleetSettings, daemon: configuration, maps: maps, allowlist: daemon.driverAllowlist)
            {
                say("portcullisd: " + line)
            }
            try daemon.start()
        } catch {
            fleet.stop()
            crowdsec.stop()
            server?.close()
            metricsServer?.close()
            // Nothing half-attached, nothing newly pinned left behind.
            for (interface, outcome) in outcomes where outcome.newlyAttached {
                try? Attachment.detach(interface: interface)
            }
            if let first = outcomes.first?.outcome, !first.reusedPinnedMaps { try? pins.removeMaps() }
            throw error
        }
        for (interface, outcome) in outcomes {
            say(
                "portcullisd: \(outcome.newlyAttached ? "attached to" : "found the filter on") \(interface) "
                    + "(\(outcome.mode.rawValue) mode, maps under \(pins))")
        }
        let outcome = outcomes[0].outcome
        say(
            "portcullisd: resumed \(daemon.resumedBans) bans; reading "
                + "with \(daemon.status.workers.count) worker(s) for \(daemon.jailNames.count) jail(s)")
        for line in daemon.jailDescriptions { say("portcullisd: " + line) }
        for note in daemon.notes { say("portcullisd: note: \(note)") }
        say("portcullisd: never banned: " + daemon.neverBanned.joined(separator: " "))
        say("portcullisd: allowlisted in the driver (passes any ban): \(daemon.driverAllowlist.count) network(s)")

        var ready: Ready?
        if let readyFile {
            ready = Ready(
                interface: interfaces[0], interfaces: interfaces, mode: outcome.mode.rawValue,
                newlyAttached: outcome.newlyAttached,
                pinDirectory: pins.path, resumedBans: daemon.resumedBans,
                transport: transport.transport.rawValue, workers: daemon.status.workers.count,
                jails: daemon.configuration.effectiveJails.map(\.name),
                pid: Int(getpid()), reloads: 0, metrics: metricsServer.map { $0.endpoint.url(port: $0.port) })
            writeReady(ready!)
        }
        controlled.started(daemon, maps: maps)
        controlled.crowdsec = crowdsec
        controlled.fleet = fleet
        do {
            for line in try crowdsec.startBouncer(crowdsecSettings, maps: maps, daemon: daemon) {
                say("portcullisd: " + line)
            }
        } catch {
            crowdsec.stop()
            fleet.stop()
            daemon.stop()
            server?.close()
            metricsServer?.close()
            throw DaemonError.invalidSetting("crowdsec: cannot start: \(error)")
        }
        let controlStop = StopFlag()
        let controlThread = try server.map { (server) throws -> SystemThread in
            do throws(Errno) {
                return try SystemThread.spawn { server.run(isStopping: { controlStop.isSet }) }
            } catch {
                throw DaemonError.invalidSetting("cannot start the control socket's thread: \(error)")
            }
        }
        if let server { say("portcullisd: control socket \(server.path)") }
        if let metricsServer {
            say("portcullisd: metrics at \(metricsServer.endpoint.url(port: metricsServer.port))")
            if !metricsServer.endpoint.isLoopback {
                say(
                    "portcullisd: note: the metrics are served beyond this host (\(metricsServer.endpoint.hostText)); "
                        + "restrict who reaches the port, or use 127.0.0.1", to: STDERR_FILENO)
            }
        }
        // systemd starts the units ordered after this one now: the filter is attached, the sources
        // are open, the workers read and the control socket answers.
        ServiceManager.ready(status: readyStatus(daemon, interfaces: interfaces))
        waitForStop(
            daemon, interfaces: interfaces, maps: maps, objectPath: objectPath, pins: pins, ready: ready,
            controlled: controlled, blocklists: blocklists, crowdsec: crowdsec, fleet: fleet, signals: &signals)
        crowdsec.stop()
        fleet.stop()
        _ = controlStop.set()
        controlled.stop()
        controlThread?.join()
        server?.close()
        metricsServer?.close()
    }

    /// Prints the status every --status-interval until SIGINT or SIGTERM, then stops the daemon
    /// and prints (and writes) its summary.
    private func waitForStop(
        _ running: Daemon, interfaces: [String], maps: BanMaps, objectPath: String, pins: PinDirectory,
        ready: Ready?, controlled: ControlledDaemon, blocklists: BlocklistFeeds, crowdsec: CrowdSecLink,
        fleet: FleetLink, signals: inout StopSignals
    ) {
        var daemon = running
        var ready = ready
        var previousLines: UInt64 = 0
        var nextStatus = SystemClock.monotonicSeconds() + statusInterval
        var enforced = [EnforcementWatch](repeating: EnforcementWatch(), count: interfaces.count)
        let descriptors = DescriptorWatch()
        var nextPinCheck = SystemClock.monotonicSeconds() + 2
        var pinFailure: String?
        // systemd's watchdog (WatchdogSec=) restarts a daemon whose main loop stops turning; it is fed
        // at least twice per interval.
        let watchdog = ServiceManager.watchdogInterval
        while true {
            if watchdog != nil { ServiceManager.keepAlive() }
            // Every 2 s at least: is the filter still there, reading our maps?
            var wait = statusInterval > 0 ? min(max(nextStatus - SystemClock.monotonicSeconds(), 0), 2) : 2
            if let watchdog { wait = min(wait, watchdog / 2) }
            let signal = signals.next(waitingSeconds: wait)
            if signal == SIGINT || signal == SIGTERM { break }
            if signal == SIGHUP {
                let previous = daemon
                let outcome: String
                ServiceManager.reloading()
                (daemon, outcome) = reload(daemon, maps: maps)
                // The configuration's lists too (one that cannot be read or has a bad line leaves
                // the lists in force as they were).
                if let config, daemon !== previous {
                    // The file once more, for its lists, [crowdsec] and [fleet] (the reload read its jails).
                    let file = Result { () throws(ConfigurationError) in try ConfigurationFile.load(config) }
                    do {
                        let settings = try file.get().blocklists
                        for line in try blocklists.load(settings, config: config, maps: maps, policy: daemon.listPolicy)
                        {
                            say("portcullisd: SIGHUP: " + line)
                        }
                    } catch {
                        say(
                            "portcullisd: SIGHUP: blocklists not reloaded, those in force stay: "
                                + Portcullisd.message(for: error), to: STDERR_FILENO)
                    }
                    // And [crowdsec]: a changed table restarts the bouncer (which resynchronises)
                    // and the pusher; an unchanged one keeps them running.
                    do {
                        let settings = try file.get().crowdsec
                        for line in try crowdsec.startAlerts(settings, jails: daemon.configuration)
                            + crowdsec.startBouncer(settings, maps: maps, daemon: daemon)
                        {
                            say("portcullisd: SIGHUP: " + line)
                        }
                    } catch {
                        say(
                            "portcullisd: SIGHUP: crowdsec not reloaded: " + Portcullisd.message(for: error),
                            to: STDERR_FILENO)
                    }
                    // And [fleet]: a changed table replaces the node (which reads the bucket again).
                    do {
                        let settings = try file.get().fleet
                        for line in try fleet.start(
                            settings, daemon: daemon.configuration, maps: maps, allowlist: daemon.driverAllowlist)
                        {
                            say("portcullisd: SIGHUP: " + line)
                        }
                    } catch {
                        say(
                            "portcullisd: SIGHUP: fleet not reloaded: " + Portcullisd.message(for: error),
                            to: STDERR_FILENO)
                    }
                }
                ServiceManager.ready(status: readyStatus(daemon, interfaces: interfaces))
                controlled.reloaded(daemon, outcome: outcome)
                if daemon !== previous { previousLines = 0 }  // a new daemon counts from 0
                // Scripts that wait for a reload see it in the ready file.
                if daemon !== previous, var updated = ready {
                    updated.jails = daemon.jailNames
                    updated.resumedBans = daemon.resumedBans
                    updated.reloads += 1
                    writeReady(updated)
                    ready = updated
                }
                continue
            }
            if let config {
                for (line, error) in blocklists.reloadChanged(config: config, maps: maps, policy: daemon.listPolicy) {
                    say("portcullisd: " + line, to: error ? STDERR_FILENO : STDOUT_FILENO)
                }
            }
            for (index, interface) in interfaces.enumerated() {
                watchEnforcement(interface, maps, objectPath: objectPath, pins: pins, watch: &enforced[index])
            }
            if let line = descriptors.check() { say("portcullisd: " + line, to: STDERR_FILENO) }
            if SystemClock.monotonicSeconds() >= nextPinCheck {
                nextPinCheck = SystemClock.monotonicSeconds() + 2
                watchPins(maps, pins: pins, failure: &pinFailure)
            }
            guard statusInterval > 0, SystemClock.monotonicSeconds() >= nextStatus else { continue }
            nextStatus += statusInterval
            let status = daemon.status
            say("portcullisd: " + status.statusLine(previousLines: previousLines, interval: statusInterval))
            previousLines = status.total.lines
        }
        ServiceManager.stopping()
        daemon.stop()
        let status = daemon.status
        for line in status.summaryLines() { say("portcullisd: " + line) }
        if let summaryJson {
            let cpuSeconds = Double(SystemClock.processCPUNanoseconds()) / 1e9
            do throws(Errno) {
                try JSONOutput.write(status.summary(cpuSeconds: cpuSeconds), to: summaryJson)
            } catch {
                say("portcullisd: cannot write the summary to \(summaryJson): \(error)", to: STDERR_FILENO)
            }
        }
    }

    /// SIGHUP: reads the configuration again (file, fail2ban files, the same command line) and
    /// replaces the daemon by one that runs it. Bans in force stay (they are in the maps, and the
    /// new daemon resumes them); jails configured the same keep their counts. A configuration with
    /// an error is refused and the running daemon goes on.
    /// - Returns: the daemon now running, and what happened (the line said).
    private func reload(_ daemon: Daemon, maps: BanMaps) -> (daemon: Daemon, outcome: String) {
        let configuration: DaemonConfiguration
        do {
            let command = try Portcullisd.parse(
                try Portcullisd.withFileSettings(Array(CommandLine.arguments.dropFirst())))
            let restartOnly: [(String, String, String)] = [
                ("interface", interfaces.joined(separator: " "), command.interfaces.joined(separator: " ")),
                ("pin-dir", pinDirectory, command.pinDirectory),
                ("mode", "\(mode)", "\(command.mode)"),
                ("map-entries", "\(mapEntries ?? 0)", "\(command.mapEntries ?? 0)"),
                ("bpf-object", bpfObject ?? "", command.bpfObject ?? ""),
                ("ban-log", banLog ?? "", command.banLog ?? ""),
                ("state-dir", stateDir, command.stateDir), ("ready-file", readyFile ?? "", command.readyFile ?? ""),
                ("summary-json", summaryJson ?? "", command.summaryJson ?? ""),
                ("status-interval", "\(statusInterval)", "\(command.statusInterval)"),
                ("reattach", "\(reattach)", "\(command.reattach)"),
                ("history-entries", "\(historyEntries)", "\(command.historyEntries)"),
                ("history-age", "\(historyAge)", "\(command.historyAge)"),
                ("control", control, command.control),
                ("control-group", controlGroup ?? "", command.controlGroup ?? ""),
                ("metrics", metrics, command.metrics),
                ("prefix-lengths-v4", prefixLengthsV4 ?? "", command.prefixLengthsV4 ?? ""),
                ("prefix-lengths-v6", prefixLengthsV6 ?? "", command.prefixLengthsV6 ?? ""),
            ]
            if let changed = restartOnly.first(where: { $0.1 != $0.2 }) {
                throw DaemonError.invalidSetting(
                    "\(changed.0) changed (\(changed.1) → \(changed.2)): restart to apply it")
            }
            configuration = try command.checkedConfiguration()
        } catch {
            let outcome = "configuration refused, the running one stays: \(Portcullisd.message(for: error))"
            say("portcullisd: SIGHUP: " + outcome, to: STDERR_FILENO)
            return (daemon, outcome)
        }
        // The new daemon is made while the old one runs (a configuration it refuses changes
        // nothing); it takes over the readers of the sources configured the same, then opens the
        // others once the old one has let go. A source that cannot be opened is degraded: its
        // jails read nothing from it until a reload opens it, and every other jail goes on.
        let next: Daemon
        do {
            next = try Daemon(configuration: configuration, maps: maps, publishers: daemon.publishers, keeping: daemon)
        } catch {
            let outcome = "configuration refused, the running one stays: \(Portcullisd.message(for: error))"
            say("portcullisd: SIGHUP: " + outcome, to: STDERR_FILENO)
            return (daemon, outcome)
        }
        daemon.stop(handingOverTo: next)
        do {
            try next.start()
        } catch {
            // No source at all could be opened, or no thread started: nothing would read, and a
            // daemon that goes on running would keep its supervisor from acting.
            say(
                "portcullisd: SIGHUP: cannot run the new configuration (\(Portcullisd.message(for: error))): "
                    + "no jail reads; exiting so the service manager restarts portcullisd (bans in force stay)",
                to: STDERR_FILENO)
            Glibc.exit(1)
        }
        var outcome =
            "reloaded: \(next.jailNames.count) jail(s), counts kept in "
            + "\(next.keptJails.isEmpty ? "none" : next.keptJails.joined(separator: ", ")); "
            + "\(next.keptSources.count) of \(next.keptSources.count + next.openedSources) source(s) read on without a break; "
            + "resumed \(next.resumedBans) bans"
        if !next.degradedSources.isEmpty {
            outcome +=
                "; DEGRADED, not read: "
                + next.degradedSources.map { "\($0.label) (\($0.reason))" }.joined(separator: "; ")
        }
        say("portcullisd: SIGHUP: " + outcome, to: next.degradedSources.isEmpty ? STDOUT_FILENO : STDERR_FILENO)
        for line in next.jailDescriptions { say("portcullisd: " + line) }
        return (next, outcome)
    }

    /// What the main loop last found on an interface.
    struct EnforcementWatch {
        var state: Attachment.Enforcement = .enforced
        /// Why the last check could not be made (said once until a check succeeds again).
        var failure: String?
    }

    /// Says when the bans stop (or start again) reaching the packets, and with --reattach puts the
    /// filter back. A check that could not be made (no descriptor left, a BPF call refused) is
    /// said as such, once, and changes nothing: it is not "detached".
    private func watchEnforcement(
        _ interface: String, _ maps: BanMaps, objectPath: String, pins: PinDirectory, watch: inout EnforcementWatch
    ) {
        let previous = watch.state
        var now: Attachment.Enforcement
        do throws(FirewallError) {
            now = try Attachment.enforcement(of: maps, on: interface)
        } catch .unknownInterface {
            now = .notAttached  // the interface is gone: nothing filters its packets
        } catch {
            let text = "\(error)"
            if watch.failure != text {
                say(
                    "portcullisd: cannot check whether the filter on \(interface) reads our maps: \(text); "
                        + "it was \(previous == .enforced ? "enforcing" : "NOT enforcing") bans at the last check",
                    to: STDERR_FILENO)
            }
            watch.failure = text
            return
        }
        if watch.failure != nil {
            say("portcullisd: the filter on \(interface) can be checked again")
            watch.failure = nil
        }
        if now != previous {
            switch now {
            case .enforced:
                say("portcullisd: the filter on \(interface) reads our maps again: bans enforced")
            case .notAttached:
                say(
                    "portcullisd: the filter is no longer attached to \(interface): bans are NOT enforced; attach it "
                        + "again (portcullis attach \(interface) --pin-dir \(pins)) or run with --reattach",
                    to: STDERR_FILENO)
            case .otherMaps:
                say(
                    "portcullisd: the filter on \(interface) now reads other maps than \(pins): bans are NOT enforced",
                    to: STDERR_FILENO)
            }
        }
        watch.state = now
        guard now == .notAttached, reattach else { return }
        do {
            _ = try Attachment.attach(interface: interface, objectPath: objectPath, pinDirectory: pins, mode: mode)
            if (try? Attachment.enforcement(of: maps, on: interface)) == .enforced {
                watch.state = .enforced
                say("portcullisd: re-attached the filter to \(interface): bans enforced again")
            }
        } catch {
            if previous != .notAttached {
                say("portcullisd: cannot re-attach to \(interface): \(error)", to: STDERR_FILENO)
            }
        }
    }

    /// Every 2 s: the maps' pins are still where every other command (and the next start) looks
    /// for them; vanished ones (the directory removed, the BPF filesystem unmounted) are put back.
    private func watchPins(_ maps: BanMaps, pins: PinDirectory, failure: inout String?) {
        do throws(FirewallError) {
            let restored = try maps.restorePins()
            if !restored.isEmpty {
                say(
                    "portcullisd: \(restored.count) of the maps' pins had vanished from \(pins) (removed, or the BPF "
                        + "filesystem unmounted): pinned them again", to: STDERR_FILENO)
            }
            if failure != nil { say("portcullisd: the maps' pins in \(pins) are in order again") }
            failure = nil
        } catch {
            let text = "\(error)"
            if failure != text {
                say(
                    "portcullisd: the maps' pins in \(pins) are not in order: \(text); other commands and the next "
                        + "start may not find the maps in use", to: STDERR_FILENO)
            }
            failure = text
        }
    }

    /// The line `systemctl status portcullisd` shows once the daemon is ready.
    private func readyStatus(_ daemon: Daemon, interfaces: [String]) -> String {
        "protecting \(interfaces.joined(separator: ", ")) with \(daemon.jailNames.count) jail(s): "
            + daemon.jailNames.joined(separator: ", ")
            + (daemon.degradedSources.isEmpty
                ? "" : "; DEGRADED, not read: " + daemon.degradedSources.map(\.label).joined(separator: ", "))
    }

    private func writeReady(_ ready: Ready) {
        guard let readyFile else { return }
        do throws(Errno) {
            try JSONOutput.write(ready, to: readyFile)
        } catch {
            say("portcullisd: cannot write the ready file \(readyFile): \(error)", to: STDERR_FILENO)
        }
    }

    /// `--ready-file`: what the daemon runs on, for scripts that wait for it (written again after
    /// each reload).
    struct Ready: Encodable {
        /// The first interface (as before several could be given).
        let interface: String
        let interfaces: [String]
        let mode: String
        let newlyAttached: Bool
        let pinDirectory: String
        var resumedBans: Int
        let transport: String
        let workers: Int
        var jails: [String]
        let pid: Int
        /// Reloads done (SIGHUP with a configuration that was taken).
        var reloads: Int
        /// The metrics URL (with the port picked for port 0), if served.
        let metrics: String?

        enum CodingKeys: String, CodingKey {
            case interface, interfaces, mode, newlyAttached = "newly_attached", pinDirectory = "pin_directory"
            case resumedBans = "resumed_bans", transport, workers, jails, pid, reloads, metrics
        }
    }

    private func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

func say(_ line: String, to fd: Int32 = STDOUT_FILENO) {
    Console.say(line, to: fd)
}

extension AttachMode: ExpressibleByArgument {}
