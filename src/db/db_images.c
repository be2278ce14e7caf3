/*
 * db_images.c — rows for machine images, their block device mappings and launch permissions,
 * and per-account settings.
 *
 * DescribeImages lists through db_image_each, which narrows its walk in SQL with the filters that
 * map exactly onto columns (EC2 wildcards as GLOB patterns, a name prefix as a range of the name
 * index), and reads the mappings and tags of a page of images in a few queries.
 */
#include "db/db_int.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
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
    EACH_ROW(st, struct db_image, image_row, fn, ctx);
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

/* ---- listing with filters pushed into SQL ---- */

/* Longest pattern pushed down; its GLOB form is at most three times as long ("[[]" for "["). */
#define PATTERN_MAX 256
#define GLOB_MAX    (3 * PATTERN_MAX + 1)

/* The pattern lists of a db_image_query in GLOB's syntax, ready to bind. */
struct narrow {
    char glob[3][DB_IMAGE_PATTERNS][GLOB_MAX];
    const char *bind[3][DB_IMAGE_PATTERNS];        /* into glob, or NULL */
    char lo[PATTERN_MAX + 1], hi[PATTERN_MAX + 1]; /* names in [lo, hi), when lo[0] */
};

/* Writes wildcard `pattern` in GLOB's syntax into out[GLOB_MAX], and its literal prefix (the
 * bytes every match starts with) into prefix[PATTERN_MAX + 1].  `*` is the same in both; `?` is
 * one byte in the pattern and one character for GLOB, the same on the ASCII text of the columns
 * narrowed; a literal `*`, `?` or `[` becomes a one-character class.  False when the pattern is
 * too long or not ASCII (not pushed down then). */
static bool glob_of(const char *pattern, char *out, char *prefix)
{
    size_t o = 0, np = 0;
    bool literal_run = true;
    enum str_wc k;
    char c;
    if (strlen(pattern) > PATTERN_MAX)
        return false;
    for (const char *p = pattern; (k = str_wildcard_token(&p, &c)) != STR_WC_END;) {
        if (k == STR_WC_LITERAL && (unsigned char)c >= 0x80)
            return false;
        if (k != STR_WC_LITERAL) {
            out[o++] = k == STR_WC_ANY ? '*' : '?';
            literal_run = false;
            continue;
        }
        if (c == '*' || c == '?' || c == '[') {
            out[o++] = '[';
            out[o++] = c;
            out[o++] = ']';
        } else {
            out[o++] = c;
        }
        if (literal_run)
            prefix[np++] = c;
    }
    out[o] = '\0';
    prefix[np] = '\0';
    return true;
}

/* Translates one pattern list into n->glob[col]; with `prefix`, the literal prefix all of its
 * patterns share goes there.  A list with a pattern GLOB cannot carry narrows nothing. */
static void narrow_list(struct narrow *n, int col, const char *const *pats, char *prefix)
{
    char one[PATTERN_MAX + 1];
    size_t k = 0;
    for (size_t i = 0; i < DB_IMAGE_PATTERNS; i++) {
        if (!pats[i])
            continue;
        if (!glob_of(pats[i], n->glob[col][k], one)) {
            memset(n->bind[col], 0, sizeof(n->bind[col]));
            if (prefix)
                prefix[0] = '\0';
            return;
        }
        n->bind[col][k] = n->glob[col][k];
        if (prefix && k == 0) {
            memcpy(prefix, one, sizeof(one));
        } else if (prefix) {
            size_t m = 0;
            while (prefix[m] && prefix[m] == one[m])
                m++;
            prefix[m] = '\0';
        }
        k++;
    }
}

/* Fills `n` from `q`; whether the names share a literal prefix (then n->lo and n->hi bound the
 * names that start with it: hi is lo with its last byte raised). */
