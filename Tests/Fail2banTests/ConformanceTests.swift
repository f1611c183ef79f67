// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import Foundation
import PortcullisCore
import TestSupport
import Testing

/// fail2ban's own sample logs, checked as its `samplestestcase.py` checks them: `# filterOptions:`
/// selects filter arguments (each list entry is one more filter run over the following lines),
/// `# failJSON:` annotates the next line (`match`, `host`; `constraint` limits it to some runs),
/// `# addFILE:` appends another sample file.
enum SampleLogs {
    static let filterDirectory = "/etc/fail2ban/filter.d"
    static let logDirectory = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs"

    /// The filters whose every annotation (with an address host) must agree with fail2ban.
    static let required = [
        "sshd", "nginx-http-auth", "nginx-limit-req", "nginx-botsearch", "apache-auth", "postfix", "dovecot",
        "recidive", "named-refused", "pam-generic",
    ]

    static var present: Bool {
        FileManager.default.fileExists(atPath: filterDirectory + "/sshd.conf")
            && FileManager.default.fileExists(atPath: logDirectory + "/sshd")
    }

    /// Filters in filter.d with a sample log of the same name (common.conf aside), as fail2ban's test.
    static var filtersWithSamples: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: filterDirectory)) ?? []
        return names.filter { $0.hasSuffix(".conf") && !$0.hasSuffix("common.conf") && !$0.hasPrefix(".") }
            .map { String($0.dropLast(5)) }
            .filter { FileManager.default.fileExists(atPath: logDirectory + "/" + $0) }
            .sorted()
    }
}

/// The tally of one filter's run over its samples.
struct ConformanceTally {
    var checked = 0, passed = 0
    var nameHosts = 0, nameHostsMatched = 0
    var failures: [String] = []
    var loadError: String? = nil
}

/// Evaluates samplestestcase's `constraint`/`test.condition` expressions (the forms the samples
/// use: `name == '...'`, `opts.get('key') == '...'`, `!=`).
func evaluateCondition(_ expression: String, name: String, options: [String: String]) -> Bool {
    let pattern = #"^\s*(name|opts\.get\('([^']+)'\))\s*(==|!=)\s*'([^']*)'\s*$"#
    guard let regex = try? NSRegularExpression(pattern: pattern),
        let match = regex.firstMatch(in: expression, range: NSRange(expression.startIndex..., in: expression))
    else {
        Issue.record("constraint '\(expression)' has a form this test does not evaluate")
        return false
    }
    func group(_ index: Int) -> String? {
        Range(match.range(at: index), in: expression).map { String(expression[$0]) }
    }
    let left = group(1) == "name" ? name : options[group(2) ?? ""]
    let equal = left == group(4)
    return group(3) == "==" ? equal : !equal
}

