// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

/// What the daemon tells systemd under `Type=notify` (sd_notify(3) over `$NOTIFY_SOCKET`): ready,
/// reloading, stopping, and the watchdog's keep-alive. Every call is a no-op when no service manager
/// listens (no `NOTIFY_SOCKET`), so a daemon started by hand or by a test behaves as before.
public enum ServiceManager {
    /// The filter is attached, the sources are open and the workers read (`READY=1`).
    /// - Parameter status: a line `systemctl status` shows (`STATUS=`).
    public static func ready(status: String) {
        notify("READY=1\nSTATUS=\(status)")
    }

    /// The status line changed while the daemon runs (`STATUS=`): `systemctl status` shows it.
    public static func status(_ status: String) {
        notify("STATUS=\(status)")
    }

    /// A reload (SIGHUP) begins (`RELOADING=1`); `ready(status:)` says that it ended. The monotonic
    /// time in microseconds goes with it, as systemd 253's `Type=notify-reload` asks (older ones ignore it).
    public static func reloading() {
        notify("RELOADING=1\nMONOTONIC_USEC=\(SystemClock.monotonicNanoseconds() / 1000)")
    }

    /// The daemon is stopping (`STOPPING=1`).
    public static func stopping() {
        notify("STOPPING=1")
    }

    /// The watchdog's keep-alive (`WATCHDOG=1`): the main loop sends it while it turns.
    public static func keepAlive() {
        notify("WATCHDOG=1")
    }

    /// The interval systemd expects keep-alives in (`WatchdogSec=`, through `$WATCHDOG_USEC` for this
    /// process), in seconds; nil without a watchdog. Send them at least twice as often.
    public static var watchdogInterval: Double? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return Double(microseconds) / 1e6
    }

    /// sd_notify(3): a negative return is an error sending to the socket, 0 no socket. Neither stops
    /// the daemon (the service manager then declares it failed by its own timeout).
    private static func notify(_ state: String) {
        _ = sd_notify(0, state)
    }
}
