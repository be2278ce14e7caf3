/*
 * cli_http.c — the EBS direct API client of `amid import` and `amid export` (cli_http.h).
 *
 * One request goes: canonical query and payload hash built here, SigV4 by curl
 * ("aws:amz:REGION:SERVICE"), the answer's body into a capped buffer (or straight into the
 * caller's block buffer), the headers the EBS APIs answer in (x-amz-Checksum...) picked out as
 * they arrive.  Failures that may pass (throttling, 5xx, a dropped connection) are retried with
 * exponential backoff and jitter; the rest come back as the service's code and message.
 */
#include "cli/cli_http.h"
#include "crypto/crypto.h"
#include "util/util.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define BLOCK_SIZE     524288
#define JSON_BODY_MAX  (16u << 20) /* a ListSnapshotBlocks page of 10000 blocks is ~1 MiB */
#define MAX_ATTEMPTS   8
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define LIST_PAGE_MAX  10000

struct cli_ebs {
    char *endpoint;     /* no trailing slash */
    char *ec2_endpoint; /* for DeleteSnapshot */
    char region[64];
    char *key;
    char *secret;
    char *token; /* AWS_SESSION_TOKEN, or NULL */
    char sigv4_ebs[128];
    char sigv4_ec2[128];
    bool curl_inited;
};

struct cli_ebs_conn {
    struct cli_ebs *c;
    CURL *h;
    char errbuf[CURL_ERROR_SIZE];
};

/* One request, as the calls below describe it. */
struct rq {
    const char *method;
    bool ec2;          /* EC2 endpoint and service instead of EBS */
    const char *path;  /* already percent-encoded */
    const char *query; /* canonical (sorted, encoded), or NULL */
    const char *content_type;
    const void *body;
    size_t body_len;
    const uint8_t *body_sha256; /* the body's SHA-256 when the caller has it, else NULL */
    const char *const *headers; /* extra "Name: value" lines, NULL-terminated, or NULL */
    void *out;                  /* fixed buffer for the body (a block), or NULL */
    size_t out_cap;
};

/* What came back. */
struct rs {
    long status;
    struct buf body; /* when rq.out is NULL */
    size_t out_len;
    bool out_over; /* more body than out_cap: the transfer was cut */
    char checksum[96];
    char algorithm[32];
    char data_len[32];
    char errtype[128];
};

void cli_ebs_err_format(const struct cli_ebs_err *e, char *out, size_t outlen)
{
    if (e->status)
        snprintf(out, outlen, "%s: %s (HTTP %ld%s%s)", e->code[0] ? e->code : "Error", e->msg,
                 e->status, e->reason[0] ? ", " : "", e->reason);
    else
        snprintf(out, outlen, "%s: %s", e->code[0] ? e->code : "RequestError", e->msg);
}

static int seterr(struct cli_ebs_err *e, int rc, long status, const char *code, const char *fmt,
                  ...) PRINTF(5, 6);

