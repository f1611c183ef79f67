// SPDX-License-Identifier: Apache-2.0
/// The first stored property that differs between two values of a settings struct, named as its
/// flag (`pinDir` is `pin-dir`, `prefixLengthsV4` is `prefix-lengths-v4`): what a refused reload
/// says. The struct is compared whole; the names come from its declaration, not from a list.
struct SettingChange: CustomStringConvertible {
    let name: String
    let old: String
    let new: String

    /// nil when `old == new`.
    init?<Settings: Equatable>(_ old: Settings, _ new: Settings) {
        guard old != new else { return nil }
        for (before, after) in zip(Mirror(reflecting: old).children, Mirror(reflecting: new).children) {
            let (oldText, newText) = (Self.text(before.value), Self.text(after.value))
            guard oldText != newText else { continue }
            name = Self.flag(before.label ?? "\(Settings.self)")
            self.old = oldText
            self.new = newText
            return
        }
        // Equal field by field as text, yet not equal: the struct as a whole.
        name = "\(Settings.self)"
        self.old = "\(old)"
        self.new = "\(new)"
    }

    var description: String { "\(name) changed (\(old) → \(new))" }

    /// A value as its flag is written: a list space-separated, anything else as it prints.
    static func text(_ value: Any) -> String {
        if let list = value as? [String] { return list.joined(separator: " ") }
        return "\(value)"
    }

    /// `camelCase` as `camel-case`.
    static func flag(_ label: String) -> String {
        var flag = ""
        for character in label {
            if character.isUppercase {
                flag += "-" + character.lowercased()
            } else {
                flag.append(character)
            }
        }
        return flag
    }
}
