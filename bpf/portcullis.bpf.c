// SPDX-License-Identifier: GPL-2.0-only
/*
 * portcullis.bpf.c - the XDP filter: drops frames whose source address holds a ban in force.
 *
 * Every structure that may cover a source is asked in turn: its exact ban, its fixed-length
 * prefixes (longest first), the CIDR trie and the blocklists; the first ban in force drops it,
 * unless the source is in the allowlist, which passes it whatever covers it (looked up only then:
 * a source nothing covers passes without that lookup). A source whose only covering bans have
 * ended passes as expired. Structures never used are skipped without a lookup (PC_CONFIG_USED_*),
 * and so are all network structures for a source outside every part of the address space that
 * holds a network entry (pc_cover: its /24, or its hashed /64).
 *
 * The ban check comes first, as soon as the fixed network header is readable, so that a banned
 * source cannot buy its way past the filter with malformed options or extension headers. Frames
 * from other sources are then checked further only to count malformed ones; they always pass.
 */
#include "portcullis_clock.h"
#include <xdp/xdp_helpers.h>
#include <linux/errno.h>

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

/* Drops by origin and address family (portcullis_abi.h): a drop counts here, not in pc_stats. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PC_DROP_SLOTS);
	__type(key, __u32);
	__type(value, struct pc_stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_drops SEC(".maps");

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

/* Fixed-length prefix bans: key (length, masked address), one lookup per configured length. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_PREFIX_ENTRIES);
	__type(key, struct pc_prefix4_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_prefix_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_PREFIX_ENTRIES);
	__type(key, struct pc_prefix6_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_prefix_v6 SEC(".maps");

/* Bans of any other prefix length (an operator's 198.18.0.0/15). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_CIDR_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix4_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_cidr_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_CIDR_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix6_key);
	__type(value, struct pc_ban);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_cidr_v6 SEC(".maps");

/* Never dropped: the allowlist (value unused: 0). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_ALLOW_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_ALLOW_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_allow_v6 SEC(".maps");

/* The blocklists: per generation, a hash of their hosts and a trie of their networks. */
struct pc_list_trie_v4 {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_LIST_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix4_key);
	__type(value, struct pc_ban);
};

struct pc_list_trie_v6 {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PC_LIST_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pc_prefix6_key);
	__type(value, struct pc_ban);
};

/* Preallocated (ABI 4; PC_LAYOUT_3 builds the template of ABI 3, whose hashes allocate per entry,
 * for the tests of pins an earlier build left). Its writer sizes each one for what it holds. */
#ifdef PC_LAYOUT_3
#define PC_LIST_HOSTS_FLAGS BPF_F_NO_PREALLOC
#define PC_LIST_HOSTS_TEMPLATE_ENTRIES PC_LIST_ENTRIES
#else
#define PC_LIST_HOSTS_FLAGS 0
/* A template's size is not its inner maps' (the kernel compares a hash's type, sizes and flags): one
 * entry, or libbpf would preallocate a million for the template it makes at each load. */
#define PC_LIST_HOSTS_TEMPLATE_ENTRIES 1
#endif

struct pc_list_hosts_v4 {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_LIST_HOSTS_TEMPLATE_ENTRIES);
	__uint(map_flags, PC_LIST_HOSTS_FLAGS);
	__type(key, struct pc_prefix4_key);
	__type(value, struct pc_ban);
};

struct pc_list_hosts_v6 {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PC_LIST_HOSTS_TEMPLATE_ENTRIES);
	__uint(map_flags, PC_LIST_HOSTS_FLAGS);
	__type(key, struct pc_prefix6_key);
	__type(value, struct pc_ban);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_LISTS_GENERATIONS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pc_list_trie_v4);
} pc_lists_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_LISTS_GENERATIONS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pc_list_trie_v6);
} pc_lists_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_LISTS_GENERATIONS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pc_list_hosts_v4);
} pc_lhosts_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PC_LISTS_GENERATIONS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct pc_list_hosts_v6);
} pc_lhosts_v6 SEC(".maps");

