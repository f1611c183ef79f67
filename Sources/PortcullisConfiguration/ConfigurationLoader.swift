// SPDX-License-Identifier: Apache-2.0
import Glibc
import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem

/// Reads the daemon's configuration: the command line it is given (never `CommandLine` itself),
/// after the `[daemon]` settings of `--config FILE` (so the flags override the file's), the file's
/// jails, lists and companions, and the fail2ban files; all of it checked.
public struct ConfigurationLoader: Sendable {
    /// The command line, without the program's name.
    public let arguments: [String]

    public init(arguments: [String]) {
        self.arguments = arguments
    }

    /// `arguments` with the `[daemon]` settings of the file `--config` names before them.
    /// Each `[daemon]` value is parsed as its flag would be first, so that a bad one is named with
    /// its file, line and key (not as a command-line error).
    public func withFileSettings() throws(ConfigurationError) -> [String] {
        guard let path = Self.configurationPath(in: arguments) else { return arguments }
        let file = try ConfigurationFile.load(path)
        for setting in file.daemonSettings {
            do {
                _ = try DaemonOptions.parse(setting.arguments)
            } catch {
                let message =
                    DaemonOptions.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
                throw ConfigurationError(file: path, line: setting.line, key: setting.key, message)
            }
        }
        return file.daemonArguments + arguments
    }

    /// The value of `--config FILE` or `--config=FILE` (the last one, as for any option).
    public static func configurationPath(in arguments: [String]) -> String? {
        var path: String?
        for (index, argument) in arguments.enumerated() {
            if argument == "--" { break }
            if argument == "--config", index + 1 < arguments.count { path = arguments[index + 1] }
            if argument.hasPrefix("--config=") { path = String(argument.dropFirst("--config=".count)) }
        }
        return path
    }

    /// Everything read again and checked, as a reload takes it.
    public func load() throws -> LoadedConfiguration {
        let options = try DaemonOptions.parse(try withFileSettings())
        return try options.loaded(typed: try? DaemonOptions.parse(arguments))
    }
}

/// What the daemon runs on: its flags (file settings included), the checked daemon configuration,
/// and the file's lists and companions.
public struct LoadedConfiguration {
    public let options: DaemonOptions
    public let daemon: DaemonConfiguration
    /// The `--config` file, read once with the rest.
    public let file: ConfigurationFile?

    public init(options: DaemonOptions, daemon: DaemonConfiguration, file: ConfigurationFile?) {
        self.options = options
        self.daemon = daemon
        self.file = file
    }

    public var blocklists: [ConfigurationFile.Blocklist] { file?.blocklists ?? [] }
    public var crowdsec: CrowdSecConfiguration? { file?.crowdsec }
    public var fleet: FleetConfiguration? { file?.fleet }
}

extension DaemonOptions {
    /// No interface configured and none carries a default route.
    public static let interfaceRequired = DaemonError.invalidSetting(
        "no interface set and no default route to take one from: set interface = \"NAME\" in [daemon] of "
            + "--config (or give --interface NAME)")

    /// The interfaces to protect, each once, and why these: the configured ones, else those that
    /// carry the default routes (``DefaultRoutes``).
    /// - Parameter routes: the default routes (this namespace's by default).
    public func protectedInterfaces(
        routes: [DefaultRoutes.Route] = DefaultRoutes.current()
    ) throws(DaemonError) -> (names: [String], reason: String) {
        var seen = Set<String>()
        let configured = interfaces.filter { seen.insert($0).inserted }
        if !configured.isEmpty { return (configured, "configured") }
        guard !routes.isEmpty else { throw Self.interfaceRequired }
        let carriers = routes.map { "\($0.interface) (\($0.families))" }.joined(separator: ", ")
        return (routes.map(\.interface), "no interface set; the default routes' interfaces: " + carriers)
    }

    /// The configuration checked (``checkedConfiguration(typed:creatingStateDirectory:)``) with the
    /// file read once more for its lists and companions.
    public func loaded(typed: DaemonOptions? = nil) throws -> LoadedConfiguration {
        let daemon = try checkedConfiguration(typed: typed)
        let file = try config.map { (path) throws(ConfigurationError) in try ConfigurationFile.load(path) }
        return LoadedConfiguration(options: self, daemon: daemon, file: file)
    }

