/*
 * cli_export.c — `amid export SNAPSHOT FILE`: a completed snapshot out to a disk image, and
 * `amid nbd-uri ID`: where the daemon serves a volume or snapshot over NBD.
 *
 * Export lists the snapshot's non-zero blocks (ListSnapshotBlocks with its block tokens, or
 * core_snapshot_blocks with --data), then fetches them in parallel (GetSnapshotBlock, each
 * verified against its x-amz-Checksum SHA-256: the network is checked end to end; or
 * core_snapshot_read_block, which checks what the store does on every read — the zstd content
 * checksum, and the GCM tag of an encrypted chunk — and, with --verify, also the chunk id, the
 * block's SHA-256 when unencrypted: that costs as much CPU again, and finds only a chunk swapped
 * for another valid one, which `amid verify --read-data` finds too).  A raw FILE is sparse: the
 * file is sized to the volume and only non-zero blocks are written, at their offsets, with
 * O_DIRECT in runs of adjacent blocks (no page-cache copy, nothing left for the fsync).  A qcow2
 * FILE is made by qemu-img reading the snapshot through a private NBD server (the "snapshot
 * reader" device below), whose block status reports the zero blocks as holes so that they
 * take no room in the image.  Either way the image is written to a temporary file next to
 * FILE, synced and renamed over FILE only when complete.
 */
#include "cli/cli.h"
#include "cli/cli_http.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS  ((uint64_t)CORE_BLOCK_SIZE)
#define GIB (1ULL << 30)

/* A non-zero block of the snapshot; `token` is NULL in direct mode. */
struct blk {
    int64_t idx;
    char *token;
};

/* Where blocks come from. */
struct src {
    struct cli_ebs *api;
    struct cli_direct *direct;
    const char *snap;
    int64_t size_gib;
    bool verify;       /* direct: --verify */
    bool verify_chunk; /* direct: --verify, and the chunk id is the block's SHA-256 */
    struct blk *v;     /* by index */
    size_t n, cap;
    pthread_mutex_t lock; /* the fields below */
    struct cli_ebs_conn **idle;
    size_t nidle, maxidle;
    int err;
    char errmsg[700];
    struct cli_progress *prog;
};

static void src_fail(struct src *s, int rc, const char *fmt, ...) PRINTF(3, 4);

static void src_fail(struct src *s, int rc, const char *fmt, ...)
{
    pthread_mutex_lock(&s->lock);
    if (!s->err) {
        s->err = rc < 0 ? rc : -EIO;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(s->errmsg, sizeof(s->errmsg), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&s->lock);
}

static int src_add(struct src *s, int64_t idx, const char *token)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 4096;
        void *nv = realloc(s->v, cap * sizeof(*s->v));
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = cap;
    }
    char *t = NULL;
    if (token && !(t = strdup(token)))
        return -ENOMEM;
    /* Both listings come in index order; keep it checkable for the binary searches. */
    if (s->n && s->v[s->n - 1].idx >= idx) {
        free(t);
        return -EBADMSG;
    }
    s->v[s->n].idx = idx;
    s->v[s->n].token = t;
    s->n++;
    return 0;
}

static int add_api(void *ctx, int64_t idx, const char *token)
{
    return src_add(ctx, idx, token);
}

static int add_direct(void *ctx, int64_t idx, const uint8_t *chunk)
{
    (void)chunk;
    return src_add(ctx, idx, NULL);
}

