/*
 * db_core.c — opening the database, the numbered schema migrations, transactions, a per-
 * connection cache of prepared statements, and the settings table.
 *
 * Migrations are append-only: migration N brings user_version from N-1 to N.  A file whose
 * user_version is greater than ours was written by a newer amid and is refused, untouched.
 */
#include "db/db_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const migrations[] = {
    /* 1: the foundation — settings, regions, zones, accounts, access keys, tags. */
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;"
    "CREATE TABLE regions (name TEXT PRIMARY KEY, store_path TEXT NOT NULL) STRICT;"
    "CREATE TABLE zones (name TEXT PRIMARY KEY, zone_id TEXT NOT NULL UNIQUE,"
    "  region TEXT NOT NULL REFERENCES regions(name)) STRICT;"
    "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  alias TEXT NOT NULL DEFAULT '', created_ms INTEGER NOT NULL,"
    "  system INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE TABLE access_keys (id TEXT PRIMARY KEY,"
    "  account_id TEXT NOT NULL REFERENCES accounts(id), secret_enc BLOB NOT NULL,"
    "  label TEXT NOT NULL DEFAULT '', created_ms INTEGER NOT NULL) STRICT;"
    "CREATE INDEX access_keys_account ON access_keys(account_id);"
    "CREATE TABLE tags (region TEXT NOT NULL, resource_id TEXT NOT NULL,"
    "  resource_type TEXT NOT NULL, owner TEXT NOT NULL, key TEXT NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY (region, resource_id, key)) STRICT;"
    "CREATE INDEX tags_owner ON tags(region, owner, resource_id);",

    /* 2: block storage — volumes, snapshots and who may use them, EBS direct uploads in
     * progress, idempotency tokens, volume modifications. */
    "CREATE TABLE volumes (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  zone TEXT NOT NULL, size_gib INTEGER NOT NULL, type TEXT NOT NULL,"
    "  iops INTEGER NOT NULL DEFAULT 0, throughput INTEGER NOT NULL DEFAULT 0,"
    "  snapshot_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, create_ms INTEGER NOT NULL,"
    "  encrypted INTEGER NOT NULL DEFAULT 0, kms_key_id TEXT NOT NULL DEFAULT '',"
    "  multi_attach INTEGER NOT NULL DEFAULT 0, init_rate INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE INDEX volumes_owner ON volumes(region, owner, id);"
    "CREATE TABLE snapshots (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  volume_id TEXT NOT NULL DEFAULT '', volume_size_gib INTEGER NOT NULL,"
    "  state TEXT NOT NULL, state_message TEXT NOT NULL DEFAULT '',"
    "  progress INTEGER NOT NULL DEFAULT 0, start_ms INTEGER NOT NULL,"
    "  complete_ms INTEGER NOT NULL DEFAULT 0, description TEXT NOT NULL DEFAULT '',"
    "  encrypted INTEGER NOT NULL DEFAULT 0, kms_key_id TEXT NOT NULL DEFAULT '',"
    "  source TEXT NOT NULL, parent_id TEXT NOT NULL DEFAULT '',"
    "  full_bytes INTEGER NOT NULL DEFAULT 0, stored_bytes INTEGER NOT NULL DEFAULT 0,"
    "  blocks INTEGER NOT NULL DEFAULT 0, linear BLOB, expiry_ms INTEGER NOT NULL DEFAULT 0,"
    "  timeout_min INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE INDEX snapshots_owner ON snapshots(region, owner, id);"
    "CREATE TABLE snapshot_permissions (snapshot_id TEXT NOT NULL"
    "  REFERENCES snapshots(id) ON DELETE CASCADE, grantee TEXT NOT NULL,"
    "  PRIMARY KEY (snapshot_id, grantee)) STRICT;"
    "CREATE INDEX snapshot_permissions_grantee ON snapshot_permissions(grantee, snapshot_id);"
    "CREATE TABLE ebs_blocks (snapshot_id TEXT NOT NULL REFERENCES snapshots(id)"
    "  ON DELETE CASCADE, idx INTEGER NOT NULL, chunk BLOB, sha256 BLOB NOT NULL,"
    "  PRIMARY KEY (snapshot_id, idx)) STRICT, WITHOUT ROWID;"
    "CREATE TABLE idempotency (account TEXT NOT NULL, region TEXT NOT NULL, op TEXT NOT NULL,"
    "  token TEXT NOT NULL, params TEXT NOT NULL, resource_id TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL, PRIMARY KEY (account, region, op, token)) STRICT;"
    "CREATE TABLE volume_modifications (volume_id TEXT NOT NULL, start_ms INTEGER NOT NULL,"
    "  end_ms INTEGER NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL,"
    "  PRIMARY KEY (volume_id, start_ms)) STRICT;",

    /* 3: machine images — the catalogue, block device mappings, launch permissions, and
     * per-account settings (image block public access). */
    "CREATE TABLE images (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', architecture TEXT NOT NULL,"
    "  root_device_name TEXT NOT NULL, virtualization_type TEXT NOT NULL,"
    "  boot_mode TEXT NOT NULL DEFAULT '', ena_support INTEGER NOT NULL DEFAULT 0,"
    "  sriov_net_support TEXT NOT NULL DEFAULT '', imds_support TEXT NOT NULL DEFAULT '',"
    "  tpm_support TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,"
    "  state_reason_code TEXT NOT NULL DEFAULT '', state_reason_message TEXT NOT NULL DEFAULT '',"
    "  creation_ms INTEGER NOT NULL, deprecation_ms INTEGER NOT NULL DEFAULT 0,"
    "  protection TEXT NOT NULL DEFAULT '', protection_until_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_launched_ms INTEGER NOT NULL DEFAULT 0, source_image_id TEXT NOT NULL DEFAULT '',"
    "  source_region TEXT NOT NULL DEFAULT '', source_instance_id TEXT NOT NULL DEFAULT '',"
    "  deregistered_ms INTEGER NOT NULL DEFAULT 0, public INTEGER NOT NULL DEFAULT 0) STRICT;"
    "CREATE INDEX images_owner ON images(region, owner, id);"
    "CREATE INDEX images_public ON images(region, public, id);"
    "CREATE UNIQUE INDEX images_name ON images(region, owner, name) WHERE state != 'deregistered';"
    "CREATE TABLE image_bdms (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL, device_name TEXT NOT NULL, kind TEXT NOT NULL,"
    "  virtual_name TEXT NOT NULL DEFAULT '', snapshot_id TEXT NOT NULL DEFAULT '',"
    "  volume_size INTEGER NOT NULL DEFAULT 0, volume_type TEXT NOT NULL DEFAULT '',"
    "  iops INTEGER NOT NULL DEFAULT 0, throughput INTEGER NOT NULL DEFAULT 0,"
    "  delete_on_termination INTEGER NOT NULL DEFAULT 1, encrypted INTEGER NOT NULL DEFAULT 0,"
    "  kms_key_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (image_id, idx)) STRICT;"
    "CREATE INDEX image_bdms_snapshot ON image_bdms(snapshot_id);"
    "CREATE TABLE image_permissions (image_id TEXT NOT NULL REFERENCES images(id)"
    "  ON DELETE CASCADE, grantee TEXT NOT NULL, PRIMARY KEY (image_id, grantee)) STRICT;"
    "CREATE INDEX image_permissions_grantee ON image_permissions(grantee, image_id);"
    "CREATE TABLE account_settings (account TEXT NOT NULL, region TEXT NOT NULL,"
    "  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (account, region, key)) STRICT;",

    /* 4: instances — key pairs, instances and the volumes attached to them. */
    "CREATE TABLE key_pairs (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  name TEXT NOT NULL, type TEXT NOT NULL, fingerprint TEXT NOT NULL,"
    "  public_key TEXT NOT NULL, create_ms INTEGER NOT NULL) STRICT;"
    "CREATE UNIQUE INDEX key_pairs_name ON key_pairs(region, owner, name);"
    "CREATE TABLE instances (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  reservation_id TEXT NOT NULL, image_id TEXT NOT NULL, instance_type TEXT NOT NULL,"
    "  zone TEXT NOT NULL, state TEXT NOT NULL, state_reason_code TEXT NOT NULL DEFAULT '',"
    "  state_reason_message TEXT NOT NULL DEFAULT '',"
    "  transition_reason TEXT NOT NULL DEFAULT '', launch_ms INTEGER NOT NULL,"
    "  key_name TEXT NOT NULL DEFAULT '', user_data BLOB, client_token TEXT NOT NULL DEFAULT '',"
    "  launch_index INTEGER NOT NULL DEFAULT 0, private_ip TEXT NOT NULL DEFAULT '',"
    "  http_tokens TEXT NOT NULL DEFAULT 'optional',"
    "  http_endpoint TEXT NOT NULL DEFAULT 'enabled', hop_limit INTEGER NOT NULL DEFAULT 1,"
    "  metadata_tags TEXT NOT NULL DEFAULT 'disabled', architecture TEXT NOT NULL,"
    "  root_device_name TEXT NOT NULL, boot_mode TEXT NOT NULL DEFAULT '',"
    "  ena_support INTEGER NOT NULL DEFAULT 0, disable_api_termination INTEGER NOT NULL DEFAULT 0,"
    "  disable_api_stop INTEGER NOT NULL DEFAULT 0,"
    "  shutdown_behavior TEXT NOT NULL DEFAULT 'stop', terminated_ms INTEGER NOT NULL DEFAULT 0,"
    "  accel TEXT NOT NULL DEFAULT '', run_dir TEXT NOT NULL DEFAULT '') STRICT;"
    "CREATE INDEX instances_owner ON instances(region, owner, id);"
    "CREATE INDEX instances_state ON instances(state);"
    "CREATE TABLE instance_volumes (instance_id TEXT NOT NULL REFERENCES instances(id)"
    "  ON DELETE CASCADE, volume_id TEXT NOT NULL UNIQUE, device_name TEXT NOT NULL,"
    "  attach_ms INTEGER NOT NULL, delete_on_termination INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL DEFAULT 'attached', boot_index INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (instance_id, device_name)) STRICT;",
    /* 5: the key pair's public key as it was at launch (deleting the pair later changes nothing
     * for the instance, as on EC2). */
    "ALTER TABLE instances ADD COLUMN public_key TEXT NOT NULL DEFAULT '';",
    /* 6: keys (KMS) — customer and AWS-managed keys with their wrapped material and key policy,
     * aliases, grants and key tags. */
    "CREATE TABLE kms_keys (id TEXT PRIMARY KEY, region TEXT NOT NULL, owner TEXT NOT NULL,"
    "  description TEXT NOT NULL DEFAULT '', key_usage TEXT NOT NULL, key_spec TEXT NOT NULL,"
    "  origin TEXT NOT NULL, manager TEXT NOT NULL, state TEXT NOT NULL,"
    "  create_ms INTEGER NOT NULL, deletion_ms INTEGER NOT NULL DEFAULT 0,"
    "  pending_days INTEGER NOT NULL DEFAULT 0, material BLOB NOT NULL,"
    "  policy TEXT NOT NULL) STRICT;"
    "CREATE INDEX kms_keys_owner ON kms_keys(region, owner, id);"
    "CREATE INDEX kms_keys_deletion ON kms_keys(deletion_ms) WHERE state = 'PendingDeletion';"
    "CREATE TABLE kms_aliases (region TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL,"
    "  key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,"
    "  create_ms INTEGER NOT NULL, update_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (region, owner, name)) STRICT;"
    "CREATE INDEX kms_aliases_key ON kms_aliases(key_id);"
    "CREATE TABLE kms_grants (id TEXT PRIMARY KEY,"
    "  key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,"
    "  name TEXT NOT NULL DEFAULT '', issuer TEXT NOT NULL, grantee TEXT NOT NULL,"
    "  retiring TEXT NOT NULL DEFAULT '', operations TEXT NOT NULL,"
    "  constraints TEXT NOT NULL DEFAULT '', create_ms INTEGER NOT NULL) STRICT;"
    "CREATE INDEX kms_grants_key ON kms_grants(key_id, create_ms, id);"
    "CREATE TABLE kms_tags (key_id TEXT NOT NULL REFERENCES kms_keys(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (key_id, key)) STRICT;",
    /* 7: copies between regions (where a copy's source lives) and encrypted data (the wrapped
     * data key of an encrypted volume or snapshot: its chunks' encryption domain). */
    "ALTER TABLE snapshots ADD COLUMN source_region TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE snapshots ADD COLUMN data_key BLOB;"
    "ALTER TABLE volumes ADD COLUMN data_key BLOB;",

    /* 8: tags per account, as on AWS: an account may tag an image or snapshot shared with it,
     * and those tags are its own — neither the owner nor anyone else sees them.  The owner
     * column (the account that tagged) joins the primary key. */
    "CREATE TABLE tags8 (region TEXT NOT NULL, resource_id TEXT NOT NULL,"
    "  resource_type TEXT NOT NULL, owner TEXT NOT NULL, key TEXT NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY (region, resource_id, owner, key)) STRICT;"
    "INSERT INTO tags8 SELECT region, resource_id, resource_type, owner, key, value FROM tags;"
    "DROP TABLE tags;"
    "ALTER TABLE tags8 RENAME TO tags;"
    "CREATE INDEX tags_owner ON tags(region, owner, resource_id);",

    /* 9: block device mappings clustered by their primary key (WITHOUT ROWID): a page of images
     * reads its mappings from the key's b-tree alone, not an index and then the table. */
    "CREATE TABLE image_bdms9 (image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL, device_name TEXT NOT NULL, kind TEXT NOT NULL,"
    "  virtual_name TEXT NOT NULL DEFAULT '', snapshot_id TEXT NOT NULL DEFAULT '',"
    "  volume_size INTEGER NOT NULL DEFAULT 0, volume_type TEXT NOT NULL DEFAULT '',"
    "  iops INTEGER NOT NULL DEFAULT 0, throughput INTEGER NOT NULL DEFAULT 0,"
    "  delete_on_termination INTEGER NOT NULL DEFAULT 1, encrypted INTEGER NOT NULL DEFAULT 0,"
    "  kms_key_id TEXT NOT NULL DEFAULT '', PRIMARY KEY (image_id, idx)) STRICT, WITHOUT ROWID;"
    "INSERT INTO image_bdms9 (image_id, idx, device_name, kind, virtual_name, snapshot_id,"
    "  volume_size, volume_type, iops, throughput, delete_on_termination, encrypted, kms_key_id)"
    "  SELECT image_id, idx, device_name, kind, virtual_name, snapshot_id, volume_size,"
    "  volume_type, iops, throughput, delete_on_termination, encrypted, kms_key_id"
    "  FROM image_bdms;"
    "DROP TABLE image_bdms;"
    "ALTER TABLE image_bdms9 RENAME TO image_bdms;"
    "CREATE INDEX image_bdms_snapshot ON image_bdms(snapshot_id);",
};

