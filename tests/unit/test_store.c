/*
 * test_store.c — the chunk store: ids, the codec's round trips, deduplication, encryption,
 * corruption of every kind (never wrong bytes), raw copies between stores, batches and their
 * temporaries, maintenance, concurrent writers and a full disk (a small tmpfs, when mounting is
 * permitted).
 *
 * Each test works in a fresh directory under $TMPDIR (or /tmp), removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

#define CHUNK STORE_CHUNK_SIZE

struct fx {
    char dir[PATH_MAX];   /* the test's scratch directory */
    char store[PATH_MAX]; /* dir/store */
    struct store *s;
};

/* ---- helpers ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    /* xorshift64*: fast and reproducible */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

static void fill_random(void *buf, size_t n)
{
    uint8_t *p = buf;

    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng();

        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

static void fill_text(void *buf, size_t n, unsigned seed)
{
    static const char *const words[] = { "volume ", "snapshot ", "chunk ", "image ",
                                         "region ", "zstd ",     "block ", "\n" };
    char *p = buf;
    size_t i = 0;

    while (i < n) {
        const char *w = words[(seed >> 16) % ARRAY_SIZE(words)];
        size_t l = strlen(w);

        if (l > n - i)
            l = n - i;
        memcpy(p + i, w, l);
        i += l;
        seed = seed * 1103515245u + 12345u;
    }
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "%s/test_store.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    /* A path with missing parents: store_open_local creates them. */
    snprintf(f->store, sizeof(f->store), "%s/a/b/store", f->dir);
    assert_int_equal(store_open_local(f->store, NULL, &f->s), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    store_close(f->s);
    rm_rf(f->dir);
    free(f);
    return 0;
}

/* Puts `n` bytes in a batch of its own and commits; returns the bytes stored. */
static size_t put_one(struct store *s, const struct store_key *key, const void *data, size_t n,
                      struct chunk_id *ret_id)
{
    struct store_batch *b;
    size_t stored = 12345;

    store_chunk_id(key, data, n, ret_id);
    assert_int_equal(store_batch_new(s, &b), 0);
    assert_int_equal(store_put(s, b, ret_id, key, data, n, &stored), 0);
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);
    return stored;
}

static void chunk_file(const struct fx *f, const struct chunk_id *id, char *out, size_t outlen)
{
    char hex[65];

    chunk_id_hex(id, hex);
    snprintf(out, outlen, "%s/chunks/%.2s/%s", f->store, hex, hex);
}

static uint8_t *read_file(const char *path, size_t *ret_n)
{
    struct stat st;
    uint8_t *p;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    p = malloc((size_t)st.st_size + 1);
    assert_non_null(p);
    assert_int_equal(read(fd, p, (size_t)st.st_size), st.st_size);
    close(fd);
    *ret_n = (size_t)st.st_size;
    return p;
}

static void write_file(const char *path, const void *p, size_t n)
{
    int fd;

    chmod(path, 0644);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, p, n), (ssize_t)n);
    close(fd);
}

static int count_entries(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int tmp_count(const struct fx *f)
{
    char p[PATH_MAX];

    snprintf(p, sizeof(p), "%s/tmp", f->store);
    return count_entries(p);
}

static int count_cb(void *ctx, const struct store_chunk_info *c)
{
    (void)c;
    (*(int *)ctx)++;
    return 0;
}

static int chunk_count(struct store *s)
{
    int n = 0;

    assert_int_equal(store_each(s, count_cb, &n), 0);
    return n;
}

static void make_key(struct store_key *k, uint8_t seed)
{
    memset(k->key_id, seed, sizeof(k->key_id));
    memset(k->id_key, seed + 1, sizeof(k->id_key));
    memset(k->data_key, seed + 2, sizeof(k->data_key));
}

/* ---- ids ---- */

static void test_ids(void **state)
{
    static const char abc_sha[] =
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    struct chunk_id id, id2;
    char hex[65];
    uint8_t *z = calloc(1, CHUNK + 1);

    (void)state;
    assert_non_null(z);
    store_chunk_id(NULL, "abc", 3, &id);
    chunk_id_hex(&id, hex);
    assert_string_equal(hex, abc_sha);
    assert_int_equal(chunk_id_parse(hex, &id2), 0);
    assert_memory_equal(id.b, id2.b, STORE_ID_LEN);

    /* Only the canonical spelling parses. */
    assert_int_equal(chunk_id_parse(NULL, &id2), -EINVAL);
    assert_int_equal(chunk_id_parse("", &id2), -EINVAL);
    assert_int_equal(chunk_id_parse("ba7816bf", &id2), -EINVAL);
    hex[0] = 'B';
    assert_int_equal(chunk_id_parse(hex, &id2), -EINVAL);
    hex[0] = 'g';
    assert_int_equal(chunk_id_parse(hex, &id2), -EINVAL);
    {
        char longer[70];

        snprintf(longer, sizeof(longer), "%sa", abc_sha);
        assert_int_equal(chunk_id_parse(longer, &id2), -EINVAL);
    }

    /* The zero test, at and around the word and page sizes, with the one non-zero byte at the
     * edges. */
    static const size_t sizes[] = {
        0, 1, 7, 8, 9, 4095, 4096, 4097, 8191, 65536, CHUNK, CHUNK + 1
    };
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        size_t n = sizes[i];

        assert_true(store_is_zero(z, n));
        if (n == 0)
            continue;
        z[0] = 1;
        assert_false(store_is_zero(z, n));
        z[0] = 0;
        z[n - 1] = 0x80;
        assert_false(store_is_zero(z, n));
        z[n - 1] = 0;
        z[n / 2] = 2;
        assert_false(store_is_zero(z, n));
        z[n / 2] = 0;
    }
    /* Unaligned start. */
    z[4099] = 1;
    assert_false(store_is_zero(z + 3, 8000));
    assert_true(store_is_zero(z + 4100, 8000));
    free(z);
}

