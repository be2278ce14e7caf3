/*
 * test_vol.c — block maps, volumes, copy-on-write layers and incremental snapshots, checked
 * against in-memory models: random I/O (unaligned, block-crossing), snapshots read back
 * bit-exact while the volume changes, incremental capture, the LINEAR checksum against an
 * independent computation, begin across volumes at one instant, crashes (kill -9 of a writer at
 * a random instant, and a copy of the directory taken mid-snapshot), abort, grow, corruption,
 * encryption and concurrent writers during snapshots.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "store/store.h"
#include "util/util.h"
#include "vol/vol.h"
#include "vol/vol_int.h" /* white-box: the cache's read-ahead */

#define BS         ((size_t)VOL_BLOCK_SIZE)
#define CACHE      (8u << 20)
#define DISK_CACHE (16u << 20)

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

static void rng_fill(uint64_t *s, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n >= 8) {
        uint64_t v = rng_next(s);
        memcpy(p, &v, 8);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = rng_next(s);
        memcpy(p, &v, n);
    }
}

struct env {
    char root[256];
    char region_dir[300];
    struct store *store;
    struct vol_region *r;
};

static int rm_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void env_open_region(struct env *e)
{
    assert_int_equal(vol_region_open(e->region_dir, e->store, CACHE, DISK_CACHE, &e->r), 0);
}

static void env_init(struct env *e)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->root, sizeof(e->root), "/tmp/test_vol.XXXXXX");
    assert_non_null(mkdtemp(e->root));
    char sdir[300];
    snprintf(sdir, sizeof(sdir), "%s/store", e->root);
    snprintf(e->region_dir, sizeof(e->region_dir), "%s/region", e->root);
    assert_int_equal(store_open_local(sdir, NULL, &e->store), 0);
    env_open_region(e);
}

static void env_fini(struct env *e)
{
    vol_region_close(e->r);
    store_close(e->store);
    rm_rf(e->root);
}

static struct vol *create_open(struct env *e, const char *id, uint64_t size, const char *base,
                               const struct store_key *key)
{
    struct vol_params p = { .id = id, .size = size, .base_snapshot = base, .key = key };
    assert_int_equal(vol_create(e->r, &p), 0);
    struct vol *v;
    assert_int_equal(vol_open(e->r, id, key, &v), 0);
    return v;
}

static int bd_read(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    return bd->ops->pread(bd, buf, len, off);
}

static int bd_write(struct blockdev *bd, const void *buf, size_t len, uint64_t off)
{
    return bd->ops->pwrite(bd, buf, len, off, 0);
}

/* Reads the whole device and compares it with `model`. */
static void check_content(struct blockdev *bd, const uint8_t *model, uint64_t size)
{
    uint8_t *buf = malloc(4 * BS);
    assert_non_null(buf);
    for (uint64_t off = 0; off < size; off += 4 * BS) {
        size_t n = size - off < 4 * BS ? (size_t)(size - off) : 4 * BS;
        assert_int_equal(bd_read(bd, buf, n, off), 0);
        if (memcmp(buf, model + off, n) != 0) {
            size_t i = 0;
            while (buf[i] == model[off + i])
                i++;
            fail_msg("content differs at byte %llu (block %llu)", (unsigned long long)(off + i),
                     (unsigned long long)((off + i) / BS));
        }
    }
    free(buf);
}

/* LINEAR computed independently: SHA-256 of each non-zero block read from the device. */
static void linear_of(struct blockdev *bd, uint64_t size, uint8_t out[32])
{
    struct sha256 *outer = crypto_sha256_new();
    uint8_t *buf = malloc(BS);
    assert_non_null(outer);
    assert_non_null(buf);
    for (uint64_t off = 0; off < size; off += BS) {
        assert_int_equal(bd_read(bd, buf, BS, off), 0);
        if (store_is_zero(buf, BS))
            continue;
        uint8_t h[32];
        crypto_sha256(buf, BS, h);
        crypto_sha256_update(outer, h, 32);
    }
    crypto_sha256_final(outer, out);
    crypto_sha256_free(outer);
    free(buf);
}

static void snapshot_now(struct vol *v, const char *snap, struct vol_snapshot_stats *st)
{
    struct vol *vs[1] = { v };
    const char *ids[1] = { snap };
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
    assert_int_equal(vol_snapshot_capture(v, snap, NULL, NULL, st), 0);
    assert_int_equal(vol_snapshot_finish(v, snap), 0);
}

static void check_snapshot(struct env *e, const char *snap, const uint8_t *model, uint64_t size,
                           const struct store_key *key)
{
    struct blockdev *bd;
    assert_int_equal(vol_snapshot_open(e->r, snap, size, key, &bd), 0);
    assert_true(bd->flags & BLOCKDEV_READONLY);
    check_content(bd, model, size);
    bd->ops->close(bd);
}

/* ---- maps ---- */

static int collect_cb(void *ctx, uint64_t idx, const struct chunk_id *id)
{
    uint64_t *st = ctx; /* st[0]: count, st[1]: last index + 1, st[2]: order violations */
    if (st[0] && idx + 1 <= st[1])
        st[2]++;
    st[0]++;
    st[1] = idx + 1;
    return 0;
}

static void id_of(uint64_t v, struct chunk_id *id)
{
    memset(id, 0, sizeof(*id));
    memcpy(id->b, &v, sizeof(v));
    id->b[31] = 0x5a;
}

static void check_map_model(const struct vol_map *m, const uint64_t *model, uint64_t n)
{
    uint64_t alloc = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct chunk_id got, want;
        bool has = vol_map_get(m, i, &got);
        assert_int_equal(has, model[i] != 0);
        if (model[i]) {
            id_of(model[i], &want);
            assert_memory_equal(&got, &want, sizeof(want));
            alloc++;
        }
    }
    assert_int_equal(vol_map_allocated(m), alloc);
    uint64_t st[3] = { 0 };
    assert_int_equal(vol_map_each(m, collect_cb, st), 0);
    assert_int_equal(st[0], alloc);
    assert_int_equal(st[2], 0);
}

static void test_map_model(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t n = 20000;
    uint64_t *model = calloc(n, sizeof(*model)), seed = 42;
    struct vol_map *m;
    assert_int_equal(vol_map_new(n, &m), 0);
    /* In order (appends), then out of order (the delta and its merges), sets and clears. */
    for (uint64_t i = 0; i < n; i += 3) {
        model[i] = i + 1;
        struct chunk_id id;
        id_of(model[i], &id);
        assert_int_equal(vol_map_set(m, i, &id), 0);
    }
    for (int k = 0; k < 30000; k++) {
        uint64_t i = rng_below(&seed, n);
        if (rng_below(&seed, 3) == 0) {
            model[i] = 0;
            assert_int_equal(vol_map_set(m, i, NULL), 0);
        } else {
            model[i] = rng_next(&seed) | 1;
            struct chunk_id id;
            id_of(model[i], &id);
            assert_int_equal(vol_map_set(m, i, &id), 0);
        }
        if (k % 7919 == 0)
            check_map_model(m, model, n);
    }
    check_map_model(m, model, n);
    assert_int_equal(vol_map_blocks(m), n);
    assert_int_equal(vol_map_set(m, n, NULL), -EINVAL);

    /* A copy, grown: same entries, zero past the old end, writable. */
    struct vol_map *c;
    assert_int_equal(vol_map_copy(m, n + 100, &c), 0);
    assert_int_equal(vol_map_blocks(c), n + 100);
    check_map_model(c, model, n);
    assert_false(vol_map_get(c, n + 50, NULL));
    struct chunk_id id;
    id_of(7, &id);
    assert_int_equal(vol_map_set(c, n + 50, &id), 0);
    assert_true(vol_map_get(c, n + 50, NULL));
    assert_int_equal(vol_map_copy(m, n - 1, &c), -EINVAL);

    /* Save (with a delta outstanding) and load. */
    char path[512];
    snprintf(path, sizeof(path), "%s/m.map", e.root);
    assert_int_equal(vol_map_save(m, path), 0);
    struct vol_map *l;
    assert_int_equal(vol_map_load(path, &l), 0);
    check_map_model(l, model, n);
    assert_int_equal(vol_map_blocks(l), n);
    assert_int_equal(vol_map_set(l, 1, &id), -EPERM);
    struct vol_map *r = vol_map_ref(l);
    vol_map_unref(l);
    check_map_model(r, model, n);
    vol_map_unref(r);
    vol_map_unref(c);
    vol_map_unref(m);
    free(model);
    assert_int_equal(vol_map_load("/nonexistent/x.map", &l), -ENOENT);
    env_fini(&e);
}

static int stop_cb(void *ctx, uint64_t idx, const struct chunk_id *id)
{
    return ++*(int *)ctx == 3 ? 77 : 0;
}

