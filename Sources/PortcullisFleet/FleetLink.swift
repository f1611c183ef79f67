// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Logging
import Glibc
import PortcullisCore
import PortcullisSystem
import Synchronization
import XDPFirewall

/// A `fleet ignore` that cannot be done, in one line.
public struct FleetIgnoreError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The daemon's link to its fleet (`[fleet]`): one node that puts this host's bans into the NATS
/// bucket and installs the other hosts'. It is the daemon's ban publisher whatever node runs;
/// a reload that changes the table replaces the node (which reads the bucket's set again).
public final class FleetLink: BanPublisher, @unchecked Sendable {
    private let node = Mutex<FleetNode?>(nil)
    /// The hosts `portcullis fleet ignore` named, one a line (they outlive a restart).
    public let ignoredPath: String?

    public init(stateDirectory: String? = nil) {
        ignoredPath = stateDirectory.map { $0 + "/fleet-ignored-hosts" }
    }

    /// The hosts `portcullis fleet ignore` named.
    public func ignoredHosts() -> [String] {
        guard let ignoredPath, let text = try? TextFile.read(ignoredPath, limit: 1 << 20) else { return [] }
        return text.split(separator: "\n").map(String.init).filter { FleetSettings.isValidHost($0) }
    }

    /// `portcullis fleet ignore HOST` (`ignoring`) or `unignore HOST`: kept in the state
    /// directory, told the node, and `fleet/HOST`'s entries lifted now. - Returns: what happened.
    public func ignore(_ host: String, ignoring: Bool, maps: BanMaps) throws -> String {
        guard FleetSettings.isValidHost(host) else {
            throw FleetIgnoreError("'\(host)' is no fleet host name: letters, digits, - and _")
        }
        guard let ignoredPath else { throw FleetIgnoreError("no state directory to keep the ignored hosts in") }
        var hosts = ignoredHosts()
        if ignoring { if !hosts.contains(host) { hosts.append(host) } } else { hosts.removeAll { $0 == host } }
        let directory = String(ignoredPath[..<(ignoredPath.lastIndex(of: "/") ?? ignoredPath.startIndex)])
        if !directory.isEmpty { mkdir(directory, 0o700) }
        do throws(Errno) {
            try TextFile.write(hosts.map { $0 + "\n" }.joined(), to: ignoredPath)
        } catch {
            throw FleetIgnoreError("cannot write \(ignoredPath): \(error); give a writable --state-dir")
        }
        let running = node.withLock { $0 }
        guard ignoring else {
            running?.unignore(host)
            return "fleet: host \(host)'s bans are installed again" + (running == nil ? " once [fleet] runs" : "")
        }
        running?.ignore(host)
        let lifted = try maps.removeListEntries(origins: { $0 == "fleet/" + host })
        return "fleet: host \(host) ignored (kept in \(ignoredPath)): \(lifted) of its entries lifted"
    }

    public func publish(_ event: BanEvent) {
        node.withLock { $0 }?.publish(event)
    }

    /// The CrowdSec decisions this host's bouncer installs or lifts (put when `share_crowdsec`).
    public func publishDecisions(_ changes: [ListChange], now: UInt64, whole: Bool) {
        node.withLock { $0 }?.publishDecisions(changes, now: now, whole: whole)
    }

    /// `portcullisd: fleet: ...`
    private static let logger = ConsoleLogHandler.logger("portcullisd.fleet")

    /// Starts (or replaces, or stops) the node for `configuration`: before the daemon's workers
    /// (its first bans are queued already), with the maps open for the watch.
    /// - Returns: lines for the log.
    /// - Parameter maxAgeSeconds: the bucket's max age: the longest ban the jails give (0: one is for good).
    public func start(
        _ configuration: FleetSettings?, maxAgeSeconds: UInt64, maps: BanMaps, allowlist: [IPNetwork]
    ) throws -> [String] {
        var settings = configuration
        if settings != nil {
            for host in ignoredHosts() where !settings!.ignoreHosts.contains(host) {
                settings!.ignoreHosts.append(host)
            }
        }
        let previous = node.withLock { $0 }
        if let previous, previous.settings == settings, previous.allowlist == allowlist { return [] }
        guard let settings else {
            node.withLock { $0 = nil }
            previous?.stopAndJoin()
            // Other hosts' bans of a fleet this host is no longer in drop nothing more (nor after a restart).
            let lifted = (try? maps.removeListEntries(origins: { $0.hasPrefix("fleet/") })) ?? 0
            return (previous == nil ? [] : ["fleet: stopped (no [fleet] any more)"])
                + (lifted > 0
                    ? ["fleet: no [fleet]: \(lifted) entries of other hosts' bans removed from the maps"] : [])
        }
        let made = FleetNode(settings: settings, maxAgeSeconds: maxAgeSeconds, logger: Self.logger)
        // Bans from now on go to the new node; what the old one had not put yet goes before them
        // (its keys are the new one's when the host and the bucket stay).
        node.withLock { $0 = made }
        if let previous {
            previous.stopAndJoin()
            let left = previous.takeQueue()
            if previous.settings.host == settings.host, previous.settings.bucket == settings.bucket {
                made.adopt(left)
            }
        }
        do {
            try made.start(maps: maps, allowlist: allowlist)
        } catch {
            node.withLock { $0 = nil }
            throw error
        }
        return [
            "fleet: host \(settings.host) shares its bans through bucket \(settings.bucket) on "
                + settings.servers.joined(separator: ",")
                + (settings.shareCrowdSec ? ", CrowdSec's decisions too" : "")
        ]
    }

    public func stop() {
        let running = node.withLock { node in
            defer { node = nil }
            return node
        }
        running?.stopAndJoin()
    }

    /// The node that runs now (for its status).
    public var running: FleetNode? { node.withLock { $0 } }
}

extension FleetNode {
    /// The server this host is connected to, or used last (`nats://ADDRESS:PORT`).
    public var server: String? { events.server }
}
