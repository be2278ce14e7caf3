/*
 * cli_catalog.c — `amid catalog import`: the system catalogue.  Builds the small bootable disk
 * (catalog/build-disk.sh) if it is not built yet, imports it into every region as a snapshot of
 * the system account (alias "amid"), and registers it there as a public image named with its
 * build date and tagged with the disk's SHA-256, so that a second call changes nothing.
 */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CATALOG_ALIAS "amid"
#define CATALOG_NAME  "amid-busybox-x86_64"
#define TAG_SHA       "amid:disk-sha256"

/* The repository's catalog/ directory: next to the binary's build directory, or in the working
 * directory. */
static int catalog_dir(char *out, size_t outlen)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, outlen, "%s/../catalog/build-disk.sh", self);
            if (access(out, X_OK) == 0) {
                snprintf(out, outlen, "%s/../catalog", self);
                return 0;
            }
        }
    }
    if (access("catalog/build-disk.sh", X_OK) == 0) {
        snprintf(out, outlen, "catalog");
        return 0;
    }
    return -ENOENT;
}

/* Runs argv with its stdout captured into `out` (when non-NULL); stderr passes through. */
static int run(char *const argv[], struct buf *out)
{
    int fds[2];
    if (pipe(fds) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -errno;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    char chunk[4096];
    ssize_t r;
    while ((r = read(fds[0], chunk, sizeof(chunk))) > 0)
        if (out)
            buf_append(out, chunk, (size_t)r);
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -errno;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* Imports the disk into `region` as the system account; copies the snapshot id out. */
static int import_disk(const char *data, const char *disk, const char *account, const char *region,
                       char snap[32])
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -errno;
    self[n] = '\0';
    char *argv[] = { self,
                     "import",
                     (char *)disk,
                     "--data",
                     (char *)data,
                     "--account",
                     (char *)account,
                     "--region",
                     (char *)region,
                     "--format",
                     "json",
                     "--no-progress",
                     "--description",
                     "amid system catalogue disk",
                     NULL };
    struct buf out;
    buf_init(&out, 1 << 20);
    int rc = run(argv, &out);
    json_t *doc = rc == 0 ? json_loads(out.data ? out.data : "", 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(doc, "SnapshotId"));
    if (rc == 0 && !id)
        rc = -EIO;
    if (rc == 0)
        snprintf(snap, 32, "%s", id);
    json_decref(doc);
    buf_free(&out);
    return rc;
}

static int catalog_import(const char *data, const char *disk_arg, int fmt)
{
    char dir[PATH_MAX], disk[PATH_MAX + 64], manifest[PATH_MAX + 64];
    if (disk_arg) {
        snprintf(disk, sizeof(disk), "%s", disk_arg);
        manifest[0] = '\0';
    } else {
        if (catalog_dir(dir, sizeof(dir)) < 0) {
            fprintf(stderr, "amid catalog import: cannot find catalog/build-disk.sh\n");
            return 1;
        }
        char script[PATH_MAX + 32], outdir[PATH_MAX + 16];
        snprintf(script, sizeof(script), "%s/build-disk.sh", dir);
        snprintf(outdir, sizeof(outdir), "%s/out", dir);
        char *argv[] = { script, outdir, NULL };
        fprintf(stderr, "amid: building the catalogue disk (%s)\n", outdir);
        if (run(argv, NULL) < 0) {
            fprintf(stderr, "amid catalog import: %s failed\n", script);
            return 1;
        }
        snprintf(disk, sizeof(disk), "%s/amid-busybox-x86_64.raw", outdir);
        snprintf(manifest, sizeof(manifest), "%s/manifest.json", outdir);
    }
    /* The disk's SHA-256 and date: from the manifest, or computed. */
    char sha[65] = "", date[16] = "";
    json_t *m = manifest[0] ? json_load_file(manifest, 0, NULL) : NULL;
    if (json_string_value(json_object_get(m, "sha256")))
        snprintf(sha, sizeof(sha), "%s", json_string_value(json_object_get(m, "sha256")));
    const char *bd = json_string_value(json_object_get(m, "build_date"));
    if (bd && strlen(bd) >= 10)
        snprintf(date, sizeof(date), "%.4s.%.2s.%.2s", bd, bd + 5, bd + 8);
    char kernel[128] = "";
    if (json_string_value(json_object_get(m, "kernel_release")))
        snprintf(kernel, sizeof(kernel), "%s",
                 json_string_value(json_object_get(m, "kernel_release")));
    json_decref(m);
    if (!sha[0]) {
        char *argv[] = { "/usr/bin/sha256sum", disk, NULL };
        struct buf out;
        buf_init(&out, 4096);
        if (run(argv, &out) < 0 || out.len < 64) {
            buf_free(&out);
            fprintf(stderr, "amid catalog import: cannot read %s\n", disk);
            return 1;
        }
        snprintf(sha, sizeof(sha), "%.64s", out.data);
        buf_free(&out);
    }
    if (!date[0]) {
        char iso[32];
        time_format_iso(time_now_ms(), iso);
        snprintf(date, sizeof(date), "%.4s.%.2s.%.2s", iso, iso + 5, iso + 8);
    }

    struct err e = { 0 };
    struct app *app;
    if (core_open(data, &app, &e) < 0) {
        fprintf(stderr, "amid catalog import: %s\n", e.msg);
        return 1;
    }
    char sys[16];
    if (core_system_account(app, CATALOG_ALIAS, sys, &e) < 0) {
        fprintf(stderr, "amid catalog import: %s\n", e.msg);
        core_close(app);
        return 1;
    }
    size_t nr;
    const struct core_region *regions = core_regions(app, &nr);
    json_t *images = json_array();
    int status = 0;
    for (size_t i = 0; i < nr && status == 0; i++) {
        const char *region = regions[i].name;
        char id[32];
        if (core_image_find_tagged(app, region, sys, TAG_SHA, sha, id) == 0) {
            json_array_append_new(images, json_pack("{s:s, s:s, s:b}", "Region", region, "ImageId",
                                                    id, "Imported", 0));
            continue;
        }
        char snap[32];
        fprintf(stderr, "amid: importing the catalogue disk into %s\n", region);
        if (import_disk(data, disk, sys, region, snap) < 0) {
            fprintf(stderr, "amid catalog import: importing %s into %s failed\n", disk, region);
            status = 1;
            break;
        }
        char name[128];
        snprintf(name, sizeof(name), "%s-%s", CATALOG_NAME, date);
        struct db_bdm bdm = { 0 };
        snprintf(bdm.device_name, sizeof(bdm.device_name), "/dev/xvda");
        snprintf(bdm.kind, sizeof(bdm.kind), "ebs");
        snprintf(bdm.snapshot_id, sizeof(bdm.snapshot_id), "%s", snap);
        snprintf(bdm.volume_type, sizeof(bdm.volume_type), "gp3");
        bdm.delete_on_termination = true;
        struct core_tag tags[] = {
            { TAG_SHA, sha },
            { "amid:catalog", CATALOG_NAME },
            { "amid:kernel", kernel[0] ? kernel : "unknown" },
        };
        struct core_image_spec spec = {
            .name = name,
            .description = "amid system catalogue: Debian cloud kernel and busybox, serial "
                           "console, runs user data from the instance metadata service",
            .architecture = "x86_64",
            .root_device_name = "/dev/xvda",
            .boot_mode = "legacy-bios",
            .ena_support = 1,
            .bdms = &bdm,
            .nbdms = 1,
            .tags = tags,
            .ntags = ARRAY_SIZE(tags),
        };
        struct core_caller who = { sys, region, false };
        /* A disk rebuilt on the same day takes the same name: suffix its hash. */
        int rc = core_image_register(app, &who, &spec, id, &e);
        if (rc == -EEXIST) {
            snprintf(name, sizeof(name), "%s-%s-%.8s", CATALOG_NAME, date, sha);
            rc = core_image_register(app, &who, &spec, id, &e);
        }
        const char *all[] = { "all" };
        if (rc == 0)
            rc = core_image_permission(app, &who, id, all, 1, NULL, 0, &e);
        if (rc < 0) {
            fprintf(stderr, "amid catalog import: %s\n", e.msg);
            status = 1;
            break;
        }
        json_array_append_new(
            images, json_pack("{s:s, s:s, s:b}", "Region", region, "ImageId", id, "Imported", 1));
    }
    if (status == 0) {
        if (fmt == FMT_JSON) {
            json_t *doc = json_pack("{s:s, s:s, s:O}", "Owner", sys, "OwnerAlias", CATALOG_ALIAS,
                                    "Images", images);
            char *s = json_dumps(doc, JSON_INDENT(2));
            printf("%s\n", s);
            free(s);
            json_decref(doc);
        } else {
            for (size_t i = 0; i < json_array_size(images); i++) {
                json_t *it = json_array_get(images, i);
                printf("AMID_CATALOG_REGION=%s AMID_CATALOG_IMAGE_ID=%s AMID_CATALOG_OWNER=%s "
                       "AMID_CATALOG_IMPORTED=%s\n",
                       json_string_value(json_object_get(it, "Region")),
                       json_string_value(json_object_get(it, "ImageId")), CATALOG_ALIAS,
                       json_is_true(json_object_get(it, "Imported")) ? "true" : "false");
            }
        }
    }
    json_decref(images);
    core_close(app);
    return status;
}

int cmd_catalog(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "disk", required_argument, NULL, 'k' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "import --data DIR [--disk FILE] [--format env|json]";
    const char *data = NULL, *disk = NULL;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:k:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'k':
            disk = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                goto bad;
            break;
        case 'h':
            printf("usage: amid catalog %s\n", usage);
            return 0;
        default:
            goto bad;
        }
    }
    if (argc - optind != 1 || strcmp(argv[optind], "import") != 0 || !data)
        goto bad;
    return catalog_import(data, disk, fmt);
bad:
    fprintf(stderr, "usage: amid catalog %s\n", usage);
    return 2;
}
