// SPDX-License-Identifier: Apache-2.0
import PortcullisConfiguration
import PortcullisCore
import PortcullisDaemon
import PortcullisSystem
import Synchronization
import XDPFirewall

/// The interfaces the operator took the filter off with `portcullis detach` while the daemon ran:
/// shown as such and never put back by the watch (even with `--reattach`); forgotten once the
/// filter is found reading the maps there again (`portcullis attach`, a restart).
final class OperatorDetaches: Sendable {
    private let marked = Mutex<Set<String>>([])

    /// Detaches the filter from `interface`, marking it first when it is one the daemon watches:
    /// under the lock the watch checks under, so that no check sees it gone without the mark.
    func detach(_ interface: String, watched: Bool) throws(FirewallError) {
        try marked.withLock { (marked: inout Set<String>) throws(FirewallError) in
            try Attachment.detach(interface: interface)
            if watched { marked.insert(interface) }
        }
    }

    func withLock<R>(_ body: (inout Set<String>) -> R) -> R {
        marked.withLock { body(&$0) }
    }
}

/// Every 2 s: is the filter on each interface still there, reading our maps (with `--reattach`,
/// put back when found detached, unless the operator detached it through the daemon), and are the
/// maps' pins still where every other command (and the next start) looks for them. What it finds
/// wrong it reports to `Health`, which says it, repeats it and clears it.
public final class EnforcementWatch: Component {
    /// What the last check found on an interface.
    struct Watch {
        var state: Attachment.Enforcement = .enforced
        /// Why the last check could not be made (said once until a check succeeds again).
        var failure: String?
        /// Why the last re-attach failed (said once until it changes).
        var reattachFailure: String?
    }

    public let name = "enforcement watch"
    private let firewall: FirewallComponent
    private let health: Health
    let operatorDetaches = OperatorDetaches()
    private let reattach: Bool
    private let mode: AttachMode
    private var watches: [Watch]
    private var pinFailure: String?

    public init(firewall: FirewallComponent, health: Health, options: DaemonOptions) {
        self.firewall = firewall
        self.health = health
        reattach = options.reattach
        mode = options.mode
        watches = Array(repeating: Watch(), count: firewall.interfaces.count)
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] { [] }

    public func stop() {}

    public func tick(now: Double) -> Double? {
        guard let maps = firewall.maps else { return nil }
        operatorDetaches.withLock { marked in
            for (index, interface) in firewall.interfaces.enumerated() {
                check(interface, maps, watch: &watches[index], marked: &marked)
            }
            checkPins(maps)
            report(marked, now: now)
            guard reattach else { return }
            var reattached = false
            for (index, interface) in firewall.interfaces.enumerated()
            where watches[index].state == .notAttached && !marked.contains(interface) {
                reattached = reattach(interface, maps, watch: &watches[index]) || reattached
            }
            if reattached { report(marked, now: now) }
        }
        return now + 2
    }

    /// Reads whether the bans reach the packets of `interface`. A check that could not be made (no
    /// descriptor left, a BPF call refused) is said as such, once, and changes nothing: it is not
    /// "detached".
    private func check(_ interface: String, _ maps: BanMaps, watch: inout Watch, marked: inout Set<String>) {
        let now: Attachment.Enforcement
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
                            + "it was \(watch.state == .enforced ? "enforcing" : "NOT enforcing") bans at the last check"
                    ))
            }
            watch.failure = text
            return
        }
        if watch.failure != nil {
            say(LogLine("the filter on \(interface) can be checked again"))
            watch.failure = nil
        }
        if now == .enforced { marked.remove(interface) }
        watch.state = now
    }

    /// The problems of the last checks, to `health`.
    private func report(_ marked: Set<String>, now: Double) {
        let pins = firewall.pins
        var problems: [(kind: HealthProblem.Kind, text: String)] = []
        for (index, interface) in firewall.interfaces.enumerated() {
            switch watches[index].state {
            case .enforced:
                continue
            case .notAttached where marked.contains(interface):
                problems.append(
                    (
                        .detachedByOperator(interface: interface),
                        "the filter was detached from \(interface) by the operator (portcullis detach): bans are NOT "
                            + "enforced there, and portcullisd does not put it back; "
                            + "portcullis attach \(interface) --pin-dir \(pins) enforces them again"
                    ))
            case .notAttached:
                problems.append(
                    (
                        .filterDetached(interface: interface),
                        "the filter is no longer attached to \(interface): bans are NOT enforced; "
                            + (reattach
                                ? "re-attaching it (--reattach)"
                                : "attach it again (portcullis attach \(interface) --pin-dir \(pins)) or run with --reattach")
                    ))
            case .otherMaps:
                problems.append(
                    (
                        .otherMaps(interface: interface),
                        "the filter on \(interface) now reads other maps than \(pins): bans are NOT enforced; "
                            + "portcullis detach \(interface), then portcullis attach \(interface) --pin-dir \(pins)"
                    ))
            }
        }
        if let pinFailure {
            problems.append(
                (
                    .pinsMissing,
                    "the maps' pins in \(pins) are not in order: \(pinFailure); other commands and the next "
                        + "start may not find the maps in use"
                ))
        }
        health.report(problems, from: name, now: now)
    }

    /// `--reattach`: puts the filter back on `interface`. - Returns: whether it enforces again.
    private func reattach(_ interface: String, _ maps: BanMaps, watch: inout Watch) -> Bool {
        do {
            _ = try Attachment.attach(
                interface: interface, objectPath: firewall.objectPath, pinDirectory: firewall.pins, mode: mode)
            guard (try? Attachment.enforcement(of: maps, on: interface)) == .enforced else { return false }
            watch.state = .enforced
            watch.reattachFailure = nil
            say(LogLine("re-attached the filter to \(interface): bans enforced again"))
            return true
        } catch {
            let text = "cannot re-attach to \(interface): \(error)"
            if watch.reattachFailure != text { say(.error(text)) }
            watch.reattachFailure = text
            return false
        }
    }

    /// Vanished pins (the directory removed, the BPF filesystem unmounted) are put back; pins that
    /// cannot be are a problem reported to `health`.
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
            pinFailure = nil
        } catch {
            pinFailure = "\(error)"
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
