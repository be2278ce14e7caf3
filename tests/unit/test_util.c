/*
 * test_util.c — bounded buffers, wildcards, UTF-8, hex, base64, percent-encoding and time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "util/util.h"

static void test_buf_cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 10);
    assert_int_equal(buf_puts(&b, "0123456789"), 0);
    assert_int_equal(buf_puts(&b, "x"), -E2BIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "0123456789");
    buf_reset(&b);
    assert_int_equal(buf_printf(&b, "%d-%s", 42, "ab"), 0);
    assert_string_equal(b.data, "42-ab");
    assert_int_equal(buf_printf(&b, "%0300d", 1), -E2BIG);
    char *s = buf_steal(&b);
    assert_string_equal(s, "42-ab");
    free(s);
    assert_null(b.data);
    buf_free(&b);
}

static void test_wildcard(void **state)
{
    (void)state;
    assert_true(str_wildcard_match("*", ""));
    assert_true(str_wildcard_match("*", "anything"));
    assert_true(str_wildcard_match("us-*-1", "us-east-1"));
    assert_false(str_wildcard_match("us-*-1", "us-east-2"));
    assert_true(str_wildcard_match("a?c", "abc"));
    assert_false(str_wildcard_match("a?c", "ac"));
    assert_true(str_wildcard_match("*a*b*c*", "xxaxxbxxcxx"));
    assert_false(str_wildcard_match("*a*b*c*", "xxaxxcxxbxx"));
    assert_true(str_wildcard_match("\\*x", "*x"));
    assert_false(str_wildcard_match("\\*x", "yx"));
    assert_true(str_wildcard_match("a\\?", "a?"));
    assert_false(str_wildcard_match("a\\?", "ab"));
    assert_true(str_wildcard_match("exact", "exact"));
    assert_false(str_wildcard_match("exact", "exactly"));
    /* Pathological patterns stay fast (no exponential backtracking). */
    char pat[202], s[4001];
    for (int i = 0; i < 100; i++) {
        pat[2 * i] = '*';
        pat[2 * i + 1] = 'a';
    }
    pat[200] = 'b';
    pat[201] = '\0';
    memset(s, 'a', 4000);
    s[4000] = '\0';
    int64_t t0 = time_mono_us();
    assert_false(str_wildcard_match(pat, s));
    assert_true(time_mono_us() - t0 < 2000000);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(str_utf8_valid("plain", 5));
    assert_true(str_utf8_valid("n\xc3\xa9v \xe5\x80\xa4 \xf0\x9f\x98\x80", 13));
    assert_false(str_utf8_valid("\xff", 1));
    assert_false(str_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(str_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(str_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(str_utf8_valid("a\0b", 3));
    assert_false(str_utf8_valid("\xe5\x80", 2)); /* truncated */
}

static void test_hex_base64(void **state)
{
    (void)state;
    uint8_t in[] = { 0, 1, 0xab, 0xff };
    char hex[9];
    hex_encode(in, 4, hex);
    assert_string_equal(hex, "0001abff");
    uint8_t back[4];
    assert_int_equal(hex_decode("0001ABff", back, 4), 0);
    assert_memory_equal(back, in, 4);
    assert_int_equal(hex_decode("0001abzz", back, 4), -EINVAL);
    assert_int_equal(hex_decode("0001abff00", back, 4), -EINVAL);

    for (size_t n = 0; n < 40; n++) {
        uint8_t data[40], dec[64];
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)(i * 37 + 11);
        char enc[64];
        base64_encode(data, n, enc);
        assert_int_equal(strlen(enc), base64_encoded_len(n));
        size_t dn;
        assert_int_equal(base64_decode(enc, strlen(enc), false, dec, &dn), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(dec, data, n);
        base64url_encode(data, n, enc);
        assert_null(strchr(enc, '='));
        assert_int_equal(base64_decode(enc, strlen(enc), true, dec, &dn), 0);
        assert_int_equal(dn, n);
        assert_memory_equal(dec, data, n);
    }
    uint8_t dec[16];
    size_t dn;
    assert_int_equal(base64_decode("aGVsbG8=", 8, false, dec, &dn), 0);
    assert_memory_equal(dec, "hello", 5);
    assert_int_equal(base64_decode("aGVsbG8", 7, false, dec, &dn), 0);
    assert_int_equal(base64_decode("aGVsbG9", 7, false, dec, &dn), -EINVAL);
    assert_int_equal(base64_decode("a", 1, false, dec, &dn), -EINVAL);
    assert_int_equal(base64_decode("aG!s", 4, false, dec, &dn), -EINVAL);
    assert_int_equal(base64_decode("aGVsbG9=", 8, false, dec, &dn), -EINVAL);
    assert_int_equal(base64_decode("aGVsbG+=", 8, true, dec, &dn), -EINVAL);
    /* Non-zero leftover bits: two encodings of one value are not both accepted. */
    assert_int_equal(base64_decode("aGVsbG9/", 8, false, dec, &dn), 0);
    assert_int_equal(base64_decode("aR==", 4, false, dec, &dn), -EINVAL);
}

static void test_uri(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1024);
    assert_int_equal(uri_decode(&b, "a%20b+c%2Fd", 11, true), 0);
    assert_string_equal(b.data, "a b c/d");
    buf_reset(&b);
    assert_int_equal(uri_decode(&b, "a+b", 3, false), 0);
    assert_string_equal(b.data, "a+b");
    buf_reset(&b);
    assert_int_equal(uri_decode(&b, "bad%2", 5, false), -EINVAL);
    buf_reset(&b);
    assert_int_equal(uri_decode(&b, "bad%zz", 6, false), -EINVAL);
    buf_reset(&b);
    assert_int_equal(uri_encode(&b, "a b/~*\xc3\xa9", 8, false), 0);
    assert_string_equal(b.data, "a%20b%2F~%2A%C3%A9");
    buf_reset(&b);
    assert_int_equal(uri_encode(&b, "/x y/z", 6, true), 0);
    assert_string_equal(b.data, "/x%20y/z");
    buf_free(&b);
}

static void test_time(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(time_parse_iso("2026-12-04T20:28:58Z", &ms), 0);
    assert_int_equal(ms, 1796416138000LL);
    char out[32];
    time_format_iso(ms + 7, out);
    assert_string_equal(out, "2026-12-04T20:28:58.007Z");
    assert_int_equal(time_parse_iso("20261204T202858Z", &ms), 0);
    assert_int_equal(ms, 1796416138000LL);
    assert_int_equal(time_parse_iso("2026-12-04T20:28:58.5+01:00", &ms), 0);
    assert_int_equal(ms, 1796416138000LL - 3600000 + 500);
    assert_int_equal(time_parse_iso("2026-12-04", &ms), 0);
    assert_int_equal(time_parse_iso("2026-02-31T00:00:00Z", &ms), -EINVAL);
    assert_int_equal(time_parse_iso("2026-12-04T25:00:00Z", &ms), -EINVAL);
    assert_int_equal(time_parse_iso("yesterday", &ms), -EINVAL);
    assert_int_equal(time_parse_iso("2026-12-04T20:28:58Zjunk", &ms), -EINVAL);
}

static void test_crypto(void **state)
{
    (void)state;
    uint8_t key[32] = { 1 }, pt[100], ct[100 + AEAD_OVERHEAD], back[100];
    for (int i = 0; i < 100; i++)
        pt[i] = (uint8_t)i;
    assert_int_equal(crypto_aead_seal(key, "aad", 3, pt, 100, ct), 0);
    assert_int_equal(crypto_aead_open(key, "aad", 3, ct, sizeof(ct), back), 0);
    assert_memory_equal(back, pt, 100);
    assert_int_equal(crypto_aead_open(key, "aae", 3, ct, sizeof(ct), back), -EBADMSG);
    ct[20] ^= 1;
    assert_int_equal(crypto_aead_open(key, "aad", 3, ct, sizeof(ct), back), -EBADMSG);
    ct[20] ^= 1;
    key[0] ^= 1;
    assert_int_equal(crypto_aead_open(key, "aad", 3, ct, sizeof(ct), back), -EBADMSG);
    /* Two seals of the same plaintext differ (fresh nonces). */
    uint8_t ct2[100 + AEAD_OVERHEAD];
    assert_int_equal(crypto_aead_seal(key, NULL, 0, pt, 100, ct), 0);
    assert_int_equal(crypto_aead_seal(key, NULL, 0, pt, 100, ct2), 0);
    assert_memory_not_equal(ct, ct2, sizeof(ct));
    /* SHA-256 of "abc" */
    uint8_t h[32];
    char hex[65];
    crypto_sha256("abc", 3, h);
    hex_encode(h, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_true(crypto_memeq("abc", "abc", 3));
    assert_false(crypto_memeq("abc", "abd", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap), cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_utf8),    cmocka_unit_test(test_hex_base64),
        cmocka_unit_test(test_uri),     cmocka_unit_test(test_time),
        cmocka_unit_test(test_crypto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
