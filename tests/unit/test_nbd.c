/*
 * test_nbd.c — protocol-level tests of the NBD server (src/nbd) with a raw socket client.
 *
 * Each test gets a fresh server on a Unix socket in a temporary directory, serving memory
 * devices (nbd_testdev.h) through a resolver that counts opens and releases; teardown stops
 * the server and checks that every export opened was released exactly once.  The client here
 * speaks the wire protocol byte by byte, so that it can also misbehave: oversized and malformed
 * messages, abrupt disconnects at every stage, requests past the end of the export.  Every
 * client read has a timeout, so a hung server fails a test instead of hanging it.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "nbd/nbd.h"
#include "nbd/nbd_proto.h"
#include "nbd/nbd_testdev.h"

#define DEV_SIZE (8u << 20)
#define MiB      (1u << 20)

/* ---- fixture: server, devices, resolver ---- */

struct fixture {
    struct nbd_server *srv;
    char dir[64];
    char sock[128];
    struct blockdev *rw, *ro, *plain, *empty, *big, *split, *badext;
    int list_err;
    long opens, releases, probes; /* __atomic */
    unsigned last_flags;          /* __atomic */
    int vol_writer;               /* __atomic: "vol" allows one writer */
    int disc_reasons[64];         /* on_disconnect err values, in order */
    int ndisc;                    /* __atomic */
};

static int fx_open(void *opaque, const char *name, unsigned flags, struct nbd_export *ret)
{
    struct fixture *f = opaque;
    struct nbd_export e = { 0 };

    __atomic_store_n(&f->last_flags, flags, __ATOMIC_SEQ_CST);
    if (strcmp(name, "") == 0 || strcmp(name, "disk") == 0) {
        e = (struct nbd_export){
            .bd = f->rw, .name = "disk", .description = "test disk", .flags = NBD_EXPORT_MULTI_CONN
        };
    } else if (strcmp(name, "ro") == 0) {
        e = (struct nbd_export){ .bd = f->ro };
    } else if (strcmp(name, "rwro") == 0) {
        e = (struct nbd_export){ .bd = f->rw, .flags = NBD_EXPORT_READONLY };
    } else if (strcmp(name, "plain") == 0) {
        e = (struct nbd_export){ .bd = f->plain };
    } else if (strcmp(name, "empty") == 0) {
        e = (struct nbd_export){ .bd = f->empty };
    } else if (strcmp(name, "big") == 0) {
        e = (struct nbd_export){ .bd = f->big };
    } else if (strcmp(name, "split") == 0) {
        e = (struct nbd_export){ .bd = f->split };
    } else if (strcmp(name, "badext") == 0) {
        e = (struct nbd_export){ .bd = f->badext };
    } else if (strcmp(name, "vol") == 0) {
        if (!(flags & NBD_OPEN_PROBE)) {
            int zero = 0;
            if (!__atomic_compare_exchange_n(&f->vol_writer, &zero, 1, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_SEQ_CST))
                return -EBUSY;
        }
        e = (struct nbd_export){ .bd = f->rw, .cookie = (flags & NBD_OPEN_PROBE) ? NULL : f };
    } else if (strcmp(name, "denied") == 0) {
        return -EACCES;
    } else if (strcmp(name, "down") == 0) {
        return -ESHUTDOWN;
    } else if (strcmp(name, "weird") == 0) {
        return -EIO;
    } else if (strcmp(name, "einval") == 0) {
        return -EINVAL;
    } else if (strcmp(name, "positive") == 0) {
        return 1; /* a resolver bug */
    } else if (strcmp(name, "broken") == 0) {
        e = (struct nbd_export){ .bd = NULL }; /* a resolver bug the server must survive */
    } else {
        return -ENOENT;
    }
    if (flags & NBD_OPEN_PROBE)
        __atomic_fetch_add(&f->probes, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&f->opens, 1, __ATOMIC_SEQ_CST);
    *ret = e;
    return 0;
}

static void fx_release(void *opaque, struct nbd_export *exp)
{
    struct fixture *f = opaque;

    if (exp->cookie == f)
        __atomic_store_n(&f->vol_writer, 0, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&f->releases, 1, __ATOMIC_SEQ_CST);
}

static int fx_list(void *opaque, int (*emit)(void *ctx, const char *name, const char *description),
                   void *ctx)
{
    static const char *names[] = { "disk", "ro", "plain", "vol" };
    struct fixture *f = opaque;
    int r = 0;

    for (size_t i = 0; r == 0 && i < sizeof(names) / sizeof(names[0]); i++) {
        r = emit(ctx, names[i], i == 0 ? "test disk" : NULL);
        if (r == 0 && f->list_err)
            return f->list_err; /* fails after the first entry */
    }
    return r;
}

static void fx_disconnect(void *opaque, const char *export_name, int err)
{
    struct fixture *f = opaque;
    int i = __atomic_fetch_add(&f->ndisc, 1, __ATOMIC_SEQ_CST);

    (void)export_name;
    if (i < 64)
        __atomic_store_n(&f->disc_reasons[i], err, __ATOMIC_SEQ_CST);
}

static const struct nbd_resolver fx_resolver = {
    .open = fx_open,
    .release = fx_release,
    .list = fx_list,
};

static int start_server(struct fixture *f, unsigned workers, unsigned max_conns,
                        unsigned handshake_ms)
{
    struct nbd_server_config cfg = {
        .resolver = &fx_resolver,
        .opaque = f,
        .workers = workers,
        .max_connections = max_conns,
        .handshake_timeout_ms = handshake_ms,
        .stop_grace_ms = 1000,
        .on_disconnect = fx_disconnect,
    };

    assert_int_equal(nbd_server_new(&cfg, &f->srv), 0);
    assert_int_equal(nbd_server_listen_unix(f->srv, f->sock), 0);
    assert_int_equal(nbd_server_start(f->srv), 0);
    return 0;
}

static int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    strcpy(f->dir, "/tmp/test_nbd.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/nbd.sock", f->dir);
    assert_int_equal(nbd_memdev_new(DEV_SIZE, 0, &f->rw), 0);
    assert_int_equal(nbd_memdev_new(DEV_SIZE, NBD_MEMDEV_READONLY, &f->ro), 0);
    assert_int_equal(
        nbd_memdev_new(DEV_SIZE,
                       NBD_MEMDEV_NO_TRIM | NBD_MEMDEV_NO_WRITE_ZEROES | NBD_MEMDEV_NO_BLOCK_STATUS,
                       &f->plain),
        0);
    assert_int_equal(nbd_memdev_new(0, 0, &f->empty), 0);
    assert_int_equal(nbd_memdev_new(33 * MiB, 0, &f->big), 0);
    assert_int_equal(nbd_memdev_new(DEV_SIZE, NBD_MEMDEV_SPLIT_EXTENTS, &f->split), 0);
    assert_int_equal(nbd_memdev_new(DEV_SIZE, NBD_MEMDEV_BAD_EXTENTS, &f->badext), 0);
    *state = f;
    return start_server(f, 4, 0, 5000);
}

