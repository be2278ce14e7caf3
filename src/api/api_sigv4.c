/*
 * api_sigv4.c — AWS Signature Version 4 verification, for the Authorization header and for
 * presigned query strings.
 *
 * The server recomputes the signature from the request as received: the canonical request
 * (method, the path URI-encoded once more as AWS does for every service but S3, the query
 * parameters decoded, re-encoded strictly and sorted, the signed headers trimmed and joined,
 * the payload hash), the string to sign and the HMAC chain of the secret.  The comparison with
 * the client's signature is constant-time (api_dispatch.c).
 */
#include "api/api_int.h"
#include "core/core.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ALGORITHM        "AWS4-HMAC-SHA256"
#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"

const char *api_header_get(const struct api_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

/* Finds a raw (still encoded) query parameter by exact name; NULL when absent. */
static const char *raw_query_get(const char *q, const char *name, size_t *ret_len)
{
    size_t nl = strlen(name);
    const char *p = q;
    while (p && *p) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            *ret_len = seg - nl - 1;
            return p + nl + 1;
        }
        p = amp ? amp + 1 : NULL;
    }
    return NULL;
}

/* Copies a raw query value, percent-decoded, into out (truncating is an error). */
static int raw_query_copy(const char *q, const char *name, char *out, size_t outlen)
{
    size_t n;
    const char *v = raw_query_get(q, name, &n);
    if (!v)
        return -ENOENT;
    struct buf b;
    buf_init(&b, outlen - 1);
    int rc = uri_decode(&b, v, n, false);
    if (rc == 0)
        snprintf(out, outlen, "%s", b.data ? b.data : "");
    buf_free(&b);
    return rc;
}

/* Parses "KEY/DATE/REGION/SERVICE/aws4_request". */
static bool parse_credential(const char *s, size_t n, struct sigv4_auth *a)
{
    char tmp[256];
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *parts[6];
    int np = 0;
    char *save = NULL;
    for (char *t = strtok_r(tmp, "/", &save); t && np < 6; t = strtok_r(NULL, "/", &save))
        parts[np++] = t;
    if (np != 5)
        return false;
    if (strlen(parts[0]) >= sizeof(a->key_id) || strlen(parts[1]) != 8 ||
        strlen(parts[2]) >= sizeof(a->region) || strlen(parts[3]) >= sizeof(a->service) ||
        strlen(parts[4]) >= sizeof(a->terminator))
        return false;
    for (int i = 0; i < 8; i++)
        if (parts[1][i] < '0' || parts[1][i] > '9')
            return false;
    strcpy(a->key_id, parts[0]);
    strcpy(a->date, parts[1]);
    strcpy(a->region, parts[2]);
    strcpy(a->service, parts[3]);
    strcpy(a->terminator, parts[4]);
    return strcmp(a->terminator, "aws4_request") == 0;
}

static bool signed_headers_valid(const char *s)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == ';' ||
              *p == '_' || *p == '.'))
            return false;
    return true;
}

static bool has_host(const char *list)
{
    const char *p = list;
    while (p && *p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        if (n == 4 && strncmp(p, "host", 4) == 0)
            return true;
        p = semi ? semi + 1 : NULL;
    }
    return false;
}

/* "Fri, 04 Dec 2026 20:28:58 GMT" (RFC 7231) into milliseconds. */
static int parse_http_date(const char *s, int64_t *ret_ms)
{
    struct tm tm = { 0 };
    const char *end = strptime(s, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end)
        return -EINVAL;
    *ret_ms = (int64_t)timegm(&tm) * 1000;
    return 0;
}

static void amz_date_of(int64_t ms, char out[17])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

