/*
 * cli_imds.c — `amid imds --data DIR --instance ID`: the EC2 instance metadata service (IMDS)
 * for one guest connection.
 *
 * Contract.  QEMU's user-mode networking (guestfwd=tcp:169.254.169.254:80-cmd:...) runs this
 * command once per guest TCP connection to 169.254.169.254:80, with the connection as stdin,
 * stdout and (libslirp does so) stderr.  The process:
 *   - answers HTTP/1.x requests read from stdin on stdout, several per connection (keep-alive
 *     unless the client says `Connection: close`, or speaks HTTP/1.0 without keep-alive);
 *   - writes nothing but HTTP to the connection: it keeps the connection on a private
 *     descriptor and points descriptors 1 and 2 away from it (2 to /dev/null when it is the
 *     connection), so that no diagnostic or stray library output can reach the guest;
 *   - caps a request's line and headers at IMDS_HEAD_MAX bytes (400 and close beyond), reads and
 *     discards bodies per Content-Length, refuses chunked bodies (400 and close);
 *   - exits when the guest closes the connection, after IMDS_IDLE_MS without a byte, or after a
 *     response with `Connection: close`;
 *   - reads the instance's row afresh for every request (user data, metadata options and tags
 *     may change while the connection lives).
 *
 * What it serves, as EC2 does: the version list at "/", the same tree under every version
 * ("latest", "1.0", dates), meta-data, dynamic/instance-identity/document and user-data; IMDSv2
 * tokens (PUT /latest/api/token) made and checked by core; 401 for a bad token or for a missing
 * one when the instance requires tokens, 403 when its endpoint is disabled, 404 for everything
 * when the instance does not exist.  Errors carry EC2's small HTML page.
 *
 * It runs inside QEMU's seccomp sandbox with QEMU's environment: one thread, blocking I/O with
 * poll() for the idle limit, no child processes.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMDS_HEAD_MAX  (16 * 1024) /* request line and headers */
#define IMDS_BODY_MAX  (1 << 20)   /* a response body (user data is at most 16 KiB on EC2) */
#define IMDS_IDLE_MS   60000
#define IMDS_TTL_MAX   21600
#define IMDS_SEGS_MAX  16
#define IMDS_KEY_MAX   1100 /* an OpenSSH public key (db keeps up to 1023 bytes) */
#define IMDS_TOKEN_HDR "X-aws-ec2-metadata-token"
#define IMDS_TTL_HDR   "X-aws-ec2-metadata-token-ttl-seconds"

/* The versions EC2 lists at "/", oldest first; each serves the same tree as "latest". */
static const char *const imds_versions[] = {
    "1.0",        "2007-01-19", "2007-03-01", "2007-08-29", "2007-10-10", "2007-12-15",
    "2008-02-01", "2008-09-01", "2009-04-04", "2011-01-01", "2011-05-01", "2012-01-12",
    "2014-02-25", "2014-11-05", "2015-10-20", "2016-04-19", "2016-06-30", "2016-09-02",
    "2018-03-28", "2018-08-17", "2018-09-24", "2019-10-01", "2020-10-27", "2021-01-03",
    "2021-03-23", "2021-07-15", "latest",
};

/* ---- the connection: bounded reads from the guest, whole writes back ---- */

struct imds_conn {
    int in, out;
    bool eof;
    size_t len; /* bytes of buf holding unprocessed input */
    char buf[IMDS_HEAD_MAX];
};

/* Waits up to the idle limit for input and appends what arrives to c->buf.  Returns the number
 * of bytes read, 0 at end of file or after the idle limit, or a negative errno. */
static ssize_t conn_fill(struct imds_conn *c)
{
    size_t free_bytes = IMDS_HEAD_MAX - c->len;
    if (c->eof || free_bytes == 0)
        return 0;
    struct pollfd p = { .fd = c->in, .events = POLLIN };
    int n;
    do
        n = poll(&p, 1, IMDS_IDLE_MS);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0) {
        c->eof = true; /* idle: treat as closed */
        return 0;
    }
    ssize_t r;
    do
        r = read(c->in, c->buf + c->len, free_bytes);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        c->eof = true;
    c->len += (size_t)r;
    return r;
}

/* The end of a request head (just past its empty line) in c->buf, looking from `from` on, or 0
 * when there is none yet.  Bare LF line ends are accepted as well as CRLF. */
