/*
 * store_bench.c — throughput of the chunk store's put and get for 512 KiB chunks, with 1 and 2
 * threads, on (a) incompressible random data and (b) real files (concatenated from /usr/lib),
 * clear and encrypted.
 *
 * A put here is what an import does per block: SHA-256 (or HMAC) of the block, zstd, the write,
 * and a batch commit (fsyncs, renames, directory fsyncs) every 128 puts.  Each thread has its own
 * batch.  The baselines, measured in the same run on the same data with one thread, are plain
 * SHA-256 and plain zstd at the store's level; "ratio" is the put rate over what one core could
 * at best do for hash + compress (1 / (1/sha + 1/zstd)).  Gets read back every chunk (page cache
 * warm) and decode it; "verify" also recomputes the id.
 *
 * Usage: store_bench [-d DIR] [-m MIB] [-l LEVEL]
 *   DIR   where to create the stores (default $TMPDIR or /var/tmp); use the disk to measure
 *   MIB   data per data set (default 256)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "crypto/crypto.h"
#include "store/store.h"
#include "util/util.h"

#define CHUNK        STORE_CHUNK_SIZE
#define COMMIT_EVERY 128

struct dataset {
    const char *name;
    uint8_t *data;
    size_t nchunks;
};

struct job {
    struct store *s;
    const struct dataset *ds;
    const struct store_key *key;
    unsigned tid, nthreads;
    unsigned flags;
    int rc;
    uint64_t stored;
    int64_t commit_us;
};

static double mbps(size_t bytes, int64_t us)
{
    return us > 0 ? (double)bytes / (double)us : 0.0; /* bytes/us = MB/s */
}

static void fill_random(uint8_t *p, size_t n)
{
    uint64_t x = 0x243f6a8885a308d3ull;

    for (size_t i = 0; i + 8 <= n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1dull;

        memcpy(p + i, &v, 8);
    }
}

/* Appends regular files under `dir` until `want` bytes are read. */
static size_t fill_files(const char *dir, uint8_t *p, size_t have, size_t want, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d || depth > 8) {
        if (d)
            closedir(d);
        return have;
    }
    while (have < want && (e = readdir(d))) {
        char path[PATH_MAX];
        struct stat st;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            have = fill_files(path, p, have, want, depth + 1);
        } else if (S_ISREG(st.st_mode)) {
            int fd = open(path, O_RDONLY);
            ssize_t r;

            if (fd < 0)
                continue;
            while (have < want && (r = read(fd, p + have, want - have)) > 0)
                have += (size_t)r;
            close(fd);
        }
    }
    closedir(d);
    return have;
}

static void *put_main(void *arg)
{
    struct job *j = arg;
    struct store_batch *b;
    unsigned since = 0;
    int rc;

    rc = store_batch_new(j->s, &b);
    for (size_t i = j->tid; rc == 0 && i < j->ds->nchunks; i += j->nthreads) {
        const uint8_t *p = j->ds->data + i * CHUNK;
        struct chunk_id id;
        size_t stored;

        if (store_is_zero(p, CHUNK))
            continue;
        store_chunk_id(j->key, p, CHUNK, &id);
        rc = store_put(j->s, b, &id, j->key, p, CHUNK, &stored);
        j->stored += stored;
        if (rc == 0 && ++since == COMMIT_EVERY) {
            int64_t t = time_mono_us();

            rc = store_batch_commit(b);
            j->commit_us += time_mono_us() - t;
            since = 0;
        }
    }
    if (rc == 0) {
        int64_t t = time_mono_us();

        rc = store_batch_commit(b);
        j->commit_us += time_mono_us() - t;
    }
    store_batch_free(b);
    j->rc = rc;
    return NULL;
}

static void *get_main(void *arg)
{
    struct job *j = arg;
    uint8_t *buf = malloc(CHUNK);
    int rc = buf ? 0 : -ENOMEM;

    for (size_t i = j->tid; rc == 0 && i < j->ds->nchunks; i += j->nthreads) {
        const uint8_t *p = j->ds->data + i * CHUNK;
        struct chunk_id id;
        size_t n;

        if (store_is_zero(p, CHUNK))
            continue;
        store_chunk_id(j->key, p, CHUNK, &id);
        rc = store_get(j->s, &id, j->key, buf, &n, j->flags);
    }
    free(buf);
    j->rc = rc;
    return NULL;
}