static int fixture_teardown(void **state)
{
    struct fixture *f = *state;

    nbd_server_free(f->srv);
    /* Every export opened was given back exactly once. */
    assert_int_equal(__atomic_load_n(&f->opens, __ATOMIC_SEQ_CST),
                     __atomic_load_n(&f->releases, __ATOMIC_SEQ_CST));
    f->rw->ops->close(f->rw);
    f->ro->ops->close(f->ro);
    f->plain->ops->close(f->plain);
    f->empty->ops->close(f->empty);
    f->big->ops->close(f->big);
    f->split->ops->close(f->split);
    f->badext->ops->close(f->badext);
    unlink(f->sock);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Restarts the fixture's server with another configuration. */
static void restart_server(struct fixture *f, unsigned workers, unsigned max_conns,
                           unsigned handshake_ms)
{
    nbd_server_free(f->srv);
    f->srv = NULL;
    start_server(f, workers, max_conns, handshake_ms);
}

/* ---- raw client ---- */

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_timeout(int fd, int ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int cli_connect(const struct fixture *f)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    strcpy(sa.sun_path, f->sock);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    set_timeout(fd, 10000);
    return fd;
}

/* Sends all of it; returns 0, or -1 if the server is gone. */
static int cli_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) {
        ssize_t r = send(fd, b, n, MSG_NOSIGNAL);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Receives exactly n bytes; returns 0, or -1 on EOF, error or timeout. */
static int cli_recv(int fd, void *p, size_t n)
{
    uint8_t *b = p;

    while (n > 0) {
        ssize_t r = recv(fd, b, n, 0);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* True if the server closed the connection (rather than timing out). */
static bool cli_closed(int fd)
{
    uint8_t b;
    ssize_t r;

    set_timeout(fd, 5000);
    r = recv(fd, &b, 1, 0);
    return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void cli_hello(int fd, uint32_t cflags)
{
    uint8_t h[18], c[4];

    assert_int_equal(cli_recv(fd, h, sizeof(h)), 0);
    assert_true(nbd_get64(h) == NBD_MAGIC);
    assert_true(nbd_get64(h + 8) == NBD_IHAVEOPT);
    assert_int_equal(nbd_get16(h + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    nbd_put32(c, cflags);
    assert_int_equal(cli_send(fd, c, sizeof(c)), 0);
}

static int cli_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t h[16];

    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, opt);
    nbd_put32(h + 12, len);
    if (cli_send(fd, h, sizeof(h)) < 0)
        return -1;
    return len ? cli_send(fd, data, len) : 0;
}

struct rep {
    uint32_t opt, type, len;
    uint8_t data[16384];
};

static int cli_rep(int fd, struct rep *r)
{
    uint8_t h[20];

    if (cli_recv(fd, h, sizeof(h)) < 0)
        return -1;
    assert_true(nbd_get64(h) == NBD_REP_MAGIC);
    r->opt = nbd_get32(h + 8);
    r->type = nbd_get32(h + 12);
    r->len = nbd_get32(h + 16);
    assert_true(r->len <= sizeof(r->data));
    return cli_recv(fd, r->data, r->len);
}

struct info {
    uint32_t final;
    uint64_t size;
    uint16_t tflags;
    char name[256], desc[256];
    uint32_t bs_min, bs_pref, bs_max;
    bool got_export, got_name, got_bs;
};

static void put_info_opt(uint8_t *buf, uint32_t *len, const char *name, const uint16_t *infos,
                         unsigned ninfo)
{
    size_t nlen = strlen(name);

    nbd_put32(buf, (uint32_t)nlen);
    memcpy(buf + 4, name, nlen);
    nbd_put16(buf + 4 + nlen, (uint16_t)ninfo);
    for (unsigned i = 0; i < ninfo; i++)
        nbd_put16(buf + 6 + nlen + 2 * i, infos[i]);
    *len = (uint32_t)(6 + nlen + 2 * ninfo);
}

/* Sends NBD_OPT_INFO or NBD_OPT_GO and collects the replies up to the final one. */
static void cli_info(int fd, uint32_t opt, const char *name, const uint16_t *infos, unsigned ninfo,
                     struct info *out)
{
    uint8_t buf[8192];
    uint32_t len;
    struct rep *r = malloc(sizeof(*r));

    assert_non_null(r);
    memset(out, 0, sizeof(*out));
    put_info_opt(buf, &len, name, infos, ninfo);
    assert_int_equal(cli_opt(fd, opt, buf, len), 0);
    for (;;) {
        assert_int_equal(cli_rep(fd, r), 0);
        assert_int_equal(r->opt, opt);
        if (r->type != NBD_REP_INFO) {
            out->final = r->type;
            break;
        }
        assert_true(r->len >= 2);
        switch (nbd_get16(r->data)) {
        case NBD_INFO_EXPORT:
            assert_int_equal(r->len, 12);
            out->size = nbd_get64(r->data + 2);
            out->tflags = nbd_get16(r->data + 10);
            out->got_export = true;
            break;
        case NBD_INFO_NAME:
            assert_true(r->len - 2 < sizeof(out->name));
            memcpy(out->name, r->data + 2, r->len - 2);
            out->got_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            assert_true(r->len - 2 < sizeof(out->desc));
            memcpy(out->desc, r->data + 2, r->len - 2);
            break;
        case NBD_INFO_BLOCK_SIZE:
            assert_int_equal(r->len, 14);
            out->bs_min = nbd_get32(r->data + 2);
            out->bs_pref = nbd_get32(r->data + 6);
            out->bs_max = nbd_get32(r->data + 10);
            out->got_bs = true;
            break;
        default:
            fail_msg("unexpected info type %u", nbd_get16(r->data));
        }
    }
    if (out->final == NBD_REP_ACK)
        assert_true(out->got_export);
    free(r);
}

/* Sends a meta context option with the given queries; returns the final reply type. */
static uint32_t cli_meta(int fd, uint32_t opt, const char *name, const char **queries, unsigned nq,
                         unsigned *ncontexts, uint32_t *ctx_id)
{
    uint8_t buf[8192];
    size_t pos = 0, nlen = strlen(name);
    struct rep *r = malloc(sizeof(*r));
    uint32_t final;

    assert_non_null(r);
    nbd_put32(buf, (uint32_t)nlen);
    memcpy(buf + 4, name, nlen);
    pos = 4 + nlen;
    nbd_put32(buf + pos, nq);
    pos += 4;
    for (unsigned i = 0; i < nq; i++) {
        size_t qlen = strlen(queries[i]);

        nbd_put32(buf + pos, (uint32_t)qlen);
        memcpy(buf + pos + 4, queries[i], qlen);
        pos += 4 + qlen;
    }
    assert_int_equal(cli_opt(fd, opt, buf, (uint32_t)pos), 0);
    *ncontexts = 0;
    for (;;) {
        assert_int_equal(cli_rep(fd, r), 0);
        if (r->type != NBD_REP_META_CONTEXT) {
            final = r->type;
            break;
        }
        assert_true(r->len > 4);
        assert_int_equal(r->len - 4, strlen(NBD_META_BASE_ALLOCATION));
        assert_memory_equal(r->data + 4, NBD_META_BASE_ALLOCATION, r->len - 4);
        if (ctx_id)
            *ctx_id = nbd_get32(r->data);
        (*ncontexts)++;
    }
    free(r);
    return final;
}

/* Connects and negotiates up to transmission; returns the socket. */
static int cli_open(const struct fixture *f, const char *name, bool structured, bool meta,
                    struct info *out)
{
    static const uint16_t infos[] = { NBD_INFO_BLOCK_SIZE };
    struct info tmp;
    struct rep r;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    if (structured) {
        assert_int_equal(cli_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
        assert_int_equal(cli_rep(fd, &r), 0);
        assert_int_equal(r.type, NBD_REP_ACK);
    }
    if (meta) {
        const char *q[] = { NBD_META_BASE_ALLOCATION };
        unsigned n;

        assert_int_equal(cli_meta(fd, NBD_OPT_SET_META_CONTEXT, name, q, 1, &n, NULL), NBD_REP_ACK);
        assert_int_equal(n, 1);
    }
    cli_info(fd, NBD_OPT_GO, name, infos, 1, out ? out : &tmp);
    assert_int_equal((out ? out : &tmp)->final, NBD_REP_ACK);
    return fd;
}

static int cli_req(int fd, uint16_t flags, uint16_t type, uint64_t cookie, uint64_t off,
                   uint32_t len, const void *payload)
{
    uint8_t h[28];

    nbd_put32(h, NBD_REQUEST_MAGIC);
    nbd_put16(h + 4, flags);
    nbd_put16(h + 6, type);
    nbd_put64(h + 8, cookie);
    nbd_put64(h + 16, off);
    nbd_put32(h + 24, len);
    if (cli_send(fd, h, sizeof(h)) < 0)
        return -1;
    return payload && len ? cli_send(fd, payload, len) : 0;
}

/*
 * Reads one reply of any kind for `cookie`.  Simple replies: returns the error, and reads
 * `len` bytes of data into buf when buf is given and the error is 0.  Structured replies:
 * reads chunks up to DONE, applying data and holes to buf (relative to `off`), and returns the
 * error of an error chunk or 0.  Counts chunks and holes when asked.
 */
struct reply_info {
    bool structured;
    unsigned chunks, holes, data_chunks;
    uint8_t bs[8 * 1100]; /* block status descriptors */
    uint32_t bs_len, bs_ctx;
    char msg[256];
};

static uint32_t cli_reply(int fd, uint64_t cookie, uint64_t off, uint32_t len, uint8_t *buf,
                          struct reply_info *ri)
{
    struct reply_info tmp;
    uint8_t h[20];
    uint32_t err = 0;

    if (!ri)
        ri = &tmp;
    memset(ri, 0, sizeof(*ri));
    assert_int_equal(cli_recv(fd, h, 4), 0);
    if (nbd_get32(h) == NBD_SIMPLE_REPLY_MAGIC) {
        assert_int_equal(cli_recv(fd, h + 4, 12), 0);
        assert_true(nbd_get64(h + 8) == cookie);
        err = nbd_get32(h + 4);
        if (err == 0 && buf && len)
            assert_int_equal(cli_recv(fd, buf, len), 0);
        return err;
    }
    assert_true(nbd_get32(h) == NBD_STRUCTURED_REPLY_MAGIC);
    ri->structured = true;
    for (;;) {
        uint16_t flags, type;
        uint32_t clen;
        uint8_t p[32];

        assert_int_equal(cli_recv(fd, h + 4, 16), 0);
        flags = nbd_get16(h + 4);
        type = nbd_get16(h + 6);
        assert_true(nbd_get64(h + 8) == cookie);
        clen = nbd_get32(h + 16);
        ri->chunks++;
        switch (type) {
        case NBD_REPLY_TYPE_NONE:
            assert_int_equal(clen, 0);
            assert_true(flags & NBD_REPLY_FLAG_DONE);
            break;
        case NBD_REPLY_TYPE_OFFSET_DATA: {
            uint64_t o;

            assert_true(clen > 8);
            assert_int_equal(cli_recv(fd, p, 8), 0);
            o = nbd_get64(p);
            assert_true(o >= off && o - off + (clen - 8) <= len);
            assert_non_null(buf);
            assert_int_equal(cli_recv(fd, buf + (o - off), clen - 8), 0);
            ri->data_chunks++;
            break;
        }
        case NBD_REPLY_TYPE_OFFSET_HOLE: {
            uint64_t o;
            uint32_t hl;

            assert_int_equal(clen, 12);
            assert_int_equal(cli_recv(fd, p, 12), 0);
            o = nbd_get64(p);
            hl = nbd_get32(p + 8);
            assert_true(hl > 0 && o >= off && o - off + hl <= len);
            assert_non_null(buf);
            memset(buf + (o - off), 0, hl);
            ri->holes++;
            break;
        }
        case NBD_REPLY_TYPE_BLOCK_STATUS:
            assert_true(clen >= 12 && (clen - 4) % 8 == 0 && clen - 4 <= sizeof(ri->bs));
            assert_int_equal(cli_recv(fd, p, 4), 0);
            ri->bs_ctx = nbd_get32(p);
            ri->bs_len = clen - 4;
            assert_int_equal(cli_recv(fd, ri->bs, ri->bs_len), 0);
            break;
        case NBD_REPLY_TYPE_ERROR: {
            uint16_t mlen;

            assert_true(clen >= 6 && clen - 6 < sizeof(ri->msg));
            assert_int_equal(cli_recv(fd, p, 6), 0);
            err = nbd_get32(p);
            mlen = nbd_get16(p + 4);
            assert_true(err != 0 && mlen <= clen - 6);
            assert_int_equal(cli_recv(fd, ri->msg, clen - 6), 0);
            break;
        }
        default:
            fail_msg("unexpected chunk type %u", type);
        }
        if (flags & NBD_REPLY_FLAG_DONE)
            break;
        assert_int_equal(cli_recv(fd, h, 4), 0);
        assert_true(nbd_get32(h) == NBD_STRUCTURED_REPLY_MAGIC);
    }
    return err;
}

/* A request without payload, answered without data: returns the reply's error. */
static uint32_t cli_cmd(int fd, uint16_t flags, uint16_t type, uint64_t off, uint32_t len)
{
    static uint64_t cookie = 1000;
    uint64_t c = cookie++;

    assert_int_equal(cli_req(fd, flags, type, c, off, len, NULL), 0);
    return cli_reply(fd, c, off, len, NULL, NULL);
}

static uint32_t cli_write(int fd, uint16_t flags, uint64_t off, const void *data, uint32_t len)
{
    assert_int_equal(cli_req(fd, flags, NBD_CMD_WRITE, 7, off, len, data), 0);
    return cli_reply(fd, 7, off, len, NULL, NULL);
}

static uint32_t cli_read(int fd, uint16_t flags, uint64_t off, void *buf, uint32_t len,
                         struct reply_info *ri)
{
    assert_int_equal(cli_req(fd, flags, NBD_CMD_READ, 9, off, len, NULL), 0);
    return cli_reply(fd, 9, off, len, buf, ri);
}

static void cli_disc(int fd)
{
    cli_req(fd, 0, NBD_CMD_DISC, 0, 0, 0, NULL);
    close(fd);
}

static void fill_pattern(uint8_t *b, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        b[i] = (uint8_t)(x >> 16);
    }
}

/* Waits (up to 5 s) until every export opened so far has been released. */
static void wait_released(struct fixture *f)
{
    int64_t end = now_ms() + 5000;

    while (now_ms() < end && __atomic_load_n(&f->opens, __ATOMIC_SEQ_CST) !=
                                 __atomic_load_n(&f->releases, __ATOMIC_SEQ_CST)) {
        struct timespec ts = { .tv_nsec = 5 * 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_int_equal(__atomic_load_n(&f->opens, __ATOMIC_SEQ_CST),
                     __atomic_load_n(&f->releases, __ATOMIC_SEQ_CST));
}

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_SEQ_CST)

/* Waits (up to 5 s) for the i-th on_disconnect call and returns its err. */
static int disc_reason(struct fixture *f, int i)
{
    int64_t end = now_ms() + 5000;

    while (now_ms() < end && LOAD(f->ndisc) <= i) {
        struct timespec ts = { .tv_nsec = 5 * 1000000 };
        nanosleep(&ts, NULL);
    }
    assert_true(LOAD(f->ndisc) > i);
    return LOAD(f->disc_reasons[i]);
}

/* A full, working session on the default export: the server is still healthy. */
static void check_server_healthy(struct fixture *f)
{
    uint8_t w[512], r[512];
    int fd = cli_open(f, "disk", true, false, NULL);

    fill_pattern(w, sizeof(w), 99);
    assert_int_equal(cli_write(fd, 0, 4096, w, sizeof(w)), 0);
    assert_int_equal(cli_read(fd, 0, 4096, r, sizeof(r), NULL), 0);
    assert_memory_equal(w, r, sizeof(w));
    cli_disc(fd);
}

/* ---- handshake ---- */

static void test_handshake_go(void **state)
{
    struct fixture *f = *state;
    static const uint16_t infos[] = { NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, NBD_INFO_DESCRIPTION };
    struct info in;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    cli_info(fd, NBD_OPT_GO, "disk", infos, 3, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    assert_true(in.size == DEV_SIZE);
    assert_int_equal(in.tflags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                                    NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                                    NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN);
    assert_true(in.got_bs);
    assert_int_equal(in.bs_min, 1);
    assert_int_equal(in.bs_pref, 4096);
    assert_int_equal(in.bs_max, 32 * MiB);
    assert_string_equal(in.name, "disk");
    assert_string_equal(in.desc, "test disk");
    assert_int_equal(__atomic_load_n(&f->last_flags, __ATOMIC_SEQ_CST), 0);
    cli_disc(fd);
}

static void test_handshake_info_then_go(void **state)
{
    struct fixture *f = *state;
    struct info in, go;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(fd, NBD_OPT_INFO, "ro", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    assert_true(in.size == DEV_SIZE);
    assert_true(in.tflags & NBD_FLAG_READ_ONLY);
    assert_false(in.got_bs); /* not asked for */
    assert_int_equal(__atomic_load_n(&f->last_flags, __ATOMIC_SEQ_CST), NBD_OPEN_PROBE);
    assert_int_equal(LOAD(f->probes), 1);
    assert_int_equal(LOAD(f->opens), LOAD(f->releases)); /* INFO gives the export back at once */
    cli_info(fd, NBD_OPT_GO, "ro", NULL, 0, &go);
    assert_int_equal(go.final, NBD_REP_ACK);
    assert_int_equal(go.tflags, in.tflags);
    cli_disc(fd);
}

static void test_handshake_default_export(void **state)
{
    struct fixture *f = *state;
    struct info in;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(fd, NBD_OPT_GO, "", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    /* The canonical name is sent unasked because it differs from the one asked for. */
    assert_true(in.got_name);
    assert_string_equal(in.name, "disk");
    cli_disc(fd);
}

static void test_handshake_unknown_option(void **state)
{
    struct fixture *f = *state;
    struct rep r;
    uint8_t junk[100] = { 1, 2, 3 };
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, 0x4242, junk, sizeof(junk)), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.opt, 0x4242);
    assert_int_equal(r.type, NBD_REP_ERR_UNSUP);
    assert_int_equal(cli_opt(fd, NBD_OPT_STARTTLS, NULL, 0), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_UNSUP);
    /* Negotiation goes on. */
    struct info in;
    cli_info(fd, NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(fd);
}

static void test_handshake_list(void **state)
{
    struct fixture *f = *state;
    struct rep r;
    const char *want[] = { "disk", "ro", "plain", "vol" };
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST, NULL, 0), 0);
    for (int i = 0; i < 4; i++) {
        uint32_t nlen;

        assert_int_equal(cli_rep(fd, &r), 0);
        assert_int_equal(r.type, NBD_REP_SERVER);
        nlen = nbd_get32(r.data);
        assert_true(nlen <= r.len - 4);
        assert_int_equal(nlen, strlen(want[i]));
        assert_memory_equal(r.data + 4, want[i], nlen);
        if (i == 0) {
            assert_int_equal(r.len - 4 - nlen, strlen("test disk"));
            assert_memory_equal(r.data + 4 + nlen, "test disk", r.len - 4 - nlen);
        }
    }
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ACK);
    /* LIST takes no data. */
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST, "x", 1), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    cli_disc(fd);
    assert_int_equal(LOAD(f->opens), 0);
}

static void test_handshake_abort(void **state)
{
    struct fixture *f = *state;
    struct rep r;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_ABORT, NULL, 0), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ACK);
    assert_true(cli_closed(fd));
    close(fd);
}

static void test_handshake_export_name(void **state)
{
    struct fixture *f = *state;
    uint8_t reply[134];
    int fd;

    /* With NBD_FLAG_C_NO_ZEROES: size and flags only. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    assert_int_equal(cli_opt(fd, NBD_OPT_EXPORT_NAME, "disk", 4), 0);
    assert_int_equal(cli_recv(fd, reply, 10), 0);
    assert_true(nbd_get64(reply) == DEV_SIZE);
    assert_true(nbd_get16(reply + 8) & NBD_FLAG_HAS_FLAGS);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), 0);
    cli_disc(fd);

    /* Without: 124 zeroes follow. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_EXPORT_NAME, "", 0), 0);
    assert_int_equal(cli_recv(fd, reply, sizeof(reply)), 0);
    assert_true(nbd_get64(reply) == DEV_SIZE);
    for (size_t i = 10; i < sizeof(reply); i++)
        assert_int_equal(reply[i], 0);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), 0);
    cli_disc(fd);

    /* An unknown export cannot be reported: the server hangs up. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_EXPORT_NAME, "nope", 4), 0);
    assert_true(cli_closed(fd));
    close(fd);
    check_server_healthy(f);
}

static void test_handshake_open_errors(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *name;
        uint32_t rep;
    } cases[] = {
        { "nope", NBD_REP_ERR_UNKNOWN },   { "denied", NBD_REP_ERR_POLICY },
        { "down", NBD_REP_ERR_SHUTDOWN },  { "weird", NBD_REP_ERR_UNKNOWN },
        { "broken", NBD_REP_ERR_UNKNOWN },
    };
    struct info in;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cli_info(fd, NBD_OPT_GO, cases[i].name, NULL, 0, &in);
        assert_int_equal(in.final, cases[i].rep);
        cli_info(fd, NBD_OPT_INFO, cases[i].name, NULL, 0, &in);
        assert_int_equal(in.final, cases[i].rep);
    }
    cli_info(fd, NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(fd);
}

static void test_handshake_one_writer(void **state)
{
    struct fixture *f = *state;
    struct info in;
    int a, b;

    a = cli_open(f, "vol", false, false, NULL);
    b = cli_connect(f);
    cli_hello(b, NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(b, NBD_OPT_GO, "vol", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ERR_POLICY);
    cli_info(b, NBD_OPT_INFO, "vol", NULL, 0, &in); /* a probe is not a writer */
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(a);
    wait_released(f);
    cli_info(b, NBD_OPT_GO, "vol", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(b);
}

static void test_handshake_bad_client_flags(void **state)
{
    struct fixture *f = *state;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE | 0x100);
    assert_true(cli_closed(fd));
    close(fd);

    /* A bad option magic ends the session too. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_send(fd, "NOTMAGIC\0\0\0\x07\0\0\0\0", 16), 0);
    assert_true(cli_closed(fd));
    close(fd);
    check_server_healthy(f);
}

static void test_handshake_malformed_options(void **state)
{
    struct fixture *f = *state;
    struct rep r;
    uint8_t buf[64];
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    /* GO shorter than its fixed fields. */
    assert_int_equal(cli_opt(fd, NBD_OPT_GO, "\0\0", 2), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* Name length past the option's end. */
    nbd_put32(buf, 1000);
    nbd_put16(buf + 4, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_GO, buf, 6), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* Information request count that does not match the length. */
    nbd_put32(buf, 4);
    memcpy(buf + 4, "disk", 4);
    nbd_put16(buf + 8, 5);
    assert_int_equal(cli_opt(fd, NBD_OPT_INFO, buf, 10), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* A NUL inside the name. */
    nbd_put32(buf, 4);
    memcpy(buf + 4, "di\0k", 4);
    nbd_put16(buf + 8, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_GO, buf, 10), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* STRUCTURED_REPLY with data. */
    assert_int_equal(cli_opt(fd, NBD_OPT_STRUCTURED_REPLY, "x", 1), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* SET_META_CONTEXT before structured replies. */
    const char *q[] = { NBD_META_BASE_ALLOCATION };
    unsigned n;
    assert_int_equal(cli_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk", q, 1, &n, NULL),
                     NBD_REP_ERR_INVALID);
    /* Meta context with a query length past the end. */
    nbd_put32(buf, 4);
    memcpy(buf + 4, "disk", 4);
    nbd_put32(buf + 8, 1);
    nbd_put32(buf + 12, 500);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 16), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* Query count larger than the queries present. */
    nbd_put32(buf + 8, 0x7fffffff);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 12), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    /* Still negotiating. */
    struct info in;
    cli_info(fd, NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(fd);
}

static void test_handshake_meta_context(void **state)
{
    struct fixture *f = *state;
    struct rep r;
    unsigned n;
    uint32_t id = 0;
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    /* Listing: all contexts with no query, base: as a wildcard, unknown namespaces ignored. */
    assert_int_equal(cli_meta(fd, NBD_OPT_LIST_META_CONTEXT, "disk", NULL, 0, &n, NULL),
                     NBD_REP_ACK);
    assert_int_equal(n, 1);
    const char *wild[] = { "base:" };
    assert_int_equal(cli_meta(fd, NBD_OPT_LIST_META_CONTEXT, "disk", wild, 1, &n, NULL),
                     NBD_REP_ACK);
    assert_int_equal(n, 1);
    const char *other[] = { "qemu:dirty-bitmap:x", "x-foo:bar" };
    assert_int_equal(cli_meta(fd, NBD_OPT_LIST_META_CONTEXT, "disk", other, 2, &n, NULL),
                     NBD_REP_ACK);
    assert_int_equal(n, 0);
    assert_int_equal(cli_meta(fd, NBD_OPT_LIST_META_CONTEXT, "nope", NULL, 0, &n, NULL),
                     NBD_REP_ERR_UNKNOWN);

    assert_int_equal(cli_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ACK);
    /* "base:" selects nothing when setting. */
    assert_int_equal(cli_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk", wild, 1, &n, NULL),
                     NBD_REP_ACK);
    assert_int_equal(n, 0);
    const char *alloc[] = { NBD_META_BASE_ALLOCATION };
    assert_int_equal(cli_meta(fd, NBD_OPT_SET_META_CONTEXT, "disk", alloc, 1, &n, &id),
                     NBD_REP_ACK);
    assert_int_equal(n, 1);
    assert_int_not_equal(id, 0);
    cli_disc(fd);
}

/* ---- transmission ---- */

static void test_rw_roundtrip(void **state)
{
    struct fixture *f = *state;
    uint8_t *w = malloc(MiB), *r = malloc(MiB);
    struct nbd_memdev_stats st0, st1;
    int fd;

    assert_non_null(w);
    assert_non_null(r);
    for (int structured = 0; structured <= 1; structured++) {
        fd = cli_open(f, "disk", structured, false, NULL);
        fill_pattern(w, MiB, 1 + structured);
        assert_int_equal(cli_write(fd, 0, 3 * MiB + 17, w, MiB), 0);
        memset(r, 0xaa, MiB);
        assert_int_equal(cli_read(fd, 0, 3 * MiB + 17, r, MiB, NULL), 0);
        assert_memory_equal(w, r, MiB);
        assert_memory_equal(nbd_memdev_data(f->rw) + 3 * MiB + 17, w, MiB);
        /* Small unaligned read. */
        assert_int_equal(cli_read(fd, 0, 3 * MiB + 20, r, 3, NULL), 0);
        assert_memory_equal(r, w + 3, 3);
        /* Zero-length requests succeed and touch nothing. */
        assert_int_equal(cli_read(fd, 0, 0, r, 0, NULL), 0);
        assert_int_equal(cli_write(fd, 0, DEV_SIZE, w, 0), 0);

        /* FLUSH: replied only after the device's flush returned. */
        nbd_memdev_get_stats(f->rw, &st0);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), 0);
        nbd_memdev_get_stats(f->rw, &st1);
        assert_true(st1.flushes == st0.flushes + 1);
        /* FUA write: the device was asked for durability. */
        assert_int_equal(cli_write(fd, NBD_CMD_FLAG_FUA, 0, w, 4096), 0);
        nbd_memdev_get_stats(f->rw, &st0);
        assert_true(st0.fua_writes == st1.fua_writes + 1);
        /* A failing flush is reported, not acknowledged. */
        nbd_memdev_fail(f->rw, NBD_MEMDEV_OP_FLUSH, -EIO);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), NBD_EIO);
        nbd_memdev_fail(f->rw, 0, 0);
        /* TRIM with FUA flushes. */
        nbd_memdev_get_stats(f->rw, &st0);
        assert_int_equal(cli_cmd(fd, NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 8192), 0);
        nbd_memdev_get_stats(f->rw, &st1);
        assert_true(st1.flushes == st0.flushes + 1);
        /* CACHE is accepted. */
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_CACHE, 0, 4096), 0);
        cli_disc(fd);
    }
    free(w);
    free(r);
}

