// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import Glibc
import PortcullisCore
import PortcullisSystem

/// Writing bans beside an operator's: the daemon never shortens a ban, and never lifts one that is
/// still in force.
extension BanMaps {
    /// What `banKeepingLonger` did with each request, by index.
    public struct MergeOutcome: Sendable, Equatable {
        /// Written: the address had no ban, or one ending before this one.
        public var installed: [Int] = []
        /// Left as it was: the address already had a ban ending at or after this one, or for good.
        public var kept: [Int] = []
        /// Not written: the map is full.
        public var failed: [Int] = []

        public init() {}
    }

    /// Installs `requests`, never shortening a ban already there: an address that has a ban keeps
    /// it unless the new one ends later (then it is replaced, its drop count kept). A
    /// full map fails its family's requests; nothing is retried here.
    ///
    /// In one `BPF_PROG_RUN` of the kernel installer per 4,096 requests (`BanInstaller`), else,
    /// where it cannot load (its object missing), with one `bpf_map_update_elem(BPF_NOEXIST)`
    /// each (`installerProblem` says why).
    public func banKeepingLonger(batch requests: [BanRequest]) -> MergeOutcome {
        guard !requests.isEmpty else { return MergeOutcome() }
        guard let kernel = kernelInstaller() else { return banKeepingLongerEach(requests) }
        let (outcomes, error) = kernel.install(requests)
        var outcome = MergeOutcome()
        for (index, result) in outcomes.enumerated() {
            switch result {
            case PC_INSTALL_NEW, PC_INSTALL_LONGER: outcome.installed.append(index)
            case PC_INSTALL_KEPT: outcome.kept.append(index)
            default: outcome.failed.append(index)
            }
        }
        if let error {
            // A run the kernel refused: the requests it did not reach go in one by one, and the
            // failure is kept for whoever reports (`installerProblem`).
            installer.withLock { $0.problem = "\(error)" }
            let done = outcomes.count
            let rest = banKeepingLongerEach(Array(requests[done...]))
            outcome.installed += rest.installed.map { $0 + done }
            outcome.kept += rest.kept.map { $0 + done }
            outcome.failed += rest.failed.map { $0 + done }
        }
        return outcome
    }

    /// Loads the kernel installer from `objectPath` (by default the filter's object where
    /// `BPFObjectLocator` finds it), once. - Returns: why it cannot be used (bans then go in one
    /// system call each), or nil.
    @discardableResult
    public func loadInstaller(objectPath: String? = nil) -> String? {
        installer.withLock { state in
            if state.tried { return state.problem }
            state.tried = true
            do throws(FirewallError) {
                var path = objectPath ?? ""
                if objectPath == nil { path = try BPFObjectLocator().locate() }
                state.installer = try BanInstaller(
                    objectPath: path,
                    maps: [
                        PC_MAP_BANS_V4: bansV4.fd, PC_MAP_BANS_V6: bansV6.fd, PC_MAP_LIST_HOSTS_V4: listHostsV4.fd,
                        PC_MAP_LIST_HOSTS_V6: listHostsV6.fd,
                    ])
            } catch {
                state.problem = "\(error)"
            }
            return state.problem
        }
    }

    /// Why the kernel installer is not used, or the last run of it that failed (nil: neither).
    public var installerProblem: String? { installer.withLock { $0.problem } }

    /// The kernel's list writer (`pc_install_list_hosts`), where it loads.
    func listWriter() -> BanInstaller? {
        loadInstaller()
        return installer.withLock { $0.listWriterOff || $0.installer?.listProgramFD == nil ? nil : $0.installer }
    }

    /// Why the kernel's list writer is not used (nil: it is): the list layer is then written from
    /// user space, with a lookup per host.
    public var listWriterProblem: String? {
        loadInstaller()
        return installer.withLock { state in
            if state.listWriterOff { return "turned off" }
            return state.installer.map { $0.listProblem } ?? state.problem
        }
    }

    /// Writes the list layer from user space from now on (the tests of that path).
    @_spi(Testing) public func turnListWriterOff() { installer.withLock { $0.listWriterOff = true } }

    func kernelInstaller() -> BanInstaller? {
        loadInstaller()
        return installer.withLock { $0.installer }
    }

