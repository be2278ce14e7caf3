/*
 * db.h — the metadata database: SQLite in WAL mode, one file per deployment.
 *
 * This module owns the schema, its numbered migrations and every SQL string in amid; nothing
 * above it writes SQL.  A `struct db` is one connection and is used by one thread at a time;
 * the daemon keeps a small pool of them (core).  Row structs are plain data copied out of SQLite,
 * owned by the caller.
 *
 * Errors: functions return 0 (or a count), -ENOENT when a row is missing, -EEXIST on a
 * uniqueness conflict, -EBUSY when the database stayed locked past the busy timeout, -EPROTO for
 * a database written by a newer amid, and -EIO for anything else SQLite reports.
 */
#ifndef AMID_DB_H
#define AMID_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct db;

/* The schema version this build writes and understands. */
int db_schema_version(void);

/* Opens (creating when `create`) the database at `path`, in WAL mode with synchronous=FULL,
 * foreign keys on and a busy timeout, and brings its schema up to date.  Returns -EPROTO, and
 * opens nothing, when the file's schema is newer than this build's.  On success *ret is a new
 * connection the caller closes with db_close. */
int db_open(const char *path, bool create, struct db **ret);
/* Closes the connection (accepts NULL). */
void db_close(struct db *db);
/* The schema version stored in the file at `path` without migrating it; -ENOENT if absent. */
int db_file_version(const char *path, int *ret_version);

/* The connection's view of how often the database changed: a value that differs from the one an
 * earlier call on the same connection returned whenever another connection, in this process or
 * another, committed in between (SQLite's PRAGMA data_version, a counter: values only grow).  A
 * connection used only for this so tells apart every state of the database.  0 or a negative
 * errno. */
int db_data_version(struct db *db, uint64_t *out);

/* Transactions.  db_begin takes the write lock at once (BEGIN IMMEDIATE), so two writers never
 * deadlock upgrading a read lock.  Nesting is not supported. */
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);

/* ---- settings: small deployment-wide values ---- */

/* Copies the value of `key` into `out` (NUL-terminated, truncated to `outlen`).  -ENOENT. */
int db_setting_get(struct db *db, const char *key, char *out, size_t outlen);
int db_setting_set(struct db *db, const char *key, const char *value);

/* ---- regions and availability zones ---- */

struct db_region {
    char name[32];
    char store_path[1024]; /* chunk store directory; relative paths are under the data dir */
};

struct db_zone {
    char name[40];    /* us-east-1a */
    char zone_id[24]; /* use1-az1 */
    char region[32];
};

int db_region_insert(struct db *db, const struct db_region *r);
/* Calls `fn` for each region in name order; stops early and returns fn's value when non-zero. */
int db_region_each(struct db *db, int (*fn)(void *ctx, const struct db_region *r), void *ctx);
int db_zone_insert(struct db *db, const struct db_zone *z);
int db_zone_each(struct db *db, const char *region, int (*fn)(void *ctx, const struct db_zone *z),
                 void *ctx);

/* ---- accounts and access keys ---- */

struct db_account {
    char id[16]; /* 12 digits */
    char name[72];
    char alias[72]; /* owner alias shown as ImageOwnerAlias, "" when none */
    int64_t created_ms;
    bool system; /* owns the system catalogue; cannot sign requests */
};

struct db_key {
    char id[24]; /* AKIA + 16 */
    char account_id[16];
    uint8_t secret_enc[96]; /* the secret sealed under the master key's secrets subkey */
    size_t secret_enc_len;
    char label[72];
    int64_t created_ms;
};

int db_account_insert(struct db *db, const struct db_account *a);
int db_account_get(struct db *db, const char *id, struct db_account *ret);
int db_account_by_name(struct db *db, const char *name, struct db_account *ret);
int db_account_each(struct db *db, int (*fn)(void *ctx, const struct db_account *a), void *ctx);
/* The oldest non-system account (the one `amid init` made). */
int db_account_first(struct db *db, struct db_account *ret);

int db_key_insert(struct db *db, const struct db_key *k);
int db_key_get(struct db *db, const char *id, struct db_key *ret);
int db_key_delete(struct db *db, const char *id);
/* Keys of one account (all accounts when `account_id` is NULL), oldest first. */
int db_key_each(struct db *db, const char *account_id, int (*fn)(void *ctx, const struct db_key *k),
                void *ctx);

