// SPDX-License-Identifier: GPL-2.0
/*
 * xdp_reference.bpf.c - the reference the `xdp` perf suite measures the filter against: the same
 * parsing and validation as portcullis.bpf.c (the shared portcullis_parse.h) and a return, with no
 * map access. The difference between the two is what the ban lookup and the counters cost.
 */
#include "portcullis_parse.h"

SEC("xdp")
int pc_xdp_reference(struct xdp_md *ctx)
{
	struct pc_cursor cursor = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	void *saddr = NULL;
	volatile __u8 sink;

	switch (pc_parse_source(&cursor, &saddr)) {
	case PC_L3_IPV4:
		sink = *(__u8 *)saddr; /* read the key bytes as the filter does */
		return pc_validate_ipv4(&cursor) < 0 ? XDP_ABORTED : XDP_PASS;
	case PC_L3_IPV6:
		sink = *(__u8 *)saddr;
		return pc_validate_ipv6(&cursor) < 0 ? XDP_ABORTED : XDP_PASS;
	default:
		(void)sink;
		return XDP_PASS;
	}
}

char LICENSE[] SEC("license") = "GPL";
