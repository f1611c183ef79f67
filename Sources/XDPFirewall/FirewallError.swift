// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisSystem

/// Everything that can go wrong between Portcullis and the kernel's BPF and XDP facilities.
///
/// Each case renders as one line that names what failed and what the operator can do about it.
public enum FirewallError: Error, CustomStringConvertible, Equatable {
    /// The BPF object file was not found in any of the places searched.
    case bpfObjectMissing(file: String, searched: [String])
    /// The BPF object exists but could not be opened or loaded (verifier, BTF, ELF).
    case bpfObjectInvalid(path: String, detail: String)
    /// The caller lacks CAP_BPF / CAP_NET_ADMIN (the kernel said `EPERM` or `EACCES`).
    case permissionDenied(operation: String)
    /// No network interface has this name.
    case unknownInterface(String)
    /// The text is not an IPv4 or IPv6 address.
    case invalidAddress(String)
    /// The pin directory is not on a BPF filesystem and cannot be made so.
    case notBPFFilesystem(path: String)
    /// The pin directory holds maps with a layout this build does not use.
    case incompatiblePins(path: String, detail: String)
    /// The pin directory holds no Portcullis maps (nothing attached or loaded yet).
    case mapsNotPinned(pinDirectory: String)
    /// The filter is on the interface already, in a way that conflicts with the request.
    case alreadyAttached(interface: String, detail: String)
    /// Pinned ban maps have another size than `--map-entries` asks for.
    case mapSizeMismatch(path: String, pinned: UInt32, requested: UInt32)
    /// The interface has no Portcullis program attached.
    case notAttached(interface: String)
    /// A ban map has no free entry left; in a batch, the first `installed` bans of that family went in.
    case banMapFull(family: String, capacity: UInt32, installed: Int)
    /// Every origin slot is named (`pc_origins`): `holders` says by whom (jails, lists...).
    case originSlotsFull(name: String, holders: String)
    /// A list name that is not 1 to 40 letters, digits, `-`, `_` or `.`.
    case invalidListName(String)
    /// Any other failing call; `errno` is the C error number.
    case system(operation: String, errno: Int32, detail: String)

    public var description: String {
        switch self {
        case .bpfObjectMissing(let file, let searched):
            return "BPF object \(file) not found; looked in: \(searched.joined(separator: ", ")). "
                + "Build it with tools/build-bpf, or pass --bpf-object PATH or set PORTCULLIS_BPF_OBJECT"
        case .bpfObjectInvalid(let path, let detail):
            return "BPF object \(path) could not be loaded: \(detail). Rebuild it with tools/build-bpf"
        case .permissionDenied(let operation):
            return "\(operation): permission denied; run as root (needs CAP_BPF and CAP_NET_ADMIN)"
        case .unknownInterface(let name):
            return "no network interface named '\(name)'; `ip link` lists them"
        case .invalidAddress(let text):
            return "'\(text)' is not an IPv4 or IPv6 address"
        case .originSlotsFull(let name, let holders):
            return "no origin slot is free for \(name): all \(PC_MAX_ORIGINS - 1) are named (\(holders)); "
                + "unload a list (portcullis blocklist unload NAME) or remove jails, then restart the daemon to free "
                + "the slots no ban carries"
        case .invalidListName(let name):
            return "list name '\(name)': give 1 to 40 letters, digits, '-', '_' or '.'"
        case .notBPFFilesystem(let path):
            return "pin directory \(path) is not an absolute path on a BPF filesystem; "
                + "mount one (mount -t bpf bpf /sys/fs/bpf) or choose a --pin-dir under /sys/fs/bpf"
        case .incompatiblePins(let path, let detail):
            return "pinned maps under \(path) have another layout (\(detail)); "
                + "detach every interface using them and remove the directory (rm -r \(path)), "
                + "or choose another --pin-dir"
        case .mapsNotPinned(let pinDirectory):
            return "no Portcullis maps pinned under \(pinDirectory); "
                + "attach the filter first (portcullis attach IFNAME) or pass the --pin-dir it used"
        case .alreadyAttached(let interface, let detail):
            return "the filter is already attached to \(interface) \(detail)"
        case .mapSizeMismatch(let path, let pinned, let requested):
            return "the ban maps pinned under \(path) hold \(pinned) entries, --map-entries asks for \(requested); "
                + "omit --map-entries to keep them and their bans, or remove them (rm -r \(path)) to resize"
        case .notAttached(let interface):
            return "no Portcullis XDP program is attached to \(interface)"
        case .banMapFull(let family, let capacity, _):
            return "\(family) ban map is full (\(capacity) entries); "
                + "unban addresses or re-create the maps with a larger --map-entries"
        case .system(let operation, let errno, let detail):
            let reason = String(cString: strerror(errno))
            return detail.isEmpty ? "\(operation): \(reason)" : "\(operation): \(reason) (\(detail))"
        }
    }
}

/// Reads what libbpf/libxdp last printed, condensed to one line, and clears it.
func takeLibraryLog() -> String {
    var buffer = [CChar](repeating: 0, count: 8192)
    cportcullis_take_library_log(&buffer, buffer.count)
    let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let lines = text.split(separator: "\n").map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
    return lines.suffix(3).joined(separator: "; ")
}

private extension Substring {
    func trimmingCharacters() -> String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

/// Routes libbpf and libxdp warnings into the buffer `takeLibraryLog` reads. Set the environment
/// variable `PORTCULLIS_DEBUG` to also print them as they happen.
func captureLibraryLogs() {
    cportcullis_capture_library_logs(getenv("PORTCULLIS_DEBUG") != nil)
}

/// A libbpf call through the system funnel (`systemCall`, negative-errno convention), its error
/// mapped to what an operator should see (`systemError`).
///
/// - Parameters:
///   - operation: what was being done, for the error message (e.g. "update pc_bans_v4").
///   - call: the libbpf call; a negative return is a failure.
/// - Returns: the call's non-negative result.
@inline(__always)
@discardableResult
@_spi(Testing) public func bpfCall(
    _ operation: @autoclosure () -> String, _ call: () -> Int32
) throws(FirewallError) -> Int32 {
    try systemCall(convention: .negativeErrno, call, orThrow: { systemError(operation(), $0.code) })
}

/// Maps an errno to the error an operator should see. `EPERM`/`EACCES` mean missing privileges
/// only for a non-root caller: as root they come from the verifier or a security module.
func systemError(_ operation: String, _ code: Int32) -> FirewallError {
    if (code == EPERM || code == EACCES) && geteuid() != 0 { return .permissionDenied(operation: operation) }
    return .system(operation: operation, errno: code, detail: takeLibraryLog())
}
