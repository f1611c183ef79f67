/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * portcullis_abi.h - the one ABI shared by the XDP program (bpf/portcullis.bpf.c) and user space
 * (Swift, through the CPortcullis module). Map names, key/value layouts, counter indices and the
 * byte order of every field live here and nowhere else; Swift reads these constants, never copies.
 *
 * Byte order: addresses are kept exactly as they appear on the wire (network byte order); every
 * other field is in host byte order.
 */
#ifndef PORTCULLIS_ABI_H
#define PORTCULLIS_ABI_H

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_timer */

/* Bumped whenever a map below changes meaning or layout; stored in the meta map of a pin directory
 * so that a daemon never reuses pinned maps written by another layout. */
#define PC_ABI_VERSION 4
/* Pins of this earlier layout are used as they are. It differs from PC_ABI_VERSION only in the
 * inner-map template of pc_lhosts_v4/v6: there the list layer's hosts hashes allocate per entry
 * (BPF_F_NO_PREALLOC), from 4 on they are preallocated (3.4x faster to fill: a full CrowdSec pull
 * of 100,000). Its writers (BanMaps) make inner maps of its kind; an earlier build refuses
 * pins of 4, whose template its inner maps do not match. */
#define PC_ABI_VERSION_ALLOCATING_HOSTS 3
/* "PCUL" as a little-endian u32: marks a meta map as ours. */
#define PC_ABI_MAGIC 0x4c554350

/* Names of the maps; they are also the file names under the pin directory. At most 15 bytes. */
#define PC_MAP_BANS_V4 "pc_bans_v4"
#define PC_MAP_BANS_V6 "pc_bans_v6"
#define PC_MAP_STATS "pc_stats"
#define PC_MAP_META "pc_meta"
#define PC_MAP_ORIGINS "pc_origins"
#define PC_MAP_PREFIX_V4 "pc_prefix_v4"
#define PC_MAP_PREFIX_V6 "pc_prefix_v6"
#define PC_MAP_CIDR_V4 "pc_cidr_v4"
#define PC_MAP_CIDR_V6 "pc_cidr_v6"
#define PC_MAP_ALLOW_V4 "pc_allow_v4"
#define PC_MAP_ALLOW_V6 "pc_allow_v6"
#define PC_MAP_LISTS_V4 "pc_lists_v4"
#define PC_MAP_LISTS_V6 "pc_lists_v6"
#define PC_MAP_CONFIG "pc_config"
#define PC_MAP_COVER "pc_cover"
#define PC_MAP_LIST_HOSTS_V4 "pc_lhosts_v4"
#define PC_MAP_LIST_HOSTS_V6 "pc_lhosts_v6"
#define PC_MAP_DROPS "pc_drops"
#define PC_MAP_CLOCK "pc_clock"

/* Name of the XDP program (its function name, as the kernel and libxdp report it). */
#define PC_PROG_NAME "pc_xdp_filter"
/* ELF section of the XDP program. */
#define PC_PROG_SECTION "xdp"

/* Default number of entries of each ban map; user space sets the real size before load. */
#define PC_DEFAULT_BAN_ENTRIES 1048576

/* Entries of each fixed-length prefix hash (all its lengths together), of each CIDR trie, of each
 * allowlist trie, and of each blocklist trie (all loaded lists of a family together). The tries
 * allocate per entry (BPF_F_NO_PREALLOC); the prefix hashes are preallocated like the ban maps, and
 * so are the blocklist hosts hashes (sized by their writer for what they hold). */
#define PC_PREFIX_ENTRIES 262144
#define PC_CIDR_ENTRIES 65536
#define PC_ALLOW_ENTRIES 16384
#define PC_LIST_ENTRIES 1048576

/* Up to this many 802.1Q / 802.1ad tags are skipped before the network header. */
#define PC_MAX_VLAN_TAGS 2
/* Up to this many IPv6 extension headers are walked; a longer chain is passed and counted as
 * malformed (no legitimate stack sends more). */
#define PC_MAX_IPV6_EXT_HEADERS 8

/*
 * Ban map keys. Offsets (bytes):
 *   pc_ipv4_key: 0 addr[4]
 *   pc_ipv6_key: 0 addr[16]
 * Both in network byte order, exactly the bytes of the packet's source address.
 */
struct pc_ipv4_key {
	__u8 addr[4];
};

