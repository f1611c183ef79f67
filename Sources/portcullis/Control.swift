// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import PortcullisControl
import PortcullisSystem

/// Where the daemon answers, for the commands that go through it.
struct ControlOptions: ParsableArguments {
    @Option(help: ArgumentHelp("portcullisd's control socket.", valueName: "path"))
    var control = ControlClient.defaultPath

    /// Asks the daemon; nil when no daemon answers, or (with `fallingBack`) when it sent no reply
    /// within the timeout (the caller falls back to the maps, and says so).
    /// - Throws: `UsageError` for a daemon that refused (its error) or did not answer in time.
    /// - Parameters:
    ///   - output: where a streamed answer goes (`ControlClient.send`).
    ///   - fallingBack: a daemon that sends no reply in time is treated as none (said on stderr).
    func ask(
        _ request: ControlRequest, timeoutMilliseconds: Int = 10_000, output: Int32? = nil,
        fallingBack: Bool = false
    ) throws
        -> ControlReply?
    {
        let reply: ControlReply
        do throws(ControlClientError) {
            reply = try ControlClient.send(
                request, to: control, timeoutMilliseconds: timeoutMilliseconds, output: output)
        } catch .noDaemon {
            return nil
        } catch .timedOut where fallingBack {
            printError("portcullisd at \(control) sent no reply within \(timeoutMilliseconds) ms")
            return nil
        } catch {
            throw UsageError(error.description)
        }
        guard reply.ok else { throw UsageError(reply.error ?? "portcullisd refused the request") }
        return reply
    }

    /// Asks the daemon, which must run (`status`, `jails`, `reload` have no fallback).
    func require(_ request: ControlRequest, timeoutMilliseconds: Int = 10_000) throws -> ControlReply {
        guard let reply = try ask(request, timeoutMilliseconds: timeoutMilliseconds) else {
            throw UsageError("no portcullisd answers at \(control); start it, or give its --control path")
        }
        return reply
    }

    /// The note a command makes when it writes the maps itself.
    func sayFallback() {
        printError(
            "no portcullisd answers at \(control): writing the maps directly (the daemon's counts and ban log do not see it)"
        )
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The running daemon's health and counters, in all or one jail (through its control socket).",
        discussion: """
            The first line is OK, or DEGRADED followed by each problem on a line of its own (a filter \
            detached or reading other maps, pins not in order, a source not read, a companion that cannot \
            reach its server). Exit status: 0 OK, \(Status.degradedExitCode) DEGRADED, 1 no daemon answers \
            or it refused the request.
            """)

    /// The exit status of a degraded daemon (as Nagios' CRITICAL; 1 stays "could not ask").
    static let degradedExitCode: Int32 = 2

    @Argument(help: "Only this jail.")
    var jail: String?

    @Flag(help: "Print the daemon's reply as JSON.")
    var json = false

    @OptionGroup var options: ControlOptions

    func run() throws {
        try reportingErrors {
            let reply = try options.require(ControlRequest(command: "status", jail: jail))
            guard let status = reply.status else { throw UsageError("portcullisd sent no status") }
            if json {
                print(JSONOutput.line(status))
            } else {
                printStatus(status)
            }
            if !status.problems.isEmpty { throw ExitCode(Status.degradedExitCode) }
        }
    }

    private func printStatus(_ status: DaemonState) {
        print(status.problems.isEmpty ? "OK" : "DEGRADED")
        for problem in status.problems {
            print("  DEGRADED for \(Int(problem.seconds)) s: \(problem.text)")
        }
        print(
            "portcullisd \(status.pid): up \(Int(status.uptimeSeconds)) s, \(status.lines) lines, \(status.bans) bans, "
                + "\(status.unbans) unbans, \(status.bansInForce) bans in force, \(status.reloads) reloads")
        for jail in status.jails {
            print(
                "  \(jail.name): \(jail.lines) lines, \(jail.matched) matched, \(jail.ignored) ignored, "
                    + "\(jail.notMatching) not matching, \(jail.invalidAddress) not an address, \(jail.tooLong) too long, "
                    + "\(jail.matchLimit) over the match limit, \(jail.allowlisted) allowlisted, \(jail.bans) bans")
        }
        let control = status.control
        print(
            "  control socket: \(control.requests) requests, \(control.unauthorised) unauthorised, "
                + "\(control.malformed) malformed, \(control.oversized) oversized, \(control.unknownCommand) unknown, "
                + "\(control.failed) failed")
        if let bouncer = status.crowdsec?.bouncer {
            print(
                "  crowdsec bouncer: \(bouncer.url) "
                    + (bouncer.connected ? "connected" : "not reached (\(bouncer.lastError ?? "not yet"))")
                    + ", \(bouncer.networks) networks enforced"
                    + (bouncer.kept > 0 ? " (kept from the last run until the first full pull)" : "")
                    + ", \(bouncer.pulls) pulls"
            )
        }
        if let alerts = status.crowdsec?.alerts {
            print(
                "  crowdsec alerts: \(alerts.url) "
                    + (alerts.connected ? "connected" : "not reached (\(alerts.lastError ?? "nothing sent yet"))")
                    + ", \(alerts.pushed) pushed, \(alerts.queued) queued, \(alerts.dropped) dropped")
        }
        if let fleet = status.fleet {
            print(
                "  fleet: host \(fleet.host), bucket \(fleet.bucket) on \(fleet.servers.joined(separator: ",")) "
                    + (fleet.connected
                        ? "connected to \(fleet.server ?? "a server")"
                        : "not reached (\(fleet.lastError ?? "not yet"))"
                            + (fleet.server.map { ", last connected to \($0)" } ?? ""))
                    + ", \(fleet.published) published, \(fleet.queued) queued, \(fleet.dropped) dropped, "
                    + "\(fleet.received) received, "
                    + "\(fleet.bans) bans of \(fleet.hosts) other hosts in force")
        }
    }
}

struct Jails: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The running daemon's jails: source, filter, limits.")

    @Flag(help: "Print them as a JSON array.")
    var json = false

    @OptionGroup var options: ControlOptions

    func run() throws {
        try reportingErrors {
            let jails = try options.require(ControlRequest(command: "jails")).jails ?? []
            if json {
                print(JSONOutput.line(jails))
            } else {
                for jail in jails { print(jail.description) }
            }
        }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the daemon read its configuration again (as SIGHUP), and say how it went.")

    @OptionGroup var options: ControlOptions

    func run() throws {
        try reportingErrors {
            let reply = try options.require(ControlRequest(command: "reload"), timeoutMilliseconds: 70_000)
            print(reply.message ?? "reloaded")
        }
    }
}
