/*
 * core_storage.c — the runtime side of block storage: each region's chunk store and volume
 * region (opened on first use), the registry of open volumes with its single writer slot, the
 * job workers, and the block devices the NBD server serves.
 */
#include "core/core_int.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A region's decoded base chunks: in memory, and on disk (at most an eighth of the free space)
 * so that the blocks volumes read from snapshots decode once. */
#define CORE_CACHE_BYTES      ((size_t)256 << 20)
#define CORE_DISK_CACHE_BYTES ((uint64_t)16 << 30)

int core_region_storage(struct app *app, const char *region, struct store **ret_store,
                        struct vol_region **ret_vr)
{
    size_t n;
    const struct core_region *r = core_regions(app, &n);
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(r[i].name, region) == 0)
            break;
    if (i == n)
        return -ENOENT;
    int rc = 0;
    pthread_mutex_lock(&app->rt_lock);
    struct core_region_rt *rt = &app->rt[i];
    if (!rt->store) {
        rc = store_open_local(r[i].store_path, NULL, &rt->store);
        if (rc == 0) {
            rc = vol_region_open(r[i].store_path, rt->store, CORE_CACHE_BYTES,
                                 CORE_DISK_CACHE_BYTES, &rt->vr);
            if (rc < 0) {
                store_close(rt->store);
                rt->store = NULL;
            }
        }
    }
    if (rc == 0) {
        if (ret_store)
            *ret_store = rt->store;
        if (ret_vr)
            *ret_vr = rt->vr;
    }
    pthread_mutex_unlock(&app->rt_lock);
    return rc;
}

/* The encryption domain of data owned by `owner` in `region` with data key `dk` (NULL *ret for
 * clear data), opened as the owner; -EACCES when the key service refuses. */
static int data_key(struct app *app, const char *owner, const char *region,
                    const struct core_dkey *dk, struct store_key *key, const struct store_key **ret)
{
    struct core_caller who = { owner, region, false };
    struct err e = { 0 };
    int rc = core_dkey_key(app, &who, dk, key, ret, &e);
    if (rc < 0)
        log_msg(LOG_WARN, "event=data-key-refused region=%s owner=%s code=%s", region, owner,
                e.code);
    return rc < 0 ? -EACCES : 0;
}

/* The domain of volume `id`'s chunks (NULL *ret for a clear volume). */
static int volume_key(struct app *app, const char *id, struct store_key *key,
                      const struct store_key **ret)
{
    struct db *db = core_db_get(app);
    struct db_volume v;
    int rc = db_volume_get(db, id, &v);
    core_db_put(app, db);
    if (rc < 0)
        return rc;
    struct core_dkey dk;
    core_dkey_of_volume(&v, &dk);
    return data_key(app, v.owner, v.region, &dk, key, ret);
}

int core_vol_get(struct app *app, const char *region, const char *id, bool writer,
                 struct core_openvol **ret)
{
    struct vol_region *vr;
    int rc = core_region_storage(app, region, NULL, &vr);
    if (rc < 0)
        return rc;
    struct store_key key;
    const struct store_key *kp = NULL;
    bool have_key = false;
again:
    pthread_mutex_lock(&app->rt_lock);
    struct core_openvol *ov;
    /* A writer that just left may still be flushing: give its slot a few seconds to free up
     * before telling the next one the volume is busy. */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    for (;;) {
        for (ov = app->openvols; ov; ov = ov->next)
            if (strcmp(ov->id, id) == 0)
                break;
        if (!(ov && writer && ov->writer))
            break;
        if (pthread_cond_timedwait(&app->rt_cond, &app->rt_lock, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&app->rt_lock);
            return -EBUSY;
        }
    }
    if (!ov && !have_key) {
        /* Not open yet: its key first, without the lock (the key service reads the database). */
        pthread_mutex_unlock(&app->rt_lock);
        rc = volume_key(app, id, &key, &kp);
        if (rc < 0)
            return rc;
        have_key = true;
        goto again;
    }
    if (!ov) {
        ov = calloc(1, sizeof(*ov));
        if (!ov) {
            pthread_mutex_unlock(&app->rt_lock);
            crypto_wipe(&key, sizeof(key));
            return -ENOMEM;
        }
        rc = vol_open(vr, id, kp, &ov->v);
        crypto_wipe(&key, sizeof(key));
        if (rc < 0) {
            free(ov);
            pthread_mutex_unlock(&app->rt_lock);
            return rc;
        }
        snprintf(ov->id, sizeof(ov->id), "%s", id);
        snprintf(ov->region, sizeof(ov->region), "%s", region);
        ov->next = app->openvols;
        app->openvols = ov;
    }
    crypto_wipe(&key, sizeof(key));
    ov->refs++;
    if (writer)
        ov->writer = true;
    pthread_mutex_unlock(&app->rt_lock);
    *ret = ov;
    return 0;
}

