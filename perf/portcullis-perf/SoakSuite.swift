// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import CPortcullisNATS
import Foundation
import LogTransport
import PortcullisCore
import PortcullisSystem
import XDPFirewall

/// Suite `soak`: the daemon as a process, with every companion, under steady work for
/// `--seconds`, with what happens every few minutes in production (rotations, reloads, control
/// requests, scrapes, outages of NATS and of the Local API) at lowered intervals, and
/// `--status-interval` low so that the main loop's 2 s checks run 20-40 times as often: an hour
/// stands for weeks of them. It samples the daemon's descriptors, threads, resident memory and ban
/// map entries, and fails (exit status 1) on growth that does not level off: of the samples after
/// the warm-up (a third of the run), descriptors and threads by their trend (Theil and Sen's slope
/// times the span: more than 2 descriptors or 1 thread), memory by the last half's maximum above
/// the first half's (by more than 5% or 4 MiB, whichever is larger), ban map entries by the last
/// half's median above the first half's maximum (by more than a tenth and 16). Also when the work
/// stopped (no lines, bans or lifts in the last half), a scrape or a control request failed, or
/// the daemon exited. Not a
/// ratio: its report is the samples over time and the verdict.
struct SoakSuite: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract:
            "The daemon with every companion under steady lines, bans, expiries, rotations, reloads, control requests, scrapes and NATS and Local API outages: fails on descriptor, thread or memory growth that does not level off.",
        discussion: """
            Needs root, nats-server and crowdsec (tools/install-deps). Creates two network namespaces \
            (pcs<pid>s, pcs<pid>r) joined by a veth pair (198.18.0.0/24, 2001:2::/64), a pin directory \
            /sys/fs/bpf/pcsoak-<pid>, a shm segment /pcsoak-<pid> and a scratch directory; removes them, and \
            stops every process it started by its pid, however it ends (SIGINT ends the run early, with its verdict).
            """
    )

    @Flag(help: "Print one JSON object (samples, windows, verdict) instead of a table.")
    var json = false

    @Option(help: "Seconds the soak runs (an hour: the operator's run; CI runs 60).")
    var seconds = 3600.0

    @Option(help: "Seconds of warm-up left out of the verdict (default: a third of --seconds).")
    var warmUp: Double?

    @Option(help: "Seconds between samples (default: --seconds / 120, at least 0.5).")
    var sampleEvery: Double?

    @Option(help: "The daemon's --status-interval: its main loop, and the 2 s checks in it, turn this often.")
    var statusInterval = 0.05

    @Option(help: "Offence lines a second into each of the two jails' sources (a file and shm).")
    var rate = 200

    @Option(
        help:
            "Attackers per source (half IPv4, half IPv6), offending in turn: each is banned for 2 s every few seconds.")
    var attackers = 300

    @Option(help: "Seconds between rotations of the file source (default: --seconds / 12, 5 to 300).")
    var rotateEvery: Double?

    @Option(help: "Seconds between SIGHUP reloads (default: --seconds / 10, 5 to 300).")
    var reloadEvery: Double?

    @Option(help: "Seconds between control requests (status, list, ban, unban in turn).")
    var controlEvery = 1.0

    @Option(help: "Seconds between outages of NATS and of the Local API (default: --seconds / 4).")
    var outageEvery: Double?

    @Option(help: "Seconds each outage lasts (default: --seconds / 20, 3 to 60).")
    var outageSeconds: Double?

    @Option(help: "The daemon's soft descriptor limit (systemd's default for a unit without LimitNOFILE).")
    var nofile = 1024

    @Option(
        help: """
            Descriptors the trend may climb over the samples after the warm-up (the median slope between \
            every two samples times their span: a connection open at a few samples does not move it).
            """)
    var fdTolerance = 2

    @Option(help: "Threads the trend may climb over the samples after the warm-up (see --fd-tolerance).")
    var threadTolerance = 1

    @Option(
        help:
            "Resident memory the last half may rise above the first: the larger of this share and --rss-tolerance-mib.")
    var rssTolerance = 0.05

    @Option(help: "Resident memory the last half may rise above the first, in MiB (see --rss-tolerance).")
    var rssToleranceMib = 4.0

    @Option(help: "Path of portcullisd (default: beside this program).")
    var daemon: String?

    @Option(help: "Path of portcullis, the command line (default: beside this program).")
    var cli: String?

    @Option(help: "Path of portcullis.bpf.o.")
    var bpfObject: String?

    @Option(help: "Path of nats-server.")
    var natsServer = "/usr/sbin/nats-server"

    @Option(help: "Path of crowdsec (its cscli beside it).")
    var crowdsec = "/usr/bin/crowdsec"

    @Option(help: "Directory for the scratch directory.")
    var scratch = "/tmp"

    func validate() throws {
        if seconds < 20 { throw ValidationError("--seconds must be at least 20") }
        if let warmUp, warmUp < 0 || warmUp > seconds * 0.8 {
            throw ValidationError("--warm-up must be 0 to 80% of --seconds")
        }
        if let sampleEvery, sampleEvery < 0.1 { throw ValidationError("--sample-every must be at least 0.1") }
        if statusInterval <= 0 { throw ValidationError("--status-interval must be above 0") }
        if rate < 1 || rate > 100_000 { throw ValidationError("--rate must be 1...100000") }
        if attackers < 2 || attackers > 8_000 { throw ValidationError("--attackers must be 2...8000") }
        if controlEvery < 0.1 { throw ValidationError("--control-every must be at least 0.1") }
        if nofile < 64 { throw ValidationError("--nofile must be at least 64") }
        if fdTolerance < 0 || threadTolerance < 0 || rssTolerance < 0 || rssToleranceMib < 0 {
            throw ValidationError("the tolerances must be at least 0")
        }
    }

    var warmUpSeconds: Double { warmUp ?? seconds / 3 }
    var sampleSeconds: Double { sampleEvery ?? max(0.5, seconds / 120) }
    var rotateSeconds: Double { rotateEvery ?? min(max(seconds / 12, 5), 300) }
    var reloadSeconds: Double { reloadEvery ?? min(max(seconds / 10, 5), 300) }
    var outagePeriod: Double { outageEvery ?? seconds / 4 }
    var outageLength: Double { outageSeconds ?? min(max(seconds / 20, 3), 60) }

    func run() throws {
        let result: SoakResult
        do {
            result = try SoakRun(suite: self).run()
        } catch {
            FileHandle.standardError.write(Data("portcullis-perf soak: \(error)\n".utf8))
            throw ExitCode.failure
        }
        result.print(json: json)
        if !result.passed { throw ExitCode.failure }
    }
}