/* Runs `fn` on `nthreads` threads; returns the wall time in us, or -1. */
static int64_t run(void *(*fn)(void *), struct store *s, const struct dataset *ds,
                   const struct store_key *key, unsigned nthreads, unsigned flags,
                   uint64_t *ret_stored, int64_t *ret_commit_us)
{
    pthread_t th[2];
    struct job jobs[2];
    int64_t t0 = time_mono_us(), dt;

    for (unsigned t = 0; t < nthreads; t++) {
        jobs[t] = (struct job){
            .s = s, .ds = ds, .key = key, .tid = t, .nthreads = nthreads, .flags = flags
        };
        pthread_create(&th[t], NULL, fn, &jobs[t]);
    }
    if (ret_stored)
        *ret_stored = 0;
    if (ret_commit_us)
        *ret_commit_us = 0;
    for (unsigned t = 0; t < nthreads; t++) {
        pthread_join(th[t], NULL);
        if (jobs[t].rc < 0) {
            fprintf(stderr, "store_bench: %s\n", strerror(-jobs[t].rc));
            return -1;
        }
        if (ret_stored)
            *ret_stored += jobs[t].stored;
        if (ret_commit_us && jobs[t].commit_us > *ret_commit_us)
            *ret_commit_us = jobs[t].commit_us;
    }
    dt = time_mono_us() - t0;
    return dt;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

struct baseline {
    double sha, zstd, ratio;
};

static struct baseline measure_baseline(const struct dataset *ds, int level)
{
    struct baseline bl = { 0 };
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    void *dst = malloc(ZSTD_compressBound(CHUNK));
    uint8_t md[SHA256_LEN];
    size_t total = ds->nchunks * CHUNK, ztotal = 0;
    int64_t t;

    t = time_mono_us();
    for (size_t i = 0; i < ds->nchunks; i++)
        crypto_sha256(ds->data + i * CHUNK, CHUNK, md);
    bl.sha = mbps(total, time_mono_us() - t);
    t = time_mono_us();
    for (size_t i = 0; i < ds->nchunks; i++)
        ztotal += ZSTD_compressCCtx(cc, dst, ZSTD_compressBound(CHUNK), ds->data + i * CHUNK, CHUNK,
                                    level);
    bl.zstd = mbps(total, time_mono_us() - t);
    bl.ratio = (double)ztotal / (double)total;
    ZSTD_freeCCtx(cc);
    free(dst);
    return bl;
}

static int bench_dataset(const char *root, const struct dataset *ds, const struct store_key *key,
                         const struct store_opts *opts)
{
    struct baseline bl = measure_baseline(ds, opts->zstd_level);
    double best = 1.0 / (1.0 / bl.sha + 1.0 / bl.zstd);
    size_t total = ds->nchunks * CHUNK;

    printf("\n%s%s: %zu MiB, zstd-%d ratio %.2f; one core: sha256 %.0f MB/s, zstd %.0f MB/s, "
           "both %.0f MB/s\n",
           ds->name, key ? " (encrypted)" : "", total >> 20, opts->zstd_level, bl.ratio, bl.sha,
           bl.zstd, best);
    for (unsigned nt = 1; nt <= 2; nt++) {
        char dir[PATH_MAX];
        struct store *s;
        uint64_t stored;
        int64_t put_us, commit_us, get_us, ver_us;

        snprintf(dir, sizeof(dir), "%s/store-%u", root, nt);
        if (store_open_local(dir, opts, &s) < 0)
            return -1;
        put_us = run(put_main, s, ds, key, nt, 0, &stored, &commit_us);
        get_us = put_us < 0 ? -1 : run(get_main, s, ds, key, nt, 0, NULL, NULL);
        ver_us = get_us < 0 ? -1 : run(get_main, s, ds, key, nt, STORE_VERIFY, NULL, NULL);
        store_close(s);
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        if (ver_us < 0)
            return -1;
        printf("  %u thread%s: put %6.0f MB/s (x%.2f of one core's hash+zstd; commits %.0f%% of "
               "the time; stored %.2f of input)  get %6.0f MB/s  get+verify %6.0f MB/s\n",
               nt, nt > 1 ? "s" : " ", mbps(total, put_us), mbps(total, put_us) / best,
               100.0 * (double)commit_us / (double)put_us, (double)stored / (double)total,
               mbps(total, get_us), mbps(total, ver_us));
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR");
    struct store_opts opts = { .zstd_level = 1 };
    struct store_key key;
    struct dataset rnd = { .name = "random" }, real = { .name = "/usr/lib files" };
    size_t mib = 256, bytes;
    char root[PATH_MAX];
    int c, rc = 0;

    if (!base || !*base)
        base = "/var/tmp";
    while ((c = getopt(argc, argv, "d:m:l:h")) != -1) {
        switch (c) {
        case 'd':
            base = optarg;
            break;
        case 'm':
            mib = strtoul(optarg, NULL, 10);
            break;
        case 'l':
            opts.zstd_level = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: %s [-d DIR] [-m MIB] [-l LEVEL]\n", argv[0]);
            return c == 'h' ? 0 : 2;
        }
    }
    if (mib == 0)
        mib = 1;
    bytes = mib << 20;
    rnd.data = malloc(bytes);
    real.data = calloc(1, bytes);
    if (!rnd.data || !real.data)
        return 1;
    fill_random(rnd.data, bytes);
    rnd.nchunks = bytes / CHUNK;
    real.nchunks = fill_files("/usr/lib", real.data, 0, bytes, 0) / CHUNK;
    rand_bytes(&key, sizeof(key));

    snprintf(root, sizeof(root), "%s/store_bench.XXXXXX", base);
    if (!mkdtemp(root)) {
        fprintf(stderr, "store_bench: %s: %s\n", root, strerror(errno));
        return 1;
    }
    printf("store_bench: %s, 512 KiB chunks, a commit every %d puts per thread\n", root,
           COMMIT_EVERY);
    rc = bench_dataset(root, &rnd, NULL, &opts);
    if (rc == 0)
        rc = bench_dataset(root, &real, NULL, &opts);
    if (rc == 0)
        rc = bench_dataset(root, &real, &key, &opts);
    nftw(root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    crypto_wipe(&key, sizeof(key));
    free(rnd.data);
    free(real.data);
    return rc < 0;
}
