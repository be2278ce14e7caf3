/*
 * nbd_testdev.c — memory and file block devices for the NBD server's tests (nbd_testdev.h).
 *
 * The memory device keeps one allocation byte per 4 KiB block and takes a reader-writer lock
 * around its bytes, so that overlapping requests a client has in flight at once (legal in NBD,
 * with undefined contents) are not a data race for the sanitizers.  Unallocated blocks
 * always hold zeroes: trim and write-zeroes with BLOCKDEV_MAY_TRIM clear whole blocks and mark
 * them unallocated, and zero the partial blocks at the edges in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "nbd/nbd_testdev.h"

struct memdev {
    struct blockdev bd;
    struct blockdev_ops ops;
    pthread_rwlock_t lock; /* data and alloc */
    uint8_t *data;
    uint8_t *alloc; /* per NBD_MEMDEV_BLOCK: 1 allocated */
    uint64_t nblocks;
    unsigned fail_ops;      /* __atomic */
    int fail_err;           /* __atomic */
    unsigned read_delay_us; /* __atomic */
    unsigned options;
    struct nbd_memdev_stats stats; /* __atomic */
};

#define COUNT(m, field) __atomic_fetch_add(&(m)->stats.field, 1, __ATOMIC_RELAXED)

static struct memdev *to_mem(struct blockdev *bd)
{
    return (struct memdev *)bd;
}

static int injected(struct memdev *m, unsigned op)
{
    if (__atomic_load_n(&m->fail_ops, __ATOMIC_SEQ_CST) & op)
        return __atomic_load_n(&m->fail_err, __ATOMIC_SEQ_CST);
    return 0;
}

static void mark(struct memdev *m, uint64_t len, uint64_t off, uint8_t v)
{
    if (len == 0)
        return;
    for (uint64_t b = off / NBD_MEMDEV_BLOCK; b <= (off + len - 1) / NBD_MEMDEV_BLOCK; b++)
        m->alloc[b] = v;
}

