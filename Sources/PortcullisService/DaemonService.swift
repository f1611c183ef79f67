// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisConfiguration
import PortcullisCore
import PortcullisCrowdSec
import PortcullisDaemon
import PortcullisFleet
import PortcullisMetrics
import PortcullisSystem
import XDPFirewall

extension LoadedConfiguration: ServiceConfiguration {
    public var restartOnly: RestartOnlySettings { options.restartOnly }
}

/// `portcullisd`: its components under one supervisor, in their start order (BUILD.md, "Layout"):
/// the control socket and the metrics endpoint (a path or port in use refuses the start before the
/// interface is touched), the firewall (attach, maps), the daemon (made), CrowdSec's alert pusher,
/// the blocklists, the fleet, the daemon's workers, CrowdSec's bouncer, the enforcement watch and
/// the status line, the health watch. Stopped in reverse; a reload is one diff of `LoadedConfiguration`.
public final class DaemonService {
    private let supervisor: Supervisor<LoadedConfiguration>
    private let events = ServiceEvents()
    private let signals: SignalForwarder
    private let banLog: BanLog

    /// - Parameters: what the executable checked before anything is touched.
    /// - Throws: when a thread of the ban journal cannot start.
    public init(
        options: DaemonOptions, interfaces: [String], objectPath: String, controlGroup: gid_t?,
        metricsEndpoint: MetricsEndpoint?, prefixLengths: [(IPAddress.Family, [Int])], banLog: BanLog,
        signals: SignalForwarder
    ) throws(DaemonError) {
        self.signals = signals
        self.banLog = banLog
        let banJournal: BanJournal
        do throws(Errno) {
            banJournal = try BanJournal { line in serviceLogger.notice("\(line)") }
        } catch {
            throw .invalidSetting("cannot start the ban journal's thread: \(error)")
        }
        let describe: (any Error) -> String = { DaemonOptions.message(for: $0) }
        let supervisor = Supervisor<LoadedConfiguration>(describe: describe, log: say)
        self.supervisor = supervisor
        let controlled = ControlledDaemon(events: events)
        let control = ControlComponent(path: options.control, group: controlGroup, controlled: controlled)
        let metrics = MetricsComponent(endpoint: metricsEndpoint, controlled: controlled)
        let firewall = FirewallComponent(
            interfaces: interfaces, objectPath: objectPath, options: options, prefixLengths: prefixLengths)
        let fleetLink = FleetLink(stateDirectory: options.stateDir)
        let crowdsecLink = CrowdSecLink(stateDirectory: options.stateDir) { [fleetLink] changes, now, whole in
            fleetLink.publishDecisions(changes, now: now, whole: whole)
        }
        let publishers: [BanPublisher] =
            [banLog, banJournal, crowdsecLink, fleetLink] + (metricsEndpoint == nil ? [] : [metrics.metrics])
        let daemon = DaemonComponent(firewall: firewall, publishers: publishers, describe: describe)
        let fleet = FleetComponent(link: fleetLink, firewall: firewall)
        let bouncer = CrowdSecBouncerComponent(link: crowdsecLink, firewall: firewall)
        let ready = ReadyFile(path: options.readyFile)
        let transport = options.transport.transport.rawValue
        let workers = WorkersComponent(daemon: daemon, firewall: firewall, summaryJson: options.summaryJson) {
            ready.started($0, firewall: firewall, transport: transport, metrics: metrics.url)
            controlled.started($0, maps: firewall.maps!)
        }
        daemon.replaced = {
            controlled.replaced($0)
            ready.reloaded($0)
        }
        // What the daemon gives the companions (its allowlist and list policy) is read from the
        // daemon that runs: after a reload, the new one's.
        func running() -> Daemon { daemon.daemon! }
        supervisor.add(control)
        supervisor.add(metrics)
        supervisor.add(firewall)
        // The ban log first among those a reload changes: a path it cannot open refuses the
        // configuration whole; then the daemon: a configuration it refuses is refused whole,
        // before any companion took it.
        supervisor.add(BanLogComponent(log: banLog)) { $0.options.banLog }
        // The companions' addresses join the allowlist: resolved at the start and at each reload.
        supervisor.add(daemon) { Fresh(CompanionAddresses.allowing($0)) }
        supervisor.add(CrowdSecAlertsComponent(link: crowdsecLink)) { .init($0) }
        supervisor.add(BlocklistFeeds(config: options.config, firewall: firewall)) {
            .init(lists: $0.blocklists, policy: running().listPolicy)
        }
        supervisor.add(fleet) { .init($0, allowlist: running().driverAllowlist) }
        supervisor.add(workers)
        supervisor.add(bouncer) { .init(bouncer: $0.crowdsec?.bouncer, policy: running().listPolicy) }
        let health = Health(warningInterval: options.degradedWarningInterval) { say($0) }
        let enforcement = EnforcementWatch(firewall: firewall, health: health, options: options)
        supervisor.add(enforcement)
        supervisor.add(StatusLine(daemon: daemon, interval: options.statusInterval))
        // Last: its status follows the daemon's in systemd's status line.
        supervisor.add(
            HealthWatch(health: health, daemon: daemon, interfaces: interfaces) {
                var links: [CompanionLink] = []
                if let crowdsec = bouncer.controlState {
                    if let bouncer = crowdsec.bouncer {
                        links.append(
                            CompanionLink(
                                name: "crowdsec", down: bouncer.connected ? nil : bouncer.lastError))
                    }
                    if let alerts = crowdsec.alerts {
                        links.append(
                            CompanionLink(
                                name: "crowdsec-alerts", down: alerts.connected ? nil : alerts.lastError))
                    }
                }
                if let fleet = fleet.controlState {
                    links.append(CompanionLink(name: "fleet", down: fleet.connected ? nil : fleet.lastError))
                }
                return links
            })
        controlled.health = health
        controlled.detach = { interface throws(FirewallError) in
            try enforcement.operatorDetaches.detach(interface, watched: interfaces.contains(interface))
        }
        controlled.reloadCounts = { supervisor.reloadCounts }
        controlled.samples = { supervisor.metrics() }
        controlled.crowdsecState = { bouncer.controlState }
        controlled.fleetState = { fleet.controlState }
        controlled.fleet = fleetLink
    }

