/*
 * store_chunk.c — the chunk codec (header, zstd frame, AES-256-GCM), chunk ids, the zero test and
 * the contexts that make encoding cheap to repeat.
 *
 * Pure functions over memory: no files, no locks.  Decoding trusts nothing of its input (the
 * bytes come from a disk or another store): every length is checked against the header and the
 * header against the bounds before anything is decompressed or decrypted, and a failure never
 * leaves decoded bytes in the caller's buffer.  The format is described in store_int.h.
 */
#include "store/store_int.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zstd_errors.h>

/* Compared against in store_is_zero; static const, so shared read-only state, not global state. */
static const uint8_t zero_page[4096];

/* The decoder refuses frames whose window exceeds 1 MiB: chunks are 512 KiB at most. */
#define STORE_WINDOW_LOG_MAX 20

/* ---- ids ---- */

void store_chunk_id_of(const struct store_key *key, const uint8_t sha256[32], struct chunk_id *ret)
{
    uint8_t h[32];
    memcpy(h, sha256, sizeof(h));
    if (key)
        crypto_hmac_sha256(key->id_key, sizeof(key->id_key), h, sizeof(h), ret->b);
    else
        memcpy(ret->b, h, sizeof(h));
}

void store_chunk_id(const struct store_key *key, const void *data, size_t n, struct chunk_id *ret)
{
    uint8_t h[32];
    crypto_sha256(data, n, h);
    store_chunk_id_of(key, h, ret);
}

bool store_is_zero(const void *data, size_t n)
{
    const uint8_t *p = data;

    /* memcmp stops at the first difference and is vectorised: real data fails in the first
     * bytes, a zero block is scanned at memory speed. */
    while (n >= sizeof(zero_page)) {
        if (memcmp(p, zero_page, sizeof(zero_page)) != 0)
            return false;
        p += sizeof(zero_page);
        n -= sizeof(zero_page);
    }
    return n == 0 || memcmp(p, zero_page, n) == 0;
}

void chunk_id_hex(const struct chunk_id *id, char out[65])
{
    hex_encode(id->b, STORE_ID_LEN, out);
}

int chunk_id_parse(const char *hex, struct chunk_id *ret)
{
    struct chunk_id id;

    if (!hex)
        return -EINVAL;
    /* Lower case only: the hex names files, and one id must have one name. */
    for (size_t i = 0; i < 2 * STORE_ID_LEN; i++) {
        char c = hex[i];
        int v;

        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else
            return -EINVAL; /* includes the NUL of a short string */
        if (i % 2 == 0)
            id.b[i / 2] = (uint8_t)(v << 4);
        else
            id.b[i / 2] |= (uint8_t)v;
    }
    if (hex[2 * STORE_ID_LEN] != '\0')
        return -EINVAL;
    *ret = id;
    return 0;
}

/* ---- contexts ---- */

struct store_ctx *store_ctx_new(int zstd_level)
{
    struct store_ctx *cx = calloc(1, sizeof(*cx));

    if (!cx)
        return NULL;
    cx->cctx = ZSTD_createCCtx();
    cx->dctx = ZSTD_createDCtx();
    cx->enc = malloc(STORE_ENCODED_MAX);
    cx->work = malloc(STORE_ENCODED_MAX);
    if (!cx->cctx || !cx->dctx || !cx->enc || !cx->work ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cx->cctx, ZSTD_c_compressionLevel, zstd_level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cx->cctx, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(cx->cctx, ZSTD_c_contentSizeFlag, 1)) ||
        ZSTD_isError(ZSTD_DCtx_setParameter(cx->dctx, ZSTD_d_windowLogMax, STORE_WINDOW_LOG_MAX))) {
        store_ctx_free(cx);
        return NULL;
    }
    return cx;
}

void store_ctx_free(struct store_ctx *cx)
{
    if (!cx)
        return;
    ZSTD_freeCCtx(cx->cctx);
    ZSTD_freeDCtx(cx->dctx);
    free(cx->enc);
    free(cx->work);
    free(cx->plain);
    free(cx);
}

/* ---- header ---- */

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;

    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

int store_header_parse(const uint8_t *enc, size_t n, struct store_header *ret)
{
    struct store_header h;
    size_t max;

    if (!enc || n < STORE_HEADER_LEN || memcmp(enc, STORE_MAGIC, 4) != 0)
        return -EBADMSG;
    h.version = enc[4];
    h.flags = enc[5];
    if (h.version != STORE_VERSION || !(h.flags & STORE_FLAG_ZSTD) ||
        (h.flags & ~(STORE_FLAG_ZSTD | STORE_FLAG_ENCRYPTED)) || enc[6] || enc[7])
        return -EBADMSG;
    h.plain_len = get_le32(enc + 8);
    h.payload_len = get_le32(enc + 12);
    memcpy(h.key_id, enc + 16, STORE_KEY_ID_LEN);
    if (h.plain_len == 0 || h.plain_len > STORE_CHUNK_SIZE || h.payload_len != n - STORE_HEADER_LEN)
        return -EBADMSG;
    max = ZSTD_COMPRESSBOUND(h.plain_len);
    if (h.flags & STORE_FLAG_ENCRYPTED) {
        max += STORE_AEAD_OVERHEAD;
        if (h.payload_len <= STORE_AEAD_OVERHEAD)
            return -EBADMSG;
    } else if (!all_zero(h.key_id, STORE_KEY_ID_LEN)) {
        return -EBADMSG;
    }
    if (h.payload_len > max)
        return -EBADMSG;
    *ret = h;
    return 0;
}