static void write_file(const char *path, const uint8_t *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static void test_map_corrupt(void **state)
{
    struct env e;
    env_init(&e);
    struct vol_map *m, *l;
    assert_int_equal(vol_map_new(1000, &m), 0);
    for (uint64_t i = 0; i < 1000; i += 10) {
        struct chunk_id id;
        id_of(i + 1, &id);
        assert_int_equal(vol_map_set(m, i, &id), 0);
    }
    int calls = 0;
    assert_int_equal(vol_map_each(m, stop_cb, &calls), 77);
    assert_int_equal(calls, 3);
    char path[512], bad[512];
    snprintf(path, sizeof(path), "%s/m.map", e.root);
    snprintf(bad, sizeof(bad), "%s/bad.map", e.root);
    assert_int_equal(vol_map_save(m, path), 0);
    int fd = open(path, O_RDONLY);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    size_t n = (size_t)st.st_size;
    uint8_t *orig = malloc(n + 1), *buf = malloc(n + 1);
    assert_int_equal(read(fd, orig, n), (ssize_t)n);
    close(fd);
    /* Every single flipped byte (header, entries, trailer) is caught. */
    for (size_t i = 0; i < n; i += (i < 128 ? 1 : 37)) {
        memcpy(buf, orig, n);
        buf[i] ^= 0x10;
        write_file(bad, buf, n);
        assert_int_equal(vol_map_load(bad, &l), -EBADMSG);
    }
    write_file(bad, orig, n - 1);
    assert_int_equal(vol_map_load(bad, &l), -EBADMSG);
    write_file(bad, orig, 10);
    assert_int_equal(vol_map_load(bad, &l), -EBADMSG);
    memcpy(buf, orig, n);
    buf[n] = 0;
    write_file(bad, buf, n + 1);
    assert_int_equal(vol_map_load(bad, &l), -EBADMSG);
    write_file(bad, orig, n);
    assert_int_equal(vol_map_load(bad, &l), 0);
    assert_int_equal(vol_map_allocated(l), 100);
    vol_map_unref(l);
    free(orig);
    free(buf);
    vol_map_unref(m);
    env_fini(&e);
}

static void test_map_huge_sparse(void **state)
{
    struct env e;
    env_init(&e);
    /* 16 TiB: 32M blocks, a handful allocated — costs entries, not blocks. */
    uint64_t n = (16ull << 40) / BS;
    struct vol_map *m, *l;
    assert_int_equal(vol_map_new(n, &m), 0);
    struct chunk_id id;
    id_of(9, &id);
    assert_int_equal(vol_map_set(m, n - 1, &id), 0);
    assert_int_equal(vol_map_set(m, 5, &id), 0);
    assert_int_equal(vol_map_set(m, 1ull << 24, &id), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/h.map", e.root);
    assert_int_equal(vol_map_save(m, path), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size < 4096);
    assert_int_equal(vol_map_load(path, &l), 0);
    assert_int_equal(vol_map_allocated(l), 3);
    assert_true(vol_map_get(l, n - 1, NULL));
    assert_false(vol_map_get(l, n - 2, NULL));
    vol_map_unref(l);
    vol_map_unref(m);
    env_fini(&e);
}

static void test_linear(void **state)
{
    struct vol_linear *l;
    assert_int_equal(vol_linear_new(&l), 0);
    uint8_t h[3][32], cat[96], want[32], got[32];
    for (int i = 0; i < 3; i++) {
        memset(h[i], i + 1, 32);
        vol_linear_add(l, h[i]);
        memcpy(cat + 32 * i, h[i], 32);
    }
    vol_linear_final(l, got);
    crypto_sha256(cat, sizeof(cat), want);
    assert_memory_equal(got, want, 32);
    vol_linear_free(l);
}

/* ---- volumes ---- */

static void test_vol_create_empty(void **state)
{
    struct env e;
    env_init(&e);
    uint64_t size = 8 * BS;
    struct vol_params bad = { .id = "vol-x", .size = BS + 1 };
    assert_int_equal(vol_create(e.r, &bad), -EINVAL);
    bad.size = 0;
    assert_int_equal(vol_create(e.r, &bad), -EINVAL);
    struct vol_params badid = { .id = "../x", .size = BS };
    assert_int_equal(vol_create(e.r, &badid), -EINVAL);
    struct vol_params nobase = { .id = "vol-y", .size = BS, .base_snapshot = "snap-none" };
    assert_int_equal(vol_create(e.r, &nobase), -ENOENT);

    struct vol *v = create_open(&e, "vol-a", size, NULL, NULL);
    struct vol_params dup = { .id = "vol-a", .size = size };
    assert_int_equal(vol_create(e.r, &dup), -EEXIST);
    assert_int_equal(vol_size(v), size);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd->size, size);
    assert_false(bd->flags & BLOCKDEV_READONLY);
    uint8_t *buf = malloc(size), *zero = calloc(1, size);
    memset(buf, 0xaa, size);
    assert_int_equal(bd_read(bd, buf, size, 0), 0);
    assert_memory_equal(buf, zero, size);
    struct blockdev_extent ext[4];
    size_t n;
    assert_int_equal(bd->ops->block_status(bd, size, 0, ext, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ext[0].length, size);
    assert_int_equal(ext[0].type, BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO);
    assert_int_equal(vol_changed_blocks(v), 0);

    /* Two handles share one state. */
    struct vol *v2;
    assert_int_equal(vol_open(e.r, "vol-a", NULL, &v2), 0);
    assert_int_equal(bd_write(bd, "hello", 5, BS + 3), 0);
    char got[6] = { 0 };
    assert_int_equal(bd_read(vol_blockdev(v2), got, 5, BS + 3), 0);
    assert_string_equal(got, "hello");
    assert_int_equal(vol_changed_blocks(v2), 1);
    assert_int_equal(vol_delete(e.r, "vol-a"), -EBUSY);
    vol_close(v2);
    assert_int_equal(vol_delete(e.r, "vol-a"), -EBUSY);
    vol_close(v);
    /* A key where there was none is refused. */
    struct store_key key;
    memset(&key, 7, sizeof(key));
    assert_int_equal(vol_open(e.r, "vol-a", &key, &v), -EACCES);
    assert_int_equal(vol_open(e.r, "vol-a", NULL, &v), 0);
    assert_int_equal(bd_read(vol_blockdev(v), got, 5, BS + 3), 0);
    assert_string_equal(got, "hello");
    vol_close(v);
    assert_int_equal(vol_delete(e.r, "vol-a"), 0);
    assert_int_equal(vol_delete(e.r, "vol-a"), -ENOENT);
    assert_int_equal(vol_open(e.r, "vol-a", NULL, &v), -ENOENT);
    free(buf);
    free(zero);
    env_fini(&e);
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t x;
    assert_int_equal(pread(fd, &x, 1, at), 1);
    x ^= 0x04;
    assert_int_equal(pwrite(fd, &x, 1, at), 1);
    close(fd);
}

/* A damaged state file or bitmap is refused (-EBADMSG); stray layer files are removed. */
static void test_vol_damaged_files(void **state)
{
    struct env e;
    env_init(&e);
    struct vol *v = create_open(&e, "vol-d", 4 * BS, NULL, NULL);
    assert_int_equal(bd_write(vol_blockdev(v), "abc", 3, BS), 0);
    assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
    vol_close(v);
    char dir[600], p[700], q[700];
    snprintf(dir, sizeof(dir), "%s/volumes/vol-d", e.region_dir);
    snprintf(p, sizeof(p), "%s/L77.data", dir);
    write_file(p, (const uint8_t *)"junk", 4);
    snprintf(q, sizeof(q), "%s/state.tmp-123", dir);
    write_file(q, (const uint8_t *)"junk", 4);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), 0);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(access(q, F_OK), -1);
    vol_close(v);

    snprintf(p, sizeof(p), "%s/state", dir);
    flip_byte(p, 20);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), -EBADMSG);
    flip_byte(p, 20);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), 0);
    vol_close(v);

    /* Block 1's state is in byte 0 (bits 2-3): make it the invalid state 3. */
    snprintf(p, sizeof(p), "%s/L1.bitmap", dir);
    uint8_t b = 0x0c;
    int fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, &b, 1, 0), 1);
    close(fd);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), -EBADMSG);
    /* A state for a block past the volume's end. */
    uint8_t page[4096] = { 0 };
    page[0] = 0x04;
    page[2] = 0x01; /* block 8 of a 4-block volume */
    fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, page, sizeof(page), 0), (ssize_t)sizeof(page));
    close(fd);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), -EBADMSG);
    page[2] = 0;
    fd = open(p, O_RDWR);
    assert_int_equal(pwrite(fd, page, sizeof(page), 0), (ssize_t)sizeof(page));
    close(fd);
    assert_int_equal(vol_open(e.r, "vol-d", NULL, &v), 0);
    char got[4] = { 0 };
    assert_int_equal(bd_read(vol_blockdev(v), got, 3, BS), 0);
    assert_string_equal(got, "abc");
    vol_close(v);
    env_fini(&e);
}

/* Applies one random operation to the device and the model. */
static void random_op(struct blockdev *bd, uint8_t *model, uint64_t size, uint64_t *seed,
                      uint8_t *buf)
{
    uint64_t r = rng_below(seed, 100), off, len;
    if (r < 35) { /* small, unaligned */
        len = 1 + rng_below(seed, 9000);
        off = rng_below(seed, size - len);
    } else if (r < 50) { /* crossing blocks */
        len = 1 + rng_below(seed, 2 * BS);
        off = rng_below(seed, size - len);
    } else if (r < 55) { /* whole blocks */
        len = BS * (1 + rng_below(seed, 2));
        off = BS * rng_below(seed, size / BS - 1);
    } else if (r < 60) { /* page-aligned runs: with a page-aligned buf, written with O_DIRECT */
        len = VOL_DIRECT_MIN +
              VOL_DIRECT_ALIGN * rng_below(seed, (2 * BS - VOL_DIRECT_MIN) / VOL_DIRECT_ALIGN);
        off = VOL_DIRECT_ALIGN * rng_below(seed, (size - len) / VOL_DIRECT_ALIGN);
    } else if (r < 70) { /* zero ranges */
        len = rng_below(seed, 2) ? BS * (1 + rng_below(seed, 3)) : 1 + rng_below(seed, BS + 7);
        off = len % BS ? rng_below(seed, size - len) : BS * rng_below(seed, size / BS - 3);
        int rc = rng_below(seed, 2) ? bd->ops->trim(bd, len, off)
                                    : bd->ops->write_zeroes(bd, len, off, BLOCKDEV_MAY_TRIM);
        assert_int_equal(rc, 0);
        memset(model + off, 0, len);
        return;
    } else if (r < 95) { /* read */
        len = 1 + rng_below(seed, 3 * BS);
        off = rng_below(seed, size - len);
        assert_int_equal(bd_read(bd, buf, len, off), 0);
        assert_memory_equal(buf, model + off, len);
        return;
    } else {
        assert_int_equal(bd->ops->flush(bd), 0);
        return;
    }
    if (rng_below(seed, 8) == 0)
        memset(buf, 0, len); /* zero data written as data */
    else
        rng_fill(seed, buf, len);
    unsigned flags = rng_below(seed, 20) == 0 ? BLOCKDEV_FUA : 0;
    assert_int_equal(bd->ops->pwrite(bd, buf, len, off, flags), 0);
    memcpy(model + off, buf, len);
}

/* Every extent block_status calls zero reads as zero; extents tile the range. */
static void check_status(struct blockdev *bd, const uint8_t *model, uint64_t size)
{
    uint64_t off = 0;
    while (off < size) {
        struct blockdev_extent ext[8];
        size_t n = 0;
        assert_int_equal(bd->ops->block_status(bd, size - off, off, ext, 8, &n), 0);
        assert_true(n >= 1 && n <= 8);
        for (size_t i = 0; i < n; i++) {
            assert_true(ext[i].length > 0);
            if (ext[i].type & BLOCKDEV_EXTENT_ZERO)
                for (uint64_t k = 0; k < ext[i].length; k++)
                    assert_int_equal(model[off + k], 0);
            off += ext[i].length;
        }
        assert_true(off <= size);
    }
}

/* Random I/O against a model, with snapshots taken while writes go on, then reopened from disk;
 * with `key`, on an encrypted volume over an encrypted base. */
