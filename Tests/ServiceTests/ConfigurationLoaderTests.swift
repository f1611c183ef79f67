// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisConfiguration
import Testing

/// A configuration file with `text`, removed when `body` returns.
private func withFile<T>(_ text: String, _ body: (String) throws -> T) throws -> T {
    let path = NSTemporaryDirectory() + "pc-loader-test-\(getpid())-\(UUID().uuidString.prefix(8)).toml"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    defer { unlink(path) }
    return try body(path)
}

@Suite("Configuration loader")
struct ConfigurationLoaderTests {
    @Test("the arguments it is given come after the [daemon] settings of their --config, so the flags win")
    func flagsAfterTheFileSettings() throws {
        try withFile(
            """
            [daemon]
            interface = "lo"
            workers = 2
            pin-dir = "/sys/fs/bpf/from-file"
            """
        ) { path in
            let loader = ConfigurationLoader(arguments: ["--config", path, "--workers", "3"])
            let arguments = try loader.withFileSettings()
            #expect(Array(arguments.suffix(4)) == ["--config", path, "--workers", "3"] && arguments.count > 4)
            let options = try DaemonOptions.parse(arguments)
            #expect(options.workers == 3)
            #expect(options.interfaces == ["lo"])
            #expect(options.restartOnly.pinDir == "/sys/fs/bpf/from-file")
            #expect(options.restartOnly.interface == ["lo"])
        }
    }

    @Test("without --config the arguments are taken as they are; the last --config (either spelling) names the file")
    func configurationPath() throws {
        #expect(try ConfigurationLoader(arguments: ["--workers", "2"]).withFileSettings() == ["--workers", "2"])
        #expect(ConfigurationLoader.configurationPath(in: ["--config", "a.toml", "--config=b.toml"]) == "b.toml")
        #expect(ConfigurationLoader.configurationPath(in: ["--config=b.toml", "--config", "a.toml"]) == "a.toml")
        #expect(ConfigurationLoader.configurationPath(in: ["--", "--config", "a.toml"]) == nil)
    }

    @Test("a bad [daemon] value is named with its file, line and key, as its flag would refuse it")
    func badDaemonValueNamed() throws {
        try withFile(
            """
            [daemon]
            interface = "lo"
            mode = "sideways"
            """
        ) { path in
            do throws(ConfigurationError) {
                _ = try ConfigurationLoader(arguments: ["--config", path]).withFileSettings()
                Issue.record("a bad mode was taken")
            } catch {
                #expect(error.file == path && error.line == 3 && error.key?.hasSuffix("mode") == true, "\(error)")
            }
        }
    }

    @Test("a changed restart-only flag shows in the settings a reload compares; a reloadable one does not")
    func restartOnlySettings() throws {
        let running = try DaemonOptions.parse(["--interface", "lo", "--workers", "1"]).restartOnly
        #expect(try DaemonOptions.parse(["--interface", "lo", "--workers", "4"]).restartOnly == running)
        #expect(try DaemonOptions.parse(["--interface", "lo", "--map-entries", "10"]).restartOnly != running)
        #expect(try DaemonOptions.parse(["--interface", "lo", "--metrics", "127.0.0.1:0"]).restartOnly != running)
    }
}