/* Fixed prefix lengths and which structures were ever used (portcullis_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_CONFIG_COUNT);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_config SEC(".maps");

/* Which /24 (IPv4) or hashed /64 (IPv6) holds any network entry: a bitmap (portcullis_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_COVER_WORDS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_cover SEC(".maps");

/* The time as the clock's timer last wrote it (portcullis_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_clock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_clock SEC(".maps");

/* Each CPU's drops not yet on their entry (portcullis_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pc_pending);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pc_pending SEC(".maps");

/* libxdp dispatcher settings: run before other programs and hand on only what we pass. */
struct {
	__uint(priority, 10);
	__uint(XDP_PASS, 1);
} XDP_RUN_CONFIG(pc_xdp_filter);

/* Adds the frame to slot `index` of a per-CPU counter map (pc_stats, pc_drops). */
static __always_inline void pc_add(void *counters, __u32 index, struct xdp_md *ctx)
{
	struct pc_stat *stat = bpf_map_lookup_elem(counters, &index);

	if (stat) {
		/* Per-CPU slot, and XDP runs with preemption off: plain increments are exact. */
		stat->packets++;
		stat->bytes += ctx->data_end - ctx->data;
	}
}

static __always_inline int pc_count(__u32 index, struct xdp_md *ctx, int verdict)
{
	pc_add(&pc_stats, index, ctx);
	return verdict;
}

/* A drop, counted by its ban's origin and the source's family (PC_DROP_FAMILY_*) in pc_drops: one
 * per-CPU slot, as every other verdict. An origin out of range (no writer of ours makes one) counts
 * as the operator's. */
static __always_inline int pc_count_drop(__u32 origin, __u32 family, struct xdp_md *ctx)
{
	pc_add(&pc_drops, (origin < PC_MAX_ORIGINS ? origin : PC_ORIGIN_OPERATOR) * PC_DROP_FAMILIES + family, ctx);
	return XDP_DROP;
}

/* What the bans found so far say: PC_FOUND_NONE, or an ended ban was seen (the source passes as
 * expired unless a ban in force covers it too). */
enum pc_found {
	PC_FOUND_NONE = 0,
	PC_FOUND_ENDED = 1,
};

static __always_inline int pc_used(__u32 index);

/* CLOCK_BOOTTIME now or a little before (portcullis_clock.h). */
static __always_inline __u64 pc_now(void)
{
	__u32 zero = 0;

	return pc_clock_now(bpf_map_lookup_elem(&pc_clock, &zero));
}

static __always_inline __u32 pc_lengths(__u32 index);

/* Adds what `slot` holds to its entry's `dropped`, if the entry is still there with its tag. The
 * slot is emptied first: a reader in between counts those drops nowhere rather than twice (a
 * reader that writes back what it read must never carry them over twice). */
static __noinline void pc_flush(struct pc_pending *slot)
{
	struct pc_ban *ban = NULL;
	__u32 generation;
	__u64 count;
	void *hosts;

	if (!slot)
		return;
	count = slot->count;
	slot->count = 0;
	if (slot->kind == PC_PENDING_BAN) {
		if (slot->family == 6)
			ban = bpf_map_lookup_elem(&pc_bans_v6, slot->addr);
		else
			ban = bpf_map_lookup_elem(&pc_bans_v4, slot->addr);
	} else if (slot->kind == PC_PENDING_PREFIX) {
		if (slot->family == 6)
			ban = bpf_map_lookup_elem(&pc_prefix_v6, &slot->prefixlen);
		else
			ban = bpf_map_lookup_elem(&pc_prefix_v4, &slot->prefixlen);
	} else if (slot->kind == PC_PENDING_LIST_HOST) {
		if (slot->family == 6) {
			generation = pc_lengths(PC_CONFIG_LISTS_GEN_V6) & 1;
			hosts = bpf_map_lookup_elem(&pc_lhosts_v6, &generation);
			if (hosts)
				ban = bpf_map_lookup_elem(hosts, &slot->prefixlen);
		} else {
			generation = pc_lengths(PC_CONFIG_LISTS_GEN_V4) & 1;
			hosts = bpf_map_lookup_elem(&pc_lhosts_v4, &generation);
			if (hosts)
				ban = bpf_map_lookup_elem(hosts, &slot->prefixlen);
		}
	}
	if (ban && ban->tag == slot->tag)
		__sync_fetch_and_add(&ban->dropped, count);
}

