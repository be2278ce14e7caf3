/*
 * core_copy.c — copies between regions: CopyImage, and the job that completes a pending copied
 * snapshot by moving the chunks its destination store lacks.
 *
 * A copy is a snapshot row in the destination region with source "copy", parent_id the source
 * snapshot and source_region its region, `pending` until the job has made every chunk of the
 * source's map present in the destination store and saved the map there.  Chunks are content
 * addressed, so "present" is exact: the job asks the destination store for each chunk id and
 * moves only the missing ones, verifying each on arrival (store_put_raw decodes it and checks its
 * id).  Chunks are committed in batches; a daemon restart runs the job again (recovery submits
 * every pending copy), and the chunks committed before are found present and not moved twice.  No
 * image made of copies is `available` before all of them are completed (the image follows its
 * snapshots, core_images_snapshot_done), and deregistering such an image while it is pending
 * deletes its pending copies, which the job notices at its next batch and stops.
 */
#include "core/core_int.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Chunks per durable batch: progress, cancellation and resumption happen at this grain. */
#define COPY_BATCH 64
/* Workers per copy: one decodes and hashes while the other waits on the disk. */
#define COPY_WORKERS 2

struct copy_run {
    struct app *app;
    const char *id; /* the copy (destination snapshot), or the volume being filled */
    bool volume;    /* filling a volume's base (its row's state is not "pending") */
    const struct vol_map *m;
    struct store *src, *dst;
    /* Transcoding (the domains differ): chunks are decoded with src_key, renamed and encoded
     * with dst_key, and `out` maps each block to its new id.  Otherwise chunks move as stored. */
    const struct store_key *src_key, *dst_key;
    bool transcode;
    struct vol_map *out;
    pthread_mutex_t out_lock;
    uint64_t total;
    atomic_uint_fast64_t done, moved_chunks, moved_bytes, present_chunks;
    pthread_mutex_t lock; /* progress updates */
    int last_pct;
    atomic_bool stop;      /* a worker failed or the copy was cancelled */
    atomic_bool cancelled; /* the row is gone or no longer pending */
};

/* One worker moves the chunks of every COPY_WORKERS-th run of COPY_BATCH blocks. */
struct copy_worker {
    struct copy_run *r;
    unsigned k;
    pthread_t thread;
    struct store_batch *b;
    struct chunk_id staged[COPY_BATCH]; /* put in the open batch, not committed yet */
    size_t nstaged;
    uint8_t *buf; /* transcoding: one decoded chunk */
    int rc;
};

/* Whether the copy is still wanted: its row exists and is pending.  Records progress. */
static bool still_pending(struct copy_run *r)
{
    pthread_mutex_lock(&r->lock);
    struct db *db = core_db_get(r->app);
    struct db_snapshot s;
    struct db_volume v;
    bool ok = r->volume ? db_volume_get(db, r->id, &v) == 0 && strcmp(v.state, "deleting") != 0
                        : db_snapshot_get(db, r->id, &s) == 0 && strcmp(s.state, "pending") == 0;
    int pct = r->total ? (int)(atomic_load(&r->done) * 100 / r->total) : 0;
    if (ok && !r->volume && pct >= r->last_pct + 5 && pct < 100) {
        s.progress = pct;
        if (db_snapshot_update(db, &s) == 0)
            r->last_pct = pct;
    }
    core_db_put(r->app, db);
    pthread_mutex_unlock(&r->lock);
    if (!ok)
        atomic_store(&r->cancelled, true);
    return ok;
}

static int commit_staged(struct copy_worker *w)
{
    if (w->nstaged == 0)
        return 0;
    int rc = store_batch_commit(w->b);
    w->nstaged = 0;
    if (rc == 0 && !still_pending(w->r))
        rc = -ECANCELED;
    return rc;
}

/* A chunk in another domain: decoded, renamed under the destination's id key, stored there
 * when missing, and mapped. */
