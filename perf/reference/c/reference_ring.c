// SPDX-License-Identifier: Apache-2.0
/*
 * reference_ring.c - LogTransport's shared-memory ring in C (see PerfReference.h), the reference
 * for the `transports` perf suite. Same layout and protocol as Sources/LogTransport/Shm*.swift.
 */
#define _GNU_SOURCE
#include "PerfReference.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CACHE_LINE 64
#define SLOT_HEADER 16
/* The capacities of the LineBatch the Swift benchmark reader uses. */
#define BATCH_LINES 8192
#define BATCH_BYTES (1 << 20)

struct ring {
	uint8_t *base; /* head line, then cursors, then slots */
	uint64_t slots;
	uint64_t mask;
	uint32_t slot_size;
	int readers;
	uint32_t *wake_sequence;
	uint32_t *sleepers;
};

struct shared {
	struct ring ring;
	int go; /* set once every thread runs: the clock starts then, as the Swift rounds' does */
	uint64_t lines;
	int batch;
	const char *suffix;
	size_t suffix_length;
	int writer_cpu;
	int reader_cpu;
	struct pc_reference_ring_result *result;
	pthread_mutex_t lock;
};

struct reader_arguments {
	struct shared *shared;
	int index;
};

static inline uint64_t *head_word(struct ring *ring)
{
	return (uint64_t *)ring->base;
}
static inline uint64_t *tail_word(struct ring *ring, int reader)
{
	return (uint64_t *)(ring->base + CACHE_LINE + reader * CACHE_LINE);
}
static inline uint8_t *slot_at(struct ring *ring, uint64_t index)
{
	return ring->base + CACHE_LINE + ring->readers * CACHE_LINE + (index & ring->mask) * ring->slot_size;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static const char hex_digits[] = "0123456789abcdef";

static void wake(struct ring *ring)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(ring->sleepers, __ATOMIC_SEQ_CST) != 0) {
		__atomic_fetch_add(ring->wake_sequence, 1, __ATOMIC_SEQ_CST);
		syscall(SYS_futex, ring->wake_sequence, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
	}
}

static uint64_t minimum_tail(struct ring *ring, uint64_t head)
{
	uint64_t minimum = head;

	for (int r = 0; r < ring->readers; r++) {
		uint64_t tail = __atomic_load_n(tail_word(ring, r), __ATOMIC_ACQUIRE);
		if (head - tail > head - minimum)
			minimum = tail;
	}
	return minimum;
}

static void *writer_main(void *argument)
{
	struct shared *shared = argument;
	struct ring *ring = &shared->ring;
	uint64_t head = 0, cached_minimum = 0;
	size_t length = 16 + shared->suffix_length;
	/* Lines are staged in a batch and then copied into slots, as LogTransport's publish(batch) does. */
	uint8_t *staging = malloc((size_t)shared->batch * length);

	pin(shared->writer_cpu);
	while (!__atomic_load_n(&shared->go, __ATOMIC_ACQUIRE))
		sched_yield();
	for (uint64_t line = 0; line < shared->lines;) {
		int count = 0;

		for (; count < shared->batch && line < shared->lines; count++, line++) {
			uint8_t *text = staging + (size_t)count * length;
			for (int digit = 0; digit < 16; digit++)
				text[digit] = hex_digits[(line >> (60 - 4 * digit)) & 0xf];
			memcpy(text + 16, shared->suffix, shared->suffix_length);
		}
		for (int index = 0; index < count; index++) {
			uint8_t *slot;
			uint64_t *sequence;

			if (head - cached_minimum >= ring->slots) {
				__atomic_store_n(head_word(ring), head, __ATOMIC_RELEASE);
				wake(ring);
				for (int spins = 0;; spins++) {
					cached_minimum = minimum_tail(ring, head);
					if (head - cached_minimum < ring->slots)
						break;
					if (spins < 64)
						__builtin_ia32_pause();
					else if (spins < 128)
						sched_yield();
					else {
						struct timespec pause = {0, 50000};
						nanosleep(&pause, NULL);
					}
				}
			}
			slot = slot_at(ring, head);
			sequence = (uint64_t *)slot;
			__atomic_store_n(sequence, 0, __ATOMIC_RELAXED);
			__atomic_thread_fence(__ATOMIC_RELEASE);
			*(uint32_t *)(slot + 8) = (uint32_t)length;
			memcpy(slot + SLOT_HEADER, staging + (size_t)index * length, length);
			__atomic_store_n(sequence, head + 1, __ATOMIC_RELEASE);
			head++;
		}
		__atomic_store_n(head_word(ring), head, __ATOMIC_RELEASE);
		wake(ring);
	}
	free(staging);
	return NULL;
}

static uint64_t parse_hex(const uint8_t *text)
{
	uint64_t value = 0;

	for (int digit = 0; digit < 16; digit++) {
		uint8_t c = text[digit];
		value = value << 4 | (uint64_t)(c <= '9' ? c - '0' : c - 'a' + 10);
	}
	return value;
}

