/*
 * fuzz_store_chunk.c — fuzz target for the chunk codec: arbitrary bytes as a stored chunk, and
 * round trips with one corrupted byte, checking that decoding never returns wrong bytes.
 *
 * Input: a mode byte (mod 7), then
 *   modes 0-3: id (32 bytes) || encoded chunk — decoded without key (0, 2) or with the fuzz key
 *              (1, 3), with STORE_VERIFY in modes 2 and 3;
 *   modes 4-5: position (u16 LE) || xor byte || plaintext — encoded clear (4) or encrypted (5),
 *              the byte at position (mod length) xor-ed, decoded: it must fail, or give back
 *              exactly the plaintext (and must succeed when nothing was changed);
 *   mode 6:    plain length (u32 LE) || zstd frame — wrapped in a well-formed clear header, so
 *              that the frame checks and the decompressor see arbitrary frames.
 * Any violation aborts.
 *
 * With libFuzzer (clang 14 on Debian 12):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DSTORE_FUZZ_LIBFUZZER -D_GNU_SOURCE -Isrc \
 *       tests/fuzz/fuzz_store_chunk.c src/store/store_*.c src/crypto/crypto_core.c \
 *       src/util/util_*.c -lzstd -lcrypto -lpthread -o /tmp/fuzz_store_chunk
 *   /tmp/fuzz_store_chunk -max_len=4096 /tmp/corpus tests/fuzz/corpus/store
 * Without STORE_FUZZ_LIBFUZZER, main() replays the files and directories named on the command
 * line (the committed corpus is replayed that way as an ordinary test), and
 * `fuzz_store_chunk --write-corpus DIR` writes the seed corpus.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct store_key fuzz_key = {
    .key_id = "fuzz-key-id-0001",
    .id_key = "fuzz id key fuzz id key fuzz id",
    .data_key = "fuzz data key fuzz data key fuz",
};

static struct store_ctx *fuzz_cx;
static uint8_t fuzz_out[STORE_CHUNK_SIZE];

static struct store_ctx *cx_get(void)
{
    if (!fuzz_cx)
        fuzz_cx = store_ctx_new(1);
    if (!fuzz_cx)
        abort();
    return fuzz_cx;
}

static void decode_mode(unsigned mode, const uint8_t *p, size_t n)
{
    const struct store_key *key = mode & 1 ? &fuzz_key : NULL;
    unsigned flags = mode >= 2 ? STORE_VERIFY : 0;
    struct chunk_id id;
    size_t got = 0;
    int rc;

    if (n < STORE_ID_LEN)
        return;
    memcpy(id.b, p, STORE_ID_LEN);
    rc = store_chunk_decode(cx_get(), &id, key, p + STORE_ID_LEN, n - STORE_ID_LEN, fuzz_out, &got,
                            flags);
    if (rc == 0) {
        struct chunk_id again;

        if (got == 0 || got > STORE_CHUNK_SIZE)
            abort();
        if (flags & STORE_VERIFY) {
            store_chunk_id(key, fuzz_out, got, &again);
            if (memcmp(again.b, id.b, STORE_ID_LEN) != 0)
                abort();
        }
    } else if (rc != -EBADMSG && rc != -EACCES) {
        abort();
    }
}

static void roundtrip_mode(unsigned mode, const uint8_t *p, size_t n)
{
    const struct store_key *key = mode == 5 ? &fuzz_key : NULL;
    struct store_ctx *cx = cx_get();
    struct chunk_id id;
    uint8_t *enc;
    size_t pos, enc_n, got = 0;
    uint8_t x;
    int rc;

    if (n < 4)
        return;
    pos = (size_t)p[0] | (size_t)p[1] << 8;
    x = p[2];
    p += 3;
    n -= 3;
    if (n > STORE_CHUNK_SIZE)
        n = STORE_CHUNK_SIZE;
    store_chunk_id(key, p, n, &id);
    if (store_chunk_encode(cx, &id, key, p, n, &enc_n) != 0)
        abort();
    enc = malloc(enc_n);
    if (!enc)
        abort();
    memcpy(enc, cx->enc, enc_n);
    enc[pos % enc_n] ^= x;
    rc = store_chunk_decode(cx, &id, key, enc, enc_n, fuzz_out, &got, 0);
    if (rc == 0) {
        if (got != n || memcmp(fuzz_out, p, n) != 0)
            abort(); /* wrong bytes */
    } else if (x == 0) {
        abort(); /* a good chunk refused */
    } else if (rc != -EBADMSG && rc != -EACCES) {
        abort();
    }
    free(enc);
}

static void frame_mode(const uint8_t *p, size_t n)
{
    static uint8_t enc[STORE_ENCODED_MAX];
    struct chunk_id id = { { 0 } };
    size_t got = 0;
    int rc;

    if (n < 4 || n - 4 > STORE_ENCODED_MAX - STORE_HEADER_LEN)
        return;
    memset(enc, 0, STORE_HEADER_LEN);
    memcpy(enc, STORE_MAGIC "\1\1", 6);
    memcpy(enc + 8, p, 4);
    enc[12] = (uint8_t)(n - 4);
    enc[13] = (uint8_t)((n - 4) >> 8);
    enc[14] = (uint8_t)((n - 4) >> 16);
    memcpy(enc + STORE_HEADER_LEN, p + 4, n - 4);
    rc = store_chunk_decode(cx_get(), &id, NULL, enc, STORE_HEADER_LEN + n - 4, fuzz_out, &got, 0);
    if (rc == 0 && (got == 0 || got > STORE_CHUNK_SIZE))
        abort();
    if (rc != 0 && rc != -EBADMSG)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned mode;

    if (size < 1)
        return 0;
    mode = data[0] % 7;
    if (mode < 4)
        decode_mode(mode, data + 1, size - 1);
    else if (mode < 6)
        roundtrip_mode(mode, data + 1, size - 1);
    else
        frame_mode(data + 1, size - 1);
    return 0;
}

