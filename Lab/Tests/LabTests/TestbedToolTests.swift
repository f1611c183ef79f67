// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

/// The testbed's programs across real namespaces: every frame `flood` sends (both engines, both
/// families) reaches `udp-server` through the kernel's checksum checks, from the address the
/// plan gives it, and becomes exactly one offence line when it is an attack.
@Suite("Testbed: flood and udp-server", .enabled(if: Privileges.runnable), .serialized)
struct TestbedToolTests {
    static let tool = Products.directory + "/portcullis-testbed"
    /// The part of `portcullis-testbed plan --json` these tests use (the plan's one copy).
    struct Plan: Decodable {
        struct Pair: Decodable { let client: String; let server: String }
        struct Server: Decodable {
            let ipv4: String, ipv6: String, ipv4_prefix: Int, ipv6_prefix: Int
        }
        let macs: Pair
        let server: Server
    }

    static let plan: Plan = {
        let output = (try? runProcess(tool, ["plan", "--json"]))?.stdout ?? ""
        return try! JSONDecoder().decode(Plan.self, from: Data(output.utf8))
    }()
    /// `portcullis-testbed engines`: which engine auto picks, and why the kernel refuses live
    /// frames where it does (a kernel feature, not a privilege: root with every capability gets
    /// EPERM from some kernels).
    struct EngineProbe: Decodable {
        struct Engine: Decodable { let available: Bool; let reason: String? }
        let live: Engine
        let xsk: Engine
        let auto: String
    }

    static let engines: EngineProbe? = {
        guard Privileges.isRoot, let output = try? runProcess(tool, ["engines"]).stdout else { return nil }
        return try? JSONDecoder().decode(EngineProbe.self, from: Data(output.utf8))
    }()
    /// Whether the live engine's test runs: as root, only where the kernel runs live frames
    /// (without root, Privileges.require fails it in CI).
    static var liveFramesRun: Bool { !Privileges.isRoot || engines?.live.available == true }
    static var liveFramesRefusal: Comment {
        Comment(
            rawValue:
                "the kernel refuses live frames: \(engines?.live.reason ?? "no answer from portcullis-testbed engines")"
        )
    }

    static var clientMAC: String { plan.macs.client }
    static var serverMAC: String { plan.macs.server }

    /// Namespaces `pct<pid><tag><number>c` and `...s` with the testbed's server addresses on the server
    /// side; removed by `remove`.
    struct Bed {
        let client: String
        let server: String

        init(_ tag: String) throws {
            let plan = TestbedToolTests.plan
            let number = ScratchNumber.next()
            client = "pct\(getpid())\(tag)\(number)c"
            server = "pct\(getpid())\(tag)\(number)s"
            do {
                for arguments in [
                    ["ip", "netns", "add", client], ["ip", "netns", "add", server],
                    [
                        "ip", "link", "add", client, "address", TestbedToolTests.clientMAC, "netns", client, "type",
                        "veth",
                        "peer", "name", server, "address", TestbedToolTests.serverMAC, "netns", server,
                    ],
                    [
                        "ip", "-n", server, "addr", "add", "\(plan.server.ipv4)/\(plan.server.ipv4_prefix)", "dev",
                        server,
                    ],
                    [
                        "ip", "-n", server, "addr", "add", "\(plan.server.ipv6)/\(plan.server.ipv6_prefix)", "dev",
                        server,
                        "nodad",
                    ],
                    ["ip", "-n", client, "link", "set", client, "up"],
                    ["ip", "-n", server, "link", "set", server, "up"],
                ] {
                    let result = try runProcess("/usr/bin/env", arguments)
                    guard result.status == 0 else {
                        throw TestNetworkError(command: arguments.joined(separator: " "), output: result.stderr)
                    }
                }
            } catch {
                remove()
                throw error
            }
        }

        func remove() {
            for namespace in [client, server] { _ = try? shell("ip", "netns", "del", namespace) }
        }

