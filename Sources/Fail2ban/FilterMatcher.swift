// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

/// Matches log lines with one `CompiledFilter`, as fail2ban's `Filter.processLine` and
/// `findFailure` do (with `checkAllRegex` off, as the fail2ban server runs): the date is found
/// and cut from the line, `prefregex` is matched and its `<F-CONTENT>` handed to the failregexes,
/// the first failregex that matches decides, an ignoreregex hit makes the line `.ignored`.
///
/// A matcher belongs to one thread: it owns the PCRE2 match data and the buffers (allocated once;
/// `scan` allocates nothing) and the multi-line state — the last `maxlines` lines and the
/// `<F-MLFID>` cache (the connection a line belongs to, which lets a later line supply the host or
/// withdraw a failure). Lines of one connection must therefore reach the same matcher, in order.
public final class FilterMatcher {
    /// The filter matched.
    public let filter: CompiledFilter

    let prefixData: Pattern.MatchData?
    let failureData: [Pattern.MatchData]
    let ignoreData: [Pattern.MatchData]
    let dateData: [Pattern.MatchData]

    /// What the patterns see: the cut line(s), each followed by "\n" (fail2ban's `_tupleLinesBuf`).
    let buffer: UnsafeMutablePointer<UInt8>
    let bufferCapacity: Int
    /// `<F-CONTENT>` of prefregex, followed by "\n".
    let content: UnsafeMutablePointer<UInt8>
    /// The last `maxlines` cut lines (multi-line filters only): each in a stride of its own.
    let history: UnsafeMutablePointer<UInt8>
    let historyStride: Int
    var historyLengths: [Int]
    var historyCount = 0
    /// Where each buffered line starts in `buffer` (`dropMatchedLines`).
    let lineStarts: UnsafeMutablePointer<Int>

    let current = FieldSet()
    let scratch = FieldSet()
    var slots: [MultiLineSlot]
    var useCounter: UInt64 = 0

    /// fail2ban's mlfid cache holds 100 connections (`Utils.Cache(maxCount=100)`).
    static let multiLineSlots = 100

    /// Where the date was found in the last line scanned (byte offsets of fail2ban's cut), nil when
    /// none was.
    public private(set) var lastDateRange: Range<Int>? = nil

    public init(_ filter: CompiledFilter) {
        self.filter = filter
        prefixData = filter.prefix.map { Pattern.MatchData($0.pattern) }
        failureData = filter.failures.map { Pattern.MatchData($0.pattern) }
        ignoreData = filter.ignores.map { Pattern.MatchData($0.pattern) }
        dateData = filter.dates.map { Pattern.MatchData($0.pattern) }
        historyStride = filter.maxLineLength + 1
        bufferCapacity = filter.maxlines * historyStride + 1
        buffer = .allocate(capacity: bufferCapacity)
        content = .allocate(capacity: bufferCapacity)
        history = .allocate(capacity: filter.maxlines > 1 ? filter.maxlines * historyStride : 1)
        historyLengths = Array(repeating: 0, count: filter.maxlines)
        lineStarts = .allocate(capacity: filter.maxlines)
        slots = (0..<Self.multiLineSlots).map { _ in MultiLineSlot() }
    }

    deinit {
        buffer.deallocate()
        content.deallocate()
        history.deallocate()
        lineStarts.deallocate()
    }

    /// Forgets the multi-line state (buffered lines, connections).
    public func reset() {
        historyCount = 0
        for slot in slots { slot.inUse = false }
    }

    /// Scans one line (without its "\n"; a trailing "\r" is dropped).
    /// - Returns: `.offence` with the host's address; `.invalidAddress` when the host is a name or
    ///   no address; `.ignored` when an ignoreregex matched; `.matchLimit` when a pattern hit its
    ///   match limit; `.tooLong`; `.notMatching` otherwise (also for lines that only feed the
    ///   multi-line state, such as `<F-NOFAIL>` lines).
    public func scan(_ line: UnsafeRawBufferPointer) -> ScanOutcome {
        if line.count > filter.maxLineLength { return .tooLong }
        var count = line.count
        let base = line.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(content)
        while count > 0 && (base[count - 1] == 13 || base[count - 1] == 10) { count -= 1 }
        var cutStart = 0
        var cutEnd = 0
        lastDateRange = nil
        if filter.detectsDates, let range = findDate(base, count: count) {
            cutStart = range.start
            cutEnd = range.end
            lastDateRange = range.start..<range.end
        }
        let length: Int
        if filter.maxlines == 1 {
            buffer.update(from: base, count: cutStart)
            (buffer + cutStart).update(from: base + cutEnd, count: count - cutEnd)
            length = cutStart + count - cutEnd + 1
            buffer[length - 1] = 10
        } else {
            appendHistory(base, count: count, cutStart: cutStart, cutEnd: cutEnd)
            length = joinHistory()
        }
        return findFailure(length: length)
    }

