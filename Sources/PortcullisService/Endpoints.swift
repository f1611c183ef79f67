// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisControl
import PortcullisCore
import PortcullisDaemon
import PortcullisMetrics
import PortcullisSystem

/// The control socket (`portcullis status, ban, list, reload...`): made first, so that a path in
/// use refuses the start before the interface is touched; its thread answers "starting" until the
/// daemon runs. Restart-only.
public final class ControlComponent: Component {
    public let name = "control"
    private let path: String
    private let group: gid_t?
    let controlled: ControlledDaemon
    private var server: ControlServer?
    private var thread: SystemThread?
    private let stopping = StopFlag()

    init(path: String, group: gid_t?, controlled: ControlledDaemon) {
        self.path = path
        self.group = group
        self.controlled = controlled
    }

    public func start(_ settings: NoSettings) throws -> [LogLine] {
        guard path != "none" else { return [] }
        let controlled = self.controlled
        let server: ControlServer
        do throws(ControlError) {
            server = try ControlServer(path: path, allowedGroup: group) { controlled.handle($0) }
        } catch {
            throw DaemonError.invalidSetting(error.description)
        }
        server.streamer = { controlled.stream($0, to: $1) }
        controlled.server = server
        let stopping = self.stopping
        do throws(Errno) {
            thread = try SystemThread.spawn { server.run(isStopping: { stopping.isSet }) }
        } catch {
            server.close()
            throw DaemonError.invalidSetting("cannot start the control socket's thread: \(error)")
        }
        self.server = server
        return [LogLine("control socket \(server.path)")]
    }

    public func stop() {
        stopping.set()
        thread?.join()
        server?.close()
        thread = nil
        server = nil
    }
}

/// The Prometheus endpoint (`--metrics ADDRESS:PORT`): made before the interface is touched (a port
/// in use refuses the start); its scrape reads the daemon, the maps and every component's metrics.
/// Restart-only.
public final class MetricsComponent: Component {
    public let name = "metrics"
    private let endpoint: MetricsEndpoint?
    /// The ban publisher for bans, unbans and the line-to-ban latency (hand it to the daemon).
    public let metrics = DaemonMetrics(version: PortcullisVersion.current)
    private let controlled: ControlledDaemon
    private var server: MetricsServer?

    init(endpoint: MetricsEndpoint?, controlled: ControlledDaemon) {
        self.endpoint = endpoint
        self.controlled = controlled
    }

    /// The URL served (with the port picked for port 0), once started.
    public var url: String? { server.map { $0.endpoint.url(port: $0.port) } }

    public func start(_ settings: NoSettings) throws -> [LogLine] {
        guard let endpoint else { return [] }
        let (metrics, controlled) = (self.metrics, self.controlled)
        do throws(MetricsError) {
            server = try MetricsServer(endpoint: endpoint) { metrics.render(controlled.metricsInputs()) }
        } catch {
            throw DaemonError.invalidSetting(error.description)
        }
        var lines = [LogLine("metrics at \(url!)")]
        if !endpoint.isLoopback {
            lines.append(
                .error(
                    "note: the metrics are served beyond this host (\(endpoint.hostText)); "
                        + "restrict who reaches the port, or use 127.0.0.1"))
        }
        return lines
    }

    public func stop() {
        server?.close()
        server = nil
    }
}