    /// The daemon's settings from the flags, the configuration file and the fail2ban files,
    /// checked: nothing is touched before this passes.
    /// - Parameters:
    ///   - typed: the flags of the command line itself (not those of `[daemon]`), which override
    ///     every jail's policy.
    ///   - creatingStateDirectory: false for --check-config, which changes nothing.
    public func checkedConfiguration(
        typed: DaemonOptions? = nil, creatingStateDirectory: Bool = true
    ) throws
        -> DaemonConfiguration
    {
        var configuration = DaemonConfiguration(transport: transport.configuration)
        configuration.threshold = threshold ?? 3
        configuration.banTime = banTime ?? 30
        configuration.findTime = findTime ?? 0
        configuration.workers = workers
        configuration.readerPolicy = readerPolicy
        configuration.cpus = try cpus.map { (list) throws(SettingError) in try CPUList.parse(list) } ?? []
        configuration.numaNode = numaNode
        configuration.tableBins = tableBins
        configuration.idleHorizon = idleHorizon
        configuration.wakeDelayMicroseconds = wakeDelay
        configuration.failRegexes = failregex
        var allowlist = Allowlist.loopback
        for network in allow { try allowlist.add(network) }
        configuration.allowlist = allowlist
        guard (0...32).contains(minPrefixV4), (0...128).contains(minPrefixV6) else {
            throw DaemonError.invalidSetting("--min-prefix-v4 takes 0 to 32, --min-prefix-v6 0 to 128")
        }
        configuration.shortestListPrefix = (minPrefixV4, minPrefixV6)
        configuration.maxLineLength = maxLine
        configuration.regexMatchLimit = regexMatchLimit
        configuration.protectHost = !banHostAddresses
        configuration.historyEntries = historyEntries
        configuration.historyAge = historyAge

        var jails: [JailConfiguration] = []
        let filterDirectory = filterDir ?? (fail2banConfig.map { $0 + "/filter.d" } ?? "/etc/fail2ban/filter.d")
        var definesJails = fail2banConfig != nil
        if let config {
            let file = try ConfigurationFile.load(config)
            definesJails = definesJails || file.definesJails
            jails += try file.jails(defaultSource: configuration.transport, filterDirectory: filterDirectory)
        }
        if let fail2banConfig {
            let imported = try Fail2banImport.jails(directory: fail2banConfig, defaultSource: configuration.transport)
            jails += imported.jails
            configuration.notes += imported.notes
        }
        if jails.isEmpty && definesJails {
            throw DaemonError.invalidSetting(
                "no enabled jail in " + ([config, fail2banConfig].compactMap { $0 }.joined(separator: " or "))
                    + "; enable one (enabled = true) or add a [jail.NAME] table")
        }
        // The jail flags given on the command line itself (not through [daemon], which the file's
        // jails do not follow) override every jail.
        let typed = typed ?? self
        for index in jails.indices {
            if let threshold = typed.threshold { jails[index].policy.threshold = threshold }
            if let banTime = typed.banTime { jails[index].policy.banTime = banTime }
            if let findTime = typed.findTime { jails[index].policy.findTime = findTime }
        }
        if !jails.isEmpty && !failregex.isEmpty {
            throw DaemonError.invalidSetting(
                "--failregex sets the filter of the jail the flags make, and the configuration has jails of its "
                    + "own: give the patterns in a jail (failregex = [...])")
        }
        configuration.jails = jails
        // A restarted daemon reads on from where the last one stopped in each file and journal, and escalation
        // remembers the bans it counts.
        let files = configuration.effectiveJails.filter {
            $0.sources.contains { $0.kind == .file || $0.kind == .journal }
        }
        let escalates = configuration.effectiveJails.contains { $0.escalation != nil }
        if !files.isEmpty || escalates {
            // Positions and history written to /proc or /sys go nowhere (or somewhere worse).
            if PseudoFileSystem.holds(stateDir) {
                throw DaemonError.invalidSetting(
                    "--state-dir \(stateDir): on /proc or /sys; give a directory on a real file system (e.g. /var/lib/portcullis)"
                )
            }
        }
        if (!files.isEmpty || escalates) && creatingStateDirectory {
            var made = systemCallResult { mkdir(stateDir, 0o700) }
            if case .failure(let error) = made, error.code == EEXIST { made = .success(0) }
            if made.isSuccess { made = systemCallResult { access(stateDir, W_OK) } }
            if case .failure(let error) = made {
                throw DaemonError.invalidSetting(
                    "--state-dir \(stateDir): cannot create or write it (\(error)); give a directory root can write")
            }
        }
        func withPosition(_ source: TransportConfiguration) -> TransportConfiguration {
            var source = source
            switch source.kind {
            case .file:
                source.file.positionPath = stateDir + "/file-\(String(source.file.path.stableTag, radix: 16)).position"
            case .journal:
                // One cursor per journal and match: jails reading the same entries share it.
                let journal = (source.journal.directory ?? "system") + " " + source.journal.match
                source.journal.cursorPath = stateDir + "/journal-\(String(journal.stableTag, radix: 16)).cursor"
            case .shm, .socket, .syslog: break
            }
            return source
        }
        configuration.transport = withPosition(configuration.transport)
        for index in configuration.jails.indices {
            configuration.jails[index].sources = configuration.jails[index].sources.map(withPosition)
        }
        if escalates { configuration.historyPath = stateDir + "/ban-history.json" }
        try configuration.validate()
        if mapEntries == 0 { throw DaemonError.invalidSetting("--map-entries must be at least 1") }
        if !(statusInterval >= 0 && statusInterval <= 86_400) {
            throw DaemonError.invalidSetting("--status-interval must be 0 (never) to 86400 seconds")
        }
        if !(degradedWarningInterval >= 0.1 && degradedWarningInterval <= 86_400) {
            throw DaemonError.invalidSetting("--degraded-warning-interval must be 0.1 to 86400 seconds")
        }
        return configuration
    }