/*
 * Counts a drop for `ban`, found under `key` (struct pc_prefix4_key/pc_prefix6_key: its length,
 * then its address) in a structure of `kind` (PC_PENDING_NONE: a trie, counted on the entry): on
 * this CPU's pending count while this CPU's last drop was for the same entry, else on the entry
 * itself (portcullis_abi.h, struct pc_pending).
 */
static __always_inline void pc_count_on(struct pc_ban *ban, __u32 kind, __u32 family, const void *key)
{
	__u32 zero = 0, tag = ban->tag;
	__u8 ipv6 = family == PC_DROP_FAMILY_IPV6;
	struct pc_pending *slot;
	/* The key's words (its length, then its address): it is 4-byte aligned, as are the slot's. */
	const __u32 *words = key;

	if (kind != PC_PENDING_NONE && (slot = bpf_map_lookup_elem(&pc_pending, &zero))) {
		__u32 *held = (__u32 *)slot->addr;

		if (slot->kind == kind && slot->prefixlen == words[0] && slot->tag == tag && held[0] == words[1] &&
		    (ipv6 ? slot->family == 6 && held[1] == words[2] && held[2] == words[3] && held[3] == words[4]
			  : slot->family == 4)) {
			slot->count++;
			return;
		}
		if (slot->count)
			pc_flush(slot);
		slot->kind = kind;
		slot->family = ipv6 ? 6 : 4;
		slot->prefixlen = words[0];
		held[0] = words[1];
		held[1] = ipv6 ? words[2] : 0;
		held[2] = ipv6 ? words[3] : 0;
		held[3] = ipv6 ? words[4] : 0;
		slot->tag = tag;
	}
	/* Shared by every CPU that sees this entry: atomic. */
	__sync_fetch_and_add(&ban->dropped, 1);
}

/*
 * A ban found for the source under `key` in a structure of `kind` (pc_count_on): one in force
 * drops it (and counts on itself), unless the source is in the allowlist, which passes it counted
 * as allowed; an ended one is remembered. The allowlist is looked up only here, when something
 * would drop: a source no ban covers passes without it. Returns the verdict, or -1 to look on.
 */
static __always_inline int pc_decide(struct pc_ban *ban, __u32 kind, const void *key, void *allow, __u32 allow_used,
				     const void *source, __u32 family, struct xdp_md *ctx, int *found)
{
	__u64 expires_ns;

	if (!ban)
		return -1;
	expires_ns = ban->expires_ns;
	if (expires_ns != 0 && pc_now() >= expires_ns) {
		*found = PC_FOUND_ENDED;
		return -1;
	}
	if (pc_used(allow_used) && bpf_map_lookup_elem(allow, source))
		return pc_count(PC_STAT_ALLOWED, ctx, XDP_PASS);
	pc_count_on(ban, kind, family, key);
	return pc_count_drop(ban->origin, family, ctx);
}

static __always_inline int pc_used(__u32 index)
{
	__u32 *value = bpf_map_lookup_elem(&pc_config, &index);

	return value && *value;
}

/* The kinds of network entry in a slot (PC_COVER_*). */
static __always_inline __u32 pc_covered(__u32 slot)
{
	__u32 word = slot >> 4;
	__u64 *value = bpf_map_lookup_elem(&pc_cover, &word);

	return value ? (__u32)(*value >> ((slot & 15) * 4)) & 0xf : 0;
}

static __always_inline __u32 pc_lengths(__u32 index)
{
	__u32 *value = bpf_map_lookup_elem(&pc_config, &index);

	return value ? *value : 0;
}

/* The IPv4 address `addr` (network order) with all but its first `length` bits cleared. */
static __always_inline __u32 pc_mask4(__u32 addr, __u32 length)
{
	if (length == 0)
		return 0;
	if (length >= 32)
		return addr;
	return addr & bpf_htonl(~0u << (32 - length));
}