static void random_io(const struct store_key *key)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 24 * BS;
    uint64_t seed = 1234;
    /* buf page-aligned: its aligned writes take the layer's O_DIRECT path, interleaved with
     * buffered ones over the same blocks (the kernel must keep the two coherent). */
    uint8_t *model = calloc(1, size), *snapmodel = malloc(size),
            *buf = aligned_alloc(VOL_DIRECT_ALIGN, 3 * BS);

    /* A base snapshot with data in half the blocks, so copy-up reads from the base too. */
    struct vol *b = create_open(&e, "vol-base", size, NULL, key);
    for (uint64_t i = 0; i < size / BS; i += 2) {
        rng_fill(&seed, model + i * BS, BS);
        assert_int_equal(bd_write(vol_blockdev(b), model + i * BS, BS, i * BS), 0);
    }
    struct vol_snapshot_stats st;
    snapshot_now(b, "snap-base", &st);
    assert_int_equal(st.blocks, size / BS / 2);
    vol_close(b);

    struct vol *v = create_open(&e, "vol-io", size, "snap-base", key);
    struct blockdev *bd = vol_blockdev(v);
    check_content(bd, model, size);
    check_status(bd, model, size);
    int snaps = 0;
    for (int k = 0; k < 1500; k++) {
        random_op(bd, model, size, &seed, buf);
        if (k % 300 == 299) {
            /* Snapshot; keep changing the volume; the snapshot reads back bit-exact. */
            char id[32];
            snprintf(id, sizeof(id), "snap-io%d", snaps++);
            struct vol *vs[1] = { v };
            const char *ids[1] = { id };
            memcpy(snapmodel, model, size);
            assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
            assert_int_equal(vol_changed_blocks(v), 0);
            for (int j = 0; j < 100; j++)
                random_op(bd, model, size, &seed, buf);
            assert_int_equal(vol_snapshot_capture(v, id, NULL, NULL, &st), 0);
            check_snapshot(&e, id, snapmodel, size, key);
            struct blockdev *sbd;
            assert_int_equal(vol_snapshot_open(e.r, id, size, key, &sbd), 0);
            uint8_t lin[32];
            linear_of(sbd, size, lin);
            assert_memory_equal(lin, st.linear, 32);
            check_status(sbd, snapmodel, size);
            assert_int_equal(sbd->ops->pwrite(sbd, buf, 10, 0, 0), -EROFS);
            sbd->ops->close(sbd);
            for (int j = 0; j < 100; j++)
                random_op(bd, model, size, &seed, buf);
            assert_int_equal(vol_snapshot_finish(v, id), 0);
            assert_int_equal(vol_snapshot_finish(v, id), 0); /* idempotent */
            check_content(bd, model, size);
        }
        if (k % 250 == 0)
            check_status(bd, model, size);
    }
    check_content(bd, model, size);
    check_status(bd, model, size);
    assert_int_equal(bd->ops->flush(bd), 0);
    vol_close(v);
    /* Reopened from disk in a fresh region: the same bytes. */
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_open(e.r, "vol-io", key, &v), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);
    free(model);
    free(snapmodel);
    free(buf);
    env_fini(&e);
}

static void test_vol_random_io(void **state)
{
    random_io(NULL);
}

static void test_vol_trim_is_cheap(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 16 * BS;
    struct vol *v = create_open(&e, "vol-t", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    uint8_t *data = malloc(size);
    memset(data, 0x5c, size);
    assert_int_equal(bd_write(bd, data, size, 0), 0);
    assert_int_equal(bd->ops->flush(bd), 0);
    assert_int_equal(vol_changed_blocks(v), 16);
    /* Whole-block zeroing punches holes: the layer shrinks, the blocks read zero. */
    assert_int_equal(bd->ops->write_zeroes(bd, 8 * BS, 4 * BS, 0), 0);
    assert_int_equal(bd->ops->trim(bd, 2 * BS, 14 * BS), 0);
    assert_int_equal(bd->ops->flush(bd), 0);
    char path[600];
    snprintf(path, sizeof(path), "%s/volumes/vol-t/L1.data", e.region_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 <= 7 * BS);
    memset(data + 4 * BS, 0, 8 * BS);
    memset(data + 14 * BS, 0, 2 * BS);
    check_content(bd, data, size);
    struct blockdev_extent ext[8];
    size_t n;
    assert_int_equal(bd->ops->block_status(bd, size, 0, ext, 8, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ext[0].type, 0);
    assert_int_equal(ext[0].length, 4 * BS);
    assert_int_equal(ext[1].type, BLOCKDEV_EXTENT_ZERO);
    assert_int_equal(ext[1].length, 8 * BS);
    assert_int_equal(ext[2].type, 0);
    assert_int_equal(ext[3].type, BLOCKDEV_EXTENT_ZERO);
    /* Zeroing what already reads zero (never written) is not a change. */
    struct vol *w = create_open(&e, "vol-t2", size, NULL, NULL);
    assert_int_equal(vol_blockdev(w)->ops->trim(vol_blockdev(w), size, 0), 0);
    assert_int_equal(vol_changed_blocks(w), 0);
    /* A partial write to a zeroed block keeps the rest zero. */
    assert_int_equal(bd_write(bd, "xyz", 3, 5 * BS + 100), 0);
    memcpy(data + 5 * BS + 100, "xyz", 3);
    check_content(bd, data, size);
    vol_close(w);
    vol_close(v);
    free(data);
    env_fini(&e);
}

static void test_vol_from_snapshot_constant(void **state)
{
    struct env e;
    env_init(&e);
    /* Two saved maps, 1 GiB and 16 TiB; creating a volume from either costs the same. */
    struct chunk_id id;
    uint8_t *blk = malloc(BS);
    memset(blk, 0x33, BS);
    store_chunk_id(NULL, blk, BS, &id);
    struct store_batch *b;
    assert_int_equal(store_batch_new(e.store, &b), 0);
    assert_int_equal(store_put(e.store, b, &id, NULL, blk, BS, NULL), 0);
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);
    const uint64_t sizes[2] = { 1ull << 30, 16ull << 40 };
    const char *snaps[2] = { "snap-1g", "snap-16t" };
    const char *vols[2] = { "vol-1g", "vol-16t" };
    int64_t took[2];
    for (int i = 0; i < 2; i++) {
        struct vol_map *m;
        assert_int_equal(vol_map_new(sizes[i] / BS, &m), 0);
        assert_int_equal(vol_map_set(m, 1, &id), 0);
        assert_int_equal(vol_map_set(m, sizes[i] / BS - 1, &id), 0);
        char path[600];
        vol_map_path(e.r, snaps[i], path, sizeof(path));
        assert_int_equal(vol_map_save(m, path), 0);
        vol_map_unref(m);
        int64_t t0 = time_mono_us();
        struct vol_params p = { .id = vols[i], .size = sizes[i], .base_snapshot = snaps[i] };
        assert_int_equal(vol_create(e.r, &p), 0);
        took[i] = time_mono_us() - t0;
    }
    /* No per-block work: both well under any per-block cost (32M blocks). */
    assert_true(took[1] < 200000);
    assert_true(took[1] < 20 * took[0] + 50000);
    struct vol *v;
    assert_int_equal(vol_open(e.r, "vol-16t", NULL, &v), 0);
    uint8_t *buf = malloc(BS);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd_read(bd, buf, BS, (sizes[1] / BS - 1) * BS), 0);
    assert_memory_equal(buf, blk, BS);
    assert_int_equal(bd_read(bd, buf, 4096, 1ull << 40), 0);
    assert_true(store_is_zero(buf, 4096));
    struct blockdev_extent ext[4];
    size_t n;
    assert_int_equal(bd->ops->block_status(bd, sizes[1] - 2 * BS, 2 * BS, ext, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ext[0].type, BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO);
    assert_int_equal(ext[0].length, sizes[1] - 3 * BS);
    assert_int_equal(ext[1].type, 0);
    /* A 1 GiB volume refuses a bigger base. */
    struct vol_params small = { .id = "vol-small", .size = 1ull << 30, .base_snapshot = snaps[1] };
    assert_int_equal(vol_create(e.r, &small), -EINVAL);
    vol_close(v);
    free(buf);
    free(blk);
    env_fini(&e);
}

/* ---- snapshots ---- */

static void test_incremental(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t nb = 300, size = nb * BS;
    uint64_t seed = 99;
    uint8_t *model = malloc(size);
    rng_fill(&seed, model, size);
    memset(model + 7 * BS, 0, BS); /* a zero block written as data is not stored */
    struct vol *v = create_open(&e, "vol-inc", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd_write(bd, model, size, 0), 0);
    struct vol_snapshot_stats s1, s2;
    struct vol *vs[1] = { v };
    const char *ids[1] = { "snap-i1" };
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
    char pend[4][32];
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 1);
    assert_string_equal(pend[0], "snap-i1");
    assert_int_equal(vol_snapshot_capture(v, "snap-i1", NULL, NULL, &s1), 0);
    assert_int_equal(vol_snapshot_capture(v, "snap-i1", NULL, NULL, &s1), 0); /* again */
    assert_int_equal(vol_snapshot_finish(v, "snap-i1"), 0);
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 0);
    assert_int_equal(s1.blocks, nb - 1);
    assert_int_equal(s1.changed_blocks, nb - 1); /* the zero block over nothing is no change */
    assert_int_equal(s1.stored_bytes, 0);        /* the second capture stored nothing new */

    /* Change 1% of the blocks (3): only those are read and stored. */
    const uint64_t changed[3] = { 5, 150, 299 };
    for (int i = 0; i < 3; i++) {
        uint64_t off = changed[i] * BS + 1000;
        rng_fill(&seed, model + off, 5000);
        assert_int_equal(bd_write(bd, model + off, 5000, off), 0);
    }
    assert_int_equal(vol_changed_blocks(v), 3);
    snapshot_now(v, "snap-i2", &s2);
    assert_int_equal(s2.changed_blocks, 3);
    assert_int_equal(s2.blocks, nb - 1);
    assert_true(s2.stored_bytes >= 3 * BS && s2.stored_bytes <= 3 * (BS + 4096));
    check_snapshot(&e, "snap-i2", model, size, NULL);
    /* LINEAR against an independent computation over the plaintext. */
    struct blockdev *sbd;
    assert_int_equal(vol_snapshot_open(e.r, "snap-i2", size, NULL, &sbd), 0);
    uint8_t lin[32];
    linear_of(sbd, size, lin);
    assert_memory_equal(lin, s2.linear, 32);
    sbd->ops->close(sbd);
    /* Unchanged: an empty incremental. */
    struct vol_snapshot_stats s3;
    snapshot_now(v, "snap-i3", &s3);
    assert_int_equal(s3.changed_blocks, 0);
    assert_int_equal(s3.stored_bytes, 0);
    assert_memory_equal(s3.linear, s2.linear, 32);
    vol_close(v);
    free(model);
    env_fini(&e);
}

static void progress_cb(void *ctx, int pct)
{
    int *last = ctx;
    assert_true(pct >= *last && pct <= 100);
    *last = pct;
}

