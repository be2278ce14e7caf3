/*
 * core.h — amid's resources and the transactions that span the database and the stores.
 *
 * `struct app` is the one context passed down from the daemon and the command line: the data
 * directory, its master key, a pool of database connections and the deployment's clock.  Core
 * speaks the domain's vocabulary: its errors carry AWS error codes in `struct err`, and the API
 * layer only translates wire formats.
 */
#ifndef AMID_CORE_H
#define AMID_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "util/blockdev.h"
#include "util/util.h"

struct app;

#define CORE_DEFAULT_LISTEN  "127.0.0.1:8773"
#define CORE_DEFAULT_REGIONS "us-east-1,us-west-2"
#define CORE_MAX_REGIONS     16

/* Who is asking: the authenticated account and the region its request was signed for.  With
 * `dry_run`, an operation checks everything it would check, changes nothing, and fails with
 * DryRunOperation (-EALREADY) where it would have succeeded. */
struct core_caller {
    const char *account_id;
    const char *region;
    bool dry_run;
};

/* Sets DryRunOperation in `e` and returns -EALREADY. */
int core_dry_run(struct err *e);

/* New credentials, as `amid init`, `account create` and `key create` print them once.  The
 * caller wipes `secret` with core_creds_wipe after printing. */
struct core_creds {
    char account_id[16];
    char account_name[72];
    char key_id[24];
    char secret[48];
};
void core_creds_wipe(struct core_creds *c);

/* Creates data directory `dir` (which must be absent or empty): the master key (mode 0600), the
 * database, the regions in `regions_csv` (each with zones a, b and c and a chunk store directory
 * under DIR/regions/, or, written NAME=/ABSOLUTE/DIR, in that directory, which must be absent or
 * empty: another disk), the endpoint setting from `listen`, and a first account named "default"
 * with one access key, returned in *ret.  On failure nothing usable is left behind and `e` says
 * why. */
int core_datadir_init(const char *dir, const char *regions_csv, const char *listen,
                      struct core_creds *ret, struct err *e);

/* Opens an initialised data directory.  Refuses (with a message in `e`) a master key readable or
 * writable by group or others (-EPERM), a database from a newer amid (-EPROTO) and a directory
 * that was never initialised (-ENOENT).  The caller frees *ret with core_close. */
int core_open(const char *dir, struct app **ret, struct err *e);
void core_close(struct app *app);

const char *core_datadir(const struct app *app);

/* Borrows a database connection for the calling thread; give it back with core_db_put.  Never
 * NULL: blocks while every connection is in use, and opens more up to a fixed pool size. */
struct db *core_db_get(struct app *app);
void core_db_put(struct app *app, struct db *db);

/* Sets *out to a value that changes whenever anything in the database changed since the last
 * call, written by this process or another (amid's CLI on the same data directory): equal values
 * mean the same state, a larger one a later state.  Read it before reading what it should vouch
 * for.  0 or -EIO. */
int core_data_version(struct app *app, uint64_t *out);

/* The deployment's time: the real clock plus an administrator's offset (core_clock_set_offset),
 * so time-based rules can be tested in seconds. */
int64_t core_now_ms(struct app *app);
int core_clock_set_offset(struct app *app, int64_t offset_ms);
int64_t core_clock_offset(struct app *app);

/* The endpoint URL clients should use (from init's --listen or the last serve --listen). */
int core_endpoint(struct app *app, char *out, size_t outlen);
int core_set_listen(struct app *app, const char *listen);

/* A 32-byte subkey of the master key for `label` (pagination tokens, block tokens...). */
void core_subkey(struct app *app, const char *label, uint8_t out[32]);

/* Starts the daemon's background work (the job workers that capture snapshots) and recovers
 * what a crash interrupted: pending snapshots are captured again, half-finished ones finished,
 * volumes' layer chains reconciled with the database.  Only `amid serve` calls it; command-line
 * tools that open a data directory work without it. */
int core_start(struct app *app);
/* Stops the job workers, letting the job in progress finish. */
void core_stop(struct app *app);

/* ---- regions ---- */

struct core_region {
    char name[32];
    char store_path[1024]; /* absolute */
};
/* The deployment's regions, sorted by name; *ret_n is set.  The array lives as long as `app`. */
const struct core_region *core_regions(struct app *app, size_t *ret_n);
const struct core_region *core_region_find(struct app *app, const char *name);
/* Availability zones of a region (or all when NULL), sorted. */
int core_zone_each(struct app *app, const char *region,
                   int (*fn)(void *ctx, const char *zone, const char *zone_id, const char *rgn),
                   void *ctx);

/* ---- accounts and keys ---- */

/* Creates an account with a 12-digit id and one access key.  `name` is 1-64 of [A-Za-z0-9._-]
 * and unique (-EEXIST). */
int core_account_create(struct app *app, const char *name, struct core_creds *ret, struct err *e);
/* Issues a new key for account `account` (its id or name).  With `label`, the key carries it;
 * with `replace`, earlier keys of the account with the same label are deleted first. */
int core_key_create(struct app *app, const char *account, const char *label, bool replace,
                    struct core_creds *ret, struct err *e);
int core_key_delete(struct app *app, const char *key_id, struct err *e);

struct core_account_info {
    const char *id;
    const char *name;
    const char *alias;
    bool system;
};
struct core_key_info {
    const char *id;
    const char *account_id;
    const char *label;
    int64_t created_ms;
};
/* Lists accounts, oldest first. */
int core_account_each(struct app *app, int (*fn)(void *ctx, const struct core_account_info *a),
                      void *ctx);
/* Lists the access keys (never their secrets) of `account` (id or name; all when NULL).
 * -ENOENT when the account does not exist. */
int core_key_each(struct app *app, const char *account,
                  int (*fn)(void *ctx, const struct core_key_info *k), void *ctx);

/* The system account that owns the system catalogue (alias `alias`, e.g. "amid"), created on
 * first use; it has no keys and cannot sign requests.  Copies its id out. */
int core_system_account(struct app *app, const char *alias, char ret_id[16], struct err *e);

/* Resolves an access key id for request signing: copies its account id and the plaintext
 * secret (NUL-terminated) out.  -ENOENT for an unknown key or a system account's key.  The
 * caller wipes the secret as soon as the signature is checked. */
int core_key_secret(struct app *app, const char *key_id, char account_id[16], char secret[48]);

/* Whether `id` is `prefix` followed by 8 or 17 lower-case hex digits, as EC2 ids are. */
bool core_id_valid(const char *id, const char *prefix);

/* ---- tags ---- */

#define CORE_TAGS_MAX      50
#define CORE_TAG_KEY_MAX   128
#define CORE_TAG_VALUE_MAX 256

struct core_tag {
    const char *key;
    const char *value; /* NULL in DeleteTags means "whatever its value" */
};

/* Validates a tag key and value as EC2 does (length in characters, UTF-8, the reserved "aws:"
 * prefix); `value` may be NULL.  Returns 0 or -EINVAL with InvalidParameterValue in `e`. */