static size_t head_end(const struct imds_conn *c, size_t from)
{
    for (size_t i = from; i < c->len; i++) {
        if (c->buf[i] != '\n')
            continue;
        if (i + 1 < c->len && c->buf[i + 1] == '\n')
            return i + 2;
        if (i + 2 < c->len && c->buf[i + 1] == '\r' && c->buf[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

/* Reads until c->buf holds a whole request head; sets *ret_end to its length.  Empty lines
 * before a request are skipped (RFC 9112 2.2).  Returns 0, 1 when the connection closed or
 * idled first, -E2BIG when the head passes IMDS_HEAD_MAX, or a negative errno. */
static int conn_head(struct imds_conn *c, size_t *ret_end)
{
    size_t from = 0; /* what earlier rounds scanned need not be scanned again */
    for (;;) {
        size_t skip = 0;
        while (skip < c->len && (c->buf[skip] == '\r' || c->buf[skip] == '\n'))
            skip++;
        memmove(c->buf, c->buf + skip, c->len - skip);
        c->len -= skip;
        size_t end = head_end(c, from);
        if (end) {
            *ret_end = end;
            return 0;
        }
        if (c->len >= IMDS_HEAD_MAX)
            return -E2BIG;
        from = c->len > 3 ? c->len - 3 : 0;
        ssize_t r = conn_fill(c);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return 1;
    }
}

/* Drops a handled request (its head of `head` bytes and `body` bytes of body, read and
 * discarded as they arrive) from the input.  Returns 0, 1 when the connection closed first, or a
 * negative errno. */
static int conn_skip(struct imds_conn *c, size_t head, uint64_t body)
{
    uint64_t drop = head + body;
    for (;;) {
        size_t n = drop < c->len ? (size_t)drop : c->len;
        memmove(c->buf, c->buf + n, c->len - n);
        c->len -= n;
        drop -= n;
        if (drop == 0)
            return 0;
        ssize_t r = conn_fill(c);
        if (r < 0)
            return (int)r;
        if (r == 0)
            return 1;
    }
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EIO;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- requests ---- */

struct imds_req {
    const char *method;
    char *path; /* without query; NUL-terminated inside the connection's buffer */
    bool keep_alive;
    const char *token; /* X-aws-ec2-metadata-token, or NULL */
    const char *ttl;   /* X-aws-ec2-metadata-token-ttl-seconds, or NULL */
    bool forwarded;    /* X-Forwarded-For was present */
    uint64_t body_len;
};

static bool is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Whether the comma-separated header value `v` holds `token` (case-insensitive). */
static bool has_token(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t k = strcspn(v, " \t,");
        if (k == n && strncasecmp(v, token, n) == 0)
            return true;
        v += k;
    }
    return false;
}

static int parse_length(const char *v, uint64_t *ret)
{
    uint64_t n = 0;
    if (!*v)
        return -EINVAL;
    for (; *v; v++) {
        if (!isdigit((unsigned char)*v) || n > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        n = n * 10 + (uint64_t)(*v - '0');
    }
    *ret = n;
    return 0;
}

/* Splits the next line off `*p` (ending before `end`) and NUL-terminates it without its CR. */
static char *next_line(char **p, char *end)
{
    char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl)
        return NULL;
    *nl = '\0';
    if (nl > s && nl[-1] == '\r')
        nl[-1] = '\0';
    *p = nl + 1;
    return s;
}

/* "METHOD SP target SP HTTP/1.x"; an absolute-form target keeps only its path. */
static int parse_request_line(char *line, struct imds_req *r, bool *ret_http10)
{
    char *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strchr(sp2 + 1, ' ') || sp1 == line || sp1 - line > 16)
        return -EINVAL;
    *sp1 = *sp2 = '\0';
    for (char *m = line; *m; m++)
        if (!is_tchar((unsigned char)*m))
            return -EINVAL;
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)ver[7]) || ver[8])
        return -EINVAL;
    char *target = sp1 + 1;
    if (strncasecmp(target, "http://", 7) == 0) {
        target = strchr(target + 7, '/');
        if (!target)
            return -EINVAL;
    }
    if (target[0] != '/')
        return -EINVAL;
    target[strcspn(target, "?#")] = '\0';
    r->method = line;
    r->path = target;
    *ret_http10 = ver[7] == '0';
    return 0;
}