static void test_keyed_ids(void **state)
{
    struct store_key k1, k2;
    struct chunk_id clear, a, b, a2;
    uint8_t data[1000];

    (void)state;
    make_key(&k1, 1);
    make_key(&k2, 50);
    fill_random(data, sizeof(data));
    store_chunk_id(NULL, data, sizeof(data), &clear);
    store_chunk_id(&k1, data, sizeof(data), &a);
    store_chunk_id(&k1, data, sizeof(data), &a2);
    store_chunk_id(&k2, data, sizeof(data), &b);
    assert_memory_equal(a.b, a2.b, STORE_ID_LEN);
    assert_memory_not_equal(a.b, clear.b, STORE_ID_LEN);
    assert_memory_not_equal(a.b, b.b, STORE_ID_LEN);
    assert_memory_not_equal(b.b, clear.b, STORE_ID_LEN);
}

/* ---- round trips ---- */

static void roundtrip(struct fx *f, const struct store_key *key, const uint8_t *data, size_t n,
                      bool expect_small)
{
    uint8_t *out = malloc(CHUNK);
    struct chunk_id id;
    struct store_chunk_info info;
    size_t stored, got = 0;

    assert_non_null(out);
    stored = put_one(f->s, key, data, n, &id);
    assert_true(stored > STORE_HEADER_LEN);
    if (expect_small)
        assert_true(stored < n / 4);
    else
        assert_true(stored <= STORE_HEADER_LEN + n + n / 128 + 64 + STORE_AEAD_OVERHEAD);
    assert_int_equal(store_has(f->s, &id), 0);
    assert_int_equal(store_stat(f->s, &id, &info), 0);
    assert_int_equal(info.stored_bytes, stored);

    memset(out, 0xaa, CHUNK);
    assert_int_equal(store_get(f->s, &id, key, out, &got, 0), 0);
    assert_int_equal(got, n);
    assert_memory_equal(out, data, n);
    memset(out, 0xaa, CHUNK);
    assert_int_equal(store_get(f->s, &id, key, out, &got, STORE_VERIFY), 0);
    assert_int_equal(got, n);
    assert_memory_equal(out, data, n);
    free(out);
}

static void test_roundtrip(void **state)
{
    struct fx *f = *state;
    uint8_t *data = malloc(CHUNK);
    static const size_t odd[] = { 1, 2, 1000, 4097, 131071, 131072, 131073, CHUNK - 1 };

    assert_non_null(data);
    fill_random(data, CHUNK);
    roundtrip(f, NULL, data, CHUNK, false);
    fill_text(data, CHUNK, 1);
    roundtrip(f, NULL, data, CHUNK, true);
    /* zero-ish: one byte set at the very end */
    memset(data, 0, CHUNK);
    data[CHUNK - 1] = 1;
    roundtrip(f, NULL, data, CHUNK, true);
    data[0] = 0x5a;
    roundtrip(f, NULL, data, 1, false);
    for (size_t i = 0; i < ARRAY_SIZE(odd); i++) {
        fill_random(data, odd[i]);
        roundtrip(f, NULL, data, odd[i], false);
    }
    assert_int_equal(chunk_count(f->s), 4 + (int)ARRAY_SIZE(odd));
    assert_int_equal(tmp_count(f), 0);
    free(data);
}

static void test_levels(void **state)
{
    struct fx *f = *state;
    struct store_opts o = { .zstd_level = 19 };
    struct store *s2;
    uint8_t *data = malloc(CHUNK), *out = malloc(CHUNK);
    struct chunk_id id;
    size_t n;

    assert_non_null(data);
    assert_non_null(out);
    o.zstd_level = 100;
    assert_int_equal(store_open_local(f->store, &o, &s2), -EINVAL);
    o.zstd_level = 19;
    assert_int_equal(store_open_local(f->store, &o, &s2), 0);
    fill_text(data, CHUNK, 9);
    assert_true(put_one(s2, NULL, data, CHUNK, &id) < CHUNK / 4);
    /* Readable by a store opened with another level. */
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data, CHUNK);
    store_close(s2);
    free(data);
    free(out);
}

static void test_args(void **state)
{
    struct fx *f = *state;
    struct store *s2;
    struct store_batch *b, *b2;
    struct chunk_id id;
    struct store_chunk_info info;
    uint8_t data[64] = { 1 }, *buf = malloc(CHUNK), *raw;
    size_t n, stored = 77;
    char other[PATH_MAX];

    assert_non_null(buf);
    snprintf(other, sizeof(other), "%s/other", f->dir);
    assert_int_equal(store_open_local(other, NULL, &s2), 0);
    assert_int_equal(store_batch_new(f->s, &b), 0);
    assert_int_equal(store_batch_new(s2, &b2), 0);
    store_chunk_id(NULL, data, sizeof(data), &id);

    assert_int_equal(store_put(f->s, b2, &id, NULL, data, sizeof(data), NULL), -EINVAL);
    assert_int_equal(store_put(f->s, b, &id, NULL, data, 0, NULL), -EINVAL);
    assert_int_equal(store_put(f->s, b, &id, NULL, buf, CHUNK + 1, NULL), -EINVAL);
    memset(buf, 0, CHUNK);
    assert_int_equal(store_put(f->s, b, &id, NULL, buf, CHUNK, &stored), -EINVAL);
    assert_int_equal(stored, 77); /* untouched on failure */
    assert_int_equal(store_get(f->s, &id, NULL, buf, &n, 0x80), -EINVAL);

    assert_int_equal(store_get(f->s, &id, NULL, buf, &n, 0), -ENOENT);
    assert_int_equal(store_has(f->s, &id), -ENOENT);
    assert_int_equal(store_stat(f->s, &id, &info), -ENOENT);
    assert_int_equal(store_delete(f->s, &id), -ENOENT);
    assert_int_equal(store_get_raw(f->s, &id, &raw, &n), -ENOENT);

    /* An empty batch commits. */
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);
    store_batch_free(b2);
    store_batch_free(NULL);
    store_close(s2);
    store_close(NULL);
    free(buf);
}

