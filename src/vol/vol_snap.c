/*
 * vol_snap.c — snapshots of volumes: begin (freeze the top layers of several volumes at one
 * instant), capture (store the frozen layers' blocks as chunks and save the map), finish (rebase
 * onto the map and drop the captured layers), abort, and read-only devices over saved maps.
 *
 * Begin takes every volume's admin mutex, then every chain lock for writing, in address order
 * (so concurrent begins cannot deadlock); in-flight I/O holds the chain lock for reading, so when
 * the last write lock is taken no request is half done on any of the volumes.  Under the locks
 * each volume gets its new top layer and its new state file is renamed into place and its
 * directory fsynced (layer files and the fsynced temporary state were made beforehand), then the
 * locks are released and the frozen layers are flushed.
 *
 * Capture walks the changed blocks (the union of the frozen layers' states, newest wins) in index
 * order, one window at a time.  Worker threads (one per core, at most CAP_THREADS) read, hash and
 * store the window's blocks, each into its own store batch (together committed every CAP_COMMIT
 * bytes); the calling thread then merges the window with the base map into the new map and feeds
 * the LINEAR checksum.  Base blocks' plaintext SHA-256s come from the base map: the id itself for
 * unencrypted maps, a recorded sum for encrypted ones (decoding the chunk only when neither).
 * The map is saved only after every batch has committed, so a saved map never names a chunk that
 * is not durable.
 */
#include "vol/vol_int.h"
#include "crypto/crypto.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAP_THREADS 4
#define CAP_WINDOW  256u
#define CAP_COMMIT  (64ull << 20)

static ssize_t pending_find(const struct vol_shared *s, const char *id)
{
    for (size_t i = 0; i < s->npending; i++)
        if (!strcmp(s->pending[i].id, id))
            return (ssize_t)i;
    return -1;
}

/* ---- begin ---- */

struct begin_vol {
    struct vol *v;
    struct vol_shared *s;
    const char *snap;
    struct vol_pending p;      /* the new pending entry */
    struct vol_layer *fresh;   /* the new top layer */
    struct vol_layer **layers; /* the chain array with room for it */
    char tmp[PATH_MAX];        /* the new state, written and fsynced */
    bool prepared;             /* tmp exists */
    bool applied;              /* chain changed in memory */
    bool saved;                /* state file installed */
};

static int cmp_begin(const void *a, const void *b)
{
    const struct begin_vol *x = a, *y = b;
    return x->s < y->s ? -1 : x->s > y->s;
}

/* Forgets pending snapshot `id` of `s` in memory; returns whether it was there.  Under admin. */
static bool pending_remove(struct vol_shared *s, const char *id, struct vol_pending *ret)
{
    ssize_t k = pending_find(s, id);
    if (k < 0)
        return false;
    if (ret)
        *ret = s->pending[k];
    memmove(s->pending + k, s->pending + k + 1,
            (s->npending - (size_t)k - 1) * sizeof(*s->pending));
    s->npending--;
    return true;
}

