// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem
import CLab
import Synchronization

/// Spoofed-source UDP at a target rate from valid clients (payload 'A') and attackers ('B').
struct Flood: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send spoofed-source UDP from valid clients and attackers (run it in the client namespace).",
        discussion: """
            The live engine runs bpf/flood.bpf.o with BPF_PROG_TEST_RUN and BPF_F_TEST_XDP_LIVE_FRAMES: \
            the kernel sends each frame the program returns XDP_TX for out of --interface, without a \
            socket or a copy. The xsk and packet engines build the same frames in user space: xsk \
            writes them into an AF_XDP socket's rings (copy mode, no XDP program; thread k on queue \
            k), packet sends them with sendmmsg on an AF_PACKET socket. auto (the default) asks the \
            kernel once whether it runs live frames (Linux 5.18 and later; some kernels refuse them \
            even to root) and uses xsk where it does not (packet where AF_XDP is refused too), saying \
            so in one line. Every engine prints a JSON summary of what it sent, naming the engine. \
            Live frames reach the server only while its veth has an XDP program (the filter): \
            without one, veth drops them and this count is not what arrived.
            """)

    enum Engine: String, ExpressibleByArgument, CaseIterable { case auto, live, xsk, packet }

    @Option(
        help:
            "auto (live where the kernel allows it, else xsk, else packet), live (XDP live frames), xsk (AF_XDP) or packet (AF_PACKET + sendmmsg)."
    )
    var engine: Engine = .auto
    @Option(help: "Interface to send from (in this network namespace).") var interface = AddressPlan.clientInterface
    @Option(help: "Its MAC address (the frames' source).") var sourceMac = AddressPlan.clientMAC
    @Option(help: "The server's MAC address.") var serverMac = AddressPlan.serverMAC
    @Option(help: "The server's UDP port.") var port: UInt16 = 9000
    @Option(help: "IPv4 attackers (198.18.0.1 onwards).") var attackersV4 = 0
    @Option(help: "IPv6 attackers (2001:2:0:a::1 onwards).") var attackersV6 = 0
    @Option(help: "IPv4 valid clients (198.19.0.1 onwards).") var validV4 = 0
    @Option(help: "IPv6 valid clients (2001:2:0:c::1 onwards).") var validV6 = 0
    @Option(help: "Attack frames per second, over all attackers (0: as fast as the engine goes).") var rate = 0.0
    @Option(help: "Valid frames per second, over all valid clients (with --rate 0: one frame in --valid-every).")
    var validRate = 50_000.0
    @Option(help: "With --rate 0: one frame in this many is from a valid client.") var validEvery = 100
    @Option(help: ArgumentHelp("How long to send.", valueName: "seconds")) var duration = 10.0
    @Option(
        help:
            "Sending threads, each pinned to its own CPU (0, 1, ...) with its share of the rate; give the veth as many queues (Lab/tools/testbed does) so that the receiving side runs on as many CPUs."
    )
    var threads = 1
    @Option(help: "Runs of the first BPF_PROG_TEST_RUN call (later calls adapt to about 200 ms each).") var chunk =
        65_536
    @Option(help: ArgumentHelp("The generator object (flood.bpf.o; default: next to this program).", valueName: "path"))
    var bpfObject: String?

    func validate() throws {
        if attackersV4 < 0 || attackersV6 < 0 || validV4 < 0 || validV6 < 0 {
            throw ValidationError("client counts must not be negative")
        }
        if attackersV4 + attackersV6 + validV4 + validV6 == 0 {
            throw ValidationError("no clients: set --attackers-v4 etc.")
        }
        if attackersV4 > AddressPlan.maxAttackers4 {
            throw ValidationError(
                "at most \(AddressPlan.maxAttackers4) IPv4 attackers fit in 198.18.0.0/15 beside the server")
        }
        if validV4 > AddressPlan.maxValid4 {
            throw ValidationError("at most \(AddressPlan.maxValid4) IPv4 valid clients")
        }
        if validV4 > 0 && attackersV4 > AddressPlan.attackersBeforeValid4 {
            throw ValidationError(
                "IPv4 attackers beyond \(AddressPlan.attackersBeforeValid4) take 198.19.0.0/24, the valid "
                    + "clients' addresses: send the valid clients over IPv6 (--valid-v6) or split the attackers (--attackers-v6)"
            )
        }
        if max(attackersV6, validV6) > AddressPlan.maxPerGroup6 {
            throw ValidationError("at most \(AddressPlan.maxPerGroup6) IPv6 clients per group")
        }
        if threads < 1 || threads > Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) {
            throw ValidationError("--threads must be between 1 and the number of CPUs online")
        }
        if rate < 0 || validRate < 0 || duration <= 0 || chunk < 64 || validEvery < 1 {
            throw ValidationError(
                "--rate and --valid-rate must not be negative, --duration positive, --chunk at least 64, --valid-every at least 1"
            )
        }
    }

    func run() throws {
        var stop = StopSignals()
        let plan = TrafficPlan(flood: self)
        guard (0..<TrafficPlan.streams).contains(where: { plan.weight[$0] > 0 && plan.clients[$0] > 0 }) else {
            Console.fail(
                "flood: nothing to send: give attackers a --rate (or 0 for as fast as possible) or valid clients a --valid-rate"
            )
        }
        let server = try parseMAC(serverMac, option: "--server-mac")
        let source = try parseMAC(sourceMac, option: "--source-mac")
        let templates = [
            FrameTemplate(family: 0, sourceMAC: source, serverMAC: server, port: port),
            FrameTemplate(family: 1, sourceMAC: source, serverMAC: server, port: port),
        ]
        let (sender, used) = try makeSender(plan: plan, templates: templates)
        try sender.configure(duration: duration, threads: threads)
        let stopping = StopFlag()
        let failure = FailureBox()
        let start = SystemClock.monotonicSeconds()
        let (chunk, threadCount) = (chunk, threads)
        let workers = try (0..<threadCount).map { thread in
            try SystemThread.spawn {
                // Pinned even alone: the live engine's counters and client cursors are per CPU.
                do throws(Errno) {
                    try SystemThread.pinCurrent(to: thread)
                } catch {
                    failure.set("cannot pin sending thread \(thread) to CPU \(thread): \(error)")
                    return
                }
                do {
                    try sender.send(thread: thread, until: start + duration, chunk: chunk, stop: stopping)
                } catch {
                    failure.set("\(error)")
                    stopping.set()
                }
            }
        }
        while SystemClock.monotonicSeconds() < start + duration && !stopping.isSet {
            if stop.arrived(waitingMilliseconds: 100) { break }
        }
        stopping.set()
        for worker in workers { worker.join() }
        if let message = failure.message { Console.fail("flood: \(message)") }
        let seconds = min(SystemClock.monotonicSeconds() - start, duration)
        let counts = try sender.counts()
        let frames = counts.sent.reduce(0, +)
        var summary = JSONObject()
        summary["engine"] = .text(used.rawValue)
        summary["seconds"] = .number(seconds)
        summary["frames"] = .integer(Int64(frames))
        for (name, stream) in [
            ("invalid_v4", FLOOD_ATTACK_V4), ("invalid_v6", FLOOD_ATTACK_V6),
            ("valid_v4", FLOOD_VALID_V4), ("valid_v6", FLOOD_VALID_V6),
        ] {
            summary[name] = .integer(Int64(counts.sent[Int(stream.rawValue)]))
        }
        summary["send_failures"] = .integer(Int64(counts.failures))
        summary["frames_per_second"] = .number(Double(frames) / seconds)
        print(JSONOutput.line(summary))
    }
}

