// SPDX-License-Identifier: Apache-2.0
#include "CPortcullisHTTP.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <microhttpd.h>

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
