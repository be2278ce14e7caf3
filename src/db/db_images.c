/*
 * db_images.c — rows for machine images, their block device mappings and launch permissions,
 * and per-account settings.
 */
#include "db/db_int.h"

#include <errno.h>
#include <string.h>

#define BIND_TEXT(st, i, s) sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)

#define IMAGE_COLS                                                                                \
    "id, region, owner, name, description, architecture, root_device_name, "                      \
    "virtualization_type, boot_mode, ena_support, sriov_net_support, imds_support, tpm_support, " \
    "state, state_reason_code, state_reason_message, creation_ms, deprecation_ms, protection, "   \
    "protection_until_ms, last_launched_ms, source_image_id, source_region, "                     \
    "source_instance_id, deregistered_ms, public"

static void image_bind(sqlite3_stmt *st, const struct db_image *m)
{
    BIND_TEXT(st, 1, m->id);
    BIND_TEXT(st, 2, m->region);
    BIND_TEXT(st, 3, m->owner);
    BIND_TEXT(st, 4, m->name);
    BIND_TEXT(st, 5, m->description);
    BIND_TEXT(st, 6, m->architecture);
    BIND_TEXT(st, 7, m->root_device_name);
    BIND_TEXT(st, 8, m->virtualization_type);
    BIND_TEXT(st, 9, m->boot_mode);
    sqlite3_bind_int(st, 10, m->ena_support);
    BIND_TEXT(st, 11, m->sriov_net_support);
    BIND_TEXT(st, 12, m->imds_support);
    BIND_TEXT(st, 13, m->tpm_support);
    BIND_TEXT(st, 14, m->state);
    BIND_TEXT(st, 15, m->state_reason_code);
    BIND_TEXT(st, 16, m->state_reason_message);
    sqlite3_bind_int64(st, 17, m->creation_ms);
    sqlite3_bind_int64(st, 18, m->deprecation_ms);
    BIND_TEXT(st, 19, m->protection);
    sqlite3_bind_int64(st, 20, m->protection_until_ms);
    sqlite3_bind_int64(st, 21, m->last_launched_ms);
    BIND_TEXT(st, 22, m->source_image_id);
    BIND_TEXT(st, 23, m->source_region);
    BIND_TEXT(st, 24, m->source_instance_id);
    sqlite3_bind_int64(st, 25, m->deregistered_ms);
    sqlite3_bind_int(st, 26, m->public);
}

static void image_row(sqlite3_stmt *st, struct db_image *m)
{
    db_copy_text(st, 0, m->id, sizeof(m->id));
    db_copy_text(st, 1, m->region, sizeof(m->region));
    db_copy_text(st, 2, m->owner, sizeof(m->owner));
    db_copy_text(st, 3, m->name, sizeof(m->name));
    db_copy_text(st, 4, m->description, sizeof(m->description));
    db_copy_text(st, 5, m->architecture, sizeof(m->architecture));
    db_copy_text(st, 6, m->root_device_name, sizeof(m->root_device_name));
    db_copy_text(st, 7, m->virtualization_type, sizeof(m->virtualization_type));
    db_copy_text(st, 8, m->boot_mode, sizeof(m->boot_mode));
    m->ena_support = sqlite3_column_int(st, 9) != 0;
    db_copy_text(st, 10, m->sriov_net_support, sizeof(m->sriov_net_support));
    db_copy_text(st, 11, m->imds_support, sizeof(m->imds_support));
    db_copy_text(st, 12, m->tpm_support, sizeof(m->tpm_support));
    db_copy_text(st, 13, m->state, sizeof(m->state));
    db_copy_text(st, 14, m->state_reason_code, sizeof(m->state_reason_code));
    db_copy_text(st, 15, m->state_reason_message, sizeof(m->state_reason_message));
    m->creation_ms = sqlite3_column_int64(st, 16);
    m->deprecation_ms = sqlite3_column_int64(st, 17);
    db_copy_text(st, 18, m->protection, sizeof(m->protection));
    m->protection_until_ms = sqlite3_column_int64(st, 19);
    m->last_launched_ms = sqlite3_column_int64(st, 20);
    db_copy_text(st, 21, m->source_image_id, sizeof(m->source_image_id));
    db_copy_text(st, 22, m->source_region, sizeof(m->source_region));
    db_copy_text(st, 23, m->source_instance_id, sizeof(m->source_instance_id));
    m->deregistered_ms = sqlite3_column_int64(st, 24);
    m->public = sqlite3_column_int(st, 25) != 0;
}

