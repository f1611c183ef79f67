// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport
@_spi(Testing) import XDPFirewall

/// The whole path an operator uses: the `portcullis` CLI attaches the filter to a veth inside a
/// network namespace, bans a source, and real UDP from another namespace is dropped or passed.
@Suite("End to end in network namespaces", .enabled(if: Privileges.runnable), .serialized)
struct NamespaceFilterTests {
    struct Counters: Decodable {
        let dropped: UInt64
        let passed: UInt64
        let expired: UInt64
        let malformed: UInt64
    }

    struct Ban: Decodable {
        let address: String
        let expires_in: UInt64?
        let dropped: UInt64
        let jail: String
    }

    func cli(_ network: TestNetwork, _ arguments: [String]) throws -> ProcessResult {
        try network.run(in: network.receiver, [Products.cli] + arguments)
    }

    func stats(_ network: TestNetwork, _ pins: String) throws -> Counters {
        let result = try cli(network, ["stats", "--json", "--pin-dir", pins])
        try #require(result.status == 0, "stats failed: \(result.stderr)")
        return try JSONDecoder().decode(Counters.self, from: Data(result.stdout.utf8))
    }

    /// Reads the counters until `settled` holds or 5 s pass: veth hands frames to the receiver's
    /// XDP program in its NAPI poll, which may run after the sender has returned.
    func stats(_ network: TestNetwork, _ pins: String, until settled: (Counters) -> Bool) throws -> Counters {
        let deadline = Date().addingTimeInterval(5)
        var counters = try stats(network, pins)
        while !settled(counters) && Date() < deadline {
            usleep(20_000)
            counters = try stats(network, pins)
        }
        return counters
    }

    func bans(_ network: TestNetwork, _ pins: String) throws -> [String: Ban] {
        let result = try cli(network, ["list", "--json", "--pin-dir", pins])
        try #require(result.status == 0, "list failed: \(result.stderr)")
        let list = try JSONDecoder().decode([Ban].self, from: Data(result.stdout.utf8))
        return Dictionary(uniqueKeysWithValues: list.map { ($0.address, $0) })
    }

