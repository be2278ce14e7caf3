/*
 * nbd_transmit.c — the NBD transmission phase: requests in, blockdev calls, replies out.
 *
 * A connection runs `workers` threads (the connection's own thread is one of them).  They take
 * turns reading: whoever holds read_lock reads the next request header and its WRITE payload,
 * validates it once (validate_request: flags, bounds, overflow, read-only, negotiated
 * features), drops the lock and executes it, then writes the whole reply under write_lock.  At
 * queue depth 1 the thread that read a request also serves it, with no hand-off between
 * threads; at higher depths up to `workers` requests run at once.  Everything after
 * validate_request trusts the request.
 *
 * Memory per connection is bounded: the input buffer, one buffer per worker (kept up to
 * NBD_KEEP_BUF), and larger payloads only within NBD_CONN_BUDGET bytes in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "nbd/nbd_int.h"
#include "nbd/nbd_proto.h"

struct nbd_worker {
    struct nbd_conn *c;
    pthread_t thread;
    uint8_t *buf;
    size_t cap;
    uint64_t budget; /* budget bytes held for the current request */
    struct blockdev_extent *ext;
};

struct nbd_req {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t off;
    uint32_t len;
    uint32_t err;    /* wire error decided by validation or allocation; 0: execute */
    const char *msg; /* for err, shown to the human */
};