/* ---- deduplication ---- */

static void test_dedup(void **state)
{
    struct fx *f = *state;
    uint8_t *data = malloc(CHUNK);
    struct store_batch *b;
    struct chunk_id id, id2;
    size_t stored;

    assert_non_null(data);
    fill_random(data, CHUNK);
    assert_true(put_one(f->s, NULL, data, CHUNK, &id) > CHUNK);
    assert_int_equal(put_one(f->s, NULL, data, CHUNK, &id), 0);

    /* Twice in one batch: written once. */
    fill_random(data, CHUNK);
    store_chunk_id(NULL, data, CHUNK, &id2);
    assert_int_equal(store_batch_new(f->s, &b), 0);
    assert_int_equal(store_put(f->s, b, &id2, NULL, data, CHUNK, &stored), 0);
    assert_true(stored > CHUNK);
    /* Not visible before the commit. */
    assert_int_equal(store_has(f->s, &id2), -ENOENT);
    assert_int_equal(store_put(f->s, b, &id2, NULL, data, CHUNK, &stored), 0);
    assert_int_equal(stored, 0);
    /* An existing chunk in a batch. */
    assert_int_equal(store_put(f->s, b, &id, NULL, data, CHUNK, &stored), 0);
    assert_int_equal(stored, 0);
    assert_int_equal(store_batch_commit(b), 0);
    /* The batch is reusable after commit. */
    assert_int_equal(store_put(f->s, b, &id2, NULL, data, CHUNK, &stored), 0);
    assert_int_equal(stored, 0);
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);

    assert_int_equal(chunk_count(f->s), 2);
    assert_int_equal(tmp_count(f), 0);
    free(data);
}