static void test_encrypted(void **state)
{
    struct env e;
    env_init(&e);
    struct store_key key;
    memset(&key, 0, sizeof(key));
    memset(key.key_id, 0x11, sizeof(key.key_id));
    memset(key.id_key, 0x22, sizeof(key.id_key));
    memset(key.data_key, 0x33, sizeof(key.data_key));
    const uint64_t nb = 12, size = nb * BS;
    uint64_t seed = 5;
    uint8_t *model = calloc(1, size);
    rng_fill(&seed, model, 8 * BS);
    struct vol *v = create_open(&e, "vol-enc", size, NULL, &key);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd_write(bd, model, size, 0), 0);
    struct vol *vs[1] = { v };
    const char *ids[1] = { "snap-e1" };
    struct vol_snapshot_stats st;
    int last = 0;
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
    assert_int_equal(vol_snapshot_capture(v, "snap-e1", progress_cb, &last, &st), 0);
    assert_int_equal(last, 100);
    assert_int_equal(vol_snapshot_finish(v, "snap-e1"), 0);
    assert_int_equal(st.blocks, 8);
    /* Ids are HMACs, not SHA-256s: LINEAR is still over plain SHA-256s. */
    struct vol_map *m;
    char path[600];
    vol_map_path(e.r, "snap-e1", path, sizeof(path));
    assert_int_equal(vol_map_load(path, &m), 0);
    struct chunk_id id, plain;
    assert_true(vol_map_get(m, 0, &id));
    crypto_sha256(model, BS, plain.b);
    assert_memory_not_equal(&id, &plain, sizeof(id));
    vol_map_unref(m);
    check_snapshot(&e, "snap-e1", model, size, &key);
    struct blockdev *sbd;
    assert_int_equal(vol_snapshot_open(e.r, "snap-e1", size, &key, &sbd), 0);
    uint8_t lin[32];
    linear_of(sbd, size, lin);
    assert_memory_equal(lin, st.linear, 32);
    sbd->ops->close(sbd);
    /* Incremental on top: base blocks' SHA-256s come from the map, not from decoding. */
    rng_fill(&seed, model + 9 * BS + 7, 100);
    assert_int_equal(bd_write(bd, model + 9 * BS + 7, 100, 9 * BS + 7), 0);
    snapshot_now(v, "snap-e2", &st);
    assert_int_equal(st.changed_blocks, 1);
    assert_int_equal(st.blocks, 9);
    assert_int_equal(vol_snapshot_open(e.r, "snap-e2", size, &key, &sbd), 0);
    linear_of(sbd, size, lin);
    assert_memory_equal(lin, st.linear, 32);
    sbd->ops->close(sbd);
    /* Without the key, encrypted chunks do not read (-EIO, never bytes). */
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_snapshot_open(e.r, "snap-e2", size, NULL, &sbd), 0);
    uint8_t b4[4096];
    assert_int_equal(bd_read(sbd, b4, sizeof(b4), 0), -EIO);
    sbd->ops->close(sbd);
    free(model);
    env_fini(&e);
}

static void test_key(struct store_key *key, uint8_t fill)
{
    memset(key, 0, sizeof(*key));
    memset(key->key_id, fill, sizeof(key->key_id));
    memset(key->id_key, fill + 1, sizeof(key->id_key));
    memset(key->data_key, fill + 2, sizeof(key->data_key));
}

/* Reads a whole file into a new buffer; its size in *n. */
static uint8_t *slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    uint8_t *b = malloc((size_t)st.st_size + 1);
    assert_int_equal(pread(fd, b, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    *n = (size_t)st.st_size;
    return b;
}

/* Whether any 512-byte unit of the volume's layer files (or of the one named `only`) holds a
 * non-zero unit of `model` at the same offset (in the clear); counts the non-zero units seen in
 * *units. */
static bool layers_hold_clear(struct env *e, const char *id, const char *only, const uint8_t *model,
                              uint64_t size, size_t *units)
{
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/volumes/%s", e->region_dir, id);
    DIR *d = opendir(dir);
    assert_non_null(d);
    bool clear = false;
    *units = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t nl = strlen(de->d_name);
        if (nl < 5 || strcmp(de->d_name + nl - 5, ".data") != 0 ||
            (only && strcmp(de->d_name, only) != 0))
            continue;
        char path[1200];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        size_t n;
        uint8_t *b = slurp(path, &n);
        for (size_t o = 0; o + 512 <= n && o + 512 <= size; o += 512) {
            if (store_is_zero(b + o, 512))
                continue;
            ++*units;
            clear |= memcmp(b + o, model + o, 512) == 0;
        }
        free(b);
    }
    closedir(d);
    return clear;
}

/* Rewrites a volume's state file through `edit` (which changes the text before its sum line)
 * and seals it with a fresh sum, as an older amid would have written it. */
static void state_edit(struct env *e, const char *id, void (*edit)(char *text))
{
    char path[600];
    snprintf(path, sizeof(path), "%s/volumes/%s/state", e->region_dir, id);
    size_t n;
    uint8_t *b = slurp(path, &n);
    b[n] = 0;
    char *text = (char *)b, *sum = strstr(text, "sum ");
    assert_non_null(sum);
    *sum = 0;
    char body[4096];
    snprintf(body, sizeof(body), "%s", text);
    edit(body);
    uint8_t h[32];
    char hex[65];
    crypto_sha256(body, strlen(body), h);
    hex_encode(h, sizeof(h), hex);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%ssum %s\n", body, hex);
    fclose(f);
    free(b);
}

static void keyed_as_11(char *text)
{
    /* "key -" becomes the key id 11...11 of test_key(.., 0x11); no xts line: older layers. */
    char *k = strstr(text, "key -\n");
    assert_non_null(k);
    char rest[1024], hex[2 * STORE_KEY_ID_LEN + 1];
    assert_true(strlen(k + 6) < sizeof(rest));
    memcpy(rest, k + 6, strlen(k + 6) + 1);
    memset(hex, '1', 2 * STORE_KEY_ID_LEN);
    hex[2 * STORE_KEY_ID_LEN] = 0;
    size_t room = 4096 - (size_t)(k - text); /* text is state_edit's 4096-byte body */
    assert_true(snprintf(k, room, "key %s\n%s", hex, rest) < (int)room);
}

/* An encrypted volume's layer files hold no unit of its data in the clear (whole blocks,
 * unaligned and sector-aligned pieces over a base, zeroes, trims: random I/O with snapshots);
 * the data reads back across reopening; without the key, or with another, it does not open.  A
 * volume written before layers were encrypted keeps reading its clear layers and encrypts the
 * layers it makes from then on. */
static void test_encrypted_layers(void **state)
{
    struct store_key key, other;
    test_key(&key, 0x11);
    test_key(&other, 0x44);
    random_io(&key);

    struct env e;
    env_init(&e);
    const uint64_t size = 6 * BS;
    uint64_t seed = 77;
    uint8_t *model = calloc(1, size);
    rng_fill(&seed, model, size);
    memset(model + 2 * BS, 0, BS); /* a zero block: stays a hole */
    struct vol *v = create_open(&e, "vol-xts", size, NULL, &key);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd_write(bd, model, 3 * BS, 0), 0);
    /* Unaligned pieces: the units at their edges are read, merged and rewritten. */
    for (uint64_t off = 3 * BS; off < size;) {
        uint64_t n = 1 + rng_below(&seed, 70000);
        if (off + n > size)
            n = size - off;
        assert_int_equal(bd_write(bd, model + off, n, off), 0);
        off += n;
    }
    assert_int_equal(bd->ops->flush(bd), 0);
    check_content(bd, model, size);
    size_t units;
    assert_false(layers_hold_clear(&e, "vol-xts", NULL, model, size, &units));
    assert_true(units >= 5 * BS / 512);
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_open(e.r, "vol-xts", NULL, &v), -EACCES);
    assert_int_equal(vol_open(e.r, "vol-xts", &other, &v), -EACCES);
    assert_int_equal(vol_open(e.r, "vol-xts", &key, &v), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);

    /* Written in the clear by an older amid (its state names the key, no xts line). */
    v = create_open(&e, "vol-old", size, NULL, NULL);
    assert_int_equal(bd_write(vol_blockdev(v), model, size, 0), 0);
    assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
    vol_close(v);
    state_edit(&e, "vol-old", keyed_as_11);
    assert_true(layers_hold_clear(&e, "vol-old", NULL, model, size, &units));
    assert_int_equal(vol_open(e.r, "vol-old", &key, &v), 0);
    check_content(vol_blockdev(v), model, size);
    /* From its first open with the key, writes go to a new, encrypted top layer. */
    rng_fill(&seed, model + BS, BS);
    assert_int_equal(bd_write(vol_blockdev(v), model + BS, BS, BS), 0);
    assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
    check_content(vol_blockdev(v), model, size);
    assert_false(layers_hold_clear(&e, "vol-old", "L2.data", model, size, &units));
    assert_int_equal(units, BS / 512);
    struct vol_snapshot_stats st;
    snapshot_now(v, "snap-old", &st); /* the clear layer goes into sealed chunks */
    rng_fill(&seed, model + 3 * BS, BS);
    assert_int_equal(bd_write(vol_blockdev(v), model + 3 * BS, BS, 3 * BS), 0);
    assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);
    assert_false(layers_hold_clear(&e, "vol-old", NULL, model, size, &units));
    assert_int_equal(units, BS / 512);
    assert_int_equal(vol_open(e.r, "vol-old", &key, &v), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);
    free(model);
    env_fini(&e);
}

/* Two volumes under one data key (as volumes made from one snapshot are) write the same data
 * to the same place: their layer files differ (each volume's layer key is its own). */
static void test_encrypted_layers_per_volume(void **state)
{
    struct env e;
    env_init(&e);
    struct store_key key;
    test_key(&key, 0x11);
    uint8_t *data = malloc(BS), *f1, *f2;
    uint64_t seed = 3;
    rng_fill(&seed, data, BS);
    const char *ids[2] = { "vol-twin-a", "vol-twin-b" };
    for (int i = 0; i < 2; i++) {
        struct vol *v = create_open(&e, ids[i], 2 * BS, NULL, &key);
        assert_int_equal(bd_write(vol_blockdev(v), data, BS, 0), 0);
        assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
        vol_close(v);
    }
    char p[1200];
    size_t n1, n2;
    snprintf(p, sizeof(p), "%s/volumes/%s/L1.data", e.region_dir, ids[0]);
    f1 = slurp(p, &n1);
    snprintf(p, sizeof(p), "%s/volumes/%s/L1.data", e.region_dir, ids[1]);
    f2 = slurp(p, &n2);
    assert_true(n1 >= BS && n2 >= BS);
    for (size_t o = 0; o < BS; o += 512)
        assert_memory_not_equal(f1 + o, f2 + o, 512);
    free(f1);
    free(f2);
    free(data);
    env_fini(&e);
}

/* Large aligned writes go to the layer with O_DIRECT where the file system takes it; one that
 * opens O_DIRECT but refuses the write (here: a descriptor whose writes fail with EINVAL) gets
 * it and every later one through the page cache, losing nothing. */