static int transcode_chunk(struct copy_worker *w, uint64_t idx, const struct chunk_id *id,
                           uint64_t done)
{
    struct copy_run *r = w->r;
    size_t n;
    int rc = store_get(r->src, id, r->src_key, w->buf, &n, STORE_VERIFY);
    if (rc < 0)
        return rc;
    struct chunk_id nid;
    store_chunk_id(r->dst_key, w->buf, n, &nid);
    pthread_mutex_lock(&r->out_lock);
    rc = vol_map_set(r->out, idx, &nid);
    pthread_mutex_unlock(&r->out_lock);
    if (rc < 0)
        return rc;
    bool staged = false;
    for (size_t i = 0; i < w->nstaged && !staged; i++)
        staged = memcmp(w->staged[i].b, nid.b, STORE_ID_LEN) == 0;
    if (staged)
        return 0;
    if (store_has(r->dst, &nid) == 0) {
        atomic_fetch_add(&r->present_chunks, 1);
        return done % 1024 == 0 && !still_pending(r) ? -ECANCELED : 0;
    }
    size_t stored = 0;
    rc = store_put(r->dst, w->b, &nid, r->dst_key, w->buf, n, &stored);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&r->moved_chunks, 1);
    atomic_fetch_add(&r->moved_bytes, stored);
    w->staged[w->nstaged++] = nid;
    return w->nstaged == COPY_BATCH ? commit_staged(w) : 0;
}

static int copy_chunk(void *vctx, uint64_t idx, const struct chunk_id *id)
{
    struct copy_worker *w = vctx;
    struct copy_run *r = w->r;
    if ((idx / COPY_BATCH) % COPY_WORKERS != w->k)
        return 0;
    if (atomic_load(&r->stop))
        return -ECANCELED;
    uint64_t done = atomic_fetch_add(&r->done, 1) + 1;
    if (r->transcode)
        return transcode_chunk(w, idx, id, done);
    for (size_t i = 0; i < w->nstaged; i++)
        if (memcmp(w->staged[i].b, id->b, STORE_ID_LEN) == 0)
            return 0; /* repeated within the batch: moved once */
    if (store_has(r->dst, id) == 0) {
        atomic_fetch_add(&r->present_chunks, 1);
        return done % 1024 == 0 && !still_pending(r) ? -ECANCELED : 0;
    }
    uint8_t *raw;
    size_t n, stored = 0;
    int rc = store_get_raw(r->src, id, &raw, &n);
    if (rc < 0)
        return rc;
    rc = store_put_raw(r->dst, w->b, id, r->dst_key, raw, n, &stored);
    free(raw);
    if (rc < 0)
        return rc;
    atomic_fetch_add(&r->moved_chunks, 1);
    atomic_fetch_add(&r->moved_bytes, n);
    w->staged[w->nstaged++] = *id;
    return w->nstaged == COPY_BATCH ? commit_staged(w) : 0;
}

static void *copy_worker_main(void *arg)
{
    struct copy_worker *w = arg;
    w->rc = store_batch_new(w->r->dst, &w->b);
    if (w->rc == 0 && w->r->transcode && !(w->buf = malloc(STORE_CHUNK_SIZE)))
        w->rc = -ENOMEM;
    if (w->rc == 0)
        w->rc = vol_map_each(w->r->m, copy_chunk, w);
    if (w->rc == 0)
        w->rc = commit_staged(w);
    if (w->rc < 0)
        atomic_store(&w->r->stop, true);
    store_batch_free(w->b);
    if (w->buf)
        crypto_wipe(w->buf, STORE_CHUNK_SIZE);
    free(w->buf);
    return NULL;
}

/* Moves the missing chunks of r->m with COPY_WORKERS threads; the first failure wins. */
static int copy_chunks(struct copy_run *r)
{
    struct copy_worker w[COPY_WORKERS];
    bool threaded[COPY_WORKERS] = { false };
    memset(w, 0, sizeof(w));
    for (unsigned k = 0; k < COPY_WORKERS; k++) {
        w[k].r = r;
        w[k].k = k;
        if (k > 0)
            threaded[k] = pthread_create(&w[k].thread, NULL, copy_worker_main, &w[k]) == 0;
    }
    int rc = 0;
    for (unsigned k = 0; k < COPY_WORKERS; k++) {
        if (threaded[k])
            pthread_join(w[k].thread, NULL);
        else
            copy_worker_main(&w[k]); /* the job's own thread, or a thread that did not start */
        if (w[k].rc < 0 && (rc == 0 || rc == -ECANCELED))
            rc = w[k].rc;
    }
    return rc;
}