static enum sigv4_fail parse_presigned(const struct api_request *req, struct sigv4_auth *a,
                                       const char **ret_msg)
{
    char alg[64], cred[256], expires[32];
    a->presigned = true;
    if (raw_query_copy(req->query, "X-Amz-Algorithm", alg, sizeof(alg)) < 0 ||
        raw_query_copy(req->query, "X-Amz-Credential", cred, sizeof(cred)) < 0 ||
        raw_query_copy(req->query, "X-Amz-Date", a->amz_date, sizeof(a->amz_date)) < 0 ||
        raw_query_copy(req->query, "X-Amz-SignedHeaders", a->signed_headers,
                       sizeof(a->signed_headers)) < 0 ||
        raw_query_copy(req->query, "X-Amz-Signature", a->signature, sizeof(a->signature)) < 0) {
        *ret_msg = "AWS query-string parameters must include 'X-Amz-Algorithm', "
                   "'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-SignedHeaders' and "
                   "'X-Amz-Date'. Re-examine the query-string parameters.";
        return SIGV4_INCOMPLETE;
    }
    if (strcmp(alg, ALGORITHM) != 0) {
        *ret_msg = "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"";
        return SIGV4_INCOMPLETE;
    }
    if (!parse_credential(cred, strlen(cred), a)) {
        *ret_msg = "Credential must have exactly 5 slash-delimited elements, e.g. "
                   "keyid/date/region/service/term";
        return SIGV4_INCOMPLETE;
    }
    a->expires_s = 900;
    if (raw_query_copy(req->query, "X-Amz-Expires", expires, sizeof(expires)) == 0) {
        char *end;
        long long v = strtoll(expires, &end, 10);
        if (*end || end == expires || v < 1 || v > 604800) {
            *ret_msg = "X-Amz-Expires must be between 1 and 604800 seconds";
            return SIGV4_INCOMPLETE;
        }
        a->expires_s = v;
    }
    if (time_parse_iso(a->amz_date, &a->time_ms) < 0 || strlen(a->amz_date) != 16) {
        *ret_msg = "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"";
        return SIGV4_INCOMPLETE;
    }
    return SIGV4_OK;
}

enum sigv4_fail sigv4_parse(const struct api_request *req, struct sigv4_auth *ret,
                            const char **ret_msg, char *msgbuf, size_t msglen)
{
    struct sigv4_auth a;
    memset(&a, 0, sizeof(a));
    const char *auth = api_header_get(req, "Authorization");
    enum sigv4_fail f;
    size_t dummy;
    if (!auth) {
        if (!raw_query_get(req->query, "X-Amz-Signature", &dummy) &&
            !raw_query_get(req->query, "X-Amz-Credential", &dummy)) {
            *ret_msg = "Request is missing Authentication Token";
            return SIGV4_MISSING;
        }
        f = parse_presigned(req, &a, ret_msg);
        if (f != SIGV4_OK)
            return f;
    } else {
        while (*auth == ' ')
            auth++;
        if (strncmp(auth, ALGORITHM " ", strlen(ALGORITHM) + 1) != 0) {
            *ret_msg = "Authorization header requires 'AWS4-HMAC-SHA256' as the algorithm";
            return SIGV4_INCOMPLETE;
        }
        const char *p = auth + strlen(ALGORITHM) + 1;
        bool have_cred = false, have_sh = false, have_sig = false;
        while (*p) {
            while (*p == ' ' || *p == ',')
                p++;
            const char *eq = strchr(p, '=');
            if (!eq)
                break;
            const char *end = eq + 1;
            while (*end && *end != ',')
                end++;
            size_t klen = (size_t)(eq - p), vlen = (size_t)(end - eq - 1);
            const char *v = eq + 1;
            while (vlen > 0 && v[vlen - 1] == ' ')
                vlen--;
            if (klen == 10 && strncmp(p, "Credential", 10) == 0) {
                if (!parse_credential(v, vlen, &a)) {
                    *ret_msg = "Credential must have exactly 5 slash-delimited elements, e.g. "
                               "keyid/date/region/service/term, got a malformed value";
                    return SIGV4_INCOMPLETE;
                }
                have_cred = true;
            } else if (klen == 13 && strncmp(p, "SignedHeaders", 13) == 0) {
                if (vlen >= sizeof(a.signed_headers)) {
                    *ret_msg = "SignedHeaders is too long";
                    return SIGV4_INCOMPLETE;
                }
                memcpy(a.signed_headers, v, vlen);
                a.signed_headers[vlen] = '\0';
                have_sh = true;
            } else if (klen == 9 && strncmp(p, "Signature", 9) == 0) {
                if (vlen != 64) {
                    *ret_msg = "Signature must be 64 hexadecimal characters";
                    return SIGV4_INCOMPLETE;
                }
                memcpy(a.signature, v, 64);
                a.signature[64] = '\0';
                have_sig = true;
            }
            p = end;
        }
        if (!have_cred || !have_sh || !have_sig) {
            snprintf(msgbuf, msglen,
                     "Authorization header requires '%s' parameter. Authorization=%s",
                     !have_cred ? "Credential"
                     : !have_sh ? "SignedHeaders"
                                : "Signature",
                     ALGORITHM);
            *ret_msg = msgbuf;
            return SIGV4_INCOMPLETE;
        }
        const char *xdate = api_header_get(req, "X-Amz-Date");
        if (xdate) {
            if (strlen(xdate) != 16 || time_parse_iso(xdate, &a.time_ms) < 0) {
                *ret_msg = "X-Amz-Date must be in the ISO8601 Long Format "
                           "\"yyyyMMdd'T'HHmmss'Z'\"";
                return SIGV4_INCOMPLETE;
            }
            memcpy(a.amz_date, xdate, 16);
        } else {
            const char *date = api_header_get(req, "Date");
            if (!date || parse_http_date(date, &a.time_ms) < 0) {
                *ret_msg = "Authorization header requires existence of either a 'X-Amz-Date' "
                           "or a 'Date' header.";
                return SIGV4_NO_DATE;
            }
            amz_date_of(a.time_ms, a.amz_date);
        }
    }
    for (const char *s = a.signature; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f'))) {
            *ret_msg = "Signature must be lower-case hexadecimal";
            return SIGV4_INCOMPLETE;
        }
    if (strlen(a.signature) != 64) {
        *ret_msg = "Signature must be 64 hexadecimal characters";
        return SIGV4_INCOMPLETE;
    }
    if (!signed_headers_valid(a.signed_headers)) {
        *ret_msg = "SignedHeaders must be a ';'-separated list of lower-case header names";
        return SIGV4_INCOMPLETE;
    }
    if (!has_host(a.signed_headers)) {
        *ret_msg = "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.";
        return SIGV4_HOST;
    }
    if (strncmp(a.date, a.amz_date, 8) != 0) {
        snprintf(msgbuf, msglen,
                 "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                 "date from HTTP: '%s' != '%.8s', from '%s'.",
                 a.date, a.amz_date, a.amz_date);
        *ret_msg = msgbuf;
        return SIGV4_SCOPE_DATE;
    }
    *ret = a;
    return SIGV4_OK;
}

