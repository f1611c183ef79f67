// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdp_spray.bpf.c - many sources for the `xdp` perf suite: pc_xdp_spray writes the next of `count`
 * consecutive 32-bit values (from `base`, network order) into the frame's source address (the whole
 * IPv4 source, or the last word of an IPv6 one) and tail-calls the program in slot 0 of
 * spray_target (the filter, xdp-filter, or pc_xdp_spray_end), so that every run meets another
 * source and, over a million of them, a cold cache. Its own cost is what a run through it to
 * pc_xdp_spray_end takes; the suite subtracts it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* spray_config's one value (host order). */
struct spray_config {
	__u32 count; /* values in turn: base ... base + count - 1 */
	__u32 base;
	__u32 offset; /* of the word in the frame: 26 (IPv4 source) or 34 (an IPv6 source's last word) */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct spray_config);
} spray_config SEC(".maps");

/* The next value's index, per CPU (each CPU walks the whole range). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} spray_cursor SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} spray_target SEC(".maps");

SEC("xdp")
int pc_xdp_spray(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, index, value;
	struct spray_config *config = bpf_map_lookup_elem(&spray_config, &zero);
	__u32 *cursor = bpf_map_lookup_elem(&spray_cursor, &zero);

	if (!config || !cursor || config->count == 0 || data + 38 > end)
		return XDP_ABORTED;
	index = *cursor;
	if (index >= config->count)
		index = 0;
	*cursor = index + 1;
	value = bpf_htonl(config->base + index);
	if (config->offset == 26)
		__builtin_memcpy(data + 26, &value, sizeof(value));
	else
		__builtin_memcpy(data + 34, &value, sizeof(value));
	bpf_tail_call(ctx, &spray_target, 0);
	return XDP_ABORTED; /* no target: every verdict check fails */
}

/* The tail-call target that measures pc_xdp_spray alone. */
SEC("xdp")
int pc_xdp_spray_end(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
