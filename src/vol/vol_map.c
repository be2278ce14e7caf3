/*
 * vol_map.c — block maps (block index -> chunk id), their file format, the LINEAR checksum, and
 * the small file helpers the module shares.
 *
 * In memory a map is two sorted arrays, indices and ids (plus plaintext SHA-256s for encrypted
 * maps), so zero blocks cost nothing and a lookup is a binary search over 8-byte keys.  A map
 * being built takes appends in index order directly; changes out of order go to a small
 * open-addressed hash that is merged into the arrays when it grows past a quarter of them.
 *
 * File format (little-endian), version 1:
 *   header (64 bytes): "AMIDMAP\0", version u32, flags u32 (SUMS=1), nblocks u64, count u64,
 *                      32 reserved zero bytes
 *   count entries:     index u64, chunk id (32 bytes), and with SUMS the block's SHA-256 (32)
 *                      in strictly increasing index order, every index < nblocks
 *   trailer:           SHA-256 of everything before it
 * Loading checks every one of these and fails with -EBADMSG.
 *
 * SUMS: in an encryption domain ids are HMACs, but EBS's LINEAR checksum is over plain SHA-256s,
 * so encrypted maps record each block's SHA-256 and an incremental snapshot need not decode its
 * unchanged blocks.  Those sums tell a reader of the map file which blocks are equal (EBS shows
 * them to the snapshot's users anyway); protecting map files at rest belongs with encrypting
 * layers at rest, a later issue.
 */
#include "vol/vol_int.h"
#include "crypto/crypto.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAP_MAGIC       "AMIDMAP"
#define MAP_VERSION     1u
#define MAP_F_SUMS      1u
#define MAP_HEADER      64u
#define MAP_IO_BUF      (1u << 20)
#define DELTA_MIN_MERGE 4096u

/* ---- shared helpers ---- */

bool vol_id_valid(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n >= VOL_ID_MAX || id[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return false;
    }
    return true;
}

int vol_write_error(int rc)
{
    return rc == -ENOSPC || rc == -EDQUOT ? -ENOSPC : -EIO;
}

int vol_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    int rc = fd_pwrite_all(fd, buf, n, off);
    return rc == 0 ? 0 : vol_write_error(rc);
}

int vol_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        if (r == 0) {
            memset(p, 0, n);
            return 0;
        }
        p += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int vol_fsync_dir(const char *path, bool is_dir)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    const char *d = is_dir ? tmp : dirname(tmp);
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -EIO : 0;
    close(fd);
    return rc;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- the in-memory map ---- */

static int map_alloc(uint64_t nblocks, bool sums, struct vol_map **ret)
{
    if (nblocks > VOL_MAX_BLOCKS)
        return -EINVAL;
    struct vol_map *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    atomic_init(&m->refs, 1);
    m->nblocks = nblocks;
    m->has_sums = sums;
    *ret = m;
    return 0;
}

int vol_map_new(uint64_t nblocks, struct vol_map **ret)
{
    return map_alloc(nblocks, false, ret);
}

int vol_map_new_sums(uint64_t nblocks, struct vol_map **ret)
{
    return map_alloc(nblocks, true, ret);
}

struct vol_map *vol_map_ref(struct vol_map *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

void vol_map_unref(struct vol_map *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1)
        return;
    free(m->idx);
    free(m->ids);
    free(m->sums);
    free(m->delta);
    free(m);
}

uint64_t vol_map_blocks(const struct vol_map *m)
{
    return m->nblocks;
}

uint64_t vol_map_allocated(const struct vol_map *m)
{
    return m->allocated;
}

static int arrays_reserve(struct vol_map *m, size_t want)
{
    if (want <= m->cap)
        return 0;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < want)
        cap *= 2;
    uint64_t *idx = realloc(m->idx, cap * sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    m->idx = idx;
    struct chunk_id *ids = realloc(m->ids, cap * sizeof(*ids));
    if (!ids)
        return -ENOMEM;
    m->ids = ids;
    if (m->has_sums) {
        uint8_t(*sums)[32] = realloc(m->sums, cap * sizeof(*sums));
        if (!sums)
            return -ENOMEM;
        m->sums = sums;
    }
    m->cap = cap;
    return 0;
}

