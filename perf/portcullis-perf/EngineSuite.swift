// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Fail2ban
import OffenceTable
import PortcullisCore
import PortcullisSystem
import CPortcullis
import Foundation
import LogTransport
import PerfReference
import XDPFirewall

/// Offence lines for 131,068 clients of 198.18.0.0/15 (every 16th one IPv6 from 2001:2::/48), one
/// line per client, in a LineBatch (the layout workers scan).
func offenceLines(clients: Int = 131_068) -> LineBatch {
    let lines = LineBatch(byteCapacity: clients * 80, lineCapacity: clients)
    for index in 0..<clients {
        let address: String
        if index % 16 == 15 {
            address = "2001:2::\(String(index >> 16, radix: 16)):\(String(index & 0xffff, radix: 16))"
        } else {
            let value = 0xC612_0004 + index
            address = "\(value >> 24).\((value >> 16) & 255).\((value >> 8) & 255).\(value & 255)"
        }
        lines.append(OffenceLine.text(time: UTCTime(secondsSinceEpoch: 1_795_718_566), address: IPAddress(address)!))
    }
    return lines
}

/// Suite `engine`: the scanner, the failregex path and the offence table, each beside a reference.
struct EngineSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract:
            "Lines/s of the scanner vs C and of failregex vs the scanner; table ops/s vs C; bans/s single vs batched.")

    @OptionGroup var options: HarnessOptions

    @Option(help: "Scans per round (the 131,068 lines, cycled).")
    var scans = 5_000_000

    @Option(help: "Table operations per thread per round.")
    var operations = 5_000_000

    @Option(help: "Addresses banned per round in the ban installation measurement.")
    var bans = 65_536

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "fail2ban's filter directory (the sshd filter rows read sshd.conf and its includes there).")
    var fail2banFilters = "/etc/fail2ban/filter.d"

    @Option(help: "fail2ban's sshd sample log (its lines that are neither empty nor comments are scanned).")
    var fail2banSampleLog = "/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/sshd"

    @Option(help: "Lines per round for the sshd filter rows (the sample lines, repeated).")
    var fail2banLines = 1_000_000

    func run() throws {
        try runSuite(options) { try measure() }
    }

    func measure() throws -> [Measurement] {
        let lines = offenceLines()
        var results: [Measurement] = []
        func row(_ name: String, unit: String, _ reference: String, _ pair: () throws -> (Double, Double)) rethrows {
            var values: [Double] = []
            var references: [Double] = []
            for _ in 0..<options.rounds {
                let (value, referenceValue) = try pair()
                values.append(value)
                references.append(referenceValue)
            }
            results.append(
                Measurement(
                    suite: "engine", name: name, unit: unit, value: median(values),
                    reference: reference, referenceValue: median(references),
                    rounds: options.rounds, ratio: median(zip(values, references).map { $0 / $1 })))
        }

        let scanner = LineScanner()
        try row("scanner", unit: "lines/s", "C reference scanner") {
            (try scanRate(lines, scanner), try referenceScanRate(lines))
        }
        let regex = try FailRegex(
            "^\\d{4}-\\d{2}-\\d{2} \\d{2}:\\d{2}:\\d{2} client <HOST> exceeded request rate limit$")
        let matcher = FailRegex.Matcher(regex)
        let regexScans = max(scans / 10, 100_000)
        try row("failregex (PCRE2 JIT)", unit: "lines/s", "scanner") {
            (try scanRate(lines, scans: regexScans, matcher), try scanRate(lines, scanner))
        }
        try fail2banSSHDRows(scanner, lines, row)
        for threads in [1, 2] {
            row(
                "offence table, \(threads) thread\(threads == 1 ? "" : "s")", unit: "ops/s",
                "C reference table, \(threads) thread\(threads == 1 ? "" : "s")"
            ) {
                (tableRate(threads: threads, reference: false), tableRate(threads: threads, reference: true))
            }
        }
        results += try banInstallationRates(
            objectPath: try BPFObjectLocator().locate(explicit: bpfObject),
            bans: bans, batchSize: 1024, rounds: options.rounds, suite: "engine")
        return results
    }

    /// One row per mode of fail2ban's sshd filter over its sample lines, against the scanner over the
    /// offence lines in the same round. Without fail2ban installed the rows are skipped with a note on
    /// stderr; with `CI` set that is a failure instead, so CI never passes by skipping (as the tests).
    private func fail2banSSHDRows(
        _ scanner: LineScanner, _ lines: LineBatch,
        _ row: (String, String, String, () throws -> (Double, Double)) throws -> Void
    ) throws {
        let rows = Fail2banSSHDRows(
            filterDirectory: fail2banFilters, sampleLog: fail2banSampleLog, lines: fail2banLines)
        if let missing = rows.missingInput() {
            if ProcessInfo.processInfo.environment["CI"].map({ !$0.isEmpty }) ?? false {
                throw MeasurementError(description: missing)
            }
            FileHandle.standardError.write(Data("portcullis-perf: engine: sshd filter rows skipped: \(missing)\n".utf8))
            return
        }
        let sample = try rows.sampleLines()
        for mode in Fail2banSSHDRows.modes {
            let matcher = try rows.matcher(mode: mode)
            var outcomes: Fail2banSSHDRows.Outcomes?
            try row("fail2ban sshd[mode=\(mode)]", "lines/s", "scanner") {
                (try Fail2banSSHDRows.scanRate(sample, matcher, expected: &outcomes), try scanRate(lines, scanner))
            }
        }
    }

    /// Lines/s of `scanner` (a LineScanner or a FailRegex.Matcher) over the lines, cycled to `scans`
    /// lines, called directly as a worker does; fails if any line is not an offence.
    private func scanRate<S: Scanning>(_ lines: LineBatch, scans: Int? = nil, _ scanner: S) throws -> Double {
        let total = scans ?? self.scans
        var done = 0
        var offences = 0
        var checksum: UInt64 = 0
        let start = SystemClock.monotonicSeconds()
        while done < total {
            let count = min(lines.count, total - done)
            var seen = 0
            lines.forEachLine { line in
                guard seen < count else { return }
                seen += 1
                if case .offence(let key) = scanner.scan(line) {
                    offences += 1
                    checksum ^= key.high ^ key.low
                }
            }
            done += count
        }
        let elapsed = SystemClock.monotonicSeconds() - start
        guard offences == total else {
            throw MeasurementError(description: "only \(offences) of \(total) lines scanned as offences")
        }
        blackHole(checksum)
        return Double(total) / elapsed
    }

    private func referenceScanRate(_ lines: LineBatch) throws -> Double {
        // The C scanner reads the same bytes; line ends converted to its array once, outside the clock.
        var ends = [Int](repeating: 0, count: lines.count)
        var offset = 0
        for index in 0..<lines.count {
            offset += lines.withUnsafeLine(index) { $0.count }
            ends[index] = offset
        }
        let base = lines.withUnsafeLine(0) { $0.baseAddress!.assumingMemoryBound(to: UInt8.self) }
        var done = 0
        var offences: UInt64 = 0
        var checksum: UInt64 = 0
        let start = SystemClock.monotonicSeconds()
        while done < scans {
            let count = min(lines.count, scans - done)
            offences += ends.withUnsafeBufferPointer { pc_reference_scan(base, $0.baseAddress, count, 512, &checksum) }
            done += count
        }
        let elapsed = SystemClock.monotonicSeconds() - start
        guard offences == UInt64(scans) else {
            throw MeasurementError(description: "the C scanner found \(offences) of \(scans)")
        }
        return Double(scans) / elapsed
    }

    /// Operations/s over all threads: each thread records the 131,068 keys, cycled, into one shared table.
    private func tableRate(threads: Int, reference: Bool) -> Double {
        let keys = (0..<131_068).map { (index: Int) -> IPAddress in
            let value = 0xC612_0004 + index
            return IPAddress(ipv4: 198, UInt8((value >> 16) & 255), UInt8((value >> 8) & 255), UInt8(value & 255))
        }
        let bins = 6_000_011
        let table = reference ? nil : try? OffenceTable(bins: bins, threshold: 3)
        nonisolated(unsafe) let referenceTable = reference ? pc_reference_table_create(UInt64(bins), 3) : nil
        defer { if let referenceTable { pc_reference_table_destroy(referenceTable) } }
        let operations = self.operations
        let start = SystemClock.monotonicSeconds()
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            try? SystemThread.pinCurrent(to: thread % max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))))
            var crossings = 0
            var index = thread * 65_521 % keys.count
            keys.withUnsafeBufferPointer { keys in
                if let table {
                    for _ in 0..<operations {
                        if table.record(keys[index], now: 1) == .crossed { crossings += 1 }
                        index += 1
                        if index == keys.count { index = 0 }
                    }
                } else {
                    for _ in 0..<operations {
                        if pc_reference_table_record(referenceTable, keys[index].high, keys[index].low, 1) == 1 {
                            crossings += 1
                        }
                        index += 1
                        if index == keys.count { index = 0 }
                    }
                }
            }
            blackHole(UInt64(crossings))
        }
        return Double(threads * operations) / (SystemClock.monotonicSeconds() - start)
    }
}