    /// Starts the components on `configuration`, tells the service manager it is ready, and runs
    /// until SIGINT or SIGTERM; a SIGHUP or a control socket's `reload` reads the configuration
    /// again with `loader`. - Throws: what refused the start (everything started is rolled back).
    public func run(_ configuration: LoadedConfiguration, reloadingWith loader: ConfigurationLoader) throws {
        try supervisor.start(configuration)
        // A signal that came during the start waits, blocked, for this thread to take it.
        do throws(Errno) {
            try signals.start(posting: events) { [banLog] in BanLogComponent.reopen(banLog) }
        } catch {
            supervisor.stop()
            throw DaemonError.invalidSetting("cannot start the signal thread: \(error)")
        }
        defer { signals.finish() }
        supervisor.run(events: events, load: { try loader.load() })
    }
}

/// The ban log (`--ban-log`), opened before the start (a path it cannot open refuses the start
/// before the interface is touched): a reload that names another path opens it, and one that
/// cannot is refused with the file in use kept. SIGHUP and SIGUSR1 reopen the path in use.
final class BanLogComponent: Component {
    let name = "ban log"
    private let log: BanLog

    init(log: BanLog) { self.log = log }

    func start(_ settings: String?) throws -> [LogLine] { [] }

    func reload(_ settings: String?) throws -> ReloadVerdict {
        do throws(DaemonError) {
            try log.reopen(at: settings)
        } catch {
            return .refused(DaemonOptions.message(for: error))
        }
        return .applied(outcome: nil, lines: [LogLine("ban log: now \(settings ?? "none")")])
    }

    func stop() {}

    /// Reopens the path in use (logrotate renamed the file), and says so (what a rotation's check
    /// waits for); a failure keeps the file in use and is said.
    static func reopen(_ log: BanLog) {
        guard !log.path.isEmpty else { return }
        do throws(DaemonError) {
            try log.reopen()
            say(LogLine("ban log reopened: \(log.path)"))
        } catch {
            say(
                .error("cannot reopen the ban log: \(DaemonOptions.message(for: error)); writing on to the file in use")
            )
        }
    }
}
