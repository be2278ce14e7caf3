/*
 * db_blockstore.c — rows for volumes, snapshots, snapshot permissions, EBS direct uploads in
 * progress, idempotency tokens and volume modifications.
 */
#include "db/db_int.h"

#include <errno.h>
#include <string.h>

#define BIND_TEXT(st, i, s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)

/* Runs a statement expected to change one row: -ENOENT when it changed none. */
static int step_one(struct db *db, sqlite3_stmt *st)
{
    int rc = db_step_done(st);
    if (rc < 0)
        return rc;
    return sqlite3_changes(db->h) ? 0 : -ENOENT;
}

/* ---- volumes ---- */

#define VOLUME_COLS                                                                              \
    "id, region, owner, zone, size_gib, type, iops, throughput, snapshot_id, state, create_ms, " \
    "encrypted, kms_key_id, multi_attach, init_rate, data_key"

static void volume_bind(sqlite3_stmt *st, const struct db_volume *v)
{
    BIND_TEXT(st, 1, v->id);
    BIND_TEXT(st, 2, v->region);
    BIND_TEXT(st, 3, v->owner);
    BIND_TEXT(st, 4, v->zone);
    sqlite3_bind_int64(st, 5, v->size_gib);
    BIND_TEXT(st, 6, v->type);
    sqlite3_bind_int64(st, 7, v->iops);
    sqlite3_bind_int64(st, 8, v->throughput);
    BIND_TEXT(st, 9, v->snapshot_id);
    BIND_TEXT(st, 10, v->state);
    sqlite3_bind_int64(st, 11, v->create_ms);
    sqlite3_bind_int(st, 12, v->encrypted);
    BIND_TEXT(st, 13, v->kms_key_id);
    sqlite3_bind_int(st, 14, v->multi_attach);
    sqlite3_bind_int64(st, 15, v->init_rate);
    if (v->data_key_len)
        sqlite3_bind_blob(st, 16, v->data_key, (int)v->data_key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 16);
}

static void volume_row(sqlite3_stmt *st, struct db_volume *v)
{
    db_copy_text(st, 0, v->id, sizeof(v->id));
    db_copy_text(st, 1, v->region, sizeof(v->region));
    db_copy_text(st, 2, v->owner, sizeof(v->owner));
    db_copy_text(st, 3, v->zone, sizeof(v->zone));
    v->size_gib = sqlite3_column_int64(st, 4);
    db_copy_text(st, 5, v->type, sizeof(v->type));
    v->iops = sqlite3_column_int64(st, 6);
    v->throughput = sqlite3_column_int64(st, 7);
    db_copy_text(st, 8, v->snapshot_id, sizeof(v->snapshot_id));
    db_copy_text(st, 9, v->state, sizeof(v->state));
    v->create_ms = sqlite3_column_int64(st, 10);
    v->encrypted = sqlite3_column_int(st, 11) != 0;
    db_copy_text(st, 12, v->kms_key_id, sizeof(v->kms_key_id));
    v->multi_attach = sqlite3_column_int(st, 13) != 0;
    v->init_rate = sqlite3_column_int64(st, 14);
    db_copy_blob(st, 15, v->data_key, sizeof(v->data_key), &v->data_key_len);
}

int db_volume_insert(struct db *db, const struct db_volume *v)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO volumes (" VOLUME_COLS ") VALUES (?1, ?2, ?3, "
                                   "?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)");
    if (!st)
        return -EIO;
    volume_bind(st, v);
    return db_step_done(st);
}

int db_volume_update(struct db *db, const struct db_volume *v)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE volumes SET region = ?2, owner = ?3, zone = ?4, "
                                   "size_gib = ?5, type = ?6, iops = ?7, throughput = ?8, "
                                   "snapshot_id = ?9, state = ?10, create_ms = ?11, "
                                   "encrypted = ?12, kms_key_id = ?13, multi_attach = ?14, "
                                   "init_rate = ?15, data_key = ?16 WHERE id = ?1");
    if (!st)
        return -EIO;
    volume_bind(st, v);
    return step_one(db, st);
}

