/*
 * cli_progress.c — a progress bar on stderr for long transfers (import, export): bytes done of
 * the total, the rate over the last few seconds and the time left.
 *
 * Any thread may add bytes; whichever adds them redraws, at most ten times a second, and only
 * when it can take the drawing lock without waiting, so that workers never queue behind the
 * terminal.  Nothing is drawn when stderr is not a terminal: scripts and logs get no escape
 * sequences.
 */
#include "cli/cli.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define REDRAW_US   100000 /* at most ten redraws a second */
#define RATE_WINDOW 30     /* samples (one per redraw): the rate over about three seconds */

struct cli_progress {
    char label[32];
    _Atomic uint64_t total;
    _Atomic uint64_t done;
    _Atomic int64_t last_us;
    int64_t start_us;
    pthread_mutex_t draw; /* one drawer at a time; the ring below belongs to it */
    struct {
        int64_t us;
        uint64_t done;
    } ring[RATE_WINDOW];
    unsigned ring_n, ring_pos;
};

bool cli_progress_wanted(void)
{
    return isatty(STDERR_FILENO) == 1;
}

struct cli_progress *cli_progress_new(const char *label, uint64_t total)
{
    if (!cli_progress_wanted())
        return NULL;
    struct cli_progress *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    snprintf(p->label, sizeof(p->label), "%s", label);
    atomic_init(&p->total, total);
    atomic_init(&p->done, 0);
    p->start_us = time_mono_us();
    atomic_init(&p->last_us, 0);
    pthread_mutex_init(&p->draw, NULL);
    return p;
}

static void human(uint64_t n, char *out, size_t outlen)
{
    static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < ARRAY_SIZE(unit)) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, outlen, "%llu B", (unsigned long long)n);
    else
        snprintf(out, outlen, "%.1f %s", v, unit[u]);
}

static unsigned term_width(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
        return ws.ws_col > 200 ? 200 : ws.ws_col;
    return 80;
}

/* Draws the bar; the caller holds p->draw. */
static void draw(struct cli_progress *p, int64_t now, bool final)
{
    uint64_t total = atomic_load(&p->total), done = atomic_load(&p->done);
    if (done > total)
        done = total;
    /* The rate over the ring: from its oldest sample to now. */
    p->ring[p->ring_pos].us = now;
    p->ring[p->ring_pos].done = done;
    p->ring_pos = (p->ring_pos + 1) % RATE_WINDOW;
    if (p->ring_n < RATE_WINDOW)
        p->ring_n++;
    unsigned oldest = p->ring_n < RATE_WINDOW ? 0 : p->ring_pos;
    int64_t t0 = p->ring[oldest].us;
    uint64_t d0 = p->ring[oldest].done;
    if (final || p->ring_n < 3) {
        t0 = p->start_us;
        d0 = 0;
    }
    double secs = (double)(now - t0) / 1e6;
    double rate = secs > 0.05 ? (double)(done - d0) / secs : 0;
    char sdone[32], stotal[32], srate[32], eta[32];
    human(done, sdone, sizeof(sdone));
    human(total, stotal, sizeof(stotal));
    human((uint64_t)rate, srate, sizeof(srate));
    if (final) {
        double all = (double)(now - p->start_us) / 1e6;
        snprintf(eta, sizeof(eta), "in %d:%02d", (int)all / 60, (int)all % 60);
    } else if (rate > 1 && total > done) {
        double left = (double)(total - done) / rate;
        if (left > 359999)
            left = 359999;
        int l = (int)(left + 0.5);
        if (l >= 3600)
            snprintf(eta, sizeof(eta), "ETA %d:%02d:%02d", l / 3600, l / 60 % 60, l % 60);
        else
            snprintf(eta, sizeof(eta), "ETA %d:%02d", l / 60, l % 60);
    } else {
        snprintf(eta, sizeof(eta), "ETA --:--");
    }
    unsigned pct = total ? (unsigned)(done * 100 / total) : 100;
    char tail[160];
    /* Fixed widths, so that the bar does not jump as the numbers change. */
    int tl = snprintf(tail, sizeof(tail), " %3u%% %9s / %-9s %9s/s  %-12s", pct, sdone, stotal,
                      srate, eta);
    unsigned width = term_width();
    int lw = (int)strlen(p->label);
    int barw = (int)width - 1 - lw - 3 - tl;
    char line[512];
    int n = snprintf(line, sizeof(line), "\r%s ", p->label);
    if (barw >= 10) {
        if (barw > 60)
            barw = 60;
        int fill = total ? (int)((double)done / (double)total * barw) : barw;
        line[n++] = '[';
        for (int i = 0; i < barw; i++)
            line[n++] = i < fill ? '#' : '.';
        line[n++] = ']';
    }
    snprintf(line + n, sizeof(line) - (size_t)n, "%s\033[K%s", tail, final ? "\n" : "");
    fputs(line, stderr);
    fflush(stderr);
}

void cli_progress_add(struct cli_progress *p, uint64_t n)
{
    if (!p)
        return;
    atomic_fetch_add(&p->done, n);
    int64_t now = time_mono_us();
    int64_t last = atomic_load(&p->last_us);
    if (now - last < REDRAW_US)
        return;
    if (pthread_mutex_trylock(&p->draw) != 0)
        return;
    if (atomic_compare_exchange_strong(&p->last_us, &last, now))
        draw(p, now, false);
    pthread_mutex_unlock(&p->draw);
}

void cli_progress_set_total(struct cli_progress *p, uint64_t total)
{
    if (p)
        atomic_store(&p->total, total);
}

void cli_progress_end(struct cli_progress *p, bool ok)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->draw);
    if (ok) {
        atomic_store(&p->done, atomic_load(&p->total));
        draw(p, time_mono_us(), true);
    } else {
        /* Leave the last state on screen; the error follows on its own line. */
        fputs("\n", stderr);
    }
    pthread_mutex_unlock(&p->draw);
    pthread_mutex_destroy(&p->draw);
    free(p);
}
