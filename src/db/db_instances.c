/*
 * db_instances.c — rows for key pairs, instances and the volumes attached to them.
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

/* ---- key pairs ---- */

#define KEYPAIR_COLS "id, region, owner, name, type, fingerprint, public_key, create_ms"

static void keypair_row(sqlite3_stmt *st, struct db_keypair *k)
{
    db_copy_text(st, 0, k->id, sizeof(k->id));
    db_copy_text(st, 1, k->region, sizeof(k->region));
    db_copy_text(st, 2, k->owner, sizeof(k->owner));
    db_copy_text(st, 3, k->name, sizeof(k->name));
    db_copy_text(st, 4, k->type, sizeof(k->type));
    db_copy_text(st, 5, k->fingerprint, sizeof(k->fingerprint));
    db_copy_text(st, 6, k->public_key, sizeof(k->public_key));
    k->create_ms = sqlite3_column_int64(st, 7);
}

int db_keypair_insert(struct db *db, const struct db_keypair *k)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO key_pairs (" KEYPAIR_COLS ") VALUES (?1, ?2, "
                                   "?3, ?4, ?5, ?6, ?7, ?8)");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, k->id);
    BIND_TEXT(st, 2, k->region);
    BIND_TEXT(st, 3, k->owner);
    BIND_TEXT(st, 4, k->name);
    BIND_TEXT(st, 5, k->type);
    BIND_TEXT(st, 6, k->fingerprint);
    BIND_TEXT(st, 7, k->public_key);
    sqlite3_bind_int64(st, 8, k->create_ms);
    return db_step_done(st);
}

static int keypair_one(sqlite3_stmt *st, struct db_keypair *ret)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        keypair_row(st, ret);
    sqlite3_reset(st);
    return one_or_enoent(rc);
}

int db_keypair_get(struct db *db, const char *id, struct db_keypair *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEYPAIR_COLS " FROM key_pairs WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return keypair_one(st, ret);
}

int db_keypair_by_name(struct db *db, const char *region, const char *owner, const char *name,
                       struct db_keypair *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEYPAIR_COLS " FROM key_pairs WHERE region = ?1 "
                                   "AND owner = ?2 AND name = ?3");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    BIND_TEXT(st, 3, name);
    return keypair_one(st, ret);
}

int db_keypair_delete(struct db *db, const char *id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM key_pairs WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return db_step_done(st);
}

int db_keypair_each(struct db *db, const char *region, const char *owner,
                    int (*fn)(void *ctx, const struct db_keypair *k), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " KEYPAIR_COLS " FROM key_pairs WHERE region = ?1 "
                                   "AND owner = ?2 ORDER BY name");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    EACH_ROW(st, struct db_keypair, keypair_row, fn, ctx);
}

/* ---- instances ---- */

#define INSTANCE_COLS                                                                            \
    "id, region, owner, reservation_id, image_id, instance_type, zone, state, "                  \
    "state_reason_code, state_reason_message, transition_reason, launch_ms, key_name, "          \
    "user_data, client_token, launch_index, private_ip, http_tokens, http_endpoint, hop_limit, " \
    "metadata_tags, architecture, root_device_name, boot_mode, ena_support, "                    \
    "disable_api_termination, disable_api_stop, shutdown_behavior, terminated_ms, accel, "       \
    "run_dir, "                                                                                  \
    "public_key"

static void instance_bind(sqlite3_stmt *st, const struct db_instance *i)
{
    BIND_TEXT(st, 1, i->id);
    BIND_TEXT(st, 2, i->region);
    BIND_TEXT(st, 3, i->owner);
    BIND_TEXT(st, 4, i->reservation_id);
    BIND_TEXT(st, 5, i->image_id);
    BIND_TEXT(st, 6, i->instance_type);
    BIND_TEXT(st, 7, i->zone);
    BIND_TEXT(st, 8, i->state);
    BIND_TEXT(st, 9, i->state_reason_code);
    BIND_TEXT(st, 10, i->state_reason_message);
    BIND_TEXT(st, 11, i->transition_reason);
    sqlite3_bind_int64(st, 12, i->launch_ms);
    BIND_TEXT(st, 13, i->key_name);
    if (i->user_data)
        sqlite3_bind_blob(st, 14, i->user_data, (int)i->user_data_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 14);
    BIND_TEXT(st, 15, i->client_token);
    sqlite3_bind_int64(st, 16, i->launch_index);
    BIND_TEXT(st, 17, i->private_ip);
    BIND_TEXT(st, 18, i->http_tokens);
    BIND_TEXT(st, 19, i->http_endpoint);
    sqlite3_bind_int64(st, 20, i->hop_limit);
    BIND_TEXT(st, 21, i->metadata_tags);
    BIND_TEXT(st, 22, i->architecture);
    BIND_TEXT(st, 23, i->root_device_name);
    BIND_TEXT(st, 24, i->boot_mode);
    sqlite3_bind_int(st, 25, i->ena_support);
    sqlite3_bind_int(st, 26, i->disable_api_termination);
    sqlite3_bind_int(st, 27, i->disable_api_stop);
    BIND_TEXT(st, 28, i->shutdown_behavior);
    sqlite3_bind_int64(st, 29, i->terminated_ms);
    BIND_TEXT(st, 30, i->accel);
    BIND_TEXT(st, 31, i->run_dir);
    BIND_TEXT(st, 32, i->public_key);
}

