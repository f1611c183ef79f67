// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisCore
import TestSupport
import Testing

/// `portcullis regex --json` against Debian's `fail2ban-regex` on fail2ban's sample logs: the
/// sets of matched addresses must agree.
@Suite("portcullis regex against fail2ban-regex")
struct DifferentialTests {
    static let fail2banRegex = "/usr/bin/fail2ban-regex"

    /// The ten filters, sshd in each mode its samples use.
    static let cases = [
        "sshd", "sshd[mode=aggressive]", "sshd[mode=ddos]", "sshd[mode=extra]", "nginx-http-auth",
        "nginx-http-auth[mode=aggressive]", "nginx-limit-req", "nginx-botsearch", "apache-auth", "postfix",
        "postfix[mode=aggressive]", "dovecot", "dovecot[mode=aggressive]", "recidive", "named-refused", "pam-generic",
    ]

    static var runnable: Bool {
        FileManager.default.isExecutableFile(atPath: fail2banRegex) && SampleLogs.present
            && FileManager.default.isExecutableFile(atPath: Products.cli)
    }

    /// Addresses as IPAddress (fail2ban prints them normalised; names and ids are dropped).
    static func addresses(_ texts: some Sequence<String>) -> Set<IPAddress> {
        Set(texts.compactMap { IPAddress($0.trimmingCharacters(in: .whitespaces)) })
    }

    @Test("the matched address sets agree", arguments: cases)
    func agree(filter: String) throws {
        guard Self.runnable else {
            if Privileges.inCI { Issue.record("fail2ban-regex, the sample logs or \(Products.cli) are missing") }
            return
        }
        let name = String(filter.prefix { $0 != "[" })
        let log = SampleLogs.logDirectory + "/" + name
        // --usedns raw: names are printed as written, never resolved (no DNS lookups in tests).
        let theirs = try runProcess(Self.fail2banRegex, ["--usedns", "raw", "-o", "id", log, filter], timeout: 300)
        try #require(theirs.status == 0, "fail2ban-regex failed: \(theirs.stderr)")
        let ours = try runProcess(
            Products.cli, ["regex", "--json", "--filter-dir", SampleLogs.filterDirectory, log, filter])
        try #require(ours.status == 0, "portcullis regex failed: \(ours.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(ours.stdout.utf8)) as? [String: Any])
        let counted = try #require(object["addresses"] as? [String: Int])
        let expected = Self.addresses(theirs.stdout.split(separator: "\n").map(String.init))
        let found = Self.addresses(counted.keys)
        print("differential \(filter): fail2ban-regex \(expected.count) addresses, portcullis \(found.count)")
        #expect(found.subtracting(expected).isEmpty, "only portcullis: \(found.subtracting(expected))")
        #expect(expected.subtracting(found).isEmpty, "only fail2ban-regex: \(expected.subtracting(found))")
        #expect(!expected.isEmpty)
    }
}
