/* SPDX-License-Identifier: Apache-2.0 */
/*
 * clab_xsk.h - the generator's fallback engine where the kernel refuses XDP live frames: an AF_XDP
 * socket that only sends, in copy mode (veth has no zero-copy), through libxdp's xsk API. The
 * caller writes each frame straight into a slot of the socket's UMEM; clab_xsk_flush hands the
 * committed frames to the kernel, which builds one skb per frame and transmits it past the qdisc
 * (__dev_direct_xmit). No XDP program is loaded: a socket that only sends needs none, on the
 * interface or on the veth's peer.
 *
 * One clab_xsk per sending thread, each on its own queue (thread k on queue k: the veth then
 * delivers to the peer's receive queue k). Not thread-safe.
 *
 *	struct clab_xsk *xsk;
 *	int err = clab_xsk_open(&xsk, ifindex, queue, 4096);
 *	while (running) {
 *		void *slot;
 *		for (n = 0; n < 256 && (slot = clab_xsk_slot(xsk)); n++)
 *			clab_xsk_commit(xsk, build_frame(slot));
 *		err = clab_xsk_flush(xsk);   (-EAGAIN etc.: counted, try again later)
 *	}
 *	clab_xsk_drain(xsk, 200);
 *	clab_xsk_counts(xsk, &counts);
 *	clab_xsk_close(xsk);
 */
#ifndef CLAB_XSK_H
#define CLAB_XSK_H

#include <stdint.h>

/* Bytes a slot holds: a frame may be at most this long. */
#define CLAB_XSK_FRAME_SIZE 2048

struct clab_xsk;

struct clab_xsk_counts {
	uint64_t committed;	 /* frames committed */
	uint64_t completed;	 /* frames the kernel is done with: sent, or dropped (below) */
	uint64_t dropped;	 /* of those, frames the device refused (e.g. the veth's peer is down) */
	uint64_t failed_flushes; /* flushes that returned a transient error (EAGAIN, EBUSY, ENOBUFS, ENETDOWN) */
	uint64_t invalid;	 /* descriptors the kernel rejected (XDP_STATISTICS tx_invalid_descs) */
};

/*
 * Opens a send-only AF_XDP socket on queue `queue` of interface `ifindex` (of the calling thread's
 * network namespace), with `frames` slots (a power of two, 64 to 65536). Returns 0 and sets *out,
 * or a negative errno: -EAFNOSUPPORT without AF_XDP in the kernel, -EINVAL for a queue the
 * interface does not have (a veth needs as many TX and RX queues as there are sending threads),
 * -EBUSY when another socket holds the queue (retried for up to a second: a socket just closed
 * holds it for a moment), -EPERM without CAP_NET_RAW. The UMEM (frames * 2 KiB) is locked memory:
 * without CAP_IPC_LOCK it must fit RLIMIT_MEMLOCK.
 */
int clab_xsk_open(struct clab_xsk **out, unsigned int ifindex, unsigned int queue, unsigned int frames);

/*
 * The next free slot, CLAB_XSK_FRAME_SIZE bytes, or NULL while every slot is in flight (flush,
 * then ask again). The same slot until it is committed.
 */
void *clab_xsk_slot(struct clab_xsk *xsk);

/* Queues the slot clab_xsk_slot returned, holding a frame of `length` bytes. */
void clab_xsk_commit(struct clab_xsk *xsk, uint32_t length);

/*
 * Hands the committed frames to the kernel and has it send them. Returns 0, or a negative errno:
 * -EAGAIN, -EBUSY (the device dropped frames: see dropped), -ENOBUFS and -ENETDOWN are transient
 * (counted in failed_flushes; frames not yet sent stay queued for the next flush), anything else
 * is not. A transient error can persist (a
 * veth whose peer is down refuses every frame): the caller keeps watching its deadline.
 */
int clab_xsk_flush(struct clab_xsk *xsk);

/* Flushes and waits up to `timeout_ms` for the kernel to complete every frame. Returns the frames
 * still in flight. */
unsigned int clab_xsk_drain(struct clab_xsk *xsk, int timeout_ms);

/* Fills `counts`. Returns 0, or a negative errno if the kernel's statistics could not be read. */
int clab_xsk_counts(struct clab_xsk *xsk, struct clab_xsk_counts *counts);

/* Closes the socket and frees its UMEM; frames still in flight are abandoned. */
void clab_xsk_close(struct clab_xsk *xsk);

#endif /* CLAB_XSK_H */
