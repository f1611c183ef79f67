// SPDX-License-Identifier: GPL-2.0-only
/*
 * flood.bpf.c - the testbed's traffic generator (not part of the product).
 *
 * `portcullis-testbed flood` runs this program with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES; every XDP_TX puts one frame on the wire of the client veth.
 *
 * Four streams share the frames by weight: attackers over IPv4 and IPv6 (payload 'B') and valid
 * clients over IPv4 and IPv6 (payload 'A'). Each frame goes to the stream furthest behind its
 * share; within a stream the clients take turns, so every attacker sends once per round. The
 * program writes the source address and the payload byte into the frame, fixing the IPv4 header checksum and the IPv6 UDP
 * checksum incrementally (RFC 1624); IPv4 UDP checksums stay 0 ("none").
 *
 * Every test-run call costs two XDP dispatcher updates (tens of milliseconds here), so user space
 * makes few calls: paced, each asks for the frames due by then; unpaced, each lasts about 200 ms.
 * The program keeps to the schedule itself too: it sends a frame only when one is due at `rate`
 * since `start_ns`, returning XDP_DROP (nothing sent, counted as idle) otherwise and after
 * `end_ns`. Each generator thread is pinned to its own CPU and the counters are
 * per CPU, so threads never share a counter; user space sums them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flood_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood_config);
} flood_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flood_counters);
} flood_counters SEC(".maps");

/* One's complement sum of 16-bit words as stored (network order). */
static __always_inline __u32 csum_words(const __u16 *words, int count, __u32 sum)
{
#pragma unroll
	for (int i = 0; i < count; i++)
		sum += words[i];
	return sum;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), m and m' given as word sums. */
static __always_inline __u16 csum_replace(__u16 check, __u32 old_sum, __u32 new_sum)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~csum_fold(old_sum);
	sum += csum_fold(new_sum);
	return (__u16)~csum_fold(sum);
}

/* The stream furthest behind its share: max of frames * weight[s] - sent[s] * total. */
static __always_inline int pick_stream(const struct flood_config *cfg, const struct flood_counters *cnt)
{
	__u64 total = cfg->weight[0] + cfg->weight[1] + cfg->weight[2] + cfg->weight[3];
	__s64 best_deficit = 0;
	int best = -1;

#pragma unroll
	for (int s = 0; s < FLOOD_STREAMS; s++) {
		if (!cfg->weight[s] || !cfg->clients[s])
			continue;
		__s64 deficit = (__s64)((cnt->frames + 1) * cfg->weight[s]) - (__s64)(cnt->sent[s] * total);
		if (best < 0 || deficit > best_deficit) {
			best = s;
			best_deficit = deficit;
		}
	}
	return best;
}

/* Whether a frame may be sent now; reads the clock only when the frames due so far are out. */
static __always_inline int due(const struct flood_config *cfg, struct flood_counters *cnt)
{
	if (cnt->frames < cnt->due)
		return 1;
	__u64 now = bpf_ktime_get_ns();

	if (now < cfg->start_ns || now >= cfg->end_ns)
		return 0;
	/* Unpaced: the next 64 frames are due (one clock reading per 64 frames for the end). */
	cnt->due = cfg->rate ? (now - cfg->start_ns) / 1000 * cfg->rate / 1000000 : cnt->frames + 64;
	return cnt->frames < cnt->due;
}

SEC("xdp")
int pc_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct flood_config *cfg = bpf_map_lookup_elem(&flood_config, &zero);
	struct flood_counters *cnt = bpf_map_lookup_elem(&flood_counters, &zero);
	struct ethhdr *eth = data;
	__u32 host;
	__u64 next;
	int stream, v6;

	if (!cfg || !cnt || data + FLOOD_FRAME_LEN > end)
		return XDP_ABORTED;
	if (!due(cfg, cnt)) {
		cnt->idle++;
		return XDP_DROP;
	}
	stream = pick_stream(cfg, cnt);
	if (stream < 0 || stream >= FLOOD_STREAMS)
		return XDP_ABORTED;
	v6 = stream == FLOOD_ATTACK_V6 || stream == FLOOD_VALID_V6;
	next = cnt->next[stream];
	host = (__u32)next;
	cnt->next[stream] = next + 1 >= cfg->clients[stream] ? 0 : next + 1;
	cnt->frames++;
	cnt->sent[stream]++;

	/* A recycled frame keeps what the last run wrote: the template is copied only when the
	 * family changes (or the frame is new); the rest is updated incrementally. */
	if (!v6) {
		struct iphdr *ip = (void *)(eth + 1);
		__u8 *body = (void *)ip + sizeof(*ip) + sizeof(struct udphdr);
		__u32 old_sum;

		if (eth->h_proto != bpf_htons(ETH_P_IP))
			__builtin_memcpy(data, cfg->frame_v4, FLOOD_FRAME_LEN);
		old_sum = csum_words((__u16 *)&ip->saddr, 2, 0);
		ip->saddr = bpf_htonl(bpf_ntohl(*(__u32 *)cfg->base[stream]) + host);
		ip->check = csum_replace(ip->check, old_sum, csum_words((__u16 *)&ip->saddr, 2, 0));
		body[0] = stream == FLOOD_VALID_V4 ? 'A' : 'B';
		return XDP_TX;
	} else {
		struct ipv6hdr *ip = (void *)(eth + 1);
		struct udphdr *udp = (void *)(ip + 1);
		__u8 *body = (void *)(udp + 1);
		__u32 old_sum, new_sum, *last;
		__u16 check;

		if (eth->h_proto != bpf_htons(ETH_P_IPV6))
			__builtin_memcpy(data, cfg->frame_v6, FLOOD_FRAME_LEN);
		old_sum = csum_words((__u16 *)&ip->saddr, 8, csum_words((__u16 *)body, 1, 0));
		__builtin_memcpy(&ip->saddr, cfg->base[stream], 16);
		last = &ip->saddr.in6_u.u6_addr32[3];
		*last = bpf_htonl(bpf_ntohl(*last) + host);
		body[0] = stream == FLOOD_VALID_V6 ? 'A' : 'B';
		new_sum = csum_words((__u16 *)&ip->saddr, 8, csum_words((__u16 *)body, 1, 0));
		check = csum_replace(udp->check, old_sum, new_sum);
		udp->check = check ? check : 0xffff;
		return XDP_TX;
	}
}

char LICENSE[] SEC("license") = "GPL";
