/*
 * vol_int.h — what the files of the vol module share: the map's layout and the appends capture
 * uses, the region's decoded-chunk cache and map cache, overlay layers with their 2-bit block
 * states, and a volume's shared state.  Not for use outside src/vol/ (its unit test
 * excepted).
 *
 * Lock order (outermost first): a volume's admin mutex (several volumes: in address order), its
 * chain rwlock (likewise), a block stripe mutex, the volume's partial-block mutex, the region's
 * volume mutex, its map mutex, a layer's flush mutex, its page mutex, the cache mutex; a layer's
 * write mutex is a leaf (held around one pwrite).  No callback runs with a lock held.
 */
#ifndef AMID_VOL_INT_H
#define AMID_VOL_INT_H

#include "vol/vol.h"
#include "crypto/crypto.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

/* Bounds that keep byte offsets (idx * VOL_BLOCK_SIZE) far from overflow: 2^40 blocks = 512 PiB. */
#define VOL_MAX_BLOCKS (1ull << 40)
/* Snapshot and volume ids: [A-Za-z0-9._-], 1..31 characters, not starting with '.'. */
#define VOL_ID_MAX 32

bool vol_id_valid(const char *id);

/* ---- maps (vol_map.c) ---- */

/* Entries of a map being built that are not yet merged into the sorted arrays. */
struct vol_map_delta {
    uint64_t idx;
    uint8_t used; /* slot holds an entry */
    uint8_t zero; /* entry says "zero" (removes a sorted entry) */
    struct chunk_id id;
};

struct vol_map {
    atomic_int refs;
    uint64_t nblocks;
    bool frozen;   /* saved or loaded: immutable, safe to share between threads */
    bool has_sums; /* each entry carries its plaintext's SHA-256 (encrypted maps) */
    uint64_t allocated;
    /* Sorted by index: idx[i] -> ids[i] (and sums[i]); zero blocks take no memory. */
    size_t n, cap;
    uint64_t *idx;
    struct chunk_id *ids;
    uint8_t (*sums)[32];
    /* Open-addressed hash of changes made out of index order (maps being built only). */
    struct vol_map_delta *delta;
    size_t delta_n, delta_cap;
};

/* A writable map whose entries carry plaintext SHA-256s (all zero: unknown). */
int vol_map_new_sums(uint64_t nblocks, struct vol_map **ret);
/* Appends block `idx` (greater than every index in the map, which has no delta) with `id` and,
 * when the map has sums, `sum` (may be NULL: unknown). */
int vol_map_append(struct vol_map *m, uint64_t idx, const struct chunk_id *id, const uint8_t *sum);
/* The plaintext SHA-256 recorded for the sorted entry `i`, or NULL when unknown. */
const uint8_t *vol_map_sum_at(const struct vol_map *m, size_t i);
/* The position of the first sorted entry with index >= idx (m->n when none). */
size_t vol_map_lower_bound(const struct vol_map *m, uint64_t idx);
/* The smallest allocated index >= idx, or UINT64_MAX when none.  Exact for maps without a
 * delta; otherwise conservative (returns idx). */
uint64_t vol_map_next_allocated(const struct vol_map *m, uint64_t idx);
/* Reads just the header of a map file (constant time): its block count.  -ENOENT, -EBADMSG. */
int vol_map_peek(const char *path, uint64_t *ret_nblocks);

/* Writes `n` bytes at `off` in full, retrying short writes and EINTR.  0, -ENOSPC or -EIO. */
int vol_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);
/* The error a failed write (a negative errno) reports: -ENOSPC when space ran out, else -EIO. */
int vol_write_error(int rc);
/* Reads up to `n` bytes at `off`; bytes past the end of the file read as zero. */
int vol_pread_full(int fd, void *buf, size_t n, uint64_t off);
/* fsync of the directory holding `path` (or of `path` itself when `is_dir`). */
int vol_fsync_dir(const char *path, bool is_dir);

/* ---- decoded-chunk cache (vol_cache.c) ---- */

struct vol_cache;

/* A cache of up to `cap` bytes of decoded chunks read through `store`, and of up to `disk_cap`
 * bytes of decoded clear chunks in a private unnamed file in `disk_dir` (none when NULL or 0, or
 * when the file cannot be made).  Thread-safe. */
int vol_cache_new(struct store *store, size_t cap, const char *disk_dir, uint64_t disk_cap,
                  struct vol_cache **ret);
