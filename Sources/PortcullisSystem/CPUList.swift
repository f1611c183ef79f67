// SPDX-License-Identifier: Apache-2.0
import Glibc
import PortcullisCore

/// A list of CPUs as operators write it (`0-3,8,10-11`), as in `taskset -c` and cpuset files.
public enum CPUList {
    /// Parses `text` into CPU numbers, checking each exists on this machine.
    /// - Parameter option: the option's name for the error message (`--cpus`).
    public static func parse(_ text: String, option: String = "--cpus") throws(SettingError) -> [Int] {
        var cpus: [Int] = []
        let configured = Int(sysconf(Int32(_SC_NPROCESSORS_CONF)))
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
            guard let low = Int(bounds[0]), let high = Int(bounds.count == 2 ? bounds[1] : bounds[0]), low >= 0,
                low <= high
            else {
                throw SettingError("\(option) '\(text)' is not a CPU list like 0-3,8")
            }
            // Checked before the range is made: 0-99999999999 must be an error, not 800 GB.
            guard high < configured else {
                throw SettingError("\(option): CPU \(high) does not exist (this machine has CPUs 0-\(configured - 1))")
            }
            cpus += Array(low...high)
        }
        if cpus.isEmpty { throw SettingError("\(option) '\(text)' names no CPU") }
        return cpus
    }
}