/* Two stores on one directory stage the same new chunk; both commits succeed, one file stays. */
static void test_same_chunk_two_writers(void **state)
{
    struct fx *f = *state;
    struct store *s2;
    struct store_batch *b1, *b2;
    uint8_t data[5000], out[5000];
    struct chunk_id id;
    size_t st1, st2, n;

    fill_random(data, sizeof(data));
    store_chunk_id(NULL, data, sizeof(data), &id);
    assert_int_equal(store_open_local(f->store, NULL, &s2), 0);
    assert_int_equal(store_batch_new(f->s, &b1), 0);
    assert_int_equal(store_batch_new(s2, &b2), 0);
    assert_int_equal(store_put(f->s, b1, &id, NULL, data, sizeof(data), &st1), 0);
    assert_int_equal(store_put(s2, b2, &id, NULL, data, sizeof(data), &st2), 0);
    assert_true(st1 > 0 && st2 > 0);
    assert_int_equal(store_batch_commit(b1), 0);
    assert_int_equal(store_batch_commit(b2), 0);
    store_batch_free(b1);
    store_batch_free(b2);
    assert_int_equal(chunk_count(f->s), 1);
    assert_int_equal(tmp_count(f), 0);
    assert_int_equal(store_get(s2, &id, NULL, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data, sizeof(data));
    store_close(s2);
}

/* ---- encryption ---- */

static void test_encrypted(void **state)
{
    struct fx *f = *state;
    struct store_key k, other_id, wrong_data;
    uint8_t *data = malloc(CHUNK), *out = malloc(CHUNK), *raw;
    struct chunk_id id, clear_id;
    size_t n, raw_n, stored;
    char path[PATH_MAX];

    assert_non_null(data);
    assert_non_null(out);
    make_key(&k, 7);
    other_id = k;
    other_id.key_id[3] ^= 1;
    wrong_data = k;
    wrong_data.data_key[31] ^= 1;

    fill_text(data, CHUNK, 3);
    roundtrip(f, &k, data, CHUNK, true);
    fill_random(data, CHUNK);
    roundtrip(f, &k, data, CHUNK, false);
    data[0] = 9;
    roundtrip(f, &k, data, 1, false);

    fill_text(data, CHUNK, 4);
    stored = put_one(f->s, &k, data, CHUNK, &id);
    assert_true(stored > 0);
    /* Same plaintext in the clear: another id, another chunk. */
    assert_true(put_one(f->s, NULL, data, CHUNK, &clear_id) > 0);
    assert_memory_not_equal(id.b, clear_id.b, STORE_ID_LEN);

    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EACCES);
    assert_int_equal(store_get(f->s, &id, &other_id, out, &n, 0), -EACCES);
    assert_int_equal(store_get(f->s, &id, &wrong_data, out, &n, 0), -EBADMSG);
    /* A clear chunk read in an encryption domain is a substitution. */
    assert_int_equal(store_get(f->s, &clear_id, &k, out, &n, 0), -EBADMSG);
    assert_int_equal(store_get(f->s, &id, &k, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data, CHUNK);

    /* The file holds no plaintext: neither the text nor its compressed form's repeats. */
    chunk_file(f, &id, path, sizeof(path));
    raw = read_file(path, &raw_n);
    assert_int_equal(raw[5], STORE_FLAG_ZSTD | STORE_FLAG_ENCRYPTED);
    assert_memory_equal(raw + 16, k.key_id, STORE_KEY_ID_LEN);
    assert_null(memmem(raw, raw_n, "snapshot", 8));
    assert_null(memmem(raw, raw_n, "volume", 6));
    free(raw);
    free(data);
    free(out);
}

/* Two encodings of the same chunk differ (fresh nonce) and both decode. */
static void test_nonce_fresh(void **state)
{
    struct fx *f = *state;
    struct store_key k;
    struct store_ctx *cx = store_ctx_new(1);
    uint8_t data[3000], *a, out[3000];
    struct chunk_id id;
    size_t na, nb, n;

    (void)f;
    assert_non_null(cx);
    make_key(&k, 21);
    fill_text(data, sizeof(data), 5);
    store_chunk_id(&k, data, sizeof(data), &id);
    assert_int_equal(store_chunk_encode(cx, &id, &k, data, sizeof(data), &na), 0);
    a = malloc(na);
    assert_non_null(a);
    memcpy(a, cx->enc, na);
    assert_int_equal(store_chunk_encode(cx, &id, &k, data, sizeof(data), &nb), 0);
    assert_int_equal(na, nb);
    assert_memory_not_equal(a + STORE_HEADER_LEN, cx->enc + STORE_HEADER_LEN, 12);
    assert_int_equal(store_chunk_decode(cx, &id, &k, a, na, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data, sizeof(data));
    free(a);
    store_ctx_free(cx);
}

/* ---- corruption ---- */

/* Every single-bit flip of a chunk's encoding is refused or decodes to the exact original. */
static void flip_every_bit(const struct store_key *key, bool must_fail)
{
    struct store_ctx *cx = store_ctx_new(1);
    uint8_t data[700], *enc, *out = malloc(CHUNK);
    struct chunk_id id;
    size_t n, got;

    assert_non_null(cx);
    assert_non_null(out);
    fill_text(data, sizeof(data), 11);
    fill_random(data + 300, 50);
    store_chunk_id(key, data, sizeof(data), &id);
    assert_int_equal(store_chunk_encode(cx, &id, key, data, sizeof(data), &n), 0);
    enc = malloc(n);
    assert_non_null(enc);
    memcpy(enc, cx->enc, n);
    for (size_t i = 0; i < n * 8; i++) {
        int rc;

        enc[i / 8] ^= (uint8_t)(1u << (i % 8));
        rc = store_chunk_decode(cx, &id, key, enc, n, out, &got, 0);
        enc[i / 8] ^= (uint8_t)(1u << (i % 8));
        if (rc == 0) {
            assert_false(must_fail);
            assert_int_equal(got, sizeof(data));
            assert_memory_equal(out, data, sizeof(data));
        } else if (rc == -EACCES) {
            /* a flipped key id or encryption flag */
            assert_true(i / 8 == 5 || (i / 8 >= 16 && i / 8 < 32));
        } else {
            assert_int_equal(rc, -EBADMSG);
        }
    }
    /* Truncations and extensions. */
    for (size_t len = 0; len < n; len += (len < 40 ? 1 : 37))
        assert_int_equal(store_chunk_decode(cx, &id, key, enc, len, out, &got, 0), -EBADMSG);
    free(enc);
    free(out);
    store_ctx_free(cx);
}

static void test_bitflips(void **state)
{
    struct store_key k;

    (void)state;
    flip_every_bit(NULL, false);
    make_key(&k, 33);
    flip_every_bit(&k, true);
}

static void test_corrupt_files(void **state)
{
    struct fx *f = *state;
    uint8_t *data = malloc(CHUNK), *out = malloc(CHUNK), *orig, *bad;
    struct chunk_id id, id2;
    struct store_key k;
    size_t n, on;
    char path[PATH_MAX], path2[PATH_MAX];

    assert_non_null(data);
    assert_non_null(out);
    fill_text(data, CHUNK, 17);
    put_one(f->s, NULL, data, CHUNK, &id);
    chunk_file(f, &id, path, sizeof(path));
    orig = read_file(path, &on);
    bad = malloc(on + 1);
    assert_non_null(bad);

    /* a byte of the payload: first, middle, the checksum at the end */
    static const size_t payload_at[] = { 0, 1, 4, 10, 100, 1000 };
    for (size_t i = 0; i < ARRAY_SIZE(payload_at) + 2; i++) {
        size_t at = i < ARRAY_SIZE(payload_at)    ? STORE_HEADER_LEN + payload_at[i]
                    : i == ARRAY_SIZE(payload_at) ? on / 2
                                                  : on - 1;

        assert_true(at < on);

        memcpy(bad, orig, on);
        bad[at] ^= 0x40;
        write_file(path, bad, on);
        assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    }
    /* every byte of the header */
    for (size_t at = 0; at < STORE_HEADER_LEN; at++) {
        memcpy(bad, orig, on);
        bad[at] ^= 0xff;
        write_file(path, bad, on);
        assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    }
    /* truncated, empty, extended */
    write_file(path, orig, on - 1);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    write_file(path, orig, 10);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    write_file(path, orig, 0);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    memcpy(bad, orig, on);
    bad[on] = 0;
    write_file(path, bad, on + 1);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), -EBADMSG);
    /* restored: good again */
    write_file(path, orig, on);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data, CHUNK);

    /* A valid encoding of other data in its place: only STORE_VERIFY can tell. */
    fill_random(data, 9000);
    put_one(f->s, NULL, data, 9000, &id2);
    chunk_file(f, &id2, path2, sizeof(path2));
    free(bad);
    bad = read_file(path2, &n);
    write_file(path, bad, n);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, 0), 0);
    memset(out, 0, CHUNK);
    assert_int_equal(store_get(f->s, &id, NULL, out, &n, STORE_VERIFY), -EBADMSG);
    assert_true(store_is_zero(out, CHUNK)); /* no bytes of the wrong data left behind */
    free(bad);

    /* Encrypted chunks are bound to their id: a swap fails even without STORE_VERIFY. */
    make_key(&k, 70);
    fill_text(data, CHUNK, 18);
    put_one(f->s, &k, data, CHUNK, &id);
    fill_text(data, CHUNK, 19);
    put_one(f->s, &k, data, CHUNK, &id2);
    chunk_file(f, &id, path, sizeof(path));
    chunk_file(f, &id2, path2, sizeof(path2));
    bad = read_file(path2, &n);
    write_file(path, bad, n);
    assert_int_equal(store_get(f->s, &id, &k, out, &n, 0), -EBADMSG);
    free(bad);

    /* Not a regular file. */
    unlink(path);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(store_has(f->s, &id), -ENOENT);
    assert_int_not_equal(store_get(f->s, &id, &k, out, &n, 0), 0);
    rmdir(path);
    free(orig);
    free(data);
    free(out);
}

