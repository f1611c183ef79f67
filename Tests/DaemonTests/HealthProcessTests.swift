// SPDX-License-Identifier: Apache-2.0
import Foundation
import Testing
import TestSupport

extension DaemonProcessSuite {
    /// The lines of `text` that contain `phrase`, but the health's (`DEGRADED: ...`, `still DEGRADED
    /// after ...`): those name a companion's error again by design, while it lasts.
    func linkLines(_ text: String, containing phrase: String) -> [Substring] {
        text.split(separator: "\n").filter { $0.contains(phrase) && !$0.contains("DEGRADED") }
    }
}

/// portcullisd's health as an operator reads it: `portcullis status` and its exit status, the
/// metrics, and the warning repeated while a problem lasts.
extension DaemonProcessTests {
    /// Takes every XDP program off `interface` as a tool other than portcullis would (`ip link`):
    /// the driver's and the generic slot.
    func removeXDP(_ network: TestNetwork, _ interface: String) throws {
        let native = try network.run(in: network.receiver, ["ip", "link", "set", "dev", interface, "xdp", "off"])
        #expect(native.status == 0, "\(native.stderr)")
        _ = try network.run(in: network.receiver, ["ip", "link", "set", "dev", interface, "xdpgeneric", "off"])
    }

    /// `portcullis attach` of `interface` again, and the daemon's line that `problem` (its summary)
    /// is over.
    func attachAgain(
        _ network: TestNetwork, _ interface: String, pins: String, _ daemon: Process, _ output: Pipe,
        clearing problem: String
    ) throws {
        let attached = try network.run(in: network.receiver, [Products.cli, "attach", interface, "--pin-dir", pins])
        #expect(attached.status == 0, "\(attached.stderr)")
        #expect(
            waitForOutput(daemon, output, within: 20) {
                $0.contains("no longer degraded after ") && $0.contains(" s: " + problem)
            }, "the daemon saw it back")
    }

    @Test(
        "a filter taken off under the daemon: DEGRADED in status (exit 2), metric and a repeated warning, until attached again"
    )
    func detachIsDegraded() throws {
        try withTestNetwork("h") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let directory = NSTemporaryDirectory() + "pc-health-test-\(getpid())"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let ready = directory + "/ready.json"
            let control = directory + "/control.sock"
            let interface = network.receiverInterface
            let arguments =
                transport.arguments("shm") + [
                    "--pin-dir", scratch.path, "--metrics", "127.0.0.1:0", "--ready-file", ready, "--control", control,
                    "--degraded-warning-interval", "0.5",
                ]
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            func status() throws -> ProcessResult {
                try network.run(in: network.receiver, [Products.cli, "status", "--control", control])
            }
            let series = "portcullis_filter_attached{interface=\"\(interface)\"}"
            var healthy = try status()
            #expect(healthy.status == 0, "\(healthy.stdout) \(healthy.stderr)")
            #expect(healthy.stdout.hasPrefix("OK\n"), "\(healthy.stdout)")
            var metrics = try scrape(network, ready: ready)
            #expect(sample(metrics, series) == 1, "\(metrics)")
            #expect(sample(metrics, "portcullis_degraded") == 0, "\(metrics)")

            try removeXDP(network, interface)
            #expect(
                waitForOutput(
                    daemon, output, containing: "DEGRADED: the filter is no longer attached to \(interface)", within: 20
                ),
                "the daemon noticed")
            let degraded = try status()
            #expect(degraded.status == 2, "\(degraded.stdout) \(degraded.stderr)")
            #expect(degraded.stdout.hasPrefix("DEGRADED\n"), "\(degraded.stdout)")
            #expect(
                degraded.stdout.contains("the filter is no longer attached to \(interface): bans are NOT enforced"),
                "\(degraded.stdout)")
            let json = try network.run(in: network.receiver, [Products.cli, "status", "--json", "--control", control])
            #expect(json.status == 2)
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            let problems = object?["problems"] as? [[String: Any]] ?? []
            #expect(
                problems.contains {
                    $0["kind"] as? String == "filter_detached" && $0["subject"] as? String == interface
                },
                "\(json.stdout)")
            metrics = try scrape(network, ready: ready)
            #expect(sample(metrics, series) == 0, "\(metrics)")
            #expect(sample(metrics, "portcullis_degraded") == 1, "\(metrics)")
            // Said again while it lasts (every 0.5 s here), naming how long.
            #expect(
                waitForOutput(daemon, output, within: 20) {
                    $0.components(separatedBy: "still DEGRADED after ").count - 1 >= 2
                }, "the warning repeated twice")

            try attachAgain(
                network, interface, pins: scratch.path, daemon, output,
                clearing: "filter detached from \(interface) (bans NOT enforced)")
            healthy = try status()
            #expect(healthy.status == 0, "\(healthy.stdout) \(healthy.stderr)")
            #expect(healthy.stdout.hasPrefix("OK\n"), "\(healthy.stdout)")
            metrics = try scrape(network, ready: ready)
            #expect(sample(metrics, series) == 1, "\(metrics)")
            #expect(sample(metrics, "portcullis_degraded") == 0, "\(metrics)")
            let text = stopDaemon(daemon, output)
            #expect(daemon.terminationStatus == 0, "\(text)")
        }
    }

    @Test("portcullis detach through the daemon is shown as the operator's and never undone, even with --reattach")
    func operatorDetachIsKept() throws {
        try withTestNetwork("o") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let control = ControlScratch.path()
            let interface = network.receiverInterface
            let arguments =
                transport.arguments("shm") + [
                    "--pin-dir", scratch.path, "--control", control, "--reattach",
                    "--degraded-warning-interval", "1.5",
                ]
            let (daemon, output) = try startDaemon(network, arguments, waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let detached = try network.run(
                in: network.receiver, [Products.cli, "detach", interface, "--control", control])
            #expect(detached.status == 0, "\(detached.stderr)")
            #expect(
                waitForOutput(
                    daemon, output, containing: "DEGRADED: the filter was detached from \(interface) by the operator",
                    within: 20), "shown as the operator's")
            // Three repeats 1.5 s apart: at least two more checks (every 2 s), none of which put it back.
            #expect(
                waitForOutput(daemon, output, within: 30) {
                    $0.components(separatedBy: "still DEGRADED after ").count - 1 >= 3
                }, "the warning repeated")
            let link = try network.run(in: network.receiver, ["ip", "link", "show", interface])
            #expect(!link.stdout.contains("xdp"), "left as the operator left it: \(link.stdout)")
            let status = try network.run(in: network.receiver, [Products.cli, "status", "--control", control])
            #expect(status.status == 2, "\(status.stdout) \(status.stderr)")
            #expect(status.stdout.contains("by the operator (portcullis detach)"), "\(status.stdout)")

            // Attached again by the operator: enforced, and the mark forgotten (a later detach by
            // another tool is put back).
            try attachAgain(
                network, interface, pins: scratch.path, daemon, output,
                clearing: "filter detached from \(interface) by the operator")
            try removeXDP(network, interface)
            #expect(
                waitForOutput(daemon, output, containing: "re-attached the filter to \(interface)", within: 20),
                "another tool's detach is undone with --reattach")
            let text = stopDaemon(daemon, output)
            #expect(text.components(separatedBy: "re-attached the filter").count - 1 == 1, "\(text)")
            #expect(daemon.terminationStatus == 0, "\(text)")
        }
    }
}
