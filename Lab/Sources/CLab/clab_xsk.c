// SPDX-License-Identifier: Apache-2.0
/* clab_xsk.c - a send-only AF_XDP socket in copy mode for the traffic generator's fallback engine
 * (clab_xsk.h): libxdp's xsk rings, no XDP program. */
#define _GNU_SOURCE
#include "clab_xsk.h"

#include <errno.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <xdp/xsk.h>

#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9 /* Linux 6.17 */
#endif
/* Frames one sendto sends where the kernel has no XDP_MAX_TX_SKB_BUDGET (its TX_BATCH_SIZE). */
#define OLD_KERNEL_BUDGET 32

struct clab_xsk {
	struct xsk_ring_prod tx;
	struct xsk_ring_cons comp;
	struct xsk_ring_prod fill; /* unused: the kernel wants one per UMEM */
	struct xsk_umem *umem;
	struct xsk_socket *socket;
	void *area;
	size_t area_size;
	uint64_t *free; /* UMEM offsets of the slots not in flight */
	uint32_t nfree;
	uint32_t frames;
	uint32_t queued;   /* committed, not yet submitted to the TX ring */
	uint32_t held_idx; /* TX ring index of the slot handed out */
	bool held;
	uint64_t committed;
	uint64_t completed;
	uint64_t failed_flushes;
	uint64_t dropped;
};

void clab_xsk_close(struct clab_xsk *xsk)
{
	if (!xsk)
		return;
	if (xsk->socket)
		xsk_socket__delete(xsk->socket);
	if (xsk->umem)
		xsk_umem__delete(xsk->umem);
	if (xsk->area)
		munmap(xsk->area, xsk->area_size);
	free(xsk->free);
	free(xsk);
}

static int open_once(struct clab_xsk **out, unsigned int ifindex, unsigned int queue, unsigned int frames)
{
	struct xsk_umem_config umem_config = {
		.fill_size = 64,
		.comp_size = frames,
		.frame_size = CLAB_XSK_FRAME_SIZE,
	};
	/* Copy mode, and no program: a socket that only sends needs none. */
	struct xsk_socket_config config = {
		.tx_size = frames,
		.libxdp_flags = XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
		.xdp_flags = XDP_FLAGS_SKB_MODE,
		.bind_flags = XDP_COPY,
	};
	char name[IF_NAMESIZE];
	struct clab_xsk *xsk;
	unsigned int budget = frames;
	void *area;
	int err;

	if (frames < 64 || frames > 65536 || (frames & (frames - 1)))
		return -EINVAL;
	if (!if_indextoname(ifindex, name))
		return -errno;
	xsk = calloc(1, sizeof(*xsk));
	if (!xsk)
		return -ENOMEM;
	xsk->frames = frames;
	xsk->area_size = (size_t)frames * CLAB_XSK_FRAME_SIZE;
	xsk->free = calloc(frames, sizeof(*xsk->free));
	area = mmap(NULL, xsk->area_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area != MAP_FAILED)
		xsk->area = area;
	if (!xsk->free || !xsk->area) {
		err = -ENOMEM;
		goto fail;
	}
	err = xsk_umem__create(&xsk->umem, xsk->area, xsk->area_size, &xsk->fill, &xsk->comp, &umem_config);
	if (err)
		goto fail;
	err = xsk_socket__create(&xsk->socket, name, queue, xsk->umem, NULL, &xsk->tx, &config);
	if (err)
		goto fail;
	/* From Linux 6.17 one sendto may send the whole ring; older kernels refuse the option. */
	setsockopt(xsk_socket__fd(xsk->socket), SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof(budget));
	for (uint32_t i = 0; i < frames; i++)
		xsk->free[xsk->nfree++] = (uint64_t)i * CLAB_XSK_FRAME_SIZE;
	*out = xsk;
	return 0;
fail:
	clab_xsk_close(xsk);
	return err;
}

