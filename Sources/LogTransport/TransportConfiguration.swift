// SPDX-License-Identifier: Apache-2.0
/// Which transport, with the settings of each: what the `--transport` knobs produce.
public struct TransportConfiguration: Sendable, Equatable {
    public var kind: TransportKind
    public var shm = ShmOptions()
    public var socket = SocketOptions()
    public var file = FileOptions()
    public var journal = JournalOptions()
    public var syslog = SyslogOptions()
    /// Shared-memory readers: any worker thread may take any ring.
    public var workloadStealing = true

    public init(kind: TransportKind) {
        self.kind = kind
    }

    /// The source in one word, for metrics' labels and logs: `file:PATH`, `shm:NAME`,
    /// `socket:DIRECTORY`, `journal:MATCH` (`journal` alone for every entry; a directory read
    /// instead of the system's journal comes first, `journal:DIRECTORY:MATCH`).
    public var label: String {
        switch kind {
        case .file: "file:\(file.path)"
        case .shm: "shm:\(shm.name)"
        case .socket: "socket:\(socket.directory)"
        case .journal:
            "journal" + (journal.directory.map { ":\($0)" } ?? "") + (journal.match.isEmpty ? "" : ":\(journal.match)")
        case .syslog: "syslog:\(syslog.path)"
        }
    }

    /// What one reader of this source is made of: jails whose sources differ only in the syslog
    /// tags they read share one reader of the socket (the tags route its lines to them).
    public var readerKey: TransportConfiguration {
        var key = self
        if kind == .syslog { key.syslog = syslog.withoutTags }
        return key
    }

    /// Longest line the chosen transport carries.
    public var maxLineLength: Int {
        switch kind {
        case .shm: shm.maxLineLength
        case .socket: socket.maxLineLength
        case .file: file.maxLineLength
        case .journal: journal.maxLineLength
        case .syslog: syslog.maxLineLength
        }
    }

    /// Checks the chosen transport's settings without creating anything.
    public func validate() throws(TransportError) {
        switch kind {
        case .shm: try shm.validate()
        case .socket: try socket.validate()
        case .file: try file.validate()
        case .journal: try journal.validate()
        case .syslog: try syslog.validate()
        }
    }

    /// A writer for one writer thread.
    public func makeWriter() throws(TransportError) -> LogWriter {
        switch kind {
        case .shm: try ShmWriter(options: shm)
        case .socket: try SocketWriter(options: socket)
        case .file: try FileWriter(options: file)
        case .journal:
            throw .invalidConfiguration(
                "the journal is written by journald, not through Portcullis: log with logger or systemd-cat, or "
                    + "pick --transport shm, socket or file")
        case .syslog:
            throw .invalidConfiguration(
                "the syslog source is written by syslog clients: logger --socket \(syslog.path), or rsyslog's omuxsock; "
                    + "pick --transport shm, socket or file")
        }
    }

    /// A reader with the given slow-reader policy (files are read at the reader's own pace: the
    /// policy does not apply).
    public func makeReader(policy: SlowReaderPolicy = .block) throws(TransportError) -> LogReader {
        switch kind {
        case .shm: try ShmReader(options: shm, policy: policy, workloadStealing: workloadStealing)
        case .socket: try SocketReader(options: socket, policy: policy)
        case .file: try FileReader(options: file)
        case .journal: try JournalReader(options: journal)
        case .syslog: try SyslogReader(options: syslog)
        }
    }
}
