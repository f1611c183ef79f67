// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Fail2ban
import Glibc
import PortcullisCore
import PortcullisSystem

/// `portcullis regex LOG FILTER`: what `fail2ban-regex LOG FILTER` does, with Portcullis's
/// reading of fail2ban's filters and matcher.
struct Regex: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Test a fail2ban filter (or a pattern) against a log file, like fail2ban-regex.",
        discussion: """
            FILTER is a fail2ban filter name (sshd, sshd[mode=aggressive]) looked up as the daemon \
            does: in /etc/portcullis/filter.d (the filters Portcullis ships, and yours), else in \
            /etc/fail2ban/filter.d; --filter-dir names the one directory to look in instead. Or a path to a filter .conf file, or an inline failregex (any text containing <HOST> or <ADDR>, \
            or that names no filter). As fail2ban-regex, lines that start with '#' and empty lines are \
            skipped and not counted. Dates are found and cut as fail2ban does; a host that is a name is \
            never resolved: it counts as matched but gives no address.
            """)

    @Argument(help: ArgumentHelp("The log file to read.", valueName: "log"))
    var log: String

    @Argument(help: ArgumentHelp("A filter name, a filter file, or a failregex.", valueName: "filter"))
    var filter: String

    @Option(
        name: .customLong("filter-dir"),
        help: ArgumentHelp(
            "The one directory filter names are looked up in (default: /etc/portcullis/filter.d, then "
                + "/etc/fail2ban/filter.d).", valueName: "path"))
    var filterDirectory: String?

    /// Where the daemon looks up `filter = NAME` with the installed configuration: Portcullis's own
    /// filter.d first (its sshd filter gives the same verdicts with or without fail2ban), then
    /// fail2ban's.
    static let defaultFilterDirectories = ["/etc/portcullis/filter.d", "/etc/fail2ban/filter.d"]

    /// The directory `filter` is read from: --filter-dir, or the first default one that holds it.
    func lookupDirectory() -> String {
        if let filterDirectory { return filterDirectory }
        let name = (try? FilterLoader.parseReference(filter).name) ?? filter
        return Self.defaultFilterDirectories.first { directory in
            [".conf", ".local"].contains { access(directory + "/" + name + $0, F_OK) == 0 }
        } ?? Self.defaultFilterDirectories.last!
    }

    @Option(help: ArgumentHelp("An ignoreregex to add (one pattern).", valueName: "pattern"))
    var ignoreregex: String?

    @Flag(name: .customLong("print-missed"), help: "Print the lines no failregex matched.")
    var printMissed = false

    @Flag(
        help:
            "Print one JSON object: {\"lines\", \"matched\", \"ignored\", \"missed\", \"addresses\": {address: count}}."
    )
    var json = false

    @Option(
        name: .customLong("max-line-length"), help: ArgumentHelp("Longer lines count as missed.", valueName: "bytes"))
    var maxLineLength = 4096

    func run() throws {
        try reportingErrors {
            let definition = try loadDefinition()
            let compiled: CompiledFilter
            do {
                compiled = try CompiledFilter(definition, maxLineLength: maxLineLength)
            } catch let error as Fail2banError {
                throw UsageError(error.description)
            }
            let matcher = FilterMatcher(compiled)
            let fd = try systemCall(
                { open(log, O_RDONLY | O_CLOEXEC) }, orThrow: { UsageError("\(log): cannot be read: \($0)") })
            guard let file = fdopen(fd, "r") else {
                close(fd)
                throw UsageError("\(log): cannot be read (out of memory)")
            }
            defer { fclose(file) }
            var lines = 0, matched = 0, ignored = 0, missed = 0
            var addresses: [IPAddress: Int] = [:]
            var order: [IPAddress] = []
            var missedLines: [String] = []
            var buffer: UnsafeMutablePointer<CChar>? = nil
            var capacity = 0
            defer { free(buffer) }
            while true {
                let count = getline(&buffer, &capacity, file)
                if count < 0 { break }
                guard let buffer else { break }
                var length = count
                while length > 0 && (buffer[length - 1] == 10 || buffer[length - 1] == 13) { length -= 1 }
                if length == 0 || buffer[0] == 35 { continue }  // empty or '#': skipped, as fail2ban-regex
                lines += 1
                let outcome = matcher.scan(UnsafeRawBufferPointer(start: buffer, count: length))
                switch outcome {
                case .offence(let address):
                    matched += 1
                    if addresses[address] == nil { order.append(address) }
                    addresses[address, default: 0] += 1
                case .invalidAddress:
                    matched += 1
                case .ignored:
                    ignored += 1
                case .notMatching, .tooLong, .matchLimit:
                    missed += 1
                    if printMissed {
                        let text = String(decoding: UnsafeRawBufferPointer(start: buffer, count: length), as: UTF8.self)
                        missedLines.append(outcome == .notMatching ? text : "\(text)  [\(outcome)]")
                    }
                }
            }
            if json {
                var counts = JSONObject()
                for address in order { counts[address.description] = .integer(Int64(addresses[address]!)) }
                var object = JSONObject()
                object["lines"] = .integer(Int64(lines))
                object["matched"] = .integer(Int64(matched))
                object["ignored"] = .integer(Int64(ignored))
                object["missed"] = .integer(Int64(missed))
                object["addresses"] = .object(counts)
                print(JSONOutput.line(object))
                return
            }
            print(
                "Filter: \(definition.reference) (\(definition.files.isEmpty ? definition.file : definition.files.joined(separator: ", ")))"
            )
            print("Lines: \(lines) lines, \(ignored) ignored, \(matched) matched, \(missed) missed")
            if !order.isEmpty {
                print("Addresses:")
                for address in order.sorted(by: { addresses[$0]! > addresses[$1]! }) {
                    print("  \(address)  \(addresses[address]!)")
                }
            }
            if printMissed && !missedLines.isEmpty {
                print("Missed lines:")
                for line in missedLines { print("  \(line)") }
            }
        }
    }

    /// A filter file or name when there is one, an inline pattern otherwise.
    func loadDefinition() throws -> FilterDefinition {
        let hostTags = ["<HOST>", "<ADDR>", "<IP4>", "<IP6>", "<DNS>", "<SUBNET>", "<F-ID>"]
        let looksInline = hostTags.contains { filter.contains($0) }
        if !looksInline {
            do {
                var definition = try FilterLoader.load(filter, filterDirectory: lookupDirectory())
                if let ignoreregex { definition.ignoreregex.append(ignoreregex) }
                return definition
            } catch {
                switch error {
                case .unknownFilter, .missingFile: break  // not a filter: an inline pattern
                default: throw UsageError(error.description)
                }
            }
        }
        return FilterDefinition.inline(failregex: filter, ignoreregex: ignoreregex)
    }
}