struct pc_ipv6_key {
	__u8 addr[16];
};

/*
 * Ban map value (both maps). Offsets (bytes), host byte order:
 *   0  expires_ns  CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) time at which the ban ends; 0 = permanent.
 *                  A packet arriving at or after this time passes and counts as PC_STAT_EXPIRED,
 *                  so a ban never outlives its time even when no daemon deletes it. The program
 *                  reads the time from pc_clock (below): a ban ends at most PC_CLOCK_PERIOD_NS late.
 *   8  dropped     packets dropped because of this ban, except those a CPU still holds in
 *                  pc_pending (below): readers add those of the entry (same key and tag).
 *  16  origin      who made the ban, not read by the program: PC_ORIGIN_OPERATOR (0) for an
 *                  operator's ban or one of unknown origin, else the slot of pc_origins that names
 *                  it (a daemon's jail).
 *  20  tag         which writing of the entry this is: a value written with a count of its own
 *                  (a new ban, a count restarted, or one carried over with what pc_pending held)
 *                  gets a new random tag; one that only moves `dropped` on keeps it. Drops held in
 *                  pc_pending under another tag are not this value's.
 * The maps are BPF_MAP_TYPE_HASH, preallocated: a per-CPU hash would multiply the preallocated
 * memory by the number of CPUs (1,048,576 entries x 24 bytes x 128 CPUs = 3 GiB per map on a big
 * host).
 */
struct pc_ban {
	__u64 expires_ns;
	__u64 dropped;
	__u32 origin;
	__u32 tag;
};

/*
 * Drops not yet on their entry (pc_pending: BPF_MAP_TYPE_PERCPU_ARRAY, one struct pc_pending per
 * CPU, pinned). An atomic add on the entry's `dropped` per drop would bounce that cache line
 * between every core a flood of one source reaches. So each CPU remembers the entry it last
 * dropped for and counts further drops for it here, in its own memory; when it drops for another
 * entry it adds what it holds to the old entry's `dropped` (if that entry is still there with the
 * same tag, else the count is not that entry's any more), and adds its first drop for the new one
 * to `dropped` directly. An entry's drops are its `dropped` plus every CPU's count held here under
 * its kind, family, key and tag. Entries of the CIDR tries and the lists' network tries are not
 * counted here (a trie's lookup does not say which entry matched): their drops go to `dropped`.
 * Offsets (bytes), host order except the address:
 *   0  kind       PC_PENDING_* (0: none yet)
 *   1  family     4 or 6
 *   4  prefixlen  the entry's key as struct pc_prefix4_key/pc_prefix6_key: 32 or 128 for an
 *   8  addr       exact ban or a list's host, the prefix length of a prefix ban; then its address
 *                 (network order; 4 bytes then zeros for IPv4)
 *  24  tag        the entry's tag (struct pc_ban)
 *  32  count      drops of that entry on this CPU not yet in its `dropped`
 */
#define PC_MAP_PENDING "pc_pending"
enum pc_pending_kind {
	PC_PENDING_NONE = 0,
	PC_PENDING_BAN = 1,	  /* pc_bans_v4/v6, key: the address */
	PC_PENDING_PREFIX = 2,	  /* pc_prefix_v4/v6 */
	PC_PENDING_LIST_HOST = 3, /* the hosts' hash of the lists' generation in force */
};

struct pc_pending {
	__u8 kind;
	__u8 family;
	__u16 reserved;
	__u32 prefixlen;
	__u8 addr[16];
	__u32 tag;
	__u32 reserved2;
	__u64 count;
};

/*
 * The daemon's ban installer (pc_install_bans, a BPF_PROG_TYPE_SYSCALL program run with
 * BPF_PROG_RUN): one system call installs a batch of bans, each never shortening a ban already
 * there, where a batched update (bpf_map_update_batch takes no BPF_NOEXIST) would overwrite a
 * longer ban and one update per ban costs a system call each. User space writes the batch into
 * the slots of PC_MAP_INSTALL (an mmapable array, private to the process that loaded the
 * installer: not pinned) and passes the count in struct pc_install_args; the program writes each
 * slot's outcome. Slot offsets (bytes):
 *   0  addr        the address: 4 bytes (IPv4, then 12 unused) or 16 (IPv6), network order.
 *  16  expires_ns  the ban's end as in struct pc_ban (0: for good). A new ban gets a random tag;
 *                  one made longer keeps its count and tag.
 *  24  origin      as in struct pc_ban.
 *  28  family      4 or 6.
 *  29  outcome     PC_INSTALL_*, written by the program.
 */
