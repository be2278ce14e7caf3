/*
 * store_int.h — what the files of the store module share: the chunk codec, the pool of per-thread
 * compression contexts, and the backend table that stands between the codec and the bytes'
 * home.  Not for use outside src/store/ (the fuzz target and unit tests excepted).
 *
 * Layers inside the module:
 *   store_core.c  — the public functions: ids, batches, put/get, raw copies, maintenance; it
 *                   encodes and decodes and hands encoded bytes to a backend;
 *   store_chunk.c — the codec: header, zstd, AES-256-GCM; pure functions over memory;
 *   store_local.c — the local-file backend (DIR/chunks/ab/<64 hex>, DIR/tmp/).
 * An object-store backend (S3, RADOS) implements struct store_backend_ops and nothing else.
 *
 * Header (32 bytes, integers little-endian):
 *    0  "AMCK"          4  version (u8) = 1       5  flags (u8): ZSTD=1 (always), ENCRYPTED=2
 *    6  reserved u16=0  8  plain length (u32, 1..STORE_CHUNK_SIZE)
 *   12  payload length (u32, = encoded length - 32)  16  key id (16 bytes; zero when clear)
 * Payload: one zstd frame with content size and content checksum, no dictionary; or, when
 * encrypted, nonce(12) || AES-256-GCM(frame) || tag(16) with associated data header || chunk id.
 */
#ifndef AMID_STORE_INT_H
#define AMID_STORE_INT_H

#include "crypto/crypto.h"
#include "store/store.h"

#include <pthread.h>
#include <zstd.h>

#define STORE_MAGIC          "AMCK"
#define STORE_VERSION        1
#define STORE_FLAG_ZSTD      0x01u
#define STORE_FLAG_ENCRYPTED 0x02u
#define STORE_HEADER_LEN     32
#define STORE_AEAD_OVERHEAD  AEAD_OVERHEAD /* nonce 12 + tag 16 */
/* The largest payload a chunk of `plain` bytes may have. */
#define STORE_PAYLOAD_MAX(plain) (ZSTD_COMPRESSBOUND(plain) + STORE_AEAD_OVERHEAD)
/* The largest encoded chunk: what a backend's get buffer must hold. */
#define STORE_ENCODED_MAX (STORE_HEADER_LEN + STORE_PAYLOAD_MAX(STORE_CHUNK_SIZE))

/* ---- the codec (store_chunk.c) ---- */

/* A decoded header. */
struct store_header {
    uint8_t version;
    uint8_t flags;
    uint32_t plain_len;
    uint32_t payload_len;
    uint8_t key_id[STORE_KEY_ID_LEN];
};

/* Scratch state for encoding and decoding one chunk at a time: zstd contexts and buffers.
 * Contexts are expensive to create, so the store keeps a pool of them (store_ctx_get/put). */
struct store_ctx {
    struct store_ctx *next; /* pool link */
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    uint8_t *enc;   /* STORE_ENCODED_MAX: an encoded chunk being written or read */
    uint8_t *work;  /* STORE_ENCODED_MAX: the zstd frame before sealing / after opening */
    uint8_t *plain; /* STORE_CHUNK_SIZE: put_raw's decoding target, allocated on first use */
};

/* A context compressing at `zstd_level`.  Returns NULL when out of memory.  Free with
 * store_ctx_free (accepts NULL). */
struct store_ctx *store_ctx_new(int zstd_level);
void store_ctx_free(struct store_ctx *cx);

/* Parses and checks the header of the `n`-byte encoding `enc`: magic, version, flags, reserved
 * bits, lengths (including that the payload fills the rest of `enc` exactly and fits the bound
 * for the plain length) and a zero key id for clear chunks.  Returns 0 or -EBADMSG. */
int store_header_parse(const uint8_t *enc, size_t n, struct store_header *ret);

/* Encodes `n` (1..STORE_CHUNK_SIZE) bytes of `data` with id `id` into cx->enc, encrypted when
 * `key` is non-NULL (fresh random nonce).  Sets *ret_n to the encoded length.  Returns 0, -EINVAL,
 * -ENOMEM or -EIO. */
int store_chunk_encode(struct store_ctx *cx, const struct chunk_id *id, const struct store_key *key,
                       const void *data, size_t n, size_t *ret_n);

