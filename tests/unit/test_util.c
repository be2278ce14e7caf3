/*
 * test_util.c — bounded buffers, wildcards, UTF-8, hex, base64, percent-encoding and time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
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

/* buf_extend: the bytes it hands out are the caller's to fill, NUL-terminated behind them, the
 * earlier bytes kept across every reallocation; the cap refuses without changing anything. */
static void test_buf_extend(void **state)
{
    (void)state;
    struct buf b;
    char *at = NULL;
    buf_init(&b, 4096);

    /* Zero bytes on an empty buffer: memory appears, holding "". */
    assert_int_equal(buf_extend(&b, 0, &at), 0);
    assert_non_null(b.data);
    assert_ptr_equal(at, b.data);
    assert_int_equal(b.len, 0);
    assert_true(b.cap >= 1);
    assert_string_equal(b.data, "");

    assert_int_equal(buf_extend(&b, 5, &at), 0);
    assert_ptr_equal(at, b.data);
    memcpy(at, "hello", 5);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");

    /* Growth one byte at a time across several capacities: every earlier byte survives each
     * reallocation, and the terminator always sits right after the last byte handed out. */
    char want[1200];
    memcpy(want, "hello", 5);
    for (size_t i = 5; i < sizeof(want) - 1; i++) {
        size_t cap0 = b.cap;
        assert_int_equal(buf_extend(&b, 1, &at), 0);
        assert_ptr_equal(at, b.data + i);
        assert_int_equal(at[1], '\0');
        *at = want[i] = (char)('a' + i % 26);
        assert_int_equal(b.len, i + 1);
        assert_true(b.cap > b.len);
        assert_true(b.cap >= cap0);
    }
    assert_int_equal(b.len, sizeof(want) - 1);
    assert_memory_equal(b.data, want, b.len);
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(strlen(b.data), b.len);

    /* One extension much larger than the capacity. */
    buf_free(&b);
    buf_init(&b, 1 << 20);
    assert_int_equal(buf_puts(&b, "ab"), 0);
    assert_int_equal(buf_extend(&b, 100000, &at), 0);
    assert_ptr_equal(at, b.data + 2);
    memset(at, 'z', 100000); /* all of it writable (ASan) */
    assert_int_equal(b.len, 100002);
    assert_true(b.cap > 100002);
    assert_int_equal(b.data[100002], '\0');
    assert_memory_equal(b.data, "abzz", 4);
    buf_free(&b);

    /* The cap: exactly `max` bytes fit; one more, or a size that would wrap, is -E2BIG with the
     * buffer unchanged. */
    buf_init(&b, 10);
    assert_int_equal(buf_extend(&b, 11, &at), -E2BIG);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    assert_int_equal(buf_extend(&b, 4, &at), 0);
    memcpy(at, "abcd", 4);
    char *data0 = b.data;
    size_t cap0 = b.cap;
    assert_int_equal(buf_extend(&b, 7, &at), -E2BIG);
    assert_int_equal(buf_extend(&b, SIZE_MAX, &at), -E2BIG);
    assert_int_equal(buf_extend(&b, SIZE_MAX - 2, &at), -E2BIG);
    assert_ptr_equal(b.data, data0);
    assert_int_equal(b.cap, cap0);
    assert_int_equal(b.len, 4);
    assert_string_equal(b.data, "abcd");
    assert_int_equal(buf_extend(&b, 6, &at), 0);
    assert_ptr_equal(at, b.data + 4);
    memcpy(at, "efghij", 6);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.data, "abcdefghij");
    assert_int_equal(buf_extend(&b, 1, &at), -E2BIG);
    assert_int_equal(buf_extend(&b, 0, &at), 0); /* nothing more is still within the cap */
    assert_ptr_equal(at, b.data + 10);
    assert_string_equal(b.data, "abcdefghij");
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    /* A cap of zero still holds the empty string. */
    buf_init(&b, 0);
    assert_int_equal(buf_extend(&b, 1, &at), -E2BIG);
    assert_int_equal(buf_extend(&b, 0, &at), 0);
    assert_string_equal(b.data, "");
    buf_free(&b);
    /* An unbounded cap: a size the allocator could never give is -ENOMEM, with nothing written
     * (no wrap of len + n + 1, no doubling past SIZE_MAX). */
    buf_init(&b, SIZE_MAX);
    assert_int_equal(buf_puts(&b, "x"), 0);
    assert_int_equal(buf_extend(&b, SIZE_MAX - 1, &at), -ENOMEM);
    assert_int_equal(buf_extend(&b, SIZE_MAX / 2 + 1, &at), -ENOMEM);
    assert_int_equal(b.len, 1);
    assert_string_equal(b.data, "x");
    buf_free(&b);
}

