// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import FoundationEssentials
import Logging
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The `[crowdsec]` bouncer's settings, named as CrowdSec's own bouncers name them.
public struct BouncerSettings: Sendable, Equatable {
    public var connection: LAPIConnectionSettings
    /// `api_key`: what `cscli bouncers add NAME -o raw` printed; nil when the connection's client
    /// certificate is the credential.
    public var apiKey: String?
    /// `update_frequency`: seconds between pulls, 1 to 3600 (10 by default, as CrowdSec's).
    public var updateFrequency: Double = 10
    /// `resync_frequency`: seconds between full pulls that repair what deltas missed (CrowdSec
    /// 1.4's stream can miss decisions committed while a pull runs: seen here with an import of
    /// 50,000). 0: never. 300 by default.
    public var resyncFrequency: Double = 300
    public var filter = DecisionFilter()

    public init(connection: LAPIConnectionSettings, apiKey: String?) {
        self.connection = connection
        self.apiKey = apiKey
    }

    /// The stream's query: CrowdSec's Local API applies these filters itself (they are applied
    /// again here: a LAPI that ignores one enforces nothing it leaves out).
    var query: String {
        var items = ["scopes=" + filter.scopes.map(\.rawValue).sorted().joined(separator: ",")]
        if !filter.origins.isEmpty { items.append("origins=" + filter.origins.joined(separator: ",")) }
        if !filter.scenariosContaining.isEmpty {
            items.append("scenarios_containing=" + filter.scenariosContaining.joined(separator: ","))
        }
        if !filter.scenariosNotContaining.isEmpty {
            items.append("scenarios_not_containing=" + filter.scenariosNotContaining.joined(separator: ","))
        }
        return items.map(percentEncodedQueryItem).joined(separator: "&")
    }
}

/// Counters of the bouncer (read by the metrics and the status at any time).
public struct BouncerStatistics: Sendable {
    public var pulls: UInt64 = 0
    public var pullErrors: [String: UInt64] = [:]
    public var pullSeconds = 0.0
    public var lastPullSeconds = 0.0
    /// How long the last pull took from its answer received to the maps (the answer read into the
    /// set as it is parsed, and the map writes), in seconds.
    public var lastInstallSeconds = 0.0
    public var received: (new: UInt64, deleted: UInt64) = (0, 0)
    public var skipped: [SkipReason: UInt64] = [:]
    /// Decisions in force by origin: Ip and Range.
    public var inForce: [String: (ip: Int, range: Int)] = [:]
    /// Networks in the maps for them (before the first full pull: the last run's entries kept).
    public var networks = 0
    /// Entries of the last run kept in the maps while no full pull has succeeded yet (0 after).
    public var keptFromLastRun = 0
    /// Decisions not installed: no origin slot could be had (jails and lists hold them all), or
    /// beyond the list layer's capacity.
    public var refused: UInt64 = 0
    /// Networks whose entry another list holds (enforced by that list's entry).
    public var heldByOthers: UInt64 = 0
    /// Whether the last pull succeeded, and the error of the last that did not.
    public var connected = false
    public var lastError: String?
    /// Full pulls: at start, after a failure, and every resync_frequency.
    public var resyncs: UInt64 = 0
    /// Networks a periodic full pull found wrong (a decision the deltas had missed, or kept).
    public var repaired: UInt64 = 0
}