/* ---- raw copies ---- */

static void test_raw_copy(void **state)
{
    struct fx *f = *state;
    struct store *s2;
    struct store_batch *b;
    struct store_key k;
    uint8_t *data = malloc(CHUNK), *out = malloc(CHUNK), *raw, *raw2;
    struct chunk_id cid, eid, wrong;
    size_t n, n2, stored;
    char other[PATH_MAX];

    assert_non_null(data);
    assert_non_null(out);
    make_key(&k, 90);
    snprintf(other, sizeof(other), "%s/region2", f->dir);
    assert_int_equal(store_open_local(other, NULL, &s2), 0);
    fill_text(data, CHUNK, 30);
    put_one(f->s, NULL, data, CHUNK, &cid);
    put_one(f->s, &k, data, CHUNK, &eid);

    assert_int_equal(store_batch_new(s2, &b), 0);
    assert_int_equal(store_get_raw(f->s, &cid, &raw, &n), 0);
    assert_int_equal(store_put_raw(s2, b, &cid, NULL, raw, n, &stored), 0);
    assert_int_equal(stored, n);
    assert_int_equal(store_get_raw(f->s, &eid, &raw2, &n2), 0);
    /* encrypted: needs the key to verify */
    assert_int_equal(store_put_raw(s2, b, &eid, NULL, raw2, n2, &stored), -EACCES);
    assert_int_equal(store_put_raw(s2, b, &eid, &k, raw2, n2, &stored), 0);
    assert_int_equal(stored, n2);

    /* content that does not match the claimed id */
    fill_random(data, 100);
    store_chunk_id(NULL, data, 100, &wrong);
    assert_int_equal(store_put_raw(s2, b, &wrong, NULL, raw, n, &stored), -EBADMSG);
    assert_int_equal(store_put_raw(s2, b, &wrong, &k, raw2, n2, &stored), -EBADMSG);
    /* corrupted or truncated blobs */
    raw[n / 2] ^= 1;
    assert_int_equal(store_put_raw(s2, b, &cid, NULL, raw, n, &stored), -EBADMSG);
    raw[n / 2] ^= 1;
    assert_int_equal(store_put_raw(s2, b, &cid, NULL, raw, n - 1, &stored), -EBADMSG);
    assert_int_equal(store_put_raw(s2, b, &cid, NULL, raw, 3, &stored), -EBADMSG);
    assert_int_equal(store_batch_commit(b), 0);

    /* again: deduplicated */
    assert_int_equal(store_put_raw(s2, b, &cid, NULL, raw, n, &stored), 0);
    assert_int_equal(stored, 0);
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);

    assert_int_equal(store_has(s2, &wrong), -ENOENT);
    assert_int_equal(chunk_count(s2), 2);
    fill_text(data, CHUNK, 30);
    assert_int_equal(store_get(s2, &cid, NULL, out, &n2, STORE_VERIFY), 0);
    assert_memory_equal(out, data, CHUNK);
    assert_int_equal(store_get(s2, &eid, &k, out, &n2, STORE_VERIFY), 0);
    assert_memory_equal(out, data, CHUNK);
    /* the copy is byte for byte the source */
    free(raw2);
    assert_int_equal(store_get_raw(s2, &cid, &raw2, &n2), 0);
    assert_int_equal(n2, n);
    assert_memory_equal(raw2, raw, n);
    free(raw);
    free(raw2);
    store_close(s2);
    free(data);
    free(out);
}

/* ---- batches and temporaries ---- */

