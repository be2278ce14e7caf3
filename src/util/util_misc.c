/*
 * util_misc.c — randomness, resource ids, whole-buffer file writes, the domain error struct and
 * the log line writer.
 */
#include "util/util.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int rand_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int fd_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int rand_uuid(char out[37])
{
    uint8_t r[16];
    int rc = rand_bytes(r, sizeof(r));
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40);
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    char h[33];
    hex_encode(r, sizeof(r), h);
    snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
    return rc;
}

bool account_id_valid(const char *s)
{
    return strlen(s) == 12 && strspn(s, "0123456789") == 12;
}

int rand_id(char *out, size_t outlen, const char *prefix, int nhex)
{
    size_t pl = strlen(prefix);
    if (nhex <= 0 || nhex > 64 || pl + (size_t)nhex + 1 > outlen)
        return -EINVAL;
    unsigned char r[32];
    int rc = rand_bytes(r, sizeof(r));
    if (rc < 0)
        return rc;
    char hex[65];
    hex_encode(r, sizeof(r), hex);
    memcpy(out, prefix, pl);
    memcpy(out + pl, hex, (size_t)nhex);
    out[pl + (size_t)nhex] = '\0';
    return 0;
}

int err_set(struct err *e, int rc, const char *code, const char *fmt, ...)
{
    if (e) {
        e->code = code;
        e->reason = NULL;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return rc;
}

static enum log_level log_max = LOG_INFO;

void log_set_level(enum log_level lvl)
{
    log_max = lvl;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = { "error", "warn", "info", "debug" };
    if (lvl > log_max)
        return;
    char line[2048];
    char ts[32];
    time_format_iso(time_now_ms(), ts);
    int n = snprintf(line, sizeof(line), "%s level=%s ", ts, names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    /* One write per line keeps lines from different threads whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