    /// `--control-group` as a group id (a name is looked up in the group database).
    public func controlGroupID() throws(DaemonError) -> gid_t? {
        guard let controlGroup else { return nil }
        if let number = gid_t(controlGroup) { return number }
        guard let entry = getgrnam(controlGroup) else {
            throw DaemonError.invalidSetting(
                "--control-group \(controlGroup): no such group; give a group name or number")
        }
        return entry.pointee.gr_gid
    }

    /// `--prefix-lengths-v4/-v6` parsed: (family, lengths) for each given.
    public func prefixLengths() throws(DaemonError) -> [(IPAddress.Family, [Int])] {
        var result: [(IPAddress.Family, [Int])] = []
        for (flag, text, family) in [
            ("--prefix-lengths-v4", prefixLengthsV4, IPAddress.Family.ipv4),
            ("--prefix-lengths-v6", prefixLengthsV6, .ipv6),
        ] {
            guard let text else { continue }
            let full = IPNetwork.fullLength(family)
            let lengths = text.split(separator: ",").map { Int($0.filter { $0 != " " }) }
            guard !lengths.isEmpty, lengths.count <= 4,
                lengths.allSatisfy({ $0.map { (1..<full).contains($0) } ?? false })
            else {
                throw DaemonError.invalidSetting(
                    "\(flag) \(text): give 1 to 4 lengths of 1...\(full - 1), comma-separated (e.g. "
                        + (family == .ipv4 ? "24" : "64,56,48") + ")")
            }
            result.append((family, lengths.compactMap { $0 }))
        }
        return result
    }

    /// The directories of `--summary-json`, `--ready-file` and `--ban-log` are writable, or can be
    /// made: the daemon makes a missing one (mode 0750, as the unit's `LogsDirectory=` makes
    /// /var/log/portcullis), so the example's ban log checks out before the first start.
    /// - Parameter creating: make the missing directories (the start); false: only check that the
    ///   nearest one that exists is a writable directory (--check-config, which changes nothing).
    public func checkOutputDirectories(creating: Bool) throws(DaemonError) {
        for (option, path) in [("--summary-json", summaryJson), ("--ready-file", readyFile), ("--ban-log", banLog)] {
            guard let path else { continue }
            var missing: [String] = []
            var directory = directoryOf(path)
            while access(directory, F_OK) != 0, directory != "/", directory != "." {
                missing.append(directory)
                directory = directoryOf(directory)
            }
            var status = stat()
            guard stat(directory, &status) == 0, status.st_mode & mode_t(S_IFMT) == mode_t(S_IFDIR),
                access(directory, W_OK) == 0
            else {
                let what = missing.isEmpty ? "its directory" : "\(missing[missing.count - 1])'s parent \(directory)"
                throw DaemonError.invalidSetting(
                    "\(option) \(path): \(what) is not a writable directory; give a path in one root can write")
            }
            guard creating else { continue }
            for directory in missing.reversed() {
                if case .failure(let error) = systemCallResult({ mkdir(directory, 0o750) }), error.code != EEXIST {
                    throw DaemonError.invalidSetting("\(option) \(path): cannot make \(directory) (\(error))")
                }
            }
        }
    }

    private func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