static int seterr(struct cli_ebs_err *e, int rc, long status, const char *code, const char *fmt,
                  ...)
{
    if (!e)
        return rc;
    e->status = status;
    snprintf(e->code, sizeof(e->code), "%s", code);
    e->reason[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- the client ---- */

static char *dup_endpoint(const char *url)
{
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        n--;
    return strndup(url, n);
}

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int cli_ebs_new(const char *region, struct cli_ebs **ret, struct cli_ebs_err *e)
{
    const char *key = env_nonempty("AWS_ACCESS_KEY_ID");
    const char *secret = env_nonempty("AWS_SECRET_ACCESS_KEY");
    if (!key || !secret)
        return seterr(e, -EINVAL, 0, "MissingCredentials", "%s",
                      "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (or give --data "
                      "DIR to work on a data directory directly)");
    if (!region)
        region = env_nonempty("AWS_REGION");
    if (!region)
        region = env_nonempty("AWS_DEFAULT_REGION");
    if (!region)
        region = "us-east-1";
    if (strlen(region) >= 64 ||
        strspn(region, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(region))
        return seterr(e, -EINVAL, 0, "InvalidRegion", "'%s' is not a region name", region);
    struct cli_ebs *c = calloc(1, sizeof(*c));
    if (!c)
        return seterr(e, -ENOMEM, 0, "RequestError", "out of memory");
    snprintf(c->region, sizeof(c->region), "%s", region);
    const char *ep = env_nonempty("AWS_ENDPOINT_URL_EBS");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    const char *ep2 = env_nonempty("AWS_ENDPOINT_URL_EC2");
    if (!ep2)
        ep2 = env_nonempty("AWS_ENDPOINT_URL");
    char aws[160];
    snprintf(aws, sizeof(aws), "https://ebs.%s.amazonaws.com", c->region);
    c->endpoint = dup_endpoint(ep ? ep : aws);
    snprintf(aws, sizeof(aws), "https://ec2.%s.amazonaws.com", c->region);
    c->ec2_endpoint = dup_endpoint(ep2 ? ep2 : aws);
    c->key = strdup(key);
    c->secret = strdup(secret);
    const char *tok = env_nonempty("AWS_SESSION_TOKEN");
    c->token = tok ? strdup(tok) : NULL;
    snprintf(c->sigv4_ebs, sizeof(c->sigv4_ebs), "aws:amz:%s:ebs", c->region);
    snprintf(c->sigv4_ec2, sizeof(c->sigv4_ec2), "aws:amz:%s:ec2", c->region);
    if (!c->endpoint || !c->ec2_endpoint || !c->key || !c->secret || (tok && !c->token)) {
        cli_ebs_free(c);
        return seterr(e, -ENOMEM, 0, "RequestError", "out of memory");
    }
    if (!str_startswith(c->endpoint, "http://") && !str_startswith(c->endpoint, "https://")) {
        seterr(e, -EINVAL, 0, "InvalidEndpoint", "the endpoint '%s' is not an http(s) URL",
               c->endpoint);
        cli_ebs_free(c);
        return -EINVAL;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cli_ebs_free(c);
        return seterr(e, -EIO, 0, "RequestError", "libcurl cannot be initialised");
    }
    c->curl_inited = true;
    *ret = c;
    return 0;
}

static void wipe_free(char *s)
{
    if (s) {
        crypto_wipe(s, strlen(s));
        free(s);
    }
}

void cli_ebs_free(struct cli_ebs *c)
{
    if (!c)
        return;
    free(c->endpoint);
    free(c->ec2_endpoint);
    free(c->key);
    wipe_free(c->secret);
    wipe_free(c->token);
    if (c->curl_inited)
        curl_global_cleanup();
    free(c);
}

const char *cli_ebs_region(const struct cli_ebs *c)
{
    return c->region;
}

const char *cli_ebs_endpoint(const struct cli_ebs *c)
{
    return c->endpoint;
}

int cli_ebs_conn_new(struct cli_ebs *c, struct cli_ebs_conn **ret)
{
    struct cli_ebs_conn *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->c = c;
    k->h = curl_easy_init();
    if (!k->h) {
        free(k);
        return -ENOMEM;
    }
    *ret = k;
    return 0;
}

void cli_ebs_conn_free(struct cli_ebs_conn *k)
{
    if (!k)
        return;
    curl_easy_cleanup(k->h);
    free(k);
}

/* ---- one request ---- */

struct sink {
    struct rs *rs;
    const struct rq *rq;
};

static size_t on_body_sink(char *p, size_t size, size_t n, void *ctx)
{
    struct sink *s = ctx;
    size_t len = size * n;
    if (s->rq->out) {
        if (s->rs->out_len + len > s->rq->out_cap) {
            s->rs->out_over = true;
            return 0; /* cuts the transfer: CURLE_WRITE_ERROR */
        }
        memcpy((char *)s->rq->out + s->rs->out_len, p, len);
        s->rs->out_len += len;
        return len;
    }
    return buf_append(&s->rs->body, p, len) == 0 ? len : 0;
}

static void header_value(const char *line, size_t n, char *out, size_t outlen)
{
    const char *colon = memchr(line, ':', n);
    if (!colon)
        return;
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t l = (size_t)(end - v);
    if (l >= outlen)
        l = outlen - 1;
    memcpy(out, v, l);
    out[l] = '\0';
}

static bool header_is(const char *line, size_t n, const char *name)
{
    size_t l = strlen(name);
    return n > l && line[l] == ':' && strncasecmp(line, name, l) == 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ctx)
{
    struct rs *r = ctx;
    size_t len = size * n;
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the previous one's headers. */
        r->checksum[0] = r->algorithm[0] = r->data_len[0] = r->errtype[0] = '\0';
    } else if (header_is(p, len, "x-amz-Checksum")) {
        header_value(p, len, r->checksum, sizeof(r->checksum));
    } else if (header_is(p, len, "x-amz-Checksum-Algorithm")) {
        header_value(p, len, r->algorithm, sizeof(r->algorithm));
    } else if (header_is(p, len, "x-amz-Data-Length")) {
        header_value(p, len, r->data_len, sizeof(r->data_len));
    } else if (header_is(p, len, "x-amzn-ErrorType")) {
        header_value(p, len, r->errtype, sizeof(r->errtype));
    }
    return len;
}

/* Copies the text between `open` and `close` tags of an XML error. */
static void xml_field(const char *t, const char *open, const char *close, char *out, size_t outlen)
{
    const char *a = strstr(t, open);
    if (!a)
        return;
    a += strlen(open);
    const char *b = strstr(a, close);
    if (!b)
        return;
    size_t l = (size_t)(b - a);
    if (l >= outlen)
        l = outlen - 1;
    memcpy(out, a, l);
    out[l] = '\0';
}

/* Fills `e` from an error answer: the x-amzn-ErrorType header, a JSON body (`__type`,
 * `message`, `Reason`) or an EC2/STS XML body. */
static void parse_error(const struct rs *r, const char *body, size_t n, struct cli_ebs_err *e)
{
    e->status = r->status;
    e->code[0] = e->reason[0] = e->msg[0] = '\0';
    if (r->errtype[0]) {
        snprintf(e->code, sizeof(e->code), "%s", r->errtype);
        e->code[strcspn(e->code, ":")] = '\0';
    }
    json_t *j = n ? json_loadb(body, n, 0, NULL) : NULL;
    if (json_is_object(j)) {
        const char *t = json_string_value(json_object_get(j, "__type"));
        if (!e->code[0] && t) {
            const char *hash = strrchr(t, '#');
            snprintf(e->code, sizeof(e->code), "%s", hash ? hash + 1 : t);
        }
        const char *m = json_string_value(json_object_get(j, "message"));
        if (!m)
            m = json_string_value(json_object_get(j, "Message"));
        if (m)
            snprintf(e->msg, sizeof(e->msg), "%s", m);
        const char *rsn = json_string_value(json_object_get(j, "Reason"));
        if (rsn)
            snprintf(e->reason, sizeof(e->reason), "%s", rsn);
    } else if (n) {
        char text[4096];
        size_t l = n < sizeof(text) - 1 ? n : sizeof(text) - 1;
        memcpy(text, body, l);
        text[l] = '\0';
        if (!e->code[0])
            xml_field(text, "<Code>", "</Code>", e->code, sizeof(e->code));
        xml_field(text, "<Message>", "</Message>", e->msg, sizeof(e->msg));
    }
    json_decref(j);
    if (!e->code[0])
        snprintf(e->code, sizeof(e->code), "HTTP%ld", r->status);
    if (!e->msg[0])
        snprintf(e->msg, sizeof(e->msg), "the service answered HTTP %ld", r->status);
}

static bool retryable_status(long status, const struct cli_ebs_err *e)
{
    if (status == 429 || status >= 500)
        return true;
    return strstr(e->code, "Throttl") != NULL || strcmp(e->code, "RequestLimitExceeded") == 0;
}

static int errno_of_status(long status)
{
    if (status == 401 || status == 403)
        return -EACCES;
    if (status == 404)
        return -ENOENT;
    if (status >= 400 && status < 500)
        return -EINVAL;
    return -EIO;
}

static void backoff(int attempt)
{
    unsigned cap = BACKOFF_MIN_MS << (attempt < 10 ? attempt : 10);
    if (cap > BACKOFF_MAX_MS)
        cap = BACKOFF_MAX_MS;
    uint32_t r = 0;
    if (rand_bytes(&r, sizeof(r)) < 0)
        r = (uint32_t)time(NULL);
    /* Jitter over the upper half, so that parallel workers spread out. */
    unsigned ms = cap / 2 + r % (cap / 2 + 1);
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Performs `q` once.  Returns the CURLcode; fills `r`. */
static CURLcode perform_once(struct cli_ebs_conn *k, const struct rq *q, const char *url,
                             struct curl_slist *hdrs, struct rs *r)
{
    struct cli_ebs *c = k->c;
    CURL *h = k->h;
    /* Reset keeps the live connection: only the options go. */
    curl_easy_reset(h);
    r->status = 0;
    r->out_len = 0;
    r->out_over = false;
    buf_reset(&r->body);
    r->checksum[0] = r->algorithm[0] = r->data_len[0] = r->errtype[0] = '\0';
    k->errbuf[0] = '\0';
    struct sink s = { r, q };
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, k->errbuf);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "amid/0.1.0");
    curl_easy_setopt(h, CURLOPT_USERNAME, c->key);
    curl_easy_setopt(h, CURLOPT_PASSWORD, c->secret);
    curl_easy_setopt(h, CURLOPT_AWS_SIGV4, q->ec2 ? c->sigv4_ec2 : c->sigv4_ebs);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body_sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 120L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    if (strcmp(q->method, "GET") == 0) {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
        /* The body from memory; the method named explicitly for PUT. */
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? (const char *)q->body : "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
        if (strcmp(q->method, "POST") != 0)
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
    }
    CURLcode cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
    return cc;
}

static bool transport_retryable(CURLcode cc)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
        return true;
    default:
        return false;
    }
}

