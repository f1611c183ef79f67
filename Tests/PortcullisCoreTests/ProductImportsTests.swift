// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing

/// Product code imports FoundationEssentials, not Foundation: Foundation brings ICU and its 34 MB of
/// data into every static program that links it (BUILD.md, "The systemd unit and the package").
@Suite("The product's imports")
struct ProductImportsTests {
    /// Files under Sources/ that need more than FoundationEssentials, each with its reason. None today.
    static let allowed: [String: String] = [:]

    /// Foundation and the modules that bring ICU with it (Internationalization) or are built on it.
    static let heavy = ["Foundation", "FoundationInternationalization", "FoundationNetworking", "FoundationXML"]

    /// The module an `import` line names, whatever its attributes, access and kind
    /// (`@preconcurrency import Foundation`, `internal import struct Foundation.Data`).
    static func importedModule(_ line: Substring) -> String? {
        var words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })[...]
        while let first = words.first, first.hasPrefix("@") { words = words.dropFirst() }
        if let first = words.first, ["public", "package", "internal", "fileprivate", "private"].contains(first) {
            words = words.dropFirst()
        }
        guard words.first == "import" else { return nil }
        words = words.dropFirst()
        let kinds = ["struct", "class", "enum", "protocol", "typealias", "func", "var", "let"]
        if let kind = words.first, kinds.contains(String(kind)) { words = words.dropFirst() }
        return words.first.map { String($0.split(separator: ".")[0]) }
    }

    @Test("an import line names its module")
    func importLines() {
        #expect(Self.importedModule("import Foundation") == "Foundation")
        #expect(Self.importedModule("@preconcurrency import Foundation") == "Foundation")
        #expect(Self.importedModule("internal import struct Foundation.Data") == "Foundation")
        #expect(Self.importedModule("import FoundationEssentials") == "FoundationEssentials")
        #expect(Self.importedModule("// import Foundation") == nil)
        #expect(Self.importedModule("let imported = 1") == nil)
    }

    @Test("no file under Sources/ imports Foundation but those allowed, each with its reason")
    func noFoundationInProductCode() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        #expect(files.count > 100, "the Swift files under \(sources.path)")
        var offenders: [String] = []
        for file in files {
            let text = try String(contentsOfFile: sources.appendingPathComponent(file).path, encoding: .utf8)
            for line in text.split(separator: "\n") {
                if let module = Self.importedModule(line), Self.heavy.contains(module),
                    Self.allowed["Sources/" + file] == nil
                {
                    offenders.append("Sources/\(file): \(line)")
                }
            }
        }
        #expect(
            offenders.isEmpty,
            "\(offenders): import FoundationEssentials instead, or name the file and why in `allowed`")
    }
}
