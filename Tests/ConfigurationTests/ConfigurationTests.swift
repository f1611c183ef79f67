// SPDX-License-Identifier: Apache-2.0
import Foundation
import LogTransport
@testable import PortcullisConfiguration
@testable import PortcullisDaemon
import PortcullisFleet
import PortcullisCore
import Testing
import TestSupport

/// A configuration file's text, read as if from `file.toml`.
private func load(_ text: String) throws(ConfigurationError) -> ConfigurationFile {
    try ConfigurationFile(path: "file.toml", text: text)
}

private func jails(_ text: String) throws -> [JailConfiguration] {
    // The file jails read: it must exist while they are read, and goes afterwards.
    let log = NSTemporaryDirectory() + "pc-config-test-\(getpid())-\(UUID().uuidString.prefix(8)).log"
    FileManager.default.createFile(atPath: log, contents: nil)
    defer { unlink(log) }
    return try load(text.replacingOccurrences(of: "LOG", with: log)).jails(
        defaultSource: TransportConfiguration(kind: .shm), filterDirectory: "/etc/fail2ban/filter.d")
}

/// The error `body` throws, as one line.
private func error(_ body: () throws -> Void) -> String {
    do {
        try body()
        return "no error"
    } catch {
        return "\(error)"
    }
}

@Suite("Configuration file")
struct ConfigurationFileTests {
    @Test("[daemon] settings become portcullisd's flags, lists repeated, flags only when true")
    func daemonSettings() throws {
        let file = try load(
            """
            [daemon]
            interface = "eth0"
            workers = 2
            allow = ["192.0.2.0/24", "2001:db8::/32"]
            reattach = true
            shm-overwrite = false
            status-interval = 0.5
            trust-uid = [1000, 1001]
            """)
        let arguments = file.daemonArguments
        // One word each (`--name=VALUE`): a value starting with "-" is never taken for a flag.
        #expect(arguments.count == 8)
        for argument in [
            "--interface=eth0", "--workers=2", "--allow=192.0.2.0/24", "--allow=2001:db8::/32",
            "--status-interval=0.5", "--trust-uid=1000", "--trust-uid=1001",
        ] {
            #expect(arguments.contains(argument), "\(argument) in \(arguments)")
        }
        #expect(arguments.contains("--reattach") && !arguments.contains("--shm-overwrite"))
    }

    @Test("every [daemon] key is one of portcullisd's flags, and every flag but the file's own is a key")
    func daemonKeysMatchTheFlags() throws {
        let help = try runProcess(Products.directory + "/portcullisd", ["--help"])
        let flags = Set(
            help.stdout.split(whereSeparator: { !$0.isLetter && !$0.isNumber && $0 != "-" }).filter {
                $0.hasPrefix("--") && $0.count > 2
            }.map { String($0.dropFirst(2)) })
        let own: Set<String> = ["help", "version", "config", "check-config"]
        #expect(Set(DaemonKeys.all.keys).subtracting(flags).isEmpty, "keys that are no flag")
        #expect(flags.subtracting(own).subtracting(DaemonKeys.all.keys).isEmpty, "flags that are no key")
    }

