// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Logging
import PortcullisCore
import PortcullisSystem
import Synchronization

/// The machine credentials and options of the alert push.
public struct AlertSettings: Sendable, Equatable {
    public var connection: LAPIConnectionSettings
    /// `login` and `password`: what `cscli machines add NAME --password P` registered; nil when the
    /// connection's client certificate is the credential (the Local API names the machine
    /// `CN@ADDRESS` then).
    public var login: String?
    public var password: String?
    /// `alert_decisions`: each alert carries Portcullis's own ban (type, duration) as its
    /// decision, which the LAPI keeps as is (origin `crowdsec`, as an agent's: what `cscli alerts
    /// list` shows without `-a`); without, CrowdSec's profiles decide.
    public var carryDecisions = false
    /// `alert_queue`: alerts held while the LAPI cannot take them; more are dropped (counted).
    public var queueLimit = 10_000

    public init(connection: LAPIConnectionSettings, login: String, password: String) {
        self.connection = connection
        self.login = login
        self.password = password
    }

    /// A machine that logs in by the connection's client certificate.
    public init(connection: LAPIConnectionSettings) { self.connection = connection }

    /// Who logs in, for the log: `machine NAME` or `the client certificate PATH`.
    public var identity: String {
        if let login { return "machine \(login)" }
        return "the client certificate \(connection.certPath ?? "")"
    }
}

/// What the jails' thresholds were, for an alert's capacity and leak speed.
public struct JailDescription: Sendable, Equatable {
    public let threshold: Int
    public let findSeconds: Double

    public init(threshold: Int, findSeconds: Double) {
        self.threshold = threshold
        self.findSeconds = findSeconds
    }
}

public struct AlertStatistics: Sendable {
    public var pushed: UInt64 = 0
    /// By reason: `queue_full` (the LAPI was away too long), `refused` (it answered 4xx),
    /// `stopping` (queued at a stop and not kept), `ended` (kept, but their bans ended before the
    /// next start).
    public var dropped: [String: UInt64] = [:]
    public var queued = 0
    public var logins: UInt64 = 0
    public var connected = false
    public var lastError: String?
}

/// Alerts dropped because the queue was full, said in the log: the first at once, then at most
/// one line a minute with those dropped since.
struct OverflowLog {
    var total: UInt64 = 0
    var unsaid: UInt64 = 0
    var saidAt: Double?
    static let interval = 60.0

    /// Counts `dropped` and returns the line to say now, if any.
    mutating func dropped(_ count: Int, now: Double, limit: Int, url: String) -> String? {
        total += UInt64(count)
        unsaid += UInt64(count)
        guard saidAt == nil else { return due(now: now) }
        saidAt = now
        unsaid = 0
        return "the alert queue is full (alert_queue = \(limit); the Local API at \(url) has not taken them): "
            + "\(count) alert(s) dropped, \(total) since the start; more drops are said at most once a minute"
    }

    /// The line for the drops not said yet, when a minute has passed since the last (or `force`).
    mutating func due(now: Double, force: Bool = false) -> String? {
        guard unsaid > 0, let saidAt, force || now - saidAt >= Self.interval else { return nil }
        defer {
            self.saidAt = now
            unsaid = 0
        }
        return "the alert queue is still full: \(unsaid) more alert(s) dropped, \(total) since the start"
    }
}

/// Posts one CrowdSec alert per ban of a jail (`/v1/alerts`, batched) as a CrowdSec log processor
/// does: the scenario is `portcullis/JAIL`, the source the address or network, the count the
/// jail's threshold. `publish` only queues (a bounded queue; a dead or slow LAPI never slows a
/// ban worker); a thread of its own logs in (`/v1/watchers/login`), renews the token before it
/// ends or when refused, and backs off while the LAPI is down.
public final class AlertPusher: BanPublisher, @unchecked Sendable {
    struct Alert {
        let jail: String
        let target: String
        let isRange: Bool
        let seconds: UInt64
        let at: UTCTime
    }

    public let settings: AlertSettings
    private let jails: @Sendable (String) -> JailDescription?
    private let client: LAPIClient
    private let logger: Logger
    private let queue = Mutex<[Alert]>([])
    private let statistics = Mutex(AlertStatistics())
    private let thread = LAPIThread()
    private var token: (text: String, renewAt: Double)?
    /// Where the alerts still queued at stop are kept for the next pusher (nil: nowhere).
    private let kept: KeptAlerts?
    private let overflow = Mutex(OverflowLog())
    /// Alerts per request.
    static let batch = 100

    public init(
        settings: AlertSettings, jails: @escaping @Sendable (String) -> JailDescription?,
        keptPath: String? = nil, logger: Logger
    ) throws(LAPIError) {
        self.settings = settings
        self.jails = jails
        self.logger = logger
        kept = keptPath.map(KeptAlerts.init(path:))
        client = try LAPIClient(settings.connection)
    }

