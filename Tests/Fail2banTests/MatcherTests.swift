// SPDX-License-Identifier: Apache-2.0
@testable import Fail2ban
import PortcullisCore
import Testing

func scan(_ matcher: FilterMatcher, _ line: String) -> ScanOutcome {
    var bytes = Array(line.utf8)
    return bytes.withUnsafeMutableBytes { matcher.scan(UnsafeRawBufferPointer($0)) }
}

func matcher(
    _ failregex: [String], ignoreregex: [String] = [], prefregex: String? = nil, datepattern: [String]? = nil,
    maxLineLength: Int = 4096, matchLimit: UInt32 = 10_000
) throws -> FilterMatcher {
    let definition = FilterDefinition(
        reference: "test", file: "test.conf", prefregex: prefregex, failregex: failregex, ignoreregex: ignoreregex,
        datepattern: datepattern)
    return FilterMatcher(try CompiledFilter(definition, maxLineLength: maxLineLength, matchLimit: matchLimit))
}

@Suite("fail2ban matching")
struct MatcherTests {
    @Test("tags expand as failregex.py expands them")
    func tags() throws {
        let translate = { (text: String) in try PythonRegex.translate(text) }
        #expect(try RegexTags.expand("<HOST>", useDNS: "warn") == translate(RegexTags.host))
        #expect(try RegexTags.expand("<HOST>", useDNS: "no") == translate(RegexTags.address))
        #expect(try RegexTags.expand("<F-USER>.*</F-USER>", useDNS: "warn") == "(?P<user>.*)")
        #expect(
            try RegexTags.expand("<F-ID>x</F-ID> <F-ID/>", useDNS: "warn")
                == "(?P<fid>x) (?P<fid>[^\(PythonRegex.spaceItems)]+)")
        #expect(try RegexTags.expand("</F-NEVER-OPENED>", useDNS: "warn") == "</F-NEVER-OPENED>")
        #expect(try RegexTags.expand("a((?i)b|c)", useDNS: "warn") == "a(?i:b|c)")
        #expect(try RegexTags.expand("(?iu)x\\Z", useDNS: "warn") == "(?i)x\\z")
        #expect(try RegexTags.expand("<SKIPLINES>", useDNS: "warn") == #"\n(?P<skiplines0>(?:(?:.*\n)*?))"#)
    }

    @Test("the date is cut before matching, as fail2ban cuts it: the space after it stays")
    func dateCut() throws {
        let syslog = try matcher([#"^\s*\S+ sshd\[\d+\]: Failed password from <HOST>$"#], datepattern: ["{^LN-BEG}"])
        #expect(syslog.cutLine("Jan  5 01:31:41 www sshd[1]: x") == " www sshd[1]: x")
        #expect(
            scan(syslog, "Jan  5 01:31:41 www sshd[1]: Failed password from 192.0.2.7")
                == .offence(IPAddress("192.0.2.7")!))
        #expect(syslog.lastDateRange == 0..<15)
        let iso = try matcher(["^ <HOST> denied$"])
        #expect(iso.cutLine("2005-01-23 21:59:59 192.0.2.1 denied") == " 192.0.2.1 denied")
        #expect(scan(iso, "2005-01-23 21:59:59 192.0.2.1 denied") == .offence(IPAddress("192.0.2.1")!))
        let bracket = try matcher(["^<HOST> x$"], datepattern: [#"^[^\[]*\[({DATE})"#])
        #expect(bracket.cutLine("192.0.2.1 - - [31/Oct/2006:09:22:55 -0000] GET") == "192.0.2.1 - - [] GET")
        let none = try matcher(["^<HOST> x$"], datepattern: ["{NONE}"])
        #expect(none.cutLine("2005-01-23 21:59:59 x") == "2005-01-23 21:59:59 x")
    }

    @Test("prefregex content, ignoreregex, names, and the host group fail2ban reads")
    func outcomes() throws {
        let filter = try matcher(
            ["^fail from <HOST>$", "^user <F-ID>\\S+</F-ID> at <HOST>$"], ignoreregex: ["from 192\\.0\\.2\\.99"],
            prefregex: "^svc: <F-CONTENT>.+</F-CONTENT>$")
        #expect(scan(filter, "svc: fail from 192.0.2.5") == .offence(IPAddress("192.0.2.5")!))
        #expect(scan(filter, "svc: fail from [2001:db8::1]") == .offence(IPAddress("2001:db8::1")!))
        #expect(scan(filter, "svc: fail from ::ffff:192.0.2.6") == .offence(IPAddress("192.0.2.6")!))
        #expect(scan(filter, "other: fail from 192.0.2.5") == .notMatching)
        #expect(scan(filter, "svc: fail from 192.0.2.99") == .ignored)
        #expect(scan(filter, "svc: fail from host.example.com") == .invalidAddress)
        // F-ID differing from the host is what fail2ban bans (the failure id).
        #expect(scan(filter, "svc: user 198.51.100.1 at 192.0.2.5") == .offence(IPAddress("198.51.100.1")!))
        #expect(scan(filter, "svc: user bob at 192.0.2.5") == .invalidAddress)
    }

    @Test("mlfid: a later line supplies the host; NOFAIL lines alone are no failure")
    func multiLineIdentifier() throws {
        let filter = try matcher(
            [
                "^<F-NOFAIL>Connection from</F-NOFAIL> <HOST>", "^Too many failures$",
                "^<F-MLFFORGET>closed</F-MLFFORGET>",
            ],
            prefregex: #"^<F-MLFID>conn\d+</F-MLFID>: <F-CONTENT>.+</F-CONTENT>$"#)
        #expect(scan(filter, "conn1: Connection from 192.0.2.8") == .notMatching)
        #expect(scan(filter, "conn2: Too many failures") == .notMatching)
        #expect(scan(filter, "conn1: Too many failures") == .offence(IPAddress("192.0.2.8")!))
        #expect(scan(filter, "conn1: closed") == .offence(IPAddress("192.0.2.8")!))
        #expect(scan(filter, "conn1: Too many failures") == .notMatching)  // forgotten
    }

    @Test("maxlines: a pattern spanning two lines")
    func multiLineBuffer() throws {
        let definition = FilterDefinition(
            reference: "test", file: "test.conf", failregex: [#"^login (?P<fid>\S+)\nfailed for \S+ from <HOST>$"#],
            maxlines: 2)
        let filter = FilterMatcher(try CompiledFilter(definition, detectsDates: false))
        #expect(scan(filter, "noise") == .notMatching)
        #expect(scan(filter, "login 192.0.2.3") == .notMatching)
        #expect(scan(filter, "failed for bob from 192.0.2.3") == .offence(IPAddress("192.0.2.3")!))
        #expect(scan(filter, "failed for bob from 192.0.2.3") == .notMatching)  // the matched lines left the buffer
    }

    @Test("maxlines: an ignoreregex sees only the lines the failregex matched, not the rest of the buffer")
    func multiLineIgnore() throws {
        let definition = FilterDefinition(
            reference: "test", file: "test.conf", failregex: [#"^failed from <HOST>$"#], ignoreregex: ["monitor"],
            maxlines: 3)
        let filter = FilterMatcher(try CompiledFilter(definition, detectsDates: false))
        #expect(scan(filter, "monitor started") == .notMatching)
        #expect(scan(filter, "failed from 192.0.2.4") == .offence(IPAddress("192.0.2.4")!), "fail2ban's _ignoreLine")
        #expect(scan(filter, "failed from 192.0.2.5 (monitor)") == .notMatching, "not this pattern's line")
        let ignoring = FilterMatcher(
            try CompiledFilter(
                FilterDefinition(
                    reference: "test", file: "test.conf", failregex: [#"^failed from <HOST>( .*)?$"#],
                    ignoreregex: ["monitor"], maxlines: 3), detectsDates: false))
        #expect(scan(ignoring, "monitor started") == .notMatching)
        #expect(scan(ignoring, "failed from 192.0.2.5 (monitor)") == .ignored, "its own line still counts")
    }

    @Test("limits: long lines and patterns that backtrack without end")
    func limits() throws {
        let short = try matcher(["^x <HOST>$"], maxLineLength: 16)
        #expect(scan(short, "x 192.0.2.1 " + String(repeating: "y", count: 20)) == .tooLong)
        let hostile = try matcher([#"^(a|aa)+\d<HOST>"#], matchLimit: 1000)
        #expect(scan(hostile, String(repeating: "a", count: 40) + "c") == .matchLimit)
    }

    @Test("subnet tags are refused, naming the feature, file and key")
    func unsupportedSubnet() {
        #expect(
            throws: Fail2banError.unsupported(
                feature: "the subnet tag <SUBNET>", file: "test.conf", line: nil, key: "failregex")
        ) {
            try matcher(["^from <SUBNET>$"])
        }
    }

    @Test("a failregex that does not compile: one line naming file, key, pattern and offset")
    func compileError() {
        do {
            _ = try matcher(["^fail (<HOST>$"])
            Issue.record("compiled")
        } catch let error as Fail2banError {
            guard case .regexCompile(let file, _, let key, let pattern, _, _) = error else {
                Issue.record("\(error)")
                return
            }
            #expect(file == "test.conf" && key == "failregex" && pattern == "^fail (<HOST>$")
            #expect(!error.description.contains("\n") && error.description.contains("offset"))
        } catch {
            Issue.record("\(error)")
        }
    }
}
