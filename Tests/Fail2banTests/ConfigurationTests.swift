// SPDX-License-Identifier: Apache-2.0
@testable import Fail2ban
import Foundation
import PortcullisCore
import TestSupport
import Testing

/// A scratch fail2ban configuration directory, removed by `remove()`.
struct ScratchConfiguration {
    let path: String

    init(_ files: [String: String]) throws {
        path = NSTemporaryDirectory() + "portcullis-f2b-\(getpid())-\(UUID().uuidString)"
        for (name, text) in files {
            let file = path + "/" + name
            try FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: file, atomically: true, encoding: .utf8)
        }
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("fail2ban INI semantics")
struct ConfigurationTests {
    @Test("sections, both separators, continuation lines, comments, lower-cased keys")
    func syntax() throws {
        let file = try ConfigFile(
            path: "t.conf",
            text: """
                # comment
                [Definition]
                Key = one ; inline comment
                other: two;not a comment
                multi = first
                        second
                ; comment inside the value is skipped
                        third

                after = x
                [DEFAULT]
                shared = yes
                """)
        let options = try #require(file.sections.first { $0.name == "Definition" }?.options)
        #expect(options["key"] == "one")
        #expect(options["other"] == "two;not a comment")
        #expect(options["multi"] == "first\nsecond\nthird")
        #expect(options["after"] == "x")
        #expect(file.defaults["shared"] == "yes")
    }

    @Test("a line that is no option fails naming file and line")
    func syntaxError() {
        #expect(throws: Fail2banError.syntax(file: "bad.conf", line: 2, text: "no separator here")) {
            try ConfigFile(path: "bad.conf", text: "[Definition]\nno separator here\n")
        }
        let description = Fail2banError.syntax(file: "bad.conf", line: 2, text: "x").description
        #expect(description.contains("bad.conf:2") && !description.contains("\n"))
    }

    @Test("includes before/after relative to the file, .local overrides .conf, known/ keeps the old value")
    func includesAndLocal() throws {
        let scratch = try ScratchConfiguration([
            "filter.d/common.conf": "[DEFAULT]\nprefix = common\n[Definition]\nbase = from-common\n",
            "filter.d/test.conf": """
            [INCLUDES]
            before = common.conf
            after = extra.conf
            [Definition]
            base = from-test
            failregex = ^%(prefix)s <HOST>$
            value = conf
            """,
            "filter.d/extra.conf": "[Definition]\nlate = extra\n",
            "filter.d/test.local": "[Definition]\nvalue = local, was %(known/value)s\n",
        ])
        defer { scratch.remove() }
        var configuration = Configuration()
        #expect(try configuration.read(basename: scratch.path + "/filter.d/test"))
        #expect(
            configuration.files.map { ($0 as NSString).lastPathComponent } == [
                "common.conf", "test.conf", "extra.conf", "test.local",
            ])
        #expect(try configuration.value("Definition", "base") == "from-test")
        #expect(try configuration.value("Definition", "late") == "extra")
        #expect(try configuration.value("Definition", "value") == "local, was conf")
        #expect(try configuration.value("Definition", "failregex") == "^common <HOST>$")
    }

    @Test("%(section/key)s, %(default/key)s and %(__name__)s")
    func sectionReferences() throws {
        var configuration = Configuration()
        configuration.merge(
            try ConfigFile(
                path: "t.conf",
                text: """
                    [DEFAULT]
                    a = default-a
                    filter = %(__name__)s[mode=%(mode)s]
                    mode = normal
                    [other]
                    b = other-b
                    [jail]
                    a = jail-a
                    c = %(other/b)s %(default/a)s %(a)s
                    """))
        #expect(try configuration.value("jail", "c") == "other-b default-a jail-a")
        #expect(try configuration.value("jail", "filter") == "jail[mode=normal]")
    }

    @Test("an interpolation loop fails with one line naming the key")
    func interpolationLoop() throws {
        var configuration = Configuration()
        configuration.merge(try ConfigFile(path: "loop.conf", text: "[Definition]\na = %(b)s\nb = %(a)s\n"))
        #expect(throws: Fail2banError.interpolationLoop(file: "loop.conf", section: "Definition", key: "a")) {
            try configuration.value("Definition", "a")
        }
        configuration.merge(try ConfigFile(path: "loop.conf", text: "[Definition]\nc = %(nowhere)s\n"))
        #expect(
            throws: Fail2banError.missingReference(
                file: "loop.conf", section: "Definition", key: "c", reference: "nowhere")
        ) {
            try configuration.value("Definition", "c")
        }
    }

    @Test("<tag> loops are refused")
    func tagLoop() {
        #expect(throws: Fail2banError.interpolationLoop(file: "f", section: "Definition", key: "a")) {
            try TagSubstitution.substitute(["a": "<b>", "b": "<a>"], ignore: [], file: "f") {
                (_) throws(Fail2banError) in nil
            }
        }
    }

    @Test("[Init] values and reference arguments, <tag> substitution, unknown tags kept")
    func initAndArguments() throws {
        let scratch = try ScratchConfiguration([
            "filter.d/demo.conf": """
            [Definition]
            mode = normal
            re-normal = ^normal <HOST>$
            re-aggressive = ^aggressive <HOST>$
            failregex = <re-<mode>>
                        ^<who> from <HOST>$
            [Init]
            who = alice
            """
        ])
        defer { scratch.remove() }
        let plain = try FilterLoader.load("demo", filterDirectory: scratch.path + "/filter.d")
        #expect(plain.failregex == ["^normal <HOST>$", "^alice from <HOST>$"])
        let argued = try FilterLoader.load(
            #"demo[mode=aggressive, who="bob"]"#, filterDirectory: scratch.path + "/filter.d")
        #expect(argued.failregex == ["^aggressive <HOST>$", "^bob from <HOST>$"])
        #expect(argued.options["known/who"] == "alice")
        let byPath = try FilterLoader.load(scratch.path + "/filter.d/demo.conf[mode=aggressive]")
        #expect(byPath.failregex.first == "^aggressive <HOST>$")
    }

    @Test("an unknown filter and a missing file fail with one line naming them")
    func missingFilter() throws {
        #expect(throws: Fail2banError.unknownFilter(name: "nothing-here", directory: "/nonexistent")) {
            try FilterLoader.load("nothing-here", filterDirectory: "/nonexistent")
        }
        #expect(throws: Fail2banError.missingFile(path: "/nonexistent/jail.conf", purpose: "fail2ban's jails")) {
            try Fail2banConfiguration.read(directory: "/nonexistent")
        }
    }

    @Test(
        "str2seconds",
        arguments: [
            ("600", 600), ("10m", 600), ("1h", 3600), ("1d", 86400), ("1w", 604_800), ("-1", -1), ("1h 30m", 5400),
            ("1d12h", 129_600), ("1year-6mo", 15_778_800), ("2 days", 172_800), ("90 seconds", 90),
        ])
    func durations(text: String, seconds: Int) throws {
        #expect(try Fail2banDuration.wholeSeconds(text, file: "jail.local", key: "bantime") == seconds)
    }

    @Test("a bad duration names file and key")
    func badDuration() {
        #expect(throws: Fail2banError.badDuration(file: "jail.local", key: "bantime", value: "ten minutes")) {
            try Fail2banDuration.wholeSeconds("ten minutes", file: "jail.local", key: "bantime")
        }
    }
}