    public var snapshot: AlertStatistics {
        let queued = queue.withLock { $0.count }
        return statistics.withLock {
            var copy = $0
            copy.queued = queued
            return copy
        }
    }

    public func start() throws(Errno) {
        try thread.start { [self] in run() }
    }

    /// Queues again the alerts the last pusher kept at its stop (before `start`; the file goes).
    /// - Returns: lines for the log: how many, and how many were dropped (their bans ended).
    public func restoreKept() -> [String] {
        guard let kept else { return [] }
        let read = kept.read(limit: settings.queueLimit, now: SystemClock.utcNow().epochSeconds)
        if read.ended > 0 { statistics.withLock { $0.dropped["ended", default: 0] += UInt64(read.ended) } }
        queue.withLock { queue in queue = read.alerts + queue.prefix(settings.queueLimit - read.alerts.count) }
        return read.lines
    }

    /// Stops its thread; alerts still queued are kept in the state directory for the next pusher,
    /// or, when they cannot be, counted as dropped (`stopping`).
    /// - Returns: lines for the log (the stop summary): what was kept, or lost and why.
    @discardableResult
    public func stopAndJoin() -> [String] {
        thread.stopAndJoin(client)
        var lines = overflow.withLock { $0.due(now: SystemClock.monotonicSeconds(), force: true) }.map { [$0] } ?? []
        let left = queue.withLock { queue in
            defer { queue = [] }
            return queue
        }
        guard !left.isEmpty else { return lines }
        guard let kept else {
            statistics.withLock { $0.dropped["stopping", default: 0] += UInt64(left.count) }
            return lines + ["\(left.count) queued alert(s) lost: no state directory to keep them in"]
        }
        do throws(Errno) {
            try kept.write(left)
            lines.append("\(left.count) queued alert(s) kept in \(kept.path) for the next start")
        } catch {
            statistics.withLock { $0.dropped["stopping", default: 0] += UInt64(left.count) }
            lines.append("\(left.count) queued alert(s) lost: cannot write \(kept.path) (\(error))")
        }
        return lines
    }

    public func publish(_ event: BanEvent) {
        guard event.kind == .ban, event.origin == .filter, let jail = event.jail else { return }
        let at = SystemClock.utcNow()
        var dropped = 0
        queue.withLock { queue in
            for index in event.addresses.indices {
                guard queue.count < settings.queueLimit else {
                    dropped += 1
                    continue
                }
                // A jail's exact bans carry their full length: only a shorter one is a range.
                let isRange =
                    index < event.prefixLengths.count
                    && event.prefixLengths[index] < IPNetwork.fullLength(event.addresses[index].family)
                queue.append(
                    Alert(
                        jail: jail, target: event.text(index), isRange: isRange,
                        seconds: index < event.seconds.count ? event.seconds[index] : 0, at: at))
            }
        }
        if dropped > 0 {
            statistics.withLock { $0.dropped["queue_full", default: 0] += UInt64(dropped) }
            let line = overflow.withLock {
                $0.dropped(
                    dropped, now: SystemClock.monotonicSeconds(), limit: settings.queueLimit,
                    url: settings.connection.displayURL)
            }
            if let line { logger.warning("\(line)") }
        }
    }

    /// Says the drops not said yet, once a minute has passed since the last line about them.
    private func sayOverflow() {
        if let line = overflow.withLock({ $0.due(now: SystemClock.monotonicSeconds()) }) {
            logger.warning("\(line)")
        }
    }

    private func run() {
        var failures = 0
        var lastSaid: String?
        while !thread.isStopping {
            let batch = queue.withLock { Array($0.prefix(Self.batch)) }
            sayOverflow()
            guard !batch.isEmpty else {
                // Five looks a second: an alert waits at most 0.2 s, an idle daemon barely wakes.
                SystemClock.sleep(nanoseconds: 200_000_000)
                continue
            }
            do throws(LAPIError) {
                try send(batch)
                queue.withLock { $0.removeFirst(min(batch.count, $0.count)) }
                statistics.withLock {
                    $0.pushed += UInt64(batch.count)
                    $0.connected = true
                    $0.lastError = nil
                }
                if lastSaid != nil { logger.info("alerts reach \(settings.connection.displayURL) again") }
                failures = 0
                lastSaid = nil
            } catch {
                if case .cancelled = error { break }
                let line: String
                if case .status(let code, let message) = error, (400..<500).contains(code), code != 401, code != 403,
                    code != 429
                {
                    // The LAPI will not take these: dropped, not retried for ever.
                    queue.withLock { $0.removeFirst(min(batch.count, $0.count)) }
                    statistics.withLock { $0.dropped["refused", default: 0] += UInt64(batch.count) }
                    line = "the Local API refused \(batch.count) alert(s) (HTTP \(code) \(message)); dropped"
                } else {
                    failures += 1
                    line = Self.explain(error, settings)
                }
                // One line per kind of failure, not one per retry (libcurl's message varies).
                if error.sameness != lastSaid { logger.warning("\(line)") }
                lastSaid = error.sameness
                statistics.withLock {
                    $0.connected = false
                    $0.lastError = line
                }
                let backOff = min(Double(1 << min(failures, 6)), 60)
                let until = SystemClock.monotonicSeconds() + backOff
                while !thread.isStopping, SystemClock.monotonicSeconds() < until {
                    SystemClock.sleep(nanoseconds: 50_000_000)
                    sayOverflow()
                }
            }
        }
    }