/* The verdict for an IPv4 source. */
static __always_inline int pc_check_ipv4(const void *saddr, struct xdp_md *ctx, int *found)
{
	struct pc_prefix4_key prefix;
	__u32 addr, lengths, length, kinds;
	void *lists;
	int verdict, i;

	/* Word loads (the packet is read unaligned as x86-64 and arm64 allow): a copy from a void
	 * pointer would be byte by byte. */
	addr = *(const __u32 *)saddr;
	prefix.prefixlen = 32;
	__builtin_memcpy(prefix.addr, &addr, sizeof(addr));
	verdict = pc_decide(bpf_map_lookup_elem(&pc_bans_v4, prefix.addr), PC_PENDING_BAN, &prefix, &pc_allow_v4,
			    PC_CONFIG_USED_ALLOW_V4, &prefix, PC_DROP_FAMILY_IPV4, ctx, found);
	if (verdict >= 0)
		return verdict;
	/* Only the kinds of network entry its /24 holds are asked (none: nothing more to ask). */
	kinds = pc_covered(bpf_ntohl(addr) >> 8);
	if (!kinds)
		return -1;
	if ((kinds & PC_COVER_PREFIX) && pc_used(PC_CONFIG_USED_PREFIX_V4)) {
		lengths = pc_lengths(PC_CONFIG_LENGTHS_V4);
#pragma unroll
		for (i = 0; i < PC_MAX_PREFIX_LENGTHS; i++) {
			length = (lengths >> (8 * i)) & 0xff;
			if (length == 0)
				break;
			struct pc_prefix4_key key = {.prefixlen = length};
			__u32 masked = pc_mask4(addr, length);

			__builtin_memcpy(key.addr, &masked, sizeof(masked));
			verdict = pc_decide(bpf_map_lookup_elem(&pc_prefix_v4, &key), PC_PENDING_PREFIX, &key,
					    &pc_allow_v4, PC_CONFIG_USED_ALLOW_V4, &prefix, PC_DROP_FAMILY_IPV4, ctx,
					    found);
			if (verdict >= 0)
				return verdict;
		}
	}
	if ((kinds & PC_COVER_CIDR) && pc_used(PC_CONFIG_USED_CIDR_V4)) {
		verdict = pc_decide(bpf_map_lookup_elem(&pc_cidr_v4, &prefix), PC_PENDING_NONE, &prefix, &pc_allow_v4,
				    PC_CONFIG_USED_ALLOW_V4, &prefix, PC_DROP_FAMILY_IPV4, ctx, found);
		if (verdict >= 0)
			return verdict;
	}
	if ((kinds & (PC_COVER_LIST_HOSTS | PC_COVER_LIST_NETS)) && pc_used(PC_CONFIG_USED_LISTS_V4)) {
		__u32 generation = pc_lengths(PC_CONFIG_LISTS_GEN_V4) & 1;

		if (kinds & PC_COVER_LIST_HOSTS) {
			lists = bpf_map_lookup_elem(&pc_lhosts_v4, &generation);
			if (lists) {
				verdict = pc_decide(bpf_map_lookup_elem(lists, &prefix), PC_PENDING_LIST_HOST, &prefix,
						    &pc_allow_v4, PC_CONFIG_USED_ALLOW_V4, &prefix, PC_DROP_FAMILY_IPV4,
						    ctx, found);
				if (verdict >= 0)
					return verdict;
			}
		}
		if (kinds & PC_COVER_LIST_NETS) {
			lists = bpf_map_lookup_elem(&pc_lists_v4, &generation);
			if (lists) {
				verdict = pc_decide(bpf_map_lookup_elem(lists, &prefix), PC_PENDING_NONE, &prefix,
						    &pc_allow_v4, PC_CONFIG_USED_ALLOW_V4, &prefix, PC_DROP_FAMILY_IPV4,
						    ctx, found);
				if (verdict >= 0)
					return verdict;
			}
		}
	}
	return -1;
}

/* The IPv6 address `addr` with all but its first `length` bits cleared, word by word. */
static __always_inline void pc_mask6(__u32 *out, const __u32 *addr, __u32 length)
{
	int i;

#pragma unroll
	for (i = 0; i < 4; i++) {
		__u32 first = 32 * i;

		if (length >= first + 32)
			out[i] = addr[i];
		else if (length <= first)
			out[i] = 0;
		else
			out[i] = addr[i] & bpf_htonl(~0u << (32 - (length - first)));
	}
}

