// SPDX-License-Identifier: Apache-2.0
import PortcullisSystem

/// The daemon's one clock for ban times. The offence table counts in *table seconds* (`UInt32`,
/// seconds since the daemon started); the ban maps hold ends in *boot nanoseconds*
/// (`CLOCK_BOOTTIME`, what the XDP program compares against). Both run on `CLOCK_BOOTTIME`, so a
/// ban's end can be placed on the table's clock, also across a suspend.
struct DaemonClock: Sendable {
    /// `CLOCK_BOOTTIME` when the daemon started: table second 0.
    let startBootNanoseconds: UInt64
    /// Where boot time comes from in tests (a clock they step); nil: `CLOCK_BOOTTIME`.
    private let source: (@Sendable () -> UInt64)?

    /// - Parameter source: boot nanoseconds now, for tests that step time (nil: `CLOCK_BOOTTIME`).
    init(source: (@Sendable () -> UInt64)? = nil) {
        self.source = source
        startBootNanoseconds = source?() ?? SystemClock.bootNanoseconds()
    }

    /// Boot nanoseconds now.
    var bootNow: UInt64 { source?() ?? SystemClock.bootNanoseconds() }

    /// Table seconds now.
    var tableNow: UInt32 { tableSecond(ofBootTime: bootNow) }

    /// The table second of a boot time (0 for a time before the start).
    func tableSecond(ofBootTime time: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: (time > startBootNanoseconds ? time - startBootNanoseconds : 0) / 1_000_000_000)
    }
}
