// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// Suite `crowdsec-scale`: the real daemon's memory for a large CrowdSec answer. A stand-in Local
/// API (python3, on 127.0.0.1 of a scratch namespace) answers an empty full pull; once the daemon
/// is idle its resident size is read and its peak reset (`clear_refs` 5); then the stand-in
/// answers `--decisions` decisions (`crowdSecAnswer`, as the `xdp` rows' answer) by a delta, or
/// by a full pull (a 503 first: a failed pull makes the next one full), and the peak is read once
/// every decision is in the maps. Per way: the peak over idle against the answer's size, and the
/// seconds from the answer's first byte sent to the last entry in the maps against batched exact
/// bans of as many, here.
struct CrowdSecScaleSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crowdsec-scale",
        abstract: "portcullisd's peak RSS over idle and time to enforce for 100,000 CrowdSec decisions.",
        discussion: """
            Needs root and python3. Creates a network namespace pcm<pid> with a veth pair (the daemon's \
            interface), a pin directory /sys/fs/bpf/pcmem-<pid> and a scratch directory, all removed at \
            the end, also on failure.
            """)

    @OptionGroup var options: HarnessOptions

    @Option(help: "Decisions in the answer (10...131068).")
    var decisions = 100_000

    @Option(help: "Path of portcullisd (default: beside this program).")
    var daemon: String?

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Directory for the scratch files.")
    var scratch = "/tmp"

    func validate() throws {
        if !(10...131_068).contains(decisions) { throw ValidationError("--decisions must be 10...131068") }
    }

    func run() throws {
        try runSuite(options, pinMeasuringThread: false) { try measure() }
    }

    func measure() throws -> [Measurement] {
        guard getuid() == 0 else { throw MeasurementError(description: "needs root (a namespace, XDP, BPF pins)") }
        let answer = crowdSecAnswer(offset: 0, count: decisions)
        let object = try BPFObjectLocator().locate(explicit: bpfObject)
        let daemonPath = daemon ?? Bundle.main.executableURL!.deletingLastPathComponent().path + "/portcullisd"
        guard FileManager.default.isExecutableFile(atPath: daemonPath) else {
            throw MeasurementError(description: "no \(daemonPath): build it (tools/build release) or give --daemon")
        }
        var peaks: [String: [Double]] = [:]
        var idles: [String: [Double]] = [:]
        var highs: [String: [Double]] = [:]
        var times: [String: [Double]] = [:]
        var batched: [Double] = []
        for round in 0..<options.rounds {
            for way in round % 2 == 0 ? ["full", "delta"] : ["delta", "full"] {
                let run = ScaleRun(
                    way: way, answer: answer, decisions: decisions, daemon: daemonPath, object: object,
                    scratch: scratch)
                let (idle, high, seconds) = try run.run()
                idles[way, default: []].append(idle)
                highs[way, default: []].append(high)
                peaks[way, default: []].append(high - idle)
                times[way, default: []].append(seconds)
            }
            batched.append(try batchedExactBans(object: object))
        }
        let megabytes = Double(answer.count) / 1e6
        return ["full", "delta"].flatMap { way -> [Measurement] in
            let how = way == "full" ? "by a full pull" : "by a delta"
            return [
                Measurement(
                    suite: "crowdsec", name: "portcullisd, \(decisions) decisions \(how): VmRSS idle before",
                    unit: "MB", value: median(idles[way]!), reference: "VmHWM once they are enforced",
                    referenceValue: median(highs[way]!), rounds: options.rounds),
                Measurement(
                    suite: "crowdsec", name: "portcullisd, \(decisions) decisions \(how): peak RSS over idle",
                    unit: "MB", value: median(peaks[way]!), reference: "the answer's size", referenceValue: megabytes,
                    rounds: options.rounds),
                Measurement(
                    suite: "crowdsec", name: "portcullisd, \(decisions) decisions \(how): answered to enforced",
                    unit: "s", value: median(times[way]!), reference: "batched exact bans, as many, here",
                    referenceValue: median(batched), rounds: options.rounds),
            ]
        }
    }

    /// Seconds to put as many exact bans in private maps, 8,192 a call.
    private func batchedExactBans(object: String) throws -> Double {
        let filter = try LoadedProgram(filterAt: object, pinDirectory: nil)
        let maps = filter.maps!
        let end = BanExpiry.after(seconds: 3600)!
        let exact = (0..<decisions).map { BanRequest(benchmarkIPv6(group: 4, index: $0), end) }
        let start = SystemClock.monotonicSeconds()
        for first in stride(from: 0, to: exact.count, by: 8192) {
            try maps.ban(batch: Array(exact[first..<min(first + 8192, exact.count)]))
        }
        return SystemClock.monotonicSeconds() - start
    }
}

/// One daemon, one way: set up, measured, taken down (also on failure).
private final class ScaleRun {
    let way: String
    let answer: [UInt8]
    let decisions: Int
    let daemonPath: String
    let object: String
    let tag: String
    let directory: String
    let namespace: String
    let pins: String
    var namespaceMade = false
    var children: [Child] = []
    static let port = 8090
    nonisolated(unsafe) static var runNumber = 0

    init(way: String, answer: [UInt8], decisions: Int, daemon: String, object: String, scratch: String) {
        Self.runNumber += 1
        self.way = way
        self.answer = answer
        self.decisions = decisions
        daemonPath = daemon
        self.object = object
        tag = "pcmem-\(getpid())-\(Self.runNumber)"
        directory = scratch + "/" + tag
        namespace = "pcm\(getpid())"
        pins = "/sys/fs/bpf/" + tag
    }