void core_vol_put(struct app *app, struct core_openvol *ov, bool writer)
{
    if (!ov)
        return;
    pthread_mutex_lock(&app->rt_lock);
    if (writer) {
        ov->writer = false;
        pthread_cond_broadcast(&app->rt_cond);
    }
    if (--ov->refs == 0) {
        pthread_cond_broadcast(&app->rt_cond); /* core_vol_settle waits for this */
        for (struct core_openvol **pp = &app->openvols; *pp; pp = &(*pp)->next) {
            if (*pp == ov) {
                *pp = ov->next;
                break;
            }
        }
        vol_close(ov->v);
        free(ov);
    }
    pthread_mutex_unlock(&app->rt_lock);
}

bool core_vol_busy(struct app *app, const char *id)
{
    pthread_mutex_lock(&app->rt_lock);
    bool busy = false;
    for (struct core_openvol *ov = app->openvols; ov && !busy; ov = ov->next)
        busy = strcmp(ov->id, id) == 0;
    pthread_mutex_unlock(&app->rt_lock);
    return busy;
}

void core_vol_settle(struct app *app, const char *id, int seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&app->rt_lock);
    for (;;) {
        struct core_openvol *ov = app->openvols;
        while (ov && strcmp(ov->id, id) != 0)
            ov = ov->next;
        if (!ov || ov->writer ||
            pthread_cond_timedwait(&app->rt_cond, &app->rt_lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&app->rt_lock);
}

int core_map_get(struct app *app, const char *region, const char *snapshot_id, struct vol_map **ret)
{
    pthread_mutex_lock(&app->rt_lock);
    for (size_t i = 0; i < ARRAY_SIZE(app->maps); i++) {
        if (app->maps[i].m && strcmp(app->maps[i].id, snapshot_id) == 0) {
            app->maps[i].used = ++app->map_tick;
            *ret = vol_map_ref(app->maps[i].m);
            pthread_mutex_unlock(&app->rt_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&app->rt_lock);
    struct vol_region *vr;
    int rc = core_region_storage(app, region, NULL, &vr);
    if (rc < 0)
        return rc;
    char path[1200];
    vol_map_path(vr, snapshot_id, path, sizeof(path));
    struct vol_map *m;
    rc = vol_map_load(path, &m);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&app->rt_lock);
    size_t victim = 0;
    for (size_t i = 1; i < ARRAY_SIZE(app->maps); i++)
        if (app->maps[i].used < app->maps[victim].used)
            victim = i;
    vol_map_unref(app->maps[victim].m);
    snprintf(app->maps[victim].id, sizeof(app->maps[victim].id), "%s", snapshot_id);
    app->maps[victim].m = vol_map_ref(m);
    app->maps[victim].used = ++app->map_tick;
    pthread_mutex_unlock(&app->rt_lock);
    *ret = m;
    return 0;
}

void core_storage_close(struct app *app)
{
    for (size_t i = 0; i < ARRAY_SIZE(app->maps); i++) {
        vol_map_unref(app->maps[i].m);
        app->maps[i].m = NULL;
    }
    while (app->openvols) {
        struct core_openvol *ov = app->openvols;
        app->openvols = ov->next;
        vol_close(ov->v);
        free(ov);
    }
    for (size_t i = 0; i < CORE_MAX_REGIONS; i++) {
        if (app->rt[i].vr)
            vol_region_close(app->rt[i].vr);
        if (app->rt[i].store)
            store_close(app->rt[i].store);
        app->rt[i].vr = NULL;
        app->rt[i].store = NULL;
    }
}

/* ---- jobs ---- */

static void *worker(void *vapp)
{
    struct app *app = vapp;
    pthread_mutex_lock(&app->job_lock);
    for (;;) {
        while (!app->jobs && !app->stopping)
            pthread_cond_wait(&app->job_cond, &app->job_lock);
        if (app->stopping)
            break;
        struct core_job *j = app->jobs;
        app->jobs = j->next;
        if (!app->jobs)
            app->jobs_tail = NULL;
        pthread_mutex_unlock(&app->job_lock);
        j->fn(app, j->arg);
        free(j);
        pthread_mutex_lock(&app->job_lock);
    }
    pthread_mutex_unlock(&app->job_lock);
    return NULL;
}

void core_job_submit(struct app *app, void (*fn)(struct app *app, const char *arg), const char *arg)
{
    if (!app->started) {
        fn(app, arg);
        return;
    }
    struct core_job *j = calloc(1, sizeof(*j));
    if (!j) {
        fn(app, arg);
        return;
    }
    j->fn = fn;
    snprintf(j->arg, sizeof(j->arg), "%s", arg);
    pthread_mutex_lock(&app->job_lock);
    if (app->jobs_tail)
        app->jobs_tail->next = j;
    else
        app->jobs = j;
    app->jobs_tail = j;
    pthread_cond_signal(&app->job_cond);
    pthread_mutex_unlock(&app->job_lock);
}

int core_start(struct app *app)
{
    if (app->started)
        return 0;
    app->stopping = false;
    for (int i = 0; i < CORE_JOB_WORKERS; i++) {
        if (pthread_create(&app->workers[i], NULL, worker, app) != 0) {
            app->stopping = true;
            pthread_cond_broadcast(&app->job_cond);
            for (int k = 0; k < i; k++)
                pthread_join(app->workers[k], NULL);
            return -EAGAIN;
        }
    }
    app->started = true;
    int rc = core_blockstore_recover(app);
    if (rc == 0)
        rc = core_instances_start(app);
    return rc;
}

void core_stop(struct app *app)
{
    if (!app->started)
        return;
    pthread_mutex_lock(&app->job_lock);
    app->stopping = true;
    pthread_cond_broadcast(&app->job_cond);
    pthread_cond_broadcast(&app->sup_cond);
    pthread_mutex_unlock(&app->job_lock);
    for (int i = 0; i < CORE_JOB_WORKERS; i++)
        pthread_join(app->workers[i], NULL);
    core_instances_stop(app);
    /* Jobs left in the queue are redone by recovery at the next start. */
    while (app->jobs) {
        struct core_job *j = app->jobs;
        app->jobs = j->next;
        free(j);
    }
    app->jobs_tail = NULL;
    app->started = false;
}

/* ---- block devices for NBD ---- */

struct core_bdev {
    struct blockdev *bd;
    struct core_openvol *ov; /* volumes: the open volume; NULL for snapshots */
    bool writer;
};

int core_bdev_open(struct app *app, const char *name, bool probe, struct core_bdev **ret)
{
    struct db *db = core_db_get(app);
    struct db_volume v;
    struct db_snapshot s;
    int kind = 0;
    if (str_startswith(name, "vol-") && db_volume_get(db, name, &v) == 0 &&
        (strcmp(v.state, "available") == 0 || strcmp(v.state, "in-use") == 0))
        kind = 1;
    else if (str_startswith(name, "snap-") && db_snapshot_get(db, name, &s) == 0 &&
             strcmp(s.state, "completed") == 0)
        kind = 2;
    core_db_put(app, db);
    if (!kind)
        return -ENOENT;
    struct core_bdev *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    int rc;
    if (kind == 1) {
        b->writer = !probe;
        rc = core_vol_get(app, v.region, v.id, b->writer, &b->ov);
        if (rc == 0)
            b->bd = vol_blockdev(b->ov->v);
    } else {
        struct vol_region *vr;
        struct core_dkey dk;
        struct store_key key;
        const struct store_key *kp = NULL;
        core_dkey_of_snapshot(&s, &dk);
        rc = core_region_storage(app, s.region, NULL, &vr);
        if (rc == 0)
            rc = data_key(app, s.owner, s.region, &dk, &key, &kp);
        if (rc == 0)
            rc = vol_snapshot_open(vr, s.id, (uint64_t)s.volume_size_gib << 30, kp, &b->bd);
        crypto_wipe(&key, sizeof(key));
    }
    if (rc < 0) {
        free(b);
        return rc;
    }
    *ret = b;
    return 0;
}

struct blockdev *core_bdev_dev(struct core_bdev *b)
{
    return b->bd;
}

void core_bdev_close(struct app *app, struct core_bdev *b)
{
    if (!b)
        return;
    if (b->ov) {
        /* A writer's last word: whatever it wrote becomes durable when it leaves. */
        if (b->writer)
            b->bd->ops->flush(b->bd);
        core_vol_put(app, b->ov, b->writer);
    } else if (b->bd) {
        b->bd->ops->close(b->bd);
    }
    free(b);
}

void core_nbd_socket(struct app *app, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/run/nbd.sock", app->datadir);
}
