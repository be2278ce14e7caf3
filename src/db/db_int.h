/*
 * db_int.h — what the files of the db module share: the connection struct, the prepared
 * statement cache and small step helpers.  Not for use outside src/db/.
 */
#ifndef AMID_DB_INT_H
#define AMID_DB_INT_H

#include "db/db.h"

#include <sqlite3.h>
#include <stdio.h>

#define DB_STMT_SLOTS 256

struct db_stmt_slot {
    const char *sql;
    sqlite3_stmt *stmt;
};

struct db {
    sqlite3 *h;
    struct db_stmt_slot stmts[DB_STMT_SLOTS];
};

/* Maps an SQLite result code to a negative errno (0 for OK, DONE and ROW). */
int db_rc(int sqlite_rc);
/* The cached, reset statement for `sql`, which must be a string literal (its address is the
 * key).  NULL if it fails to prepare. */
sqlite3_stmt *db_stmt(struct db *db, const char *sql);
int db_exec(struct db *db, const char *sql);
/* Copies a text column, NUL-terminated and truncated to `outlen`. */
void db_copy_text(sqlite3_stmt *st, int col, char *out, size_t outlen);
/* Copies a BLOB column into out[cap] and its length into *len (0 for NULL or one too long). */
void db_copy_blob(sqlite3_stmt *st, int col, uint8_t *out, size_t cap, size_t *len);
/* Steps a statement that returns no rows and resets it; returns 0 or a negative errno. */
int db_step_done(sqlite3_stmt *st);

/* The body of an *_each function: steps `st`, decodes each row into a `type` with
 * row(st, &r) and calls fn(ctx, &r); stops at fn's first non-zero value and returns it, else
 * 0, or the step's error.  Resets `st`. */
#define EACH_ROW(st, type, row, fn, ctx)                 \
    do {                                                 \
        int rc_, out_ = 0;                               \
        while ((rc_ = sqlite3_step(st)) == SQLITE_ROW) { \
            type r_;                                     \
            row(st, &r_);                                \
            out_ = fn(ctx, &r_);                         \
            if (out_)                                    \
                break;                                   \
        }                                                \
        if (!out_ && rc_ != SQLITE_DONE)                 \
            out_ = db_rc(rc_);                           \
        sqlite3_reset(st);                               \
        return out_;                                     \
    } while (0)

/* The same for a statement whose first column is text of fewer than `cap` bytes:
 * fn(ctx, text). */
#define EACH_TEXT(st, cap, fn, ctx)                      \
    do {                                                 \
        int rc_, out_ = 0;                               \
        while ((rc_ = sqlite3_step(st)) == SQLITE_ROW) { \
            char t_[cap];                                \
            db_copy_text(st, 0, t_, sizeof(t_));         \
            out_ = fn(ctx, t_);                          \
            if (out_)                                    \
                break;                                   \
        }                                                \
        if (!out_ && rc_ != SQLITE_DONE)                 \
            out_ = db_rc(rc_);                           \
        sqlite3_reset(st);                               \
        return out_;                                     \
    } while (0)

/* EACH_ROW over tag rows (resource_id, resource_type, key, value), for every tag query. */
int db_tag_rows(sqlite3_stmt *st, int (*fn)(void *ctx, const struct db_tag *t), void *ctx);

#endif