#ifndef STORE_FUZZ_LIBFUZZER
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;

    if (!f)
        return -errno;
    if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
        fclose(f);
        return -EIO;
    }
    buf = malloc(len ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        fclose(f);
        return -EIO;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

static int replay(const char *path, unsigned *count)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int r = 0;

    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode)) {
        r = replay_file(path);
        *count += r == 0;
        return r;
    }
    d = opendir(path);
    if (!d)
        return -errno;
    while (r == 0 && (e = readdir(d))) {
        char sub[4096];

        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        r = replay(sub, count);
    }
    closedir(d);
    return r;
}

static int write_seed(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    if (!f)
        return -errno;
    if (fwrite(p, 1, n, f) != n) {
        fclose(f);
        return -EIO;
    }
    return fclose(f) == 0 ? 0 : -EIO;
}

/* A decode seed: mode, id, the encoding of `plain`. */
static int seed_decode(const char *dir, const char *name, unsigned mode, const char *plain,
                       size_t n)
{
    const struct store_key *key = mode & 1 ? &fuzz_key : NULL;
    static uint8_t buf[1 + STORE_ID_LEN + STORE_ENCODED_MAX];
    struct chunk_id id;
    size_t enc_n;

    store_chunk_id(key, plain, n, &id);
    if (store_chunk_encode(cx_get(), &id, key, plain, n, &enc_n) != 0)
        return -EIO;
    buf[0] = (uint8_t)mode;
    memcpy(buf + 1, id.b, STORE_ID_LEN);
    memcpy(buf + 1 + STORE_ID_LEN, cx_get()->enc, enc_n);
    return write_seed(dir, name, buf, 1 + STORE_ID_LEN + enc_n);
}

static int write_corpus(const char *dir)
{
    static const char text[] = "snapshot volume image chunk snapshot volume image chunk "
                               "snapshot volume image chunk snapshot volume image chunk";
    static const uint8_t rt_clear[] = { 4,   40,  0,   0x01, 'h', 'e', 'l', 'l', 'o', ' ',
                                        'w', 'o', 'r', 'l',  'd', 'h', 'e', 'l', 'l', 'o' };
    static const uint8_t rt_enc[] = { 5, 7, 0, 0x80, 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', 'b' };
    static const uint8_t rt_same[] = { 4, 0, 0, 0, 'x', 'y', 'z' };
    uint8_t hdr[1 + STORE_ID_LEN + STORE_HEADER_LEN + 9] = { 0 };
    int rc = 0;

    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    rc = rc ? rc : seed_decode(dir, "clear_text", 0, text, sizeof(text) - 1);
    rc = rc ? rc : seed_decode(dir, "clear_one", 2, "A", 1);
    rc = rc ? rc : seed_decode(dir, "enc_text", 1, text, sizeof(text) - 1);
    rc = rc ? rc : seed_decode(dir, "enc_verify", 3, "0123456789abcdef", 16);
    rc = rc ? rc : write_seed(dir, "rt_clear", rt_clear, sizeof(rt_clear));
    rc = rc ? rc : write_seed(dir, "rt_enc", rt_enc, sizeof(rt_enc));
    rc = rc ? rc : write_seed(dir, "rt_same", rt_same, sizeof(rt_same));
    /* mode 6: the plain length and frame of a real clear chunk */
    if (rc == 0) {
        struct chunk_id id;
        size_t enc_n;
        static uint8_t fr[1 + STORE_ENCODED_MAX];

        store_chunk_id(NULL, text, sizeof(text) - 1, &id);
        if (store_chunk_encode(cx_get(), &id, NULL, text, sizeof(text) - 1, &enc_n) != 0)
            return -EIO;
        fr[0] = 6;
        memcpy(fr + 1, cx_get()->enc + 8, 4);
        memcpy(fr + 5, cx_get()->enc + STORE_HEADER_LEN, enc_n - STORE_HEADER_LEN);
        rc = write_seed(dir, "frame_text", fr, 5 + enc_n - STORE_HEADER_LEN);
    }
    /* a header with a tiny bogus payload, and nothing at all */
    memcpy(hdr + 1 + STORE_ID_LEN, "AMCK\1\1\0\0\5\0\0\0\11\0\0\0", 16);
    rc = rc ? rc : write_seed(dir, "bogus_payload", hdr, sizeof(hdr));
    rc = rc ? rc : write_seed(dir, "empty", hdr, 0);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned count = 0;

    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) {
        int r = write_corpus(argv[2]);

        if (r < 0)
            fprintf(stderr, "fuzz_store_chunk: %s: %s\n", argv[2], strerror(-r));
        store_ctx_free(fuzz_cx);
        return r < 0;
    }
    for (int i = 1; i < argc; i++) {
        int r = replay(argv[i], &count);

        if (r < 0) {
            fprintf(stderr, "fuzz_store_chunk: %s: %s\n", argv[i], strerror(-r));
            return 1;
        }
    }
    store_ctx_free(fuzz_cx);
    if (count == 0) {
        fprintf(stderr, "fuzz_store_chunk: no inputs replayed\n");
        return 1;
    }
    printf("fuzz_store_chunk: replayed %u inputs\n", count);
    return 0;
}
#endif
