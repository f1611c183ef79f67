// SPDX-License-Identifier: Apache-2.0
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import XDPFirewall

/// Every 2 s: is the filter on each interface still there, reading our maps (with `--reattach`,
/// put back when found detached), and are the maps' pins still where every other command (and the
/// next start) looks for them.
public final class EnforcementWatch: Component {
    /// What the last check found on an interface.
    struct Watch {
        var state: Attachment.Enforcement = .enforced
        /// Why the last check could not be made (said once until a check succeeds again).
        var failure: String?
    }

    public let name = "enforcement watch"
    private let firewall: FirewallComponent
    private let reattach: Bool
    private let mode: AttachMode
    private var watches: [Watch]
    private var pinFailure: String?

    public init(firewall: FirewallComponent, options: DaemonOptions) {
        self.firewall = firewall
        reattach = options.reattach
        mode = options.mode
        watches = Array(repeating: Watch(), count: firewall.interfaces.count)
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] { [] }

    public func stop() {}

    public func tick(now: Double) -> Double? {
        guard let maps = firewall.maps else { return nil }
        for (index, interface) in firewall.interfaces.enumerated() { check(interface, maps, watch: &watches[index]) }
        checkPins(maps)
        return now + 2
    }

    /// Says when the bans stop (or start again) reaching the packets, and with --reattach puts the
    /// filter back. A check that could not be made (no descriptor left, a BPF call refused) is
    /// said as such, once, and changes nothing: it is not "detached".
    private func check(_ interface: String, _ maps: BanMaps, watch: inout Watch) {
        let pins = firewall.pins
        let previous = watch.state
        var now: Attachment.Enforcement
        do throws(FirewallError) {
            now = try Attachment.enforcement(of: maps, on: interface)
        } catch .unknownInterface {
            now = .notAttached  // the interface is gone: nothing filters its packets
        } catch {
            let text = "\(error)"
            if watch.failure != text {
                say(
                    .error(
                        "cannot check whether the filter on \(interface) reads our maps: \(text); "
                            + "it was \(previous == .enforced ? "enforcing" : "NOT enforcing") bans at the last check"))
            }
            watch.failure = text
            return
        }
        if watch.failure != nil {
            say(LogLine("the filter on \(interface) can be checked again"))
            watch.failure = nil
        }
        if now != previous {
            switch now {
            case .enforced:
                say(LogLine("the filter on \(interface) reads our maps again: bans enforced"))
            case .notAttached:
                say(
                    .error(
                        "the filter is no longer attached to \(interface): bans are NOT enforced; attach it "
                            + "again (portcullis attach \(interface) --pin-dir \(pins)) or run with --reattach"))
            case .otherMaps:
                say(.error("the filter on \(interface) now reads other maps than \(pins): bans are NOT enforced"))
            }
        }
        watch.state = now
        guard now == .notAttached, reattach else { return }
        do {
            _ = try Attachment.attach(
                interface: interface, objectPath: firewall.objectPath, pinDirectory: pins, mode: mode)
            if (try? Attachment.enforcement(of: maps, on: interface)) == .enforced {
                watch.state = .enforced
                say(LogLine("re-attached the filter to \(interface): bans enforced again"))
            }
        } catch {
            if previous != .notAttached {
                say(.error("cannot re-attach to \(interface): \(error)"))
            }
        }
    }

    /// Vanished pins (the directory removed, the BPF filesystem unmounted) are put back.
    private func checkPins(_ maps: BanMaps) {
        let pins = firewall.pins
        do throws(FirewallError) {
            let restored = try maps.restorePins()
            if !restored.isEmpty {
                say(
                    .error(
                        "\(restored.count) of the maps' pins had vanished from \(pins) (removed, or the BPF "
                            + "filesystem unmounted): pinned them again"))
            }
            if pinFailure != nil { say(LogLine("the maps' pins in \(pins) are in order again")) }
            pinFailure = nil
        } catch {
            let text = "\(error)"
            if pinFailure != text {
                say(
                    .error(
                        "the maps' pins in \(pins) are not in order: \(text); other commands and the next "
                            + "start may not find the maps in use"))
            }
            pinFailure = text
        }
    }
}

/// `--status-interval`: a one-line status every so many seconds; and the descriptor count checked
/// against the limit at every tick.
public final class StatusLine: Component {
    public let name = "status"
    private let daemon: DaemonComponent
    private let interval: Double
    private let descriptors = DescriptorWatch()
    private var nextStatus: Double?
    private var previousLines: UInt64 = 0
    /// The daemon the last line counted (a new daemon counts from 0).
    private var counted: ObjectIdentifier?

    public init(daemon: DaemonComponent, interval: Double) {
        self.daemon = daemon
        self.interval = interval
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] { [] }

    public func stop() {}

    public func tick(now: Double) -> Double? {
        if let line = descriptors.check() { say(.error(line)) }
        guard interval > 0, let daemon = daemon.daemon else { return now + 2 }
        if counted != ObjectIdentifier(daemon) {
            counted = ObjectIdentifier(daemon)
            previousLines = 0
        }
        guard let due = nextStatus else {
            nextStatus = now + interval
            return min(now + interval, now + 2)
        }
        if now >= due {
            nextStatus = due + interval
            let status = daemon.status
            say(LogLine(status.statusLine(previousLines: previousLines, interval: interval)))
            previousLines = status.total.lines
        }
        return min(nextStatus!, now + 2)
    }
}
