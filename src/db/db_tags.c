/*
 * db_tags.c — the one tag store every taggable resource uses.  Tags are keyed by region,
 * resource id and the account that put them (`owner`): an account that was shared an image or
 * snapshot tags it for itself alone, as on AWS.  The owner index lets DescribeTags list an
 * account's tags without joining every resource table.
 */
#include "db/db_int.h"

#include <errno.h>

int db_tag_put(struct db *db, const char *region, const char *owner, const char *resource_id,
               const char *resource_type, const char *key, const char *value)
{
    sqlite3_stmt *st =
        db_stmt(db, "INSERT INTO tags (region, resource_id, resource_type, owner, key, value) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(region, resource_id, owner, key) "
                    "DO UPDATE SET value = excluded.value");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, resource_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, resource_type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, value, -1, SQLITE_STATIC);
    return db_step_done(st);
}

int db_tag_delete(struct db *db, const char *region, const char *owner, const char *resource_id,
                  const char *key, const char *value)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM tags WHERE region = ?1 AND owner = ?2 AND "
                                   "resource_id = ?3 AND (?4 IS NULL OR key = ?4) AND "
                                   "(?5 IS NULL OR value = ?5)");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, resource_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, value, -1, SQLITE_STATIC);
    int rc = db_step_done(st);
    return rc < 0 ? rc : sqlite3_changes(db->h);
}

int db_tag_delete_all(struct db *db, const char *region, const char *resource_id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM tags WHERE region = ?1 AND resource_id = ?2");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, resource_id, -1, SQLITE_STATIC);
    int rc = db_step_done(st);
    return rc < 0 ? rc : sqlite3_changes(db->h);
}

int db_tag_count(struct db *db, const char *region, const char *owner, const char *resource_id)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT count(*) FROM tags WHERE region = ?1 AND "
                                   "resource_id = ?2 AND owner = ?3");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, resource_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : db_rc(rc);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? n : (n < 0 ? n : -EIO);
}

static void tag_row(sqlite3_stmt *st, struct db_tag *t)
{
    db_copy_text(st, 0, t->resource_id, sizeof(t->resource_id));
    db_copy_text(st, 1, t->resource_type, sizeof(t->resource_type));
    db_copy_text(st, 2, t->key, sizeof(t->key));
    db_copy_text(st, 3, t->value, sizeof(t->value));
}

int db_tag_rows(sqlite3_stmt *st, int (*fn)(void *ctx, const struct db_tag *t), void *ctx)
{
    EACH_ROW(st, struct db_tag, tag_row, fn, ctx);
}

int db_tag_each_of(struct db *db, const char *region, const char *owner, const char *resource_id,
                   int (*fn)(void *ctx, const struct db_tag *t), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT resource_id, resource_type, key, value FROM tags "
                                   "WHERE region = ?1 AND resource_id = ?2 AND owner = ?3 "
                                   "ORDER BY key");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, resource_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, owner, -1, SQLITE_STATIC);
    return db_tag_rows(st, fn, ctx);
}

int db_tag_each_owned(struct db *db, const char *region, const char *owner,
                      int (*fn)(void *ctx, const struct db_tag *t), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT resource_id, resource_type, key, value FROM tags "
                                   "WHERE region = ?1 AND owner = ?2 ORDER BY resource_id, key");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    return db_tag_rows(st, fn, ctx);
}

int db_tag_find(struct db *db, const char *region, const char *owner, const char *type,
                const char *key, const char *value, char *ret_id, size_t idlen)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT resource_id FROM tags WHERE region = ?1 AND "
                                   "owner = ?2 AND resource_type = ?3 AND key = ?4 AND "
                                   "value = ?5 ORDER BY resource_id LIMIT 1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, region, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        db_copy_text(st, 0, ret_id, idlen);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}
