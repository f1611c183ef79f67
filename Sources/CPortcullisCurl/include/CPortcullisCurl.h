/* SPDX-License-Identifier: Apache-2.0 */
/*
 * CPortcullisCurl.h - the CrowdSec client's HTTP(S) requests over libcurl (curl_easy_setopt is
 * variadic, so Swift cannot call it). Its own module so that only the program that talks to a
 * Local API (portcullisd) links libcurl; it includes no header of the library.
 */
#ifndef CPORTCULLIS_CURL_H
#define CPORTCULLIS_CURL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * An HTTP(S) client over libcurl's easy interface: one handle per thread, reused so that its
 * connection is kept alive between requests.
 */
struct cportcullis_curl_options {
	const char *user_agent;
	const char *ca_path;   /* CA bundle to verify the server with (NULL: the system's) */
	const char *cert_path; /* client certificate (NULL: none) */
	const char *key_path;  /* its key */
	bool insecure;	       /* verify neither the server's certificate nor its name */
	long timeout_ms;       /* the whole request */
	long connect_timeout_ms;
	size_t max_body;   /* a longer response is refused (CURLE_WRITE_ERROR, `too_long` set) */
	const int *cancel; /* when set (cportcullis_curl_cancel), a request under way ends (NULL: none) */
};
/* Sets `*flag`, which ends the requests that watch it within a second (atomically). */
void cportcullis_curl_cancel(int *flag);
struct cportcullis_curl_response {
	long status;
	char *body; /* malloc(3)ed, NUL-terminated; free with cportcullis_curl_free */
	size_t length;
	bool too_long;
	char error[256]; /* libcurl's message when the request failed */
};
/* A new handle, or NULL. Once per process before any: curl_global_init (cportcullis_curl_global). */
void *cportcullis_curl_new(void);
int cportcullis_curl_global(void);
void cportcullis_curl_close(void *handle);
/*
 * Sends `method` to `url` with `headers` (count of them, "Name: value" each) and `body` (may be
 * NULL), waits for the whole answer. Returns the CURLcode (0: an answer came, whatever its status).
 */
int cportcullis_curl_request(void *handle, const struct cportcullis_curl_options *options, const char *method,
			     const char *url, const char *const *headers, size_t count, const void *body,
			     size_t body_length, struct cportcullis_curl_response *response);
void cportcullis_curl_free(struct cportcullis_curl_response *response);

#endif /* CPORTCULLIS_CURL_H */