static void test_direct_writes_and_fallback(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 4 * BS;
    uint8_t *buf = aligned_alloc(VOL_DIRECT_ALIGN, size), *back = malloc(size);
    uint64_t seed = 9;
    rng_fill(&seed, buf, size);
    struct vol *v = create_open(&e, "vol-direct", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    struct vol_layer *top = v->s->layers[v->s->nlayers - 1];
    if (top->fd_direct < 0) {
        print_message("O_DIRECT refused under %s: the direct path is not exercised\n", e.root);
    } else {
        assert_int_equal(bd_write(bd, buf, BS, 0), 0);
        assert_true(atomic_load(&top->direct_writes) >= 1);
        /* Fault injection: the direct descriptor now refuses every write with EINVAL. */
        int bad = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
        assert_true(bad >= 0);
        assert_true(dup2(bad, top->fd_direct) == top->fd_direct);
        close(bad);
        uint64_t before = atomic_load(&top->direct_writes);
        assert_int_equal(bd_write(bd, buf + BS, 2 * BS, BS), 0);
        assert_true(atomic_load(&top->direct_off));
        assert_int_equal(bd_write(bd, buf + 3 * BS, BS, 3 * BS), 0);
        assert_int_equal(atomic_load(&top->direct_writes), before);
    }
    assert_int_equal(bd_write(bd, buf, BS, 0), 0);
    assert_int_equal(bd->ops->flush(bd), 0);
    assert_int_equal(bd_read(bd, back, size, 0), 0);
    assert_memory_equal(back, buf, size);
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_open(e.r, "vol-direct", NULL, &v), 0);
    assert_int_equal(bd_read(vol_blockdev(v), back, size, 0), 0);
    assert_memory_equal(back, buf, size);
    vol_close(v);
    free(buf);
    free(back);
    env_fini(&e);
}

static void chunk_path(struct env *e, const struct chunk_id *id, char *out, size_t n)
{
    char hex[65];
    chunk_id_hex(id, hex);
    snprintf(out, n, "%s/store/chunks/%.2s/%s", e->root, hex, hex);
}

static void test_cache_and_corruption(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 4 * BS;
    uint64_t seed = 77;
    uint8_t *model = malloc(size), *buf = malloc(BS);
    rng_fill(&seed, model, size);
    struct vol *v = create_open(&e, "vol-c", size, NULL, NULL);
    assert_int_equal(bd_write(vol_blockdev(v), model, size, 0), 0);
    struct vol_snapshot_stats st;
    snapshot_now(v, "snap-c", &st);
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    struct vol *c = create_open(&e, "vol-c2", size, "snap-c", NULL);
    struct blockdev *bd = vol_blockdev(c);
    struct vol_map *m;
    char path[600];
    vol_map_path(e.r, "snap-c", path, sizeof(path));
    assert_int_equal(vol_map_load(path, &m), 0);
    struct chunk_id id0, id1, id2;
    assert_true(vol_map_get(m, 0, &id0));
    assert_true(vol_map_get(m, 1, &id1));
    assert_true(vol_map_get(m, 2, &id2));
    vol_map_unref(m);
    /* Blocks 1 and 2 damaged first: reading block 0 reads them ahead, and a failed read-ahead
     * must leave nothing cached. */
    char cp[700];
    chunk_path(&e, &id1, cp, sizeof(cp));
    assert_int_equal(unlink(cp), 0);
    chunk_path(&e, &id2, cp, sizeof(cp));
    int fd = open(cp, O_RDWR);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    uint8_t x;
    assert_int_equal(pread(fd, &x, 1, sb.st_size / 2), 1);
    x ^= 1;
    assert_int_equal(pwrite(fd, &x, 1, sb.st_size / 2), 1);
    close(fd);
    /* The first 4 KiB read decodes block 0; the chunk then disappears; the other 127 reads
     * of the block come from the cache. */
    assert_int_equal(bd_read(bd, buf, 4096, 0), 0);
    chunk_path(&e, &id0, cp, sizeof(cp));
    assert_int_equal(unlink(cp), 0);
    for (size_t off = 4096; off < BS; off += 4096)
        assert_int_equal(bd_read(bd, buf + off, 4096, off), 0);
    assert_memory_equal(buf + 4096, model + 4096, BS - 4096);
    /* Missing and corrupt chunks: -EIO, also for a copy-up, and again when asked again. */
    assert_int_equal(bd_read(bd, buf, 100, BS + 5), -EIO);
    assert_int_equal(bd_write(bd, "x", 1, BS + 5), -EIO);
    assert_int_equal(bd_read(bd, buf, 100, 2 * BS + 5), -EIO);
    assert_int_equal(bd_read(bd, buf, 2 * BS, BS), -EIO);
    /* A full-block write needs nothing from below. */
    assert_int_equal(bd_write(bd, model, BS, BS), 0);
    assert_int_equal(bd_read(bd, buf, BS, BS), 0);
    assert_memory_equal(buf, model, BS);
    vol_close(c);
    free(model);
    free(buf);
    env_fini(&e);
}

/* Snapshot "snap-NAME" of a volume "vol-NAME" of `n` blocks of random bytes (from `seed`, also
 * into `model`), and the chunk ids of its blocks. */
static void snapshot_of_random(struct env *e, const char *name, uint64_t seed, uint8_t *model,
                               int n, struct chunk_id *ids)
{
    char vid[32], sid[32], path[600];
    snprintf(vid, sizeof(vid), "vol-%s", name);
    snprintf(sid, sizeof(sid), "snap-%s", name);
    rng_fill(&seed, model, (size_t)n * BS);
    struct vol *v = create_open(e, vid, (uint64_t)n * BS, NULL, NULL);
    assert_int_equal(bd_write(vol_blockdev(v), model, (size_t)n * BS, 0), 0);
    struct vol_snapshot_stats st;
    snapshot_now(v, sid, &st);
    vol_close(v);
    struct vol_map *m;
    vol_map_path(e->r, sid, path, sizeof(path));
    assert_int_equal(vol_map_load(path, &m), 0);
    for (int i = 0; i < n; i++)
        assert_true(vol_map_get(m, (uint64_t)i, &ids[i]));
    vol_map_unref(m);
}

/* Read-ahead (white box): the sequential detector, and the cache's background decodes, their
 * failures, a full queue and a cache freed with decodes still queued. */
static void test_readahead(void **state)
{
    atomic_ullong cur;
    atomic_init(&cur, 0);
    assert_int_equal(vol_readahead(&cur, 0, 0), VOL_READAHEAD); /* a reader starting at 0 */
    assert_int_equal(vol_readahead(&cur, 0, 0), 0);             /* more of block 0 */
    assert_int_equal(vol_readahead(&cur, 0, 1), VOL_READAHEAD); /* on into block 1 */
    assert_int_equal(vol_readahead(&cur, 2, 3), VOL_READAHEAD);
    assert_int_equal(vol_readahead(&cur, 9, 9), 0);               /* a jump */
    assert_int_equal(vol_readahead(&cur, 10, 10), VOL_READAHEAD); /* a new run */
    assert_int_equal(vol_readahead(&cur, 3, 3), 0);               /* backwards */

    struct env e;
    env_init(&e);
    const uint64_t size = 6 * BS;
    uint8_t *model = malloc(size), *buf = malloc(BS);
    char cp[700];
    struct chunk_id ids[6];
    snapshot_of_random(&e, "ra", 5, model, 6, ids);

    struct vol_cache *c;
    assert_int_equal(vol_cache_new(e.store, 64 * BS, NULL, 0, &c), 0);
    chunk_path(&e, &ids[5], cp, sizeof(cp));
    assert_int_equal(unlink(cp), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(vol_cache_prefetch(c, &ids[i], NULL), 0);
    assert_int_equal(vol_cache_prefetch(c, &ids[0], NULL), 0); /* queued or cached: no-op */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 0, BS), 0);
        assert_memory_equal(buf, model + (size_t)i * BS, BS);
    }
    assert_int_equal(vol_cache_read(c, &ids[5], NULL, buf, 0, BS), -EIO);
    /* Decoded ahead means cached: the chunks may go now. */
    for (int i = 0; i < 5; i++) {
        chunk_path(&e, &ids[i], cp, sizeof(cp));
        assert_int_equal(unlink(cp), 0);
        assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 100, 5000), 0);
        assert_memory_equal(buf, model + (size_t)i * BS + 100, 5000);
    }
    /* Many misses at once: queued or refused (a full queue), never waited for; the cache is
     * freed with decodes still queued. */
    for (uint64_t k = 0; k < 200; k++) {
        struct chunk_id id;
        id_of(1000 + k, &id);
        int rc = vol_cache_prefetch(c, &id, NULL);
        assert_true(rc == 0 || rc == -EAGAIN);
    }
    vol_cache_free(c);
    free(model);
    free(buf);
    env_fini(&e);
}

/* The disk tier (white box): with one chunk's room in memory and three on disk, chunks decoded
 * once read back — whole and in pieces — after their store files are gone and memory holds
 * another; a fourth pushes the coldest on disk off it. */
static void test_cache_disk_tier(void **state)
{
    (void)state;
    struct env e;
    env_init(&e);
    const uint64_t size = 5 * BS;
    uint8_t *model = malloc(size), *buf = malloc(BS);
    char cp[700];
    struct chunk_id ids[5];
    snapshot_of_random(&e, "dt", 11, model, 5, ids);

    struct vol_cache *c;
    assert_int_equal(vol_cache_new(e.store, BS, e.region_dir, 3 * BS, &c), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 0, BS), 0);
        assert_memory_equal(buf, model + (size_t)i * BS, BS);
    }
    /* The store forgets them; memory holds only chunk 2; 0 and 1 come from disk. */
    for (int i = 0; i < 3; i++) {
        chunk_path(&e, &ids[i], cp, sizeof(cp));
        assert_int_equal(unlink(cp), 0);
    }
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++) {
            assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 4096, 8192), 0);
            assert_memory_equal(buf, model + (size_t)i * BS + 4096, 8192);
            assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 0, BS), 0);
            assert_memory_equal(buf, model + (size_t)i * BS, BS);
        }
    }
    /* No read-ahead for what is on disk already. */
    assert_int_equal(vol_cache_prefetch(c, &ids[0], NULL), 0);
    /* Chunk 2, decoded last, stayed in memory: its slot is the coldest on disk.  Chunk 3 takes
     * that slot and memory, so chunk 2 is nowhere any more; 0, 1 and 3 are. */
    assert_int_equal(vol_cache_read(c, &ids[3], NULL, buf, 0, BS), 0);
    assert_memory_equal(buf, model + 3 * BS, BS);
    assert_int_equal(vol_cache_read(c, &ids[2], NULL, buf, 0, BS), -EIO);
    for (int i = 0; i < 4; i += (i == 1 ? 2 : 1)) {
        assert_int_equal(vol_cache_read(c, &ids[i], NULL, buf, 0, BS), 0);
        assert_memory_equal(buf, model + (size_t)i * BS, BS);
    }
    /* No file of the tier in the region's directory: it is unnamed. */
    DIR *d = opendir(e.region_dir);
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d));)
        assert_null(strstr(de->d_name, "decoded"));
    closedir(d);
    vol_cache_free(c);
    free(model);
    free(buf);
    env_fini(&e);
}

