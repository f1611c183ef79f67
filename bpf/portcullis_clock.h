/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * portcullis_clock.h - the time a kernel timer keeps in a map (struct pc_clock, see
 * portcullis_abi.h): the filter's clock (bpf/portcullis.bpf.c), and the perf suite's measurement of
 * it among the other clocks (perf/reference/xdp_clocks.bpf.c).
 */
#ifndef PORTCULLIS_CLOCK_H
#define PORTCULLIS_CLOCK_H

#include "portcullis_parse.h"
#include <linux/errno.h>
#include <linux/time.h> /* CLOCK_BOOTTIME */

/* CLOCK_BOOTTIME now or a little before (at most PC_CLOCK_PERIOD_NS): `clock`'s time while its
 * timer ticks, else the clock itself. */
static __always_inline __u64 pc_clock_now(const struct pc_clock *clock)
{
	if (clock && bpf_jiffies64() <= clock->fresh_until)
		return clock->boot_ns;
	return bpf_ktime_get_boot_ns();
}

/* One tick of the timer: the time, how long (in jiffies) it stands, and the next tick. */
static __always_inline void pc_clock_advance(struct pc_clock *clock)
{
	__u64 jiffies = bpf_jiffies64();
	/* Jiffies per period, as the last one took; the first tick has no last one (stands not at all). */
	__u64 period = clock->tick_jiffies ? jiffies - clock->tick_jiffies : 0;

	clock->boot_ns = bpf_ktime_get_boot_ns();
	clock->tick_jiffies = jiffies;
	clock->fresh_until = jiffies + PC_CLOCK_GRACE_TICKS * period;
	bpf_timer_start(&clock->timer, PC_CLOCK_PERIOD_NS, 0);
}

/* Starts the timer of `clock` (the value of `map`) ticking `tick` at once, or points a running
 * one (pins reused) at `tick`. Returns 0 or a negative errno. */
static __always_inline long pc_clock_arm(struct pc_clock *clock, void *map,
					 int (*tick)(void *, __u32 *, struct pc_clock *))
{
	long error;

	if (!clock)
		return -ENOENT;
	error = bpf_timer_init(&clock->timer, map, CLOCK_BOOTTIME);
	if (error && error != -EBUSY)
		return error;
	error = bpf_timer_set_callback(&clock->timer, tick);
	if (error)
		return error;
	return bpf_timer_start(&clock->timer, 0, 0);
}

#endif /* PORTCULLIS_CLOCK_H */