int db_volume_get(struct db *db, const char *id, struct db_volume *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " VOLUME_COLS " FROM volumes WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        volume_row(st, ret);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_volume_delete(struct db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM volumes WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return step_one(db, st);
}

int db_volume_each(struct db *db, const char *region, const char *owner,
                   int (*fn)(void *ctx, const struct db_volume *v), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " VOLUME_COLS " FROM volumes WHERE region = ?1 AND "
                                   "(?2 IS NULL OR owner = ?2) ORDER BY id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    EACH_ROW(st, struct db_volume, volume_row, fn, ctx);
}

int db_volume_count_from(struct db *db, const char *snapshot_id)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM volumes WHERE snapshot_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -EIO;
    sqlite3_reset(st);
    return n;
}

/* ---- snapshots ---- */

#define SNAPSHOT_COLS                                                                           \
    "id, region, owner, volume_id, volume_size_gib, state, state_message, progress, start_ms, " \
    "complete_ms, description, encrypted, kms_key_id, source, parent_id, full_bytes, "          \
    "stored_bytes, blocks, linear, expiry_ms, timeout_min, source_region, data_key"

static void snapshot_bind(sqlite3_stmt *st, const struct db_snapshot *s)
{
    BIND_TEXT(st, 1, s->id);
    BIND_TEXT(st, 2, s->region);
    BIND_TEXT(st, 3, s->owner);
    BIND_TEXT(st, 4, s->volume_id);
    sqlite3_bind_int64(st, 5, s->volume_size_gib);
    BIND_TEXT(st, 6, s->state);
    BIND_TEXT(st, 7, s->state_message);
    sqlite3_bind_int64(st, 8, s->progress);
    sqlite3_bind_int64(st, 9, s->start_ms);
    sqlite3_bind_int64(st, 10, s->complete_ms);
    BIND_TEXT(st, 11, s->description);
    sqlite3_bind_int(st, 12, s->encrypted);
    BIND_TEXT(st, 13, s->kms_key_id);
    BIND_TEXT(st, 14, s->source);
    BIND_TEXT(st, 15, s->parent_id);
    sqlite3_bind_int64(st, 16, s->full_bytes);
    sqlite3_bind_int64(st, 17, s->stored_bytes);
    sqlite3_bind_int64(st, 18, s->blocks);
    if (s->has_linear)
        sqlite3_bind_blob(st, 19, s->linear, 32, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 19);
    sqlite3_bind_int64(st, 20, s->expiry_ms);
    sqlite3_bind_int64(st, 21, s->timeout_min);
    BIND_TEXT(st, 22, s->source_region);
    if (s->data_key_len)
        sqlite3_bind_blob(st, 23, s->data_key, (int)s->data_key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 23);
}

static void snapshot_row(sqlite3_stmt *st, struct db_snapshot *s)
{
    db_copy_text(st, 0, s->id, sizeof(s->id));
    db_copy_text(st, 1, s->region, sizeof(s->region));
    db_copy_text(st, 2, s->owner, sizeof(s->owner));
    db_copy_text(st, 3, s->volume_id, sizeof(s->volume_id));
    s->volume_size_gib = sqlite3_column_int64(st, 4);
    db_copy_text(st, 5, s->state, sizeof(s->state));
    db_copy_text(st, 6, s->state_message, sizeof(s->state_message));
    s->progress = sqlite3_column_int64(st, 7);
    s->start_ms = sqlite3_column_int64(st, 8);
    s->complete_ms = sqlite3_column_int64(st, 9);
    db_copy_text(st, 10, s->description, sizeof(s->description));
    s->encrypted = sqlite3_column_int(st, 11) != 0;
    db_copy_text(st, 12, s->kms_key_id, sizeof(s->kms_key_id));
    db_copy_text(st, 13, s->source, sizeof(s->source));
    db_copy_text(st, 14, s->parent_id, sizeof(s->parent_id));
    s->full_bytes = sqlite3_column_int64(st, 15);
    s->stored_bytes = sqlite3_column_int64(st, 16);
    s->blocks = sqlite3_column_int64(st, 17);
    s->has_linear = sqlite3_column_bytes(st, 18) == 32;
    if (s->has_linear)
        memcpy(s->linear, sqlite3_column_blob(st, 18), 32);
    s->expiry_ms = sqlite3_column_int64(st, 19);
    s->timeout_min = sqlite3_column_int64(st, 20);
    db_copy_text(st, 21, s->source_region, sizeof(s->source_region));
    db_copy_blob(st, 22, s->data_key, sizeof(s->data_key), &s->data_key_len);
}