static void test_trim_zeroes_block_status(void **state)
{
    struct fixture *f = *state;
    uint8_t *w = malloc(MiB), *r = malloc(MiB);
    struct reply_info *ri = malloc(sizeof(*ri));
    struct nbd_memdev_stats st0, st1;
    int fd = cli_open(f, "disk", true, true, NULL);

    assert_non_null(w);
    assert_non_null(r);
    assert_non_null(ri);
    fill_pattern(w, MiB, 3);
    assert_int_equal(cli_write(fd, 0, 0, w, MiB), 0);
    assert_int_equal(cli_write(fd, 0, MiB, w, MiB), 0);

    /* Everything written: one data extent covering the range. */
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 5, 0, 2 * MiB, NULL), 0);
    assert_int_equal(cli_reply(fd, 5, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_ctx, 1);
    assert_int_equal(ri->bs_len, 8);
    assert_int_equal(nbd_get32(ri->bs), 2 * MiB);
    assert_int_equal(nbd_get32(ri->bs + 4), 0);

    /* Trim 256 KiB in the middle: a hole that reads as zeroes. */
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, 256 * 1024, 256 * 1024), 0);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 6, 0, 2 * MiB, NULL), 0);
    assert_int_equal(cli_reply(fd, 6, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_len, 24);
    assert_int_equal(nbd_get32(ri->bs), 256 * 1024);
    assert_int_equal(nbd_get32(ri->bs + 4), 0);
    assert_int_equal(nbd_get32(ri->bs + 8), 256 * 1024);
    assert_int_equal(nbd_get32(ri->bs + 12), NBD_STATE_HOLE | NBD_STATE_ZERO);
    assert_int_equal(nbd_get32(ri->bs + 16), 1536 * 1024);

    /* REQ_ONE: exactly one extent, no longer than asked. */
    assert_int_equal(
        cli_req(fd, NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 7, 300 * 1024, 100 * 1024, NULL),
        0);
    assert_int_equal(cli_reply(fd, 7, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_len, 8);
    assert_int_equal(nbd_get32(ri->bs), 100 * 1024);
    assert_int_equal(nbd_get32(ri->bs + 4), NBD_STATE_HOLE | NBD_STATE_ZERO);

    /* A large structured read sends the hole as a hole, and the data as data. */
    memset(r, 0xaa, MiB);
    assert_int_equal(cli_read(fd, 0, 0, r, MiB, ri), 0);
    assert_int_equal(ri->holes, 1);
    assert_int_equal(ri->data_chunks, 2);
    assert_memory_equal(r, w, 256 * 1024);
    for (size_t i = 256 * 1024; i < 512 * 1024; i++)
        assert_int_equal(r[i], 0);
    assert_memory_equal(r + 512 * 1024, w + 512 * 1024, 512 * 1024);
    /* ... unless the client asked not to fragment. */
    assert_int_equal(cli_read(fd, NBD_CMD_FLAG_DF, 0, r, MiB, ri), 0);
    assert_int_equal(ri->chunks, 1);
    assert_int_equal(ri->holes, 0);

    /* WRITE_ZEROES may punch a hole, but not with NO_HOLE. */
    nbd_memdev_get_stats(f->rw, &st0);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_WRITE_ZEROES, MiB, 64 * 1024), 0);
    assert_int_equal(cli_cmd(fd, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES,
                             MiB + 64 * 1024, 64 * 1024),
                     0);
    nbd_memdev_get_stats(f->rw, &st1);
    assert_true(st1.fua_writes == st0.fua_writes + 1);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 8, MiB, 128 * 1024, NULL), 0);
    assert_int_equal(cli_reply(fd, 8, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_len, 16);
    assert_int_equal(nbd_get32(ri->bs), 64 * 1024);
    assert_int_equal(nbd_get32(ri->bs + 4), NBD_STATE_HOLE | NBD_STATE_ZERO);
    assert_int_equal(nbd_get32(ri->bs + 8), 64 * 1024);
    assert_int_equal(nbd_get32(ri->bs + 12), 0);
    assert_int_equal(cli_read(fd, 0, MiB, r, 128 * 1024, NULL), 0);
    for (size_t i = 0; i < 128 * 1024; i++)
        assert_int_equal(r[i], 0);

    /* Block status errors: past the end, zero length, device failure. */
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_BLOCK_STATUS, DEV_SIZE - 512, 1024), NBD_EINVAL);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 0), NBD_EINVAL);
    nbd_memdev_fail(f->rw, NBD_MEMDEV_OP_BLOCK_STATUS, -EIO);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 4096), NBD_EIO);
    /* A sparse read falls back to plain data if block status fails. */
    assert_int_equal(cli_read(fd, 0, 0, r, MiB, ri), 0);
    assert_int_equal(ri->holes, 0);
    nbd_memdev_fail(f->rw, 0, 0);
    cli_disc(fd);
    free(w);
    free(r);
    free(ri);
}