/*
 * Performs `q` with retries.  On a 2xx answer returns 0 with `r` filled; otherwise a negative
 * errno with `e` set.  `validate` (optional) checks a 2xx answer; a failed check is retried
 * too (a block damaged in transit) and its errno returned at the end.
 */
static int perform(struct cli_ebs_conn *k, const struct rq *q, struct rs *r,
                   int (*validate)(const struct rq *q, const struct rs *r, struct cli_ebs_err *e),
                   struct cli_ebs_err *e)
{
    struct cli_ebs *c = k->c;
    struct buf url;
    buf_init(&url, 16384);
    int rc = buf_printf(&url, "%s%s%s%s", q->ec2 ? c->ec2_endpoint : c->endpoint, q->path,
                        q->query ? "?" : "", q->query ? q->query : "");
    if (rc < 0) {
        buf_free(&url);
        return seterr(e, -E2BIG, 0, "RequestError", "the request URL is too long");
    }
    /* The payload hash: curl's signer needs it given, for a streamed body as for any other. */
    uint8_t h[32];
    char hex[65];
    if (q->body_sha256)
        memcpy(h, q->body_sha256, 32);
    else
        crypto_sha256(q->body ? q->body : "", q->body_len, h);
    hex_encode(h, 32, hex);
    struct curl_slist *hdrs = NULL, *t;
    char line[2300];
    snprintf(line, sizeof(line), "x-amz-content-sha256: %s", hex);
    hdrs = curl_slist_append(hdrs, line);
    if (q->content_type) {
        snprintf(line, sizeof(line), "Content-Type: %s", q->content_type);
        if (hdrs && (t = curl_slist_append(hdrs, line)))
            hdrs = t;
    }
    if (c->token && hdrs) {
        struct buf tk;
        buf_init(&tk, 8192);
        if (buf_printf(&tk, "x-amz-security-token: %s", c->token) == 0 &&
            (t = curl_slist_append(hdrs, tk.data)))
            hdrs = t;
        buf_free(&tk);
    }
    for (size_t i = 0; hdrs && q->headers && q->headers[i]; i++)
        if ((t = curl_slist_append(hdrs, q->headers[i])))
            hdrs = t;
    if (!hdrs) {
        buf_free(&url);
        return seterr(e, -ENOMEM, 0, "RequestError", "out of memory");
    }
    rc = -EIO;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        if (attempt)
            backoff(attempt - 1);
        CURLcode cc = perform_once(k, q, url.data, hdrs, r);
        if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->out_over)) {
            rc = seterr(e, -EIO, 0, "RequestError", "%s %s: %s", q->method, url.data,
                        k->errbuf[0] ? k->errbuf : curl_easy_strerror(cc));
            /* Nobody listening: a few tries, not the full patience. */
            bool refused = cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST;
            if (cc == CURLE_COULDNT_RESOLVE_HOST || (refused && attempt >= 2) ||
                !transport_retryable(cc))
                break;
            continue;
        }
        if (r->status >= 200 && r->status < 300) {
            if (r->out_over) {
                rc = seterr(e, -EBADMSG, r->status, "InvalidResponse",
                            "the answer to %s %s is larger than expected", q->method, q->path);
                break;
            }
            rc = validate ? validate(q, r, e) : 0;
            if (rc == 0 || rc != -EBADMSG)
                break;
            continue;
        }
        const char *body = q->out ? q->out : r->body.data;
        parse_error(r, body ? body : "", q->out ? r->out_len : r->body.len, e);
        rc = errno_of_status(r->status);
        if (!retryable_status(r->status, e))
            break;
    }
    curl_slist_free_all(hdrs);
    buf_free(&url);
    return rc;
}