/* Marks the copy completed (with the bytes it moved) or failed, if it is still pending. */
static bool finish_row(struct app *app, const char *id, int rc, const struct db_snapshot *src,
                       uint64_t moved_bytes)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    bool still = db_snapshot_get(db, id, &s) == 0 && strcmp(s.state, "pending") == 0;
    if (still) {
        if (rc == 0) {
            snprintf(s.state, sizeof(s.state), "completed");
            s.progress = 100;
            s.complete_ms = core_now_ms(app);
            s.blocks = src->blocks;
            s.full_bytes = src->full_bytes;
            s.stored_bytes = (int64_t)moved_bytes;
            memcpy(s.linear, src->linear, sizeof(s.linear));
            s.has_linear = src->has_linear;
        } else {
            snprintf(s.state, sizeof(s.state), "error");
            snprintf(s.state_message, sizeof(s.state_message),
                     rc == -ENOSPC ? "Server.InsufficientStorage: the chunk store is full"
                     : rc == -ENOENT
                         ? "Client.SourceSnapshotUnavailable: the source snapshot is gone"
                     : rc == -EACCES ? "Client.InvalidKMSKey.InvalidState: a KMS key of the "
                                       "copy cannot be used"
                                     : "Server.InternalError: copy failed: %s",
                     strerror(-rc));
        }
        if (db_snapshot_update(db, &s) < 0)
            still = false; /* not recorded: recovery runs the job again */
    }
    core_db_put(app, db);
    return still;
}

/* Copies map `m` (in `src_region`, data key `sdk`) into `dst_region` under data key `ddk` for
 * r->id, owned by `owner` (whose right to use both keys is checked), and saves the result as
 * map `map_id` there.  Same domain: chunks move as stored; otherwise they are transcoded. */
static int run_copy(struct copy_run *r, const char *owner, const char *src_region,
                    const char *dst_region, const struct core_dkey *sdk,
                    const struct core_dkey *ddk, const struct vol_map *m, const char *map_id,
                    char *path, size_t pathlen)
{
    struct app *app = r->app;
    struct vol_region *src_vr, *dst_vr;
    struct store_key skey, dkey;
    struct core_caller swho = { owner, src_region, false }, dwho = { owner, dst_region, false };
    struct err e = { 0 };
    int rc = core_region_storage(app, src_region, &r->src, &src_vr);
    if (rc == 0)
        rc = core_region_storage(app, dst_region, &r->dst, &dst_vr);
    if (rc == 0 && (core_dkey_key(app, &swho, sdk, &skey, &r->src_key, &e) < 0 ||
                    core_dkey_key(app, &dwho, ddk, &dkey, &r->dst_key, &e) < 0)) {
        log_msg(LOG_WARN, "event=copy-key-refused id=%s code=%s", r->id, e.code);
        rc = -EACCES;
    }
    r->transcode =
        rc == 0 &&
        (!r->src_key != !r->dst_key ||
         (r->src_key && memcmp(r->src_key->key_id, r->dst_key->key_id, STORE_KEY_ID_LEN) != 0));
    if (rc == 0 && r->transcode)
        rc = vol_map_new(vol_map_blocks(m), &r->out);
    pthread_mutex_init(&r->out_lock, NULL);
    if (rc == 0) {
        r->m = m;
        r->total = vol_map_allocated(m);
        rc = copy_chunks(r);
    }
    if (rc == 0) {
        vol_map_path(dst_vr, map_id, path, pathlen);
        rc = vol_map_save(r->transcode ? r->out : m, path);
    }
    vol_map_unref(r->out);
    pthread_mutex_destroy(&r->out_lock);
    crypto_wipe(&skey, sizeof(skey));
    crypto_wipe(&dkey, sizeof(dkey));
    return rc;
}

