// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisDaemon
import PortcullisFleet
import PortcullisMetrics
import PortcullisSystem
import Synchronization
import XDPFirewall

/// What the control socket and the metrics endpoint drive: the daemon running now (a reload
/// replaces it). Its requests are answered on the control server's thread; `reload` is handed to
/// the supervisor as a request, and its outcome waited for.
final class ControlledDaemon: @unchecked Sendable {
    private struct State {
        var daemon: Daemon?
        var maps: BanMaps?
    }

    private let state = Mutex(State())
    /// Where a `reload` request goes.
    private let events: ServiceEvents
    /// Set once the server is made (its counters are part of `status`).
    var server: ControlServer?
    /// The supervisor's reload counts (done, refused) and its components' metrics.
    var reloadCounts: () -> (done: Int, refused: Int) = { (0, 0) }
    var samples: () -> [MetricSample] = { [] }
    /// The companions' states, for `portcullis status`.
    var crowdsecState: () -> CrowdSecState? = { nil }
    var fleetState: () -> FleetState? = { nil }
    /// The fleet link (`fleet ignore`).
    var fleet: FleetLink?
    /// The daemon's health (`status`).
    var health: Health?
    /// `detach`: the operator's detach of an interface (marked, when the daemon watches it, as never
    /// to be put back).
    var detach: (String) throws(FirewallError) -> Void = { _ in }

    init(events: ServiceEvents) {
        self.events = events
    }

    /// The daemon starts answering requests.
    func started(_ daemon: Daemon, maps: BanMaps) {
        state.withLock {
            $0.maps = maps
            $0.daemon = daemon
        }
    }

    /// A reload replaced the daemon.
    func replaced(_ daemon: Daemon) {
        state.withLock { $0.daemon = daemon }
    }

    private var running: (daemon: Daemon, maps: BanMaps)? {
        state.withLock { state in state.daemon.flatMap { daemon in state.maps.map { (daemon, $0) } } }
    }

    /// What a metrics scrape reads now (nil before the daemon runs).
    func metricsInputs() -> DaemonMetrics.Inputs? {
        guard let (daemon, maps) = running else { return nil }
        let (reloads, refused) = reloadCounts()
        var control: [(name: String, value: UInt64)] = []
        if let counters = server?.counters {
            let refused =
                counters.unauthorised + counters.malformed + counters.oversized + counters.unknownCommand
                + counters.failed
            control = [
                ("ok", counters.requests >= refused ? counters.requests - refused : 0),
                ("unauthorised", counters.unauthorised), ("malformed", counters.malformed),
                ("oversized", counters.oversized), ("unknown_command", counters.unknownCommand),
                ("failed", counters.failed),
            ]
        }
        return DaemonMetrics.Inputs(
            status: daemon.status, maps: maps, control: control, reloads: UInt64(reloads),
            reloadsRefused: UInt64(refused), samples: samples() + banLogSamples(daemon))
    }

    /// The ban log's write failures, when there is one.
    private func banLogSamples(_ daemon: Daemon) -> [MetricSample] {
        daemon.publishers.compactMap { $0 as? BanLog }.map {
            .counter(
                "portcullis_ban_log_errors_total", "Writes of the ban log that failed (their lines are lost).", [],
                Double($0.writeErrors))
        }
    }

    /// How long a streamed listing may take in all (a peer that reads a trickle holds the control
    /// socket that long at most).
    static let streamDeadline: UInt64 = 60_000_000_000