/* ---- tags: one store for every taggable resource ----
 * Tags belong to the account that put them (`owner`, which for a resource of one's own is its
 * owner): an account may tag an image or snapshot shared with it, for itself alone. */

struct db_tag {
    char resource_id[64];
    char resource_type[32]; /* EC2's ResourceType value: "volume", "image"... */
    char key[516];          /* 128 characters of UTF-8: up to 512 bytes */
    char value[1028];       /* 256 characters of UTF-8: up to 1024 bytes */
};

/* Sets (inserting or replacing) `owner`'s tag `key` on a resource. */
int db_tag_put(struct db *db, const char *region, const char *owner, const char *resource_id,
               const char *resource_type, const char *key, const char *value);
/* Deletes `owner`'s tag `key` on a resource (every one of its tags when `key` is NULL); when
 * `value` is non-NULL only if the tag has that value.  Returns the number of rows deleted. */
int db_tag_delete(struct db *db, const char *region, const char *owner, const char *resource_id,
                  const char *key, const char *value);
/* Deletes every tag of a resource, every account's (when the resource goes away). */
int db_tag_delete_all(struct db *db, const char *region, const char *resource_id);
/* Number of tags `owner` put on a resource. */
int db_tag_count(struct db *db, const char *region, const char *owner, const char *resource_id);
/* The tags `owner` put on one resource, in key order. */
int db_tag_each_of(struct db *db, const char *region, const char *owner, const char *resource_id,
                   int (*fn)(void *ctx, const struct db_tag *t), void *ctx);
/* The first resource of `type` an owner tagged key=value in a region (by id); -ENOENT. */
int db_tag_find(struct db *db, const char *region, const char *owner, const char *type,
                const char *key, const char *value, char *ret_id, size_t idlen);
/* Every tag an owner holds in a region, ordered by resource id then key (DescribeTags). */
int db_tag_each_owned(struct db *db, const char *region, const char *owner,
                      int (*fn)(void *ctx, const struct db_tag *t), void *ctx);

/* ---- volumes ---- */

/* The largest wrapped data key a volume or snapshot row keeps (a KMS ciphertext blob). */
#define DB_DATA_KEY_MAX 256

struct db_volume {
    char id[32];
    char region[32];
    char owner[16];
    char zone[40];
    int64_t size_gib;
    char type[16];
    int64_t iops;
    int64_t throughput;
    char snapshot_id[32]; /* "" when created empty */
    char state[16];
    int64_t create_ms;
    bool encrypted;
    char kms_key_id[160];
    bool multi_attach;
    int64_t init_rate;
    uint8_t data_key[DB_DATA_KEY_MAX]; /* encrypted: the wrapped data key of its chunks */
    size_t data_key_len;
};

int db_volume_insert(struct db *db, const struct db_volume *v);
/* Rewrites every mutable column of the row with id v->id. */
int db_volume_update(struct db *db, const struct db_volume *v);
int db_volume_get(struct db *db, const char *id, struct db_volume *ret);
int db_volume_delete(struct db *db, const char *id);
/* Volumes in a region (of one owner when `owner` is non-NULL), in id order. */
int db_volume_each(struct db *db, const char *region, const char *owner,
                   int (*fn)(void *ctx, const struct db_volume *v), void *ctx);
/* Number of volumes made from a snapshot (any state). */
int db_volume_count_from(struct db *db, const char *snapshot_id);

/* ---- snapshots ---- */

struct db_snapshot {
    char id[32];
    char region[32];
    char owner[16];
    char volume_id[32];
    int64_t volume_size_gib;
    char state[16]; /* pending, completed, error */
    char state_message[256];
    int64_t progress; /* percent */
    int64_t start_ms;
    int64_t complete_ms;
    char description[1024];
    bool encrypted;
    char kms_key_id[160];
    char source[16];    /* volume, ebs, copy */
    char parent_id[32]; /* ebs ParentSnapshotId, or the source of a copy */
    int64_t full_bytes;
    int64_t stored_bytes;
    int64_t blocks;
    uint8_t linear[32];
    bool has_linear;
    int64_t expiry_ms;                 /* ebs: a pending upload idle past this is cancelled */
    int64_t timeout_min;               /* ebs: the idle timeout StartSnapshot asked for */
    char source_region[32];            /* copy: the region of parent_id */
    uint8_t data_key[DB_DATA_KEY_MAX]; /* encrypted: the wrapped data key of its chunks */
    size_t data_key_len;
};