/// Reads a CrowdSec Local API's decision stream and enforces its `ban` decisions of scope `Ip`
/// and `Range` in the XDP program's list layer, each entry ending when its decision does (the
/// program drops for it until then, with or without this thread). The entries carry the origin
/// `crowdsec/ORIGIN` (`crowdsec/*` past the first 32 origins: `ListInstaller`), apart from the
/// jails' and the operator's bans (their own maps): a `portcullis unban` of a local ban and this
/// source never undo each other. A deleted decision lifts its value (`DecisionSet`).
///
/// At start, and after a pull that failed, a full pull (`startup=true`) replaces every entry of
/// a `crowdsec/` origin in one swap: a restart converges to the LAPI's set. Between, deltas are
/// applied in place with batched map updates. A LAPI that is down leaves the entries as they are;
/// pulls are retried with a back-off from `update_frequency` to 8 times it (at most 60 s).
public final class Bouncer: @unchecked Sendable {
    public let settings: BouncerSettings
    private let client: LAPIClient
    private let logger: Logger
    private let statistics = Mutex(BouncerStatistics())
    private var set: DecisionSet
    private let installer: ListInstaller
    private let thread = LAPIThread()
    /// Told what the maps must now hold for the networks that changed, with the boot clock's now,
    /// and whether that is the whole set (the first full pull) (a fleet shares them,
    /// `share_crowdsec`). Set before `start`; runs on the bouncer's thread.
    public var observer: (@Sendable ([ListChange], UInt64, Bool) -> Void)?

    /// - Parameter logger: the daemon's log (a problem is a warning).
    public init(
        settings: BouncerSettings, maps: BanMaps, policy: ListPolicy,
        logger: Logger
    ) throws(LAPIError) {
        self.settings = settings
        self.logger = logger
        client = try LAPIClient(settings.connection)
        installer = ListInstaller(maps: maps, prefix: "crowdsec/")
        set = DecisionSet(filter: settings.filter, policy: policy)
    }

    public var snapshot: BouncerStatistics { statistics.withLock { $0 } }

    /// Starts its thread.
    public func start() throws(Errno) {
        // What the last run left in force stays until the first full pull replaces it: counted,
        // so that the status does not say nothing is enforced meanwhile.
        let kept = (try? installer.entriesInForce()) ?? 0
        statistics.withLock {
            $0.keptFromLastRun = kept
            $0.networks = kept
        }
        try thread.start { [self] in run() }
    }

    /// Stops its thread (a request under way ends within a second). The entries stay in force.
    public func stopAndJoin() {
        thread.stopAndJoin(client)
    }

    /// The next pull is a full one: at start, after a failed pull or install.
    private var needsFull = true
    /// A full pull has been applied once (its skips counted).
    private var resynchronised = false
    /// Networks another list's entry held when they were to be installed: tried again at each
    /// pull (that list may have been unloaded since, taking the entry with it).
    private var held = Set<IPNetwork>()

    private func run() {
        var failures = 0
        var nextPull = 0.0
        var lastFull = 0.0
        var lastSaid: String?
        while !thread.isStopping {
            let now = SystemClock.monotonicSeconds()
            if now >= nextPull {
                let started = now
                let full = needsFull
                let repair = !full && settings.resyncFrequency > 0 && now - lastFull >= settings.resyncFrequency
                // Set again by a failed install (the next pull is then a full one).
                needsFull = false
                do throws(LAPIError) {
                    let (changed, install) = try pull(full: full, repair: repair)
                    if lastSaid != nil || full || changed >= 1000 || (repair && changed > 0) {
                        let how = full ? "synchronised with" : repair ? "repaired by a full pull from" : "pulled from"
                        let line =
                            "\(how) \(settings.connection.displayURL): \(set.networks) network(s) of "
                            + "\(set.originCount) origin(s) enforced; \(changed) change(s) installed in "
                            + "\(Self.milliseconds(install)) ms"
                        logger.info("\(line)")
                    }
                    if full || repair { lastFull = started }
                    failures = 0
                    lastSaid = nil
                    nextPull = started + settings.updateFrequency
                    let took = SystemClock.monotonicSeconds() - started
                    statistics.withLock {
                        $0.pulls += 1
                        $0.pullSeconds += took
                        $0.lastPullSeconds = took
                        $0.connected = true
                        $0.lastError = nil
                    }
                } catch {
                    if case .cancelled = error { break }
                    failures += 1
                    needsFull = true
                    let line = Self.explain(error, settings)
                    // One line per kind of failure, not one per retry (libcurl's message varies
                    // from one try to the next: "after 0 ms", "after 1 ms").
                    if error.sameness != lastSaid {
                        logger.warning("\(line); the decisions in force stay, retrying")
                    }
                    lastSaid = error.sameness
                    statistics.withLock {
                        $0.pullErrors[error.kind, default: 0] += 1
                        $0.connected = false
                        $0.lastError = line
                    }
                    let backOff = min(
                        settings.updateFrequency * Double(1 << min(failures - 1, 3)), max(settings.updateFrequency, 60))
                    nextPull = SystemClock.monotonicSeconds() + backOff
                }
            }
            // Ended decisions leave the set (the program has stopped dropping for them already).
            let boot = SystemClock.bootNanoseconds()
            let ended = set.purge(now: boot)
            if !ended.isEmpty {
                install(ended)
                observer?(ended, boot, false)
            }
            SystemClock.sleep(nanoseconds: UInt64(min(max(nextPull - SystemClock.monotonicSeconds(), 0.01), 0.2) * 1e9))
        }
    }