    /// Answers `list` with `"format": "json"` on the connection: a reply line saying `stream`, then
    /// the listing as `portcullis list --json` prints it, read and written in chunks. - Returns:
    /// false for every other request (or when not running: the handler says so).
    func stream(_ request: ControlRequest, to connection: Int32) -> Bool {
        guard request.command == "list", request.format == "json", let (_, maps) = running else { return false }
        var header = ControlReply()
        header.stream = true
        var text = JSONOutput.line(header) + "\n"
        let sent = text.withUTF8 { bytes in
            systemCallResult { send(connection, bytes.baseAddress!, bytes.count, Int32(MSG_NOSIGNAL)) }
        }
        guard case .success = sent else { return true }  // the peer left
        // A peer that leaves midway, or reads so slowly that the listing takes over a minute, gets
        // a cut listing (its client says so: no final newline); the daemon goes on (EPIPE, not
        // SIGPIPE), and says why on stderr unless the peer left.
        do throws(FirewallError) {
            try maps.writeJSONListing(
                to: connection, deadline: SystemClock.monotonicNanoseconds() + Self.streamDeadline)
        } catch {
            if case .system(_, let code, _) = error, code == EPIPE || code == ECONNRESET { return true }
            say(.error("control: a ban listing was cut off: \(error)"))
        }
        return true
    }

    /// Answers one request.
    func handle(_ request: ControlRequest) -> ControlReply {
        guard let (daemon, maps) = running else {
            return .failure("portcullisd is starting; ask again in a moment")
        }
        switch request.command {
        case "status":
            return status(daemon, jail: request.jail)
        case "jails":
            var reply = ControlReply()
            reply.jails = jailStates(daemon.status, daemon: daemon)
            return reply
        case "list":
            return list(maps)
        case "ban":
            guard let addresses = request.addresses, !addresses.isEmpty else {
                return .failure("ban: give the addresses (\"addresses\": [...])")
            }
            do throws(DaemonError) {
                let result = try daemon.operatorBan(
                    addresses, seconds: request.seconds, jail: request.jail, force: request.force ?? false)
                var reply = ControlReply()
                reply.banned = result.done.count + result.networks.count
                reply.refused = result.refused
                return reply
            } catch {
                return .failure(error.description)
            }
        case "unban":
            guard let addresses = request.addresses, !addresses.isEmpty else {
                return .failure("unban: give the addresses (\"addresses\": [...])")
            }
            let result = daemon.operatorUnban(addresses)
            var reply = ControlReply()
            // A fleet host's or a CrowdSec decision's entry of exactly that network is lifted here
            // (until that source puts it again; `portcullis fleet ignore HOST` for good).
            // Only where no jail's or operator's ban was lifted: a local ban and its unban never undo
            // another source's entry (a second unban does).
            let local = Set(result.done.map { IPNetwork(containing: $0, length: IPNetwork.fullLength($0.family)) })
                .union(result.networks)
            let asked = addresses.compactMap { try? IPNetwork(parsing: $0) }.filter { !local.contains($0) }
            let lifted =
                (try? maps.liftListEntries(asked) { $0.hasPrefix("fleet/") || $0.hasPrefix("crowdsec/") }) ?? []
            let liftedNetworks = Set(lifted.map(\.network))
            reply.unbanned = local.count + liftedNetworks.subtracting(local).count
            reply.refused = result.refused.filter { refusal in
                !liftedNetworks.contains { refusal.hasPrefix("\($0) is not banned") }
            }
            var notes = lifted.map { network, origin in
                "\(network): lifted \(origin)'s entry here; it comes back when that source puts it again"
                    + (origin.hasPrefix("fleet/") ? " (portcullis fleet ignore \(origin.dropFirst(6)) stops them)" : "")
            }
            notes += stillDropped(addresses, maps: maps)
            if !notes.isEmpty { reply.notes = notes }
            return reply
        case "fleet-ignore", "fleet-unignore":
            guard let host = request.host, let fleet else {
                return .failure(request.host == nil ? "give the host (\"host\": ...)" : "no fleet link")
            }
            do {
                var reply = ControlReply()
                reply.message = try fleet.ignore(host, ignoring: request.command == "fleet-ignore", maps: maps)
                return reply
            } catch {
                return .failure("\(error)")
            }
        case "reload":
            return reload()
        case "detach":
            guard let interface = request.interface else { return .failure("detach: give the interface") }
            do throws(FirewallError) {
                try detach(interface)
                return ControlReply()
            } catch {
                return .failure(error.description)
            }
        default:
            return .failure("unknown command '\(request.command)'")
        }
    }