int db_snapshot_insert(struct db *db, const struct db_snapshot *s);
int db_snapshot_update(struct db *db, const struct db_snapshot *s);
int db_snapshot_get(struct db *db, const char *id, struct db_snapshot *ret);
int db_snapshot_delete(struct db *db, const char *id);
/* Snapshots of a region in id order: with `owner`, only that owner's; with `visible_to`, those
 * the account owns or may create volumes from (a permission for it or for "all"); with
 * neither, all of them. */
int db_snapshot_each(struct db *db, const char *region, const char *owner, const char *visible_to,
                     int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx);
/* Every snapshot in every region in a given state (recovery after a restart). */
int db_snapshot_each_state(struct db *db, const char *state,
                           int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx);

/* createVolumePermission: grantee is an account id or "all". */
int db_snapshot_perm_add(struct db *db, const char *snapshot_id, const char *grantee);
int db_snapshot_perm_remove(struct db *db, const char *snapshot_id, const char *grantee);
int db_snapshot_perm_clear(struct db *db, const char *snapshot_id);
/* 0 when `grantee` (or "all", when `or_all`) is granted, -ENOENT otherwise. */
int db_snapshot_perm_has(struct db *db, const char *snapshot_id, const char *grantee, bool or_all);
int db_snapshot_perm_each(struct db *db, const char *snapshot_id,
                          int (*fn)(void *ctx, const char *grantee), void *ctx);

/* ---- EBS direct uploads in progress ---- */

/* Records (or replaces) block `idx` of a pending snapshot: its chunk id (NULL for all-zero) and
 * the SHA-256 of its plaintext. */
int db_ebs_block_put(struct db *db, const char *snapshot_id, int64_t idx, const uint8_t *chunk,
                     const uint8_t sha256[32]);
int db_ebs_block_count(struct db *db, const char *snapshot_id);
int db_ebs_block_each(struct db *db, const char *snapshot_id,
                      int (*fn)(void *ctx, int64_t idx, const uint8_t *chunk,
                                const uint8_t *sha256),
                      void *ctx);
int db_ebs_block_clear(struct db *db, const char *snapshot_id);
/* Every chunk a pending upload refers to (garbage collection keeps them). */
int db_ebs_chunk_each(struct db *db, int (*fn)(void *ctx, const uint8_t *chunk), void *ctx);

/* ---- idempotency (ClientToken) ---- */

/* Finds the resource an earlier call with this token made; copies the hash of its parameters
 * and the resource id out.  -ENOENT when the token is new. */
int db_idem_get(struct db *db, const char *account, const char *region, const char *op,
                const char *token, char *params, size_t plen, char *resource, size_t rlen);
int db_idem_put(struct db *db, const char *account, const char *region, const char *op,
                const char *token, const char *params, const char *resource, int64_t now_ms);

/* ---- volume modifications ---- */

/* Records a modification of a volume, its JSON body as core built it. */
int db_volmod_put(struct db *db, const char *volume_id, int64_t start_ms, int64_t end_ms,
                  const char *state, const char *body);
/* The modifications of a volume (all volumes when NULL), newest first, as (volume, body). */
int db_volmod_each(struct db *db, const char *volume_id,
                   int (*fn)(void *ctx, const char *volume_id, const char *body), void *ctx);

/* ---- images ---- */

struct db_image {
    char id[32];
    char region[32];
    char owner[16];
    char name[520];
    char description[1024];
    char architecture[16];
    char root_device_name[64];
    char virtualization_type[16];
    char boot_mode[24];
    bool ena_support;
    char sriov_net_support[16];
    char imds_support[16];
    char tpm_support[16];
    char state[16]; /* pending, available, failed, disabled, deregistered */
    char state_reason_code[64];
    char state_reason_message[256];
    int64_t creation_ms;
    int64_t deprecation_ms;      /* 0: not deprecated */
    char protection[32];         /* "", "with-cooldown", "without-cooldown" */
    int64_t protection_until_ms; /* cooldown after disabling protection */
    int64_t last_launched_ms;
    char source_image_id[32];
    char source_region[32];
    char source_instance_id[32];
    int64_t deregistered_ms;
    bool public; /* a launch permission for "all" (kept in step by db_image_perm_*) */
};

