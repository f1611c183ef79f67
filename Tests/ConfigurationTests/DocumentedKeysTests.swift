// SPDX-License-Identifier: Apache-2.0
import Foundation
@testable import PortcullisConfiguration
import Testing
import TestSupport

/// docs/configuration.md (also the man page portcullis.toml(5)) names every key the loader accepts,
/// each written as `key`, and docs/commands.md (with docs/transports.md for the transports' options)
/// every command and flag the built programs' `--help` lists: one added without its line fails here.
@Suite("documented keys")
struct DocumentedKeysTests {
    @Test("docs/configuration.md names every key of every table")
    func everyKeyDocumented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let page = try String(contentsOf: root.appendingPathComponent("docs/configuration.md"), encoding: .utf8)
        // [blocklist.NAME] reads its two keys in ConfigurationFile itself.
        let tables: [(String, [String])] = [
            ("daemon", Array(DaemonKeys.all.keys)), ("jail", Array(JailKeys.names)),
            ("escalation", Array(JailKeys.escalationNames)), ("crowdsec", CrowdSecConfiguration.keys),
            ("fleet", FleetConfiguration.keys), ("blocklist", ["file", "reload"]),
        ]
        for (table, keys) in tables {
            let missing = keys.filter { !page.contains("`\($0)`") }.sorted()
            #expect(missing.isEmpty, "[\(table)] keys missing from docs/configuration.md: \(missing)")
        }
    }

    @Test("docs/commands.md names every command and flag of portcullis and portcullisd")
    func everyCommandDocumented() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let pages = try ["docs/commands.md", "docs/transports.md"].map {
            try String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)
        }.joined(separator: "\n")
        var missing: [String] = []
        // Each program's and subcommand's help; subcommands are read from its SUBCOMMANDS section.
        var commands: [[String]] = [["portcullisd"], ["portcullis"]]
        while let command = commands.popLast() {
            let help = try runProcess(Products.directory + "/" + command[0], Array(command.dropFirst()) + ["--help"])
                .stdout
            let name = command.joined(separator: " ")
            if command.count > 1, !names(pages, name) { missing.append(name) }
            let words = help.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "," || $0 == "/" || $0 == "(" })
            let flags = Set(
                words.filter { $0.hasPrefix("--") && $0.count > 2 }.map {
                    String($0.prefix { $0 == "-" || $0.isLetter || $0.isNumber })
                })
            for flag in flags.sorted() where !names(pages, flag) { missing.append("\(name) \(flag)") }
            guard let section = help.range(of: "SUBCOMMANDS:\n") else { continue }
            // One line per subcommand, its name two spaces in (wrapped text is indented further),
            // up to the blank line.
            for line in help[section.upperBound...].split(separator: "\n", omittingEmptySubsequences: false) {
                if line.isEmpty { break }
                guard line.hasPrefix("  "), !line.hasPrefix("   "), let word = line.split(separator: " ").first
                else { continue }
                commands.append(command + [String(word)])
            }
        }
        #expect(missing.isEmpty, "commands and flags missing from docs/commands.md: \(missing)")
    }

    /// Whether `text` holds `name` as a whole word (not followed by a letter, digit or hyphen).
    private func names(_ text: String, _ name: String) -> Bool {
        var rest = text[...]
        while let found = rest.range(of: name) {
            guard let next = rest[found.upperBound...].first, next.isLetter || next.isNumber || next == "-" else {
                return true
            }
            rest = rest[found.upperBound...]
        }
        return false
    }
}
