// SPDX-License-Identifier: Apache-2.0
/// One change for the bucket: a ban to put (with its value's fields) or a key to delete.
public struct FleetChange: Sendable {
    let key: String
    /// Wall-clock milliseconds: the end (0: never) and when the maps took it. `isDelete`: unused.
    let end: UInt64
    let at: UInt64
    let jail: String
    let level: UInt32
    let isDelete: Bool

    static func delete(_ key: String, at: UInt64) -> FleetChange {
        FleetChange(key: key, end: 0, at: at, jail: "", level: 0, isDelete: true)
    }
}
