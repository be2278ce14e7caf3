/*
 * vol_layer.c — one copy-on-write overlay layer: a sparse data file of whole blocks and a bitmap
 * of 2-bit block states (absent, present, zero), with the flush that makes its writes durable.
 *
 * Durability order: a writer writes data first and changes the block's state after; a flush
 * copies (stages) the changed bitmap pages, then fdatasyncs the data file, then writes the staged
 * pages and fdatasyncs the bitmap.  So a state on disk never describes data that is not on disk:
 * every staged state was set after its data was written, and that data was synced before the
 * state was.  A torn bitmap page write cannot invent states either: each block's two bits live in
 * one byte, so each reads as its old or its new value, and both were valid.
 *
 * An absent block's range of the data file may still hold bytes of a write whose state never
 * became durable; a partial write into such a block punches the range first, so that those bytes
 * do not reappear around it.  Blocks past the file's end at open are known empty (fresh_from)
 * and skip the punch: no state can name them before this process writes them.
 *
 * An encrypted volume's layers hold its data with AES-256-XTS in 512-byte units (the tweak: the
 * unit's index and the layer's seq), as disk encryption does; an all-zero unit stands for zeros
 * in both directions, so holes, punched blocks and the file's end keep reading as zero.
 */
#include "vol/vol_int.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static size_t pages_for(uint64_t nblocks)
{
    return (size_t)((nblocks + VOL_BM_PAGE_BLOCKS - 1) / VOL_BM_PAGE_BLOCKS);
}

struct vol_layer *vol_layer_ref(struct vol_layer *l)
{
    if (l)
        atomic_fetch_add(&l->refs, 1);
    return l;
}

static void layer_free(struct vol_layer *l)
{
    if (l->fd_data >= 0)
        close(l->fd_data);
    if (l->fd_direct >= 0)
        close(l->fd_direct);
    if (l->fd_bitmap >= 0)
        close(l->fd_bitmap);
    crypto_wipe(l->xts_key, sizeof(l->xts_key));
    if (l->unlink_on_free) {
        unlink(l->data_path);
        unlink(l->bitmap_path);
    }
    if (l->pages)
        for (size_t i = 0; i < l->npages; i++)
            free(atomic_load(&l->pages[i]));
    free(l->pages);
    free(l->dirty);
    pthread_mutex_destroy(&l->page_lock);
    pthread_mutex_destroy(&l->flush_lock);
    pthread_mutex_destroy(&l->write_lock);
    pthread_rwlock_destroy(&l->unit_lock);
    free(l);
}

void vol_layer_unref(struct vol_layer *l)
{
    if (l && atomic_fetch_sub(&l->refs, 1) == 1)
        layer_free(l);
}

static int resize_arrays(struct vol_layer *l, size_t npages)
{
    size_t n = npages ? npages : 1;
    _Atomic(uint8_t *) *pages = realloc(l->pages, n * sizeof(*pages));
    if (!pages)
        return -ENOMEM;
    l->pages = pages;
    atomic_uchar *dirty = realloc(l->dirty, n * sizeof(*dirty));
    if (!dirty)
        return -ENOMEM;
    l->dirty = dirty;
    for (size_t i = l->npages; i < n; i++) {
        atomic_init(&l->pages[i], NULL);
        atomic_init(&l->dirty[i], 0);
    }
    l->npages = npages;
    return 0;
}