/* Lists the snapshot's non-zero blocks and its size.  Prints why not. */
static int src_list(struct src *s)
{
    if (s->api) {
        struct cli_ebs_conn *k;
        if (cli_ebs_conn_new(s->api, &k) < 0)
            return -ENOMEM;
        char *page = NULL;
        int rc = 0;
        do {
            char *next = NULL;
            struct cli_ebs_err e;
            rc = cli_ebs_list(k, s->snap, page, add_api, s, &s->size_gib, &next, &e);
            free(page);
            page = next;
            if (rc < 0) {
                char line[700];
                cli_ebs_err_format(&e, line, sizeof(line));
                snprintf(s->errmsg, sizeof(s->errmsg), "ListSnapshotBlocks: %s", line);
            }
        } while (rc == 0 && page);
        free(page);
        cli_ebs_conn_free(k);
        return rc;
    }
    struct db_snapshot snap;
    struct err e = { 0 };
    int rc = core_snapshot_get(s->direct->app, &s->direct->who, s->snap, CORE_VISIBLE, &snap, &e);
    if (rc == 0 && strcmp(snap.state, "completed") != 0) {
        snprintf(s->errmsg, sizeof(s->errmsg), "the snapshot '%s' is %s, not completed", s->snap,
                 snap.state);
        return -EINVAL;
    }
    if (rc == 0) {
        s->size_gib = snap.volume_size_gib;
        s->verify_chunk = s->verify && !snap.encrypted;
        rc = core_snapshot_blocks(s->direct->app, &s->direct->who, s->snap, 0, add_direct, s, &e);
    }
    if (rc < 0 && e.code)
        snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", e.code, e.msg);
    else if (rc < 0)
        snprintf(s->errmsg, sizeof(s->errmsg), "cannot list the blocks: %s", strerror(-rc));
    return rc;
}

static struct cli_ebs_conn *conn_get(struct src *s)
{
    struct cli_ebs_conn *k = NULL;
    pthread_mutex_lock(&s->lock);
    if (s->nidle)
        k = s->idle[--s->nidle];
    pthread_mutex_unlock(&s->lock);
    if (!k && cli_ebs_conn_new(s->api, &k) < 0)
        return NULL;
    return k;
}

static void conn_put(struct src *s, struct cli_ebs_conn *k)
{
    pthread_mutex_lock(&s->lock);
    if (s->nidle < s->maxidle) {
        s->idle[s->nidle++] = k;
        k = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    cli_ebs_conn_free(k);
}

/* Fetches non-zero block v[i] into `buf` (512 KiB), verified.  Records the failure. */
static int src_fetch(struct src *s, size_t i, uint8_t *buf)
{
    const struct blk *b = &s->v[i];
    if (s->api) {
        struct cli_ebs_conn *k = conn_get(s);
        if (!k) {
            src_fail(s, -ENOMEM, "out of memory");
            return -ENOMEM;
        }
        struct cli_ebs_err e;
        int rc = cli_ebs_get(k, s->snap, b->idx, b->token, buf, &e);
        conn_put(s, k);
        if (rc < 0) {
            char line[700];
            cli_ebs_err_format(&e, line, sizeof(line));
            src_fail(s, rc, "GetSnapshotBlock %lld: %s", (long long)b->idx, line);
        }
        return rc;
    }
    uint8_t chunk[32], h[32];
    struct err e = { 0 };
    int rc =
        core_snapshot_read_block(s->direct->app, &s->direct->who, s->snap, b->idx, buf, chunk, &e);
    if (rc < 0) {
        src_fail(s, rc, "block %lld: %s: %s", (long long)b->idx, e.code ? e.code : "Error", e.msg);
        return rc;
    }
    if (s->verify_chunk) {
        crypto_sha256(buf, CORE_BLOCK_SIZE, h);
        if (!crypto_memeq(h, chunk, 32)) {
            src_fail(s, -EBADMSG, "block %lld does not match its SHA-256: the store is damaged",
                     (long long)b->idx);
            return -EBADMSG;
        }
    }
    return 0;
}

static void src_free(struct src *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].token);
    free(s->v);
    for (size_t i = 0; i < s->nidle; i++)
        cli_ebs_conn_free(s->idle[i]);
    free(s->idle);
    pthread_mutex_destroy(&s->lock);
}

/* ---- raw: parallel fetch and pwrite ---- */

struct raw_job {
    struct src *s;
    int fd;
    size_t next; /* __atomic: the next block to fetch */
};

/* Writes `n` bytes at `off`, all of them; where the file system refuses O_DIRECT writes, again
 * through the page cache. */
static int write_all(int fd, const uint8_t *buf, size_t n, uint64_t off)
{
    int rc = fd_pwrite_all(fd, buf, n, off);
    if (rc == -EINVAL && (fcntl(fd, F_GETFL) & O_DIRECT)) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
        rc = fd_pwrite_all(fd, buf, n, off);
    }
    return rc;
}

/* Each worker takes RAW_RUN listed blocks at a time and writes each run of adjacent ones with
 * one call: larger writes for the device. */
