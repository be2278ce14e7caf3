/*
 * db_account.c — regions, availability zones, accounts and access keys.
 */
#include "db/db_int.h"

#include <errno.h>
#include <string.h>

int db_region_insert(struct db *db, const struct db_region *r)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO regions (name, store_path) VALUES (?1, ?2)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->store_path, -1, SQLITE_STATIC);
    return db_step_done(st);
}

int db_region_each(struct db *db, int (*fn)(void *ctx, const struct db_region *r), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT name, store_path FROM regions ORDER BY name");
    if (!st)
        return -EIO;
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_region r;
        db_copy_text(st, 0, r.name, sizeof(r.name));
        db_copy_text(st, 1, r.store_path, sizeof(r.store_path));
        out = fn(ctx, &r);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

int db_zone_insert(struct db *db, const struct db_zone *z)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO zones (name, zone_id, region) VALUES (?1, ?2, ?3)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, z->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, z->zone_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, z->region, -1, SQLITE_STATIC);
    return db_step_done(st);
}

int db_zone_each(struct db *db, const char *region, int (*fn)(void *ctx, const struct db_zone *z),
                 void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT name, zone_id, region FROM zones "
                                   "WHERE ?1 IS NULL OR region = ?1 ORDER BY name");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_zone z;
        db_copy_text(st, 0, z.name, sizeof(z.name));
        db_copy_text(st, 1, z.zone_id, sizeof(z.zone_id));
        db_copy_text(st, 2, z.region, sizeof(z.region));
        out = fn(ctx, &z);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

#define ACCOUNT_COLS "id, name, alias, created_ms, system"

static void account_row(sqlite3_stmt *st, struct db_account *a)
{
    db_copy_text(st, 0, a->id, sizeof(a->id));
    db_copy_text(st, 1, a->name, sizeof(a->name));
    db_copy_text(st, 2, a->alias, sizeof(a->alias));
    a->created_ms = sqlite3_column_int64(st, 3);
    a->system = sqlite3_column_int(st, 4) != 0;
}

static int account_one(sqlite3_stmt *st, struct db_account *ret)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        account_row(st, ret);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_account_insert(struct db *db, const struct db_account *a)
{
    sqlite3_stmt *st =
        db_stmt(db, "INSERT INTO accounts (" ACCOUNT_COLS ") VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, a->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, a->alias, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, a->created_ms);
    sqlite3_bind_int(st, 5, a->system);
    return db_step_done(st);
}

int db_account_get(struct db *db, const char *id, struct db_account *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    return account_one(st, ret);
}

int db_account_by_name(struct db *db, const char *name, struct db_account *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ACCOUNT_COLS " FROM accounts WHERE name = ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    return account_one(st, ret);
}

int db_account_first(struct db *db, struct db_account *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ACCOUNT_COLS " FROM accounts WHERE system = 0 "
                                   "ORDER BY created_ms, rowid LIMIT 1");
    if (!st)
        return -EIO;
    return account_one(st, ret);
}

int db_account_each(struct db *db, int (*fn)(void *ctx, const struct db_account *a), void *ctx)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY created_ms, rowid");
    if (!st)
        return -EIO;
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_account a;
        account_row(st, &a);
        out = fn(ctx, &a);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

#define KEY_COLS "id, account_id, secret_enc, label, created_ms"

static void key_row(sqlite3_stmt *st, struct db_key *k)
{
    db_copy_text(st, 0, k->id, sizeof(k->id));
    db_copy_text(st, 1, k->account_id, sizeof(k->account_id));
    int n = sqlite3_column_bytes(st, 2);
    if (n < 0 || (size_t)n > sizeof(k->secret_enc))
        n = 0; /* cannot be written by us; decryption of an empty blob then fails */
    memcpy(k->secret_enc, sqlite3_column_blob(st, 2), (size_t)n);
    k->secret_enc_len = (size_t)n;
    db_copy_text(st, 3, k->label, sizeof(k->label));
    k->created_ms = sqlite3_column_int64(st, 4);
}

int db_key_insert(struct db *db, const struct db_key *k)
{
    sqlite3_stmt *st =
        db_stmt(db, "INSERT INTO access_keys (" KEY_COLS ") VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->account_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, k->secret_enc, (int)k->secret_enc_len, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, k->label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, k->created_ms);
    return db_step_done(st);
}

int db_key_get(struct db *db, const char *id, struct db_key *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEY_COLS " FROM access_keys WHERE id = ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        key_row(st, ret);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_key_delete(struct db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM access_keys WHERE id = ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = db_step_done(st);
    if (rc < 0)
        return rc;
    return sqlite3_changes(db->h) ? 0 : -ENOENT;
}

int db_key_each(struct db *db, const char *account_id, int (*fn)(void *ctx, const struct db_key *k),
                void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEY_COLS " FROM access_keys WHERE ?1 IS NULL OR "
                                   "account_id = ?1 ORDER BY created_ms, rowid");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, account_id, -1, SQLITE_STATIC);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_key k;
        key_row(st, &k);
        out = fn(ctx, &k);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}