int vol_snapshot_begin(struct vol **vols, const char *const *snapshot_ids, size_t n)
{
    if (n == 0 || !vols || !snapshot_ids)
        return -EINVAL;
    struct begin_vol *bv = calloc(n, sizeof(*bv));
    if (!bv)
        return -ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        bv[i].v = vols[i];
        bv[i].s = vols[i]->s;
        bv[i].snap = snapshot_ids[i];
        if (!vol_id_valid(bv[i].snap))
            rc = -EINVAL;
        for (size_t j = 0; j < i && rc == 0; j++)
            if (bv[j].s == bv[i].s || !strcmp(bv[j].snap, bv[i].snap))
                rc = -EINVAL;
    }
    if (rc < 0) {
        free(bv);
        return rc;
    }
    qsort(bv, n, sizeof(*bv), cmp_begin);

    for (size_t i = 0; i < n; i++)
        pthread_mutex_lock(&bv[i].s->admin);
    /* Everything that can fail slowly happens before the I/O stops. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct vol_shared *s = bv[i].s;
        if (pending_find(s, bv[i].snap) >= 0) {
            rc = -EEXIST;
            break;
        }
        /* The pending list is only read under admin; the chain array is read by I/O, so it is
         * replaced (under the write lock), never reallocated in place. */
        struct vol_pending *ps = realloc(s->pending, (s->npending + 1) * sizeof(*ps));
        if (ps)
            s->pending = ps;
        bv[i].layers = malloc((s->nlayers + 1) * sizeof(*bv[i].layers));
        if (!ps || !bv[i].layers) {
            rc = -ENOMEM;
            break;
        }
        rc = vol_layer_open(s->dir, s->next_seq, s->nblocks, true, &bv[i].fresh);
        if (rc == 0 && vol_layer_encrypted(s, s->next_seq))
            vol_layer_set_key(bv[i].fresh, s->xts_key);
        if (rc == 0 && atomic_load(&bv[i].fresh->count) != 0)
            rc = -EBADMSG; /* a leftover claiming blocks: refuse rather than trust it */
        /* Admin is held, so the state after the instant is known now: write and fsync it
         * before stopping I/O; under the locks only a rename and a directory fsync remain. */
        snprintf(bv[i].p.id, sizeof(bv[i].p.id), "%s", bv[i].snap);
        bv[i].p.upto = s->layers[s->nlayers - 1]->seq;
        bv[i].p.nblocks = s->nblocks;
        if (rc == 0)
            rc = vol_state_prepare(s, s->next_seq, &bv[i].p, bv[i].tmp, sizeof(bv[i].tmp));
        bv[i].prepared = rc == 0;
        /* A frozen layer has no partial blocks: most are completed here, while I/O goes on. */
        if (rc == 0) {
            pthread_rwlock_rdlock(&s->chain);
            rc = vol_partials_complete(bv[i].v);
            pthread_rwlock_unlock(&s->chain);
        }
    }
    if (rc == 0) {
        for (size_t i = 0; i < n; i++)
            pthread_rwlock_wrlock(&bv[i].s->chain);
        /* Those made since, with I/O stopped (usually none). */
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = vol_partials_complete(bv[i].v);
        /* The instant: no request is in flight on any of the volumes. */
        for (size_t i = 0; i < n && rc == 0; i++) {
            struct vol_shared *s = bv[i].s;
            s->pending[s->npending++] = bv[i].p;
            memcpy(bv[i].layers, s->layers, s->nlayers * sizeof(*s->layers));
            struct vol_layer **old = s->layers;
            s->layers = bv[i].layers;
            bv[i].layers = old;
            s->layers[s->nlayers++] = bv[i].fresh;
            s->next_seq++;
            bv[i].applied = true;
            /* Under the write lock: no write to the new layer is acknowledged (and flushed)
             * before the state naming it is durable. */
            rc = vol_state_install(s, bv[i].tmp);
            bv[i].prepared = false;
            bv[i].saved = rc == 0;
        }
        if (rc < 0) {
            for (size_t i = 0; i < n; i++) {
                struct vol_shared *s = bv[i].s;
                if (!bv[i].applied)
                    continue;
                s->nlayers--;
                s->npending--;
                s->next_seq--;
                bv[i].applied = false;
                if (bv[i].saved)
                    vol_state_save(s); /* best effort; else it is listed as pending */
            }
        }
        for (size_t i = n; i-- > 0;)
            pthread_rwlock_unlock(&bv[i].s->chain);
    }
    /* The frozen layers take no more writes; make what they hold durable before returning. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct vol_shared *s = bv[i].s;
        rc = vol_layer_flush(s->layers[s->nlayers - 2]);
    }
    if (rc < 0) {
        /* Not begun after all, wherever it got to (the new layers stay: they are harmless). */
        for (size_t i = 0; i < n; i++)
            if (bv[i].applied && pending_remove(bv[i].s, bv[i].snap, NULL))
                vol_state_save(bv[i].s);
    }
    for (size_t i = 0; i < n; i++) {
        if (bv[i].prepared)
            unlink(bv[i].tmp);
        if (bv[i].fresh && !bv[i].applied) {
            bv[i].fresh->unlink_on_free = true;
            vol_layer_unref(bv[i].fresh);
        }
        free(bv[i].layers);
    }
    for (size_t i = n; i-- > 0;)
        pthread_mutex_unlock(&bv[i].s->admin);
    free(bv);
    return rc;
}

