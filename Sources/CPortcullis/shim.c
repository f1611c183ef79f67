// SPDX-License-Identifier: Apache-2.0
/* _GNU_SOURCE comes from Package.swift (cSettings): accept4, ucred, mmsghdr, CPU_SET. */
#ifndef _GNU_SOURCE
#error "_GNU_SOURCE must be defined for CPortcullis (Package.swift cSettings)"
#endif
#include "CPortcullis.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_buffer[8192];
static size_t log_length;
static bool log_echo;

static void append_log(const char *format, va_list args)
{
	va_list copy;
	char *message;
	const char *line;
	size_t len;
	int n;

	/* Format whole: libbpf prints a verifier log of many KiB in one call, and its end says why. */
	va_copy(copy, args);
	n = vsnprintf(NULL, 0, format, copy);
	va_end(copy);
	if (n < 0)
		return;
	message = malloc((size_t)n + 1);
	if (!message)
		return;
	vsnprintf(message, (size_t)n + 1, format, args);
	if (log_echo)
		fputs(message, stderr);
	len = (size_t)n;
	line = message;
	if (len >= sizeof(log_buffer)) { /* keep the tail */
		line = message + len - (sizeof(log_buffer) - 1);
		len = sizeof(log_buffer) - 1;
	}
	pthread_mutex_lock(&log_lock);
	if (log_length + len >= sizeof(log_buffer)) {
		/* keep the newest text: drop the oldest half */
		size_t keep = log_length / 2;
		memmove(log_buffer, log_buffer + log_length - keep, keep);
		log_length = keep;
		if (log_length + len >= sizeof(log_buffer))
			log_length = 0;
	}
	memcpy(log_buffer + log_length, line, len);
	log_length += len;
	log_buffer[log_length] = '\0';
	pthread_mutex_unlock(&log_lock);
	free(message);
}

static int libbpf_log(enum libbpf_print_level level, const char *format, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	append_log(format, args);
	return 0;
}

static int libxdp_log(enum libxdp_print_level level, const char *format, va_list args)
{
	if (level == LIBXDP_DEBUG)
		return 0;
	append_log(format, args);
	return 0;
}

void cportcullis_capture_library_logs(bool echo_to_stderr)
{
	log_echo = echo_to_stderr;
	libbpf_set_print(libbpf_log);
	libxdp_set_print(libxdp_log);
}

void cportcullis_take_library_log(char *buffer, size_t size)
{
	if (size == 0)
		return;
	pthread_mutex_lock(&log_lock);
	size_t len = log_length < size - 1 ? log_length : size - 1;
	/* the end of the log is the part that explains the failure */
	memcpy(buffer, log_buffer + (log_length - len), len);
	buffer[len] = '\0';
	log_length = 0;
	log_buffer[0] = '\0';
	pthread_mutex_unlock(&log_lock);
}

int cportcullis_futex_wait(uint32_t *address, uint32_t expected, const struct timespec *timeout)
{
	return (int)syscall(SYS_futex, address, FUTEX_WAIT, expected, timeout, NULL, 0);
}

int cportcullis_futex_wake(uint32_t *address, int count)
{
	return (int)syscall(SYS_futex, address, FUTEX_WAKE, count, NULL, NULL, 0);
}

