// SPDX-License-Identifier: Apache-2.0
import PortcullisCore
/// The control socket's messages: one JSON request per connection, answered by one JSON reply,
/// each on one line. Shared by `portcullisd` (which answers) and `portcullis` (which asks).
///
///     {"command":"ban","addresses":["198.18.0.1"],"seconds":600}
///     {"ok":true,"banned":1}
public struct ControlRequest: Codable, Sendable, Equatable {
    /// `status`, `jails`, `list`, `ban`, `unban`, `reload`, `detach`, `fleet-ignore` or `fleet-unignore`.
    public var command: String
    /// `status`: one jail only; `ban`: the jail that bans (its escalation and ban log name), else `manual`.
    public var jail: String?
    /// `ban`, `unban`: the addresses (any number in one request).
    public var addresses: [String]?
    /// `ban`: how long, in seconds; absent: for good.
    public var seconds: UInt64?
    /// `list`: `json` streams the listing as `portcullis list --json` prints it after the reply
    /// line (`stream` in the reply); absent: the bans in the reply.
    public var format: String?
    /// `ban`: networks shorter than the daemon's floor are banned all the same.
    public var force: Bool?
    /// `fleet-ignore`, `fleet-unignore`: the fleet's host.
    public var host: String?
    /// `detach`: the interface the operator takes the filter off (the daemon never puts it back).
    public var interface: String?

    public init(
        command: String, jail: String? = nil, addresses: [String]? = nil, seconds: UInt64? = nil,
        format: String? = nil, force: Bool? = nil, host: String? = nil, interface: String? = nil
    ) {
        self.interface = interface
        self.command = command
        self.jail = jail
        self.addresses = addresses
        self.seconds = seconds
        self.format = format
        self.force = force
        self.host = host
    }

    /// The commands a daemon answers.
    public static let commands = [
        "status", "jails", "list", "ban", "unban", "reload", "detach", "fleet-ignore", "fleet-unignore",
    ]
    /// The commands only root may ask: `detach` takes the filter off an interface, which opens the
    /// host to every banned source; the control group bans, unbans, lists and reloads.
    public static let rootOnlyCommands: Set<String> = ["detach"]
}

/// A reply: `ok`, and either `error` (one line) or what the command asked for.
public struct ControlReply: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    /// True: what follows the reply line, to the end of the connection, is the output asked for.
    public var stream: Bool?
    public var status: DaemonState?
    public var jails: [JailState]?
    public var bans: [BanRow]?
    /// `ban`: bans installed; `unban`: bans lifted.
    public var banned: Int?
    public var unbanned: Int?
    /// Addresses of a `ban`/`unban` that were refused (not an address, never bannable), with why.
    public var refused: [String]?
    /// `reload`: what happened, one line.
    public var message: String?
    /// `unban`: addresses still dropped by an entry no unban lifts (a CrowdSec decision, a
    /// blocklist), each with what lifts it.
    public var notes: [String]?

    public init(ok: Bool = true, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    public static func failure(_ error: String) -> ControlReply { ControlReply(ok: false, error: error) }
}

/// The daemon now (`status`).
public struct DaemonState: Codable, Sendable, Equatable {
    public var pid: Int
    public var uptimeSeconds: Double
    public var lines: UInt64
    public var bans: UInt64
    public var unbans: UInt64
    public var bansInForce: Int
    public var reloads: Int
    public var jails: [JailState]
    public var control: ControlCounters
    /// The CrowdSec bouncer and alert push, when `[crowdsec]` runs them.
    public var crowdsec: CrowdSecState?
    /// The fleet's bucket, when `[fleet]` shares bans.
    public var fleet: FleetState?
    /// The sources a reload could not open ("LABEL: why"): their jails read nothing from them.
    public var degraded: [String]?
    /// What keeps the daemon from doing all it is configured to do (none: it is healthy).
    public var problems: [ProblemState] = []

    public init(
        pid: Int, uptimeSeconds: Double, lines: UInt64, bans: UInt64, unbans: UInt64, bansInForce: Int, reloads: Int,
        jails: [JailState], control: ControlCounters, crowdsec: CrowdSecState? = nil, fleet: FleetState? = nil
    ) {
        self.crowdsec = crowdsec
        self.fleet = fleet
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.lines = lines
        self.bans = bans
        self.unbans = unbans
        self.bansInForce = bansInForce
        self.reloads = reloads
        self.jails = jails
        self.control = control
    }

