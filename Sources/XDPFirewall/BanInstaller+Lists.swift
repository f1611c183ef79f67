// SPDX-License-Identifier: Apache-2.0
import CPortcullis
import PortcullisCore

extension BanInstaller {
    /// One write of the list layer in place: a host's entry put, or taken out.
    struct ListHostWrite {
        let network: IPNetwork
        let request: BanRequest
        let take: Bool
    }

    /// Writes `writes` into the hosts hashes of the generations in force (`pc_install_list_hosts`,
    /// see bpf/portcullis_abi.h): one `BPF_PROG_RUN` per `capacity`, never over or out of an entry
    /// whose origin `owned` does not accept. - Returns: the outcome of each, in order, up to the
    /// first run that failed, and that run's error; nil without the list writer (`listProblem`).
    func writeListHosts(
        _ writes: [ListHostWrite], generations: (v4: UInt32, v6: UInt32), owned: OriginMask
    ) -> (outcomes: [pc_install_outcome], error: FirewallError?)? {
        guard let program = listProgramFD else { return nil }
        var args = pc_list_install_args()
        args.generation_v4 = generations.v4
        args.generation_v6 = generations.v6
        args.owned = owned.words
        return runs(
            of: writes.count,
            fill: { index, slot in
                Self.fill(
                    slot, writes[index].request,
                    operation: UInt16(writes[index].take ? PC_LIST_OP_TAKE : PC_LIST_OP_PUT))
            },
            run: { count in
                args.count = UInt32(count)
                return Self.run(program, context: &args, count: count)
            })
    }
}
