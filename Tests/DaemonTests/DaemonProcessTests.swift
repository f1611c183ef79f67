// SPDX-License-Identifier: Apache-2.0
import Foundation
import Synchronization
import Testing
import TestSupport
import XDPFirewall
import XDPTesting
import PortcullisSystem
import PortcullisCore

/// portcullisd as an operator runs it: a process attached to a veth in a namespace.
@Suite("portcullisd", .enabled(if: Privileges.runnable), .serialized)
struct DaemonProcessTests: DaemonProcessSuite {}

/// What the suites of portcullisd processes share (this one, CrowdSec's and the fleet's, which run
/// beside each other; the tests within each run one after another).
protocol DaemonProcessSuite {}

/// What `startDaemon` read of each daemon's output while waiting for it, by process id.
private let earlierOutput = Mutex<[Int32: String]>([:])

extension DaemonProcessSuite {
    var daemonPath: String { Products.directory + "/portcullisd" }

    /// Starts portcullisd in the receiver namespace; with `waitUntilReading`, returns once it says
    /// it reads (its transport reader is attached).
    func startDaemon(
        _ network: TestNetwork, _ arguments: [String], waitUntilReading: Bool = false
    ) throws
        -> (Process, Pipe)
    {
        try startDaemon(
            in: network.receiver, interface: network.receiverInterface, arguments, waitUntilReading: waitUntilReading)
    }

    /// Starts portcullisd in `namespace` on `interface` (see above).
    func startDaemon(
        in namespace: String, interface: String, _ arguments: [String], waitUntilReading: Bool = false
    ) throws
        -> (Process, Pipe)
    {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
        // A control socket of its own (tests run beside each other, and maybe beside a real daemon).
        let control = arguments.contains("--control") ? [] : ["--control", ControlScratch.path()]
        process.arguments =
            ["--net=/run/netns/\(namespace)", "--", daemonPath, "--interface", interface] + control + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        if waitUntilReading {
            // A daemon that never says it reads is killed (which ends the read below): the test fails
            // instead of waiting for ever.
            let pid = process.processIdentifier
            let ready = Mutex(false)
            DispatchQueue.global().asyncAfter(deadline: .now() + 30 * patience) {
                if !ready.withLock({ $0 }) { kill(pid, SIGKILL) }
            }
            defer { ready.withLock { $0 = true } }
            var seen = Data()
            while !String(decoding: seen, as: UTF8.self).contains(" reading ") && process.isRunning {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                seen.append(chunk)
            }
            earlierOutput.withLock { $0[pid] = String(decoding: seen, as: UTF8.self) }
        }
        return (process, output)
    }

    /// Reads `process`'s output (kept for `stopDaemon`) until it contains `text`, for at most
    /// `seconds` times `patience`; whether it came.
    func waitForOutput(_ process: Process, _ output: Pipe, containing text: String, within seconds: Double) -> Bool {
        waitForOutput(process, output, within: seconds) { $0.contains(text) }
    }

    /// Reads `process`'s output (kept for `stopDaemon`) until what was read so far satisfies
    /// `condition`, for at most `seconds` times `patience`; whether it did.
    func waitForOutput(
        _ process: Process, _ output: Pipe, within seconds: Double, until condition: (String) -> Bool
    ) -> Bool {
        let pid = process.processIdentifier
        let fd = output.fileHandleForReading.fileDescriptor
        let deadline = Date().addingTimeInterval(seconds * patience)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !(earlierOutput.withLock { condition($0[pid, default: ""]) }) {
            guard Date() < deadline else { return false }
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { return false }
            earlierOutput.withLock { $0[pid, default: ""] += String(decoding: buffer[..<count], as: UTF8.self) }
        }
        return true
    }

    /// Reloads done, as the ready file says (it is written again after each); -1 before it is.
    func reloadsDone(readyFile path: String) -> Int {
        guard let data = FileManager.default.contents(atPath: path),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return -1 }
        return object["reloads"] as? Int ?? -1
    }

    /// What `startDaemon` read of `process`'s output while waiting, forgotten.
    @discardableResult
    func takeEarlierOutput(of process: Process) -> String {
        earlierOutput.withLock { $0.removeValue(forKey: process.processIdentifier) } ?? ""
    }

    func stopDaemon(_ process: Process, _ output: Pipe) -> String {
        stopDaemonProcess(process)
        return takeEarlierOutput(of: process)
            + String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}

extension DaemonProcessTests {

    @Test("bans made before a restart are still enforced after it, and still end on time")
    func restart() throws {
        try withTestNetwork("d") { network, scratch in
            let transportScratch = TransportScratch()
            defer { transportScratch.remove() }
            let transport = transportScratch.arguments("shm")
            let arguments =
                transport + [
                    "--pin-dir", scratch.path, "--threshold", "3", "--ban-time", "5",
                    "--table-bins", "100003",
                ]
            var (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let writer = try Probe(["write"] + transport + ["--offenders", "10", "--lines", "3"])
            #expect(try writer.finish().status == 0)
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try eventually(within: 10) { try maps.entries().count == 10 })
            let first = IPAddress("198.18.0.1")!
            guard case .at(let end) = try #require(try maps.lookup(first)).expiry else {
                Issue.record("the ban should end")
                return
            }
            var text = stopDaemon(daemon, output)
            #expect(text.contains("10 bans"), "\(text)")
            #expect(daemon.terminationStatus == 0)

            // Restarted: the filter is found attached, the bans resumed.
            (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let filter = try LoadedProgram(filterAt: try Products.filterObject(), pinDirectory: scratch.pins)
            let frame = TestFrame.udp(from: first, to: IPAddress("198.19.255.254")!)
            #expect(try filter.testRun(frame: frame).verdict == .drop)
            #expect(try eventually(within: 15) { try maps.entries().isEmpty }, "the restarted daemon lifts them")
            #expect(SystemClock.bootNanoseconds() >= end, "not before their end")
            #expect(try filter.testRun(frame: frame).verdict == .pass)
            text = stopDaemon(daemon, output)
            #expect(text.contains("resumed 10 bans"), "\(text)")
            // Lifted by the resumed schedule, at their ends, not found later by the periodic sweep.
            #expect(text.contains("10 unbans (0 found by the sweep)"), "\(text)")
            #expect(text.contains("found the filter on"), "\(text)")
        }
    }