/* The verdict for an IPv6 source. */
static __always_inline int pc_check_ipv6(const void *saddr, struct xdp_md *ctx, int *found)
{
	struct pc_prefix6_key prefix;
	__u32 addr[4], lengths, length, hash, kinds;
	void *lists;
	int verdict, i;

	/* Word loads, as for IPv4. */
	addr[0] = ((const __u32 *)saddr)[0];
	addr[1] = ((const __u32 *)saddr)[1];
	addr[2] = ((const __u32 *)saddr)[2];
	addr[3] = ((const __u32 *)saddr)[3];
	prefix.prefixlen = 128;
	__builtin_memcpy(prefix.addr, addr, sizeof(addr));
	verdict = pc_decide(bpf_map_lookup_elem(&pc_bans_v6, prefix.addr), PC_PENDING_BAN, &prefix, &pc_allow_v6,
			    PC_CONFIG_USED_ALLOW_V6, &prefix, PC_DROP_FAMILY_IPV6, ctx, found);
	if (verdict >= 0)
		return verdict;
	/* Only the kinds of network entry its /64 holds (as far as its hash tells) are asked. */
	hash = (bpf_ntohl(addr[0]) ^ (bpf_ntohl(addr[1]) * PC_COVER_HASH_A)) * PC_COVER_HASH_B;
	kinds = pc_covered(PC_COVER_V6_BASE + (hash >> (32 - PC_COVER_V6_BITS))) | pc_lengths(PC_CONFIG_COVER_ALL_V6);
	if (!kinds)
		return -1;
	if ((kinds & PC_COVER_PREFIX) && pc_used(PC_CONFIG_USED_PREFIX_V6)) {
		lengths = pc_lengths(PC_CONFIG_LENGTHS_V6);
#pragma unroll
		for (i = 0; i < PC_MAX_PREFIX_LENGTHS; i++) {
			length = (lengths >> (8 * i)) & 0xff;
			if (length == 0)
				break;
			struct pc_prefix6_key key = {.prefixlen = length};
			__u32 masked[4];

			pc_mask6(masked, addr, length);
			__builtin_memcpy(key.addr, masked, sizeof(masked));
			verdict = pc_decide(bpf_map_lookup_elem(&pc_prefix_v6, &key), PC_PENDING_PREFIX, &key,
					    &pc_allow_v6, PC_CONFIG_USED_ALLOW_V6, &prefix, PC_DROP_FAMILY_IPV6, ctx,
					    found);
			if (verdict >= 0)
				return verdict;
		}
	}
	if ((kinds & PC_COVER_CIDR) && pc_used(PC_CONFIG_USED_CIDR_V6)) {
		verdict = pc_decide(bpf_map_lookup_elem(&pc_cidr_v6, &prefix), PC_PENDING_NONE, &prefix, &pc_allow_v6,
				    PC_CONFIG_USED_ALLOW_V6, &prefix, PC_DROP_FAMILY_IPV6, ctx, found);
		if (verdict >= 0)
			return verdict;
	}
	if ((kinds & (PC_COVER_LIST_HOSTS | PC_COVER_LIST_NETS)) && pc_used(PC_CONFIG_USED_LISTS_V6)) {
		__u32 generation = pc_lengths(PC_CONFIG_LISTS_GEN_V6) & 1;

		if (kinds & PC_COVER_LIST_HOSTS) {
			lists = bpf_map_lookup_elem(&pc_lhosts_v6, &generation);
			if (lists) {
				verdict = pc_decide(bpf_map_lookup_elem(lists, &prefix), PC_PENDING_LIST_HOST, &prefix,
						    &pc_allow_v6, PC_CONFIG_USED_ALLOW_V6, &prefix, PC_DROP_FAMILY_IPV6,
						    ctx, found);
				if (verdict >= 0)
					return verdict;
			}
		}
		if (kinds & PC_COVER_LIST_NETS) {
			lists = bpf_map_lookup_elem(&pc_lists_v6, &generation);
			if (lists) {
				verdict = pc_decide(bpf_map_lookup_elem(lists, &prefix), PC_PENDING_NONE, &prefix,
						    &pc_allow_v6, PC_CONFIG_USED_ALLOW_V6, &prefix, PC_DROP_FAMILY_IPV6,
						    ctx, found);
				if (verdict >= 0)
					return verdict;
			}
		}
	}
	return -1;
}

