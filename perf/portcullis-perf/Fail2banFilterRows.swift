// SPDX-License-Identifier: Apache-2.0
import Fail2ban
import Foundation
import LogTransport
import PortcullisCore
import PortcullisSystem

/// fail2ban's own sshd filter over fail2ban's own sshd sample lines: what a jail that imports
/// `filter = sshd` costs per line, next to the built-in scanner.
struct Fail2banSSHDRows {
    /// The sshd filter's modes (`mode` in sshd.conf); aggressive combines ddos and extra.
    static let modes = ["normal", "ddos", "extra", "aggressive"]

    let filterDirectory: String
    let sampleLog: String
    let lines: Int

    /// What one pass over the sample lines gave; equal in every round, since each starts from a
    /// fresh multi-line state.
    struct Outcomes: Equatable {
        var offences = 0
        var invalidAddresses = 0
        var notMatching = 0
        var other = 0
    }

    /// Why the rows cannot run here (the sshd filter or the sample log missing), or nil.
    func missingInput() -> String? {
        let filter = filterDirectory + "/sshd.conf"
        for (path, what) in [(filter, "fail2ban's sshd filter"), (sampleLog, "fail2ban's sshd sample log")]
        where !FileManager.default.isReadableFile(atPath: path) {
            return "\(what) \(path) is missing (apt-get install fail2ban, or pass --fail2ban-filters DIR and "
                + "--fail2ban-sample-log FILE)"
        }
        return nil
    }

    /// The sample log's lines that are neither empty nor comments (what fail2ban-regex reads of
    /// it), repeated in order to `lines` lines, in a LineBatch (the layout workers scan).
    func sampleLines() throws -> LineBatch {
        guard lines >= 1 else { throw MeasurementError(description: "--fail2ban-lines must be at least 1") }
        guard let data = FileManager.default.contents(atPath: sampleLog) else {
            throw MeasurementError(description: "cannot read \(sampleLog)")
        }
        let sample = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true).filter { line in
            line.first != UInt8(ascii: "#") && line.contains { $0 != 32 && $0 != 9 && $0 != 13 }
        }
        guard !sample.isEmpty else { throw MeasurementError(description: "\(sampleLog) holds no log lines") }
        let bytesPerPass = sample.reduce(0) { $0 + $1.count }
        let batch = LineBatch(byteCapacity: (lines / sample.count + 1) * bytesPerPass, lineCapacity: lines)
        for index in 0..<lines {
            sample[index % sample.count].withUnsafeBytes { _ = batch.append($0) }
        }
        guard batch.count == lines else { throw MeasurementError(description: "the sample lines did not fit") }
        return batch
    }

    /// The sshd filter in `mode`, compiled as a jail would (`filter = sshd[mode=MODE]`).
    func matcher(mode: String) throws -> FilterMatcher {
        do {
            let definition = try FilterLoader.load("sshd[mode=\(mode)]", filterDirectory: filterDirectory)
            return FilterMatcher(try CompiledFilter(definition))
        } catch {
            throw MeasurementError(description: "fail2ban's sshd filter (mode \(mode)): \(error)")
        }
    }

    /// Lines/s of `matcher` over `batch`, from a fresh multi-line state, called directly as a worker
    /// does. - Throws: when no line gave an offence, or the outcomes differ from `expected`.
    static func scanRate(_ batch: LineBatch, _ matcher: FilterMatcher, expected: inout Outcomes?) throws -> Double {
        matcher.reset()
        var outcomes = Outcomes()
        var checksum: UInt64 = 0
        let start = SystemClock.monotonicSeconds()
        batch.forEachLine { line in
            switch matcher.scan(line) {
            case .offence(let key):
                outcomes.offences += 1
                checksum ^= key.high ^ key.low
            case .invalidAddress: outcomes.invalidAddresses += 1
            case .notMatching: outcomes.notMatching += 1
            case .tooLong, .matchLimit, .ignored: outcomes.other += 1
            }
        }
        let elapsed = SystemClock.monotonicSeconds() - start
        blackHole(checksum)
        guard outcomes.offences > 0 else {
            throw MeasurementError(description: "\(matcher.filter.definition.reference) found no offence in the sample")
        }
        if let expected, expected != outcomes {
            throw MeasurementError(
                description: "\(matcher.filter.definition.reference) scanned the same lines differently: "
                    + "\(outcomes), before \(expected)")
        }
        expected = outcomes
        return Double(batch.count) / elapsed
    }
}