    @Test("a detach under the daemon is noticed within seconds; with --reattach the filter is put back")
    func detachIsNoticed() throws {
        for reattach in [false, true] {
            try withTestNetwork(reattach ? "r" : "d") { network, scratch in
                let transport = TransportScratch()
                defer { transport.remove() }
                let arguments =
                    transport.arguments("shm") + ["--pin-dir", scratch.path] + (reattach ? ["--reattach"] : [])
                let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
                let detached = try network.run(
                    in: network.receiver, [Products.cli, "detach", network.receiverInterface])
                #expect(detached.status == 0, "\(detached.stderr)")
                // The daemon checks every 2 s: it says so at its next check (or the one after, on a
                // busy machine), and puts the filter back first with --reattach.
                let said = reattach ? "re-attached the filter" : "bans are NOT enforced"
                #expect(waitForOutput(daemon, output, containing: said, within: 20), "the daemon noticed")
                let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
                let text = stopDaemon(daemon, output)
                #expect(
                    text.contains("no longer attached to \(network.receiverInterface): bans are NOT enforced"),
                    "\(text)")
                if reattach {
                    #expect(link.stdout.contains("xdp"), "put back")
                    #expect(text.contains("re-attached the filter"), "\(text)")
                    _ = try? network.run(in: network.receiver, [Products.cli, "detach", network.receiverInterface])
                } else {
                    #expect(!link.stdout.contains("xdp"), "left as the operator left it")
                }
            }
        }
    }

    @Test("the checks of the filter leak no descriptor, and a check that cannot be made is no detach")
    func enforcementChecksLeakNothing() throws {
        try withTestNetwork("n") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            // Every turn of the main loop checks the filter: 20 a second at --status-interval 0.05.
            let arguments = transport.arguments("shm") + ["--pin-dir", scratch.path, "--status-interval", "0.05"]
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let pid = daemon.processIdentifier
            func statusLines(_ text: String) -> Int { text.components(separatedBy: "portcullisd: status: ").count - 1 }
            func openDescriptors() throws -> Int {
                try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
            }
            #expect(waitForOutput(daemon, output, within: 60) { statusLines($0) >= 20 }, "20 turns")
            let before = try openDescriptors()
            var turns = 0
            #expect(
                waitForOutput(daemon, output, within: 120) {
                    turns = statusLines($0)
                    return turns >= 320
                }, "300 more turns")
            let after = try openDescriptors()
            // libxdp 1.3.1's lookup leaked one per check: 300 here.
            #expect(after <= before + 2, "\(before) descriptors before 300 checks, \(after) after")

            // Out of descriptors (its soft limit lowered below every descriptor it holds: a new one
            // would need a free number under it), a check cannot be made:
            // said as such, never as a detach, and said again once it can.
            let limits = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
            let soft =
                limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }?
                .split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).first.map(String.init) ?? ""
            #expect(Int(soft) != nil, "\(limits)")
            let lowered = try network.run(in: network.receiver, ["prlimit", "--pid", "\(pid)", "--nofile=3:"])
            #expect(lowered.status == 0, "\(lowered.stderr)")
            #expect(
                waitForOutput(daemon, output, containing: "cannot check whether the filter on", within: 30),
                "the failed check is said")
            #expect(
                waitForOutput(daemon, output, containing: "file descriptors are open:", within: 30), "and the count")
            let raised = try network.run(in: network.receiver, ["prlimit", "--pid", "\(pid)", "--nofile=\(soft):"])
            #expect(raised.status == 0, "\(raised.stderr)")
            #expect(waitForOutput(daemon, output, containing: "can be checked again", within: 30), "and its end")
            let text = stopDaemon(daemon, output)
            #expect(!text.contains("no longer attached"), "\(text)")
            #expect(daemon.terminationStatus == 0, "\(text)")
        }
    }

    @Test("pins removed under the daemon are put back within seconds, and the maps in use are found there")
    func vanishedPinsArePutBack() throws {
        try withTestNetwork("v") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let arguments = transport.arguments("shm") + ["--pin-dir", scratch.path]
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let ban = try network.run(
                in: network.receiver, [Products.cli, "ban", "198.19.77.1", "--pin-dir", scratch.path])
            #expect(ban.status == 0, "\(ban.stderr)")
            let pins = try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted()
            try FileManager.default.removeItem(atPath: scratch.path)
            #expect(
                waitForOutput(daemon, output, containing: "pinned them again", within: 20), "the daemon put them back")
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == pins)
            // The same maps: the ban made before is listed from the pins put back.
            let list = try network.run(in: network.receiver, [Products.cli, "list", "--pin-dir", scratch.path])
            #expect(list.stdout.contains("198.19.77.1"), "\(list.stdout) \(list.stderr)")
            let text = stopDaemon(daemon, output)
            #expect(text.contains("\(pins.count) of the maps' pins had vanished"), "\(text)")
            #expect(daemon.terminationStatus == 0, "\(text)")
        }
    }

    @Test("a filter that reads other maps than the pin directory's is refused at start")
    func otherMapsAreRefused() throws {
        try withTestNetwork("m") { network, scratch in
            let other = ScratchPinDirectory("other-maps")
            defer { other.remove() }
            // The receiver's filter pins in `scratch`; maps pinned in `other` by the sender's filter.
            let attach = try network.run(
                in: network.receiver,
                [Products.cli, "attach", network.receiverInterface, "--mode", "generic", "--pin-dir", scratch.path])
            #expect(attach.status == 0, "\(attach.stderr)")
            let elsewhere = try network.run(
                in: network.sender,
                [Products.cli, "attach", network.senderInterface, "--mode", "generic", "--pin-dir", other.path])
            #expect(elsewhere.status == 0, "\(elsewhere.stderr)")
            let transport = TransportScratch()
            defer { transport.remove() }
            let (daemon, output) = try startDaemon(network, transport.arguments("shm") + ["--pin-dir", other.path])
            let deadline = Date().addingTimeInterval(20)
            while daemon.isRunning && Date() < deadline { usleep(10_000) }
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus != 0)
            #expect(text.contains("reads other maps than those pinned under"), "\(text)")
            _ = try? network.run(in: network.receiver, [Products.cli, "detach", network.receiverInterface])
            _ = try? network.run(in: network.sender, [Products.cli, "detach", network.senderInterface])
        }
    }

    @Test("an upgrade's new filter object replaces the filter the daemon finds at start, in its mode, bans kept")
    func startReplacesAnotherFilterProgram() throws {
        let variant = try VariantFilterObject()
        defer { variant.remove() }
        let object = try Products.filterObject()
        try withTestNetwork("g") { network, scratch in
            let interface = network.receiverInterface
            let attach = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", interface, "--mode", "generic", "--bpf-object", variant.path,
                    "--pin-dir", scratch.path,
                ])
            try #require(attach.status == 0, "\(attach.stderr)")
            let ban = try network.run(
                in: network.receiver, [Products.cli, "ban", "198.18.0.1", "--pin-dir", scratch.path])
            try #require(ban.status == 0, "\(ban.stderr)")
            let transport = TransportScratch()
            defer { transport.remove() }
            let (daemon, output) = try startDaemon(
                network, transport.arguments("shm") + ["--pin-dir", scratch.path, "--bpf-object", object],
                waitUntilReading: true)
            let text = stopDaemon(daemon, output)
            #expect(
                text.contains("replaced the filter on \(interface) with the one in \(object) (program tag "), "\(text)")
            #expect(text.contains("): bans kept"), "\(text)")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", interface]).stdout
            #expect(link.contains("xdpgeneric"), "kept in generic mode: \(link)")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try maps.lookup(IPAddress("198.18.0.1")!) != nil, "the ban stays")
        }
    }

    @Test("threads that cannot be started: one clear error, nothing attached, nothing pinned")
    func threadsThatCannotStart() throws {
        try withTestNetwork("k") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            // A pids cgroup of its own with room for 12 tasks: the 50 workers cannot all start.
            let cgroup = "/sys/fs/cgroup/pids/portcullis-test-\(getpid())"
            try #require(mkdir(cgroup, 0o755) == 0 || errno == EEXIST, "cgroup v1 pids controller")
            defer { rmdir(cgroup) }
            try "12".write(toFile: cgroup + "/pids.max", atomically: false, encoding: .utf8)
            let command =
                ([
                    daemonPath, "--interface", network.receiverInterface, "--pin-dir", scratch.path, "--workers", "50",
                    "--control", ControlScratch.path(),
                    "--table-bins", "16",
                ] + transport.arguments("shm")).joined(separator: " ")
            let result = try network.run(
                in: network.receiver, ["/bin/sh", "-c", "echo $$ > \(cgroup)/cgroup.procs && exec \(command)"])
            #expect(result.status == 1, "\(result.stderr)")
            #expect(result.stderr.contains("cannot start a thread") && result.stderr.contains("lower --workers"))
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"), "nothing attached")
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "/pc_bans_v4"), "nothing pinned")
        }
    }

    @Test(
        "SIGHUP reloads and does not stop the daemon (with a ban log), waited for by the reload count; a reader gone from its output does not kill it"
    )
    func hangUpAndBrokenPipe() throws {
        try withTestNetwork("h") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let ready = transport.filePath + ".ready.json"
            let banLog = transport.filePath + ".bans.log"
            defer {
                unlink(ready)
                unlink(banLog)
            }
            // With a ban log, whose writer is the first thread the daemon starts. (The soak's first
            // SIGHUP ended a daemon whose signals were blocked only after that thread started; this
            // test did not reproduce that, the soak in tools/test did and holds it.)
            let arguments =
                transport.arguments("shm") + [
                    "--pin-dir", scratch.path, "--status-interval", "0.2", "--ban-log", banLog,
                    "--ready-file", ready,
                ]
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            for count in 1...3 {
                kill(daemon.processIdentifier, SIGHUP)
                #expect(eventually(within: 15) { reloadsDone(readyFile: ready) == count }, "reload \(count) done")
            }
            #expect(daemon.isRunning, "alive after three SIGHUPs")
            // Nobody reads its output any more: its status lines (every 0.2 s) meet EPIPE, not SIGPIPE.
            try output.fileHandleForReading.close()
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloadsDone(readyFile: ready) == 4 }, "a reload after the reader left")
            #expect(daemon.isRunning, "alive after its output's reader went away")
            stopDaemonProcess(daemon)
            takeEarlierOutput(of: daemon)
            #expect(daemon.terminationReason == .exit && daemon.terminationStatus == 0, "a clean stop")
        }
    }

    @Test(
        "bad input: one clear error, an exit code, nothing attached",
        arguments: [
            (["--transport", "carrier-pigeon"], "carrier-pigeon"),
            (["--shm-slots", "1000"], "power of two"),
            (["--threshold", "0"], "--threshold"),
            (["--ban-time", "99999999999"], "--ban-time"),
            (["--failregex", "^denied$"], "<HOST>"),
            (["--failregex", "from <HOST> (unclosed"], "does not compile"),
            (["--cpus", "9999"], "--cpus"),
            (["--cpus", "0-99999999999"], "--cpus"),
            (["--status-interval", "inf"], "--status-interval"),
            (["--status-interval", "1e19"], "--status-interval"),
            (["--max-line", "99999999999"], "--max-line"),
            (["--regex-match-limit", "5"], "--regex-match-limit"),
            (
                ["--transport", "file", "--file-path", "/tmp/pc-state.log", "--state-dir", "/proc/pc-state"],
                "--state-dir"
            ),
            (
                ["--socket-dir", "relative/but/fine", "--transport", "socket", "--socket-datagram-size", "10"],
                "datagram"
            ),
        ])
    func badInput(arguments: [String], mentioning: String) throws {
        try withTestNetwork("b") { network, scratch in
            let (daemon, output) = try startDaemon(network, arguments + ["--pin-dir", scratch.path])
            let deadline = Date().addingTimeInterval(20)
            while daemon.isRunning && Date() < deadline { usleep(10_000) }
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus != 0)
            #expect(text.contains(mentioning), "\(text)")
            #expect(!text.contains("Fatal error"))
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"), "nothing attached")
            #expect(!scratch.pins.holdsMaps, "nothing pinned")
        }
    }

    @Test("a log file on procfs is refused at start with one line, not read for ever")
    func procfsLogRefused() throws {
        try withTestNetwork("pf") { network, scratch in
            // timeout: a daemon that takes the file runs on (reading it at full speed); the test ends.
            let result = try network.run(
                in: network.receiver,
                [
                    "timeout", "60", daemonPath, "--interface", network.receiverInterface, "--pin-dir", scratch.path,
                    "--control", ControlScratch.path(), "--transport", "file", "--file-path", "/proc/version",
                ])
            #expect(result.status == 1, "\(result.stdout) \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
            #expect(result.stderr.contains("/proc/version is on procfs"), "\(result.stderr)")
        }
    }

    @Test("a missing interface is refused before anything is made")
    func missingInterface() throws {
        let scratch = ScratchPinDirectory("noif")
        defer { scratch.remove() }
        try Privileges.require()
        let result = try runProcess(daemonPath, ["--interface", "pcnosuchif0", "--pin-dir", scratch.path])
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1)
        #expect(result.stderr.contains("no network interface named 'pcnosuchif0'"))
        #expect(!scratch.pins.holdsMaps)
    }
}

