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

/* ---- tags: one store for every taggable resource ---- */

struct db_tag {
    char resource_id[64];
    char resource_type[32]; /* EC2's ResourceType value: "volume", "image"... */
    char key[516];          /* 128 characters of UTF-8: up to 512 bytes */
    char value[1028];       /* 256 characters of UTF-8: up to 1024 bytes */
};

/* Sets (inserting or replacing) one tag. */
int db_tag_put(struct db *db, const char *region, const char *owner, const char *resource_id,
               const char *resource_type, const char *key, const char *value);
/* Deletes a tag; when `value` is non-NULL only if the tag has that value.  Returns the number of
 * rows deleted. */
int db_tag_delete(struct db *db, const char *region, const char *owner, const char *resource_id,
                  const char *key, const char *value);
/* Deletes every tag of a resource (when the resource goes away). */
int db_tag_delete_all(struct db *db, const char *region, const char *resource_id);
/* Number of tags a resource has. */
int db_tag_count(struct db *db, const char *region, const char *resource_id);
/* Tags of one resource in key order. */
int db_tag_each_of(struct db *db, const char *region, const char *resource_id,
                   int (*fn)(void *ctx, const struct db_tag *t), void *ctx);
/* Every tag an owner holds in a region, ordered by resource id then key (DescribeTags). */
int db_tag_each_owned(struct db *db, const char *region, const char *owner,
                      int (*fn)(void *ctx, const struct db_tag *t), void *ctx);

#endif