extension Flood {
    /// The sender of `engine`; for auto, live frames where the kernel runs them, else AF_XDP, else
    /// AF_PACKET, the fallback said in one line on standard error.
    func makeSender(plan: TrafficPlan, templates: [FrameTemplate]) throws -> (FrameSender, Engine) {
        func userSpace(_ kind: Engine) throws -> UserSpaceSender {
            try UserSpaceSender(kind: kind, plan: plan, templates: templates, interface: interface, threads: threads)
        }
        switch engine {
        case .packet, .xsk: return (try userSpace(engine), engine)
        case .live, .auto: break
        }
        let live = try LiveFrameSender(plan: plan, templates: templates, interface: interface, objectPath: bpfObject)
        guard let refusal = live.refusal() else { return (live, .live) }
        if engine == .live {
            Console.fail("flood: \(refusal): this kernel sends no live frames; use --engine xsk or packet (or auto)")
        }
        do {
            let sender = try userSpace(.xsk)
            Console.say("flood: \(refusal): the kernel sends no live frames, so AF_XDP (xsk) sends", to: STDERR_FILENO)
            return (sender, .xsk)
        } catch {
            Console.say(
                "flood: \(refusal), and \(error): so AF_PACKET (packet) sends", to: STDERR_FILENO)
            return (try userSpace(.packet), .packet)
        }
    }
}