    @Test(
        "mistakes are refused with the file, the line and the key",
        arguments: [
            ("[daemon]\nworkers = \"two\"\n", "file.toml:2: daemon.workers: must be an integer, not a string"),
            ("[daemon]\n\nbogus = 1\n", "file.toml:3: daemon.bogus: unknown setting"),
            ("[jails.a]\nmaxretry = 1\n", "file.toml:1: jails: unknown section"),
            ("[jail.a]\nsource = \"shm\"\nmaxretry = \"5\"\n", "file.toml:3: jail.a.maxretry: must be an integer"),
            ("[jail.a]\nmaxrety = 5\n", "file.toml:2: jail.a.maxrety: unknown jail setting"),
            ("[defaults]\nbantime = \"ten minutes\"\n", "file.toml:2: defaults.bantime: 'ten minutes' is no duration"),
            ("[jail.a]\nbantime = 0\n", "file.toml:2: jail.a.bantime: 0 bans nothing"),
            ("[jail.a]\nignoreip = [\"example.com\"]\n", "file.toml:2: jail.a.ignoreip:"),
            ("[jail.a]\nescalation = { increment = true, speed = 2 }\n", "file.toml:2: jail.a.escalation.speed"),
            ("[jail.a]\nsource = \"pigeon:/coop\"\n", "file.toml:2: jail.a.source: 'pigeon:/coop' is no source"),
            (
                "[jail.a]\nsource = \"journal:sshd\"\n",
                "file.toml:2: jail.a.source: invalid transport setting: journal match 'sshd': 'sshd' is not FIELD=VALUE"
            ),
            ("[jail]\nmaxretry = 3\n", "file.toml:2: jail.maxretry: a jail is a table"),
            ("[jail.a\nmaxretry = 3\n", "file.toml:1: not valid TOML"),
            (
                "[jail.a]\nbantime = \"99999999999999999999\"\n",
                "file.toml:2: jail.a.bantime: '99999999999999999999' is no duration"
            ),
            (
                "[daemon]\nthreshold = 4\n[jail.a]\nmaxretry = 2\n",
                "file.toml:2: daemon.threshold: sets the jail the flags make"
            ),
        ])
    func refused(text: String, message: String) {
        let described = error { _ = try jails(text) }
        #expect(described.hasPrefix(message), "\(described)")
        #expect(!described.contains("\n"), "one line")
    }

    @Test(
        "a jail's filter and source problems name the file and key",
        arguments: [
            ("[jail.a]\nsource = \"file:/nonexistent/pc.log\"\n", "jail.a.source: /nonexistent/pc.log: No such file"),
            (
                "[jail.a]\nsource = \"file:LOG\"\nfilter = \"no-such-filter\"\n",
                "jail.a.filter: filter 'no-such-filter'"
            ),
            (
                "[jail.a]\nsource = \"file:LOG\"\nfilter = \"sshd\"\nfailregex = \"x <HOST>\"\n",
                "give either filter"
            ),
            ("[jail.a]\nsource = \"file:LOG\"\nignoreregex = \"x\"\n", "jail.a.ignoreregex: ignoreregex needs"),
            (
                "[jail.a]\nsource = \"file:LOG\"\n[jail.a.escalation]\nincrement = true\nformula = \"ban.Time * 3\"\n",
                "jail.a.escalation.formula: this formula is not supported"
            ),
        ])
    func jailProblems(text: String, message: String) {
        if !FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d/sshd.conf") && !Privileges.inCI { return }
        let described = error { _ = try jails(text) }
        #expect(described.contains(message), "\(described)")
        #expect(described.hasPrefix("file.toml:"), "\(described)")
    }

