// SPDX-License-Identifier: Apache-2.0
import Foundation
import PortcullisSystem
import Testing

@Suite("Decimals for the CLI")
struct FixedDecimalsTests {
    @Test("fixed(n) writes what String(format: \"%.nf\") writes, ties and all")
    func matchesFormat() {
        let values: [Double] = [
            0, -0.0, 0.0005, 0.0015, 2.5, 3.5, -2.5, 1.0005, 12.3456, 999.9995, 1e20, 123_456_789.123, -0.4,
            .pi, .infinity, -.infinity, .nan, 1e-300, Double.greatestFiniteMagnitude,
        ]
        var generator = SystemRandomNumberGenerator()
        let random = (0..<2000).map { _ in Double.random(in: -1e7...1e7, using: &generator) }
        for value in values + random {
            for decimals in [0, 3] {
                #expect(value.fixed(decimals) == String(format: "%.\(decimals)f", value), "\(value) \(decimals)")
            }
        }
    }
}
