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

    /* A connection that only reads the database's data version (core_data_version). */
    pthread_mutex_t watch_lock;
    struct db *watch;
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
/* Waits up to `seconds` while volume `id` is open only by amid itself (a snapshot's
 * capture finishing, say), not by an NBD client: so that a DeleteVolume right after a snapshot
 * completes does not find the volume busy.  Call it only for the caller's own volume (the wait
 * must not tell a stranger that a volume exists). */
void core_vol_settle(struct app *app, const char *id, int seconds);

/* Runs fn(app, arg) on a job worker (inline when the workers are not started). */
void core_job_submit(struct app *app, void (*fn)(struct app *app, const char *arg),
                     const char *arg);
/* The snapshot capture job and the start-up recovery of block storage (core_blockstore.c). */
void core_job_capture(struct app *app, const char *snapshot_id);
/* The job that completes pending copy `snapshot_id` (core_copy.c): moves the chunks of its
 * source (snapshot parent_id in source_region) that the destination store lacks, verifying each,
 * then saves its map and marks it completed (or error).  Idempotent and resumable: chunks already
 * committed are not moved again.  Stops early when the row is deleted or no longer pending. */
void core_job_copy(struct app *app, const char *snapshot_id);
/* ---- encryption of volumes and snapshots (core_enc.c) ---- */

/* A data key as a row keeps it: whether the data is encrypted, the KMS key's ARN and the data
 * key wrapped by it. */
struct core_dkey {
    bool encrypted;
    char key_arn[160];
    uint8_t blob[DB_DATA_KEY_MAX];
    size_t bloblen;
};
/* The chunk store's encryption domain of a data key's plaintext (id, data and key-id keys). */
void core_store_key_derive(const uint8_t plain[32], struct store_key *k);
/* A new data key under KMS key `key_arn` as `who` may use it; *sk (when non-NULL) its domain.
 * EC2 errors: IncorrectState (key disabled or pending deletion), InvalidParameterValue. */
int core_dkey_new(struct app *app, const struct core_caller *who, const char *key_arn,
                  struct core_dkey *ret, struct store_key *sk, struct err *e);
/* The domain of an existing data key, asking the key service as `who` (the account using the
 * data, in the key's region).  Errors as core_dkey_new. */
int core_dkey_open(struct app *app, const struct core_caller *who, const struct core_dkey *dk,
                   struct store_key *sk, struct err *e);
/* core_dkey_open for encrypted data: *ret = sk, or NULL for clear data (nothing to open). */
int core_dkey_key(struct app *app, const struct core_caller *who, const struct core_dkey *dk,
                  struct store_key *sk, const struct store_key **ret, struct err *e);
void core_dkey_of_volume(const struct db_volume *v, struct core_dkey *ret);
void core_dkey_of_snapshot(const struct db_snapshot *s, struct core_dkey *ret);
void core_dkey_to_volume(const struct core_dkey *dk, struct db_volume *v);
void core_dkey_to_snapshot(const struct core_dkey *dk, struct db_snapshot *s);

/* How new data (a volume, a snapshot copy) is to be encrypted. */
struct core_enc {
    struct core_dkey dk;  /* dk.encrypted false: clear */
    struct store_key key; /* dk's domain, when encrypted (wipe with core_enc_wipe) */
    bool transcode;       /* the source's data must be re-encoded into dk's domain */
};
/* Decides the encryption of new data made by `who` from `src` (NULL: none) with EC2's rules:
 * encrypted when asked, when the source is, or when EBS encryption by default is on; under
 * KmsKeyId, else the source's key (same region), else the account's default key.  The same KMS
 * key as the source keeps the source's data key (no re-encoding); any other gets a new one.
 * Calls the key service (which may write): never inside a transaction. */
int core_enc_plan(struct app *app, const struct core_caller *who, bool encrypted,
                  const char *kms_key_id, const struct core_dkey *src, struct core_enc *ret,
                  struct err *e);
void core_enc_wipe(struct core_enc *enc);
/* core_enc_plan for a copy by `who` of snapshot `src` from `source_region`: an encrypted source
 * must be readable by the caller (its key usable by it in the source region), and a copy to
 * another region is re-encoded under a key of the destination. */
int core_copy_enc_plan(struct app *app, const struct core_caller *who, const char *source_region,
                       const struct db_snapshot *src, bool encrypted, const char *kms_key_id,
                       struct core_enc *ret, struct err *e);

/* Fills a volume made from a snapshot of another encryption domain, which has no files until
 * then: re-encodes the snapshot's chunks into the volume's domain, saves the map under the
 * volume's id and creates the volume on it.  Only for such volumes (a volume with files has
 * nothing to fill).  Idempotent; -EACCES when a key is refused. */
int core_volume_fill(struct app *app, const char *volume_id);
/* The job for a "creating" volume: core_volume_fill, then "available" (or "error"). */
void core_job_fill_volume(struct app *app, const char *volume_id);
/* A snapshot's row by id, whoever owns it (internal lookups; no access check). */
int core_snapshot_row(struct app *app, const char *id, struct db_snapshot *ret);
/* core_image_register inside the caller's transaction on `db`. */
int core_image_register_in(struct app *app, struct db *db, const struct core_caller *who,
                           const struct core_image_spec *spec, char ret_id[32], struct err *e);
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
/* Whether an account may tag a resource (0, or -ENOENT): one it owns, and, as on AWS, an image
 * or snapshot shared with it (or public) that it can see by id — those tags are its own. */
int core_volume_owned(struct db *db, const char *region, const char *account, const char *id);
int core_snapshot_taggable(struct db *db, const char *region, const char *account, const char *id);
int core_image_taggable(struct db *db, const char *region, const char *account, const char *id);
int core_keypair_owned(struct db *db, const char *region, const char *account, const char *id);
/* Checks tags given at creation (TagSpecifications): count, keys, values, duplicates. */
int core_tags_check(const struct core_tag *tags, size_t ntags, struct err *e);
/* Writes tags given at creation inside the creator's transaction. */
int core_tags_insert(struct db *db, const struct core_caller *who, const char *resource_id,
                     const char *type, const struct core_tag *tags, size_t ntags);

/* A kind of taggable resource: its id prefix, EC2 ResourceType and NotFound code, and how to
 * check that an id names one the account may tag in a region (0, or -ENOENT). */
struct core_restype {
    const char *prefix;
    const char *type;
    const char *notfound;
    const char *noun; /* "volume", for "The volume 'vol-1' does not exist" */
    int (*taggable)(struct db *db, const char *region, const char *account, const char *id);
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
