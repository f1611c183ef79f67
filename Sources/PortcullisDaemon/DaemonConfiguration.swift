// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import CPortcullisNUMA
import Fail2ban
import Glibc
import LogTransport
import OffenceTable
import PortcullisCore

/// Everything the daemon's knobs decide.
public struct DaemonConfiguration: Sendable {
    public var transport: TransportConfiguration
    /// Offences that get a client banned (the prototype's experiments used 3).
    public var threshold: UInt32 = 3
    /// Seconds a ban lasts; 0 bans for good.
    public var banTime: UInt64 = 30
    /// Offences further apart than this many seconds start a new count; 0: count until the ban ends.
    public var findTime: UInt32 = 0
    /// Ban worker threads.
    public var workers = 1
    /// How the daemon reads the transport: `block` (lossless: writers wait for it, up to their
    /// block timeout) or `drop` (writers never wait; what it misses is counted lost).
    public var readerPolicy = SlowReaderPolicy.block
    /// CPUs the workers are pinned to, in turn; empty: not pinned.
    public var cpus: [Int] = []
    /// NUMA node for the offence table; nil: the node of the first CPU in `cpus` (if any).
    public var numaNode: Int?
    /// Bins of the offence table.
    public var tableBins = 6_000_011
    /// With find time 0: seconds after which a client below the threshold, not seen since, no
    /// longer holds its bin against a new client.
    public var idleHorizon = OffenceTable.defaultIdleHorizon
    /// failregex patterns; empty: the built-in line format.
    public var failRegexes: [String] = []
    /// Networks never banned (besides `Allowlist.neverBannable`, always).
    public var allowlist = Allowlist.loopback
    /// The shortest prefix per family a blocklist, a CrowdSec decision or an operator's network
    /// ban (without force) installs.
    public var shortestListPrefix = ListPolicy.listFloor
    /// Never ban this host's own addresses and default gateways (read at start).
    public var protectHost = true
    /// Steps one failregex match may take before the line counts as "over the match limit".
    public var regexMatchLimit = FailRegex.defaultMatchLimit
    /// Longest line the scanner considers.
    public var maxLineLength = 512
    /// Wake-up moderation: a worker that read fewer than `BanWorker.moderatedBatch` lines waits
    /// this long before it reads again, so that lines arriving one by one are read together
    /// (wake-ups at most about 1 s / delay, whatever the line rate; a line waits at most this long
    /// more). 0: read each line as it comes. A worker with nothing to read sleeps until a line
    /// comes, and reads it at once.
    public var wakeDelayMicroseconds = DaemonConfiguration.defaultWakeDelayMicroseconds
    public static let defaultWakeDelayMicroseconds = 500

    /// The jails of a configuration file; empty: one jail, `default`, made of the settings above
    /// (`transport`, `threshold`, `banTime`, `findTime`, `failRegexes`, `tableBins`).
    public var jails: [JailConfiguration] = []
    /// Where the ban history (escalation) is kept across restarts; nil: in memory only.
    public var historyPath: String?
    /// Clients the ban history holds at most.
    public var historyEntries = 100_000
    /// Seconds after its last ban that a client's history is forgotten (fail2ban's `dbpurgeage`).
    public var historyAge: UInt64 = 86_400

    /// Remarks about how the configuration was read, for the start-up log.
    public var notes: [String] = []

    public init(transport: TransportConfiguration) {
        self.transport = transport
    }

    /// The jail the flags describe when there is no configuration file.
    var defaultJail: JailConfiguration {
        var jail = JailConfiguration(name: "default", source: transport)
        jail.policy.threshold = threshold
        jail.policy.banTime = banTime
        jail.policy.findTime = findTime
        jail.filter = failRegexes.isEmpty ? .builtIn : .failRegex(failRegexes)
        jail.tableBins = tableBins
        return jail
    }

    /// The jails the daemon runs.
    public var effectiveJails: [JailConfiguration] { jails.isEmpty ? [defaultJail] : jails }