/// Runs one filter over its sample files as samplestestcase.py does.
func runSamples(_ name: String) -> ConformanceTally {
    var tally = ConformanceTally()
    var files = [name]
    var commonOptions: [String: Any] = [:]
    var runs: [(label: String, options: [String: String], matcher: FilterMatcher)] = []
    var matchers: [String: FilterMatcher] = [:]
    var ignoreBlock = false
    let header = try! NSRegularExpression(pattern: #"^#+ ?(failJSON|(?:file|filter)Options|addFILE):(.+)$"#)

    func matcher(for options: [String: String]) -> FilterMatcher? {
        let label = options.keys.sorted().map { "\($0)=\(options[$0]!)" }.joined(separator: ",")
        if let known = matchers[label] { return known }
        do {
            let definition = try FilterLoader.load(
                name, filterDirectory: SampleLogs.filterDirectory,
                arguments: options.filter { !$0.key.hasPrefix("test.") })
            let compiled = try CompiledFilter(definition, detectsDates: options["logtype"] != "journal")
            let made = FilterMatcher(compiled)
            matchers[label] = made
            return made
        } catch {
            tally.loadError = "\(error)"
            return nil
        }
    }

    var fileIndex = 0
    while fileIndex < files.count {
        let path = SampleLogs.logDirectory + "/" + files[fileIndex]
        fileIndex += 1
        guard let data = FileManager.default.contents(atPath: path) else { continue }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            .map(String.init)
        var index = 0
        while index < lines.count {
            var line = lines[index]
            index += 1
            var annotation: [String: Any] = [:]
            let range = NSRange(line.startIndex..., in: line)
            if let match = header.firstMatch(in: line, range: range) {
                let kind = String(line[Range(match.range(at: 1), in: line)!])
                let json = String(line[Range(match.range(at: 2), in: line)!])
                let value = try? JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
                switch kind {
                case "fileOptions":
                    commonOptions = value as? [String: Any] ?? [:]
                    continue
                case "filterOptions":
                    runs = []
                    ignoreBlock = false
                    let list = (value as? [[String: Any]]) ?? [(value as? [String: Any]) ?? [:]]
                    for entry in list {
                        var merged = commonOptions
                        for (key, value) in entry { merged[key] = value }
                        let options = merged.mapValues { "\($0)" }
                        if let condition = options["test.condition"] {
                            ignoreBlock = !evaluateCondition(condition, name: name, options: options)
                        }
                        if !ignoreBlock, let made = matcher(for: options) {
                            runs.append((options.description, options, made))
                        }
                    }
                    continue
                case "addFILE":
                    if let file = value as? String { files.append(file) }
                    continue
                default:
                    annotation = value as? [String: Any] ?? [:]
                    guard index < lines.count else { continue }
                    line = lines[index]
                    index += 1
                }
            } else if ignoreBlock || line.hasPrefix("#") || line.trimmingCharacters(in: .whitespaces).isEmpty {
                continue
            }
            if ignoreBlock { continue }
            if runs.isEmpty, let made = matcher(for: [:]) { runs = [("{}", [:], made)] }
            while line.hasSuffix("\r") { line.removeLast() }
            for run in runs {
                if let constraint = annotation["constraint"] as? String,
                    !evaluateCondition(constraint, name: name, options: run.options)
                {
                    continue
                }
                var text = line
                if run.options["logtype"] == "journal", let prefix = run.options["test.prefix-line"] {
                    text = prefix + text
                }
                var bytes = Array(text.utf8)
                let outcome = bytes.withUnsafeMutableBytes { run.matcher.scan(UnsafeRawBufferPointer($0)) }
                let shouldMatch = annotation["match"] as? Bool ?? false
                let matched: Bool
                switch outcome {
                case .offence, .invalidAddress: matched = true
                default: matched = false
                }
                let where_ = "\(files[fileIndex - 1]):\(index) \(run.label)"
                if !shouldMatch {
                    tally.checked += 1
                    if !matched {
                        tally.passed += 1
                    } else {
                        tally.failures.append("\(where_): matched (\(outcome)), should not: \(line)")
                    }
                    continue
                }
                let host = (annotation["host"] as? String).flatMap { IPAddress($0) }
                guard let host else {
                    tally.nameHosts += 1
                    if matched { tally.nameHostsMatched += 1 }
                    continue
                }
                tally.checked += 1
                if outcome == .offence(host) {
                    tally.passed += 1
                } else {
                    tally.failures.append("\(where_): \(outcome), expected \(host): \(line)")
                }
                _ = bytes.count
            }
        }
    }
    return tally
}

@Suite("fail2ban sample logs")
struct ConformanceTests {
    @Test("every filter with a sample log: required ones agree on every annotation")
    func conformance() throws {
        guard SampleLogs.present else {
            if Privileges.inCI { Issue.record("fail2ban's filters or sample logs are missing; run tools/install-deps") }
            return
        }
        var totalChecked = 0, totalPassed = 0
        var requiredChecked = 0, requiredPassed = 0
        for name in SampleLogs.filtersWithSamples {
            let tally = runSamples(name)
            totalChecked += tally.checked
            totalPassed += tally.passed
            let rate = tally.checked == 0 ? 100.0 : 100.0 * Double(tally.passed) / Double(tally.checked)
            let isRequired = SampleLogs.required.contains(name)
            var line = "conformance \(name): \(tally.passed)/\(tally.checked) (\(String(format: "%.1f", rate))%)"
            if tally.nameHosts > 0 { line += ", name hosts matched \(tally.nameHostsMatched)/\(tally.nameHosts)" }
            if let error = tally.loadError { line += ", load error: \(error)" }
            if isRequired { line += " [required]" }
            print(line)
            if isRequired {
                requiredChecked += tally.checked
                requiredPassed += tally.passed
                #expect(tally.loadError == nil, "\(name): \(tally.loadError ?? "")")
                #expect(tally.checked > 0, "\(name): no annotation checked")
                for failure in tally.failures.prefix(20) { Issue.record("\(name): \(failure)") }
            } else if ProcessInfo.processInfo.environment["F2B_VERBOSE"] != nil {
                for failure in tally.failures.prefix(10) { print("  \(failure)") }
            }
        }
        let overall = totalChecked == 0 ? 0 : 100.0 * Double(totalPassed) / Double(totalChecked)
        print("conformance required: \(requiredPassed)/\(requiredChecked)")
        print("conformance overall: \(totalPassed)/\(totalChecked) (\(String(format: "%.1f", overall))%)")
        #expect(requiredPassed == requiredChecked)
    }
}