static int instance_row(sqlite3_stmt *st, struct db_instance *i)
{
    db_copy_text(st, 0, i->id, sizeof(i->id));
    db_copy_text(st, 1, i->region, sizeof(i->region));
    db_copy_text(st, 2, i->owner, sizeof(i->owner));
    db_copy_text(st, 3, i->reservation_id, sizeof(i->reservation_id));
    db_copy_text(st, 4, i->image_id, sizeof(i->image_id));
    db_copy_text(st, 5, i->instance_type, sizeof(i->instance_type));
    db_copy_text(st, 6, i->zone, sizeof(i->zone));
    db_copy_text(st, 7, i->state, sizeof(i->state));
    db_copy_text(st, 8, i->state_reason_code, sizeof(i->state_reason_code));
    db_copy_text(st, 9, i->state_reason_message, sizeof(i->state_reason_message));
    db_copy_text(st, 10, i->transition_reason, sizeof(i->transition_reason));
    i->launch_ms = sqlite3_column_int64(st, 11);
    db_copy_text(st, 12, i->key_name, sizeof(i->key_name));
    int n = sqlite3_column_bytes(st, 13);
    i->user_data = NULL;
    i->user_data_len = 0;
    if (n > 0) {
        i->user_data = malloc((size_t)n);
        if (!i->user_data)
            return -ENOMEM;
        memcpy(i->user_data, sqlite3_column_blob(st, 13), (size_t)n);
        i->user_data_len = (size_t)n;
    }
    db_copy_text(st, 14, i->client_token, sizeof(i->client_token));
    i->launch_index = sqlite3_column_int64(st, 15);
    db_copy_text(st, 16, i->private_ip, sizeof(i->private_ip));
    db_copy_text(st, 17, i->http_tokens, sizeof(i->http_tokens));
    db_copy_text(st, 18, i->http_endpoint, sizeof(i->http_endpoint));
    i->hop_limit = sqlite3_column_int64(st, 19);
    db_copy_text(st, 20, i->metadata_tags, sizeof(i->metadata_tags));
    db_copy_text(st, 21, i->architecture, sizeof(i->architecture));
    db_copy_text(st, 22, i->root_device_name, sizeof(i->root_device_name));
    db_copy_text(st, 23, i->boot_mode, sizeof(i->boot_mode));
    i->ena_support = sqlite3_column_int(st, 24) != 0;
    i->disable_api_termination = sqlite3_column_int(st, 25) != 0;
    i->disable_api_stop = sqlite3_column_int(st, 26) != 0;
    db_copy_text(st, 27, i->shutdown_behavior, sizeof(i->shutdown_behavior));
    i->terminated_ms = sqlite3_column_int64(st, 28);
    db_copy_text(st, 29, i->accel, sizeof(i->accel));
    db_copy_text(st, 31, i->public_key, sizeof(i->public_key));
    db_copy_text(st, 30, i->run_dir, sizeof(i->run_dir));
    return 0;
}

void db_instance_free_data(struct db_instance *i)
{
    free(i->user_data);
    i->user_data = NULL;
    i->user_data_len = 0;
}

int db_instance_insert(struct db *db, const struct db_instance *i)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO instances (" INSTANCE_COLS ") VALUES (?1, ?2, "
                                   "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                                   "?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, "
                                   "?28, ?29, ?30, ?31, ?32)");
    if (!st)
        return -EIO;
    instance_bind(st, i);
    return db_step_done(st);
}

