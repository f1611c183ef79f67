/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPortcullis.h - the C module facing the OS that every program needs. It includes libbpf, libxdp,
 * liburing, PCRE2, libsystemd (sd-journal, sd_notify) and the socket headers once, and the ABI header
 * shared with the XDP program (portcullis_abi.h), and adds thin shims (prefixed cportcullis_) where
 * Swift cannot reach a C facility directly: the libbpf/libxdp log capture (variadic callbacks),
 * atomics with named orderings on shared memory, futex wait/wake, sendmmsg/recvmmsg with mmsghdr,
 * accept4, SO_PEERCRED, CPU pinning, one liburing helper. The libraries only the daemon uses have
 * modules of their own, so that a program links only what it uses: CPortcullisNUMA (libnuma),
 * CPortcullisHTTP (libmicrohttpd), CPortcullisCurl (libcurl), CPortcullisNATS (nats.c).
 * Swift calls them through PortcullisSystem's funnel.
 */
#ifndef CPORTCULLIS_H
#define CPORTCULLIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <malloc.h> /* mallinfo2: the timing harness's heap figures */
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/bpf.h>
#include <linux/if_link.h> /* XDP_FLAGS_*: replacing an attached program */
#include <linux/magic.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <xdp/libxdp.h>
#include <liburing.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>

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
 * Atomics on shared memory (LogTransport's rings live in a mapping shared between processes).
 * Each names its ordering; callers say in a comment which operation on the other side pairs with it.
 */
static inline uint64_t cportcullis_load_acquire_u64(const void *address)
{
	return __atomic_load_n((const uint64_t *)address, __ATOMIC_ACQUIRE);
}
static inline uint64_t cportcullis_load_relaxed_u64(const void *address)
{
	return __atomic_load_n((const uint64_t *)address, __ATOMIC_RELAXED);
}
static inline void cportcullis_store_release_u64(void *address, uint64_t value)
{
	__atomic_store_n((uint64_t *)address, value, __ATOMIC_RELEASE);
}
static inline void cportcullis_store_relaxed_u64(void *address, uint64_t value)
{
	__atomic_store_n((uint64_t *)address, value, __ATOMIC_RELAXED);
}
static inline uint64_t cportcullis_fetch_add_u64(void *address, uint64_t value)
{
	return __atomic_fetch_add((uint64_t *)address, value, __ATOMIC_ACQ_REL);
}
/* Bytes the C heap has handed out and not taken back, every arena and mmapped chunk
 * (mallinfo2): what the timing harness's memory rows read. */
static inline size_t cportcullis_heap_in_use(void)
{
	struct mallinfo2 info = mallinfo2();
	return info.uordblks + info.hblkhd;
}
/* Sets bits in a word others set bits in too (the XDP filter's coverage bitmap, mmapped). */
static inline void cportcullis_fetch_or_u64(void *address, uint64_t value)
{
	__atomic_fetch_or((uint64_t *)address, value, __ATOMIC_ACQ_REL);
}
static inline uint32_t cportcullis_load_acquire_u32(const void *address)
{
	return __atomic_load_n((const uint32_t *)address, __ATOMIC_ACQUIRE);
}
static inline void cportcullis_store_release_u32(void *address, uint32_t value)
{
	__atomic_store_n((uint32_t *)address, value, __ATOMIC_RELEASE);
}
/* Sequentially consistent: used where a wake-up must not be lost (sleepers vs. publish). */
static inline uint32_t cportcullis_fetch_add_seq_cst_u32(void *address, int32_t value)
{
	return __atomic_fetch_add((uint32_t *)address, (uint32_t)value, __ATOMIC_SEQ_CST);
}
static inline uint32_t cportcullis_load_seq_cst_u32(const void *address)
{
	return __atomic_load_n((const uint32_t *)address, __ATOMIC_SEQ_CST);
}
/* Compare-and-swap with acquire-release on success, acquire on failure. */
static inline bool cportcullis_cas_u32(void *address, uint32_t expected, uint32_t desired)
{
	return __atomic_compare_exchange_n((uint32_t *)address, &expected, desired, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}
static inline uint32_t cportcullis_exchange_u32(void *address, uint32_t value)
{
	return __atomic_exchange_n((uint32_t *)address, value, __ATOMIC_ACQ_REL);
}
static inline bool cportcullis_cas_u64(void *address, uint64_t expected, uint64_t desired)
{
	return __atomic_compare_exchange_n((uint64_t *)address, &expected, desired, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE);
}
static inline void cportcullis_fence_release(void)
{
	__atomic_thread_fence(__ATOMIC_RELEASE);
}
static inline void cportcullis_fence_acquire(void)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
}
static inline void cportcullis_fence_seq_cst(void)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
static inline void cportcullis_cpu_relax(void)
{
	__builtin_ia32_pause();
}
/* Asks for the cache line at `address` ahead of a write to it. */
static inline void cportcullis_prefetch_for_write(const void *address)
{
	__builtin_prefetch(address, 1, 3);
}

/*
 * futex(2) on a word in shared memory (not FUTEX_PRIVATE: waiters and wakers are different
 * processes). Wait returns 0 when woken, -1 with errno EAGAIN (value changed), ETIMEDOUT or EINTR.
 */
int cportcullis_futex_wait(uint32_t *address, uint32_t expected, const struct timespec *timeout);
int cportcullis_futex_wake(uint32_t *address, int count);

/* struct mmsghdr and sendmmsg/recvmmsg are hidden from Swift by _GNU_SOURCE; same layout, checked
 * with a static assert in shim.c. */
struct cportcullis_mmsghdr {
	struct msghdr msg_hdr;
	unsigned int msg_len;
};
int cportcullis_sendmmsg(int fd, struct cportcullis_mmsghdr *messages, unsigned int count, int flags);
int cportcullis_recvmmsg(int fd, struct cportcullis_mmsghdr *messages, unsigned int count, int flags,
			 struct timespec *timeout);

/*
 * Open-file-description locks on one byte (F_OFD_SETLK/GETLK are hidden by _GNU_SOURCE): a
 * write lock taken without waiting (0, or -1 with errno EAGAIN when another open file holds
 * it), released, or tested (1: another open file holds it, 0: free, -1 with errno).
 */
int cportcullis_ofd_try_lock(int fd, int64_t byte);
int cportcullis_ofd_unlock(int fd, int64_t byte);
int cportcullis_ofd_is_locked(int fd, int64_t byte);

/* Pins the calling thread to one CPU (CPU_SET macros are not importable). 0 or -1 with errno. */
int cportcullis_pin_thread(int cpu);

/* accept4(2), hidden from Swift by _GNU_SOURCE. */
int cportcullis_accept4(int fd, int flags);

/* SO_PEERCRED of a connected UNIX socket (struct ucred is hidden by _GNU_SOURCE). */
int cportcullis_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/*
 * SCM_CREDENTIALS of a received datagram (a socket with SO_PASSCRED): the room a message's control
 * buffer needs, and the sender's uid from it (-1 when the message carries none). CMSG_* are macros.
 */
size_t cportcullis_credentials_space(void);
int64_t cportcullis_message_uid(const struct msghdr *message);

/*
 * A socket filter on the AF_UNIX datagram socket `fd`: a datagram whose sender's real uid is none
 * of `uids` is dropped by the kernel before it takes a place in the receive queue (the filter runs
 * in the sender's sendmsg, so bpf_get_current_uid_gid is the sender's; bpf_get_socket_uid is not),
 * and counted in an array map of one u64 (key 0), whose descriptor is returned; a negative errno
 * when the filter cannot be loaded or attached (no CAP_BPF).
 */
int cportcullis_attach_uid_filter(int fd, const uint32_t *uids, size_t count);

/* liburing's static inline helpers, forwarded so Swift calls one function each. */
int cportcullis_uring_queue_read(struct io_uring *ring, int fd, void *buffer, unsigned length, uint64_t offset,
				 uint64_t user_data);

#endif /* CPORTCULLIS_H */