static void rs_init(struct rs *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, JSON_BODY_MAX);
}

static json_t *rs_json(const struct rs *r, struct cli_ebs_err *e)
{
    json_t *j = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        seterr(e, -EBADMSG, r->status, "InvalidResponse", "%s",
               "the service's answer is not a JSON object");
        return NULL;
    }
    return j;
}

/* Percent-encodes `s` for a path segment or a query value (SigV4's rules). */
static int enc(struct buf *b, const char *s)
{
    return uri_encode(b, s, strlen(s), false);
}

/* ---- the calls ---- */

int cli_ebs_start(struct cli_ebs_conn *k, int64_t size_gib, const char *description,
                  int timeout_min, bool encrypted, const char *kms_key, char ret_id[64],
                  struct cli_ebs_err *e)
{
    /* A client token makes the retry of a StartSnapshot whose answer was lost return the same
     * snapshot instead of a second one. */
    uint8_t rnd[16];
    char token[33];
    if (rand_bytes(rnd, sizeof(rnd)) < 0)
        return seterr(e, -EIO, 0, "RequestError", "no randomness");
    hex_encode(rnd, sizeof(rnd), token);
    json_t *in = json_pack("{s:I, s:i, s:s}", "VolumeSize", (json_int_t)size_gib, "Timeout",
                           timeout_min, "ClientToken", token);
    if (in && description)
        json_object_set_new(in, "Description", json_string(description));
    if (in && encrypted)
        json_object_set_new(in, "Encrypted", json_true());
    if (in && kms_key)
        json_object_set_new(in, "KmsKeyArn", json_string(kms_key));
    char *body = in ? json_dumps(in, JSON_COMPACT) : NULL;
    json_decref(in);
    if (!body)
        return seterr(e, -ENOMEM, 0, "RequestError", "out of memory");
    struct rq q = { .method = "POST",
                    .path = "/snapshots",
                    .content_type = "application/json",
                    .body = body,
                    .body_len = strlen(body) };
    struct rs r;
    rs_init(&r);
    int rc = perform(k, &q, &r, NULL, e);
    free(body);
    json_t *j = rc == 0 ? rs_json(&r, e) : NULL;
    if (rc == 0 && !j)
        rc = -EBADMSG;
    if (j) {
        const char *id = json_string_value(json_object_get(j, "SnapshotId"));
        if (!id || strlen(id) >= 64 || !*id)
            rc = seterr(e, -EBADMSG, r.status, "InvalidResponse", "%s",
                        "StartSnapshot answered without a SnapshotId");
        else
            snprintf(ret_id, 64, "%s", id);
    }
    json_decref(j);
    buf_free(&r.body);
    return rc;
}

