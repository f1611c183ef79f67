// SPDX-License-Identifier: Apache-2.0
/// fail2ban's jails as `fail2ban-client` reads them: `jail.conf`, `jail.d/*.conf`, `jail.local`,
/// `jail.d/*.local` (each with its `[INCLUDES]`, e.g. `paths-debian.conf`), every section but
/// `[INCLUDES]` and `[DEFAULT]` a jail.
public struct Fail2banConfiguration: Sendable {
    /// The configuration directory (`/etc/fail2ban`).
    public var directory: String
    /// Every jail, enabled or not, in the order of first appearance.
    public var jails: [Fail2banJail]
    /// The files read, in fail2ban's order.
    public var files: [String]

    /// The jail called `name`.
    public func jail(_ name: String) -> Fail2banJail? { jails.first { $0.name == name } }

    /// The jails that are enabled.
    public var enabledJails: [Fail2banJail] { jails.filter(\.enabled) }

    /// What fail2ban version `%(fail2ban_version)s` stands for.
    public static let emulatedVersion = "1.0.2"

    /// Reads the configuration in `directory`, without any DNS lookup.
    /// - Throws: `Fail2banError` for a missing `jail.conf`, a syntax error, or any error of an
    ///   enabled jail (its filter, a duration, a number). A disabled jail's errors do not stop the
    ///   read; they are kept in its `problems`.
    public static func read(directory: String = "/etc/fail2ban") throws(Fail2banError) -> Fail2banConfiguration {
        let directory = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        var configuration = Configuration()
        guard try configuration.read(basename: directory + "/jail") else {
            throw .missingFile(path: directory + "/jail.conf", purpose: "fail2ban's jails")
        }
        configuration.setDefault("fail2ban_version", emulatedVersion)
        configuration.setDefault("fail2ban_confpath", directory)
        var jails: [Fail2banJail] = []
        for name in configuration.sectionOrder where name != "INCLUDES" && !name.hasPrefix("KNOWN/") {
            jails.append(try Fail2banJail.read(name, from: &configuration, directory: directory))
        }
        return Fail2banConfiguration(directory: directory, jails: jails, files: configuration.files)
    }
}

/// One jail's resolved options.
public struct Fail2banJail: Sendable {
    public var name: String
    public var enabled: Bool
    /// `filter` as resolved (`sshd[mode=normal]`); empty when the jail has none.
    public var filterReference: String
    /// The filter, loaded with the jail's options; nil when the jail names none or (disabled jails
    /// only) it could not be loaded (see `problems`).
    public var filter: FilterDefinition?
    /// `logpath`, one entry per line, globs as written (a trailing `head`/`tail` word dropped).
    public var logpath: [String]
    public var backend: String
    /// `journalmatch`: the jail's own, else the filter's.
    public var journalmatch: [String]
    public var maxretry: Int
    /// `findtime` in seconds.
    public var findtime: Int
    /// `bantime` in seconds; negative = forever.
    public var bantime: Int
    /// `ignoreip`, split at spaces, commas and new lines.
    public var ignoreip: [String]
    /// `action` as text (fail2ban's actions are replaced by Portcullis's ban maps).
    public var action: String
    /// `usedns` (Portcullis never resolves a name whatever it says).
    public var usedns: String
    /// `maxlines`: the jail's own, else the filter's.
    public var maxlines: Int
    /// The `bantime.*` escalation keys.
    public var banTimeIncrement: BanTimeIncrement
    /// Every option of the jail's section (and the defaults), resolved; a key whose value could
    /// not be resolved (in a disabled jail) is kept raw.
    public var options: [String: String]
    /// Errors met while reading a disabled jail (fail2ban reads no further than `enabled` there).
    public var problems: [String]

    /// fail2ban's `bantime.*` options.
    public struct BanTimeIncrement: Sendable, Equatable {
        /// `bantime.increment`.
        public var enabled: Bool
        /// `bantime.factor` (fail2ban default 1).
        public var factor: Double
        /// `bantime.formula` as text (a Python expression in fail2ban).
        public var formula: String?
        /// `bantime.multipliers`: the factors per ban count, when given (replace the formula).
        public var multipliers: [Int]
        /// `bantime.maxtime` in seconds.
        public var maxtime: Int?
        /// `bantime.rndtime` in seconds.
        public var rndtime: Int?
        /// `bantime.overalljails`: count bans across all jails.
        public var overalljails: Bool
    }

    /// fail2ban's jail option types (`JailReader._configOpts`).
    static let keys =
        [
            "enabled", "backend", "maxretry", "maxmatches", "findtime", "bantime", "bantime.increment",
            "bantime.factor",
            "bantime.formula", "bantime.multipliers", "bantime.maxtime", "bantime.rndtime", "bantime.overalljails",
            "ignorecommand", "ignoreself", "ignoreip", "ignorecache", "filter", "logtimezone", "logencoding", "logpath",
            "action",
        ] + FilterLoader.definitionKeys

    /// fail2ban's `_as_bool`.
    static func bool(_ text: String) -> Bool { ["1", "on", "true", "yes"].contains(text.lowercased()) }