/* ---- encoding ---- */

static int zstd_errno(size_t r)
{
    return ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -ENOMEM : -EIO;
}

int store_chunk_encode(struct store_ctx *cx, const struct chunk_id *id, const struct store_key *key,
                       const void *data, size_t n, size_t *ret_n)
{
    uint8_t *hdr = cx->enc;
    /* A clear frame goes straight behind the header; one to be sealed goes to scratch first. */
    uint8_t *frame = key ? cx->work : cx->enc + STORE_HEADER_LEN;
    size_t z, payload;

    if (!id || !data || n == 0 || n > STORE_CHUNK_SIZE)
        return -EINVAL;
    z = ZSTD_compress2(cx->cctx, frame, ZSTD_COMPRESSBOUND(n), data, n);
    if (ZSTD_isError(z))
        return zstd_errno(z);
    payload = key ? z + STORE_AEAD_OVERHEAD : z;

    memcpy(hdr, STORE_MAGIC, 4);
    hdr[4] = STORE_VERSION;
    hdr[5] = (uint8_t)(STORE_FLAG_ZSTD | (key ? STORE_FLAG_ENCRYPTED : 0));
    hdr[6] = hdr[7] = 0;
    put_le32(hdr + 8, (uint32_t)n);
    put_le32(hdr + 12, (uint32_t)payload);
    if (key)
        memcpy(hdr + 16, key->key_id, STORE_KEY_ID_LEN);
    else
        memset(hdr + 16, 0, STORE_KEY_ID_LEN);

    if (key) {
        uint8_t aad[STORE_HEADER_LEN + STORE_ID_LEN];
        int rc;

        memcpy(aad, hdr, STORE_HEADER_LEN);
        memcpy(aad + STORE_HEADER_LEN, id->b, STORE_ID_LEN);
        rc = crypto_aead_seal(key->data_key, aad, sizeof(aad), frame, z, hdr + STORE_HEADER_LEN);
        /* The frame is the plaintext, compressed: it does not outlive the call. */
        crypto_wipe(frame, z);
        if (rc < 0)
            return rc;
    }
    *ret_n = STORE_HEADER_LEN + payload;
    return 0;
}

/* ---- decoding ---- */

/* Decompresses the zstd frame `f` (`flen` bytes) into exactly `plain` bytes of `out`. */
static int decode_frame(struct store_ctx *cx, const uint8_t *f, size_t flen, uint8_t *out,
                        size_t plain)
{
    size_t r;

    /* RFC 8878: magic, then the frame header descriptor, whose bit 2 is the content checksum
     * flag and bits 0-1 the size of a dictionary id.  Demand a checksum (corruption of a clear
     * chunk is found by it) and no dictionary. */
    if (flen < 5 || get_le32(f) != ZSTD_MAGICNUMBER || !(f[4] & 0x04) || (f[4] & 0x03))
        return -EBADMSG;
    if (ZSTD_getFrameContentSize(f, flen) != (unsigned long long)plain)
        return -EBADMSG;
    /* Exactly one frame: the one-shot decoder would happily decode a concatenation. */
    if (ZSTD_findFrameCompressedSize(f, flen) != flen)
        return -EBADMSG;
    r = ZSTD_decompressDCtx(cx->dctx, out, plain, f, flen);
    if (ZSTD_isError(r) || r != plain) {
        memset(out, 0, plain);
        ZSTD_DCtx_reset(cx->dctx, ZSTD_reset_session_only);
        return ZSTD_isError(r) && ZSTD_getErrorCode(r) == ZSTD_error_memory_allocation ? -ENOMEM
                                                                                       : -EBADMSG;
    }
    return 0;
}

int store_chunk_decode(struct store_ctx *cx, const struct chunk_id *id, const struct store_key *key,
                       const uint8_t *enc, size_t n, void *out, size_t *ret_n, unsigned flags)
{
    struct store_header h;
    const uint8_t *frame = enc + STORE_HEADER_LEN;
    size_t flen;
    int rc;

    rc = store_header_parse(enc, n, &h);
    if (rc < 0)
        return rc;
    flen = h.payload_len;
    if (h.flags & STORE_FLAG_ENCRYPTED) {
        uint8_t aad[STORE_HEADER_LEN + STORE_ID_LEN];

        if (!key || memcmp(key->key_id, h.key_id, STORE_KEY_ID_LEN) != 0)
            return -EACCES;
        memcpy(aad, enc, STORE_HEADER_LEN);
        memcpy(aad + STORE_HEADER_LEN, id->b, STORE_ID_LEN);
        rc = crypto_aead_open(key->data_key, aad, sizeof(aad), frame, flen, cx->work);
        if (rc < 0)
            return rc;
        frame = cx->work;
        flen -= STORE_AEAD_OVERHEAD;
    } else if (key) {
        return -EBADMSG;
    }

    rc = decode_frame(cx, frame, flen, out, h.plain_len);
    if (h.flags & STORE_FLAG_ENCRYPTED)
        crypto_wipe(cx->work, flen);
    if (rc < 0)
        return rc;

    if (flags & STORE_VERIFY) {
        struct chunk_id got;

        store_chunk_id(key, out, h.plain_len, &got);
        if (!crypto_memeq(got.b, id->b, STORE_ID_LEN)) {
            memset(out, 0, h.plain_len);
            return -EBADMSG;
        }
    }
    *ret_n = h.plain_len;
    return 0;
}