int cli_ebs_put(struct cli_ebs_conn *k, const char *id, int64_t idx, const void *data,
                const uint8_t sha256[32], struct cli_ebs_err *e)
{
    struct buf path;
    buf_init(&path, 512);
    int rc = buf_puts(&path, "/snapshots/");
    if (rc == 0)
        rc = enc(&path, id);
    if (rc == 0)
        rc = buf_printf(&path, "/blocks/%lld", (long long)idx);
    if (rc < 0) {
        buf_free(&path);
        return seterr(e, -EINVAL, 0, "RequestError", "bad snapshot id");
    }
    char b64[64], h1[96], h2[64], h3[64];
    base64_encode(sha256, 32, b64);
    snprintf(h1, sizeof(h1), "x-amz-Checksum: %s", b64);
    snprintf(h2, sizeof(h2), "x-amz-Checksum-Algorithm: SHA256");
    snprintf(h3, sizeof(h3), "x-amz-Data-Length: %d", BLOCK_SIZE);
    const char *hdrs[] = { h1, h2, h3, NULL };
    struct rq q = { .method = "PUT",
                    .path = path.data,
                    .content_type = "application/octet-stream",
                    .body = data,
                    .body_len = BLOCK_SIZE,
                    .body_sha256 = sha256,
                    .headers = hdrs };
    struct rs r;
    rs_init(&r);
    rc = perform(k, &q, &r, NULL, e);
    buf_free(&r.body);
    buf_free(&path);
    return rc;
}

