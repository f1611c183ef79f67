// SPDX-License-Identifier: Apache-2.0
import Glibc

/// Finds a BPF object file: the path given on the command line, then the environment variable,
/// then the directory of the running executable, then the install directories.
public struct BPFObjectLocator: Sendable {
    /// Environment variable naming the filter object.
    public static let environmentVariable = "PORTCULLIS_BPF_OBJECT"
    /// Where `make install`-style deployments put the objects.
    public static let installDirectories = ["/usr/local/lib/portcullis", "/usr/lib/portcullis"]
    /// File name of the XDP filter object.
    public static let filterObjectName = "portcullis.bpf.o"

    public init() {}

    /// Locates `fileName`.
    /// - Parameters:
    ///   - explicit: a path given by the operator (`--bpf-object`); used as is, never second-guessed.
    ///   - environment: the variable to consult; `nil` skips it (the perf reference object).
    /// - Throws: `bpfObjectMissing` listing every place it looked.
    public func locate(
        _ fileName: String = filterObjectName, explicit: String? = nil,
        environment: String? = environmentVariable
    ) throws(FirewallError) -> String {
        var candidates: [String] = []
        if let explicit {
            candidates.append(explicit)
        } else {
            if let environment, let value = getenv(environment).map({ String(cString: $0) }), !value.isEmpty {
                // The variable names the filter object; siblings (the reference) live beside it.
                candidates.append(fileName == Self.filterObjectName ? value : directory(of: value) + "/" + fileName)
            }
            if let executable = Self.executableDirectory() { candidates.append(executable + "/" + fileName) }
            candidates += Self.installDirectories.map { $0 + "/" + fileName }
        }
        if let found = candidates.first(where: { access($0, R_OK) == 0 }) { return found }
        let named = explicit.map { String($0.split(separator: "/").last ?? Substring($0)) } ?? fileName
        throw .bpfObjectMissing(file: named, searched: candidates)
    }

    private func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash])
    }

    /// Directory of /proc/self/exe, symlinks resolved.
    static func executableDirectory() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let path = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let slash = path.lastIndex(of: "/") else { return nil }
        return String(path[..<slash])
    }
}