/* Stops the read-ahead threads (dropping decodes still queued) and frees the cache.  No read may
 * be running.  Accepts NULL. */
void vol_cache_free(struct vol_cache *c);
/* Copies bytes [off, off+len) of chunk `id` (decoded with `key`: checksum and tag checked) into
 * `dst`; bytes past the chunk's length read as zero.  Concurrent misses on one chunk decode it
 * once.  -EIO when the chunk is missing or corrupt, -ENOMEM. */
int vol_cache_read(struct vol_cache *c, const struct chunk_id *id, const struct store_key *key,
                   void *dst, size_t off, size_t len);
/* Queues chunk `id` (with `key`, copied) to be decoded into the cache by a background thread,
 * unless it is cached or being decoded already.  Returns 0, or -EAGAIN (queue full: skipped) or
 * -ENOMEM; never waits for a decode. */
int vol_cache_prefetch(struct vol_cache *c, const struct chunk_id *id, const struct store_key *key);

/* Blocks decoded ahead of a sequential reader (2 MiB). */
#define VOL_READAHEAD 4u
/* Notes a read of blocks [first, last] in `cursor` (the block after the last one read, per
 * device) and returns how many blocks after `last` to read ahead: VOL_READAHEAD when this read
 * continues the previous one into a block not read yet, else 0. */
uint64_t vol_readahead(atomic_ullong *cursor, uint64_t first, uint64_t last);

/* ---- the region ---- */

struct vol_shared;

struct vol_map_slot {
    char id[VOL_ID_MAX];
    struct vol_map *m; /* one reference, the slot's */
};

struct vol_region {
    char dir[PATH_MAX];
    int lock_fd; /* DIR/volumes, flock'd shared while open: another process's region */
    struct store *store;
    struct vol_cache *cache;
    pthread_mutex_t lock; /* vols, and each volume's handles */
    struct vol_shared *vols;
    pthread_mutex_t maps_lock; /* maps */
    struct vol_map_slot *maps;
    size_t nmaps, maps_cap;
};

/* The map of snapshot `id`, shared with every other user of it (loaded once).  The caller
 * unrefs.  -ENOENT, -EBADMSG. */
int vol_region_map_get(struct vol_region *r, const char *id, struct vol_map **ret);
/* Makes `m` (frozen) the region's map of snapshot `id`, replacing an older one. */
void vol_region_map_put(struct vol_region *r, const char *id, struct vol_map *m);

/* ---- overlay layers (vol_layer.c) ---- */

/* Block states in a layer's bitmap, two bits per block. */
#define VOL_ST_ABSENT  0u /* not in this layer: read below */
#define VOL_ST_PRESENT 1u /* whole block in the data file */
#define VOL_ST_ZERO    2u /* reads as zero (the data file has a hole there) */
/* In memory only, and only in a volume's top layer: the data file holds the sectors its
 * vol_partial entry lists, the rest is below.  Written to the bitmap file as absent. */
#define VOL_ST_PARTIAL 3u

#define VOL_BM_PAGE        4096u              /* bytes per bitmap page */
#define VOL_BM_PAGE_BLOCKS (VOL_BM_PAGE * 4u) /* blocks per bitmap page */
#define VOL_BM_PAGE_SHIFT  14u

/*
 * One overlay layer: DIR/volumes/<id>/L<seq>.data (whole blocks at idx * VOL_BLOCK_SIZE, sparse)
 * and L<seq>.bitmap (raw pages of 2-bit states, 4 blocks a byte, LSB first; missing pages and a
 * short file mean absent).  In memory the bitmap pages are allocated on first use, so an untouched
 * 16 TiB layer costs one pointer per 8 GiB.  The data is plaintext (encrypting layers at rest is
 * a later issue).
 */
