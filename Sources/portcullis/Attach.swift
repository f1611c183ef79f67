// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import PortcullisControl
import XDPFirewall

struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Attach the XDP filter to a network interface.",
        discussion: """
            Creates the ban maps under the pin directory, or reuses the ones there with the bans they \
            hold. Attaching an interface that already has the filter changes nothing, unless that filter \
            is another program than the object's (a package upgrade shipped a new one): it is then \
            replaced in one step, in the mode it had, reading the same maps, bans kept.
            """)

    @Argument(help: "Network interface to filter, e.g. eth0.")
    var interface: String

    @Option(help: "native (in the driver), generic (in the stack, any interface) or auto (native, else generic).")
    var mode: AttachMode = .auto

    @Option(help: ArgumentHelp("Entries per ban map (IPv4 and IPv6) when the maps are created.", valueName: "n"))
    var mapEntries: UInt32?

    @Option(
        help: ArgumentHelp(
            "The filter object (portcullis.bpf.o); by default $PORTCULLIS_BPF_OBJECT, the executable's "
                + "directory, /usr/local/lib/portcullis, then /usr/lib/portcullis.", valueName: "path"))
    var bpfObject: String?

    @OptionGroup var pins: PinOptions

    func run() throws {
        try reportingErrors {
            if mapEntries == 0 { throw UsageError("--map-entries must be at least 1") }
            let object = try BPFObjectLocator().locate(explicit: bpfObject)
            let outcome = try Attachment.attach(
                interface: interface, objectPath: object,
                pinDirectory: pins.directory, mode: mode, mapEntries: mapEntries)
            let maps = outcome.reusedPinnedMaps ? "reused pinned maps" : "created maps"
            if let upgrade = outcome.upgrade {
                print(upgrade.line(interface: interface))
            } else if outcome.newlyAttached {
                print(
                    "attached to \(interface) in \(outcome.mode.rawValue) mode; \(maps) under "
                        + "\(pins.directory) (\(outcome.mapEntries) entries per ban map)")
            } else {
                print("already attached to \(interface) in \(outcome.mode.rawValue) mode; nothing changed")
            }
        }
    }
}

extension AttachMode: ExpressibleByArgument {}

struct Detach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Detach the XDP filter from a network interface, or from all of them.",
        discussion: """
            Other XDP programs on the interface and the pinned maps (with their bans) stay: attaching \
            again, or the daemon's next start, enforces them again. --all detaches the filter from every \
            interface of this network namespace it is attached to, whatever its pin directory (the \
            Debian package's removal runs it after stopping the daemon). With a portcullisd running, the \
            daemon detaches it: it shows the interface as detached by the operator (portcullis status is \
            DEGRADED) and never puts the filter back, even with --reattach, until portcullis attach (or a \
            restart) does.
            """)

    @Argument(help: "Network interface to stop filtering.")
    var interface: String?

    @Flag(help: "Detach from every interface the filter is attached to.")
    var all = false

    @OptionGroup var pins: PinOptions

    @OptionGroup var control: ControlOptions

    func run() throws {
        try reportingErrors {
            if all && interface != nil { throw UsageError("give an interface or --all, not both") }
            if !all && interface == nil { throw UsageError("name the interface to detach from, or give --all") }
            let interfaces = try interface.map { [$0] } ?? Attachment.attachedInterfaces()
            if interfaces.isEmpty { print("the filter is attached to no interface; nothing changed") }
            for interface in interfaces {
                if try control.ask(ControlRequest(command: "detach", interface: interface)) == nil {
                    try Attachment.detach(interface: interface)
                }
                let pinned = pins.directory.holdsMaps ? "; the bans pinned under \(pins.directory) stay" : ""
                print("detached from \(interface)\(pinned)")
            }
        }
    }
}