static void test_block_status_many_extents(void **state)
{
    struct fixture *f = *state;
    struct reply_info *ri = malloc(sizeof(*ri));
    uint8_t blk[4096];
    int fd = cli_open(f, "disk", true, true, NULL);
    uint64_t sum = 0;

    assert_non_null(ri);
    memset(blk, 1, sizeof(blk));
    /* Every other 4 KiB block written: 2048 extents in 8 MiB, more than one reply holds. */
    for (uint64_t off = 0; off < DEV_SIZE; off += 8192)
        assert_int_equal(cli_write(fd, 0, off, blk, sizeof(blk)), 0);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 5, 0, DEV_SIZE, NULL), 0);
    assert_int_equal(cli_reply(fd, 5, 0, 0, NULL, ri), 0);
    assert_true(ri->bs_len / 8 >= 1 && ri->bs_len / 8 <= 1024);
    for (uint32_t i = 0; i < ri->bs_len / 8; i++) {
        assert_int_equal(nbd_get32(ri->bs + 8 * i), 4096);
        assert_int_equal(nbd_get32(ri->bs + 8 * i + 4),
                         (i % 2) ? NBD_STATE_HOLE | NBD_STATE_ZERO : 0);
        sum += 4096;
    }
    assert_true(sum < DEV_SIZE); /* a shorter answer, as the spec allows */
    cli_disc(fd);
    free(ri);
}