static int image_one(sqlite3_stmt *st, struct db_image *ret)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        image_row(st, ret);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

static int images_rows(sqlite3_stmt *st, int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_image m;
        image_row(st, &m);
        out = fn(ctx, &m);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

int db_image_insert(struct db *db, const struct db_image *im)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO images (" IMAGE_COLS ") VALUES (?1, ?2, ?3, ?4, "
                                   "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
                                   "?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)");
    if (!st)
        return -EIO;
    image_bind(st, im);
    return db_step_done(st);
}

int db_image_update(struct db *db, const struct db_image *im)
{
    sqlite3_stmt *st = db_stmt(
        db, "UPDATE images SET region = ?2, owner = ?3, name = ?4, description = ?5, "
            "architecture = ?6, root_device_name = ?7, virtualization_type = ?8, boot_mode = ?9, "
            "ena_support = ?10, sriov_net_support = ?11, imds_support = ?12, tpm_support = ?13, "
            "state = ?14, state_reason_code = ?15, state_reason_message = ?16, "
            "creation_ms = ?17, deprecation_ms = ?18, protection = ?19, "
            "protection_until_ms = ?20, last_launched_ms = ?21, source_image_id = ?22, "
            "source_region = ?23, source_instance_id = ?24, deregistered_ms = ?25, public = ?26 "
            "WHERE id = ?1");
    if (!st)
        return -EIO;
    image_bind(st, im);
    int rc = db_step_done(st);
    if (rc < 0)
        return rc;
    return sqlite3_changes(db->h) ? 0 : -ENOENT;
}

int db_image_get(struct db *db, const char *id, struct db_image *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return image_one(st, ret);
}

int db_image_by_name(struct db *db, const char *region, const char *owner, const char *name,
                     struct db_image *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images WHERE region = ?1 AND "
                                   "owner = ?2 AND name = ?3 AND state != 'deregistered'");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, name);
    return image_one(st, ret);
}

int db_image_each(struct db *db, const struct db_image_query *q,
                  int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    sqlite3_stmt *st;
    if (q->owner) {
        /* The common case (Owners=self): the owner index, in id order. */
        st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images i WHERE region = ?1 AND owner = ?2 "
                         "AND id > ?3 AND (?4 = 0 OR public = 1) AND (?5 IS NULL OR EXISTS "
                         "(SELECT 1 FROM image_permissions p WHERE p.image_id = i.id AND "
                         "p.grantee = ?5)) AND (?6 IS NULL OR owner = ?6 OR public = 1 OR "
                         "EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = i.id AND "
                         "p.grantee = ?6)) ORDER BY id");
    } else {
        st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images i WHERE region = ?1 AND "
                         "(?2 IS NULL) AND id > ?3 AND (?4 = 0 OR public = 1) AND (?5 IS NULL OR "
                         "EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = i.id AND "
                         "p.grantee = ?5)) AND (?6 IS NULL OR owner = ?6 OR public = 1 OR "
                         "EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = i.id AND "
                         "p.grantee = ?6)) ORDER BY id");
    }
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, q->region);
    BIND_TEXT(st, 2, q->owner);
    BIND_TEXT(st, 3, q->after ? q->after : "");
    sqlite3_bind_int(st, 4, q->public_only);
    BIND_TEXT(st, 5, q->granted_to);
    BIND_TEXT(st, 6, q->visible_to);
    return images_rows(st, fn, ctx);
}

int db_image_each_state(struct db *db, const char *state,
                        int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " IMAGE_COLS " FROM images WHERE state = ?1 ORDER BY creation_ms");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, state);
    return images_rows(st, fn, ctx);
}

#define BDM_COLS                                                                                 \
    "device_name, kind, virtual_name, snapshot_id, volume_size, volume_type, iops, throughput, " \
    "delete_on_termination, encrypted, kms_key_id"

int db_bdm_add(struct db *db, const char *image_id, int idx, const struct db_bdm *b)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO image_bdms (image_id, idx, " BDM_COLS ") VALUES "
                                   "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    sqlite3_bind_int(st, 2, idx);
    BIND_TEXT(st, 3, b->device_name);
    BIND_TEXT(st, 4, b->kind);
    BIND_TEXT(st, 5, b->virtual_name);
    BIND_TEXT(st, 6, b->snapshot_id);
    sqlite3_bind_int64(st, 7, b->volume_size);
    BIND_TEXT(st, 8, b->volume_type);
    sqlite3_bind_int64(st, 9, b->iops);
    sqlite3_bind_int64(st, 10, b->throughput);
    sqlite3_bind_int(st, 11, b->delete_on_termination);
    sqlite3_bind_int(st, 12, b->encrypted);
    BIND_TEXT(st, 13, b->kms_key_id);
    return db_step_done(st);
}