int core_tag_validate(const char *key, const char *value, struct err *e);

/* Adds or overwrites tags on resources the caller owns, all or nothing.  Unknown resources get
 * their type's NotFound code, malformed ids InvalidID, and more than 50 tags on a resource
 * TagLimitExceeded. */
int core_tags_create(struct app *app, const struct core_caller *who, const char *const *ids,
                     size_t nids, const struct core_tag *tags, size_t ntags, struct err *e);
int core_tags_delete(struct app *app, const struct core_caller *who, const char *const *ids,
                     size_t nids, const struct core_tag *tags, size_t ntags, struct err *e);

struct core_tag_row {
    const char *resource_id;
    const char *resource_type;
    const char *key;
    const char *value;
};
/* Every tag the caller owns in its region, by resource id then key. */
int core_tags_each(struct app *app, const struct core_caller *who,
                   int (*fn)(void *ctx, const struct core_tag_row *t), void *ctx);
/* The tags `account` put on one resource (an account sees only its own), by key. */
int core_tags_of(struct app *app, struct db *db, const char *region, const char *account,
                 const char *resource_id, int (*fn)(void *ctx, const struct core_tag_row *t),
                 void *ctx);

/* ---- volumes and snapshots (rows are db's plain structs) ---- */

#define CORE_BLOCK_SIZE     524288
#define CORE_BLOCKS_PER_GIB 2048

struct core_enc;
struct core_volume_spec {
    const char *zone;    /* availability zone name, or NULL with zone_id */
    const char *zone_id; /* or its id */
    int64_t size_gib;    /* 0: the snapshot's size */
    const char *type;    /* NULL: gp2 */
    int64_t iops;        /* 0: the type's default */
    int64_t throughput;  /* 0: the type's default */
    const char *snapshot_id;
    bool multi_attach;
    int64_t init_rate; /* VolumeInitializationRate, 0 when not given */
    bool encrypted;
    const char *kms_key_id;
    const struct core_enc *enc;  /* core_volume_new_tx: the encryption core_enc_plan decided */
    const struct core_tag *tags; /* TagSpecifications for the volume */
    size_t ntags;
    const char *client_token;
};

/* Creates a volume in constant time (no data is copied from its snapshot).  Checks everything
 * EC2 checks: zone, type bounds on size, iops and throughput, the snapshot (completed, owned or
 * shared with the caller through createVolumePermission, no bigger than the volume), tags and
 * the client token (the same token and parameters return the first call's volume;
 * different parameters IdempotentParameterMismatch). */
int core_volume_create(struct app *app, const struct core_caller *who,
                       const struct core_volume_spec *spec, struct db_volume *ret, struct err *e);
/* A volume the caller owns in its region; InvalidVolume.NotFound otherwise (also for another
 * account's), InvalidVolumeID.Malformed for a malformed id. */
int core_volume_get(struct app *app, const struct core_caller *who, const char *id,
                    struct db_volume *ret, struct err *e);
/* The caller's volumes in its region, by id. */
int core_volume_each(struct app *app, const struct core_caller *who,
                     int (*fn)(void *ctx, const struct db_volume *v), void *ctx);
/* Deletes an available volume and its data (VolumeInUse while attached or open for writing). */
int core_volume_delete(struct app *app, const struct core_caller *who, const char *id,
                       struct err *e);

struct core_volume_mod {
    int64_t size_gib; /* 0: unchanged; smaller than now: InvalidParameterValue */
    const char *type; /* NULL: unchanged */
    int64_t iops;     /* -1: unchanged */
    int64_t throughput;
    int multi_attach; /* -1: unchanged */
};
/* Modifies a volume (growing its device at once) and records the modification; *ret_body is a
 * new JSON text of the VolumeModification (caller frees). */
int core_volume_modify(struct app *app, const struct core_caller *who, const char *id,
                       const struct core_volume_mod *mod, char **ret_body, struct err *e);
/* Modification records (JSON texts) of the caller's volumes, newest first. */
int core_volume_mods_each(struct app *app, const struct core_caller *who, const char *volume_id,
                          int (*fn)(void *ctx, const char *body), void *ctx);

/* Takes a snapshot of a volume: the point in time is this call.  Returns the pending snapshot;
 * a job captures its changed blocks and completes it. */
int core_snapshot_create(struct app *app, const struct core_caller *who, const char *volume_id,
                         const char *description, const struct core_tag *tags, size_t ntags,
                         struct db_snapshot *ret, struct err *e);

enum core_access {
    CORE_OWNER,  /* the caller must own it */
    CORE_VISIBLE /* owned, or shared with the caller (createVolumePermission) */
};
/* A snapshot in the caller's region it may see; InvalidSnapshot.NotFound otherwise. */
int core_snapshot_get(struct app *app, const struct core_caller *who, const char *id,
                      enum core_access access, struct db_snapshot *ret, struct err *e);
/* Snapshots in the caller's region: with `owner` only that account's, with `visible` those the
 * caller may use (its own, shared with it and public), otherwise all. */
int core_snapshot_each(struct app *app, const struct core_caller *who, const char *owner,
                       bool visible, int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx);
/* Whether `account` may create volumes from snapshot `id` through a permission for it (or for
 * "all" when `or_all`). */
bool core_snapshot_granted(struct app *app, const char *id, const char *account, bool or_all);
/* Deletes a snapshot the caller owns (InvalidSnapshot.InUse while an image uses it). */
int core_snapshot_delete(struct app *app, const struct core_caller *who, const char *id,
                         struct err *e);
/* Copies a completed snapshot the caller may see (within the region: the copy shares chunks). */
int core_snapshot_copy(struct app *app, const struct core_caller *who, const char *source_region,
                       const char *source_id, const char *description, bool encrypted,
                       const char *kms_key_id, const struct core_tag *tags, size_t ntags,
                       struct db_snapshot *ret, struct err *e);
/* createVolumePermission: add or remove grantees ("all" or 12-digit account ids), or reset. */
int core_snapshot_permission(struct app *app, const struct core_caller *who, const char *id,
                             const char *const *add, size_t nadd, const char *const *remove,
                             size_t nremove, struct err *e);
int core_snapshot_permission_reset(struct app *app, const struct core_caller *who, const char *id,
                                   struct err *e);
int core_snapshot_permission_each(struct app *app, const struct core_caller *who, const char *id,
                                  int (*fn)(void *ctx, const char *grantee), void *ctx,
                                  struct err *e);

/* ---- EBS direct ---- */

struct core_ebs_start {
    int64_t volume_size_gib;
    const char *parent_id;
    const char *description;
    const struct core_tag *tags;
    size_t ntags;
    const char *client_token;
    int64_t timeout_min; /* 0: 60 */
    bool encrypted;
    const char *kms_key_arn; /* NULL: the parent's key, or the account's default */
};
int core_ebs_start(struct app *app, const struct core_caller *who, const struct core_ebs_start *p,
                   struct db_snapshot *ret, struct err *e);
