// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import Glibc
import LogTransport
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem

/// fail2ban's enabled jails as Portcullis jails (`portcullisd --fail2ban-config /etc/fail2ban`):
/// the jail's filter, `logpath` (globs expanded, as fail2ban does at start), `maxretry`,
/// `findtime`, `bantime`, `ignoreip` and `bantime.*` become the jail's; its `action` is replaced by
/// XDP enforcement (the start-up log says so, per jail). A `backend = systemd` jail reads the
/// journal instead, with its `journalmatch` (the jail's, else its filter's), its filter told that
/// the lines carry no date. No name is looked up: an `ignoreip` entry that is a name is left out and
/// said.
public enum Fail2banImport {
    /// The jails, and remarks for the start-up log.
    public struct Result {
        public var jails: [JailConfiguration] = []
        public var notes: [String] = []
    }

    /// - Parameter defaultSource: the daemon's transport settings; a jail's files replace its path.
    public static func jails(
        directory: String, defaultSource: TransportConfiguration
    ) throws(ConfigurationError)
        -> Result
    {
        let configuration: Fail2banConfiguration
        do {
            configuration = try Fail2banConfiguration.read(directory: directory)
        } catch {
            throw ConfigurationError(file: directory, "\(error)")
        }
        let file = configuration.files.last ?? directory + "/jail.conf"
        var result = Result()
        for jail in configuration.enabledJails {
            func fail(_ key: String, _ message: String) -> ConfigurationError {
                ConfigurationError(file: file, key: "[\(jail.name)] \(key)", message)
            }
            guard let filter = jail.filter else {
                throw fail("filter", "the jail has no filter; give it one (filter = NAME)")
            }
            var sources: [TransportConfiguration] = []
            // backend = systemd: the journal, with the jail's (else the filter's) journalmatch; its
            // lines carry no date. fail2ban's systemd[journalpath=..., journalflags=...] options
            // are not taken: the system journal is read.
            let journal = jail.backend.hasPrefix("systemd")
            if journal {
                var source = defaultSource
                source.kind = .journal
                source.journal.match = JournalMatch.joining(jail.journalmatch)
                do throws(TransportError) {
                    _ = try JournalMatch.parse(source.journal.match)
                } catch {
                    throw fail("journalmatch", error.description)
                }
                sources.append(source)
                if jail.backend != "systemd" {
                    result.notes.append(
                        "jail \(jail.name): backend '\(jail.backend)': its options are not taken; the system journal "
                            + "is read")
                }
            }
            for pattern in journal ? [] : jail.logpath {
                let files = expand(pattern)
                if files.isEmpty {
                    throw fail("logpath", "no log file matches '\(pattern)'; fix logpath or disable the jail")
                }
                for path in files where !sources.contains(where: { $0.file.path == path }) {
                    var source = defaultSource
                    source.kind = .file
                    source.file.path = path
                    sources.append(source)
                }
            }
            if sources.isEmpty { throw fail("logpath", "the jail has no logpath; give the log file it reads") }

            var settings = JailConfiguration(name: jail.name, source: sources[0])
            settings.sources = sources
            settings.filter = .fail2ban(filter, useDNS: jail.usedns, detectsDates: !journal)
            guard jail.maxretry >= 1 else { throw fail("maxretry", "must be 1 or more") }
            settings.policy.threshold = UInt32(clamping: jail.maxretry)
            settings.policy.findTime = UInt32(clamping: max(jail.findtime, 0))
            guard jail.bantime != 0 else { throw fail("bantime", "0 bans nothing; give seconds, or -1 for good") }
            settings.policy.banTime = jail.bantime < 0 ? 0 : UInt64(jail.bantime)
            for entry in jail.ignoreip {
                do throws(SettingError) {
                    try settings.ignore.add(entry)
                } catch {
                    result.notes.append(
                        "jail \(jail.name): ignoreip '\(entry)' is not an address or network; left out (no name is "
                            + "looked up)")
                }
            }
            let increment = jail.banTimeIncrement
            if increment.enabled {
                var escalation = Escalation()
                escalation.factor = increment.factor
                if !increment.multipliers.isEmpty {
                    escalation.growth = .multipliers(increment.multipliers.map(Double.init))
                } else if let formula = increment.formula {
                    guard let growth = Escalation.growth(formula: formula) else {
                        throw fail(
                            "bantime.formula",
                            "this formula is not supported (fail2ban evaluates it as Python); use the default, its "
                                + "math.exp alternative from jail.conf, or bantime.multipliers")
                    }
                    escalation.growth = growth
                }
                escalation.maxTime = increment.maxtime.map { UInt64(max($0, 1)) }
                escalation.randomTime = increment.rndtime.flatMap { $0 > 0 ? UInt64($0) : nil }
                escalation.overallJails = increment.overalljails
                settings.escalation = escalation
            }
            if jail.name == "recidive" {
                result.notes.append(
                    "jail recidive reads fail2ban's own log, where Portcullis's bans do not appear (they are in "
                        + "its --ban-log); repeat offenders are what escalation (bantime.increment) is for")
            }
            if !(jail.options["ignorecommand"] ?? "").isEmpty {
                result.notes.append("jail \(jail.name): ignorecommand is not run; list the networks in ignoreip")
            }
            let action = jail.action.split(whereSeparator: \.isNewline).first.map(String.init) ?? "none"
            settings.origin = "fail2ban \(directory); action \(action.trimmingSpaces()) replaced by XDP enforcement"
            result.jails.append(settings)
        }
        if !result.jails.isEmpty {
            result.notes.append(
                "fail2ban's actions, port and protocol do not apply: a banned client's packets are dropped on "
                    + "every port, in the driver")
        }
        return result
    }

    /// The files a `logpath` entry names (fail2ban expands globs with Python's glob at start).
    static func expand(_ pattern: String) -> [String] {
        var matches = glob_t()
        defer { globfree(&matches) }
        guard glob(pattern, 0, nil, &matches) == 0 else { return [] }
        return (0..<Int(matches.gl_pathc)).compactMap { index in
            matches.gl_pathv[index].map { String(cString: $0) }
        }.filter { access($0, R_OK) == 0 }
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