SEC("xdp")
int pc_xdp_filter(struct xdp_md *ctx)
{
	struct pc_cursor cursor = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	void *saddr = NULL;
	int found = PC_FOUND_NONE;
	int verdict;

	switch (pc_parse_source(&cursor, &saddr)) {
	case PC_L3_IPV4:
		verdict = pc_check_ipv4(saddr, ctx, &found);
		if (verdict >= 0)
			return verdict;
		if (found == PC_FOUND_ENDED)
			return pc_count(PC_STAT_EXPIRED, ctx, XDP_PASS);
		if (pc_validate_ipv4(&cursor) < 0)
			return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	case PC_L3_IPV6:
		verdict = pc_check_ipv6(saddr, ctx, &found);
		if (verdict >= 0)
			return verdict;
		if (found == PC_FOUND_ENDED)
			return pc_count(PC_STAT_EXPIRED, ctx, XDP_PASS);
		if (pc_validate_ipv6(&cursor) < 0)
			return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	case PC_L3_OTHER:
		return pc_count(PC_STAT_PASSED, ctx, XDP_PASS);
	default:
		return pc_count(PC_STAT_MALFORMED, ctx, XDP_PASS);
	}
}

/* The installer's slots (portcullis_abi.h): not pinned, each loader has its own. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PC_INSTALL_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct pc_install_slot);
} pc_install SEC(".maps");

/* Whether a ban ending at `fresh` outlasts one ending at `old` (0: for good, outlasting all). */
static __always_inline int pc_ends_later(__u64 fresh, __u64 old)
{
	if (old == 0)
		return 0;
	return fresh == 0 || fresh > old;
}

/* Installs one slot's ban: written if the address has none; if it has a shorter one, replaced by
 * this one with its drop count kept (BPF_EXIST: the kernel swaps the element under its bucket
 * lock, never writing into one a concurrent delete may have freed and handed to another address);
 * else left. */
static __always_inline __u8 pc_install_in(void *map, struct pc_install_slot *slot)
{
	struct pc_ban fresh = {.expires_ns = slot->expires_ns, .origin = slot->origin, .tag = bpf_get_prandom_u32()};
	struct pc_ban *old;
	long error;
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		fresh.dropped = 0;
		error = bpf_map_update_elem(map, slot->addr, &fresh, BPF_NOEXIST);
		if (error == 0)
			return PC_INSTALL_NEW;
		if (error == -E2BIG)
			return PC_INSTALL_FULL;
		if (error != -EEXIST)
			return PC_INSTALL_FAILED;
		old = bpf_map_lookup_elem(map, slot->addr);
		if (!old)
			continue; /* deleted in between: write it afresh */
		if (!pc_ends_later(slot->expires_ns, old->expires_ns))
			return PC_INSTALL_KEPT;
		fresh.dropped = old->dropped;
		fresh.tag = old->tag; /* what CPUs hold in pc_pending for it stays its own */
		error = bpf_map_update_elem(map, slot->addr, &fresh, BPF_EXIST);
		if (error == 0)
			return PC_INSTALL_LONGER;
		if (error != -ENOENT)
			return PC_INSTALL_FAILED;
		/* deleted in between: write it afresh */
	}
	return PC_INSTALL_FAILED; /* written and deleted by others each time we looked: tried again later */
}

static long pc_install_one(__u32 index, void *unused)
{
	struct pc_install_slot *slot = bpf_map_lookup_elem(&pc_install, &index);

	if (!slot)
		return 1;
	if (slot->family == 4)
		slot->outcome = pc_install_in(&pc_bans_v4, slot);
	else if (slot->family == 6)
		slot->outcome = pc_install_in(&pc_bans_v6, slot);
	else
		slot->outcome = PC_INSTALL_FAILED;
	return 0;
}

SEC("syscall")
int pc_install_bans(struct pc_install_args *args)
{
	__u64 count = *(volatile __u32 *)&args->count; /* zero-extended: see pc_install_list_hosts */

	if (count > PC_INSTALL_SLOTS)
		return -1;
	bpf_loop(count, pc_install_one, NULL, 0);
	return 0;
}

/* One slot of a list delta (portcullis_abi.h, pc_install_list_hosts): put into, or taken out of,
 * the hosts hash `hosts`, never over or out of an entry whose origin `args` does not own. */
