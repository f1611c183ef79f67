// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisSystem

/// Settings of the syslog source: a datagram socket that syslog clients send to (rsyslog's
/// `omuxsock`, `logger --socket`), and optionally UDP on loopback.
public struct SyslogOptions: Sendable, Equatable {
    public static let defaultPath = "/run/portcullis/syslog.sock"
    /// The `AF_UNIX` `SOCK_DGRAM` socket (mode 0666, as `/dev/log`: the sender's uid, which the
    /// kernel vouches for, decides).
    public var path = defaultPath
    /// Also listen on UDP at this loopback `ADDRESS:PORT` (`127.0.0.1:5514`, `[::1]:5514`); nil: no UDP.
    /// UDP carries no sender: any local process may send there, so it is refused unless
    /// `udpAnySender` (`--syslog-udp-any-sender`) says the operator accepts that.
    public var udp: String?
    /// The operator accepts that any local user can feed the UDP port (and get any address banned).
    public var udpAnySender = false
    /// Users (besides root and this process's) whose messages on the socket are read; others'
    /// are dropped and counted (`writersRefused`): anyone can reach the socket, and a message
    /// names any tag it likes.
    public var allowedUIDs: [uid_t] = []
    /// The tags (RFC 3164 TAG, RFC 5424 APP-NAME) a jail reads (`source = "syslog:sshd,nginx"`);
    /// empty: every message. Routing, not the reader's business: the daemon's jails share one reader.
    public var tags: [String] = []
    /// Longest line delivered (`TAG[PID]: MESSAGE`); longer messages are dropped and counted rejected.
    public var maxLineLength = 8192
    /// `SO_RCVBUF` of the sockets (the kernel caps it at `net.core.rmem_max`).
    public var receiveBuffer = 4 << 20
    /// Who may own the socket's directory.
    public var owners = TrustedOwners()

    public init() {}

    /// These settings with no routing: what one reader for all the jails on the socket is made of.
    public var withoutTags: SyslogOptions {
        var options = self
        options.tags = []
        return options
    }

    public func validate() throws(TransportError) {
        guard path.hasPrefix("/"), path.utf8.count <= UnixSocketAddress.longestPath else {
            throw .invalidConfiguration(
                "syslog socket '\(path)': give an absolute path of at most \(UnixSocketAddress.longestPath) bytes")
        }
        if let udp {
            _ = try InternetSocketAddress(syslogUDP: udp)
            guard udpAnySender else {
                throw .invalidConfiguration(
                    "--syslog-udp \(udp): UDP names no sender, so any local user could get any address banned; "
                        + "use the syslog socket (or the journal), or add --syslog-udp-any-sender to accept that")
            }
        }
        for tag in tags where !SyslogRoute.isTag(tag) {
            throw .invalidConfiguration(
                "syslog tag '\(tag)': a tag is 1 to 48 characters without blanks, '[', ':' or ','; e.g. syslog:sshd,nginx"
            )
        }
        guard (64...65_000).contains(maxLineLength) else {
            throw .invalidConfiguration("the syslog source's longest line must be 64...65000 bytes")
        }
    }
}

extension InternetSocketAddress {
    /// `--syslog-udp`: a loopback address and port.
    init(syslogUDP text: String) throws(TransportError) {
        let usage = "give a loopback ADDRESS:PORT, e.g. 127.0.0.1:5514 or [::1]:5514"
        do throws(InternetSocketAddressError) {
            self = try InternetSocketAddress(text)
        } catch {
            throw .invalidConfiguration("syslog UDP address '\(text)': \(error); \(usage)")
        }
        guard port > 0, isLoopback else {
            throw .invalidConfiguration("syslog UDP address '\(text)': not a loopback address and port; \(usage)")
        }
    }
}
