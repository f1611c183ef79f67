/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PerfReference.h - C reference implementations the perf harness measures Swift code against.
 */
#ifndef PERF_REFERENCE_H
#define PERF_REFERENCE_H

#include <stddef.h>
#include <stdint.h>

#define PC_REFERENCE_MAX_READERS 8

struct pc_reference_ring_result {
	double seconds;				     /* writer start to last reader done */
	uint64_t received[PC_REFERENCE_MAX_READERS]; /* lines each reader received */
	uint64_t duplicates;			     /* over all readers */
	uint64_t lost;				     /* over all readers */
};

/*
 * The shared-memory ring of LogTransport (ShmLayout: head, per-reader cursors on their own cache
 * lines, slots of [u64 sequence][u32 length][pad][bytes], sequence-stamped writes, batched head
 * publication, a futex to wake sleeping readers) written in plain C, with one writer thread and
 * `readers` reader threads in this process. The writer sends `lines` lines: 16 hex digits of the
 * line number followed by `suffix`; readers copy each line out and check the number.
 *
 * Writer runs on `writer_cpu`, readers on `reader_cpu` (-1: no pinning). Returns 0, or -1 with
 * errno on failure to allocate or start threads.
 */
int pc_reference_ring_run(uint64_t lines, uint32_t slots, uint32_t slot_size, int readers, int batch,
			  const char *suffix, size_t suffix_length, int writer_cpu, int reader_cpu,
			  struct pc_reference_ring_result *result);

/*
 * The built-in offence line scanner of BanEngine (LineScanner + AddressParser) in C: the same
 * checks in the same order. Scans `count` lines (bytes back to back, line i ends at ends[i]) and
 * returns how many were offences; the XOR of their keys goes to *checksum (so nothing is elided).
 */
uint64_t pc_reference_scan(const uint8_t *bytes, const size_t *ends, size_t count, size_t max_line_length,
			   uint64_t *checksum);

/*
 * The offence table of BanEngine (OffenceTable) in C: 32-byte bins, CAS-claimed, one CAS-updated
 * count word. `pc_reference_table_record` returns 1 on a threshold crossing, 0 otherwise, -1 when
 * full.
 */
struct pc_reference_table;
struct pc_reference_table *pc_reference_table_create(uint64_t bins, uint32_t threshold);
void pc_reference_table_destroy(struct pc_reference_table *table);
int pc_reference_table_record(struct pc_reference_table *table, uint64_t key_high, uint64_t key_low, uint32_t now);

#endif /* PERF_REFERENCE_H */