#define RAW_RUN 8

static void *raw_worker(void *varg)
{
    struct raw_job *j = varg;
    struct src *s = j->s;
    uint8_t *buf = aligned_alloc(4096, RAW_RUN * CORE_BLOCK_SIZE); /* O_DIRECT's alignment */
    if (!buf) {
        src_fail(s, -ENOMEM, "out of memory");
        return NULL;
    }
    for (;;) {
        size_t first = __atomic_fetch_add(&j->next, RAW_RUN, __ATOMIC_RELAXED);
        if (first >= s->n || cli_interrupted)
            break;
        size_t k = s->n - first < RAW_RUN ? s->n - first : RAW_RUN;
        pthread_mutex_lock(&s->lock);
        bool failed = s->err != 0;
        pthread_mutex_unlock(&s->lock);
        for (size_t i = 0; i < k && !failed; i++)
            failed = src_fetch(s, first + i, buf + i * BS) < 0;
        if (failed)
            break;
        /* Runs of consecutive block indexes, one write each. */
        for (size_t a = 0, b; a < k; a = b) {
            for (b = a + 1; b < k && s->v[first + b].idx == s->v[first + b - 1].idx + 1; b++)
                ;
            int rc =
                write_all(j->fd, buf + a * BS, (b - a) * BS, (uint64_t)s->v[first + a].idx * BS);
            if (rc < 0) {
                src_fail(s, rc, "cannot write: %s", strerror(-rc));
                free(buf);
                return NULL;
            }
        }
        cli_progress_add(s->prog, k * BS);
    }
    free(buf);
    return NULL;
}