int db_schema_version(void)
{
    return (int)(sizeof(migrations) / sizeof(migrations[0]));
}

int db_rc(int src)
{
    switch (src & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return 0;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_CONSTRAINT:
        return -EEXIST;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_READONLY:
        return -EROFS;
    default:
        return -EIO;
    }
}

sqlite3_stmt *db_stmt(struct db *db, const char *sql)
{
    /* Statements are keyed by the address of their (static) SQL text. */
    size_t h = ((uintptr_t)sql >> 4) % DB_STMT_SLOTS;
    for (size_t i = 0; i < DB_STMT_SLOTS; i++) {
        struct db_stmt_slot *s = &db->stmts[(h + i) % DB_STMT_SLOTS];
        if (s->sql == sql) {
            sqlite3_reset(s->stmt);
            sqlite3_clear_bindings(s->stmt);
            return s->stmt;
        }
        if (!s->sql) {
            if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt, NULL) !=
                SQLITE_OK)
                return NULL;
            s->sql = sql;
            return s->stmt;
        }
    }
    return NULL; /* more distinct statements than slots: a programming error */
}

int db_exec(struct db *db, const char *sql)
{
    return db_rc(sqlite3_exec(db->h, sql, NULL, NULL, NULL));
}

void db_copy_text(sqlite3_stmt *st, int col, char *out, size_t outlen)
{
    if (!outlen)
        return;
    /* Text first, then its length: the order SQLite documents for a column read as text.  A
     * plain copy (no snprintf): rows are copied a column at a time by the thousand. */
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, t ? (const char *)t : "", n);
    out[n] = '\0';
}

