/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * portcullis_parse.h - bounds-checked header cursors for XDP programs: Ethernet with up to
 * PC_MAX_VLAN_TAGS tags, then the fixed IPv4 or IPv6 header. Shared by the filter
 * (portcullis.bpf.c) and the perf reference program (perf/reference/xdp_reference.bpf.c), so the
 * reference measures exactly the parsing the filter does.
 */
#ifndef PORTCULLIS_PARSE_H
#define PORTCULLIS_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "portcullis_abi.h"

/* An 802.1Q/802.1ad tag as it follows the MAC addresses; not in the UAPI headers. */
struct pc_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* Read position inside a frame; every read checks against end first (the verifier insists). */
struct pc_cursor {
	void *pos;
	void *end;
};

enum pc_l3 {
	PC_L3_OTHER = 0, /* not IP (ARP, LLDP...): nothing to filter */
	PC_L3_IPV4 = 1,
	PC_L3_IPV6 = 2,
	PC_L3_MALFORMED = 3, /* truncated, or an IP header that cannot be right */
};

/*
 * Skips the Ethernet header and up to PC_MAX_VLAN_TAGS VLAN tags; leaves the cursor on the network
 * header. Returns the network protocol (network byte order) or -1 when the frame is too short or
 * carries more tags than we look through.
 */
static __always_inline int pc_parse_ethernet(struct pc_cursor *c)
{
	struct ethhdr *eth = c->pos;
	__be16 proto;
	int i;

	if ((void *)(eth + 1) > c->end)
		return -1;
	/* One 16-bit load: struct ethhdr is packed, and a member of it would be read byte by byte. */
	proto = ((__be16 *)eth)[6];
	c->pos = eth + 1;

#pragma unroll
	for (i = 0; i < PC_MAX_VLAN_TAGS; i++) {
		struct pc_vlan_hdr *vlan = c->pos;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > c->end)
			return -1;
		proto = vlan->encapsulated_proto;
		c->pos = vlan + 1;
	}
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD))
		return -1;
	return proto;
}

/*
 * Parses up to the source address. On PC_L3_IPV4 / PC_L3_IPV6 the fixed network header is within
 * the frame and *saddr points at the source address in it; nothing beyond the fixed header has
 * been checked yet (see pc_validate_ipv4 / pc_validate_ipv6).
 */
static __always_inline enum pc_l3 pc_parse_source(struct pc_cursor *c, void **saddr)
{
	int proto = pc_parse_ethernet(c);

	if (proto < 0)
		return PC_L3_MALFORMED;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = c->pos;

		if ((void *)(ip + 1) > c->end)
			return PC_L3_MALFORMED;
		*saddr = &ip->saddr;
		return PC_L3_IPV4;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = c->pos;

		if ((void *)(ip6 + 1) > c->end)
			return PC_L3_MALFORMED;
		*saddr = &ip6->saddr;
		return PC_L3_IPV6;
	}
	return PC_L3_OTHER;
}

/* Checks the rest of an IPv4 header whose fixed part the cursor points at. */
static __always_inline int pc_validate_ipv4(struct pc_cursor *c)
{
	struct iphdr *ip = c->pos;
	__u32 header_len;

	if ((void *)(ip + 1) > c->end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	header_len = ip->ihl * 4;
	if (c->pos + header_len > c->end)
		return -1;
	if (bpf_ntohs(ip->tot_len) < header_len)
		return -1;
	return 0;
}

static __always_inline int pc_is_ipv6_extension(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS || next == IPPROTO_MH ||
	       next == IPPROTO_AH || next == IPPROTO_FRAGMENT;
}

/*
 * Walks the IPv6 extension header chain (at most PC_MAX_IPV6_EXT_HEADERS) to the upper-layer
 * header. Returns the upper-layer protocol, or -1 when the chain is truncated or too long.
 */
static __always_inline int pc_validate_ipv6(struct pc_cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;
	void *pos;
	__u8 next;
	int i;

	if ((void *)(ip6 + 1) > c->end)
		return -1;
	if (ip6->version != 6)
		return -1;
	next = ip6->nexthdr;
	pos = ip6 + 1;

#pragma unroll
	for (i = 0; i < PC_MAX_IPV6_EXT_HEADERS; i++) {
		struct ipv6_opt_hdr *opt = pos;

		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
		case IPPROTO_MH:
			if ((void *)(opt + 1) > c->end)
				return -1;
			next = opt->nexthdr;
			pos += (opt->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(opt + 1) > c->end)
				return -1;
			next = opt->nexthdr;
			pos += (opt->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			if ((void *)(opt + 1) > c->end)
				return -1;
			next = opt->nexthdr;
			pos += 8;
			break;
		default:
			return next;
		}
		if (pos > c->end)
			return -1;
	}
	/* Exactly PC_MAX_IPV6_EXT_HEADERS headers is fine; one more is too many. */
	return pc_is_ipv6_extension(next) ? -1 : next;
}

#endif /* PORTCULLIS_PARSE_H */
