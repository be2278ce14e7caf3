/*
 * cli_maint.c — `amid verify`, `amid gc` and `amid du`: block storage maintenance on a data
 * directory (core_maint.c does the work).  Safe while a daemon serves the directory.
 *
 * As everywhere in the command line, stdout is for scripts: with --format env one line of
 * KEY=VALUE words per item (values with other characters than [A-Za-z0-9._:/@+,-] are
 * single-quoted for the shell) and a summary line last; with --format json one document.  Human
 * notes go to stderr.  Exit codes: 0 fine, 1 problems found or the work failed, 2 bad usage.
 */
#include "cli/cli.h"

#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int maint_usage(const char *cmd, const char *usage)
{
    fprintf(stderr, "usage: amid %s %s\n", cmd, usage);
    return 2;
}

static struct app *maint_open(const char *cmd, const char *data)
{
    struct err e = { 0 };
    struct app *app;
    if (core_open(data, &app, &e) < 0) {
        fprintf(stderr, "amid %s: %s\n", cmd, e.msg);
        return NULL;
    }
    return app;
}

/* Prints ` KEY=VALUE`, quoting VALUE for the shell when it needs it. */
static void env_word(const char *key, const char *value, bool first)
{
    bool plain = *value != '\0';
    for (const char *p = value; *p && plain; p++)
        plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/@+,-",
                       *p) != NULL;
    printf("%s%s=", first ? "" : " ", key);
    if (plain) {
        fputs(value, stdout);
        return;
    }
    putchar('\'');
    for (const char *p = value; *p; p++) {
        if (*p == '\'')
            fputs("'\\''", stdout);
        else if (*p == '\n')
            putchar(' ');
        else
            putchar(*p);
    }
    putchar('\'');
}

static void env_num(const char *key, uint64_t v)
{
    printf(" %s=%" PRIu64, key, v);
}

static void json_print(json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2));
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(doc);
}

/* ---- verify ---- */

struct verify_out {
    int fmt;
    json_t *problems;
};

static void on_problem(void *ctx, const struct core_problem *p)
{
    struct verify_out *o = ctx;
    const char *sev = p->warning ? "warning" : "error";
    if (o->fmt == FMT_JSON) {
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "Kind", p->kind, "Severity", sev,
                              "Region", p->region, "Id", p->id, "Detail", p->detail);
        if (j && p->chunk)
            json_object_set_new(j, "Chunk", json_string(p->chunk));
        json_array_append_new(o->problems, j);
        return;
    }
    env_word("AMID_VERIFY_PROBLEM", p->kind, true);
    env_word("AMID_VERIFY_SEVERITY", sev, false);
    env_word("AMID_VERIFY_REGION", p->region, false);
    env_word("AMID_VERIFY_ID", p->id, false);
    if (p->chunk)
        env_word("AMID_VERIFY_CHUNK", p->chunk, false);
    env_word("AMID_VERIFY_DETAIL", p->detail, false);
    putchar('\n');
    fflush(stdout);
}

int cmd_verify(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },    { "read-data", no_argument, NULL, 'r' },
        { "threads", required_argument, NULL, 't' }, { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [--read-data [--threads N]] [--format env|json]";
    const char *data = NULL;
    struct core_verify_opts vo = { 0 };
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:rt:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'r':
            vo.read_data = true;
            break;
        case 't': {
            long n = cli_parse_count(optarg, 1, 64);
            if (n < 0)
                return maint_usage("verify", usage);
            vo.threads = (unsigned)n;
            break;
        }
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return maint_usage("verify", usage);
            break;
        case 'h':
            printf("usage: amid verify %s\n", usage);
            return 0;
        default:
            return maint_usage("verify", usage);
        }
    }
    if (!data || optind != argc)
        return maint_usage("verify", usage);
    struct app *app = maint_open("verify", data);
    if (!app)
        return 1;
    struct verify_out out = { fmt, json_array() };
    struct core_verify_stats st;
    struct err e = { 0 };
    int rc = core_verify(app, &vo, on_problem, &out, &st, &e);
    core_close(app);
    if (rc < 0) {
        fprintf(stderr, "amid verify: %s\n", e.msg);
        json_decref(out.problems);
        return 1;
    }
    bool ok = st.errors == 0;
    if (fmt == FMT_JSON) {
        json_t *checked =
            json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "Regions",
                      (json_int_t)st.regions, "Snapshots", (json_int_t)st.snapshots, "Maps",
                      (json_int_t)st.maps, "Volumes", (json_int_t)st.volumes, "Uploads",
                      (json_int_t)st.uploads, "Images", (json_int_t)st.images, "Chunks",
                      (json_int_t)st.chunks, "ChunksRead", (json_int_t)st.chunks_read, "BytesRead",
                      (json_int_t)st.bytes_read, "VolumesOpened", st.volumes_opened);
        json_print(json_pack("{s:b, s:I, s:I, s:o, s:o}", "Ok", ok, "Errors", (json_int_t)st.errors,
                             "Warnings", (json_int_t)st.warnings, "Checked", checked, "Problems",
                             out.problems));
    } else {
        json_decref(out.problems);
        env_word("AMID_VERIFY_OK", ok ? "true" : "false", true);
        env_num("AMID_VERIFY_ERRORS", st.errors);
        env_num("AMID_VERIFY_WARNINGS", st.warnings);
        env_num("AMID_VERIFY_REGIONS", st.regions);
        env_num("AMID_VERIFY_SNAPSHOTS", st.snapshots);
        env_num("AMID_VERIFY_VOLUMES", st.volumes);
        env_num("AMID_VERIFY_UPLOADS", st.uploads);
        env_num("AMID_VERIFY_IMAGES", st.images);
        env_num("AMID_VERIFY_CHUNKS", st.chunks);
        env_num("AMID_VERIFY_CHUNKS_READ", st.chunks_read);
        env_num("AMID_VERIFY_BYTES_READ", st.bytes_read);
        env_word("AMID_VERIFY_VOLUMES_OPENED", st.volumes_opened ? "true" : "false", false);
        putchar('\n');
    }
    if (st.errors || st.warnings)
        fprintf(stderr, "amid verify: %" PRIu64 " error(s), %" PRIu64 " warning(s)\n", st.errors,
                st.warnings);
    return ok ? 0 : 1;
}

