/*
 * blockdev.h — a block device as a table of callbacks.
 *
 * This is the seam between who serves bytes (nbd, the import path, tests) and who stores them
 * (vol, a raw file, memory).  The server side knows nothing of volumes or snapshots; it calls
 * these callbacks.  An implementation embeds `struct blockdev` as its first member and recovers
 * its own struct with a cast.
 *
 * Contract for every implementation:
 *  - offsets and lengths are in bytes; callers never pass a range past `size` (the server
 *    validates requests once, at its boundary, and then trusts them);
 *  - callbacks may be called concurrently from several threads on the same device;
 *  - each returns 0 on success or a negative errno (-EIO for unreadable or corrupt data, never
 *    wrong bytes; -ENOSPC when the store is full; -EROFS on a write to a read-only device);
 *  - once `flush` returns 0, every write that returned 0 before it was called is durable.
 */
#ifndef AMID_UTIL_BLOCKDEV_H
#define AMID_UTIL_BLOCKDEV_H

#include <stddef.h>
#include <stdint.h>

struct blockdev;

/* Flags for pwrite and write_zeroes. */
#define BLOCKDEV_FUA      (1u << 0) /* durable before returning, as if followed by flush */
#define BLOCKDEV_MAY_TRIM (1u << 1) /* write_zeroes may deallocate instead of writing zeroes */

/* Device flags (struct blockdev.flags). */
#define BLOCKDEV_READONLY (1u << 0)

/* Extent types for block_status, matching NBD's base:allocation bits. */
#define BLOCKDEV_EXTENT_HOLE (1u << 0) /* not allocated in this device's storage */
#define BLOCKDEV_EXTENT_ZERO (1u << 1) /* reads as zeroes */

struct blockdev_extent {
    uint64_t length;
    uint32_t type; /* BLOCKDEV_EXTENT_* bits */
};

struct blockdev_ops {
    /* Reads `len` bytes at `off` into `buf`. */
    int (*pread)(struct blockdev *bd, void *buf, size_t len, uint64_t off);
    /* Writes `len` bytes at `off`; `flags` may hold BLOCKDEV_FUA. */
    int (*pwrite)(struct blockdev *bd, const void *buf, size_t len, uint64_t off, unsigned flags);
    /* Makes every write acknowledged so far durable. */
    int (*flush)(struct blockdev *bd);
    /* Discards a range: later reads return zeroes.  NULL when unsupported. */
    int (*trim)(struct blockdev *bd, uint64_t len, uint64_t off);
    /* Writes zeroes over a range; BLOCKDEV_MAY_TRIM allows deallocation.  NULL: caller writes
     * a zero buffer instead. */
    int (*write_zeroes)(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags);
    /* Describes the range starting at `off` (at most `len` bytes) as up to `max` extents
     * written to `ret`, in order and without gaps; sets *ret_n.  The extents may cover less than
     * `len` but at least one byte.  NULL: everything is allocated data. */
    int (*block_status)(struct blockdev *bd, uint64_t len, uint64_t off,
                        struct blockdev_extent *ret, size_t max, size_t *ret_n);
    /* Releases the device.  Called once, after every other call has returned. */
    void (*close)(struct blockdev *bd);
};

struct blockdev {
    const struct blockdev_ops *ops;
    uint64_t size;       /* bytes */
    uint32_t block_size; /* preferred I/O size in bytes (a power of two), e.g. 524288 */
    uint32_t flags;      /* BLOCKDEV_READONLY */
};

#endif
