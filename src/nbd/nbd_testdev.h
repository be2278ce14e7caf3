/*
 * nbd_testdev.h — block devices for testing the NBD server: one in memory, one on a file.
 *
 * Built only with the tests (nbd_testdev_lib), for test_nbd, the fuzz target and
 * nbd_testserver; the daemon serves vol devices instead.  The memory device tracks allocation
 * per 4 KiB block so that trim, write-zeroes and block status behave like a sparse store, can
 * leave out optional callbacks, fail on demand and count calls.  The file device is what
 * `nbdkit file` does: pread/pwrite, fdatasync, hole punching and SEEK_DATA/SEEK_HOLE.
 */
#ifndef AMID_NBD_TESTDEV_H
#define AMID_NBD_TESTDEV_H

#include <stdbool.h>
#include <stdint.h>

#include "util/blockdev.h"

#define NBD_MEMDEV_BLOCK 4096u /* allocation granularity */

/* Options for nbd_memdev_new. */
#define NBD_MEMDEV_READONLY        (1u << 0) /* sets BLOCKDEV_READONLY and has no pwrite */
#define NBD_MEMDEV_NO_TRIM         (1u << 1) /* ops->trim = NULL */
#define NBD_MEMDEV_NO_WRITE_ZEROES (1u << 2) /* ops->write_zeroes = NULL */
#define NBD_MEMDEV_NO_BLOCK_STATUS (1u << 3) /* ops->block_status = NULL */
#define NBD_MEMDEV_SPLIT_EXTENTS   (1u << 4) /* block_status: one extent of one block per call */
#define NBD_MEMDEV_BAD_EXTENTS     (1u << 5) /* block_status: a zero-length extent (a bug) */

/* Operations for nbd_memdev_fail. */
#define NBD_MEMDEV_OP_READ         (1u << 0)
#define NBD_MEMDEV_OP_WRITE        (1u << 1) /* pwrite, trim, write_zeroes */
#define NBD_MEMDEV_OP_FLUSH        (1u << 2)
#define NBD_MEMDEV_OP_BLOCK_STATUS (1u << 3)

struct nbd_memdev_stats {
    uint64_t preads, pwrites, fua_writes, flushes, trims, zeroes, block_status;
};

/*
 * Creates a zeroed, fully unallocated memory device of `size` bytes with the given
 * NBD_MEMDEV_* options.  Returns 0 and *ret_bd (free with bd->ops->close), or -ENOMEM.
 */
int nbd_memdev_new(uint64_t size, unsigned options, struct blockdev **ret_bd);

/* The device's bytes (size bytes), for tests to inspect or prepare. */
uint8_t *nbd_memdev_data(struct blockdev *bd);

/* Makes the operations in `ops` (NBD_MEMDEV_OP_*) return `err` (negative errno; 0 clears). */
void nbd_memdev_fail(struct blockdev *bd, unsigned ops, int err);

/* Makes every pread sleep `usec` microseconds (to hold requests in flight). */
void nbd_memdev_set_read_delay(struct blockdev *bd, unsigned usec);

/* Copies the call counters into *ret. */
void nbd_memdev_get_stats(struct blockdev *bd, struct nbd_memdev_stats *ret);

/*
 * Opens a regular file as a device (read-only if `readonly`).  Returns 0 and *ret_bd (free
 * with bd->ops->close, which closes the file), or a negative errno.
 */
int nbd_filedev_open(const char *path, bool readonly, struct blockdev **ret_bd);

#endif
