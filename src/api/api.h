/*
 * api.h — the daemon's front door: HTTP (libmicrohttpd), SigV4, the AWS wire protocols and the
 * one table from domain errors to AWS error codes and HTTP statuses.
 *
 * A request travels: HTTP (api_http.c) -> api_handle (api_dispatch.c): protocol sniffing,
 * SigV4, service and operation lookup, model-driven decoding -> an operation handler, which
 * calls core -> model-driven encoding of the result or the error.
 */
#ifndef AMID_API_H
#define AMID_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

struct app;
struct api;

struct api_config {
    const char *listen;       /* "127.0.0.1:8773" */
    size_t max_body;          /* bytes; larger requests get 413 without their body being read */
    size_t max_header;        /* bytes of request line and headers together */
    unsigned max_connections; /* concurrent connections */
    unsigned threads;         /* worker threads */
    int time_window_s;        /* SigV4 clock skew allowed, seconds (default 900) */
    bool access_log;          /* one key=value line per request on stderr */
    size_t response_cache;    /* bytes of answers to repeated reads kept (0: none) */
};

/* Fills `cfg` with the defaults. */
void api_config_default(struct api_config *cfg);

/* Creates the front door for `app` (which must outlive it).  *ret is freed with api_free. */
int api_new(struct app *app, const struct api_config *cfg, struct api **ret);
/* Binds and starts serving in background threads.  -EADDRINUSE when the port is taken,
 * -EINVAL for a malformed listen address; `e` says which. */
int api_start(struct api *api, struct err *e);
/* Stops serving: no new connections, in-flight requests finish.  Idempotent. */
void api_stop(struct api *api);
void api_free(struct api *api);

/* ---- the transport-independent request path (used by the HTTP glue, tests and fuzzing) ---- */

struct api_header {
    const char *name;
    const char *value;
};

struct api_request {
    const char *method;
    const char *path;  /* raw, still percent-encoded */
    const char *query; /* raw query string without '?', "" when none */
    const struct api_header *headers;
    size_t nheaders;
    const char *body;
    size_t body_len;
    const char *remote; /* peer address for the access log */
};

#define API_MAX_RESP_HEADERS 12

struct api_response {
    int status;
    const char *content_type;
    struct buf body;
    char request_id[40];
    struct {
        const char *name;
        char value[256];
    } headers[API_MAX_RESP_HEADERS];
    size_t nheaders;
    /* what the access log records */
    char service[16];
    char action[64];
    char account[16];
    char error_code[64];
};

/* Answers one request.  Always fills `resp` (the caller frees resp->body with buf_free). */
void api_handle(struct api *api, const struct api_request *req, struct api_response *resp);

/* Adds a response header (name must be a string literal); silently drops past the limit. */
void api_response_header(struct api_response *resp, const char *name, const char *fmt, ...)
    PRINTF(3, 4);

#endif
