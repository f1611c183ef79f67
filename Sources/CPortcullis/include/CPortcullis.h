/*
 * CPortcullis.h - the one C module facing the OS. It includes libbpf, libxdp, liburing, libnuma
 * and the socket headers once, and adds thin shims (prefixed cportcullis_) where Swift cannot reach
 * a C facility directly: variadic logging callbacks and BTF struct walking.
 */
#ifndef CPORTCULLIS_H
#define CPORTCULLIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/vfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <liburing.h>
#include <numa.h>

#include "portcullis_abi.h"

/*
 * libbpf and libxdp print warnings through variadic callbacks that Swift cannot implement. These
 * route both into one buffer (the last 8 KiB of warnings) so that errors can quote what the library
 * said; with `echo_to_stderr` they are printed as well (debug/verbose mode).
 */
void cportcullis_capture_library_logs(bool echo_to_stderr);
/* Copies the captured log (NUL-terminated, possibly truncated to size) and clears it. */
void cportcullis_take_library_log(char *buffer, size_t size);

/*
 * Looks up `member` of `struct struct_name` in BTF. Returns 0 and fills the byte offset and size,
 * or -ENOENT when the struct or member is not there, -EINVAL for a bitfield.
 */
int cportcullis_btf_member(const struct btf *btf, const char *struct_name, const char *member_name,
                           uint32_t *offset, uint32_t *size);
/* Size in bytes of `struct struct_name` in BTF, or a negative errno. */
int64_t cportcullis_btf_struct_size(const struct btf *btf, const char *struct_name);

#endif /* CPORTCULLIS_H */