#define PC_MAP_INSTALL "pc_install"
#define PC_INSTALL_PROG_NAME "pc_install_bans"
#define PC_INSTALL_SLOTS 4096

struct pc_install_slot {
	__u8 addr[16];
	__u64 expires_ns;
	__u32 origin;
	__u8 family;
	__u8 outcome;
	__u16 reserved;
};

/* The program's context: how many slots to install. */
struct pc_install_args {
	__u32 count;
	__u32 reserved;
};

/*
 * The list layer's in-place writer (pc_install_list_hosts, another BPF_PROG_TYPE_SYSCALL program
 * run the same way over the same slots): a delta's hosts written into the hosts hashes of the
 * generation in force, or taken out, in one system call per PC_INSTALL_SLOTS, where user space
 * would look each host up first (an entry of another origin stays; an entry of the writer's keeps
 * its drop count). A slot's origin is its entry's origin; its reserved field says what to do:
 * PC_LIST_OP_PUT or PC_LIST_OP_TAKE. The writer names the origins it owns (bit N of owned: slot N
 * of pc_origins) and each family's generation in force (what it read under the writers' lock).
 * Outcomes: PC_INSTALL_NEW (written where nothing was), PC_INSTALL_LONGER (an entry of the writer's
 * replaced, or taken out), PC_INSTALL_KEPT (another origin's entry, or nothing to take: left),
 * PC_INSTALL_FULL (the hash is full), PC_INSTALL_FAILED (no hash in force, a bad family).
 */
#define PC_INSTALL_LIST_PROG_NAME "pc_install_list_hosts"
#define PC_LIST_OP_PUT 0
#define PC_LIST_OP_TAKE 1

struct pc_list_install_args {
	__u32 count;
	__u32 generation_v4;
	__u32 generation_v6;
	__u32 reserved;
	__u64 owned[4];
};

enum pc_install_outcome {
	PC_INSTALL_NONE = 0,
	/* Written: the address had no ban. */
	PC_INSTALL_NEW = 1,
	/* Its ban ended earlier: replaced by this one, its drop count (and tag) kept. */
	PC_INSTALL_LONGER = 2,
	/* It has a ban ending at or after this one, or for good: left as it was. */
	PC_INSTALL_KEPT = 3,
	/* Not written: the map is full. */
	PC_INSTALL_FULL = 4,
	/* Not written: another error (a bad family, the key written and deleted by others meanwhile). */
	PC_INSTALL_FAILED = 5,
};

/*
 * Keys of the prefix hashes, the CIDR and allowlist tries and the blocklist tries: the layout of
 * struct bpf_lpm_trie_key. Offsets (bytes):
 *   pc_prefix4_key: 0 prefixlen (host order, 0...32)   4 addr[4]   (host bits zero)
 *   pc_prefix6_key: 0 prefixlen (host order, 0...128)  4 addr[16]  (host bits zero)
 * A prefix hash holds entries of the fixed lengths of PC_CONFIG_LENGTHS_* only (one lookup per
 * length, longest first); a trie holds any length, and the most specific entry covering a source
 * decides for that trie. Values: struct pc_ban, as the exact maps (its end, drops and origin).
 */
struct pc_prefix4_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct pc_prefix6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/*
 * Blocklists: every loaded list of a family in two inner maps, its hosts (/32, /128) in a hash
 * (pc_lhosts_v4/v6: BPF_MAP_TYPE_ARRAY_OF_MAPS of hash maps, keys and values as above) and its
 * networks in an LPM trie (pc_lists_v4/v6: of tries). Each outer map has two slots, the two
 * generations; PC_CONFIG_LISTS_GEN_* names the one in force. User space builds both maps of the
 * other generation aside, puts them in its slots, and flips the generation with one element
 * write: a packet reads the generation once and meets one whole version of the lists.
 */
#define PC_LISTS_GENERATIONS 2