    /// The line as the failregexes see it once the date is cut (tests, `portcullis regex`).
    public func cutLine(_ text: String) -> String {
        var bytes = Array(text.utf8)
        while let last = bytes.last, last == 10 || last == 13 { bytes.removeLast() }
        guard let range = bytes.withUnsafeBufferPointer({ findDate($0.baseAddress!, count: $0.count) }) else {
            return text
        }
        return String(decoding: bytes[..<range.start] + bytes[range.end...], as: UTF8.self)
    }

    // MARK: Dates

    /// fail2ban's `DateDetector.matchTime` for a detector without history: the first template that
    /// is anchored or matches at the line's start (distance <= 1) wins; otherwise the match nearest
    /// the start. - Returns: the span of group 1 (what fail2ban cuts).
    func findDate(_ base: UnsafePointer<UInt8>, count: Int) -> (start: Int, end: Int)? {
        var best: (start: Int, end: Int, distance: Int)? = nil
        let last = dateData.count - 1
        for (index, data) in dateData.enumerated() {
            guard data.search(base, count: count) > 0, let whole = data.range(0) else { continue }
            let cut = data.range(1) ?? whole
            if index == last || filter.dates[index].template.isAnchored || whole.start <= 1 {
                if let best, best.distance < whole.start { return (best.start, best.end) }
                return cut
            }
            if best == nil || whole.start < best!.distance { best = (cut.start, cut.end, whole.start) }
        }
        return best.map { ($0.start, $0.end) }
    }

    // MARK: Multi-line buffer

    func appendHistory(_ base: UnsafePointer<UInt8>, count: Int, cutStart: Int, cutEnd: Int) {
        if historyCount == filter.maxlines { dropHistory(0..<1) }
        let slot = history + historyCount * historyStride
        slot.update(from: base, count: cutStart)
        (slot + cutStart).update(from: base + cutEnd, count: count - cutEnd)
        historyLengths[historyCount] = cutStart + count - cutEnd
        historyCount += 1
    }

    /// Removes the buffered lines in `range` (indexes), keeping the others in order.
    func dropHistory(_ range: Range<Int>) {
        var target = range.lowerBound
        for source in range.upperBound..<historyCount {
            (history + target * historyStride).update(
                from: history + source * historyStride, count: historyLengths[source])
            historyLengths[target] = historyLengths[source]
            target += 1
        }
        historyCount = target
    }

    func joinHistory() -> Int {
        var length = 0
        for index in 0..<historyCount {
            buffer.advanced(by: length).update(from: history + index * historyStride, count: historyLengths[index])
            length += historyLengths[index]
            buffer[length] = 10
            length += 1
        }
        return length
    }

    /// fail2ban's `getUnmatchedTupleLines`: after a match, the lines it spans leave the buffer,
    /// except those a `<SKIPLINES>` covered.
    func dropMatchedLines(_ data: Pattern.MatchData, regex: CompiledRegex, subject: UnsafePointer<UInt8>, length: Int) {
        guard filter.maxlines > 1, let whole = data.range(0) else { return }
        guard subject == UnsafePointer(buffer) else {
            historyCount = 0  // matched inside prefregex content: the buffer was replaced by it
            return
        }
        let lineStarts = self.lineStarts  // maxlines entries, allocated once
        var offset = 0
        for index in 0..<historyCount {
            lineStarts[index] = offset
            offset += historyLengths[index] + 1
        }
        var kept = 0
        let total = historyCount
        for index in 0..<total {
            let start = lineStarts[index]
            let end = start + historyLengths[index] + 1
            let inside =
                end > whole.start + (whole.start < length && subject[whole.start] == 10 ? 1 : 0)
                && start < max(whole.end, whole.start + 1)
            var skipped = false
            if inside {
                for group in regex.skipLineGroups {
                    if let span = data.range(group), start >= span.start, end <= span.end { skipped = true }
                }
            }
            if !inside || skipped {
                if kept != index {
                    (history + kept * historyStride).update(
                        from: history + index * historyStride, count: historyLengths[index])
                    historyLengths[kept] = historyLengths[index]
                }
                kept += 1
            }
        }
        historyCount = kept
    }

