// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import PortcullisCore
import PortcullisSystem
import XDPFirewall

@main
struct Portcullis: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis",
        abstract:
            "Operate Portcullis: attach the XDP filter, ban and unban addresses, read its counters, tap the log stream.",
        discussion: """
            Bans live in BPF maps pinned under the pin directory (default \(PinDirectory.defaultPath)); \
            they survive restarts of the daemon and of this tool. The filter commands need root \
            (CAP_BPF and CAP_NET_ADMIN); tap needs only access to the transport.
            """,
        version: PortcullisVersion.current,
        subcommands: [
            Attach.self, Detach.self, Ban.self, Unban.self, List.self, Status.self, Jails.self, Reload.self, Stats.self,
            Tap.self, Regex.self, Blocklist.self, Fleet.self,
        ]
    )
}

/// Options every command takes.
struct PinOptions: ParsableArguments {
    @Option(
        name: .customLong("pin-dir"),
        help: ArgumentHelp(
            "Directory on the BPF filesystem where the filter's maps are pinned.", valueName: "path"))
    var pinDirectory: String = PinDirectory.defaultPath

    var directory: PinDirectory { PinDirectory(pinDirectory) }
}

/// The floors of what this tool installs without a daemon's say (blocklists, network bans).
struct FloorOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The shortest IPv4 prefix installed.", valueName: "length"))
    var minPrefixV4 = ListPolicy.listFloor.ipv4

    @Option(help: ArgumentHelp("The shortest IPv6 prefix installed.", valueName: "length"))
    var minPrefixV6 = ListPolicy.listFloor.ipv6

    /// The policy with what never drops here: the driver's allowlist a daemon wrote into `maps`,
    /// this host's addresses and gateways, loopback.
    func policy(_ maps: BanMaps) throws -> ListPolicy {
        guard (0...32).contains(minPrefixV4), (0...128).contains(minPrefixV6) else {
            throw UsageError("--min-prefix-v4 takes 0 to 32, --min-prefix-v6 0 to 128")
        }
        return Self.policy(maps, shortestIPv4: minPrefixV4, shortestIPv6: minPrefixV6)
    }

    static func policy(
        _ maps: BanMaps, shortestIPv4: Int = ListPolicy.listFloor.ipv4, shortestIPv6: Int = ListPolicy.listFloor.ipv6
    ) -> ListPolicy {
        let host = HostAddresses.current().map { IPNetwork(containing: $0, length: IPNetwork.fullLength($0.family)) }
        return ListPolicy(
            shortestIPv4: shortestIPv4, shortestIPv6: shortestIPv6,
            allowlist: ((try? maps.allowlist()) ?? []) + host + Allowlist.loopback.ipNetworks)
    }
}

/// A wrong argument that the command itself detects (argument parsing errors come with usage).
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body`, turning a `FirewallError` or `UsageError` into one line on stderr and exit status 1.
func reportingErrors<R>(_ body: () throws -> R) throws -> R {
    do {
        return try body()
    } catch let error as FirewallError {
        printError(error.description)
        throw ExitCode.failure
    } catch let error as UsageError {
        printError(error.description)
        throw ExitCode.failure
    }
}

func printError(_ message: String, prefix: Bool = true) {
    let line = (prefix ? "portcullis: " : "") + "\(message)\n"
    fflush(nil)  // keep stdout's lines before this one
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
}

/// Parses an address argument or fails with a one-line error.
func parseAddress(_ text: String) throws -> IPAddress {
    guard let address = IPAddress(text) else { throw FirewallError.invalidAddress(text) }
    return address
}
