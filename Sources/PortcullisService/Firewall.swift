// SPDX-License-Identifier: Apache-2.0
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import XDPFirewall

/// The filter on the interfaces and the maps it reads: attached (or found attached) at the start,
/// the maps opened, the kernel ban installer loaded, the prefix lengths set, and each interface's
/// filter checked to read these maps. Restart-only: a reload never changes it. Stopping leaves the
/// filter and the bans in force; a start rolled back detaches what it attached and removes the maps
/// it pinned.
public final class FirewallComponent: Component {
    public let name = "firewall"
    public let interfaces: [String]
    public let objectPath: String
    public let pins: PinDirectory
    private let mode: AttachMode
    private let mapEntries: UInt32?
    private let prefixLengths: [(IPAddress.Family, [Int])]
    /// The maps, once started.
    public private(set) var maps: BanMaps?
    /// What the attach did on each interface, in `interfaces` order.
    public private(set) var outcomes: [(interface: String, outcome: Attachment.Outcome)] = []

    public init(
        interfaces: [String], objectPath: String, options: DaemonOptions, prefixLengths: [(IPAddress.Family, [Int])]
    ) {
        self.interfaces = interfaces
        self.objectPath = objectPath
        pins = PinDirectory(options.pinDirectory)
        mode = options.mode
        mapEntries = options.mapEntries
        self.prefixLengths = prefixLengths
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] {
        var lines: [LogLine] = []
        do {
            // Every interface reads the same pinned maps: one ban drops on all of them.
            for interface in interfaces {
                let outcome = try Attachment.attach(
                    interface: interface, objectPath: objectPath, pinDirectory: pins, mode: mode,
                    mapEntries: mapEntries)
                outcomes.append((interface, outcome))
                if let upgrade = outcome.upgrade { lines.append(LogLine(upgrade.line(interface: interface))) }
            }
            let maps = try BanMaps.open(pinnedIn: pins)
            // The kernel ban installer, from the object the filter came from.
            if let problem = maps.loadInstaller(objectPath: objectPath) {
                lines.append(
                    .error(
                        "the kernel ban installer cannot be used: \(problem); bans go in "
                            + "with one system call each (it needs a kernel with bpf_loop, 5.17 or later, and the "
                            + "portcullis.bpf.o of this build: tools/build-bpf)"))
            }
            for (family, lengths) in prefixLengths { try maps.setPrefixLengths(lengths, family: family) }
            // The bans must reach the packets: the filter found on each interface reads these maps.
            for interface in interfaces where try Attachment.enforcement(of: maps, on: interface) == .otherMaps {
                throw DaemonError.firewall(
                    "the filter on \(interface) reads other maps than those pinned under \(pins): bans written "
                        + "there would drop nothing; pass the --pin-dir it was attached with, or detach it first "
                        + "(portcullis detach \(interface))")
            }
            self.maps = maps
        } catch {
            rollBack()
            throw error
        }
        return lines
    }

    /// The filter and the bans stay in force.
    public func stop() {}

    /// Nothing half-attached, nothing newly pinned left behind.
    public func rollBack() {
        for (interface, outcome) in outcomes where outcome.newlyAttached {
            try? Attachment.detach(interface: interface)
        }
        if let first = outcomes.first?.outcome, !first.reusedPinnedMaps { try? pins.removeMaps() }
        outcomes = []
        maps = nil
    }

    /// "attached to IFACE (native mode, maps under DIR)", a line per interface.
    var attachedLines: [LogLine] {
        outcomes.map { interface, outcome in
            LogLine(
                "\(outcome.newlyAttached ? "attached to" : "found the filter on") \(interface) "
                    + "(\(outcome.mode.rawValue) mode, maps under \(pins))")
        }
    }
}