/* Reads the bitmap file into pages, checking every state. */
static int load_bitmap(struct vol_layer *l, uint64_t nblocks)
{
    struct stat st;
    if (fstat(l->fd_bitmap, &st) < 0)
        return -EIO;
    size_t fpages = (size_t)(((uint64_t)st.st_size + VOL_BM_PAGE - 1) / VOL_BM_PAGE);
    uint8_t *buf = malloc(VOL_BM_PAGE);
    if (!buf)
        return -ENOMEM;
    int rc = 0;
    uint64_t count = 0;
    for (size_t p = 0; p < fpages && rc == 0; p++) {
        rc = vol_pread_full(l->fd_bitmap, buf, VOL_BM_PAGE, (uint64_t)p * VOL_BM_PAGE);
        if (rc < 0)
            break;
        if (store_is_zero(buf, VOL_BM_PAGE))
            continue;
        if (p >= l->npages) {
            rc = -EBADMSG; /* states past the volume's end */
            break;
        }
        for (size_t i = 0; i < VOL_BM_PAGE; i++) {
            uint8_t b = buf[i];
            for (int k = 0; k < 4; k++) {
                unsigned s = (b >> (2 * k)) & 3u;
                uint64_t idx = (uint64_t)p * VOL_BM_PAGE_BLOCKS + i * 4 + (unsigned)k;
                if (s == 3u || (s != VOL_ST_ABSENT && idx >= nblocks))
                    rc = -EBADMSG;
                count += s != VOL_ST_ABSENT;
            }
        }
        if (rc < 0)
            break;
        uint8_t *page = malloc(VOL_BM_PAGE);
        if (!page) {
            rc = -ENOMEM;
            break;
        }
        memcpy(page, buf, VOL_BM_PAGE);
        atomic_store(&l->pages[p], page);
    }
    free(buf);
    atomic_store(&l->count, count);
    return rc;
}

int vol_layer_open(const char *dir, uint64_t seq, uint64_t nblocks, bool create,
                   struct vol_layer **ret)
{
    struct vol_layer *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    atomic_init(&l->refs, 1);
    l->seq = seq;
    l->fd_data = l->fd_direct = l->fd_bitmap = -1;
    pthread_mutex_init(&l->page_lock, NULL);
    pthread_mutex_init(&l->flush_lock, NULL);
    pthread_mutex_init(&l->write_lock, NULL);
    pthread_rwlock_init(&l->unit_lock, NULL);
    int rc = 0;
    if (snprintf(l->data_path, sizeof(l->data_path), "%s/L%" PRIu64 ".data", dir, seq) >=
            (int)sizeof(l->data_path) ||
        snprintf(l->bitmap_path, sizeof(l->bitmap_path), "%s/L%" PRIu64 ".bitmap", dir, seq) >=
            (int)sizeof(l->bitmap_path))
        rc = -ENAMETOOLONG;
    if (rc == 0)
        rc = resize_arrays(l, pages_for(nblocks));
    if (rc == 0) {
        /* A layer the state names must exist: recreating it empty would read lost writes back
         * as zeros. */
        l->fd_data = open(l->data_path, O_RDWR | (create ? O_CREAT : 0) | O_CLOEXEC, 0600);
        if (l->fd_data < 0 && errno == ENOENT)
            errno = EIO;
        if (l->fd_data < 0)
            rc = -errno;
    }
    if (rc == 0) /* -1 where the file system refuses it (tmpfs): every write is buffered */
        l->fd_direct = open(l->data_path, O_RDWR | O_DIRECT | O_CLOEXEC);
    if (rc == 0) {
        l->fd_bitmap = open(l->bitmap_path, O_RDWR | (create ? O_CREAT : 0) | O_CLOEXEC, 0600);
        if (l->fd_bitmap < 0 && errno == ENOENT)
            errno = EIO;
        if (l->fd_bitmap < 0)
            rc = -errno;
    }
    if (rc == 0)
        rc = load_bitmap(l, nblocks);
    struct stat st;
    if (rc == 0 && fstat(l->fd_data, &st) < 0)
        rc = -EIO;
    if (rc < 0) {
        layer_free(l);
        return rc;
    }
    /* Past the end, a file reads as zero until written, also after a crash: a file system
     * never shows bytes past the size it recovered. */
    atomic_init(&l->fresh_from, ((uint64_t)st.st_size + VOL_BLOCK_SIZE - 1) / VOL_BLOCK_SIZE);
    *ret = l;
    return 0;
}

int vol_layer_grow(struct vol_layer *l, uint64_t nblocks)
{
    size_t np = pages_for(nblocks);
    if (np <= l->npages)
        return 0;
    pthread_mutex_lock(&l->flush_lock);
    pthread_mutex_lock(&l->page_lock);
    int rc = resize_arrays(l, np);
    pthread_mutex_unlock(&l->page_lock);
    pthread_mutex_unlock(&l->flush_lock);
    return rc;
}

