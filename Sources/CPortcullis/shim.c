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
#include <microhttpd.h>
#include <curl/curl.h>

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

/*
 * The connections served at once, of them from one address (all of loopback, 127.0.0.0/8 and ::1,
 * counts as one), and how long a connection has to send a complete request: from its start, or
 * from the last answer it got (libmicrohttpd's own timeout is an idle one, which a peer sending a
 * header line every few seconds never reaches).
 */
#define HTTP_CONNECTIONS 16
#define HTTP_CONNECTIONS_PER_ADDRESS 8
#define HTTP_REQUEST_DEADLINE_NS (5ULL * 1000000000ULL)

struct http_peer {
	int fd;		       /* -1: a free slot */
	unsigned char key[17]; /* family, then the address (loopback: one key) */
	uint64_t since;	       /* CLOCK_MONOTONIC ns: its start, or its last answer */
	int answered;	       /* it completed a request (not evicted first) */
};

struct cportcullis_http_server {
	struct MHD_Daemon *daemon;
	cportcullis_http_handler handler;
	void *context;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t watchdog;
	int watching; /* the watchdog runs */
	int stopping;
	struct http_peer peers[HTTP_CONNECTIONS + 1];
	unsigned long cut; /* connections shut for the deadline or the per-address limit */
};

static uint64_t http_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

/* The per-address key: loopback (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) is one address. */
static void http_key(const struct sockaddr *address, unsigned char key[17])
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char loopback6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};

	memset(key, 0, 17);
	if (address == NULL)
		return;
	if (address->sa_family == AF_INET) {
		const struct sockaddr_in *v4 = (const void *)address;

		key[0] = 4;
		memcpy(key + 1, &v4->sin_addr, 4);
	} else if (address->sa_family == AF_INET6) {
		const struct sockaddr_in6 *v6 = (const void *)address;

		if (memcmp(v6->sin6_addr.s6_addr, mapped, 12) == 0) {
			key[0] = 4;
			memcpy(key + 1, v6->sin6_addr.s6_addr + 12, 4);
		} else if (memcmp(v6->sin6_addr.s6_addr, loopback6, 16) == 0) {
			key[0] = 4;
			key[1] = 127;
		} else {
			key[0] = 6;
			memcpy(key + 1, v6->sin6_addr.s6_addr, 16);
		}
	}
	if (key[0] == 4 && key[1] == 127)
		memset(key + 2, 0, 15);
}

/*
 * libmicrohttpd's thread: a connection starts or ends. A new one over its address's limit shuts
 * the oldest of that address that has not completed a request (else its oldest): a peer that holds
 * connections open cannot keep another one of the same address (a local scraper) out.
 */
static void http_notify(void *cls, struct MHD_Connection *connection, void **socket_context,
			enum MHD_ConnectionNotificationCode code)
{
	struct cportcullis_http_server *server = cls;
	struct http_peer *peer = *socket_context;

	pthread_mutex_lock(&server->lock);
	if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (peer != NULL)
			peer->fd = -1;
		*socket_context = NULL;
	} else {
		const union MHD_ConnectionInfo *fd =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *from =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		unsigned char key[17];
		struct http_peer *oldest = NULL;
		int same = 0;

		http_key(from != NULL ? from->client_addr : NULL, key);
		for (int i = 0; i <= HTTP_CONNECTIONS; i++) {
			struct http_peer *other = &server->peers[i];

			if (other->fd < 0) {
				if (peer == NULL)
					peer = other;
				continue;
			}
			if (memcmp(other->key, key, sizeof(key)) != 0)
				continue;
			same++;
			if (oldest == NULL || (oldest->answered && !other->answered) ||
			    (oldest->answered == other->answered && other->since < oldest->since))
				oldest = other;
		}
		if (same >= HTTP_CONNECTIONS_PER_ADDRESS && oldest != NULL) {
			shutdown(oldest->fd, SHUT_RDWR);
			oldest->since = 0;
			server->cut++;
		}
		if (peer != NULL && fd != NULL) {
			peer->fd = fd->connect_fd;
			memcpy(peer->key, key, sizeof(key));
			peer->since = http_now();
			peer->answered = 0;
		} else if (fd != NULL) {
			shutdown(fd->connect_fd, SHUT_RDWR);
		}
		*socket_context = peer;
	}
	pthread_mutex_unlock(&server->lock);
}

