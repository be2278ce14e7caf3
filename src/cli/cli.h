/*
 * cli.h — the `amid` command line: one function per subcommand, shared option parsing and
 * output in the formats scripts rely on (`--format env|json`).
 */
#ifndef AMID_CLI_H
#define AMID_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"

enum cli_format { FMT_ENV, FMT_JSON };

/* Parses "env" or "json"; -1 when neither. */
int cli_format_parse(const char *s);

/* Prints new credentials: the `export` line (env) or a JSON object.  `region` is the default
 * region to print.  Wipes nothing: the caller wipes `c`. */
void cli_print_creds(enum cli_format fmt, const struct core_creds *c, const char *endpoint,
                     const char *region);

int cmd_init(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_account(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_nbd_uri(int argc, char **argv);
int cmd_clock(int argc, char **argv);
int cmd_catalog(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_du(int argc, char **argv);
/* The instance metadata service for one guest connection on stdin/stdout (cli_imds.c). */
int cmd_imds(int argc, char **argv);

/* ---- shared by import and export (cli_import.c, cli_progress.c) ---- */

struct blockdev;
struct buf;

/* A progress bar on stderr (cli_progress.c).  cli_progress_new returns NULL when stderr is not
 * a terminal (or out of memory); every other call accepts NULL and then does nothing.
 * cli_progress_add is safe from any thread and redraws at most ten times a second;
 * cli_progress_end draws the final state (`ok`) or leaves the bar as it is, and frees. */
struct cli_progress;
bool cli_progress_wanted(void);
struct cli_progress *cli_progress_new(const char *label, uint64_t total);
void cli_progress_add(struct cli_progress *p, uint64_t n);
void cli_progress_set_total(struct cli_progress *p, uint64_t total);
void cli_progress_end(struct cli_progress *p, bool ok);

/* A data directory opened for direct access, with the caller its work is done as: the account
 * `account` (id or name; NULL: the first account that is not a system account) in `region`
 * (NULL: us-east-1 when present, else the first region).  Prints why not on stderr. */
struct cli_direct {
    struct app *app;
    char account_id[16];
    char region[32];
    struct core_caller who;
};
int cli_direct_open(const char *cmd, const char *data, const char *account, const char *region,
                    struct cli_direct *ret);
void cli_direct_close(struct cli_direct *d);

/* Runs argv[0] (found on PATH) with `argv`, stdin from /dev/null; its stdout goes into `out`
 * (when non-NULL, capped by the buffer) and the end of its stderr, one line, into `err`.
 * Returns its exit status (0-255), 128+N when killed by signal N, or a negative errno when it
 * could not run (-ENOENT: not installed). */
int cli_run(char *const argv[], struct buf *out, char *err, size_t errlen);

/* Writes `path` as qemu-img must be given a file name: starting with '/' or "./", so that a
 * name like "json:{...}" or "nbd:host" is not taken for a protocol, nor "-x" for an option. */
void cli_qemu_path(const char *path, char *out, size_t outlen);

/* A private NBD server on a Unix socket in a new directory only this user can enter (under
 * $TMPDIR, named after `prefix`), serving `bd` under any export name with `workers` threads per
 * connection (1: one request at a time, in the order the client sends them).  cli_nbd_uri is
 * the nbd+unix:// URI to give qemu-img.  cli_nbd_stop stops it (every callback has returned
 * when it does) and removes the socket and directory; accepts NULL. */
struct cli_nbd;
int cli_nbd_start(struct blockdev *bd, const char *prefix, unsigned workers, struct cli_nbd **ret);
const char *cli_nbd_uri(const struct cli_nbd *n);
void cli_nbd_stop(struct cli_nbd *n);

/* Set by SIGINT, SIGTERM and SIGHUP once cli_catch_signals ran: long commands stop, clean up
 * (a half-made snapshot or file is removed) and exit 1.  SIGPIPE is ignored. */
extern volatile sig_atomic_t cli_interrupted;
void cli_catch_signals(void);

/* Workers an import or export uses by default: 8 connections through the API; in a data
 * directory two per CPU, since a block put spends much of its time waiting for fsync. */
unsigned cli_default_workers(bool direct);

/* Parses a decimal count in [min, max]; -1 when it is not one. */
long cli_parse_count(const char *s, long min, long max);

#endif
