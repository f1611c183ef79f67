// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import Testing
import TestSupport
@testable import LogTransport
@testable import PortcullisConfiguration
@testable import PortcullisCore
@testable import PortcullisDaemon
@testable import XDPFirewall

@Suite("Jails reading the journal", .enabled(if: Privileges.runnable && JournalFiles.runnable), .serialized)
struct JournalJailTests {
    @Test(
        "a fail2ban sshd jail with backend = systemd reads the journal with the filter's journalmatch and bans on the third failure"
    )
    func fail2banSystemdJailBans() throws {
        try Privileges.require()
        let journal = try JournalFiles()
        defer { journal.remove() }
        guard
            let fail2ban = try Fail2banScratch.make(
                jailLocal: """
                    [sshd]
                    enabled = true
                    backend = systemd
                    maxretry = 3
                    bantime = 1h
                    """)
        else { return }
        defer { fail2ban.remove() }
        var defaultSource = TransportConfiguration(kind: .file)
        defaultSource.journal.directory = journal.directory
        let imported = try Fail2banImport.jails(directory: fail2ban.directory, defaultSource: defaultSource)
        let sshd = try #require(imported.jails.first { $0.name == "sshd" })
        #expect(sshd.sources.map(\.kind) == [.journal])
        #expect(sshd.sources[0].journal.match == "_SYSTEMD_UNIT=sshd.service + _COMM=sshd")
        #expect(sshd.description.contains("journal in \(journal.directory) matching _SYSTEMD_UNIT=sshd.service"))

        // The journal has an old failure before the daemon starts: it is not read (from the tail).
        try journal.append([JournalFiles.sshd("Failed password for root from 198.18.20.1 port 40000 ssh2")])
        var configuration = DaemonConfiguration(transport: defaultSource)
        configuration.jails = [sshd]
        let program = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: nil, mapEntries: 64)
        let maps = try #require(program.maps)
        let daemon = try Daemon(configuration: configuration, maps: maps)
        try daemon.start()
        defer { daemon.stop() }

        let client = IPAddress("198.18.20.1")!
        let bystander = IPAddress("198.18.20.2")!
        // Another unit's entries are not the jail's, whatever they say.
        let other = JournalFiles.sshd("Failed password for root from 198.18.20.2 port 1 ssh2", unit: "other.service")
            .filter { $0.0 != "_COMM" }
        try journal.append(
            (1...2).map { JournalFiles.sshd("Failed password for root from 198.18.20.1 port \(40000 + $0) ssh2") }
                + Array(repeating: other, count: 4))
        #expect(try !eventually(within: 1) { try maps.lookup(client) != nil }, "two failures since the start")
        try journal.append([JournalFiles.sshd("Failed password for root from 198.18.20.1 port 40003 ssh2")])
        #expect(try eventually(within: 10) { try maps.lookup(client) != nil }, "banned on the third")
        #expect(try maps.lookup(bystander) == nil, "the other unit's entries do not match")
        // A worker publishes its counters once its batch is done, after the ban it made.
        #expect(try eventually(within: 10) { daemon.status.jails[0].counters.bans == 1 })
        let status = daemon.status
        #expect(status.jails[0].counters.matched == 3 && status.jails[0].counters.bans == 1)
        #expect(status.total.lines == 3, "the match keeps the other unit's entries out")
    }
}
