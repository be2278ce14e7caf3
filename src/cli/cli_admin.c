/*
 * cli_admin.c — administration that the AWS API has no verb for and no account key may reach:
 * the deployment clock's offset (`amid clock`), which moves amid's time forward so that
 * time-based rules (deprecation, protection cooldowns, lifecycle schedules) can be tested in
 * seconds.  Only someone who can open the data directory can use it.
 */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "90s", "15m", "25h", "2d", "-1h" or plain milliseconds. */
static int parse_duration(const char *s, int64_t *ret_ms)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno)
        return -EINVAL;
    int64_t unit;
    if (!*end || strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60000;
    else if (strcmp(end, "h") == 0)
        unit = 3600000;
    else if (strcmp(end, "d") == 0)
        unit = 86400000;
    else
        return -EINVAL;
    if (v > INT64_MAX / unit || v < INT64_MIN / unit)
        return -ERANGE;
    *ret_ms = v * unit;
    return 0;
}

int cmd_clock(int argc, char **argv)
{
    static const struct option opts[] = {
        { "data", required_argument, NULL, 'd' },
        { "format", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *usage = "--data DIR [show | set OFFSET | advance DURATION | reset] "
                        "[--format env|json]   (durations: 90s, 15m, 25h, 2d)";
    const char *data = NULL;
    int fmt = FMT_ENV, c;
    while ((c = getopt_long(argc, argv, "d:f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                goto bad;
            break;
        case 'h':
            printf("usage: amid clock %s\n", usage);
            return 0;
        default:
            goto bad;
        }
    }
    int nargs = argc - optind;
    char **args = argv + optind;
    const char *verb = nargs ? args[0] : "show";
    if (!data)
        goto bad;
    struct err e = { 0 };
    struct app *app;
    if (core_open(data, &app, &e) < 0) {
        fprintf(stderr, "amid clock: %s\n", e.msg);
        return 1;
    }
    int64_t off = core_clock_offset(app), d = 0;
    int rc = 0;
    if (strcmp(verb, "show") == 0 && nargs <= 1) {
        /* nothing to change */
    } else if ((strcmp(verb, "set") == 0 || strcmp(verb, "advance") == 0) && nargs == 2) {
        if (parse_duration(args[1], &d) < 0) {
            core_close(app);
            goto bad;
        }
        rc = core_clock_set_offset(app, strcmp(verb, "set") == 0 ? d : off + d);
    } else if (strcmp(verb, "reset") == 0 && nargs == 1) {
        rc = core_clock_set_offset(app, 0);
    } else {
        core_close(app);
        goto bad;
    }
    if (rc < 0) {
        fprintf(stderr, "amid clock: cannot record the offset: %s\n", strerror(-rc));
        core_close(app);
        return 1;
    }
    char now[32];
    time_format_iso(core_now_ms(app), now);
    if (fmt == FMT_JSON)
        printf("{\"OffsetMs\": %lld, \"Now\": \"%s\"}\n", (long long)core_clock_offset(app), now);
    else
        printf("AMID_CLOCK_OFFSET_MS=%lld AMID_CLOCK_NOW=%s\n", (long long)core_clock_offset(app),
               now);
    core_close(app);
    return 0;
bad:
    fprintf(stderr, "usage: amid clock %s\n", usage);
    return 2;
}
