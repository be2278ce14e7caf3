/*
 * db_kms.c — rows for the key service: keys (their sealed material and key policy), aliases,
 * grants and key tags.  Aliases, grants and tags go with their key (ON DELETE CASCADE), so
 * purging the keys whose deletion date has passed removes everything that named them.
 */
#include "db/db_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BIND_TEXT(st, i, s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)

static int one_or_enoent(int rc)
{
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

static int count_of(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? n : (db_rc(rc) < 0 ? db_rc(rc) : -EIO);
}

static int changes_or(struct db *db, int rc)
{
    return rc < 0 ? rc : sqlite3_changes(db->h);
}

/* ---- keys ---- */

#define KEY_COLS                                                                               \
    "id, region, owner, description, key_usage, key_spec, origin, manager, state, create_ms, " \
    "deletion_ms, pending_days, material"

static void key_row(sqlite3_stmt *st, struct db_kms_key *k)
{
    db_copy_text(st, 0, k->id, sizeof(k->id));
    db_copy_text(st, 1, k->region, sizeof(k->region));
    db_copy_text(st, 2, k->owner, sizeof(k->owner));
    db_copy_text(st, 3, k->description, sizeof(k->description));
    db_copy_text(st, 4, k->key_usage, sizeof(k->key_usage));
    db_copy_text(st, 5, k->key_spec, sizeof(k->key_spec));
    db_copy_text(st, 6, k->origin, sizeof(k->origin));
    db_copy_text(st, 7, k->manager, sizeof(k->manager));
    db_copy_text(st, 8, k->state, sizeof(k->state));
    k->create_ms = sqlite3_column_int64(st, 9);
    k->deletion_ms = sqlite3_column_int64(st, 10);
    k->pending_days = sqlite3_column_int64(st, 11);
    const void *m = sqlite3_column_blob(st, 12);
    size_t n = (size_t)sqlite3_column_bytes(st, 12);
    k->material_len = m && n <= sizeof(k->material) ? n : 0;
    if (k->material_len)
        memcpy(k->material, m, n);
}

int db_kms_key_insert(struct db *db, const struct db_kms_key *k, const char *policy)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO kms_keys (" KEY_COLS ", policy) VALUES (?1, ?2, "
                                   "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, k->id);
    BIND_TEXT(st, 2, k->region);
    BIND_TEXT(st, 3, k->owner);
    BIND_TEXT(st, 4, k->description);
    BIND_TEXT(st, 5, k->key_usage);
    BIND_TEXT(st, 6, k->key_spec);
    BIND_TEXT(st, 7, k->origin);
    BIND_TEXT(st, 8, k->manager);
    BIND_TEXT(st, 9, k->state);
    sqlite3_bind_int64(st, 10, k->create_ms);
    sqlite3_bind_int64(st, 11, k->deletion_ms);
    sqlite3_bind_int64(st, 12, k->pending_days);
    sqlite3_bind_blob(st, 13, k->material, (int)k->material_len, SQLITE_STATIC);
    BIND_TEXT(st, 14, policy);
    return db_step_done(st);
}

int db_kms_key_get(struct db *db, const char *id, struct db_kms_key *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEY_COLS " FROM kms_keys WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        key_row(st, ret);
    sqlite3_reset(st);
    return one_or_enoent(rc);
}

int db_kms_key_update(struct db *db, const struct db_kms_key *k)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE kms_keys SET description = ?2, state = ?3, "
                                   "deletion_ms = ?4, pending_days = ?5 WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, k->id);
    BIND_TEXT(st, 2, k->description);
    BIND_TEXT(st, 3, k->state);
    sqlite3_bind_int64(st, 4, k->deletion_ms);
    sqlite3_bind_int64(st, 5, k->pending_days);
    int rc = changes_or(db, db_step_done(st));
    return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int db_kms_key_count(struct db *db, const char *region, const char *owner)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT count(*) FROM kms_keys WHERE region = ?1 AND owner = ?2");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    return count_of(st);
}