static void log_copy(const char *event, const struct copy_run *r, const char *source,
                     const char *source_region, const char *region, int rc, int64_t t0)
{
    log_msg(rc == 0 ? LOG_INFO : LOG_WARN,
            "event=%s %s=%s source=%s source_region=%s region=%s rc=%d transcoded=%d "
            "chunks_moved=%llu bytes_moved=%llu chunks_present=%llu ms=%.1f",
            event, r->volume ? "volume" : "snapshot", r->id, source, source_region, region, rc,
            r->transcode, (unsigned long long)atomic_load(&r->moved_chunks),
            (unsigned long long)atomic_load(&r->moved_bytes),
            (unsigned long long)atomic_load(&r->present_chunks),
            (double)(time_mono_us() - t0) / 1000.0);
}

void core_job_copy(struct app *app, const char *snapshot_id)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s, src;
    int rc = db_snapshot_get(db, snapshot_id, &s);
    int src_rc = rc == 0 ? db_snapshot_get(db, s.parent_id, &src) : rc;
    core_db_put(app, db);
    if (rc < 0 || strcmp(s.state, "pending") != 0 || strcmp(s.source, "copy") != 0 ||
        !s.source_region[0])
        return;
    int64_t t0 = time_mono_us();
    struct copy_run r;
    memset(&r, 0, sizeof(r));
    r.app = app;
    r.id = s.id;
    pthread_mutex_init(&r.lock, NULL);
    struct vol_map *m = NULL;
    rc = src_rc < 0 ? -ENOENT : core_map_get(app, s.source_region, s.parent_id, &m);
    char path[1200];
    if (rc == 0) {
        struct core_dkey sdk, ddk;
        core_dkey_of_snapshot(&src, &sdk);
        core_dkey_of_snapshot(&s, &ddk);
        rc = run_copy(&r, s.owner, s.source_region, s.region, &sdk, &ddk, m, s.id, path,
                      sizeof(path));
    }
    vol_map_unref(m);
    pthread_mutex_destroy(&r.lock);
    log_copy("snapshot-copied", &r, s.parent_id, s.source_region, s.region, rc, t0);
    if (atomic_load(&r.cancelled))
        return;
    bool still = finish_row(app, s.id, rc, &src, atomic_load(&r.moved_bytes));
    if (!still && rc == 0)
        unlink(path); /* deleted meanwhile: the map has no row */
    if (still)
        core_images_snapshot_done(app, s.id);
}

/* The files of a filled volume: a state file whose base is the volume's own map. */
static int make_volume(struct app *app, struct vol_region *vr, const struct db_volume *v)
{
    struct core_dkey dk;
    struct store_key key;
    const struct store_key *kp;
    struct core_caller who = { v->owner, v->region, false };
    struct err e = { 0 };
    core_dkey_of_volume(v, &dk);
    if (core_dkey_key(app, &who, &dk, &key, &kp, &e) < 0)
        return -EACCES;
    struct vol_params p = { v->id, (uint64_t)v->size_gib << 30, v->id, kp };
    int rc = vol_create(vr, &p);
    crypto_wipe(&key, sizeof(key));
    return rc == -EEXIST ? 0 : rc;
}

int core_volume_fill(struct app *app, const char *volume_id)
{
    struct db *db = core_db_get(app);
    struct db_volume v;
    struct db_snapshot src;
    int rc = db_volume_get(db, volume_id, &v);
    int src_rc = rc == 0 ? db_snapshot_get(db, v.snapshot_id, &src) : rc;
    core_db_put(app, db);
    if (rc < 0)
        return rc;
    struct vol_region *vr;
    rc = core_region_storage(app, v.region, NULL, &vr);
    if (rc < 0)
        return rc;
    char path[1200];
    vol_map_path(vr, v.id, path, sizeof(path));
    if (access(path, F_OK) == 0)
        return make_volume(app, vr, &v); /* filled already */
    int64_t t0 = time_mono_us();
    struct copy_run r;
    memset(&r, 0, sizeof(r));
    r.app = app;
    r.id = v.id;
    r.volume = true;
    pthread_mutex_init(&r.lock, NULL);
    struct vol_map *m = NULL;
    rc = src_rc < 0 ? -ENOENT : core_map_get(app, src.region, src.id, &m);
    if (rc == 0) {
        struct core_dkey sdk, ddk;
        core_dkey_of_snapshot(&src, &sdk);
        core_dkey_of_volume(&v, &ddk);
        rc = run_copy(&r, v.owner, src.region, v.region, &sdk, &ddk, m, v.id, path, sizeof(path));
    }
    vol_map_unref(m);
    pthread_mutex_destroy(&r.lock);
    log_copy("volume-filled", &r, v.snapshot_id, src.region, v.region, rc, t0);
    return rc < 0 ? rc : make_volume(app, vr, &v);
}

