// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdp_clocks.bpf.c - the clocks a ban's end can be compared with, for the `xdp` perf suite: each
 * program parses the frame as the filter does, looks its source up in one exact map (struct
 * pc_ban values), and drops it unless the ban has ended by one clock:
 *   pc_clock_none     compares nothing (a permanent ban's cost, or a kernel sweep's fast path)
 *   pc_clock_boot     bpf_ktime_get_boot_ns(), what the filter read before issue 30
 *   pc_clock_coarse   bpf_ktime_get_coarse_ns()
 *   pc_clock_jiffies  bpf_jiffies64() (ends kept in jiffies)
 *   pc_clock_cached   the time a bpf_timer writes into a map every PC_CLOCK_PERIOD_NS, fresh while
 *                     bpf_jiffies64() says so: the filter's clock (bpf/portcullis_clock.h)
 * clk_sweep (BPF_PROG_TYPE_SYSCALL) deletes the ended entries with bpf_for_each_map_elem, what a
 * sweep by a kernel timer would do each period; clk_start starts the cached clock's timer.
 */
#include "portcullis_clock.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_DEFAULT_BAN_ENTRIES);
	__type(key, struct pc_ipv4_key);
	__type(value, struct pc_ban);
} clk_bans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_clock);
} clk_clock SEC(".maps");

static __always_inline __u64 clk_cached(void)
{
	__u32 zero = 0;

	return pc_clock_now(bpf_map_lookup_elem(&clk_clock, &zero));
}

#define CLOCK_PROGRAM(name, ended)                                                                                     \
	SEC("xdp")                                                                                                     \
	int name(struct xdp_md *ctx)                                                                                   \
	{                                                                                                              \
		struct pc_cursor cursor = {.pos = (void *)(long)ctx->data, .end = (void *)(long)ctx->data_end};        \
		struct pc_ipv4_key key;                                                                                \
		struct pc_ban *ban;                                                                                    \
		void *saddr = NULL;                                                                                    \
		__u64 expires_ns;                                                                                      \
                                                                                                                       \
		if (pc_parse_source(&cursor, &saddr) != PC_L3_IPV4)                                                    \
			return XDP_ABORTED;                                                                            \
		__builtin_memcpy(&key, saddr, sizeof(key));                                                            \
		ban = bpf_map_lookup_elem(&clk_bans, &key);                                                            \
		if (!ban)                                                                                              \
			return XDP_PASS;                                                                               \
		expires_ns = ban->expires_ns;                                                                          \
		if (expires_ns != 0 && (ended))                                                                        \
			return XDP_PASS;                                                                               \
		return XDP_DROP;                                                                                       \
	}

CLOCK_PROGRAM(pc_clock_none, 0)
CLOCK_PROGRAM(pc_clock_boot, bpf_ktime_get_boot_ns() >= expires_ns)
CLOCK_PROGRAM(pc_clock_coarse, bpf_ktime_get_coarse_ns() >= expires_ns)
CLOCK_PROGRAM(pc_clock_jiffies, bpf_jiffies64() >= expires_ns)
CLOCK_PROGRAM(pc_clock_cached, clk_cached() >= expires_ns)

static int clk_tick(void *map, __u32 *key, struct pc_clock *clock)
{
	pc_clock_advance(clock);
	return 0;
}

SEC("syscall")
int clk_start(void *args)
{
	__u32 zero = 0;

	return pc_clock_arm(bpf_map_lookup_elem(&clk_clock, &zero), &clk_clock, clk_tick);
}

struct clk_sweep_state {
	__u64 now;
	__u64 visited;
};

static long clk_sweep_one(void *map, struct pc_ipv4_key *key, struct pc_ban *ban, struct clk_sweep_state *state)
{
	if (ban->expires_ns != 0 && ban->expires_ns <= state->now)
		bpf_map_delete_elem(map, key);
	state->visited++;
	return 0;
}

/* Returns the entries visited. */
SEC("syscall")
int clk_sweep(void *args)
{
	struct clk_sweep_state state = {.now = bpf_ktime_get_boot_ns()};

	bpf_for_each_map_elem(&clk_bans, clk_sweep_one, &state, 0);
	return state.visited;
}

char LICENSE[] SEC("license") = "GPL";
