// SPDX-License-Identifier: Apache-2.0
import Foundation
@testable import PortcullisConfiguration
import Testing

/// docs/configuration.md (also the man page portcullis.toml(5)) names every key the loader accepts,
/// each written as `key`: a key added to a table without a line there fails here.
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
}