        func start(in namespace: String, _ arguments: [String]) throws -> (Process, Pipe) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments = ["--net=/run/netns/\(namespace)", "--"] + arguments
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            return (process, output)
        }
    }

    /// What one flood into udp-server through a fresh testbed gave.
    struct Delivery {
        var attached: ProcessResult
        var floodStatus: Int32
        var floodError: String
        var engine: String?
        var sent: [String: Int]
        var received: [String: Int]
        var lines: [Substring]
        var invalid: Int { sent["invalid_v4"]! + sent["invalid_v6"]! }
        var valid: Int { sent["valid_v4"]! + sent["valid_v6"]! }
        var lost: Int { invalid + valid - (received["received"] ?? 0) }
    }

    @Test(
        "every frame arrives with valid checksums from its planned address, and each attack becomes one line",
        arguments: ["packet", "xsk", "auto"])
    func framesArrive(engine: String) throws {
        try framesArriveCheck(engine: engine)
    }

    @Test(
        "live frames: every frame arrives with valid checksums from its planned address, and each attack becomes one line",
        .enabled(if: liveFramesRun, liveFramesRefusal))
    func liveFramesArrive() throws {
        try framesArriveCheck(engine: "live")
    }

    @Test("engines says why live frames are refused, and auto falls back to AF_XDP saying so")
    func autoEngine() throws {
        try Privileges.require()
        let probe = try #require(Self.engines, "portcullis-testbed engines answered")
        #expect(probe.auto == (probe.live.available ? "live" : probe.xsk.available ? "xsk" : "packet"))
        #expect(probe.xsk.available, "AF_XDP sockets: \(probe.xsk.reason ?? "")")
        #expect(probe.live.available || probe.live.reason?.contains("BPF_F_TEST_XDP_LIVE_FRAMES") == true)
    }

    func framesArriveCheck(engine: String) throws {
        try Privileges.require()
        // A burst can overflow veth's ring while the tests beside this one hold both CPUs (seen
        // once in CI: 229 of 21,663 live frames): a flood that lost frames is said and run once
        // more, in a new testbed; the second must lose none.
        var delivery = try deliver(engine: engine, tag: String(engine.prefix(1)))
        if delivery.lost > 0 {
            print(
                "testbed: \(engine) engine: \(delivery.lost) of \(delivery.invalid + delivery.valid) frames lost; once more"
            )
            delivery = try deliver(engine: engine, tag: String(engine.prefix(1)).uppercased())
        }
        #expect(delivery.attached.status == 0, "\(delivery.attached.stderr)")
        #expect(delivery.floodStatus == 0, "\(delivery.floodError)")
        // auto sends with the engine the probe names; where that is the fallback, it says why.
        let used = engine == "auto" ? Self.engines?.auto ?? "?" : engine
        #expect(delivery.engine == used, "flood's summary names the engine: \(delivery.floodError)")
        if engine == "auto" && used != "live" {
            #expect(delivery.floodError.contains("the kernel sends no live frames, so "))
        }
        let (sent, received, invalid, valid) = (delivery.sent, delivery.received, delivery.invalid, delivery.valid)
        // Paced at 20,000 + 2,000 frames/s for 1 s: how many a busy machine sends in that second is
        // not asserted (a CI run beside the soak sent 3,095 on the packet engine), only that both
        // kinds went out in their planned proportion, one valid frame to ten invalid ones.
        #expect(invalid > 0 && valid > 0, "\(sent)")
        let share = Double(valid) / Double(max(invalid + valid, 1))
        #expect(abs(share - 2_000.0 / 22_000.0) < 0.05, "valid share \(share): \(sent)")
        #expect(received["received"] == invalid + valid, "every frame passed the kernel's checks")
        #expect(received["invalid"] == invalid)
        #expect(received["logged"] == invalid)

        // Each attacker sends once per round: the addresses are exactly the plan's.
        var perAddress: [String: Int] = [:]
        for line in delivery.lines { perAddress[String(line.split(separator: " ")[3]), default: 0] += 1 }
        let expected = Set(
            (0..<300).map { "198.18.\(($0 + 1) >> 8).\(($0 + 1) & 255)" }
                + (0..<200).map { "2001:2:0:a::\(String($0 + 1, radix: 16))" })
        #expect(Set(perAddress.keys) == expected)
        let v4Rounds = sent["invalid_v4"]! / 300, v6Rounds = sent["invalid_v6"]! / 200
        #expect(perAddress["198.18.0.1"].map { $0 >= v4Rounds && $0 <= v4Rounds + 1 } == true)
        #expect(perAddress["2001:2:0:a::c8"].map { $0 >= v6Rounds && $0 <= v6Rounds + 1 } == true)
    }

    /// One flood of `engine` into udp-server through a testbed named by `tag`, removed after.
    func deliver(engine: String, tag: String) throws -> Delivery {
        let bed = try Bed(tag)
        let pins = ScratchPinDirectory("bed-\(engine)-\(tag)")
        let log = NSTemporaryDirectory() + "pc-bed-\(getpid())-\(engine)-\(tag).log"
        #expect(FileManager.default.createFile(atPath: log, contents: nil))
        defer {
            bed.remove()
            pins.remove()
            unlink(log)
        }
        // The filter (no bans: everything passes) on the server side; veth delivers XDP_TX frames
        // only to a peer with an XDP program.
        let attach = try runProcess(
            "/usr/bin/nsenter",
            [
                "--net=/run/netns/\(bed.server)", "--", Products.cli, "attach",
                bed.server, "--pin-dir", pins.path,
            ])

        let (server, serverOutput) = try bed.start(
            in: bed.server,
            [
                Self.tool, "udp-server", "--threads", "2",
                "--transport", "file", "--file-path", log,
            ])
        defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
        // udp-server prints its "listening" line once every socket is bound.
        var greeting = Data()
        while !String(decoding: greeting, as: UTF8.self).contains("listening") && server.isRunning {
            let chunk = serverOutput.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            greeting.append(chunk)
        }
        #expect(String(decoding: greeting, as: UTF8.self).contains("listening"))
        let flood = try runProcess(
            "/usr/bin/nsenter",
            [
                "--net=/run/netns/\(bed.client)", "--", Self.tool, "flood", "--engine", engine, "--interface",
                bed.client,
                "--source-mac", Self.clientMAC, "--server-mac", Self.serverMAC, "--attackers-v4", "300",
                "--attackers-v6", "200", "--valid-v4", "7", "--valid-v6", "5", "--rate", "20000", "--valid-rate",
                "2000",
                "--duration", "1",
            ])
        let sent = try #require(lastJSON(flood.stdout))
        let engineUsed =
            flood.stdout.split(separator: "\n").last { $0.hasPrefix("{") }.flatMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
            }?["engine"] as? String
        // udp-server logs each attack frame it received: stop it once all are there (a frame
        // lost on the way leaves the count short; after 30 s it is stopped all the same).
        let attacks = (sent["invalid_v4"] ?? 0) + (sent["invalid_v6"] ?? 0)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, server.isRunning,
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").utf8.count(where: { $0 == 10 }) < attacks
        {
            usleep(20_000)
        }
        kill(server.processIdentifier, SIGINT)
        server.waitUntilExit()
        let received = try #require(
            lastJSON(
                String(
                    decoding: greeting + serverOutput.fileHandleForReading.readDataToEndOfFile(),
                    as: UTF8.self)))
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        return Delivery(
            attached: attach, floodStatus: flood.status, floodError: flood.stderr, engine: engineUsed, sent: sent,
            received: received,
            lines: lines)
    }

    @Test("flood refuses an address plan whose groups would overlap, naming the fix")
    func refusesOverlap() throws {
        let result = try runProcess(Self.tool, ["flood", "--attackers-v4", "70000", "--valid-v4", "1"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("198.19.0.0/24") && result.stderr.contains("--valid-v6"))
        let tooMany = try runProcess(Self.tool, ["flood", "--attackers-v4", "131069"])
        #expect(tooMany.status != 0 && tooMany.stderr.contains("131068"))
    }

    @Test("flood outside the testbed names the missing interface")
    func missingInterface() throws {
        try Privileges.require()
        let result = try runProcess(
            Self.tool, ["flood", "--interface", "pc-no-such-if", "--attackers-v4", "1", "--duration", "0.1"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("no interface pc-no-such-if"))
    }

    /// The experiment runner owns its testbed (`pc-tb-*-INSTANCE`): an interrupted run must take
    /// it down with every process, pin and segment.
    @Test("an experiment interrupted with SIGINT leaves no namespace, pin, segment or process behind")
    func interruptedExperimentCleansUp() throws {
        try Privileges.require()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        let out = NSTemporaryDirectory() + "pc-interrupted-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let experiment = Process()
        experiment.executableURL = URL(fileURLWithPath: root + "/Lab/tools/experiment")
        experiment.arguments = [
            "run", "--duration", "30", "--rate", "100000", "--attackers", "1000", "--stack", "ipv4",
            "--flood-threads", "1", "--out", out,
        ]
        let instance = "t\(getpid())"
        experiment.environment = ProcessInfo.processInfo.environment.merging([
            "PORTCULLIS_BIN": Products.directory, "PC_TESTBED_INSTANCE": instance,
        ]) { $1 }
        experiment.standardOutput = FileHandle.nullDevice
        experiment.standardError = FileHandle.nullDevice
        try experiment.run()
        // The processes the runner started (and theirs), seen while they run: only these are
        // checked and, if the runner fails to, stopped. Nothing is looked up by name.
        var started: [Int32: String] = [:]
        defer {
            if experiment.isRunning {
                kill(experiment.processIdentifier, SIGKILL)
                for pid in started.keys { kill(pid, SIGKILL) }
                _ = try? runProcess(
                    "/usr/bin/env",
                    [
                        "PORTCULLIS_BIN=\(Products.directory)", "PC_TESTBED_INSTANCE=\(instance)",
                        root + "/Lab/tools/testbed", "down",
                    ])
            }
        }
        // Interrupt once the flood runs: everything is up then (however long a busy machine takes
        // to get there; the run's flood lasts 30 s).
        let upDeadline = Date().addingTimeInterval(180)
        var flooding = false
        while !flooding && experiment.isRunning && Date() < upDeadline {
            usleep(50_000)
            for (pid, command) in descendants(of: experiment.processIdentifier) { started[pid] = command }
            flooding = started.values.contains { $0.contains("portcullis-testbed flood") }
        }
        #expect(flooding, "the experiment never reached its flood")
        kill(experiment.processIdentifier, SIGINT)
        let deadline = Date().addingTimeInterval(120)
        while experiment.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!experiment.isRunning)
        #expect(experiment.terminationStatus != 0, "an interrupted run does not claim success")
        #expect(!(try shell("ip", "netns", "list").stdout.contains("-\(instance)")))
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/bpf/portcullis-testbed-\(instance)"))
        let segments = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? []
        #expect(!segments.contains { $0.hasPrefix("pc-exp-") })
        #expect(started.values.contains { $0.contains("portcullisd") }, "the daemon was among the processes started")
        for (pid, command) in started {
            #expect(kill(pid, 0) != 0 || processCommand(pid) != command, "\(command) (pid \(pid)) still runs")
        }
    }

    /// The processes below `root` (children, grandchildren...), with their command lines.
    func descendants(of root: Int32) -> [Int32: String] {
        var parents: [Int32: Int32] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(name), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { parents[pid] = parent }
        }
        var found: [Int32: String] = [:]
        var frontier: Set<Int32> = [root]
        while !frontier.isEmpty {
            let children = parents.filter { frontier.contains($0.value) }.map(\.key)
            frontier = Set(children.filter { found[$0] == nil })
            for child in frontier { found[child] = processCommand(child) }
        }
        return found
    }

    func processCommand(_ pid: Int32) -> String {
        let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        return String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
    }

    func lastJSON(_ text: String) -> [String: Int]? {
        for line in text.split(separator: "\n").reversed() where line.hasPrefix("{") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                continue
            }
            return object.compactMapValues { ($0 as? NSNumber)?.intValue }
        }
        return nil
    }
}