/* Stores block `idx` of a pending snapshot after checking its SHA-256 (`sha256`, as the client
 * claims it).  Durable when it returns 0.  Each block written restarts the upload's idle
 * timeout. */
int core_ebs_put(struct app *app, const struct core_caller *who, const char *snapshot_id,
                 int64_t idx, const void *data, size_t n, const uint8_t sha256[32], struct err *e);
/* Completes an upload: checks the number of blocks put and, when `linear` is non-NULL, the LINEAR
 * checksum over them; builds the snapshot's map from its parent and the blocks. */
int core_ebs_complete(struct app *app, const struct core_caller *who, const char *snapshot_id,
                      int64_t changed_blocks, const uint8_t *linear, struct db_snapshot *ret,
                      struct err *e);

/* Non-zero blocks of a completed snapshot the caller may read, from `start`, in index order:
 * fn gets the index and the block's chunk id (32 bytes). */
int core_snapshot_blocks(struct app *app, const struct core_caller *who, const char *id,
                         int64_t start, int (*fn)(void *ctx, int64_t idx, const uint8_t *chunk),
                         void *ctx, struct err *e);
/* Blocks that differ between two snapshots of the same size (any two: related or not), from
 * `start`: fn gets the index and each side's chunk id, NULL where that side is zero. */
int core_snapshot_diff(struct app *app, const struct core_caller *who, const char *first,
                       const char *second, int64_t start,
                       int (*fn)(void *ctx, int64_t idx, const uint8_t *a, const uint8_t *b),
                       void *ctx, struct err *e);
/* Reads block `idx` of a snapshot (all 512 KiB of it) into `buf`; sets *ret_chunk to the
 * block's chunk id, or all zero bytes for a zero block. */
int core_snapshot_read_block(struct app *app, const struct core_caller *who, const char *id,
                             int64_t idx, void *buf, uint8_t ret_chunk[32], struct err *e);

/* ---- machine images ---- */

struct core_image_spec {
    const char *name;
    const char *description;
    const char *architecture;        /* NULL: x86_64 */
    const char *root_device_name;    /* NULL: the first mapping's device */
    const char *virtualization_type; /* NULL: hvm */
    const char *boot_mode;
    int ena_support; /* -1: not given */
    const char *sriov_net_support;
    const char *imds_support;
    const char *tpm_support;
    struct db_bdm *bdms; /* volume_size 0: the snapshot's size; kind "ebs", "ephemeral", "none" */
    size_t nbdms;
    const struct core_tag *tags;
    size_t ntags;
    const char *source_instance_id; /* CreateImage */
    const char *source_image_id;    /* CopyImage */
    const char *source_region;
    const char *owner_override; /* the system catalogue registers as its own account */
};

/* Registers an image from snapshots with EC2's rules (name, mappings, snapshots the caller may
 * use, sizes, types).  The image is available at once when every snapshot is completed, pending
 * otherwise (it follows its snapshots: available when all complete, failed when one fails). */
int core_image_register(struct app *app, const struct core_caller *who,
                        const struct core_image_spec *spec, char ret_id[32], struct err *e);

/* CopyImage: a copy, owned by the caller in its region, of an available image it may launch in
 * `source_region` (another account's image also needs create-volume permission on the image's
 * snapshots).  The new image is pending, with new snapshots that copy the source's chunks the
 * region's store lacks in the background, and becomes available when they complete.  A repeated
 * ClientToken with the same parameters answers the first copy's id. */
struct core_image_copy_req {
    const char *source_region;
    const char *source_image_id;
    const char *name;
    const char *description; /* NULL: the source's */
    const char *client_token;
    bool encrypted;
    const char *kms_key_id;
    bool copy_image_tags; /* the source's user tags, when the caller owns the source */
    const struct core_tag *image_tags;
    size_t nimage_tags;
    const struct core_tag *snapshot_tags;
    size_t nsnapshot_tags;
};
int core_image_copy(struct app *app, const struct core_caller *who,
                    const struct core_image_copy_req *req, char ret_id[32], struct err *e);

enum core_image_access {
    CORE_IMAGE_OWNER,  /* the caller must own it */
    CORE_IMAGE_LAUNCH, /* the caller may launch it: owner, granted or public; not disabled */
    CORE_IMAGE_SEE,    /* the caller may see it (describe), disabled ones only as owner */
};
/* An image the caller may reach as `access` says.  A stranger gets InvalidAMIID.NotFound, exactly
 * as for an image that does not exist; a grantee asking for an owner's operation gets AuthFailure.
 * Deregistered images are InvalidAMIID.NotFound except for CORE_IMAGE_SEE (shown for a while). */
int core_image_get(struct app *app, const struct core_caller *who, const char *id,
                   enum core_image_access access, struct db_image *ret, struct err *e);
/* Images per `q` (region defaults to the caller's); callers filter further. */
int core_image_each(struct app *app, const struct db_image_query *q,
                    int (*fn)(void *ctx, const struct db_image *im), void *ctx);
int core_image_bdms(struct app *app, const char *id, int (*fn)(void *ctx, const struct db_bdm *b),
                    void *ctx);
/* Launch permissions: grantees ("all" or account ids) to add and remove; block public access
 * refuses new "all" grants. */
int core_image_permission(struct app *app, const struct core_caller *who, const char *id,
                          const char *const *add, size_t nadd, const char *const *remove,
                          size_t nremove, struct err *e);
int core_image_permission_reset(struct app *app, const struct core_caller *who, const char *id,
                                struct err *e);
int core_image_permission_each(struct app *app, const char *id,
                               int (*fn)(void *ctx, const char *grantee), void *ctx);
/* Whether `account` holds an explicit launch permission for the image: 1, 0, or -EIO. */
int core_image_permission_granted(struct app *app, const char *id, const char *account);
/* A grantee gives up its own launch permission. */
int core_image_cancel_permission(struct app *app, const struct core_caller *who, const char *id,
                                 struct err *e);
/* Attribute changes by the owner: description, imdsSupport ("v2.0"). */
int core_image_set(struct app *app, const struct core_caller *who, const char *id,
                   const char *description, const char *imds_support, struct err *e);
/* Deprecation time (0 cancels it). */
int core_image_deprecate(struct app *app, const struct core_caller *who, const char *id,
                         int64_t at_ms, struct err *e);
/* Deregistration protection; *ret gets EC2's "return" text. */
int core_image_protect(struct app *app, const struct core_caller *who, const char *id, bool enable,
                       bool with_cooldown, struct err *e);
/* Disables (private, unlaunchable, hidden) or re-enables an image. */
int core_image_disable(struct app *app, const struct core_caller *who, const char *id, bool disable,
                       struct err *e);
/* Deregisters an image; with `delete_snapshots` deletes each of its snapshots no other image
 * uses, reporting each as fn(ctx, snapshot, "success"|"skipped"|...). */