static int parse_header(char *line, struct imds_req *r, bool *seen_length, bool *want_close,
                        bool *want_keep)
{
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return -EINVAL;
    *colon = '\0';
    for (char *k = line; *k; k++)
        if (!is_tchar((unsigned char)*k))
            return -EINVAL; /* also refuses obs-fold continuation lines */
    char *v = colon + 1;
    v += strspn(v, " \t");
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    if (strcasecmp(line, "Content-Length") == 0) {
        uint64_t len;
        if (parse_length(v, &len) < 0 || (*seen_length && len != r->body_len))
            return -EINVAL;
        r->body_len = len;
        *seen_length = true;
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
        return -EINVAL; /* no client of the metadata service sends a chunked body */
    } else if (strcasecmp(line, "Connection") == 0) {
        *want_close |= has_token(v, "close");
        *want_keep |= has_token(v, "keep-alive");
    } else if (strcasecmp(line, IMDS_TOKEN_HDR) == 0) {
        if (!r->token)
            r->token = v;
    } else if (strcasecmp(line, IMDS_TTL_HDR) == 0) {
        if (!r->ttl)
            r->ttl = v;
    } else if (strcasecmp(line, "X-Forwarded-For") == 0) {
        r->forwarded = true;
    }
    return 0;
}

/* Parses the head of `n` bytes at `head` in place.  Returns 0 or -EINVAL. */
static int req_parse(char *head, size_t n, struct imds_req *r)
{
    *r = (struct imds_req){ 0 };
    bool http10 = false, seen_length = false, want_close = false, want_keep = false;
    if (memchr(head, '\0', n)) /* a NUL would hide the rest of its line */
        return -EINVAL;
    char *p = head, *end = head + n, *line = next_line(&p, end);
    if (!line || parse_request_line(line, r, &http10) < 0)
        return -EINVAL;
    while ((line = next_line(&p, end)) && *line)
        if (parse_header(line, r, &seen_length, &want_close, &want_keep) < 0)
            return -EINVAL;
    r->keep_alive = !want_close && (!http10 || want_keep);
    return 0;
}

/* ---- responses ---- */

struct imds_resp {
    int status;
    const char *type;
    struct buf body;
    long ttl; /* > 0: echo X-aws-ec2-metadata-token-ttl-seconds */
};

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    default:
        return "Internal Server Error";
    }
}

/* EC2's error page: a small XHTML document naming the status. */
static void resp_error(struct imds_resp *rs, int status)
{
    const char *t = status_text(status);
    buf_reset(&rs->body);
    rs->status = status;
    rs->type = "text/html";
    rs->ttl = 0;
    buf_printf(&rs->body,
               "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n"
               "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n"
               "\t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n"
               "<html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n"
               " <head>\n  <title>%d - %s</title>\n </head>\n"
               " <body>\n  <h1>%d - %s</h1>\n </body>\n</html>\n",
               status, t, status, t);
}

static int resp_send(int fd, struct imds_resp *rs, bool head_only, bool keep)
{
    char date[64], head[512];
    time_t now = (time_t)(time_now_ms() / 1000);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Date: %s\r\nServer: EC2ws\r\nConnection: %s\r\n",
                     rs->status, status_text(rs->status), rs->type, rs->body.len, date,
                     keep ? "keep-alive" : "close");
    if (rs->ttl > 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, "%s: %ld\r\n", IMDS_TTL_HDR, rs->ttl);
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    int rc = write_all(fd, head, (size_t)n);
    if (rc == 0 && !head_only && rs->body.len)
        rc = write_all(fd, rs->body.data, rs->body.len);
    return rc;
}

/* ---- the metadata tree ---- */

struct imds_ctx {
    struct app *app;
    const struct db_instance *i;
    struct buf *out;
    const char *type; /* Content-Type of a 200 answer */
};

/* A node writes its value or listing into c->out and returns 0, -ENOENT (404), or another
 * negative errno (500).  `seg` are the path segments below it. */
typedef int (*imds_fn)(struct imds_ctx *c, char **seg, size_t nseg);

enum imds_kind {
    IMDS_LEAF, /* a value: no segments below */
    IMDS_DIR,  /* a directory, listed as "name/" */
    IMDS_TOP,  /* a directory listed as "name", as a version's entries are */
};

/* A node is a directory or computed leaf (fn), a constant leaf (text) or a leaf showing a string
 * field of the instance's row (field: FIELD(member)). */
struct imds_node {
    const char *name;
    enum imds_kind kind;
    imds_fn fn;
    const char *text;
    size_t field;                      /* offsetof + 1, so that 0 means none */
    bool (*shown)(struct imds_ctx *c); /* NULL: always there */
};