static bool narrow_init(struct narrow *n, const struct db_image_query *q)
{
    memset(n->bind, 0, sizeof(n->bind));
    narrow_list(n, 0, q->ids, NULL);
    narrow_list(n, 1, q->names, n->lo);
    narrow_list(n, 2, q->states, NULL);
    size_t len = n->bind[1][0] ? strlen(n->lo) : 0;
    while (len && (unsigned char)n->lo[len - 1] == 0xff)
        len--;
    if (!len)
        return false;
    memcpy(n->hi, n->lo, len);
    n->hi[len - 1]++;
    n->hi[len] = '\0';
    return true;
}

/* The terms every listing shares, ?-numbered as db_image_each binds them: who may see a row, */
#define IMAGE_ACCESS                                                                           \
    "AND (?4 = 0 OR public = 1) AND (?5 IS NULL OR EXISTS (SELECT 1 FROM image_permissions p " \
    "WHERE p.image_id = i.id AND p.grantee = ?5)) AND (?6 IS NULL OR owner = ?6 OR "           \
    "public = 1 OR EXISTS (SELECT 1 FROM image_permissions p WHERE p.image_id = i.id AND "     \
    "p.grantee = ?6)) "
/* the pattern lists (an OR inside parentheses, not a bare `GLOB ?`: a bare one would make SQLite
 * prepare the statement again for every new pattern, for its LIKE optimisation), */
#define IMAGE_NARROW                                                                         \
    "AND (?8 IS NULL OR id GLOB ?8 OR id GLOB ?9 OR id GLOB ?10 OR id GLOB ?11) "            \
    "AND (?12 IS NULL OR name GLOB ?12 OR name GLOB ?13 OR name GLOB ?14 OR name GLOB ?15) " \
    "AND (?16 IS NULL OR state GLOB ?16 OR state GLOB ?17 OR state GLOB ?18 OR "             \
    "state GLOB ?19) "
/* and the order. */
#define IMAGE_ORDER "ORDER BY id LIMIT ?22"
_Static_assert(DB_IMAGE_PATTERNS == 4, "IMAGE_NARROW binds four patterns per column");

/* The most rows images_top holds (a db_image is a couple of KiB). */
#define TOP_MAX 1024

/* The `limit` rows of `st` with the smallest ids, to `fn` in id order: SQLite's ORDER BY ... LIMIT
 * would copy every matching row whole into its sorter first; here a row is copied only when its id
 * places it among those kept so far. */
static int images_top(sqlite3_stmt *st, size_t limit,
                      int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    struct db_image *rows = malloc(limit * sizeof(*rows));
    struct db_image **top = malloc(limit * sizeof(*top)); /* into rows, by id; n in use */
    size_t n = 0;
    int rc = rows && top ? 0 : -ENOMEM, step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (!id || (n == limit && strcmp(id, top[n - 1]->id) >= 0))
            continue;
        /* A full list gives up its last row, whose place the new one takes. */
        struct db_image *m = n == limit ? top[--n] : &rows[n];
        image_row(st, m);
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(top[mid]->id, m->id) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        memmove(top + lo + 1, top + lo, (n - lo) * sizeof(*top));
        top[lo] = m;
        n++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_rc(step);
    sqlite3_reset(st);
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = fn(ctx, top[i]);
    free(top);
    free(rows);
    return rc;
}