int cli_ebs_complete(struct cli_ebs_conn *k, const char *id, int64_t changed_blocks,
                     const uint8_t linear[32], char ret_status[32], struct cli_ebs_err *e)
{
    struct buf path;
    buf_init(&path, 512);
    int rc = buf_puts(&path, "/snapshots/completion/");
    if (rc == 0)
        rc = enc(&path, id);
    if (rc < 0) {
        buf_free(&path);
        return seterr(e, -EINVAL, 0, "RequestError", "bad snapshot id");
    }
    char b64[64], h1[64], h2[96], h3[64], h4[64];
    base64_encode(linear, 32, b64);
    snprintf(h1, sizeof(h1), "x-amz-ChangedBlocksCount: %lld", (long long)changed_blocks);
    snprintf(h2, sizeof(h2), "x-amz-Checksum: %s", b64);
    snprintf(h3, sizeof(h3), "x-amz-Checksum-Algorithm: SHA256");
    snprintf(h4, sizeof(h4), "x-amz-Checksum-Aggregation-Method: LINEAR");
    const char *hdrs[] = { h1, h2, h3, h4, NULL };
    struct rq q = {
        .method = "POST", .path = path.data, .content_type = "application/json", .headers = hdrs
    };
    struct rs r;
    rs_init(&r);
    rc = perform(k, &q, &r, NULL, e);
    json_t *j = rc == 0 ? rs_json(&r, e) : NULL;
    if (rc == 0 && !j)
        rc = -EBADMSG;
    if (j) {
        const char *st = json_string_value(json_object_get(j, "Status"));
        snprintf(ret_status, 32, "%s", st ? st : "");
    }
    json_decref(j);
    buf_free(&r.body);
    buf_free(&path);
    return rc;
}

int cli_ebs_list(struct cli_ebs_conn *k, const char *id, const char *page_token,
                 int (*fn)(void *ctx, int64_t idx, const char *token), void *ctx,
                 int64_t *ret_size_gib, char **ret_next, struct cli_ebs_err *e)
{
    *ret_next = NULL;
    struct buf path, query;
    buf_init(&path, 512);
    buf_init(&query, 8192);
    int rc = buf_puts(&path, "/snapshots/");
    if (rc == 0)
        rc = enc(&path, id);
    if (rc == 0)
        rc = buf_puts(&path, "/blocks");
    /* Sorted by name, as SigV4's canonical query wants them. */
    if (rc == 0)
        rc = buf_printf(&query, "maxResults=%d", LIST_PAGE_MAX);
    if (rc == 0 && page_token) {
        rc = buf_puts(&query, "&pageToken=");
        if (rc == 0)
            rc = enc(&query, page_token);
    }
    if (rc < 0) {
        buf_free(&path);
        buf_free(&query);
        return seterr(e, -EINVAL, 0, "RequestError", "bad snapshot id or page token");
    }
    struct rq q = { .method = "GET", .path = path.data, .query = query.data };
    struct rs r;
    rs_init(&r);
    rc = perform(k, &q, &r, NULL, e);
    json_t *j = rc == 0 ? rs_json(&r, e) : NULL;
    if (rc == 0 && !j)
        rc = -EBADMSG;
    if (j) {
        json_t *vs = json_object_get(j, "VolumeSize");
        json_t *blocks = json_object_get(j, "Blocks");
        if (!json_is_integer(vs) || (blocks && !json_is_array(blocks)))
            rc = seterr(e, -EBADMSG, r.status, "InvalidResponse", "%s",
                        "ListSnapshotBlocks answered without VolumeSize or Blocks");
        else
            *ret_size_gib = json_integer_value(vs);
        size_t i;
        json_t *b;
        json_array_foreach(blocks, i, b)
        {
            if (rc < 0)
                break;
            json_t *bi = json_object_get(b, "BlockIndex");
            const char *tok = json_string_value(json_object_get(b, "BlockToken"));
            if (!json_is_integer(bi) || !tok)
                rc = seterr(e, -EBADMSG, r.status, "InvalidResponse", "%s",
                            "a block without BlockIndex or BlockToken");
            else
                rc = fn(ctx, json_integer_value(bi), tok);
        }
        const char *next = json_string_value(json_object_get(j, "NextToken"));
        if (rc == 0 && next && *next) {
            *ret_next = strdup(next);
            if (!*ret_next)
                rc = seterr(e, -ENOMEM, 0, "RequestError", "out of memory");
        }
    }
    json_decref(j);
    buf_free(&r.body);
    buf_free(&path);
    buf_free(&query);
    return rc;
}