    enum CodingKeys: String, CodingKey {
        case pid, uptimeSeconds = "uptime_seconds", lines, bans, unbans, bansInForce = "bans_in_force", reloads
        case jails, control, crowdsec, fleet, degraded, problems
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        pid = try container.decode(Int.self, forKey: .pid)
        uptimeSeconds = try container.decode(Double.self, forKey: .uptimeSeconds)
        lines = try container.decode(UInt64.self, forKey: .lines)
        bans = try container.decode(UInt64.self, forKey: .bans)
        unbans = try container.decode(UInt64.self, forKey: .unbans)
        bansInForce = try container.decode(Int.self, forKey: .bansInForce)
        reloads = try container.decode(Int.self, forKey: .reloads)
        jails = try container.decode([JailState].self, forKey: .jails)
        control = try container.decode(ControlCounters.self, forKey: .control)
        crowdsec = try container.decodeIfPresent(CrowdSecState.self, forKey: .crowdsec)
        fleet = try container.decodeIfPresent(FleetState.self, forKey: .fleet)
        degraded = try container.decodeIfPresent([String].self, forKey: .degraded)
        // A daemon of a version before health was reported says none.
        problems = try container.decodeIfPresent([ProblemState].self, forKey: .problems) ?? []
    }
}

/// A degraded state of the daemon, in a status reply.
public struct ProblemState: Codable, Sendable, Equatable {
    /// `filter_detached`, `detached_by_operator`, `other_maps`, `pins_missing`, `source_unreadable`,
    /// `companion_down`.
    public var kind: String
    /// The interface, source or companion it is about (none for the pins).
    public var subject: String?
    /// What it is and what to do, one line.
    public var text: String
    /// How long it has lasted.
    public var seconds: Double

    public init(kind: String, subject: String?, text: String, seconds: Double) {
        self.kind = kind
        self.subject = subject
        self.text = text
        self.seconds = seconds
    }
}

/// What the fleet link does, in a status reply.
public struct FleetState: Codable, Sendable, Equatable {
    public var host: String
    public var bucket: String
    public var servers: [String]
    public var connected: Bool
    /// This host's ban changes the bucket took, those waiting, and those never published (a full
    /// queue, refused by the server, ended while waiting).
    public var published: UInt64
    public var queued: Int
    public var dropped: UInt64
    /// Other hosts' changes received, their bans in force here, and from how many hosts.
    public var received: UInt64
    public var bans: Int
    public var hosts: Int
    /// This host's bans in force put again (a connection made anew, keys the max age would take).
    public var republished: UInt64
    public var lastError: String?
    /// The server the host is connected to, or used last (`nats://ADDRESS:PORT`).
    public var server: String?

    public init(
        host: String, bucket: String, servers: [String], connected: Bool, published: UInt64, queued: Int,
        dropped: UInt64, received: UInt64, bans: Int, hosts: Int, republished: UInt64, lastError: String?,
        server: String? = nil
    ) {
        self.server = server
        self.republished = republished
        self.dropped = dropped
        self.host = host
        self.bucket = bucket
        self.servers = servers
        self.connected = connected
        self.published = published
        self.queued = queued
        self.received = received
        self.bans = bans
        self.hosts = hosts
        self.lastError = lastError
    }

    enum CodingKeys: String, CodingKey {
        case host, bucket, servers, connected, published, queued, dropped, received, bans, hosts, republished, server
        case lastError = "last_error"
    }
}

/// What the CrowdSec link does, in a status reply.
public struct CrowdSecState: Codable, Sendable, Equatable {
    public struct Bouncer: Codable, Sendable, Equatable {
        public var url: String
        public var connected: Bool
        public var decisions: Int
        public var networks: Int
        /// Of `networks`, entries of the last run kept while no full pull has succeeded yet.
        public var kept: Int
        public var pulls: UInt64
        public var lastError: String?

