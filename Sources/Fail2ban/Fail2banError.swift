// SPDX-License-Identifier: Apache-2.0
/// Why fail2ban's configuration or a filter could not be read. Each case prints as one line that
/// names the file and the key (where there is one) and what to do.
public enum Fail2banError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A file that must exist does not (a filter, `jail.conf`, a configuration directory).
    case missingFile(path: String, purpose: String)
    /// A file exists but cannot be read or is not text.
    case unreadableFile(path: String, reason: String)
    /// A line that is neither a section, an option, a continuation nor a comment.
    case syntax(file: String, line: Int, text: String)
    /// `filter = NAME` names no file in the filter directory.
    case unknownFilter(name: String, directory: String)
    /// `NAME[...]` arguments that fail2ban's syntax does not allow.
    case badFilterArguments(reference: String, reason: String)
    /// A fail2ban feature this reader does not implement; `line` is where the pattern is written.
    case unsupported(feature: String, file: String, line: Int?, key: String)
    /// A Python `re` form in a pattern that PCRE2 cannot be made to read as Python does, or that
    /// Python itself refuses (`PythonRegex`).
    case pythonRegex(file: String, line: Int?, key: String, form: String, reason: String)
    /// A pattern (failregex, ignoreregex, prefregex, datepattern) that PCRE2 does not compile.
    case regexCompile(file: String, line: Int?, key: String, pattern: String, offset: Int, message: String)
    /// A `%(name)s` or `<name>` reference that resolves to itself, directly or through others.
    case interpolationLoop(file: String, section: String, key: String)
    /// A `%(name)s` reference to an option that is defined nowhere.
    case missingReference(file: String, section: String, key: String, reference: String)
    /// A time that fail2ban's str2seconds would not accept.
    case badDuration(file: String, key: String, value: String)
    /// A number or a boolean that does not parse.
    case badValue(file: String, key: String, value: String, expected: String)
    /// Includes, interpolations or tags that fan out past a limit (files read, a value's size).
    case tooLarge(file: String, section: String, key: String, detail: String)

    public var description: String {
        switch self {
        case .missingFile(let path, let purpose):
            return "\(path): no such file (\(purpose)); create it or point the directory option elsewhere"
        case .unreadableFile(let path, let reason):
            return "\(path): cannot be read: \(reason)"
        case .syntax(let file, let line, let text):
            return
                "\(file):\(line): '\(text)' is neither [section], key = value, continuation nor comment; fix the line"
        case .unknownFilter(let name, let directory):
            return "filter '\(name)': no \(name).conf or \(name).local in \(directory); check the name or --filter-dir"
        case .badFilterArguments(let reference, let reason):
            return "filter '\(reference)': bad arguments: \(reason); write them as name[key=value, key=\"value\"]"
        case .unsupported(let feature, let file, let line, let key):
            return
                "\(place(file, line)), key '\(key)': \(feature) is not supported by Portcullis; rewrite the pattern without it"
        case .pythonRegex(let file, let line, let key, let form, let reason):
            return "\(place(file, line)), key '\(key)': the Python regex form '\(form)' cannot be used: \(reason)"
        case .regexCompile(let file, let line, let key, let pattern, let offset, let message):
            return
                "\(place(file, line)), key '\(key)': pattern '\(pattern)' does not compile at offset \(offset): \(message)"
        case .interpolationLoop(let file, let section, let key):
            return "\(file), [\(section)] key '\(key)': its interpolation refers back to itself; break the loop"
        case .missingReference(let file, let section, let key, let reference):
            return
                "\(file), [\(section)] key '\(key)': refers to '%(\(reference))s', which is defined nowhere; define it"
        case .badDuration(let file, let key, let value):
            return
                "\(file), key '\(key)': '\(value)' is not a duration; write seconds or 10m, 1h, 1d, 1w (-1 = forever)"
        case .badValue(let file, let key, let value, let expected):
            return "\(file), key '\(key)': '\(value)' is not \(expected)"
        case .tooLarge(let file, let section, let key, let detail):
            return "\(file), [\(section)] key '\(key)': \(detail)"
        }
    }

    /// `file:line`, or the file alone when the line is not known (a pattern the jail set).
    private func place(_ file: String, _ line: Int?) -> String { line.map { "\(file):\($0)" } ?? file }
}
