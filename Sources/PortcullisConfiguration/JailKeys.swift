// SPDX-License-Identifier: Apache-2.0
import LogTransport
import PortcullisCore
import PortcullisDaemon
import TOMLKit

/// The keys of a `[jail.NAME]` table (and of `[defaults]`), with fail2ban's names where fail2ban
/// has one:
///
/// | key | value |
/// |---|---|
/// | `enabled` | true (the default) or false |
/// | `source` | `"file:/var/log/auth.log"`, `"shm"`, `"shm:/name"`, `"socket"`, `"socket:/dir"`, `"journal"`, `"journal:MATCH"` (fail2ban's journalmatch: `"journal:_SYSTEMD_UNIT=ssh.service + _COMM=sshd"`), `"syslog"`, `"syslog:TAG,TAG"` (the daemon's syslog socket, messages of these tags); default: the daemon's transport |
/// | `filter` | a fail2ban filter by name or path, with arguments: `"sshd[mode=aggressive]"` |
/// | `failregex`, `ignoreregex` | inline patterns (a string or an array), fail2ban's tags |
/// | `maxretry` | offences that ban |
/// | `findtime` | seconds or a duration (`"10m"`); 0: count until the ban ends |
/// | `bantime` | seconds or a duration; -1 or `"forever"`: for good |
/// | `ignoreip` | networks never banned by this jail (a string of them, or an array) |
/// | `table-bins` | bins of the jail's offence table |
/// | `escalation` | a table: `increment`, `factor`, `formula`, `multipliers`, `maxtime`, `rndtime`, `overalljails` (fail2ban's `bantime.*`) |
/// | `ipv6-prefix` | count and ban IPv6 clients by this prefix (`64`: the /64, not the address) |
/// | `aggregate-v4`, `aggregate-v6` | `"LENGTH:N"`: N distinct bans inside one prefix of LENGTH within findtime ban the prefix |
enum JailKeys {
    static let names: Set<String> = [
        "enabled", "source", "filter", "failregex", "ignoreregex", "maxretry", "findtime", "bantime", "ignoreip",
        "table-bins", "escalation", "ipv6-prefix", "aggregate-v4", "aggregate-v6",
    ]
    static let escalationNames: Set<String> = [
        "increment", "factor", "formula", "multipliers", "maxtime", "rndtime", "overalljails",
    ]

    /// Refuses unknown keys and wrong types in `table` (a jail, or the defaults).
    static func check(
        _ table: TOMLTable, prefix: String, file: String, locator: KeyLocator
    )
        throws(ConfigurationError)
    {
        var scratch = JailConfiguration(name: "check", source: TransportConfiguration(kind: .shm))
        var filter = ReadSettings()
        var enabled = true
        try apply(table, prefix: prefix, to: &scratch, filter: &filter, enabled: &enabled, file: file, locator: locator)
    }

