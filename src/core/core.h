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

#include "util/util.h"

struct app;
struct db;

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
 * under DIR/regions/), the endpoint setting from `listen`, and a first account named "default"
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

/* Resolves an access key id for request signing: copies its account id and the plaintext
 * secret (NUL-terminated) out.  -ENOENT for an unknown key or a system account's key.  The
 * caller wipes the secret as soon as the signature is checked. */
int core_key_secret(struct app *app, const char *key_id, char account_id[16], char secret[48]);

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
/* The tags of one resource, by key. */
int core_tags_of(struct app *app, struct db *db, const char *region, const char *resource_id,
                 int (*fn)(void *ctx, const struct core_tag_row *t), void *ctx);

#endif