size_t vol_map_lower_bound(const struct vol_map *m, uint64_t idx)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->idx[mid] < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t delta_slot(uint64_t idx, size_t cap)
{
    return (size_t)((idx * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static struct vol_map_delta *delta_find(const struct vol_map *m, uint64_t idx)
{
    if (!m->delta_n)
        return NULL;
    for (size_t i = delta_slot(idx, m->delta_cap);; i = (i + 1) & (m->delta_cap - 1)) {
        struct vol_map_delta *d = &m->delta[i];
        if (!d->used)
            return NULL;
        if (d->idx == idx)
            return d;
    }
}

bool vol_map_get(const struct vol_map *m, uint64_t idx, struct chunk_id *ret)
{
    const struct vol_map_delta *d = delta_find(m, idx);
    if (d) {
        if (d->zero)
            return false;
        if (ret)
            *ret = d->id;
        return true;
    }
    size_t i = vol_map_lower_bound(m, idx);
    if (i == m->n || m->idx[i] != idx)
        return false;
    if (ret)
        *ret = m->ids[i];
    return true;
}

const uint8_t *vol_map_sum_at(const struct vol_map *m, size_t i)
{
    if (!m->has_sums || i >= m->n)
        return NULL;
    static const uint8_t unknown[32];
    if (memcmp(m->sums[i], unknown, 32) == 0)
        return NULL;
    return m->sums[i];
}

uint64_t vol_map_next_allocated(const struct vol_map *m, uint64_t idx)
{
    if (m->delta_n)
        return idx;
    size_t i = vol_map_lower_bound(m, idx);
    return i == m->n ? UINT64_MAX : m->idx[i];
}

int vol_map_append(struct vol_map *m, uint64_t idx, const struct chunk_id *id, const uint8_t *sum)
{
    if (m->frozen)
        return -EPERM;
    if (idx >= m->nblocks || m->delta_n || (m->n && idx <= m->idx[m->n - 1]))
        return -EINVAL;
    int rc = arrays_reserve(m, m->n + 1);
    if (rc < 0)
        return rc;
    m->idx[m->n] = idx;
    m->ids[m->n] = *id;
    if (m->has_sums) {
        if (sum)
            memcpy(m->sums[m->n], sum, 32);
        else
            memset(m->sums[m->n], 0, 32);
    }
    m->n++;
    m->allocated++;
    return 0;
}

static int cmp_delta_ptr(const void *a, const void *b)
{
    const struct vol_map_delta *x = *(const struct vol_map_delta *const *)a;
    const struct vol_map_delta *y = *(const struct vol_map_delta *const *)b;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* The delta's entries sorted by index (the caller frees *ret; NULL when there are none). */
static int delta_sorted(const struct vol_map *m, struct vol_map_delta ***ret)
{
    *ret = NULL;
    if (!m->delta_n)
        return 0;
    struct vol_map_delta **d = malloc(m->delta_n * sizeof(*d));
    if (!d)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < m->delta_cap; i++)
        if (m->delta[i].used)
            d[k++] = &m->delta[i];
    qsort(d, k, sizeof(*d), cmp_delta_ptr);
    *ret = d;
    return 0;
}

typedef int (*walk_fn)(void *ctx, uint64_t idx, const struct chunk_id *id, const uint8_t *sum);

/* Calls `fn` for every non-zero block in index order, merging the delta in. */
static int map_walk(const struct vol_map *m, walk_fn fn, void *ctx)
{
    struct vol_map_delta **d;
    int rc = delta_sorted(m, &d);
    if (rc < 0)
        return rc;
    size_t i = 0, j = 0, dn = m->delta_n;
    while (rc == 0 && (i < m->n || j < dn)) {
        if (j < dn && (i == m->n || d[j]->idx <= m->idx[i])) {
            if (i < m->n && d[j]->idx == m->idx[i])
                i++;
            if (!d[j]->zero)
                rc = fn(ctx, d[j]->idx, &d[j]->id, NULL);
            j++;
        } else {
            rc = fn(ctx, m->idx[i], &m->ids[i], vol_map_sum_at(m, i));
            i++;
        }
    }
    free(d);
    return rc;
}

static int append_cb(void *ctx, uint64_t idx, const struct chunk_id *id, const uint8_t *sum)
{
    return vol_map_append(ctx, idx, id, sum);
}

/* Merges the delta into the sorted arrays. */
static int map_compact(struct vol_map *m)
{
    struct vol_map *t;
    int rc = map_alloc(m->nblocks, m->has_sums, &t);
    if (rc < 0)
        return rc;
    rc = arrays_reserve(t, m->n + m->delta_n);
    if (rc == 0)
        rc = map_walk(m, append_cb, t);
    if (rc < 0) {
        vol_map_unref(t);
        return rc;
    }
    free(m->idx);
    free(m->ids);
    free(m->sums);
    free(m->delta);
    m->idx = t->idx;
    m->ids = t->ids;
    m->sums = t->sums;
    m->n = t->n;
    m->cap = t->cap;
    m->delta = NULL;
    m->delta_n = m->delta_cap = 0;
    m->allocated = t->n;
    t->idx = NULL;
    t->ids = NULL;
    t->sums = NULL;
    vol_map_unref(t);
    return 0;
}

static int delta_grow(struct vol_map *m)
{
    size_t cap = m->delta_cap ? m->delta_cap * 2 : 256;
    struct vol_map_delta *nd = calloc(cap, sizeof(*nd));
    if (!nd)
        return -ENOMEM;
    for (size_t i = 0; i < m->delta_cap; i++) {
        if (!m->delta[i].used)
            continue;
        size_t s = delta_slot(m->delta[i].idx, cap);
        while (nd[s].used)
            s = (s + 1) & (cap - 1);
        nd[s] = m->delta[i];
    }
    free(m->delta);
    m->delta = nd;
    m->delta_cap = cap;
    return 0;
}

int vol_map_set(struct vol_map *m, uint64_t idx, const struct chunk_id *id)
{
    if (m->frozen)
        return -EPERM;
    if (idx >= m->nblocks)
        return -EINVAL;
    if (!m->delta_n && id && (m->n == 0 || idx > m->idx[m->n - 1]))
        return vol_map_append(m, idx, id, NULL);

    bool was = vol_map_get(m, idx, NULL);
    struct vol_map_delta *d = delta_find(m, idx);
    if (!d) {
        size_t i = vol_map_lower_bound(m, idx);
        bool sorted = i < m->n && m->idx[i] == idx;
        if (sorted && id) {
            m->ids[i] = *id;
            if (m->has_sums)
                memset(m->sums[i], 0, 32);
            return 0;
        }
        if (!sorted && !id)
            return 0;
        if ((m->delta_n + 1) * 2 > m->delta_cap) {
            int rc = delta_grow(m);
            if (rc < 0)
                return rc;
        }
        size_t s = delta_slot(idx, m->delta_cap);
        while (m->delta[s].used)
            s = (s + 1) & (m->delta_cap - 1);
        d = &m->delta[s];
        d->used = 1;
        d->idx = idx;
        m->delta_n++;
    }
    d->zero = id == NULL;
    if (id)
        d->id = *id;
    else
        memset(&d->id, 0, sizeof(d->id));
    m->allocated = m->allocated + (id != NULL) - was;

    size_t limit = m->n / 4 > DELTA_MIN_MERGE ? m->n / 4 : DELTA_MIN_MERGE;
    if (m->delta_n > limit)
        return map_compact(m);
    return 0;
}

struct each_ctx {
    int (*fn)(void *ctx, uint64_t idx, const struct chunk_id *id);
    void *ctx;
};

static int each_cb(void *ctx, uint64_t idx, const struct chunk_id *id, const uint8_t *sum)
{
    struct each_ctx *e = ctx;
    return e->fn(e->ctx, idx, id);
}

int vol_map_each(const struct vol_map *m,
                 int (*fn)(void *ctx, uint64_t idx, const struct chunk_id *id), void *ctx)
{
    struct each_ctx e = { fn, ctx };
    return map_walk(m, each_cb, &e);
}

int vol_map_copy(const struct vol_map *src, uint64_t nblocks, struct vol_map **ret)
{
    if (nblocks < src->nblocks)
        return -EINVAL;
    struct vol_map *m;
    int rc = map_alloc(nblocks, src->has_sums, &m);
    if (rc < 0)
        return rc;
    rc = arrays_reserve(m, src->n + src->delta_n);
    if (rc == 0)
        rc = map_walk(src, append_cb, m);
    if (rc < 0) {
        vol_map_unref(m);
        return rc;
    }
    *ret = m;
    return 0;
}

/* ---- the file ---- */

struct map_writer {
    int fd;
    uint8_t *buf;
    size_t len;
    uint64_t off;
    struct sha256 *h;
    bool sums;
};

static int writer_flush(struct map_writer *w)
{
    int rc = vol_pwrite_all(w->fd, w->buf, w->len, w->off);
    w->off += w->len;
    w->len = 0;
    return rc;
}

static int writer_put(struct map_writer *w, const void *p, size_t n, bool hash)
{
    if (w->len + n > MAP_IO_BUF) {
        int rc = writer_flush(w);
        if (rc < 0)
            return rc;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    if (hash)
        crypto_sha256_update(w->h, p, n);
    return 0;
}

static int save_cb(void *ctx, uint64_t idx, const struct chunk_id *id, const uint8_t *sum)
{
    struct map_writer *w = ctx;
    uint8_t e[8 + 2 * STORE_ID_LEN];
    size_t n = 8 + STORE_ID_LEN;
    put_le64(e, idx);
    memcpy(e + 8, id->b, STORE_ID_LEN);
    if (w->sums) {
        if (sum)
            memcpy(e + n, sum, 32);
        else
            memset(e + n, 0, 32);
        n += 32;
    }
    return writer_put(w, e, n, true);
}

/* Counts the non-zero blocks walk_fn sees (the delta may hold zero entries). */
static int count_cb(void *ctx, uint64_t idx, const struct chunk_id *id, const uint8_t *sum)
{
    (*(uint64_t *)ctx)++;
    return 0;
}

int vol_map_save(const struct vol_map *m, const char *path)
{
    char tmp[PATH_MAX], rnd[20];
    int rc = rand_id(rnd, sizeof(rnd), "", 12);
    if (rc < 0)
        return rc;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp-%s", path, rnd) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    uint64_t count = 0;
    rc = map_walk(m, count_cb, &count);
    if (rc < 0)
        return rc;

    struct map_writer w = { .fd = -1, .sums = m->has_sums };
    w.buf = malloc(MAP_IO_BUF);
    w.h = crypto_sha256_new();
    if (!w.buf || !w.h) {
        rc = -ENOMEM;
        goto out;
    }
    w.fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        rc = -errno;
        goto out;
    }
    uint8_t hdr[MAP_HEADER] = { 0 };
    memcpy(hdr, MAP_MAGIC, 8);
    put_le32(hdr + 8, MAP_VERSION);
    put_le32(hdr + 12, m->has_sums ? MAP_F_SUMS : 0);
    put_le64(hdr + 16, m->nblocks);
    put_le64(hdr + 24, count);
    rc = writer_put(&w, hdr, sizeof(hdr), true);
    if (rc == 0)
        rc = map_walk(m, save_cb, &w);
    if (rc == 0) {
        uint8_t sum[SHA256_LEN];
        crypto_sha256_final(w.h, sum);
        rc = writer_put(&w, sum, sizeof(sum), false);
    }
    if (rc == 0)
        rc = writer_flush(&w);
    if (rc == 0 && fsync(w.fd) < 0)
        rc = -EIO;
    if (close(w.fd) < 0 && rc == 0)
        rc = -EIO;
    w.fd = -1;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc == 0)
        rc = vol_fsync_dir(path, false);
out:
    if (w.fd >= 0)
        close(w.fd);
    if (rc < 0)
        unlink(tmp);
    free(w.buf);
    crypto_sha256_free(w.h);
    return rc;
}

static int read_header(int fd, uint8_t hdr[MAP_HEADER], uint64_t *ret_nblocks, uint64_t *ret_count,
                       uint32_t *ret_flags)
{
    int rc = vol_pread_full(fd, hdr, MAP_HEADER, 0);
    if (rc < 0)
        return rc;
    static const uint8_t zero[32];
    uint32_t flags = get_le32(hdr + 12);
    uint64_t nblocks = get_le64(hdr + 16), count = get_le64(hdr + 24);
    if (memcmp(hdr, MAP_MAGIC, 8) != 0 || get_le32(hdr + 8) != MAP_VERSION ||
        (flags & ~MAP_F_SUMS) || memcmp(hdr + 32, zero, 32) != 0 || nblocks > VOL_MAX_BLOCKS ||
        count > nblocks)
        return -EBADMSG;
    *ret_nblocks = nblocks;
    *ret_count = count;
    *ret_flags = flags;
    return 0;
}

int vol_map_peek(const char *path, uint64_t *ret_nblocks)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint8_t hdr[MAP_HEADER];
    uint64_t nblocks, count;
    uint32_t flags;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -EIO : 0;
    if (rc == 0 && (uint64_t)st.st_size < MAP_HEADER + SHA256_LEN)
        rc = -EBADMSG;
    if (rc == 0)
        rc = read_header(fd, hdr, &nblocks, &count, &flags);
    close(fd);
    if (rc == 0)
        *ret_nblocks = nblocks;
    return rc;
}

int vol_map_load(const char *path, struct vol_map **ret)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct vol_map *m = NULL;
    struct sha256 *h = NULL;
    uint8_t *buf = NULL;
    uint8_t hdr[MAP_HEADER];
    uint64_t nblocks, count;
    uint32_t flags;
    struct stat st;
    int rc = fstat(fd, &st) < 0 ? -EIO : 0;
    if (rc == 0 && (uint64_t)st.st_size < MAP_HEADER + SHA256_LEN)
        rc = -EBADMSG;
    if (rc == 0)
        rc = read_header(fd, hdr, &nblocks, &count, &flags);
    if (rc < 0)
        goto out;
    size_t es = 8 + STORE_ID_LEN + ((flags & MAP_F_SUMS) ? 32 : 0);
    /* The size must match before anything is allocated from the header's count. */
    if ((uint64_t)st.st_size != MAP_HEADER + count * es + SHA256_LEN) {
        rc = -EBADMSG;
        goto out;
    }
    rc = map_alloc(nblocks, flags & MAP_F_SUMS, &m);
    if (rc == 0)
        rc = arrays_reserve(m, count ? count : 1);
    h = crypto_sha256_new();
    buf = malloc(MAP_IO_BUF);
    if (rc == 0 && (!h || !buf))
        rc = -ENOMEM;
    if (rc < 0)
        goto out;
    crypto_sha256_update(h, hdr, MAP_HEADER);
    size_t per_buf = MAP_IO_BUF / es;
    uint64_t off = MAP_HEADER;
    for (uint64_t done = 0; done < count;) {
        size_t k = count - done < per_buf ? (size_t)(count - done) : per_buf;
        rc = vol_pread_full(fd, buf, k * es, off);
        if (rc < 0)
            goto out;
        crypto_sha256_update(h, buf, k * es);
        for (size_t i = 0; i < k; i++) {
            const uint8_t *e = buf + i * es;
            uint64_t idx = get_le64(e);
            if (idx >= nblocks || (m->n && idx <= m->idx[m->n - 1])) {
                rc = -EBADMSG;
                goto out;
            }
            m->idx[m->n] = idx;
            memcpy(m->ids[m->n].b, e + 8, STORE_ID_LEN);
            if (m->has_sums)
                memcpy(m->sums[m->n], e + 8 + STORE_ID_LEN, 32);
            m->n++;
        }
        done += k;
        off += k * es;
    }
    uint8_t want[SHA256_LEN], got[SHA256_LEN];
    crypto_sha256_final(h, want);
    rc = vol_pread_full(fd, got, SHA256_LEN, off);
    if (rc == 0 && !crypto_memeq(want, got, SHA256_LEN))
        rc = -EBADMSG;
out:
    close(fd);
    crypto_sha256_free(h);
    free(buf);
    if (rc < 0) {
        vol_map_unref(m);
        return rc;
    }
    m->allocated = m->n;
    m->frozen = true;
    *ret = m;
    return 0;
}

/* ---- LINEAR checksum ---- */

struct vol_linear {
    struct sha256 *h;
};

int vol_linear_new(struct vol_linear **ret)
{
    struct vol_linear *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->h = crypto_sha256_new();
    if (!l->h) {
        free(l);
        return -ENOMEM;
    }
    *ret = l;
    return 0;
}

void vol_linear_add(struct vol_linear *l, const uint8_t sha256[32])
{
    crypto_sha256_update(l->h, sha256, 32);
}

void vol_linear_final(struct vol_linear *l, uint8_t out[32])
{
    crypto_sha256_final(l->h, out);
}

void vol_linear_free(struct vol_linear *l)
{
    if (!l)
        return;
    crypto_sha256_free(l->h);
    free(l);
}
