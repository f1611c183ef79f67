// SPDX-License-Identifier: Apache-2.0
import FoundationEssentials
import Glibc
import PortcullisCore
import PortcullisSystem

/// The alerts still queued when the pusher stops, kept in the daemon's state directory
/// (`crowdsec-alerts.json`) and queued again by the next pusher: a restart, or a reload that
/// changes `[crowdsec]`, loses none of them. Written atomically (`TextFile.write`); read once and
/// removed.
struct KeptAlerts {
    /// `{"version":1,"alerts":[{"jail":"sshd","target":"198.18.0.7","range":false,"seconds":600,"at":1796175453}]}`
    /// (`at`: seconds since the epoch, when the jail banned).
    struct File: Codable {
        var version = 1
        var alerts: [Entry]
    }

    struct Entry: Codable {
        let jail: String
        let target: String
        let range: Bool
        let seconds: UInt64
        let at: Int
    }

    let path: String

    /// What `read` found: the alerts to queue again, and those dropped because their ban ended.
    struct Read {
        var alerts: [AlertPusher.Alert] = []
        var ended = 0
        var lines: [String] = []
    }

    /// The alerts kept by the last pusher, at most `limit` (the oldest first); the file is removed.
    /// An alert whose ban has ended by `now` is dropped (counted): CrowdSec would get an alert of a
    /// ban Portcullis no longer holds.
    func read(limit: Int, now: Int) -> Read {
        var result = Read()
        let bytes: [UInt8]?
        do throws(StateFile.Problem) {
            // An entry is about 100 bytes.
            bytes = try StateFile.read(path, limit: max(1 << 20, limit * 256))
        } catch {
            let aside = StateFile.setAside(path)
            result.lines.append(
                "alerts kept at the last stop: \(path) \(error); "
                    + (aside.map { "moved to \($0), its alerts not sent" } ?? "ignored"))
            return result
        }
        guard let bytes else { return result }
        guard let file = try? JSONDecoder().decode(File.self, from: Data(bytes)), file.version == 1 else {
            let aside = StateFile.setAside(path)
            result.lines.append(
                "alerts kept at the last stop: \(path) is not a file this daemon wrote; "
                    + (aside.map { "moved to \($0), its alerts not sent" } ?? "ignored"))
            return result
        }
        unlink(path)
        var unreadable = 0
        for entry in file.alerts.prefix(limit) {
            // A time before 1970 or after tomorrow is none this daemon wrote.
            guard (0...now + 86_400).contains(entry.at) else {
                unreadable += 1
                continue
            }
            if entry.seconds > 0, entry.seconds <= UInt64(now - min(entry.at, now)) {
                result.ended += 1
                continue
            }
            result.alerts.append(
                AlertPusher.Alert(
                    jail: entry.jail, target: entry.target, isRange: entry.range, seconds: entry.seconds,
                    at: UTCTime(secondsSinceEpoch: entry.at)))
        }
        let over = file.alerts.count - min(file.alerts.count, limit)
        var line = "\(result.alerts.count) alert(s) kept at the last stop queued again"
        if result.ended > 0 { line += ", \(result.ended) dropped (their bans have ended)" }
        if over > 0 { line += ", \(over) dropped (over alert_queue)" }
        if unreadable > 0 { line += ", \(unreadable) dropped (no time this daemon writes)" }
        result.lines.append(line)
        return result
    }

    /// Writes `alerts` for the next pusher (the directory made when missing).
    func write(_ alerts: [AlertPusher.Alert]) throws(Errno) {
        let file = File(
            alerts: alerts.map {
                Entry(jail: $0.jail, target: $0.target, range: $0.isRange, seconds: $0.seconds, at: $0.at.epochSeconds)
            })
        guard let data = try? JSONEncoder().encode(file) else { throw Errno(EINVAL) }
        if let slash = path.lastIndex(of: "/"), slash != path.startIndex {
            // The state directory is made by the loader only for jails that need it.
            _ = mkdir(String(path[..<slash]), 0o700)
        }
        try TextFile.write(String(decoding: data, as: UTF8.self), to: path)
    }
}

extension UTCTime {
    /// Seconds since 1970-01-01T00:00:00Z (the inverse of `init(secondsSinceEpoch:)`).
    var epochSeconds: Int {
        // Days from the civil date (Howard Hinnant's days_from_civil).
        let year = month <= 2 ? self.year - 1 : self.year
        let era = (year >= 0 ? year : year - 399) / 400
        let yearOfEra = year - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return days * 86_400 + hour * 3600 + minute * 60 + second
    }
}