    @Test(
        "a journal source takes its match, or its fail2ban filter's journalmatch, and its filter expects no dates")
    func journalSources() throws {
        if !FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d/sshd.conf") {
            try #require(!Privileges.inCI, "fail2ban's filters are test data: tools/install-deps installs them")
            return
        }
        let read = try jails(
            """
            [jail.own]
            source = "journal:_SYSTEMD_UNIT=app.service + _COMM=app"
            failregex = '^app: bad <HOST>$'

            [jail.sshd]
            source = "journal"
            filter = "sshd"
            """)
        #expect(read.map(\.source.kind) == [.journal, .journal])
        #expect(read[0].source.journal.match == "_SYSTEMD_UNIT=app.service + _COMM=app")
        #expect(read[1].source.journal.match == "_SYSTEMD_UNIT=sshd.service + _COMM=sshd")
        for jail in read {
            guard case .fail2ban(_, _, let detectsDates) = jail.filter else {
                Issue.record("\(jail.name): not a fail2ban filter")
                continue
            }
            #expect(!detectsDates, "\(jail.name)")
        }
    }

    @Test("jails start from [defaults], in the file's order; disabled ones are left out; durations as fail2ban's")
    func jailsFromTheFile() throws {
        if !FileManager.default.fileExists(atPath: "/etc/fail2ban/filter.d/sshd.conf") {
            try #require(!Privileges.inCI, "fail2ban's filters are test data: tools/install-deps installs them")
            return
        }
        let read = try jails(
            """
            [defaults]
            maxretry = 4
            findtime = "1h 30m"
            bantime = "1d"
            ignoreip = "192.0.2.1 2001:db8::/32"
            failregex = '^\\s*x <HOST>$'

            [jail.zeta]
            source = "file:LOG"
            filter = "sshd[mode=aggressive]"
            bantime = -1

            [jail.alpha]
            source = "socket:/run/pc-test"
            ignoreip = ["198.51.100.1"]
            failregex = ["^\\\\s*denied <HOST>$"]
            ignoreregex = "monitor"
            maxretry = 2
            [jail.alpha.escalation]
            increment = true
            multipliers = "1 5 30"
            maxtime = "1w"

            [jail.gamma]
            source = "file:LOG"

            [jail.off]
            enabled = false
            source = "file:/nonexistent"
            """)
        #expect(read.map(\.name) == ["zeta", "alpha", "gamma"])
        let zeta = read[0]
        #expect(zeta.policy.threshold == 4 && zeta.policy.findTime == 5400 && zeta.policy.banTime == 0)
        #expect(zeta.ignore.contains(IPAddress("192.0.2.1")!) && zeta.ignore.contains(IPAddress("2001:db8::5")!))
        guard case .fail2ban(let sshd, _, _) = zeta.filter else {
            Issue.record("zeta: a fail2ban filter")
            return
        }
        #expect(sshd.reference == "sshd[mode=aggressive]" && sshd.failregex.count > 10)
        let alpha = read[1]
        #expect(alpha.source.kind == .socket && alpha.source.socket.directory == "/run/pc-test")
        #expect(alpha.policy.threshold == 2 && alpha.policy.banTime == 86_400)
        #expect(
            alpha.ignore.contains(IPAddress("198.51.100.1")!) && !alpha.ignore.contains(IPAddress("192.0.2.1")!),
            "a jail's ignoreip replaces the defaults'")
        guard case .fail2ban(let inherited, _, _) = read[2].filter else {
            Issue.record("gamma: the defaults' failregex")
            return
        }
        #expect(inherited.failregex == ["^\\s*x <HOST>$"])
        #expect(read[2].tableBins == JailConfiguration.defaultTableBins)
        #expect(alpha.escalation?.growth == .multipliers([1, 5, 30]) && alpha.escalation?.maxTime == 604_800)
        guard case .fail2ban(let inline, _, _) = alpha.filter else {
            Issue.record("alpha: inline patterns")
            return
        }
        #expect(inline.failregex == ["^\\s*denied <HOST>$"] && inline.ignoreregex == ["monitor"])
    }

    @Test("[crowdsec]: the bouncer's and the pusher's settings with CrowdSec's names; durations as Go's or seconds")
    func crowdsecSettings() throws {
        let file = try load(
            """
            [crowdsec]
            api_url = "https://lapi.example:8080"
            api_key = "0123"
            update_frequency = "2s"
            resync_frequency = 600
            scopes = ["Ip"]
            origins = ["crowdsec", "cscli"]
            scenarios_containing = ["ssh"]
            scenarios_not_containing = "http"
            ca_cert_path = "/etc/crowdsec/ca.pem"
            login = "host-1"
            password = "secret"
            alert_decisions = true
            alert_queue = 50
            """)
        let crowdsec = try #require(file.crowdsec)
        let bouncer = try #require(crowdsec.bouncer)
        #expect(bouncer.connection.url == "https://lapi.example:8080/" && bouncer.apiKey == "0123")
        #expect(bouncer.updateFrequency == 2 && bouncer.resyncFrequency == 600)
        #expect(bouncer.filter.scopes == [.ip] && bouncer.filter.origins == ["crowdsec", "cscli"])
        #expect(bouncer.filter.scenariosContaining == ["ssh"] && bouncer.filter.scenariosNotContaining == ["http"])
        #expect(bouncer.connection.caCertPath == "/etc/crowdsec/ca.pem" && !bouncer.connection.insecureSkipVerify)
        let alerts = try #require(crowdsec.alerts)
        #expect(
            alerts.login == "host-1" && alerts.password == "secret" && alerts.carryDecisions && alerts.queueLimit == 50)
        // Alerts alone, the defaults.
        let pushOnly = try #require(
            try load("[crowdsec]\napi_url = \"http://127.0.0.1:8080/\"\nlogin = \"a\"\npassword = \"b\"\n").crowdsec)
        #expect(
            pushOnly.bouncer == nil && pushOnly.alerts?.queueLimit == 10_000 && pushOnly.alerts?.carryDecisions == false
        )
        #expect(
            try load("[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\n").crowdsec?.bouncer?.updateFrequency == 10)
    }

    @Test("[fleet]: servers, host, bucket, credentials, TLS and limits; loopback plaintext is taken as it is")
    func fleetSettings() throws {
        let file = try load(
            """
            [fleet]
            servers = ["tls://nats-1.example:4222", "tls://nats-2.example:4222"]
            host = "web-1"
            bucket = "bans"
            credentials = "/etc/portcullis/web-1.creds"
            ca_cert_path = "/etc/portcullis/nats-ca.pem"
            queue = 500
            share_crowdsec = true
            max_age = 86400
            replicas = 3
            reconnect_wait = 0.2
            """)
        let fleet = try #require(file.fleet).settings
        #expect(fleet.servers == ["tls://nats-1.example:4222", "tls://nats-2.example:4222"] && fleet.host == "web-1")
        #expect(fleet.bucket == "bans" && fleet.credentialsPath == "/etc/portcullis/web-1.creds" && fleet.isSecure)
        #expect(fleet.queueLimit == 500 && fleet.shareCrowdSec && fleet.maxAge == 86_400 && fleet.replicas == 3)
        #expect(fleet.reconnectWait == 0.2 && fleet.plaintextRemoteServers.isEmpty)
        // One server on this host, plaintext: the defaults.
        let local = try #require(try load("[fleet]\nservers = \"nats://127.0.0.1:4222\"\nhost = \"a\"\n").fleet)
        #expect(local.settings.bucket == "portcullis-bans" && local.settings.queueLimit == 100_000)
        #expect(!local.settings.allowPlaintext && !local.settings.shareCrowdSec && local.settings.user == nil)
        // Told to: a plaintext connection across the network.
        let told = try load(
            "[fleet]\nservers = [\"nats://[2001:2::1]:4222\"]\nuser = \"a\"\npassword = \"p\"\nallow_plaintext = true\n"
        )
        #expect(told.fleet?.settings.plaintextRemoteServers == ["nats://[2001:2::1]:4222"])
        #expect(FleetSettings.hostOfServer("nats://u:p@[::1]:4222") == "::1" && FleetSettings.isLoopback("::1"))
    }

    @Test(
        "fleet keys: HOST.ADDRESS with ':' as '_', networks with their length, shared decisions as HOST.crowdsec.ADDRESS; anything else is no key"
    )
    func fleetKeys() throws {
        let v6 = try IPNetwork(parsing: "2001:2::7")
        #expect(FleetKey.key(host: "web-1", v6) == "web-1.2001_2__7")
        #expect(FleetKey.key(host: "a", try IPNetwork(parsing: "198.18.1.0/24")) == "a.198.18.1.0/24")
        #expect(FleetKey.parse("web-1.2001_2__7").map { "\($0.host) \($0.network)" } == "web-1 2001:2::7")
        #expect(FleetKey.parse("a.198.18.1.0/24")?.network.length == 24)
        let decision = FleetKey.key(host: "a", try IPNetwork(parsing: "198.18.0.7"), decision: true)
        #expect(decision == "a.crowdsec.198.18.0.7" && FleetKey.parse(decision)?.network.description == "198.18.0.7")
        for bad in ["a.not-an-address", "198.18.0.7", "a.198.18.1.7/24", "a b.198.18.0.7", ".198.18.0.7", "a."] {
            #expect(FleetKey.parse(bad) == nil, "\(bad)")
        }
    }

    @Test(
        "[fleet] mistakes: one line naming the key and what to give",
        arguments: [
            ("[fleet]\nhost = \"a\"\n", "file.toml:1: fleet: give the NATS servers"),
            (
                "[fleet]\nservers = [\"http://127.0.0.1:4222\"]\n",
                "fleet.servers: 'http://127.0.0.1:4222' is not a nats://"
            ),
            (
                "[fleet]\nservers = [\"nats://198.18.10.254:4222\"]\nhost = \"a\"\n",
                "fleet.servers: nats://198.18.10.254:4222 is not on this host and the connection would be plaintext"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nhost = \"web.1\"\n",
                "fleet.host: 'web.1' cannot name keys"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nbucket = \"a.b\"\n",
                "fleet.bucket: 'a.b' is no bucket name"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nuser = \"a\"\n",
                "fleet.password: give both user and password"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nuser = \"a\"\npassword = \"b\"\ntoken = \"t\"\n",
                "fleet: give one of user and password, token"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nnkey = \"UABC\"\n",
                "fleet.nkey_seed: an nkey needs both"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\ncredentials = \"a.creds\"\n",
                "fleet.credentials: give an absolute path"
            ),
            ("[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nqueue = 0\n", "fleet.queue: must be 1 to 10000000"),
            ("[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nreplicas = 7\n", "fleet.replicas: must be 1 to 5"),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nhost = \"\(String(repeating: "h", count: 41))\"\n",
                "cannot name keys: use letters, digits, - and _ (at most 40)"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nmax_age = 9\n",
                "fleet.max_age: must be 0 (the jails' longest ban) or 10 s"
            ),
            (
                "[fleet]\nservers = [\"nats://127.0.0.1:4222\"]\nsubject = \"x\"\n",
                "fleet.subject: unknown fleet setting"
            ),
            ("fleet = 1\n", "fleet: must be a table"),
        ])
    func fleetRefused(text: String, message: String) {
        let described = error { _ = try load(text) }
        #expect(described.contains(message), "\(described)")
    }

    @Test(
        "[crowdsec] mistakes: one line naming the key and what to give",
        arguments: [
            ("[crowdsec]\napi_key = \"k\"\n", "file.toml:1: crowdsec: give the Local API's address"),
            (
                "[crowdsec]\napi_url = \"127.0.0.1:8080\"\napi_key = \"k\"\n",
                "crowdsec.api_url: '127.0.0.1:8080' is not an http"
            ),
            ("[crowdsec]\napi_url = \"http://h/\"\n", "crowdsec: does nothing: give api_key"),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nbogus = 1\n",
                "file.toml:4: crowdsec.bogus: unknown CrowdSec setting"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nupdate_frequency = \"0.5s\"\n",
                "crowdsec.update_frequency: must be 1 s to 1 h"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nupdate_frequency = \"ten\"\n",
                "crowdsec.update_frequency: 'ten' is no duration"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nresync_frequency = 1\n",
                "crowdsec.resync_frequency: must be 0 (never) or 5 s"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nscopes = [\"country\"]\n",
                "crowdsec.scopes: 'country' cannot be enforced"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\nupdate_frequency = 5\nlogin = \"a\"\npassword = \"b\"\n",
                "crowdsec.update_frequency: is a bouncer setting: give api_key"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\nlogin = \"a\"\n",
                "crowdsec.password: alerts need both login and password"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nalert_queue = 5\n",
                "crowdsec.alert_queue: is an alert setting"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\ncert_path = \"/c.pem\"\n",
                "crowdsec.cert_path: a client certificate needs both"
            ),
            (
                "[crowdsec]\napi_url = \"http://h/\"\napi_key = \"k\"\nca_cert_path = \"ca.pem\"\n",
                "crowdsec.ca_cert_path: give an absolute path"
            ),
            ("[crowdsec]\napi_url = \"http://h/\"\napi_key = \"\"\n", "crowdsec.api_key: is empty"),
            ("crowdsec = 5\n", "crowdsec: must be a table"),
        ])
    func crowdsecRefused(text: String, message: String) {
        let described = error { _ = try load(text) }
        #expect(described.contains(message), "\(described)")
        #expect(!described.contains("\n"), "one line")
    }

    @Test(
        "the example configuration in etc/ reads: its one enabled jail is sshd on the journal with Portcullis's own filter from filter.d beside it, whatever --filter-dir says; the demo's jail is in Lab/demo.toml"
    )
    func exampleConfiguration() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let file = try ConfigurationFile.load(root.path + "/etc/portcullis.toml")
        let read = try file.jails(defaultSource: TransportConfiguration(kind: .shm), filterDirectory: "/nonexistent")
        #expect(read.map(\.name) == ["sshd"])
        #expect(read[0].source.kind == .journal)
        #expect(read[0].source.journal.match == "_UID=0 SYSLOG_IDENTIFIER=sshd + _UID=0 SYSLOG_IDENTIFIER=sshd-session")
        #expect(read[0].policy.threshold == 5 && read[0].policy.findTime == 600 && read[0].policy.banTime == 600)
        #expect(read[0].escalation?.maxTime == 7 * 86_400)
        guard case .fail2ban(let definition, _, let detectsDates) = read[0].filter else {
            Issue.record("the sshd jail has no fail2ban-format filter: \(read[0].filter)")
            return
        }
        #expect(definition.file == root.path + "/etc/filter.d/sshd.conf" && !detectsDates)
        // fail2ban's filter.d holds an sshd.conf too: filter.d beside the configuration comes first.
        let withFail2ban = try file.jails(
            defaultSource: TransportConfiguration(kind: .shm), filterDirectory: "/etc/fail2ban/filter.d")
        if case .fail2ban(let definition, _, _) = withFail2ban[0].filter {
            #expect(definition.file == root.path + "/etc/filter.d/sshd.conf")
        }
        let demo = try ConfigurationFile.load(root.path + "/Lab/demo.toml")
        let demoJails = try demo.jails(
            defaultSource: TransportConfiguration(kind: .shm), filterDirectory: "/nonexistent")
        #expect(demoJails.map(\.name) == ["udp-server"])
        #expect(
            demoJails[0].filter == .builtIn && demoJails[0].policy.threshold == 3 && demoJails[0].policy.banTime == 20)
    }

    @Test("a filter by name missing from both directories is named with both")
    func filterSearchOrder() throws {
        let described = error {
            _ = try jails("[jail.a]\nsource = \"journal\"\nfilter = \"no-such-filter\"\n")
        }
        #expect(
            described.contains(
                "no no-such-filter.conf or no-such-filter.local in filter.d or /etc/fail2ban/filter.d"),
            "\(described)")
    }
}

