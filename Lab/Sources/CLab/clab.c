// SPDX-License-Identifier: Apache-2.0
/* clab.c - BTF look-ups for the lab's layout tests (the product's and the generator's ABI headers
 * against the compiled objects), and the tests' namespace switch. */
#define _GNU_SOURCE
#include "CLab.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <errno.h>
#include <string.h>
#include <bpf/btf.h>

static const struct btf_type *find_struct(const struct btf *btf, const char *name)
{
	__s32 id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);

	if (id < 0)
		return NULL;
	return btf__type_by_id(btf, (__u32)id);
}

int clab_btf_member(const struct btf *btf, const char *struct_name, const char *member_name, uint32_t *offset,
		    uint32_t *size)
{
	const struct btf_type *type = find_struct(btf, struct_name);
	const struct btf_member *member;
	int i;

	if (!type)
		return -ENOENT;
	member = btf_members(type);
	for (i = 0; i < btf_vlen(type); i++, member++) {
		__s64 member_size;

		if (strcmp(btf__name_by_offset(btf, member->name_off), member_name) != 0)
			continue;
		if (btf_member_bitfield_size(type, i) != 0 || btf_member_bit_offset(type, i) % 8 != 0)
			return -EINVAL;
		member_size = btf__resolve_size(btf, member->type);
		if (member_size < 0)
			return (int)member_size;
		*offset = btf_member_bit_offset(type, i) / 8;
		*size = (uint32_t)member_size;
		return 0;
	}
	return -ENOENT;
}

int64_t clab_btf_struct_size(const struct btf *btf, const char *struct_name)
{
	const struct btf_type *type = find_struct(btf, struct_name);

	return type ? (int64_t)type->size : -ENOENT;
}

int clab_enter_net_namespace(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = setns(fd, CLONE_NEWNET) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}