    /// - Returns: the resident size idle and the peak (MB), and the seconds from answered to enforced.
    func run() throws -> (idle: Double, peak: Double, seconds: Double) {
        defer { tearDown() }
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        try Data(answer).write(to: URL(fileURLWithPath: directory + "/answer.json"))
        try makeNetwork()
        try stub().write(toFile: directory + "/stub.py", atomically: true, encoding: .utf8)
        children.append(
            try Child(
                "the stand-in Local API", ["/usr/bin/python3", directory + "/stub.py"], namespace: namespace,
                log: directory + "/stub.log"))
        try """
        [jail.app]
        source = "file:\(directory)/app.log"

        [crowdsec]
        api_url = "http://127.0.0.1:\(Self.port)/"
        api_key = "stand-in"
        update_frequency = "1s"

        """.write(toFile: directory + "/scale.toml", atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: directory + "/app.log", contents: nil)
        let daemon = try Child(
            "portcullisd",
            [
                daemonPath, "--config", directory + "/scale.toml", "--interface", namespace + "a", "--pin-dir", pins,
                "--bpf-object", object, "--control", directory + "/control.sock", "--state-dir",
                directory + "/state", "--ready-file", directory + "/ready.json",
            ], namespace: namespace, log: directory + "/daemon.log")
        children.append(daemon)
        try wait(for: "the daemon's empty full pull", daemon, within: 60) {
            FileManager.default.fileExists(atPath: self.directory + "/pulled")
                && FileManager.default.fileExists(atPath: self.directory + "/ready.json")
        }
        SystemClock.sleep(nanoseconds: 3_000_000_000)  // its start's work is not idle
        let idle = try status(daemon.pid, "VmRSS")
        try "5".write(toFile: "/proc/\(daemon.pid)/clear_refs", atomically: false, encoding: .utf8)
        let maps = try BanMaps.open(pinnedIn: PinDirectory(pins))
        _ = FileManager.default.createFile(atPath: directory + "/flag", contents: nil)
        try wait(for: "\(decisions) decisions in the maps", daemon, within: 120, every: 0.1) {
            (try? maps.listEntries().count) == self.decisions
        }
        let enforced = SystemClock.monotonicSeconds()
        let peak = try status(daemon.pid, "VmHWM")
        let served = try String(contentsOfFile: directory + "/served", encoding: .utf8)
        guard let start = Double(served.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw MeasurementError(description: "the stand-in wrote no time it answered: '\(served)'")
        }
        daemon.stop(SIGTERM, grace: 30)
        guard daemon.process.terminationStatus == 0 else {
            throw MeasurementError(description: "portcullisd exited \(daemon.process.terminationStatus): \(tail())")
        }
        return (Double(idle) * 1024 / 1e6, Double(peak) * 1024 / 1e6, enforced - start)
    }

    /// The stand-in: an empty full pull (then `pulled`), empty deltas until `flag` appears; then the
    /// answer by the next pull (`delta`), or by the full pull after a 503 (`full`), its time
    /// (CLOCK_MONOTONIC, as this process reads it) written to `served` first.
    func stub() -> String {
        """
        import http.server, os, time
        directory = "\(directory)"
        way = "\(way)"
        answer = open(directory + "/answer.json", "rb").read()
        state = {"refused": False, "answered": False}
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                full = "startup=true" in self.path
                body = b'{"new": null, "deleted": null}'
                if os.path.exists(directory + "/flag") and not state["answered"]:
                    if way == "full" and not state["refused"]:
                        state["refused"] = True
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if way == "delta" or full:
                        state["answered"] = True
                        with open(directory + "/served.tmp", "w") as f:
                            f.write(str(time.monotonic()))
                        os.rename(directory + "/served.tmp", directory + "/served")
                        body = answer
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if not os.path.exists(directory + "/pulled"):
                    open(directory + "/pulled", "w").close()
            def log_message(self, *args):
                pass
        http.server.HTTPServer(("127.0.0.1", \(Self.port)), Handler).serve_forever()
        """
    }

    func makeNetwork() throws {
        namespaceMade = true
        for step in [
            ["netns", "add", namespace],
            ["-n", namespace, "link", "add", namespace + "a", "type", "veth", "peer", "name", namespace + "b"],
            ["-n", namespace, "link", "set", "lo", "up"], ["-n", namespace, "link", "set", namespace + "a", "up"],
            ["-n", namespace, "link", "set", namespace + "b", "up"],
        ] {
            let (status, output) = try runTool("/usr/sbin/ip", step)
            guard status == 0 else {
                throw MeasurementError(description: "ip \(step.joined(separator: " ")): \(output)")
            }
        }
    }

    /// A field of /proc/PID/status, in kB.
    func status(_ pid: pid_t, _ field: String) throws -> Int {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
            let value = Int(
                line.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces).split(separator: " ")[0])
        else { throw MeasurementError(description: "no \(field) in /proc/\(pid)/status") }
        return value
    }

    func wait(
        for what: String, _ daemon: Child, within seconds: Double, every interval: Double = 0.05,
        _ condition: () -> Bool
    ) throws {
        let deadline = SystemClock.monotonicSeconds() + seconds
        while !condition() {
            guard daemon.isRunning else { throw MeasurementError(description: "portcullisd exited: \(tail())") }
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(description: "\(what): not within \(Int(seconds)) s: \(tail())")
            }
            SystemClock.sleep(nanoseconds: UInt64(interval * 1e9))
        }
    }

    func tail() -> String {
        let text = (try? String(contentsOfFile: directory + "/daemon.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(6).joined(separator: " | ")
    }

    func tearDown() {
        for child in children.reversed() { child.stop(SIGTERM, grace: 10) }
        if namespaceMade { _ = try? runTool("/usr/sbin/ip", ["netns", "del", namespace]) }
        try? FileManager.default.removeItem(atPath: pins)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
