/*
 * cli_main.c — `amid`'s entry point and subcommand table.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    { "init", cmd_init, "create a data directory, its master key, regions and a first account" },
    { "serve", cmd_serve, "run the daemon (HTTP API) in the foreground" },
    { "account", cmd_account, "create or list accounts (account create NAME | account list)" },
    { "key", cmd_key, "create, delete or list access keys" },
    { "import", cmd_import, "make a snapshot from a disk image (raw, qcow2, vmdk, vhdx, vpc)" },
    { "export", cmd_export, "write a snapshot to a disk image (raw or qcow2)" },
    { "catalog", cmd_catalog, "import the system catalogue image (catalog import)" },
    { "clock", cmd_clock, "show or move amid's clock (admin only: for testing time-based rules)" },
    { "nbd-uri", cmd_nbd_uri, "print the NBD URI the daemon serves a volume or snapshot at" },
    { "verify", cmd_verify, "check every reference and, with --read-data, every chunk" },
    { "gc", cmd_gc, "free the chunks nothing refers to any more" },
    { "du", cmd_du, "storage per snapshot and image: full, stored, unique, shared" },
    { "imds", cmd_imds, "instance metadata service for one guest connection (QEMU runs it)" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: amid COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nRun `amid COMMAND --help` for a command's options.\n");
}

int main(int argc, char **argv)
{
    /* Everything amid creates (database, chunks, sockets) is for its owner alone. */
    umask(077);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("amid 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "amid: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
