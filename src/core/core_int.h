/*
 * core_int.h — the app context and helpers shared by the files of src/core/.
 */
#ifndef AMID_CORE_INT_H
#define AMID_CORE_INT_H

#include "core/core.h"
#include "crypto/crypto.h"
#include "db/db.h"

#include <pthread.h>
#include <stdatomic.h>

#define CORE_DB_POOL 32

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

    _Atomic int64_t clock_offset_ms;
    _Atomic int64_t clock_checked_us; /* when the offset was last read from the database */
};

/* Runs `fn` inside a write transaction on a pooled connection; commits when it returns 0,
 * rolls back otherwise, and returns its value. */
int core_tx(struct app *app, int (*fn)(struct app *app, struct db *db, void *ctx), void *ctx);

/* Inserts account `name` and its first key inside the caller's transaction. */
int core_account_insert_tx(struct app *app, struct db *db, const char *name, struct core_creds *ret,
                           struct err *e);

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
/* Whether `id` is `prefix` followed by 8 or 17 lower-case hex digits, as EC2 ids are. */
bool core_id_valid(const char *id, const char *prefix);

#endif
