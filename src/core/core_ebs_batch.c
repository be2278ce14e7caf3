/*
 * core_ebs_batch.c — bulk writes into a pending EBS direct upload, for an importer in the same
 * process (`amid import --data`).
 *
 * core_ebs_put makes every block durable on its own: one store commit (file and directory
 * fsyncs) and one database commit per 512 KiB, and it hashes the block twice more to check the
 * client's claim.  Here blocks are staged in a store batch and their rows kept in memory; about
 * every CORE_EBS_BATCH_BYTES the batch is committed: first the chunks (store_batch_commit), then
 * all their ebs_blocks rows in one transaction, so the rule "a row only after its chunk is
 * durable" holds as before.  A crash loses only the blocks staged since the last commit point of
 * an upload nobody was told had completed.
 *
 * Puts run on many threads at once.  Blocks go into the current "generation" (a store batch and
 * its rows); the put that fills it swaps in a fresh one, waits for the puts still writing into
 * the full one, and commits it while the other threads go on with the next: fsyncs overlap with
 * hashing and compression instead of stalling every worker.
 */
#include "core/core_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORE_EBS_BATCH_BYTES ((uint64_t)64 << 20)

struct batch_row {
    int64_t idx;
    bool zero;
    uint8_t chunk[32];
    uint8_t sha[32];
};

/* Blocks staged since the last commit point: their chunks in `sb`, their rows in `rows`. */
struct batch_gen {
    struct store_batch *sb;
    struct batch_row *rows;
    size_t n, cap;
    uint64_t bytes;  /* plaintext put into it (the commit threshold) */
    uint64_t stored; /* bytes newly written to the store */
    unsigned busy;   /* puts still writing into it */
};

struct core_ebs_batch {
    struct app *app;
    char account[16];
    char region[32];
    char snap[32];
    struct store *st;
    struct store_key key; /* the upload's encryption domain, when `kp` */
    const struct store_key *kp;
    int64_t nblocks; /* the volume's size in blocks */

    pthread_mutex_t lock;
    pthread_cond_t cv;     /* a generation's last put finished, or a commit did */
    struct batch_gen *cur; /* NULL until the next put */
    unsigned committing;   /* generations being committed */
    int err;               /* the first failure: every later call fails with it */
    struct err first;
};

static void gen_free(struct batch_gen *g)
{
    if (!g)
        return;
    store_batch_free(g->sb); /* discards what was not committed */
    free(g->rows);
    free(g);
}

static int gen_new(struct store *st, struct batch_gen **ret)
{
    struct batch_gen *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    int rc = store_batch_new(st, &g->sb);
    if (rc < 0) {
        free(g);
        return rc;
    }
    *ret = g;
    return 0;
}

/* The upload as core_ebs_put requires it: the caller's own, from EBS direct, pending and not
 * idle past its timeout. */
static int check_pending(struct core_ebs_batch *b, struct db *db, int64_t now_ms,
                         struct db_snapshot *s, struct err *e)
{
    int rc = db_snapshot_get(db, b->snap, s);
    if (rc == -ENOENT ||
        (rc == 0 && (strcmp(s->region, b->region) != 0 || strcmp(s->owner, b->account) != 0))) {
        err_set(e, -ENOENT, "ResourceNotFoundException", "The snapshot '%s' does not exist.",
                b->snap);
        e->reason = "SNAPSHOT_NOT_FOUND";
        return -ENOENT;
    }
    if (rc < 0)
        return err_set(e, rc, "InternalServerException", "cannot read snapshot %s", b->snap);
    if (strcmp(s->source, "ebs") != 0 || strcmp(s->state, "pending") != 0) {
        err_set(e, -EINVAL, "ValidationException",
                "The snapshot '%s' is not a pending EBS direct upload", b->snap);
        e->reason = "INVALID_SNAPSHOT_ID";
        return -EINVAL;
    }
    if (now_ms > s->expiry_ms) {
        err_set(e, -EINVAL, "ValidationException",
                "The snapshot '%s' timed out before it was completed", b->snap);
        e->reason = "WRITE_REQUEST_TIMEOUT";
        return -EINVAL;
    }
    return 0;
}

