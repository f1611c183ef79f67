import ArgumentParser
import BanEngine
import Glibc
import LogTransport
import PortcullisCommandLine
import PortcullisDaemon
import XDPFirewall

@main
struct Portcullisd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullisd",
        abstract: "The Portcullis daemon: read offence lines, ban clients that cross the threshold in the XDP filter.",
        discussion: """
            Attaches the filter to --interface (or finds it attached), reuses the maps pinned in --pin-dir \
            and resumes the expiry of the bans in them, then reads offence lines from the transport. A client \
            with --threshold offences is banned for --ban-time seconds: its packets are dropped in the driver. \
            SIGINT or SIGTERM stop it cleanly with a summary; the filter and the bans stay in force.
            """)

    @Option(help: "Network interface to protect (the filter is attached to it if it is not yet).")
    var interface: String

    @Option(help: "XDP attach mode when attaching: native, generic or auto.")
    var mode: AttachMode = .auto

    @OptionGroup var transport: TransportOptions

    @Option(help: "Offences that get a client banned.")
    var threshold: UInt32 = 3

    @Option(help: ArgumentHelp("Seconds a ban lasts; 0 bans for good.", valueName: "seconds"))
    var banTime: UInt64 = 30

    @Option(help: ArgumentHelp("Offences further apart than this start a new count; 0 counts until the ban ends.",
                               valueName: "seconds"))
    var findTime: UInt32 = 0

    @Option(help: "Ban worker threads (shm: they share the rings; socket: they share the writers' connections).")
    var workers = 1

    @Option(help: ArgumentHelp("CPUs to pin the workers to, in turn, e.g. 2-5,8.", valueName: "list"))
    var cpus: String?

    @Option(help: "NUMA node for the offence table (default: the node of the first --cpus CPU).")
    var numaNode: Int?

    @Option(help: "Bins of the offence table (open addressing, 32 bytes each).")
    var tableBins = 6_000_011

    @Option(help: "Entries per ban map (IPv4 and IPv6) when the maps are created.")
    var mapEntries: UInt32?

    @Option(help: ArgumentHelp("A fail2ban-style pattern with <HOST> where the address stands (repeatable); "
                               + "replaces the built-in line format.", valueName: "regex"))
    var failregex: [String] = []

    @Option(help: ArgumentHelp("A network never banned, e.g. 203.0.113.0/24 (repeatable); loopback always is.",
                               valueName: "cidr"))
    var allow: [String] = []

    @Option(help: "Longest line considered, in bytes; longer ones are counted and skipped.")
    var maxLine = 512

    @Option(help: ArgumentHelp("Print a one-line status every this many seconds (0: never).", valueName: "seconds"))
    var statusInterval: Double = 0

    @Option(name: .customLong("pin-dir"), help: ArgumentHelp("Where the filter's maps are pinned.", valueName: "path"))
    var pinDirectory = PinDirectory.defaultPath

    @Option(help: ArgumentHelp("Append a line per ban and per lift to this file (TIME ban|unban ADDRESS).",
                               valueName: "path"))
    var banLog: String?

    @Option(help: ArgumentHelp("At exit, write the summary's counters and the process's CPU seconds here as JSON.",
                               valueName: "path"))
    var summaryJson: String?

    @Option(help: ArgumentHelp("The filter object (portcullis.bpf.o).", valueName: "path"))
    var bpfObject: String?

    func run() throws {
        do {
            try serve()
        } catch let error as DaemonError {
            fail(error.description)
        } catch let error as FirewallError {
            fail(error.description)
        } catch let error as EngineError {
            fail(error.description)
        }
    }

    private func fail(_ message: String) -> Never {
        say("portcullisd: \(message)", to: STDERR_FILENO)
        Glibc.exit(1)
    }

    private func serve() throws {
        // Everything is checked before the interface is touched: bad input changes nothing.
        var configuration = DaemonConfiguration(transport: transport.configuration)
        configuration.threshold = threshold
        configuration.banTime = banTime
        configuration.findTime = findTime
        configuration.workers = workers
        configuration.cpus = try cpus.map { try DaemonConfiguration.parseCPUList($0) } ?? []
        configuration.numaNode = numaNode
        configuration.tableBins = tableBins
        configuration.failRegexes = failregex
        var allowlist = Allowlist.loopback
        for network in allow { try allowlist.add(network) }
        configuration.allowlist = allowlist
        configuration.maxLineLength = maxLine
        try configuration.validate()
        if mapEntries == 0 { throw DaemonError.invalidSetting("--map-entries must be at least 1") }
        if statusInterval < 0 { throw DaemonError.invalidSetting("--status-interval must not be negative") }
        _ = try Attachment.index(of: interface)
        let objectPath = try BPFObjectLocator().locate(explicit: bpfObject)
        let log = try banLog.map { (path) throws(DaemonError) in try BanLog(path: path) }
        if let summaryJson, access(directoryOf(summaryJson), W_OK) != 0 {
            throw DaemonError.invalidSetting("--summary-json \(summaryJson): its directory is not writable")
        }
        let pins = PinDirectory(pinDirectory)

        let outcome = try Attachment.attach(interface: interface, objectPath: objectPath, pinDirectory: pins,
                                            mode: mode, mapEntries: mapEntries)
        let daemon: Daemon
        do {
            daemon = try Daemon(configuration: configuration, maps: try BanMaps.open(pinnedIn: pins))
        } catch {
            // Nothing half-attached, nothing newly pinned left behind.
            if outcome.newlyAttached { try? Attachment.detach(interface: interface) }
            if !outcome.reusedPinnedMaps { try? pins.removeMaps() }
            throw error
        }
        say("portcullisd: \(outcome.newlyAttached ? "attached to" : "found the filter on") \(interface) "
            + "(\(outcome.mode.rawValue) mode, maps under \(pins)); resumed \(daemon.resumedBans) bans; reading "
            + "\(transport.transport.rawValue) with \(daemon.status.workers.count) worker(s); "
            + "threshold \(threshold), ban time \(banTime == 0 ? "forever" : "\(banTime) s")")
        for note in daemon.notes { say("portcullisd: note: \(note)") }
        daemon.banLog = log

        // Block the stop signals before any thread starts (they inherit the mask); wait for them here.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        daemon.start()
        var previousLines: UInt64 = 0
        while true {
            let wait = statusInterval > 0 ? statusInterval : 3600
            var timeout = timespec(tv_sec: Int(wait), tv_nsec: Int((wait - wait.rounded(.down)) * 1e9))
            let signal = sigtimedwait(&signals, nil, &timeout)
            if signal == SIGINT || signal == SIGTERM { break }
            if statusInterval > 0 {
                say("portcullisd: " + daemon.statusLine(previousLines: previousLines, interval: statusInterval))
                previousLines = daemon.status.total.lines
            }
        }
        daemon.stop()
        for line in daemon.summaryLines() { say("portcullisd: " + line) }
        if let summaryJson { writeSummary(daemon.status, to: summaryJson) }
    }

    /// The exit summary as JSON, for scripts (the testbed's experiment runner reads it).
    private func writeSummary(_ status: DaemonStatus, to path: String) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let cpu = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
        let total = status.total
        let fields: [(String, String)] = [
            ("uptime_seconds", "\(status.uptime)"), ("cpu_seconds", "\(cpu)"), ("lines", "\(total.lines)"),
            ("matched", "\(total.matched)"), ("not_matching", "\(total.notMatching)"),
            ("invalid_address", "\(total.invalidAddress)"), ("too_long", "\(total.tooLong)"),
            ("allowlisted", "\(total.allowlisted)"), ("table_full", "\(total.tableFull)"), ("bans", "\(total.bans)"),
            ("unbans", "\(status.unbans)"), ("swept_unbans", "\(status.sweptUnbans)"),
            ("ban_failures", "\(total.banFailures)"), ("pending_retries", "\(status.pendingRetries)"),
            ("lines_lost", "\(status.linesLost)"), ("workers", "\(status.workers.count)"),
        ]
        let text = "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            say("portcullisd: cannot write the summary to \(path): \(String(cString: strerror(errno)))", to: STDERR_FILENO)
            return
        }
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    private func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}

/// Writes one line unbuffered (status lines must appear as they happen, also when piped).
func say(_ line: String, to fd: Int32 = STDOUT_FILENO) {
    let text = line + "\n"
    _ = text.withCString { write(fd, $0, strlen($0)) }
}

extension AttachMode: ExpressibleByArgument {}