_Static_assert(sizeof(struct cportcullis_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");
_Static_assert(offsetof(struct cportcullis_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "msg_len");

int cportcullis_sendmmsg(int fd, struct cportcullis_mmsghdr *messages, unsigned int count, int flags)
{
	return sendmmsg(fd, (struct mmsghdr *)messages, count, flags);
}

int cportcullis_recvmmsg(int fd, struct cportcullis_mmsghdr *messages, unsigned int count, int flags,
			 struct timespec *timeout)
{
	return recvmmsg(fd, (struct mmsghdr *)messages, count, flags, timeout);
}

static int ofd_lock(int fd, int64_t byte, int command, short type, struct flock *lock)
{
	memset(lock, 0, sizeof(*lock));
	lock->l_type = type;
	lock->l_whence = SEEK_SET;
	lock->l_start = byte;
	lock->l_len = 1;
	return fcntl(fd, command, lock);
}

int cportcullis_ofd_try_lock(int fd, int64_t byte)
{
	struct flock lock;

	return ofd_lock(fd, byte, F_OFD_SETLK, F_WRLCK, &lock);
}

int cportcullis_ofd_unlock(int fd, int64_t byte)
{
	struct flock lock;

	return ofd_lock(fd, byte, F_OFD_SETLK, F_UNLCK, &lock);
}

int cportcullis_ofd_is_locked(int fd, int64_t byte)
{
	struct flock lock;

	if (ofd_lock(fd, byte, F_OFD_GETLK, F_WRLCK, &lock) != 0)
		return -1;
	return lock.l_type != F_UNLCK;
}

int cportcullis_pin_thread(int cpu)
{
	cpu_set_t set;

	if (cpu < 0 || cpu >= CPU_SETSIZE) {
		errno = EINVAL;
		return -1;
	}
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

int cportcullis_accept4(int fd, int flags)
{
	return accept4(fd, NULL, NULL, flags);
}

int cportcullis_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
	struct ucred credentials;
	socklen_t length = sizeof(credentials);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0)
		return -1;
	*pid = credentials.pid;
	*uid = credentials.uid;
	*gid = credentials.gid;
	return 0;
}

int cportcullis_uring_queue_read(struct io_uring *ring, int fd, void *buffer, unsigned length, uint64_t offset,
				 uint64_t user_data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, buffer, length, offset);
	io_uring_sqe_set_data64(sqe, user_data);
	return 0;
}

size_t cportcullis_credentials_space(void)
{
	return CMSG_SPACE(sizeof(struct ucred));
}

int64_t cportcullis_message_uid(const struct msghdr *message)
{
	struct cmsghdr *header;

	for (header = CMSG_FIRSTHDR(message); header != NULL; header = CMSG_NXTHDR((struct msghdr *)message, header)) {
		if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_CREDENTIALS &&
		    header->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
			struct ucred credentials;

			memcpy(&credentials, CMSG_DATA(header), sizeof(credentials));
			return credentials.uid;
		}
	}
	return -1;
}

int cportcullis_attach_uid_filter(int fd, const uint32_t *uids, size_t count)
{
	/* call, a test per uid, the counting drop (11), the accept (2) */
	struct bpf_insn program[1 + 64 + 11 + 2];
	size_t at = 0, i;
	int map, loaded, err;

	if (count > 64)
		return -E2BIG;
	map = bpf_map_create(BPF_MAP_TYPE_ARRAY, "pc_syslog_drop", sizeof(uint32_t), sizeof(uint64_t), 1, NULL);
	if (map < 0)
		return -errno;
	memset(program, 0, sizeof(program));
	program[at++] = (struct bpf_insn){.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_get_current_uid_gid};
	for (i = 0; i < count; i++)
		/* if w0 == uid goto accept (at 1 + count + 11) */
		program[at++] = (struct bpf_insn){.code = BPF_JMP32 | BPF_JEQ | BPF_K,
						  .dst_reg = BPF_REG_0,
						  .off = (int16_t)(count + 10 - i),
						  .imm = (int32_t)uids[i]};
	/* drop: *(u32 *)(r10 - 4) = 0; r2 = r10 - 4; r1 = map; r0 = lookup; if r0: *(u64 *)r0 += 1 */
	program[at++] = (struct bpf_insn){.code = BPF_ST | BPF_MEM | BPF_W, .dst_reg = BPF_REG_10, .off = -4};
	program[at++] =
		(struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_2, .src_reg = BPF_REG_10};
	program[at++] = (struct bpf_insn){.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_2, .imm = -4};
	program[at++] = (struct bpf_insn){
		.code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = BPF_REG_1, .src_reg = BPF_PSEUDO_MAP_FD, .imm = map};
	program[at++] = (struct bpf_insn){0};
	program[at++] = (struct bpf_insn){.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_map_lookup_elem};
	program[at++] = (struct bpf_insn){.code = BPF_JMP | BPF_JEQ | BPF_K, .dst_reg = BPF_REG_0, .off = 2};
	program[at++] = (struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_1, .imm = 1};
	program[at++] = (struct bpf_insn){
		.code = BPF_STX | BPF_ATOMIC | BPF_DW, .dst_reg = BPF_REG_0, .src_reg = BPF_REG_1, .imm = BPF_ADD};
	program[at++] = (struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0};
	program[at++] = (struct bpf_insn){.code = BPF_JMP | BPF_EXIT};
	/* accept: the whole datagram (a filter's result is the length kept) */
	program[at++] = (struct bpf_insn){.code = BPF_ALU | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = -1};
	program[at++] = (struct bpf_insn){.code = BPF_JMP | BPF_EXIT};
	loaded = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "pc_syslog_uid", "GPL", program, at, NULL);
	if (loaded < 0) {
		err = -errno;
		close(map);
		return err;
	}
	err = setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &loaded, sizeof(loaded)) == 0 ? 0 : -errno;
	close(loaded);
	if (err < 0) {
		close(map);
		return err;
	}
	return map;
}