unsigned vol_layer_get(const struct vol_layer *l, uint64_t idx)
{
    uint64_t p = idx >> VOL_BM_PAGE_SHIFT;
    if (p >= l->npages)
        return VOL_ST_ABSENT;
    uint8_t *page = atomic_load_explicit(&l->pages[p], memory_order_acquire);
    if (!page)
        return VOL_ST_ABSENT;
    unsigned i = (unsigned)(idx & (VOL_BM_PAGE_BLOCKS - 1));
    uint8_t b = __atomic_load_n(&page[i >> 2], __ATOMIC_ACQUIRE);
    return (b >> (2 * (i & 3))) & 3u;
}

int vol_layer_set(struct vol_layer *l, uint64_t idx, unsigned st)
{
    uint64_t p = idx >> VOL_BM_PAGE_SHIFT;
    if (p >= l->npages) {
        atomic_store(&l->fresh_from, UINT64_MAX); /* as after a failed write: see there */
        return -EINVAL;
    }
    uint8_t *page = atomic_load_explicit(&l->pages[p], memory_order_acquire);
    if (!page) {
        pthread_mutex_lock(&l->page_lock);
        page = atomic_load(&l->pages[p]);
        if (!page) {
            page = calloc(1, VOL_BM_PAGE);
            if (page)
                atomic_store_explicit(&l->pages[p], page, memory_order_release);
        }
        pthread_mutex_unlock(&l->page_lock);
        if (!page) {
            /* The block's data may be written already, and it stays absent. */
            atomic_store(&l->fresh_from, UINT64_MAX);
            return -ENOMEM;
        }
    }
    unsigned i = (unsigned)(idx & (VOL_BM_PAGE_BLOCKS - 1));
    unsigned shift = 2 * (i & 3);
    uint8_t *bp = &page[i >> 2];
    uint8_t old = __atomic_load_n(bp, __ATOMIC_RELAXED), nb;
    /* One compare-and-swap: readers never see a state in between (absent would be wrong). */
    do {
        nb = (uint8_t)((old & ~(3u << shift)) | (st << shift));
    } while (!__atomic_compare_exchange_n(bp, &old, nb, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    unsigned was = (old >> shift) & 3u;
    if (was == VOL_ST_ABSENT && st != VOL_ST_ABSENT)
        atomic_fetch_add(&l->count, 1);
    else if (was != VOL_ST_ABSENT && st == VOL_ST_ABSENT)
        atomic_fetch_sub(&l->count, 1);
    atomic_store_explicit(&l->dirty[p], 1, memory_order_release);
    return 0;
}

uint64_t vol_layer_next(const struct vol_layer *l, uint64_t idx, uint64_t end)
{
    while (idx < end) {
        uint64_t p = idx >> VOL_BM_PAGE_SHIFT;
        if (p >= l->npages)
            return end;
        uint8_t *page = atomic_load_explicit(&l->pages[p], memory_order_acquire);
        uint64_t page_end = (p + 1) << VOL_BM_PAGE_SHIFT;
        if (!page) {
            idx = page_end;
            continue;
        }
        while (idx < end && idx < page_end) {
            unsigned i = (unsigned)(idx & (VOL_BM_PAGE_BLOCKS - 1));
            uint8_t b = __atomic_load_n(&page[i >> 2], __ATOMIC_RELAXED);
            if ((i & 3) == 0 && b == 0) {
                idx += 4;
                continue;
            }
            if ((b >> (2 * (i & 3))) & 3u)
                return idx;
            idx++;
        }
    }
    return end;
}

int vol_layer_flush(struct vol_layer *l)
{
    pthread_mutex_lock(&l->flush_lock);
    int rc = atomic_load(&l->err);
    if (rc < 0) {
        pthread_mutex_unlock(&l->flush_lock);
        return rc;
    }
    /* Stage first: only states set before this point are written, and their data is synced by
     * the fdatasync below. */
    size_t nstaged = 0;
    for (size_t p = 0; p < l->npages; p++)
        nstaged += atomic_load(&l->dirty[p]) != 0;
    uint8_t *stage = NULL;
    size_t *which = NULL;
    if (nstaged) {
        stage = malloc(nstaged * VOL_BM_PAGE);
        which = malloc(nstaged * sizeof(*which));
        if (!stage || !which) {
            free(stage);
            free(which);
            pthread_mutex_unlock(&l->flush_lock);
            return -ENOMEM;
        }
    }
    size_t k = 0;
    for (size_t p = 0; p < l->npages && k < nstaged; p++) {
        if (!atomic_exchange(&l->dirty[p], 0))
            continue;
        uint8_t *page = atomic_load_explicit(&l->pages[p], memory_order_acquire);
        uint8_t *dst = stage + k * VOL_BM_PAGE;
        for (size_t i = 0; i < VOL_BM_PAGE; i++) {
            uint8_t b = page ? __atomic_load_n(&page[i], __ATOMIC_ACQUIRE) : 0;
            /* Partial blocks (both bits set) go to disk as absent: their writes are not
             * durable until completed, which the volume's flush did for those it covers. */
            uint8_t partial = b & (uint8_t)(b >> 1) & 0x55u;
            dst[i] = b & (uint8_t) ~(partial | (uint8_t)(partial << 1));
        }
        which[k++] = p;
    }
    bool sync = atomic_exchange(&l->needs_sync, false) || k > 0;
    if (sync && fdatasync(l->fd_data) < 0) {
        rc = -EIO;
        atomic_store(&l->err, rc);
    }
    for (size_t i = 0; i < k && rc == 0; i++)
        rc = vol_pwrite_all(l->fd_bitmap, stage + i * VOL_BM_PAGE, VOL_BM_PAGE,
                            (uint64_t)which[i] * VOL_BM_PAGE);
    if (rc == 0 && k > 0 && fdatasync(l->fd_bitmap) < 0) {
        rc = -EIO;
        atomic_store(&l->err, rc);
    }
    if (rc < 0) {
        for (size_t i = 0; i < k; i++)
            atomic_store(&l->dirty[which[i]], 1);
        atomic_store(&l->needs_sync, true);
    }
    free(stage);
    free(which);
    pthread_mutex_unlock(&l->flush_lock);
    return rc;
}

bool vol_layer_fresh(const struct vol_layer *l, uint64_t idx)
{
    return idx >= atomic_load(&l->fresh_from);
}

/* Whether a write may bypass the page cache: large, and buffer, offset and length aligned. */
static bool direct_ok(const struct vol_layer *l, const void *buf, size_t n, uint64_t off)
{
    return l->fd_direct >= 0 && !atomic_load(&l->direct_off) && n >= VOL_DIRECT_MIN &&
           (n | off | (uintptr_t)buf) % VOL_DIRECT_ALIGN == 0;
}

void vol_layer_set_key(struct vol_layer *l, const uint8_t key[XTS_KEY_LEN])
{
    memcpy(l->xts_key, key, XTS_KEY_LEN);
    l->xts = true;
}

/* Encrypts or decrypts units [off, off+n) (whole units) from `in` to `out`: all-zero units stay
 * all-zero both ways (an all-zero ciphertext unit is as likely as guessing the key). */
static int crypt_units(const struct vol_layer *l, bool encrypt, uint64_t off, const uint8_t *in,
                       uint8_t *out, size_t n)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t j = i;
        while (j < n && !store_is_zero(in + j, XTS_UNIT))
            j += XTS_UNIT;
        if (j > i)
            rc = crypto_xts(l->xts_key, encrypt, l->seq, (off + i) / XTS_UNIT, in + i, out + i,
                            j - i);
        if (j < n && out != in)
            memset(out + j, 0, XTS_UNIT);
        i = j + XTS_UNIT;
    }
    return rc;
}