static int export_raw(struct src *s, int fd, unsigned nworkers)
{
    struct raw_job j = { s, fd, 0 };
    /* Whole aligned blocks go to the disk directly: no copy into the page cache, and nothing
     * left for the final fsync to write back. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_DIRECT);
    pthread_t *t = calloc(nworkers, sizeof(*t));
    if (!t)
        return -ENOMEM;
    unsigned started = 0;
    for (; started < nworkers; started++)
        if (pthread_create(&t[started], NULL, raw_worker, &j) != 0)
            break;
    if (started == 0)
        raw_worker(&j);
    for (unsigned i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    if (cli_interrupted)
        return -EINTR;
    return s->err;
}

/* ---- qcow2: the snapshot reader served to qemu-img ---- */

/* A read-only block device of the snapshot: zero blocks read as zeroes and are reported as
 * holes; the others are fetched on demand (several at once: one NBD worker each). */
struct reader {
    struct blockdev bd;
    struct src *s;
};

/* The position of the first listed block with index >= idx. */
static size_t lower_bound(const struct src *s, int64_t idx)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->v[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int r_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    struct reader *r = (struct reader *)bd;
    struct src *s = r->s;
    uint8_t *dst = buf, *tmp = NULL;
    uint64_t o = off, left = len;
    int rc = 0;
    while (left && rc == 0) {
        uint64_t bi = o / BS, bo = o % BS, n = BS - bo < left ? BS - bo : left;
        size_t i = lower_bound(s, (int64_t)bi);
        if (i == s->n || s->v[i].idx != (int64_t)bi) {
            memset(dst, 0, n);
        } else if (n == BS) {
            rc = src_fetch(s, i, dst);
            if (rc == 0)
                cli_progress_add(s->prog, BS);
        } else {
            if (!tmp && !(tmp = malloc(CORE_BLOCK_SIZE)))
                rc = -ENOMEM;
            if (rc == 0)
                rc = src_fetch(s, i, tmp);
            if (rc == 0)
                memcpy(dst, tmp + bo, n);
        }
        dst += n;
        o += n;
        left -= n;
    }
    free(tmp);
    return rc < 0 ? -EIO : 0;
}

static int r_block_status(struct blockdev *bd, uint64_t len, uint64_t off,
                          struct blockdev_extent *ret, size_t max, size_t *ret_n)
{
    struct reader *r = (struct reader *)bd;
    const struct src *s = r->s;
    uint64_t end = off + len, o = off;
    size_t n = 0;
    size_t i = lower_bound(s, (int64_t)(off / BS));
    while (o < end && n < max) {
        int64_t bi = (int64_t)(o / BS);
        bool data = i < s->n && s->v[i].idx == bi;
        uint64_t run_end;
        if (data) {
            /* Through the run of consecutive listed blocks. */
            size_t k = i;
            while (k + 1 < s->n && s->v[k + 1].idx == s->v[k].idx + 1)
                k++;
            run_end = (uint64_t)(s->v[k].idx + 1) * BS;
            i = k + 1;
        } else {
            run_end = i < s->n ? (uint64_t)s->v[i].idx * BS : bd->size;
        }
        if (run_end > end)
            run_end = end;
        ret[n].length = run_end - o;
        ret[n].type = data ? 0 : BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO;
        n++;
        o = run_end;
    }
    *ret_n = n;
    return 0;
}

static int r_flush(struct blockdev *bd)
{
    (void)bd;
    return 0;
}

static void r_close(struct blockdev *bd)
{
    (void)bd;
}

static const struct blockdev_ops reader_ops = {
    .pread = r_pread,
    .flush = r_flush,
    .block_status = r_block_status,
    .close = r_close,
};

static int export_qcow2(struct src *s, const char *tmp, unsigned nworkers, char *msg, size_t msglen)
{
    struct reader r = {
        { &reader_ops, (uint64_t)s->size_gib * GIB, CORE_BLOCK_SIZE, BLOCKDEV_READONLY }, s
    };
    struct cli_nbd *srv;
    int rc = cli_nbd_start(&r.bd, "export", nworkers, &srv);
    if (rc < 0) {
        snprintf(msg, msglen, "cannot start the NBD server for qemu-img: %s", strerror(-rc));
        return rc;
    }
    char dst[PATH_MAX + 2];
    cli_qemu_path(tmp, dst, sizeof(dst));
    char *argv[] = { "qemu-img", "convert", "-f",
                     "raw",      "-O",      "qcow2",
                     "-m",       "8",       (char *)cli_nbd_uri(srv),
                     dst,        NULL };
    char err[512];
    int st = cli_run(argv, NULL, err, sizeof(err));
    cli_nbd_stop(srv);
    if (cli_interrupted) {
        rc = -EINTR;
        snprintf(msg, msglen, "interrupted");
    } else if (s->err) {
        rc = s->err;
        snprintf(msg, msglen, "%s", s->errmsg);
    } else if (st == -ENOENT) {
        rc = -ENOENT;
        snprintf(msg, msglen, "%s", "qemu-img is not installed (apt-get install qemu-utils)");
    } else if (st != 0) {
        rc = st < 0 ? st : -EIO;
        snprintf(msg, msglen, "qemu-img convert failed: %s", err[0] ? err : "(no message)");
    }
    return rc;
}

/* ---- amid export ---- */

static int export_usage(void)
{
    fprintf(stderr, "usage: amid export SNAPSHOT FILE [--image-format raw|qcow2] [--parallel N] "
                    "[--data DIR [--account ID] [--verify]] [--region R] [--format env|json] "
                    "[--no-progress]\n");
    return 2;
}

/* Syncs the file at `path` and the directory it is in. */
static int sync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static int sync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = '\0';
    else if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof(dir), ".");
    return sync_path(dir);
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        { "image-format", required_argument, NULL, 'i' },
        { "parallel", required_argument, NULL, 'p' },
        { "data", required_argument, NULL, 'd' },
        { "account", required_argument, NULL, 'a' },
        { "region", required_argument, NULL, 'r' },
        { "format", required_argument, NULL, 'f' },
        { "no-progress", no_argument, NULL, 'P' },
        { "verify", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *data = NULL, *account = NULL, *region = NULL;
    bool qcow2 = false, progress = true, verify = false;
    long parallel = 0;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "f:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            if (strcmp(optarg, "qcow2") == 0)
                qcow2 = true;
            else if (strcmp(optarg, "raw") != 0)
                return export_usage();
            break;
        case 'p':
            if ((parallel = cli_parse_count(optarg, 1, 64)) < 0)
                return export_usage();
            break;
        case 'd':
            data = optarg;
            break;
        case 'a':
            account = optarg;
            break;
        case 'r':
            region = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return export_usage();
            break;
        case 'P':
            progress = false;
            break;
        case 'V':
            verify = true;
            break;
        case 'h':
            printf("usage: amid export SNAPSHOT FILE [--image-format raw|qcow2] [--parallel N] "
                   "[--data DIR [--account ID] [--verify]] [--region R] [--format env|json] "
                   "[--no-progress]\n");
            return 0;
        default:
            return export_usage();
        }
    }
    /* --verify is direct mode's: through the API every block is checked against its
     * x-amz-Checksum anyway. */
    if (optind + 2 != argc || (account && !data) || (verify && !data))
        return export_usage();
    const char *snap = argv[optind], *file = argv[optind + 1];
    /* FILE is replaced by rename: never do that to a device node or a directory. */
    struct stat fst;
    if (stat(file, &fst) == 0 && !S_ISREG(fst.st_mode)) {
        fprintf(stderr, "amid export: %s exists and is not a regular file\n", file);
        return 1;
    }
    cli_catch_signals();
    unsigned nworkers = parallel ? (unsigned)parallel : cli_default_workers(data != NULL);

    struct cli_direct direct;
    memset(&direct, 0, sizeof(direct));
    struct src s;
    memset(&s, 0, sizeof(s));
    pthread_mutex_init(&s.lock, NULL);
    s.snap = snap;
    s.verify = verify;
    s.maxidle = nworkers;
    s.idle = calloc(nworkers, sizeof(*s.idle));
    if (!s.idle) {
        src_free(&s);
        fprintf(stderr, "amid export: out of memory\n");
        return 1;
    }
    int rc;
    if (data) {
        if (cli_direct_open("export", data, account, region, &direct) < 0) {
            src_free(&s);
            return 1;
        }
        s.direct = &direct;
        rc = 0;
    } else {
        struct cli_ebs_err e;
        rc = cli_ebs_new(region, &s.api, &e);
        if (rc < 0)
            cli_ebs_err_format(&e, s.errmsg, sizeof(s.errmsg));
    }
    if (rc == 0)
        rc = src_list(&s);
    if (rc < 0) {
        fprintf(stderr, "amid export: %s: %s\n", snap, s.errmsg);
        src_free(&s);
        cli_ebs_free(s.api);
        cli_direct_close(&direct);
        return 1;
    }

    /* A temporary file next to FILE, renamed over it once complete. */
    char tmp[PATH_MAX];
    const char *slash = strrchr(file, '/');
    int dl = slash ? (int)(slash - file + 1) : 0;
    snprintf(tmp, sizeof(tmp), "%.*s.%s.amid-XXXXXX", dl, file, slash ? slash + 1 : file);
    char msg[800] = "";
    int fd = mkstemp(tmp);
    bool created = fd >= 0;
    int64_t t0 = time_mono_us();
    uint64_t size = (uint64_t)s.size_gib * GIB;
    if (fd < 0) {
        rc = -errno;
        snprintf(msg, sizeof(msg), "cannot create a file next to %s: %s", file, strerror(errno));
    } else if (!qcow2 && ftruncate(fd, (off_t)size) < 0) {
        rc = -errno;
        snprintf(msg, sizeof(msg), "cannot size %s: %s", tmp, strerror(errno));
    }
    if (rc == 0) {
        s.prog = progress ? cli_progress_new("export", (uint64_t)s.n * BS) : NULL;
        if (qcow2) {
            close(fd);
            fd = -1;
            rc = export_qcow2(&s, tmp, nworkers, msg, sizeof(msg));
        } else {
            rc = export_raw(&s, fd, nworkers);
            if (rc < 0)
                snprintf(msg, sizeof(msg), "%s", cli_interrupted ? "interrupted" : s.errmsg);
        }
        cli_progress_end(s.prog, rc == 0);
    }
    if (rc == 0) {
        rc = fd >= 0 ? (fsync(fd) < 0 ? -errno : 0) : sync_path(tmp);
        if (rc < 0)
            snprintf(msg, sizeof(msg), "cannot sync %s: %s", tmp, strerror(-rc));
    }
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, file) < 0) {
        rc = -errno;
        snprintf(msg, sizeof(msg), "cannot rename %s to %s: %s", tmp, file, strerror(errno));
    }
    if (rc == 0)
        sync_dir_of(file);
    else if (created)
        unlink(tmp);

    if (rc < 0) {
        fprintf(stderr, "amid export: %s: %s\n", snap, msg);
    } else {
        double secs = (double)(time_mono_us() - t0) / 1e6;
        double mib = (double)s.n * (double)BS / (1 << 20);
        fprintf(stderr,
                "amid: exported %s to %s (%s): %lld GiB volume, %zu blocks (%.1f MiB) of data, "
                "%.1f s, %.1f MiB/s\n",
                snap, file, qcow2 ? "qcow2" : "raw, sparse", (long long)s.size_gib, s.n, mib, secs,
                secs > 0 ? mib / secs : 0.0);
        if (fmt == FMT_JSON) {
            json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I}", "SnapshotId", snap, "File", file,
                                  "ImageFormat", qcow2 ? "qcow2" : "raw", "VolumeSize",
                                  (json_int_t)s.size_gib, "Blocks", (json_int_t)s.n);
            char *txt = json_dumps(o, JSON_INDENT(2));
            printf("%s\n", txt);
            free(txt);
            json_decref(o);
        } else {
            printf("AMID_SNAPSHOT_ID=%s AMID_VOLUME_SIZE=%lld AMID_BLOCKS=%zu\n", snap,
                   (long long)s.size_gib, s.n);
        }
        fflush(stdout);
    }
    src_free(&s);
    cli_ebs_free(s.api);
    cli_direct_close(&direct);
    return rc < 0 ? 1 : 0;
}

