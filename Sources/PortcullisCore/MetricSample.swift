// SPDX-License-Identifier: Apache-2.0
/// One series a companion of the daemon reports at scrape time.
public struct MetricSample: Sendable {
    public enum Kind: Sendable {
        /// A count the companion keeps (monotonic across its restarts here, as the daemon's).
        case counter
        case gauge
        /// A counter of seconds (fractional).
        case seconds
    }

    public let name: String
    public let help: String
    public let labels: [(String, String)]
    public let value: Double
    public let kind: Kind

    public static func counter(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) -> Self {
        Self(name: name, help: help, labels: labels, value: value, kind: .counter)
    }

    public static func gauge(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) -> Self {
        Self(name: name, help: help, labels: labels, value: value, kind: .gauge)
    }

    public static func seconds(_ name: String, _ help: String, _ labels: [(String, String)], _ value: Double) -> Self {
        Self(name: name, help: help, labels: labels, value: value, kind: .seconds)
    }
}