int db_image_each(struct db *db, const struct db_image_query *q,
                  int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    struct narrow nw, *n = &nw;
    bool range = narrow_init(n, q);
    /* Name patterns of the owner's live images: its name index, the rows then put in id order. */
    bool by_name = q->owner && q->live && n->bind[1][0] && q->limit && q->limit <= TOP_MAX;
    sqlite3_stmt *st;
    if (by_name && range) {
        /* Names with a common prefix: only that stretch of the index. */
        st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images i INDEXED BY images_name WHERE "
                         "region = ?1 AND owner = ?2 AND state != 'deregistered' AND "
                         "name >= ?20 AND name < ?21 AND id > ?3 " IMAGE_ACCESS IMAGE_NARROW);
    } else if (by_name) {
        /* Other patterns: matched on the index entries before any row is read. */
        st = db_stmt(db, "SELECT " IMAGE_COLS " FROM images i INDEXED BY images_name WHERE "
                         "region = ?1 AND owner = ?2 AND state != 'deregistered' AND "
                         "id > ?3 " IMAGE_ACCESS IMAGE_NARROW);
    } else if (q->owner) {
        /* The common case (Owners=self): the owner index, in id order. */
        st = db_stmt(
            db, "SELECT " IMAGE_COLS " FROM images i WHERE region = ?1 AND owner = ?2 "
                "AND id > ?3 AND (?7 = 0 OR state != 'deregistered') " IMAGE_ACCESS IMAGE_NARROW
                    IMAGE_ORDER);
    } else {
        st = db_stmt(
            db, "SELECT " IMAGE_COLS " FROM images i WHERE region = ?1 AND "
                "(?2 IS NULL) AND id > ?3 AND (?7 = 0 OR state != 'deregistered') " IMAGE_ACCESS
                    IMAGE_NARROW IMAGE_ORDER);
    }
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, q->region);
    BIND_TEXT(st, 2, q->owner);
    BIND_TEXT(st, 3, q->after ? q->after : "");
    sqlite3_bind_int(st, 4, q->public_only);
    BIND_TEXT(st, 5, q->granted_to);
    BIND_TEXT(st, 6, q->visible_to);
    /* A statement without some of these parameters ignores them (SQLITE_RANGE). */
    sqlite3_bind_int(st, 7, q->live);
    for (int col = 0; col < 3; col++)
        for (int i = 0; i < DB_IMAGE_PATTERNS; i++)
            BIND_TEXT(st, 8 + col * DB_IMAGE_PATTERNS + i, n->bind[col][i]);
    if (range) {
        BIND_TEXT(st, 20, n->lo);
        BIND_TEXT(st, 21, n->hi);
    }
    sqlite3_bind_int64(st, 22, q->limit ? (sqlite3_int64)q->limit : -1);
    return by_name ? images_top(st, q->limit, fn, ctx) : images_rows(st, fn, ctx);
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

static void bdm_row(sqlite3_stmt *st, int col, struct db_bdm *b)
{
    db_copy_text(st, col, b->device_name, sizeof(b->device_name));
    db_copy_text(st, col + 1, b->kind, sizeof(b->kind));
    db_copy_text(st, col + 2, b->virtual_name, sizeof(b->virtual_name));
    db_copy_text(st, col + 3, b->snapshot_id, sizeof(b->snapshot_id));
    b->volume_size = sqlite3_column_int64(st, col + 4);
    db_copy_text(st, col + 5, b->volume_type, sizeof(b->volume_type));
    b->iops = sqlite3_column_int64(st, col + 6);
    b->throughput = sqlite3_column_int64(st, col + 7);
    b->delete_on_termination = sqlite3_column_int(st, col + 8) != 0;
    b->encrypted = sqlite3_column_int(st, col + 9) != 0;
    db_copy_text(st, col + 10, b->kms_key_id, sizeof(b->kms_key_id));
}

/* bdm_row for a statement whose first column is the mapping's. */
static void bdm_row0(sqlite3_stmt *st, struct db_bdm *b)
{
    bdm_row(st, 0, b);
}

int db_bdm_each(struct db *db, const char *image_id, int (*fn)(void *ctx, const struct db_bdm *b),
                void *ctx)
{
    sqlite3_stmt *st =
        db_stmt(db, "SELECT " BDM_COLS " FROM image_bdms WHERE image_id = ?1 ORDER BY idx");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, image_id);
    EACH_ROW(st, struct db_bdm, bdm_row0, fn, ctx);
}

/* Ids per query of the *_each_of calls: a fixed list of parameters (unused ones NULL, which
 * IN never matches), so that each call is one cached statement. */
