// SPDX-License-Identifier: Apache-2.0
import Glibc
import Fail2ban
import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import TOMLKit

/// A setting of the configuration file that cannot be used: one line, naming the file, the line
/// and the key.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let line: Int?
    /// The key's dotted path (`jail.sshd.maxretry`), if the error is about one.
    public let key: String?
    public let message: String

    public init(file: String, line: Int? = nil, key: String? = nil, _ message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    public var description: String {
        "\(file)\(line.map { ":\($0)" } ?? ""): \(key.map { "\($0): " } ?? "")\(message)"
    }
}

/// Portcullis's own configuration file (TOML, parsed by TOMLKit):
///
///     [daemon]            # the portcullisd flags, by their long names (--pin-dir → pin-dir)
///     interface = "eth0"
///     [defaults]          # jail settings every jail starts from
///     bantime = "10m"
///     [jail.sshd]         # any number of jails
///     source = "file:/var/log/auth.log"
///     filter = "sshd[mode=aggressive]"
///
/// The flags given on the command line come after the file's `[daemon]` settings, so they override
/// them (lists add to the file's). Unknown keys and values of the wrong type are refused with the
/// file, line and key. `etc/portcullis.toml` in the repository is a commented example.
public struct ConfigurationFile {
    public let path: String
    /// The `[daemon]` settings as portcullisd arguments (`--pin-dir=/sys/fs/bpf/x`).
    public var daemonArguments: [String] { daemonSettings.flatMap(\.arguments) }
    /// Each `[daemon]` setting with its key and line, so that the program can check the values
    /// its own way and still name them.
    public let daemonSettings: [(key: String, line: Int?, arguments: [String])]
    /// `[blocklist.NAME]` tables: a list file the daemon loads (`portcullis blocklist load`) at start
    /// and at each reload, and, with `reload = true`, again whenever the file changes.
    public struct Blocklist: Sendable, Equatable {
        public let name: String
        public let file: String
        public let reload: Bool
        public let line: Int?
    }
    public let blocklists: [Blocklist]
    /// `[crowdsec]`: a CrowdSec Local API's decisions enforced, and the jails' bans pushed to it.
    public let crowdsec: CrowdSecConfiguration?
    /// `[fleet]`: bans shared with the other hosts through a NATS JetStream bucket.
    public let fleet: FleetConfiguration?
    /// Whether the file has `[jail.NAME]` tables (enabled or not).
    public var definesJails: Bool { !jailTables.isEmpty }
    private let defaults: TOMLTable?
    /// `[jail.NAME]` tables, in the order of the file.
    private let jailTables: [(name: String, table: TOMLTable)]
    private let locator: KeyLocator

    /// Reads and checks the file's structure and the types of its `[daemon]` settings.
    public static func load(_ path: String) throws(ConfigurationError) -> ConfigurationFile {
        try ConfigurationFile(path: path, text: try readRegularText(path, what: "TOML file"))
    }

