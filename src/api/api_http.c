/*
 * api_http.c — HTTP on libmicrohttpd: the listening socket, per-request state with hard caps
 * (headers through MHD's per-connection memory limit, bodies through a bounded buffer: a
 * declared Content-Length past the cap gets 413 before any of the body is read), the request id
 * header, and one key=value access-log line per request that never holds a secret or signature.
 */
#include "api/api_int.h"
#include "core/core.h"
#include "crypto/crypto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_HEADERS 128

struct conn_state {
    char *uri; /* raw request target, as sent */
    struct buf body;
    bool started;
    bool too_big;
    bool answered;
    int64_t start_us;
};

void api_config_default(struct api_config *cfg)
{
    cfg->listen = CORE_DEFAULT_LISTEN;
    cfg->max_body = (size_t)1 << 20;
    cfg->max_header = 32 << 10;
    cfg->max_connections = 512;
    cfg->threads = 4;
    cfg->time_window_s = 900;
    cfg->access_log = true;
    cfg->response_cache = (size_t)64 << 20;
}

int api_new(struct app *app, const struct api_config *cfg, struct api **ret)
{
    struct api *api = calloc(1, sizeof(*api));
    if (!api)
        return -ENOMEM;
    api->app = app;
    api->cfg = *cfg;
    snprintf(api->listen_copy, sizeof(api->listen_copy), "%s", cfg->listen);
    api->cfg.listen = api->listen_copy;
    core_subkey(app, "amid.pagination-tokens.v1", api->token_key);
    if (cfg->response_cache && api_cache_new(cfg->response_cache, &api->cache) < 0) {
        free(api);
        return -ENOMEM;
    }
    *ret = api;
    return 0;
}

/* MHD calls this with the raw request target before parsing it; its result becomes the
 * request's state. */
static void *uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    struct api *api = cls;
    struct conn_state *st = calloc(1, sizeof(*st));
    if (!st)
        return NULL;
    st->uri = strdup(uri ? uri : "/");
    buf_init(&st->body, api->cfg.max_body);
    st->start_us = time_mono_us();
    return st;
}

static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
    (void)cls;
    (void)c;
    return strlen(s);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct conn_state *st = *con_cls;
    if (!st)
        return;
    buf_free(&st->body);
    free(st->uri);
    free(st);
    *con_cls = NULL;
}

struct hdr_acc {
    struct api_header h[MAX_HEADERS];
    size_t n;
    bool overflow;
};

static enum MHD_Result header_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value)
{
    (void)kind;
    struct hdr_acc *a = cls;
    if (a->n == MAX_HEADERS) {
        a->overflow = true;
        return MHD_NO;
    }
    a->h[a->n].name = key;
    a->h[a->n].value = value ? value : "";
    a->n++;
    return MHD_YES;
}

static enum MHD_Result send_simple(struct MHD_Connection *conn, int status, const char *ctype,
                                   const char *body, const char *rid)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    MHD_add_response_header(r, "x-amzn-RequestId", rid);
    MHD_add_response_header(r, "Server", "amid");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static void peer_of(struct MHD_Connection *conn, char *out, size_t outlen)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, outlen, "-");
    if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)ci->client_addr;
        inet_ntop(AF_INET, &in->sin_addr, out, (socklen_t)outlen);
    }
}

static void access_log(struct api *api, const char *method, const char *path, const char *peer,
                       const struct api_response *resp, size_t in_bytes, int64_t start_us)
{
    if (!api->cfg.access_log)
        return;
    char safe_path[128];
    /* The path never carries credentials (presigned ones sit in the query, never logged). */
    snprintf(safe_path, sizeof(safe_path), "%.120s", path);
    for (char *p = safe_path; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == '"')
            *p = '_';
    log_msg(LOG_INFO,
            "event=request rid=%s peer=%s method=%.8s path=%s service=%s action=%s account=%s "
            "status=%d error=%s in=%zu out=%zu us=%lld",
            resp->request_id, peer, method, safe_path, resp->service[0] ? resp->service : "-",
            resp->action[0] ? resp->action : "-", resp->account[0] ? resp->account : "-",
            resp->status, resp->error_code[0] ? resp->error_code : "-", in_bytes, resp->body.len,
            (long long)(time_mono_us() - start_us));
}