static void test_abort_and_grow(void **state)
{
    struct env e;
    env_init(&e);
    uint64_t size = 6 * BS, seed = 3;
    uint8_t *model = calloc(1, 10 * BS);
    struct vol *v = create_open(&e, "vol-g", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    rng_fill(&seed, model, 2 * BS);
    assert_int_equal(bd_write(bd, model, 2 * BS, 0), 0);
    struct vol *vs[1] = { v };
    const char *ids[1] = { "snap-a" };
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), -EEXIST);
    rng_fill(&seed, model + 3 * BS, 10);
    assert_int_equal(bd_write(bd, model + 3 * BS, 10, 3 * BS), 0);
    assert_int_equal(vol_snapshot_finish(v, "snap-a"), -ENOENT); /* not captured */
    assert_int_equal(vol_snapshot_abort(v, "snap-a"), 0);
    assert_int_equal(vol_snapshot_abort(v, "snap-a"), -ENOENT);
    char pend[2][32];
    assert_int_equal(vol_snapshot_pending(v, pend, 2), 0);
    check_content(bd, model, size);

    /* Grow: zero past the old end, writable there, and the next snapshot holds it all. */
    assert_int_equal(vol_grow(v, size - BS), -EINVAL);
    assert_int_equal(vol_grow(v, 10 * BS), 0);
    size = 10 * BS;
    assert_int_equal(vol_size(v), size);
    assert_int_equal(bd->size, size);
    check_content(bd, model, size);
    rng_fill(&seed, model + 8 * BS + 3, BS);
    assert_int_equal(bd_write(bd, model + 8 * BS + 3, BS, 8 * BS + 3), 0);
    struct vol_snapshot_stats st;
    snapshot_now(v, "snap-b", &st);
    assert_int_equal(st.changed_blocks, 5); /* aborted layer's 2 + 1 + new layer's 2 */
    check_snapshot(&e, "snap-b", model, size, NULL);
    assert_int_equal(bd->ops->flush(bd), 0);
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_open(e.r, "vol-g", NULL, &v), 0);
    assert_int_equal(vol_size(v), size);
    check_content(vol_blockdev(v), model, size);
    /* Growing a volume whose base is smaller. */
    assert_int_equal(vol_grow(v, 12 * BS), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);
    free(model);
    env_fini(&e);
}

/* Two snapshots pending on one volume: each captures its own instant, and the newer one's capture
 * stays right whether it runs before or after the older one finishes. */
static void test_two_pending(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 6 * BS;
    uint64_t seed = 31;
    uint8_t *m1 = calloc(1, size), *m2, *m3;
    struct vol *v = create_open(&e, "vol-tp", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    rng_fill(&seed, m1, 3 * BS);
    assert_int_equal(bd_write(bd, m1, 3 * BS, 0), 0);
    struct vol *vs[1] = { v };
    const char *i1[1] = { "snap-t1" }, *i2[1] = { "snap-t2" };
    assert_int_equal(vol_snapshot_begin(vs, i1, 1), 0);
    m2 = malloc(size);
    memcpy(m2, m1, size);
    rng_fill(&seed, m2 + BS + 5, 2 * BS);
    assert_int_equal(bd_write(bd, m2 + BS + 5, 2 * BS, BS + 5), 0);
    assert_int_equal(vol_snapshot_begin(vs, i2, 1), 0);
    m3 = malloc(size);
    memcpy(m3, m2, size);
    rng_fill(&seed, m3 + 5 * BS, 100);
    assert_int_equal(bd_write(bd, m3 + 5 * BS, 100, 5 * BS), 0);
    char pend[4][32];
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 2);
    assert_string_equal(pend[0], "snap-t1");
    assert_string_equal(pend[1], "snap-t2");
    assert_int_equal(vol_snapshot_pending(v, pend, 1), 1);
    struct vol_snapshot_stats s1, s2, s2b;
    assert_int_equal(vol_snapshot_capture(v, "snap-t2", NULL, NULL, &s2), 0);
    assert_int_equal(vol_snapshot_capture(v, "snap-t1", NULL, NULL, &s1), 0);
    assert_int_equal(vol_snapshot_finish(v, "snap-t1"), 0);
    assert_int_equal(vol_snapshot_capture(v, "snap-t2", NULL, NULL, &s2b), 0);
    assert_memory_equal(s2.linear, s2b.linear, 32);
    assert_int_equal(s2b.changed_blocks, 3); /* only the layer after snap-t1 now */
    assert_int_equal(vol_snapshot_finish(v, "snap-t2"), 0);
    check_snapshot(&e, "snap-t1", m1, size, NULL);
    check_snapshot(&e, "snap-t2", m2, size, NULL);
    check_content(bd, m3, size);
    assert_int_equal(vol_snapshot_capture(v, "snap-t9", NULL, NULL, &s1), -ENOENT);
    vol_close(v);
    free(m1);
    free(m2);
    free(m3);
    env_fini(&e);
}

/* Snapshots finished out of order: the newer one's finish waits, durably, for the older one to
 * be finished or aborted (also across a restart), and nothing is lost meanwhile. */
static void test_finish_out_of_order(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 4 * BS;
    uint64_t seed = 57;
    uint8_t *m1 = calloc(1, size), *m2 = malloc(size);
    struct vol *v = create_open(&e, "vol-oo", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    rng_fill(&seed, m1, size);
    assert_int_equal(bd_write(bd, m1, size, 0), 0);
    struct vol *vs[1] = { v };
    const char *i1[1] = { "snap-o1" }, *i2[1] = { "snap-o2" }, *i3[1] = { "snap-o3" };
    assert_int_equal(vol_snapshot_begin(vs, i1, 1), 0);
    memcpy(m2, m1, size);
    rng_fill(&seed, m2 + 2 * BS, 700);
    assert_int_equal(bd_write(bd, m2 + 2 * BS, 700, 2 * BS), 0);
    assert_int_equal(vol_snapshot_begin(vs, i2, 1), 0);
    struct vol_snapshot_stats st;
    assert_int_equal(vol_snapshot_finish(v, "snap-o2"), -ENOENT); /* not captured yet */
    assert_int_equal(vol_snapshot_capture(v, "snap-o2", NULL, NULL, &st), 0);
    assert_int_equal(vol_snapshot_finish(v, "snap-o2"), 0); /* waits for snap-o1 */
    assert_int_equal(vol_snapshot_finish(v, "snap-o2"), 0);
    assert_int_equal(vol_snapshot_abort(v, "snap-o2"), -EBUSY);
    char pend[4][32];
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 1);
    assert_string_equal(pend[0], "snap-o1");
    check_content(bd, m2, size);
    /* A restart in between keeps the finish. */
    assert_int_equal(bd->ops->flush(bd), 0);
    vol_close(v);
    vol_region_close(e.r);
    env_open_region(&e);
    assert_int_equal(vol_open(e.r, "vol-oo", NULL, &v), 0);
    bd = vol_blockdev(v);
    vs[0] = v;
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 1);
    check_content(bd, m2, size);
    /* The older one aborted: the newer one's rebase happens now; one layer remains. */
    assert_int_equal(vol_snapshot_abort(v, "snap-o1"), 0);
    assert_int_equal(vol_snapshot_pending(v, pend, 4), 0);
    check_snapshot(&e, "snap-o2", m2, size, NULL);
    check_content(bd, m2, size);
    assert_int_equal(vol_snapshot_begin(vs, i3, 1), 0);
    assert_int_equal(vol_snapshot_capture(v, "snap-o3", NULL, NULL, &st), 0);
    assert_int_equal(st.changed_blocks, 0); /* everything was in snap-o2's map */
    assert_int_equal(vol_snapshot_finish(v, "snap-o3"), 0);
    char dir[600];
    snprintf(dir, sizeof(dir), "%s/volumes/vol-oo/L1.data", e.region_dir);
    assert_int_equal(access(dir, F_OK), -1); /* captured layers are gone */
    check_content(bd, m2, size);
    vol_close(v);
    free(m1);
    free(m2);
    env_fini(&e);
}

/* Two volumes: a writer writes sequence k to A, then to B.  Begun at one instant, B's snapshot
 * holding k means A's holds at least k. */
struct pair_writer {
    struct vol *a, *b;
    atomic_int stop;
    uint64_t last;
};

static void *pair_thread(void *arg)
{
    struct pair_writer *w = arg;
    for (uint64_t k = 1; !atomic_load(&w->stop); k++) {
        uint64_t off = (k % 4) * BS + (k % 7) * 512;
        assert_int_equal(bd_write(vol_blockdev(w->a), &k, 8, off), 0);
        assert_int_equal(bd_write(vol_blockdev(w->a), &k, 8, 5 * BS), 0);
        assert_int_equal(bd_write(vol_blockdev(w->b), &k, 8, 5 * BS), 0);
        w->last = k;
    }
    return NULL;
}

static void test_two_volumes_one_instant(void **state)
{
    struct env e;
    env_init(&e);
    uint64_t size = 8 * BS;
    struct pair_writer w = { 0 };
    w.a = create_open(&e, "vol-pa", size, NULL, NULL);
    w.b = create_open(&e, "vol-pb", size, NULL, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, pair_thread, &w), 0);
    for (int round = 0; round < 6; round++) {
        usleep(20000);
        char ia[32], ib[32];
        snprintf(ia, sizeof(ia), "snap-pa%d", round);
        snprintf(ib, sizeof(ib), "snap-pb%d", round);
        struct vol *vs[2] = { w.b, w.a };
        const char *ids[2] = { ib, ia };
        assert_int_equal(vol_snapshot_begin(vs, ids, 2), 0);
        struct vol_snapshot_stats sa, sb;
        assert_int_equal(vol_snapshot_capture(w.a, ia, NULL, NULL, &sa), 0);
        assert_int_equal(vol_snapshot_capture(w.b, ib, NULL, NULL, &sb), 0);
        struct blockdev *da, *db;
        assert_int_equal(vol_snapshot_open(e.r, ia, size, NULL, &da), 0);
        assert_int_equal(vol_snapshot_open(e.r, ib, size, NULL, &db), 0);
        uint64_t ka = 0, kb = 0;
        assert_int_equal(bd_read(da, &ka, 8, 5 * BS), 0);
        assert_int_equal(bd_read(db, &kb, 8, 5 * BS), 0);
        assert_true(ka == kb || ka == kb + 1);
        da->ops->close(da);
        db->ops->close(db);
        assert_int_equal(vol_snapshot_finish(w.a, ia), 0);
        assert_int_equal(vol_snapshot_finish(w.b, ib), 0);
    }
    atomic_store(&w.stop, 1);
    pthread_join(t, NULL);
    assert_true(w.last > 0);
    struct vol *dup[2] = { w.a, w.a };
    const char *dids[2] = { "snap-d1", "snap-d2" };
    assert_int_equal(vol_snapshot_begin(dup, dids, 2), -EINVAL);
    vol_close(w.a);
    vol_close(w.b);
    env_fini(&e);
}

