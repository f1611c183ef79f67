// SPDX-License-Identifier: Apache-2.0
/// One line of `portcullis list`: a ban or a list entry, with its origin named. The one row the
/// maps' listing (`BanMaps.listing`), the control socket's `list` reply and the CLI's table and
/// `--json` share; `BanMaps.writeJSONListing` streams the same keys without it (a test holds the
/// two to the same rows).
public struct BanRow: Codable, Sendable, Equatable {
    /// The address, or the network (`ADDRESS/LENGTH`) of a prefix, CIDR or list entry.
    public var address: String
    /// Whole seconds left, rounded up; nil: for good.
    public var expiresIn: UInt64?
    public var expired: Bool
    public var dropped: UInt64
    /// The jail that made it, `manual`, `list:NAME`, or a companion's `crowdsec/…` and `fleet/…`.
    public var jail: String

    public init(address: String, expiresIn: UInt64?, expired: Bool, dropped: UInt64, jail: String) {
        self.address = address
        self.expiresIn = expiresIn
        self.expired = expired
        self.dropped = dropped
        self.jail = jail
    }

    enum CodingKeys: String, CodingKey {
        case address, expiresIn = "expires_in", expired, dropped, jail
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(address, forKey: .address)
        try container.encode(expiresIn, forKey: .expiresIn)  // null, not absent, when for good
        try container.encode(expired, forKey: .expired)
        try container.encode(dropped, forKey: .dropped)
        try container.encode(jail, forKey: .jail)
    }
}