int core_image_deregister(struct app *app, const struct core_caller *who, const char *id,
                          bool delete_snapshots,
                          void (*fn)(void *ctx, const char *snapshot_id, const char *code),
                          void *ctx, struct err *e);
/* Image block public access of the caller's account and region: `set` "block-new-sharing" or
 * "unblocked", or NULL to read it into `out`. */
int core_image_block_public(struct app *app, const struct core_caller *who, const char *set,
                            char *out, size_t outlen, struct err *e);
/* The display form of an image's deregistration protection at time `now_ms` ("disabled",
 * "enabled-with-cooldown", "enabled-without-cooldown", "disabled-until-TIME"). */
void core_image_protection_text(const struct db_image *im, int64_t now_ms, char *out,
                                size_t outlen);
/* An image (not deregistered) an owner tagged key=value in a region; -ENOENT when none. */
int core_image_find_tagged(struct app *app, const char *region, const char *owner, const char *key,
                           const char *value, char ret_id[32]);
/* Called when a snapshot completes or fails: pending images follow. */
void core_images_snapshot_done(struct app *app, const char *snapshot_id);
/* How long a deregistered image still shows in DescribeImages. */
#define CORE_DEREGISTERED_VISIBLE_MS (60LL * 60 * 1000)

/* The alias of an account (ImageOwnerAlias), "" when none (or no such account).  0 or -EIO. */
int core_account_alias(struct app *app, const char *account_id, char *out, size_t outlen);
/* The account id an Owners value names: self, an account id, or an alias. -ENOENT if none. */
int core_owner_resolve(struct app *app, const struct core_caller *who, const char *owner,
                       char out[16]);

/* ---- key pairs ---- */

/* Creates a key pair ("rsa" or "ed25519"); *ret_private gets the private key PEM, which amid
 * does not keep (the caller wipes and frees it).  InvalidKeyPair.Duplicate for a name in use. */
int core_keypair_create(struct app *app, const struct core_caller *who, const char *name,
                        const char *type, const struct core_tag *tags, size_t ntags,
                        struct db_keypair *ret, char **ret_private, struct err *e);
/* Imports a public key (OpenSSH text, or PEM/DER SubjectPublicKeyInfo): InvalidKey.Format. */
int core_keypair_import(struct app *app, const struct core_caller *who, const char *name,
                        const uint8_t *material, size_t n, const struct core_tag *tags,
                        size_t ntags, struct db_keypair *ret, struct err *e);
/* A key pair of the caller by name or by id: InvalidKeyPair.NotFound. */
int core_keypair_get(struct app *app, const struct core_caller *who, const char *name,
                     const char *id, struct db_keypair *ret, struct err *e);
int core_keypair_each(struct app *app, const struct core_caller *who,
                      int (*fn)(void *ctx, const struct db_keypair *k), void *ctx);
/* Deletes by name (an unknown name succeeds, as on EC2) or by id (InvalidKeyPair.NotFound). */
int core_keypair_delete(struct app *app, const struct core_caller *who, const char *name,
                        const char *id, char ret_id[32], struct err *e);

/* ---- instances ---- */

struct core_instance_type {
    const char *name;
    unsigned vcpus;
    unsigned mem_mib;
    bool burstable;
    bool current;
};
/* The instance types amid offers (t2, t3, m5, c5 families), in name order. */
const struct core_instance_type *core_instance_types(size_t *ret_n);
const struct core_instance_type *core_instance_type(const char *name);
/* EC2's state codes: pending 0, running 16, shutting-down 32, terminated 48, stopping 64,
 * stopped 80. */
int core_instance_state_code(const char *state);

/* A block device mapping of RunInstances, overriding or adding to the image's. */
struct core_run_bdm {
    char device[64];
    bool nodevice;
    bool ebs;
    char snapshot_id[32]; /* "" : the image's, or an empty volume */
    int64_t size_gib;     /* 0: unchanged */
    char type[16];        /* "": unchanged */
    int64_t iops, throughput;
    int delete_on_termination; /* -1: unchanged */
    bool encrypted;
    char kms_key_id[160]; /* "": the snapshot's key, or the account's default */
};

struct core_run_spec {
    const char *image_id;
    const char *instance_type; /* NULL: t2.micro */
    int64_t min_count, max_count;
    const char *key_name;
    const uint8_t *user_data; /* raw (decoded) */
    size_t user_data_len;
    const char *zone;
    const char *http_tokens, *http_endpoint, *metadata_tags;
    int64_t hop_limit; /* 0: 1 */
    const struct core_run_bdm *bdms;
    size_t nbdms;
    const struct core_tag *instance_tags;
    size_t ninstance_tags;
    const struct core_tag *volume_tags;
    size_t nvolume_tags;
    const char *client_token;
    bool disable_api_termination, disable_api_stop;
    const char *shutdown_behavior; /* NULL: stop */
};

/* Launches instances from an image the caller may launch: rows, volumes made from the image's
 * snapshots in constant time, then QEMU per instance in the background (pending -> running).
 * Fills the reservation id and up to `max` instance ids; *ret_n is how many were launched.
 * Returns 0, 1 when the client token was seen before (the ids are the first call's), or a
 * negative errno with `e` set. */
int core_run_instances(struct app *app, const struct core_caller *who,
                       const struct core_run_spec *spec, char reservation_id[32],
                       char (*ret_ids)[32], size_t max, size_t *ret_n, struct err *e);
/* An instance of the caller: InvalidInstanceID.Malformed / InvalidInstanceID.NotFound. */
int core_instance_get(struct app *app, const struct core_caller *who, const char *id,
                      struct db_instance *ret, struct err *e);
/* The caller's instances (terminated ones for an hour after), in id order. */
int core_instance_each(struct app *app, const struct core_caller *who,
                       int (*fn)(void *ctx, const struct db_instance *i), void *ctx);
int core_instance_attachments(struct app *app, const char *id,
                              int (*fn)(void *ctx, const struct db_attachment *a), void *ctx);

/* EC2's reachability check for DescribeInstanceStatus: true once a running instance's guest has
 * written to its serial console (it booted), false before and when not running. */
bool core_instance_reachable(struct app *app, const struct db_instance *i);

/* Stop, start, reboot or terminate: every id is checked first (all or nothing), then each
 * changes state; fn gets each id with its previous and current state. */
enum core_instance_op { CORE_OP_STOP, CORE_OP_START, CORE_OP_REBOOT, CORE_OP_TERMINATE };
int core_instances_change(struct app *app, const struct core_caller *who, enum core_instance_op op,
                          const char *const *ids, size_t n, bool force,
                          void (*fn)(void *ctx, const char *id, const char *prev, const char *cur),
                          void *ctx, struct err *e);

