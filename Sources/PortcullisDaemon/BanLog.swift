import Glibc
import PortcullisCore
import PortcullisSystem

/// The ban log (`portcullisd --ban-log`): one line per ban and per lift, like fail2ban's
/// "Ban"/"Unban" lines, for audits and for the testbed's checks:
///
///     2026-11-26T21:05:00.123Z ban 198.18.0.1 jail=sshd for=3600
///     2026-11-26T21:05:30.201Z unban 198.18.0.1
///
/// A ban names the jail that made it and how long it lasts in seconds (`for=forever`: for good).
///
/// Each event is one `write` to a file opened with `O_APPEND`, so the lines of concurrent
/// workers never interleave inside a line.
public final class BanLog: BanPublisher {
    public let path: String
    private let fd: Int32

    public init(path: String) throws(DaemonError) {
        // O_NOFOLLOW: a link planted at the path does not redirect a root write elsewhere.
        fd = try systemCall({ open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640) }) { error in
            DaemonError.invalidSetting(
                "cannot open the ban log \(path): \(error); check that its directory exists and is writable")
        }
        self.path = path
    }

    deinit { close(fd) }

    /// Appends one line per address: `TIME EVENT ADDRESS [jail=NAME for=SECONDS]`.
    public func publish(_ event: BanEvent) {
        guard !event.addresses.isEmpty else { return }
        let prefix = SystemClock.utcNow().iso8601 + " \(event.kind.rawValue) "
        let jail = event.jail.map { " jail=\($0)" } ?? ""
        var text = ""
        text.reserveCapacity(event.addresses.count * (prefix.utf8.count + jail.utf8.count + 36))
        for index in event.addresses.indices {
            text += prefix + event.text(index) + jail
            if index < event.seconds.count {
                text += event.seconds[index] == 0 ? " for=forever" : " for=\(event.seconds[index])"
            }
            text += "\n"
        }
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { raw in
                systemCallResult { write(fd, raw.baseAddress, raw.count) }
            }
            // A full disk must not stop the bans; the counters still count them.
            guard case .success(let count) = written, count > 0 else { return }
            bytes = bytes.dropFirst(count)
        }
    }
}