enum sigv4_fail sigv4_check_time(const struct sigv4_auth *a, int64_t now_ms, int window_s,
                                 char *msgbuf, size_t msglen)
{
    char now_s[17];
    amz_date_of(now_ms, now_s);
    int64_t w = (int64_t)window_s * 1000;
    if (a->presigned) {
        if (a->time_ms > now_ms + w) {
            snprintf(msgbuf, msglen, "Request is not yet valid: %s is later than %s + %d s",
                     a->amz_date, now_s, window_s);
            return SIGV4_EXPIRED;
        }
        if (now_ms > a->time_ms + a->expires_s * 1000) {
            snprintf(msgbuf, msglen, "Request has expired: signed at %s for %lld s, now %s",
                     a->amz_date, (long long)a->expires_s, now_s);
            return SIGV4_EXPIRED;
        }
        return SIGV4_OK;
    }
    if (a->time_ms < now_ms - w) {
        char earliest[17];
        amz_date_of(now_ms - w, earliest);
        snprintf(msgbuf, msglen, "Signature expired: %s is now earlier than %s (%s - %d min.)",
                 a->amz_date, earliest, now_s, window_s / 60);
        return SIGV4_EXPIRED;
    }
    if (a->time_ms > now_ms + w) {
        char latest[17];
        amz_date_of(now_ms + w, latest);
        snprintf(msgbuf, msglen,
                 "Signature not yet current: %s is still later than %s (%s + %d min.)", a->amz_date,
                 latest, now_s, window_s / 60);
        return SIGV4_EXPIRED;
    }
    return SIGV4_OK;
}

struct qpair {
    char *k;
    char *v;
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : strcmp(x->v, y->v);
}

