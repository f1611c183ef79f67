// SPDX-License-Identifier: Apache-2.0
import CPortcullis

/// A compiled PCRE2 pattern: JIT where the platform has it, every match under a match and depth
/// limit. Portcullis's one PCRE2 wrapper: fail2ban's filters and `--failregex` (`FailRegex`) are
/// both matched through it. Immutable once built, so one instance is shared by all threads; each
/// thread matches with its own `MatchData`.
final class Pattern: @unchecked Sendable {
    /// The expression as compiled.
    let source: String
    let code: OpaquePointer
    let context: OpaquePointer

    /// Options of fail2ban's patterns: UTF-8 with Unicode classes, as Python's `re` treats `str`
    /// patterns (`\w`, `\d`, `\s` are Unicode there); an invalid UTF-8 sequence in a line is matched
    /// as a non-character instead of failing the whole match.
    static let unicodeOptions = UInt32(PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF)

    /// Why `init` failed: where in `source` and what PCRE2 said.
    struct CompileError: Error {
        let offset: Int
        let message: String
    }

    init(
        _ source: String, options: UInt32 = Pattern.unicodeOptions, matchLimit: UInt32 = 10_000,
        depthLimit: UInt32 = 10_000
    ) throws(CompileError) {
        self.source = source
        var errorCode: Int32 = 0
        var errorOffset = 0
        let compiled = source.withCString { text in
            pcre2_compile_8(
                UnsafeRawPointer(text).assumingMemoryBound(to: UInt8.self), source.utf8.count, options,
                &errorCode, &errorOffset, nil)
        }
        guard let compiled else {
            var message = [UInt8](repeating: 0, count: 256)
            pcre2_get_error_message_8(errorCode, &message, message.count)
            throw CompileError(
                offset: errorOffset, message: String(decoding: message.prefix { $0 != 0 }, as: UTF8.self))
        }
        code = compiled
        _ = pcre2_jit_compile_8(code, UInt32(PCRE2_JIT_COMPLETE))
        context = pcre2_match_context_create_8(nil)
        pcre2_set_match_limit_8(context, matchLimit)
        pcre2_set_depth_limit_8(context, depthLimit)
    }

    deinit {
        pcre2_match_context_free_8(context)
        pcre2_code_free_8(code)
    }

    /// The number of the group called `name`, or nil when the pattern has none.
    func groupNumber(_ name: String) -> Int? {
        let number = name.withCString {
            pcre2_substring_number_from_name_8(code, UnsafeRawPointer($0).assumingMemoryBound(to: UInt8.self))
        }
        return number > 0 ? Int(number) : nil
    }

    /// Every named group: name and number.
    var namedGroups: [(name: String, number: Int)] {
        var count: UInt32 = 0
        var entrySize: UInt32 = 0
        var table: UnsafePointer<UInt8>? = nil
        pcre2_pattern_info_8(code, UInt32(PCRE2_INFO_NAMECOUNT), &count)
        pcre2_pattern_info_8(code, UInt32(PCRE2_INFO_NAMEENTRYSIZE), &entrySize)
        pcre2_pattern_info_8(code, UInt32(PCRE2_INFO_NAMETABLE), &table)
        guard count > 0, let table else { return [] }
        var result: [(String, Int)] = []
        for index in 0..<Int(count) {
            let entry = table + index * Int(entrySize)
            let number = Int(entry[0]) << 8 | Int(entry[1])
            let name = String(cString: entry + 2)
            result.append((name, number))
        }
        return result
    }

    /// Per-thread match state, allocated once.
    final class MatchData {
        let pattern: Pattern
        let data: OpaquePointer

        init(_ pattern: Pattern) {
            self.pattern = pattern
            data = pcre2_match_data_create_from_pattern_8(pattern.code, nil)
        }

        deinit { pcre2_match_data_free_8(data) }

        /// Searches `count` bytes at `base` from `start`. - Returns: PCRE2's result (> 0 matched,
        /// `PCRE2_ERROR_NOMATCH`, or a limit error).
        @inline(__always)
        func search(_ base: UnsafePointer<UInt8>, count: Int, from start: Int = 0, options: UInt32 = 0) -> Int32 {
            pcre2_match_8(pattern.code, base, count, start, options, data, pattern.context)
        }

