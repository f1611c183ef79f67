// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CPortcullis
import Foundation
import PortcullisCore
import PortcullisSystem

/// One measured figure next to its reference, both taken in the same run: absolute numbers on a
/// shared 2-vCPU machine swing several-fold minute to minute, their ratio does not.
struct Measurement: Encodable {
    let suite: String
    let name: String
    let unit: String
    let value: Double
    let reference: String
    let referenceValue: Double
    /// value / reference value.
    let ratio: Double
    /// Rounds the medians were taken over.
    let rounds: Int
    /// Lines lost and delivered twice, summed over rounds and readers (transport suites).
    var lost: UInt64?
    var duplicated: UInt64?
    var referenceLost: UInt64?
    var referenceDuplicated: UInt64?

    /// - Parameter ratio: the median of per-round ratios when the rounds alternated; by default
    ///   value / reference value.
    init(
        suite: String, name: String, unit: String, value: Double, reference: String, referenceValue: Double,
        rounds: Int, ratio: Double? = nil
    ) {
        self.suite = suite
        self.name = name
        self.unit = unit
        self.value = value
        self.reference = reference
        self.referenceValue = referenceValue
        self.ratio = ratio ?? (referenceValue == 0 ? 0 : value / referenceValue)
        self.rounds = rounds
    }

    enum CodingKeys: String, CodingKey {
        case suite, name, unit, value, reference, referenceValue = "reference_value", ratio, rounds, lost, duplicated
        case referenceLost = "reference_lost", referenceDuplicated = "reference_duplicated"
    }
}

/// Options every suite understands.
struct HarnessOptions: ParsableArguments {
    @Flag(help: "Print one JSON object {\"results\": [...]} instead of a table.")
    var json = false

    @Option(help: "Rounds per measurement; each figure is the median over them.")
    var rounds = 7

    @Option(help: "CPU to pin the measuring thread to (-1: do not pin).")
    var cpu = 0

    func validate() throws {
        if rounds < 1 { throw ValidationError("--rounds must be at least 1") }
    }

    /// Pins the calling thread to `cpu`, so the figure and its reference run on the same core.
    func pin() throws {
        guard cpu >= 0 else { return }
        try pinThread(toCPU: cpu)
    }
}

/// A failure while measuring (not a usage error: no usage text with it).
struct MeasurementError: Error, CustomStringConvertible {
    let description: String
}

/// Pins the calling thread to one CPU (`sched_setaffinity`).
func pinThread(toCPU cpu: Int) throws {
    do throws(Errno) {
        try SystemThread.pinCurrent(to: cpu)
    } catch {
        throw MeasurementError(
            description: "cannot pin to CPU \(cpu): \(error); pass --cpu with a CPU this process may use, or --cpu -1")
    }
}

/// Median of a non-empty sample.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// Prints the results as a table or as JSON.
func report(_ results: [Measurement], json: Bool) throws {
    if json {
        struct Report: Encodable { let results: [Measurement] }
        print(JSONOutput.line(Report(results: results)))
        return
    }
    let nameWidth = max(4, results.map(\.name.count).max() ?? 0)
    let showLoss = results.contains { $0.lost != nil }
    let referenceWidth = max(9, results.map(\.reference.count).max() ?? 0)
    func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
    func number(_ value: Double) -> String {
        value >= 1000 ? String(format: "%14.0f", value) : String(format: "%14.2f", value)
    }
    print(
        pad("suite", 11) + pad("name", nameWidth) + "           value  unit        "
            + pad("reference", referenceWidth) + "       ref value    ratio"
            + (showLoss ? "  lost/dup  ref lost/dup" : ""))
    for result in results {
        var line =
            pad(result.suite, 11) + pad(result.name, nameWidth) + "  " + number(result.value) + "  "
            + pad(result.unit, 10) + "  " + pad(result.reference, referenceWidth) + "  " + number(result.referenceValue)
            + String(format: "  %7.3g", result.ratio)  // three significant digits: ratios run from 0.01 to 100
        if showLoss {
            line +=
                "  " + "\(result.lost ?? 0)/\(result.duplicated ?? 0)".leftPadded(8)
                + "  " + "\(result.referenceLost ?? 0)/\(result.referenceDuplicated ?? 0)".leftPadded(12)
        }
        print(line)
    }
}

@main
struct PortcullisPerf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "portcullis-perf",
        abstract: "Time Portcullis's hot paths, each next to a reference measured in the same run.",
        discussion: "Release builds only (swift build -c release). Needs root for the BPF suites.",
        subcommands: [
            XDPSuite.self, TransportsSuite.self, EngineSuite.self, PipelineSuite.self, AgingSuite.self, FleetSuite.self,
            FleetLoadSuite.self,
            WorkloadSuite.self, PacedSuite.self, IdleSuite.self, SoakSuite.self, CrowdSecScaleSuite.self,
        ]
    )
}

/// Runs a suite: refuses debug builds, pins if asked, prints the results, and turns any failure
/// while measuring into one line on stderr and exit status 1.
func runSuite(_ options: HarnessOptions, pinMeasuringThread: Bool = true, _ measure: () throws -> [Measurement]) throws
{
    try requireReleaseBuild()
    do {
        if pinMeasuringThread { try options.pin() }
        try report(try measure(), json: options.json)
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("portcullis-perf: \(error)\n".utf8))
        throw ExitCode.failure
    }
}

/// Refuses to produce numbers from a debug build, which would mislead everyone who reads them.
func requireReleaseBuild() throws {
    #if DEBUG
    FileHandle.standardError.write(
        Data(
            "portcullis-perf: this is a debug build; measure a release build: swift build -c release\n".utf8))
    throw ExitCode(2)
    #endif
}