    init(path: String, text: String) throws(ConfigurationError) {
        self.path = path
        let locator = KeyLocator(text: text)
        self.locator = locator
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(file: path, line: error.source.begin.line, "not valid TOML: \(error.description)")
        } catch {
            throw ConfigurationError(file: path, "not valid TOML: \(error)")
        }
        var daemonSettings: [(key: String, line: Int?, arguments: [String])] = []
        var defaults: TOMLTable?
        var jailTables: [(name: String, table: TOMLTable)] = []
        var blocklists: [Blocklist] = []
        var crowdsec: CrowdSecConfiguration?
        var fleet: FleetConfiguration?
        for (key, value) in root {
            switch key {
            case "daemon":
                let table = try Self.table(value, key: key, file: path, locator: locator)
                for (name, setting) in table {
                    let keyPath = "daemon.\(name)"
                    guard let kind = DaemonKeys.all[name] else {
                        throw ConfigurationError(
                            file: path, line: locator.line(of: keyPath), key: keyPath,
                            "unknown setting; the [daemon] keys are portcullisd's flags (portcullisd --help), "
                                + "e.g. pin-dir, workers, allow")
                    }
                    daemonSettings.append(
                        (
                            keyPath, locator.line(of: keyPath),
                            try kind.arguments("--" + name, setting, key: keyPath, file: path, locator: locator)
                        ))
                }
            case "defaults":
                defaults = try Self.table(value, key: key, file: path, locator: locator)
                try JailKeys.check(defaults!, prefix: "defaults", file: path, locator: locator)
            case "jail":
                let table = try Self.table(value, key: key, file: path, locator: locator)
                for (name, jail) in table {
                    guard let jailTable = jail.table else {
                        throw ConfigurationError(
                            file: path, line: locator.line(of: "jail.\(name)"), key: "jail.\(name)",
                            "a jail is a table: write [jail.\(name)] and its settings under it "
                                + "(jail defaults go in [defaults])")
                    }
                    try JailKeys.check(jailTable, prefix: "jail.\(name)", file: path, locator: locator)
                    jailTables.append((name, jailTable))
                }
            case "blocklist":
                let table = try Self.table(value, key: key, file: path, locator: locator)
                for (name, list) in table {
                    let prefix = "blocklist.\(name)"
                    guard let settings = list.table else {
                        throw ConfigurationError(
                            file: path, line: locator.line(of: prefix), key: prefix,
                            "a blocklist is a table: write [\(prefix)] with file = \"PATH\" under it")
                    }
                    var file: String?
                    var reload = false
                    for (setting, item) in settings {
                        let keyPath = "\(prefix).\(setting)"
                        switch setting {
                        case "file": file = try Self.text(item, key: keyPath, file: path, locator: locator)
                        case "reload": reload = try Self.boolean(item, key: keyPath, file: path, locator: locator)
                        default:
                            throw ConfigurationError(
                                file: path, line: locator.line(of: keyPath), key: keyPath,
                                "unknown blocklist setting; the keys are file and reload")
                        }
                    }
                    guard let file, file.hasPrefix("/") else {
                        throw ConfigurationError(
                            file: path, line: locator.line(of: prefix), key: prefix,
                            "give the list's file as an absolute path: file = \"/etc/portcullis/lists/\(name).txt\"")
                    }
                    blocklists.append(Blocklist(name: name, file: file, reload: reload, line: locator.line(of: prefix)))
                }
            case "crowdsec":
                let table = try Self.table(value, key: key, file: path, locator: locator)
                crowdsec = try CrowdSecConfiguration.parse(table, file: path, locator: locator)
            case "fleet":
                let table = try Self.table(value, key: key, file: path, locator: locator)
                fleet = try FleetConfiguration.parse(table, file: path, locator: locator)
            default:
                throw ConfigurationError(
                    file: path, line: locator.line(of: key), key: key,
                    "unknown section; the file has [daemon], [defaults], [jail.NAME], [blocklist.NAME], [crowdsec] and [fleet]"
                )
            }
        }
        jailTables.sort { (locator.line(of: "jail.\($0.name)") ?? 0) < (locator.line(of: "jail.\($1.name)") ?? 0) }
        if !jailTables.isEmpty,
            let setting = daemonSettings.first(where: { DaemonKeys.defaultJailOnly[String($0.key.dropFirst(7))] != nil }
            )
        {
            let name = String(setting.key.dropFirst(7))
            throw ConfigurationError(
                file: path, line: setting.line, key: setting.key,
                "sets the jail the flags make, and this file has jails of its own: give "
                    + "\(DaemonKeys.defaultJailOnly[name]!) in [defaults] (every jail) or in a jail")
        }
        self.daemonSettings = daemonSettings
        self.blocklists = blocklists.sorted { ($0.line ?? 0) < ($1.line ?? 0) }
        self.crowdsec = crowdsec
        self.fleet = fleet
        self.defaults = defaults
        self.jailTables = jailTables
    }

    /// The file's enabled jails, each starting from `[defaults]`.
    /// - Parameter defaultSource: the transport a jail without `source` reads (the daemon's flags
    ///   and `[daemon]` settings); a `source` changes its kind and path only.
    /// - Parameter filterDirectory: where `filter = NAME` is looked up.
    public func jails(
        defaultSource: TransportConfiguration, filterDirectory: String
    ) throws(ConfigurationError)
        -> [JailConfiguration]
    {
        var jails: [JailConfiguration] = []
        for (name, table) in jailTables {
            var jail = JailConfiguration(name: name, source: defaultSource)
            jail.origin = path
            var enabled = true
            var filter = ReadSettings()
            for (prefix, settings) in [("defaults", defaults), ("jail.\(name)", table)] {
                guard let settings else { continue }
                // A jail's filter replaces the defaults' (as a jail's filter or failregex does in
                // fail2ban): a `filter` there drops the defaults' `failregex`, and the other way round.
                var own = ReadSettings()
                try JailKeys.apply(
                    settings, prefix: prefix, to: &jail, filter: &own, enabled: &enabled, file: path,
                    locator: locator)
                if own.reference != nil { filter.failregex = [] }
                if !own.failregex.isEmpty { filter.reference = nil }
                filter.reference = own.reference ?? filter.reference
                filter.failregex = own.failregex.isEmpty ? filter.failregex : own.failregex
                filter.ignoreregex = own.ignoreregex.isEmpty ? filter.ignoreregex : own.ignoreregex
                if own.key != nil { (filter.key, filter.line) = (own.key, own.line) }
                if own.sourceKey != nil { (filter.sourceKey, filter.sourceLine) = (own.sourceKey, own.sourceLine) }
            }
            guard enabled else { continue }
            // Journal and syslog lines carry no date (the time they arrive is theirs); a journal
            // source without a match takes its fail2ban filter's journalmatch, as fail2ban's
            // systemd backend does.
            let journal = jail.source.kind == .journal
            let dated = !journal && jail.source.kind != .syslog
            jail.filter = try resolve(filter, jail: name, filterDirectory: filterDirectory, detectsDates: dated)
            if journal, jail.source.journal.match.isEmpty, case .fail2ban(let definition, _, _) = jail.filter {
                jail.source.journal.match = JournalMatch.joining(definition.journalmatch)
                do throws(TransportError) {
                    _ = try JournalMatch.parse(jail.source.journal.match)
                } catch {
                    throw ConfigurationError(file: path, line: filter.line, key: filter.key, error.description)
                }
            }
            if jail.source.kind == .file,
                case .failure(let error) = systemCallResult({ access(jail.source.file.path, R_OK) })
            {
                throw ConfigurationError(
                    file: path, line: filter.sourceLine, key: filter.sourceKey ?? "jail.\(name).source",
                    "\(jail.source.file.path): \(error); give the log file the service writes")
            }
            jails.append(jail)
        }
        return jails
    }

    /// The filter the keys describe: a fail2ban filter by reference, inline patterns (with
    /// fail2ban's tags and date cutting), or the built-in line format when there are none.
    private func resolve(
        _ filter: ReadSettings, jail: String, filterDirectory: String, detectsDates: Bool
    ) throws(ConfigurationError)
        -> JailFilter
    {
        func fail(_ message: String) -> ConfigurationError {
            ConfigurationError(file: path, line: filter.line, key: filter.key, message)
        }
        if let reference = filter.reference {
            guard filter.failregex.isEmpty else {
                throw fail("give either filter (a fail2ban filter) or failregex (inline patterns), not both")
            }
            do throws(Fail2banError) {
                let directory = try lookupDirectory(for: reference, fallback: filterDirectory)
                var definition = try FilterLoader.load(reference, filterDirectory: directory)
                definition.ignoreregex += filter.ignoreregex
                return .fail2ban(definition, useDNS: nil, detectsDates: detectsDates)
            } catch .unknownFilter(let name, let directory) {
                throw fail(
                    "filter '\(name)': no \(name).conf or \(name).local in \(ownFilterDirectory) or \(directory); "
                        + "check the name, or give the filter's path")
            } catch {
                throw fail(error.description)
            }
        }
        if filter.failregex.isEmpty {
            guard filter.ignoreregex.isEmpty else { throw fail("ignoreregex needs a filter or failregex to go with") }
            return .builtIn
        }
        var definition = FilterDefinition.inline(failregex: filter.failregex.joined(separator: "\n"))
        definition.ignoreregex = filter.ignoreregex
        definition.file = path
        return .fail2ban(definition, useDNS: nil, detectsDates: detectsDates)
    }

    /// `filter.d` beside this file (/etc/portcullis/filter.d for the installed one): the filters
    /// Portcullis ships, and the operator's own.
    var ownFilterDirectory: String {
        guard let slash = path.lastIndex(of: "/") else { return "filter.d" }
        return String(path[..<slash]) + "/filter.d"
    }

    /// Where `filter = NAME` is read from: `filter.d` beside this file when it holds `NAME.conf` or
    /// `NAME.local`, else `fallback` (--filter-dir: fail2ban's). A path is read as written. So the
    /// filters shipped with Portcullis give the same verdicts whether fail2ban is installed or not,
    /// and fail2ban's fill in the names Portcullis has no filter of.
    private func lookupDirectory(for reference: String, fallback: String) throws(Fail2banError) -> String {
        let name = try FilterLoader.parseReference(reference).name
        guard name.firstIndex(of: "/") == nil, !name.hasSuffix(".conf"), !name.hasSuffix(".local") else {
            return fallback
        }
        let own = ownFilterDirectory
        let found = [".conf", ".local"].contains { access(own + "/" + name + $0, F_OK) == 0 }
        return found ? own : fallback
    }

    // MARK: values of a type, or a one-line error

    static func table(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> TOMLTable
    {
        guard let table = value.table else { throw wrongType(value, "a table", key: key, file: file, locator: locator) }
        return table
    }

    static func text(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> String
    {
        guard let text = value.string else {
            throw wrongType(value, "a string", key: key, file: file, locator: locator)
        }
        return text
    }

    /// A string, or an array of strings (fail2ban's multi-line values).
    static func texts(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> [String]
    {
        if let text = value.string { return [text] }
        guard let array = value.array else {
            throw wrongType(value, "a string or an array of strings", key: key, file: file, locator: locator)
        }
        var texts: [String] = []
        for element in array {
            guard let text = element.string else {
                throw wrongType(element, "a string", key: key, file: file, locator: locator)
            }
            texts.append(text)
        }
        return texts
    }

    static func integer(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> Int
    {
        guard value.type == .int, let integer = value.int else {
            throw wrongType(value, "an integer", key: key, file: file, locator: locator)
        }
        return integer
    }

    static func number(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> Double
    {
        if value.type == .int, let integer = value.int { return Double(integer) }
        guard value.type == .double, let number = value.double else {
            throw wrongType(value, "a number", key: key, file: file, locator: locator)
        }
        return number
    }

    static func boolean(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> Bool
    {
        guard value.type == .bool, let boolean = value.bool else {
            throw wrongType(value, "true or false", key: key, file: file, locator: locator)
        }
        return boolean
    }

    /// Seconds: an integer, or a string with fail2ban's units (`90`, `10m`, `1h30m`, `1d`, `1w`).
    static func seconds(
        _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError) -> Int64
    {
        if value.type == .int, let integer = value.int { return Int64(integer) }
        guard let text = value.string else {
            throw wrongType(
                value, "seconds (an integer, or a string such as \"10m\")", key: key, file: file, locator: locator)
        }
        guard let value = Fail2banDuration.seconds(text), let seconds = Int64(exactly: value.rounded(.towardZero)),
            abs(seconds) <= 1 << 52
        else {
            throw ConfigurationError(
                file: file, line: locator.line(of: key), key: key,
                "'\(text)' is no duration; write seconds, or a number with a unit (s, m, h, d, w, y), e.g. \"10m\"")
        }
        return seconds
    }

    static func wrongType(
        _ value: TOMLValueConvertible, _ expected: String, key: String, file: String, locator: KeyLocator
    ) -> ConfigurationError {
        ConfigurationError(
            file: file, line: locator.line(of: key), key: key, "must be \(expected), not \(describe(value.type))")
    }

    static func describe(_ type: TOMLType) -> String {
        switch type {
        case .table: "a table"
        case .array: "an array"
        case .string: "a string"
        case .int: "an integer"
        case .double: "a floating-point number"
        case .bool: "a boolean"
        case .date, .time, .dateTime: "a date or time"
        }
    }
}

/// The whole text of a regular file (at most 16 MiB). Opened without blocking and checked before
/// reading: a FIFO, device or directory named as a configuration is one line, not a hang.
func readRegularText(_ path: String, what: String) throws(ConfigurationError) -> String {
    let fd = try systemCall(
        { open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC) },
        orThrow: { ConfigurationError(file: path, "cannot read it: \($0); give a readable \(what)") })
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
        throw ConfigurationError(file: path, "not a regular file (a FIFO, device or directory); give a \(what)")
    }
    do throws(Errno) {
        return try TextFile.read(descriptor: fd)
    } catch {
        throw ConfigurationError(file: path, "cannot read it: \(error); give a readable \(what)")
    }
}