/* ModifyInstanceAttribute: one change per call, as EC2 takes it. */
struct core_instance_mod {
    const char *instance_type; /* stopped instances only */
    const uint8_t *user_data;  /* stopped instances only; with has_user_data */
    size_t user_data_len;
    bool has_user_data;
    int disable_api_termination; /* -1: unchanged */
    int disable_api_stop;
    const char *shutdown_behavior;
    const char *dot_device; /* DeleteOnTermination of one attached volume */
    int dot;
};
int core_instance_modify(struct app *app, const struct core_caller *who, const char *id,
                         const struct core_instance_mod *m, struct err *e);

/* ModifyInstanceMetadataOptions: NULL / 0 leave a setting as it is.  Fills *ret (the row after
 * the change; free its data with db_instance_free_data). */
int core_instance_metadata_options(struct app *app, const struct core_caller *who, const char *id,
                                   const char *http_tokens, int64_t hop_limit,
                                   const char *http_endpoint, const char *metadata_tags,
                                   struct db_instance *ret, struct err *e);

/* The serial console: the most recent 64 KiB (`latest`) or the output since the instance last
 * started, appended to `out`. */
int core_console_output(struct app *app, const struct core_caller *who, const char *id, bool latest,
                        struct buf *out, struct err *e);

int core_volume_attach(struct app *app, const struct core_caller *who, const char *volume_id,
                       const char *instance_id, const char *device, struct db_attachment *ret,
                       struct err *e);
int core_volume_detach(struct app *app, const struct core_caller *who, const char *volume_id,
                       const char *instance_id, const char *device, bool force,
                       struct db_attachment *ret, struct err *e);

/* CreateImage: with reboot (the default) the guest is shut down through ACPI (forced after a
 * time limit), every volume snapshotted and the instance started again; with `no_reboot` the
 * volumes are snapshotted at one instant while it runs.  `bdms` add, override or suppress
 * (NoDevice) the instance's mappings. */
int core_image_create(struct app *app, const struct core_caller *who, const char *instance_id,
                      const char *name, const char *description, bool no_reboot,
                      const struct core_run_bdm *bdms, size_t nbdms,
                      const struct core_tag *image_tags, size_t nimage_tags,
                      const struct core_tag *snapshot_tags, size_t nsnapshot_tags, char ret_id[32],
                      struct err *e);
/* CreateSnapshots: every volume of an instance at one instant (ExcludeBootVolume, excluded
 * data volumes); fn gets each snapshot. */
int core_snapshots_create(struct app *app, const struct core_caller *who, const char *instance_id,
                          bool exclude_boot, const char *const *exclude, size_t nexclude,
                          const char *description, const struct core_tag *tags, size_t ntags,
                          bool copy_volume_tags, void (*fn)(void *ctx, const struct db_snapshot *s),
                          void *ctx, struct err *e);

/* ---- the instance metadata service (for `amid imds`) ---- */

/* The instance's NIC MAC address, "52:54:00:xx:xx:xx", derived from its id (stable for life). */
void core_instance_mac(const char *id, char out[18]);
/* An instance by id, whoever owns it (the metadata service answers its own guest). */
int core_imds_instance(struct app *app, const char *id, struct db_instance *ret);
/* An IMDSv2 token for the instance valid for `ttl_s` seconds, and its check (0 or -EINVAL). */
void core_imds_token(struct app *app, const char *instance_id, int64_t ttl_s, char out[96]);
int core_imds_token_check(struct app *app, const char *instance_id, const char *token);
/* The OpenSSH public key of the key pair an instance was launched with (as it was then, even if
 * the pair was deleted since); -ENOENT when launched without one. */
int core_imds_public_key(struct app *app, const struct db_instance *i, char *out, size_t outlen);

/* EBS block tokens: opaque, expiring proof that the holder listed block `idx` (with chunk
 * `chunk`, or zero bytes) of snapshot `id`.  core_block_token writes up to 64 characters. */
void core_block_token(struct app *app, const char *id, int64_t idx, const uint8_t chunk[32],
                      int64_t expiry_ms, char out[64]);
/* 0 when `token` is a valid, unexpired token for the block; -EINVAL otherwise. */
int core_block_token_check(struct app *app, const char *token, const char *id, int64_t idx,
                           const uint8_t chunk[32]);
#define CORE_BLOCK_TOKEN_TTL_MS (7LL * 24 * 3600 * 1000)

/* ---- block devices for NBD ---- */

struct core_bdev;

/* Opens volume or snapshot `name` as a block device: volumes read-write (one writer at a time:
 * -EBUSY; `probe` only looks and claims nothing), snapshots read-only (completed ones only).
 * -ENOENT for anything else.  Close with core_bdev_close. */
int core_bdev_open(struct app *app, const char *name, bool probe, struct core_bdev **ret);
struct blockdev *core_bdev_dev(struct core_bdev *b);
void core_bdev_close(struct app *app, struct core_bdev *b);
/* The Unix socket the daemon's NBD server listens on: DATA/run/nbd.sock. */
void core_nbd_socket(struct app *app, char *out, size_t outlen);

/* ---- maintenance: verify, gc, du ---- */

/* One finding of core_verify.  Strings are borrowed for the duration of the callback. */
struct core_problem {
    const char *kind;   /* "chunk-missing", "snapshot-map-missing", "orphan-map"... */
    bool warning;       /* a warning (orphaned files) rather than an error */
    const char *region; /* region name */
    const char *id;     /* the snapshot, volume, image or upload concerned */
    const char *chunk;  /* the chunk's id in hex, or NULL */
    const char *detail; /* one line for people */
};

struct core_verify_opts {
    bool read_data;   /* read and decode every referenced chunk (STORE_VERIFY) */
    unsigned threads; /* readers for read_data; 0: one per CPU */
};

struct core_verify_stats {
    uint64_t regions, snapshots, maps, volumes, uploads, images;
    uint64_t chunks;      /* distinct chunks referenced (each checked to exist) */
    uint64_t chunks_read; /* of those, read and decoded (read_data) */
    uint64_t bytes_read;  /* decoded bytes */
    uint64_t errors, warnings;
    bool volumes_opened; /* volumes were also opened with vol_open (no daemon was serving) */
};

/* Checks every region of the data directory: each completed snapshot has a map that loads and
 * whose chunks exist (and, with read_data, decode and match their ids); each pending EBS upload's
 * blocks exist; each volume's state is readable, its layer files and base map exist; images'
 * block device mappings name existing, completed snapshots; map files and volume directories
 * nothing needs are reported as warnings.  Safe while a daemon serves the directory (volumes are
 * opened with vol_open only when none does).  Calls `fn` once per problem; returns 0 when the
 * check ran (whatever it found: see ret->errors), or a negative errno with `e` set when it could
 * not. */
int core_verify(struct app *app, const struct core_verify_opts *o,
                void (*fn)(void *ctx, const struct core_problem *p), void *ctx,
                struct core_verify_stats *ret, struct err *e);

#define CORE_GC_DEFAULT_GRACE_MS (3600LL * 1000)

struct core_gc_opts {
    int64_t grace_ms; /* spare unreferenced chunks changed less than this before the scan */
    bool dry_run;     /* count what would be freed; delete nothing */
};

