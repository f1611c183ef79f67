/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CLab.h - the lab's C target: the traffic generator's ABI (flood_abi.h, shared with flood.bpf.c)
 * BTF look-ups for the layout tests, a namespace switch for the tests' clients, and the generator's
 * AF_XDP sender (clab_xsk.h). Not part of the product.
 */
#ifndef CLAB_H
#define CLAB_H

#include <stdint.h>
#include "flood_abi.h"
#include "clab_xsk.h"

struct btf;

/*
 * Looks up `member` of `struct struct_name` in BTF. Returns 0 and fills the byte offset and size,
 * or -ENOENT when the struct or member is not there, -EINVAL for a bitfield.
 */
int clab_btf_member(const struct btf *btf, const char *struct_name, const char *member_name, uint32_t *offset,
		    uint32_t *size);
/* Size in bytes of `struct struct_name` in BTF, or a negative errno. */
int64_t clab_btf_struct_size(const struct btf *btf, const char *struct_name);

/*
 * Moves the calling thread into the network namespace at `path` (/run/netns/NAME): the sockets it
 * makes from then on are there. Returns 0 or a negative errno.
 */
int clab_enter_net_namespace(const char *path);

#endif /* CLAB_H */