    @Test func bannedSourceIsDroppedInTheDriverAndPassesAfterUnban() throws {
        try withTestNetwork("e") { network, scratch in
            let pins = scratch.path
            let attach = try cli(
                network,
                [
                    "attach", network.receiverInterface, "--mode", "native",
                    "--map-entries", "4096", "--pin-dir", pins,
                ])
            try #require(attach.status == 0, "attach failed: \(attach.stderr)")
            #expect(attach.stdout.contains("native mode"))
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(link.stdout.contains("xdp"), "the interface shows an XDP program")

            let (banned4, clean4) = (TestNetwork.senderAddresses4[0], TestNetwork.senderAddresses4[1])
            let (banned6, clean6) = (TestNetwork.senderAddresses6[0], TestNetwork.senderAddresses6[1])
            for address in [banned4, banned6] {
                let ban = try cli(network, ["ban", address, "--pin-dir", pins])
                try #require(ban.status == 0, "ban failed: \(ban.stderr)")
            }
            let before = try stats(network, pins)
            let count = 200
            for source in [banned4, clean4, banned6, clean6] {
                #expect(try network.sendUDP(from: source, count: count) == count)
            }
            let during = try stats(network, pins) {
                $0.dropped - before.dropped >= UInt64(2 * count) && $0.passed - before.passed >= UInt64(2 * count)
            }
            #expect(during.dropped - before.dropped == UInt64(2 * count), "every datagram of a banned source dropped")
            // Passed also counts whatever else the namespace sends (IPv6 router solicitations, MLD).
            #expect(during.passed - before.passed >= UInt64(2 * count), "every datagram of the others passed")
            #expect(during.malformed == before.malformed)
            let listed = try bans(network, pins)
            #expect(listed.values.allSatisfy { $0.jail == "manual" }, "an operator's bans are listed as manual")
            #expect(listed[banned4]?.dropped == UInt64(count))
            #expect(listed[banned6]?.dropped == UInt64(count))
            #expect(listed[banned4]?.expires_in == nil, "a ban without --for is permanent")

            for address in [banned4, banned6] {
                let unban = try cli(network, ["unban", address, "--pin-dir", pins])
                try #require(unban.status == 0, "unban failed: \(unban.stderr)")
            }
            #expect(try bans(network, pins).isEmpty)
            for source in [banned4, banned6] {
                #expect(try network.sendUDP(from: source, count: count) == count)
            }
            let after = try stats(network, pins) { $0.passed - during.passed >= UInt64(2 * count) }
            #expect(after.dropped == during.dropped, "nothing dropped after the unban")
            #expect(after.passed - during.passed >= UInt64(2 * count))

            // --all finds the interface by itself (what the package's removal runs).
            let detach = try cli(network, ["detach", "--all", "--pin-dir", pins])
            #expect(detach.status == 0, "detach failed: \(detach.stderr)")
            #expect(detach.stdout.contains("detached from \(network.receiverInterface); the bans pinned under"))
            let unlinked = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!unlinked.stdout.contains("xdp"), "no XDP program after detach")
            let again = try cli(network, ["detach", "--all", "--pin-dir", pins])
            #expect(again.status == 0, "a second detach --all failed: \(again.stderr)")
            #expect(again.stdout.contains("attached to no interface"))
        }
    }

    /// The id and tag of the XDP program on the receiver's interface (`ip -d link show`:
    /// "prog/xdp id N name NAME tag TAG").
    func xdpProgram(_ network: TestNetwork) throws -> (id: String, tag: String) {
        let shown = try network.run(in: network.receiver, ["ip", "-d", "link", "show", network.receiverInterface])
        let words = shown.stdout.split(whereSeparator: \.isWhitespace).map(String.init)
        func after(_ word: String) -> String? {
            guard let start = words.firstIndex(of: "prog/xdp"), let found = words[start...].firstIndex(of: word),
                found + 1 < words.count
            else { return nil }
            return words[found + 1]
        }
        let id = try #require(after("id"), "no XDP program on the interface: \(shown.stdout)")
        return (id, try #require(after("tag"), "no program tag shown: \(shown.stdout)"))
    }

    /// A package upgrade ships a new portcullis.bpf.o: attaching again (what the restarted daemon
    /// does too) swaps the running program for the object's in one step, and its bans stay in force.
    @Test func attachReplacesAnotherFilterProgramAndKeepsTheBans() throws {
        let variant = try VariantFilterObject()
        defer { variant.remove() }
        let object = try Products.filterObject()
        try withTestNetwork("u") { network, scratch in
            let (pins, interface) = (scratch.path, network.receiverInterface)
            let first = try cli(
                network, ["attach", interface, "--mode", "native", "--bpf-object", variant.path, "--pin-dir", pins])
            try #require(first.status == 0, "attach failed: \(first.stderr)")
            let banned = TestNetwork.senderAddresses4[0]
            let ban = try cli(network, ["ban", banned, "--pin-dir", pins])
            try #require(ban.status == 0, "ban failed: \(ban.stderr)")
            let old = try xdpProgram(network)

            let upgrade = try cli(network, ["attach", interface, "--bpf-object", object, "--pin-dir", pins])
            try #require(upgrade.status == 0, "attach failed: \(upgrade.stderr)")
            let new = try xdpProgram(network)
            #expect(new.id != old.id, "another program runs")
            #expect(try LoadedProgram(filterAt: object, pinDirectory: nil).tag() == new.tag, "the object's")
            #expect(
                upgrade.stdout
                    == "replaced the filter on \(interface) with the one in \(object) (program tag \(old.tag) → "
                    + "\(new.tag)): bans kept\n")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", interface]).stdout
            #expect(link.contains("xdp") && !link.contains("xdpgeneric"), "still in native mode: \(link)")

            let count = 100
            let before = try stats(network, pins)
            #expect(try network.sendUDP(from: banned, count: count) == count)
            let after = try stats(network, pins) { $0.dropped - before.dropped >= UInt64(count) }
            #expect(after.dropped - before.dropped == UInt64(count), "the ban made before the upgrade drops")
            #expect(try bans(network, pins)[banned]?.dropped == UInt64(count))

            let again = try cli(network, ["attach", interface, "--bpf-object", object, "--pin-dir", pins])
            #expect(again.status == 0, "attach failed: \(again.stderr)")
            #expect(again.stdout.hasPrefix("already attached to \(interface)"), "nothing replaced: \(again.stdout)")
            #expect(try xdpProgram(network).id == new.id)
        }
    }

    struct OriginDrops: Decodable {
        let origin: String
        let name: String
        let family: String
        let packets: UInt64
        let bytes: UInt64
    }

    struct DropsByOrigin: Decodable {
        let dropped_by_origin: [OriginDrops]
    }

    @Test(
        "drops by origin and family on real frames: an IPv4 source in a blocklist and an IPv6 one banned by hand, packets and bytes exactly (one-byte UDP datagrams: 43-byte IPv4 and 63-byte IPv6 frames)"
    )
    func dropsByOriginAndFamily() throws {
        try withTestNetwork("o") { network, scratch in
            let pins = scratch.path
            let list = NSTemporaryDirectory() + "portcullis-drops-\(getpid()).list"
            defer { unlink(list) }
            let attach = try cli(network, ["attach", network.receiverInterface, "--mode", "native", "--pin-dir", pins])
            try #require(attach.status == 0, "attach failed: \(attach.stderr)")
            let (listed4, banned6) = (TestNetwork.senderAddresses4[0], TestNetwork.senderAddresses6[0])
            try (listed4 + "\n").write(toFile: list, atomically: true, encoding: .utf8)
            let load = try cli(network, ["blocklist", "load", "e2e", list, "--pin-dir", pins])
            try #require(load.status == 0, "blocklist load failed: \(load.stderr)")
            try #require(try cli(network, ["ban", banned6, "--pin-dir", pins]).status == 0)
            let (count4, count6) = (30, 20)
            #expect(try network.sendUDP(from: listed4, count: count4) == count4)
            #expect(try network.sendUDP(from: banned6, count: count6) == count6)
            _ = try stats(network, pins) { $0.dropped >= UInt64(count4 + count6) }
            let result = try cli(network, ["stats", "--json", "--pin-dir", pins])
            try #require(result.status == 0, "stats failed: \(result.stderr)")
            let rows = try JSONDecoder().decode(DropsByOrigin.self, from: Data(result.stdout.utf8)).dropped_by_origin
            let byKey = Dictionary(uniqueKeysWithValues: rows.map { ("\($0.origin)/\($0.name)/\($0.family)", $0) })
            #expect(byKey["list/e2e/ipv4"]?.packets == UInt64(count4), "\(rows)")
            #expect(byKey["list/e2e/ipv4"]?.bytes == UInt64(count4 * 43), "Ethernet 14 + IPv4 20 + UDP 8 + 1")
            #expect(byKey["manual//ipv6"]?.packets == UInt64(count6), "\(rows)")
            #expect(byKey["manual//ipv6"]?.bytes == UInt64(count6 * 63), "Ethernet 14 + IPv6 40 + UDP 8 + 1")
            #expect(byKey["list/e2e/ipv6"]?.packets == 0 && byKey["manual//ipv4"]?.packets == 0)
            let table = try cli(network, ["stats", "--pin-dir", pins])
            #expect(table.stdout.contains("list     e2e"), "the table names the list: \(table.stdout)")
        }
    }

    @Test func timedBanExpiresInTheProgramWithoutAnyDaemon() throws {
        try withTestNetwork("t") { network, scratch in
            let pins = scratch.path
            // Generic mode here (native in the test above), so both attach paths run for real.
            let attach = try cli(
                network, ["attach", network.receiverInterface, "--mode", "generic", "--pin-dir", pins])
            try #require(attach.status == 0, "attach failed: \(attach.stderr)")
            #expect(
                try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
                    .stdout.contains("xdpgeneric"))
            let source = TestNetwork.senderAddresses4[0]
            // Long enough to outlast starting the sender on a loaded machine; the wait below polls.
            try #require(try cli(network, ["ban", source, "--for", "3", "--pin-dir", pins]).status == 0)
            #expect(try network.sendUDP(from: source, count: 20) == 20)
            let during = try stats(network, pins) { $0.dropped >= 20 }
            #expect(during.dropped == 20)
            // Wait for the ban to end (a bounded poll, not a timing assertion).
            let deadline = Date().addingTimeInterval(15)
            while Date() < deadline, try bans(network, pins)[source]?.expires_in ?? 0 > 0 {
                usleep(100_000)
            }
            usleep(200_000)
            #expect(try network.sendUDP(from: source, count: 20) == 20)
            let after = try stats(network, pins) { $0.expired >= 20 }
            #expect(after.dropped == 20, "an expired ban drops nothing")
            #expect(after.expired == 20, "and its packets are counted as expired passes")
        }
    }

    @Test func statsWatchWritesSamplesAndStopsOnSignal() throws {
        let csv = NSTemporaryDirectory() + "portcullis-stats-\(getpid()).csv"
        defer { unlink(csv) }
        try withTestNetwork("w") { network, scratch in
            let pins = scratch.path
            try #require(try cli(network, ["attach", network.receiverInterface, "--pin-dir", pins]).status == 0)
            try #require(try cli(network, ["ban", TestNetwork.senderAddresses4[0], "--pin-dir", pins]).status == 0)
            #expect(try network.sendUDP(from: TestNetwork.senderAddresses4[0], count: 50) == 50)
            try #require(try stats(network, pins) { $0.dropped >= 50 }.dropped == 50)

            // A bounded watch: JSON lines, one per sample, and the CSV rows of every sample.
            let watch = try cli(
                network,
                [
                    "stats", "--watch", "--json", "--interval", "50", "--duration", "0.5",
                    "--csv", csv, "--pin-dir", pins,
                ])
            try #require(watch.status == 0, "watch failed: \(watch.stderr)")
            let samples = watch.stdout.split(separator: "\n")
            #expect(samples.count >= 2)
            for line in samples {
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
                #expect(object?["dropped"] as? Int == 50)
                #expect(object?["dropped_rate"] != nil && object?["time"] != nil)
            }
            let rows = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
            #expect(rows.first == "time,counter,total,rate")
            #expect(rows.count == 1 + 5 * samples.count, "five counters per sample")
            #expect(rows.contains { $0.hasSuffix(",dropped,50,0") })

            // An open-ended watch ends cleanly on SIGINT.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
            process.arguments = [
                "--net=/run/netns/\(network.receiver)", "--", Products.cli, "stats", "--watch",
                "--pin-dir", pins,
            ]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            // The header line is printed after the signals are blocked: only then is SIGINT a request to stop.
            var seen = Data()
            while !seen.contains(UInt8(ascii: "\n")) {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                seen.append(chunk)
            }
            kill(process.processIdentifier, SIGINT)  // nsenter execs the CLI: same process
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            #expect(process.terminationReason == .exit && process.terminationStatus == 0)
        }
    }

    @Test(
        "networks and blocklists on real traffic: a /24 and a /64 drop their sources, unban lifts them; a list with a bad line is refused by line number with the list in force unchanged; a list drops its entries only; unload"
    )
    func networksAndBlocklists() throws {
        try withTestNetwork("s") { network, scratch in
            let pins = scratch.path
            let attach = try cli(
                network, ["attach", network.receiverInterface, "--map-entries", "4096", "--pin-dir", pins])
            try #require(attach.status == 0, "attach failed: \(attach.stderr)")
            let sources = TestNetwork.senderAddresses4 + TestNetwork.senderAddresses6
            /// Sends 50 datagrams from each source; returns how many of all were dropped.
            func dropped() throws -> UInt64 {
                let before = try stats(network, pins)
                for source in sources { #expect(try network.sendUDP(from: source, count: 50) == 50) }
                let after = try stats(network, pins) {
                    ($0.dropped + $0.passed) - (before.dropped + before.passed) >= UInt64(50 * sources.count)
                }
                return after.dropped - before.dropped
            }
            var result = try cli(network, ["ban", "198.18.0.0/24", "--for", "600", "--pin-dir", pins])
            #expect(result.status == 0 && result.stdout.contains("banned 198.18.0.0/24 for 600 s"), "\(result.stderr)")
            result = try cli(network, ["ban", "2001:2::/64", "--pin-dir", pins])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try dropped() == 200, "every source is inside one of the two networks")
            let listed = try bans(network, pins)
            #expect(listed["198.18.0.0/24"]?.dropped == 100 && listed["198.18.0.0/24"]?.expires_in != nil)
            #expect(listed["2001:2::/64"]?.dropped == 100 && listed["2001:2::/64"]?.jail == "manual")
            result = try cli(network, ["ban", "198.18.0.7/24", "--pin-dir", pins])
            #expect(result.status == 1 && result.stderr.contains("the network is 198.18.0.0/24"), "\(result.stderr)")
            for banned in ["198.18.0.0/24", "2001:2::/64"] {
                result = try cli(network, ["unban", banned, "--pin-dir", pins])
                #expect(result.status == 0 && result.stdout.contains("unbanned \(banned)"), "\(result.stderr)")
            }
            #expect(try dropped() == 0)

            let directory = NSTemporaryDirectory() + "pc-lists-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let good = directory + "/drop.txt", bad = directory + "/bad.txt"
            try "; Spamhaus-style\n198.18.0.1 ; SBL1\n# a comment\n\n2001:2::/64\n".write(
                toFile: good, atomically: true, encoding: .utf8)
            try "198.18.0.2\n198.18.0.7/24\nnot-an-address\n".write(toFile: bad, atomically: true, encoding: .utf8)
            result = try cli(network, ["blocklist", "load", "drop", good, "--pin-dir", pins])
            #expect(
                result.status == 0 && result.stdout.contains("loaded drop: 1 IPv4 and 1 IPv6 entries"),
                "\(result.stderr)")
            #expect(try dropped() == 150, "198.18.0.1 and both IPv6 sources; 198.18.0.2 passes")
            result = try cli(network, ["blocklist", "load", "drop", bad, "--pin-dir", pins])
            #expect(result.status == 1, "\(result.stdout)")
            #expect(result.stderr.contains("line 2: '198.18.0.7/24': host bits are set"), "\(result.stderr)")
            #expect(result.stderr.contains("line 3:") && result.stderr.contains("unchanged"), "\(result.stderr)")
            #expect(try dropped() == 150, "the list in force stays")
            result = try cli(network, ["blocklist", "list", "--pin-dir", pins])
            #expect(result.stdout.contains("drop: 1 IPv4, 1 IPv6 entries"), "\(result.stdout)")
            #expect(try bans(network, pins)["198.18.0.1"]?.jail == "list:drop")
            result = try cli(network, ["blocklist", "unload", "drop", "--pin-dir", pins])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(try dropped() == 0)
            result = try cli(network, ["blocklist", "unload", "drop", "--pin-dir", pins])
            #expect(result.status == 1 && result.stderr.contains("no list named drop"), "\(result.stderr)")

            // Eight lists of new names loaded at once by eight processes: the writers' lock keeps
            // every one, each in an origin slot of its own (two loaders naming a slot at once took
            // the same one before the naming was under the lock).
            var loaders: [Process] = []
            for list in 0..<8 {
                let file = directory + "/list\(list).txt"
                try (0..<2_000).map { "2001:2:0:\(String(0x100 + list, radix: 16)):1::\(String($0, radix: 16))" }
                    .joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
                let process = Process()
                process.executableURL = URL(fileURLWithPath: Products.cli)
                process.arguments = ["blocklist", "load", "l\(list)", file, "--pin-dir", pins]
                process.standardOutput = FileHandle.nullDevice
                try process.run()
                loaders.append(process)
            }
            for process in loaders {
                process.waitUntilExit()
                #expect(process.terminationStatus == 0)
            }
            result = try cli(network, ["blocklist", "list", "--pin-dir", pins])
            for list in 0..<8 {
                #expect(result.stdout.contains("l\(list): 0 IPv4, 2000 IPv6 entries"), "\(result.stdout)")
            }
            _ = try cli(network, ["detach", network.receiverInterface, "--pin-dir", pins])
        }
    }

    @Test(
        "a 100,000-entry blocklist swapped for another again and again under a flood: no frame from a source in both lists ever passes, none from a source in neither is ever dropped"
    )
    func blocklistSwapUnderFlood() throws {
        try withTestNetwork("u") { network, scratch in
            let pins = scratch.path
            let attach = try cli(
                network, ["attach", network.receiverInterface, "--map-entries", "4096", "--pin-dir", pins])
            try #require(attach.status == 0, "attach failed: \(attach.stderr)")
            let directory = NSTemporaryDirectory() + "pc-swap-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            // both: 198.18.0.1; only A: 198.18.0.2; only B: 2001:2::2; neither: 2001:2::1. The rest of
            // each list: 99,998 IPv6 entries of its own, /128s and /64s.
            func list(_ own: [String], group: Int) -> String {
                var lines = own
                for index in 0..<99_998 {
                    lines.append(
                        index % 10 == 0
                            ? "2001:2:0:\(String(0x1000 + group * 0x1000 + index / 10, radix: 16))::/64"
                            : "2001:2:0:\(String(group, radix: 16)):1:0:\(String(index >> 16, radix: 16)):\(String(index & 0xffff, radix: 16))"
                    )
                }
                return lines.joined(separator: "\n") + "\n"
            }
            let a = directory + "/a.txt", b = directory + "/b.txt"
            try list(["198.18.0.1", "198.18.0.2"], group: 0xa).write(toFile: a, atomically: true, encoding: .utf8)
            try list(["198.18.0.1", "2001:2::2"], group: 0xb).write(toFile: b, atomically: true, encoding: .utf8)
            var load = try cli(network, ["blocklist", "load", "flood", a, "--pin-dir", pins])
            try #require(load.status == 0, "\(load.stderr)")

            // The receiver counts datagrams by source; the sender sends round-robin from the four.
            // Both are driven by the test, not by the clock: the sender answers "sent" once it
            // has sent 200 more rounds after each line the test writes (so every list swapped in
            // meets traffic), and stops at end of input after at least 1,500 rounds; the receiver
            // reads until it has every datagram the sender says came from the source in neither
            // list (60 s at most).
            let receiver = """
                import socket, select, json, os, time
                socks = []
                for family, address in ((socket.AF_INET, '\(TestNetwork.receiverAddress4)'), (socket.AF_INET6, '\(TestNetwork.receiverAddress6)')):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    # SO_RCVBUFFORCE (33): past rmem_max, so that a receiver the machine starves
                    # loses nothing; SO_RXQ_OVFL (40): what the socket dropped all the same.
                    s.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)
                    s.setsockopt(socket.SOL_SOCKET, 40, 1)
                    s.bind((address, 40007))
                    socks.append(s)
                print('ready', flush=True)
                counts, expected, pending, deadline = {'overflow': 0}, None, b'', None
                while expected is None or (counts.get('2001:2::1', 0) + counts['overflow'] < expected and time.time() < deadline):
                    readable, _, _ = select.select(socks + ([0] if expected is None else []), [], [], 0.1)
                    for s in readable:
                        if s == 0:
                            pending += os.read(0, 4096)
                            if b'\\n' in pending:
                                expected, deadline = int(pending.split(b'\\n')[0]), time.time() + 60
                            continue
                        while True:
                            try:
                                _, ancillary, _, source = s.recvmsg(64, socket.CMSG_SPACE(4), socket.MSG_DONTWAIT)
                            except BlockingIOError:
                                break
                            counts[source[0]] = counts.get(source[0], 0) + 1
                            for level, kind, value in ancillary:
                                if level == socket.SOL_SOCKET and kind == 40 and len(value) >= 4:
                                    counts['overflow'] = max(counts['overflow'], int.from_bytes(value[:4], 'little'))
                print(json.dumps(counts), flush=True)
                """
            let sender = """
                import socket, select, json, os
                sources = ['198.18.0.1', '198.18.0.2', '2001:2::1', '2001:2::2']
                socks = []
                for source in sources:
                    family = socket.AF_INET6 if ':' in source else socket.AF_INET
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    s.bind((source, 0))
                    socks.append((s, '\(TestNetwork.receiverAddress6)' if ':' in source else '\(TestNetwork.receiverAddress4)'))
                sent = {source: 0 for source in sources}
                rounds, answer_at, ended = 0, [200], False
                while not ended or rounds < 1500:
                    for _ in range(50):
                        for (s, destination), source in zip(socks, sources):
                            s.sendto(b'F', (destination, 40007))
                            sent[source] += 1
                    rounds += 50
                    while answer_at and rounds >= answer_at[0]:
                        answer_at.pop(0)
                        print('sent', flush=True)
                    if not ended and select.select([0], [], [], 0.002)[0]:
                        data = os.read(0, 4096)
                        ended = not data
                        answer_at += [rounds + 200] * data.count(b'\\n')
                print(json.dumps(sent), flush=True)
                """
            func start(_ namespace: String, _ script: String) throws -> (Process, Pipe, Pipe) {
                let process = Process()
                process.executableURL = URL(fileURLWithPath: "/usr/bin/nsenter")
                process.arguments = ["--net=/run/netns/\(namespace)", "--", "python3", "-c", script]
                let output = Pipe(), input = Pipe()
                process.standardOutput = output
                process.standardInput = input
                try process.run()
                return (process, output, input)
            }
            /// Reads `pipe` up to and including the next line; nil at its end.
            func line(_ pipe: Pipe, _ buffer: inout Data) -> String? {
                while !buffer.contains(UInt8(ascii: "\n")) {
                    let chunk = pipe.fileHandleForReading.availableData
                    if chunk.isEmpty { return nil }
                    buffer.append(chunk)
                }
                let end = buffer.firstIndex(of: UInt8(ascii: "\n"))!
                defer { buffer = Data(buffer[(end + 1)...]) }
                return String(decoding: buffer[buffer.startIndex..<end], as: UTF8.self)
            }
            let (listening, heard, toReceiver) = try start(network.receiver, receiver)
            defer { if listening.isRunning { kill(listening.processIdentifier, SIGKILL) } }
            var heardBuffer = Data(), saidBuffer = Data()
            try #require(line(heard, &heardBuffer) == "ready")
            let (sending, said, toSender) = try start(network.sender, sender)
            defer { if sending.isRunning { kill(sending.processIdentifier, SIGKILL) } }
            // 200 rounds under list a, then 200 more after each swap.
            try #require(line(said, &saidBuffer) == "sent")
            var swaps = 0
            while swaps < 6 {
                load = try cli(network, ["blocklist", "load", "flood", swaps % 2 == 0 ? b : a, "--pin-dir", pins])
                #expect(load.status == 0, "\(load.stderr)")
                swaps += 1
                toSender.fileHandleForWriting.write(Data("swapped\n".utf8))
                try #require(line(said, &saidBuffer) == "sent", "the sender stopped")
            }
            try toSender.fileHandleForWriting.close()
            sending.waitUntilExit()
            let sent = try JSONDecoder().decode([String: Int].self, from: Data((line(said, &saidBuffer) ?? "").utf8))
            toReceiver.fileHandleForWriting.write(Data("\(sent["2001:2::1"] ?? 0)\n".utf8))
            listening.waitUntilExit()
            let received = try JSONDecoder().decode(
                [String: Int].self, from: Data((line(heard, &heardBuffer) ?? "").utf8))
            #expect(swaps >= 3, "the lists were swapped while the flood ran (\(swaps) swaps)")
            #expect((sent["198.18.0.1"] ?? 0) > 1000, "\(sent)")
            #expect(received["198.18.0.1", default: 0] == 0, "a source in both lists: \(received) of \(sent)")
            // Every datagram of the source in neither list reached its socket (the filter dropped none
            // of them); one the socket itself had no room for (the machine starving the receiver,
            // SO_RXQ_OVFL) is not the filter's.
            let overflow = received["overflow", default: 0]
            #expect(
                received["2001:2::1", default: 0] + overflow >= sent["2001:2::1"] ?? 0
                    && received["2001:2::1", default: 0] <= sent["2001:2::1"] ?? 0,
                "a source in neither: \(received) of \(sent)")
            // The others passed while their list was out, and were dropped while it was in.
            #expect(received["198.18.0.2", default: 0] < sent["198.18.0.2"] ?? 0)
            #expect(received["2001:2::2", default: 0] < sent["2001:2::2"] ?? 0)
            _ = try cli(network, ["detach", network.receiverInterface, "--pin-dir", pins])
        }
    }
}
