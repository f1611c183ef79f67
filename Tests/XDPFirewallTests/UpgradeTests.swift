// SPDX-License-Identifier: Apache-2.0
import Testing
import TestSupport
@_spi(Testing) @testable import XDPFirewall

/// What `attach` compares to tell an upgraded filter from the running one: the kernel's program tag.
@Suite("Program tags", .enabled(if: Privileges.runnable))
struct ProgramTagTests {
    /// The tag hashes the instructions with map descriptors zeroed: the same object loaded with
    /// private maps and with pinned ones has one tag; the same source compiled otherwise, another.
    @Test func sameObjectSameTagWhateverItsMapsOtherCodeAnother() throws {
        try Privileges.require()
        let object = try Products.filterObject()
        let scratch = ScratchPinDirectory("tag")
        defer { scratch.remove() }
        let variant = try VariantFilterObject()
        defer { variant.remove() }
        let privately = try LoadedProgram(filterAt: object, pinDirectory: nil)
        let pinned = try LoadedProgram(filterAt: object, pinDirectory: scratch.pins)
        let again = try LoadedProgram(filterAt: object, pinDirectory: scratch.pins)
        let other = try LoadedProgram(filterAt: variant.path, pinDirectory: scratch.pins)
        let tag = try privately.tag()
        #expect(tag.count == 16 && tag.allSatisfy { $0.isHexDigit })
        #expect(try pinned.tag() == tag)
        #expect(try again.tag() == tag)
        #expect(try other.tag() != tag, "-mcpu=v2 compiles other instructions")
    }
}