    /// The NUMA node for the offence table: `numaNode`, or the node of the first CPU in `cpus`.
    var tableNode: Int? {
        if let numaNode { return numaNode }
        guard let cpu = cpus.first, numa_available() >= 0 else { return nil }
        return Int(numa_node_of_cpu(Int32(cpu)))
    }

    /// Checks every setting without creating anything, so the daemon can refuse bad input before it
    /// touches an interface.
    public func validate() throws(DaemonError) {
        if jails.isEmpty {
            if threshold < 1 || threshold > OffenceTable.highestCount {
                throw .invalidSetting("--threshold must be 1...\(OffenceTable.highestCount)")
            }
            if banTime > Self.maximumBanTime {
                throw .invalidSetting(
                    "--ban-time \(banTime) is too long: at most \(Self.maximumBanTime) seconds (about 100 years); "
                        + "use 0 for bans that never end")
            }
        }
        var names = Set<String>()
        for jail in jails where !names.insert(jail.name).inserted {
            throw .invalidSetting("jail \(jail.name) is defined twice; give each jail its own name")
        }
        if historyEntries < 1 { throw .invalidSetting("history-entries must be at least 1") }
        if workers < 1 || workers > 1024 { throw .invalidSetting("--workers must be 1...1024") }
        let online = Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
        if let cpu = cpus.first(where: { $0 < 0 || $0 >= online }) {
            throw .invalidSetting("--cpus: CPU \(cpu) does not exist (this machine has CPUs 0-\(online - 1))")
        }
        if let numaNode, numaNode < 0 || numaNode > Self.highestNumaNode {
            throw .invalidSetting("--numa-node \(numaNode) does not exist (highest: \(Self.highestNumaNode))")
        }
        if tableBins < 16 { throw .invalidSetting("--table-bins must be at least 16") }
        if jails.isEmpty {
            for pattern in failRegexes {
                do {
                    _ = try FailRegex(pattern, matchLimit: regexMatchLimit)
                } catch {
                    throw .invalidSetting(error.description)
                }
            }
        }
        if !(1_000...100_000_000).contains(regexMatchLimit) {
            throw .invalidSetting("--regex-match-limit must be 1000...100000000")
        }
        if idleHorizon < 1 { throw .invalidSetting("--idle-horizon must be at least 1 second") }
        if !(0...100_000).contains(wakeDelayMicroseconds) {
            throw .invalidSetting("--wake-delay must be 0...100000 microseconds (0: no moderation)")
        }
        if !(64...(1 << 20)).contains(maxLineLength) { throw .invalidSetting("--max-line must be 64...1048576 bytes") }
        if jails.isEmpty {
            do {
                try transport.validate()
            } catch {
                throw .transport(error)
            }
        }
        for jail in jails { try jail.validate(regexMatchLimit: regexMatchLimit, maxLineLength: maxLineLength) }
        // Every jail's table is faulted in at start: together they must fit.
        let tableBytes = effectiveJails.reduce(0) { $0 + $1.tableBins * OffenceTable.binSize }
        let physical = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        if effectiveJails.count > 1 && tableBytes > physical / 2 {
            throw .invalidSetting(
                "the jails' offence tables need \(tableBytes >> 20) MiB together, more than half of this machine's "
                    + "\(physical >> 20) MiB; give the jails fewer bins (table-bins in [defaults] or a jail)")
        }
    }

    /// Longest ban: its end must fit in 64-bit nanoseconds of boot time with room to spare.
    public static let maximumBanTime: UInt64 = 100 * 365 * 24 * 3600

    static var highestNumaNode: Int {
        numa_available() >= 0 ? Int(numa_max_node()) : 0
    }
}

/// Errors of the daemon, one line each.
public enum DaemonError: Error, CustomStringConvertible {
    case invalidSetting(String)
    case transport(TransportError)
    case firewall(String)

    public var description: String {
        switch self {
        case .invalidSetting(let detail): detail
        case .transport(let error): "transport: \(error)"
        case .firewall(let detail): detail
        }
    }
}