/* ---- gc ---- */

int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' }, { "grace", required_argument, NULL, 'g' },
        { "dry-run", no_argument, NULL, 'n' },    { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },       { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [--grace SECONDS (default 3600)] [--dry-run] "
                        "[--format env|json]";
    const char *data = NULL;
    struct core_gc_opts go = { CORE_GC_DEFAULT_GRACE_MS, false };
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:g:nf:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'g': {
            long s = cli_parse_count(optarg, 0, 100L * 365 * 86400);
            if (s < 0)
                return maint_usage("gc", usage);
            go.grace_ms = (int64_t)s * 1000;
            break;
        }
        case 'n':
            go.dry_run = true;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return maint_usage("gc", usage);
            break;
        case 'h':
            printf("usage: amid gc %s\n", usage);
            return 0;
        default:
            return maint_usage("gc", usage);
        }
    }
    if (!data || optind != argc)
        return maint_usage("gc", usage);
    struct app *app = maint_open("gc", data);
    if (!app)
        return 1;
    struct core_gc_stats st;
    struct err e = { 0 };
    int rc = core_gc(app, &go, &st, &e);
    core_close(app);
    if (rc < 0) {
        fprintf(stderr, "amid gc: %s\n", e.msg);
        return 1;
    }
    if (fmt == FMT_JSON) {
        json_print(json_pack(
            "{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "DryRun", go.dry_run,
            "GraceSeconds", (json_int_t)(go.grace_ms / 1000), "Chunks", (json_int_t)st.chunks,
            "Bytes", (json_int_t)st.bytes, "ReferencedChunks", (json_int_t)st.referenced,
            "RecentChunks", (json_int_t)st.recent, "RecentBytes", (json_int_t)st.recent_bytes,
            "FreedChunks", (json_int_t)st.freed, "FreedBytes", (json_int_t)st.freed_bytes,
            "MapsFreed", (json_int_t)st.maps_freed, "Skipped", (json_int_t)st.skipped));
    } else {
        env_word("AMID_GC_DRY_RUN", go.dry_run ? "true" : "false", true);
        env_num("AMID_GC_GRACE_SECONDS", (uint64_t)(go.grace_ms / 1000));
        env_num("AMID_GC_CHUNKS", st.chunks);
        env_num("AMID_GC_BYTES", st.bytes);
        env_num("AMID_GC_REFERENCED", st.referenced);
        env_num("AMID_GC_RECENT", st.recent);
        env_num("AMID_GC_RECENT_BYTES", st.recent_bytes);
        env_num("AMID_GC_FREED_CHUNKS", st.freed);
        env_num("AMID_GC_FREED_BYTES", st.freed_bytes);
        env_num("AMID_GC_MAPS_FREED", st.maps_freed);
        env_num("AMID_GC_SKIPPED", st.skipped);
        putchar('\n');
    }
    fprintf(stderr, "amid gc: %s %" PRIu64 " chunk(s), %" PRIu64 " byte(s)\n",
            go.dry_run ? "would free" : "freed", st.freed, st.freed_bytes);
    return 0;
}

/* ---- du ---- */

struct du_out {
    int fmt;
    json_t *snaps, *images;
};