struct vol_layer {
    atomic_int refs;
    uint64_t seq;
    int fd_data;
    int fd_direct; /* the data file opened O_DIRECT, for large aligned writes; -1 where refused */
    atomic_bool direct_off;      /* the file system refused a direct write: no more tried */
    atomic_ullong direct_writes; /* writes that went through fd_direct (for tests) */
    /* An encrypted volume's layer holds its data with AES-256-XTS (vol_layer_set_key): each
     * 512-byte unit under the tweak (unit, seq); an all-zero unit stands for zeros, so holes,
     * punched blocks and the file's end read as zero as they do in the clear. */
    bool xts;
    uint8_t xts_key[XTS_KEY_LEN];
    /* Encrypted layers: readers hold it shared; a write not aligned to units, which rewrites
     * bytes beside its own, holds it exclusively (a reader of those bytes must never see their
     * unit half written: it would decrypt to garbage where the clear bytes never changed). */
    pthread_rwlock_t unit_lock;
    int fd_bitmap;
    char data_path[PATH_MAX];
    char bitmap_path[PATH_MAX];
    bool unlink_on_free;        /* dropped from the chain: its files go with the last reference */
    pthread_mutex_t page_lock;  /* allocating pages */
    pthread_mutex_t flush_lock; /* one flush at a time */
    /* One data write at a time: the file system serialises buffered writes to a file anyway
     * (ext4 and xfs take the inode lock), and a writer waiting here sleeps where one waiting on
     * the inode lock spins, burning a core the NBD client needs (1.2-1.4x the write throughput
     * on 2 cores).  A leaf lock: held only around the pwrite. */
    pthread_mutex_t write_lock;
    size_t npages; /* changed only under the chain's write lock */
    _Atomic(uint8_t *) *pages;
    atomic_uchar *dirty;    /* per page: changed since last persisted */
    atomic_ullong count;    /* blocks not absent */
    atomic_bool needs_sync; /* data written since the last fdatasync */
    atomic_int err;         /* sticky: a failed fdatasync leaves the page cache unknowable */
    /* Blocks from this index on lay past the data file's end when the layer was opened, so
     * their ranges hold no bytes but what this process wrote; UINT64_MAX after a failed write
     * or state change (either may leave bytes in a block that stays absent). */
    atomic_ullong fresh_from;
};

/* Opens (creating when absent) layer `seq` in directory `dir` sized for `nblocks`, loading and
 * validating its bitmap (-EBADMSG).  The caller unrefs. */
int vol_layer_open(const char *dir, uint64_t seq, uint64_t nblocks, bool create,
                   struct vol_layer **ret);
struct vol_layer *vol_layer_ref(struct vol_layer *l);
void vol_layer_unref(struct vol_layer *l);
/* Resizes the in-memory bitmap for `nblocks` (only grows).  Under the chain's write lock. */
int vol_layer_grow(struct vol_layer *l, uint64_t nblocks);
unsigned vol_layer_get(const struct vol_layer *l, uint64_t idx);
/* Sets block `idx`'s state; the data it describes must already be written. */
int vol_layer_set(struct vol_layer *l, uint64_t idx, unsigned st);
/* The smallest index >= idx (below `end`) whose state is not absent, or `end`. */
uint64_t vol_layer_next(const struct vol_layer *l, uint64_t idx, uint64_t end);
/* Makes every write to the layer made before the call durable: stages the changed bitmap pages
 * (partial blocks as absent: they must be completed first), fdatasyncs the data, then writes the
 * staged pages and fdatasyncs the bitmap. */
int vol_layer_flush(struct vol_layer *l);
/* Deallocates block `idx` in the data file so it reads as zero (falls back to writing zeroes). */
int vol_layer_punch(struct vol_layer *l, uint64_t idx);
/* Whether absent block `idx` certainly reads as zero in the data file without a punch: it lay
 * past the file's end at open and (being absent) was never written since, and no write or state
 * change of the layer failed. */
bool vol_layer_fresh(const struct vol_layer *l, uint64_t idx);
/* Writes `n` bytes at byte offset `off` of the data file, marking it as needing a sync; a failure
 * ends vol_layer_fresh's trust in every block. */
int vol_layer_write(struct vol_layer *l, const void *buf, size_t n, uint64_t off);
/* Reads `n` bytes at byte offset `off` of the data file (zeros past its end), decrypted. */
int vol_layer_read(struct vol_layer *l, void *buf, size_t n, uint64_t off);
/* Makes the layer keep its data encrypted under `key` (from then on: call it right after
 * vol_layer_open, before any I/O).  Writes not aligned to XTS_UNIT read and rewrite the units
 * at their edges, so they must not race other writes to those units (the block's stripe). */
void vol_layer_set_key(struct vol_layer *l, const uint8_t key[XTS_KEY_LEN]);

