// SPDX-License-Identifier: Apache-2.0
/// Which lines of the syslog source a jail reads: those whose tag is one of its own (all without
/// any), whole for its filter, or only the message for the built-in scanner (whose format a
/// service logs as its message). The lines are `SyslogMessage`'s: `TAG[PID]: MESSAGE`.
public struct SyslogRoute: Sendable, Equatable {
    public let tags: [[UInt8]]
    public let messageOnly: Bool
    /// RFC 3164 allows 32; rsyslog takes longer ones.
    static let longestTag = 48

    public init(tags: [String], messageOnly: Bool) {
        self.tags = tags.map { Array($0.utf8) }
        self.messageOnly = messageOnly
    }

    static func isTag(_ tag: String) -> Bool {
        (1...longestTag).contains(tag.utf8.count)
            && !tag.utf8.contains {
                $0 <= 0x20 || $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ",")
            }
    }

    /// The part of `line` the jail reads, or nil when the line is another jail's.
    @inline(__always)
    public func select(_ line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        var cursor = 0
        while cursor < line.count, line[cursor] != UInt8(ascii: "["), line[cursor] != UInt8(ascii: ":") { cursor += 1 }
        if !tags.isEmpty {
            let tag = UnsafeRawBufferPointer(rebasing: line[0..<cursor])
            guard tags.contains(where: { $0.elementsEqual(tag) }) else { return nil }
        }
        guard messageOnly else { return line }
        // `TAG[PID]: ` or `TAG: `: the message starts after ": ".
        while cursor < line.count, line[cursor] != UInt8(ascii: ":") { cursor += 1 }
        return UnsafeRawBufferPointer(rebasing: line[min(cursor + 2, line.count)...])
    }
}
