/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * flood_abi.h - the one layout shared by the testbed's traffic generator (flood.bpf.c) and
 * `portcullis-testbed flood` (Lab/Sources/portcullis-testbed), which includes it through the CLab
 * target and writes these structs as they are: Swift repeats no offset. LabTests checks Swift's
 * view of the layout against the compiled object's BTF.
 *
 * All fields are in host byte order (the program and user space run on one machine), except the
 * addresses and frames, which are network order as they go on the wire.
 *
 *   struct flood_config (ARRAY, 1 element; written by user space before a run)
 *     0 u64 rate             frames per second per CPU over all streams; 0: as fast as possible
 *     8 u64 start_ns         bpf_ktime_get_ns() window in which frames are sent
 *    16 u64 end_ns
 *    24 u64 weight[4]        share of the frames per stream
 *    56 u32 clients[4]       client i of a stream is base + i in the last 32 address bits
 *    72 u8  base[4][16]      first client of each stream; IPv4 in the first 4 bytes
 *   136 u8  frame_v4[80]     templates built from base[FLOOD_ATTACK_V*], payload 'B'
 *   216 u8  frame_v6[80]
 *
 *   struct flood_counters (PERCPU_ARRAY, 1 element; summed over CPUs by user space)
 *     0 u64 frames           sent, all streams
 *     8 u64 sent[4]
 *    40 u64 idle             runs that sent nothing (not due yet, or the window is over)
 *    48 u64 next[4]          next client per stream (user space sets the starting client)
 *    80 u64 due              frames due at the last clock reading
 */
#ifndef FLOOD_ABI_H
#define FLOOD_ABI_H

#include <linux/types.h>

/* The streams, in the order of every per-stream array. */
enum flood_stream { FLOOD_ATTACK_V4, FLOOD_ATTACK_V6, FLOOD_VALID_V4, FLOOD_VALID_V6, FLOOD_STREAMS };

/* Both families' frames are 80 bytes (IPv4 carries a longer payload), so frames from the page
 * pool never change length. */
#define FLOOD_FRAME_LEN 80

#define FLOOD_MAP_CONFIG "flood_config"
#define FLOOD_MAP_COUNTERS "flood_counters"
#define FLOOD_PROG_NAME "pc_flood"

struct flood_config {
	__u64 rate;
	__u64 start_ns;
	__u64 end_ns;
	__u64 weight[FLOOD_STREAMS];
	__u32 clients[FLOOD_STREAMS];
	__u8 base[FLOOD_STREAMS][16];
	__u8 frame_v4[FLOOD_FRAME_LEN];
	__u8 frame_v6[FLOOD_FRAME_LEN];
};

struct flood_counters {
	__u64 frames;
	__u64 sent[FLOOD_STREAMS];
	__u64 idle;
	__u64 next[FLOOD_STREAMS];
	__u64 due;
};

#endif /* FLOOD_ABI_H */