    static func read(
        _ name: String, from configuration: inout Configuration, directory: String
    ) throws(Fail2banError) -> Fail2banJail {
        let file = configuration.files.first ?? directory + "/jail.conf"
        var problems: [String] = []
        // First stage (fail2ban reads only these for a disabled jail).
        let enabled = bool(try configuration.value(name, "enabled") ?? "false")
        func stage(_ key: String) throws(Fail2banError) -> String? {
            do {
                return try configuration.value(name, key)
            } catch {
                if enabled { throw error }
                problems.append(error.description)
                return configuration.raw(name, key)
            }
        }
        let backend = try stage("backend") ?? "auto"
        let filterReference = (try stage("filter") ?? "").trimmingWhitespace()
        var filter: FilterDefinition? = nil
        let filterDirectory = directory + "/filter.d"
        if !filterReference.isEmpty {
            do {
                // getOptions(all=True) with the first-stage options; the result becomes known/...
                let early = try FilterLoader.load(
                    String(filterReference), filterDirectory: filterDirectory,
                    jailOptions: [
                        "enabled": enabled ? "true" : "false", "backend": backend, "filter": String(filterReference),
                    ],
                    arguments: [:], allOptions: true)
                configuration.mergeSection(name, early.options, prefix: "known/")
            } catch {
                if enabled { throw error }
                problems.append(error.description)
            }
        }
        // Second stage: every option, now that %(known/...)s can be interpolated.
        var options: [String: String] = [:]
        let keys = Set(configuration.ownKeys(name)).union(configuration.defaults.keys)
        for key in keys.sorted() {
            if Self.keys.contains(key) {
                if let value = try stage(key) { options[key] = value }
            } else {
                // fail2ban reads only its own keys; others (action_mw, ...) may refer to values the
                // operator never set, which is no error until an action uses them.
                options[key] = (try? configuration.value(name, key)) ?? configuration.raw(name, key)
            }
        }
        var jailOptions: [String: String] = [:]
        for key in keys where Self.keys.contains(key) { jailOptions[key] = options[key] }
        jailOptions["enabled"] = jailOptions["enabled"] ?? "false"
        jailOptions["backend"] = jailOptions["backend"] ?? "auto"
        if !filterReference.isEmpty && problems.isEmpty {
            do {
                filter = try FilterLoader.load(
                    String(filterReference), filterDirectory: filterDirectory, jailOptions: jailOptions)
            } catch {
                if enabled { throw error }
                problems.append(error.description)
            }
        }
        func number(_ key: String, default fallback: Int) throws(Fail2banError) -> Int {
            guard let text = options[key] else { return fallback }
            guard let value = Int(text.trimmingWhitespace()) else {
                let error = Fail2banError.badValue(
                    file: file, key: "[\(name)] \(key)", value: text, expected: "a whole number")
                if enabled { throw error }
                problems.append(error.description)
                return fallback
            }
            return value
        }
        func duration(_ key: String, default fallback: Int?) throws(Fail2banError) -> Int? {
            guard let text = options[key] else { return fallback }
            do {
                return try Fail2banDuration.wholeSeconds(text, file: file, key: "[\(name)] \(key)")
            } catch {
                if enabled { throw error }
                problems.append(error.description)
                return fallback
            }
        }
        var factor = 1.0
        if let text = options["bantime.factor"] {
            if let value = Double(text.trimmingWhitespace()) {
                factor = value
            } else {
                let error = Fail2banError.badValue(
                    file: file, key: "[\(name)] bantime.factor", value: text, expected: "a number")
                if enabled { throw error }
                problems.append(error.description)
            }
        }
        var multipliers: [Int] = []
        if let text = options["bantime.multipliers"] {
            for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }) {
                if let value = Int(word) {
                    multipliers.append(value)
                } else {
                    let error = Fail2banError.badValue(
                        file: file, key: "[\(name)] bantime.multipliers", value: text,
                        expected: "whole numbers separated by spaces")
                    if enabled { throw error }
                    problems.append(error.description)
                    break
                }
            }
        }
        let increment = BanTimeIncrement(
            enabled: options["bantime.increment"].map(bool) ?? false, factor: factor,
            formula: options["bantime.formula"],
            multipliers: multipliers, maxtime: try duration("bantime.maxtime", default: nil),
            rndtime: try duration("bantime.rndtime", default: nil),
            overalljails: options["bantime.overalljails"].map(bool) ?? false)
        let logpath = (options["logpath"] ?? "").split(separator: "\n").compactMap { line -> String? in
            var text = line.trimmingWhitespace()
            if let space = text.lastIndex(of: " "), ["head", "tail"].contains(text[text.index(after: space)...]) {
                text = text[..<space].trimmingWhitespace()
            }
            return text.isEmpty ? nil : String(text)
        }
        let ignoreip = (options["ignoreip"] ?? "").split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\n" }).map(
            String.init)
        return Fail2banJail(
            name: name, enabled: enabled, filterReference: String(filterReference), filter: filter, logpath: logpath,
            backend: backend, journalmatch: options["journalmatch"].map(splitPatterns) ?? filter?.journalmatch ?? [],
            maxretry: try number("maxretry", default: 5),
            findtime: try duration("findtime", default: 600) ?? 600,
            bantime: try duration("bantime", default: 600) ?? 600,
            ignoreip: ignoreip, action: options["action"] ?? "", usedns: options["usedns"] ?? "warn",
            maxlines: try number("maxlines", default: filter?.maxlines ?? 1), banTimeIncrement: increment,
            options: options, problems: problems)
    }
}