/// Every flag of `portcullisd` is restart-only (in `RestartOnlySettings`, which a reload compares
/// whole), read only at start (`--config`, `--check-config`), or applied by a reload through the
/// configuration it loads again: shown here by a value that changes what `loaded()` gives. A flag
/// added to `DaemonOptions` fails this test until it is put in one of the three, so that none is
/// read at start and then silently ignored by a reload (the old hand-kept list's hazard).
@Suite("Reload classification of the flags")
struct FlagClassificationTests {
    /// Read once, at start: the file a reload reads again, and a check that exits.
    static let startOnly: Set<String> = ["config", "checkConfig"]
    /// Applied by a reload through a component of the service that reads it from the options (the
    /// ban log's opens the new path): shown by the process test `banLogReopened`.
    static let reloadedByComponent: Set<String> = ["banLog"]
    /// What each reloadable flag is changed to (after `--interface lo`); the transport group is one
    /// entry, converted whole into the daemon's `TransportConfiguration`.
    static let reloadable: [String: [String]] = [
        "fail2banConfig": ["--fail2ban-config", "FAIL2BAN"],
        "filterDir": ["--config", "JAILS", "--filter-dir", "FAIL2BAN/filter.d"],
        "transport": ["--transport", "socket"],
        "readerPolicy": ["--reader-policy", "drop"],
        "threshold": ["--threshold", "7"],
        "banTime": ["--ban-time", "99"],
        "findTime": ["--find-time", "99"],
        "workers": ["--workers", "2"],
        "cpus": ["--cpus", "0"],
        "numaNode": ["--numa-node", "0"],
        "tableBins": ["--table-bins", "100003"],
        "idleHorizon": ["--idle-horizon", "60"],
        "wakeDelay": ["--wake-delay", "7"],
        "failregex": ["--failregex", "from <HOST>$"],
        "allow": ["--allow", "198.18.0.0/24"],
        "minPrefixV4": ["--min-prefix-v4", "12"],
        "minPrefixV6": ["--min-prefix-v6", "20"],
        "banHostAddresses": ["--ban-host-addresses"],
        "regexMatchLimit": ["--regex-match-limit", "5000"],
        "maxLine": ["--max-line", "300"],
    ]
    /// `DaemonOptions`' property names where they differ from `RestartOnlySettings`' field names.
    static let restartOnlyNames = ["interfaces": "interface", "pinDirectory": "pinDir"]

    static func names(_ value: Any) -> [String] {
        Mirror(reflecting: value).children.compactMap {
            $0.label.map { $0.hasPrefix("_") ? String($0.dropFirst()) : $0 }
        }
    }

    @Test("every flag is restart-only, read at start, or applied by a reload; none is ignored by a reload")
    func everyFlagClassified() throws {
        let options = try DaemonOptions.parse(["--interface", "lo"])
        let restartOnly = Set(Self.names(options.restartOnly))
        var unclassified: [String] = []
        for name in Self.names(options) {
            let classes = [
                restartOnly.contains(Self.restartOnlyNames[name] ?? name), Self.startOnly.contains(name),
                Self.reloadable[name] != nil, Self.reloadedByComponent.contains(name),
            ]
            if classes.filter({ $0 }).count != 1 { unclassified.append(name) }
        }
        #expect(
            unclassified.isEmpty,
            "classify \(unclassified): a field of RestartOnlySettings, or a reloadable flag with a value here")
        #expect(Set(Self.reloadable.keys).isSubset(of: Set(Self.names(options))), "a sample for a flag that is gone")
    }

    @Test("each reloadable flag changes the configuration a reload loads", arguments: reloadable.keys.sorted())
    func reloadableFlagReachesTheConfiguration(name: String) throws {
        let scratch = NSTemporaryDirectory() + "pc-flags-\(getpid())-\(name)"
        try FileManager.default.createDirectory(
            atPath: scratch + "/fail2ban/filter.d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // A fail2ban directory of one jail, and a TOML jail naming a filter: what the two directory
        // flags change.
        try "[Definition]\nfailregex = ^refused from <HOST>$\n".write(
            toFile: scratch + "/fail2ban/filter.d/probe.conf", atomically: true, encoding: .utf8)
        try "[probe]\nenabled = true\nfilter = probe\nlogpath = /dev/null\nbackend = polling\n".write(
            toFile: scratch + "/fail2ban/jail.local", atomically: true, encoding: .utf8)
        try "[jail.probe]\nfilter = \"probe\"\n".write(
            toFile: scratch + "/jails.toml", atomically: true, encoding: .utf8)
        let sample = try #require(Self.reloadable[name]).map {
            $0.replacingOccurrences(of: "FAIL2BAN", with: scratch + "/fail2ban")
                .replacingOccurrences(of: "JAILS", with: scratch + "/jails.toml")
        }
        let common = ["--interface", "lo", "--state-dir", scratch + "/state"]
        // The flag's default beside its sample: for --filter-dir, the same jail file without it.
        let before = common + (name == "filterDir" ? ["--config", scratch + "/jails.toml"] : [])
        func loaded(_ arguments: [String]) throws -> String {
            var text = ""
            dump(try DaemonOptions.parse(arguments).loaded().daemon, to: &text)
            return text
        }
        let base: String
        do {
            base = try loaded(before)
        } catch {
            // Without --filter-dir the jail file's filter is looked for in /etc/fail2ban/filter.d.
            base = "refused: \(error)"
        }
        #expect(try loaded(before + sample) != base, "\(sample) left the loaded configuration as it was")
    }
}