/* buf_truncate keeps a prefix and the memory, and the text stays a C string. */
static void test_buf_truncate(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1024);

    /* On a buffer that never allocated: nothing to do, nothing allocated. */
    buf_truncate(&b, 0);
    buf_truncate(&b, 5);
    assert_null(b.data);
    assert_int_equal(b.len, 0);

    assert_int_equal(buf_puts(&b, "hello world"), 0);
    char *data0 = b.data;
    size_t cap0 = b.cap;

    /* To the current length, or past it: unchanged. */
    buf_truncate(&b, 11);
    assert_int_equal(b.len, 11);
    assert_string_equal(b.data, "hello world");
    buf_truncate(&b, 12);
    buf_truncate(&b, SIZE_MAX);
    assert_int_equal(b.len, 11);
    assert_string_equal(b.data, "hello world");

    /* Into the middle: terminated there, the memory kept. */
    buf_truncate(&b, 5);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");
    assert_ptr_equal(b.data, data0);
    assert_int_equal(b.cap, cap0);
    /* Growing back does not resurrect the cut bytes as the caller's data. */
    buf_truncate(&b, 11);
    assert_int_equal(b.len, 5);
    assert_string_equal(b.data, "hello");
    assert_int_equal(buf_puts(&b, "!"), 0);
    assert_string_equal(b.data, "hello!");

    /* To zero: "" with the memory kept, and usable again. */
    buf_truncate(&b, 0);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_ptr_equal(b.data, data0);
    assert_int_equal(b.cap, cap0);
    buf_truncate(&b, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(buf_printf(&b, "%s-%d", "x", 7), 0);
    assert_string_equal(b.data, "x-7");

    /* A truncated buffer's freed room counts against the cap again. */
    buf_free(&b);
    buf_init(&b, 8);
    assert_int_equal(buf_puts(&b, "12345678"), 0);
    assert_int_equal(buf_puts(&b, "9"), -E2BIG);
    buf_truncate(&b, 3);
    assert_int_equal(buf_puts(&b, "abcde"), 0);
    assert_string_equal(b.data, "123abcde");
    assert_int_equal(buf_puts(&b, "f"), -E2BIG);
    char *s = buf_steal(&b);
    assert_string_equal(s, "123abcde");
    free(s);
    buf_free(&b);
}

/* Tokenises a whole pattern into a readable trace: "L(c)" a literal byte (hex when not
 * printable), "?" one, "*" any; each token also moves the cursor by the expected amount. */
static void wc_trace(const char *pattern, char *out, size_t outlen)
{
    const char *p = pattern;
    size_t o = 0;
    enum str_wc k;
    char c;
    out[0] = '\0';
    while ((k = str_wildcard_token(&p, &c)) != STR_WC_END) {
        assert_true(p > pattern);
        assert_true(p <= pattern + strlen(pattern));
        int n;
        switch (k) {
        case STR_WC_LITERAL:
            if (c >= 0x20 && c < 0x7f)
                n = snprintf(out + o, outlen - o, "L(%c)", c);
            else
                n = snprintf(out + o, outlen - o, "L(%02x)", (unsigned char)c);
            break;
        case STR_WC_ONE:
            n = snprintf(out + o, outlen - o, "?");
            break;
        case STR_WC_ANY:
            n = snprintf(out + o, outlen - o, "*");
            break;
        default:
            fail_msg("unknown token %d", (int)k);
            return;
        }
        assert_true(n > 0 && (size_t)n < outlen - o);
        o += (size_t)n;
    }
    /* The end is where the pattern ends, and stays the end. */
    assert_ptr_equal(p, pattern + strlen(pattern));
    assert_int_equal(str_wildcard_token(&p, &c), STR_WC_END);
    assert_ptr_equal(p, pattern + strlen(pattern));
}

