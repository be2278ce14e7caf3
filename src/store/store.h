/*
 * store.h — a region's chunk store: content-addressed, compressed, optionally encrypted blocks of
 * at most STORE_CHUNK_SIZE bytes, written durably, behind a backend table so that an object store
 * (S3, RADOS) can stand where local files stand today.
 *
 * A chunk's id is SHA-256 of its plaintext, or, in an encryption domain, HMAC-SHA256 of that under
 * the domain's id key — so equal data under different keys never shares a chunk and equality never
 * leaks across keys.  All-zero blocks are never stored (callers map them to "zero").
 *
 * On disk (local backend), DIR/chunks/ab/<64 hex> holds one chunk:
 *   header (32 bytes, integers little-endian): "AMCK", version 1, flags (ZSTD=1,
 *                      ENCRYPTED=2), reserved u16, plain length u32, payload length u32,
 *                      key id (16 bytes, zero if clear)
 *   payload:           a zstd frame with its content checksum, or, when encrypted,
 *                      nonce(12) || AES-256-GCM(zstd frame) || tag(16) with the header and the
 *                      chunk id as associated data.
 * A chunk is written to DIR/tmp/, fsynced, renamed into place and its directory fsynced before
 * store_batch_commit returns — callers commit database rows that refer to chunks only after that.
 *
 * The store owns DIR/tmp/: every open store holds a shared lock on it, and leftovers of crashed
 * writers are removed only by an opener that gets it exclusively (so a command-line tool opening
 * the store never deletes a running daemon's temporaries).
 *
 * Every function is safe to call from several threads at once on the same store.
 * Errors: -ENOENT (no such chunk), -EIO (unreadable), -EBADMSG (corrupt: bad header, checksum,
 * tag, or (with STORE_VERIFY) id mismatch), -ENOSPC (full), -ENOMEM, -EINVAL.
 */
#ifndef AMID_STORE_H
#define AMID_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_CHUNK_SIZE (512u * 1024u)
#define STORE_ID_LEN     32
#define STORE_KEY_ID_LEN 16

struct chunk_id {
    uint8_t b[STORE_ID_LEN];
};

/* An encryption domain: chunks written with it are encrypted with `data_key` and named by
 * HMAC-SHA256 under `id_key`.  `key_id` names the data key in chunk headers (it is the KMS data
 * key's id; the store never learns where keys come from).  Wipe after use. */
struct store_key {
    uint8_t key_id[STORE_KEY_ID_LEN];
    uint8_t id_key[32];
    uint8_t data_key[32];
};

struct store;
struct store_batch;

/* Options for store_open_local. */
struct store_opts {
    /* 2 by default (0 means default): on a 2 GiB disk of real files, 3.7% fewer stored bytes
     * than level 1 for 9% more import time (level 3: 7.2% fewer for 32% more). */
    int zstd_level;
};

/* Opens (creating the directories when absent) the local chunk store rooted at `dir`.  Leftover
 * temporary files of a crashed writer are removed.  The caller frees *ret with store_close. */
int store_open_local(const char *dir, const struct store_opts *opts, struct store **ret);
void store_close(struct store *s);

/* ---- ids ---- */

/* The id of `n` bytes of plaintext: their SHA-256, or, when `key`, HMAC-SHA256 of that SHA-256
 * under key->id_key (keyed: equal data has unrelated ids under different keys). */
void store_chunk_id(const struct store_key *key, const void *data, size_t n, struct chunk_id *ret);
/* The same id from the plaintext's SHA-256 when the caller already has it (no second pass). */
void store_chunk_id_of(const struct store_key *key, const uint8_t sha256[32], struct chunk_id *ret);
/* Whether `n` bytes are all zero (fast: word at a time). */
bool store_is_zero(const void *data, size_t n);
/* Lower-case hex of an id into out[65]; parsing back returns 0 or -EINVAL. */
void chunk_id_hex(const struct chunk_id *id, char out[65]);
int chunk_id_parse(const char *hex, struct chunk_id *ret);

/* ---- writing ---- */

/* A batch groups puts so that their durability costs one round of fsyncs.  Free with
 * store_batch_free (which discards uncommitted puts' temporary files). */
int store_batch_new(struct store *s, struct store_batch **ret);
void store_batch_free(struct store_batch *b);

/* Encodes and writes one chunk of `n` (1..STORE_CHUNK_SIZE) bytes whose id is `id` (computed by
 * the caller with store_chunk_id and the same `key`).  When the chunk already exists, nothing is
 * written (deduplication) and 0 is returned; its mtime is set to now, so that gc's grace period
 * covers this new use of it.  The chunk is durable only once the batch commits.
 * Sets *ret_stored (when non-NULL) to the bytes newly written, 0 for a duplicate. */
int store_put(struct store *s, struct store_batch *b, const struct chunk_id *id,
              const struct store_key *key, const void *data, size_t n, size_t *ret_stored);
/* Makes every put of the batch durable (fsync, rename, directory fsync), then empties the batch
 * for reuse.  A failure before the renames (where a full disk or an I/O error shows) leaves none
 * of the batch's new chunks visible; one during the renames may leave some complete, fsynced
 * chunks in place (a concurrent put may already rely on them), which gc frees if unused.  A put
 * that fails fails the whole batch: its temporaries are deleted at once. */
int store_batch_commit(struct store_batch *b);

/* ---- reading ---- */

#define STORE_VERIFY (1u << 0) /* recompute the id of the decoded data and compare */

/* Reads and decodes a chunk into `buf` (STORE_CHUNK_SIZE bytes); sets *ret_n to its length.
 * `key` is needed for encrypted chunks (-EACCES without it or with a key of another key id); a
 * clear chunk read with a key is refused (-EBADMSG: only a substituted file can be that). */
int store_get(struct store *s, const struct chunk_id *id, const struct store_key *key, void *buf,
              size_t *ret_n, unsigned flags);
/* Whether the chunk exists (0) or not (-ENOENT). */
int store_has(struct store *s, const struct chunk_id *id);

/* The encoded bytes of a chunk as stored (header and payload), for copying between stores
 * without decoding; the caller frees *ret.  store_put_raw verifies that the header is sound and,
 * by decoding (with `key` when encrypted), that the content has the id `id`, then writes it as
 * store_put does. */
int store_get_raw(struct store *s, const struct chunk_id *id, uint8_t **ret, size_t *ret_n);
int store_put_raw(struct store *s, struct store_batch *b, const struct chunk_id *id,
                  const struct store_key *key, const uint8_t *raw, size_t n, size_t *ret_stored);

/* ---- maintenance ---- */

struct store_chunk_info {
    struct chunk_id id;
    uint64_t stored_bytes; /* file size */
    int64_t mtime_ms;      /* when it was written or last deduplicated against (gc's grace) */
};

/* Calls `fn` for every chunk (in no particular order); stops and returns fn's value when it is
 * non-zero.  Files that are not chunks are skipped. */
int store_each(struct store *s, int (*fn)(void *ctx, const struct store_chunk_info *c), void *ctx);
int store_stat(struct store *s, const struct chunk_id *id, struct store_chunk_info *ret);
/* Deletes a chunk (durably: the directory is fsynced).  -ENOENT when absent. */
int store_delete(struct store *s, const struct chunk_id *id);

#endif