static void test_plain_device_fallbacks(void **state)
{
    struct fixture *f = *state;
    uint8_t w[8192], r[8192];
    struct reply_info ri;
    struct info in;
    struct nbd_memdev_stats st;
    int fd = cli_open(f, "plain", true, true, &in);

    /* No trim callback: trim is not offered; write-zeroes is emulated with writes. */
    assert_false(in.tflags & NBD_FLAG_SEND_TRIM);
    assert_true(in.tflags & NBD_FLAG_SEND_WRITE_ZEROES);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, 0, 4096), NBD_EINVAL);
    fill_pattern(w, sizeof(w), 5);
    assert_int_equal(cli_write(fd, 0, 0, w, sizeof(w)), 0);
    assert_int_equal(cli_cmd(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 100, 5000), 0);
    nbd_memdev_get_stats(f->plain, &st);
    assert_true(st.flushes >= 1);
    assert_int_equal(cli_read(fd, 0, 0, r, sizeof(r), NULL), 0);
    assert_memory_equal(r, w, 100);
    for (int i = 100; i < 5100; i++)
        assert_int_equal(r[i], 0);
    assert_memory_equal(r + 5100, w + 5100, sizeof(w) - 5100);
    /* Emulated write-zeroes larger than the zero buffer. */
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_WRITE_ZEROES, 0, 3 * MiB), 0);
    /* No block status callback: everything is data. */
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 5, 0, DEV_SIZE, NULL), 0);
    assert_int_equal(cli_reply(fd, 5, 0, 0, NULL, &ri), 0);
    assert_int_equal(ri.bs_len, 8);
    assert_int_equal(nbd_get32(ri.bs), DEV_SIZE);
    assert_int_equal(nbd_get32(ri.bs + 4), 0);
    cli_disc(fd);
}

static void test_readonly(void **state)
{
    struct fixture *f = *state;
    const char *names[] = { "ro", "rwro" };
    uint8_t w[4096] = { 1 }, r[4096];

    for (int i = 0; i < 2; i++) {
        struct nbd_memdev_stats st0, st1;
        struct blockdev *bd = i == 0 ? f->ro : f->rw;
        struct info in;
        int fd = cli_open(f, names[i], i == 1, false, &in);

        assert_true(in.tflags & NBD_FLAG_READ_ONLY);
        assert_false(in.tflags &
                     (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FUA));
        nbd_memdev_get_stats(bd, &st0);
        /* The refused write's payload is consumed: the next request parses fine. */
        assert_int_equal(cli_write(fd, 0, 0, w, sizeof(w)), NBD_EPERM);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, 0, 4096), NBD_EPERM);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_WRITE_ZEROES, 0, 4096), NBD_EPERM);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), 0);
        assert_int_equal(cli_read(fd, 0, 0, r, sizeof(r), NULL), 0);
        nbd_memdev_get_stats(bd, &st1);
        assert_true(st1.pwrites == st0.pwrites && st1.trims == st0.trims &&
                    st1.zeroes == st0.zeroes);
        cli_disc(fd);
    }
}

static void test_out_of_range(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[8192] = { 0 };
    struct info in;

    for (int structured = 0; structured <= 1; structured++) {
        int fd = cli_open(f, "disk", structured, structured, NULL);

        assert_int_equal(cli_read(fd, 0, DEV_SIZE - 4096, buf, 8192, NULL), NBD_EINVAL);
        assert_int_equal(cli_read(fd, 0, DEV_SIZE, buf, 1, NULL), NBD_EINVAL);
        assert_int_equal(cli_read(fd, 0, UINT64_MAX, buf, 1, NULL), NBD_EINVAL);
        assert_int_equal(cli_read(fd, 0, UINT64_MAX - 100, buf, 4096, NULL), NBD_EINVAL);
        assert_int_equal(cli_write(fd, 0, DEV_SIZE - 4096, buf, 8192), NBD_ENOSPC);
        assert_int_equal(cli_write(fd, 0, UINT64_MAX - 100, buf, 4096), NBD_ENOSPC);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, DEV_SIZE - 4096, 8192), NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_WRITE_ZEROES, UINT64_MAX - 1, 4096), NBD_ENOSPC);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_CACHE, DEV_SIZE, 1), NBD_EINVAL);
        /* The last byte is fine; zero length at the very end too. */
        assert_int_equal(cli_read(fd, 0, DEV_SIZE - 1, buf, 1, NULL), 0);
        assert_int_equal(cli_read(fd, 0, DEV_SIZE, buf, 0, NULL), 0);
        cli_disc(fd);
    }
    /* An empty export. */
    int fd = cli_open(f, "empty", true, false, &in);
    assert_true(in.size == 0);
    assert_int_equal(cli_read(fd, 0, 0, buf, 0, NULL), 0);
    assert_int_equal(cli_read(fd, 0, 0, buf, 1, NULL), NBD_EINVAL);
    cli_disc(fd);
}