/* ---- capture ---- */

struct cap_item {
    uint64_t idx;
    struct vol_layer *l;
    unsigned st;
    bool zero;
    struct chunk_id id;
    uint8_t sum[32];
};

struct cap {
    struct vol_region *r;
    const struct store_key *key;
    struct vol_layer **layers; /* oldest first */
    size_t nlayers;
    uint64_t nblocks;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    struct cap_item win[CAP_WINDOW];
    size_t nwin, next, ndone;
    uint64_t gen; /* window generation, so sleeping workers notice a new window */
    bool quit;
    int err;
    atomic_ullong stored;
    uint64_t commit_every; /* per worker, so that all together commit every CAP_COMMIT bytes */
};

struct cap_worker {
    struct cap *c;
    pthread_t t;
    bool started;
    struct store_batch *b;
    uint8_t *buf;
    uint64_t uncommitted;
};

static int cap_process(struct cap_worker *w, struct cap_item *it)
{
    struct cap *c = w->c;
    it->zero = true;
    if (it->st == VOL_ST_ZERO)
        return 0;
    if (it->st == VOL_ST_PARTIAL)
        return -EIO; /* cannot be: begin completes the partial blocks of the layer it freezes */
    int rc = vol_layer_read(it->l, w->buf, VOL_BLOCK_SIZE, it->idx * VOL_BLOCK_SIZE);
    if (rc < 0)
        return rc;
    if (store_is_zero(w->buf, VOL_BLOCK_SIZE))
        return 0;
    it->zero = false;
    if (c->key) {
        /* LINEAR is over plain SHA-256 even when ids are HMACs (as EBS defines it). */
        crypto_sha256(w->buf, VOL_BLOCK_SIZE, it->sum);
        store_chunk_id(c->key, w->buf, VOL_BLOCK_SIZE, &it->id);
    } else {
        store_chunk_id(NULL, w->buf, VOL_BLOCK_SIZE, &it->id);
        memcpy(it->sum, it->id.b, 32);
    }
    size_t stored = 0;
    rc = store_put(c->r->store, w->b, &it->id, c->key, w->buf, VOL_BLOCK_SIZE, &stored);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&c->stored, stored);
    w->uncommitted += VOL_BLOCK_SIZE;
    if (w->uncommitted >= c->commit_every) {
        rc = store_batch_commit(w->b);
        w->uncommitted = 0;
    }
    return rc;
}

/* Takes and processes items of the current window until none is left. */
static void cap_drain(struct cap_worker *w)
{
    struct cap *c = w->c;
    pthread_mutex_lock(&c->lock);
    while (!c->quit && c->next < c->nwin) {
        struct cap_item *it = &c->win[c->next++];
        bool skip = c->err < 0;
        pthread_mutex_unlock(&c->lock);
        int rc = skip ? 0 : cap_process(w, it);
        pthread_mutex_lock(&c->lock);
        if (rc < 0 && c->err == 0)
            c->err = rc;
        if (++c->ndone == c->nwin)
            pthread_cond_signal(&c->done);
    }
    pthread_mutex_unlock(&c->lock);
}

static void *cap_thread(void *arg)
{
    struct cap_worker *w = arg;
    struct cap *c = w->c;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (!c->quit && c->gen == seen)
            pthread_cond_wait(&c->work, &c->lock);
        bool quit = c->quit;
        seen = c->gen;
        pthread_mutex_unlock(&c->lock);
        if (quit)
            return NULL;
        cap_drain(w);
    }
}