    /// The one line for an error, with what to do: a refusal names the credential refused (the
    /// api_key, or the client certificate).
    static func explain(_ error: LAPIError, _ settings: BouncerSettings) -> String {
        let url = settings.connection.displayURL
        switch error {
        case .status(let code, let message) where code == 401 || code == 403:
            if settings.apiKey == nil, let certificate = settings.connection.certPath {
                return
                    "the Local API at \(url) refused the client certificate \(certificate) (HTTP \(code) \(message)): "
                    + "give one signed by its api.server.tls.ca_cert_path whose OU is in its bouncers_allowed_ou "
                    + "(bouncer-ou in CrowdSec's examples)"
            }
            return "the Local API at \(url) refused the api_key (HTTP \(code) \(message)): give the key "
                + "`cscli bouncers add NAME -o raw` printed"
        case .unreachable(let message): return "the Local API at \(url) is unreachable (\(message))"
        case .install: return "\(error)"
        default: return "the Local API at \(url): \(error)"
        }
    }

    static func milliseconds(_ seconds: Double) -> String {
        String(Double(Int((seconds * 1e4).rounded())) / 10)
    }

    /// One pull: all of the LAPI's set (`full`), or what changed since the last pull.
    /// - Returns: the networks whose entry changed, and how long installing them took.
    private func pull(full: Bool, repair: Bool) throws(LAPIError) -> (changed: Int, seconds: Double) {
        let path = "v1/decisions/stream?startup=\(full || repair)&" + settings.query
        let headers = settings.apiKey.map { ["X-Api-Key: " + $0] } ?? []
        var now: UInt64 = 0
        var started = 0.0
        // Each decision is taken into the set as the answer is read where libcurl left it (no copy
        // of it, no array of decisions); the answer is freed before the maps are written: a pull of
        // 100,000 never holds the answer and the maps' writes at once.
        func read<T>(
            _ take: (inout DecisionSet, UnsafeBufferPointer<UInt8>) throws(LAPIError) -> T
        ) throws(LAPIError)
            -> T
        {
            try client.request("GET", path, headers: headers) { (json) throws(LAPIError) in
                now = SystemClock.bootNanoseconds()
                started = SystemClock.monotonicSeconds()
                return try take(&set, json)
            }
        }
        var changed = 0
        let counts: DecisionStream.Counts
        if full {
            // The first full pull counts what it skips; a later one (after a failure) brings the
            // same decisions again and does not. It replaces the set in place; the fleet (when
            // one listens) is told the whole set the first time, what changed after.
            let whole = !resynchronised
            let listening = observer != nil
            var changes: [DecisionSet.Change] = []
            counts = try read { set, json throws(LAPIError) in
                try set.synchronise(json: json, now: now, countingSkips: whole)
            }
            resynchronised = true
            if listening { changes = whole ? set.wanted().map { .install($0.0, $0.1) } : set.synchronisedChanges() }
            held = []
            // Told before the maps are written: the decisions are the LAPI's whether or not they go in.
            observer?(changes, now, whole)
            changes = []
            try replaceAll()
            changed = set.networks
        } else {
            // In place: a delta, or (repair) what the deltas got wrong.
            var changes: [DecisionSet.Change]
            // (The changes listed once the answer's bytes are gone.)
            if repair {
                counts = try read { set, json throws(LAPIError) in
                    try set.synchronise(json: json, now: now, countingSkips: false)
                }
                changes = set.synchronisedChanges()
            } else {
                let touched: Set<IPNetwork>
                (touched, counts) = try read { set, json throws(LAPIError) in try set.apply(json: json, now: now) }
                changes = set.changes(of: touched)
            }
            if repair { statistics.withLock { $0.repaired += UInt64(changes.count) } }
            changed = changes.count
            // Networks another list held are tried again (that list may be gone).
            if !held.isEmpty {
                let touched = Set(changes.map(\.network))
                for network in held where !touched.contains(network) {
                    if let claim = set.longest(network) { changes.append(.install(network, claim)) }
                }
            }
            held = []
            install(changes)
            observer?(changes, now, false)
        }
        let took = SystemClock.monotonicSeconds() - started
        let census = set.census()
        let (count, skipped) = (set.networks, set.skipped)
        statistics.withLock {
            $0.received.new += UInt64(counts.new)
            $0.received.deleted += UInt64(counts.deleted)
            $0.skipped = skipped
            $0.inForce = census
            $0.networks = count
            $0.lastInstallSeconds = took
            if full { $0.keptFromLastRun = 0 }
            if full || repair { $0.resyncs += 1 }
        }
        return (changed, took)
    }