    // MARK: Matching

    enum Search { case matched, missed, limit }

    @inline(__always)
    func search(_ data: Pattern.MatchData, _ subject: UnsafePointer<UInt8>, _ length: Int) -> Search {
        let result = data.search(subject, count: length)
        if result > 0 { return .matched }
        if result == PCRE2_ERROR_NOMATCH { return .missed }
        if result == PCRE2_ERROR_MATCHLIMIT || result == PCRE2_ERROR_DEPTHLIMIT || result == PCRE2_ERROR_JIT_STACKLIMIT
            || result == PCRE2_ERROR_HEAPLIMIT
        {
            return .limit
        }
        return .missed
    }

    /// What an ignoreregex is matched against after a failregex matched (fail2ban's `_ignoreLine`):
    /// with a multi-line buffer, only the lines the failregex's match covers (whole lines); else
    /// the whole subject. - Returns: the span, as an offset into `subject` and a length.
    func matchedLines(_ data: Pattern.MatchData, subject: UnsafePointer<UInt8>, length: Int) -> (Int, Int) {
        guard filter.maxlines > 1, subject == UnsafePointer(buffer), let whole = data.range(0) else {
            return (0, length)
        }
        var start = min(whole.start, length)
        while start > 0 && subject[start - 1] != 10 { start -= 1 }
        var end = max(whole.end - 1, whole.start)
        while end < length && subject[end] != 10 { end += 1 }
        return (start, min(end + 1, length) - start)
    }

    func anyIgnore(_ subject: UnsafePointer<UInt8>, _ length: Int) -> Search {
        for data in ignoreData {
            let result = search(data, subject, length)
            if result != .missed { return result }
        }
        return .missed
    }

    func record(
        _ regex: CompiledRegex, _ data: Pattern.MatchData, from subject: UnsafePointer<UInt8>, into fields: FieldSet
    ) {
        for (field, group) in regex.groups.enumerated() where group != 0 {
            if let span = data.range(group) {
                fields.set(field, subject + span.start, span.end - span.start)
            } else {
                fields.remove(field)
            }
        }
        for (group, field) in regex.alternatives where !fields.isTruthy(field.rawValue) {
            if let span = data.range(group), span.end > span.start {
                fields.set(field.rawValue, subject + span.start, span.end - span.start)
            }
        }
    }