struct core_gc_stats {
    uint64_t chunks, bytes;        /* in the stores when scanned */
    uint64_t referenced;           /* chunks something refers to */
    uint64_t recent, recent_bytes; /* unreferenced but within the grace period: kept */
    uint64_t freed, freed_bytes;   /* deleted (or, dry run, that would be) */
    uint64_t maps_freed;           /* map files of deleted snapshots nothing needs any more */
    uint64_t skipped;              /* candidates used again during the run: kept */
};

/* Frees chunks nothing refers to: not a map file present (every snapshot's, in any state, and
 * those volumes and pending uploads still need after their snapshot was deleted), not a volume's
 * base, not an EBS upload's block.  Records the scan's start first and deletes only chunks whose
 * mtime is older than that minus the grace period (a put that deduplicates against a chunk
 * refreshes its mtime), and nothing at all when any part of the scan fails (-EIO with `e` set).
 * Map files of deleted snapshots that nothing needs any more go first, older than the grace
 * period too.  Safe while a daemon serves the directory. */
int core_gc(struct app *app, const struct core_gc_opts *o, struct core_gc_stats *ret,
            struct err *e);

struct core_du_snapshot {
    const char *id, *region, *owner, *state, *volume_id;
    uint64_t blocks;       /* non-zero blocks */
    uint64_t full_bytes;   /* blocks * 512 KiB */
    uint64_t chunks;       /* distinct chunks it references */
    uint64_t stored_bytes; /* their files' sizes */
    uint64_t unique_bytes; /* of which nothing else refers to: what deleting it frees */
    uint64_t shared_bytes; /* stored_bytes - unique_bytes */
    uint64_t freed_bytes;  /* what deleting it frees: unique_bytes, or 0 while a volume is
                              based on it (its map then stays) */
    uint64_t missing;      /* chunks it references that the store lacks */
};

struct core_du_image {
    const char *id, *region, *name, *state;
    const char *const *snapshots; /* its snapshots */
    size_t nsnapshots;
    uint64_t full_bytes;   /* sum over its snapshots */
    uint64_t stored_bytes; /* distinct chunks of its snapshots */
    uint64_t unique_bytes; /* chunks only its snapshots refer to */
    uint64_t shared_bytes;
};

struct core_du_totals {
    uint64_t snapshots, images;
    uint64_t full_bytes; /* sum over snapshots */
    uint64_t referenced_chunks, referenced_bytes;
    uint64_t store_chunks, store_bytes; /* what the stores hold */
    uint64_t unreferenced_bytes;        /* what gc could free (grace period aside) */
};

/* Storage per snapshot and image of `region` (every region when NULL), snapshots then images in
 * id order; either callback may be NULL.  Read-only; safe while a daemon serves. */
int core_du(struct app *app, const char *region,
            void (*snapshot_fn)(void *ctx, const struct core_du_snapshot *s),
            void (*image_fn)(void *ctx, const struct core_du_image *im), void *ctx,
            struct core_du_totals *ret, struct err *e);

/* ---- EBS direct, batched ---- */

/* Bulk writes into a pending EBS direct upload by an importer in this process: blocks are
 * staged and made durable together about every 64 MiB (chunks first, then their rows in one
 * transaction) instead of one store commit and one database commit per block.  A put that
 * returns 0 is staged, not yet durable: it is durable once a later commit point has passed —
 * one the batch reaches by itself, or core_ebs_batch_commit, which the caller runs before
 * core_ebs_complete.  A crash loses at most the staged blocks of an upload that was never
 * completed.  Puts may run on many threads at once.  After any failure every later call fails
 * with the first error (`e` says which; it must not be NULL). */
struct core_ebs_batch;

/* Checks that `snapshot_id` is the caller's pending EBS direct upload.  The caller frees *ret
 * with core_ebs_batch_free. */
int core_ebs_batch_new(struct app *app, const struct core_caller *who, const char *snapshot_id,
                       struct core_ebs_batch **ret, struct err *e);
/* Stages block `idx` (`n` must be CORE_BLOCK_SIZE).  `sha256` is the block's SHA-256 as the
 * caller computed it over `data` in this process: it names the chunk unchecked (PutSnapshotBlock
 * from a client goes through core_ebs_put, which checks the claim).  `data` is only read during
 * the call. */
int core_ebs_batch_put(struct core_ebs_batch *b, int64_t idx, const void *data, size_t n,
                       const uint8_t sha256[32], struct err *e);
/* Makes every block put before the call durable; waits for commit points other threads are
 * running.  Puts may go on afterwards. */
int core_ebs_batch_commit(struct core_ebs_batch *b, struct err *e);
/* Waits for running commits and discards what was staged since the last one (accepts NULL). */
void core_ebs_batch_free(struct core_ebs_batch *b);

/* ---- Keys (KMS) ----
 *
 * Symmetric keys per account and region (AWS KMS's SYMMETRIC_DEFAULT): 32 random bytes of key
 * material each, sealed under the master key's "kms" subkey, never leaving core.  A key is
 * named by its id (a UUID), its ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), an alias name
 * ("alias/NAME") or an alias ARN (arn:aws:kms:REGION:ACCOUNT:alias/NAME); another account's key
 * only by ARN, and used only when its key policy or a grant allows it.  Errors carry KMS's codes
 * (NotFoundException, DisabledException, KMSInvalidStateException, AccessDeniedException...),
 * except in the EC2 settings at the end, which carry EC2's.
 */

#define CORE_KMS_BLOB_MAX        128  /* a data key's ciphertext blob (core_kms_data_key_new) */
#define CORE_KMS_PLAINTEXT_MAX   4096 /* Encrypt's plaintext */
#define CORE_KMS_CIPHERTEXT_MAX  6144 /* any ciphertext blob */
#define CORE_KMS_GRANT_TOKEN_MAX 128  /* a grant token, with its NUL */

struct core_kms_key {
    char id[40];   /* UUID */
    char arn[128]; /* arn:aws:kms:REGION:ACCOUNT:key/ID */
    char account[16];
    char region[32];
    char state[24]; /* Enabled, Disabled, PendingDeletion ("" in core_ebs_encryption_defaults
                       for a default key that no longer exists) */
    bool aws_managed;
};

/* Resolves `ref` (key id, key ARN, alias name or alias ARN) to a key in who->region that
 * who->account may use for encryption/decryption (owner, key policy or grant, for both
 * kms:GenerateDataKey and kms:Decrypt, as EC2 uses keys: through the service
 * ec2.REGION.amazonaws.com), and checks it is Enabled.  KMS error codes in `e`
 * (NotFoundException, DisabledException, KMSInvalidStateException, AccessDeniedException).
 * "alias/aws/ebs" of the caller is created on first use.  Fills *ret. */
int core_kms_key_for_use(struct app *app, const struct core_caller *who, const char *ref,
                         struct core_kms_key *ret, struct err *e);
