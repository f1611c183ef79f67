// SPDX-License-Identifier: Apache-2.0
import TOMLKit

/// The `[daemon]` keys: portcullisd's flags by their long names, with the TOML type each takes. A
/// test holds this table to `portcullisd --help` (every flag but the file's own and --help is a key).
enum DaemonKeys {
    enum Kind {
        /// A string (`pin-dir = "/sys/fs/bpf/portcullis"`).
        case text
        /// An integer.
        case integer
        /// An integer or a floating-point number.
        case number
        /// A flag: `true` sets it (`false` leaves it off; the command line cannot unset it).
        case flag
        /// One string, or an array of them (a repeatable flag; the command line's add to them).
        case texts
        /// One integer, or an array of them.
        case integers

        /// The arguments `--name VALUE...` that set this key to `value`.
        func arguments(
            _ flag: String, _ value: TOMLValueConvertible, key: String, file: String, locator: KeyLocator
        ) throws(ConfigurationError) -> [String] {
            switch self {
            // `--name=VALUE`, one word: a value that starts with "-" is never taken for a flag.
            case .text:
                return [flag + "=" + (try ConfigurationFile.text(value, key: key, file: file, locator: locator))]
            case .integer:
                return [
                    flag + "=" + String(try ConfigurationFile.integer(value, key: key, file: file, locator: locator))
                ]
            case .number:
                let number = try ConfigurationFile.number(value, key: key, file: file, locator: locator)
                return [flag + "=" + (value.type == .int ? String(Int(number)) : String(number))]
            case .flag:
                return try ConfigurationFile.boolean(value, key: key, file: file, locator: locator) ? [flag] : []
            case .texts:
                return try ConfigurationFile.texts(value, key: key, file: file, locator: locator).map {
                    flag + "=" + $0
                }
            case .integers:
                let values: [TOMLValueConvertible] = value.array.map { Array($0) } ?? [value]
                var arguments: [String] = []
                for element in values {
                    arguments.append(
                        flag + "="
                            + String(try ConfigurationFile.integer(element, key: key, file: file, locator: locator)))
                }
                return arguments
            }
        }
    }

    /// The flags of the jail the flags make: with `[jail.NAME]` tables they have no jail to set, so
    /// the file refuses them (the jails' own keys and `[defaults]` say it).
    static let defaultJailOnly: [String: String] = [
        "threshold": "maxretry", "ban-time": "bantime", "find-time": "findtime", "failregex": "failregex",
        "table-bins": "table-bins",
    ]

    static let all: [String: Kind] = [
        "interface": .texts, "mode": .text, "pin-dir": .text, "bpf-object": .text, "map-entries": .integer,
        "reattach": .flag, "state-dir": .text, "ban-log": .text, "summary-json": .text, "ready-file": .text,
        "status-interval": .number, "degraded-warning-interval": .number,
        // The jail the flags make when the file has no jails, and the source of jails without one.
        "transport": .text, "threshold": .integer, "ban-time": .integer, "find-time": .integer, "failregex": .texts,
        "reader-policy": .text, "workers": .integer, "cpus": .text, "numa-node": .integer, "table-bins": .integer,
        "idle-horizon": .integer, "wake-delay": .integer, "allow": .texts, "min-prefix-v4": .integer,
        "min-prefix-v6": .integer, "ban-host-addresses": .flag,
        "regex-match-limit": .integer,
        "max-line": .integer, "history-entries": .integer, "history-age": .integer, "filter-dir": .text,
        "fail2ban-config": .text, "control": .text, "control-group": .text,
        "metrics": .text, "prefix-lengths-v4": .text, "prefix-lengths-v6": .text,
        "shm-name": .text, "shm-segments": .integer, "shm-slots": .integer, "shm-slot-size": .integer,
        "shm-reader-slots": .integer, "shm-overwrite": .flag, "shm-hugepages": .flag, "shm-no-stealing": .flag,
        "socket-dir": .text, "socket-datagram-size": .integer, "socket-lines-per-datagram": .integer,
        "socket-batch": .integer, "socket-sndbuf": .integer, "socket-rcvbuf": .integer,
        "socket-allow-uid": .integers, "socket-allow-gid": .integers,
        "file-path": .text, "file-buffer": .integer, "file-read": .text, "file-uring-depth": .integer,
        "file-from-start": .flag, "file-max-line": .integer, "block-timeout": .integer,
        "trust-uid": .integers, "trust-gid": .integers,
        "syslog-socket": .text, "syslog-udp": .text, "syslog-udp-any-sender": .flag,
        "syslog-allow-uid": .integers, "syslog-max-line": .integer,
    ]
}