static __always_inline __u8 pc_list_host(void *hosts, void *key, struct pc_install_slot *slot,
					 struct pc_list_install_args *args)
{
	struct pc_ban fresh = {.expires_ns = slot->expires_ns, .origin = slot->origin, .tag = bpf_get_prandom_u32()};
	struct pc_ban *old;
	__u32 origin;
	long error;
	int attempt;

	for (attempt = 0; attempt < 2; attempt++) {
		if (slot->reserved == PC_LIST_OP_PUT) {
			error = bpf_map_update_elem(hosts, key, &fresh, BPF_NOEXIST);
			if (error == 0)
				return PC_INSTALL_NEW;
			if (error == -E2BIG)
				return PC_INSTALL_FULL;
			if (error != -EEXIST)
				return PC_INSTALL_FAILED;
		}
		old = bpf_map_lookup_elem(hosts, key);
		if (!old) {
			if (slot->reserved != PC_LIST_OP_PUT)
				return PC_INSTALL_KEPT;
			continue; /* taken out in between: written afresh */
		}
		origin = old->origin;
		if (origin >= PC_MAX_ORIGINS || !(args->owned[(origin >> 6) & 3] & (1ULL << (origin & 63))))
			return PC_INSTALL_KEPT;
		if (slot->reserved != PC_LIST_OP_PUT)
			return bpf_map_delete_elem(hosts, key) == 0 ? PC_INSTALL_LONGER : PC_INSTALL_KEPT;
		fresh.dropped = old->dropped;
		fresh.tag = old->tag; /* what CPUs hold in pc_pending for it stays its own */
		error = bpf_map_update_elem(hosts, key, &fresh, BPF_EXIST);
		if (error == 0)
			return PC_INSTALL_LONGER;
		if (error != -ENOENT)
			return PC_INSTALL_FAILED;
	}
	return PC_INSTALL_FAILED;
}

static long pc_list_one(__u32 index, void *context)
{
	struct pc_list_install_args *args = context;
	struct pc_install_slot *slot = bpf_map_lookup_elem(&pc_install, &index);
	struct pc_prefix6_key key6 = {.prefixlen = 128};
	struct pc_prefix4_key key4 = {.prefixlen = 32};
	void *hosts = NULL;
	__u32 generation;

	if (!slot)
		return 1;
	if (slot->family == 4) {
		generation = args->generation_v4 & 1;
		hosts = bpf_map_lookup_elem(&pc_lhosts_v4, &generation);
		__builtin_memcpy(key4.addr, slot->addr, 4);
		slot->outcome = hosts ? pc_list_host(hosts, &key4, slot, args) : PC_INSTALL_FAILED;
	} else if (slot->family == 6) {
		generation = args->generation_v6 & 1;
		hosts = bpf_map_lookup_elem(&pc_lhosts_v6, &generation);
		__builtin_memcpy(key6.addr, slot->addr, 16);
		slot->outcome = hosts ? pc_list_host(hosts, &key6, slot, args) : PC_INSTALL_FAILED;
	} else {
		slot->outcome = PC_INSTALL_FAILED;
	}
	return 0;
}

SEC("syscall")
int pc_install_list_hosts(struct pc_list_install_args *args)
{
	struct pc_list_install_args copy = *args; /* bpf_loop hands its callback a pointer to the stack */
	/* Loaded on its own, 32 bits (a BPF load zero-extends): taken from the copy, clang passed
	 * bpf_loop the register of a 64-bit load of count and generation_v4, and the kernel's inlined
	 * bpf_loop compares the whole register (any generation 1 ran nothing). */
	__u64 count = *(volatile __u32 *)&args->count;

	if (count > PC_INSTALL_SLOTS)
		return -1;
	bpf_loop(count, pc_list_one, &copy, 0);
	return 0;
}

/* One tick of the clock's timer (portcullis_clock.h). */
static int pc_clock_tick(void *map, __u32 *key, struct pc_clock *clock)
{
	pc_clock_advance(clock);
	return 0;
}

/* Starts the clock's timer, or points a running one (pins reused) at this load's tick. */
SEC("syscall")
int pc_clock_start(void *args)
{
	__u32 zero = 0;

	return pc_clock_arm(bpf_map_lookup_elem(&pc_clock, &zero), &pc_clock, pc_clock_tick);
}

char LICENSE[] SEC("license") = "GPL";
