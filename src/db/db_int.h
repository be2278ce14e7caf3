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

#endif
