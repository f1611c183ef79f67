// SPDX-License-Identifier: Apache-2.0
/*
 * reference_engine.c - BanEngine's line scanner and offence table in C, the references for the
 * `engine` perf suite. Same algorithms as Sources/BanEngine (see PerfReference.h).
 */
#include "PerfReference.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static const char suffix[] = " exceeded request rate limit";
/* " client " and the suffix as little-endian words (bytes 0-7, 8-15, 16-23, 24-27). */
static const uint64_t client_word = 0x20746E65696C6320ull;
static const uint64_t suffix_words[4] = {0x6564656563786520ull, 0x7365757165722064ull, 0x6C20657461722074ull,
					 0x74696D69ull};

static inline uint64_t load64(const uint8_t *address)
{
	uint64_t value;
	memcpy(&value, address, 8);
	return value;
}

static inline uint32_t load32(const uint8_t *address)
{
	uint32_t value;
	memcpy(&value, address, 4);
	return value;
}
#define CLIENT_OFFSET 19
#define ADDRESS_OFFSET 27
#define SUFFIX_LENGTH (sizeof(suffix) - 1)

static inline int digit(const uint8_t *text, int index)
{
	int value = (int)text[index] - 48;
	return value >= 0 && value <= 9 ? value : -100;
}

static inline int number(const uint8_t *text, int index)
{
	return digit(text, index) * 10 + digit(text, index + 1);
}

static inline bool timestamp_is_valid(const uint8_t *text)
{
	int month, day, hour, minute, second;

	if (digit(text, 0) < 0 || digit(text, 1) < 0 || digit(text, 2) < 0 || digit(text, 3) < 0 || text[4] != '-' ||
	    text[7] != '-' || text[10] != ' ' || text[13] != ':' || text[16] != ':')
		return false;
	month = number(text, 5), day = number(text, 8), hour = number(text, 11);
	minute = number(text, 14), second = number(text, 17);
	return month >= 1 && month <= 12 && day >= 1 && day <= 31 && hour >= 0 && hour <= 23 && minute >= 0 &&
	       minute <= 59 && second >= 0 && second <= 60;
}

static inline bool parse_ipv4(const uint8_t *text, size_t count, uint32_t *value)
{
	int octets = 0, digits = 0;
	uint32_t current = 0, result = 0;

	for (size_t index = 0; index < count; index++) {
		uint8_t c = text[index];
		if ((uint8_t)(c - '0') < 10) {
			if (digits > 0 && current == 0)
				return false;
			current = current * 10 + (uint32_t)(c - '0');
			if (current > 255)
				return false;
			digits++;
		} else if (c == '.') {
			if (digits == 0 || octets == 3)
				return false;
			result |= current << (8 * octets);
			octets++;
			current = 0;
			digits = 0;
		} else
			return false;
	}
	if (digits == 0 || octets != 3)
		return false;
	*value = result | current << 24;
	return true;
}

static inline int hex_value(uint8_t c)
{
	if ((uint8_t)(c - '0') < 10)
		return c - '0';
	c |= 0x20;
	if ((uint8_t)(c - 'a') < 6)
		return c - 'a' + 10;
	return -1;
}

static inline bool parse_ipv6(const uint8_t *text, size_t count, uint8_t out[16])
{
	size_t position = 0, index = 0, token = 0;
	long compression = -1;
	bool saw_digit = false;
	int digits = 0, value = 0;

	memset(out, 0, 16);
	if (text[0] == ':') {
		if (count < 2 || text[1] != ':')
			return false;
		index = 1;
	}
	token = index;
	while (index < count) {
		uint8_t c = text[index++];
		int d = hex_value(c);
		if (d >= 0) {
			value = value << 4 | d;
			if (++digits > 4)
				return false;
			saw_digit = true;
			continue;
		}
		if (c == ':') {
			token = index;
			if (!saw_digit) {
				if (compression >= 0)
					return false;
				compression = (long)position;
				continue;
			}
			if (index == count || position + 2 > 16)
				return false;
			out[position++] = (uint8_t)(value >> 8);
			out[position++] = (uint8_t)value;
			saw_digit = false;
			digits = 0;
			value = 0;
			continue;
		}
		if (c == '.' && position + 4 <= 16) {
			uint32_t v4;
			if (!parse_ipv4(text + token, count - token, &v4))
				return false;
			memcpy(out + position, &v4, 4);
			position += 4;
			saw_digit = false;
			break;
		}
		return false;
	}
	if (saw_digit) {
		if (position + 2 > 16)
			return false;
		out[position++] = (uint8_t)(value >> 8);
		out[position++] = (uint8_t)value;
	}
	if (compression >= 0) {
		size_t moved = position - (size_t)compression;
		if (position == 16)
			return false;
		for (long offset = (long)moved - 1; offset >= 0; offset--) {
			out[16 - moved + (size_t)offset] = out[compression + offset];
			out[compression + offset] = 0;
		}
		position = 16;
	}
	return position == 16;
}