    /// The one line for an error, with what to do: a refusal names the credential refused.
    static func explain(_ error: LAPIError, _ settings: AlertSettings) -> String {
        let url = settings.connection.displayURL
        switch error {
        case .status(let code, let message) where code == 401 || code == 403:
            if settings.login == nil {
                return "the Local API at \(url) refused \(settings.identity) (HTTP \(code) \(message)): give one "
                    + "signed by its api.server.tls.ca_cert_path whose OU is in its agents_allowed_ou (agent-ou in "
                    + "CrowdSec's examples); alerts are queued meanwhile"
            }
            return "the Local API at \(url) refused the machine login (HTTP \(code) \(message)): give the login "
                + "and password `cscli machines add` registered; alerts are queued meanwhile"
        case .unreachable(let message):
            return "the Local API at \(url) is unreachable (\(message)); alerts are queued meanwhile"
        default: return "alerts to \(url): \(error); queued meanwhile"
        }
    }

    /// Posts `batch`, logging in first when there is no token or it is about to end; a token the
    /// LAPI refuses is renewed once.
    private func send(_ batch: [Alert]) throws(LAPIError) {
        let body = Self.body(batch, jails: jails, carryDecisions: settings.carryDecisions)
        for attempt in 0..<2 {
            let bearer = try currentToken()
            do throws(LAPIError) {
                _ = try client.request("POST", "v1/alerts", headers: ["Authorization: Bearer " + bearer], body: body)
                return
            } catch {
                if case .status(401, _) = error, attempt == 0 {
                    token = nil
                    continue
                }
                throw error
            }
        }
    }

    private func currentToken() throws(LAPIError) -> String {
        if let token, SystemClock.monotonicSeconds() < token.renewAt { return token.text }
        // By certificate, the LAPI reads only `scenarios` (and names the machine CN@ADDRESS).
        let login = AlertMessages.Login(machineID: settings.login, password: settings.password)
        let body = [UInt8]((try? JSONEncoder().encode(login)) ?? Data())
        let answer = try client.request("POST", "v1/watchers/login", body: body)
        guard let object = try? JSONDecoder().decode(AlertMessages.LoginAnswer.self, from: Data(answer)) else {
            throw .malformed("the login answer has no token")
        }
        // Renewed a minute before it ends (CrowdSec's tokens last an hour), or in 10 minutes when
        // the end cannot be read.
        let lifetime = object.secondsLeft().map { max($0 - 60, 10) } ?? 600
        token = (object.token, SystemClock.monotonicSeconds() + lifetime)
        statistics.withLock { $0.logins += 1 }
        return object.token
    }

    /// The JSON of a `/v1/alerts` request: the fields CrowdSec 1.4's LAPI requires of an alert.
    static func body(_ batch: [Alert], jails: (String) -> JailDescription?, carryDecisions: Bool) -> [UInt8] {
        let alerts = batch.map { alert in
            let jail = jails(alert.jail)
            let threshold = jail?.threshold ?? 1
            let scope = alert.isRange ? "Range" : "Ip"
            let scenario = "portcullis/" + alert.jail
            let time = iso8601(alert.at)
            // 0 s: banned for good here; CrowdSec wants an end, so a year stands for it.
            let seconds = alert.seconds == 0 ? 365 * 86_400 : alert.seconds
            return AlertMessages.Alert(
                scenario: scenario,
                message: "\(scope) \(alert.target) banned by Portcullis's jail \(alert.jail): \(threshold) offences "
                    + "within \(Int(jail?.findSeconds ?? 0)) s",
                capacity: threshold, eventsCount: threshold, leakSpeed: "\(Int(jail?.findSeconds ?? 0))s",
                startAt: time, stopAt: time,
                source: AlertMessages.Source(
                    scope: scope, value: alert.target, ip: alert.isRange ? nil : alert.target,
                    range: alert.isRange ? alert.target : nil),
                decisions: carryDecisions
                    ? [
                        AlertMessages.Decision(
                            duration: "\(seconds)s", value: alert.target, scope: scope, scenario: scenario)
                    ]
                    : nil)
        }
        return [UInt8]((try? JSONEncoder().encode(alerts)) ?? Data("[]".utf8))
    }
}

/// `2026-12-02T01:37:33Z`.
func iso8601(_ time: UTCTime) -> String {
    var bytes = [UInt8](repeating: 0, count: 19)
    _ = bytes.withUnsafeMutableBytes { time.writeStamp(separator: UInt8(ascii: "T"), into: $0.baseAddress!) }
    return String(decoding: bytes, as: UTF8.self) + "Z"
}
