// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import LogTransport
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import PortcullisMetrics
import PortcullisService
import PortcullisSystem
import XDPFirewall

/// The daemon's command line; what it runs is `PortcullisService.DaemonService`.
@main
struct Portcullisd: ParsableCommand {
    /// The command line as given (the one place that reads `CommandLine`).
    static let arguments = Array(CommandLine.arguments.dropFirst())

    /// The command line, after the `[daemon]` settings of `--config FILE` (so the flags override
    /// the file's).
    static func main() {
        do throws(ConfigurationError) {
            main(try ConfigurationLoader(arguments: arguments).withFileSettings())
        } catch {
            Console.fail("portcullisd: \(error)")
        }
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
            with an error is refused and the running one stays) and reopens the ban log; SIGUSR1 reopens \
            the ban log alone (logrotate's signal). Each ban and unban is a line at NOTICE. SIGINT or SIGTERM stop it cleanly with a \
            summary; the filter and the bans stay in force. Under systemd (Type=notify) it says when it is \
            ready, reloading and stopping, and keeps the watchdog fed.
            """,
        version: PortcullisVersion.current)

    @OptionGroup var options: DaemonOptions

    func run() throws {
        do {
            if options.checkConfig {
                try checkConfiguration()
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

    /// `--check-config`: what `serve` would refuse before touching anything, refused here too.
    private func checkConfiguration() throws {
        let (interfaces, reason) = try options.protectedInterfaces()
        let configuration = try options.checkedConfiguration(
            typed: try? DaemonOptions.parse(Self.arguments), creatingStateDirectory: false)
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
        _ = try BPFObjectLocator().locate(explicit: options.bpfObject)
        try options.checkOutputDirectories(creating: false)
        _ = try metricsEndpoint()
        _ = try options.prefixLengths()
        if let config = options.config {
            for list in try BlocklistFeeds.settings(config: config) {
                let networks = try BlocklistFeeds.read(list, config: config)
                say("portcullisd: blocklist \(list.name): \(networks.count) entries in \(list.file)")
            }
        }
        say("portcullisd: would protect \(interfaces.joined(separator: ", ")) (\(reason))")
        let jails = configuration.effectiveJails
        for jail in jails { say("portcullisd: " + jail.description) }
        for note in configuration.notes { say("portcullisd: note: \(note)") }
        say("portcullisd: configuration OK: \(jails.count) jail(s): " + jails.map(\.name).joined(separator: ", "))
    }

    /// Everything is checked before the interface is touched (bad input changes nothing), then the
    /// service runs until SIGINT or SIGTERM.
    private func serve() throws {
        // The soft descriptor limit up to the hard one (systemd's default soft limit of 1024 is
        // meant for programs that still use select()): every source, peer and map holds some.
        Descriptors.raiseSoftLimit()
        // SIGINT, SIGTERM and SIGHUP blocked before any thread starts (threads inherit the mask; the
        // ban log's writer is the first): a SIGHUP that found a thread without them would end the
        // daemon, and a SIGTERM during the attach waits for its rollback or its end.
        let signals = SignalForwarder()
        let (interfaces, reason) = try options.protectedInterfaces()
        if options.interfaces.isEmpty {
            say("portcullisd: protecting \(interfaces.joined(separator: ", ")) (\(reason))")
        }
        let loader = ConfigurationLoader(arguments: Self.arguments)
        let configuration = try options.loaded(typed: try? DaemonOptions.parse(Self.arguments))
        for interface in interfaces { _ = try Attachment.index(of: interface) }
        let objectPath = try BPFObjectLocator().locate(explicit: options.bpfObject)
        try options.checkOutputDirectories(creating: true)
        let controlGroup = try options.controlGroupID()
        let metricsEndpoint = try metricsEndpoint()
        let prefixLengths = try options.prefixLengths()
        // Read and checked before the interface is touched; loaded once the maps are open.
        if let config = options.config {
            for list in configuration.blocklists { _ = try BlocklistFeeds.read(list, config: config) }
        }
        let banLog = try BanLog(path: options.banLog)
        let service = try DaemonService(
            options: options, interfaces: interfaces, objectPath: objectPath, controlGroup: controlGroup,
            metricsEndpoint: metricsEndpoint, prefixLengths: prefixLengths, banLog: banLog, signals: signals)
        try service.run(configuration, reloadingWith: loader)
    }

    /// `--metrics` parsed (nil: none).
    private func metricsEndpoint() throws(DaemonError) -> MetricsEndpoint? {
        guard options.metrics != "none" else { return nil }
        do throws(MetricsError) {
            return try MetricsEndpoint(options.metrics)
        } catch {
            throw DaemonError.invalidSetting("--metrics: \(error)")
        }
    }

    private func fail(_ message: String) -> Never {
        Console.fail("portcullisd: \(message)")
    }
}

func say(_ line: String, to fd: Int32 = STDOUT_FILENO) {
    Console.say(line, to: fd)
}