/// One sample of the daemon (from /proc and from one scrape of its metrics).
struct SoakSample: Encodable {
    var seconds: Double
    var fds: Int
    var bpfProgFds: Int
    var threads: Int
    var rssKiB: Int
    /// From the scrape (nil when it failed).
    var lines: Double?
    var bans: Double?
    var unbans: Double?
    var mapEntries: Double?
    var fleetConnected: Double?
    var crowdsecConnected: Double?

    enum CodingKeys: String, CodingKey {
        case seconds, fds, bpfProgFds = "bpf_prog_fds", threads, rssKiB = "rss_kib", lines, bans, unbans
        case mapEntries = "map_entries", fleetConnected = "fleet_connected", crowdsecConnected = "crowdsec_connected"
    }
}

/// One metric's verdict over the samples after the warm-up, by one of three rules (`Rule`).
struct SoakVerdict: Encodable {
    /// How a metric is judged.
    enum Rule: String, Encodable {
        /// The trend: the median of the slopes between every two samples (Theil and Sen's estimator)
        /// times the judged span must stay within the tolerance. For counts that are a level with
        /// momentary extras (descriptors and threads: a scrape's or a control request's connection
        /// and thread open at a sample): an extra at a few samples does not move the median slope,
        /// a leak of one per check, peer, rotation or reload does.
        case trend
        /// The last half's maximum against the first half's (memory: outages and reloads only pull a
        /// sample down, so the maximum is the level).
        case maximum
        /// The last half's median against the first half's maximum (ban map entries: they swing with
        /// 2 s bans and the companions' entries an outage holds back; a leak still climbs past the
        /// first half's maximum, a swing does not).
        case lastMedian = "last_median"
    }
    let metric: String
    let unit: String
    let rule: Rule
    let firstMedian: Double
    let lastMedian: Double
    let firstMax: Double
    let lastMax: Double
    /// The trend's growth over the judged span (Theil and Sen's slope times the span).
    let trendGrowth: Double
    /// How far the judged figure may rise.
    let tolerance: Double
    var growth: Double {
        switch rule {
        case .trend: trendGrowth
        case .maximum: lastMax - firstMax
        case .lastMedian: lastMedian - firstMax
        }
    }
    var passed: Bool { growth <= tolerance }

    enum CodingKeys: String, CodingKey {
        case metric, unit, rule, firstMedian = "first_half_median", lastMedian = "last_half_median"
        case firstMax = "first_half_max", lastMax = "last_half_max", trendGrowth = "trend_growth", growth
        case tolerance, passed
    }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(metric, forKey: .metric)
        try container.encode(unit, forKey: .unit)
        try container.encode(rule, forKey: .rule)
        try container.encode(firstMedian, forKey: .firstMedian)
        try container.encode(lastMedian, forKey: .lastMedian)
        try container.encode(firstMax, forKey: .firstMax)
        try container.encode(lastMax, forKey: .lastMax)
        try container.encode(trendGrowth, forKey: .trendGrowth)
        try container.encode(growth, forKey: .growth)
        try container.encode(tolerance, forKey: .tolerance)
        try container.encode(passed, forKey: .passed)
    }
}

/// Theil and Sen's slope of the points: the median of the slopes between every two of them with
/// different times (0 for fewer than two). A few outliers do not move it; a steady climb does.
func theilSenSlope(_ points: [(x: Double, y: Double)]) -> Double {
    var slopes: [Double] = []
    slopes.reserveCapacity(points.count * (points.count - 1) / 2)
    for i in points.indices {
        for j in points.indices where j > i && points[j].x != points[i].x {
            slopes.append((points[j].y - points[i].y) / (points[j].x - points[i].x))
        }
    }
    return slopes.isEmpty ? 0 : median(slopes)
}