/* The next changed block at or after *cursor: the newest frozen layer's state wins. */
static bool cap_next(struct cap *c, uint64_t *cursor, struct cap_item *it)
{
    uint64_t idx = *cursor;
    if (idx >= c->nblocks)
        return false;
    uint64_t nxt = c->nblocks;
    for (size_t i = 0; i < c->nlayers; i++) {
        uint64_t k = vol_layer_next(c->layers[i], idx, nxt);
        nxt = k < nxt ? k : nxt;
    }
    if (nxt >= c->nblocks) {
        *cursor = c->nblocks;
        return false;
    }
    for (size_t i = c->nlayers; i-- > 0;) {
        unsigned st = vol_layer_get(c->layers[i], nxt);
        if (st != VOL_ST_ABSENT) {
            memset(it, 0, sizeof(*it));
            it->idx = nxt;
            it->l = c->layers[i];
            it->st = st;
            break;
        }
    }
    *cursor = nxt + 1;
    return true;
}

/* The plaintext SHA-256 of base entry `i`: recorded, the id itself (unencrypted), or decoded. */
static int base_sum(struct cap *c, const struct vol_map *base, size_t i, uint8_t *tmp,
                    uint8_t out[32])
{
    const uint8_t *s = vol_map_sum_at(base, i);
    if (s) {
        memcpy(out, s, 32);
        return 0;
    }
    if (!c->key) {
        memcpy(out, base->ids[i].b, 32);
        return 0;
    }
    int rc = vol_cache_read(c->r->cache, &base->ids[i], c->key, tmp, 0, VOL_BLOCK_SIZE);
    if (rc == 0)
        crypto_sha256(tmp, VOL_BLOCK_SIZE, out);
    return rc;
}

struct cap_merge {
    const struct vol_map *base;
    size_t bi;
    struct vol_map *m;
    struct vol_linear *lin;
    uint8_t *tmp;
};

/* Appends base entries below `limit` to the new map. */
static int merge_base(struct cap *c, struct cap_merge *mg, uint64_t limit)
{
    const struct vol_map *b = mg->base;
    while (b && mg->bi < b->n && b->idx[mg->bi] < limit && b->idx[mg->bi] < c->nblocks) {
        uint8_t sum[32];
        int rc = base_sum(c, b, mg->bi, mg->tmp, sum);
        if (rc == 0)
            rc = vol_map_append(mg->m, b->idx[mg->bi], &b->ids[mg->bi], sum);
        if (rc < 0)
            return rc;
        vol_linear_add(mg->lin, sum);
        mg->bi++;
    }
    return 0;
}

static int merge_window(struct cap *c, struct cap_merge *mg)
{
    for (size_t i = 0; i < c->nwin; i++) {
        const struct cap_item *it = &c->win[i];
        int rc = merge_base(c, mg, it->idx);
        if (rc < 0)
            return rc;
        if (mg->base && mg->bi < mg->base->n && mg->base->idx[mg->bi] == it->idx)
            mg->bi++;
        if (it->zero)
            continue;
        rc = vol_map_append(mg->m, it->idx, &it->id, it->sum);
        if (rc < 0)
            return rc;
        vol_linear_add(mg->lin, it->sum);
    }
    return 0;
}

static int cap_count(struct cap *c, uint64_t *ret)
{
    uint64_t cursor = 0, n = 0;
    struct cap_item it;
    while (cap_next(c, &cursor, &it))
        n++;
    *ret = n;
    return 0;
}