@Suite("Escalation")
struct EscalationTests {
    @Test("fail2ban's arithmetic: the default formula doubles per earlier ban, capped at 2^20; multipliers; maxtime")
    func arithmetic() {
        var escalation = Escalation()
        #expect(escalation.banSeconds(base: 3600, previousBans: 0) == 3600, "a first ban is the jail's")
        #expect(escalation.banSeconds(base: 3600, previousBans: 1) == 7200)
        #expect(escalation.banSeconds(base: 3600, previousBans: 3) == 28_800)
        #expect(escalation.banSeconds(base: 1, previousBans: 40) == 1 << 20)
        #expect(escalation.banSeconds(base: 0, previousBans: 5) == 0, "a ban for good stays for good")
        escalation.factor = 2
        #expect(escalation.banSeconds(base: 3600, previousBans: 1) == 14_400)
        escalation.factor = 1
        escalation.maxTime = 10_000
        #expect(escalation.banSeconds(base: 3600, previousBans: 2) == 10_000)
        escalation.maxTime = nil
        escalation.growth = .multipliers([1, 5, 30])
        #expect(escalation.banSeconds(base: 60, previousBans: 1) == 300)
        #expect(escalation.banSeconds(base: 60, previousBans: 9) == 1800, "the last multiplier beyond the list")
        escalation.growth = .exponential
        // ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor) = 3600 e
        #expect(escalation.banSeconds(base: 3600, previousBans: 1) == UInt64((3600 * M_E).rounded()))
        escalation.growth = .doubling
        escalation.randomTime = 100
        #expect(escalation.banSeconds(base: 3600, previousBans: 1, random: 0.5) == 7250)
    }