static void on_du_snapshot(void *ctx, const struct core_du_snapshot *s)
{
    struct du_out *o = ctx;
    if (o->fmt == FMT_JSON) {
        json_array_append_new(
            o->snaps,
            json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                      "SnapshotId", s->id, "Region", s->region, "OwnerId", s->owner, "State",
                      s->state, "VolumeId", s->volume_id, "Blocks", (json_int_t)s->blocks,
                      "FullBytes", (json_int_t)s->full_bytes, "Chunks", (json_int_t)s->chunks,
                      "StoredBytes", (json_int_t)s->stored_bytes, "UniqueBytes",
                      (json_int_t)s->unique_bytes, "SharedBytes", (json_int_t)s->shared_bytes,
                      "FreedIfDeletedBytes", (json_int_t)s->freed_bytes, "MissingChunks",
                      (json_int_t)s->missing));
        return;
    }
    env_word("AMID_DU_SNAPSHOT", s->id, true);
    env_word("AMID_DU_REGION", s->region, false);
    env_word("AMID_DU_STATE", s->state, false);
    env_num("AMID_DU_BLOCKS", s->blocks);
    env_num("AMID_DU_FULL", s->full_bytes);
    env_num("AMID_DU_STORED", s->stored_bytes);
    env_num("AMID_DU_UNIQUE", s->unique_bytes);
    env_num("AMID_DU_SHARED", s->shared_bytes);
    env_num("AMID_DU_FREED_IF_DELETED", s->freed_bytes);
    if (s->missing)
        env_num("AMID_DU_MISSING_CHUNKS", s->missing);
    putchar('\n');
}

static void on_du_image(void *ctx, const struct core_du_image *im)
{
    struct du_out *o = ctx;
    if (o->fmt == FMT_JSON) {
        json_t *ids = json_array();
        for (size_t i = 0; i < im->nsnapshots; i++)
            json_array_append_new(ids, json_string(im->snapshots[i]));
        json_array_append_new(
            o->images,
            json_pack("{s:s, s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:I}", "ImageId", im->id,
                      "Region", im->region, "Name", im->name, "State", im->state, "SnapshotIds",
                      ids, "FullBytes", (json_int_t)im->full_bytes, "StoredBytes",
                      (json_int_t)im->stored_bytes, "UniqueBytes", (json_int_t)im->unique_bytes,
                      "SharedBytes", (json_int_t)im->shared_bytes, "FreedIfDeregisteredBytes",
                      (json_int_t)im->unique_bytes));
        return;
    }
    char list[1024] = "";
    size_t l = 0;
    for (size_t i = 0; i < im->nsnapshots && l < sizeof(list); i++)
        l += (size_t)snprintf(list + l, sizeof(list) - l, "%s%s", i ? "," : "", im->snapshots[i]);
    env_word("AMID_DU_IMAGE", im->id, true);
    env_word("AMID_DU_REGION", im->region, false);
    env_word("AMID_DU_SNAPSHOTS", list, false);
    env_num("AMID_DU_FULL", im->full_bytes);
    env_num("AMID_DU_STORED", im->stored_bytes);
    env_num("AMID_DU_UNIQUE", im->unique_bytes);
    env_num("AMID_DU_SHARED", im->shared_bytes);
    putchar('\n');
}

int cmd_du(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "region", required_argument, NULL, 'r' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [--region REGION] [--format env|json]";
    const char *data = NULL, *region = NULL;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:r:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'r':
            region = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return maint_usage("du", usage);
            break;
        case 'h':
            printf("usage: amid du %s\n", usage);
            return 0;
        default:
            return maint_usage("du", usage);
        }
    }
    if (!data || optind != argc)
        return maint_usage("du", usage);
    struct app *app = maint_open("du", data);
    if (!app)
        return 1;
    struct du_out out = { fmt, json_array(), json_array() };
    struct core_du_totals t;
    struct err e = { 0 };
    int rc = core_du(app, region, on_du_snapshot, on_du_image, &out, &t, &e);
    core_close(app);
    if (rc < 0) {
        fprintf(stderr, "amid du: %s\n", e.msg);
        json_decref(out.snaps);
        json_decref(out.images);
        return 1;
    }
    if (fmt == FMT_JSON) {
        json_t *tot = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "Snapshots", (json_int_t)t.snapshots,
            "Images", (json_int_t)t.images, "FullBytes", (json_int_t)t.full_bytes,
            "ReferencedChunks", (json_int_t)t.referenced_chunks, "ReferencedBytes",
            (json_int_t)t.referenced_bytes, "StoreChunks", (json_int_t)t.store_chunks, "StoreBytes",
            (json_int_t)t.store_bytes, "UnreferencedBytes", (json_int_t)t.unreferenced_bytes);
        json_print(json_pack("{s:o, s:o, s:o}", "Snapshots", out.snaps, "Images", out.images,
                             "Totals", tot));
    } else {
        json_decref(out.snaps);
        json_decref(out.images);
        printf("AMID_DU_TOTAL_SNAPSHOTS=%" PRIu64, t.snapshots);
        env_num("AMID_DU_TOTAL_IMAGES", t.images);
        env_num("AMID_DU_TOTAL_FULL", t.full_bytes);
        env_num("AMID_DU_TOTAL_REFERENCED", t.referenced_bytes);
        env_num("AMID_DU_STORE_CHUNKS", t.store_chunks);
        env_num("AMID_DU_STORE_BYTES", t.store_bytes);
        env_num("AMID_DU_UNREFERENCED", t.unreferenced_bytes);
        putchar('\n');
    }
    return 0;
}
