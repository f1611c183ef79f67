// SPDX-License-Identifier: Apache-2.0
import Foundation
import Glibc
import PortcullisCore
import PortcullisSystem
import Testing
import TestSupport
import XDPFirewall

extension DaemonProcessTests {
    @Test(
        "a timed ban ends on time with the daemon killed (SIGKILL): its source's packets are dropped before its end and pass within a second after it, by the program's clock alone"
    )
    func banEndsWithTheDaemonKilled() throws {
        try withTestNetwork("x") { network, scratch in
            let transport = TransportScratch()
            defer { transport.remove() }
            let socket = ControlScratch.path()
            let (daemon, output) = try startDaemon(
                network, transport.arguments("shm") + ["--pin-dir", scratch.path, "--control", socket],
                waitUntilReading: true)
            defer { if daemon.isRunning { _ = stopDaemon(daemon, output) } }
            let source = TestNetwork.senderAddresses4[0]
            // Through the daemon, which would lift it at its end; long enough to send before it.
            let banned = try runProcess(
                Products.cli, ["ban", source, "--for", "4", "--control", socket, "--pin-dir", scratch.path])
            try #require(banned.status == 0, "\(banned.stdout) \(banned.stderr)")
            let maps = try BanMaps.open(pinnedIn: scratch.pins)
            guard case .at(let end) = try #require(try maps.lookup(IPAddress(source)!)).expiry else {
                Issue.record("the ban should end")
                return
            }
            kill(daemon.processIdentifier, SIGKILL)
            daemon.waitUntilExit()
            #expect(daemon.uncaughtSignal == SIGKILL)

            /// Sends one datagram from `source` and waits (at most 5 s: veth delivers in the receiver's
            /// NAPI poll) for the filter to count it. - Returns: whether it passed as expired, and the
            /// CLOCK_BOOTTIME by which it had been sent.
            func sendOne() throws -> (passed: Bool, sentBy: UInt64) {
                let before = try maps.counters()
                try #require(try network.sendUDP(from: source, count: 1) == 1)
                let sentBy = SystemClock.bootNanoseconds()
                let deadline = Date().addingTimeInterval(5)
                while Date() < deadline {
                    let now = try maps.counters()
                    if now.expired.packets > before.expired.packets { return (true, sentBy) }
                    if now.dropped.packets > before.dropped.packets { return (false, sentBy) }
                    usleep(10_000)
                }
                Issue.record("the filter never saw the datagram")
                return (false, sentBy)
            }
            if SystemClock.bootNanoseconds() < end {
                let early = try sendOne()
                #expect(early.passed == false || early.sentBy >= end, "dropped while the ban is in force")
            }
            while SystemClock.bootNanoseconds() < end { usleep(20_000) }
            // From its end on, one datagram at a time until one passes or the promise runs out.
            let promise = end + 1_000_000_000
            var passed = false
            while !passed && SystemClock.bootNanoseconds() < promise {
                let sent = try sendOne()
                passed = sent.passed && sent.sentBy <= promise
            }
            #expect(passed, "a datagram sent within a second of the ban's end passes")
            #expect(
                try maps.lookup(IPAddress(source)!) != nil, "the killed daemon lifted nothing: the program ended it")
        }
    }
}

extension Process {
    /// The signal that ended the process, or nil when it exited.
    fileprivate var uncaughtSignal: Int32? {
        terminationReason == .uncaughtSignal ? terminationStatus : nil
    }
}
