// SPDX-License-Identifier: Apache-2.0
import CPortcullis

/// The group values of one failure (fail2ban's `fail` dict, for the groups it reads), copied into
/// storage of their own so that they outlive the line (the mlfid cache keeps them).
final class FieldSet {
    /// Bytes kept per value; longer values are cut (no address or flag is that long).
    static let valueCapacity = 255
    static let firstUser = FailField.allCases.count
    static let count = FailField.allCases.count + 1

    let storage: UnsafeMutablePointer<UInt8>
    /// Length of each value; -1 when absent (Python: None). A pointer, not an array: these are
    /// read and written for every group of every match, where an array's uniqueness and
    /// exclusivity checks cost as much as the reads (measured with perf: see BUILD.md).
    let lengths: UnsafeMutablePointer<Int>
    /// fail2ban's `mlfpending`: a failure seen, its host not yet.
    var pending = false
    /// How many distinct users the connection tried (0: none recorded, 2: more than one).
    var userCount = 0

    init() {
        storage = .allocate(capacity: Self.count * Self.valueCapacity)
        lengths = .allocate(capacity: Self.count)
        lengths.initialize(repeating: -1, count: Self.count)
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
    }

    func clear() {
        for index in 0..<Self.count { lengths[index] = -1 }
        pending = false
        userCount = 0
    }

    @inline(__always) func has(_ index: Int) -> Bool { lengths[index] >= 0 }
    /// Python truthiness: present and not empty.
    @inline(__always) func isTruthy(_ index: Int) -> Bool { lengths[index] > 0 }
    @inline(__always) func remove(_ index: Int) { lengths[index] = -1 }

    func set(_ index: Int, _ source: UnsafePointer<UInt8>, _ length: Int) {
        let kept = min(length, Self.valueCapacity)
        (storage + index * Self.valueCapacity).update(from: source, count: kept)
        lengths[index] = kept
    }

    func copy(_ from: Int, to: Int) {
        guard has(from) else { return remove(to) }
        set(to, storage + from * Self.valueCapacity, lengths[from])
    }

    func copy(_ index: Int, from other: FieldSet, as target: Int? = nil) {
        guard other.has(index) else { return remove(target ?? index) }
        set(target ?? index, other.storage + index * Self.valueCapacity, other.lengths[index])
    }

    func copyAll(from other: FieldSet) {
        for index in 0..<Self.count { copy(index, from: other) }
        pending = other.pending
        userCount = other.userCount
    }

    /// `dict.update` with the values that are not None.
    func update(from other: FieldSet) {
        for index in 0..<FailField.allCases.count where other.has(index) { copy(index, from: other) }
    }

    func equal(_ a: Int, _ b: Int) -> Bool {
        guard has(a), has(b), lengths[a] == lengths[b] else { return false }
        return memcmp(storage + a * Self.valueCapacity, storage + b * Self.valueCapacity, lengths[a]) == 0
    }

    func equal(_ index: Int, in other: FieldSet) -> Bool {
        guard has(index), other.has(index), lengths[index] == other.lengths[index] else { return false }
        return memcmp(storage + index * Self.valueCapacity, other.storage + index * Self.valueCapacity, lengths[index])
            == 0
    }

    /// fail2ban's `_updateUsers`: adds `other`'s user to this connection's users.
    /// - Returns: how many users are recorded (0 = none, 2 = more than one).
    func addUser(from other: FieldSet) -> Int {
        let user = FailField.user.rawValue
        guard other.isTruthy(user) else { return userCount }
        if userCount == 0 {
            copy(user, from: other, as: Self.firstUser)
            userCount = 1
        } else if userCount == 1 {
            let same =
                other.lengths[user] == lengths[Self.firstUser]
                && memcmp(
                    other.storage + user * Self.valueCapacity, storage + Self.firstUser * Self.valueCapacity,
                    lengths[Self.firstUser]) == 0
            if !same { userCount = 2 }
        }
        return userCount
    }

    func withField<R>(_ index: Int, _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
        body(storage + index * Self.valueCapacity, max(lengths[index], 0))
    }
}

/// One connection in the mlfid cache.
final class MultiLineSlot {
    let fields = FieldSet()
    var inUse = false
    var lastUse: UInt64 = 0
}