static void test_batch_discard(void **state)
{
    struct fx *f = *state;
    struct store_batch *b;
    uint8_t data[10000];
    struct chunk_id ids[3];

    assert_int_equal(store_batch_new(f->s, &b), 0);
    for (int i = 0; i < 3; i++) {
        fill_random(data, sizeof(data));
        store_chunk_id(NULL, data, sizeof(data), &ids[i]);
        assert_int_equal(store_put(f->s, b, &ids[i], NULL, data, sizeof(data), NULL), 0);
    }
    assert_int_equal(tmp_count(f), 3);
    store_batch_free(b);
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_has(f->s, &ids[i]), -ENOENT);
    assert_int_equal(chunk_count(f->s), 0);
    assert_int_equal(tmp_count(f), 0);
}

/* A rename that fails midway: the chunks renamed before stay (complete, never removed again),
 * the rest are not visible, and no temporary is left. */
static void test_commit_fails_midway(void **state)
{
    struct fx *f = *state;
    struct store_batch *b;
    uint8_t data[3][4000], out[4000];
    struct chunk_id ids[3];
    char hex[65], p[PATH_MAX], q[PATH_MAX];
    size_t n;

    /* three chunks in three different fanout directories */
    for (int i = 0; i < 3; i++) {
        do {
            fill_random(data[i], sizeof(data[i]));
            store_chunk_id(NULL, data[i], sizeof(data[i]), &ids[i]);
        } while ((i > 0 && ids[i].b[0] == ids[0].b[0]) || (i > 1 && ids[i].b[0] == ids[1].b[0]));
    }
    assert_int_equal(store_batch_new(f->s, &b), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_put(f->s, b, &ids[i], NULL, data[i], sizeof(data[i]), NULL), 0);
    /* the second one's directory vanishes */
    chunk_id_hex(&ids[1], hex);
    snprintf(p, sizeof(p), "%s/chunks/%.2s", f->store, hex);
    snprintf(q, sizeof(q), "%s/chunks/moved", f->store);
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(store_batch_commit(b), -EIO);
    assert_int_equal(rename(q, p), 0);

    assert_int_equal(store_get(f->s, &ids[0], NULL, out, &n, STORE_VERIFY), 0);
    assert_memory_equal(out, data[0], sizeof(data[0]));
    assert_int_equal(store_has(f->s, &ids[1]), -ENOENT);
    assert_int_equal(store_has(f->s, &ids[2]), -ENOENT);
    assert_int_equal(tmp_count(f), 0);

    /* The batch is empty and usable again. */
    assert_int_equal(store_put(f->s, b, &ids[1], NULL, data[1], sizeof(data[1]), NULL), 0);
    assert_int_equal(store_batch_commit(b), 0);
    assert_int_equal(store_get(f->s, &ids[1], NULL, out, &n, STORE_VERIFY), 0);
    store_batch_free(b);
}

/* More puts in one batch than it keeps files open. */
static void test_big_batch(void **state)
{
    struct fx *f = *state;
    struct store_batch *b;
    uint8_t data[3000], out[3000];
    struct chunk_id ids[300];
    size_t n;

    assert_int_equal(store_batch_new(f->s, &b), 0);
    for (int i = 0; i < 300; i++) {
        fill_random(data, sizeof(data));
        store_chunk_id(NULL, data, sizeof(data), &ids[i]);
        assert_int_equal(store_put(f->s, b, &ids[i], NULL, data, sizeof(data), NULL), 0);
    }
    assert_int_equal(store_batch_commit(b), 0);
    store_batch_free(b);
    assert_int_equal(chunk_count(f->s), 300);
    assert_int_equal(tmp_count(f), 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(store_get(f->s, &ids[i], NULL, out, &n, STORE_VERIFY), 0);
}

static void test_tmp_cleanup(void **state)
{
    struct fx *f = *state;
    char p[PATH_MAX];
    struct store *s2;
    int fd;

    snprintf(p, sizeof(p), "%s/tmp/%064d.123.4", f->store, 0);
    fd = open(p, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "AMCK", 4), 4);
    close(fd);
    snprintf(p, sizeof(p), "%s/tmp/junk", f->store);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    snprintf(p, sizeof(p), "%s/tmp/emptydir", f->store);
    assert_int_equal(mkdir(p, 0755), 0);
    assert_int_equal(tmp_count(f), 3);

    /* While the store is open elsewhere its temporaries may be in use: kept. */
    assert_int_equal(store_open_local(f->store, NULL, &s2), 0);
    assert_int_equal(tmp_count(f), 3);
    store_close(s2);

    /* The only opener removes them. */
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(store_open_local(f->store, NULL, &f->s), 0);
    assert_int_equal(tmp_count(f), 0);
}

/* ---- maintenance ---- */

struct each_ctx {
    struct chunk_id ids[20];
    bool seen[20];
    int n, calls;
    uint64_t bytes;
};

static int each_cb(void *ctx, const struct store_chunk_info *c)
{
    struct each_ctx *e = ctx;

    e->n++;
    e->bytes += c->stored_bytes;
    for (int i = 0; i < 20; i++) {
        if (memcmp(e->ids[i].b, c->id.b, STORE_ID_LEN) == 0) {
            assert_false(e->seen[i]);
            e->seen[i] = true;
        }
    }
    return 0;
}

static int stop_cb(void *ctx, const struct store_chunk_info *c)
{
    (void)c;
    (*(int *)ctx)++;
    return 7;
}

