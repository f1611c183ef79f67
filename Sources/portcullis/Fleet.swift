// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import PortcullisControl

/// `portcullis fleet ignore|unignore HOST`: this host's way out of another fleet host's bans.
struct Fleet: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Keep out (or let in again) another fleet host's bans, on this host only.",
        subcommands: [Ignore.self, Unignore.self])

    struct Ignore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lift every ban of the fleet's host HOST here and install none of its bans any more.",
            discussion: "Through the daemon, which keeps the host in fleet-ignored-hosts in its --state-dir (a "
                + "restart keeps ignoring it; [fleet] ignore_hosts does the same from the configuration). Without "
                + "a daemon, portcullis blocklist unload fleet/HOST lifts the host's entries once.")

        @Argument(help: "The fleet host (as portcullis list shows fleet/HOST).")
        var host: String

        @OptionGroup var control: ControlOptions

        func run() throws {
            try reportingErrors {
                let reply = try control.require(ControlRequest(command: "fleet-ignore", host: host))
                print(reply.message ?? "ignored \(host)")
            }
        }
    }

    struct Unignore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Install the bans of the fleet's host HOST again (the bucket is read again).")

        @Argument(help: "The fleet host.")
        var host: String

        @OptionGroup var control: ControlOptions

        func run() throws {
            try reportingErrors {
                let reply = try control.require(ControlRequest(command: "fleet-unignore", host: host))
                print(reply.message ?? "unignored \(host)")
            }
        }
    }
}