static void *reader_main(void *argument)
{
	struct reader_arguments *arguments = argument;
	struct shared *shared = arguments->shared;
	struct ring *ring = &shared->ring;
	uint64_t *tail_pointer = tail_word(ring, arguments->index);
	uint64_t tail = 0, expected = 0, received = 0, duplicates = 0, lost = 0;
	uint8_t *copy = malloc(BATCH_BYTES);
	size_t *ends = malloc(BATCH_LINES * sizeof(size_t));

	pin(shared->reader_cpu);
	while (expected < shared->lines) {
		uint64_t head = __atomic_load_n(head_word(ring), __ATOMIC_ACQUIRE);

		if (head == tail) {
			uint32_t sequence = __atomic_load_n(ring->wake_sequence, __ATOMIC_ACQUIRE);
			__atomic_fetch_add(ring->sleepers, 1, __ATOMIC_SEQ_CST);
			head = __atomic_load_n(head_word(ring), __ATOMIC_ACQUIRE);
			if (head == tail) {
				struct timespec timeout = {0, 50000000};
				syscall(SYS_futex, ring->wake_sequence, FUTEX_WAIT, sequence, &timeout, NULL, 0);
			}
			__atomic_fetch_sub(ring->sleepers, 1, __ATOMIC_SEQ_CST);
			continue;
		}
		/* Copy out a batch (as ShmReader fills a LineBatch), release the slots, then check it. */
		size_t used = 0;
		int count = 0;
		while (tail != head && count < BATCH_LINES && used + ring->slot_size <= BATCH_BYTES) {
			uint8_t *slot = slot_at(ring, tail);
			uint32_t length;

			if (__atomic_load_n((uint64_t *)slot, __ATOMIC_ACQUIRE) != tail + 1)
				break;
			length = *(uint32_t *)(slot + 8);
			memcpy(copy + used, slot + SLOT_HEADER, length);
			ends[count++] = used + length;
			used += length;
			tail++;
		}
		__atomic_store_n(tail_pointer, tail, __ATOMIC_RELEASE);
		for (int index = 0, start = 0; index < count; start = (int)ends[index], index++) {
			uint64_t number = parse_hex(copy + start);
			if (number < expected)
				duplicates++;
			else {
				lost += number - expected;
				expected = number + 1;
			}
			received++;
		}
	}
	free(copy);
	free(ends);
	pthread_mutex_lock(&shared->lock);
	shared->result->received[arguments->index] = received;
	shared->result->duplicates += duplicates;
	shared->result->lost += lost;
	pthread_mutex_unlock(&shared->lock);
	return NULL;
}

int pc_reference_ring_run(uint64_t lines, uint32_t slots, uint32_t slot_size, int readers, int batch,
			  const char *suffix, size_t suffix_length, int writer_cpu, int reader_cpu,
			  struct pc_reference_ring_result *result)
{
	struct shared shared = {.lines = lines,
				.batch = batch,
				.suffix = suffix,
				.suffix_length = suffix_length,
				.writer_cpu = writer_cpu,
				.reader_cpu = reader_cpu,
				.result = result};
	struct reader_arguments arguments[PC_REFERENCE_MAX_READERS];
	pthread_t writer, reader_threads[PC_REFERENCE_MAX_READERS];
	size_t size = CACHE_LINE * (2 + (size_t)readers) + (size_t)slots * slot_size;
	uint8_t *memory;
	struct timespec start, end;

	if (readers < 1 || readers > PC_REFERENCE_MAX_READERS || (slots & (slots - 1)) != 0 ||
	    16 + suffix_length > slot_size - SLOT_HEADER) {
		errno = EINVAL;
		return -1;
	}
	memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (memory == MAP_FAILED)
		return -1;
	memset(result, 0, sizeof(*result));
	pthread_mutex_init(&shared.lock, NULL);
	shared.ring = (struct ring){.base = memory + CACHE_LINE,
				    .slots = slots,
				    .mask = slots - 1,
				    .slot_size = slot_size,
				    .readers = readers,
				    .wake_sequence = (uint32_t *)memory,
				    .sleepers = (uint32_t *)(memory + 4)};
	for (int r = 0; r < readers; r++) {
		arguments[r] = (struct reader_arguments){&shared, r};
		pthread_create(&reader_threads[r], NULL, reader_main, &arguments[r]);
	}
	pthread_create(&writer, NULL, writer_main, &shared);
	usleep(1000); /* let the threads start and pin themselves */
	clock_gettime(CLOCK_MONOTONIC, &start);
	__atomic_store_n(&shared.go, 1, __ATOMIC_RELEASE);
	pthread_join(writer, NULL);
	for (int r = 0; r < readers; r++)
		pthread_join(reader_threads[r], NULL);
	clock_gettime(CLOCK_MONOTONIC, &end);
	result->seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
	munmap(memory, size);
	pthread_mutex_destroy(&shared.lock);
	return 0;
}
