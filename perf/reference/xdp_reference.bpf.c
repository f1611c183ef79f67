// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdp_reference.bpf.c - the reference the `xdp` perf suite measures the filter against: the same
 * parsing and validation as portcullis.bpf.c (the shared portcullis_parse.h) and a return, with no
 * map access. The difference between the two is what the ban lookup and the counters cost.
 *
 * pc_xdp_exact_only is the second reference: the filter as it was before prefixes, CIDR tries,
 * blocklists and the allowlist (ABI 2, commit a006453): one exact lookup per packet and the
 * counters, on maps of its own. Against it the suite measures what the new structures cost.
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

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_DEFAULT_BAN_ENTRIES);
	__type(key, struct pc_ipv4_key);
	__type(value, struct pc_ban);
} ref_bans_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_DEFAULT_BAN_ENTRIES);
	__type(key, struct pc_ipv6_key);
	__type(value, struct pc_ban);
} ref_bans_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_STAT_COUNT);
	__type(key, __u32);
	__type(value, struct pc_stat);
} ref_stats SEC(".maps");

static __always_inline int ref_count(__u32 index, struct xdp_md *ctx, int verdict)
{
	struct pc_stat *stat = bpf_map_lookup_elem(&ref_stats, &index);

	if (stat) {
		stat->packets++;
		stat->bytes += ctx->data_end - ctx->data;
	}
	return verdict;
}

static __always_inline int ref_enforce(struct pc_ban *ban, struct xdp_md *ctx)
{
	__u64 expires_ns = ban->expires_ns;

	if (expires_ns != 0 && bpf_ktime_get_boot_ns() >= expires_ns)
		return ref_count(PC_STAT_EXPIRED, ctx, XDP_PASS);
	__sync_fetch_and_add(&ban->dropped, 1);
	return ref_count(PC_STAT_DROPPED, ctx, XDP_DROP);
}

SEC("xdp")
int pc_xdp_exact_only(struct xdp_md *ctx)
{
	struct pc_cursor cursor = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	void *saddr = NULL;
	struct pc_ban *ban;

	switch (pc_parse_source(&cursor, &saddr)) {
	case PC_L3_IPV4: {
		struct pc_ipv4_key key;

		__builtin_memcpy(&key, saddr, sizeof(key));
		ban = bpf_map_lookup_elem(&ref_bans_v4, &key);
		if (ban)
			return ref_enforce(ban, ctx);
		if (pc_validate_ipv4(&cursor) < 0)
			return ref_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return ref_count(PC_STAT_PASSED, ctx, XDP_PASS);
	}
	case PC_L3_IPV6: {
		struct pc_ipv6_key key;

		__builtin_memcpy(&key, saddr, sizeof(key));
		ban = bpf_map_lookup_elem(&ref_bans_v6, &key);
		if (ban)
			return ref_enforce(ban, ctx);
		if (pc_validate_ipv6(&cursor) < 0)
			return ref_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return ref_count(PC_STAT_PASSED, ctx, XDP_PASS);
	}
	case PC_L3_OTHER:
		return ref_count(PC_STAT_PASSED, ctx, XDP_PASS);
	default:
		return ref_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
	}
}

char LICENSE[] SEC("license") = "GPL";
