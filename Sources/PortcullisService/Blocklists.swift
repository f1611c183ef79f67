// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import XDPFirewall

/// The configuration's `[blocklist.NAME]` lists: loaded into the maps at start and at each reload
/// (a file that cannot be read, or has a bad line, refuses the start or the reload), and with
/// `reload = true` loaded again whenever the file changes (a changed file with a bad line keeps
/// the list in force, said on stderr).
public final class BlocklistFeeds: Component {
    private struct Feed {
        let setting: ConfigurationFile.Blocklist
        var stamp: Stamp?
    }

    /// When a file was last changed, and its size: what tells a new version apart.
    private struct Stamp: Equatable {
        let seconds: Int
        let nanoseconds: Int
        let size: Int64
        let inode: UInt64
    }

    private var feeds: [Feed] = []

    /// The lists of the configuration, and what they must not drop.
    public struct Settings: Equatable {
        public var lists: [ConfigurationFile.Blocklist]
        public var policy: ListPolicy

        public init(lists: [ConfigurationFile.Blocklist], policy: ListPolicy) {
            self.lists = lists
            self.policy = policy
        }
    }

    public let name = "blocklists"
    /// Every reload reads the lists' files again, changed or not.
    public var reloadsUnchanged: Bool { true }
    /// `--config`: where the lists are declared (none: no lists).
    private let config: String?
    private let firewall: FirewallComponent

    public init(config: String?, firewall: FirewallComponent) {
        self.config = config
        self.firewall = firewall
    }

    public func start(_ settings: Settings) throws -> [LogLine] {
        guard let config, let maps = firewall.maps else { return [] }
        return try load(settings.lists, config: config, maps: maps, policy: settings.policy).map { LogLine($0) }
    }

    /// The configuration's lists loaded again (one that cannot be read or has a bad line leaves the
    /// lists in force as they were, and the reload is `DEGRADED`).
    public func reload(_ settings: Settings) throws -> ReloadVerdict {
        guard let config, let maps = firewall.maps else { return .applied(outcome: nil, lines: []) }
        do {
            let lines = try load(settings.lists, config: config, maps: maps, policy: settings.policy)
            return .applied(outcome: nil, lines: lines.map { LogLine("SIGHUP: " + $0) })
        } catch {
            return .degraded(outcome: "blocklists not reloaded, those in force stay: \(error)", lines: [])
        }
    }

    /// The lists stay in force.
    public func stop() {}

    /// Every 2 s: the lists with `reload = true` whose file changed, loaded again.
    public func tick(now: Double) -> Double? {
        guard let config, let maps = firewall.maps else { return nil }
        for (line, error) in reloadChanged(config: config, maps: maps, policy: currentPolicy) {
            say(LogLine(line, isError: error))
        }
        return now + 2
    }

    /// The policy of the last load.
    private var currentPolicy = ListPolicy()

    /// The lists `file` names (none without --config).
    public static func settings(config: String?) throws(ConfigurationError) -> [ConfigurationFile.Blocklist] {
        guard let config else { return [] }
        return try ConfigurationFile.load(config).blocklists
    }

    /// The networks of a list file. - Throws: naming the file, the list and its first bad line.
    public static func read(
        _ setting: ConfigurationFile.Blocklist, config: String
    ) throws(ConfigurationError) -> [IPNetwork] {
        let key = "blocklist.\(setting.name)"
        guard BanMaps.listOrigin(setting.name) != nil else {
            throw ConfigurationError(
                file: config, line: setting.line, key: key, "a list's name is 1 to 40 letters, digits, '-', '_' or '.'")
        }
        let text: String
        do throws(Errno) {
            text = try TextFile.read(setting.file, limit: 256 << 20)
        } catch {
            throw ConfigurationError(
                file: config, line: setting.line, key: key,
                "cannot read \(setting.file): \(error); give a readable list file (at most 256 MiB)")
        }
        let (networks, problems, overflow) = BlocklistFile.parse(text, capacity: BanMaps.listCapacity)
        if let overflow {
            throw ConfigurationError(file: config, line: setting.line, key: key, "\(setting.file): \(overflow)")
        }
        if let first = problems.first {
            throw ConfigurationError(
                file: config, line: setting.line, key: key,
                "\(setting.file): \(first)" + (problems.count > 1 ? " (and \(problems.count - 1) more bad lines)" : ""))
        }
        return networks
    }

    /// ", 3 refused (2 too wide, 1 allowlisted)" for a load line, or "".
    static func refusedNote(_ refused: [ListPolicy.Refusal: Int]) -> String {
        refused.isEmpty ? "" : ", " + ListPolicy.describe(refused)
    }

    private static func stamp(_ path: String) -> Stamp? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return Stamp(
            seconds: info.st_mtim.tv_sec, nanoseconds: info.st_mtim.tv_nsec, size: Int64(info.st_size),
            inode: UInt64(info.st_ino))
    }

    /// Loads every list of `settings` (replacing the feeds of a previous configuration; lists it
    /// had that these do not are unloaded). - Returns: a line per list for the log.
    func load(
        _ settings: [ConfigurationFile.Blocklist], config: String, maps: BanMaps, policy: ListPolicy
    ) throws -> [String] {
        var lines: [String] = []
        var loaded: [Feed] = []
        // Everything is read and checked first: one bad list changes nothing.
        let contents = try settings.map { (setting) throws(ConfigurationError) in
            (setting, Self.stamp(setting.file), try Self.read(setting, config: config))
        }
        for (setting, stamp, networks) in contents {
            let (taken, refused) = policy.filter(networks)
            let swap: BanMaps.ListSwap
            do throws(FirewallError) {
                swap = try maps.loadList(setting.name, taken)
            } catch {
                throw DaemonError.invalidSetting("blocklist \(setting.name) (\(setting.file)): \(error)")
            }
            lines.append(
                "blocklist \(setting.name): \(swap.ipv4) IPv4 and \(swap.ipv6) IPv6 entries from \(setting.file)"
                    + Self.refusedNote(refused) + (setting.reload ? ", reloaded when it changes" : ""))
            loaded.append(Feed(setting: setting, stamp: stamp))
        }
        for old in feeds where !settings.contains(where: { $0.name == old.setting.name }) {
            if try maps.unloadList(old.setting.name) != nil {
                lines.append("blocklist \(old.setting.name): unloaded (no longer configured)")
            }
        }
        feeds = loaded
        currentPolicy = policy
        return lines
    }

    /// Loads again the lists with `reload = true` whose file changed. - Returns: what happened, a
    /// line each, and whether it is an error.
    func reloadChanged(config: String, maps: BanMaps, policy: ListPolicy) -> [(line: String, error: Bool)] {
        var said: [(String, Bool)] = []
        for index in feeds.indices where feeds[index].setting.reload {
            let setting = feeds[index].setting
            let now = Self.stamp(setting.file)
            guard let now, now != feeds[index].stamp else { continue }
            feeds[index].stamp = now
            do {
                let (taken, refused) = policy.filter(try Self.read(setting, config: config))
                let swap = try maps.loadList(setting.name, taken)
                said.append(
                    (
                        "blocklist \(setting.name): reloaded, \(swap.ipv4) IPv4 and \(swap.ipv6) IPv6 entries"
                            + Self.refusedNote(refused), false
                    ))
            } catch {
                said.append(("blocklist \(setting.name): \(error); the list in force stays", true))
            }
        }
        return said
    }
}