void db_copy_blob(sqlite3_stmt *st, int col, uint8_t *out, size_t cap, size_t *len)
{
    const void *b = sqlite3_column_blob(st, col);
    size_t n = (size_t)sqlite3_column_bytes(st, col);
    *len = b && n <= cap ? n : 0;
    if (*len)
        memcpy(out, b, n);
}

int db_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    int r = db_rc(rc);
    sqlite3_reset(st);
    return r;
}

static int read_version(sqlite3 *h, int *ret)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
        return -EIO;
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : -EIO;
    if (rc == 0)
        *ret = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc;
}

int db_file_version(const char *path, int *ret_version)
{
    if (access(path, F_OK) < 0)
        return -ENOENT;
    sqlite3 *h;
    if (sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return -EIO;
    }
    sqlite3_busy_timeout(h, 5000);
    int rc = read_version(h, ret_version);
    sqlite3_close(h);
    return rc;
}

static int migrate(struct db *db)
{
    int v;
    int rc = read_version(db->h, &v);
    if (rc < 0)
        return rc;
    if (v > db_schema_version())
        return -EPROTO;
    if (v == db_schema_version())
        return 0;
    rc = db_begin(db);
    if (rc < 0)
        return rc;
    /* Another process may have migrated while we waited for the lock. */
    rc = read_version(db->h, &v);
    for (; rc == 0 && v < db_schema_version(); v++) {
        rc = db_exec(db, migrations[v]);
        if (rc == 0) {
            char pragma[64];
            snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %d", v + 1);
            rc = db_exec(db, pragma);
        }
    }
    if (rc < 0) {
        db_rollback(db);
        return rc;
    }
    return db_commit(db);
}

