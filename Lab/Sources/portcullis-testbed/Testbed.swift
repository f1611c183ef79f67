// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import PortcullisCore
import PortcullisSystem

/// The testbed's programs: the service under attack, the attack, and the plan they share.
@main
struct PortcullisTestbed: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis-testbed",
        abstract: "The testbed's UDP service and traffic generator (run them through Lab/tools/testbed).",
        discussion: """
            Addresses come only from 198.18.0.0/15 and 2001:2::/48 (see `plan`). Run udp-server \
            in the server namespace and flood in the client namespace: Lab/tools/testbed does both.
            """,
        subcommands: [UDPServer.self, Flood.self, Engines.self, Plan.self])
}

/// Where the testbed's hosts and clients live: the one copy of the plan, which Lab/tools/testbed
/// and the experiment runner read with `portcullis-testbed plan --json`. Client i of a group is
/// the group's base + i in the address's last 32 bits; the groups never overlap, and all lie in
/// the benchmarking ranges.
enum AddressPlan {
    /// `PC_TESTBED_INSTANCE`, if set, names a testbed of its own: its namespaces and pin directory
    /// end in "-INSTANCE", so that an experiment (which sets it to its process id), a test and a
    /// testbed brought up by hand never meet. Interfaces and MACs live inside the namespaces.
    static let instance =
        getenv("PC_TESTBED_INSTANCE").map { "-" + String(cString: $0) }.flatMap {
            $0 == "-" ? nil : $0
        } ?? ""
    static let clientNamespace = "pc-tb-client" + instance
    static let serverNamespace = "pc-tb-server" + instance
    static let clientInterface = "pctb-client"
    static let serverInterface = "pctb-server"
    static let clientMAC = "02:00:c6:12:00:01"
    static let serverMAC = "02:00:c6:13:ff:fe"
    static let pinDirectory = "/sys/fs/bpf/portcullis-testbed" + instance
    /// The server, on prefixes that hold every client.
    static let server4 = IPAddress("198.19.255.254")!
    static let server6 = IPAddress("2001:2::fffe")!
    static let prefix4 = 15
    static let prefix6 = 48
    /// Attackers: 198.18.0.1 onwards (65,534 fill 198.18.0.1-198.18.255.254, as the thesis's
    /// 10.4.0.1-10.4.255.254 did) and 2001:2:0:a::1 onwards.
    static let attacker4 = IPAddress("198.18.0.1")!
    static let attacker6 = IPAddress("2001:2:0:a::1")!
    /// Valid clients: 198.19.0.1-198.19.0.254 and 2001:2:0:c::1 onwards.
    static let valid4 = IPAddress("198.19.0.1")!
    static let valid6 = IPAddress("2001:2:0:c::1")!
    /// The most IPv4 attackers: 198.18.0.1 + 131,067 = 198.19.255.252, short of the server.
    static let maxAttackers4 = 131_068
    /// IPv4 attackers beyond this would reach 198.19.0.0/24, where the valid clients are.
    static let attackersBeforeValid4 = 65_535
    static let maxValid4 = 254
    static let maxPerGroup6 = 1 << 24
    /// The first clients of each group that Lab/tools/testbed assigns to the client interface (`send`).
    static let assignedPerGroup = 4

    static var attackerBase4: [UInt8] { bytes(attacker4) }
    static var attackerBase6: [UInt8] { bytes(attacker6) }
    static var validBase4: [UInt8] { bytes(valid4) }
    static var validBase6: [UInt8] { bytes(valid6) }

    private static func bytes(_ address: IPAddress) -> [UInt8] { address.withUnsafeBytes { Array($0) } }

    /// Client `index` of the group starting at `base` (4 or 16 bytes).
    static func address(base: [UInt8], index: Int) -> [UInt8] {
        var bytes = base
        let last = bytes.count - 4
        var value =
            UInt32(bytes[last]) << 24 | UInt32(bytes[last + 1]) << 16 | UInt32(bytes[last + 2]) << 8
            | UInt32(bytes[last + 3])
        value &+= UInt32(index)
        for shift in 0..<4 { bytes[last + shift] = UInt8(truncatingIfNeeded: value >> (24 - 8 * shift)) }
        return bytes
    }
}

/// `plan --json`: the address plan for scripts.
struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the testbed's plan: namespaces, interfaces, MACs, server and client addresses, limits.")

    @Flag(help: "As one JSON object (the form Lab/tools/testbed and the experiment runner read).") var json = false

    func run() throws {
        typealias Plan = AddressPlan
        func object(_ fields: [(String, JSONObject.Value)]) -> JSONObject.Value {
            var object = JSONObject()
            for (key, value) in fields { object[key] = value }
            return .object(object)
        }
        let text = { (value: String) in JSONObject.Value.text(value) }
        let number = { (value: Int) in JSONObject.Value.integer(Int64(value)) }
        let plan = object([
            ("namespaces", object([("client", text(Plan.clientNamespace)), ("server", text(Plan.serverNamespace))])),
            ("interfaces", object([("client", text(Plan.clientInterface)), ("server", text(Plan.serverInterface))])),
            ("macs", object([("client", text(Plan.clientMAC)), ("server", text(Plan.serverMAC))])),
            ("pin_directory", text(Plan.pinDirectory)),
            (
                "server",
                object([
                    ("ipv4", text("\(Plan.server4)")), ("ipv6", text("\(Plan.server6)")),
                    ("ipv4_prefix", number(Plan.prefix4)), ("ipv6_prefix", number(Plan.prefix6)),
                ])
            ),
            (
                "attackers",
                object([
                    ("ipv4", text("\(Plan.attacker4)")), ("ipv6", text("\(Plan.attacker6)")),
                    ("max_ipv4", number(Plan.maxAttackers4)),
                    ("ipv4_before_valid", number(Plan.attackersBeforeValid4)),
                    ("max_ipv6", number(Plan.maxPerGroup6)),
                ])
            ),
            (
                "valid",
                object([
                    ("ipv4", text("\(Plan.valid4)")), ("ipv6", text("\(Plan.valid6)")),
                    ("max_ipv4", number(Plan.maxValid4)), ("max_ipv6", number(Plan.maxPerGroup6)),
                ])
            ),
            ("assigned_per_group", number(Plan.assignedPerGroup)),
        ])
        guard case .object(let whole) = plan else { return }
        if json {
            print(JSONOutput.line(whole))
        } else {
            print(
                "server \(Plan.server4)/\(Plan.prefix4) \(Plan.server6)/\(Plan.prefix6) in \(Plan.serverNamespace) "
                    + "(\(Plan.serverInterface)); attackers \(Plan.attacker4)+ \(Plan.attacker6)+, valid clients "
                    + "\(Plan.valid4)+ \(Plan.valid6)+ in \(Plan.clientNamespace) (\(Plan.clientInterface)); "
                    + "pins \(Plan.pinDirectory)")
        }
    }
}