int db_snapshot_insert(struct db *db, const struct db_snapshot *s)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO snapshots (" SNAPSHOT_COLS ") VALUES (?1, ?2, "
                                   "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                                   "?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)");
    if (!st)
        return -EIO;
    snapshot_bind(st, s);
    return db_step_done(st);
}

int db_snapshot_update(struct db *db, const struct db_snapshot *s)
{
    sqlite3_stmt *st =
        db_stmt(db, "UPDATE snapshots SET region = ?2, owner = ?3, volume_id = ?4, "
                    "volume_size_gib = ?5, state = ?6, state_message = ?7, progress = ?8, "
                    "start_ms = ?9, complete_ms = ?10, description = ?11, encrypted = ?12, "
                    "kms_key_id = ?13, source = ?14, parent_id = ?15, full_bytes = ?16, "
                    "stored_bytes = ?17, blocks = ?18, linear = ?19, expiry_ms = ?20, "
                    "timeout_min = ?21, source_region = ?22, data_key = ?23 WHERE id = ?1");
    if (!st)
        return -EIO;
    snapshot_bind(st, s);
    return step_one(db, st);
}

int db_snapshot_get(struct db *db, const char *id, struct db_snapshot *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snapshot_row(st, ret);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_snapshot_delete(struct db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM snapshots WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return step_one(db, st);
}

int db_snapshot_each(struct db *db, const char *region, const char *owner, const char *visible_to,
                     int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx)
{
    sqlite3_stmt *st = db_stmt(
        db, "SELECT " SNAPSHOT_COLS " FROM snapshots s WHERE region = ?1 AND "
            "(?2 IS NULL OR owner = ?2) AND (?3 IS NULL OR owner = ?3 OR EXISTS (SELECT 1 FROM "
            "snapshot_permissions p WHERE p.snapshot_id = s.id AND p.grantee IN (?3, 'all'))) "
            "ORDER BY id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, visible_to);
    EACH_ROW(st, struct db_snapshot, snapshot_row, fn, ctx);
}

int db_snapshot_each_state(struct db *db, const char *state,
                           int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE state = ?1 ORDER BY start_ms");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, state);
    EACH_ROW(st, struct db_snapshot, snapshot_row, fn, ctx);
}

int db_snapshot_perm_add(struct db *db, const char *snapshot_id, const char *grantee)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT OR IGNORE INTO snapshot_permissions "
                                   "(snapshot_id, grantee) VALUES (?1, ?2)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    BIND_TEXT(st, 2, grantee);
    return db_step_done(st);
}

int db_snapshot_perm_remove(struct db *db, const char *snapshot_id, const char *grantee)
{
    sqlite3_stmt *st =
        db_stmt(db, "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1 AND grantee = ?2");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    BIND_TEXT(st, 2, grantee);
    return db_step_done(st);
}

int db_snapshot_perm_clear(struct db *db, const char *snapshot_id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM snapshot_permissions WHERE snapshot_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    return db_step_done(st);
}

int db_snapshot_perm_has(struct db *db, const char *snapshot_id, const char *grantee, bool or_all)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT 1 FROM snapshot_permissions WHERE snapshot_id = ?1 "
                                   "AND (grantee = ?2 OR (?3 AND grantee = 'all'))");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    BIND_TEXT(st, 2, grantee);
    sqlite3_bind_int(st, 3, or_all);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_snapshot_perm_each(struct db *db, const char *snapshot_id,
                          int (*fn)(void *ctx, const char *grantee), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT grantee FROM snapshot_permissions WHERE "
                                   "snapshot_id = ?1 ORDER BY grantee");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    EACH_TEXT(st, 32, fn, ctx);
}

/* ---- EBS direct ---- */