/* Makes generation `g` durable: its chunks, then its rows and the upload's stored bytes and
 * idle deadline in one transaction.  No put may be writing into it. */
static int gen_commit(struct core_ebs_batch *b, struct batch_gen *g, struct err *e)
{
    int rc = store_batch_commit(g->sb);
    if (rc < 0)
        return err_set(e, rc,
                       rc == -ENOSPC ? "ServiceQuotaExceededException" : "InternalServerException",
                       "cannot store the blocks: %s", strerror(-rc));
    if (g->n == 0)
        return 0;
    struct db *db = core_db_get(b->app);
    struct db_snapshot s;
    int64_t now = core_now_ms(b->app);
    rc = db_begin(db);
    if (rc < 0) {
        core_db_put(b->app, db);
        return err_set(e, rc, "InternalServerException", "cannot record the blocks");
    }
    rc = check_pending(b, db, now, &s, e);
    for (size_t i = 0; rc == 0 && i < g->n; i++) {
        const struct batch_row *r = &g->rows[i];
        rc = db_ebs_block_put(db, b->snap, r->idx, r->zero ? NULL : r->chunk, r->sha);
        if (rc < 0)
            err_set(e, rc, "InternalServerException", "cannot record the blocks");
    }
    if (rc == 0) {
        s.stored_bytes += (int64_t)g->stored;
        s.expiry_ms = now + s.timeout_min * 60000;
        rc = db_snapshot_update(db, &s);
        if (rc == 0)
            rc = db_commit(db);
        if (rc < 0)
            err_set(e, rc, "InternalServerException", "cannot record the blocks");
    }
    if (rc < 0)
        db_rollback(db);
    core_db_put(b->app, db);
    return rc;
}

/* Records the first failure; the caller holds b->lock. */
static void batch_fail(struct core_ebs_batch *b, int rc, const struct err *e)
{
    if (b->err)
        return;
    b->err = rc;
    b->first = *e;
}

/* Commits generation `g`, already detached from b->cur: waits for the puts still writing into
 * it, then commits outside the lock.  Called and returns with b->lock held. */
static void commit_detached(struct core_ebs_batch *b, struct batch_gen *g)
{
    b->committing++;
    while (g->busy)
        pthread_cond_wait(&b->cv, &b->lock);
    int failed = b->err;
    pthread_mutex_unlock(&b->lock);
    struct err e = { 0 };
    /* After a failure the batch is dead: its generations are discarded, not committed. */
    int rc = failed ? 0 : gen_commit(b, g, &e);
    gen_free(g);
    pthread_mutex_lock(&b->lock);
    if (rc < 0)
        batch_fail(b, rc, &e);
    b->committing--;
    pthread_cond_broadcast(&b->cv);
}

int core_ebs_batch_new(struct app *app, const struct core_caller *who, const char *snapshot_id,
                       struct core_ebs_batch **ret, struct err *e)
{
    struct core_ebs_batch *b = calloc(1, sizeof(*b));
    if (!b)
        return err_set(e, -ENOMEM, "InternalServerException", "out of memory");
    b->app = app;
    int rc = 0;
    if (strlen(snapshot_id) >= sizeof(b->snap) || strlen(who->account_id) >= sizeof(b->account) ||
        strlen(who->region) >= sizeof(b->region)) {
        rc = err_set(e, -ENOENT, "ResourceNotFoundException",
                     "The snapshot '%.64s' does not exist.", snapshot_id);
        e->reason = "SNAPSHOT_NOT_FOUND";
    }
    struct db_snapshot s;
    if (rc == 0) {
        snprintf(b->account, sizeof(b->account), "%s", who->account_id);
        snprintf(b->region, sizeof(b->region), "%s", who->region);
        snprintf(b->snap, sizeof(b->snap), "%s", snapshot_id);
        struct db *db = core_db_get(app);
        rc = check_pending(b, db, core_now_ms(app), &s, e);
        core_db_put(app, db);
    }
    if (rc == 0) {
        rc = core_region_storage(app, who->region, &b->st, NULL);
        if (rc < 0)
            err_set(e, rc, "InternalServerException", "the region's store is unavailable");
    }
    if (rc == 0) {
        struct core_dkey dk;
        core_dkey_of_snapshot(&s, &dk);
        rc = core_dkey_key(app, who, &dk, &b->key, &b->kp, e);
        if (rc < 0)
            e->code = "AccessDeniedException";
    }
    if (rc < 0) {
        free(b);
        return rc;
    }
    b->nblocks = s.volume_size_gib * CORE_BLOCKS_PER_GIB;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->cv, NULL);
    *ret = b;
    return 0;
}