/// A configuration file and a log for a daemon process; removed afterwards.
struct ConfigurationScratch {
    let directory = NSTemporaryDirectory() + "pc-config-\(getpid())-\(UUID().uuidString.prefix(8))"
    var path: String { directory + "/portcullis.toml" }
    var log: String { directory + "/app.log" }

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: log, contents: nil)
    }

    /// Writes the configuration (`LOG` stands for the log's path).
    func write(_ text: String) throws {
        try text.replacingOccurrences(of: "LOG", with: log).write(toFile: path, atomically: true, encoding: .utf8)
    }

    func append(_ lines: [String]) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(lines.map { "2026-12-01 12:00:00 \($0)\n" }.joined().utf8))
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// With jails.
extension DaemonProcessTests {
    @Test(
        "SIGHUP reloads: a jail added bans, a jail removed no longer does, an unchanged jail keeps its counts, bans stay; a broken file is refused and the running jails go on"
    )
    func reload() throws {
        try withTestNetwork("g") { network, scratch in
            let files = try ConfigurationScratch()
            defer { files.remove() }
            let keep = """
                [jail.keep]
                source = "file:LOG"
                failregex = '^\\s*failed from <HOST>$'
                maxretry = 3
                bantime = 600

                """
            try files.write(
                keep + """
                    [jail.gone]
                    source = "file:LOG"
                    failregex = '^\\s*denied <HOST>$'
                    maxretry = 2
                    """)
            let ready = files.directory + "/ready.json"
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                "--ready-file", ready,
                // Status lines across the reload: the new daemon's count starts at 0 (a rate from
                // the old one's would be negative).
                "--status-interval", "0.2",
            ]
            func reloads() -> Int { reloadsDone(readyFile: ready) }
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            func banned(_ address: String) throws -> Bool { try maps.lookup(IPAddress(address)!) != nil }
            // keep: 198.18.11.1 at 2 of 3; gone: 198.18.11.2 at 1 of 2. The ban of .9 (after them in
            // the file) says the daemon has read them.
            try files.append(
                ["failed from 198.18.11.1", "failed from 198.18.11.1", "denied 198.18.11.2"]
                    + Array(repeating: "failed from 198.18.11.9", count: 3))
            #expect(try eventually(within: 10) { try banned("198.18.11.9") })

            try files.write(
                keep + """
                    [jail.added]
                    source = "file:LOG"
                    failregex = '^\\s*blocked <HOST>$'
                    maxretry = 1
                    """)
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloads() == 1 })
            try files.append(["blocked 198.18.11.3"])
            #expect(try eventually(within: 15) { try banned("198.18.11.3") }, "the added jail bans")
            try files.append(["failed from 198.18.11.1", "denied 198.18.11.2", "blocked 198.18.11.4"])
            #expect(try eventually(within: 10) { try banned("198.18.11.4") })
            #expect(try banned("198.18.11.1"), "keep's count went on from 2: its third offence banned")
            #expect(try !banned("198.18.11.2"), "the removed jail no longer bans")
            #expect(try banned("198.18.11.9"), "bans in force stay")

            try files.write(keep + "bogus = 1\n")
            kill(daemon.processIdentifier, SIGHUP)
            usleep(500_000)
            try files.append(["blocked 198.18.11.5"])
            #expect(try eventually(within: 10) { try banned("198.18.11.5") }, "the running jails go on")
            #expect(daemon.isRunning)
            let text = stopDaemon(daemon, output)
            #expect(text.contains("SIGHUP: reloaded: 2 jail(s), counts kept in keep"), "\(text)")
            #expect(
                text.contains("configuration refused, the running one stays: \(files.path):6: jail.keep.bogus"),
                "\(text)")
            #expect(daemon.terminationStatus == 0)
        }
    }

    @Test(
        "a reload is per source: one that cannot be opened is degraded (status, reload's answer) while every other jail goes on, and a reload opens it once fixed"
    )
    func reloadDegradesOneSource() throws {
        try withTestNetwork("h") { network, scratch in
            let files = try ConfigurationScratch()
            defer { files.remove() }
            let second = files.directory + "/second.log"
            let third = files.directory + "/third.log"
            for path in [second, third] { FileManager.default.createFile(atPath: path, contents: nil) }
            func configuration(_ bPath: String) -> String {
                """
                [jail.a]
                source = "file:LOG"
                failregex = '^\\s*failed from <HOST>$'
                maxretry = 1

                [jail.b]
                source = "file:\(bPath)"
                failregex = '^\\s*denied <HOST>$'
                maxretry = 1
                """
            }
            func append(_ line: String, to path: String) throws {
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                defer { try? handle.close() }
                handle.seekToEndOfFile()
                handle.write(Data("2026-12-01 12:00:00 \(line)\n".utf8))
            }
            try files.write(configuration(second))
            let ready = files.directory + "/ready.json"
            let control = files.directory + "/control.sock"
            let arguments = [
                "--config", files.path, "--pin-dir", scratch.path, "--state-dir", files.directory + "/state",
                "--ready-file", ready, "--control", control,
            ]
            func reloads() -> Int { reloadsDone(readyFile: ready) }
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            func banned(_ address: String) throws -> Bool { try maps.lookup(IPAddress(address)!) != nil }

            // The audit's N3: the same configuration, one of its files given to another user. The
            // sources are unchanged: both are read on through the reload, nothing reopened.
            #expect(chown(second, 65534, 65534) == 0)
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloads() == 1 })
            try files.append(["failed from 198.18.12.1"])
            #expect(try eventually(within: 15) { try banned("198.18.12.1") }, "jail a reads on")
            try append("denied 198.18.12.2", to: second)
            #expect(try eventually(within: 15) { try banned("198.18.12.2") }, "and b, on the file it has open")

            // A changed source that cannot be opened (a file of another user): degraded, alone.
            #expect(chown(third, 65534, 65534) == 0)
            try files.write(configuration(third))
            let reload = try network.run(in: network.receiver, [Products.cli, "reload", "--control", control])
            #expect(reload.status != 0, "the reload's answer says it: \(reload.stdout)")
            #expect(reload.stderr.contains("DEGRADED, not read: file:\(third)"), "\(reload.stderr)")
            try files.append(["failed from 198.18.12.3"])
            #expect(try eventually(within: 15) { try banned("198.18.12.3") }, "jail a goes on")
            let status = try network.run(in: network.receiver, [Products.cli, "status", "--control", control])
            #expect(status.stdout.hasPrefix("DEGRADED\n"), "\(status.stdout)")
            #expect(status.stdout.contains("source file:\(third) cannot be read"), "\(status.stdout)")
            #expect(status.status == 2, "degraded: \(status.stderr)")
            #expect(daemon.isRunning)

            // Fixed: the next reload opens it.
            #expect(chown(third, 0, 0) == 0)
            kill(daemon.processIdentifier, SIGHUP)
            #expect(eventually(within: 15) { reloads() == 3 })
            try append("denied 198.18.12.4", to: third)
            #expect(try eventually(within: 15) { try banned("198.18.12.4") }, "b reads its new file")
            let healthy = try network.run(in: network.receiver, [Products.cli, "status", "--control", control])
            #expect(healthy.status == 0 && healthy.stdout.hasPrefix("OK\n"), "\(healthy.stdout)")
            let text = stopDaemon(daemon, output)
            #expect(text.contains("no longer degraded after "), "\(text)")
            #expect(text.contains("2 of 2 source(s) read on without a break"), "\(text)")
            #expect(daemon.terminationStatus == 0, "\(text)")
        }
    }

    @Test("reloads under a stream of lines over the socket transport lose none: the connections are read on")
    func reloadsLoseNoSocketLine() throws {
        try withTestNetwork("s") { network, scratch in
            let transportScratch = TransportScratch()
            defer { transportScratch.remove() }
            let transport = transportScratch.arguments("socket")
            let ready = NSTemporaryDirectory() + "pc-ready-\(getpid())-s.json"
            defer { unlink(ready) }
            let arguments =
                transport + [
                    "--pin-dir", scratch.path, "--threshold", "100", "--find-time", "3600", "--ban-time", "600",
                    "--table-bins", "100003", "--ready-file", ready,
                ]
            func reloads() -> Int { reloadsDone(readyFile: ready) }
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            // 1,000 offenders, 100 lines each, round by round (100,000 lines): each is banned at its
            // 100th line, so one line lost anywhere leaves its client unbanned. Client 254 is the
            // receiver's own address (allowlisted): 999 bans.
            let writer = try Probe(["write"] + transport + ["--offenders", "1000", "--lines", "100"])
            var sent = 0
            while writer.process.isRunning && sent < 500 {
                kill(daemon.processIdentifier, SIGHUP)
                sent += 1
                #expect(eventually(within: 15) { reloads() == sent }, "reload \(sent) done")
            }
            #expect(try writer.finish().status == 0)
            // How many land mid-stream depends on the machine's speed (the old code lost lines with
            // any of them: 0 of 999 banned); at least the first, sent as the writer started.
            #expect(sent >= 1, "reloads while the writer wrote: \(sent)")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try eventually(within: 30) { try maps.entries().count == 999 }, "every offender banned")
            let text = stopDaemon(daemon, output)
            let count = try maps.entries().count
            #expect(count == 999, "\(count) \(text.suffix(3000))")
            #expect(text.contains("1 of 1 source(s) read on without a break"), "\(text.suffix(3000))")
        }
    }

    @Test(
        "bad configuration: one line naming the file and the key, exit 1, nothing attached or pinned",
        arguments: [
            ("[jail.a]\nsource = \"file:/nonexistent/pc.log\"\n", "jail.a.source: /nonexistent/pc.log"),
            (
                "[jail.a]\nsource = \"file:LOG\"\nfilter = \"no-such-filter\"\n",
                "jail.a.filter: filter 'no-such-filter'"
            ),
            (
                "[jail.a]\nsource = \"file:LOG\"\nfailregex = \"from <SUBNET>\"\n",
                "key 'failregex': the subnet tag <SUBNET>"
            ),
            ("[jail.a]\nsource = \"file:LOG\"\nfailregex = \"from <HOST> (open\"\n", "key 'failregex': pattern"),
            ("[jail.a]\nsource = \"file:LOG\"\nmaxretry = \"five\"\n", "jail.a.maxretry: must be an integer"),
            ("[daemon]\nworkers = 0\n", "--workers"),
            ("[daemon]\nwake-delay = 200000\n", "--wake-delay must be 0...100000 microseconds"),
            ("[daemon]\nmode = \"fast\"\n", ":2: daemon.mode: The value 'fast' is invalid"),
            ("[jail.a]\nenabled = false\n", "no enabled jail in"),
        ])
    func badConfiguration(text: String, mentioning: String) throws {
        try withTestNetwork("c") { network, scratch in
            let files = try ConfigurationScratch()
            defer { files.remove() }
            try files.write(text)
            let (daemon, output) = try startDaemon(network, ["--config", files.path, "--pin-dir", scratch.path])
            let deadline = Date().addingTimeInterval(20)
            while daemon.isRunning && Date() < deadline { usleep(10_000) }
            let said = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 1)
            #expect(said.contains(mentioning), "\(said)")
            #expect(said.contains(files.path) || mentioning.hasPrefix("--"), "names the file: \(said)")
            #expect(said.split(separator: "\n").count == 1, "one line: \(said)")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"), "nothing attached")
            #expect(!scratch.pins.holdsMaps, "nothing pinned")
        }
    }

    @Test("--check-config: 0 and each jail for a usable configuration, 1 and the first error otherwise; nothing made")
    func checkConfiguration() throws {
        let files = try ConfigurationScratch()
        defer { files.remove() }
        try files.write(
            "[jail.a]\nsource = \"file:LOG\"\nfailregex = '^\\s*x <HOST>$'\n[jail.a.escalation]\nincrement = true\n")
        let state = files.directory + "/state"
        // No interface set, and a network namespace of its own with no default route to take one from.
        var result = try runProcess(
            "/usr/bin/unshare", ["--net", daemonPath, "--config", files.path, "--check-config", "--state-dir", state])
        #expect(result.status == 1 && result.stderr.contains("no default route"), "as serve would refuse it")
        #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        result = try runProcess(
            daemonPath, ["--config", files.path, "--check-config", "--state-dir", state, "--interface", "lo"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("jail a (\(files.path)): file \(files.log)"), "\(result.stdout)")
        #expect(result.stdout.contains("configuration OK: 1 jail(s): a"))
        #expect(!FileManager.default.fileExists(atPath: state), "a check creates nothing")
        result = try runProcess(
            daemonPath, ["--config", files.path, "--check-config", "--threshold", "9", "--interface", "lo"])
        #expect(result.stdout.contains("maxretry 9"), "the command line overrides the file: \(result.stdout)")
        try files.write("[jail.a]\nsource = \"file:LOG\"\nfindtime = \"soon\"\n")
        result = try runProcess(daemonPath, ["--config", files.path, "--check-config", "--interface", "lo"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(files.path):3: jail.a.findtime: 'soon' is no duration"), "\(result.stderr)")
    }
}

extension DaemonProcessTests {
    @Test(
        "--check-config refuses what serve refuses (N11): a device, a directory or a path under a symlinked directory as the log, table-bins out of range, a failregex without <HOST>, a bad api_url, a state directory on /proc, a FIFO as --config"
    )
    func checkConfigurationRefusesWhatServeRefuses() throws {
        let files = try ConfigurationScratch()
        defer { files.remove() }
        let directory = files.directory + "/logs"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: files.directory + "/linked", withDestinationPath: directory)
        FileManager.default.createFile(atPath: directory + "/app.log", contents: nil)
        let jail = "[jail.a]\nfailregex = '^x <HOST>$'\n"
        let cases: [(text: String, arguments: [String], words: [String])] = [
            (jail + "source = \"file:/dev/null\"\n", [], ["/dev/null", "not a regular file"]),
            (jail + "source = \"file:\(directory)\"\n", [], [directory, "not a regular file"]),
            (jail + "source = \"file:\(files.directory)/linked/app.log\"\n", [], ["linked"]),
            (jail + "source = \"file:LOG\"\ntable-bins = 1099511627776\n", [], ["table-bins must be 16...2147483648"]),
            ("[jail.a]\nsource = \"file:LOG\"\nfailregex = [\"login failed\"]\n", [], ["login failed", "<HOST>"]),
            (
                jail + "source = \"file:LOG\"\n[crowdsec]\napi_url = \"http://[::1\"\napi_key = \"k\"\n", [],
                ["api_url", "http://[::1"]
            ),
            (jail + "source = \"file:LOG\"\n", ["--state-dir", "/proc"], ["--state-dir /proc", "/proc or /sys"]),
        ]
        for (text, arguments, words) in cases {
            try files.write(text)
            let result = try runProcess(
                daemonPath, ["--config", files.path, "--check-config", "--interface", "lo"] + arguments, timeout: 30)
            #expect(result.status == 1, "\(text): \(result.stdout) \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
            for word in words { #expect(result.stderr.contains(word), "'\(word)' in: \(result.stderr)") }
        }
        let fifo = files.directory + "/fifo.toml"
        try #require(mkfifo(fifo, 0o600) == 0)
        let result = try runProcess(daemonPath, ["--config", fifo, "--check-config", "--interface", "lo"], timeout: 30)
        #expect(result.status == 1 && result.stderr.contains("not a regular file"), "\(result.stderr)")
    }
}

extension DaemonProcessTests {
    @Test(
        "fail2ban directories that fan out (N12): an [INCLUDES] tree, %(name)s repeated within repeated values, <tag> repeated within repeated tags, a 20-file include chain: one line each, at once"
    )
    func fail2banFanOut() throws {
        let directory = NSTemporaryDirectory() + "pc-fanout-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory + "/filter.d", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = directory + "/app.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        try "[t]\nenabled = true\nbackend = auto\nfilter = f\nlogpath = \(log)\n".write(
            toFile: directory + "/jail.conf", atomically: true, encoding: .utf8)
        func filter(_ text: String, extra: [String: String] = [:]) throws {
            try text.write(toFile: directory + "/filter.d/f.conf", atomically: true, encoding: .utf8)
            for (name, content) in extra {
                try content.write(toFile: directory + "/filter.d/" + name, atomically: true, encoding: .utf8)
            }
        }
        func check() throws -> ProcessResult {
            try runProcess(
                daemonPath, ["--fail2ban-config", directory, "--check-config", "--interface", "lo"], timeout: 60)
        }
        try filter("[Definition]\nfailregex = ^x <HOST>$\n")
        var result = try check()
        #expect(result.status == 0, "a plain filter passes: \(result.stderr)")

        // f.conf includes n1.conf 10 times, n1 includes n2 10 times... 10 levels: 10^10 reads.
        var tree: [String: String] = [:]
        for level in 1...10 {
            let next =
                level < 10
                ? "[INCLUDES]\nbefore = "
                    + Array(repeating: "n\(level + 1).conf", count: 10).joined(separator: "\n         ") + "\n" : ""
            tree["n\(level).conf"] = next + "[Definition]\nv\(level) = \(level)\n"
        }
        try filter(
            "[INCLUDES]\nbefore = " + Array(repeating: "n1.conf", count: 10).joined(separator: "\n         ")
                + "\n[Definition]\nfailregex = ^x <HOST>$\n", extra: tree)
        result = try check()
        #expect(result.status == 1 && result.stderr.contains("more than 1000 files"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")

        // %(lN)s = %(lN-1)s ten times, 9 levels: 10^9 references.
        var values = "l0 = abcdefghij\n"
        for level in 1...9 { values += "l\(level) = " + String(repeating: "%(l\(level - 1))s", count: 10) + "\n" }
        try filter("[Definition]\n" + values + "failregex = ^%(l9)s <HOST>$\n")
        result = try check()
        #expect(result.status == 1 && result.stderr.contains("key 'failregex'"), "\(result.stderr)")
        #expect(result.stderr.contains("interpolation grows past"), "\(result.stderr)")

        // <_tN> = <_tN-1> four times, 19 levels: 4^19 bytes.
        var tags = "_t0 = abcd\n"
        for level in 1...19 { tags += "_t\(level) = " + String(repeating: "<_t\(level - 1)>", count: 4) + "\n" }
        try filter("[Definition]\n" + tags + "failregex = ^<_t19> <HOST>$\n")
        result = try check()
        #expect(result.status == 1 && result.stderr.contains("substitution grows past"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")

        // A chain of 20 includes: named as such, not as an interpolation that refers back to itself.
        var chain: [String: String] = [:]
        for level in 1...20 {
            chain["c\(level).conf"] =
                (level < 20 ? "[INCLUDES]\nbefore = c\(level + 1).conf\n" : "") + "[Definition]\nw\(level) = 1\n"
        }
        try filter("[INCLUDES]\nbefore = c1.conf\n[Definition]\nfailregex = ^x <HOST>$\n", extra: chain)
        result = try check()
        #expect(result.status == 1 && result.stderr.contains("a chain of more than 16 includes"), "\(result.stderr)")
        #expect(!result.stderr.contains("refers back to itself"))
    }
}

extension DaemonProcessTests {
    @Test("several interfaces: the filter on each, one set of maps; one that cannot be attached undoes the others")
    func severalInterfaces() throws {
        try withTestNetwork("i") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            // Loopback has no native XDP: its attach fails after the veth's succeeded.
            var (daemon, output) = try startDaemon(
                network,
                transport.arguments("shm") + ["--interface", "lo", "--mode", "native", "--pin-dir", scratch.path])
            let deadline = Date().addingTimeInterval(20)
            while daemon.isRunning && Date() < deadline { usleep(10_000) }
            var text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 1, "\(text)")
            #expect(text.contains("lo"), "\(text)")
            var link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"), "the veth's attach was undone")
            #expect(!scratch.pins.holdsMaps, "nothing pinned")

            (daemon, output) = try startDaemon(
                network, transport.arguments("shm") + ["--interface", "lo", "--pin-dir", scratch.path],
                waitUntilReading: true)
            link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            let loopback = try network.run(in: network.receiver, ["ip", "link", "show", "lo"])
            text = stopDaemon(daemon, output)
            #expect(
                text.contains("attached to \(network.receiverInterface)") && text.contains("attached to lo"), "\(text)")
            #expect(link.stdout.contains("xdp") && loopback.stdout.contains("xdp"), "the filter on both")
            #expect(daemon.terminationStatus == 0)
        }
    }
}