int db_ebs_block_put(struct db *db, const char *snapshot_id, int64_t idx, const uint8_t *chunk,
                     const uint8_t sha256[32])
{
    sqlite3_stmt *st = db_stmt(db, "INSERT OR REPLACE INTO ebs_blocks (snapshot_id, idx, chunk, "
                                   "sha256) VALUES (?1, ?2, ?3, ?4)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    sqlite3_bind_int64(st, 2, idx);
    if (chunk)
        sqlite3_bind_blob(st, 3, chunk, 32, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_blob(st, 4, sha256, 32, SQLITE_STATIC);
    return db_step_done(st);
}

int db_ebs_block_count(struct db *db, const char *snapshot_id)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM ebs_blocks WHERE snapshot_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -EIO;
    sqlite3_reset(st);
    return n;
}

int db_ebs_block_each(struct db *db, const char *snapshot_id,
                      int (*fn)(void *ctx, int64_t idx, const uint8_t *chunk,
                                const uint8_t *sha256),
                      void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT idx, chunk, sha256 FROM ebs_blocks WHERE "
                                   "snapshot_id = ?1 ORDER BY idx");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const uint8_t *chunk =
            sqlite3_column_bytes(st, 1) == 32 ? sqlite3_column_blob(st, 1) : NULL;
        const uint8_t *sha = sqlite3_column_bytes(st, 2) == 32 ? sqlite3_column_blob(st, 2) : NULL;
        if (!sha) {
            out = -EIO;
            break;
        }
        out = fn(ctx, sqlite3_column_int64(st, 0), chunk, sha);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE && rc != SQLITE_ROW)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

int db_ebs_block_clear(struct db *db, const char *snapshot_id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM ebs_blocks WHERE snapshot_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    return db_step_done(st);
}

int db_ebs_chunk_each(struct db *db, int (*fn)(void *ctx, const uint8_t *chunk), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT chunk FROM ebs_blocks WHERE chunk IS NOT NULL");
    if (!st)
        return -EIO;
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != 32)
            continue;
        out = fn(ctx, sqlite3_column_blob(st, 0));
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE && rc != SQLITE_ROW)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

/* ---- idempotency ---- */

int db_idem_get(struct db *db, const char *account, const char *region, const char *op,
                const char *token, char *params, size_t plen, char *resource, size_t rlen)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT params, resource_id FROM idempotency WHERE "
                                   "account = ?1 AND region = ?2 AND op = ?3 AND token = ?4");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, account);
    BIND_TEXT(st, 2, region);
    BIND_TEXT(st, 3, op);
    BIND_TEXT(st, 4, token);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        db_copy_text(st, 0, params, plen);
        db_copy_text(st, 1, resource, rlen);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_idem_put(struct db *db, const char *account, const char *region, const char *op,
                const char *token, const char *params, const char *resource, int64_t now_ms)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO idempotency (account, region, op, token, params, "
                                   "resource_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, account);
    BIND_TEXT(st, 2, region);
    BIND_TEXT(st, 3, op);
    BIND_TEXT(st, 4, token);
    BIND_TEXT(st, 5, params);
    BIND_TEXT(st, 6, resource);
    sqlite3_bind_int64(st, 7, now_ms);
    return db_step_done(st);
}

/* ---- volume modifications ---- */

int db_volmod_put(struct db *db, const char *volume_id, int64_t start_ms, int64_t end_ms,
                  const char *state, const char *body)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT OR REPLACE INTO volume_modifications (volume_id, "
                                   "start_ms, end_ms, state, body) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, volume_id);
    sqlite3_bind_int64(st, 2, start_ms);
    sqlite3_bind_int64(st, 3, end_ms);
    BIND_TEXT(st, 4, state);
    BIND_TEXT(st, 5, body);
    return db_step_done(st);
}

int db_volmod_each(struct db *db, const char *volume_id,
                   int (*fn)(void *ctx, const char *volume_id, const char *body), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT volume_id, body FROM volume_modifications WHERE "
                                   "?1 IS NULL OR volume_id = ?1 ORDER BY start_ms DESC");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, volume_id);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char vid[32];
        db_copy_text(st, 0, vid, sizeof(vid));
        out = fn(ctx, vid, (const char *)sqlite3_column_text(st, 1));
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}