int clab_xsk_open(struct clab_xsk **out, unsigned int ifindex, unsigned int queue, unsigned int frames)
{
	const struct timespec pause = {.tv_nsec = 10000000};
	int err, tries;

	/* The kernel releases a closed socket's hold on its queue in a work item: a socket opened on
	 * the queue just after is refused with EBUSY for a moment. */
	for (tries = 0; (err = open_once(out, ifindex, queue, frames)) == -EBUSY && tries < 100; tries++)
		nanosleep(&pause, NULL);
	return err;
}

/* Takes back the slots the kernel has completed. */
static void reap(struct clab_xsk *xsk)
{
	uint32_t idx, n = xsk_ring_cons__peek(&xsk->comp, xsk->frames, &idx);

	for (uint32_t i = 0; i < n; i++)
		xsk->free[xsk->nfree++] = *xsk_ring_cons__comp_addr(&xsk->comp, idx + i);
	xsk_ring_cons__release(&xsk->comp, n);
	xsk->completed += n;
}

void *clab_xsk_slot(struct clab_xsk *xsk)
{
	struct xdp_desc *desc;
	uint32_t idx;

	if (xsk->held)
		return xsk_umem__get_data(xsk->area, xsk_ring_prod__tx_desc(&xsk->tx, xsk->held_idx)->addr);
	if (!xsk->nfree)
		reap(xsk);
	if (!xsk->nfree || xsk_ring_prod__reserve(&xsk->tx, 1, &idx) != 1)
		return NULL;
	desc = xsk_ring_prod__tx_desc(&xsk->tx, idx);
	desc->addr = xsk->free[--xsk->nfree];
	desc->options = 0;
	xsk->held_idx = idx;
	xsk->held = true;
	return xsk_umem__get_data(xsk->area, desc->addr);
}

void clab_xsk_commit(struct clab_xsk *xsk, uint32_t length)
{
	if (!xsk->held)
		return;
	xsk_ring_prod__tx_desc(&xsk->tx, xsk->held_idx)->len = length;
	xsk->held = false;
	xsk->queued++;
	xsk->committed++;
}

/* Frames submitted to the TX ring that the kernel has not taken yet. */
static uint32_t unsent(struct clab_xsk *xsk)
{
	return xsk->tx.size - xsk_prod_nb_free(&xsk->tx, xsk->tx.size) - xsk->held - xsk->queued;
}

int clab_xsk_flush(struct clab_xsk *xsk)
{
	int fd = xsk_socket__fd(xsk->socket), err = 0;
	uint32_t calls;

	xsk_ring_prod__submit(&xsk->tx, xsk->queued);
	xsk->queued = 0;
	/* In copy mode the kernel sends in sendto itself, at most its budget per call. */
	for (calls = 0; unsent(xsk) && calls <= xsk->frames / OLD_KERNEL_BUDGET; calls++) {
		if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
			continue;
		err = -errno;
		/* EBUSY: the device dropped that call's last frame, which still completes; go on. */
		if (err == -EBUSY) {
			xsk->dropped++;
			continue;
		}
		break;
	}
	if (err == -EAGAIN || err == -EBUSY || err == -ENOBUFS || err == -ENETDOWN)
		xsk->failed_flushes++;
	return err;
}

unsigned int clab_xsk_drain(struct clab_xsk *xsk, int timeout_ms)
{
	const struct timespec pause = {.tv_nsec = 1000000};
	uint32_t in_flight;

	for (int waited = 0;; waited++) {
		clab_xsk_flush(xsk);
		reap(xsk);
		in_flight = xsk->frames - xsk->nfree - xsk->held;
		if (!in_flight || waited >= timeout_ms)
			return in_flight;
		nanosleep(&pause, NULL);
	}
}

int clab_xsk_counts(struct clab_xsk *xsk, struct clab_xsk_counts *counts)
{
	struct xdp_statistics stats = {0};
	socklen_t length = sizeof(stats);

	reap(xsk);
	counts->committed = xsk->committed;
	counts->completed = xsk->completed;
	counts->failed_flushes = xsk->failed_flushes;
	counts->dropped = xsk->dropped;
	counts->invalid = 0;
	if (getsockopt(xsk_socket__fd(xsk->socket), SOL_XDP, XDP_STATISTICS, &stats, &length) < 0)
		return -errno;
	counts->invalid = stats.tx_invalid_descs;
	return 0;
}
