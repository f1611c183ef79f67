// SPDX-License-Identifier: GPL-2.0
/*
 * portcullis.bpf.c - the XDP filter: drops frames whose source address holds a ban in force.
 *
 * The ban check comes first, as soon as the fixed network header is readable, so that a banned
 * source cannot buy its way past the filter with malformed options or extension headers. Frames
 * from other sources are then checked further only to count malformed ones; they always pass.
 */
#include "portcullis_parse.h"
#include <xdp/xdp_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_DEFAULT_BAN_ENTRIES);
	__type(key, struct pc_ipv4_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_bans_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_DEFAULT_BAN_ENTRIES);
	__type(key, struct pc_ipv6_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_bans_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_STAT_COUNT);
	__type(key, __u32);
	__type(value, struct pc_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_stats SEC(".maps");

/* Not read here: user space stores PC_ABI_MAGIC/PC_ABI_VERSION in it to mark the pin directory. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_meta SEC(".maps");

/* Not read here: the names of the bans' origins (the daemon's jails), for user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_MAX_ORIGINS);
	__type(key, __u32);
	__type(value, struct pc_origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_origins SEC(".maps");

/* libxdp dispatcher settings: run before other programs and hand on only what we pass. */
struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(pc_xdp_filter);

static __always_inline int pc_count(__u32 index, struct xdp_md *ctx, int verdict)
{
	struct pc_stat *stat = bpf_map_lookup_elem(&pc_stats, &index);

	if (stat) {
		/* Per-CPU slot, and XDP runs with preemption off: plain increments are exact. */
		stat->packets++;
		stat->bytes += ctx->data_end - ctx->data;
	}
	return verdict;
}

/* Returns the verdict for a source found in a ban map. */
static __always_inline int pc_enforce(struct pc_ban *ban, struct xdp_md *ctx)
{
	__u64 expires_ns = ban->expires_ns;

	if (expires_ns != 0 && bpf_ktime_get_boot_ns() >= expires_ns)
		return pc_count(PC_STAT_EXPIRED, ctx, XDP_PASS);
	/* Shared by every CPU that sees this source: atomic. */
	__sync_fetch_and_add(&ban->dropped, 1);
	return pc_count(PC_STAT_DROPPED, ctx, XDP_DROP);
}

SEC("xdp")
int pc_xdp_filter(struct xdp_md *ctx)
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
		ban = bpf_map_lookup_elem(&pc_bans_v4, &key);
		if (ban)
			return pc_enforce(ban, ctx);
		if (pc_validate_ipv4(&cursor) < 0)
			return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	}
	case PC_L3_IPV6: {
		struct pc_ipv6_key key;

		__builtin_memcpy(&key, saddr, sizeof(key));
		ban = bpf_map_lookup_elem(&pc_bans_v6, &key);
		if (ban)
			return pc_enforce(ban, ctx);
		if (pc_validate_ipv6(&cursor) < 0)
			return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	}
	case PC_L3_OTHER:
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	default:
		return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
	}
}

char LICENSE[] SEC("license") = "GPL";