static void test_bad_requests(void **state)
{
    struct fixture *f = *state;
    static uint8_t buf[128 * 1024];
    struct reply_info ri;

    for (int structured = 0; structured <= 1; structured++) {
        int fd = cli_open(f, "disk", structured, false, NULL);

        /* Data, so that the sparse read below has to read (a hole needs no pread). */
        assert_int_equal(cli_write(fd, 0, 0, buf, sizeof(buf)), 0);

        assert_int_equal(cli_cmd(fd, 0, 99, 0, 0), NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 1, 0), NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 1), NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, NBD_CMD_FLAG_FAST_ZERO, NBD_CMD_WRITE_ZEROES, 0, 4096),
                         NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_TRIM, 0, 4096), NBD_EINVAL);
        assert_int_equal(cli_cmd(fd, 0x8000, NBD_CMD_FLUSH, 0, 0), NBD_EINVAL);
        /* Block status without a negotiated context. */
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 4096), NBD_EINVAL);
        /* A read error chunk carries the error (structured) or a bare error (simple). */
        assert_int_equal(cli_read(fd, NBD_CMD_FLAG_NO_HOLE, 0, buf, 16, &ri), NBD_EINVAL);
        assert_int_equal(ri.structured, structured);
        /* DF is valid only with structured replies. */
        assert_int_equal(cli_read(fd, NBD_CMD_FLAG_DF, 0, buf, 16, NULL),
                         structured ? 0 : NBD_EINVAL);
        /* Reads over the payload cap are refused, the connection goes on. */
        assert_int_equal(cli_read(fd, 0, 0, NULL, 33 * MiB, NULL), NBD_EINVAL);
        /* Device errors. */
        nbd_memdev_fail(f->rw, NBD_MEMDEV_OP_READ | NBD_MEMDEV_OP_WRITE, -EIO);
        assert_int_equal(cli_read(fd, 0, 0, buf, 4096, &ri), NBD_EIO);
        assert_int_equal(cli_read(fd, 0, 0, buf, sizeof(buf), &ri), NBD_EIO);
        assert_int_equal(cli_write(fd, 0, 0, buf, 4096), NBD_EIO);
        nbd_memdev_fail(f->rw, NBD_MEMDEV_OP_WRITE, -ENOSPC);
        assert_int_equal(cli_write(fd, 0, 0, buf, 4096), NBD_ENOSPC);
        nbd_memdev_fail(f->rw, NBD_MEMDEV_OP_WRITE, -EROFS);
        assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, 0, 4096), NBD_EPERM);
        nbd_memdev_fail(f->rw, 0, 0);
        assert_int_equal(cli_read(fd, 0, 0, buf, 4096, NULL), 0);
        cli_disc(fd);
    }
}

static void test_bad_magic_and_huge_write(void **state)
{
    struct fixture *f = *state;
    uint8_t h[28];
    int fd = cli_open(f, "disk", false, false, NULL);

    memset(h, 0x55, sizeof(h));
    assert_int_equal(cli_send(fd, h, sizeof(h)), 0);
    assert_true(cli_closed(fd));
    close(fd);

    /* A WRITE longer than the payload cap: the server cannot trust it and hangs up. */
    fd = cli_open(f, "disk", false, false, NULL);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_WRITE, 1, 0, 33 * MiB, NULL), 0);
    assert_true(cli_closed(fd));
    close(fd);
    wait_released(f);
    check_server_healthy(f);

    assert_int_equal(disc_reason(f, 0), -EPROTO);
    assert_int_equal(disc_reason(f, 1), -EPROTO);
}

static void test_oversized_options(void **state)
{
    struct fixture *f = *state;
    size_t big = 100 * 1024;
    uint8_t *junk = calloc(1, big);
    struct rep r;
    struct info in;
    char name[5001];
    int fd;

    assert_non_null(junk);
    /* Over the in-memory cap but skippable: refused with TOO_BIG, negotiation goes on. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_GO, junk, (uint32_t)big), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_TOO_BIG);
    /* An export name over 4096 bytes. */
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    cli_info(fd, NBD_OPT_GO, name, NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ERR_TOO_BIG);
    cli_info(fd, NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(fd);

    /* Far too big: the server hangs up without reading it. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_GO, NULL, 0), 0); /* header only, below */
    {
        struct rep rr;
        assert_int_equal(cli_rep(fd, &rr), 0); /* zero-length GO: invalid */
        assert_int_equal(rr.type, NBD_REP_ERR_INVALID);
    }
    uint8_t h[16];
    nbd_put64(h, NBD_IHAVEOPT);
    nbd_put32(h + 8, NBD_OPT_GO);
    nbd_put32(h + 12, 0xfffffff0u);
    assert_int_equal(cli_send(fd, h, sizeof(h)), 0);
    assert_true(cli_closed(fd));
    close(fd);

    /* EXPORT_NAME with an over-long name cannot be answered: hang up. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    assert_int_equal(cli_opt(fd, NBD_OPT_EXPORT_NAME, name, 5000), 0);
    assert_true(cli_closed(fd));
    close(fd);
    free(junk);
    check_server_healthy(f);
}

static void test_abrupt_disconnects(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[65536] = { 0 };
    int fd;

    /* Before anything. */
    fd = cli_connect(f);
    close(fd);
    /* Mid client flags. */
    fd = cli_connect(f);
    assert_int_equal(cli_recv(fd, buf, 18), 0);
    cli_send(fd, buf, 2);
    close(fd);
    /* Mid option header. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_send(fd, "IHAVEOPT", 8);
    close(fd);
    /* Mid option data. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    nbd_put64(buf, NBD_IHAVEOPT);
    nbd_put32(buf + 8, NBD_OPT_GO);
    nbd_put32(buf + 12, 100);
    cli_send(fd, buf, 16 + 10);
    close(fd);
    /* Mid request header, after GO. */
    fd = cli_open(f, "disk", true, false, NULL);
    cli_send(fd, "\x25\x60\x95\x13\0\0", 6);
    close(fd);
    /* Mid write payload. */
    fd = cli_open(f, "disk", false, false, NULL);
    cli_req(fd, 0, NBD_CMD_WRITE, 1, 0, 65536, NULL);
    cli_send(fd, buf, 1000);
    close(fd);
    /* With requests in flight and replies unread. */
    nbd_memdev_set_read_delay(f->rw, 20000);
    fd = cli_open(f, "disk", true, false, NULL);
    for (int i = 0; i < 16; i++)
        cli_req(fd, 0, NBD_CMD_READ, (uint64_t)i, 0, 65536, NULL);
    close(fd);
    /* A client that stops reading its replies, then vanishes. */
    fd = cli_open(f, "disk", false, false, NULL);
    for (int i = 0; i < 64; i++)
        if (cli_req(fd, 0, NBD_CMD_READ, (uint64_t)i, 0, 65536, NULL) < 0)
            break;
    close(fd);
    nbd_memdev_set_read_delay(f->rw, 0);

    wait_released(f);
    check_server_healthy(f);
}

struct sender {
    int fd;
    int n;
    uint32_t len;
};

static void *send_reads(void *arg)
{
    struct sender *s = arg;

    for (int i = 0; i < s->n; i++)
        cli_req(s->fd, 0, NBD_CMD_READ, (uint64_t)i, (uint64_t)i * s->len, s->len, NULL);
    return NULL;
}

static void test_concurrent_requests(void **state)
{
    struct fixture *f = *state;
    struct sender s = { .n = 16, .len = 4096 };
    bool seen[16] = { false };
    uint8_t *expect = nbd_memdev_data(f->rw), buf[4096];
    pthread_t t;
    int64_t t0, elapsed;

    fill_pattern(expect, 16 * 4096, 11);
    /* 16 reads of 50 ms each on 4 workers: about 4 rounds (200 ms), not 16 (800 ms). */
    nbd_memdev_set_read_delay(f->rw, 50000);
    s.fd = cli_open(f, "disk", false, false, NULL);
    t0 = now_ms();
    assert_int_equal(pthread_create(&t, NULL, send_reads, &s), 0);
    for (int i = 0; i < 16; i++) {
        uint8_t h[16];
        uint64_t cookie;

        assert_int_equal(cli_recv(s.fd, h, sizeof(h)), 0);
        assert_true(nbd_get32(h) == NBD_SIMPLE_REPLY_MAGIC);
        assert_int_equal(nbd_get32(h + 4), 0);
        cookie = nbd_get64(h + 8);
        assert_true(cookie < 16 && !seen[cookie]);
        seen[cookie] = true;
        assert_int_equal(cli_recv(s.fd, buf, sizeof(buf)), 0);
        assert_memory_equal(buf, expect + cookie * 4096, sizeof(buf));
    }
    elapsed = now_ms() - t0;
    pthread_join(t, NULL);
    nbd_memdev_set_read_delay(f->rw, 0);
    assert_true(elapsed < 600);
    cli_disc(s.fd);
}

static void test_disc_waits_for_inflight(void **state)
{
    struct fixture *f = *state;
    uint8_t buf[4096];
    int fd = cli_open(f, "disk", false, false, NULL);

    nbd_memdev_set_read_delay(f->rw, 50000);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cli_req(fd, 0, NBD_CMD_READ, (uint64_t)i, 0, 4096, NULL), 0);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_DISC, 9, 0, 0, NULL), 0);
    /* Every request sent before DISC is answered, then the server closes. */
    for (int i = 0; i < 3; i++) {
        uint8_t h[16];
        assert_int_equal(cli_recv(fd, h, sizeof(h)), 0);
        assert_int_equal(nbd_get32(h + 4), 0);
        assert_int_equal(cli_recv(fd, buf, sizeof(buf)), 0);
    }
    assert_true(cli_closed(fd));
    close(fd);
    nbd_memdev_set_read_delay(f->rw, 0);
    wait_released(f);
    assert_int_equal(disc_reason(f, 0), 0);
}