int db_kms_key_each(struct db *db, const char *region, const char *owner, const char *after,
                    int (*fn)(void *ctx, const struct db_kms_key *k), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEY_COLS " FROM kms_keys WHERE region = ?1 AND "
                                   "owner = ?2 AND id > ?3 ORDER BY id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, after ? after : "");
    EACH_ROW(st, struct db_kms_key, key_row, fn, ctx);
}

int db_kms_key_purge(struct db *db, int64_t now_ms)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM kms_keys WHERE state = 'PendingDeletion' AND "
                                   "deletion_ms <= ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_int64(st, 1, now_ms);
    return changes_or(db, db_step_done(st));
}

int db_kms_policy_get(struct db *db, const char *key_id, char **ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT policy FROM kms_keys WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    int rc = sqlite3_step(st);
    char *p = NULL;
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        p = strdup(t ? (const char *)t : "");
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW && !p)
        return -ENOMEM;
    if (rc == SQLITE_ROW)
        *ret = p;
    return one_or_enoent(rc);
}

int db_kms_policy_set(struct db *db, const char *key_id, const char *policy)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE kms_keys SET policy = ?2 WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, policy);
    int rc = changes_or(db, db_step_done(st));
    return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

/* ---- aliases ---- */

#define ALIAS_COLS "region, owner, name, key_id, create_ms, update_ms"

static void alias_row(sqlite3_stmt *st, struct db_kms_alias *a)
{
    db_copy_text(st, 0, a->region, sizeof(a->region));
    db_copy_text(st, 1, a->owner, sizeof(a->owner));
    db_copy_text(st, 2, a->name, sizeof(a->name));
    db_copy_text(st, 3, a->key_id, sizeof(a->key_id));
    a->create_ms = sqlite3_column_int64(st, 4);
    a->update_ms = sqlite3_column_int64(st, 5);
}

int db_kms_alias_insert(struct db *db, const struct db_kms_alias *a)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO kms_aliases (" ALIAS_COLS ") VALUES (?1, ?2, ?3, "
                                   "?4, ?5, ?6)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, a->region);
    BIND_TEXT(st, 2, a->owner);
    BIND_TEXT(st, 3, a->name);
    BIND_TEXT(st, 4, a->key_id);
    sqlite3_bind_int64(st, 5, a->create_ms);
    sqlite3_bind_int64(st, 6, a->update_ms);
    return db_step_done(st);
}

int db_kms_alias_get(struct db *db, const char *region, const char *owner, const char *name,
                     struct db_kms_alias *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ALIAS_COLS " FROM kms_aliases WHERE region = ?1 AND "
                                   "owner = ?2 AND name = ?3");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        alias_row(st, ret);
    sqlite3_reset(st);
    return one_or_enoent(rc);
}

int db_kms_alias_retarget(struct db *db, const char *region, const char *owner, const char *name,
                          const char *key_id, int64_t now_ms)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE kms_aliases SET key_id = ?4, update_ms = ?5 WHERE "
                                   "region = ?1 AND owner = ?2 AND name = ?3");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, name);
    BIND_TEXT(st, 4, key_id);
    sqlite3_bind_int64(st, 5, now_ms);
    int rc = changes_or(db, db_step_done(st));
    return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int db_kms_alias_delete(struct db *db, const char *region, const char *owner, const char *name)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM kms_aliases WHERE region = ?1 AND owner = ?2 AND "
                                   "name = ?3");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, name);
    int rc = changes_or(db, db_step_done(st));
    return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int db_kms_alias_each(struct db *db, const char *region, const char *owner, const char *key_id,
                      const char *after, int (*fn)(void *ctx, const struct db_kms_alias *a),
                      void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ALIAS_COLS " FROM kms_aliases WHERE region = ?1 AND "
                                   "owner = ?2 AND (?3 IS NULL OR key_id = ?3) AND name > ?4 "
                                   "ORDER BY name");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, key_id);
    BIND_TEXT(st, 4, after ? after : "");
    EACH_ROW(st, struct db_kms_alias, alias_row, fn, ctx);
}