#define FIELD(member) (offsetof(struct db_instance, member) + 1)

static bool node_shown(struct imds_ctx *c, const struct imds_node *nd)
{
    return !nd->shown || nd->shown(c);
}

/* Lists a table (nseg 0) or descends into the entry seg[0] names. */
static int tree_walk(struct imds_ctx *c, const struct imds_node *t, size_t n, char **seg,
                     size_t nseg)
{
    int rc = 0;
    if (nseg == 0) {
        bool first = true;
        for (size_t k = 0; k < n && rc == 0; k++) {
            if (!node_shown(c, &t[k]))
                continue;
            rc = buf_printf(c->out, "%s%s%s", first ? "" : "\n", t[k].name,
                            t[k].kind == IMDS_DIR ? "/" : "");
            first = false;
        }
        return rc;
    }
    for (size_t k = 0; k < n; k++) {
        if (strcmp(t[k].name, seg[0]) != 0 || !node_shown(c, &t[k]))
            continue;
        if (t[k].kind == IMDS_LEAF && nseg > 1)
            return -ENOENT;
        if (t[k].fn)
            return t[k].fn(c, seg + 1, nseg - 1);
        if (t[k].text)
            return buf_puts(c->out, t[k].text);
        return buf_puts(c->out, (const char *)c->i + t[k].field - 1);
    }
    return -ENOENT;
}

#define WALK(c, table, seg, nseg) tree_walk(c, table, ARRAY_SIZE(table), seg, nseg)

static int put(struct imds_ctx *c, const char *s)
{
    return buf_puts(c->out, s);
}

/* "ip-169-254-0-15.ec2.internal" in us-east-1, "ip-….REGION.compute.internal" elsewhere. */
static void local_hostname(const struct db_instance *i, char *out, size_t outlen)
{
    char ip[48];
    snprintf(ip, sizeof(ip), "%s", i->private_ip);
    for (char *p = ip; *p; p++)
        if (*p == '.' || *p == ':')
            *p = '-';
    if (strcmp(i->region, "us-east-1") == 0)
        snprintf(out, outlen, "ip-%s.ec2.internal", ip);
    else
        snprintf(out, outlen, "ip-%s.%s.compute.internal", ip, i->region);
}

static bool has_ip(struct imds_ctx *c)
{
    return c->i->private_ip[0] != '\0';
}

static int n_hostname(struct imds_ctx *c, char **seg, size_t nseg)
{
    char h[128];
    local_hostname(c->i, h, sizeof(h));
    return put(c, h);
}

static int n_launch_index(struct imds_ctx *c, char **seg, size_t nseg)
{
    return buf_printf(c->out, "%" PRId64, c->i->launch_index);
}

static int n_mac(struct imds_ctx *c, char **seg, size_t nseg)
{
    char mac[18];
    core_instance_mac(c->i->id, mac);
    return put(c, mac);
}

/* ---- block-device-mapping/: ami and root name the root device; ebsN the other volumes ---- */

struct bdm_list {
    const char *root;
    char dev[32][64];
    size_t n;
};

static int bdm_collect(void *vctx, const struct db_attachment *a)
{
    struct bdm_list *l = vctx;
    if (strcmp(a->device_name, l->root) == 0 || l->n == ARRAY_SIZE(l->dev))
        return 0;
    const char *d = a->device_name;
    if (strncmp(d, "/dev/", 5) == 0)
        d += 5;
    snprintf(l->dev[l->n++], sizeof(l->dev[0]), "%s", d);
    return 0;
}

static int n_bdm(struct imds_ctx *c, char **seg, size_t nseg)
{
    struct bdm_list l = { .root = c->i->root_device_name };
    int rc = core_instance_attachments(c->app, c->i->id, bdm_collect, &l);
    if (rc < 0)
        return rc;
    if (nseg == 0) {
        rc = put(c, "ami");
        for (size_t k = 0; k < l.n && rc == 0; k++)
            rc = buf_printf(c->out, "\nebs%zu", k + 1);
        return rc ? rc : put(c, "\nroot");
    }
    if (nseg > 1)
        return -ENOENT;
    if (strcmp(seg[0], "ami") == 0 || strcmp(seg[0], "root") == 0)
        return put(c, c->i->root_device_name);
    char *end;
    if (strncmp(seg[0], "ebs", 3) != 0 || !isdigit((unsigned char)seg[0][3]) || seg[0][3] == '0')
        return -ENOENT;
    unsigned long k = strtoul(seg[0] + 3, &end, 10);
    if (*end || k < 1 || k > l.n)
        return -ENOENT;
    return put(c, l.dev[k - 1]);
}