static int verify_block(const struct rq *q, const struct rs *r, struct cli_ebs_err *e)
{
    if (r->out_len != BLOCK_SIZE || (r->data_len[0] && atol(r->data_len) != BLOCK_SIZE))
        return seterr(e, -EBADMSG, r->status, "InvalidResponse",
                      "GetSnapshotBlock returned %zu bytes, not %d", r->out_len, BLOCK_SIZE);
    if (r->algorithm[0] && strcmp(r->algorithm, "SHA256") != 0)
        return seterr(e, -EINVAL, r->status, "InvalidResponse",
                      "GetSnapshotBlock uses checksum algorithm %s, not SHA256", r->algorithm);
    uint8_t want[48], got[32];
    size_t n = 0;
    size_t cl = strlen(r->checksum);
    if (cl == 0 || cl > 64 || base64_decode(r->checksum, cl, false, want, &n) < 0 || n != 32)
        return seterr(e, -EBADMSG, r->status, "InvalidResponse", "%s",
                      "GetSnapshotBlock answered without a SHA-256 x-amz-Checksum");
    crypto_sha256(q->out, BLOCK_SIZE, got);
    if (!crypto_memeq(want, got, 32))
        return seterr(e, -EBADMSG, r->status, "ChecksumMismatch", "%s",
                      "a block's data does not match its x-amz-Checksum");
    return 0;
}

int cli_ebs_get(struct cli_ebs_conn *k, const char *id, int64_t idx, const char *token, void *buf,
                struct cli_ebs_err *e)
{
    struct buf path, query;
    buf_init(&path, 512);
    buf_init(&query, 4096);
    int rc = buf_puts(&path, "/snapshots/");
    if (rc == 0)
        rc = enc(&path, id);
    if (rc == 0)
        rc = buf_printf(&path, "/blocks/%lld", (long long)idx);
    if (rc == 0)
        rc = buf_puts(&query, "blockToken=");
    if (rc == 0)
        rc = enc(&query, token);
    if (rc < 0) {
        buf_free(&path);
        buf_free(&query);
        return seterr(e, -EINVAL, 0, "RequestError", "bad snapshot id or block token");
    }
    struct rq q = {
        .method = "GET", .path = path.data, .query = query.data, .out = buf, .out_cap = BLOCK_SIZE
    };
    struct rs r;
    rs_init(&r);
    rc = perform(k, &q, &r, verify_block, e);
    buf_free(&r.body);
    buf_free(&path);
    buf_free(&query);
    return rc;
}

int cli_ec2_delete_snapshot(struct cli_ebs_conn *k, const char *id, struct cli_ebs_err *e)
{
    struct buf body;
    buf_init(&body, 512);
    int rc = buf_puts(&body, "Action=DeleteSnapshot&SnapshotId=");
    if (rc == 0)
        rc = enc(&body, id);
    if (rc == 0)
        rc = buf_puts(&body, "&Version=2016-11-15");
    if (rc < 0) {
        buf_free(&body);
        return seterr(e, -EINVAL, 0, "RequestError", "bad snapshot id");
    }
    struct rq q = { .method = "POST",
                    .ec2 = true,
                    .path = "/",
                    .content_type = "application/x-www-form-urlencoded; charset=utf-8",
                    .body = body.data,
                    .body_len = body.len };
    struct rs r;
    rs_init(&r);
    rc = perform(k, &q, &r, NULL, e);
    buf_free(&r.body);
    buf_free(&body);
    return rc;
}