/* vol_layer_read of an encrypted layer, without unit_lock. */
static int xts_read(struct vol_layer *l, void *buf, size_t n, uint64_t off)
{
    uint64_t a = off / XTS_UNIT * XTS_UNIT, b = (off + n + XTS_UNIT - 1) / XTS_UNIT * XTS_UNIT;
    bool whole = a == off && b == off + n;
    uint8_t *t = whole ? buf : malloc(b - a);
    if (!t)
        return -ENOMEM;
    int rc = vol_pread_full(l->fd_data, t, b - a, a);
    if (rc == 0)
        rc = crypt_units(l, false, a, t, t, b - a) < 0 ? -EIO : 0;
    if (!whole) {
        if (rc == 0)
            memcpy(buf, t + (off - a), n);
        free(t);
    }
    return rc;
}

int vol_layer_read(struct vol_layer *l, void *buf, size_t n, uint64_t off)
{
    if (!l->xts)
        return vol_pread_full(l->fd_data, buf, n, off);
    pthread_rwlock_rdlock(&l->unit_lock);
    int rc = xts_read(l, buf, n, off);
    pthread_rwlock_unlock(&l->unit_lock);
    return rc;
}

static int layer_pwrite(struct vol_layer *l, const void *buf, size_t n, uint64_t off);

