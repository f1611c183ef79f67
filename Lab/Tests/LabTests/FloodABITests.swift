// SPDX-License-Identifier: Apache-2.0
import CLab
import CPortcullis
import Testing
import TestSupport
import XDPTesting

/// The traffic generator's structs as Swift writes them (through flood_abi.h) and as flood.bpf.o
/// was compiled: every field at the same offset with the same size.
@Suite("Flood ABI layout")
struct FloodABITests {
    @Test func configMatchesTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.floodObject())
        #expect(try btf.size("flood_config") == MemoryLayout<flood_config>.size)
        let fields: [(String, PartialKeyPath<flood_config>, Int)] = [
            ("rate", \.rate, 8), ("start_ns", \.start_ns, 8), ("end_ns", \.end_ns, 8),
            ("weight", \.weight, 8 * Int(FLOOD_STREAMS.rawValue)),
            ("clients", \.clients, 4 * Int(FLOOD_STREAMS.rawValue)),
            ("base", \.base, 16 * Int(FLOOD_STREAMS.rawValue)), ("frame_v4", \.frame_v4, Int(FLOOD_FRAME_LEN)),
            ("frame_v6", \.frame_v6, Int(FLOOD_FRAME_LEN)),
        ]
        for (name, path, size) in fields {
            #expect(
                try btf.member("flood_config", name) == (MemoryLayout<flood_config>.offset(of: path)!, size), "\(name)")
        }
    }

    @Test func countersMatchTheProgram() throws {
        let btf = try ObjectBTF(path: try Products.floodObject())
        #expect(try btf.size("flood_counters") == MemoryLayout<flood_counters>.size)
        let streams = Int(FLOOD_STREAMS.rawValue)
        let fields: [(String, PartialKeyPath<flood_counters>, Int)] = [
            ("frames", \.frames, 8), ("sent", \.sent, 8 * streams), ("idle", \.idle, 8), ("next", \.next, 8 * streams),
            ("due", \.due, 8),
        ]
        for (name, path, size) in fields {
            #expect(
                try btf.member("flood_counters", name) == (MemoryLayout<flood_counters>.offset(of: path)!, size),
                "\(name)")
        }
    }

    @Test func mapAndProgramNamesAreTheHeaders() throws {
        let btf = try ObjectBTF(path: try Products.floodObject())
        #expect(bpf_object__find_map_by_name(btf.object, FLOOD_MAP_CONFIG) != nil)
        #expect(bpf_object__find_map_by_name(btf.object, FLOOD_MAP_COUNTERS) != nil)
        #expect(bpf_object__find_program_by_name(btf.object, FLOOD_PROG_NAME) != nil)
    }
}