/* Shuts every connection past its request deadline (libmicrohttpd then sees the end and closes it). */
static void *http_watchdog(void *argument)
{
	struct cportcullis_http_server *server = argument;

	pthread_mutex_lock(&server->lock);
	while (!server->stopping) {
		struct timespec until;
		uint64_t now = http_now();

		for (int i = 0; i <= HTTP_CONNECTIONS; i++) {
			struct http_peer *peer = &server->peers[i];

			if (peer->fd >= 0 && peer->since != 0 && now - peer->since > HTTP_REQUEST_DEADLINE_NS) {
				shutdown(peer->fd, SHUT_RDWR);
				peer->since = 0; /* once */
				server->cut++;
			}
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&server->wake, &server->lock, &until);
	}
	pthread_mutex_unlock(&server->lock);
	return NULL;
}

static enum MHD_Result http_access(void *cls, struct MHD_Connection *connection, const char *url, const char *method,
				   const char *version, const char *upload_data, size_t *upload_data_size,
				   void **request_state)
{
	static int headers_seen;
	struct cportcullis_http_server *server = cls;
	struct MHD_Response *response;
	enum MHD_Result result;
	const char *type = "text/plain; charset=utf-8";
	unsigned status = MHD_HTTP_METHOD_NOT_ALLOWED;
	size_t length = 0;
	char *body = NULL;

	(void)version;
	(void)upload_data;
	/* The first call brings the headers only; answer on the next, after any body. */
	if (*request_state == NULL) {
		*request_state = &headers_seen;
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	{
		/* A complete request: its connection has the deadline again for the next one. */
		const union MHD_ConnectionInfo *context =
			MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

		pthread_mutex_lock(&server->lock);
		if (context != NULL && context->socket_context != NULL) {
			struct http_peer *peer = context->socket_context;

			peer->answered = 1;
			if (peer->since != 0)
				peer->since = http_now();
		}
		pthread_mutex_unlock(&server->lock);
	}
	if (strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0)
		body = server->handler(server->context, url, &length, &status, &type);
	if (body != NULL)
		response = MHD_create_response_from_buffer(length, body, MHD_RESPMEM_MUST_FREE);
	else
		response = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (response == NULL) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	result = MHD_queue_response(connection, status, response);
	MHD_destroy_response(response);
	return result;
}

struct cportcullis_http_server *cportcullis_http_start(const struct sockaddr *address, socklen_t length,
						       cportcullis_http_handler handler, void *context)
{
	struct cportcullis_http_server *server;
	unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;

	(void)length;
	server = calloc(1, sizeof(*server));
	if (server == NULL)
		return NULL;
	server->handler = handler;
	server->context = context;
	pthread_mutex_init(&server->lock, NULL);
	pthread_cond_init(&server->wake, NULL);
	for (int i = 0; i <= HTTP_CONNECTIONS; i++)
		server->peers[i].fd = -1;
	if (address->sa_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	/*
	 * Few, short-lived scrapes: a handful of connections, each closed after 10 s idle or when it has
	 * not sent a complete request within 5 s (the watchdog), 64 KiB each; the per-address limit is
	 * ours (http_notify), so that all of loopback counts as one address.
	 */
	server->daemon =
		MHD_start_daemon(flags, 0, NULL, NULL, http_access, server, MHD_OPTION_SOCK_ADDR, address,
				 MHD_OPTION_CONNECTION_LIMIT, (unsigned int)HTTP_CONNECTIONS,
				 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
				 (size_t)65536, MHD_OPTION_NOTIFY_CONNECTION, http_notify, server, MHD_OPTION_END);
	if (server->daemon == NULL) {
		int saved = errno != 0 ? errno : EADDRINUSE;

		pthread_cond_destroy(&server->wake);
		pthread_mutex_destroy(&server->lock);
		free(server);
		errno = saved;
		return NULL;
	}
	server->watching = pthread_create(&server->watchdog, NULL, http_watchdog, server) == 0;
	return server;
}

unsigned long cportcullis_http_connections_cut(struct cportcullis_http_server *server)
{
	unsigned long cut;

	pthread_mutex_lock(&server->lock);
	cut = server->cut;
	pthread_mutex_unlock(&server->lock);
	return cut;
}

uint16_t cportcullis_http_port(const struct cportcullis_http_server *server)
{
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(server->daemon, MHD_DAEMON_INFO_BIND_PORT);

	return info != NULL ? info->port : 0;
}

void cportcullis_http_stop(struct cportcullis_http_server *server)
{
	if (server == NULL)
		return;
	pthread_mutex_lock(&server->lock);
	server->stopping = 1;
	pthread_cond_signal(&server->wake);
	pthread_mutex_unlock(&server->lock);
	if (server->watching)
		pthread_join(server->watchdog, NULL);
	MHD_stop_daemon(server->daemon);
	pthread_cond_destroy(&server->wake);
	pthread_mutex_destroy(&server->lock);
	free(server);
}

/* HTTP(S) client (libcurl) */

struct curl_sink {
	struct cportcullis_curl_response *response;
	size_t capacity;
	size_t max;
};

static size_t curl_take(char *data, size_t size, size_t count, void *context)
{
	struct curl_sink *sink = context;
	struct cportcullis_curl_response *response = sink->response;
	size_t length = size * count;
	char *grown;

	if (response->length + length > sink->max) {
		response->too_long = true;
		return 0;
	}
	if (response->length + length + 1 > sink->capacity) {
		size_t capacity = sink->capacity ? sink->capacity : 16384;

		while (capacity < response->length + length + 1)
			capacity *= 2;
		grown = realloc(response->body, capacity);
		if (!grown)
			return 0;
		response->body = grown;
		sink->capacity = capacity;
	}
	memcpy(response->body + response->length, data, length);
	response->length += length;
	response->body[response->length] = 0;
	return length;
}

static int curl_progress(void *context, curl_off_t download_total, curl_off_t downloaded, curl_off_t upload_total,
			 curl_off_t uploaded)
{
	(void)download_total;
	(void)downloaded;
	(void)upload_total;
	(void)uploaded;
	return __atomic_load_n((const int *)context, __ATOMIC_ACQUIRE) != 0;
}

void cportcullis_curl_cancel(int *flag)
{
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

int cportcullis_curl_global(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT);
}

void *cportcullis_curl_new(void)
{
	return curl_easy_init();
}

void cportcullis_curl_close(void *handle)
{
	curl_easy_cleanup(handle);
}

int cportcullis_curl_request(void *handle, const struct cportcullis_curl_options *options, const char *method,
			     const char *url, const char *const *headers, size_t count, const void *body,
			     size_t body_length, struct cportcullis_curl_response *response)
{
	struct curl_sink sink = {.response = response, .max = options->max_body};
	struct curl_slist *list = NULL, *grown;
	CURLcode code;
	size_t i;

	memset(response, 0, sizeof(*response));
	for (i = 0; i < count; i++) {
		grown = curl_slist_append(list, headers[i]);
		if (!grown) {
			curl_slist_free_all(list);
			snprintf(response->error, sizeof(response->error), "out of memory");
			return CURLE_OUT_OF_MEMORY;
		}
		list = grown;
	}
	curl_easy_reset(handle);
	curl_easy_setopt(handle, CURLOPT_URL, url);
	curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(handle, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, response->error);
	curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, options->timeout_ms);
	curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, options->connect_timeout_ms);
	curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(handle, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, curl_take);
	curl_easy_setopt(handle, CURLOPT_WRITEDATA, &sink);
	if (options->cancel) {
		curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, curl_progress);
		curl_easy_setopt(handle, CURLOPT_XFERINFODATA, (void *)options->cancel);
	}
	if (options->user_agent)
		curl_easy_setopt(handle, CURLOPT_USERAGENT, options->user_agent);
	if (options->ca_path)
		curl_easy_setopt(handle, CURLOPT_CAINFO, options->ca_path);
	if (options->cert_path)
		curl_easy_setopt(handle, CURLOPT_SSLCERT, options->cert_path);
	if (options->key_path)
		curl_easy_setopt(handle, CURLOPT_SSLKEY, options->key_path);
	if (options->insecure) {
		curl_easy_setopt(handle, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(handle, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (body) {
		curl_easy_setopt(handle, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_length);
	}
	code = curl_easy_perform(handle);
	curl_easy_setopt(handle, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(list);
	if (code == CURLE_OK)
		curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &response->status);
	else if (!response->error[0])
		snprintf(response->error, sizeof(response->error), "%s", curl_easy_strerror(code));
	return code;
}

void cportcullis_curl_free(struct cportcullis_curl_response *response)
{
	free(response->body);
	response->body = NULL;
	response->length = 0;
}