int core_ebs_batch_put(struct core_ebs_batch *b, int64_t idx, const void *data, size_t n,
                       const uint8_t sha256[32], struct err *e)
{
    if (idx < 0 || idx >= b->nblocks) {
        err_set(e, -EINVAL, "ValidationException", "Block index %lld is outside the volume",
                (long long)idx);
        e->reason = "INVALID_BLOCK";
        return -EINVAL;
    }
    if (n != CORE_BLOCK_SIZE) {
        err_set(e, -EINVAL, "ValidationException", "%s", "The block must be 524288 bytes");
        e->reason = "INVALID_BLOCK";
        return -EINVAL;
    }
    pthread_mutex_lock(&b->lock);
    int rc = b->err;
    if (rc == 0 && !b->cur) {
        rc = gen_new(b->st, &b->cur);
        if (rc < 0) {
            struct err ge = { 0 };
            err_set(&ge, rc, "InternalServerException", "cannot start a store batch");
            batch_fail(b, rc, &ge);
        }
    }
    if (rc < 0) {
        *e = b->first;
        pthread_mutex_unlock(&b->lock);
        return rc;
    }
    struct batch_gen *g = b->cur;
    g->busy++;
    pthread_mutex_unlock(&b->lock);

    /* The chunk's id: the block's SHA-256, or in an encryption domain its keyed hash. */
    struct batch_row row = { .idx = idx, .zero = store_is_zero(data, n) };
    memcpy(row.sha, sha256, 32);
    struct chunk_id id;
    store_chunk_id_of(b->kp, sha256, &id);
    memcpy(row.chunk, id.b, 32);
    size_t stored = 0;
    struct err pe = { 0 };
    if (!row.zero) {
        rc = store_put(b->st, g->sb, &id, b->kp, data, n, &stored);
        if (rc < 0)
            err_set(&pe, rc,
                    rc == -ENOSPC ? "ServiceQuotaExceededException" : "InternalServerException",
                    "cannot store the block: %s", strerror(-rc));
    }

    pthread_mutex_lock(&b->lock);
    if (rc == 0 && g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 256;
        struct batch_row *nr = realloc(g->rows, cap * sizeof(*nr));
        if (nr) {
            g->rows = nr;
            g->cap = cap;
        } else {
            rc = err_set(&pe, -ENOMEM, "InternalServerException", "out of memory");
        }
    }
    if (rc == 0) {
        g->rows[g->n++] = row;
        g->bytes += n;
        g->stored += stored;
    } else {
        batch_fail(b, rc, &pe);
    }
    g->busy--;
    if (!g->busy)
        pthread_cond_broadcast(&b->cv);
    if (rc == 0 && g == b->cur && g->bytes >= CORE_EBS_BATCH_BYTES) {
        b->cur = NULL;
        commit_detached(b, g);
    }
    rc = b->err;
    if (rc < 0)
        *e = b->first;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

int core_ebs_batch_commit(struct core_ebs_batch *b, struct err *e)
{
    pthread_mutex_lock(&b->lock);
    struct batch_gen *g = b->cur;
    b->cur = NULL;
    if (g)
        commit_detached(b, g);
    /* Durable means every earlier commit point too, including those other threads run. */
    while (b->committing)
        pthread_cond_wait(&b->cv, &b->lock);
    int rc = b->err;
    if (rc < 0)
        *e = b->first;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

void core_ebs_batch_free(struct core_ebs_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->lock);
    while (b->committing)
        pthread_cond_wait(&b->cv, &b->lock);
    pthread_mutex_unlock(&b->lock);
    gen_free(b->cur);
    crypto_wipe(&b->key, sizeof(b->key));
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->cv);
    free(b);
}