    /// Sets what `table` says on `jail`; the filter keys go to `filter` (resolved once every
    /// table of the jail is read).
    static func apply(
        _ table: TOMLTable, prefix: String, to jail: inout JailConfiguration, filter: inout ReadSettings,
        enabled: inout Bool, file: String, locator: KeyLocator
    ) throws(ConfigurationError) {
        for (name, value) in table {
            let key = "\(prefix).\(name)"
            func fail(_ message: String) -> ConfigurationError {
                ConfigurationError(file: file, line: locator.line(of: key), key: key, message)
            }
            switch name {
            case "enabled":
                enabled = try ConfigurationFile.boolean(value, key: key, file: file, locator: locator)
            case "source":
                let text = try ConfigurationFile.text(value, key: key, file: file, locator: locator)
                do throws(SettingError) {
                    try setSource(text, of: &jail)
                } catch {
                    throw fail(error.description)
                }
                filter.sourceKey = key
                filter.sourceLine = locator.line(of: key)
            case "filter", "failregex", "ignoreregex":
                switch name {
                case "filter":
                    filter.reference = try ConfigurationFile.text(value, key: key, file: file, locator: locator)
                case "failregex":
                    filter.failregex = try ConfigurationFile.texts(value, key: key, file: file, locator: locator)
                default:
                    filter.ignoreregex = try ConfigurationFile.texts(value, key: key, file: file, locator: locator)
                }
                filter.key = key
                filter.line = locator.line(of: key)
            case "maxretry":
                let count = try ConfigurationFile.integer(value, key: key, file: file, locator: locator)
                guard count >= 1, count <= 0x00FF_FFFE else { throw fail("must be 1...16777214") }
                jail.policy.threshold = UInt32(count)
            case "findtime":
                let seconds = try ConfigurationFile.seconds(value, key: key, file: file, locator: locator)
                guard seconds >= 0, seconds <= Int64(UInt32.max) else {
                    throw fail("must be 0 (count until the ban ends) or more seconds")
                }
                jail.policy.findTime = UInt32(seconds)
            case "bantime":
                if value.string?.lowercased() == "forever" {
                    jail.policy.banTime = 0
                    continue
                }
                let seconds = try ConfigurationFile.seconds(value, key: key, file: file, locator: locator)
                guard seconds != 0 else { throw fail("0 bans nothing; give seconds, or -1 (\"forever\") for good") }
                jail.policy.banTime = seconds < 0 ? 0 : UInt64(seconds)
            case "ignoreip":
                let texts = try ConfigurationFile.texts(value, key: key, file: file, locator: locator)
                // A jail's list replaces the defaults', as fail2ban's ignoreip does.
                var ignore = Allowlist.none
                for network in texts.flatMap({ $0.split(whereSeparator: { $0 == " " || $0 == "," }) }) {
                    do throws(SettingError) {
                        try ignore.add(String(network))
                    } catch {
                        throw fail("\(error.description) (ignoreip takes addresses and CIDRs; names are not looked up)")
                    }
                }
                jail.ignore = ignore
            case "ipv6-prefix":
                let length = try ConfigurationFile.integer(value, key: key, file: file, locator: locator)
                guard (1...127).contains(length) else { throw fail("must be a prefix length 1...127, e.g. 64") }
                jail.aggregation.ipv6Prefix = length
            case "aggregate-v4", "aggregate-v6":
                let text = try ConfigurationFile.text(value, key: key, file: file, locator: locator)
                let v4 = name == "aggregate-v4"
                let parts = text.split(separator: ":")
                guard parts.count == 2, let length = Int(parts[0]), let count = Int(parts[1]),
                    (1...(v4 ? 31 : 127)).contains(length), count >= 2
                else {
                    throw fail(
                        "give \"LENGTH:N\" (N distinct bans in one /LENGTH within findtime ban it), e.g. \""
                            + (v4 ? "24:5" : "48:5") + "\"; LENGTH 1...\(v4 ? 31 : 127), N at least 2")
                }
                if v4 {
                    jail.aggregation.ipv4 = .init(length: length, count: count)
                } else {
                    jail.aggregation.ipv6 = .init(length: length, count: count)
                }
            case "table-bins":
                let bins = try ConfigurationFile.integer(value, key: key, file: file, locator: locator)
                guard bins >= 16 else { throw fail("must be at least 16") }
                jail.tableBins = bins
            case "escalation":
                let settings = try ConfigurationFile.table(value, key: key, file: file, locator: locator)
                jail.escalation = try escalation(
                    settings, prefix: key, starting: jail.escalation, file: file, locator: locator)
            default:
                throw fail("unknown jail setting; the keys are \(names.sorted().joined(separator: ", "))")
            }
        }
    }