extension DaemonProcessTests {
    /// Sends `payload` as is to a control socket and returns what came back (python3, so that the
    /// bytes are exactly the test's, not a client's).
    func sendRaw(_ path: String, _ payload: String, repeating count: Int = 1) throws -> String {
        let script = """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sys.argv[1])
            s.sendall(sys.argv[2].encode() * int(sys.argv[3]))
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk: break
                reply += chunk
            print(reply.decode())
            """
        return try runProcess("/usr/bin/python3", ["-c", script, path, payload, String(count)]).stdout
    }

    @Test(
        "the control socket: status and jails; bans and unbans through the daemon in its ban log and list; a peer neither root nor in the group, garbage, an unknown command and an oversized request answered with errors and counted, the daemon alive; without a daemon the CLI writes the maps and says so"
    )
    func controlSocket() throws {
        try withTestNetwork("q") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let directory = NSTemporaryDirectory() + "pc-control-test-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let socket = directory + "/control.sock"
            let banLog = directory + "/bans.log"
            let (daemon, output) = try startDaemon(
                network,
                transport.arguments("shm") + [
                    "--pin-dir", scratch.path, "--control", socket, "--ban-log", banLog, "--control-group", "nogroup",
                ],
                waitUntilReading: true)
            func cli(_ arguments: [String]) throws -> ProcessResult {
                try runProcess(Products.cli, arguments + ["--control", socket])
            }
            var result = try cli(["status", "--json"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("\"name\":\"default\""), "\(result.stdout)")
            result = try cli(["jails"])
            #expect(result.stdout.contains("jail default (command line)"), "\(result.stdout)")

            result = try cli(["ban", "198.18.16.1", "2001:2::16:1", "--for", "600", "--pin-dir", scratch.path])
            #expect(result.status == 0 && result.stdout.contains("banned 2 address(es) for 600 s"), "\(result.stdout)")
            #expect(!result.stderr.contains("no portcullisd answers"), "through the daemon")
            result = try cli(["list", "--json", "--pin-dir", scratch.path])
            #expect(result.stdout.contains("\"address\":\"198.18.16.1\""), "\(result.stdout)")
            #expect(result.stdout.contains("\"jail\":\"manual\""))
            result = try cli(["ban", "127.0.0.1", "--pin-dir", scratch.path])
            #expect(result.status == 1 && result.stderr.contains("never banned"), "\(result.stderr)")
            result = try cli(["unban", "198.18.16.1", "--pin-dir", scratch.path])
            #expect(result.status == 0 && result.stdout.contains("unbanned 198.18.16.1"), "\(result.stdout)")
            // A network through the daemon too: in its ban log, and lifted as it was banned.
            result = try cli(["ban", "198.18.17.0/24", "--for", "600", "--pin-dir", scratch.path])
            #expect(result.status == 0 && result.stdout.contains("banned 198.18.17.0/24 for 600 s"), "\(result.stderr)")
            #expect(!result.stderr.contains("no portcullisd answers"), "through the daemon")
            result = try cli(["list", "--json", "--pin-dir", scratch.path])
            let listedNetwork = ["\"address\":\"198.18.17.0\\/24\"", "\"address\":\"198.18.17.0/24\""]
            #expect(listedNetwork.contains { result.stdout.contains($0) }, "\(result.stdout)")
            result = try cli(["unban", "198.18.17.0/24", "--pin-dir", scratch.path])
            #expect(result.status == 0 && result.stdout.contains("unbanned 198.18.17.0/24"), "\(result.stderr)")

            // A peer neither root nor in the control group: refused by the peer check even when the
            // file lets it connect. A member (nobody, in nogroup) may ask for the status, not detach.
            chmod(socket, 0o666)
            result = try runProcess(
                "/usr/bin/setpriv",
                ["--reuid=65533", "--regid=65533", "--clear-groups", Products.cli, "status", "--control", socket])
            #expect(result.status == 1 && result.stderr.contains("not allowed: uid 65533"), "\(result.stderr)")
            result = try runProcess(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", Products.cli, "status", "--control", socket])
            #expect(result.status == 0, "a member of the control group: \(result.stderr)")
            result = try runProcess(
                "/usr/bin/setpriv",
                [
                    "--reuid=65534", "--regid=65534", "--clear-groups", Products.cli, "detach", network.receiver,
                    "--control", socket,
                ])
            #expect(result.status != 0 && result.stderr.contains("only root may detach"), "\(result.stderr)")
            #expect(try sendRaw(socket, "garbage\n").contains("not a request"))
            #expect(try sendRaw(socket, "{\"command\":\"selfdestruct\"}\n").contains("unknown command 'selfdestruct'"))
            #expect(
                try sendRaw(socket, String(repeating: "x", count: 1024), repeating: 8 * 1024 + 1).contains(
                    "longer than"))
            result = try cli(["status", "--json"])
            for counter in ["\"unauthorised\":2", "\"malformed\":1", "\"unknown_command\":1", "\"oversized\":1"] {
                #expect(result.stdout.contains(counter), "\(counter) in \(result.stdout)")
            }
            #expect(daemon.isRunning, "alive after all that")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            let log = (try? String(contentsOfFile: banLog, encoding: .utf8)) ?? ""
            #expect(log.contains(" ban 198.18.16.1 jail=manual for=600"), "\(log)")
            #expect(log.contains(" ban 2001:2::16:1 jail=manual for=600"))
            #expect(log.contains(" unban 198.18.16.1"))
            #expect(log.contains(" ban 198.18.17.0/24 jail=manual for=600"), "\(log)")
            #expect(log.contains(" unban 198.18.17.0/24"), "\(log)")
            #expect(!FileManager.default.fileExists(atPath: socket), "the socket goes with the daemon")

            // No daemon: the CLI writes the maps itself, and says so.
            result = try cli(["ban", "198.18.16.3", "--pin-dir", scratch.path])
            #expect(
                result.status == 0 && result.stderr.contains("no portcullisd answers at \(socket)"), "\(result.stderr)")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try maps.lookup(IPAddress("198.18.16.3")!) != nil)
        }
    }

    @Test(
        "portcullis list --json streams: through the daemon and from the maps the rows the maps hold (20,002 bans); a peer that leaves a listing midway leaves the daemon answering"
    )
    func listStreams() throws {
        try withTestNetwork("K") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let directory = NSTemporaryDirectory() + "pc-list-test-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let socket = directory + "/control.sock"
            let (daemon, output) = try startDaemon(
                network, transport.arguments("shm") + ["--pin-dir", scratch.path, "--control", socket],
                waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            func cli(_ arguments: [String]) throws -> ProcessResult {
                try runProcess(Products.cli, arguments + ["--control", socket, "--pin-dir", scratch.path])
            }
            // Through the socket itself: 20,000 arguments take the CLI's argument parser minutes.
            let banner = """
                import json, socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sys.argv[1])
                addresses = ["198.18.%d.%d" % (100 + i // 250, 1 + i % 250) for i in range(20000)]
                s.sendall(json.dumps({"command": "ban", "seconds": 600, "addresses": addresses}).encode() + b"\\n")
                print(s.makefile().readline())
                """
            let banned = try runProcess("/usr/bin/python3", ["-c", banner, socket])
            #expect(banned.stdout.contains("\"banned\":20000"), "\(banned.stdout) \(banned.stderr)")
            var result = try cli(["ban", "198.19.7.0/24", "2001:2::77"])
            #expect(result.status == 0, "\(result.stderr)")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            let expected = try maps.listing().map { "\($0.address) \($0.jail) \($0.expired) \($0.dropped)" }
            func rows(_ text: String) throws -> [String] {
                let array = try #require(
                    try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]], "\(text.prefix(200))")
                return array.map { row in
                    "\(row["address"] ?? "") \(row["jail"] ?? "") \((row["expired"] as? Bool) ?? true) \(row["dropped"] ?? "")"
                }
            }
            result = try cli(["list", "--json"])
            #expect(result.status == 0 && !result.stderr.contains("no portcullisd answers"), "\(result.stderr)")
            let streamed = try rows(result.stdout)
            #expect(streamed.count == 20_002 && Set(streamed) == Set(expected), "\(streamed.count) rows")
            #expect(
                result.stdout.contains("\"address\":\"2001:2::77\",\"dropped\":0,\"expired\":false,\"expires_in\":null")
            )
            // A peer that reads a little and leaves: the daemon goes on answering.
            let leaver = """
                import socket, sys
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(sys.argv[1])
                s.sendall(b'{"command":"list","format":"json"}\\n')
                print(s.recv(1000).decode(errors="replace").splitlines()[0])
                s.close()
                """
            let left = try runProcess("/usr/bin/python3", ["-c", leaver, socket])
            #expect(left.stdout.contains("\"stream\":true"), "\(left.stdout) \(left.stderr)")
            result = try runProcess(Products.cli, ["status", "--json", "--control", socket])
            #expect(result.status == 0 && daemon.isRunning, "\(result.stderr)")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            // No daemon: the CLI streams the maps itself, the same rows.
            result = try cli(["list", "--json"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(Set(try rows(result.stdout)) == Set(expected))
        }
    }

    @Test(
        "metrics: /metrics over HTTP passes promtool check metrics; lines, bans, latency, bans in force and the XDP counters move during an attack; an operator's ban counts as such; other paths and methods are refused; the daemon lives on"
    )
    func metricsEndpoint() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") else {
            if Privileges.inCI { Issue.record("promtool is missing: tools/install-deps installs Debian's prometheus") }
            return
        }
        try withTestNetwork("p") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let directory = NSTemporaryDirectory() + "pc-metrics-test-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let ready = directory + "/ready.json"
            let socket = directory + "/control.sock"
            let lines = transport.arguments("shm")
            let (daemon, output) = try startDaemon(
                network,
                lines + [
                    "--pin-dir", scratch.path, "--threshold", "3", "--ban-time", "600", "--metrics", "127.0.0.1:0",
                    "--ready-file", ready, "--control", socket,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            #expect(try eventually(within: 10) { FileManager.default.fileExists(atPath: ready) })
            let readyText = try String(contentsOfFile: ready, encoding: .utf8)
            let url = try #require(
                readyText.firstMatch(of: /"metrics":"(http:[^"]+)"/).map {
                    String($0.1).replacingOccurrences(of: "\\/", with: "/")
                },
                "\(readyText)")
            /// `curl` in the daemon's namespace: the body, or with `code` the status alone.
            func fetch(_ url: String, _ extra: [String] = []) throws -> ProcessResult {
                try network.run(in: network.receiver, ["/usr/bin/curl", "-sS", "--max-time", "10"] + extra + [url])
            }
            func scrape() throws -> String {
                let result = try fetch(url)
                #expect(result.status == 0, "\(result.stderr)")
                return result.stdout
            }
            func value(_ text: String, _ series: String) -> Double? {
                for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
                    return Double(line.dropFirst(series.count + 1))
                }
                return nil
            }
            let before = try scrape()
            let check = try network.run(
                in: network.receiver,
                ["/bin/sh", "-c", "/usr/bin/curl -sS --max-time 10 \(url) | /usr/bin/promtool check metrics"])
            #expect(check.status == 0, "promtool: \(check.stdout) \(check.stderr)\n\(before)")
            #expect(value(before, "process_resident_memory_bytes").map { $0 > 0 } == true, "\(before)")
            #expect(before.contains("portcullis_build_info{version="), "\(before)")

            // The attack: traffic from 198.18.0.1, its offences (and nine others'), its traffic again.
            #expect(try network.sendUDP(from: "198.18.0.1", count: 20) == 20)
            let writer = try Probe(["write"] + lines + ["--offenders", "10", "--lines", "3"])
            #expect(try writer.finish().status == 0)
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try eventually(within: 10) { try maps.entries().count == 10 })
            #expect(try network.sendUDP(from: "198.18.0.1", count: 50) == 50)
            let ban = try runProcess(Products.cli, ["ban", "198.18.17.1", "198.18.18.0/24", "--control", socket])
            #expect(ban.status == 0, "\(ban.stderr)")

            // What the maps hold is walked at most once a second (a scrape reuses the last walk for
            // 1 s): the scrape that shows the bans just made comes within a second or two.
            var after = try scrape()
            #expect(
                try eventually(within: 10) {
                    after = try scrape()
                    return value(after, "portcullis_ban_map_entries{family=\"ipv4\"}") == 11
                }, "\(after)")
            let source = "source=\"shm:\(transport.shmName)\""
            #expect(value(after, "portcullis_lines_total{jail=\"default\",\(source)}") == 30, "\(after)")
            #expect(value(after, "portcullis_lines_matched_total{jail=\"default\",\(source)}") == 30)
            #expect(value(after, "portcullis_bans_total{jail=\"default\",origin=\"filter\"}") == 10)
            #expect(
                value(after, "portcullis_bans_total{jail=\"manual\",origin=\"operator\"}") == 2, "an address, a network"
            )
            #expect(value(after, "portcullis_line_to_ban_seconds_count") == 10)
            #expect(value(after, "portcullis_bans_in_force{jail=\"default\"}") == 10)
            #expect(value(after, "portcullis_bans_in_force{jail=\"manual\"}") == 2)
            #expect(value(after, "portcullis_ban_map_entries{family=\"ipv4\"}") == 11)
            let dropped = "portcullis_xdp_packets_total{verdict=\"dropped\"}"
            #expect((value(after, dropped) ?? 0) - (value(before, dropped) ?? 0) >= 50, "\(after)")
            // The same drops by the origin of the ban: the jail that banned 198.18.0.1.
            let byJail = "portcullis_dropped_packets_total{origin=\"jail\",name=\"default\",family=\"ipv4\"}"
            #expect((value(after, byJail) ?? 0) - (value(before, byJail) ?? 0) >= 50, "\(after)")
            let passed = "portcullis_xdp_packets_total{verdict=\"passed\"}"
            #expect((value(after, passed) ?? 0) - (value(before, passed) ?? 0) >= 20)
            #expect(value(after, "portcullis_control_requests_total{result=\"ok\"}").map { $0 >= 1 } == true)
            let recheck = try network.run(
                in: network.receiver,
                ["/bin/sh", "-c", "/usr/bin/curl -sS --max-time 10 \(url) | /usr/bin/promtool check metrics"])
            #expect(recheck.status == 0, "promtool: \(recheck.stdout) \(recheck.stderr)")

            let base = String(url.dropLast("/metrics".count))
            #expect(try fetch(base + "/nothing", ["-o", "/dev/null", "-w", "%{http_code}"]).stdout == "404")
            #expect(try fetch(url, ["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "x"]).stdout == "405")
            #expect(try fetch(base + "/").stdout.contains("/metrics"))

            // A second daemon on the port in use: refused in one line before it touches anything.
            let port = String(url.dropFirst("http://127.0.0.1:".count).prefix { $0.isNumber })
            let second = try network.run(
                in: network.receiver,
                [
                    daemonPath, "--interface", network.receiverInterface, "--pin-dir", scratch.path + "-second",
                    "--control", directory + "/second.sock", "--metrics", "127.0.0.1:" + port,
                ] + lines)
            #expect(second.status == 1 && second.stderr.contains("cannot listen"), "\(second.stderr)")
            #expect(!FileManager.default.fileExists(atPath: scratch.path + "-second"), "nothing pinned")
            #expect(!FileManager.default.fileExists(atPath: directory + "/second.sock"))
            #expect(daemon.isRunning, "alive after all that")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(text.contains("metrics at http://127.0.0.1:"), "\(text)")
        }
    }

    @Test(
        "the syslog socket fed by logger --socket: routed by tag to an sshd jail (fail2ban's filter, RFC 3164 and 5424) and a built-in one; UDP on loopback; other tags and users not allowed ban nothing"
    )
    func syslogSource() throws {
        let filters = "/etc/fail2ban/filter.d"
        guard FileManager.default.fileExists(atPath: filters + "/sshd.conf") else {
            if Privileges.inCI { Issue.record("fail2ban's filters are missing: tools/install-deps installs fail2ban") }
            return
        }
        try withTestNetwork("r") { network, scratch in
            let directory = NSTemporaryDirectory() + "pc-syslog-daemon-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            chmod(directory, 0o755)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let socket = directory + "/syslog.sock"
            let config = directory + "/portcullis.toml"
            try """
            [jail.sshd]
            source = "syslog:sshd,sshd-session"
            filter = "sshd"
            maxretry = 3
            bantime = "10m"

            [jail.app]
            source = "syslog:app"
            maxretry = 2
            bantime = "10m"
            """.write(toFile: config, atomically: true, encoding: .utf8)
            // UDP names no sender: refused, in one line, unless the operator accepts that.
            let common = [
                daemonPath, "--interface", network.receiverInterface, "--control", ControlScratch.path(),
                "--config", config, "--filter-dir", filters, "--pin-dir", scratch.path, "--syslog-socket", socket,
                "--syslog-udp", "127.0.0.1:5514", "--state-dir", directory + "/state",
            ]
            let refused = try network.run(in: network.receiver, ["timeout", "60"] + common)
            #expect(refused.status == 1, "\(refused.stdout) \(refused.stderr)")
            #expect(refused.stderr.contains("add --syslog-udp-any-sender"), "\(refused.stderr)")
            #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", config, "--filter-dir", filters, "--pin-dir", scratch.path, "--syslog-socket", socket,
                    "--syslog-udp", "127.0.0.1:5514", "--syslog-udp-any-sender", "--state-dir", directory + "/state",
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            func logger(_ arguments: [String], _ message: String, times: Int, as user: String? = nil) throws {
                for _ in 0..<times {
                    let command = ["/usr/bin/logger"] + arguments + [message]
                    let result =
                        if let user {
                            try runProcess(
                                "/usr/bin/setpriv", ["--reuid=\(user)", "--regid=\(user)", "--clear-groups"] + command)
                        } else {
                            try network.run(in: network.receiver, command)
                        }
                    #expect(result.status == 0, "\(result.stderr)")
                }
            }
            let unix = ["--socket", socket]
            try logger(unix + ["-t", "sshd", "-i"], "Failed password for root from 198.18.30.1 port 22 ssh2", times: 3)
            try logger(
                unix + ["--rfc5424", "-t", "sshd-session", "-i"],
                "Failed password for invalid user x from 198.18.30.4 port 22 ssh2", times: 3)
            try logger(
                unix + ["-t", "app"], "2026-12-01 10:00:00 client 198.18.30.2 exceeded request rate limit", times: 2)
            try logger(
                ["-d", "-n", "127.0.0.1", "-P", "5514", "-t", "app"],
                "2026-12-01 10:00:00 client 198.18.30.5 exceeded request rate limit", times: 2)
            // Other tags, and a user the socket does not take: nothing.
            try logger(
                unix + ["-t", "other", "-i"], "Failed password for root from 198.18.30.3 port 22 ssh2", times: 5)
            try logger(
                unix + ["-t", "sshd"], "2026-12-01 10:00:00 client 198.18.30.3 exceeded request rate limit", times: 5)
            try logger(
                unix + ["-t", "app"], "2026-12-01 10:00:00 client 198.18.30.6 exceeded request rate limit", times: 3,
                as: "65534")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            let banned = ["198.18.30.1", "198.18.30.4", "198.18.30.2", "198.18.30.5"]
            #expect(try eventually(within: 10) { try maps.entries().count == banned.count })
            let origins = try maps.originNames()
            let entries = try maps.entries()
            for (address, jail) in zip(banned, ["sshd", "sshd", "app", "app"]) {
                let entry = entries.first { $0.address.description == address }
                #expect(entry.map { origins[$0.origin] } == jail, "\(address) banned by \(jail)")
            }
            #expect(daemon.isRunning)
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(text.contains("syslog \(socket) and udp 127.0.0.1:5514 tagged sshd,sshd-session"), "\(text)")
            // sshd: 3 + 3 of its own, 5 of the other format (not matching); app: 2 + 2 of its own.
            #expect(text.contains("jail sshd: 11 lines, 6 matched"), "\(text)")
            #expect(text.contains("jail app: 4 lines, 4 matched"), "\(text)")
            #expect(text.contains("3 writers refused"), "\(text)")
            #expect(!FileManager.default.fileExists(atPath: socket), "the socket goes with the daemon")
        }
    }

    @Test(
        "aggregation on the testbed: three offending addresses of a /64 ban the /64 and a never-seen fourth is dropped; three banned addresses of a /24 ban the /24, their own bans go; a length the maps do not have is refused"
    )
    func aggregation() throws {
        try withTestNetwork("v") { network, scratch in
            let directory = NSTemporaryDirectory() + "pc-aggregate-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let log = directory + "/offences.log", config = directory + "/portcullis.toml"
            let banLog = directory + "/bans.log"
            FileManager.default.createFile(atPath: log, contents: nil)
            func write(_ aggregate: String) throws {
                try """
                [jail.web]
                source = "file:\(log)"
                maxretry = 3
                findtime = "10m"
                bantime = "10m"
                ipv6-prefix = 64
                aggregate-v4 = "\(aggregate)"
                """.write(toFile: config, atomically: true, encoding: .utf8)
            }
            // A length the maps have no hash for: refused before anything reads.
            try write("20:3")
            let refused = try network.run(
                in: network.receiver,
                [
                    daemonPath, "--interface", network.receiverInterface, "--config", config, "--pin-dir",
                    scratch.path, "--state-dir", directory + "/state", "--control", "none",
                ])
            #expect(refused.status == 1, "\(refused.stdout)")
            #expect(
                refused.stderr.contains(
                    "aggregate-v4 bans /20, which is not one of the maps' IPv4 prefix lengths (/24)"),
                "\(refused.stderr)")

            try write("24:3")
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", config, "--pin-dir", scratch.path, "--state-dir", directory + "/state", "--ban-log",
                    banLog,
                ],
                waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            func offend(_ addresses: [String], times: Int) throws {
                let handle = try #require(FileHandle(forWritingAtPath: log))
                defer { try? handle.close() }
                handle.seekToEndOfFile()
                for _ in 0..<times {
                    for address in addresses {
                        let line = OffenceLine.text(
                            time: UTCTime(secondsSinceEpoch: 1_795_718_566), address: IPAddress(address)!)
                        handle.write(Data((line + "\n").utf8))
                    }
                }
            }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            // One offence from each of three addresses of 2001:2::/64: three of that /64.
            try offend(["2001:2::a", "2001:2::b", "2001:2::c"], times: 1)
            let v6 = try IPNetwork(parsing: "2001:2::/64")
            #expect(try eventually(within: 10) { try maps.lookup(network: v6) != nil })
            #expect(try maps.entries().filter { $0.address.family == .ipv6 }.isEmpty, "no address of it banned")
            #expect(try network.sendUDP(from: "2001:2::1", count: 20) == 20)
            #expect(try eventually(within: 5) { try maps.lookup(network: v6)?.dropped == 20 }, "the never-seen fourth")

            // Three addresses of 198.18.0.0/24 banned: the /24 instead.
            try offend(["198.18.0.10", "198.18.0.11", "198.18.0.12"], times: 3)
            let v4 = try IPNetwork(parsing: "198.18.0.0/24")
            #expect(try eventually(within: 10) { try maps.lookup(network: v4) != nil })
            #expect(
                try eventually(within: 5) { try maps.entries().filter { $0.address.family == .ipv4 }.isEmpty },
                "members lifted")
            #expect(try network.sendUDP(from: "198.18.0.1", count: 20) == 20)
            #expect(try eventually(within: 5) { try maps.lookup(network: v4)?.dropped == 20 })
            let origins = try maps.originNames()
            #expect(try maps.lookup(network: v4).map { origins[$0.origin] } == "web")

            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(text.contains("IPv6 counted and banned by /64, 3 IPv4 bans in a /24 ban it"), "\(text)")
            let logged = (try? String(contentsOfFile: banLog, encoding: .utf8)) ?? ""
            #expect(logged.contains(" ban 2001:2::/64 jail=web for=600"), "\(logged)")
            #expect(logged.contains(" ban 198.18.0.0/24 jail=web for="), "\(logged)")
            #expect(logged.contains(" unban 198.18.0.10"), "\(logged)")
        }
    }

    @Test(
        "[blocklist.NAME] with reload: loaded at start, loaded again when the file changes, a bad version keeps the list in force (said); --prefix-lengths-v4 sets the maps' lengths"
    )
    func configuredBlocklists() throws {
        try withTestNetwork("x") { network, scratch in
            let directory = NSTemporaryDirectory() + "pc-feeds-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let list = directory + "/drop.txt", log = directory + "/app.log", config = directory + "/portcullis.toml"
            FileManager.default.createFile(atPath: log, contents: nil)
            try "198.18.0.1 ; first\n2001:2::/64\n".write(toFile: list, atomically: true, encoding: .utf8)
            try """
            [blocklist.drop]
            file = "\(list)"
            reload = true

            [jail.app]
            source = "file:\(log)"
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", config, "--pin-dir", scratch.path, "--state-dir", directory + "/state",
                    "--prefix-lengths-v4", "16,24",
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            #expect(try maps.prefixLengths(.ipv4) == [24, 16])
            func listed() throws -> Set<String> { Set(try maps.listEntries().map(\.network.description)) }
            #expect(try listed() == ["198.18.0.1", "2001:2::/64"])
            // A new version: swapped in within the daemon's 2 s check.
            try "198.18.0.2\n".write(toFile: list, atomically: true, encoding: .utf8)
            #expect(try eventually(within: 10) { try listed() == ["198.18.0.2"] })
            // A bad version: the list in force stays.
            try "198.18.0.3\n198.18.0.9/24\n".write(toFile: list, atomically: true, encoding: .utf8)
            #expect(
                waitForOutput(daemon, output, containing: "the list in force stays", within: 20),
                "the daemon refused the bad version at a check")
            #expect(try listed() == ["198.18.0.2"])
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
            #expect(
                text.contains("blocklist drop: 1 IPv4 and 1 IPv6 entries from \(list), reloaded when it changes"),
                "\(text)")
            #expect(text.contains("blocklist drop: reloaded, 1 IPv4 and 0 IPv6 entries"), "\(text)")
            #expect(
                text.contains("line 2: '198.18.0.9/24': host bits are set") && text.contains("the list in force stays"),
                "\(text)")
        }
    }
}

extension DaemonProcessTests {
    @Test(
        "list policy (N15): a blocklist's 0.0.0.0/0, ::/0, 224.0.0.0/8, the host's address and its gateway are refused and counted in its load line, by the daemon and by portcullis blocklist load; portcullis ban refuses never-bannable addresses and, without --force, networks shorter than the floor, with a daemon and without"
    )
    func blocklistPolicy() throws {
        try withTestNetwork("w") { network, scratch in
            // The receiver's default route: its gateway is a sender address.
            let gateway = TestNetwork.senderAddresses4[0]
            let route = try runProcess(
                "/usr/bin/env", ["ip", "-n", network.receiver, "route", "add", "default", "via", gateway])
            try #require(route.status == 0, "\(route.stderr)")
            let directory = NSTemporaryDirectory() + "pc-policy-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let list = directory + "/drop.txt", log = directory + "/app.log", config = directory + "/portcullis.toml"
            let socket = directory + "/control.sock"
            FileManager.default.createFile(atPath: log, contents: nil)
            try [
                "0.0.0.0/0", "::/0", "224.0.0.0/8", gateway, TestNetwork.receiverAddress4, "198.18.7.0/24",
                "2001:2:7::/48",
            ].joined(separator: "\n").write(toFile: list, atomically: true, encoding: .utf8)
            try """
            [blocklist.drop]
            file = "\(list)"

            [jail.app]
            source = "file:\(log)"
            """.write(toFile: config, atomically: true, encoding: .utf8)
            let (daemon, output) = try startDaemon(
                network,
                [
                    "--config", config, "--pin-dir", scratch.path, "--state-dir", directory + "/state", "--control",
                    socket,
                ], waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            func listed() throws -> Set<String> { Set(try maps.listEntries().map(\.network.description)) }
            #expect(try listed() == ["198.18.7.0/24", "2001:2:7::/48"])
            func cli(_ arguments: [String], daemon: Bool = true) throws -> ProcessResult {
                try runProcess(
                    Products.cli,
                    arguments + ["--pin-dir", scratch.path] + (daemon ? ["--control", socket] : []))
            }
            // portcullis ban through the daemon.
            var result = try cli(["ban", "192.0.0.0/4"])
            #expect(result.status != 0 && result.stderr.contains("give --force"), "\(result.stderr)")
            result = try cli(["ban", "--force", "0.0.0.0/0"])
            #expect(result.status != 0 && result.stderr.contains("never banned"), "\(result.stderr)")
            result = try cli(["ban", "224.0.0.1"])
            #expect(result.status != 0 && result.stderr.contains("never banned"), "\(result.stderr)")
            result = try cli(["ban", "--force", "198.0.0.0/7"])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try cli(["unban", "198.0.0.0/7"]).status == 0)
            let text = stopDaemon(daemon, output)
            #expect(
                text.contains(
                    "blocklist drop: 1 IPv4 and 1 IPv6 entries from \(list), 5 refused (2 too wide, 1 never bannable, "
                        + "2 allowlisted)"), "\(text)")

            // Without a daemon: the same file and bans, the driver's allowlist the daemon left in the maps.
            result = try cli(["blocklist", "load", "again", list], daemon: false)
            #expect(
                result.status == 0 && result.stdout.contains("5 refused (2 too wide, 1 never bannable, 2 allowlisted)"),
                "\(result.stdout) \(result.stderr)")
            #expect(try listed() == ["198.18.7.0/24", "2001:2:7::/48"])
            for (arguments, said) in [
                (["ban", gateway], "never banned"), (["ban", "0.0.0.0/0"], "never banned"),
                (["ban", "192.0.0.0/4"], "give --force"),
                (["ban", "255.255.255.255"], "never banned"), (["ban", "--force", "::/0"], "never banned"),
            ] {
                result = try runProcess(
                    Products.cli, arguments + ["--pin-dir", scratch.path, "--control", directory + "/none.sock"])
                #expect(result.status != 0 && result.stderr.contains(said), "\(arguments): \(result.stderr)")
            }
            #expect(try maps.entries().isEmpty && maps.networkBans().isEmpty)
        }
    }
}