/* Canonical query string: every parameter decoded, strictly re-encoded, sorted. */
static int canonical_query(const char *q, bool presigned, struct buf *out)
{
    size_t n = 0, cap = 0;
    struct qpair *v = NULL;
    int rc = 0;
    const char *p = q;
    while (p && *p && rc == 0) {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', seg);
        size_t kl = eq ? (size_t)(eq - p) : seg;
        const char *val = eq ? eq + 1 : p + seg;
        size_t vl = eq ? seg - kl - 1 : 0;
        if (seg > 0) {
            struct buf kd, vd, ke, ve;
            buf_init(&kd, 1 << 20);
            buf_init(&vd, 1 << 20);
            buf_init(&ke, 3 << 20);
            buf_init(&ve, 3 << 20);
            rc = uri_decode(&kd, p, kl, false);
            if (rc == 0)
                rc = uri_decode(&vd, val, vl, false);
            if (rc == 0)
                rc = uri_encode(&ke, kd.data ? kd.data : "", kd.len, false);
            if (rc == 0)
                rc = uri_encode(&ve, vd.data ? vd.data : "", vd.len, false);
            bool skip = presigned && kd.data && strcmp(kd.data, "X-Amz-Signature") == 0;
            if (rc == 0 && !skip) {
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    struct qpair *nv = realloc(v, cap * sizeof(*v));
                    if (!nv)
                        rc = -ENOMEM;
                    else
                        v = nv;
                }
                if (rc == 0) {
                    v[n].k = buf_steal(&ke);
                    v[n].v = buf_steal(&ve);
                    n++;
                }
            }
            buf_free(&kd);
            buf_free(&vd);
            buf_free(&ke);
            buf_free(&ve);
        }
        p = amp ? amp + 1 : NULL;
    }
    if (rc == 0) {
        if (n > 1)
            qsort(v, n, sizeof(*v), qpair_cmp);
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = buf_printf(out, "%s%s=%s", i ? "&" : "", v[i].k, v[i].v);
    }
    for (size_t i = 0; i < n; i++) {
        free(v[i].k);
        free(v[i].v);
    }
    free(v);
    return rc;
}

