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
            Tap.self, Regex.self, Blocklist.self,
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
