/*
 * vol.h — block maps, volumes and the copy-on-write machinery that turns a volume's writes into
 * incremental snapshots.
 *
 * A snapshot's content is a block map: block index -> chunk id, or "zero".  Maps are immutable
 * once saved and live as files, DIR/maps/<snapshot-id>.map, in the region directory DIR.
 *
 * A volume is a base map (the snapshot it came from, or none) plus a chain of overlay layers, each
 * a sparse file holding whole 512 KiB blocks and a bitmap of the blocks it holds:
 *     reads:  top layer -> older (frozen) layers -> base map -> zero
 *     writes: always to the top layer; a partial write to a block the top layer lacks first copies
 *             the block up from below (so every layer holds whole blocks).
 * The top layer's blocks are exactly the blocks changed since the last snapshot began.
 *
 * Snapshots of a volume take three steps, so the point in time is the call and writes go on:
 *   vol_snapshot_begin   — instant: the top layer is frozen and a new empty top layer takes
 *                          writes; the chain is recorded durably before it returns;
 *   vol_snapshot_capture — reads the blocks of the layers frozen at or before that point, stores
 *                          them as chunks (only those; everything else comes from the base map),
 *                          and saves the snapshot's map file durably;
 *   vol_snapshot_finish  — once the caller has recorded the snapshot as completed: the volume's
 *                          base becomes the new map and the captured layers are deleted.
 * Each step is idempotent and the volume's state survives a crash at any point: after a restart
 * the caller repeats capture for pending snapshots and finish for completed ones.  A snapshot whose
 * capture fails is simply forgotten with vol_snapshot_abort: its frozen layer stays in the chain
 * (no data is lost) and the next snapshot captures it too.
 *
 * A volume's files live in DIR/volumes/<volume-id>/.  Every function is thread-safe; the blockdev
 * of a volume may be used from several threads while snapshots begin and finish.
 * Errors: negative errno; -EIO for unreadable or corrupt data (never wrong bytes), -ENOSPC.
 */
#ifndef AMID_VOL_H
#define AMID_VOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/blockdev.h"

#define VOL_BLOCK_SIZE STORE_CHUNK_SIZE

/* ---- block maps ---- */

struct vol_map;

/* A new, writable map of `nblocks` zero blocks.  Free with vol_map_unref. */
int vol_map_new(uint64_t nblocks, struct vol_map **ret);
/* A writable copy of `src` resized to `nblocks` (>= src's; the new blocks are zero). */
int vol_map_copy(const struct vol_map *src, uint64_t nblocks, struct vol_map **ret);
/* Sets block `idx` to `id`, or to zero when `id` is NULL.  Only on maps not yet saved. */
int vol_map_set(struct vol_map *m, uint64_t idx, const struct chunk_id *id);
/* Whether block `idx` holds a chunk (true, *ret set) or is zero (false). */
bool vol_map_get(const struct vol_map *m, uint64_t idx, struct chunk_id *ret);
uint64_t vol_map_blocks(const struct vol_map *m);
/* Number of non-zero blocks. */
uint64_t vol_map_allocated(const struct vol_map *m);
/* Calls `fn` for each non-zero block in index order; stops on a non-zero return. */
int vol_map_each(const struct vol_map *m,
                 int (*fn)(void *ctx, uint64_t idx, const struct chunk_id *id), void *ctx);
/* Writes the map to `path` durably (temporary file, fsync, rename, directory fsync).  The file
 * carries a checksum; loading a damaged file fails with -EBADMSG. */
int vol_map_save(const struct vol_map *m, const char *path);
int vol_map_load(const char *path, struct vol_map **ret);
struct vol_map *vol_map_ref(struct vol_map *m);
void vol_map_unref(struct vol_map *m);

/* EBS's LINEAR checksum: SHA-256 over the concatenated SHA-256s of the blocks' plaintext, in block
 * index order.  The caller feeds each block's SHA-256 with vol_linear_add. */
struct vol_linear;
int vol_linear_new(struct vol_linear **ret);
void vol_linear_add(struct vol_linear *l, const uint8_t sha256[32]);
void vol_linear_final(struct vol_linear *l, uint8_t out[32]);
void vol_linear_free(struct vol_linear *l);

/* ---- a region's volumes ---- */

struct vol_region;
struct vol;