static int capture_run(struct cap *c, const struct vol_map *base, const char *snap,
                       void (*progress)(void *ctx, int percent), void *ctx,
                       struct vol_snapshot_stats *ret)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    size_t nthreads = ncpu < 1 ? 1 : ncpu > CAP_THREADS ? CAP_THREADS : (size_t)ncpu;
    struct cap_worker ws[CAP_THREADS] = { 0 };
    struct cap_merge mg = { .base = base };
    int rc = 0;
    c->commit_every = CAP_COMMIT / nthreads;
    uint64_t total, changed = 0;
    cap_count(c, &total);
    if (progress)
        progress(ctx, 0);

    rc = c->key ? vol_map_new_sums(c->nblocks, &mg.m) : vol_map_new(c->nblocks, &mg.m);
    if (rc == 0)
        rc = vol_linear_new(&mg.lin);
    mg.tmp = malloc(VOL_BLOCK_SIZE);
    if (rc == 0 && !mg.tmp)
        rc = -ENOMEM;
    for (size_t i = 0; i < nthreads && rc == 0; i++) {
        ws[i].c = c;
        ws[i].buf = malloc(VOL_BLOCK_SIZE);
        if (!ws[i].buf)
            rc = -ENOMEM;
        if (rc == 0)
            rc = store_batch_new(c->r->store, &ws[i].b);
        if (rc == 0) {
            rc = -pthread_create(&ws[i].t, NULL, cap_thread, &ws[i]);
            ws[i].started = rc == 0;
        }
    }

    uint64_t cursor = 0;
    int last_pct = 0;
    while (rc == 0) {
        pthread_mutex_lock(&c->lock);
        size_t k = 0;
        while (k < CAP_WINDOW && cap_next(c, &cursor, &c->win[k]))
            k++;
        if (k == 0) {
            pthread_mutex_unlock(&c->lock);
            break;
        }
        /* Start reading the whole window now: the disk works while the workers hash. */
        for (size_t i = 0; i < k; i++)
            if (c->win[i].st == VOL_ST_PRESENT)
                posix_fadvise(c->win[i].l->fd_data, (off_t)(c->win[i].idx * VOL_BLOCK_SIZE),
                              VOL_BLOCK_SIZE, POSIX_FADV_WILLNEED);
        c->nwin = k;
        c->next = c->ndone = 0;
        c->gen++;
        pthread_cond_broadcast(&c->work);
        while (c->ndone < c->nwin)
            pthread_cond_wait(&c->done, &c->lock);
        rc = c->err;
        pthread_mutex_unlock(&c->lock);
        changed += k;
        if (rc == 0)
            rc = merge_window(c, &mg);
        int pct = total ? (int)(changed * 99 / total) : 99;
        if (progress && pct != last_pct)
            progress(ctx, pct);
        last_pct = pct;
    }
    pthread_mutex_lock(&c->lock);
    c->quit = true;
    pthread_cond_broadcast(&c->work);
    pthread_mutex_unlock(&c->lock);
    for (size_t i = 0; i < nthreads; i++)
        if (ws[i].started)
            pthread_join(ws[i].t, NULL);

    if (rc == 0)
        rc = merge_base(c, &mg, UINT64_MAX);
    /* Chunks durable before the map that names them. */
    for (size_t i = 0; i < nthreads && rc == 0; i++)
        rc = store_batch_commit(ws[i].b);
    char path[PATH_MAX];
    vol_map_path(c->r, snap, path, sizeof(path));
    if (rc == 0)
        rc = vol_map_save(mg.m, path);
    if (rc == 0) {
        mg.m->frozen = true;
        vol_region_map_put(c->r, snap, mg.m);
        struct vol_snapshot_stats st = { 0 };
        st.blocks = vol_map_allocated(mg.m);
        st.changed_blocks = changed;
        st.stored_bytes = atomic_load(&c->stored);
        vol_linear_final(mg.lin, st.linear);
        *ret = st;
        if (progress)
            progress(ctx, 100);
    }
    for (size_t i = 0; i < nthreads; i++) {
        if (ws[i].b)
            store_batch_free(ws[i].b);
        free(ws[i].buf);
    }
    free(mg.tmp);
    vol_linear_free(mg.lin);
    vol_map_unref(mg.m);
    return rc;
}

