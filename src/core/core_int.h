/*
 * core_int.h — the app context and helpers shared by the files of src/core/.
 */
#ifndef AMID_CORE_INT_H
#define AMID_CORE_INT_H

#include "core/core.h"
#include "crypto/crypto.h"
#include "db/db.h"
#include "store/store.h"
#include "vol/vol.h"

#include <pthread.h>
#include <stdatomic.h>

#define CORE_DB_POOL 32

/* A region's storage, opened on first use. */
struct core_region_rt {
    struct store *store;
    struct vol_region *vr;
};

/* An open volume shared by its users (NBD connections, snapshot jobs). */
struct core_openvol {
    char id[32];
    char region[32];
    struct vol *v;
    int refs;
    bool writer; /* an NBD client holds the write slot */
    struct core_openvol *next;
};

struct core_job {
    void (*fn)(struct app *app, const char *arg);
    char arg[64];
    struct core_job *next;
};

/* Jobs include instance transitions that wait on guests (ACPI shutdown up to 30 s). */
#define CORE_JOB_WORKERS 6

struct core_inst;

struct app {
    char *datadir;
    char *dbpath;
    struct masterkey mk;
    uint8_t secrets_key[32]; /* seals access key secrets */

    pthread_mutex_t pool_lock;
    pthread_cond_t pool_cond;
    struct db *pool_free[CORE_DB_POOL];
    int nfree;
    int nopen;

    struct core_region regions[CORE_MAX_REGIONS];
    size_t nregions;

    pthread_mutex_t rt_lock;
    pthread_cond_t rt_cond; /* a writer slot was given back */
    struct core_region_rt rt[CORE_MAX_REGIONS];
    struct core_openvol *openvols; /* under rt_lock */

    pthread_mutex_t job_lock;
    pthread_cond_t job_cond;
    struct core_job *jobs, *jobs_tail;
    pthread_t workers[CORE_JOB_WORKERS];
    bool started, stopping;

    uint8_t block_token_key[32];

    /* Recently used snapshot maps (immutable), under rt_lock. */
    struct {
        char id[32];
        struct vol_map *m;
        uint64_t used;
    } maps[16];
    uint64_t map_tick;

    /* Instances (core_instances.c): runtime entries under inst_lock, the accelerator probed on
     * first launch, this program's path (QEMU runs `amid imds` for the metadata service). */
    pthread_mutex_t inst_lock;
    struct core_inst *insts;
    int accel; /* enum vmm_accel */
    bool accel_known;
    char exe[4096];
    pthread_t supervisor;
    pthread_cond_t sup_cond; /* under job_lock: wakes the supervisor to stop */
    bool supervising;

    _Atomic int64_t clock_offset_ms;
    _Atomic int64_t clock_checked_us; /* when the offset was last read from the database */
};

/* Runs `fn` inside a write transaction on a pooled connection; commits when it returns 0,
 * rolls back otherwise, and returns its value. */
int core_tx(struct app *app, int (*fn)(struct app *app, struct db *db, void *ctx), void *ctx);

/* Inserts account `name` and its first key inside the caller's transaction. */
int core_account_insert_tx(struct app *app, struct db *db, const char *name, struct core_creds *ret,
                           struct err *e);

/* The region's chunk store and volume region, opened on first use.  -ENOENT for an unknown
 * region. */
int core_region_storage(struct app *app, const char *region, struct store **ret_store,
                        struct vol_region **ret_vr);
/* Takes a reference on an open volume (opening it if needed); `writer` claims the single write
 * slot (-EBUSY when taken).  Give it back with core_vol_put. */
int core_vol_get(struct app *app, const char *region, const char *id, bool writer,
                 struct core_openvol **ret);
void core_vol_put(struct app *app, struct core_openvol *ov, bool writer);
/* Whether a volume is open by anyone (deleting it must wait). */
bool core_vol_busy(struct app *app, const char *id);

/* Runs fn(app, arg) on a job worker (inline when the workers are not started). */
void core_job_submit(struct app *app, void (*fn)(struct app *app, const char *arg),
                     const char *arg);
/* The snapshot capture job and the start-up recovery of block storage (core_blockstore.c). */
void core_job_capture(struct app *app, const char *snapshot_id);
int core_blockstore_recover(struct app *app);
/* A snapshot's map, from the cache or its file; the caller drops it with vol_map_unref. */
int core_map_get(struct app *app, const char *region, const char *snapshot_id,
                 struct vol_map **ret);
/* Tears down open volumes and region storage (core_close). */
void core_storage_close(struct app *app);
/* Checks a CreateVolume-like spec and fills `v` (a new id, zone, type, size...). */
int core_volume_prepare(struct app *app, const struct core_caller *who,
                        const struct core_volume_spec *spec, struct db_volume *v, struct err *e);
/* Creates prepared volume `v` inside the caller's transaction: snapshot checks (a snapshot the
 * caller may not see is allowed `via_image`, when launching an image), type bounds, the row,
 * its tags and its storage. */
int core_volume_new_tx(struct app *app, struct db *db, const struct core_caller *who,
                       const struct core_volume_spec *spec, bool via_image, struct db_volume *v,
                       struct err *e);
/* Looks a client token of operation `op` up inside the caller's transaction: 0 with the resource
 * id the first request made, -ENOENT when the token is new, or IdempotentParameterMismatch when
 * it came with other `params` (a digest of the request). */
int core_idem_check(struct db *db, const struct core_caller *who, const char *op, const char *token,
                    const char *params, char *resource, size_t rlen, struct err *e);
/* Whether an owned resource exists (for the tag store). */
int core_volume_owned(struct db *db, const char *region, const char *account, const char *id);
int core_snapshot_owned(struct db *db, const char *region, const char *account, const char *id);
int core_image_owned(struct db *db, const char *region, const char *account, const char *id);
int core_keypair_owned(struct db *db, const char *region, const char *account, const char *id);
/* Checks tags given at creation (TagSpecifications): count, keys, values, duplicates. */
int core_tags_check(const struct core_tag *tags, size_t ntags, struct err *e);
/* Writes tags given at creation inside the creator's transaction. */
int core_tags_insert(struct db *db, const struct core_caller *who, const char *resource_id,
                     const char *type, const struct core_tag *tags, size_t ntags);

/* A kind of taggable resource: its id prefix, EC2 ResourceType and NotFound code, and how to
 * check that an id names one the account owns in a region (0, or -ENOENT). */
struct core_restype {
    const char *prefix;
    const char *type;
    const char *notfound;
    const char *noun; /* "volume", for "The volume 'vol-1' does not exist" */
    int (*owned)(struct db *db, const char *region, const char *account, const char *id);
};
/* The resource type an id's prefix names; NULL when none. */
const struct core_restype *core_restype_of(const char *id);

/* Instances: reattach to running QEMUs, resume interrupted transitions and start the
 * supervisor (core_start); stop it (core_stop); free the runtime entries (core_close). */
int core_instances_start(struct app *app);
void core_instances_stop(struct app *app);
void core_instances_close(struct app *app);

/* Whether snapshot `snapshot_id`'s map file must stay although the snapshot is being deleted: a
 * volume of the region is based on it or still capturing or finishing it, or a pending EBS upload
 * builds on it.  True as well when that cannot be told (core_maint.c).  The map of a snapshot
 * deleted while needed is removed later by gc, once nothing needs it any more. */
bool core_map_needed(struct app *app, const char *region, const char *snapshot_id);

#endif