static void test_wildcard_token(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *trace;
    } cases[] = {
        { "", "" },
        { "a", "L(a)" },
        { "ab", "L(a)L(b)" },
        { "*", "*" },
        { "?", "?" },
        { "**", "**" }, /* runs of stars are the matcher's business, not the tokenizer's */
        { "a*b?c", "L(a)*L(b)?L(c)" },
        { "\\*", "L(*)" },
        { "\\?", "L(?)" },
        { "\\\\", "L(\\)" },
        { "\\\\*", "L(\\)*" },      /* an escaped backslash does not escape the star after it */
        { "\\\\\\*", "L(\\)L(*)" }, /* \\ then \* */
        { "a\\*\\?b", "L(a)L(*)L(?)L(b)" },
        { "\\", "L(\\)" }, /* a trailing backslash is itself */
        { "ab\\", "L(a)L(b)L(\\)" },
        { "\\a", "L(\\)L(a)" }, /* backslash before an ordinary byte: both literal */
        { "\\[x]", "L(\\)L([)L(x)L(])" },
        { "[a-z]", "L([)L(a)L(-)L(z)L(])" }, /* no character classes */
        { "%_^$.", "L(%)L(_)L(^)L($)L(.)" },
        { "\x01\x7f", "L(01)L(7f)" },
        { "\xc3\xa9\xff", "L(c3)L(a9)L(ff)" }, /* bytes, not characters */
    };
    char trace[256];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        wc_trace(cases[i].pattern, trace, sizeof(trace));
        if (strcmp(trace, cases[i].trace) != 0)
            fail_msg("pattern \"%s\": got %s, want %s", cases[i].pattern, trace, cases[i].trace);
    }

    /* The cursor moves by two over an escape, by one otherwise; the byte is only a literal's. */
    const char *pat = "\\*x", *p = pat;
    char c = 0;
    assert_int_equal(str_wildcard_token(&p, &c), STR_WC_LITERAL);
    assert_int_equal(c, '*');
    assert_ptr_equal(p, pat + 2);
    assert_int_equal(str_wildcard_token(&p, &c), STR_WC_LITERAL);
    assert_int_equal(c, 'x');
    assert_ptr_equal(p, pat + 3);
    assert_int_equal(str_wildcard_token(&p, &c), STR_WC_END);
    assert_ptr_equal(p, pat + 3);

    /* A literal 0xff comes back as that byte. */
    pat = "\xff";
    p = pat;
    assert_int_equal(str_wildcard_token(&p, &c), STR_WC_LITERAL);
    assert_int_equal((unsigned char)c, 0xff);

    /* The matcher reads patterns the same way: a trailing backslash and a backslash before an
     * ordinary byte match a backslash. */
    assert_true(str_wildcard_match("ab\\", "ab\\"));
    assert_false(str_wildcard_match("ab\\", "ab"));
    assert_true(str_wildcard_match("\\a", "\\a"));
    assert_false(str_wildcard_match("\\a", "a"));
    assert_true(str_wildcard_match("\\\\*", "\\anything"));
    assert_false(str_wildcard_match("\\\\*", "anything"));
    assert_true(str_wildcard_match("[a]", "[a]"));
    assert_false(str_wildcard_match("[a]", "a"));
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
    /* Arithmetic calendar: the epoch, leap days (2000 is one, 2100 is not), before 1970 (floor
     * of negative milliseconds), the last millisecond of a year, and the clamps. */
    static const struct {
        int64_t ms;
        const char *iso;
    } dates[] = {
        { 0, "1970-01-01T00:00:00.000Z" },
        { -1, "1969-12-31T23:59:59.999Z" },
        { 951782400000LL, "2000-02-29T00:00:00.000Z" },
        { 4107542400000LL, "2100-03-01T00:00:00.000Z" },
        { 4107542399999LL, "2100-02-28T23:59:59.999Z" },
        { 1798761599999LL, "2026-12-31T23:59:59.999Z" },
        { -2208988800000LL, "1900-01-01T00:00:00.000Z" },
        { 253402300799999LL, "9999-12-31T23:59:59.999Z" },
    };
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++) {
        time_format_iso(dates[i].ms, out);
        assert_string_equal(out, dates[i].iso);
        int64_t back;
        assert_int_equal(time_parse_iso(out, &back), 0);
        assert_int_equal(back, dates[i].ms);
    }
    time_format_iso(253402300800000LL, out); /* year 10000 */
    assert_memory_equal(out, "9999-", 5);
    time_format_iso(-62167219200001LL, out); /* before year 0 */
    assert_memory_equal(out, "0000-", 5);
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
        cmocka_unit_test(test_buf_cap),      cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_utf8),         cmocka_unit_test(test_hex_base64),
        cmocka_unit_test(test_uri),          cmocka_unit_test(test_time),
        cmocka_unit_test(test_crypto),       cmocka_unit_test(test_buf_extend),
        cmocka_unit_test(test_buf_truncate), cmocka_unit_test(test_wildcard_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
