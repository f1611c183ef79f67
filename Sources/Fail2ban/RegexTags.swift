// SPDX-License-Identifier: Apache-2.0
/// fail2ban's pattern tags (`failregex.py`) expanded into regular expressions, then translated from
/// Python's `re` to PCRE2 (`PythonRegex`).
enum RegexTags {
    static let ipv4 = #"(?:::f{4,6}:)?(?P<ip4>(?:\d{1,3}\.){3}\d{1,3})"#
    static let ipv6 = #"(?P<ip6>(?:[0-9a-fA-F]{1,4}::?|::){1,7}(?:[0-9a-fA-F]{1,4}|(?<=:):))"#
    static let dns = #"(?P<dns>[\w\-.^_]*\w)"#
    static let cidr = #"(?P<cidr>\d+)"#
    static let address = #"\[?(?:\#(ipv4)|\#(ipv6))\]?"#
    static let host = #"(?:\#(address)|\#(dns))"#
    static let subnet = #"\[?(?:\#(ipv4)|\#(ipv6))(?:/\#(cidr))?\]?"#

    /// fail2ban's RH4TAG: tags replaced by a fixed expression.
    static let fixed: [String: String] = [
        "IP4": ipv4, "F-IP4/": ipv4, "IP6": ipv6, "F-IP6/": ipv6, "ADDR": address, "F-ADDR/": address,
        "CIDR": cidr, "F-CIDR/": cidr, "SUBNET": subnet, "F-SUBNET/": subnet, "DNS": dns, "F-DNS/": dns,
        "F-ID/": #"(?P<fid>\S+)"#, "F-PORT/": #"(?P<fport>\w+)"#,
    ]

    static let tag = fixedPattern(#"</?[\w\-]+/?>"#)
    static let customName = fixedPattern(#"^(/?)F-([A-Z0-9_\-]+)$"#)
    static let globalFlagsInGroup = fixedPattern(#"(?<!\\)\((?:\?:)?(\(\?[a-z]+)\)"#)

    /// The group name of `<F-NAME>` (fail2ban's `mapTag2Opt`).
    static func groupName(_ tag: String) -> String {
        let lower = tag.lowercased()
        switch lower {
        case "id": return "fid"
        case "port": return "fport"
        default: return lower
        }
    }

    /// fail2ban's `Regex._resolveHostTag`, then Python's global flags inside a group made local, then
    /// the whole translated to PCRE2.
    /// - Parameter useDNS: fail2ban's `usedns`; "no" makes `<HOST>` match addresses only.
    /// - Throws: `PythonRegex.Refusal` for a form PCRE2 cannot be made to read as Python does.
    static func expand(_ regex: String, useDNS: String) throws(PythonRegex.Refusal) -> String {
        var open = Set<String>()
        var skipLines = 0
        let expanded = tag.replacingAll(in: regex) { match in
            let text = match.group(0)!
            let name = String(text.dropFirst().dropLast())
            if name == "HOST" { return useDNS == "no" ? address : host }
            if name == "SKIPLINES" {
                defer { skipLines += 1 }
                return #"\n(?P<skiplines\#(skipLines)>(?:(?:.*\n)*?))"#
            }
            if let replacement = fixed[name] { return replacement }
            if let custom = customName.firstMatch(in: name) {
                let closing = custom.group(1) == "/"
                let tagName = custom.group(2)!
                if closing { return open.contains(tagName) ? ")" : text }
                open.insert(tagName)
                return "(?P<\(groupName(tagName))>"
            }
            return text
        }
        let local = globalFlagsInGroup.replacingAll(in: expanded) { "\($0.group(1)!):" }
        return try PythonRegex.translate(local)
    }
}