struct db_bdm {
    char device_name[64];
    char kind[16]; /* ebs, ephemeral, none */
    char virtual_name[32];
    char snapshot_id[32];
    int64_t volume_size;
    char volume_type[16];
    int64_t iops;
    int64_t throughput;
    bool delete_on_termination;
    bool encrypted;
    char kms_key_id[160];
};

int db_image_insert(struct db *db, const struct db_image *im);
int db_image_update(struct db *db, const struct db_image *im);
int db_image_get(struct db *db, const char *id, struct db_image *ret);
/* The image of an owner with a name in a region (deregistered ones aside); -ENOENT. */
int db_image_by_name(struct db *db, const char *region, const char *owner, const char *name,
                     struct db_image *ret);

/* The most patterns a db_image_query narrows one column by; more are not pushed down. */
#define DB_IMAGE_PATTERNS 4

/* Which images db_image_each walks, in id order, all in one region, after id `after`.
 *
 * The pattern lists narrow the walk inside SQL: they are EC2 filter wildcards (`*` any run, `?`
 * any one byte, `\*` `\?` `\\` literal, as str_wildcard_match reads them), a row passing when its
 * column matches one of the list's patterns (up to DB_IMAGE_PATTERNS; unused entries NULL; an
 * all-NULL list narrows nothing).  They only narrow: every row they let through still has to be
 * checked by the caller, and a list db cannot express exactly narrows less, never more.  Ids,
 * names (core validates them) and states are ASCII, where one byte is one character. */
struct db_image_query {
    const char *region;
    const char *owner;      /* only this owner's, when non-NULL */
    const char *visible_to; /* owned by, shared with, or public to this account */
    const char *after;      /* ids greater than this */
    bool public_only;       /* only public images */
    const char *granted_to; /* only images with an explicit launch permission for this */
    bool live;              /* leave deregistered images out */
    size_t limit;           /* at most this many rows (0: no limit) */
    const char *ids[DB_IMAGE_PATTERNS];    /* image id patterns */
    const char *names[DB_IMAGE_PATTERNS];  /* name patterns */
    const char *states[DB_IMAGE_PATTERNS]; /* state patterns */
};
/* Calls `fn` with each image `q` selects, in id order, until it returns non-zero (which is
 * returned).  The image is valid during the call only.  Returns 0 or a negative errno. */
int db_image_each(struct db *db, const struct db_image_query *q,
                  int (*fn)(void *ctx, const struct db_image *im), void *ctx);
/* Images in any region in a state (pending images wait for their snapshots). */
int db_image_each_state(struct db *db, const char *state,
                        int (*fn)(void *ctx, const struct db_image *im), void *ctx);

int db_bdm_add(struct db *db, const char *image_id, int idx, const struct db_bdm *b);
int db_bdm_each(struct db *db, const char *image_id, int (*fn)(void *ctx, const struct db_bdm *b),
                void *ctx);
/* The mappings of `n` images in a few queries (a page of DescribeImages) rather than one each:
 * `fn` gets every mapping with its image's id, each image's mappings in order, the images in no
 * set order.  Stops when `fn` returns non-zero (returned); 0 or a negative errno. */
int db_bdm_each_of(struct db *db, const char *const *ids, size_t n,
                   int (*fn)(void *ctx, const char *image_id, const struct db_bdm *b), void *ctx);
/* The tags `owner` put on `n` images of a region, in a few queries, by image id then key; as
 * db_bdm_each_of. */
int db_image_tags_each(struct db *db, const char *region, const char *owner, const char *const *ids,
                       size_t n, int (*fn)(void *ctx, const struct db_tag *t), void *ctx);
/* Images (not deregistered) whose mappings name a snapshot, as ids into `fn`. */
int db_bdm_images_of_snapshot(struct db *db, const char *snapshot_id,
                              int (*fn)(void *ctx, const char *image_id), void *ctx);

/* Launch permissions: grantee is an account id or "all" (which also sets images.public). */
int db_image_perm_add(struct db *db, const char *image_id, const char *grantee);
int db_image_perm_remove(struct db *db, const char *image_id, const char *grantee);
int db_image_perm_clear(struct db *db, const char *image_id);
int db_image_perm_has(struct db *db, const char *image_id, const char *grantee);
int db_image_perm_each(struct db *db, const char *image_id,
                       int (*fn)(void *ctx, const char *grantee), void *ctx);

/* ---- per-account settings ---- */