/* ---- network/interfaces/macs/MAC/ ---- */

/* The primary interface's id: "eni-" and the instance id's hex digits (stable for life). */
static int n_eni(struct imds_ctx *c, char **seg, size_t nseg)
{
    const char *hex = strncmp(c->i->id, "i-", 2) == 0 ? c->i->id + 2 : c->i->id;
    return buf_printf(c->out, "eni-%s", hex);
}

static const struct imds_node mac_nodes[] = {
    { "device-number", .text = "0" },
    { "interface-id", .fn = n_eni },
    { "local-hostname", .fn = n_hostname, .shown = has_ip },
    { "local-ipv4s", .field = FIELD(private_ip), .shown = has_ip },
    { "mac", .fn = n_mac },
    { "owner-id", .field = FIELD(owner) },
    { "security-groups", .text = "" },
};

static int n_macs(struct imds_ctx *c, char **seg, size_t nseg)
{
    char mac[18];
    core_instance_mac(c->i->id, mac);
    if (nseg == 0)
        return buf_printf(c->out, "%s/", mac);
    if (strcasecmp(seg[0], mac) != 0)
        return -ENOENT;
    return WALK(c, mac_nodes, seg + 1, nseg - 1);
}

static const struct imds_node interfaces_nodes[] = {
    { "macs", IMDS_DIR, n_macs },
};

static int n_interfaces(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, interfaces_nodes, seg, nseg);
}

static const struct imds_node network_nodes[] = {
    { "interfaces", IMDS_DIR, n_interfaces },
};

static int n_network(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, network_nodes, seg, nseg);
}

/* ---- placement/ ---- */

struct zone_find {
    const char *zone;
    char id[24];
};

static int zone_cb(void *vctx, const char *zone, const char *zone_id, const char *rgn)
{
    struct zone_find *f = vctx;
    if (strcmp(zone, f->zone) == 0)
        snprintf(f->id, sizeof(f->id), "%s", zone_id);
    return 0;
}

static int n_zone_id(struct imds_ctx *c, char **seg, size_t nseg)
{
    struct zone_find f = { .zone = c->i->zone };
    int rc = core_zone_each(c->app, c->i->region, zone_cb, &f);
    if (rc < 0)
        return rc;
    return f.id[0] ? put(c, f.id) : -ENOENT;
}

static const struct imds_node placement_nodes[] = {
    { "availability-zone", .field = FIELD(zone) },
    { "availability-zone-id", .fn = n_zone_id },
    { "region", .field = FIELD(region) },
};

static int n_placement(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, placement_nodes, seg, nseg);
}

/* ---- public-keys/: "0=NAME", 0/openssh-key ---- */

static bool has_key(struct imds_ctx *c)
{
    char key[IMDS_KEY_MAX];
    return core_imds_public_key(c->app, c->i, key, sizeof(key)) == 0;
}

static int n_public_keys(struct imds_ctx *c, char **seg, size_t nseg)
{
    char key[IMDS_KEY_MAX];
    int rc = core_imds_public_key(c->app, c->i, key, sizeof(key));
    if (rc < 0)
        return rc;
    if (nseg == 0)
        return buf_printf(c->out, "0=%s", c->i->key_name);
    if (strcmp(seg[0], "0") != 0 || nseg > 2)
        return -ENOENT;
    if (nseg == 1)
        return put(c, "openssh-key");
    if (strcmp(seg[1], "openssh-key") != 0)
        return -ENOENT;
    size_t n = strlen(key);
    return buf_printf(c->out, "%s%s", key, n && key[n - 1] == '\n' ? "" : "\n");
}

/* ---- services/ ---- */

static const struct imds_node services_nodes[] = {
    { "domain", .text = "amazonaws.com" },
    { "partition", .text = "aws" },
};

static int n_services(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, services_nodes, seg, nseg);
}

/* ---- tags/instance/: only with InstanceMetadataTags enabled ---- */

static bool tags_on(struct imds_ctx *c)
{
    return strcmp(c->i->metadata_tags, "enabled") == 0;
}

struct tag_walk {
    struct buf *out;
    const char *key; /* NULL: list the keys */
    bool found;
    int rc;
};

