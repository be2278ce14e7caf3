/*
 * cli.h — the `amid` command line: one function per subcommand, shared option parsing and
 * output in the formats scripts rely on (`--format env|json`).
 */
#ifndef AMID_CLI_H
#define AMID_CLI_H

#include <stdbool.h>

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

#endif