#define IDS_PER_QUERY 64
#define IDS_8         "?, ?, ?, ?, ?, ?, ?, ?"
#define IDS_64        IDS_8 ", " IDS_8 ", " IDS_8 ", " IDS_8 ", " IDS_8 ", " IDS_8 ", " IDS_8 ", " IDS_8

/* Binds ids[0..n) (at most IDS_PER_QUERY) to IDS_PER_QUERY parameters from `first` on, NULL
 * after them. */
static void bind_ids(sqlite3_stmt *st, int first, const char *const *ids, size_t n)
{
    for (size_t i = 0; i < IDS_PER_QUERY; i++)
        BIND_TEXT(st, first + (int)i, i < n ? ids[i] : NULL);
}

int db_bdm_each_of(struct db *db, const char *const *ids, size_t n,
                   int (*fn)(void *ctx, const char *image_id, const struct db_bdm *b), void *ctx)
{
    for (size_t at = 0; at < n; at += IDS_PER_QUERY) {
        sqlite3_stmt *st = db_stmt(db, "SELECT image_id, " BDM_COLS " FROM image_bdms WHERE "
                                       "image_id IN (" IDS_64 ") ORDER BY image_id, idx");
        if (!st)
            return -EIO;
        bind_ids(st, 1, ids + at, n - at < IDS_PER_QUERY ? n - at : IDS_PER_QUERY);
        int rc, out = 0;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            struct db_bdm b;
            char id[32];
            db_copy_text(st, 0, id, sizeof(id));
            bdm_row(st, 1, &b);
            out = fn(ctx, id, &b);
            if (out)
                break;
        }
        if (!out && rc != SQLITE_DONE)
            out = db_rc(rc);
        sqlite3_reset(st);
        if (out)
            return out;
    }
    return 0;
}

/* Whether `owner` tagged any resource of a region whose id lies in [lo, hi]: one probe of the
 * owner index, which spares the lists of ids their queries when it tagged none. */
static int tags_in_range(struct db *db, const char *region, const char *owner, const char *lo,
                         const char *hi)
{
    sqlite3_stmt *st = db_stmt(db, "SELECT 1 FROM tags WHERE region = ?1 AND owner = ?4 AND "
                                   "resource_id >= ?2 AND resource_id <= ?3 LIMIT 1");
    if (!st)
        return -EIO;
    BIND_TEXT(st, 1, region);
    BIND_TEXT(st, 2, lo);
    BIND_TEXT(st, 3, hi);
    BIND_TEXT(st, 4, owner);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : db_rc(rc);
}

int db_image_tags_each(struct db *db, const char *region, const char *owner, const char *const *ids,
                       size_t n, int (*fn)(void *ctx, const struct db_tag *t), void *ctx)
{
    const char *lo = n ? ids[0] : NULL, *hi = lo;
    for (size_t i = 1; i < n; i++) {
        lo = strcmp(ids[i], lo) < 0 ? ids[i] : lo;
        hi = strcmp(ids[i], hi) > 0 ? ids[i] : hi;
    }
    int any = n ? tags_in_range(db, region, owner, lo, hi) : 0;
    if (any <= 0)
        return any;
    for (size_t at = 0; at < n; at += IDS_PER_QUERY) {
        /* The tags' primary key (region, resource_id, owner, key) answers each id in key
         * order. */
        sqlite3_stmt *st = db_stmt(db, "SELECT resource_id, resource_type, key, value FROM tags "
                                       "WHERE region = ?1 AND resource_id IN (" IDS_64 ") "
                                       "AND owner = ?66 ORDER BY resource_id, key");
        if (!st)
            return -EIO;
        BIND_TEXT(st, 1, region);
        BIND_TEXT(st, 66, owner);
        bind_ids(st, 2, ids + at, n - at < IDS_PER_QUERY ? n - at : IDS_PER_QUERY);
        int out = db_tag_rows(st, fn, ctx);
        if (out)
            return out;
    }
    return 0;
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
    EACH_TEXT(st, 32, fn, ctx);
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
    EACH_TEXT(st, 32, fn, ctx);
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