/* Decodes the `n`-byte encoding `enc` of chunk `id` into `out` (STORE_CHUNK_SIZE bytes) and sets
 * *ret_n to the plain length.  Everything is checked: the header (store_header_parse), the frame
 * (exactly one zstd frame, with content size equal to the plain length and a content checksum,
 * no dictionary), the checksum, and for encrypted chunks the GCM tag over header, id and payload.
 * An encrypted chunk needs `key` with the header's key id (-EACCES otherwise); a clear chunk read
 * with a key is refused (-EBADMSG: an encryption domain's chunks are never clear, so that is a
 * substituted file).  With STORE_VERIFY in `flags` the id of the output is recomputed and
 * compared.  Returns 0, -EBADMSG, -EACCES or -ENOMEM; on failure `out` holds no decoded bytes
 * (it is zeroed as far as it was written). */
int store_chunk_decode(struct store_ctx *cx, const struct chunk_id *id, const struct store_key *key,
                       const uint8_t *enc, size_t n, void *out, size_t *ret_n, unsigned flags);

/* ---- backends ---- */

#define STORE_BACKEND_VERSION 1

struct store_backend_ops;

/* A backend instance; a backend embeds it first in its own struct. */
struct store_backend {
    const struct store_backend_ops *ops;
};

/* A backend's half of a batch: the objects staged by put until commit. */
struct store_backend_batch {
    struct store_backend *be;
};

/*
 * The table a backend fills.  All objects are encoded chunks (header and payload), named by chunk
 * id; the backend never interprets them.  Functions that take only `be` are called concurrently
 * from any thread; the store serialises all calls on one backend batch (put, depend, commit,
 * free), so a backend batch needs no locking of its own.  Errors are negative errnos as in
 * store.h; -ENOENT means "no such object".
 */
struct store_backend_ops {
    unsigned version; /* STORE_BACKEND_VERSION */
    const char *name;

    /* Frees the backend.  No batch is alive. */
    void (*close)(struct store_backend *be);

    int (*batch_new)(struct store_backend *be, struct store_backend_batch **ret);
    /* Discards what was staged and not committed, and frees the batch. */
    void (*batch_free)(struct store_backend_batch *bb);
    /* Discards what was staged and not committed; the batch stays usable. */
    void (*batch_discard)(struct store_backend_batch *bb);
    /* Stages the `n` bytes of `enc` as object `id`, which the batch has not staged before.  The
     * object must not be visible under its name before commit.  On failure nothing of it
     * remains (the store then discards the whole batch). */
    int (*put)(struct store_backend_batch *bb, const struct chunk_id *id, const uint8_t *enc,
               size_t n);
    /* Notes that the batch relies on object `id`, which exists (found by has) but which another
     * writer may not have made durable yet: commit must make it durable too.  It also marks the
     * object as used now (the local backend sets its mtime), so that gc's grace period, which
     * spares objects changed recently, covers a put that deduplicates against an old,
     * unreferenced object gc is about to free.  -ENOENT when the object has vanished since has
     * (gc freed it): the store then writes it anew. */
    int (*depend)(struct store_backend_batch *bb, const struct chunk_id *id);
    /* Makes every staged object durable and visible and every depended-on object durable, then
     * empties the batch.  On failure staged objects are not visible, except those that became
     * visible before the failure struck, which are then complete (see store_local.c). */
    int (*batch_commit)(struct store_backend_batch *bb);

    /* 0 when object `id` exists, -ENOENT when not. */
    int (*has)(struct store_backend *be, const struct chunk_id *id);
    /* Reads object `id` into `buf` (`cap` bytes) and sets *ret_n.  -EBADMSG when it is larger
     * than `cap` (so no chunk). */
    int (*get)(struct store_backend *be, const struct chunk_id *id, uint8_t *buf, size_t cap,
               size_t *ret_n);
    int (*stat)(struct store_backend *be, const struct chunk_id *id, struct store_chunk_info *ret);
    /* Removes object `id` durably. */
    int (*del)(struct store_backend *be, const struct chunk_id *id);
    /* Calls `fn` for every object; stops and returns fn's value when it is non-zero. */
    int (*each)(struct store_backend *be, int (*fn)(void *ctx, const struct store_chunk_info *c),
                void *ctx);
};

/* The local-file backend rooted at `dir` (store_local.c). */
int store_local_backend_open(const char *dir, struct store_backend **ret);

/* ---- the store (store_core.c) ---- */

/* Builds a store over backend `be`, which it then owns (closed by store_close, and on failure). */
int store_new(struct store_backend *be, const struct store_opts *opts, struct store **ret);

#endif