/*
 * Configuration (BPF_MAP_TYPE_ARRAY of PC_CONFIG_COUNT __u32 values), written by user space one
 * element at a time (no element is read, changed and written back by two writers):
 *   PC_CONFIG_LENGTHS_V4/V6  the fixed prefix lengths, one per byte from the lowest, longest first,
 *                            0 ends the list (at most PC_MAX_PREFIX_LENGTHS): written when the maps
 *                            are made, rewritten only while that family's prefix hash is empty.
 *   PC_CONFIG_USED_*         1 once its structure has held an entry: the program skips a structure
 *                            never used (no lookup at all). Set before the first insert and never
 *                            cleared while the maps live, so an entry can never be skipped.
 */
#define PC_MAX_PREFIX_LENGTHS 4
enum pc_config_index {
	PC_CONFIG_LENGTHS_V4 = 0,
	PC_CONFIG_LENGTHS_V6 = 1,
	PC_CONFIG_USED_PREFIX_V4 = 2,
	PC_CONFIG_USED_PREFIX_V6 = 3,
	PC_CONFIG_USED_CIDR_V4 = 4,
	PC_CONFIG_USED_CIDR_V6 = 5,
	PC_CONFIG_USED_ALLOW_V4 = 6,
	PC_CONFIG_USED_ALLOW_V6 = 7,
	PC_CONFIG_USED_LISTS_V4 = 8,
	PC_CONFIG_USED_LISTS_V6 = 9,
	PC_CONFIG_COVER_ALL_V6 = 10,
	PC_CONFIG_LISTS_GEN_V4 = 11,
	PC_CONFIG_LISTS_GEN_V6 = 12,
	PC_CONFIG_COUNT = 13,
};
/*
 * Coverage (pc_cover: BPF_MAP_TYPE_ARRAY of PC_COVER_WORDS __u64 words, BPF_F_MMAPABLE): for each
 * slot of the address space, four bits saying which kinds of network entry lie in it
 * (PC_COVER_PREFIX, _CIDR, _LIST_NETS, _LIST_HOSTS). The slot of an IPv4 source is its /24 (its
 * first 24 bits); of an IPv6 source, PC_COVER_V6_BASE plus a hash of its /64: with a, b its first
 * two 32-bit words in host order, ((a ^ (b * PC_COVER_HASH_A)) * PC_COVER_HASH_B) >> 10 (22 bits).
 * Slot n's bits are bits 4 * (n % 16) ... + 3 of word n / 16, kind k at + k. A source asks only the
 * kinds its slot has. User space sets the bits an entry covers (atomic ORs through its mapping)
 * before inserting the entry and never clears one while the maps live. An IPv6 entry shorter than
 * /48 (more than 65,536 /64s) sets its kind's bit in PC_CONFIG_COVER_ALL_V6 instead: every IPv6
 * source then has it.
 */
#define PC_COVER_PREFIX 1u
#define PC_COVER_CIDR 2u
#define PC_COVER_LIST_NETS 4u
#define PC_COVER_LIST_HOSTS 8u
#define PC_COVER_V6_BASE (1u << 24)
#define PC_COVER_V6_BITS 22
#define PC_COVER_WORDS 1310720
#define PC_COVER_HASH_A 0x9E3779B1u
#define PC_COVER_HASH_B 0x85EBCA6Bu

/* The lengths when the maps are made: IPv4 /24; IPv6 /64, /56, /48. */
#define PC_DEFAULT_LENGTHS_V4 24u
#define PC_DEFAULT_LENGTHS_V6 0x303840u /* 64, 56, 48 */

/* Origin of a ban made by an operator (portcullis ban), or of unknown origin. */
#define PC_ORIGIN_OPERATOR 0
/* Slots of pc_origins: origins 1 ... PC_MAX_ORIGINS - 1 can be named. */
#define PC_MAX_ORIGINS 256
/* Bytes of an origin's name, its terminating NUL included. */
#define PC_ORIGIN_NAME_SIZE 48

/*
 * Origin names (BPF_MAP_TYPE_ARRAY, PC_MAX_ORIGINS entries, key: the origin as __u32), written by
 * user space (the daemon names its jails here) and never read by the program. Offsets (bytes):
 *   0 name  NUL-terminated UTF-8; empty: the slot is free.
 * A slot keeps its name once given, so that the bans that carry it stay named across restarts.
 */
struct pc_origin {
	char name[PC_ORIGIN_NAME_SIZE];
};

/* Indices into the per-CPU stats array: every frame the program sees is counted in exactly one of
 * them or in pc_drops. */
