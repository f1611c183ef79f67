// SPDX-License-Identifier: Apache-2.0
import PortcullisSystem
import Synchronization

/// Boot time a test steps instead of waiting for it (`Daemon`'s `bootClock`): it starts at the real
/// `CLOCK_BOOTTIME` and moves only when told.
public final class ManualClock: Sendable {
    private let nanoseconds: Atomic<UInt64>

    public init(bootNanoseconds: UInt64 = SystemClock.bootNanoseconds()) {
        nanoseconds = Atomic(bootNanoseconds)
    }

    /// Boot nanoseconds now.
    public var now: UInt64 { nanoseconds.load(ordering: .acquiring) }

    /// Moves time on by `seconds`.
    public func advance(seconds: Double) {
        nanoseconds.add(UInt64(seconds * 1e9), ordering: .acquiringAndReleasing)
    }

    /// The clock as a `Daemon` takes it.
    public var source: @Sendable () -> UInt64 { { [self] in now } }
}