static void test_handshake_more_errors(void **state)
{
    struct fixture *f = *state;
    struct info in;
    struct rep r;
    uint8_t buf[6000];
    int fd = cli_connect(f);

    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(fd, NBD_OPT_GO, "einval", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ERR_INVALID);
    cli_info(fd, NBD_OPT_GO, "positive", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ERR_UNKNOWN);

    /* The resolver's list fails part way: entries, then an error instead of ACK. */
    f->list_err = -ESHUTDOWN;
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST, NULL, 0), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_SERVER);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_SHUTDOWN);
    f->list_err = 0;

    /* Malformed metadata context requests. */
    nbd_put32(buf, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 4), 0); /* too short */
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    nbd_put32(buf, 100); /* name longer than the option */
    nbd_put32(buf + 4, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 8), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    nbd_put32(buf, 4); /* trailing bytes after the queries */
    memcpy(buf + 4, "disk", 4);
    nbd_put32(buf + 8, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 14), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    memcpy(buf + 4, "d\0sk", 4); /* NUL in the name */
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 12), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_INVALID);
    memcpy(buf + 4, "disk", 4); /* a query over 4096 bytes */
    nbd_put32(buf + 8, 1);
    nbd_put32(buf + 12, 5000);
    memset(buf + 16, 'q', 5000);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 5016), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_TOO_BIG);
    nbd_put32(buf, 5000); /* a name over 4096 bytes */
    memset(buf + 4, 'n', 5000);
    nbd_put32(buf + 5004, 0);
    assert_int_equal(cli_opt(fd, NBD_OPT_LIST_META_CONTEXT, buf, 5008), 0);
    assert_int_equal(cli_rep(fd, &r), 0);
    assert_int_equal(r.type, NBD_REP_ERR_TOO_BIG);
    cli_info(fd, NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_disc(fd);
}

struct big_sender {
    int fd;
    int n;
};

static void *send_big_reads(void *arg)
{
    struct big_sender *s = arg;

    for (int i = 0; i < s->n; i++)
        cli_req(s->fd, 0, NBD_CMD_READ, (uint64_t)i, (uint64_t)i * 4096, 32 * MiB, NULL);
    return NULL;
}

static void test_large_requests(void **state)
{
    struct fixture *f = *state;
    uint8_t *w = malloc(33 * MiB), *r = malloc(32 * MiB);
    struct big_sender s = { .n = 6 };
    pthread_t t;

    assert_non_null(w);
    assert_non_null(r);
    fill_pattern(w, 33 * MiB, 21);
    s.fd = cli_open(f, "big", false, false, NULL);
    /* The largest payload allowed, both ways. */
    assert_int_equal(cli_write(s.fd, 0, 0, w, 32 * MiB), 0);
    assert_int_equal(cli_write(s.fd, NBD_CMD_FLAG_FUA, 32 * MiB, w + 32 * MiB, MiB), 0);
    assert_int_equal(cli_read(s.fd, 0, MiB, r, 32 * MiB, NULL), 0);
    assert_memory_equal(r, w + MiB, 32 * MiB);
    assert_int_equal(cli_read(s.fd, 0, 0, NULL, 32 * MiB + 1, NULL), NBD_EINVAL);
    /* Six 32 MiB reads in flight on four workers: more than the per-connection budget, so
     * some wait for memory; all complete, with the right bytes. */
    nbd_memdev_set_read_delay(f->big, 20000);
    assert_int_equal(pthread_create(&t, NULL, send_big_reads, &s), 0);
    for (int i = 0; i < s.n; i++) {
        uint8_t h[16];
        uint64_t c;

        assert_int_equal(cli_recv(s.fd, h, sizeof(h)), 0);
        assert_int_equal(nbd_get32(h + 4), 0);
        c = nbd_get64(h + 8);
        assert_true(c < (uint64_t)s.n);
        assert_int_equal(cli_recv(s.fd, r, 32 * MiB), 0);
        assert_memory_equal(r, w + c * 4096, 32 * MiB);
    }
    pthread_join(t, NULL);
    nbd_memdev_set_read_delay(f->big, 0);
    cli_disc(s.fd);
    free(w);
    free(r);
}

/* A WRITE payload that arrives in pieces, with pauses, and a READ queued right behind it in the
 * same send: the payload is read whole and nothing past it. */
static void test_write_payload_in_pieces(void **state)
{
    struct fixture *f = *state;
    uint8_t *w = malloc(MiB), *r = malloc(MiB), h[28];
    struct timespec pause = { .tv_nsec = 20 * 1000000 };
    int fd;

    assert_non_null(w);
    assert_non_null(r);
    fill_pattern(w, MiB, 33);
    fd = cli_open(f, "disk", false, false, NULL);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_WRITE, 7, MiB, MiB, NULL), 0);
    assert_int_equal(cli_send(fd, w, 1000), 0);
    nanosleep(&pause, NULL);
    assert_int_equal(cli_send(fd, w + 1000, 300000), 0);
    nanosleep(&pause, NULL);
    /* The rest of the payload and the next request's header in one send. */
    uint8_t *tail = malloc(MiB - 301000 + sizeof(h));
    assert_non_null(tail);
    memcpy(tail, w + 301000, MiB - 301000);
    nbd_put32(h, NBD_REQUEST_MAGIC);
    nbd_put16(h + 4, 0);
    nbd_put16(h + 6, NBD_CMD_READ);
    nbd_put64(h + 8, 8);
    nbd_put64(h + 16, MiB);
    nbd_put32(h + 24, MiB);
    memcpy(tail + MiB - 301000, h, sizeof(h));
    assert_int_equal(cli_send(fd, tail, MiB - 301000 + sizeof(h)), 0);
    /* Replies in either order: the read may overtake the write on another worker, so only
     * the write's is checked here and the data read again after it. */
    for (int i = 0; i < 2; i++) {
        uint8_t rh[16];
        assert_int_equal(cli_recv(fd, rh, sizeof(rh)), 0);
        assert_int_equal(nbd_get32(rh + 4), 0);
        if (nbd_get64(rh + 8) == 8)
            assert_int_equal(cli_recv(fd, r, MiB), 0);
        else
            assert_true(nbd_get64(rh + 8) == 7);
    }
    assert_int_equal(cli_read(fd, 0, MiB, r, MiB, NULL), 0);
    assert_memory_equal(r, w, MiB);
    assert_memory_equal(nbd_memdev_data(f->rw) + MiB, w, MiB);
    cli_disc(fd);
    free(tail);
    free(w);
    free(r);
}

static void test_block_status_device_quirks(void **state)
{
    struct fixture *f = *state;
    struct reply_info *ri = malloc(sizeof(*ri));
    uint8_t *w = malloc(MiB), *r = malloc(MiB);
    int fd;

    assert_non_null(ri);
    assert_non_null(w);
    assert_non_null(r);
    /* A device answering one 4 KiB extent per call: the server asks again and merges. */
    fd = cli_open(f, "split", true, true, NULL);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 1, 0, MiB, NULL), 0);
    assert_int_equal(cli_reply(fd, 1, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_len, 8);
    assert_int_equal(nbd_get32(ri->bs), 64 * 4096); /* 64 calls at most per request */
    assert_int_equal(nbd_get32(ri->bs + 4), NBD_STATE_HOLE | NBD_STATE_ZERO);
    fill_pattern(w, MiB, 8);
    assert_int_equal(cli_write(fd, 0, 8192, w, 4096), 0);
    assert_int_equal(cli_req(fd, 0, NBD_CMD_BLOCK_STATUS, 2, 0, MiB, NULL), 0);
    assert_int_equal(cli_reply(fd, 2, 0, 0, NULL, ri), 0);
    assert_int_equal(ri->bs_len, 24);
    assert_int_equal(nbd_get32(ri->bs), 8192);
    assert_int_equal(nbd_get32(ri->bs + 8), 4096);
    assert_int_equal(nbd_get32(ri->bs + 12), 0);
    assert_int_equal(nbd_get32(ri->bs + 16), 64 * 4096 - 12288);
    /* Sparse reads see only the first extent; the rest is sent as data. */
    assert_int_equal(cli_write(fd, 0, 0, w, 8192), 0);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_TRIM, 4096, 4096), 0);
    memset(r, 0xaa, MiB);
    assert_int_equal(cli_read(fd, 0, 4096, r, 128 * 1024, ri), 0);
    assert_int_equal(ri->holes, 1);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(r[i], 0);
    assert_memory_equal(r + 4096, w, 4096);
    assert_int_equal(cli_read(fd, 0, 8192, r, 128 * 1024, ri), 0);
    assert_int_equal(ri->holes, 0);
    assert_memory_equal(r, w, 4096);
    cli_disc(fd);

    /* A device returning nonsense extents: block status fails, reads still work. */
    fd = cli_open(f, "badext", true, true, NULL);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_BLOCK_STATUS, 0, 4096), NBD_EIO);
    assert_int_equal(cli_write(fd, 0, 0, w, 128 * 1024), 0);
    assert_int_equal(cli_read(fd, 0, 0, r, 128 * 1024, ri), 0);
    assert_int_equal(ri->holes, 0);
    assert_memory_equal(r, w, 128 * 1024);
    cli_disc(fd);
    free(ri);
    free(w);
    free(r);
}

