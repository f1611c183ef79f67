// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import PortcullisCore
import PortcullisSystem
import XDPFirewall

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the filter's counters (summed over all CPUs), once or as rates over time.",
        discussion: """
            dropped: packets from banned sources; passed: packets not banned (or not IP); expired: packets \
            passed because their ban had ended; malformed: packets passed that could not be parsed; allowed: \
            packets of a source in the driver's allowlist that a ban covers, passed all the same. Then the drops \
            by the origin of the ban (jail, manual, list, crowdsec, fleet, with the jail, list, CrowdSec origin \
            or fleet host) and the source's family, rows with drops only (JSON: dropped_by_origin, every origin). \
            With --watch, one line per sample with the rate of each counter since the previous sample, \
            until Ctrl-C or the --duration ends.
            """)

    @Flag(help: "Print JSON: one object with the totals, or with --watch one object per sample.")
    var json = false

    @Flag(help: "Keep sampling and print rates.")
    var watch = false

    @Option(help: ArgumentHelp("Milliseconds between samples with --watch.", valueName: "ms"))
    var interval: UInt32 = 100

    @Option(help: ArgumentHelp("Stop watching after this many seconds.", valueName: "seconds"))
    var duration: Double?

    @Option(
        help: ArgumentHelp(
            "Also write every sample to this CSV file: time,counter,total,rate.",
            valueName: "file"))
    var csv: String?

    @OptionGroup var pins: PinOptions

    func run() throws {
        try reportingErrors {
            if interval == 0 { throw UsageError("--interval must be at least 1 ms") }
            if let duration, !(duration > 0) { throw UsageError("--duration must be more than 0 seconds") }
            if duration != nil && !watch {
                throw UsageError("--duration needs --watch")
            }
            let maps = try BanMaps.open(pinnedIn: pins.directory)
            var writer = try csv.map { try CSVWriter(path: $0) }
            defer { writer?.close() }
            if !watch {
                let totals = try maps.counters()
                try writer?.write(time: 0, counters: totals, previous: nil, elapsed: 0)
                printTotals(totals, byOrigin: try maps.dropsByOrigin())
                return
            }
            try watchCounters(maps, writer: &writer)
        }
    }

    private func printTotals(_ totals: FilterCounters, byOrigin: [OriginDrops]) {
        let family = { (drops: OriginDrops) in drops.family == .ipv4 ? "ipv4" : "ipv6" }
        if json {
            var object = JSONObject()
            var bytes = JSONObject()
            for (name, count) in totals.named {
                object[name] = .unsigned(count.packets)
                bytes[name] = .unsigned(count.bytes)
            }
            object["bytes"] = .object(bytes)
            object["dropped_by_origin"] = .array(
                byOrigin.map { drops in
                    var row = JSONObject()
                    row["origin"] = .text(drops.kind.rawValue)
                    row["name"] = .text(drops.name)
                    row["family"] = .text(family(drops))
                    row["packets"] = .unsigned(drops.count.packets)
                    row["bytes"] = .unsigned(drops.count.bytes)
                    return .object(row)
                })
            printJSON(object)
            return
        }
        print("COUNTER        PACKETS            BYTES")
        for (name, count) in totals.named {
            print(
                name.padded(to: 10)
                    + String(count.packets).leftPadded(12) + String(count.bytes).leftPadded(17))
        }
        let dropping = byOrigin.filter { $0.count.packets > 0 }
        guard !dropping.isEmpty else { return }
        let width = max(8, dropping.map(\.name.count).max() ?? 0)
        func row(_ origin: String, _ name: String, _ family: String, _ packets: String, _ bytes: String) {
            print(
                origin.padded(to: 9) + name.padded(to: width + 1) + family.padded(to: 6) + packets.leftPadded(12)
                    + bytes.leftPadded(17))
        }
        print()
        row("ORIGIN", "NAME", "FAMILY", "DROPPED", "BYTES")
        for drops in dropping {
            row(
                drops.kind.rawValue, drops.name.isEmpty ? "-" : drops.name, family(drops),
                String(drops.count.packets), String(drops.count.bytes))
        }
    }

    private func watchCounters(_ maps: BanMaps, writer: inout CSVWriter?) throws {
        // Ctrl-C and SIGTERM end the watch: blocked here and awaited with sigtimedwait, which is
        // also the sleep between samples, so the last sample is always written whole.
        var signals = StopSignals()
        defer { signals.release() }

        let start = SystemClock.monotonicSeconds()
        var previous = try maps.counters()
        var previousTime = start
        if !json { print("      time   dropped/s    passed/s   expired/s malformed/s") }
        while true {
            let now = SystemClock.monotonicSeconds()
            var wait = Double(interval) / 1000 - (now - previousTime)
            if let duration { wait = min(wait, start + duration - now) }
            if wait > 0 && signals.arrived(waitingSeconds: wait) { break }
            let sampleTime = SystemClock.monotonicSeconds()
            let current = try maps.counters()
            let elapsed = sampleTime - previousTime
            try writer?.write(time: sampleTime - start, counters: current, previous: previous, elapsed: elapsed)
            printRates(time: sampleTime - start, current: current, previous: previous, elapsed: elapsed)
            previous = current
            previousTime = sampleTime
            if let duration, sampleTime - start >= duration { break }
        }
    }

    private func printRates(time: Double, current: FilterCounters, previous: FilterCounters, elapsed: Double) {
        let rates = zip(current.named, previous.named).map { now, before in
            (now.name, Double(now.count.packets &- before.count.packets) / max(elapsed, 1e-9))
        }
        if json {
            var object = JSONObject()
            object["time"] = .number((time * 1000).rounded() / 1000)
            for ((name, count), (_, rate)) in zip(current.named, rates) {
                object[name] = .unsigned(count.packets)
                object["\(name)_rate"] = .number(rate.rounded())
            }
            printJSON(object)
            return
        }
        print(time.fixed(3).leftPadded(10) + rates.map { $0.1.fixed(0).leftPadded(12) }.joined())
    }
}

func printJSON(_ object: JSONObject) {
    print(JSONOutput.line(object))
    fflush(nil)  // a watcher piping us wants every sample as it happens
}

/// Writes counter samples as CSV rows: time (seconds since the start), counter, total, rate (per second).
struct CSVWriter {
    private let fd: Int32

    init(path: String) throws {
        fd = try systemCall(
            { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666) },
            orThrow: { UsageError("cannot write CSV file \(path): \($0)") })
        try append("time,counter,total,rate\n")
    }

    /// Writes one sample's rows with one `write` (a watcher reading the file sees whole samples).
    func write(time: Double, counters: FilterCounters, previous: FilterCounters?, elapsed: Double) throws {
        var rows = ""
        for (index, (name, count)) in counters.named.enumerated() {
            var rate = ""
            if let previous, elapsed > 0 {
                rate = (Double(count.packets &- previous.named[index].count.packets) / elapsed).fixed(0)
            }
            rows += time.fixed(3) + ",\(name),\(count.packets),\(rate)\n"
        }
        try append(rows)
    }

    private func append(_ text: String) throws {
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            done += try bytes.withUnsafeBytes { buffer in
                try systemCall(
                    { Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done) },
                    orThrow: { UsageError("cannot write the CSV file: \($0); check the disk") })
            }
        }
    }

    func close() { Glibc.close(fd) }
}
