/*
 * util_time.c — wall-clock and monotonic time, ISO 8601 formatting and parsing.  The daemon's
 * own notion of "now" (with an administrator's clock offset) lives in core; this is the raw clock.
 */
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void time_format_iso(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)t * 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    /* Years outside 0-9999 cannot be written in this format: clamp. */
    int year = tm.tm_year + 1900;
    year = year < 0 ? 0 : year > 9999 ? 9999 : year;
    snprintf(out, 32, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, (tm.tm_mon + 1) % 100,
             tm.tm_mday % 100, tm.tm_hour % 100, tm.tm_min % 100, tm.tm_sec % 100,
             (frac % 1000 + 1000) % 1000);
}

/* Reads exactly `n` digits. */
static int digits(const char **p, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -EINVAL;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *ret = v;
    return 0;
}

int time_parse_iso(const char *s, int64_t *ret_ms)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, se = 0, ms = 0, off = 0;
    bool basic = strlen(s) == 16 && s[8] == 'T' && s[15] == 'Z';
    if (digits(&p, 4, &y) < 0)
        return -EINVAL;
    if (!basic && *p++ != '-')
        return -EINVAL;
    if (digits(&p, 2, &mo) < 0)
        return -EINVAL;
    if (!basic && *p++ != '-')
        return -EINVAL;
    if (digits(&p, 2, &d) < 0)
        return -EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) < 0)
            return -EINVAL;
        if (!basic && *p++ != ':')
            return -EINVAL;
        if (digits(&p, 2, &mi) < 0)
            return -EINVAL;
        if (basic || *p == ':') {
            if (!basic)
                p++;
            if (digits(&p, 2, &se) < 0)
                return -EINVAL;
        }
        if (*p == '.') {
            p++;
            int scale = 100, nd = 0;
            while (*p >= '0' && *p <= '9') {
                if (nd++ < 3) {
                    ms += (*p - '0') * scale;
                    scale /= 10;
                }
                p++;
            }
            if (nd == 0)
                return -EINVAL;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (digits(&p, 2, &oh) < 0)
                return -EINVAL;
            if (*p == ':')
                p++;
            if (digits(&p, 2, &om) < 0)
                return -EINVAL;
            off = sign * (oh * 60 + om);
        }
    }
    if (*p != '\0')
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -EINVAL;
    struct tm tm = { .tm_year = y - 1900,
                     .tm_mon = mo - 1,
                     .tm_mday = d,
                     .tm_hour = h,
                     .tm_min = mi,
                     .tm_sec = se };
    time_t t = timegm(&tm);
    /* timegm normalises 31 February into March: refuse dates that moved. */
    if (tm.tm_mday != d || tm.tm_mon != mo - 1)
        return -EINVAL;
    *ret_ms = ((int64_t)t - (int64_t)off * 60) * 1000 + ms;
    return 0;
}