/* The account's alias/aws/ebs key in who->region (an AWS-managed key: users cannot disable,
 * delete or re-policy it, nor use it directly, only through EC2), created on first use.  Fills
 * *ret.  who->dry_run is not consulted (AWS too creates the key on first reference). */
int core_kms_ebs_key(struct app *app, const struct core_caller *who, struct core_kms_key *ret,
                     struct err *e);
/* A new 32-byte data key under key `key_arn` (any form core_kms_key_for_use takes) as who may
 * use it (kms:GenerateDataKey through EC2; the key Enabled): its plaintext in `plain` (the
 * caller wipes it with crypto_wipe) and its ciphertext blob in `blob` (at most
 * CORE_KMS_BLOB_MAX bytes; *bloblen is set).  The blob is in the key service's ciphertext format
 * with an empty encryption context.  who->dry_run is not consulted (nothing is written). */
int core_kms_data_key_new(struct app *app, const struct core_caller *who, const char *key_arn,
                          uint8_t plain[32], uint8_t *blob, size_t *bloblen, struct err *e);
/* Decrypts a blob from core_kms_data_key_new as who (kms:Decrypt through EC2; the key Enabled).
 * The blob must be under key `key_arn` (IncorrectKeyException otherwise) and intact
 * (InvalidCiphertextException).  Writes 32 bytes to `plain` (the caller wipes them).
 * who->dry_run is not consulted. */
int core_kms_data_key_open(struct app *app, const struct core_caller *who, const char *key_arn,
                           const uint8_t *blob, size_t bloblen, uint8_t plain[32], struct err *e);
/* EBS encryption by default for who's account in who->region, and the default key: the key
 * set with core_ebs_default_key_set, or alias/aws/ebs's key (created on first use).  A default
 * key deleted since it was set is returned by its ARN with an empty state. */
int core_ebs_encryption_defaults(struct app *app, const struct core_caller *who, bool *enabled,
                                 struct core_kms_key *key, struct err *e);

/* GetEbsEncryptionByDefault: whether EBS encryption by default is on (creates no key). */
int core_ebs_encryption_enabled(struct app *app, const struct core_caller *who, bool *ret,
                                struct err *e);
/* EC2's settings behind EnableEbsEncryptionByDefault / DisableEbsEncryptionByDefault (honours
 * dry_run: DryRunOperation). */
int core_ebs_encryption_set(struct app *app, const struct core_caller *who, bool enabled,
                            struct err *e);
/* ModifyEbsDefaultKmsKeyId (`ref` any form; the key must pass core_kms_key_for_use: its errors
 * become InvalidParameterValue) and, with `ref` NULL, ResetEbsDefaultKmsKeyId.  Writes what EC2
 * answers into `ret_arn`: the key's ARN, or after a reset the alias ARN of alias/aws/ebs. */
int core_ebs_default_key_set(struct app *app, const struct core_caller *who, const char *ref,
                             char ret_arn[160], struct err *e);
/* GetEbsDefaultKmsKeyId: the key ARN set, or the alias ARN of alias/aws/ebs by default. */
int core_ebs_default_key_name(struct app *app, const struct core_caller *who, char ret_arn[160],
                              struct err *e);

/* An encryption context: pairs of UTF-8 strings, any order (keys unique).  Ciphertexts bind
 * it in canonical order (sorted by key). */
struct core_kms_pair {
    const char *key;
    const char *value;
};
struct core_kms_context {
    const struct core_kms_pair *v;
    size_t n;
};

/* A key's metadata (DescribeKey). */
struct core_kms_meta {
    struct core_kms_key key;
    char description[8200];
    char key_usage[24];
    char key_spec[24];
    char origin[24];
    int64_t create_ms;
    int64_t deletion_ms; /* PendingDeletion only, else 0 */
};

struct core_kms_create {
    const char *policy;      /* NULL: the default policy (the owning account may do kms:*) */
    bool bypass_lockout;     /* BypassPolicyLockoutSafetyCheck */
    const char *description; /* NULL: "" */
    const char *key_usage;   /* NULL or ENCRYPT_DECRYPT */
    const char *key_spec;    /* NULL or SYMMETRIC_DEFAULT */
    const char *cmk_spec;    /* CustomerMasterKeySpec, the same (not both) */
    const char *origin;      /* NULL or AWS_KMS */
    const char *custom_key_store_id;
    const char *xks_key_id;
    int multi_region; /* -1 not given, 0, 1 (UnsupportedOperationException) */
    const struct core_tag *tags;
    size_t ntags;
};

/* Validates grant tokens (each must be one core_kms_grant_create issued): 0 or
 * InvalidGrantTokenException.  Grants take effect at once, so a valid token changes nothing. */
int core_kms_grant_tokens_check(struct app *app, const char *const *tokens, size_t n,
                                struct err *e);

/* CreateKey: a new Enabled customer key in who's account and region.  Unimplemented kinds
 * (asymmetric and HMAC key specs, imported or custom-store material, multi-Region keys) are
 * refused with UnsupportedOperationException (CustomKeyStoreNotFoundException for a custom key
 * store); a policy that does not parse or uses what amid does not evaluate with
 * MalformedPolicyDocumentException, as is one that would lock the caller out of
 * PutKeyPolicy (unless bypass_lockout); bad tags with TagException; more than 100000 keys per
 * account and region with LimitExceededException. */
int core_kms_create_key(struct app *app, const struct core_caller *who,
                        const struct core_kms_create *p, struct core_kms_meta *ret, struct err *e);
/* DescribeKey (any form; another account's key by ARN, with kms:DescribeKey from its policy or a
 * grant).  Describing the caller's alias/aws/ebs creates it, as on AWS. */
int core_kms_describe_key(struct app *app, const struct core_caller *who, const char *ref,
                          struct core_kms_meta *ret, struct err *e);
/* The caller's keys in its region (AWS-managed ones too) with ids after `after` (NULL: from the
 * start), in id order; fn returns non-zero to stop (returned). */
int core_kms_keys_each(struct app *app, const struct core_caller *who, const char *after,
                       int (*fn)(void *ctx, const struct core_kms_key *k), void *ctx);
/* EnableKey / DisableKey (key id or ARN of the caller's key). */
int core_kms_key_enable(struct app *app, const struct core_caller *who, const char *ref,
                        bool enable, struct err *e);
/* ScheduleKeyDeletion: `days` 7-30 (0: 30); the key is gone, with its aliases, grants and tags,
 * once the deployment clock passes its deletion date.  Fills *ret. */
int core_kms_key_schedule_deletion(struct app *app, const struct core_caller *who, const char *ref,
                                   int64_t days, struct core_kms_meta *ret, struct err *e);
/* CancelKeyDeletion: the key becomes Disabled. */
int core_kms_key_cancel_deletion(struct app *app, const struct core_caller *who, const char *ref,
                                 struct core_kms_key *ret, struct err *e);