/* ---- grants ---- */

#define GRANT_COLS "id, key_id, name, issuer, grantee, retiring, operations, constraints, create_ms"

static void grant_row(sqlite3_stmt *st, struct db_kms_grant *g)
{
    db_copy_text(st, 0, g->id, sizeof(g->id));
    db_copy_text(st, 1, g->key_id, sizeof(g->key_id));
    db_copy_text(st, 2, g->name, sizeof(g->name));
    db_copy_text(st, 3, g->issuer, sizeof(g->issuer));
    db_copy_text(st, 4, g->grantee, sizeof(g->grantee));
    db_copy_text(st, 5, g->retiring, sizeof(g->retiring));
    db_copy_text(st, 6, g->operations, sizeof(g->operations));
    db_copy_text(st, 7, g->constraints, sizeof(g->constraints));
    g->create_ms = sqlite3_column_int64(st, 8);
}

int db_kms_grant_insert(struct db *db, const struct db_kms_grant *g)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO kms_grants (" GRANT_COLS ") VALUES (?1, ?2, ?3, "
                                   "?4, ?5, ?6, ?7, ?8, ?9)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, g->id);
    BIND_TEXT(st, 2, g->key_id);
    BIND_TEXT(st, 3, g->name);
    BIND_TEXT(st, 4, g->issuer);
    BIND_TEXT(st, 5, g->grantee);
    BIND_TEXT(st, 6, g->retiring);
    BIND_TEXT(st, 7, g->operations);
    BIND_TEXT(st, 8, g->constraints);
    sqlite3_bind_int64(st, 9, g->create_ms);
    return db_step_done(st);
}

int db_kms_grant_get(struct db *db, const char *id, struct db_kms_grant *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " GRANT_COLS " FROM kms_grants WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        grant_row(st, ret);
    sqlite3_reset(st);
    return one_or_enoent(rc);
}

int db_kms_grant_delete(struct db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM kms_grants WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    int rc = changes_or(db, db_step_done(st));
    return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int db_kms_grant_count(struct db *db, const char *key_id, const char *grantee)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM kms_grants WHERE key_id = ?1 AND "
                                   "(?2 IS NULL OR grantee = ?2)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, grantee);
    return count_of(st);
}

int db_kms_grant_each(struct db *db, const char *key_id, const char *after,
                      int (*fn)(void *ctx, const struct db_kms_grant *g), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " GRANT_COLS " FROM kms_grants WHERE key_id = ?1 AND "
                                   "id > ?2 ORDER BY id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, after ? after : "");
    EACH_ROW(st, struct db_kms_grant, grant_row, fn, ctx);
}

/* ---- tags ---- */

int db_kms_tag_put(struct db *db, const char *key_id, const char *key, const char *value)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO kms_tags (key_id, key, value) VALUES (?1, ?2, ?3) "
                                   "ON CONFLICT(key_id, key) DO UPDATE SET value = excluded.value");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, key);
    BIND_TEXT(st, 3, value);
    return db_step_done(st);
}

int db_kms_tag_delete(struct db *db, const char *key_id, const char *key)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM kms_tags WHERE key_id = ?1 AND key = ?2");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, key);
    return changes_or(db, db_step_done(st));
}

int db_kms_tag_count(struct db *db, const char *key_id)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM kms_tags WHERE key_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    return count_of(st);
}

int db_kms_tag_each(struct db *db, const char *key_id, const char *after,
                    int (*fn)(void *ctx, const char *key, const char *value), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT key, value FROM kms_tags WHERE key_id = ?1 AND "
                                   "key > ?2 ORDER BY key");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, key_id);
    BIND_TEXT(st, 2, after ? after : "");
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char k[516], v[1028];
        db_copy_text(st, 0, k, sizeof(k));
        db_copy_text(st, 1, v, sizeof(v));
        out = fn(ctx, k, v);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}