static enum MHD_Result reply_413(struct api *api, struct MHD_Connection *conn,
                                 struct conn_state *st, const char *method, const char *peer)
{
    struct api_response r = { .status = 413 };
    uint8_t rb[16];
    rand_bytes(rb, sizeof(rb));
    hex_encode(rb, sizeof(rb), r.request_id);
    snprintf(r.error_code, sizeof(r.error_code), "RequestEntityTooLarge");
    access_log(api, method, st->uri, peer, &r, st->body.len, st->start_us);
    st->answered = true;
    return send_simple(conn, 413, "text/xml;charset=UTF-8",
                       "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
                       "<Code>RequestEntityTooLarge</Code><Message>The request body is larger "
                       "than this endpoint accepts</Message></Error></Errors></Response>",
                       r.request_id);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload_data,
                               size_t *upload_data_size, void **con_cls)
{
    (void)url;
    (void)version;
    struct api *api = cls;
    struct conn_state *st = *con_cls;
    if (!st)
        return MHD_NO;
    if (st->answered)
        return MHD_YES;
    char peer[64];
    if (!st->started) {
        /* First call, headers only: refuse a declared oversized body before reading it. */
        st->started = true;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > api->cfg.max_body) {
            peer_of(conn, peer, sizeof(peer));
            return reply_413(api, conn, st, method, peer);
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!st->too_big && buf_append(&st->body, upload_data, *upload_data_size) < 0)
            st->too_big = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    peer_of(conn, peer, sizeof(peer));
    if (st->too_big)
        return reply_413(api, conn, st, method, peer);
    struct hdr_acc h = { .n = 0 };
    MHD_get_connection_values(conn, MHD_HEADER_KIND, header_cb, &h);
    char *q = strchr(st->uri, '?');
    if (q)
        *q++ = '\0';
    struct api_request req = {
        .method = method,
        .path = st->uri,
        .query = q ? q : "",
        .headers = h.h,
        .nheaders = h.n,
        .body = st->body.data ? st->body.data : "",
        .body_len = st->body.len,
        .remote = peer,
    };
    struct api_response resp;
    api_handle(api, &req, &resp);
    access_log(api, method, st->uri, peer, &resp, st->body.len, st->start_us);
    size_t len = resp.body.len;
    char *body = buf_steal(&resp.body);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type",
                            resp.content_type ? resp.content_type : "text/xml;charset=UTF-8");
    MHD_add_response_header(r, "x-amzn-RequestId", resp.request_id);
    MHD_add_response_header(r, "Server", "amid");
    for (size_t i = 0; i < resp.nheaders; i++)
        MHD_add_response_header(r, resp.headers[i].name, resp.headers[i].value);
    st->answered = true;
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)resp.status, r);
    MHD_destroy_response(r);
    return ok;
}

static int parse_listen(const char *listen, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(listen, ':');
    if (!colon || (size_t)(colon - listen) >= sizeof(host))
        return -EINVAL;
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -EINVAL;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &sa->sin_addr) != 1)
        return -EINVAL;
    return 0;
}

int api_start(struct api *api, struct err *e)
{
    struct sockaddr_in sa;
    if (parse_listen(api->cfg.listen, &sa) < 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "invalid listen address '%s' (expected HOST:PORT, e.g. 127.0.0.1:8773)",
                       api->cfg.listen);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_set(e, -errno, "InternalError", "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int saved = errno;
        close(fd);
        if (saved == EADDRINUSE)
            return err_set(e, -EADDRINUSE, "InvalidParameterValue",
                           "cannot listen on %s: the address is already in use (is another "
                           "amid running?)",
                           api->cfg.listen);
        return err_set(e, -saved, "InvalidParameterValue", "cannot listen on %s: %s",
                       api->cfg.listen, strerror(saved));
    }
    if (listen(fd, 1024) < 0) {
        int saved = errno;
        close(fd);
        return err_set(e, -saved, "InternalError", "listen: %s", strerror(saved));
    }
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, handler, api, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)api->cfg.threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)api->cfg.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)api->cfg.max_header, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_URI_LOG_CALLBACK, uri_cb, api, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, api,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
    if (!d) {
        close(fd);
        return err_set(e, -EIO, "InternalError", "cannot start the HTTP server");
    }
    api->mhd = d;
    return 0;
}

void api_stop(struct api *api)
{
    if (api && api->mhd) {
        int fd = MHD_quiesce_daemon(api->mhd);
        MHD_stop_daemon(api->mhd);
        if (fd >= 0)
            close(fd);
        api->mhd = NULL;
    }
}

void api_free(struct api *api)
{
    if (!api)
        return;
    api_stop(api);
    crypto_wipe(api->token_key, sizeof(api->token_key));
    api_cache_free(api->cache);
    free(api);
}
