// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import PortcullisCore
import Testing

private func offence(_ address: String) -> ScanOutcome {
    .offence(IPAddress(address)!)
}

@Suite("failregex")
struct FailRegexTests {
    func match(_ pattern: String, _ line: String) throws -> ScanOutcome {
        let matcher = FailRegex.Matcher(try FailRegex(pattern))
        return Array(line.utf8).withUnsafeBytes { matcher.scan($0) }
    }

    @Test func hostIsCaptured() throws {
        #expect(
            try match(
                "^sshd\\[\\d+\\]: Failed password for .* from <HOST> port \\d+",
                "sshd[42]: Failed password for root from 198.18.3.4 port 22 ssh2") == offence("198.18.3.4"))
        #expect(
            try match("authentication failure; rhost=<HOST>$", "pam: authentication failure; rhost=2001:2::9")
                == offence("2001:2::9"))
        #expect(
            try match("client <HOST> exceeded", "2026-11-26 client ::ffff:198.18.0.7 exceeded") == offence("198.18.0.7")
        )
        #expect(try match("^denied <HOST>$", "something else") == .notMatching)
        #expect(try match("^denied <HOST>$", "denied 300.1.1.1") == .invalidAddress)
        #expect(try match("^denied <HOST>$", "denied fe80::1%eth0") == .invalidAddress)
    }

    @Test func patternsWithoutOneHostOrThatDoNotCompileAreRefused() {
        #expect(throws: FailRegexError.missingHost(pattern: "^denied$")) { _ = try FailRegex("^denied$") }
        #expect(throws: FailRegexError.severalHosts(pattern: "<HOST> <HOST>")) { _ = try FailRegex("<HOST> <HOST>") }
        #expect(throws: FailRegexError.self) { _ = try FailRegex("from <HOST> (unclosed") }
        do {
            _ = try FailRegex("from <HOST> (unclosed")
        } catch {
            #expect(error.description.contains("does not compile"))
            #expect(error.description.contains("missing closing parenthesis"))
        }
    }

    @Test func aHostileLineHitsTheMatchLimitInsteadOfHanging() throws {
        // Nested quantifiers on a line that almost matches (the 'b' it requires is there, later, so
        // no shortcut rules it out): exponential for a backtracking engine; the limit stops it.
        let outcome = try match("^(a+)+b <HOST>$", String(repeating: "a", count: 40) + "c b 198.18.0.1")
        #expect(outcome == .matchLimit)
    }

    @Test("the match limit is the pattern's own: one hostile line finishes under a high limit and stops at a low one")
    func matchLimitIsConfigurable() throws {
        let pattern = "^(a+)+b from <HOST>$"
        // Backtracking grows as 2^n for n letters: about four million steps here.
        let line = String(repeating: "a", count: 22) + "c from 198.18.0.9"
        let generous = FailRegex.Matcher(try FailRegex(pattern, matchLimit: 100_000_000))
        let tight = FailRegex.Matcher(try FailRegex(pattern, matchLimit: 1_000))
        #expect(Array(line.utf8).withUnsafeBytes { generous.scan($0) } == .notMatching)
        #expect(Array(line.utf8).withUnsafeBytes { tight.scan($0) } == .matchLimit)
        #expect(FailRegex.defaultMatchLimit == 10_000)
    }
}
