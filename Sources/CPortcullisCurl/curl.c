// SPDX-License-Identifier: Apache-2.0
#include "CPortcullisCurl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>

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
