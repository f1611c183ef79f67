// SPDX-License-Identifier: Apache-2.0
import ArgumentParser
import CLab
import Glibc
import PortcullisSystem
import XDPFirewall
import XDPTesting

/// Which of flood's engines this kernel runs, and why not where it does not.
struct Engines: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Say which flood engines this kernel runs (live frames need Linux 5.18+ and a kernel that allows them).",
        discussion: """
            Loads bpf/flood.bpf.o and asks the kernel for one live-frames test run on --interface \
            (the frame is dropped, never sent), opens an AF_XDP socket on its queue 0 (xsk) and an \
            AF_PACKET socket (packet). Prints {"live": {"available": BOOL, "reason": TEXT}, \
            "xsk": {...}, "packet": {...}, "auto": ENGINE}: auto is the first of live, xsk, packet.
            """)

    @Option(help: "Interface to probe on (in this network namespace).") var interface = "lo"
    @Option(help: ArgumentHelp("The generator object (flood.bpf.o; default: next to this program).", valueName: "path"))
    var bpfObject: String?

    func run() throws {
        let index = if_nametoindex(interface)
        guard index > 0 else { Console.fail("engines: no interface \(interface) in this network namespace") }
        var live = JSONObject()
        var liveAvailable = false
        do {
            let path = try BPFObjectLocator().locate("flood.bpf.o", explicit: bpfObject)
            let program = try LoadedProgram(objectAt: path, programName: FLOOD_PROG_NAME)
            let frame = [UInt8](repeating: 0, count: FrameTemplate.frameLength)
            let refusal = program.liveFramesRefusal(probing: frame, interfaceIndex: Int32(index))
            liveAvailable = refusal == nil
            live["available"] = .bool(liveAvailable)
            if let refusal { live["reason"] = .text("\(refusal)") }
        } catch {
            live["available"] = .bool(false)
            live["reason"] = .text("\(error)")
        }
        var xsk = JSONObject()
        var socketMade: OpaquePointer?
        let error = clab_xsk_open(&socketMade, index, 0, 64)
        xsk["available"] = .bool(error == 0)
        if error == 0 {
            clab_xsk_close(socketMade)
        } else {
            xsk["reason"] = .text("\(XSKError(operation: "open an AF_XDP socket on \(interface)", code: -error))")
        }
        var packet = JSONObject()
        let fd = socket(AF_PACKET, Int32(SOCK_RAW.rawValue), 0)
        packet["available"] = .bool(fd >= 0)
        if fd >= 0 {
            close(fd)
        } else {
            packet["reason"] = .text("AF_PACKET socket: \(String(cString: strerror(errno)))")
        }
        var summary = JSONObject()
        summary["live"] = .object(live)
        summary["xsk"] = .object(xsk)
        summary["packet"] = .object(packet)
        summary["auto"] = .text(liveAvailable ? "live" : error == 0 ? "xsk" : "packet")
        print(JSONOutput.line(summary))
    }
}
