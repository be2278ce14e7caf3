/*
 * store_core.c — the public face of the chunk store: batches, put and get, raw copies and
 * maintenance, over any backend (store_int.h).
 *
 * Puts encode outside every lock, from a small pool of zstd contexts shared by the store's
 * threads, and stage the encoded bytes in the backend under the batch's lock.  A batch remembers
 * the ids it staged, so a block that repeats within one batch is written once; a chunk already in
 * the backend is not written again, but the batch still answers for its durability (another
 * writer may have just renamed it into place and not yet synced its directory).
 *
 * A put that fails to write (a full disk, an I/O error) fails its whole batch at once: every
 * uncommitted put of the batch is discarded, its temporaries deleted (freeing the space now), and
 * further puts and the next commit return that error; after the commit the batch is empty and
 * usable again.  So a caller that missed a put's error still cannot commit a batch with a hole.
 */
#include "store/store_int.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Idle contexts kept for reuse; more are created when more threads work at once. */
#define STORE_POOL_MAX 8

struct store {
    struct store_backend *be;
    int zstd_level;
    pthread_mutex_t lock; /* guards the pool */
    struct store_ctx *pool;
    unsigned pool_len;
};

struct store_batch {
    struct store *s;
    struct store_backend_batch *bb;
    pthread_mutex_t lock; /* serialises the backend batch and guards the set below */
    /* The ids staged since the last commit: open addressing over a power-of-two table. */
    struct chunk_id *ids;
    uint8_t *used;
    size_t nids, cap;
    int err; /* a put failed to write: the batch is discarded and fails until commit */
};

/* ---- contexts ---- */

static struct store_ctx *ctx_get(struct store *s)
{
    struct store_ctx *cx;

    pthread_mutex_lock(&s->lock);
    cx = s->pool;
    if (cx) {
        s->pool = cx->next;
        s->pool_len--;
    }
    pthread_mutex_unlock(&s->lock);
    return cx ? cx : store_ctx_new(s->zstd_level);
}

static void ctx_put(struct store *s, struct store_ctx *cx)
{
    pthread_mutex_lock(&s->lock);
    if (s->pool_len < STORE_POOL_MAX) {
        cx->next = s->pool;
        s->pool = cx;
        s->pool_len++;
        cx = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    store_ctx_free(cx);
}

/* ---- opening ---- */

static int check_opts(const struct store_opts *opts, int *ret_level)
{
    int level = opts && opts->zstd_level ? opts->zstd_level : 2;

    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel())
        return -EINVAL;
    *ret_level = level;
    return 0;
}

int store_new(struct store_backend *be, const struct store_opts *opts, struct store **ret)
{
    struct store *s;
    int level, rc;

    if (!be || be->ops->version != STORE_BACKEND_VERSION) {
        if (be)
            be->ops->close(be);
        return -EINVAL;
    }
    rc = check_opts(opts, &level);
    if (rc < 0) {
        be->ops->close(be);
        return rc;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        be->ops->close(be);
        return -ENOMEM;
    }
    s->be = be;
    s->zstd_level = level;
    pthread_mutex_init(&s->lock, NULL);
    *ret = s;
    return 0;
}

int store_open_local(const char *dir, const struct store_opts *opts, struct store **ret)
{
    struct store_backend *be;
    int level, rc;

    if (!dir || !ret)
        return -EINVAL;
    /* Refuse bad options before creating anything. */
    rc = check_opts(opts, &level);
    if (rc < 0)
        return rc;
    rc = store_local_backend_open(dir, &be);
    if (rc < 0)
        return rc;
    return store_new(be, opts, ret);
}

void store_close(struct store *s)
{
    if (!s)
        return;
    while (s->pool) {
        struct store_ctx *cx = s->pool;

        s->pool = cx->next;
        store_ctx_free(cx);
    }
    pthread_mutex_destroy(&s->lock);
    s->be->ops->close(s->be);
    free(s);
}

/* ---- the batch's set of staged ids ---- */

static size_t id_slot(const struct chunk_id *id, size_t cap)
{
    uint64_t h;

    /* Ids are hashes already: their first bytes are uniform. */
    memcpy(&h, id->b, sizeof(h));
    return (size_t)h & (cap - 1);
}

static bool set_has(const struct store_batch *b, const struct chunk_id *id)
{
    if (b->cap == 0)
        return false;
    for (size_t i = id_slot(id, b->cap);; i = (i + 1) & (b->cap - 1)) {
        if (!b->used[i])
            return false;
        if (memcmp(b->ids[i].b, id->b, STORE_ID_LEN) == 0)
            return true;
    }
}