@Suite("fail2ban jails")
struct JailTests {
    @Test("jail.conf, jail.d and jail.local in fail2ban's order; filter arguments from the jail")
    func scratchJails() throws {
        let scratch = try ScratchConfiguration([
            "jail.conf": """
            [INCLUDES]
            before = paths.conf
            [DEFAULT]
            bantime = 10m
            findtime = 10m
            maxretry = 5
            enabled = false
            mode = normal
            filter = %(__name__)s[mode=%(mode)s]
            usedns = warn
            action = iptables
            [demo]
            logpath = %(demo_log)s
                      /var/log/other*.log tail
            [off]
            bantime = not-a-duration
            """,
            "paths.conf": "[DEFAULT]\ndemo_log = /var/log/demo.log\n",
            "jail.d/a.conf": "[demo]\nenabled = true\nmode = aggressive\n",
            "jail.local": """
            [demo]
            bantime = 1h
            bantime.increment = true
            bantime.factor = 2
            bantime.multipliers = 1 2 4
            bantime.maxtime = 1w
            ignoreip = 127.0.0.1/8 ::1, 10.0.0.1
            """,
            "filter.d/demo.conf": """
            [Definition]
            mode = normal
            failregex = ^%(mode)s <HOST>$
            journalmatch = _SYSTEMD_UNIT=demo.service
            """,
        ])
        defer { scratch.remove() }
        let configuration = try Fail2banConfiguration.read(directory: scratch.path)
        let demo = try #require(configuration.jail("demo"))
        #expect(demo.enabled)
        #expect(demo.filterReference == "demo[mode=aggressive]")
        #expect(demo.filter?.failregex == ["^aggressive <HOST>$"])
        #expect(demo.logpath == ["/var/log/demo.log", "/var/log/other*.log"])
        #expect(demo.bantime == 3600 && demo.findtime == 600 && demo.maxretry == 5)
        #expect(demo.banTimeIncrement.enabled && demo.banTimeIncrement.factor == 2)
        #expect(demo.banTimeIncrement.multipliers == [1, 2, 4] && demo.banTimeIncrement.maxtime == 604_800)
        #expect(demo.ignoreip == ["127.0.0.1/8", "::1", "10.0.0.1"])
        #expect(demo.journalmatch == ["_SYSTEMD_UNIT=demo.service"])
        #expect(demo.action == "iptables")
        let off = try #require(configuration.jail("off"))
        #expect(!off.enabled)
        // A disabled jail's errors are kept, not thrown: its filter (off.conf) is missing, its bantime bad.
        #expect(off.problems.count == 2, "\(off.problems)")
        #expect(off.problems.last?.contains("bantime") == true)
    }

    @Test("Debian's /etc/fail2ban: every jail, sshd enabled with its filter")
    func debianJails() throws {
        guard FileManager.default.fileExists(atPath: "/etc/fail2ban/jail.conf") else {
            if Privileges.inCI { Issue.record("/etc/fail2ban/jail.conf is missing; run tools/install-deps") }
            return
        }
        let configuration = try Fail2banConfiguration.read()
        #expect(configuration.jails.count > 50)
        let sshd = try #require(configuration.jail("sshd"))
        #expect(sshd.enabled)
        #expect(sshd.filterReference == "sshd[mode=normal]")
        #expect(sshd.filter?.failregex.isEmpty == false)
        #expect(!sshd.logpath.isEmpty)
        #expect(sshd.bantime == 600 && sshd.findtime == 600 && sshd.maxretry == 5)
        let recidive = try #require(configuration.jail("recidive"))
        #expect(recidive.bantime == 604_800 && recidive.findtime == 86400)
        for jail in configuration.jails where jail.enabled { #expect(jail.filter != nil, "\(jail.name)") }
    }
}
