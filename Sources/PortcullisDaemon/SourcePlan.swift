// SPDX-License-Identifier: Apache-2.0
import LogTransport

/// Which reader groups a daemon opens for its jails: one per distinct source, so that jails
/// watching the same log share its lines. Jails on the syslog socket share its reader whatever
/// tags they read: their routes (tags; the message alone for the built-in scanner) pick their lines.
struct SourcePlan {
    /// One group per distinct source: its reader key, the jails reading it (with their index in
    /// the daemon's jails) and each one's syslog route (nil: not the syslog socket).
    var groups: [(source: TransportConfiguration, jails: [(index: Int, jail: Jail)], routes: [SyslogRoute?])] = []

    init(jails: [Jail]) {
        for (index, jail) in jails.enumerated() {
            for source in jail.configuration.sources {
                var route: SyslogRoute?
                if source.kind == .syslog {
                    let builtIn = if case .builtIn = jail.configuration.filter { true } else { false }
                    route = SyslogRoute(tags: source.syslog.tags, messageOnly: builtIn)
                }
                add(jail, index: index, source: source.readerKey, route: route)
            }
        }
    }

    private mutating func add(_ jail: Jail, index: Int, source: TransportConfiguration, route: SyslogRoute?) {
        guard let group = groups.firstIndex(where: { $0.source == source }) else {
            groups.append((source, [(index, jail)], [route]))
            return
        }
        guard let known = groups[group].jails.firstIndex(where: { $0.index == index }) else {
            groups[group].jails.append((index, jail))
            groups[group].routes.append(route)
            return
        }
        // The same jail on the socket twice: the tags of both (none: all).
        let old = groups[group].routes[known], new = route
        if let old, let new, !old.tags.isEmpty, !new.tags.isEmpty {
            groups[group].routes[known] = SyslogRoute(
                tags: (old.tags + new.tags).map { String(decoding: $0, as: UTF8.self) }, messageOnly: old.messageOnly)
        } else if let old {
            groups[group].routes[known] = SyslogRoute(tags: [], messageOnly: old.messageOnly)
        }
    }
}