/* Several threads write interleaved 4 KiB sectors of the same blocks (copy-ups race) and their
 * own blocks while snapshots begin, capture and finish; nothing is lost. */
#define CONC_THREADS 4
#define CONC_BLOCKS  8
#define SECT         4096u

struct conc {
    struct vol *v;
    uint8_t *model;
    int t;
    uint64_t seed;
};

static void *conc_thread(void *arg)
{
    struct conc *c = arg;
    struct blockdev *bd = vol_blockdev(c->v);
    uint8_t buf[SECT];
    const uint64_t nsect = CONC_BLOCKS * BS / SECT;
    for (int k = 0; k < 400; k++) {
        uint64_t s;
        if (k % 2)
            s = rng_below(&c->seed, nsect / CONC_THREADS) * CONC_THREADS + (uint64_t)c->t;
        else /* own block: block (t + CONC_BLOCKS) */
            s = (uint64_t)(CONC_BLOCKS + c->t) * (BS / SECT) + rng_below(&c->seed, BS / SECT);
        rng_fill(&c->seed, buf, SECT);
        assert_int_equal(bd_write(bd, buf, SECT, s * SECT), 0);
        memcpy(c->model + s * SECT, buf, SECT);
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = (CONC_BLOCKS + CONC_THREADS) * BS;
    uint8_t *model = calloc(1, size);
    uint64_t seed = 8;
    /* Start from a snapshot with data so copy-ups read the base. */
    struct vol *b = create_open(&e, "vol-cb", size, NULL, NULL);
    rng_fill(&seed, model, size);
    assert_int_equal(bd_write(vol_blockdev(b), model, size, 0), 0);
    struct vol_snapshot_stats st;
    snapshot_now(b, "snap-cb", &st);
    vol_close(b);
    struct vol *v = create_open(&e, "vol-conc", size, "snap-cb", NULL);
    struct conc c[CONC_THREADS];
    pthread_t t[CONC_THREADS];
    for (int i = 0; i < CONC_THREADS; i++) {
        c[i] = (struct conc){ .v = v, .model = model, .t = i, .seed = 1000 + (uint64_t)i };
        assert_int_equal(pthread_create(&t[i], NULL, conc_thread, &c[i]), 0);
    }
    for (int round = 0; round < 4; round++) {
        char id[32];
        snprintf(id, sizeof(id), "snap-conc%d", round);
        struct vol *vs[1] = { v };
        const char *ids[1] = { id };
        assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
        assert_int_equal(vol_snapshot_capture(v, id, NULL, NULL, &st), 0);
        assert_int_equal(vol_snapshot_finish(v, id), 0);
        assert_int_equal(vol_blockdev(v)->ops->flush(vol_blockdev(v)), 0);
    }
    for (int i = 0; i < CONC_THREADS; i++)
        pthread_join(t[i], NULL);
    check_content(vol_blockdev(v), model, size);
    snapshot_now(v, "snap-conc-final", &st);
    check_snapshot(&e, "snap-conc-final", model, size, NULL);
    vol_close(v);
    free(model);
    env_fini(&e);
}

/* ---- crashes ---- */

static void copy_tree(const char *from, const char *to)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* A copy of the region taken between begin and capture, opened without any close: the
 * snapshot is pending there and captures to the content of the instant; flushed writes made
 * after the begin are there too. */
static void test_crash_copy_mid_snapshot(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 6 * BS;
    uint64_t seed = 21;
    uint8_t *model = malloc(size), *at_begin = malloc(size);
    rng_fill(&seed, model, size);
    struct vol *v = create_open(&e, "vol-k", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    assert_int_equal(bd_write(bd, model, size, 0), 0);
    struct vol *vs[1] = { v };
    const char *ids[1] = { "snap-k" };
    assert_int_equal(vol_snapshot_begin(vs, ids, 1), 0);
    memcpy(at_begin, model, size);
    rng_fill(&seed, model + BS + 11, 3000);
    assert_int_equal(bd_write(bd, model + BS + 11, 3000, BS + 11), 0);
    assert_int_equal(bd->ops->flush(bd), 0);

    char copy[600];
    snprintf(copy, sizeof(copy), "%s/copy", e.root);
    copy_tree(e.region_dir, copy);
    struct vol_region *r2;
    assert_int_equal(vol_region_open(copy, e.store, CACHE, DISK_CACHE, &r2), 0);
    struct vol *v2;
    assert_int_equal(vol_open(r2, "vol-k", NULL, &v2), 0);
    check_content(vol_blockdev(v2), model, size);
    char pend[2][32];
    assert_int_equal(vol_snapshot_pending(v2, pend, 2), 1);
    assert_string_equal(pend[0], "snap-k");
    struct vol_snapshot_stats st;
    assert_int_equal(vol_snapshot_capture(v2, "snap-k", NULL, NULL, &st), 0);
    assert_int_equal(vol_snapshot_finish(v2, "snap-k"), 0);
    struct blockdev *sbd;
    assert_int_equal(vol_snapshot_open(r2, "snap-k", size, NULL, &sbd), 0);
    check_content(sbd, at_begin, size);
    sbd->ops->close(sbd);
    check_content(vol_blockdev(v2), model, size);
    vol_close(v2);
    vol_region_close(r2);
    /* The original carries on independently. */
    assert_int_equal(vol_snapshot_abort(v, "snap-k"), 0);
    check_content(bd, model, size);
    vol_close(v);
    free(model);
    free(at_begin);
    env_fini(&e);
}

/* Partial writes into absent blocks: past the layer's end at open they need no punch, but a
 * block whose write was lost (its data in the file, its state never flushed) reads zero around
 * a partial write after the restart, not the lost bytes. */
static void test_partial_after_lost_write(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 8 * BS;
    uint64_t seed = 31;
    uint8_t *model = calloc(1, size), *junk = malloc(2 * BS);
    rng_fill(&seed, junk, 2 * BS);
    struct vol *v = create_open(&e, "vol-p", size, NULL, NULL);
    struct blockdev *bd = vol_blockdev(v);
    /* A fresh layer: halves of block 1 in two writes, a few bytes in block 6. */
    rng_fill(&seed, model + BS, BS / 2);
    assert_int_equal(bd_write(bd, model + BS, BS / 2, BS), 0);
    check_content(bd, model, size);
    rng_fill(&seed, model + BS + BS / 2, BS / 2);
    assert_int_equal(bd_write(bd, model + BS + BS / 2, BS / 2, BS + BS / 2), 0);
    rng_fill(&seed, model + 6 * BS + 100, 700);
    assert_int_equal(bd_write(bd, model + 6 * BS + 100, 700, 6 * BS + 100), 0);
    assert_int_equal(bd->ops->flush(bd), 0);
    /* Blocks 2 and 3 written and never flushed: lost in the crash (the copy below). */
    assert_int_equal(bd_write(bd, junk, 2 * BS, 2 * BS), 0);
    char copy[600];
    snprintf(copy, sizeof(copy), "%s/copy", e.root);
    copy_tree(e.region_dir, copy);
    struct vol_region *r2;
    assert_int_equal(vol_region_open(copy, e.store, CACHE, DISK_CACHE, &r2), 0);
    struct vol *v2;
    assert_int_equal(vol_open(r2, "vol-p", NULL, &v2), 0);
    struct blockdev *bd2 = vol_blockdev(v2);
    check_content(bd2, model, size);
    rng_fill(&seed, model + 2 * BS + 4096, 8192);
    assert_int_equal(bd_write(bd2, model + 2 * BS + 4096, 8192, 2 * BS + 4096), 0);
    rng_fill(&seed, model + 3 * BS + BS / 2, BS / 2);
    assert_int_equal(bd_write(bd2, model + 3 * BS + BS / 2, BS / 2, 3 * BS + BS / 2), 0);
    rng_fill(&seed, model + 7 * BS + 9, 99);
    assert_int_equal(bd_write(bd2, model + 7 * BS + 9, 99, 7 * BS + 9), 0);
    check_content(bd2, model, size);
    assert_int_equal(bd2->ops->flush(bd2), 0);
    vol_close(v2);
    assert_int_equal(vol_open(r2, "vol-p", NULL, &v2), 0);
    check_content(vol_blockdev(v2), model, size);
    vol_close(v2);
    vol_region_close(r2);
    vol_close(v);
    free(model);
    free(junk);
    env_fini(&e);
}

/* Writes `n` bytes of fresh random data at `off` into both the device and `model`. */
static void write_rand(struct blockdev *bd, uint8_t *model, uint64_t *seed, uint64_t off, size_t n)
{
    rng_fill(seed, model + off, n);
    assert_int_equal(bd_write(bd, model + off, n, off), 0);
}

/* Reads [off, off+n) and compares it with the model. */
static void check_range(struct blockdev *bd, const uint8_t *model, uint64_t off, size_t n)
{
    uint8_t *buf = malloc(n);
    assert_int_equal(bd_read(bd, buf, n, off), 0);
    assert_memory_equal(buf, model + off, n);
    free(buf);
}

/* Sector-aligned pieces of blocks the top layer lacks over a base (partial blocks): reads merge
 * them with the base, covering pieces make the block whole, whole-block writes, zeroing, trims
 * and unaligned writes end the partial state, a flush makes them durable (a copy of the
 * directory taken after it has them; one taken before a flush reads the base there), and a
 * snapshot begun with a partial block captures it. */
static void test_partial_blocks(void **state)
{
    struct env e;
    env_init(&e);
    const uint64_t size = 8 * BS;
    const size_t S = 512;
    uint64_t seed = 99;
    uint8_t *model = malloc(size), *flushed = malloc(size);
    rng_fill(&seed, model, size);
    struct vol *v0 = create_open(&e, "vol-pb0", size, NULL, NULL);
    assert_int_equal(bd_write(vol_blockdev(v0), model, size, 0), 0);
    struct vol_snapshot_stats st;
    snapshot_now(v0, "snap-pb", &st);
    vol_close(v0);
    struct vol *v = create_open(&e, "vol-pb", size, "snap-pb", NULL);
    struct blockdev *bd = vol_blockdev(v);

    /* Block 1 in two halves. */
    write_rand(bd, model, &seed, BS, BS / 2);
    check_content(bd, model, size);
    check_range(bd, model, BS + BS / 2 - 700, 1400);
    write_rand(bd, model, &seed, BS + BS / 2, BS / 2);
    check_content(bd, model, size);
    /* Block 2: pieces with gaps; reads inside a piece, inside a gap and across; then an
     * unaligned write into a gap. */
    write_rand(bd, model, &seed, 2 * BS, 8 * S);
    write_rand(bd, model, &seed, 2 * BS + 100 * S, 100 * S);
    write_rand(bd, model, &seed, 3 * BS - S, S);
    check_range(bd, model, 2 * BS + 120 * S + 3, 2000);
    check_range(bd, model, 2 * BS + 300 * S, 4096);
    check_range(bd, model, 2 * BS + 7 * S, 200 * S);
    check_content(bd, model, size);
    write_rand(bd, model, &seed, 2 * BS + 50 * S + 7, 1000);
    check_content(bd, model, size);
    /* Blocks 3-5: a piece, then a whole-block write, zeroes, a trim of part of it. */
    write_rand(bd, model, &seed, 3 * BS + 64 * S, 64 * S);
    write_rand(bd, model, &seed, 3 * BS, BS);
    write_rand(bd, model, &seed, 4 * BS + 8 * S, 8 * S);
    assert_int_equal(bd->ops->write_zeroes(bd, BS, 4 * BS, BLOCKDEV_MAY_TRIM), 0);
    memset(model + 4 * BS, 0, BS);
    write_rand(bd, model, &seed, 5 * BS + 8 * S, 8 * S);
    assert_int_equal(bd->ops->trim(bd, 16 * S, 5 * BS), 0);
    memset(model + 5 * BS, 0, 16 * S);
    check_content(bd, model, size);
    /* Block 6: a piece, flushed. */
    write_rand(bd, model, &seed, 6 * BS + 200 * S, 3 * S);
    assert_int_equal(bd->ops->flush(bd), 0);
    memcpy(flushed, model, size);
    /* Block 7: a piece not flushed. */
    write_rand(bd, model, &seed, 7 * BS + 10 * S, 20 * S);
    char copy[600];
    snprintf(copy, sizeof(copy), "%s/copy", e.root);
    copy_tree(e.region_dir, copy);
    struct vol_region *r2;
    assert_int_equal(vol_region_open(copy, e.store, CACHE, DISK_CACHE, &r2), 0);
    struct vol *v2;
    assert_int_equal(vol_open(r2, "vol-pb", NULL, &v2), 0);
    check_content(vol_blockdev(v2), flushed, size);
    vol_close(v2);
    vol_region_close(r2);
    /* A snapshot begun now holds block 7's piece; the volume goes on with it. */
    check_content(bd, model, size);
    snapshot_now(v, "snap-pb2", &st);
    check_snapshot(&e, "snap-pb2", model, size, NULL);
    write_rand(bd, model, &seed, 7 * BS + 40 * S, 2 * S);
    check_content(bd, model, size);
    vol_close(v);
    assert_int_equal(vol_open(e.r, "vol-pb", NULL, &v), 0);
    check_content(vol_blockdev(v), model, size);
    vol_close(v);
    free(model);
    free(flushed);
    env_fini(&e);
}

/* kill -9 of a process writing, flushing and snapshotting at a random instant: after reopening,
 * every flushed write reads back, and every sector holds something that was written to it. */
#define CR_SIZE  (16 * BS)
#define CR_NSECT (CR_SIZE / SECT)
#define CR_MAGIC 0x76F1A3C2D4E5B607ull

struct crash_shm {
    uint64_t durable[CR_NSECT];
    uint64_t issued; /* every version written is <= this */
    uint64_t version;
    uint64_t ops;
};

static void sector_fill(uint8_t *p, uint64_t sect, uint64_t version)
{
    uint64_t s = (sect + 1) * 0x9E3779B97F4A7C15ull ^ version;
    if (!s)
        s = 1;
    rng_fill(&s, p, SECT);
    uint64_t hdr[3] = { CR_MAGIC, sect, version };
    memcpy(p, hdr, sizeof(hdr));
}

static void crash_child(const char *root, struct crash_shm *shm, uint64_t seed)
{
    char sdir[300], rdir[300];
    snprintf(sdir, sizeof(sdir), "%s/store", root);
    snprintf(rdir, sizeof(rdir), "%s/region", root);
    struct store *st;
    struct vol_region *r;
    struct vol *v;
    if (store_open_local(sdir, NULL, &st) || vol_region_open(rdir, st, CACHE, DISK_CACHE, &r) ||
        vol_open(r, "vol-crash", NULL, &v))
        abort();
    struct blockdev *bd = vol_blockdev(v);
    /* Recovery: captures what was pending when the last child died. */
    char pend[8][32];
    int np = vol_snapshot_pending(v, pend, 8);
    for (int i = 0; i < np; i++) {
        struct vol_snapshot_stats s;
        if (vol_snapshot_capture(v, pend[i], NULL, NULL, &s) || vol_snapshot_finish(v, pend[i]))
            abort();
    }
    uint64_t *acked = calloc(CR_NSECT, sizeof(*acked)), *snap = malloc(CR_NSECT * 8);
    memcpy(acked, shm->durable, sizeof(shm->durable));
    uint8_t *buf = malloc(16 * SECT);
    for (uint64_t k = 0;; k++) {
        uint64_t n = 1 + rng_below(&seed, 16);
        uint64_t s0 = rng_below(&seed, CR_NSECT - n);
        uint64_t ver = ++shm->version;
        __atomic_store_n(&shm->issued, ver, __ATOMIC_SEQ_CST);
        for (uint64_t i = 0; i < n; i++)
            sector_fill(buf + i * SECT, s0 + i, ver);
        if (bd->ops->pwrite(bd, buf, n * SECT, s0 * SECT, 0))
            abort();
        for (uint64_t i = 0; i < n; i++)
            acked[s0 + i] = ver;
        if (k % 8 == 7) {
            memcpy(snap, acked, CR_NSECT * 8);
            if (bd->ops->flush(bd))
                abort();
            for (uint64_t i = 0; i < CR_NSECT; i++)
                __atomic_store_n(&shm->durable[i], snap[i], __ATOMIC_SEQ_CST);
        }
        if (k % 40 == 39) {
            char id[32];
            snprintf(id, sizeof(id), "snap-cr%llu", (unsigned long long)ver);
            struct vol *vs[1] = { v };
            const char *ids[1] = { id };
            struct vol_snapshot_stats s;
            if (vol_snapshot_begin(vs, ids, 1) || vol_snapshot_capture(v, id, NULL, NULL, &s) ||
                vol_snapshot_finish(v, id))
                abort();
        }
        __atomic_add_fetch(&shm->ops, 1, __ATOMIC_SEQ_CST);
    }
}

static void crash_verify(struct env *e, const struct crash_shm *shm)
{
    struct vol *v;
    assert_int_equal(vol_open(e->r, "vol-crash", NULL, &v), 0);
    struct blockdev *bd = vol_blockdev(v);
    char pend[8][32];
    int np = vol_snapshot_pending(v, pend, 8);
    for (int i = 0; i < np; i++) {
        struct vol_snapshot_stats s;
        assert_int_equal(vol_snapshot_capture(v, pend[i], NULL, NULL, &s), 0);
        assert_int_equal(vol_snapshot_finish(v, pend[i]), 0);
    }
    uint8_t *buf = malloc(CR_SIZE), want[SECT];
    assert_int_equal(bd_read(bd, buf, CR_SIZE, 0), 0);
    for (uint64_t s = 0; s < CR_NSECT; s++) {
        const uint8_t *p = buf + s * SECT;
        if (store_is_zero(p, SECT)) {
            assert_int_equal(shm->durable[s], 0);
            continue;
        }
        uint64_t hdr[3];
        memcpy(hdr, p, sizeof(hdr));
        assert_int_equal(hdr[0], CR_MAGIC);
        assert_int_equal(hdr[1], s);
        assert_true(hdr[2] >= shm->durable[s]);
        assert_true(hdr[2] <= shm->issued);
        sector_fill(want, s, hdr[2]);
        assert_memory_equal(p, want, SECT);
    }
    free(buf);
    vol_close(v);
}

static void test_crash_kill9(void **state)
{
    struct env e;
    env_init(&e);
    struct vol *v = create_open(&e, "vol-crash", CR_SIZE, NULL, NULL);
    vol_close(v);
    vol_region_close(e.r);
    e.r = NULL;
    struct crash_shm *shm =
        mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(shm != MAP_FAILED);
    memset(shm, 0, sizeof(*shm));
    uint64_t seed = (uint64_t)time(NULL) * 2654435761u + (uint64_t)getpid();
    for (int round = 0; round < 4; round++) {
        uint64_t ops0 = shm->ops;
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            crash_child(e.root, shm, seed + (uint64_t)round * 7919);
            _exit(0);
        }
        /* Let it get going, then kill it at a random instant. */
        int64_t t0 = time_mono_us();
        while (__atomic_load_n(&shm->ops, __ATOMIC_SEQ_CST) < ops0 + 20 &&
               time_mono_us() - t0 < 20000000)
            usleep(1000);
        usleep((useconds_t)(1000 + rng_below(&seed, 150000)));
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
        assert_true(shm->ops > ops0);
        env_open_region(&e);
        crash_verify(&e, shm);
        vol_region_close(e.r);
        e.r = NULL;
    }
    munmap(shm, sizeof(*shm));
    env_open_region(&e);
    env_fini(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_map_model),
        cmocka_unit_test(test_map_corrupt),
        cmocka_unit_test(test_map_huge_sparse),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_vol_create_empty),
        cmocka_unit_test(test_vol_damaged_files),
        cmocka_unit_test(test_vol_random_io),
        cmocka_unit_test(test_encrypted_layers),
        cmocka_unit_test(test_encrypted_layers_per_volume),
        cmocka_unit_test(test_direct_writes_and_fallback),
        cmocka_unit_test(test_vol_trim_is_cheap),
        cmocka_unit_test(test_vol_from_snapshot_constant),
        cmocka_unit_test(test_incremental),
        cmocka_unit_test(test_encrypted),
        cmocka_unit_test(test_cache_and_corruption),
        cmocka_unit_test(test_readahead),
        cmocka_unit_test(test_abort_and_grow),
        cmocka_unit_test(test_two_pending),
        cmocka_unit_test(test_finish_out_of_order),
        cmocka_unit_test(test_two_volumes_one_instant),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_cache_disk_tier),
        cmocka_unit_test(test_crash_copy_mid_snapshot),
        cmocka_unit_test(test_partial_after_lost_write),
        cmocka_unit_test(test_partial_blocks),
        cmocka_unit_test(test_crash_kill9),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