    @Test("only fail2ban's documented formulas are taken, whatever their spacing")
    func formulas() {
        #expect(
            Escalation.growth(formula: "ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor") == .doubling)
        #expect(
            Escalation.growth(formula: "ban.Time*math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)")
                == .exponential)
        #expect(Escalation.growth(formula: "ban.Time * 3") == nil)
    }

    @Test("the history counts bans per jail or over all, forgets old ones, stays bounded, and survives a save")
    func history() throws {
        let path = NSTemporaryDirectory() + "pc-history-\(getpid()).json"
        defer { unlink(path) }
        let history = BanHistory(path: path, capacity: 100, maximumAge: 1000)
        let a = IPAddress("198.18.9.1")!
        let b = IPAddress("198.18.9.2")!
        let c = IPAddress("198.18.9.3")!
        let d = IPAddress("198.18.9.4")!
        history.record([a], seconds: [60], jail: "sshd", wallSeconds: 10_000)
        history.record([a], seconds: [120], jail: "sshd", wallSeconds: 10_100)
        history.record([a], seconds: [60], jail: "nginx", wallSeconds: 10_200)
        // fail2ban's purge: older than the age, and over for three times its length beyond it.
        history.record([b, c, d], seconds: [100, 10_000, 0], jail: "sshd", wallSeconds: 8_000)
        #expect(
            history.previousBans([a, b, c, d], jail: "sshd", wallSeconds: 10_300) == [2, 0, 1, 1],
            "b's is outdated; c's long ban and d's ban for good are not")
        #expect(history.previousBans([a], jail: nil, wallSeconds: 10_300) == [3], "over all jails")
        try history.save()
        let reloaded = BanHistory(path: path, capacity: 100, maximumAge: 1000)
        try reloaded.load(wallSeconds: 10_300)
        #expect(reloaded.previousBans([a], jail: "sshd", wallSeconds: 10_300) == [2])
        #expect(reloaded.count == 3, "the outdated one is not loaded")
        for index in 0..<150 {
            reloaded.record(
                [IPAddress(ipv4: 198, 18, 10, UInt8(index))], seconds: [60], jail: "sshd", wallSeconds: 11_000)
        }
        #expect(reloaded.count <= 100, "bounded")
    }

    @Test("a history file cut short is moved aside, said, and the history starts over (the daemon still starts)")
    func unreadableHistory() throws {
        let path = NSTemporaryDirectory() + "pc-history-bad-\(getpid()).json"
        defer {
            unlink(path)
            unlink(path + ".bad")
        }
        try "{\"version\":1,\"entr".write(toFile: path, atomically: true, encoding: .utf8)
        let history = BanHistory(path: path)
        let problem = try #require(history.load(wallSeconds: 0))
        #expect(problem.contains(path) && problem.contains("moved to \(path).bad"))
        #expect(history.count == 0 && FileManager.default.fileExists(atPath: path + ".bad"))
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a history that is a FIFO, a link or a directory is moved aside with a note that says so; nothing waits")
    func historyNotAFile() throws {
        let path = NSTemporaryDirectory() + "pc-history-odd-\(getpid()).json"
        defer {
            unlink(path)
            unlink(path + ".bad")
            rmdir(path + ".bad")
        }
        let plants: [(String, String)] = [
            ("FIFO", "not a regular file (a FIFO)"), ("link", "symbolic link"),
            ("directory", "not a regular file (a directory)"),
        ]
        for (what, said) in plants {
            switch what {
            case "FIFO": mkfifo(path, 0o600)
            case "link": symlink("/dev/zero", path)
            default: mkdir(path, 0o700)
            }
            let history = BanHistory(path: path)
            let problem = try #require(history.load(wallSeconds: 0), "\(what)")
            #expect(problem.contains(said) && problem.contains("moved to \(path).bad"), "\(problem)")
            #expect(!problem.contains("permission"), "\(problem)")
            #expect(!problem.contains("\n"))
            var info = stat()
            #expect(lstat(path, &info) != 0 && lstat(path + ".bad", &info) == 0, "\(what): moved aside")
        }
    }
}