    private func jailStates(_ status: DaemonStatus, daemon: Daemon) -> [JailState] {
        zip(status.jails, daemon.jailDescriptions).map { jail, description in
            let counters = jail.counters
            return JailState(
                name: jail.name, description: description, lines: counters.lines, matched: counters.matched,
                ignored: counters.ignored, notMatching: counters.notMatching, invalidAddress: counters.invalidAddress,
                tooLong: counters.tooLong, matchLimit: counters.matchLimit, allowlisted: counters.allowlisted,
                bans: counters.bans)
        }
    }

    private func status(_ daemon: Daemon, jail: String?) -> ControlReply {
        let status = daemon.status
        var jails = jailStates(status, daemon: daemon)
        if let jail {
            jails = jails.filter { $0.name == jail }
            if jails.isEmpty {
                return .failure("no jail named '\(jail)'; the jails are \(daemon.jailNames.joined(separator: ", "))")
            }
        }
        let total = status.total
        var reply = ControlReply()
        reply.status = DaemonState(
            pid: Int(getpid()), uptimeSeconds: status.uptime, lines: total.lines, bans: total.bans,
            unbans: status.unbans, bansInForce: status.scheduledBans, reloads: reloadCounts().done,
            jails: jails, control: server?.counters ?? ControlCounters(), crowdsec: crowdsecState(),
            fleet: fleetState())
        if !daemon.degradedSources.isEmpty {
            reply.status?.degraded = daemon.degradedSources.map { "\($0.label): \($0.reason)" }
        }
        reply.status?.problems = health?.states(now: SystemClock.monotonicSeconds()) ?? []
        return reply
    }

    /// For each of `texts` a list-layer entry in force still drops (an unban lifts a jail's or
    /// an operator's ban, never a CrowdSec decision or a blocklist entry): what drops it and what
    /// lifts that.
    private func stillDropped(_ texts: [String], maps: BanMaps) -> [String] {
        guard let entries = try? maps.listEntries().filter({ !$0.isExpired() }), !entries.isEmpty,
            let names = try? maps.originNames()
        else { return [] }
        var notes: [String] = []
        for text in texts {
            guard let network = try? IPNetwork(parsing: text) else { continue }
            for entry in entries
            where entry.network.family == network.family && entry.network.length <= network.length
                && entry.network.contains(network.address)
            {
                let origin = names[entry.origin] ?? "an unnamed list"
                let lift =
                    origin.hasPrefix("crowdsec/")
                    ? "a CrowdSec decision: cscli decisions delete "
                        + (entry.network.isSingleAddress ? "-i \(entry.network)" : "-r \(entry.network)")
                    : origin.hasPrefix("fleet/")
                        ? "a ban of the fleet's host \(origin.dropFirst(6)): portcullis unban on that host, or "
                            + "portcullis fleet ignore \(origin.dropFirst(6)) here"
                        : origin.hasPrefix("list:")
                            ? "a blocklist: portcullis blocklist unload \(origin.dropFirst(5)), or take it out of the list's file"
                            : "a list entry"
                notes.append("\(text) is still dropped by \(origin) (\(entry.network)), \(lift)")
                break
            }
        }
        return notes
    }

    private func list(_ maps: BanMaps) -> ControlReply {
        do throws(FirewallError) {
            var reply = ControlReply()
            reply.bans = try maps.listing()
            return reply
        } catch {
            return .failure("list: \(error)")
        }
    }

    /// Hands the reload to the supervisor and waits for its outcome.
    private func reload() -> ControlReply {
        let (answered, outcome) = events.reload(waitingSeconds: 60)
        guard answered else { return .failure("the reload did not finish within 60 s; see the daemon's log") }
        guard let outcome else { return .failure("portcullisd is stopping") }
        // A reload that left a source unread fails `systemctl reload`: the operator must know.
        var reply = ControlReply(ok: outcome.kind == .applied, error: nil)
        if reply.ok { reply.message = outcome.text } else { reply.error = outcome.text }
        return reply
    }
}
