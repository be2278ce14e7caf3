/*
 * util_buf.c — bounded growable buffers.  The cap exists so that nothing a client sends can make
 * the daemon allocate without limit: every caller states the most it will hold.
 */
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

int buf_extend(struct buf *b, size_t n, char **ret)
{
    if (n > b->max || b->len > b->max - n)
        return -E2BIG;
    if (b->len + n >= SIZE_MAX / 2) /* room for the NUL, and for doubling without wrapping */
        return -ENOMEM;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d)
            return -ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    *ret = b->data + b->len;
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    char *at;
    int rc = buf_extend(b, n, &at);
    if (rc == 0 && n)
        memcpy(at, p, n);
    return rc;
}

int buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    char small[256];
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof(small))
        return buf_append(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -ENOMEM;
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    int rc = buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_truncate(struct buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

char *buf_steal(struct buf *b)
{
    char *d = b->data;
    if (!d)
        d = strdup("");
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return d;
}