/// Keeps a value alive so the optimizer cannot drop the work that made it.
@inline(never)
func blackHole(_ value: UInt64) {
    if value == 0x5eed_5eed_5eed_5eed { print("") }
}

/// Bans per second: one bpf_map_update_elem per address next to bpf_map_update_batch.
func banInstallationRates(
    objectPath: String, bans: Int, batchSize: Int, rounds: Int, suite: String
) throws
    -> [Measurement]
{
    let filter = try LoadedProgram(filterAt: objectPath, pinDirectory: nil)
    let maps = filter.maps!
    let end = BanExpiry.after(seconds: 3600)!
    let families: [(String, [BanRequest])] = [
        ("IPv4", (0..<bans).map { BanRequest(benchmarkIPv4($0), end) }),
        ("IPv6", (0..<bans).map { BanRequest(benchmarkIPv6(group: 2, index: $0), end) }),
    ]
    return try families.flatMap { family, requests in
        let addresses = requests.map(\.address)
        var single: [Double] = []
        var batched: [Double] = []
        var keeping: [Double] = []
        for _ in 0..<rounds {
            var start = SystemClock.monotonicSeconds()
            for request in requests { try maps.insert(request) }
            single.append(Double(requests.count) / (SystemClock.monotonicSeconds() - start))
            try maps.unban(batch: addresses)

            start = SystemClock.monotonicSeconds()
            for first in stride(from: 0, to: requests.count, by: batchSize) {
                try maps.ban(batch: Array(requests[first..<min(first + batchSize, requests.count)]))
            }
            batched.append(Double(requests.count) / (SystemClock.monotonicSeconds() - start))
            try maps.unban(batch: addresses)

            // The daemon's way: never shortening a ban already there (BPF_NOEXIST per ban).
            start = SystemClock.monotonicSeconds()
            for first in stride(from: 0, to: requests.count, by: batchSize) {
                _ = maps.banKeepingLonger(batch: Array(requests[first..<min(first + batchSize, requests.count)]))
            }
            keeping.append(Double(requests.count) / (SystemClock.monotonicSeconds() - start))
            try maps.unban(batch: addresses)
        }
        return [
            Measurement(
                suite: suite, name: "bans installed \(family) batched (\(batchSize)/call)",
                unit: "bans/s", value: median(batched), reference: "one update per ban",
                referenceValue: median(single), rounds: rounds,
                ratio: median(zip(batched, single).map { $0 / $1 })),
            Measurement(
                suite: suite, name: "bans installed \(family) never shortening (BPF_NOEXIST each)",
                unit: "bans/s", value: median(keeping), reference: "batched",
                referenceValue: median(batched), rounds: rounds,
                ratio: median(zip(keeping, batched).map { $0 / $1 })),
        ]
    }
}

/// What can scan a line: the built-in scanner and a failregex matcher.
protocol Scanning {
    func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome
}
extension LineScanner: Scanning {}
extension FailRegex.Matcher: Scanning {}