/* A key a path can name and a listing can show: no '/', no control characters, not "." or "..".
 * (EC2 refuses to expose tags with other keys.) */
static bool tag_key_ok(const char *k)
{
    if (!*k || strcmp(k, ".") == 0 || strcmp(k, "..") == 0)
        return false;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        if (*p == '/' || *p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int tag_cb(void *vctx, const struct core_tag_row *t)
{
    struct tag_walk *w = vctx;
    if (!tag_key_ok(t->key))
        return 0;
    if (!w->key) {
        w->rc = buf_printf(w->out, "%s%s", w->found ? "\n" : "", t->key);
        w->found = true;
    } else if (strcmp(t->key, w->key) == 0) {
        w->rc = buf_puts(w->out, t->value);
        w->found = true;
    }
    return w->rc;
}

static int n_tags_instance(struct imds_ctx *c, char **seg, size_t nseg)
{
    if (nseg > 1)
        return -ENOENT;
    struct tag_walk w = { .out = c->out, .key = nseg ? seg[0] : NULL };
    struct db *db = core_db_get(c->app);
    int rc = core_tags_of(c->app, db, c->i->region, c->i->owner, c->i->id, tag_cb, &w);
    core_db_put(c->app, db);
    if (rc < 0)
        return rc;
    if (w.rc < 0)
        return w.rc;
    return w.found || !w.key ? 0 : -ENOENT;
}

static const struct imds_node tags_nodes[] = {
    { "instance", IMDS_DIR, n_tags_instance },
};

static int n_tags(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, tags_nodes, seg, nseg);
}

/* ---- meta-data/ ---- */

static const struct imds_node meta_nodes[] = {
    { "ami-id", .field = FIELD(image_id) },
    { "ami-launch-index", .fn = n_launch_index },
    { "ami-manifest-path", .text = "(unknown)" },
    { "block-device-mapping", IMDS_DIR, n_bdm },
    { "hostname", .fn = n_hostname, .shown = has_ip },
    { "instance-action", .text = "none" },
    { "instance-id", .field = FIELD(id) },
    { "instance-life-cycle", .text = "on-demand" },
    { "instance-type", .field = FIELD(instance_type) },
    { "local-hostname", .fn = n_hostname, .shown = has_ip },
    { "local-ipv4", .field = FIELD(private_ip), .shown = has_ip },
    { "mac", .fn = n_mac },
    { "network", IMDS_DIR, n_network },
    { "placement", IMDS_DIR, n_placement },
    { "profile", .text = "default-hvm" },
    { "public-keys", IMDS_DIR, n_public_keys, .shown = has_key },
    { "reservation-id", .field = FIELD(reservation_id) },
    { "security-groups", .text = "" },
    { "services", IMDS_DIR, n_services },
    { "tags", IMDS_DIR, n_tags, .shown = tags_on },
};

static int n_meta_data(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, meta_nodes, seg, nseg);
}

/* ---- dynamic/instance-identity/document ---- */

/* Appends `s` as a JSON string. */
static int json_str(struct buf *b, const char *s)
{
    int rc = buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\')
            rc = buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            rc = buf_printf(b, "\\u%04x", *p);
        else
            rc = buf_append(b, p, 1);
    }
    return rc ? rc : buf_puts(b, "\"");
}

/* One "  \"key\" : value" line of the document: a JSON string, or null when `v` is NULL. */
static int doc_field(struct buf *b, const char *key, const char *v, bool last)
{
    int rc = buf_printf(b, "  \"%s\" : ", key);
    if (rc == 0)
        rc = v ? json_str(b, v) : buf_puts(b, "null");
    return rc ? rc : buf_puts(b, last ? "\n}" : ",\n");
}

static int n_document(struct imds_ctx *c, char **seg, size_t nseg)
{
    const struct db_instance *i = c->i;
    char pending[32];
    time_t t = (time_t)(i->launch_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(pending, sizeof(pending), "%Y-%m-%dT%H:%M:%SZ", &tm);
    const struct {
        const char *key, *value;
    } f[] = {
        { "accountId", i->owner },
        { "architecture", i->architecture },
        { "availabilityZone", i->zone },
        { "billingProducts", NULL },
        { "devpayProductCodes", NULL },
        { "marketplaceProductCodes", NULL },
        { "imageId", i->image_id },
        { "instanceId", i->id },
        { "instanceType", i->instance_type },
        { "kernelId", NULL },
        { "pendingTime", pending },
        { "privateIp", i->private_ip[0] ? i->private_ip : NULL },
        { "ramdiskId", NULL },
        { "region", i->region },
        { "version", "2017-09-30" },
    };
    int rc = put(c, "{\n");
    for (size_t k = 0; k < ARRAY_SIZE(f) && rc == 0; k++)
        rc = doc_field(c->out, f[k].key, f[k].value, k + 1 == ARRAY_SIZE(f));
    return rc;
}

static const struct imds_node identity_nodes[] = {
    { "document", .fn = n_document },
};

static int n_identity(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, identity_nodes, seg, nseg);
}