enum pc_stat_index {
	PC_STAT_DROPPED = 0,   /* counted by programs older than pc_drops only; user space adds the two */
	PC_STAT_PASSED = 1,    /* not banned, or not IP at all: XDP_PASS */
	PC_STAT_EXPIRED = 2,   /* source in a ban map but the ban has expired: XDP_PASS */
	PC_STAT_MALFORMED = 3, /* truncated or invalid headers: XDP_PASS, the stack decides */
	PC_STAT_ALLOWED = 4,   /* source in the allowlist: XDP_PASS, whatever bans cover it */
	PC_STAT_COUNT = 5,
};

/*
 * Stats value (per CPU, BPF_MAP_TYPE_PERCPU_ARRAY of PC_STAT_COUNT entries). Offsets (bytes):
 *   0 packets
 *   8 bytes    frame length as the program sees it (from the Ethernet header on)
 */
struct pc_stat {
	__u64 packets;
	__u64 bytes;
};

/*
 * Drops by origin and address family (pc_drops: BPF_MAP_TYPE_PERCPU_ARRAY of PC_DROP_SLOTS
 * struct pc_stat). A dropped frame counts here, not in pc_stats, at slot
 *   origin * PC_DROP_FAMILIES + family
 * where origin is its ban's (struct pc_ban), PC_ORIGIN_OPERATOR for one at or past PC_MAX_ORIGINS,
 * and family PC_DROP_FAMILY_IPV4 or _IPV6: the drop path reads one per-CPU slot, as before, only
 * another one. User space names a slot by pc_origins and sums it over CPUs.
 *
 * The map came after ABI 3's others without changing them, so PC_ABI_VERSION stays 3: a load beside
 * pins of ABI 3 that lack it creates and pins it (libbpf pins a missing LIBBPF_PIN_BY_NAME map), the
 * bans stay, and readers take the drops of a program loaded before it from PC_STAT_DROPPED.
 */
#define PC_DROP_FAMILY_IPV4 0
#define PC_DROP_FAMILY_IPV6 1
#define PC_DROP_FAMILIES 2
#define PC_DROP_SLOTS 512
_Static_assert(PC_DROP_SLOTS == PC_MAX_ORIGINS * PC_DROP_FAMILIES, "a slot per origin and family");

/*
 * The program's clock (pc_clock: BPF_MAP_TYPE_ARRAY, one struct pc_clock, pinned). Reading
 * CLOCK_BOOTTIME with bpf_ktime_get_boot_ns() costs about 30 ns, as much as the rest of a drop; so a
 * kernel timer (bpf_timer, started by PC_CLOCK_PROG_NAME, a BPF_PROG_TYPE_SYSCALL program user space
 * runs once after each load) writes the time into the map every PC_CLOCK_PERIOD_NS, and the program
 * compares a ban's end with that, at the cost of one array read and bpf_jiffies64() (inlined: a
 * load). The timer lives as long as the map is pinned, with or without a daemon; should it stop,
 * the time it wrote goes stale, and after PC_CLOCK_GRACE_TICKS periods (measured in jiffies, whose
 * rate the timer learns from its own ticks) the program reads the clock itself again. A time read
 * from the map is never ahead of CLOCK_BOOTTIME: a ban ends at most one period late, never early.
 * Offsets (bytes), host byte order, written only by the timer (user space never writes the map: a
 * write would free the timer):
 *   0  boot_ns       bpf_ktime_get_boot_ns() at the last tick
 *   8  fresh_until   bpf_jiffies64() up to which boot_ns stands for the time (0: never)
 *  16  tick_jiffies  bpf_jiffies64() at the last tick
 *  24  timer         the kernel's
 */
#define PC_CLOCK_PROG_NAME "pc_clock_start"
#define PC_CLOCK_PERIOD_NS 100000000ull
#define PC_CLOCK_GRACE_TICKS 3

struct pc_clock {
	__u64 boot_ns;
	__u64 fresh_until;
	__u64 tick_jiffies;
	struct bpf_timer timer;
};

/*
 * Meta value (BPF_MAP_TYPE_ARRAY, one entry), written by user space when it creates the maps and
 * checked whenever it reuses pinned ones. Offsets (bytes):
 *   0 magic        PC_ABI_MAGIC
 *   4 abi_version  PC_ABI_VERSION
 */
struct pc_meta {
	__u32 magic;
	__u32 abi_version;
};

#endif /* PORTCULLIS_ABI_H */