/* Writes of at least VOL_DIRECT_MIN bytes with buffer, offset and length multiples of
 * VOL_DIRECT_ALIGN bypass the page cache (O_DIRECT) where the file system allows it. */
#define VOL_DIRECT_MIN   (64u * 1024)
#define VOL_DIRECT_ALIGN 4096u

/* ---- volumes (vol_volume.c) ---- */

#define VOL_STRIPES 64

/* Partial blocks of the top layer a volume tracks at once (more are copied up at once). */
#define VOL_PARTIAL_MAX 128
#define VOL_SECTOR      512u

/* A top-layer block in state VOL_ST_PARTIAL: which of its sectors the data file holds.  Its
 * content is guarded by the block's stripe mutex; taking and freeing entries by partial_lock. */
struct vol_partial {
    uint64_t idx; /* UINT64_MAX: free */
    uint64_t cover[VOL_BLOCK_SIZE / VOL_SECTOR / 64];
};

struct vol_pending {
    char id[VOL_ID_MAX];
    uint64_t upto;    /* newest layer seq the snapshot covers */
    uint64_t nblocks; /* the volume's size when it began */
    bool finished;    /* finish was called; the rebase waits for older snapshots */
};

/* The state shared by every handle of one volume. */
struct vol_shared {
    struct vol_region *r;
    int lock_fd; /* the volume's directory, flock'd exclusively: one process at a time */
    struct vol_shared *next; /* in r->vols */
    int handles;             /* under r->lock */
    char id[VOL_ID_MAX];
    char dir[PATH_MAX];
    bool has_key;
    uint8_t key_id[STORE_KEY_ID_LEN];
    bool xts;                     /* has_key: layers from xts_from on are encrypted */
    uint64_t xts_from;            /* older volumes' earlier layers are in the clear */
    uint8_t xts_key[XTS_KEY_LEN]; /* their key (vol_layer_set_key) */
    pthread_mutex_t admin;        /* serializes chain and state changes */
    pthread_rwlock_t chain;       /* read: I/O; write: changing what follows */
    uint64_t size, nblocks;
    char base_id[VOL_ID_MAX];  /* "" when none */
    struct vol_map *base;      /* NULL when none */
    struct vol_layer **layers; /* oldest first; the last is the writable top */
    size_t nlayers;
    uint64_t next_seq;
    struct vol_pending *pending; /* oldest first */
    size_t npending;
    struct vol *handle_list; /* for size updates; under r->lock */
    pthread_mutex_t stripes[VOL_STRIPES];
    atomic_ullong ra_next; /* vol_readahead's cursor */
    pthread_mutex_t partial_lock;
    size_t npartial; /* entries in use, under partial_lock */
    struct vol_partial partials[VOL_PARTIAL_MAX];
};

/* Whether layer `seq` of the volume holds its data encrypted (with s->xts_key). */
bool vol_layer_encrypted(const struct vol_shared *s, uint64_t seq);

struct vol {
    struct blockdev bd; /* first: the blockdev ops recover the handle with a cast */
    struct vol_shared *s;
    bool has_key;
    struct store_key key;
    struct vol *next_handle;
};

/* Writes the state file from `s` durably (temporary file, fsync, rename, directory fsync).
 * Caller holds admin (and the chain's write lock when the chain or size changed). */
int vol_state_save(struct vol_shared *s);
/* vol_state_save in two steps, so that the slow part happens before I/O is stopped: writes and
 * fsyncs the state `s` will have once layer `add_seq` is on top (when non-zero) and `add` pending
 * (when non-NULL) to a temporary file named into tmp; vol_state_install renames it into place and
 * fsyncs the directory (on failure the temporary file is removed). */
int vol_state_prepare(struct vol_shared *s, uint64_t add_seq, const struct vol_pending *add,
                      char *tmp, size_t tmplen);
int vol_state_install(struct vol_shared *s, const char *tmp);
/* The key of the handle, or NULL. */
const struct store_key *vol_key(const struct vol *v);
/* Rebases onto the oldest pending snapshots while they are finished.  Under admin. */
int vol_snapshot_settle(struct vol_shared *s);
/* Completes every partial block of the top layer (copies up the sectors it lacks), so that none
 * is left to be lost or frozen.  The caller holds the chain lock (read or write).  Returns 0 or
 * the first error (-EIO when what is below cannot be read); the others are still completed. */
int vol_partials_complete(struct vol *v);

#endif