int vol_snapshot_capture(struct vol *v, const char *snapshot_id,
                         void (*progress)(void *ctx, int percent), void *ctx,
                         struct vol_snapshot_stats *ret)
{
    struct vol_shared *s = v->s;
    if (!vol_id_valid(snapshot_id) || !ret)
        return -EINVAL;
    struct cap *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->r = s->r;
    c->key = vol_key(v);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->work, NULL);
    pthread_cond_init(&c->done, NULL);

    /* The chain as of now: references keep the frozen layers (and their files, should a finish
     * drop them meanwhile) and the base map for as long as the capture runs. */
    struct vol_map *base = NULL;
    int rc = 0;
    pthread_mutex_lock(&s->admin);
    ssize_t k = pending_find(s, snapshot_id);
    if (k < 0) {
        rc = -ENOENT;
    } else {
        c->nblocks = s->pending[k].nblocks;
        c->layers = calloc(s->nlayers, sizeof(*c->layers));
        if (!c->layers)
            rc = -ENOMEM;
        for (size_t i = 0; rc == 0 && i < s->nlayers && s->layers[i]->seq <= s->pending[k].upto;
             i++)
            c->layers[c->nlayers++] = vol_layer_ref(s->layers[i]);
        base = vol_map_ref(s->base);
    }
    pthread_mutex_unlock(&s->admin);

    if (rc == 0)
        rc = capture_run(c, base, snapshot_id, progress, ctx, ret);

    for (size_t i = 0; i < c->nlayers; i++)
        vol_layer_unref(c->layers[i]);
    free(c->layers);
    vol_map_unref(base);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->work);
    pthread_cond_destroy(&c->done);
    free(c);
    return rc;
}

/* ---- finish, abort, pending ---- */

/* Rebases the volume onto the map of its oldest pending snapshot and drops the layers that
 * snapshot covers.  Under admin. */
static int rebase_head(struct vol_shared *s)
{
    struct vol_pending p = s->pending[0];
    struct vol_map *m = NULL;
    int rc = vol_region_map_get(s->r, p.id, &m);
    if (rc == 0 && vol_map_blocks(m) != p.nblocks)
        rc = -EBADMSG;
    size_t drop = 0;
    while (drop < s->nlayers && s->layers[drop]->seq <= p.upto)
        drop++;
    struct vol_layer **dropped = rc == 0 ? malloc((drop ? drop : 1) * sizeof(*dropped)) : NULL;
    if (rc == 0 && !dropped)
        rc = -ENOMEM;
    if (rc < 0) {
        vol_map_unref(m);
        return rc;
    }
    memcpy(dropped, s->layers, drop * sizeof(*dropped));

    pthread_rwlock_wrlock(&s->chain);
    struct vol_map *old_base = s->base;
    char old_id[VOL_ID_MAX];
    snprintf(old_id, sizeof(old_id), "%s", s->base_id);
    s->base = m;
    snprintf(s->base_id, sizeof(s->base_id), "%s", p.id);
    memmove(s->layers, s->layers + drop, (s->nlayers - drop) * sizeof(*s->layers));
    s->nlayers -= drop;
    memmove(s->pending, s->pending + 1, (s->npending - 1) * sizeof(*s->pending));
    s->npending--;
    rc = vol_state_save(s);
    if (rc < 0) {
        s->base = old_base;
        snprintf(s->base_id, sizeof(s->base_id), "%s", old_id);
        memmove(s->layers + drop, s->layers, s->nlayers * sizeof(*s->layers));
        memcpy(s->layers, dropped, drop * sizeof(*dropped));
        s->nlayers += drop;
        memmove(s->pending + 1, s->pending, s->npending * sizeof(*s->pending));
        s->pending[0] = p;
        s->npending++;
    }
    pthread_rwlock_unlock(&s->chain);
    if (rc == 0) {
        /* The state no longer names them: their files go with the last reference (a capture
         * of a newer snapshot may still be reading them). */
        for (size_t i = 0; i < drop; i++) {
            dropped[i]->unlink_on_free = true;
            vol_layer_unref(dropped[i]);
        }
        vol_map_unref(old_base);
    } else {
        vol_map_unref(m);
    }
    free(dropped);
    return rc;
}

