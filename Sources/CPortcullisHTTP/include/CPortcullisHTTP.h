/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPortcullisHTTP.h - the metrics endpoint's HTTP server over GNU libmicrohttpd (its start is
 * variadic, so Swift cannot call it). Its own module so that only the program that serves metrics
 * (portcullisd) links libmicrohttpd; it includes no header of the library, only what its
 * declarations need.
 */
#ifndef CPORTCULLIS_HTTP_H
#define CPORTCULLIS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * A small HTTP server (GNU libmicrohttpd, its own thread, epoll) answering GET and HEAD with what
 * `handler` returns: a body from malloc(3) (freed after sending; NULL for an empty one) with its
 * length, status and content type. Other methods get 405 without calling it; request bodies are
 * discarded. `handler` runs on the server's thread, one request at a time.
 */
typedef char *(*cportcullis_http_handler)(void *context, const char *url, size_t *length, unsigned *status,
					  const char **content_type);
struct cportcullis_http_server;
/* Listens on `address` (IPv4 or IPv6; port 0 picks one). NULL with errno when it cannot. */
struct cportcullis_http_server *cportcullis_http_start(const struct sockaddr *address, socklen_t length,
						       cportcullis_http_handler handler, void *context);
/*
 * Connections it shut: not a complete request within 5 s of their start or last answer, or the
 * oldest of an address (all of loopback is one) that opened a ninth.
 */
unsigned long cportcullis_http_connections_cut(struct cportcullis_http_server *server);
/* The port it listens on. */
uint16_t cportcullis_http_port(const struct cportcullis_http_server *server);
/* Stops the thread, closes every connection and frees the server. */
void cportcullis_http_stop(struct cportcullis_http_server *server);

#endif /* CPORTCULLIS_HTTP_H */
