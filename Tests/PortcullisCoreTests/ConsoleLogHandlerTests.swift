// SPDX-License-Identifier: Apache-2.0
import Glibc
import Logging
@testable import PortcullisSystem
import Testing

private func event(_ level: Logger.Level, _ message: Logger.Message, _ metadata: Logger.Metadata? = nil) -> LogEvent {
    LogEvent(
        level: level, message: message, metadata: metadata, source: nil, file: #fileID, function: #function,
        line: #line)
}

@Suite("Console as swift-log's handler")
struct ConsoleLogHandlerTests {
    @Test(
        "a logger's label is the line's prefix; information to stdout, warnings and errors to stderr with their journal levels"
    )
    func linesAsConsoleWritesThem() {
        let handler = ConsoleLogHandler(label: "portcullisd.fleet")
        let info = handler.line(event(.info, "host a connected"))
        #expect(info.text == "portcullisd: fleet: host a connected")
        #expect(info.fd == STDOUT_FILENO && info.level == .info)
        let warning = handler.line(event(.warning, "cannot watch the bucket"))
        #expect(warning.fd == STDERR_FILENO && warning.level == .warning)
        let error = handler.line(event(.critical, "gone"))
        #expect(error.fd == STDERR_FILENO && error.level == .error)
        let notice = ConsoleLogHandler(label: "portcullisd").line(event(.notice, "[sshd] Ban 198.18.0.4 for 1h"))
        #expect(notice.text == "portcullisd: [sshd] Ban 198.18.0.4 for 1h")
        #expect(notice.fd == STDOUT_FILENO && notice.level == .notice)
    }

    @Test("metadata follows the message as key=value, sorted, the message's over the logger's")
    func metadataAfterTheMessage() {
        var handler = ConsoleLogHandler(label: "portcullisd.crowdsec")
        handler[metadataKey: "url"] = "http://127.0.0.1:8080"
        handler[metadataKey: "host"] = "a"
        let line = handler.line(event(.info, "pulled", ["host": "b"]))
        #expect(line.text == "portcullisd: crowdsec: pulled host=b url=http://127.0.0.1:8080")
    }
}