        /// The byte range of group `number` of the last match, or nil when it did not take part.
        @inline(__always)
        func range(_ number: Int) -> (start: Int, end: Int)? {
            guard let vector = pcre2_get_ovector_pointer_8(data) else { return nil }
            let start = vector[2 * number]
            let end = vector[2 * number + 1]
            if start < 0 || start > end { return nil }  // PCRE2_UNSET is ~0, read as -1
            return (start, end)
        }
    }

    // MARK: Configuration-time helpers (allocate freely; never on the line path)

    /// A match against a Swift string: byte ranges into its UTF-8.
    struct Match {
        let bytes: [UInt8]
        let ranges: [(start: Int, end: Int)?]
        let pattern: Pattern

        var start: Int { ranges[0]!.start }
        var end: Int { ranges[0]!.end }

        func group(_ number: Int) -> String? {
            guard number < ranges.count, let range = ranges[number] else { return nil }
            return String(decoding: bytes[range.start..<range.end], as: UTF8.self)
        }

        func group(_ name: String) -> String? {
            guard let number = pattern.groupNumber(name) else { return nil }
            return group(number)
        }
    }

    /// The first match in `text` at or after byte `start`.
    func firstMatch(in text: String, from start: Int = 0, anchored: Bool = false) -> Match? {
        firstMatch(inBytes: Array(text.utf8), from: start, anchored: anchored)
    }

    func firstMatch(inBytes bytes: [UInt8], from start: Int = 0, anchored: Bool = false) -> Match? {
        let matchData = MatchData(self)
        let result = bytes.withUnsafeBufferPointer { buffer -> Int32 in
            let base = buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!
            return matchData.search(
                base, count: buffer.count, from: start, options: anchored ? UInt32(PCRE2_ANCHORED) : 0)
        }
        guard result > 0 else { return nil }
        var ranges: [(start: Int, end: Int)?] = []
        let groups = Int(pcre2_get_ovector_count_8(matchData.data))
        for number in 0..<groups { ranges.append(matchData.range(number)) }
        return Match(bytes: bytes, ranges: ranges, pattern: self)
    }

    /// Every non-overlapping match, left to right (as Python's `finditer`).
    func allMatches(in text: String) -> [Match] {
        let bytes = Array(text.utf8)
        var result: [Match] = []
        var position = 0
        while position <= bytes.count, let match = firstMatch(inBytes: bytes, from: position) {
            result.append(match)
            position = match.end > match.start ? match.end : match.end + 1
        }
        return result
    }

    /// `text` with every match replaced by what `replacement` returns (as Python's `re.sub`).
    func replacingAll(in text: String, count limit: Int = .max, _ replacement: (Match) -> String) -> String {
        let bytes = Array(text.utf8)
        var output: [UInt8] = []
        var position = 0
        var copied = 0
        var replaced = 0
        while replaced < limit, position <= bytes.count, let match = firstMatch(inBytes: bytes, from: position) {
            output += bytes[copied..<match.start]
            output += Array(replacement(match).utf8)
            copied = match.end
            replaced += 1
            if match.end > match.start {
                position = match.end
            } else {
                if match.end < bytes.count { output.append(bytes[match.end]) }
                position = match.end + 1
                copied = min(position, bytes.count)
            }
        }
        if copied < bytes.count { output += bytes[copied...] }
        return String(decoding: output, as: UTF8.self)
    }

    /// Whether the pattern matches somewhere in `text`.
    func matches(_ text: String) -> Bool { firstMatch(in: text) != nil }
}

/// Patterns that this module itself uses on configuration text (never on lines). They are fixed,
/// so a failure to compile is a programming error.
func fixedPattern(_ source: String, options: UInt32 = 0) -> Pattern {
    do {
        return try Pattern(source, options: options | UInt32(PCRE2_UTF), matchLimit: 10_000_000, depthLimit: 100_000)
    } catch {
        fatalError("fixed pattern \(source) does not compile at \(error.offset): \(error.message)")
    }
}