int vol_layer_write(struct vol_layer *l, const void *buf, size_t n, uint64_t off)
{
    if (!l->xts)
        return layer_pwrite(l, buf, n, off);
    /* Whole units, the edge units read back first when the write does not cover them. */
    uint64_t a = off / XTS_UNIT * XTS_UNIT, b = (off + n + XTS_UNIT - 1) / XTS_UNIT * XTS_UNIT;
    size_t len = (size_t)(b - a);
    uint8_t *t = aligned_alloc(VOL_DIRECT_ALIGN,
                               (len + VOL_DIRECT_ALIGN - 1) / VOL_DIRECT_ALIGN * VOL_DIRECT_ALIGN);
    if (!t)
        return -ENOMEM;
    int rc = 0;
    /* Rewriting bytes around the write: no reader may see those units half written. */
    bool rmw = a != off || b != off + n;
    if (rmw)
        pthread_rwlock_wrlock(&l->unit_lock);
    if (a != off)
        rc = xts_read(l, t, XTS_UNIT, a);
    if (rc == 0 && b != off + n && (b - XTS_UNIT != a || a == off))
        rc = xts_read(l, t + len - XTS_UNIT, XTS_UNIT, b - XTS_UNIT);
    if (rc == 0) {
        memcpy(t + (off - a), buf, n);
        rc = crypt_units(l, true, a, t, t, len) < 0 ? -EIO : 0;
    }
    if (rc == 0)
        rc = layer_pwrite(l, t, len, a);
    if (rmw)
        pthread_rwlock_unlock(&l->unit_lock);
    crypto_wipe(t, len);
    free(t);
    return rc;
}

/* Writes what goes into the data file as it is. */
static int layer_pwrite(struct vol_layer *l, const void *buf, size_t n, uint64_t off)
{
    int rc = -EINVAL;
    /* Large writes go straight to the disk (as QEMU's cache=none does): streaming a disk in
     * does not fill memory with page cache that the next flush writes back anyway.  The kernel
     * keeps the two descriptors coherent (a direct write writes back and drops cached pages of
     * its range first).  A file system that opens O_DIRECT but refuses the write (a larger
     * logical block, say) gets this write and every later one through the page cache. */
    if (direct_ok(l, buf, n, off)) {
        rc = fd_pwrite_all(l->fd_direct, buf, n, off);
        if (rc == -EINVAL)
            atomic_store(&l->direct_off, true);
        else if (rc < 0)
            rc = vol_write_error(rc);
        else
            atomic_fetch_add(&l->direct_writes, 1);
    }
    if (rc == -EINVAL) {
        pthread_mutex_lock(&l->write_lock);
        rc = vol_pwrite_all(l->fd_data, buf, n, off);
        pthread_mutex_unlock(&l->write_lock);
    }
    if (rc < 0)
        atomic_store(&l->fresh_from, UINT64_MAX);
    /* Before the state changes: a flush that stages the state also syncs this data. */
    atomic_store(&l->needs_sync, true);
    return rc;
}

int vol_layer_punch(struct vol_layer *l, uint64_t idx)
{
    uint64_t off = idx * VOL_BLOCK_SIZE;
    int rc = 0;
    if (fallocate(l->fd_data, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  VOL_BLOCK_SIZE) < 0) {
        if (errno != EOPNOTSUPP && errno != ENOSYS)
            return errno == ENOSPC ? -ENOSPC : -EIO;
        void *z = calloc(1, VOL_BLOCK_SIZE);
        if (!z)
            return -ENOMEM;
        rc = vol_layer_write(l, z, VOL_BLOCK_SIZE, off);
        free(z);
        return rc;
    }
    atomic_store(&l->needs_sync, true);
    return rc;
}
