import CPortcullis
import Testing
import TestSupport
@testable import XDPFirewall

/// Swift sees the ABI header through clang for x86-64; the program was compiled for BPF. The BTF in
/// the compiled object records the layout the program really uses: the two must agree byte for byte.
@Suite("ABI layout")
struct ABILayoutTests {
    /// The BTF of the compiled filter object (no load, no privileges needed).
    final class ObjectBTF {
        let object: OpaquePointer
        let btf: OpaquePointer

        init() throws {
            let path = try Products.filterObject()
            object = try #require(bpf_object__open_file(path, nil), "open \(path)")
            btf = try #require(bpf_object__btf(object), "\(path) carries no BTF")
        }

        deinit { bpf_object__close(object) }

        func member(_ structName: String, _ member: String) throws -> (offset: Int, size: Int) {
            var offset: UInt32 = 0
            var size: UInt32 = 0
            let result = cportcullis_btf_member(btf, structName, member, &offset, &size)
            try #require(result == 0, "struct \(structName) has no member \(member) in BTF")
            return (Int(offset), Int(size))
        }

        func size(_ structName: String) throws -> Int {
            let size = cportcullis_btf_struct_size(btf, structName)
            try #require(size >= 0, "struct \(structName) not in BTF")
            return Int(size)
        }
    }

    @Test func banValueMatchesTheProgram() throws {
        let btf = try ObjectBTF()
        #expect(try btf.size("pc_ban") == MemoryLayout<pc_ban>.size)
        #expect(try btf.member("pc_ban", "expires_ns") == (MemoryLayout<pc_ban>.offset(of: \.expires_ns)!, 8))
        #expect(try btf.member("pc_ban", "dropped") == (MemoryLayout<pc_ban>.offset(of: \.dropped)!, 8))
    }

    @Test func keysMatchTheProgram() throws {
        let btf = try ObjectBTF()
        #expect(try btf.size("pc_ipv4_key") == MemoryLayout<pc_ipv4_key>.size)
        #expect(try btf.size("pc_ipv6_key") == MemoryLayout<pc_ipv6_key>.size)
        #expect(try btf.member("pc_ipv4_key", "addr") == (0, 4))
        #expect(try btf.member("pc_ipv6_key", "addr") == (0, 16))
    }

    @Test func statsAndMetaMatchTheProgram() throws {
        let btf = try ObjectBTF()
        #expect(try btf.size("pc_stat") == MemoryLayout<pc_stat>.size)
        #expect(try btf.member("pc_stat", "packets") == (MemoryLayout<pc_stat>.offset(of: \.packets)!, 8))
        #expect(try btf.member("pc_stat", "bytes") == (MemoryLayout<pc_stat>.offset(of: \.bytes)!, 8))
        #expect(try btf.size("pc_meta") == MemoryLayout<pc_meta>.size)
        #expect(try btf.member("pc_meta", "magic") == (MemoryLayout<pc_meta>.offset(of: \.magic)!, 4))
        #expect(try btf.member("pc_meta", "abi_version") == (MemoryLayout<pc_meta>.offset(of: \.abi_version)!, 4))
    }

    /// The maps the object declares have the types and sizes user space checks pins against.
    @Test func mapDefinitionsMatchTheSpecs() throws {
        let btf = try ObjectBTF()
        for spec in MapSpec.all {
            let map = try #require(bpf_object__find_map_by_name(btf.object, spec.name), "no map \(spec.name)")
            #expect(bpf_map__type(map) == spec.type, "\(spec.name) type")
            #expect(Int(bpf_map__key_size(map)) == spec.keySize, "\(spec.name) key size")
            #expect(Int(bpf_map__value_size(map)) == spec.valueSize, "\(spec.name) value size")
            if spec.name == PC_MAP_BANS_V4 || spec.name == PC_MAP_BANS_V6 {
                #expect(bpf_map__max_entries(map) == UInt32(PC_DEFAULT_BAN_ENTRIES))
                #expect(bpf_map__map_flags(map) & UInt32(BPF_F_NO_PREALLOC) == 0, "ban maps are preallocated")
            }
        }
        #expect(MemoryLayout<pc_stat>.size % 8 == 0, "per-CPU values are read at an 8-byte stride")
    }
}