void core_job_fill_volume(struct app *app, const char *volume_id)
{
    int rc = core_volume_fill(app, volume_id);
    struct db *db = core_db_get(app);
    struct db_volume v;
    if (db_volume_get(db, volume_id, &v) == 0 && strcmp(v.state, "creating") == 0) {
        snprintf(v.state, sizeof(v.state), "%s", rc == 0 ? "available" : "error");
        db_volume_update(db, &v);
    }
    core_db_put(app, db);
}

/* ---- CopyImage ---- */

struct src_bdms {
    struct db_bdm v[32];
    size_t n;
};

static int collect_bdm(void *vctx, const struct db_bdm *b)
{
    struct src_bdms *l = vctx;
    if (l->n == ARRAY_SIZE(l->v))
        return -E2BIG;
    l->v[l->n++] = *b;
    return 0;
}

struct tag_list {
    struct core_tag v[50];
    char keys[50][516], values[50][1028];
    size_t n;
};

static int collect_tag(void *vctx, const struct core_tag_row *t)
{
    struct tag_list *l = vctx;
    if (l->n == ARRAY_SIZE(l->v) || str_startswith(t->key, "aws:"))
        return 0;
    snprintf(l->keys[l->n], sizeof(l->keys[0]), "%s", t->key);
    snprintf(l->values[l->n], sizeof(l->values[0]), "%s", t->value);
    l->v[l->n].key = l->keys[l->n];
    l->v[l->n].value = l->values[l->n];
    l->n++;
    return 0;
}

/* Adds `tags` to `l`, replacing copied tags of the same key. */
static int merge_tags(struct tag_list *l, const struct core_tag *tags, size_t n, struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < l->n && strcmp(l->v[k].key, tags[i].key) != 0)
            k++;
        if (k == ARRAY_SIZE(l->v))
            return err_set(e, -EINVAL, "TagLimitExceeded",
                           "An image can have at most 50 tags, with those copied from the source");
        l->v[k] = tags[i];
        if (k == l->n)
            l->n++;
    }
    return 0;
}

struct image_copy_ctx {
    const struct core_caller *who;
    const struct core_image_copy_req *req;
    const struct db_image *src;
    struct src_bdms *bdms;
    const struct core_enc *encs; /* per mapping */
    const struct tag_list *image_tags;
    char params[512];
    char (*snaps)[32];
    size_t nsnaps;
    char *ret_id;
    bool replayed;
    struct err *e;
};

