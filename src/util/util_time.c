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

/* Writes `v` (0 <= v < 10^n) as exactly `n` decimal digits at p. */
static char *put_digits(char *p, int64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + n;
}

void time_format_iso(int64_t ms, char out[32])
{
    /* Arithmetic rather than gmtime_r and snprintf: listings write a timestamp per item.  The
     * date of a day count is Howard Hinnant's days_from_civil inverted (proleptic Gregorian, as
     * gmtime's). */
    int64_t s = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
    int64_t frac = ms - s * 1000;
    int64_t days = s >= 0 ? s / 86400 : (s - 86399) / 86400;
    int64_t secs = s - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t day = doy - (153 * mp + 2) / 5 + 1;
    int64_t month = mp < 10 ? mp + 3 : mp - 9;
    int64_t year = yoe + era * 400 + (month <= 2);
    /* Years outside 0-9999 cannot be written in this format: clamp. */
    year = year < 0 ? 0 : year > 9999 ? 9999 : year;
    char *p = put_digits(out, year, 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, secs / 3600, 2);
    *p++ = ':';
    p = put_digits(p, secs / 60 % 60, 2);
    *p++ = ':';
    p = put_digits(p, secs % 60, 2);
    *p++ = '.';
    p = put_digits(p, frac, 3);
    *p++ = 'Z';
    *p = '\0';
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