static int mem_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    struct memdev *m = to_mem(bd);
    int r = injected(m, NBD_MEMDEV_OP_READ);

    unsigned delay = __atomic_load_n(&m->read_delay_us, __ATOMIC_RELAXED);

    COUNT(m, preads);
    if (delay) {
        struct timespec ts = { .tv_sec = delay / 1000000,
                               .tv_nsec = (long)(delay % 1000000) * 1000 };
        nanosleep(&ts, NULL);
    }
    if (r)
        return r;
    pthread_rwlock_rdlock(&m->lock);
    memcpy(buf, m->data + off, len);
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_pwrite(struct blockdev *bd, const void *buf, size_t len, uint64_t off,
                      unsigned flags)
{
    struct memdev *m = to_mem(bd);
    int r = injected(m, NBD_MEMDEV_OP_WRITE);

    COUNT(m, pwrites);
    if (flags & BLOCKDEV_FUA)
        COUNT(m, fua_writes);
    if (r)
        return r;
    pthread_rwlock_wrlock(&m->lock);
    memcpy(m->data + off, buf, len);
    mark(m, len, off, 1);
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_flush(struct blockdev *bd)
{
    struct memdev *m = to_mem(bd);

    COUNT(m, flushes);
    return injected(m, NBD_MEMDEV_OP_FLUSH);
}

/* Zeroes [off, off+len); whole blocks become unallocated when `dealloc`. */
static void zero_range(struct memdev *m, uint64_t len, uint64_t off, bool dealloc)
{
    uint64_t first = (off + NBD_MEMDEV_BLOCK - 1) / NBD_MEMDEV_BLOCK * NBD_MEMDEV_BLOCK;
    uint64_t last = (off + len) / NBD_MEMDEV_BLOCK * NBD_MEMDEV_BLOCK;

    memset(m->data + off, 0, len);
    if (!dealloc) {
        mark(m, len, off, 1);
        return;
    }
    if (first < last)
        mark(m, last - first, first, 0);
}

static int mem_trim(struct blockdev *bd, uint64_t len, uint64_t off)
{
    struct memdev *m = to_mem(bd);
    int r = injected(m, NBD_MEMDEV_OP_WRITE);

    COUNT(m, trims);
    if (r)
        return r;
    pthread_rwlock_wrlock(&m->lock);
    zero_range(m, len, off, true);
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_write_zeroes(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags)
{
    struct memdev *m = to_mem(bd);
    int r = injected(m, NBD_MEMDEV_OP_WRITE);

    COUNT(m, zeroes);
    if (flags & BLOCKDEV_FUA)
        COUNT(m, fua_writes);
    if (r)
        return r;
    pthread_rwlock_wrlock(&m->lock);
    zero_range(m, len, off, flags & BLOCKDEV_MAY_TRIM);
    pthread_rwlock_unlock(&m->lock);
    return 0;
}

static int mem_block_status(struct blockdev *bd, uint64_t len, uint64_t off,
                            struct blockdev_extent *ret, size_t max, size_t *ret_n)
{
    struct memdev *m = to_mem(bd);
    uint64_t pos = off, end = off + len;
    size_t n = 0;
    int r = injected(m, NBD_MEMDEV_OP_BLOCK_STATUS);

    COUNT(m, block_status);
    if (r)
        return r;
    pthread_rwlock_rdlock(&m->lock);
    if (m->options & NBD_MEMDEV_BAD_EXTENTS) {
        ret[0] = (struct blockdev_extent){ .length = 0, .type = 0 };
        n = 1;
        goto out;
    }
    if (m->options & NBD_MEMDEV_SPLIT_EXTENTS) {
        uint64_t next = (pos / NBD_MEMDEV_BLOCK + 1) * NBD_MEMDEV_BLOCK;

        ret[0] = (struct blockdev_extent){
            .length = (next < end ? next : end) - pos,
            .type =
                m->alloc[pos / NBD_MEMDEV_BLOCK] ? 0 : BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO,
        };
        n = 1;
        goto out;
    }
    while (pos < end && n < max) {
        uint8_t a = m->alloc[pos / NBD_MEMDEV_BLOCK];
        uint64_t next = (pos / NBD_MEMDEV_BLOCK + 1) * NBD_MEMDEV_BLOCK;

        while (next < end && m->alloc[next / NBD_MEMDEV_BLOCK] == a)
            next += NBD_MEMDEV_BLOCK;
        if (next > end)
            next = end;
        ret[n++] = (struct blockdev_extent){
            .length = next - pos,
            .type = a ? 0 : BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO,
        };
        pos = next;
    }
out:
    pthread_rwlock_unlock(&m->lock);
    *ret_n = n;
    return 0;
}

static void mem_close(struct blockdev *bd)
{
    struct memdev *m = to_mem(bd);

    pthread_rwlock_destroy(&m->lock);
    free(m->data);
    free(m->alloc);
    free(m);
}

int nbd_memdev_new(uint64_t size, unsigned options, struct blockdev **ret_bd)
{
    struct memdev *m = calloc(1, sizeof(*m));

    if (!m)
        return -ENOMEM;
    pthread_rwlock_init(&m->lock, NULL);
    m->nblocks = (size + NBD_MEMDEV_BLOCK - 1) / NBD_MEMDEV_BLOCK;
    m->data = calloc(1, size ? size : 1);
    m->alloc = calloc(1, m->nblocks ? m->nblocks : 1);
    if (!m->data || !m->alloc) {
        mem_close(&m->bd);
        return -ENOMEM;
    }
    m->ops = (struct blockdev_ops){
        .pread = mem_pread,
        .pwrite = mem_pwrite,
        .flush = mem_flush,
        .trim = mem_trim,
        .write_zeroes = mem_write_zeroes,
        .block_status = mem_block_status,
        .close = mem_close,
    };
    if (options & NBD_MEMDEV_READONLY)
        m->ops.pwrite = NULL;
    if (options & NBD_MEMDEV_NO_TRIM)
        m->ops.trim = NULL;
    if (options & NBD_MEMDEV_NO_WRITE_ZEROES)
        m->ops.write_zeroes = NULL;
    if (options & NBD_MEMDEV_NO_BLOCK_STATUS)
        m->ops.block_status = NULL;
    m->options = options;
    m->bd = (struct blockdev){
        .ops = &m->ops,
        .size = size,
        .block_size = NBD_MEMDEV_BLOCK,
        .flags = (options & NBD_MEMDEV_READONLY) ? BLOCKDEV_READONLY : 0,
    };
    *ret_bd = &m->bd;
    return 0;
}

uint8_t *nbd_memdev_data(struct blockdev *bd)
{
    return to_mem(bd)->data;
}

void nbd_memdev_fail(struct blockdev *bd, unsigned ops, int err)
{
    struct memdev *m = to_mem(bd);

    __atomic_store_n(&m->fail_err, err, __ATOMIC_SEQ_CST);
    __atomic_store_n(&m->fail_ops, err ? ops : 0, __ATOMIC_SEQ_CST);
}

void nbd_memdev_set_read_delay(struct blockdev *bd, unsigned usec)
{
    __atomic_store_n(&to_mem(bd)->read_delay_us, usec, __ATOMIC_RELAXED);
}

void nbd_memdev_get_stats(struct blockdev *bd, struct nbd_memdev_stats *ret)
{
    struct memdev *m = to_mem(bd);

    ret->preads = __atomic_load_n(&m->stats.preads, __ATOMIC_RELAXED);
    ret->pwrites = __atomic_load_n(&m->stats.pwrites, __ATOMIC_RELAXED);
    ret->fua_writes = __atomic_load_n(&m->stats.fua_writes, __ATOMIC_RELAXED);
    ret->flushes = __atomic_load_n(&m->stats.flushes, __ATOMIC_RELAXED);
    ret->trims = __atomic_load_n(&m->stats.trims, __ATOMIC_RELAXED);
    ret->zeroes = __atomic_load_n(&m->stats.zeroes, __ATOMIC_RELAXED);
    ret->block_status = __atomic_load_n(&m->stats.block_status, __ATOMIC_RELAXED);
}

/* ---- file ---- */

struct filedev {
    struct blockdev bd;
    int fd;
};

static int file_fd(struct blockdev *bd)
{
    return ((struct filedev *)bd)->fd;
}

static int file_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t r = pread(file_fd(bd), p, len, (off_t)off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0) {
            memset(p, 0, len); /* the file shrank under us: past its end reads as zeroes */
            return 0;
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int file_pwrite(struct blockdev *bd, const void *buf, size_t len, uint64_t off,
                       unsigned flags)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t r = pwrite(file_fd(bd), p, len, (off_t)off);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    if ((flags & BLOCKDEV_FUA) && fdatasync(file_fd(bd)) < 0)
        return -errno;
    return 0;
}

static int file_flush(struct blockdev *bd)
{
    return fdatasync(file_fd(bd)) < 0 ? -errno : 0;
}

static int file_trim(struct blockdev *bd, uint64_t len, uint64_t off)
{
    if (fallocate(file_fd(bd), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) <
        0)
        return -errno;
    return 0;
}

static int file_write_zeroes(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags)
{
    int mode = (flags & BLOCKDEV_MAY_TRIM) ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                                           : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

    if (fallocate(file_fd(bd), mode, (off_t)off, (off_t)len) < 0) {
        static const uint8_t zero[65536];

        if (errno != EOPNOTSUPP)
            return -errno;
        while (len > 0) {
            size_t n = len < sizeof(zero) ? (size_t)len : sizeof(zero);
            int r = file_pwrite(bd, zero, n, off, 0);

            if (r < 0)
                return r;
            len -= n;
            off += n;
        }
    }
    if ((flags & BLOCKDEV_FUA) && fdatasync(file_fd(bd)) < 0)
        return -errno;
    return 0;
}

static int file_block_status(struct blockdev *bd, uint64_t len, uint64_t off,
                             struct blockdev_extent *ret, size_t max, size_t *ret_n)
{
    uint64_t pos = off, end = off + len;
    size_t n = 0;

    while (pos < end && n < max) {
        off_t data = lseek(file_fd(bd), (off_t)pos, SEEK_DATA);
        uint64_t next;
        bool hole;

        if (data < 0 && errno != ENXIO) {
            if (n > 0)
                break;
            ret[n++] = (struct blockdev_extent){ .length = end - pos, .type = 0 };
            break;
        }
        hole = data < 0 || (uint64_t)data > pos;
        if (hole) {
            next = data < 0 ? end : (uint64_t)data;
        } else {
            off_t h = lseek(file_fd(bd), (off_t)pos, SEEK_HOLE);
            next = h < 0 ? end : (uint64_t)h;
        }
        if (next > end)
            next = end;
        if (next <= pos)
            next = end;
        ret[n++] = (struct blockdev_extent){
            .length = next - pos,
            .type = hole ? BLOCKDEV_EXTENT_HOLE | BLOCKDEV_EXTENT_ZERO : 0,
        };
        pos = next;
    }
    *ret_n = n;
    return 0;
}

static void file_close(struct blockdev *bd)
{
    close(file_fd(bd));
    free(bd);
}

static const struct blockdev_ops file_ops = {
    .pread = file_pread,
    .pwrite = file_pwrite,
    .flush = file_flush,
    .trim = file_trim,
    .write_zeroes = file_write_zeroes,
    .block_status = file_block_status,
    .close = file_close,
};

int nbd_filedev_open(const char *path, bool readonly, struct blockdev **ret_bd)
{
    struct filedev *f;
    struct stat st;
    int fd;

    errno = 0;
    fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);

    if (fd < 0)
        return -errno;
    errno = 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int r = errno ? -errno : -EINVAL;
        close(fd);
        return r;
    }
    f = calloc(1, sizeof(*f));
    if (!f) {
        close(fd);
        return -ENOMEM;
    }
    f->fd = fd;
    f->bd = (struct blockdev){
        .ops = &file_ops,
        .size = (uint64_t)st.st_size,
        .block_size = 4096,
        .flags = readonly ? BLOCKDEV_READONLY : 0,
    };
    *ret_bd = &f->bd;
    return 0;
}