uint32_t nbd_errno_to_wire(int err)
{
    switch (err < 0 ? -err : err) {
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

/* ---- memory ---- */

static void budget_acquire(struct nbd_conn *c, uint64_t n)
{
    pthread_mutex_lock(&c->budget_lock);
    while (c->budget_used + n > NBD_CONN_BUDGET)
        pthread_cond_wait(&c->budget_cond, &c->budget_lock);
    c->budget_used += n;
    pthread_mutex_unlock(&c->budget_lock);
}

static void budget_release(struct nbd_conn *c, uint64_t n)
{
    pthread_mutex_lock(&c->budget_lock);
    c->budget_used -= n;
    pthread_cond_broadcast(&c->budget_cond);
    pthread_mutex_unlock(&c->budget_lock);
}

/* Makes w->buf hold at least `len` bytes; large buffers first wait for budget. */
static int worker_buf(struct nbd_worker *w, size_t len)
{
    if (len <= w->cap)
        return 0;
    if (len > NBD_KEEP_BUF) {
        budget_acquire(w->c, len);
        w->budget = len;
    }
    free(w->buf);
    /* Page-aligned, so that large writes can go to a layer file with O_DIRECT. */
    w->buf = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    w->cap = w->buf ? len : 0;
    if (!w->buf) {
        if (w->budget) {
            budget_release(w->c, w->budget);
            w->budget = 0;
        }
        return -ENOMEM;
    }
    return 0;
}

/* After each request: gives back a large buffer and its budget. */
static void worker_trim(struct nbd_worker *w)
{
    if (w->cap > NBD_KEEP_BUF) {
        free(w->buf);
        w->buf = NULL;
        w->cap = 0;
    }
    if (w->budget) {
        budget_release(w->c, w->budget);
        w->budget = 0;
    }
}

/* ---- replies ---- */

static void put_simple(uint8_t *h, uint32_t err, uint64_t cookie)
{
    nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(h + 4, err);
    nbd_put64(h + 8, cookie);
}

static void put_chunk(uint8_t *h, uint16_t flags, uint16_t type, uint64_t cookie, uint32_t len)
{
    nbd_put32(h, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(h + 4, flags);
    nbd_put16(h + 6, type);
    nbd_put64(h + 8, cookie);
    nbd_put32(h + 16, len);
}

static int send_locked(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    int r;

    pthread_mutex_lock(&c->write_lock);
    r = nbd_conn_writev(c, iov, iovcnt);
    pthread_mutex_unlock(&c->write_lock);
    return r;
}

/* Replies with error `err` (nonzero) or success without payload. */
static int send_status(struct nbd_conn *c, const struct nbd_req *rq, uint32_t err, const char *msg)
{
    uint8_t h[NBD_CHUNK_HEADER_SIZE + 6];
    struct iovec iov[2];
    size_t mlen;

    if (err)
        NBD_COUNT(c->srv, request_errors, 1);
    if (!c->structured || (err == 0 && rq->type != NBD_CMD_READ)) {
        put_simple(h, err, rq->cookie);
        iov[0] = (struct iovec){ .iov_base = h, .iov_len = NBD_SIMPLE_REPLY_SIZE };
        return send_locked(c, iov, 1);
    }
    if (err == 0) {
        put_chunk(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, rq->cookie, 0);
        iov[0] = (struct iovec){ .iov_base = h, .iov_len = NBD_CHUNK_HEADER_SIZE };
        return send_locked(c, iov, 1);
    }
    mlen = msg ? strlen(msg) : 0;
    put_chunk(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, rq->cookie, (uint32_t)(6 + mlen));
    nbd_put32(h + NBD_CHUNK_HEADER_SIZE, err);
    nbd_put16(h + NBD_CHUNK_HEADER_SIZE + 4, (uint16_t)mlen);
    iov[0] = (struct iovec){ .iov_base = h, .iov_len = sizeof(h) };
    iov[1] = (struct iovec){ .iov_base = (void *)msg, .iov_len = mlen };
    return send_locked(c, iov, mlen ? 2 : 1);
}

/* ---- validation: the one place client-supplied numbers are checked ---- */

static void reject(struct nbd_req *rq, uint32_t err, const char *msg)
{
    if (!rq->err) {
        rq->err = err;
        rq->msg = msg;
    }
}

static void validate_request(const struct nbd_conn *c, struct nbd_req *rq)
{
    const struct blockdev_ops *ops = c->exp.bd->ops;
    uint16_t allowed = NBD_CMD_FLAG_FUA;
    bool ranged = true, writes = false;

    switch (rq->type) {
    case NBD_CMD_READ:
        if (c->structured)
            allowed |= NBD_CMD_FLAG_DF;
        if (rq->len > NBD_MAX_PAYLOAD)
            reject(rq, NBD_EINVAL, "read length exceeds maximum payload");
        break;
    case NBD_CMD_WRITE:
        writes = true;
        break;
    case NBD_CMD_FLUSH:
        ranged = false;
        if (rq->off != 0 || rq->len != 0)
            reject(rq, NBD_EINVAL, "flush offset and length must be zero");
        break;
    case NBD_CMD_TRIM:
        writes = true;
        break;
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE_ZEROES:
        writes = true;
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE;
        if (!c->meta_allocation)
            reject(rq, NBD_EINVAL, "no metadata context negotiated");
        if (rq->len == 0)
            reject(rq, NBD_EINVAL, "zero length");
        break;
    default:
        reject(rq, NBD_EINVAL, "unknown command");
        return;
    }
    if (rq->flags & ~allowed)
        reject(rq, NBD_EINVAL, "invalid command flags");
    if (writes && c->readonly)
        reject(rq, NBD_EPERM, "export is read-only");
    if (rq->type == NBD_CMD_TRIM && !ops->trim)
        reject(rq, NBD_EINVAL, "trim not supported");
    /* The spec asks ENOSPC for writing past the end, EINVAL for reading or trimming there. */
    if (ranged && (rq->off > c->size || rq->len > c->size - rq->off))
        reject(rq,
               rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
                                                                             : NBD_EINVAL,
               "request beyond end of export");
}

/*
 * Reads one request (and a WRITE's payload into w->buf) with read_lock held.  Returns 0,
 * NBD_EOF when the client closed between requests, or a negative errno that ends the
 * connection (-EPROTO for a bad magic or an oversized WRITE, whose payload cannot be trusted
 * to be skippable).
 */
static int read_request(struct nbd_worker *w, struct nbd_req *rq)
{
    struct nbd_conn *c = w->c;
    uint8_t h[NBD_REQUEST_SIZE];
    int r;

    r = nbd_conn_read(c, h, sizeof(h), true);
    if (r != 0)
        return r;
    if (nbd_get32(h) != NBD_REQUEST_MAGIC)
        return -EPROTO;
    *rq = (struct nbd_req){
        .flags = nbd_get16(h + 4),
        .type = nbd_get16(h + 6),
        .cookie = nbd_get64(h + 8),
        .off = nbd_get64(h + 16),
        .len = nbd_get32(h + 24),
    };
    NBD_COUNT(c->srv, requests, 1);
    if (rq->type == NBD_CMD_DISC)
        return 0;
    if (rq->type == NBD_CMD_WRITE && rq->len > NBD_MAX_PAYLOAD)
        return -EPROTO;
    validate_request(c, rq);
    if (rq->type != NBD_CMD_WRITE)
        return 0;
    if (!rq->err && worker_buf(w, rq->len) < 0)
        reject(rq, NBD_ENOMEM, "out of memory");
    if (rq->err)
        return nbd_conn_discard(c, rq->len);
    return nbd_conn_read(c, w->buf, rq->len, false);
}

/* ---- execution ---- */

static int send_read_data(struct nbd_conn *c, const struct nbd_req *rq, const uint8_t *data)
{
    uint8_t h[NBD_CHUNK_HEADER_SIZE + 8];
    struct iovec iov[2];

    if (c->structured) {
        put_chunk(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, rq->cookie, 8 + rq->len);
        nbd_put64(h + NBD_CHUNK_HEADER_SIZE, rq->off);
        iov[0] = (struct iovec){ .iov_base = h, .iov_len = sizeof(h) };
    } else {
        put_simple(h, 0, rq->cookie);
        iov[0] = (struct iovec){ .iov_base = h, .iov_len = NBD_SIMPLE_REPLY_SIZE };
    }
    iov[1] = (struct iovec){ .iov_base = (void *)data, .iov_len = rq->len };
    return send_locked(c, iov, 2);
}

struct seg {
    uint64_t off;
    uint64_t len;
    bool hole;
};

/*
 * Splits [rq->off, +rq->len) into data and hole segments from the device's block status.
 * Returns the number of segments (at least 1); any doubt makes everything data.
 */
static size_t read_segments(struct nbd_worker *w, const struct nbd_req *rq, struct seg *seg)
{
    struct blockdev *bd = w->c->exp.bd;
    struct blockdev_extent ext[NBD_READ_EXTENTS];
    uint64_t pos = rq->off, end = rq->off + rq->len, sum = 0;
    size_t n = 0, nseg = 0;

    if (bd->ops->block_status(bd, rq->len, rq->off, ext, NBD_READ_EXTENTS, &n) < 0 ||
        n > NBD_READ_EXTENTS)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        if (ext[i].length == 0 || ext[i].length > rq->len - sum) {
            n = 0;
            break;
        }
        sum += ext[i].length;
    }
    for (size_t i = 0; i < n; i++) {
        bool hole = (ext[i].type & BLOCKDEV_EXTENT_ZERO) && ext[i].length >= NBD_MIN_HOLE;

        if (nseg > 0 && seg[nseg - 1].hole == hole) {
            seg[nseg - 1].len += ext[i].length;
        } else {
            seg[nseg++] = (struct seg){ .off = pos, .len = ext[i].length, .hole = hole };
        }
        pos += ext[i].length;
    }
    if (n == 0)
        pos = rq->off;
    if (pos < end) {
        if (nseg > 0 && !seg[nseg - 1].hole)
            seg[nseg - 1].len += end - pos;
        else
            seg[nseg++] = (struct seg){ .off = pos, .len = end - pos, .hole = false };
    }
    return nseg;
}

/* A structured READ sent as OFFSET_DATA and OFFSET_HOLE chunks; holes are not read. */
static int do_sparse_read(struct nbd_worker *w, const struct nbd_req *rq)
{
    struct nbd_conn *c = w->c;
    struct blockdev *bd = c->exp.bd;
    struct seg seg[NBD_READ_EXTENTS + 1];
    uint8_t hdr[NBD_READ_EXTENTS + 1][NBD_CHUNK_HEADER_SIZE + 12];
    struct iovec iov[2 * (NBD_READ_EXTENTS + 1)];
    size_t nseg = read_segments(w, rq, seg);
    int niov = 0, r;

    for (size_t i = 0; i < nseg; i++) {
        if (seg[i].hole)
            continue;
        r = bd->ops->pread(bd, w->buf + (seg[i].off - rq->off), seg[i].len, seg[i].off);
        if (r < 0)
            return send_status(c, rq, nbd_errno_to_wire(r), "read failed");
    }
    for (size_t i = 0; i < nseg; i++) {
        uint16_t flags = i + 1 == nseg ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t *h = hdr[i];

        if (seg[i].hole) {
            put_chunk(h, flags, NBD_REPLY_TYPE_OFFSET_HOLE, rq->cookie, 12);
            nbd_put64(h + NBD_CHUNK_HEADER_SIZE, seg[i].off);
            nbd_put32(h + NBD_CHUNK_HEADER_SIZE + 8, (uint32_t)seg[i].len);
            iov[niov++] = (struct iovec){ .iov_base = h, .iov_len = NBD_CHUNK_HEADER_SIZE + 12 };
        } else {
            put_chunk(h, flags, NBD_REPLY_TYPE_OFFSET_DATA, rq->cookie, (uint32_t)(8 + seg[i].len));
            nbd_put64(h + NBD_CHUNK_HEADER_SIZE, seg[i].off);
            iov[niov++] = (struct iovec){ .iov_base = h, .iov_len = NBD_CHUNK_HEADER_SIZE + 8 };
            iov[niov++] = (struct iovec){ .iov_base = w->buf + (seg[i].off - rq->off),
                                          .iov_len = seg[i].len };
        }
    }
    r = send_locked(c, iov, niov);
    if (r == 0)
        NBD_COUNT(c->srv, bytes_read, rq->len);
    return r;
}

static int do_read(struct nbd_worker *w, const struct nbd_req *rq)
{
    struct nbd_conn *c = w->c;
    struct blockdev *bd = c->exp.bd;
    int r;

    if (rq->len == 0)
        return send_status(c, rq, 0, NULL);
    if (worker_buf(w, rq->len) < 0)
        return send_status(c, rq, NBD_ENOMEM, "out of memory");
    if (c->structured && !(rq->flags & NBD_CMD_FLAG_DF) && rq->len >= NBD_SPARSE_READ_MIN &&
        bd->ops->block_status)
        return do_sparse_read(w, rq);
    r = bd->ops->pread(bd, w->buf, rq->len, rq->off);
    if (r < 0)
        return send_status(c, rq, nbd_errno_to_wire(r), "read failed");
    r = send_read_data(c, rq, w->buf);
    if (r == 0)
        NBD_COUNT(c->srv, bytes_read, rq->len);
    return r;
}

static uint32_t extent_flags(uint32_t type)
{
    return ((type & BLOCKDEV_EXTENT_HOLE) ? NBD_STATE_HOLE : 0) |
           ((type & BLOCKDEV_EXTENT_ZERO) ? NBD_STATE_ZERO : 0);
}

/* NBD_CMD_BLOCK_STATUS for base:allocation: one chunk of merged descriptors. */
static int do_block_status(struct nbd_worker *w, const struct nbd_req *rq)
{
    struct nbd_conn *c = w->c;
    struct blockdev *bd = c->exp.bd;
    size_t max = (rq->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS, nout = 0;
    uint64_t pos = rq->off, end = rq->off + rq->len;
    uint8_t h[NBD_CHUNK_HEADER_SIZE + 4];
    struct iovec iov[2];
    uint8_t *out;
    int r;

    if (worker_buf(w, 8 * NBD_MAX_EXTENTS) < 0)
        return send_status(c, rq, NBD_ENOMEM, "out of memory");
    out = w->buf;
    if (!bd->ops->block_status) {
        nbd_put32(out, rq->len);
        nbd_put32(out + 4, 0);
        nout = 1;
    }
    if (bd->ops->block_status && !w->ext) {
        w->ext = malloc(NBD_MAX_EXTENTS * sizeof(*w->ext));
        if (!w->ext)
            return send_status(c, rq, NBD_ENOMEM, "out of memory");
    }
    /* Several calls, so that a device reporting one extent per block still fills a reply. */
    for (int calls = 0; bd->ops->block_status && pos < end && nout < max && calls < 64; calls++) {
        size_t n = 0;
        uint64_t sum = 0;

        r = bd->ops->block_status(bd, end - pos, pos, w->ext, max - nout, &n);
        if (r >= 0 && (n == 0 || n > max - nout))
            r = -EIO;
        for (size_t i = 0; r >= 0 && i < n; i++) {
            if (w->ext[i].length == 0 || w->ext[i].length > end - pos - sum)
                r = -EIO;
            sum += w->ext[i].length;
        }
        if (r < 0) {
            if (nout == 0)
                return send_status(c, rq, nbd_errno_to_wire(r), "block status failed");
            break;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t flags = extent_flags(w->ext[i].type);

            if (nout > 0 && nbd_get32(out + 8 * (nout - 1) + 4) == flags) {
                uint8_t *p = out + 8 * (nout - 1);
                nbd_put32(p, nbd_get32(p) + (uint32_t)w->ext[i].length);
            } else {
                nbd_put32(out + 8 * nout, (uint32_t)w->ext[i].length);
                nbd_put32(out + 8 * nout + 4, flags);
                nout++;
            }
        }
        pos += sum;
    }
    put_chunk(h, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, rq->cookie,
              (uint32_t)(4 + 8 * nout));
    nbd_put32(h + NBD_CHUNK_HEADER_SIZE, 1); /* our base:allocation context id */
    iov[0] = (struct iovec){ .iov_base = h, .iov_len = sizeof(h) };
    iov[1] = (struct iovec){ .iov_base = out, .iov_len = 8 * nout };
    return send_locked(c, iov, 2);
}

/* Writes zeroes with pwrite when the device has no write_zeroes. */
static int emulate_zeroes(struct nbd_conn *c, const struct nbd_req *rq)
{
    struct blockdev *bd = c->exp.bd;
    const void *zero = nbd_server_zero_buf(c->srv);
    uint64_t pos = rq->off, end = rq->off + rq->len;

    while (pos < end) {
        size_t n = end - pos < NBD_ZERO_BUF_SIZE ? (size_t)(end - pos) : NBD_ZERO_BUF_SIZE;
        int r = bd->ops->pwrite(bd, zero, n, pos, 0);

        if (r < 0)
            return r;
        pos += n;
    }
    return (rq->flags & NBD_CMD_FLAG_FUA) ? bd->ops->flush(bd) : 0;
}

static int execute(struct nbd_worker *w, const struct nbd_req *rq)
{
    struct nbd_conn *c = w->c;
    struct blockdev *bd = c->exp.bd;
    bool fua = rq->flags & NBD_CMD_FLAG_FUA;
    int r = 0;

    if (rq->err)
        return send_status(c, rq, rq->err, rq->msg);
    switch (rq->type) {
    case NBD_CMD_READ:
        return do_read(w, rq);
    case NBD_CMD_BLOCK_STATUS:
        return do_block_status(w, rq);
    case NBD_CMD_WRITE:
        if (rq->len > 0)
            r = bd->ops->pwrite(bd, w->buf, rq->len, rq->off, fua ? BLOCKDEV_FUA : 0);
        if (r == 0)
            NBD_COUNT(c->srv, bytes_written, rq->len);
        break;
    case NBD_CMD_FLUSH:
        /* A read-only export has no writes of ours to make durable. */
        if (!c->readonly)
            r = bd->ops->flush(bd);
        break;
    case NBD_CMD_TRIM:
        if (rq->len > 0)
            r = bd->ops->trim(bd, rq->len, rq->off);
        if (r == 0 && fua)
            r = bd->ops->flush(bd);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (rq->len == 0)
            break;
        if (bd->ops->write_zeroes) {
            unsigned f = (fua ? BLOCKDEV_FUA : 0) |
                         ((rq->flags & NBD_CMD_FLAG_NO_HOLE) ? 0 : BLOCKDEV_MAY_TRIM);
            r = bd->ops->write_zeroes(bd, rq->len, rq->off, f);
        } else {
            r = emulate_zeroes(c, rq);
        }
        break;
    case NBD_CMD_CACHE:
        break; /* advisory; the device does its own caching */
    default:
        break; /* unreachable: validate_request rejected it */
    }
    return send_status(c, rq, r < 0 ? nbd_errno_to_wire(r) : 0, r < 0 ? "I/O error" : NULL);
}

static void *worker_main(void *arg)
{
    struct nbd_worker *w = arg;
    struct nbd_conn *c = w->c;

    for (;;) {
        struct nbd_req rq;
        int r;

        pthread_mutex_lock(&c->read_lock);
        if (__atomic_load_n(&c->quit, __ATOMIC_SEQ_CST)) {
            pthread_mutex_unlock(&c->read_lock);
            break;
        }
        r = read_request(w, &rq);
        if (r != 0 || rq.type == NBD_CMD_DISC) {
            /* Stop reading; requests in flight on other workers still get their replies. */
            if (r < 0)
                nbd_conn_fail(c, r);
            else
                __atomic_store_n(&c->quit, 1, __ATOMIC_SEQ_CST);
            pthread_mutex_unlock(&c->read_lock);
            worker_trim(w);
            break;
        }
        pthread_mutex_unlock(&c->read_lock);

        r = execute(w, &rq);
        worker_trim(w);
        if (r < 0) {
            nbd_conn_fail(c, r);
            break;
        }
    }
    return NULL;
}

int nbd_transmit(struct nbd_conn *c)
{
    const struct nbd_server_config *cfg = nbd_server_cfg(c->srv);
    unsigned n = cfg->workers, started = 1;
    struct nbd_worker *w = calloc(n, sizeof(*w));

    if (!w)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++)
        w[i].c = c;
    for (; started < n; started++) {
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started]) != 0)
            break; /* serve with fewer workers */
    }
    worker_main(&w[0]);
    for (unsigned i = 1; i < started; i++)
        pthread_join(w[i].thread, NULL);
    for (unsigned i = 0; i < n; i++) {
        free(w[i].buf);
        free(w[i].ext);
    }
    free(w);
    return __atomic_load_n(&c->reason, __ATOMIC_SEQ_CST);
}