/* Opens the region rooted at `dir` (creating DIR/maps and DIR/volumes), reading and writing
 * chunks through `store` (which must outlive it).  `cache_bytes` bounds the cache of decoded base
 * chunks shared by the region's volumes, in memory; `disk_cache_bytes` (0: none) its second tier,
 * decoded clear chunks in a private unnamed file in `dir` (at most an eighth of the free space),
 * so that a volume's blocks decode once, not on every read that misses in memory. */
int vol_region_open(const char *dir, struct store *store, size_t cache_bytes,
                    uint64_t disk_cache_bytes, struct vol_region **ret);
void vol_region_close(struct vol_region *r);
/* The path of a snapshot's map file, DIR/maps/<id>.map, into out. */
void vol_map_path(struct vol_region *r, const char *snapshot_id, char *out, size_t outlen);

struct vol_params {
    const char *id;              /* "vol-..." */
    uint64_t size;               /* bytes, a multiple of VOL_BLOCK_SIZE */
    const char *base_snapshot;   /* map to start from, or NULL for an empty volume */
    const struct store_key *key; /* encryption domain for the volume's chunks, or NULL */
};

/* Creates a volume in constant time (no data is copied; a base map smaller than `size` reads as
 * zero past its end).  -EEXIST if it exists. */
int vol_create(struct vol_region *r, const struct vol_params *p);
/* Opens a volume (recovering its layer chain after a crash).  `key` as given to vol_create.  Free
 * with vol_close.  Opening the same volume twice returns two handles onto one shared state. */
int vol_open(struct vol_region *r, const char *id, const struct store_key *key, struct vol **ret);
void vol_close(struct vol *v);
/* Deletes a closed volume's files.  -EBUSY while a handle is open. */
int vol_delete(struct vol_region *r, const char *id);

uint64_t vol_size(const struct vol *v);
/* Grows the device to `size` bytes (a multiple of VOL_BLOCK_SIZE, >= the current size). */
int vol_grow(struct vol *v, uint64_t size);
/* The volume as a read-write block device (borrowed; valid until vol_close).  Writes are durable
 * after flush or with BLOCKDEV_FUA. */
struct blockdev *vol_blockdev(struct vol *v);

/* Number of blocks changed since the last snapshot began (the top layer's). */
uint64_t vol_changed_blocks(struct vol *v);

/* ---- snapshots of volumes ---- */

/* Freezes the top layers of `n` volumes at one instant (no write to any of them is half in and
 * half out) as the content of snapshots `snapshot_ids[i]`, and records that durably. */
int vol_snapshot_begin(struct vol **vols, const char *const *snapshot_ids, size_t n);

struct vol_snapshot_stats {
    uint64_t blocks;         /* non-zero blocks in the snapshot */
    uint64_t changed_blocks; /* blocks read from the frozen layers */
    uint64_t stored_bytes;   /* bytes of chunks newly written to the store */
    uint8_t linear[32];      /* LINEAR checksum over the snapshot's non-zero blocks */
};

/* Captures a begun snapshot: stores its changed blocks and saves its map.  `progress` (may be
 * NULL) is called with a percentage now and then. */
int vol_snapshot_capture(struct vol *v, const char *snapshot_id,
                         void (*progress)(void *ctx, int percent), void *ctx,
                         struct vol_snapshot_stats *ret);
/* After the snapshot is recorded as completed: rebase the volume onto its map and delete the
 * captured layers.  Idempotent; -ENOENT if never captured.  While an older snapshot of the volume
 * is still pending, the finish is recorded durably and the rebase follows once the older ones
 * are finished or aborted (the snapshot then no longer counts as pending). */
int vol_snapshot_finish(struct vol *v, const char *snapshot_id);
/* Forgets a begun snapshot whose capture failed or was cancelled; its layers stay in the chain.
 * -ENOENT if not pending, -EBUSY once finished. */
int vol_snapshot_abort(struct vol *v, const char *snapshot_id);
/* Snapshot ids begun but neither finished nor aborted, oldest first (for recovery); writes up to
 * `max` ids of up to 32 characters into `ids` and returns their number. */
int vol_snapshot_pending(struct vol *v, char (*ids)[32], size_t max);

/* ---- reading snapshots ---- */

/* A read-only block device over a snapshot's map (its size is `size` bytes; blocks past the map
 * read as zero).  Free with blockdev->ops->close. */
int vol_snapshot_open(struct vol_region *r, const char *snapshot_id, uint64_t size,
                      const struct store_key *key, struct blockdev **ret);

#endif