struct SoakResult: Encodable {
    let suite = "soak"
    var seconds: Double
    var warmUp: Double
    var statusInterval: Double
    var samples: [SoakSample]
    var verdicts: [SoakVerdict]
    /// What the soak did (its own counts) and what the daemon counted over the run.
    var activity: [String: Double]
    /// Failures that are not growth (the daemon died, the work stopped), one line each.
    var problems: [String]
    var passed: Bool { problems.isEmpty && verdicts.allSatisfy(\.passed) }

    enum CodingKeys: String, CodingKey {
        case suite, seconds, warmUp = "warm_up", statusInterval = "status_interval", samples, verdicts, activity
        case problems, passed
    }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(suite, forKey: .suite)
        try container.encode(seconds, forKey: .seconds)
        try container.encode(warmUp, forKey: .warmUp)
        try container.encode(statusInterval, forKey: .statusInterval)
        try container.encode(samples, forKey: .samples)
        try container.encode(verdicts, forKey: .verdicts)
        try container.encode(activity, forKey: .activity)
        try container.encode(problems, forKey: .problems)
        try container.encode(passed, forKey: .passed)
    }

    func print(json: Bool) {
        if json {
            Swift.print(JSONOutput.line(self))
            return
        }
        func cell(_ value: Double?) -> String {
            (value.map { String(format: "%.0f", $0) } ?? "-").leftPadded(10)
        }
        Swift.print("       s       fds  bpf-prog   threads   RSS KiB     lines      bans    unbans  map ents")
        // About 24 rows whatever the run's length; every sample is in --json.
        let step = max(1, samples.count / 24)
        for (index, sample) in samples.enumerated() where index % step == 0 || index == samples.count - 1 {
            Swift.print(
                String(format: "%8.1f", sample.seconds) + cell(Double(sample.fds)) + cell(Double(sample.bpfProgFds))
                    + cell(Double(sample.threads)) + cell(Double(sample.rssKiB)) + cell(sample.lines)
                    + cell(sample.bans) + cell(sample.unbans) + cell(sample.mapEntries))
        }
        Swift.print(
            "activity: "
                + activity.sorted { $0.key < $1.key }.map { "\($0.key) \(Int($0.value))" }.joined(separator: ", "))
        Swift.print(
            "after \(Int(warmUp)) s of warm-up: each half's maximum and median, the trend over the rest, and what is judged:"
        )
        for verdict in verdicts {
            func number(_ value: Double) -> String { String(format: "%.0f", value) }
            let judged =
                switch verdict.rule {
                case .trend: "the trend"
                case .maximum: "the maxima"
                case .lastMedian: "the last median against the first maximum"
                }
            Swift.print(
                "  \(verdict.metric) (\(verdict.unit)): max \(number(verdict.firstMax)) → \(number(verdict.lastMax)), "
                    + "medians \(number(verdict.firstMedian)) → \(number(verdict.lastMedian)), trend "
                    + String(format: "%+.1f", verdict.trendGrowth) + "; \(judged): "
                    + String(format: "%+.1f", verdict.growth) + ", allowed \(number(verdict.tolerance)): "
                    + (verdict.passed ? "level" : "GROWS"))
        }
        for problem in problems { Swift.print("  problem: \(problem)") }
        Swift.print("soak: \(passed ? "passed" : "FAILED") (\(Int(seconds)) s, --status-interval \(statusInterval))")
    }
}

/// SIGINT or SIGTERM asked the soak to end early (it still reports and cleans up).
nonisolated(unsafe) private var soakStopRequested: Int32 = 0

/// A process the soak started, stopped by its pid (and killed with the soak should it die first:
/// setpriv's parent-death signal, kept across the execs that follow it).
final class Child {
    let name: String
    let process = Process()
    private var log: FileHandle?

    /// `arguments[0]` is the program; `namespace` runs it there (network namespace only).
    init(_ name: String, _ arguments: [String], namespace: String?, log path: String?, nofile: Int? = nil) throws {
        self.name = name
        var command = ["--pdeathsig", "KILL", "--"]
        if let nofile {
            // The soft limit; the hard one stays this process's (raising it needs more than root here).
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            command += [
                "/usr/bin/prlimit", "--nofile=\(min(UInt64(nofile), UInt64(limit.rlim_max))):\(limit.rlim_max)", "--",
            ]
        }
        if let namespace { command += ["/usr/bin/nsenter", "--net=/run/netns/\(namespace)", "--"] }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        process.arguments = command + arguments
        process.standardInput = FileHandle.nullDevice
        if let path {
            FileManager.default.createFile(atPath: path, contents: nil)
            log = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            log!.seekToEndOfFile()
            process.standardOutput = log
            process.standardError = log
        } else {
            log = nil
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        do {
            try process.run()
        } catch {
            throw MeasurementError(description: "cannot start \(name) (\(arguments[0])): \(error)")
        }
    }

    var pid: pid_t { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    /// `signal`, then SIGKILL after `grace` seconds; waits for the exit.
    func stop(_ signal: Int32 = SIGTERM, grace: Double = 10) {
        if process.isRunning {
            kill(pid, signal)
            let deadline = SystemClock.monotonicSeconds() + grace
            while process.isRunning && SystemClock.monotonicSeconds() < deadline { usleep(10_000) }
            if process.isRunning { kill(pid, SIGKILL) }
        }
        process.waitUntilExit()
        try? log?.close()
        log = nil
    }
}

/// Runs a program to its end. - Returns: its exit status and standard output and error.
@discardableResult
func runTool(_ path: String, _ arguments: [String], namespace: String? = nil) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: namespace == nil ? path : "/usr/bin/nsenter")
    process.arguments = namespace == nil ? arguments : ["--net=/run/netns/\(namespace!)", "--", path] + arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// One soak: sets everything up, drives and samples for `seconds`, takes everything down.
private final class SoakRun {
    let suite: SoakSuite
    let tag: String
    let directory: String
    let sender: String
    let receiver: String
    let pins: String
    let shmName: String
    var logPath: String { directory + "/soak.log" }
    var control: String { directory + "/control.sock" }
    var ready: String { directory + "/ready.json" }
    let natsPort = 4222
    let lapiPort = 8080
    var namespacesMade = false
    var children: [Child] = []
    var nats: Child?
    var lapi: Child?
    var daemon: Child?
    var counts: [String: Double] = [:]