int db_account_setting_get(struct db *db, const char *account, const char *region, const char *key,
                           char *out, size_t outlen);
int db_account_setting_set(struct db *db, const char *account, const char *region, const char *key,
                           const char *value);

/* ---- key pairs ---- */

struct db_keypair {
    char id[32];
    char region[32];
    char owner[16];
    char name[260];
    char type[16]; /* rsa, ed25519 */
    char fingerprint[128];
    char public_key[1024]; /* OpenSSH text: "ssh-rsa AAAA..." */
    int64_t create_ms;
};

int db_keypair_insert(struct db *db, const struct db_keypair *k);
int db_keypair_get(struct db *db, const char *id, struct db_keypair *ret);
int db_keypair_by_name(struct db *db, const char *region, const char *owner, const char *name,
                       struct db_keypair *ret);
int db_keypair_delete(struct db *db, const char *id);
int db_keypair_each(struct db *db, const char *region, const char *owner,
                    int (*fn)(void *ctx, const struct db_keypair *k), void *ctx);

/* ---- instances ---- */

struct db_instance {
    char id[32];
    char region[32];
    char owner[16];
    char reservation_id[32];
    char image_id[32];
    char instance_type[32];
    char zone[40];
    char state[16]; /* pending running stopping stopped shutting-down terminated */
    char state_reason_code[64];
    char state_reason_message[256];
    char transition_reason[256];
    int64_t launch_ms;
    char key_name[260];
    uint8_t *user_data; /* owned by the row struct's user: see db_instance_free_data */
    size_t user_data_len;
    char client_token[72];
    int64_t launch_index;
    char private_ip[48];
    char http_tokens[16];
    char http_endpoint[16];
    int64_t hop_limit;
    char metadata_tags[16];
    char architecture[16];
    char root_device_name[64];
    char boot_mode[24];
    bool ena_support;
    bool disable_api_termination;
    bool disable_api_stop;
    char shutdown_behavior[16];
    int64_t terminated_ms;
    char accel[8];
    char run_dir[512];
    char public_key[1024]; /* the key pair's public key at launch (the metadata service's) */
};

struct db_attachment {
    char instance_id[32];
    char volume_id[32];
    char device_name[64];
    int64_t attach_ms;
    bool delete_on_termination;
    char state[16]; /* attaching attached detaching */
    int64_t boot_index;
};

/* Rows read with db_instance_get/each carry user data in malloc'd memory, freed here (the
 * callbacks of db_instance_each get a row whose user data is freed after they return). */
void db_instance_free_data(struct db_instance *i);
int db_instance_insert(struct db *db, const struct db_instance *i);
int db_instance_update(struct db *db, const struct db_instance *i);
int db_instance_get(struct db *db, const char *id, struct db_instance *ret);
/* Instances in a region (of one owner when `owner`), in id order; `region` NULL: all regions. */
int db_instance_each(struct db *db, const char *region, const char *owner,
                     int (*fn)(void *ctx, const struct db_instance *i), void *ctx);

int db_attachment_insert(struct db *db, const struct db_attachment *a);
int db_attachment_update(struct db *db, const struct db_attachment *a);
int db_attachment_delete(struct db *db, const char *volume_id);
int db_attachment_of_volume(struct db *db, const char *volume_id, struct db_attachment *ret);
/* An instance's attachments in boot order then device name. */
int db_attachment_each(struct db *db, const char *instance_id,
                       int (*fn)(void *ctx, const struct db_attachment *a), void *ctx);

/* ---- keys (KMS) ---- */

#define DB_KMS_MATERIAL_MAX    64   /* wrapped key material: 32 bytes plus the AEAD overhead */
#define DB_KMS_DESCRIPTION_MAX 8192 /* bytes */
#define DB_KMS_CONSTRAINTS_MAX 8192 /* bytes of a grant's constraints (JSON text) */

struct db_kms_key {
    char id[40]; /* a UUID */
    char region[32];
    char owner[16];
    char description[DB_KMS_DESCRIPTION_MAX + 1];
    char key_usage[24]; /* ENCRYPT_DECRYPT */
    char key_spec[24];  /* SYMMETRIC_DEFAULT */
    char origin[24];    /* AWS_KMS */
    char manager[16];   /* CUSTOMER or AWS */
    char state[24];     /* Enabled, Disabled, PendingDeletion */
    int64_t create_ms;
    int64_t deletion_ms;                   /* PendingDeletion: when the key goes; 0 otherwise */
    int64_t pending_days;                  /* PendingDeletion: the window asked for */
    uint8_t material[DB_KMS_MATERIAL_MAX]; /* the key material, sealed by core */
    size_t material_len;
};