static int image_copy_tx(struct app *app, struct db *db, void *vctx)
{
    struct image_copy_ctx *c = vctx;
    const struct core_image_copy_req *q = c->req;
    char had[32];
    int rc = core_idem_check(db, c->who, "CopyImage", q->client_token, c->params, had, sizeof(had),
                             c->e);
    if (rc == 0) {
        snprintf(c->ret_id, 32, "%s", had);
        c->replayed = true;
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    int64_t now = core_now_ms(app);
    struct db_bdm bd[ARRAY_SIZE(c->bdms->v)];
    c->nsnaps = 0;
    for (size_t i = 0; i < c->bdms->n; i++) {
        bd[i] = c->bdms->v[i];
        if (strcmp(bd[i].kind, "ebs") != 0 || !bd[i].snapshot_id[0])
            continue;
        struct db_snapshot s;
        if (db_snapshot_get(db, bd[i].snapshot_id, &s) < 0)
            return err_set(c->e, -ENOENT, "InvalidSnapshot.NotFound",
                           "The snapshot '%s' of image %s does not exist.", bd[i].snapshot_id,
                           c->src->id);
        snprintf(s.parent_id, sizeof(s.parent_id), "%s", s.id);
        snprintf(s.source_region, sizeof(s.source_region), "%s", q->source_region);
        rand_id(s.id, sizeof(s.id), "snap-", 17);
        snprintf(s.region, sizeof(s.region), "%s", c->who->region);
        snprintf(s.owner, sizeof(s.owner), "%s", c->who->account_id);
        snprintf(s.source, sizeof(s.source), "copy");
        snprintf(s.state, sizeof(s.state), "pending");
        s.state_message[0] = 0;
        s.progress = 0;
        s.start_ms = now;
        s.complete_ms = 0;
        s.stored_bytes = 0;
        core_dkey_to_snapshot(&c->encs[i].dk, &s);
        rc = db_snapshot_insert(db, &s);
        if (rc == 0)
            rc =
                core_tags_insert(db, c->who, s.id, "snapshot", q->snapshot_tags, q->nsnapshot_tags);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot record the copied snapshots");
        snprintf(bd[i].snapshot_id, sizeof(bd[i].snapshot_id), "%s", s.id);
        snprintf(c->snaps[c->nsnaps++], 32, "%s", s.id);
    }
    const struct db_image *im = c->src;
    struct core_image_spec spec = {
        .name = q->name,
        .description = q->description ? q->description : im->description,
        .architecture = im->architecture,
        .root_device_name = im->root_device_name,
        .virtualization_type = im->virtualization_type,
        .boot_mode = im->boot_mode[0] ? im->boot_mode : NULL,
        .ena_support = im->ena_support,
        .sriov_net_support = im->sriov_net_support[0] ? im->sriov_net_support : NULL,
        .imds_support = im->imds_support[0] ? im->imds_support : NULL,
        .tpm_support = im->tpm_support[0] ? im->tpm_support : NULL,
        .bdms = bd,
        .nbdms = c->bdms->n,
        .tags = c->image_tags->v,
        .ntags = c->image_tags->n,
        .source_image_id = im->id,
        .source_region = q->source_region,
    };
    rc = core_image_register_in(app, db, c->who, &spec, c->ret_id, c->e);
    if (rc < 0)
        return rc;
    /* The copies say what they were made for, as EC2's do. */
    for (size_t i = 0; i < c->nsnaps; i++) {
        struct db_snapshot s;
        if (db_snapshot_get(db, c->snaps[i], &s) < 0)
            continue;
        snprintf(s.description, sizeof(s.description),
                 "Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s", c->ret_id,
                 im->id, s.parent_id);
        if ((rc = db_snapshot_update(db, &s)) < 0)
            return err_set(c->e, rc, "InternalError", "cannot record the copied snapshots");
    }
    if (q->client_token && *q->client_token) {
        rc = db_idem_put(db, c->who->account_id, c->who->region, "CopyImage", q->client_token,
                         c->params, c->ret_id, now);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot record the client token");
    }
    return 0;
}

/* The caller may copy the storage of an image shared with it (not public) only with a
 * create-volume permission on each snapshot (for it or for everyone), as EC2 requires; a public
 * image's storage comes with it, as public images are copied on EC2. */
static int check_storage(struct app *app, const struct core_caller *src_who,
                         const struct db_image *im, const struct src_bdms *l, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = 0;
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        struct db_snapshot s;
        if (strcmp(l->v[i].kind, "ebs") != 0 || !l->v[i].snapshot_id[0])
            continue;
        if (db_snapshot_get(db, l->v[i].snapshot_id, &s) < 0)
            rc = err_set(e, -ENOENT, "InvalidSnapshot.NotFound",
                         "The snapshot '%s' of the image does not exist.", l->v[i].snapshot_id);
        else if (strcmp(s.owner, src_who->account_id) != 0 && !im->public &&
                 db_snapshot_perm_has(db, s.id, src_who->account_id, true) != 0)
            rc = err_set(e, -EPERM, "InvalidRequest",
                         "You do not have permission to access the storage of this ami");
        else if (strcmp(s.state, "completed") != 0)
            rc = err_set(e, -EINVAL, "IncorrectState",
                         "The snapshot '%s' of the image is not completed", s.id);
    }
    core_db_put(app, db);
    return rc;
}

