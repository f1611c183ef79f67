// SPDX-License-Identifier: Apache-2.0
import CLab
import CPortcullis

/// The BTF of a compiled BPF object (opened, not loaded: no privileges needed). The layout tests
/// compare it with Swift's `MemoryLayout` of the same C structs, seen through clang for x86-64:
/// the object records the layout the program really uses, and the two must agree byte for byte.
public final class ObjectBTF {
    /// The opened object (`bpf_object`).
    public let object: OpaquePointer
    private let btf: OpaquePointer

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }

    /// Opens the object at `path`. - Throws: `Missing` when it cannot be opened or has no BTF.
    public init(path: String) throws(Missing) {
        guard let object = bpf_object__open_file(path, nil) else { throw Missing(description: "cannot open \(path)") }
        guard let btf = bpf_object__btf(object) else {
            bpf_object__close(object)
            throw Missing(description: "\(path) carries no BTF (build it with -g)")
        }
        self.object = object
        self.btf = btf
    }

    deinit { bpf_object__close(object) }

    /// Byte offset and size of `member` in `struct structName`.
    public func member(_ structName: String, _ member: String) throws(Missing) -> (offset: Int, size: Int) {
        var offset: UInt32 = 0
        var size: UInt32 = 0
        guard clab_btf_member(btf, structName, member, &offset, &size) == 0 else {
            throw Missing(description: "struct \(structName) has no member \(member) in BTF")
        }
        return (Int(offset), Int(size))
    }

    /// Size of `struct structName`.
    public func size(_ structName: String) throws(Missing) -> Int {
        let size = clab_btf_struct_size(btf, structName)
        guard size >= 0 else { throw Missing(description: "struct \(structName) not in BTF") }
        return Int(size)
    }
}
