// SPDX-License-Identifier: Apache-2.0
import Glibc
import Logging

/// `Console` as swift-log's handler: a `Logger` labelled `portcullisd.fleet` writes
/// `portcullisd: fleet: MESSAGE`, a line per message, unbuffered. Information and notices go to
/// stdout, warnings and worse to stderr, with journald's `<N>` prefix when the stream is the journal
/// (`<6>`, `<5>` for a notice, `<4>`, `<3>`), exactly as `Console.say` writes them. Metadata, when a message has some,
/// follows as ` key=value`.
public struct ConsoleLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    /// The label's components, said before the message (`portcullisd.fleet`: `portcullisd: fleet: `).
    private let prefix: String

    public init(label: String) {
        prefix = label.split(separator: ".").map { $0 + ": " }.joined()
    }

    /// A logger labelled `label` that writes through this handler (no global bootstrap: each
    /// program's loggers are made where they are used).
    public static func logger(_ label: String) -> Logger {
        Logger(label: label) { ConsoleLogHandler(label: $0) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (text, fd, level) = line(event)
        Console.say(text, to: fd, level: level)
    }

    /// What `log` writes for `event`: the line, the stream and the journal's level.
    func line(_ event: LogEvent) -> (text: String, fd: Int32, level: Console.Level) {
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        let suffix = all.sorted { $0.key < $1.key }.map { " \($0.key)=\($0.value)" }.joined()
        let text = prefix + event.message.description + suffix
        switch event.level {
        case .trace, .debug, .info: return (text, STDOUT_FILENO, .info)
        case .notice: return (text, STDOUT_FILENO, .notice)
        case .warning: return (text, STDERR_FILENO, .warning)
        case .error, .critical: return (text, STDERR_FILENO, .error)
        }
    }
}
