import CPortcullis
import Glibc

/// The kernel's pseudo file systems (`/proc`, `/sys`): files there are not data a daemon may keep
/// its state in.
public enum PseudoFileSystem {
    /// The `statfs` magic numbers of procfs (`PROC_SUPER_MAGIC`) and sysfs (`SYSFS_MAGIC`).
    static let magics = [0x9fa0, 0x6265_6572]

    /// Whether `path` (or, when it does not exist, its directory) is on procfs or sysfs.
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
        return statfs(path, &info) == 0 && magics.contains(Int(info.f_type))
    }
}