static void test_each_stat_delete(void **state)
{
    struct fx *f = *state;
    struct each_ctx e = { 0 };
    struct store_chunk_info info;
    uint8_t data[2000];
    char p[PATH_MAX], hex[65];
    int64_t now = time_now_ms();
    uint64_t total = 0;
    int calls = 0;

    for (int i = 0; i < 20; i++) {
        fill_random(data, sizeof(data));
        total += put_one(f->s, NULL, data, sizeof(data), &e.ids[i]);
    }
    /* Things that are not chunks. */
    chunk_id_hex(&e.ids[0], hex);
    snprintf(p, sizeof(p), "%s/chunks/%.2s/README", f->store, hex);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    hex[10] = 'A';
    snprintf(p, sizeof(p), "%s/chunks/%.2s/%s", f->store, hex, hex);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    chunk_id_hex(&e.ids[0], hex);
    snprintf(p, sizeof(p), "%s/chunks/%s/%s", f->store, hex[0] == '0' ? "11" : "00", hex);
    close(open(p, O_WRONLY | O_CREAT, 0644));
    snprintf(p, sizeof(p), "%s/chunks/zz", f->store);
    mkdir(p, 0755);

    assert_int_equal(store_each(f->s, each_cb, &e), 0);
    assert_int_equal(e.n, 20);
    assert_int_equal(e.bytes, total);
    for (int i = 0; i < 20; i++)
        assert_true(e.seen[i]);

    assert_int_equal(store_stat(f->s, &e.ids[3], &info), 0);
    assert_memory_equal(info.id.b, e.ids[3].b, STORE_ID_LEN);
    assert_true(info.stored_bytes > STORE_HEADER_LEN);
    assert_true(info.mtime_ms >= now - 2000 && info.mtime_ms <= time_now_ms() + 2000);

    for (int i = 0; i < 5; i++) {
        assert_int_equal(store_delete(f->s, &e.ids[i]), 0);
        assert_int_equal(store_delete(f->s, &e.ids[i]), -ENOENT);
        assert_int_equal(store_has(f->s, &e.ids[i]), -ENOENT);
        assert_int_equal(store_stat(f->s, &e.ids[i], &info), -ENOENT);
    }
    assert_int_equal(chunk_count(f->s), 15);
    assert_int_equal(store_each(f->s, stop_cb, &calls), 7);
    assert_int_equal(calls, 1);
}

/* A put that deduplicates against an existing chunk sets the chunk's mtime to now, so that gc's
 * grace period covers the reference the caller is about to make to an old, unreferenced chunk;
 * a chunk freed between the put's look-up and that refresh is written anew. */
static void test_dedup_refreshes_mtime(void **state)
{
    struct fx *f = *state;
    const struct timespec old[2] = { { 1000000000, 0 }, { 1000000000, 0 } }; /* 2001 */
    struct store_chunk_info info;
    struct store_backend *be;
    struct store_backend_batch *bb;
    struct chunk_id id, gone;
    uint8_t data[3000], back[CHUNK];
    char p[PATH_MAX];
    size_t n = 0;
    int64_t now = time_now_ms();

    fill_random(data, sizeof(data));
    assert_true(put_one(f->s, NULL, data, sizeof(data), &id) > 0);
    chunk_file(f, &id, p, sizeof(p));
    assert_int_equal(utimensat(AT_FDCWD, p, old, AT_SYMLINK_NOFOLLOW), 0);
    assert_int_equal(store_stat(f->s, &id, &info), 0);
    assert_true(info.mtime_ms == 1000000000000ll);

    /* Deduplicated: nothing written, the content is untouched, the mtime is now. */
    assert_int_equal(put_one(f->s, NULL, data, sizeof(data), &id), 0);
    assert_int_equal(store_stat(f->s, &id, &info), 0);
    assert_true(info.mtime_ms >= now - 2000 && info.mtime_ms <= time_now_ms() + 2000);
    assert_int_equal(store_get(f->s, &id, NULL, back, &n, STORE_VERIFY), 0);
    assert_int_equal(n, sizeof(data));
    assert_memory_equal(back, data, sizeof(data));
    assert_int_equal(tmp_count(f), 0);

    /* The backend reports a chunk that vanished after has (gc freed it) ... */
    fill_random(data, sizeof(data));
    assert_true(put_one(f->s, NULL, data, sizeof(data), &gone) > 0);
    assert_int_equal(store_delete(f->s, &gone), 0);
    assert_int_equal(store_local_backend_open(f->store, &be), 0);
    assert_int_equal(be->ops->batch_new(be, &bb), 0);
    assert_int_equal(be->ops->depend(bb, &gone), -ENOENT);
    assert_int_equal(be->ops->depend(bb, &id), 0);
    be->ops->batch_free(bb);
    be->ops->close(be);
    /* ... and the store then writes it anew. */
    assert_true(put_one(f->s, NULL, data, sizeof(data), &gone) > 0);
    assert_int_equal(store_has(f->s, &gone), 0);
}

/* ---- concurrency ---- */

#define CT_THREADS 4
#define CT_SHARED  12
#define CT_OWN     12

struct ct_arg {
    struct store *s;
    struct store_batch *shared_batch; /* used by threads 2 and 3 together */
    int idx;
    int rc;
};

static void ct_data(uint8_t *buf, size_t n, unsigned seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

    for (size_t i = 0; i < n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1dull;

        /* half random, half compressible */
        if ((i / 4096) % 2)
            v &= 0x0101010101010101ull;
        memcpy(buf + i, &v, n - i < 8 ? n - i : 8);
    }
}