int vol_snapshot_settle(struct vol_shared *s)
{
    int rc = 0;
    while (rc == 0 && s->npending > 0 && s->pending[0].finished)
        rc = rebase_head(s);
    return rc;
}

int vol_snapshot_finish(struct vol *v, const char *snapshot_id)
{
    struct vol_shared *s = v->s;
    if (!vol_id_valid(snapshot_id))
        return -EINVAL;
    pthread_mutex_lock(&s->admin);
    ssize_t k = pending_find(s, snapshot_id);
    int rc = 0;
    if (k < 0) {
        /* Finished before (or never begun): done if its map exists. */
        char path[PATH_MAX];
        vol_map_path(s->r, snapshot_id, path, sizeof(path));
        rc = access(path, F_OK) == 0 ? 0 : -ENOENT;
    } else if (!s->pending[k].finished) {
        /* Captured?  (Loading it now also keeps it at hand for the rebase.) */
        struct vol_map *m;
        rc = vol_region_map_get(s->r, snapshot_id, &m);
        if (rc == 0 && vol_map_blocks(m) != s->pending[k].nblocks)
            rc = -EBADMSG;
        if (rc == 0)
            vol_map_unref(m);
        if (rc == 0 && k > 0) {
            /* An older snapshot still needs the layers and base this one replaces: the
             * rebase waits (durably) until that one is finished or aborted. */
            s->pending[k].finished = true;
            rc = vol_state_save(s);
            if (rc < 0)
                s->pending[k].finished = false;
        } else if (rc == 0) {
            rc = rebase_head(s);
            if (rc == 0)
                vol_snapshot_settle(s); /* newer ones finished meanwhile; else on next call */
        }
    }
    pthread_mutex_unlock(&s->admin);
    return rc;
}

int vol_snapshot_abort(struct vol *v, const char *snapshot_id)
{
    struct vol_shared *s = v->s;
    if (!vol_id_valid(snapshot_id))
        return -EINVAL;
    pthread_mutex_lock(&s->admin);
    ssize_t k = pending_find(s, snapshot_id);
    struct vol_pending p;
    int rc = -ENOENT;
    if (k >= 0 && s->pending[k].finished) {
        rc = -EBUSY; /* finished: its rebase only waits for older snapshots */
    } else if (k >= 0 && pending_remove(s, snapshot_id, &p)) {
        /* The frozen layer stays in the chain: the next snapshot captures it too. */
        rc = vol_state_save(s);
        if (rc < 0) {
            memmove(s->pending + k + 1, s->pending + k,
                    (s->npending - (size_t)k) * sizeof(*s->pending));
            s->pending[k] = p;
            s->npending++;
        }
        if (rc == 0 && k == 0)
            vol_snapshot_settle(s);
    }
    pthread_mutex_unlock(&s->admin);
    return rc;
}

int vol_snapshot_pending(struct vol *v, char (*ids)[32], size_t max)
{
    struct vol_shared *s = v->s;
    pthread_mutex_lock(&s->admin);
    size_t n = 0;
    for (size_t i = 0; i < s->npending && n < max; i++)
        if (!s->pending[i].finished)
            snprintf(ids[n++], 32, "%s", s->pending[i].id);
    pthread_mutex_unlock(&s->admin);
    return (int)n;
}

/* ---- read-only snapshot devices ---- */

struct snapdev {
    struct blockdev bd;
    struct vol_region *r;
    struct vol_map *m;
    bool has_key;
    struct store_key key;
    atomic_ullong ra_next; /* vol_readahead's cursor */
};

