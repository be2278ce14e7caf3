/*
 * util_str.c — string codecs: wildcards, UTF-8 validation, hex, base64 and percent-encoding.
 * All of them read untrusted input, so each checks every byte and bounds its output.
 */
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool str_startswith(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool str_endswith(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

enum str_wc str_wildcard_token(const char **p, char *ret_byte)
{
    const char *s = *p;
    if (!*s)
        return STR_WC_END;
    if (*s == '\\' && (s[1] == '*' || s[1] == '?' || s[1] == '\\')) {
        *ret_byte = s[1];
        *p = s + 2;
        return STR_WC_LITERAL;
    }
    *p = s + 1;
    if (*s == '*')
        return STR_WC_ANY;
    if (*s == '?')
        return STR_WC_ONE;
    *ret_byte = *s;
    return STR_WC_LITERAL;
}

bool str_wildcard_match(const char *pattern, const char *s)
{
    size_t plen = strlen(pattern);
    unsigned char small_t[128];
    char small_c[128];
    unsigned char *tt = small_t;
    char *tc = small_c;
    if (plen > sizeof(small_t)) {
        tt = malloc(plen);
        tc = malloc(plen);
        if (!tt || !tc) {
            free(tt == small_t ? NULL : tt);
            free(tc == small_c ? NULL : tc);
            return false;
        }
    }
    size_t n = 0;
    enum str_wc k;
    char c;
    for (const char *p = pattern; (k = str_wildcard_token(&p, &c)) != STR_WC_END;) {
        /* A run of stars is one star. */
        if (k == STR_WC_ANY && n && tt[n - 1] == STR_WC_ANY)
            continue;
        tt[n] = (unsigned char)k;
        tc[n++] = k == STR_WC_LITERAL ? c : 0;
    }
    /* Greedy match remembering the last star: O(len(s) * tokens) at worst. */
    size_t si = 0, ti = 0, star = (size_t)-1, mark = 0, slen = strlen(s);
    bool ok;
    for (;;) {
        if (si < slen && ti < n &&
            (tt[ti] == STR_WC_ONE || (tt[ti] == STR_WC_LITERAL && tc[ti] == s[si]))) {
            si++;
            ti++;
        } else if (ti < n && tt[ti] == STR_WC_ANY) {
            star = ti++;
            mark = si;
        } else if (si < slen && star != (size_t)-1) {
            ti = star + 1;
            si = ++mark;
        } else {
            ok = si == slen && ti == n;
            break;
        }
    }
    if (tt != small_t) {
        free(tt);
        free(tc);
    }
    return ok;
}

bool str_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        /* Overlong forms, surrogates and values past U+10FFFF. */
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

static const char hexdig[] = "0123456789abcdef";

void hex_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int hex_decode(const char *in, void *out, size_t n)
{
    unsigned char *o = out;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(in[2 * i]);
        if (hi < 0)
            return -EINVAL;
        int lo = hexval(in[2 * i + 1]);
        if (lo < 0)
            return -EINVAL;
        o[i] = (unsigned char)(hi << 4 | lo);
    }
    return in[2 * n] == '\0' ? 0 : -EINVAL;
}

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

static void b64_encode(const void *in, size_t n, char *out, const char *alpha, bool pad)
{
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        out[o++] = alpha[(v >> 6) & 63];
        out[o++] = alpha[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = alpha[v >> 18];
        out[o++] = alpha[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = alpha[(v >> 6) & 63];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
}

void base64_encode(const void *in, size_t n, char *out)
{
    b64_encode(in, n, out, b64std, true);
}

void base64url_encode(const void *in, size_t n, char *out)
{
    b64_encode(in, n, out, b64url, false);
}

size_t base64_decoded_max(size_t len)
{
    return len / 4 * 3 + 3;
}

static int b64val(char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (!url && c == '+')
        return 62;
    if (!url && c == '/')
        return 63;
    if (url && c == '-')
        return 62;
    if (url && c == '_')
        return 63;
    return -1;
}

int base64_decode(const char *in, size_t len, bool url, void *out, size_t *ret_n)
{
    unsigned char *o = out;
    size_t on = 0;
    while (len > 0 && in[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -EINVAL;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val(in[i], url);
        if (v < 0)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[on++] = (unsigned char)(acc >> bits);
        }
    }
    /* Leftover bits must be zero, so every string has one decoding. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -EINVAL;
    *ret_n = on;
    return 0;
}

int uri_decode(struct buf *b, const char *in, size_t n, bool plus)
{
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && in[run] != '%' && !(plus && in[run] == '+'))
            run++;
        int rc = buf_append(b, in + i, run - i);
        if (rc < 0)
            return rc;
        i = run;
        if (i >= n)
            break;
        char c;
        if (in[i] == '+') {
            c = ' ';
            i++;
        } else {
            if (n - i < 3)
                return -EINVAL;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (char)(hi << 4 | lo);
            i += 3;
        }
        rc = buf_append(b, &c, 1);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int uri_encode(struct buf *b, const char *in, size_t n, bool keep_slash)
{
    static const char up[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        int rc;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            rc = buf_append(b, &in[i], 1);
        } else {
            char e[3] = { '%', up[c >> 4], up[c & 15] };
            rc = buf_append(b, e, 3);
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}