    /// `source = "file:/path"` and friends: the transport's kind and name; the rest of its
    /// settings stay the daemon's. `"journal:MATCH"`: the journal, entries matching fail2ban's
    /// `journalmatch` expression.
    static func setSource(_ text: String, of jail: inout JailConfiguration) throws(SettingError) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard let kind = parts.first.flatMap(TransportKind.init(rawValue:)) else {
            throw SettingError(
                "'\(text)' is no source; write \"file:/var/log/NAME.log\", \"shm\", \"shm:/name\", \"socket\", "
                    + "\"socket:/directory\", \"journal\", \"journal:_SYSTEMD_UNIT=NAME.service\", \"syslog\" or \"syslog:TAG,TAG\""
            )
        }
        jail.source.kind = kind
        if kind == .journal {
            let match = parts.count == 2 ? parts[1] : ""
            do throws(TransportError) {
                _ = try JournalMatch.parse(match)
            } catch {
                throw SettingError(error.description)
            }
            jail.source.journal.match = match
            return
        }
        if kind == .syslog {
            // The daemon's socket (--syslog-socket), the messages of these tags (none: all).
            jail.source.syslog.tags =
                parts.count == 2 ? parts[1].split(separator: ",").map { String($0.filter { $0 != " " }) } : []
            do throws(TransportError) {
                try jail.source.syslog.validate()
            } catch {
                throw SettingError(error.description)
            }
            return
        }
        guard parts.count == 2 else {
            if kind == .file { throw SettingError("a file source needs its path: \"file:/var/log/NAME.log\"") }
            return
        }
        guard parts[1].hasPrefix("/") else {
            throw SettingError("'\(parts[1])' must be an absolute path (or, for shm, a name starting with '/')")
        }
        switch kind {
        case .file: jail.source.file.path = parts[1]
        case .shm: jail.source.shm.name = parts[1]
        case .socket: jail.source.socket.directory = parts[1]
        case .journal, .syslog: break
        }
    }

    /// fail2ban's `bantime.*` keys, without their prefix.
    static func escalation(
        _ table: TOMLTable, prefix: String, starting: Escalation?, file: String, locator: KeyLocator
    ) throws(ConfigurationError) -> Escalation? {
        var escalation = starting ?? Escalation()
        var increment = starting != nil
        for (name, value) in table {
            let key = "\(prefix).\(name)"
            func fail(_ message: String) -> ConfigurationError {
                ConfigurationError(file: file, line: locator.line(of: key), key: key, message)
            }
            switch name {
            case "increment":
                increment = try ConfigurationFile.boolean(value, key: key, file: file, locator: locator)
            case "factor":
                escalation.factor = try ConfigurationFile.number(value, key: key, file: file, locator: locator)
            case "formula":
                let formula = try ConfigurationFile.text(value, key: key, file: file, locator: locator)
                guard let growth = Escalation.growth(formula: formula) else {
                    throw fail(
                        "this formula is not supported (fail2ban evaluates it as Python); use fail2ban's default, "
                            + "its math.exp alternative from jail.conf, or multipliers")
                }
                if case .multipliers = escalation.growth {} else { escalation.growth = growth }
            case "multipliers":
                var numbers: [Double] = []
                if let text = value.string {
                    for word in text.split(separator: " ") {
                        guard let number = Double(word) else { throw fail("'\(word)' is no number") }
                        numbers.append(number)
                    }
                } else if let array = value.array {
                    for element in array {
                        numbers.append(try ConfigurationFile.number(element, key: key, file: file, locator: locator))
                    }
                } else {
                    throw ConfigurationFile.wrongType(
                        value, "an array of numbers", key: key, file: file, locator: locator)
                }
                escalation.growth = .multipliers(numbers)
            case "maxtime":
                let seconds = try ConfigurationFile.seconds(value, key: key, file: file, locator: locator)
                guard seconds > 0 else { throw fail("must be more than 0 seconds") }
                escalation.maxTime = UInt64(seconds)
            case "rndtime":
                let seconds = try ConfigurationFile.seconds(value, key: key, file: file, locator: locator)
                guard seconds >= 0 else { throw fail("must be 0 or more seconds") }
                escalation.randomTime = seconds == 0 ? nil : UInt64(seconds)
            case "overalljails":
                escalation.overallJails = try ConfigurationFile.boolean(value, key: key, file: file, locator: locator)
            default:
                throw fail(
                    "unknown escalation setting; the keys are \(escalationNames.sorted().joined(separator: ", "))")
            }
        }
        return increment ? escalation : nil
    }
}

/// What a jail's tables say that is resolved once all are read: its filter keys (a fail2ban
/// filter by reference, or inline patterns), and where its source was set.
struct ReadSettings {
    /// The `source` key that set the jail's source, and its line, if one did.
    var sourceKey: String?
    var sourceLine: Int?
    var reference: String?
    var failregex: [String] = []
    var ignoreregex: [String] = []
    /// The last filter key read, and its line, for errors.
    var key: String?
    var line: Int?
}
