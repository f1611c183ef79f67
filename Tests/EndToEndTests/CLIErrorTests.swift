// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Foundation
import Testing
import TestSupport
import XDPFirewall

/// Bad input gets one line on stderr naming the problem, a non-zero exit, and no half-done state.
@Suite("CLI errors", .enabled(if: Privileges.runnable), .serialized)
struct CLIErrorTests {
    func expectOneLineError(
        _ result: ProcessResult, mentioning words: [String],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(result.status != 0, "exit status", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1, "one line, got: \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.hasPrefix("portcullis: "), sourceLocation: sourceLocation)
        for word in words {
            #expect(result.stderr.contains(word), "'\(word)' in: \(result.stderr)", sourceLocation: sourceLocation)
        }
        #expect(!result.stderr.contains("Fatal error"), sourceLocation: sourceLocation)
    }

    @Test func invalidAddresses() throws {
        try Privileges.require()
        for text in ["300.1.1.1", "2001:2::1::1", "fe80::1%lo", "banana"] {
            expectOneLineError(try runProcess(Products.cli, ["ban", text]), mentioning: [text, "not an IPv4 or IPv6"])
            expectOneLineError(try runProcess(Products.cli, ["unban", text]), mentioning: [text])
        }
    }

    @Test("a listing a daemon cuts off midway (no final newline) is an error, not a short list")
    func cutListingIsAnError() throws {
        try Privileges.require()
        let directory = NSTemporaryDirectory() + "pc-cut-list-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/control.sock"
        // A peer that answers as a daemon whose listing failed halfway: the stream's header, a
        // part of a row, then the end of the connection.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [
            "-c",
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(sys.argv[1]); s.listen(1)
            c, _ = s.accept(); c.recv(65536)
            c.sendall(b'{"ok":true,"stream":true}\\n[{"address":"198.18.0.1","dropped":0')
            c.close()
            """,
            socket,
        ]
        try server.run()
        defer {
            if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            server.waitUntilExit()
        }
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket) && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        let result = try runProcess(Products.cli, ["list", "--json", "--control", socket])
        expectOneLineError(result, mentioning: ["broke off before its end"])
    }

    @Test("a daemon that takes a connection but never replies: list falls back to the maps after its timeout (N8)")
    func silentDaemonFallsBack() throws {
        try Privileges.require()
        let directory = NSTemporaryDirectory() + "pc-silent-control-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/control.sock"
        // A listener that never accepts: the connection succeeds (the backlog) and nothing answers.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = [
            "-c",
            """
            import socket, sys, time
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(sys.argv[1]); s.listen(4)
            time.sleep(120)
            """,
            socket,
        ]
        try server.run()
        defer {
            if server.isRunning { kill(server.processIdentifier, SIGKILL) }
            server.waitUntilExit()
        }
        var waited = 0
        while !FileManager.default.fileExists(atPath: socket) && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        let pins = directory + "/no-pins"
        let result = try runProcess(Products.cli, ["list", "--json", "--control", socket, "--pin-dir", pins])
        #expect(result.stderr.contains("sent no reply within 10000 ms"), "\(result.stderr)")
        #expect(result.stderr.contains(pins), "it went on to read the maps there: \(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"))
    }

    @Test func banTimesThatCannotBe() throws {
        try Privileges.require()
        expectOneLineError(try runProcess(Products.cli, ["ban", "198.18.0.1", "--for", "0"]), mentioning: ["--for"])
        expectOneLineError(
            try runProcess(Products.cli, ["ban", "198.18.0.1", "--for", "18446744073709551615"]),
            mentioning: ["--for", "too long"])
    }

    @Test func unknownInterface() throws {
        try Privileges.require()
        expectOneLineError(
            try runProcess(Products.cli, ["attach", "pcnosuchif0"]),
            mentioning: ["pcnosuchif0", "no network interface"])
        expectOneLineError(try runProcess(Products.cli, ["detach", "pcnosuchif0"]), mentioning: ["pcnosuchif0"])
        expectOneLineError(try runProcess(Products.cli, ["detach"]), mentioning: ["interface", "--all"])
        expectOneLineError(try runProcess(Products.cli, ["detach", "--all", "pcnosuchif0"]), mentioning: ["not both"])
    }

    @Test func missingObjectLeavesNothingAttached() throws {
        try withTestNetwork("o") { network, scratch in
            let result = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", network.receiverInterface,
                    "--bpf-object", "/nonexistent/portcullis.bpf.o",
                    "--pin-dir", scratch.path,
                ])
            expectOneLineError(result, mentioning: ["/nonexistent/portcullis.bpf.o", "not found", "tools/build-bpf"])
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"))
            #expect(!scratch.pins.holdsMaps)
        }
    }

    @Test(
        "an attach that fails after libbpf pinned the maps (descriptors run out) or before (not an ELF object) leaves no pins and no directory (N19)"
    )
    func failedLoadLeavesNoPinsNorDirectory() throws {
        try withTestNetwork("d") { network, scratch in
            // 30 descriptors: libbpf creates and pins every map, then duplicating them runs out.
            let exhausted = try network.run(
                in: network.receiver,
                [
                    "/usr/bin/prlimit", "--nofile=30", "--", Products.cli, "attach", network.receiverInterface,
                    "--mode", "generic", "--pin-dir", scratch.path,
                ])
            expectOneLineError(exhausted, mentioning: ["Too many open files"])
            #expect(!scratch.pins.holdsMaps, "the maps pinned before the descriptors ran out were removed")
            #expect(access(scratch.path, F_OK) != 0, "the pin directory it made was removed")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"))

            let notELF = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", network.receiverInterface, "--bpf-object", "/etc/passwd",
                    "--pin-dir", scratch.path,
                ])
            expectOneLineError(notELF, mentioning: ["/etc/passwd"])
            #expect(access(scratch.path, F_OK) != 0, "no empty pin directory")
        }
    }

    @Test(
        "a blocklist with more IPv4 addresses than the list layer holds is refused as soon as its lines pass the capacity, naming the file, the line and the list (N19)"
    )
    func blocklistOverCapacityStopsEarly() throws {
        try Privileges.require()
        let directory = NSTemporaryDirectory() + "pc-big-list-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let file = directory + "/big.txt"
        // 1,048,577 distinct addresses of 198.18.0.0/15 and beyond (the capacity is 1,048,576), then more.
        var text = ""
        text.reserveCapacity(20 << 20)
        for index in 0..<(BanMaps.listCapacity + 50_000) {
            text += "\(10 + index >> 16 & 0xff).\(index >> 8 & 0xff).\(index & 0xff).1\n"
        }
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        let result = try runProcess(
            Products.cli, ["blocklist", "load", "big", file, "--pin-dir", directory + "/no-pins"])
        expectOneLineError(
            result,
            mentioning: [
                file, "more than \(BanMaps.listCapacity) IPv4 addresses by line \(BanMaps.listCapacity + 1)",
                "the list big in force is unchanged",
            ])
    }

    @Test func failedAttachLeavesNoPinsAndSaysWhatToDo() throws {
        try withTestNetwork("f") { network, scratch in
            // Loopback has no native XDP: the program loads (pinning new maps), then the attach fails.
            let result = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", "lo", "--mode", "native",
                    "--pin-dir", scratch.path,
                ])
            expectOneLineError(result, mentioning: ["native mode", "--mode generic"])
            #expect(!scratch.pins.holdsMaps, "the maps pinned by the failed attach were removed")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", "lo"])
            #expect(!link.stdout.contains("xdp"))
            // Attaching with another explicit mode than the one in force is refused, not ignored.
            try #require(
                try network.run(
                    in: network.receiver,
                    [
                        Products.cli, "attach", network.receiverInterface,
                        "--mode", "generic", "--pin-dir", scratch.path,
                    ]
                ).status == 0)
            let again = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", network.receiverInterface,
                    "--mode", "native", "--pin-dir", scratch.path,
                ])
            expectOneLineError(again, mentioning: ["already attached", "generic mode", "detach"])
        }
    }

    @Test func relativePinDirectoryIsRefused() throws {
        try Privileges.require()
        expectOneLineError(
            try runProcess(Products.cli, ["list", "--pin-dir", "relative/pins"]),
            mentioning: ["relative/pins", "absolute"])
    }

    @Test func mapsNotPinned() throws {
        try Privileges.require()
        expectOneLineError(
            try runProcess(Products.cli, ["list", "--pin-dir", "/sys/fs/bpf/portcullis-nothing-here"]),
            mentioning: ["no Portcullis maps pinned", "portcullis attach"])
    }

    @Test func notRootIsToldToBeRoot() throws {
        try Privileges.require()
        let scratch = ScratchPinDirectory("nobody")
        defer { scratch.remove() }
        let program = try LoadedProgram(
            filterAt: try Products.filterObject(), pinDirectory: scratch.pins,
            mapEntries: 16)
        _ = program
        // An unprivileged user, all capabilities gone.
        let asNobody = [
            "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", Products.cli,
        ]
        for command in [["list"], ["stats"], ["ban", "198.18.0.1"], ["unban", "198.18.0.1"]] {
            let result = try runProcess("/usr/bin/env", asNobody + command + ["--pin-dir", scratch.path])
            expectOneLineError(result, mentioning: ["permission denied", "run as root"])
        }
        #expect(try BanMaps.open(pinnedIn: scratch.pins).entries().isEmpty, "nothing was banned")
        try withTestNetwork("n") { network, _ in
            let attach = try network.run(
                in: network.receiver,
                asNobody + [
                    "attach", network.receiverInterface,
                    "--pin-dir", scratch.path,
                ])
            expectOneLineError(attach, mentioning: ["run as root"])
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"))
        }
    }

    @Test func pinsOfAnotherLayoutAreRefusedWithoutAttaching() throws {
        try withTestNetwork("l") { network, scratch in
            try scratch.pins.prepare()
            let fd = bpf_map_create(BPF_MAP_TYPE_HASH, PC_MAP_BANS_V6, 4, 16, 16, nil)
            try #require(fd >= 0)
            defer { close(fd) }
            try #require(bpf_obj_pin(fd, scratch.path + "/" + PC_MAP_BANS_V6) == 0)
            let attach = try network.run(
                in: network.receiver,
                [
                    Products.cli, "attach", network.receiverInterface,
                    "--pin-dir", scratch.path,
                ])
            expectOneLineError(attach, mentioning: [scratch.path, "another layout", "--pin-dir"])
            let link = try network.run(in: network.receiver, ["ip", "link", "show", network.receiverInterface])
            #expect(!link.stdout.contains("xdp"), "nothing attached")
            for command in [["list"], ["ban", "198.18.0.1"], ["stats"]] {
                expectOneLineError(
                    try runProcess(Products.cli, command + ["--pin-dir", scratch.path]),
                    mentioning: ["another layout"])
            }
        }
    }
}