static int snap_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    struct snapdev *d = (struct snapdev *)bd;
    uint8_t *p = buf;
    if (len > 0) {
        /* As vol_bd_pread: the request's later blocks and a sequential reader's next ones. */
        uint64_t first = off / VOL_BLOCK_SIZE, last = (off + len - 1) / VOL_BLOCK_SIZE;
        uint64_t end = last + 1 + vol_readahead(&d->ra_next, first, last);
        struct chunk_id id;
        for (uint64_t idx = first + 1; idx < end && idx < vol_map_blocks(d->m); idx++)
            if (vol_map_get(d->m, idx, &id) &&
                vol_cache_prefetch(d->r->cache, &id, d->has_key ? &d->key : NULL) == -EAGAIN)
                break;
    }
    while (len > 0) {
        uint64_t idx = off / VOL_BLOCK_SIZE;
        size_t boff = (size_t)(off % VOL_BLOCK_SIZE);
        size_t n = VOL_BLOCK_SIZE - boff < len ? VOL_BLOCK_SIZE - boff : len;
        struct chunk_id id;
        if (idx < vol_map_blocks(d->m) && vol_map_get(d->m, idx, &id)) {
            int rc = vol_cache_read(d->r->cache, &id, d->has_key ? &d->key : NULL, p, boff, n);
            if (rc < 0)
                return rc;
        } else {
            memset(p, 0, n);
        }
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

static int snap_pwrite(struct blockdev *bd, const void *buf, size_t len, uint64_t off,
                       unsigned flags)
{
    return -EROFS;
}

static int snap_flush(struct blockdev *bd)
{
    return 0;
}

static int snap_trim(struct blockdev *bd, uint64_t len, uint64_t off)
{
    return -EROFS;
}

static int snap_write_zeroes(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags)
{
    return -EROFS;
}

static int snap_block_status(struct blockdev *bd, uint64_t len, uint64_t off,
                             struct blockdev_extent *ret, size_t max, size_t *ret_n)
{
    struct snapdev *d = (struct snapdev *)bd;
    if (max == 0 || len == 0)
        return -EINVAL;
    uint64_t end = off + len, pos = off, mb = vol_map_blocks(d->m);
    size_t n = 0;
    while (pos < end) {
        uint64_t idx = pos / VOL_BLOCK_SIZE, next;
        uint32_t type;
        if (idx < mb && vol_map_get(d->m, idx, NULL)) {
            type = 0;
            next = idx + 1;
        } else {
            type = BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO;
            next = idx < mb ? vol_map_next_allocated(d->m, idx + 1) : UINT64_MAX;
            if (next <= idx)
                next = idx + 1;
        }
        uint64_t end_idx = (end + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE;
        uint64_t run_end = next >= end_idx ? end : next * VOL_BLOCK_SIZE;
        if (n > 0 && ret[n - 1].type == type) {
            ret[n - 1].length += run_end - pos;
        } else {
            if (n == max)
                break;
            ret[n].type = type;
            ret[n].length = run_end - pos;
            n++;
        }
        pos = run_end;
    }
    *ret_n = n;
    return 0;
}

static void snap_close(struct blockdev *bd)
{
    struct snapdev *d = (struct snapdev *)bd;
    vol_map_unref(d->m);
    crypto_wipe(&d->key, sizeof(d->key));
    free(d);
}

static const struct blockdev_ops snap_ops = {
    .pread = snap_pread,
    .pwrite = snap_pwrite,
    .flush = snap_flush,
    .trim = snap_trim,
    .write_zeroes = snap_write_zeroes,
    .block_status = snap_block_status,
    .close = snap_close,
};

int vol_snapshot_open(struct vol_region *r, const char *snapshot_id, uint64_t size,
                      const struct store_key *key, struct blockdev **ret)
{
    struct snapdev *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    int rc = vol_region_map_get(r, snapshot_id, &d->m);
    if (rc < 0) {
        free(d);
        return rc;
    }
    d->r = r;
    if (key) {
        d->has_key = true;
        d->key = *key;
    }
    d->bd.ops = &snap_ops;
    d->bd.size = size;
    d->bd.block_size = VOL_BLOCK_SIZE;
    d->bd.flags = BLOCKDEV_READONLY;
    *ret = &d->bd;
    return 0;
}