    func findFailure(length: Int) -> ScanOutcome {
        var subject = UnsafePointer(buffer)
        var subjectLength = length
        if !ignoreData.isEmpty && ignoreData.count < failureData.count - 2 {
            switch anyIgnore(subject, subjectLength) {
            case .matched: return .ignored
            case .limit: return .matchLimit
            case .missed: break
            }
        }
        current.clear()
        if let prefix = filter.prefix, let prefixData {
            switch search(prefixData, subject, subjectLength) {
            case .missed: return .notMatching
            case .limit: return .matchLimit
            case .matched: break
            }
            record(prefix, prefixData, from: subject, into: current)
            if prefix.content != 0, let span = prefixData.range(prefix.content), span.end > span.start {
                content.update(from: subject + span.start, count: span.end - span.start)
                content[span.end - span.start] = 10
                subject = UnsafePointer(content)
                subjectLength = span.end - span.start + 1
            }
        }
        for (index, data) in failureData.enumerated() {
            let regex = filter.failures[index]
            switch search(data, subject, subjectLength) {
            case .missed: continue
            case .limit: return .matchLimit
            case .matched: break
            }
            if !ignoreData.isEmpty {
                let (ignoreStart, ignoreLength) = matchedLines(data, subject: subject, length: subjectLength)
                switch anyIgnore(subject + ignoreStart, ignoreLength) {
                case .matched:
                    dropMatchedLines(data, regex: regex, subject: subject, length: subjectLength)
                    return .ignored
                case .limit: return .matchLimit
                case .missed: break
                }
            }
            record(regex, data, from: subject, into: current)
            dropMatchedLines(data, regex: regex, subject: subject, length: subjectLength)
            var fields = current
            let multiLine = current.has(FailField.mlfid.rawValue)
            if multiLine {
                fields = merge(current)
                if fields.isTruthy(FailField.nofail.rawValue) { return .notMatching }
            }
            // ip4, then ip6, then dns (FailField's first three).
            var host = -1
            for field in FailField.ip4.rawValue...FailField.dns.rawValue where fields.has(field) {
                host = field
                break
            }
            let fid = FailField.fid.rawValue
            if host < 0 && fields.has(fid) { host = fid }
            if host < 0 {
                if multiLine { fields.pending = true }
                return .notMatching  // waiting for the host (fail2ban: mlfpending), or no host group
            }
            if fields.has(fid) && host != fid && !fields.equal(fid, host) { host = fid }
            if host == FailField.dns.rawValue && !fields.has(fid) {
                // A name: fail2ban would resolve it (usedns); Portcullis never does.
                var key = IPAddress(high: 0, low: 0)
                return fields.withField(host) { IPAddress.parse($0, count: $1, into: &key) }
                    ? .offence(key) : .invalidAddress
            }
            var key = IPAddress(high: 0, low: 0)
            return fields.withField(host) { IPAddress.parse($0, count: $1, into: &key) }
                ? .offence(key) : .invalidAddress
        }
        return .notMatching
    }

    // MARK: <F-MLFID> cache (fail2ban's `_mergeFailure`)

    func findSlot(_ fields: FieldSet) -> MultiLineSlot? {
        let key = FailField.mlfid.rawValue
        for slot in slots where slot.inUse && slot.fields.equal(key, in: fields) { return slot }
        return nil
    }

    func allocateSlot() -> MultiLineSlot {
        if let free = slots.first(where: { !$0.inUse }) { return free }
        var oldest = slots[0]
        for slot in slots where slot.lastUse < oldest.lastUse { oldest = slot }
        return oldest
    }

    /// The bits of fail2ban's `nfflgs` that `_mergeFailure` reads here (its other two, "no
    /// failure" 1 and "the cached line was none" 4, steer its `matches` list, which is not kept).
    struct MergeFlags: OptionSet {
        let rawValue: UInt8
        /// `mlfforget`: the connection ends, and its cache entry with it (fail2ban's 2).
        static let forget = MergeFlags(rawValue: 2)
        /// `mlfgained`: the host is known now, and the connection's pending failures are reset (8).
        static let gained = MergeFlags(rawValue: 8)
    }

    func merge(_ fail: FieldSet) -> FieldSet {
        let nofail = FailField.nofail.rawValue
        let gained = FailField.mlfgained.rawValue
        let forget = FailField.mlfforget.rawValue
        var flags: MergeFlags = []
        if fail.isTruthy(gained) {
            flags.insert(.gained)
            if !fail.isTruthy(nofail) { fail.copy(gained, to: nofail) }
        }
        if fail.isTruthy(forget) { flags.insert(.forget) }
        fail.remove(forget)
        useCounter += 1
        var users = 0
        let result: FieldSet
        if let slot = findSlot(fail) {
            let known = slot.fields
            users = known.addUser(from: fail)
            known.remove(nofail)
            known.remove(gained)
            if flags.contains(.gained) { known.pending = false }
            known.update(from: fail)
            if flags.contains(.forget) {
                scratch.copyAll(from: known)
                slot.inUse = false
                result = scratch
            } else {
                slot.lastUse = useCounter
                result = known
            }
        } else if !flags.contains(.forget) {
            users = fail.addUser(from: fail)
            let slot = allocateSlot()
            slot.inUse = true
            slot.lastUse = useCounter
            slot.fields.copyAll(from: fail)
            result = slot.fields
        } else {
            result = fail
        }
        if result.pending || users > 1 {
            result.pending = false
            result.remove(nofail)
            result.remove(gained)
        }
        return result
    }
}