static const struct imds_node dynamic_nodes[] = {
    { "instance-identity", IMDS_DIR, n_identity },
};

static int n_dynamic(struct imds_ctx *c, char **seg, size_t nseg)
{
    return WALK(c, dynamic_nodes, seg, nseg);
}

/* ---- a version's top: dynamic, meta-data, user-data ---- */

static bool has_user_data(struct imds_ctx *c)
{
    return c->i->user_data_len > 0;
}

static int n_user_data(struct imds_ctx *c, char **seg, size_t nseg)
{
    c->type = "application/octet-stream";
    return buf_append(c->out, c->i->user_data, c->i->user_data_len);
}

static const struct imds_node version_nodes[] = {
    { "dynamic", IMDS_TOP, n_dynamic },
    { "meta-data", IMDS_TOP, n_meta_data },
    { "user-data", .fn = n_user_data, .shown = has_user_data },
};

/* ---- dispatch ---- */

/* Decodes %XX escapes of a path segment in place; -EINVAL for a bad escape or a NUL. */
static int seg_decode(char *s)
{
    char *w = s;
    for (const char *p = s; *p; p++) {
        if (*p != '%') {
            *w++ = *p;
            continue;
        }
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2]))
            return -EINVAL;
        char hex[3] = { p[1], p[2], '\0' };
        char ch = (char)strtol(hex, NULL, 16);
        if (!ch)
            return -EINVAL;
        *w++ = ch;
        p += 2;
    }
    *w = '\0';
    return 0;
}

/* Splits the path at '/' in place, skipping empty segments.  -ENOENT for too many or a
 * segment that does not decode. */