int db_bdm_each(struct db *db, const char *image_id, int (*fn)(void *ctx, const struct db_bdm *b),
                void *ctx)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " BDM_COLS " FROM image_bdms WHERE image_id = ?1 ORDER BY idx");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_bdm b;
        db_copy_text(st, 0, b.device_name, sizeof(b.device_name));
        db_copy_text(st, 1, b.kind, sizeof(b.kind));
        db_copy_text(st, 2, b.virtual_name, sizeof(b.virtual_name));
        db_copy_text(st, 3, b.snapshot_id, sizeof(b.snapshot_id));
        b.volume_size = sqlite3_column_int64(st, 4);
        db_copy_text(st, 5, b.volume_type, sizeof(b.volume_type));
        b.iops = sqlite3_column_int64(st, 6);
        b.throughput = sqlite3_column_int64(st, 7);
        b.delete_on_termination = sqlite3_column_int(st, 8) != 0;
        b.encrypted = sqlite3_column_int(st, 9) != 0;
        db_copy_text(st, 10, b.kms_key_id, sizeof(b.kms_key_id));
        out = fn(ctx, &b);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

int db_bdm_images_of_snapshot(struct db *db, const char *snapshot_id,
                              int (*fn)(void *ctx, const char *image_id), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT DISTINCT b.image_id FROM image_bdms b JOIN images i "
                                   "ON i.id = b.image_id WHERE b.snapshot_id = ?1 AND "
                                   "i.state != 'deregistered' ORDER BY b.image_id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, snapshot_id);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char id[32];
        db_copy_text(st, 0, id, sizeof(id));
        out = fn(ctx, id);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

static int sync_public(struct db *db, const char *image_id)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE images SET public = EXISTS (SELECT 1 FROM "
                                   "image_permissions WHERE image_id = ?1 AND grantee = 'all') "
                                   "WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    return db_step_done(st);
}

int db_image_perm_add(struct db *db, const char *image_id, const char *grantee)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT OR IGNORE INTO image_permissions (image_id, grantee) "
                                   "VALUES (?1, ?2)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    BIND_TEXT(st, 2, grantee);
    int rc = db_step_done(st);
    return rc < 0 ? rc : sync_public(db, image_id);
}

int db_image_perm_remove(struct db *db, const char *image_id, const char *grantee)
{
    sqlite3_stmt *st =
        db_stmt(db, "DELETE FROM image_permissions WHERE image_id = ?1 AND grantee = ?2");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    BIND_TEXT(st, 2, grantee);
    int rc = db_step_done(st);
    return rc < 0 ? rc : sync_public(db, image_id);
}

int db_image_perm_clear(struct db *db, const char *image_id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM image_permissions WHERE image_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    int rc = db_step_done(st);
    return rc < 0 ? rc : sync_public(db, image_id);
}

int db_image_perm_has(struct db *db, const char *image_id, const char *grantee)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT 1 FROM image_permissions WHERE image_id = ?1 AND grantee = ?2");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    BIND_TEXT(st, 2, grantee);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_image_perm_each(struct db *db, const char *image_id,
                       int (*fn)(void *ctx, const char *grantee), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT grantee FROM image_permissions WHERE image_id = ?1 "
                                   "ORDER BY grantee");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char g[32];
        db_copy_text(st, 0, g, sizeof(g));
        out = fn(ctx, g);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

int db_account_setting_get(struct db *db, const char *account, const char *region, const char *key,
                           char *out, size_t outlen)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT value FROM account_settings WHERE account = ?1 AND "
                                   "region = ?2 AND key = ?3");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, account);
    BIND_TEXT(st, 2, region);
    BIND_TEXT(st, 3, key);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        db_copy_text(st, 0, out, outlen);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_account_setting_set(struct db *db, const char *account, const char *region, const char *key,
                           const char *value)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO account_settings (account, region, key, value) "
                                   "VALUES (?1, ?2, ?3, ?4) ON CONFLICT(account, region, key) DO "
                                   "UPDATE SET value = excluded.value");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, account);
    BIND_TEXT(st, 2, region);
    BIND_TEXT(st, 3, key);
    BIND_TEXT(st, 4, value);
    return db_step_done(st);
}