    init(suite: SoakSuite) {
        self.suite = suite
        tag = "pcsoak-\(getpid())"
        directory = suite.scratch + "/" + tag
        sender = "pcs\(getpid())s"
        receiver = "pcs\(getpid())r"
        pins = "/sys/fs/bpf/" + tag
        shmName = "/" + tag
    }

    func run() throws -> SoakResult {
        guard getuid() == 0 else {
            throw MeasurementError(description: "needs root (namespaces, XDP, BPF pins): run it with sudo")
        }
        let binaries = Bundle.main.executableURL!.deletingLastPathComponent().path
        let daemonPath = suite.daemon ?? binaries + "/portcullisd"
        let cliPath = suite.cli ?? binaries + "/portcullis"
        let cscli = (suite.crowdsec as NSString).deletingLastPathComponent + "/cscli"
        for (path, what) in [
            (daemonPath, "portcullisd: build it (swift build -c release) or give --daemon"),
            (cliPath, "portcullis: build it or give --cli"), (suite.natsServer, "nats-server: tools/install-deps"),
            (suite.crowdsec, "crowdsec: tools/install-deps"), (cscli, "cscli: tools/install-deps"),
        ] where !FileManager.default.isExecutableFile(atPath: path) {
            throw MeasurementError(description: "no \(path) (\(what))")
        }
        let object = try BPFObjectLocator().locate(explicit: suite.bpfObject)
        signal(SIGINT) { _ in soakStopRequested = 1 }
        signal(SIGTERM) { _ in soakStopRequested = 1 }
        defer { tearDown() }
        try FileManager.default.createDirectory(atPath: directory + "/state", withIntermediateDirectories: true)
        try makeNetwork()
        nats = try startNATS()
        let key = try prepareLAPI(cscli: cscli)
        lapi = try startLAPI()
        try waitListening(lapiPort, "the Local API (crowdsec)", lapi!)
        try waitListening(natsPort, "nats-server", nats!)
        try configuration(key: key).write(toFile: directory + "/soak.toml", atomically: true, encoding: .utf8)
        let created = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard created >= 0 else { throw MeasurementError(description: "create \(logPath): errno \(errno)") }
        var file = created
        defer { close(file) }
        var shmTransport = TransportConfiguration(kind: .shm)
        shmTransport.shm.name = shmName
        let daemon = try Child(
            "portcullisd",
            [
                daemonPath, "--config", directory + "/soak.toml", "--interface", receiver, "--pin-dir", pins,
                "--bpf-object", object, "--control", control, "--state-dir", directory + "/state", "--ready-file",
                ready, "--metrics", "127.0.0.1:0", "--status-interval", String(suite.statusInterval),
                "--syslog-socket", directory + "/syslog.sock", "--ban-log", directory + "/bans.log",
            ], namespace: receiver, log: directory + "/daemon.log", nofile: suite.nofile)
        self.daemon = daemon
        children.append(daemon)
        try waitReady(daemon)
        let metricsURL = try readMetricsURL()
        let shm = try shmTransport.makeWriter()
        defer { shm.close() }
        children.append(try startSender())

        var samples: [SoakSample] = []
        var problems: [String] = []
        let start = SystemClock.monotonicSeconds()
        var written = (file: 0, shm: 0)
        var next = (
            sample: 0.0, rotate: suite.rotateSeconds, reload: suite.reloadSeconds, control: suite.controlEvery
        )
        var controlTurn = 0
        var outageEvents = outageSchedule()
        let stamp = UTCTime(secondsSinceEpoch: 1_795_718_566)
        while soakStopRequested == 0 {
            let now = SystemClock.monotonicSeconds() - start
            if now >= suite.seconds { break }
            guard daemon.isRunning else {
                problems.append("the daemon exited (status \(daemon.process.terminationStatus)): \(daemonTail())")
                break
            }
            // Lines: each source at `rate`, the attackers in turn, one line in four not an offence.
            let due = Int(now * Double(suite.rate))
            if due > written.file {
                var text = ""
                for index in written.file..<due { text += line(index, base: 0, stamp: stamp) }
                _ = text.utf8CString.withUnsafeBufferPointer { write(file, $0.baseAddress, $0.count - 1) }
                written.file = due
            }
            if due > written.shm {
                let batch = LineBatch(byteCapacity: (due - written.shm) * 96 + 96, lineCapacity: due - written.shm + 1)
                for index in written.shm..<due {
                    _ = batch.append(String(line(index, base: 1, stamp: stamp).dropLast()))
                }
                _ = try? shm.publish(batch)
                written.shm = due
            }
            if now >= next.rotate {
                // logrotate's way: the file moved aside, a new one made; the older one removed.
                unlink(logPath + ".1")
                rename(logPath, logPath + ".1")
                close(file)
                file = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
                guard file >= 0 else { throw MeasurementError(description: "create \(logPath): errno \(errno)") }
                counts["rotations", default: 0] += 1
                next.rotate += suite.rotateSeconds
            }
            if now >= next.reload {
                kill(daemon.pid, SIGHUP)
                counts["reloads", default: 0] += 1
                next.reload += suite.reloadSeconds
            }
            if now >= next.control {
                controlRequest(turn: controlTurn, cli: cliPath)
                controlTurn += 1
                next.control += suite.controlEvery
            }
            while let event = outageEvents.first, now >= event.at {
                outageEvents.removeFirst()
                try outage(event)
            }
            if now >= next.sample {
                samples.append(sample(daemon.pid, at: now, metrics: metricsURL))
                next.sample += suite.sampleSeconds
            }
            usleep(20_000)
        }
        counts["lines written", default: 0] = Double(written.file + written.shm)
        let elapsed = SystemClock.monotonicSeconds() - start
        if soakStopRequested != 0 { problems.append("stopped early by a signal after \(Int(elapsed)) s") }
        let verdicts = judge(samples, &problems)
        checkWork(samples, &problems)
        daemon.stop(SIGTERM, grace: 30)
        if daemon.process.terminationStatus != 0 && problems.isEmpty {
            problems.append("the daemon's stop: exit status \(daemon.process.terminationStatus): \(daemonTail())")
        }
        return SoakResult(
            seconds: elapsed, warmUp: suite.warmUpSeconds, statusInterval: suite.statusInterval, samples: samples,
            verdicts: verdicts, activity: counts, problems: problems)
    }