int core_image_copy(struct app *app, const struct core_caller *who,
                    const struct core_image_copy_req *req, char ret_id[32], struct err *e)
{
    if (!req->source_region || !core_region_find(app, req->source_region))
        return err_set(e, -EINVAL, "InvalidParameterValue", "Invalid source region: %.64s",
                       req->source_region ? req->source_region : "");
    int rc = core_tags_check(req->image_tags, req->nimage_tags, e);
    if (rc == 0)
        rc = core_tags_check(req->snapshot_tags, req->nsnapshot_tags, e);
    if (rc < 0)
        return rc;
    struct core_caller src_who = *who;
    src_who.region = req->source_region;
    struct db_image src;
    rc = core_image_get(app, &src_who, req->source_image_id, CORE_IMAGE_LAUNCH, &src, e);
    if (rc < 0)
        return rc;
    if (strcmp(src.state, "available") != 0)
        return err_set(e, -EINVAL, "InvalidRequest",
                       "The image %s is %s; only available images can be copied", src.id,
                       src.state);
    struct src_bdms *l = calloc(1, sizeof(*l));
    struct tag_list *tags = calloc(1, sizeof(*tags));
    char(*snaps)[32] = calloc(ARRAY_SIZE(l->v), 32);
    struct core_enc *encs = calloc(ARRAY_SIZE(l->v), sizeof(*encs));
    if (!l || !tags || !snaps || !encs) {
        rc = err_set(e, -ENOMEM, "InternalError", "out of memory");
        goto out;
    }
    rc = core_image_bdms(app, src.id, collect_bdm, l);
    if (rc < 0) {
        rc = err_set(e, rc, "InternalError", "cannot read the image's block device mappings");
        goto out;
    }
    rc = check_storage(app, &src_who, &src, l, e);
    if (rc < 0)
        goto out;
    /* Each copied snapshot's encryption, outside the transaction (the key service writes). */
    for (size_t i = 0; i < l->n && rc == 0; i++) {
        struct db_snapshot s;
        if (strcmp(l->v[i].kind, "ebs") != 0 || !l->v[i].snapshot_id[0])
            continue;
        rc = core_snapshot_row(app, l->v[i].snapshot_id, &s);
        if (rc < 0)
            rc = err_set(e, rc, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.",
                         l->v[i].snapshot_id);
        else
            rc = core_copy_enc_plan(app, who, req->source_region, &s, req->encrypted,
                                    req->kms_key_id, &encs[i], e);
    }
    if (rc < 0)
        goto out;
    if (req->copy_image_tags && strcmp(src.owner, who->account_id) == 0) {
        struct db *db = core_db_get(app);
        rc = core_tags_of(app, db, src.region, who->account_id, src.id, collect_tag, tags);
        core_db_put(app, db);
        if (rc < 0) {
            rc = err_set(e, rc, "InternalError", "cannot read the image's tags");
            goto out;
        }
    }
    rc = merge_tags(tags, req->image_tags, req->nimage_tags, e);
    if (rc < 0)
        goto out;
    if (who->dry_run) {
        rc = core_dry_run(e);
        goto out;
    }
    struct image_copy_ctx c = { .who = who,
                                .req = req,
                                .src = &src,
                                .bdms = l,
                                .encs = encs,
                                .image_tags = tags,
                                .snaps = snaps,
                                .ret_id = ret_id,
                                .e = e };
    snprintf(c.params, sizeof(c.params), "%s|%s|%.128s|%d|%d|%.160s", req->source_region, src.id,
             req->name ? req->name : "", req->encrypted, req->copy_image_tags,
             req->kms_key_id ? req->kms_key_id : "");
    rc = core_tx(app, image_copy_tx, &c);
    if (rc == 0 && !c.replayed)
        for (size_t i = 0; i < c.nsnaps; i++)
            core_job_submit(app, core_job_copy, snaps[i]);
out:
    if (encs)
        for (size_t i = 0; i < ARRAY_SIZE(l->v); i++)
            core_enc_wipe(&encs[i]);
    free(encs);
    free(l);
    free(tags);
    free(snaps);
    return rc;
}