static inline bool parse_address(const uint8_t *text, size_t count, uint64_t key[2])
{
	uint32_t v4;

	if (count == 0 || count > 45)
		return false;
	if (parse_ipv4(text, count, &v4)) {
		key[0] = 0;
		key[1] = 0xffff0000ull | (uint64_t)v4 << 32;
		return true;
	}
	return parse_ipv6(text, count, (uint8_t *)key);
}

uint64_t pc_reference_scan(const uint8_t *bytes, const size_t *ends, size_t count, size_t max_line_length,
			   uint64_t *checksum)
{
	uint64_t offences = 0, sum = 0;
	size_t start = 0;

	for (size_t line = 0; line < count; start = ends[line], line++) {
		const uint8_t *text = bytes + start;
		size_t length = ends[line] - start;
		uint64_t key[2];

		if (length > max_line_length)
			continue;
		if (length > 0 && text[length - 1] == '\r')
			length--;
		if (length < ADDRESS_OFFSET + 1 + SUFFIX_LENGTH || !timestamp_is_valid(text))
			continue;
		/* The literals compared as words, as LineScanner does. */
		if (load64(text + CLIENT_OFFSET) != client_word)
			continue;
		if (load64(text + length - SUFFIX_LENGTH) != suffix_words[0] ||
		    load64(text + length - SUFFIX_LENGTH + 8) != suffix_words[1] ||
		    load64(text + length - SUFFIX_LENGTH + 16) != suffix_words[2] ||
		    load32(text + length - SUFFIX_LENGTH + 24) != (uint32_t)suffix_words[3])
			continue;
		if (!parse_address(text + ADDRESS_OFFSET, length - SUFFIX_LENGTH - ADDRESS_OFFSET, key))
			continue;
		offences++;
		sum ^= key[0] ^ key[1];
	}
	*checksum = sum;
	return offences;
}

struct pc_reference_table {
	uint8_t *memory;
	uint64_t bins;
	uint32_t threshold;
};

struct pc_reference_table *pc_reference_table_create(uint64_t bins, uint32_t threshold)
{
	struct pc_reference_table *table = malloc(sizeof(*table));

	table->memory =
		mmap(NULL, bins * 32, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	madvise(table->memory, bins * 32, MADV_HUGEPAGE);	      /* as OffenceTable does, */
	for (uint64_t offset = 0; offset < bins * 32; offset += 4096) /* and faulted in before use */
		table->memory[offset] = 0;
	table->bins = bins;
	table->threshold = threshold;
	return table;
}

void pc_reference_table_destroy(struct pc_reference_table *table)
{
	munmap(table->memory, table->bins * 32);
	free(table);
}

int pc_reference_table_record(struct pc_reference_table *table, uint64_t key_high, uint64_t key_low, uint32_t now)
{
	uint64_t hash = key_high ^ (key_low * 0x9E3779B97F4A7C15ull);
	uint64_t index;

	hash = (hash ^ (hash >> 29)) * 0xBF58476D1CE4E5B9ull;
	hash ^= hash >> 32;
	index = (uint64_t)(((__uint128_t)hash * table->bins) >> 64);
	for (int probe = 0; probe < 128; probe++) {
		uint8_t *bin = table->memory + index * 32;
		uint32_t *state = (uint32_t *)(bin + 16);
		uint32_t current = __atomic_load_n(state, __ATOMIC_ACQUIRE);

		if (current == 0) {
			uint32_t expected = 0;
			if (__atomic_compare_exchange_n(state, &expected, 1, false, __ATOMIC_ACQ_REL,
							__ATOMIC_ACQUIRE)) {
				((uint64_t *)bin)[0] = key_high;
				((uint64_t *)bin)[1] = key_low;
				__atomic_store_n(state, 2, __ATOMIC_RELEASE);
				goto count;
			}
			current = __atomic_load_n(state, __ATOMIC_ACQUIRE);
		}
		while (current == 1) {
			__builtin_ia32_pause();
			current = __atomic_load_n(state, __ATOMIC_ACQUIRE);
		}
		if (((uint64_t *)bin)[0] == key_high && ((uint64_t *)bin)[1] == key_low) {
		count:;
			uint64_t *word = (uint64_t *)(bin + 24);
			uint64_t old = __atomic_load_n(word, __ATOMIC_ACQUIRE);
			for (;;) {
				uint32_t count = (uint32_t)old, start = (uint32_t)(old >> 32);
				bool restart = count == 0;
				uint32_t new_count = restart ? 1 : (count == UINT32_MAX ? count : count + 1);
				uint64_t new = (uint64_t)new_count | (uint64_t)(restart ? now : start) << 32;
				if (__atomic_compare_exchange_n(word, &old, new, false, __ATOMIC_ACQ_REL,
								__ATOMIC_ACQUIRE))
					return new_count == table->threshold && (restart || count != table->threshold);
			}
		}
		if (++index == table->bins)
			index = 0;
	}
	return -1;
}