/* Appends a header value trimmed, with runs of spaces collapsed to one. */
static int append_trimmed(struct buf *b, const char *v)
{
    bool space = false, started = false;
    for (; *v; v++) {
        if (*v == ' ' || *v == '\t') {
            space = started;
            continue;
        }
        if (space) {
            int rc = buf_append(b, " ", 1);
            if (rc < 0)
                return rc;
            space = false;
        }
        started = true;
        int rc = buf_append(b, v, 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int sigv4_canonical(const struct api_request *req, const struct sigv4_auth *a,
                    const char *payload_hash, struct buf *canon, struct buf *to_sign)
{
    int rc = buf_printf(canon, "%s\n", req->method);
    const char *path = req->path && *req->path ? req->path : "/";
    if (rc == 0)
        rc = uri_encode(canon, path, strlen(path), true);
    if (rc == 0)
        rc = buf_append(canon, "\n", 1);
    if (rc == 0)
        rc = canonical_query(req->query, a->presigned, canon);
    if (rc == 0)
        rc = buf_append(canon, "\n", 1);
    /* Canonical headers, in SignedHeaders order (which the client sorted). */
    const char *p = a->signed_headers;
    while (rc == 0 && p && *p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        char name[128];
        if (n >= sizeof(name)) {
            rc = -EINVAL;
            break;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        rc = buf_printf(canon, "%s:", name);
        bool first = true;
        for (size_t i = 0; i < req->nheaders && rc == 0; i++) {
            if (strcasecmp(req->headers[i].name, name) != 0)
                continue;
            if (!first)
                rc = buf_append(canon, ",", 1);
            if (rc == 0)
                rc = append_trimmed(canon, req->headers[i].value);
            first = false;
        }
        if (rc == 0)
            rc = buf_append(canon, "\n", 1);
        p = semi ? semi + 1 : NULL;
    }
    if (rc == 0)
        rc = buf_printf(canon, "\n%s\n%s", a->signed_headers, payload_hash);
    if (rc < 0)
        return rc;
    uint8_t h[SHA256_LEN];
    char hex[65];
    crypto_sha256(canon->data, canon->len, h);
    hex_encode(h, sizeof(h), hex);
    return buf_printf(to_sign, "%s\n%s\n%s/%s/%s/%s\n%s", ALGORITHM, a->amz_date, a->date,
                      a->region, a->service, a->terminator, hex);
}

enum sigv4_fail sigv4_sign(const struct api_request *req, const struct sigv4_auth *a,
                           const char *secret, bool allow_unsigned, const char *payload_override,
                           char out_hex[65])
{
    char payload[65];
    uint8_t h[SHA256_LEN];
    crypto_sha256(req->body ? req->body : "", req->body_len, h);
    hex_encode(h, sizeof(h), payload);
    const char *claimed = api_header_get(req, "X-Amz-Content-SHA256");
    const char *use = payload;
    if (payload_override) {
        use = payload_override;
    } else if (claimed && !a->presigned) {
        if (strcmp(claimed, UNSIGNED_PAYLOAD) == 0) {
            if (!allow_unsigned)
                return SIGV4_PAYLOAD_HASH;
            use = UNSIGNED_PAYLOAD;
        } else if (strcasecmp(claimed, payload) != 0) {
            return SIGV4_PAYLOAD_HASH;
        }
    }
    struct buf canon, to_sign;
    buf_init(&canon, 8 << 20);
    buf_init(&to_sign, 4096);
    int rc = sigv4_canonical(req, a, use, &canon, &to_sign);
    if (rc < 0) {
        buf_free(&canon);
        buf_free(&to_sign);
        return SIGV4_INCOMPLETE;
    }
    char k0[64];
    int kl = snprintf(k0, sizeof(k0), "AWS4%s", secret);
    uint8_t kd[SHA256_LEN], kr[SHA256_LEN], ks[SHA256_LEN], kk[SHA256_LEN], sig[SHA256_LEN];
    crypto_hmac_sha256(k0, (size_t)kl, a->date, strlen(a->date), kd);
    crypto_hmac_sha256(kd, sizeof(kd), a->region, strlen(a->region), kr);
    crypto_hmac_sha256(kr, sizeof(kr), a->service, strlen(a->service), ks);
    crypto_hmac_sha256(ks, sizeof(ks), a->terminator, strlen(a->terminator), kk);
    crypto_hmac_sha256(kk, sizeof(kk), to_sign.data, to_sign.len, sig);
    hex_encode(sig, sizeof(sig), out_hex);
    crypto_wipe(k0, sizeof(k0));
    crypto_wipe(kd, sizeof(kd));
    crypto_wipe(kr, sizeof(kr));
    crypto_wipe(ks, sizeof(ks));
    crypto_wipe(kk, sizeof(kk));
    buf_free(&canon);
    buf_free(&to_sign);
    return SIGV4_OK;
}

int api_presigned_check(struct api_call *c, const char *url, const char *action, const char *param,
                        const char *value)
{
    /* http[s]://HOST[:PORT]/PATH?QUERY */
    const char *p = strstr(url, "://");
    if (!p)
        goto invalid;
    const char *host = p + 3, *slash = strchr(host, '/');
    if (!slash || (size_t)(slash - host) >= 256)
        goto invalid;
    char hostbuf[256], pathbuf[1024];
    memcpy(hostbuf, host, (size_t)(slash - host));
    hostbuf[slash - host] = '\0';
    const char *q = strchr(slash, '?');
    size_t pl = q ? (size_t)(q - slash) : strlen(slash);
    if (!q || pl >= sizeof(pathbuf))
        goto invalid;
    memcpy(pathbuf, slash, pl);
    pathbuf[pl] = '\0';
    struct api_header h[1] = { { "Host", hostbuf } };
    struct api_request req = { .method = "GET",
                               .path = pathbuf,
                               .query = q + 1,
                               .headers = h,
                               .nheaders = 1,
                               .body = "",
                               .body_len = 0 };
    struct sigv4_auth a;
    const char *msg;
    char buf[256], account[16], secret[48], mine[65];
    if (sigv4_parse(&req, &a, &msg, buf, sizeof(buf)) != SIGV4_OK || !a.presigned ||
        strcmp(a.service, "ec2") != 0)
        goto invalid;
    if (sigv4_check_time(&a, time_now_ms(), c->api->cfg.time_window_s, buf, sizeof(buf)) !=
        SIGV4_OK)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue", "PresignedUrl has expired");
    if (core_key_secret(c->app, a.key_id, account, secret) < 0)
        goto invalid;
    bool ok = sigv4_sign(&req, &a, secret, false, NULL, mine) == SIGV4_OK &&
              crypto_memeq(mine, a.signature, 64);
    if (!ok)
        ok = sigv4_sign(&req, &a, secret, false, "UNSIGNED-PAYLOAD", mine) == SIGV4_OK &&
             crypto_memeq(mine, a.signature, 64);
    crypto_wipe(secret, sizeof(secret));
    if (!ok || strcmp(account, c->account_id) != 0)
        goto invalid;
    struct api_params params = { 0 };
    int rc = api_params_parse(&params, req.query, strlen(req.query), true);
    const char *act = rc == 0 ? api_params_get(&params, "Action") : NULL;
    const char *val = rc == 0 ? api_params_get(&params, param) : NULL;
    ok = act && val && strcmp(act, action) == 0 && value && strcmp(val, value) == 0;
    api_params_free(&params);
    if (!ok)
        goto invalid;
    return 0;
invalid:
    return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                   "PresignedUrl is not a valid presigned %s request of this account", action);
}