int db_open(const char *path, bool create, struct db **ret)
{
    int v;
    if (!create && access(path, F_OK) < 0)
        return -ENOENT;
    /* Check before opening read-write, so a newer file is never touched (not even its WAL). */
    if (db_file_version(path, &v) == 0 && v > db_schema_version())
        return -EPROTO;
    struct db *db = calloc(1, sizeof(*db));
    if (!db)
        return -ENOMEM;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    if (sqlite3_open_v2(path, &db->h, flags, NULL) != SQLITE_OK) {
        sqlite3_close(db->h);
        free(db);
        return -EIO;
    }
    sqlite3_busy_timeout(db->h, 10000);
    sqlite3_extended_result_codes(db->h, 0);
    int rc = db_exec(db, "PRAGMA journal_mode=WAL");
    if (rc == 0)
        rc = db_exec(db, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON");
    /* Reads through a shared mapping of the file: every pooled connection reads the one page
     * cache instead of filling a private 2 MiB cache each (writes still go through write()). */
    if (rc == 0)
        rc = db_exec(db, "PRAGMA mmap_size=268435456");
    if (rc == 0)
        rc = migrate(db);
    if (rc < 0) {
        db_close(db);
        return rc;
    }
    *ret = db;
    return 0;
}

void db_close(struct db *db)
{
    if (!db)
        return;
    for (size_t i = 0; i < DB_STMT_SLOTS; i++)
        if (db->stmts[i].stmt)
            sqlite3_finalize(db->stmts[i].stmt);
    sqlite3_close(db->h);
    free(db);
}

int db_data_version(struct db *db, uint64_t *out)
{
    sqlite3_stmt *st = db_stmt(db, "PRAGMA data_version");
    if (!st)
        return -EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : db_rc(rc);
}

int db_begin(struct db *db)
{
    return db_exec(db, "BEGIN IMMEDIATE");
}

int db_commit(struct db *db)
{
    int rc = db_exec(db, "COMMIT");
    if (rc < 0)
        db_rollback(db);
    return rc;
}

void db_rollback(struct db *db)
{
    if (!sqlite3_get_autocommit(db->h))
        sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
}

int db_setting_get(struct db *db, const char *key, char *out, size_t outlen)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT value FROM settings WHERE key = ?1");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        db_copy_text(st, 0, out, outlen);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? -ENOENT : db_rc(rc);
}

int db_setting_set(struct db *db, const char *key, const char *value)
{
    sqlite3_stmt *st = db_stmt(db, "INSERT INTO settings (key, value) VALUES (?1, ?2) "
                                   "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
    if (!st)
        return -EIO;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    return db_step_done(st);
}