    /// A full pull's set in place of every `crowdsec/` entry, in one swap per family.
    private func replaceAll() throws(LAPIError) {
        do throws(FirewallError) {
            let result = try installer.replaceAll(set.wanted())
            held = Set(result.heldByOthers)
            refused(result.refused)
            if let first = result.overCapacity.first {
                statistics.withLock { $0.refused += UInt64(result.overCapacity.count) }
                let line =
                    "\(result.overCapacity.count) decision(s) not enforced, e.g. \(first): the list layer holds at most "
                    + "\(BanMaps.listCapacity) addresses and as many networks per family"
                logger.warning("\(line)")
            }
        } catch {
            throw .install("\(error)")
        }
    }

    /// Decisions no origin slot could be had for: counted, and said once a pull with the first.
    private func refused(_ refused: [(network: IPNetwork, origin: String)]) {
        guard let first = refused.first else { return }
        statistics.withLock { $0.refused += UInt64(refused.count) }
        let line =
            "\(refused.count) decision(s) not enforced, e.g. \(first.network) of origin \(first.origin): no origin slot "
            + "is free (jails and lists hold all \(PC_MAX_ORIGINS - 1)); unload a list (portcullis blocklist unload NAME)"
        logger.warning("\(line)")
    }

    /// Changes in place; a failure is said and makes the next pull a full one.
    private func install(_ changes: [DecisionSet.Change]) {
        guard !changes.isEmpty else { return }
        do throws(FirewallError) {
            let result = try installer.apply(changes)
            held.formUnion(result.heldByOthers)
            refused(result.refused)
            let count = held.count
            statistics.withLock { $0.heldByOthers = UInt64(count) }
        } catch {
            needsFull = true
            logger.warning("the maps refused decisions: \(error); resynchronising at the next pull")
        }
    }
}

/// `item` as a URL's query carries it: every byte of its UTF-8 but the characters a query may hold
/// as they are (RFC 3986's unreserved characters, sub-delimiters, `:`, `@`, `/`, `?`), other than
/// `&` and `+`, written `%XX`. The set of Foundation's `CharacterSet.urlQueryAllowed` less `&+`.
func percentEncodedQueryItem(_ item: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(item.utf8.count)
    for byte in item.utf8 {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            bytes.append(byte)
        case _ where "-._~!$'()*,;=:@/?".utf8.contains(byte):
            bytes.append(byte)
        default:
            bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