/* Inserts a key with its key policy (JSON text). */
int db_kms_key_insert(struct db *db, const struct db_kms_key *k, const char *policy);
int db_kms_key_get(struct db *db, const char *id, struct db_kms_key *ret);
/* Rewrites the mutable columns of key k->id: description, state, deletion_ms, pending_days. */
int db_kms_key_update(struct db *db, const struct db_kms_key *k);
/* Number of keys an owner has in a region. */
int db_kms_key_count(struct db *db, const char *region, const char *owner);
/* An owner's keys in a region with ids greater than `after` (all when NULL), in id order; stops
 * early and returns fn's value when non-zero. */
int db_kms_key_each(struct db *db, const char *region, const char *owner, const char *after,
                    int (*fn)(void *ctx, const struct db_kms_key *k), void *ctx);
/* Deletes every key whose deletion date is at or before `now_ms`, with its aliases, grants and
 * tags.  Returns the number of keys deleted. */
int db_kms_key_purge(struct db *db, int64_t now_ms);
/* A key's policy as a new string (caller frees); -ENOENT. */
int db_kms_policy_get(struct db *db, const char *key_id, char **ret);
int db_kms_policy_set(struct db *db, const char *key_id, const char *policy);

struct db_kms_alias {
    char region[32];
    char owner[16];
    char name[264]; /* "alias/..." */
    char key_id[40];
    int64_t create_ms;
    int64_t update_ms;
};

int db_kms_alias_insert(struct db *db, const struct db_kms_alias *a);
int db_kms_alias_get(struct db *db, const char *region, const char *owner, const char *name,
                     struct db_kms_alias *ret);
/* Points an alias at another key; -ENOENT when the alias does not exist. */
int db_kms_alias_retarget(struct db *db, const char *region, const char *owner, const char *name,
                          const char *key_id, int64_t now_ms);
int db_kms_alias_delete(struct db *db, const char *region, const char *owner, const char *name);
/* An owner's aliases in a region (only those of key `key_id` when non-NULL) with names greater
 * than `after` (all when NULL), in name order; stops early as db_kms_key_each. */
int db_kms_alias_each(struct db *db, const char *region, const char *owner, const char *key_id,
                      const char *after, int (*fn)(void *ctx, const struct db_kms_alias *a),
                      void *ctx);

struct db_kms_grant {
    char id[72]; /* 64 hex digits */
    char key_id[40];
    char name[264];
    char issuer[16];      /* the account that created the grant */
    char grantee[264];    /* principal: account id or arn:aws:iam::ACCOUNT:root */
    char retiring[264];   /* "" when none */
    char operations[512]; /* comma-separated GrantOperation names */
    char constraints[DB_KMS_CONSTRAINTS_MAX + 1]; /* JSON text, "" when none */
    int64_t create_ms;
};

int db_kms_grant_insert(struct db *db, const struct db_kms_grant *g);
int db_kms_grant_get(struct db *db, const char *id, struct db_kms_grant *ret);
int db_kms_grant_delete(struct db *db, const char *id);
/* Number of grants on a key (for one grantee when `grantee` is non-NULL). */
int db_kms_grant_count(struct db *db, const char *key_id, const char *grantee);
/* A key's grants with ids greater than `after` (all when NULL), in id order; stops early as
 * db_kms_key_each. */
int db_kms_grant_each(struct db *db, const char *key_id, const char *after,
                      int (*fn)(void *ctx, const struct db_kms_grant *g), void *ctx);

/* A key's tags. */
int db_kms_tag_put(struct db *db, const char *key_id, const char *key, const char *value);
/* Returns the number of rows deleted (0 or 1). */
int db_kms_tag_delete(struct db *db, const char *key_id, const char *key);
int db_kms_tag_count(struct db *db, const char *key_id);
/* A key's tags with tag keys greater than `after` (all when NULL), in key order; stops early as
 * db_kms_key_each. */
int db_kms_tag_each(struct db *db, const char *key_id, const char *after,
                    int (*fn)(void *ctx, const char *key, const char *value), void *ctx);

#endif
