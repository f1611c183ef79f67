// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore
import PortcullisSystem

/// When a ban ends.
public enum BanExpiry: Sendable, Equatable {
    /// Until it is removed.
    case permanent
    /// At this `CLOCK_BOOTTIME` time (`SystemClock.bootNanoseconds`), in nanoseconds.
    case at(bootNanoseconds: UInt64)

    /// A ban lasting `seconds` from now; `nil` when the end would not fit in 64-bit nanoseconds.
    public static func after(seconds: UInt64, now: UInt64 = SystemClock.bootNanoseconds()) -> BanExpiry? {
        let (nanoseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (end, overflowEnd) = now.addingReportingOverflow(nanoseconds)
        return overflow || overflowEnd ? nil : .at(bootNanoseconds: end)
    }

    /// The value the XDP program reads: 0 means permanent.
    var expiresNanoseconds: UInt64 {
        switch self {
        case .permanent: return 0
        case .at(let end): return max(end, 1)
        }
    }

    init(expiresNanoseconds: UInt64) {
        self = expiresNanoseconds == 0 ? .permanent : .at(bootNanoseconds: expiresNanoseconds)
    }
}

/// One ban as it stands in a ban map.
public struct BanEntry: Sendable, Equatable {
    public let address: IPAddress
    public let expiry: BanExpiry
    /// Packets the XDP program dropped because of this ban.
    public let dropped: UInt64
    /// Who made it: `PC_ORIGIN_OPERATOR` (0), or a slot of the origin names (`BanMaps.originNames`).
    public let origin: UInt32
    /// The origin of an operator's ban (`PC_ORIGIN_OPERATOR`): one no jail's slot names.
    public static let operatorOrigin = UInt32(PC_ORIGIN_OPERATOR)

    public init(address: IPAddress, expiry: BanExpiry, dropped: UInt64, origin: UInt32 = UInt32(PC_ORIGIN_OPERATOR)) {
        self.address = address
        self.expiry = expiry
        self.dropped = dropped
        self.origin = origin
    }

    /// Whether the ban has ended at `now` (the program passes the address, though it is still listed).
    public func isExpired(now: UInt64 = SystemClock.bootNanoseconds()) -> Bool {
        if case .at(let end) = expiry { return now >= end }
        return false
    }
}

/// Totals of the XDP program's per-CPU counters, summed over all CPUs.
public struct FilterCounters: Sendable, Equatable {
    public struct Count: Sendable, Equatable {
        public var packets: UInt64 = 0
        public var bytes: UInt64 = 0

        public init(packets: UInt64 = 0, bytes: UInt64 = 0) {
            self.packets = packets
            self.bytes = bytes
        }
    }
    /// Packets from banned sources, dropped.
    public var dropped = Count()
    /// Packets passed: not banned, or not IP.
    public var passed = Count()
    /// Packets passed because their source's ban had expired.
    public var expired = Count()
    /// Packets passed that could not be parsed (truncated or invalid headers).
    public var malformed = Count()
    /// Packets passed because their source is in the allowlist, whatever bans cover it.
    public var allowed = Count()

    /// The counters in ABI order with their names, for tables and CSV.
    public var named: [(name: String, count: Count)] {
        [
            ("dropped", dropped), ("passed", passed), ("expired", expired), ("malformed", malformed),
            ("allowed", allowed),
        ]
    }
}

/// A ban to install: who and until when.
public struct BanRequest: Sendable {
    public let address: IPAddress
    public let expiry: BanExpiry
    /// Who makes it (`PC_ORIGIN_OPERATOR`, or a named origin's slot).
    public let origin: UInt32

    public init(_ address: IPAddress, _ expiry: BanExpiry, origin: UInt32 = UInt32(PC_ORIGIN_OPERATOR)) {
        self.address = address
        self.expiry = expiry
        self.origin = origin
    }

}
