import ArgumentParser
import Glibc

/// The testbed's programs: the service under attack and the attack.
@main
struct PortcullisTestbed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis-testbed",
        abstract: "The testbed's UDP service and traffic generator (run them through tools/testbed).",
        discussion: """
            Addresses come only from 198.18.0.0/15 and 2001:2::/48 (see AddressPlan). Run udp-server \
            in the server namespace and flood in the client namespace: tools/testbed does both.
            """,
        subcommands: [UDPServer.self, Flood.self])
}

/// Where the testbed's clients live. Client i of a group is the group's base + i in the address's
/// last 32 bits; the groups never overlap, and all lie in the benchmarking ranges.
enum AddressPlan {
    /// The server: 198.19.255.254 and 2001:2::fffe (tools/testbed assigns them).
    static let server4: [UInt8] = [198, 19, 255, 254]
    static let server6: [UInt8] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe]
    /// Attackers: 198.18.0.1 onwards (65,534 fill 198.18.0.1-198.18.255.254, as the thesis's
    /// 10.4.0.1-10.4.255.254 did) and 2001:2:0:a::1 onwards.
    static let attackerBase4: [UInt8] = [198, 18, 0, 1]
    static let attackerBase6: [UInt8] = [0x20, 0x01, 0, 2, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0, 0, 0, 1]
    /// Valid clients: 198.19.0.1-198.19.0.254 and 2001:2:0:c::1 onwards.
    static let validBase4: [UInt8] = [198, 19, 0, 1]
    static let validBase6: [UInt8] = [0x20, 0x01, 0, 2, 0, 0, 0, 0x0c, 0, 0, 0, 0, 0, 0, 0, 1]
    /// The most IPv4 attackers: 198.18.0.1 + 131,067 = 198.19.255.252, short of the server.
    static let maxAttackers4 = 131_068
    /// IPv4 attackers beyond this would reach 198.19.0.0/24, where the valid clients are.
    static let attackersBeforeValid4 = 65_535
    static let maxValid4 = 254
    static let maxPerGroup6 = 1 << 24

    /// Client `index` of the group starting at `base` (4 or 16 bytes).
    static func address(base: [UInt8], index: Int) -> [UInt8] {
        var bytes = base
        let last = bytes.count - 4
        var value = UInt32(bytes[last]) << 24 | UInt32(bytes[last + 1]) << 16 | UInt32(bytes[last + 2]) << 8
            | UInt32(bytes[last + 3])
        value &+= UInt32(index)
        for shift in 0..<4 { bytes[last + shift] = UInt8(truncatingIfNeeded: value >> (24 - 8 * shift)) }
        return bytes
    }
}

/// Stops on SIGINT or SIGTERM: the signals are blocked in every thread (call before starting
/// any) and polled, so no system call is interrupted halfway.
struct StopSignals {
    private var set = sigset_t()

    init() {
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Whether a stop signal arrived within `milliseconds` (0: without waiting).
    mutating func arrived(waitingMilliseconds milliseconds: Int = 0) -> Bool {
        var timeout = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        let signal = sigtimedwait(&set, nil, &timeout)
        return signal == SIGINT || signal == SIGTERM
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

func fail(_ message: String) -> Never {
    let text = message + "\n"
    _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    exit(1)
}
