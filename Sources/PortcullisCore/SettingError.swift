// SPDX-License-Identifier: Apache-2.0
/// A setting that cannot be used, as one line that names it and what to do.
public struct SettingError: Error, CustomStringConvertible, Equatable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