    /// Line `index` of a source (`base` 0: the file's attackers 198.18.64.0/18 and 2001:2:0:40::/64,
    /// 1: shm's 198.18.128.0/18 and 2001:2:0:80::/64), newline included.
    func line(_ index: Int, base: Int, stamp: UTCTime) -> String {
        let attacker = index % suite.attackers
        let number = attacker / 2 + 1
        let address =
            attacker % 2 == 0
            ? IPAddress(ipv4NetworkOrder: (UInt32(0xC612_4000 + base * 0x4000) + UInt32(number)).bigEndian)
            : IPAddress("2001:2:0:\(base == 0 ? "40" : "80")::\(String(number, radix: 16))")!
        if index % 4 == 3 { return "2026-12-07 10:00:00 client \(address) signed in\n" }
        return OffenceLine.text(time: stamp, address: address) + "\n"
    }

    func configuration(key: String) -> String {
        """
        [jail.file]
        source = "file:\(logPath)"
        maxretry = 3
        bantime = 2
        findtime = 0

        [jail.shm]
        source = "shm:\(shmName)"
        maxretry = 3
        bantime = 2
        findtime = 0

        [fleet]
        servers = ["nats://127.0.0.1:\(natsPort)"]
        host = "soak"
        reconnect_wait = 0.1

        [crowdsec]
        api_url = "http://127.0.0.1:\(lapiPort)/"
        api_key = "\(key)"
        update_frequency = "1s"
        resync_frequency = "10s"
        login = "portcullis-soak"
        password = "soak-password-\(getpid())"
        alert_decisions = true

        """
    }

    // MARK: The network, the companions, the daemon

    func makeNetwork() throws {
        // Namespaces of soaks that died before their cleanup.
        if let listed = try? runTool("/usr/sbin/ip", ["netns", "list"]) {
            for entry in listed.1.split(separator: "\n") {
                let name = String(entry.split(separator: " ").first ?? "")
                guard name.hasPrefix("pcs"), let pid = Int32(name.dropFirst(3).dropLast()) else { continue }
                if pid != getpid(), kill(pid, 0) != 0, errno == ESRCH {
                    _ = try? runTool("/usr/sbin/ip", ["netns", "del", name])
                }
            }
        }
        namespacesMade = true
        let senderMAC = "02:00:c6:12:00:01"
        let receiverMAC = "02:00:c6:12:00:fe"
        let steps: [[String]] = [
            ["netns", "add", sender], ["netns", "add", receiver],
            [
                "link", "add", sender, "address", senderMAC, "netns", sender, "type", "veth", "peer", "name", receiver,
                "address", receiverMAC, "netns", receiver,
            ],
            ["-n", sender, "addr", "add", "198.18.0.1/24", "dev", sender],
            ["-n", sender, "addr", "add", "198.18.0.2/24", "dev", sender],
            ["-n", sender, "addr", "add", "2001:2::1/64", "dev", sender, "nodad"],
            ["-n", receiver, "addr", "add", "198.18.0.254/24", "dev", receiver],
            ["-n", receiver, "addr", "add", "2001:2::fe/64", "dev", receiver, "nodad"],
            ["-n", sender, "link", "set", "lo", "up"], ["-n", sender, "link", "set", sender, "up"],
            ["-n", receiver, "link", "set", "lo", "up"], ["-n", receiver, "link", "set", receiver, "up"],
            ["-n", sender, "neigh", "add", "198.18.0.254", "lladdr", receiverMAC, "dev", sender, "nud", "permanent"],
            ["-n", sender, "neigh", "add", "2001:2::fe", "lladdr", receiverMAC, "dev", sender, "nud", "permanent"],
        ]
        for step in steps {
            let (status, output) = try runTool("/usr/sbin/ip", step)
            guard status == 0 else {
                throw MeasurementError(description: "ip \(step.joined(separator: " ")): \(output)")
            }
        }
    }

