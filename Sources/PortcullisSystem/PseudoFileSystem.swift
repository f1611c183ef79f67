// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc

/// File systems whose "regular files" hold no data of their own (`/proc`, `/sys`...): a log read
/// there has a size of 0 while reads return data (a reader would take that for a truncation at
/// every poll), some block or consume (`/proc/kmsg`), and writes to them keep nothing, so no
/// daemon may keep its logs or state there.
public enum PseudoFileSystem {
    static let known: [(magic: Int, name: String)] = [
        (0x9fa0, "procfs"), (0x6265_6572, "sysfs"), (0x6462_6720, "debugfs"), (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"), (0x6367_7270, "cgroup2"), (0x0027_e0eb, "cgroup"), (0x6265_6570, "configfs"),
        (0xcafe_4a11, "bpf"),
    ]

    /// The name of the pseudo file system the open file `fd` is on, or nil (a real one, or
    /// `fstatfs` failed).
    public static func name(of fd: Int32) -> String? {
        var system = statfs()
        guard fstatfs(fd, &system) == 0 else { return nil }
        return known.first { $0.magic == Int(system.f_type) }?.name
    }

    /// Whether `path` (or, when it does not exist, its directory) is on a pseudo file system.
    public static func holds(_ path: String) -> Bool {
        var probe = path
        if access(probe, F_OK) != 0 {
            guard let slash = path.lastIndex(of: "/") else { return check(".") }
            probe = slash == path.startIndex ? "/" : String(path[..<slash])
        }
        return check(probe)
    }

    private static func check(_ path: String) -> Bool {
        var info = statfs()
        return statfs(path, &info) == 0 && known.contains { $0.magic == Int(info.f_type) }
    }
}