        public init(
            url: String, connected: Bool, decisions: Int, networks: Int, kept: Int = 0, pulls: UInt64,
            lastError: String?
        ) {
            self.kept = kept
            self.url = url
            self.connected = connected
            self.decisions = decisions
            self.networks = networks
            self.pulls = pulls
            self.lastError = lastError
        }

        enum CodingKeys: String, CodingKey {
            case url, connected, decisions, networks, kept, pulls, lastError = "last_error"
        }

        public init(from decoder: Decoder) throws {
            let fields = try decoder.container(keyedBy: CodingKeys.self)
            url = try fields.decode(String.self, forKey: .url)
            connected = try fields.decode(Bool.self, forKey: .connected)
            decisions = try fields.decode(Int.self, forKey: .decisions)
            networks = try fields.decode(Int.self, forKey: .networks)
            // A daemon older than `kept` leaves it out.
            kept = try fields.decodeIfPresent(Int.self, forKey: .kept) ?? 0
            pulls = try fields.decode(UInt64.self, forKey: .pulls)
            lastError = try fields.decodeIfPresent(String.self, forKey: .lastError)
        }
    }

    public struct Alerts: Codable, Sendable, Equatable {
        public var url: String
        public var connected: Bool
        public var pushed: UInt64
        public var queued: Int
        public var dropped: UInt64
        public var lastError: String?

        public init(url: String, connected: Bool, pushed: UInt64, queued: Int, dropped: UInt64, lastError: String?) {
            self.url = url
            self.connected = connected
            self.pushed = pushed
            self.queued = queued
            self.dropped = dropped
            self.lastError = lastError
        }

        enum CodingKeys: String, CodingKey {
            case url, connected, pushed, queued, dropped, lastError = "last_error"
        }
    }

    public var bouncer: Bouncer?
    public var alerts: Alerts?

    public init(bouncer: Bouncer?, alerts: Alerts?) {
        self.bouncer = bouncer
        self.alerts = alerts
    }
}

/// One jail: what it is (`jails`) and what it did (`status`).
public struct JailState: Codable, Sendable, Equatable {
    public var name: String
    /// Its one-line description (sources, filter, maxretry, bantime...).
    public var description: String
    public var lines: UInt64
    public var matched: UInt64
    public var ignored: UInt64
    public var notMatching: UInt64
    public var invalidAddress: UInt64
    public var tooLong: UInt64
    public var matchLimit: UInt64
    public var allowlisted: UInt64
    public var bans: UInt64

    public init(
        name: String, description: String, lines: UInt64 = 0, matched: UInt64 = 0, ignored: UInt64 = 0,
        notMatching: UInt64 = 0, invalidAddress: UInt64 = 0, tooLong: UInt64 = 0, matchLimit: UInt64 = 0,
        allowlisted: UInt64 = 0, bans: UInt64 = 0
    ) {
        self.name = name
        self.description = description
        self.lines = lines
        self.matched = matched
        self.ignored = ignored
        self.notMatching = notMatching
        self.invalidAddress = invalidAddress
        self.tooLong = tooLong
        self.matchLimit = matchLimit
        self.allowlisted = allowlisted
        self.bans = bans
    }

    enum CodingKeys: String, CodingKey {
        case name, description, lines, matched, ignored, notMatching = "not_matching"
        case invalidAddress = "invalid_address", tooLong = "too_long", matchLimit = "match_limit", allowlisted, bans
    }
}

/// What the control socket has answered and refused, by reason.
public struct ControlCounters: Codable, Sendable, Equatable {
    public var requests: UInt64 = 0
    /// Peers that are neither root nor in the allowed group.
    public var unauthorised: UInt64 = 0
    /// Requests that are not JSON, or not a request.
    public var malformed: UInt64 = 0
    /// Requests longer than `ControlServer.longestRequest`.
    public var oversized: UInt64 = 0
    public var unknownCommand: UInt64 = 0
    /// Requests the daemon answered with an error (an unknown jail, a bad address...).
    public var failed: UInt64 = 0

    public init() {}

    enum CodingKeys: String, CodingKey {
        case requests, unauthorised, malformed, oversized, unknownCommand = "unknown_command", failed
    }
}