    /// `banKeepingLonger` with one `bpf_map_update_elem(BPF_NOEXIST)` per request (the kernel
    /// refuses flags on batched updates, and a batch with `BPF_ANY` would overwrite a longer
    /// ban); an address that has a ban is looked up and rewritten only when the new end is later
    /// (its drop count kept).
    func banKeepingLongerEach(_ requests: [BanRequest]) -> MergeOutcome {
        var outcome = MergeOutcome()
        var full: Set<IPAddress.Family> = []
        for (index, request) in requests.enumerated() {
            if full.contains(request.address.family) {
                outcome.failed.append(index)
                continue
            }
            var value = request.value(dropped: 0)
            let result =
                (try? withKey(request.address) { (fd, key) throws(FirewallError) in
                    systemCallResult { bpf_map_update_elem(fd, key, &value, UInt64(BPF_NOEXIST)) }
                }) ?? .failure(Errno(EINVAL))
            switch result {
            case .success: outcome.installed.append(index)
            case .failure(let error) where error.code == EEXIST: merge(request, index: index, into: &outcome)
            // A preallocated hash map reports a full table as E2BIG.
            case .failure(let error) where error.code == E2BIG:
                full.insert(request.address.family)
                outcome.failed.append(index)
            case .failure: outcome.failed.append(index)
            }
        }
        return outcome
    }

    /// One request whose address has a ban: rewritten only if it ends later. Taken out and put
    /// back atomically per step (`bpf_map_lookup_and_delete_elem`, then `BPF_NOEXIST`), so that a
    /// `portcullis ban` written in between is never overwritten: it then stands (kept).
    private func merge(_ request: BanRequest, index: Int, into outcome: inout MergeOutcome) {
        var existing = pc_ban()
        let taken =
            (try? withKey(request.address) { (fd, key) throws(FirewallError) in
                systemCallResult { bpf_map_lookup_and_delete_elem(fd, key, &existing) }
            }) ?? .failure(Errno(EINVAL))
        switch taken {
        case .failure(let error) where error.code == ENOENT: break  // lifted meanwhile: write it afresh
        case .failure:
            outcome.failed.append(index)
            return
        case .success: break
        }
        let hadBan = taken.isSuccess
        let longer = !hadBan || Self.endsLater(request.expiry, than: BanExpiry(expiresNanoseconds: existing.expires_ns))
        var value =
            longer ? request.value(keeping: hadBan ? existing : nil) : existing
        let put =
            (try? withKey(request.address) { (fd, key) throws(FirewallError) in
                systemCallResult { bpf_map_update_elem(fd, key, &value, UInt64(BPF_NOEXIST)) }
            }) ?? .failure(Errno(EINVAL))
        switch put {
        case .success: if longer { outcome.installed.append(index) } else { outcome.kept.append(index) }
        case .failure(let error) where error.code == EEXIST: outcome.kept.append(index)  // someone else's, since
        case .failure: outcome.failed.append(index)
        }
    }

    /// Whether a ban ending at `new` outlasts one ending at `old` (for good outlasts everything).
    public static func endsLater(_ new: BanExpiry, than old: BanExpiry) -> Bool {
        switch (new, old) {
        case (_, .permanent): return false
        case (.permanent, _): return true
        case (.at(let newEnd), .at(let oldEnd)): return newEnd > oldEnd
        }
    }

    /// What `liftIfEnded` found.
    public enum LiftOutcome: Sendable, Equatable {
        /// The ban had ended: deleted.
        case lifted(BanEntry)
        /// No ban (an operator's `unban`).
        case absent
        /// A ban in force (an operator's, set since): left as it was.
        case inForce(BanEntry)
    }

    /// Deletes `address`'s ban if it has ended at `now`, atomically against anyone writing it
    /// meanwhile: `bpf_map_lookup_and_delete_elem`, and a ban found in force is put back as it was
    /// (for the microseconds in between the program passes the address).
    public func liftIfEnded(_ address: IPAddress, now: UInt64) throws(FirewallError) -> LiftOutcome {
        var value = pc_ban()
        let result = try withKey(address) { (fd, key) throws(FirewallError) in
            systemCallResult { bpf_map_lookup_and_delete_elem(fd, key, &value) }
        }
        switch result {
        case .failure(let error) where error.code == ENOENT: return .absent
        case .failure(let error): throw systemError("lift the ban of \(address)", error.code)
        case .success: break
        }
        let entry = BanEntry(
            address: address, expiry: BanExpiry(expiresNanoseconds: value.expires_ns), dropped: value.dropped,
            origin: value.origin)
        if entry.isExpired(now: now) { return .lifted(entry) }
        // Written (or made longer) after the lift looked: put it back unless a newer one is there.
        var restore = value
        _ = try withKey(address) { (fd, key) throws(FirewallError) in
            systemCallResult { bpf_map_update_elem(fd, key, &restore, UInt64(BPF_NOEXIST)) }
        }
        return .inForce(entry)
    }
}