    func startNATS() throws -> Child {
        let child = try Child(
            "nats-server",
            [
                suite.natsServer, "-js", "-a", "127.0.0.1", "-p", String(natsPort), "-sd", directory + "/nats",
            ], namespace: receiver, log: directory + "/nats.log")
        children.append(child)
        return child
    }

    /// A scratch Local API (SQLite, no Central API, no hub, no agent), as Tests/TestSupport's
    /// CrowdSecLAPI makes it; its profile makes no decisions of its own (the alerts carry the
    /// daemon's). - Returns: the bouncer's key.
    func prepareLAPI(cscli: String) throws -> String {
        let home = directory + "/crowdsec"
        for sub in ["", "/data", "/hub"] {
            try FileManager.default.createDirectory(atPath: home + sub, withIntermediateDirectories: true)
        }
        try """
        common:
          daemonize: false
          log_media: file
          log_dir: \(home)/
          log_level: warning
        config_paths:
          config_dir: \(home)/
          data_dir: \(home)/data/
          simulation_path: \(home)/simulation.yaml
          hub_dir: \(home)/hub/
          index_path: \(home)/hub/.index.json
          notification_dir: \(home)/notifications/
          plugin_dir: /usr/lib/crowdsec/plugins/
        cscli:
          output: human
        db_config:
          type: sqlite
          db_path: \(home)/data/crowdsec.db
          use_wal: true
        api:
          client:
            credentials_path: \(home)/local_api_credentials.yaml
          server:
            listen_uri: 127.0.0.1:\(lapiPort)
            profiles_path: \(home)/profiles.yaml
            trusted_ips: ["127.0.0.1", "::1"]
        prometheus:
          enabled: false
        """.write(toFile: home + "/config.yaml", atomically: true, encoding: .utf8)
        try """
        name: none
        filters:
         - Alert.GetScope() == "none"
        on_success: break
        """.write(toFile: home + "/profiles.yaml", atomically: true, encoding: .utf8)
        try "simulation: false\n".write(toFile: home + "/simulation.yaml", atomically: true, encoding: .utf8)
        try "{}\n".write(toFile: home + "/hub/.index.json", atomically: true, encoding: .utf8)
        let config = home + "/config.yaml"
        let (added, addedText) = try runTool(
            cscli,
            [
                "-c", config, "machines", "add", "portcullis-soak", "--password", "soak-password-\(getpid())", "-f",
                "/dev/null", "--force",
            ])
        guard added == 0 else { throw MeasurementError(description: "cscli machines add: \(addedText)") }
        let (status, key) = try runTool(cscli, ["-c", config, "bouncers", "add", "portcullis-soak", "-o", "raw"])
        let trimmed = key.trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, !trimmed.isEmpty, !trimmed.contains(" ") else {
            throw MeasurementError(description: "cscli bouncers add: \(key)")
        }
        return trimmed
    }

    func startLAPI() throws -> Child {
        let home = directory + "/crowdsec"
        let child = try Child(
            "crowdsec", [suite.crowdsec, "-c", home + "/config.yaml", "-no-cs"], namespace: receiver,
            log: home + "/stdout.log")
        children.append(child)
        return child
    }

    /// Waits until `port` on the receiver's loopback accepts a connection.
    func waitListening(_ port: Int, _ what: String, _ child: Child) throws {
        let deadline = SystemClock.monotonicSeconds() + 60
        while SystemClock.monotonicSeconds() < deadline {
            let (status, _) = try runTool(
                "/bin/bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/\(port)"], namespace: receiver)
            if status == 0 { return }
            guard child.isRunning else { break }
            usleep(100_000)
        }
        throw MeasurementError(description: "\(what) did not listen on 127.0.0.1:\(port) within 60 s")
    }

    func waitReady(_ daemon: Child) throws {
        let deadline = SystemClock.monotonicSeconds() + 90
        while !FileManager.default.fileExists(atPath: ready) {
            guard daemon.isRunning else {
                throw MeasurementError(description: "the daemon exited at its start: \(daemonTail())")
            }
            guard SystemClock.monotonicSeconds() < deadline else {
                throw MeasurementError(description: "the daemon did not write \(ready) within 90 s: \(daemonTail())")
            }
            usleep(50_000)
        }
    }