static void set_insert(struct store_batch *b, const struct chunk_id *id)
{
    size_t i = id_slot(id, b->cap);

    while (b->used[i])
        i = (i + 1) & (b->cap - 1);
    b->ids[i] = *id;
    b->used[i] = 1;
    b->nids++;
}

/* Makes room for one more id (load at most one half). */
static int set_reserve(struct store_batch *b)
{
    struct store_batch nb = *b;

    if (2 * (b->nids + 1) <= b->cap)
        return 0;
    nb.cap = b->cap ? 2 * b->cap : 256;
    nb.nids = 0;
    nb.ids = malloc(nb.cap * sizeof(*nb.ids));
    nb.used = calloc(nb.cap, 1);
    if (!nb.ids || !nb.used) {
        free(nb.ids);
        free(nb.used);
        return -ENOMEM;
    }
    for (size_t i = 0; i < b->cap; i++) {
        if (b->used[i])
            set_insert(&nb, &b->ids[i]);
    }
    free(b->ids);
    free(b->used);
    b->ids = nb.ids;
    b->used = nb.used;
    b->cap = nb.cap;
    return 0;
}

static void set_clear(struct store_batch *b)
{
    /* A huge batch should not pin its table forever. */
    if (b->cap > 4096) {
        free(b->ids);
        free(b->used);
        b->ids = NULL;
        b->used = NULL;
        b->cap = 0;
    } else if (b->cap) {
        memset(b->used, 0, b->cap);
    }
    b->nids = 0;
}

/* ---- writing ---- */

int store_batch_new(struct store *s, struct store_batch **ret)
{
    struct store_batch *b;
    int rc;

    if (!s || !ret)
        return -EINVAL;
    b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    rc = s->be->ops->batch_new(s->be, &b->bb);
    if (rc < 0) {
        free(b);
        return rc;
    }
    b->s = s;
    pthread_mutex_init(&b->lock, NULL);
    *ret = b;
    return 0;
}

void store_batch_free(struct store_batch *b)
{
    if (!b)
        return;
    b->s->be->ops->batch_free(b->bb);
    pthread_mutex_destroy(&b->lock);
    free(b->ids);
    free(b->used);
    free(b);
}

/* Whether chunk `id` is already in the batch or the backend (1: nothing to write), not (0), or a
 * negative errno (the batch's error when it failed). */
static int batch_known(struct store_batch *b, const struct chunk_id *id)
{
    struct store_backend *be = b->s->be;
    bool staged;
    int rc;

    pthread_mutex_lock(&b->lock);
    rc = b->err;
    staged = set_has(b, id);
    pthread_mutex_unlock(&b->lock);
    if (rc < 0)
        return rc;
    if (staged)
        return 1;
    rc = be->ops->has(be, id);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    /* depend also refreshes the chunk's mtime, so gc's grace period covers this new use of an
     * old chunk; if gc freed it in the meantime, it is written anew. */
    pthread_mutex_lock(&b->lock);
    rc = be->ops->depend(b->bb, id);
    pthread_mutex_unlock(&b->lock);
    if (rc == -ENOENT)
        return 0;
    return rc < 0 ? rc : 1;
}

/* Stages `n` encoded bytes as chunk `id`, unless another thread staged it in this batch
 * meanwhile.  Sets *ret_stored to the bytes written. */
