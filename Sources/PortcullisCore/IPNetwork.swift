// SPDX-License-Identifier: Apache-2.0
/// A network: an address with its host bits zero and a prefix length of its family (0...32 for
/// IPv4, 0...128 for IPv6). A single address is a network of full length.
public struct IPNetwork: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    /// The longest prefix of `family`: 32 or 128.
    public static func fullLength(_ family: IPAddress.Family) -> Int { family == .ipv4 ? 32 : 128 }

    /// The network of `address`'s first `length` bits.
    public init(containing address: IPAddress, length: Int) {
        let full = Self.fullLength(address.family)
        let length = max(0, min(length, full))
        self.address = address.masked(bits: address.isIPv4 ? 96 + length : length)
        self.length = length
    }

    /// `ADDRESS/LENGTH`, or an address alone (a network of full length).
    /// - Throws: one line naming what is wrong; a network written with host bits set is refused
    ///   with the network it would be (`198.18.1.7/24`: write 198.18.1.0/24), not masked silently.
    public init(parsing text: String) throws(SettingError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = IPAddress(String(parts[0])) else {
            throw SettingError("'\(text)': '\(parts[0])' is not an IPv4 or IPv6 address")
        }
        let full = Self.fullLength(address.family)
        var length = full
        if parts.count == 2 {
            guard let given = Int(parts[1]), (0...full).contains(given), parts[1].allSatisfy(\.isNumber) else {
                throw SettingError("'\(text)': the prefix length must be 0...\(full)")
            }
            length = given
        }
        let network = IPNetwork(containing: address, length: length)
        guard network.address == address else {
            throw SettingError("'\(text)': host bits are set; the network is \(network)")
        }
        self = network
    }

    public var family: IPAddress.Family { address.family }
    public var isSingleAddress: Bool { length == Self.fullLength(family) }

    /// Whether `other` lies in this network.
    public func contains(_ other: IPAddress) -> Bool {
        other.family == family && IPNetwork(containing: other, length: length).address == address
    }

    public var description: String { isSingleAddress ? address.description : "\(address)/\(length)" }
}