/* ---- lifecycle ---- */

static void test_stop_with_clients(void **state)
{
    struct fixture *f = *state;
    int idle_hs, idle_tx, busy;
    struct stat st;
    int64_t t0;
    uint8_t h[16];

    idle_hs = cli_connect(f); /* never says a word */
    idle_tx = cli_open(f, "disk", false, false, NULL);
    busy = cli_open(f, "ro", false, false, NULL);
    nbd_memdev_set_read_delay(f->ro, 200000);
    assert_int_equal(cli_req(busy, 0, NBD_CMD_READ, 1, 0, 4096, NULL), 0);
    usleep(50000); /* let the server pick the read up */
    t0 = now_ms();
    nbd_server_stop(f->srv);
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(LOAD(f->opens), LOAD(f->releases));
    /* The read in flight was answered during the grace period. */
    assert_int_equal(cli_recv(busy, h, sizeof(h)), 0);
    assert_int_equal(nbd_get32(h + 4), 0);
    /* The socket file is gone, new connections and listeners are refused. */
    assert_int_equal(stat(f->sock, &st), -1);
    assert_int_equal(nbd_server_listen_unix(f->srv, f->sock), -ESHUTDOWN);
    assert_int_equal(nbd_server_start(f->srv), -ESHUTDOWN);
    nbd_server_stop(f->srv); /* idempotent */
    close(idle_hs);
    close(idle_tx);
    close(busy);
    nbd_memdev_set_read_delay(f->ro, 0);
}

static void test_max_connections(void **state)
{
    struct fixture *f = *state;
    struct nbd_stats st;
    int a, b, c;

    restart_server(f, 2, 2, 5000);
    a = cli_open(f, "disk", false, false, NULL);
    b = cli_open(f, "ro", false, false, NULL);
    c = cli_connect(f);
    assert_true(cli_closed(c)); /* refused before the greeting */
    close(c);
    nbd_server_get_stats(f->srv, &st);
    assert_true(st.connections_refused == 1);
    assert_true(st.connections_active == 2);
    cli_disc(a);
    cli_disc(b);
    wait_released(f);
    check_server_healthy(f);
}

static void test_handshake_timeout(void **state)
{
    struct fixture *f = *state;
    uint8_t h[18];
    int64_t t0;
    int fd;

    restart_server(f, 1, 0, 200);
    fd = cli_connect(f);
    assert_int_equal(cli_recv(fd, h, sizeof(h)), 0);
    t0 = now_ms();
    assert_true(cli_closed(fd));
    assert_true(now_ms() - t0 < 2000);
    close(fd);
    /* A slow client dribbling an option byte by byte is cut at the same deadline. */
    fd = cli_connect(f);
    cli_hello(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
    t0 = now_ms();
    for (int i = 0; i < 40 && cli_send(fd, "I", 1) == 0; i++)
        usleep(20000);
    assert_true(cli_closed(fd));
    assert_true(now_ms() - t0 < 2000);
    close(fd);
    /* Once in transmission, an idle client is not timed out. */
    fd = cli_open(f, "disk", false, false, NULL);
    usleep(400000);
    assert_int_equal(cli_cmd(fd, 0, NBD_CMD_FLUSH, 0, 0), 0);
    cli_disc(fd);
    wait_released(f);
    assert_int_equal(disc_reason(f, 0), -ETIMEDOUT);
}

struct handle_arg {
    struct nbd_server *srv;
    int fd;
    int ret;
};

static void *run_handle(void *arg)
{
    struct handle_arg *h = arg;

    h->ret = nbd_server_handle_fd(h->srv, h->fd);
    return NULL;
}

static void test_serve_and_handle_fd(void **state)
{
    struct fixture *f = *state;
    struct handle_arg ha;
    struct info in;
    pthread_t t;
    int sv[2];

    /* serve_fd: a connected socket served on a server thread. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(nbd_server_serve_fd(f->srv, sv[0]), 0);
    set_timeout(sv[1], 10000);
    cli_hello(sv[1], NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(sv[1], NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    assert_int_equal(cli_cmd(sv[1], 0, NBD_CMD_FLUSH, 0, 0), 0);
    cli_disc(sv[1]);

    /* handle_fd: served on the caller's thread; returns how the connection ended. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ha = (struct handle_arg){ .srv = f->srv, .fd = sv[0], .ret = 1 };
    assert_int_equal(pthread_create(&t, NULL, run_handle, &ha), 0);
    set_timeout(sv[1], 10000);
    cli_hello(sv[1], NBD_FLAG_C_FIXED_NEWSTYLE);
    cli_info(sv[1], NBD_OPT_GO, "disk", NULL, 0, &in);
    assert_int_equal(in.final, NBD_REP_ACK);
    cli_send(sv[1], "garbage garbage garbage garbage", 28);
    assert_true(cli_closed(sv[1]));
    pthread_join(t, NULL);
    assert_int_equal(ha.ret, -EPROTO);
    close(sv[1]);

    /* handle_fd blocked in a handshake is ended by stop. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ha = (struct handle_arg){ .srv = f->srv, .fd = sv[0], .ret = 1 };
    assert_int_equal(pthread_create(&t, NULL, run_handle, &ha), 0);
    usleep(20000);
    nbd_server_stop(f->srv);
    pthread_join(t, NULL);
    assert_int_equal(ha.ret, 0);
    close(sv[1]);
    assert_int_equal(nbd_server_serve_fd(f->srv, dup(2)), -ESHUTDOWN);
}

static void test_listen_unix(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    char path[160], longpath[200];
    int fd;

    /* A stale socket file is replaced. */
    snprintf(path, sizeof(path), "%s/stale.sock", f->dir);
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_int_equal(nbd_server_listen_unix(f->srv, path), 0);
    assert_int_equal(nbd_server_start(f->srv), -EALREADY);
    /* A live one is not. */
    assert_int_equal(nbd_server_listen_unix(f->srv, path), -EADDRINUSE);
    /* Nor any other file. */
    snprintf(path, sizeof(path), "%s/file", f->dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    close(fd);
    assert_int_equal(nbd_server_listen_unix(f->srv, path), -EEXIST);
    unlink(path);
    memset(longpath, 'x', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(nbd_server_listen_unix(f->srv, longpath), -ENAMETOOLONG);
    /* The second listener serves too, added after start. */
    snprintf(path, sizeof(path), "%s/stale.sock", f->dir);
    strcpy(f->sock, path);
    check_server_healthy(f);
    nbd_server_stop(f->srv);
    assert_int_equal(access(path, F_OK), -1);
}

static void test_new_rejects_bad_config(void **state)
{
    struct nbd_server_config cfg = { 0 };
    struct nbd_resolver half = { .open = fx_open };
    struct nbd_server *s = NULL;

    (void)state;
    assert_int_equal(nbd_server_new(&cfg, &s), -EINVAL);
    cfg.resolver = &half;
    assert_int_equal(nbd_server_new(&cfg, &s), -EINVAL);
    assert_null(s);
    nbd_server_free(NULL);
    /* Out-of-range tunables are clamped, not refused. */
    cfg.resolver = &fx_resolver;
    cfg.workers = 100000;
    assert_int_equal(nbd_server_new(&cfg, &s), 0);
    nbd_server_free(s);
}

#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_handshake_go),
        T(test_handshake_info_then_go),
        T(test_handshake_default_export),
        T(test_handshake_unknown_option),
        T(test_handshake_list),
        T(test_handshake_abort),
        T(test_handshake_export_name),
        T(test_handshake_open_errors),
        T(test_handshake_one_writer),
        T(test_handshake_bad_client_flags),
        T(test_handshake_malformed_options),
        T(test_handshake_meta_context),
        T(test_handshake_more_errors),
        T(test_rw_roundtrip),
        T(test_trim_zeroes_block_status),
        T(test_block_status_many_extents),
        T(test_block_status_device_quirks),
        T(test_large_requests),
        T(test_write_payload_in_pieces),
        T(test_plain_device_fallbacks),
        T(test_readonly),
        T(test_out_of_range),
        T(test_bad_requests),
        T(test_bad_magic_and_huge_write),
        T(test_oversized_options),
        T(test_abrupt_disconnects),
        T(test_concurrent_requests),
        T(test_disc_waits_for_inflight),
        T(test_stop_with_clients),
        T(test_max_connections),
        T(test_handshake_timeout),
        T(test_serve_and_handle_fd),
        T(test_listen_unix),
        cmocka_unit_test(test_new_rejects_bad_config),
    };

    return cmocka_run_group_tests_name("nbd", tests, NULL, NULL);
}