int db_instance_update(struct db *db, const struct db_instance *i)
{
    sqlite3_stmt *st = db_stmt(
        db, "UPDATE instances SET region = ?2, owner = ?3, reservation_id = ?4, image_id = ?5, "
            "instance_type = ?6, zone = ?7, state = ?8, state_reason_code = ?9, "
            "state_reason_message = ?10, transition_reason = ?11, launch_ms = ?12, "
            "key_name = ?13, user_data = ?14, client_token = ?15, launch_index = ?16, "
            "private_ip = ?17, http_tokens = ?18, http_endpoint = ?19, hop_limit = ?20, "
            "metadata_tags = ?21, architecture = ?22, root_device_name = ?23, boot_mode = ?24, "
            "ena_support = ?25, disable_api_termination = ?26, disable_api_stop = ?27, "
            "shutdown_behavior = ?28, terminated_ms = ?29, accel = ?30, run_dir = ?31, "
            "public_key = ?32 "
            "WHERE id = ?1");
    if (!st)
        return -EIO;
    instance_bind(st, i);
    int rc = db_step_done(st);
    if (rc < 0)
        return rc;
    return sqlite3_changes(db->h) ? 0 : -ENOENT;
}

static int instance_one(sqlite3_stmt *st, struct db_instance *ret)
{
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? instance_row(st, ret) : 0;
    sqlite3_reset(st);
    return r < 0 ? r : one_or_enoent(rc);
}

int db_instance_get(struct db *db, const char *id, struct db_instance *ret)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " INSTANCE_COLS " FROM instances WHERE id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, id);
    return instance_one(st, ret);
}

int db_instance_each(struct db *db, const char *region, const char *owner,
                     int (*fn)(void *ctx, const struct db_instance *i), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " INSTANCE_COLS " FROM instances WHERE (?1 IS NULL OR "
                                   "region = ?1) AND (?2 IS NULL OR owner = ?2) ORDER BY id");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, owner);
    int rc, out = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_instance i;
        out = instance_row(st, &i);
        if (out == 0)
            out = fn(ctx, &i);
        db_instance_free_data(&i);
        if (out)
            break;
    }
    if (!out && rc != SQLITE_DONE)
        out = db_rc(rc);
    sqlite3_reset(st);
    return out;
}

/* ---- attachments ---- */

#define ATTACH_COLS \
    "instance_id, volume_id, device_name, attach_ms, delete_on_termination, state, boot_index"

static void attach_row(sqlite3_stmt *st, struct db_attachment *a)
{
    db_copy_text(st, 0, a->instance_id, sizeof(a->instance_id));
    db_copy_text(st, 1, a->volume_id, sizeof(a->volume_id));
    db_copy_text(st, 2, a->device_name, sizeof(a->device_name));
    a->attach_ms = sqlite3_column_int64(st, 3);
    a->delete_on_termination = sqlite3_column_int(st, 4) != 0;
    db_copy_text(st, 5, a->state, sizeof(a->state));
    a->boot_index = sqlite3_column_int64(st, 6);
}

static void attach_bind(sqlite3_stmt *st, const struct db_attachment *a)
{
    BIND_TEXT(st, 1, a->instance_id);
    BIND_TEXT(st, 2, a->volume_id);
    BIND_TEXT(st, 3, a->device_name);
    sqlite3_bind_int64(st, 4, a->attach_ms);
    sqlite3_bind_int(st, 5, a->delete_on_termination);
    BIND_TEXT(st, 6, a->state);
    sqlite3_bind_int64(st, 7, a->boot_index);
}

int db_attachment_insert(struct db *db, const struct db_attachment *a)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO instance_volumes (" ATTACH_COLS ") VALUES (?1, "
                                   "?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st)
        return -EIO;
    attach_bind(st, a);
    return db_step_done(st);
}

int db_attachment_update(struct db *db, const struct db_attachment *a)
{
    sqlite3_stmt *st = db_stmt(db, "UPDATE instance_volumes SET instance_id = ?1, "
                                   "device_name = ?3, attach_ms = ?4, delete_on_termination = ?5, "
                                   "state = ?6, boot_index = ?7 WHERE volume_id = ?2");
    if (!st)
        return -EIO;
    attach_bind(st, a);
    return db_step_done(st);
}

int db_attachment_delete(struct db *db, const char *volume_id)
{
    sqlite3_stmt *st = db_stmt(db, "DELETE FROM instance_volumes WHERE volume_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, volume_id);
    return db_step_done(st);
}

int db_attachment_of_volume(struct db *db, const char *volume_id, struct db_attachment *ret)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " ATTACH_COLS " FROM instance_volumes WHERE volume_id = ?1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, volume_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        attach_row(st, ret);
    sqlite3_reset(st);
    return one_or_enoent(rc);
}

int db_attachment_each(struct db *db, const char *instance_id,
                       int (*fn)(void *ctx, const struct db_attachment *a), void *ctx)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT " ATTACH_COLS " FROM instance_volumes WHERE "
                                   "instance_id = ?1 ORDER BY boot_index, device_name");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, instance_id);
    EACH_ROW(st, struct db_attachment, attach_row, fn, ctx);
}