/* Encrypt: at most CORE_KMS_PLAINTEXT_MAX bytes under the key `ref` (any form), binding `ctx`.
 * Writes the blob (at most n + 66 bytes, never more than CORE_KMS_CIPHERTEXT_MAX) and its length,
 * and the key's ARN.  With who->dry_run, checks and fails with DryRunOperation. */
int core_kms_encrypt(struct app *app, const struct core_caller *who, const char *ref,
                     const struct core_kms_context *ctx, const uint8_t *plain, size_t n,
                     uint8_t *blob, size_t *bloblen, char ret_arn[128], struct err *e);
/* Decrypt: the blob names its key; `ref` (NULL or any form) must name the same key
 * (IncorrectKeyException), `ctx` must be the one it was made with (InvalidCiphertextException).
 * Writes up to CORE_KMS_PLAINTEXT_MAX bytes to `plain` (the caller wipes them) and the key's ARN.
 * With who->dry_run and `ignore_ciphertext`, the blob is only read for its key id. */
int core_kms_decrypt(struct app *app, const struct core_caller *who, const char *ref,
                     const struct core_kms_context *ctx, const uint8_t *blob, size_t n,
                     bool ignore_ciphertext, uint8_t *plain, size_t *plen, char ret_arn[128],
                     struct err *e);
/* ReEncrypt: decrypts under the source key (kms:ReEncryptFrom) and encrypts under `dst_ref`
 * (kms:ReEncryptTo) with `dst_ctx`; the plaintext never leaves core. */
int core_kms_reencrypt(struct app *app, const struct core_caller *who, const char *src_ref,
                       const struct core_kms_context *src_ctx, const uint8_t *blob, size_t n,
                       bool ignore_ciphertext, const char *dst_ref,
                       const struct core_kms_context *dst_ctx, uint8_t *out, size_t *outlen,
                       char ret_src_arn[128], char ret_dst_arn[128], struct err *e);
/* GenerateDataKey (with `plain`) and GenerateDataKeyWithoutPlaintext (`plain` NULL): `nbytes`
 * (1-1024) random bytes encrypted under `ref` with `ctx`. */
int core_kms_generate_data_key(struct app *app, const struct core_caller *who, const char *ref,
                               const struct core_kms_context *ctx, size_t nbytes, uint8_t *plain,
                               uint8_t *blob, size_t *bloblen, char ret_arn[128], struct err *e);

/* Aliases: "alias/NAME" in who's account and region; the target is a key id or key ARN of the
 * caller's own key.  "alias/aws/..." is reserved (AccessDeniedException). */
int core_kms_alias_create(struct app *app, const struct core_caller *who, const char *name,
                          const char *target, struct err *e);
int core_kms_alias_update(struct app *app, const struct core_caller *who, const char *name,
                          const char *target, struct err *e);
int core_kms_alias_delete(struct app *app, const struct core_caller *who, const char *name,
                          struct err *e);
struct core_kms_alias {
    const char *name;
    const char *arn;
    const char *key_id; /* "" for a predefined AWS alias whose key does not exist yet */
    int64_t create_ms, update_ms;
};
/* The caller's aliases in its region with names after `after`, in name order, including the
 * predefined alias/aws/ebs (without a target until its key exists); only those of key
 * `key_ref` (id or ARN of the caller's key) when non-NULL.  fn returns non-zero to stop. */
int core_kms_aliases_each(struct app *app, const struct core_caller *who, const char *key_ref,
                          const char *after, int (*fn)(void *ctx, const struct core_kms_alias *a),
                          void *ctx, struct err *e);

/* Grants.  Operations are GrantOperation names valid for symmetric keys; constraints bind the
 * encryption context of the operations that take one. */
struct core_kms_grant_spec {
    const char *grantee;  /* 12-digit account id or arn:aws:iam::ACCOUNT:root */
    const char *retiring; /* NULL or the same forms */
    const char *name;     /* NULL or [a-zA-Z0-9:/_-]{1,256} */
    const char *const *ops;
    size_t nops;
    const struct core_kms_context *subset; /* EncryptionContextSubset, NULL when absent */
    const struct core_kms_context *equals; /* EncryptionContextEquals, NULL when absent */
};
/* CreateGrant on key `ref` (key id or ARN; another account's by ARN) as who may
 * (kms:CreateGrant by policy, or a grant with CreateGrant whose operations cover the new
 * one's).  A grant with the same name and parameters is returned again.  Writes the grant id
 * (65 bytes) and a token (CORE_KMS_GRANT_TOKEN_MAX). */
int core_kms_grant_create(struct app *app, const struct core_caller *who, const char *ref,
                          const struct core_kms_grant_spec *spec, char ret_id[72],
                          char ret_token[CORE_KMS_GRANT_TOKEN_MAX], struct err *e);
struct core_kms_grant {
    const char *key_id, *key_arn, *id, *name, *grantee, *retiring;
    const char *issuer; /* arn:aws:iam::ACCOUNT:root */
    int64_t create_ms;
    const char *const *ops;
    size_t nops;
    const struct core_kms_context *subset, *equals; /* NULL when absent */
};
/* ListGrants (kms:ListGrants): the grants of key `ref` with ids after `after`, in id order,
 * only `grant_id` / those of `grantee` when non-NULL.  fn returns non-zero to stop. */
int core_kms_grants_each(struct app *app, const struct core_caller *who, const char *ref,
                         const char *after, const char *grant_id, const char *grantee,
                         int (*fn)(void *ctx, const struct core_kms_grant *g), void *ctx,
                         struct err *e);
/* RevokeGrant (kms:RevokeGrant on the key). */
int core_kms_grant_revoke(struct app *app, const struct core_caller *who, const char *ref,
                          const char *grant_id, struct err *e);
/* RetireGrant by token, or by key ARN and grant id: by the grant's retiring principal, its
 * grantee when it holds RetireGrant, or the key's account. */
int core_kms_grant_retire(struct app *app, const struct core_caller *who, const char *token,
                          const char *ref, const char *grant_id, struct err *e);

/* GetKeyPolicy / PutKeyPolicy (policy name "default" or NULL).  *ret is a new string. */
int core_kms_policy_get(struct app *app, const struct core_caller *who, const char *ref,
                        const char *name, char **ret, struct err *e);
int core_kms_policy_put(struct app *app, const struct core_caller *who, const char *ref,
                        const char *name, const char *policy, bool bypass_lockout, struct err *e);

/* TagResource / UntagResource / ListResourceTags on the caller's key (TagException for bad
 * tags: the "aws:" prefix, characters outside KMS's set, more than 50 on a key). */
int core_kms_tag(struct app *app, const struct core_caller *who, const char *ref,
                 const struct core_tag *tags, size_t n, struct err *e);
int core_kms_untag(struct app *app, const struct core_caller *who, const char *ref,
                   const char *const *keys, size_t n, struct err *e);
int core_kms_tags_each(struct app *app, const struct core_caller *who, const char *ref,
                       const char *after, int (*fn)(void *ctx, const char *key, const char *value),
                       void *ctx, struct err *e);

#endif
