// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import Glibc
import LogTransport

/// The transport knobs shared by every program that writes or reads offence lines
/// (`portcullis tap`, `portcullisd`, the testbed's udp-server, the test probe).
public struct TransportOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Transport: shm (shared-memory rings), socket (SOCK_SEQPACKET) or file (a tailed log); for portcullisd "
                + "also journal or syslog."))
    public var transport: TransportKind = .shm

    @Option(name: .customLong("shm-name"), help: ArgumentHelp("Shared-memory segment name.", valueName: "/name"))
    public var shmName = ShmOptions().name
    @Option(name: .customLong("shm-segments"), help: "Rings in the segment: one per writer thread.")
    public var shmSegments = ShmOptions().rings
    @Option(name: .customLong("shm-slots"), help: "Slots per ring (a power of two).")
    public var shmSlots = ShmOptions().slotsPerRing
    @Option(name: .customLong("shm-slot-size"), help: "Bytes per slot, 16-byte header included (a multiple of 16).")
    public var shmSlotSize = ShmOptions().slotSize
    @Option(name: .customLong("shm-reader-slots"), help: "Readers that can attach at once.")
    public var shmReaderSlots = ShmOptions().readerSlots
    @Flag(name: .customLong("shm-overwrite"), help: "Writers never wait: lapped readers skip ahead and count the loss.")
    public var shmOverwrite = false
    @Flag(name: .customLong("shm-hugepages"), help: "Ask for transparent huge pages for the segment.")
    public var shmHugePages = false
    @Flag(name: .customLong("shm-no-stealing"), help: "Reader threads keep to their own rings (no workload stealing).")
    public var shmNoStealing = false

    @Option(name: .customLong("socket-dir"), help: ArgumentHelp("Directory of reader sockets.", valueName: "path"))
    public var socketDirectory = SocketOptions().directory
    @Option(name: .customLong("socket-datagram-size"), help: "Bytes per datagram; lines are packed up to it.")
    public var socketDatagramSize = SocketOptions().datagramSize
    @Option(name: .customLong("socket-lines-per-datagram"), help: "Most lines per datagram (1: unpacked).")
    public var socketLinesPerDatagram = SocketOptions().linesPerDatagram
    @Option(name: .customLong("socket-batch"), help: "Datagrams per sendmmsg/recvmmsg call (1: one send per datagram).")
    public var socketBatch = SocketOptions().datagramsPerCall
    @Option(name: .customLong("socket-sndbuf"), help: "SO_SNDBUF of writer sockets in bytes (default: the kernel's).")
    public var socketSendBuffer: Int?
    @Option(
        name: .customLong("socket-rcvbuf"), help: "SO_RCVBUF of reader connections in bytes (default: the kernel's).")
    public var socketReceiveBuffer: Int?
    @Option(
        name: .customLong("socket-allow-uid"), help: "A uid allowed to write (repeatable; root and own uid always are)."
    )
    public var socketAllowUIDs: [UInt32] = []
    @Option(name: .customLong("socket-allow-gid"), help: "A gid allowed to write (repeatable).")
    public var socketAllowGIDs: [UInt32] = []

    @Option(name: .customLong("file-path"), help: ArgumentHelp("The log file.", valueName: "path"))
    public var filePath = FileOptions().path
    @Option(name: .customLong("file-buffer"), help: "Bytes per read when tailing.")
    public var fileBuffer = FileOptions().bufferSize
    @Option(name: .customLong("file-read"), help: "uring (io_uring, reads queued ahead) or read (pread).")
    public var fileRead: FileOptions.ReadMethod = FileOptions().readMethod
    @Option(name: .customLong("file-uring-depth"), help: "io_uring reads queued at once.")
    public var fileUringDepth = FileOptions().uringDepth
    @Flag(name: .customLong("file-from-start"), help: "Read the file from its start (default: only new lines).")
    public var fileFromStart = false
    @Option(name: .customLong("file-max-line"), help: "Longest line in bytes; longer ones are skipped and counted.")
    public var fileMaxLine = FileOptions().maxLineLength

    @Option(
        name: .customLong("syslog-socket"),
        help: ArgumentHelp(
            "The syslog source's datagram socket (rsyslog's omuxsock, logger -u PATH).", valueName: "path"))
    public var syslogSocket = SyslogOptions.defaultPath
    @Option(
        name: .customLong("syslog-udp"),
        help: ArgumentHelp(
            "Also receive syslog over UDP at this loopback address (e.g. 127.0.0.1:5514).", valueName: "address"))
    public var syslogUDP: String?
    @Flag(
        name: .customLong("syslog-udp-any-sender"),
        help: "Accept --syslog-udp knowing that UDP names no sender: any local user can get any address banned.")
    public var syslogUDPAnySender = false
    @Option(
        name: .customLong("syslog-allow-uid"),
        help: ArgumentHelp(
            "A user (besides root) whose messages on the syslog socket are read (repeatable).", valueName: "uid"))
    public var syslogAllowUIDs: [UInt32] = []
    @Option(
        name: .customLong("syslog-max-line"),
        help: "Longest syslog line in bytes; longer messages are skipped and counted.")
    public var syslogMaxLine = SyslogOptions().maxLineLength

    @Option(
        name: .customLong("block-timeout"),
        help: ArgumentHelp(
            "Writers: how long a lossless (block) reader that does not read may hold them before they go on without "
                + "it for a while, its missed lines counted lost.", valueName: "milliseconds"))
    public var blockTimeout = ShmOptions().blockTimeoutMilliseconds
    @Option(
        name: .customLong("trust-uid"),
        help: ArgumentHelp(
            "A user (besides root and this one) whose segment, socket directory, log file or reader is used: the "
                + "services' (repeatable).", valueName: "uid"))
    public var trustUIDs: [UInt32] = []
    @Option(
        name: .customLong("trust-gid"),
        help: ArgumentHelp("A group that may have write permission on them (repeatable).", valueName: "gid"))
    public var trustGIDs: [UInt32] = []

    public init() {}

    /// The configuration these options describe.
    public var configuration: TransportConfiguration {
        var configuration = TransportConfiguration(kind: transport)
        configuration.shm.name = shmName
        configuration.shm.rings = shmSegments
        configuration.shm.slotsPerRing = shmSlots
        configuration.shm.slotSize = shmSlotSize
        configuration.shm.readerSlots = shmReaderSlots
        configuration.shm.overwrite = shmOverwrite
        configuration.shm.hugePages = shmHugePages
        configuration.workloadStealing = !shmNoStealing
        configuration.socket.directory = socketDirectory
        configuration.socket.datagramSize = socketDatagramSize
        configuration.socket.linesPerDatagram = socketLinesPerDatagram
        configuration.socket.datagramsPerCall = socketBatch
        configuration.socket.sendBuffer = socketSendBuffer
        configuration.socket.receiveBuffer = socketReceiveBuffer
        configuration.socket.allowedUIDs = socketAllowUIDs.map { uid_t($0) }
        configuration.socket.allowedGIDs = socketAllowGIDs.map { gid_t($0) }
        configuration.file.path = filePath
        configuration.file.bufferSize = fileBuffer
        configuration.file.readMethod = fileRead
        configuration.file.uringDepth = fileUringDepth
        configuration.file.startAtBeginning = fileFromStart
        configuration.file.maxLineLength = fileMaxLine
        configuration.syslog.path = syslogSocket
        configuration.syslog.udp = syslogUDP
        configuration.syslog.udpAnySender = syslogUDPAnySender
        configuration.syslog.allowedUIDs = syslogAllowUIDs.map { uid_t($0) }
        configuration.syslog.maxLineLength = syslogMaxLine
        let owners = TrustedOwners(uids: trustUIDs.map { uid_t($0) }, gids: trustGIDs.map { gid_t($0) })
        configuration.shm.owners = owners
        configuration.shm.blockTimeoutMilliseconds = blockTimeout
        configuration.socket.blockTimeoutMilliseconds = blockTimeout
        configuration.socket.owners = owners
        configuration.file.owners = owners
        configuration.syslog.owners = owners
        return configuration
    }
}

extension TransportKind: ExpressibleByArgument {}
extension SlowReaderPolicy: ExpressibleByArgument {}
extension FileOptions.ReadMethod: ExpressibleByArgument {}