/* ---- amid nbd-uri ---- */

int cmd_nbd_uri(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "ID --data DIR [--format env|json]";
    const char *data = NULL;
    int fmt = -1, c;
    while ((c = getopt_long(argc, argv, "d:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0) {
                fprintf(stderr, "usage: amid nbd-uri %s\n", usage);
                return 2;
            }
            break;
        case 'h':
            printf("usage: amid nbd-uri %s\n", usage);
            return 0;
        default:
            fprintf(stderr, "usage: amid nbd-uri %s\n", usage);
            return 2;
        }
    }
    if (optind + 1 != argc || !data) {
        fprintf(stderr, "usage: amid nbd-uri %s\n", usage);
        return 2;
    }
    const char *id = argv[optind];
    if (!core_id_valid(id, "vol-") && !core_id_valid(id, "snap-")) {
        fprintf(stderr, "amid nbd-uri: '%s' is not a volume or snapshot id\n", id);
        return 1;
    }
    struct err e = { 0 };
    struct app *app;
    if (core_open(data, &app, &e) < 0) {
        fprintf(stderr, "amid nbd-uri: %s\n", e.msg);
        return 1;
    }
    /* What the daemon's NBD server would open: a volume, or a completed snapshot. */
    struct core_bdev *b;
    int rc = core_bdev_open(app, id, true, &b);
    if (rc < 0) {
        fprintf(stderr, "amid nbd-uri: %s\n",
                rc == -ENOENT ? "no such volume or completed snapshot" : strerror(-rc));
        core_close(app);
        return 1;
    }
    core_bdev_close(app, b);
    char sock[PATH_MAX];
    core_nbd_socket(app, sock, sizeof(sock));
    core_close(app);
    struct buf u;
    buf_init(&u, sizeof(sock) * 3 + 128);
    rc = buf_printf(&u, "nbd+unix:///%s?socket=", id);
    if (rc == 0)
        rc = uri_encode(&u, sock, strlen(sock), true);
    if (rc < 0) {
        buf_free(&u);
        fprintf(stderr, "amid nbd-uri: the socket path is too long\n");
        return 1;
    }
    struct stat st;
    if (stat(sock, &st) < 0 || !S_ISSOCK(st.st_mode))
        fprintf(stderr, "amid nbd-uri: no daemon serves %s now (start `amid serve --data %s`)\n",
                data, data);
    if (fmt == FMT_JSON) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "Id", id, "Uri", u.data, "Socket", sock);
        char *txt = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
        printf("%s\n", txt ? txt : "{}");
        free(txt);
        json_decref(o);
    } else if (fmt == FMT_ENV)
        printf("AMID_NBD_URI=%s\n", u.data);
    else
        printf("%s\n", u.data);
    buf_free(&u);
    return 0;
}