static int path_split(char *path, char **seg, size_t *ret_n)
{
    size_t n = 0;
    char *save = NULL;
    for (char *s = strtok_r(path, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (n == IMDS_SEGS_MAX || seg_decode(s) < 0)
            return -ENOENT;
        seg[n++] = s;
    }
    *ret_n = n;
    return 0;
}

static bool version_known(const char *v)
{
    for (size_t k = 0; k < ARRAY_SIZE(imds_versions); k++)
        if (strcmp(v, imds_versions[k]) == 0)
            return true;
    return false;
}

static int list_versions(struct buf *out)
{
    int rc = 0;
    for (size_t k = 0; k < ARRAY_SIZE(imds_versions) && rc == 0; k++)
        rc = buf_printf(out, "%s%s", k ? "\n" : "", imds_versions[k]);
    return rc;
}

/* PUT /latest/api/token: a new IMDSv2 session token.  Returns the HTTP status. */
static int issue_token(struct app *app, const struct db_instance *i, const struct imds_req *r,
                       struct imds_resp *rs)
{
    uint64_t ttl;
    if (r->forwarded)
        return 403; /* the request came through a proxy */
    if (!r->ttl || parse_length(r->ttl, &ttl) < 0 || ttl < 1 || ttl > IMDS_TTL_MAX)
        return 400;
    char token[96];
    core_imds_token(app, i->id, (int64_t)ttl, token);
    rs->ttl = (long)ttl;
    return buf_puts(&rs->body, token) < 0 ? 500 : 200;
}

static bool is_token_path(char **seg, size_t nseg)
{
    return nseg == 3 && strcmp(seg[0], "latest") == 0 && strcmp(seg[1], "api") == 0 &&
           strcmp(seg[2], "token") == 0;
}

/* Answers one request about instance `i` (its row just read) into rs->body.  Returns the HTTP
 * status; the body is only meaningful with 200. */
static int answer(struct app *app, const struct db_instance *i, const struct imds_req *r,
                  struct imds_resp *rs)
{
    char *seg[IMDS_SEGS_MAX];
    size_t nseg = 0;
    if (strcmp(i->http_endpoint, "disabled") == 0)
        return 403;
    if (path_split(r->path, seg, &nseg) < 0)
        return 404;
    if (is_token_path(seg, nseg))
        return strcmp(r->method, "PUT") == 0 ? issue_token(app, i, r, rs) : 405;
    if (r->token ? core_imds_token_check(app, i->id, r->token) < 0
                 : strcmp(i->http_tokens, "required") == 0)
        return 401;
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
        return 405;
    struct imds_ctx c = { app, i, &rs->body, "text/plain" };
    int rc;
    if (nseg == 0)
        rc = list_versions(&rs->body);
    else if (!version_known(seg[0]))
        rc = -ENOENT;
    else
        rc = WALK(&c, version_nodes, seg + 1, nseg - 1);
    if (rc < 0)
        return rc == -ENOENT ? 404 : 500;
    rs->type = c.type;
    return 200;
}

/* Reads the instance's row afresh and answers; anything but 200 gets EC2's error page. */
static void handle(struct app *app, const char *id, const struct imds_req *r, struct imds_resp *rs)
{
    struct db_instance i;
    int rc = app ? core_imds_instance(app, id, &i) : -EIO;
    int status = rc == -ENOENT ? 404 : 500;
    if (rc == 0) {
        status = answer(app, &i, r, rs);
        db_instance_free_data(&i);
    }
    if (status == 200)
        rs->status = 200;
    else
        resp_error(rs, status);
}

/* Serves requests until the connection closes, idles or asks to close. */
static void serve(struct imds_conn *c, struct app *app, const char *id)
{
    struct imds_resp rs = { 0 };
    buf_init(&rs.body, IMDS_BODY_MAX);
    for (;;) {
        size_t end = 0;
        struct imds_req r;
        int rc = conn_head(c, &end);
        if (rc > 0 || (rc < 0 && rc != -E2BIG))
            break;
        buf_reset(&rs.body);
        rs = (struct imds_resp){ .body = rs.body, .type = "text/plain" };
        if (rc == -E2BIG || req_parse(c->buf, end, &r) < 0) {
            /* the rest of the stream cannot be framed: answer and close */
            resp_error(&rs, 400);
            resp_send(c->out, &rs, false, false);
            break;
        }
        handle(app, id, &r, &rs);
        if (resp_send(c->out, &rs, strcmp(r.method, "HEAD") == 0, r.keep_alive) < 0 ||
            !r.keep_alive || conn_skip(c, end, r.body_len) != 0)
            break;
    }
    buf_free(&rs.body);
}

/* ---- setting up the process ---- */

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

/* Moves the connection's output to a private descriptor (returned) and points descriptors 1 and
 * 2 away from the connection, so that only resp_send ever writes to it.  Also makes sure 0-2
 * are open, so that no file the process opens later takes their place. */
static int isolate_output(void)
{
    struct stat st;
    if (fstat(2, &st) < 0 || same_file(2, 1) || same_file(2, 0)) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0)
            return -errno;
        if (null != 2) {
            dup2(null, 2);
            close(null);
        }
    }
    int out = fcntl(1, F_DUPFD_CLOEXEC, 3);
    if (out < 0)
        return -errno;
    if (dup2(2, 1) < 0) {
        close(out);
        return -errno;
    }
    return out;
}

int cmd_imds(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "instance", required_argument, NULL, 'i' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR --instance ID   (serves one guest connection on stdin/stdout)";
    const char *data = NULL, *id = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "d:i:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'i':
            id = optarg;
            break;
        case 'h':
            printf("usage: amid imds %s\n", usage);
            return 0;
        default:
            goto bad;
        }
    }
    if (!data || !id || optind != argc)
        goto bad;
    signal(SIGPIPE, SIG_IGN);
    /* QEMU's children inherit its file size limit (console_max): SQLite must not be cut short. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    struct imds_conn *conn = calloc(1, sizeof(*conn));
    int out = isolate_output();
    if (!conn || out < 0) {
        free(conn);
        fprintf(stderr, "amid imds: cannot set up the connection\n");
        return 1;
    }
    conn->in = 0;
    conn->out = out;
    struct err e = { 0 };
    struct app *app = NULL;
    if (core_open(data, &app, &e) < 0) /* then every request gets 500 */
        fprintf(stderr, "amid imds: %s\n", e.msg);
    serve(conn, app, id);
    core_close(app);
    close(out);
    free(conn);
    return 0;
bad:
    fprintf(stderr, "usage: amid imds %s\n", usage);
    return 2;
}