static void *ct_main(void *p)
{
    struct ct_arg *a = p;
    struct store_batch *b = a->shared_batch;
    uint8_t *buf = malloc(CHUNK);
    bool own_batch = !b;
    int rc = 0;

    if (!buf)
        return NULL;
    if (own_batch)
        rc = store_batch_new(a->s, &b);
    for (int i = 0; i < CT_SHARED + CT_OWN && rc == 0; i++) {
        /* Interleave: shared chunks in a thread-dependent order. */
        unsigned seed = i < CT_SHARED ? (unsigned)((i + a->idx * 5) % CT_SHARED)
                                      : 1000u + (unsigned)(a->idx * 100 + i);
        struct chunk_id id;

        ct_data(buf, CHUNK, seed);
        store_chunk_id(NULL, buf, CHUNK, &id);
        rc = store_put(a->s, b, &id, NULL, buf, CHUNK, NULL);
        if (rc == 0 && i % 5 == 4)
            rc = store_batch_commit(b);
    }
    if (rc == 0)
        rc = store_batch_commit(b);
    if (own_batch)
        store_batch_free(b);
    free(buf);
    a->rc = rc;
    return NULL;
}

static void test_concurrent(void **state)
{
    struct fx *f = *state;
    pthread_t th[CT_THREADS];
    struct ct_arg args[CT_THREADS];
    struct store_batch *shared;
    uint8_t *buf = malloc(CHUNK), *out = malloc(CHUNK);

    assert_non_null(buf);
    assert_non_null(out);
    assert_int_equal(store_batch_new(f->s, &shared), 0);
    for (int i = 0; i < CT_THREADS; i++) {
        args[i] = (struct ct_arg){
            .s = f->s, .idx = i, .rc = -1, .shared_batch = i >= 2 ? shared : NULL
        };
        assert_int_equal(pthread_create(&th[i], NULL, ct_main, &args[i]), 0);
    }
    for (int i = 0; i < CT_THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].rc, 0);
    }
    store_batch_free(shared);
    assert_int_equal(chunk_count(f->s), CT_SHARED + CT_THREADS * CT_OWN);
    assert_int_equal(tmp_count(f), 0);
    for (int i = 0; i < CT_SHARED; i++) {
        struct chunk_id id;
        size_t n;

        ct_data(buf, CHUNK, (unsigned)i);
        store_chunk_id(NULL, buf, CHUNK, &id);
        assert_int_equal(store_get(f->s, &id, NULL, out, &n, STORE_VERIFY), 0);
        assert_memory_equal(out, buf, CHUNK);
    }
    free(buf);
    free(out);
}

/* ---- a full disk ---- */

static void test_enospc(void **state)
{
    struct fx *f = *state;
    char mnt[PATH_MAX], dir[PATH_MAX], tmpd[PATH_MAX];
    struct store *s;
    struct store_batch *b;
    uint8_t *buf = malloc(CHUNK), *out = malloc(CHUNK);
    struct chunk_id early[2], late[8];
    int nlate = 0, rc = 0;
    size_t n;

    assert_non_null(buf);
    assert_non_null(out);
    snprintf(mnt, sizeof(mnt), "%s/mnt", f->dir);
    assert_int_equal(mkdir(mnt, 0755), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=2m") < 0) {
        fprintf(stderr, "test_enospc: cannot mount a tmpfs (%s); skipped\n", strerror(errno));
        free(buf);
        free(out);
        skip();
    }
    snprintf(dir, sizeof(dir), "%s/store", mnt);
    assert_int_equal(store_open_local(dir, NULL, &s), 0);

    /* 1 MiB that fits. */
    for (int i = 0; i < 2; i++) {
        fill_random(buf, CHUNK);
        put_one(s, NULL, buf, CHUNK, &early[i]);
    }
    /* 4 MiB that does not: a put or the commit fails with ENOSPC. */
    assert_int_equal(store_batch_new(s, &b), 0);
    for (int i = 0; i < 8 && rc == 0; i++) {
        fill_random(buf, CHUNK);
        store_chunk_id(NULL, buf, CHUNK, &late[nlate++]);
        rc = store_put(s, b, &late[nlate - 1], NULL, buf, CHUNK, NULL);
    }
    snprintf(tmpd, sizeof(tmpd), "%s/tmp", dir);
    if (rc == 0) {
        rc = store_batch_commit(b);
    } else {
        /* The failed put failed the batch: its temporaries are gone at once, the next put and
         * the commit report the error, and then the batch is usable again. */
        assert_int_equal(count_entries(tmpd), 0);
        assert_int_equal(store_put(s, b, &early[0], NULL, buf, CHUNK, NULL), rc);
        assert_int_equal(store_batch_commit(b), rc);
        assert_int_equal(store_batch_commit(b), 0);
    }
    assert_int_equal(rc, -ENOSPC);
    store_batch_free(b);
    assert_int_equal(count_entries(tmpd), 0);
    for (int i = 0; i < nlate; i++)
        assert_int_equal(store_has(s, &late[i]), -ENOENT);
    assert_int_equal(chunk_count(s), 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(store_get(s, &early[i], NULL, out, &n, STORE_VERIFY), 0);

    /* The space came back: a later batch succeeds. */
    fill_random(buf, 100000);
    put_one(s, NULL, buf, 100000, &late[0]);
    assert_int_equal(store_get(s, &late[0], NULL, out, &n, STORE_VERIFY), 0);

    store_close(s);
    assert_int_equal(umount2(mnt, MNT_DETACH), 0);
    free(buf);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_keyed_ids),
        cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_chunk_two_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encrypted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonce_fresh, setup, teardown),
        cmocka_unit_test(test_bitflips),
        cmocka_unit_test_setup_teardown(test_corrupt_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_copy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_fails_midway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_big_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tmp_cleanup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_stat_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_refreshes_mtime, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enospc, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