    func readMetricsURL() throws -> String {
        let text = (try? String(contentsOfFile: ready, encoding: .utf8)) ?? ""
        guard let match = text.firstMatch(of: /"metrics":"(http:[^"]+)"/) else {
            throw MeasurementError(description: "no metrics URL in \(ready): \(text)")
        }
        return String(match.1).replacingOccurrences(of: "\\/", with: "/")
    }

    /// UDP from the sender namespace to the receiver, 100 datagrams a second from each of
    /// 198.18.0.1 (which the control requests ban and unban) and 198.18.0.2.
    func startSender() throws -> Child {
        let script = """
            import socket, time
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("198.18.0.1", 0))
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(("198.18.0.2", 0))
            while True:
                a.sendto(b"S", ("198.18.0.254", 9)); b.sendto(b"S", ("198.18.0.254", 9)); time.sleep(0.01)
            """
        return try Child("the UDP sender", ["/usr/bin/python3", "-c", script], namespace: sender, log: nil)
    }

    func daemonTail() -> String {
        let text = (try? String(contentsOfFile: directory + "/daemon.log", encoding: .utf8)) ?? ""
        // Its last lines but the status lines (`status: …, lines …`).
        let errors = text.split(separator: "\n").filter {
            !$0.hasPrefix("status:") && !$0.hasPrefix("portcullisd: status:")
        }
        return errors.suffix(6).joined(separator: " | ")
    }

    // MARK: Driving

    /// status, list, ban 198.18.0.1 for 3 s, unban it: one a turn, through the command line.
    func controlRequest(turn: Int, cli: String) {
        let arguments: [String]
        switch turn % 4 {
        case 0: arguments = ["status", "--control", control]
        case 1: arguments = ["list", "--json", "--control", control, "--pin-dir", pins]
        case 2: arguments = ["ban", "198.18.0.1", "--for", "3", "--control", control, "--pin-dir", pins]
        default: arguments = ["unban", "198.18.0.1", "--control", control, "--pin-dir", pins]
        }
        let status = (try? runTool(cli, arguments))?.0 ?? -1
        counts["control requests", default: 0] += 1
        // `status` exits 2 when it answers DEGRADED, as it should while the soak holds the Local API
        // or NATS down (a companion down): answered, and counted apart.
        if turn % 4 == 0 && status == 2 {
            counts["control status degraded", default: 0] += 1
        } else if status != 0 {
            counts["control requests failed", default: 0] += 1
        }
    }

    struct OutageEvent {
        let at: Double
        let nats: Bool
        let up: Bool
    }

    /// Every `outagePeriod`: NATS down at a quarter of it, the Local API at three quarters, each
    /// back `outageLength` later; none that would end in the run's last 2 s.
    func outageSchedule() -> [OutageEvent] {
        var events: [OutageEvent] = []
        var base = 0.0
        while base < suite.seconds {
            for (offset, nats) in [(0.25, true), (0.75, false)] {
                let down = base + suite.outagePeriod * offset
                if down + suite.outageLength < suite.seconds - 2 {
                    events.append(OutageEvent(at: down, nats: nats, up: false))
                    events.append(OutageEvent(at: down + suite.outageLength, nats: nats, up: true))
                }
            }
            base += suite.outagePeriod
        }
        return events.sorted { $0.at < $1.at }
    }

    func outage(_ event: OutageEvent) throws {
        if event.nats {
            if event.up {
                nats = try startNATS()
            } else {
                nats?.stop(SIGKILL)
                counts["NATS outages", default: 0] += 1
            }
        } else {
            if event.up {
                lapi = try startLAPI()
            } else {
                lapi?.stop(SIGTERM, grace: 10)
                counts["Local API outages", default: 0] += 1
            }
        }
    }

    func sample(_ pid: pid_t, at seconds: Double, metrics url: String) -> SoakSample {
        let fdDirectory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? []
        let bpfProg = entries.filter {
            (try? FileManager.default.destinationOfSymbolicLink(atPath: fdDirectory + "/" + $0))
                == "anon_inode:bpf-prog"
        }.count
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Int {
            for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
                return Int(line.dropFirst(name.count + 1).split(whereSeparator: \.isWhitespace).first ?? "") ?? 0
            }
            return 0
        }
        var result = SoakSample(
            seconds: seconds, fds: entries.count, bpfProgFds: bpfProg, threads: field("Threads"),
            rssKiB: field("VmRSS"))
        counts["scrapes", default: 0] += 1
        guard
            let scraped = try? runTool("/usr/bin/curl", ["-sS", "--max-time", "5", url], namespace: receiver),
            scraped.0 == 0
        else {
            counts["scrapes failed", default: 0] += 1
            return result
        }
        let text = scraped.1
        func sum(_ series: String) -> Double? {
            var total: Double?
            for line in text.split(separator: "\n") where line.hasPrefix(series) {
                let rest = line.dropFirst(series.count)
                guard rest.first == "{" || rest.first == " ", let value = Double(rest.split(separator: " ").last ?? "")
                else { continue }
                total = (total ?? 0) + value
            }
            return total
        }
        result.lines = sum("portcullis_lines_total")
        result.bans = sum("portcullis_bans_total")
        result.unbans = sum("portcullis_unbans_total")
        result.mapEntries = sum("portcullis_ban_map_entries")
        result.fleetConnected = sum("portcullis_fleet_connected")
        result.crowdsecConnected = sum("portcullis_crowdsec_connected")
        for (name, series) in [
            ("daemon: fleet published", "portcullis_fleet_published_total"),
            ("daemon: fleet reconnects", "portcullis_fleet_reconnects_total"),
            ("daemon: crowdsec pulls", "portcullis_crowdsec_pulls_total"),
            ("daemon: crowdsec pull errors", "portcullis_crowdsec_pull_errors_total"),
            ("daemon: crowdsec alerts pushed", "portcullis_crowdsec_alerts_pushed_total"),
            ("daemon: reloads", "portcullis_reloads_total"),
            ("daemon: xdp dropped", "portcullis_xdp_packets_total{verdict=\"dropped\"}"),
        ] {
            if let value = sum(series) { counts[name] = value }
        }
        return result
    }

    // MARK: The verdict

    /// Each metric's verdict over the samples after the warm-up (`SoakVerdict.Rule`); the work itself
    /// must have gone on in the last half.
    func judge(_ samples: [SoakSample], _ problems: inout [String]) -> [SoakVerdict] {
        let after = samples.filter { $0.seconds >= suite.warmUpSeconds }
        guard after.count >= 4 else {
            problems.append("\(after.count) samples after the warm-up: too few to judge (run longer)")
            return []
        }
        let first = Array(after.prefix(after.count / 2))
        let last = Array(after.suffix(after.count - after.count / 2))
        let span = after.last!.seconds - after.first!.seconds
        func verdict(
            _ metric: String, _ unit: String, _ rule: SoakVerdict.Rule, _ value: (SoakSample) -> Double?,
            tolerance: (Double) -> Double
        ) -> SoakVerdict {
            let firstValues = first.compactMap(value)
            let lastValues = last.compactMap(value)
            let firstMax = firstValues.max() ?? 0
            let points = after.compactMap { sample in value(sample).map { (x: sample.seconds, y: $0) } }
            return SoakVerdict(
                metric: metric, unit: unit, rule: rule, firstMedian: firstValues.isEmpty ? 0 : median(firstValues),
                lastMedian: lastValues.isEmpty ? 0 : median(lastValues), firstMax: firstMax,
                lastMax: lastValues.max() ?? 0, trendGrowth: theilSenSlope(points) * span,
                tolerance: tolerance(firstMax))
        }
        let fds = Double(suite.fdTolerance)
        let threads = Double(suite.threadTolerance)
        let rss = { (level: Double) in max(level * self.suite.rssTolerance, self.suite.rssToleranceMib * 1024) }
        return [
            verdict("descriptors", "fds", .trend, { Double($0.fds) }) { _ in fds },
            // Which descriptors: the BPF programs' (libxdp's leak, N1) apart from the rest.
            verdict("BPF program descriptors", "fds", .trend, { Double($0.bpfProgFds) }) { _ in fds },
            verdict("other descriptors", "fds", .trend, { Double($0.fds - $0.bpfProgFds) }) { _ in fds },
            verdict("threads", "threads", .trend, { Double($0.threads) }) { _ in threads },
            verdict("resident memory", "KiB", .maximum, { Double($0.rssKiB) }, tolerance: rss),
            // A tenth and 16 entries for the swing's noise.
            verdict("ban map entries", "entries", .lastMedian, { $0.mapEntries }) { $0 * 0.1 + 16 },
        ]
    }

    /// The work went on to the end, and no scrape or control request failed.
    func checkWork(_ samples: [SoakSample], _ problems: inout [String]) {
        let after = samples.filter { $0.seconds >= suite.warmUpSeconds }
        let last = Array(after.suffix(after.count - after.count / 2))
        // The work went on to the end: lines read, bans made and lifted in the last half.
        for (name, value) in [
            ("lines read", { (sample: SoakSample) in sample.lines }), ("bans made", { $0.bans }),
            ("bans lifted", { $0.unbans }),
        ] as [(String, (SoakSample) -> Double?)] {
            let values = last.compactMap(value)
            if values.count < 2 || values.last! <= values.first! {
                problems.append(
                    "no \(name) in the last half (the scrapes said \(values.count < 2 ? "nothing" : "no change"))")
            }
        }
        if let failed = counts["scrapes failed"], failed > 0 {
            problems.append("\(Int(failed)) of \(Int(counts["scrapes"] ?? 0)) scrapes of the metrics failed")
        }
        if let failed = counts["control requests failed"], failed > 0 {
            problems.append("\(Int(failed)) of \(Int(counts["control requests"] ?? 0)) control requests failed")
        }
    }

    // MARK: Cleanup

    func tearDown() {
        for child in children.reversed() { child.stop(SIGTERM, grace: 10) }
        if namespacesMade {
            for namespace in [sender, receiver] { _ = try? runTool("/usr/sbin/ip", ["netns", "del", namespace]) }
        }
        try? FileManager.default.removeItem(atPath: pins)
        shm_unlink(shmName)
        try? FileManager.default.removeItem(atPath: directory)
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