/// Who sends how much. Streams, in flood_abi.h's order (`enum flood_stream`): attackers over IPv4
/// and IPv6, valid clients over IPv4 and IPv6. Each frame goes to the stream furthest behind its
/// weight.
struct TrafficPlan {
    static let streams = Int(FLOOD_STREAMS.rawValue)
    /// Clients per stream.
    let clients: [Int]
    /// Share of the frames per stream: frames per second when paced.
    let weight: [UInt64]
    /// Frames per second over all streams; 0: as fast as the engine goes.
    let rate: UInt64
    /// First address per stream.
    static let bases = [
        AddressPlan.attackerBase4, AddressPlan.attackerBase6, AddressPlan.validBase4, AddressPlan.validBase6,
    ]

    init(flood: Flood) {
        clients = [flood.attackersV4, flood.attackersV6, flood.validV4, flood.validV6]
        // Unpaced, the weights only set the mix: one valid frame in --valid-every. Valid clients
        // alone are always paced by --valid-rate.
        let paced = flood.rate > 0 || clients[0] + clients[1] == 0
        let attackRate = paced ? flood.rate : 1e6 * Double(flood.validEvery - 1)
        let validRate = paced ? flood.validRate : 1e6
        let attackers = Double(max(clients[0] + clients[1], 1)), valid = Double(max(clients[2] + clients[3], 1))
        weight = [
            attackRate * Double(clients[0]) / attackers, attackRate * Double(clients[1]) / attackers,
            validRate * Double(clients[2]) / valid, validRate * Double(clients[3]) / valid,
        ].map { UInt64($0.rounded()) }
        rate = paced ? weight.reduce(0, +) : 0
    }

    /// Where thread `thread` of `threads` starts going round `clients` clients: evenly apart, so
    /// that together they still send to each client at even intervals.
    static func startingClient(thread: Int, of threads: Int, clients: Int) -> Int { clients * thread / max(threads, 1) }

    static func isIPv6(stream: Int) -> Bool { stream % 2 == 1 }
    static func isValid(stream: Int) -> Bool { stream >= 2 }
}

/// Frames sent so far, per stream.
struct FloodCounts {
    var sent = [0, 0, 0, 0]
    var failures = 0
}

protocol FrameSender: Sendable {
    /// Prepares a run of `duration` seconds by `threads` threads.
    func configure(duration: Double, threads: Int) throws
    /// Sends as thread `thread` until the monotonic time `end` or until `stop` is set.
    func send(thread: Int, until end: Double, chunk: Int, stop: StopFlag) throws
    func counts() throws -> FloodCounts
}

/// The first error of any sending thread.
final class FailureBox: Sendable {
    private let first = Mutex<String?>(nil)
    var message: String? { first.withLock { $0 } }
    func set(_ text: String) { first.withLock { if $0 == nil { $0 = text } } }
}