static int batch_stage(struct store_batch *b, const struct chunk_id *id, const uint8_t *enc,
                       size_t n, size_t *ret_stored)
{
    int rc = 0;

    *ret_stored = 0;
    pthread_mutex_lock(&b->lock);
    if (b->err) {
        rc = b->err;
    } else if (!set_has(b, id)) {
        rc = set_reserve(b);
        if (rc == 0) {
            rc = b->s->be->ops->put(b->bb, id, enc, n);
            if (rc < 0) {
                b->s->be->ops->batch_discard(b->bb);
                set_clear(b);
                b->err = rc;
            }
        }
        if (rc == 0) {
            set_insert(b, id);
            *ret_stored = n;
        }
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int store_put(struct store *s, struct store_batch *b, const struct chunk_id *id,
              const struct store_key *key, const void *data, size_t n, size_t *ret_stored)
{
    struct store_ctx *cx;
    size_t enc_n, stored;
    int rc;

    if (!s || !b || b->s != s || !id || !data || n == 0 || n > STORE_CHUNK_SIZE)
        return -EINVAL;
    /* Zero blocks are the callers' to map to "zero": storing one is a bug upstream. */
    if (store_is_zero(data, n))
        return -EINVAL;
    rc = batch_known(b, id);
    if (rc != 0) {
        if (rc > 0 && ret_stored)
            *ret_stored = 0;
        return rc < 0 ? rc : 0;
    }
    cx = ctx_get(s);
    if (!cx)
        return -ENOMEM;
    rc = store_chunk_encode(cx, id, key, data, n, &enc_n);
    if (rc == 0)
        rc = batch_stage(b, id, cx->enc, enc_n, &stored);
    ctx_put(s, cx);
    if (rc == 0 && ret_stored)
        *ret_stored = stored;
    return rc;
}

int store_batch_commit(struct store_batch *b)
{
    int rc;

    if (!b)
        return -EINVAL;
    pthread_mutex_lock(&b->lock);
    if (b->err) {
        rc = b->err; /* already discarded */
        b->err = 0;
    } else {
        rc = b->s->be->ops->batch_commit(b->bb);
    }
    set_clear(b);
    pthread_mutex_unlock(&b->lock);
    return rc;
}

/* ---- reading ---- */

int store_get(struct store *s, const struct chunk_id *id, const struct store_key *key, void *buf,
              size_t *ret_n, unsigned flags)
{
    struct store_ctx *cx;
    size_t enc_n, n = 0;
    int rc;

    if (!s || !id || !buf || !ret_n || (flags & ~STORE_VERIFY))
        return -EINVAL;
    cx = ctx_get(s);
    if (!cx)
        return -ENOMEM;
    rc = s->be->ops->get(s->be, id, cx->enc, STORE_ENCODED_MAX, &enc_n);
    if (rc == 0)
        rc = store_chunk_decode(cx, id, key, cx->enc, enc_n, buf, &n, flags);
    ctx_put(s, cx);
    if (rc == 0)
        *ret_n = n;
    return rc;
}

int store_has(struct store *s, const struct chunk_id *id)
{
    if (!s || !id)
        return -EINVAL;
    return s->be->ops->has(s->be, id);
}

int store_get_raw(struct store *s, const struct chunk_id *id, uint8_t **ret, size_t *ret_n)
{
    struct store_header h;
    uint8_t *p, *q;
    size_t n;
    int rc;

    if (!s || !id || !ret || !ret_n)
        return -EINVAL;
    p = malloc(STORE_ENCODED_MAX);
    if (!p)
        return -ENOMEM;
    rc = s->be->ops->get(s->be, id, p, STORE_ENCODED_MAX, &n);
    /* A cheap look at the header, so that a copy fails at its source. */
    if (rc == 0)
        rc = store_header_parse(p, n, &h);
    if (rc < 0) {
        free(p);
        return rc;
    }
    q = realloc(p, n);
    *ret = q ? q : p;
    *ret_n = n;
    return 0;
}

int store_put_raw(struct store *s, struct store_batch *b, const struct chunk_id *id,
                  const struct store_key *key, const uint8_t *raw, size_t n, size_t *ret_stored)
{
    struct store_ctx *cx;
    size_t plain_n, stored;
    int rc;

    if (!s || !b || b->s != s || !id || !raw)
        return -EINVAL;
    cx = ctx_get(s);
    if (!cx)
        return -ENOMEM;
    if (!cx->plain)
        cx->plain = malloc(STORE_CHUNK_SIZE);
    if (!cx->plain) {
        ctx_put(s, cx);
        return -ENOMEM;
    }
    /* Decoding checks header, checksum and tag; STORE_VERIFY checks the id.  A blob that
     * passes is exactly what store_put would have written for that content. */
    rc = store_chunk_decode(cx, id, key, raw, n, cx->plain, &plain_n, STORE_VERIFY);
    if (key)
        crypto_wipe(cx->plain, STORE_CHUNK_SIZE);
    ctx_put(s, cx);
    if (rc < 0)
        return rc;

    rc = batch_known(b, id);
    stored = 0;
    if (rc == 0)
        rc = batch_stage(b, id, raw, n, &stored);
    if (rc < 0)
        return rc;
    if (ret_stored)
        *ret_stored = stored;
    return 0;
}

/* ---- maintenance ---- */

int store_each(struct store *s, int (*fn)(void *ctx, const struct store_chunk_info *c), void *ctx)
{
    if (!s || !fn)
        return -EINVAL;
    return s->be->ops->each(s->be, fn, ctx);
}

int store_stat(struct store *s, const struct chunk_id *id, struct store_chunk_info *ret)
{
    if (!s || !id || !ret)
        return -EINVAL;
    return s->be->ops->stat(s->be, id, ret);
}

int store_delete(struct store *s, const struct chunk_id *id)
{
    if (!s || !id)
        return -EINVAL;
    return s->be->ops->del(s->be, id);
}
