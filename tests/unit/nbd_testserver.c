/*
 * nbd_testserver.c — a tiny NBD server over amid's nbd module, for interop tests and benchmarks.
 *
 *   nbd_testserver --socket PATH [--size BYTES | --file PATH] [--workers N]
 *
 * Serves one device (in memory, or a regular file) on one Unix socket under two names:
 * "mem" (read-write; also the default export "") and "ro" (the same bytes, read-only).  Prints
 * "ready" on stdout once it listens and runs until SIGINT or SIGTERM; then it stops the server,
 * checks that every export opened was released exactly once, and exits 0 (1 if not).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd/nbd.h"
#include "nbd/nbd_testdev.h"

struct testserver {
    struct blockdev *bd;
    long opens;    /* __atomic */
    long releases; /* __atomic */
};

static int ts_open(void *opaque, const char *name, unsigned flags, struct nbd_export *ret)
{
    struct testserver *ts = opaque;
    bool ro = strcmp(name, "ro") == 0;

    (void)flags;
    if (!ro && strcmp(name, "mem") != 0 && strcmp(name, "") != 0)
        return -ENOENT;
    *ret = (struct nbd_export){
        .bd = ts->bd,
        .name = ro ? "ro" : "mem",
        .description = ro ? "test device, read-only" : "test device",
        .flags = NBD_EXPORT_MULTI_CONN | (ro ? NBD_EXPORT_READONLY : 0),
    };
    __atomic_fetch_add(&ts->opens, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static void ts_release(void *opaque, struct nbd_export *exp)
{
    struct testserver *ts = opaque;

    (void)exp;
    __atomic_fetch_add(&ts->releases, 1, __ATOMIC_SEQ_CST);
}

static int ts_list(void *opaque, int (*emit)(void *ctx, const char *name, const char *description),
                   void *ctx)
{
    int r;

    (void)opaque;
    r = emit(ctx, "mem", "test device");
    return r < 0 ? r : emit(ctx, "ro", "test device, read-only");
}

static const struct nbd_resolver ts_resolver = {
    .open = ts_open,
    .release = ts_release,
    .list = ts_list,
};

static void usage(void)
{
    fprintf(stderr, "usage: nbd_testserver --socket PATH [--size BYTES | --file PATH] "
                    "[--workers N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "socket", required_argument, NULL, 's' },
        { "size", required_argument, NULL, 'z' },
        { "file", required_argument, NULL, 'f' },
        { "workers", required_argument, NULL, 'w' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock = NULL, *file = NULL;
    unsigned long long size = 64ull << 20;
    unsigned workers = 0;
    struct testserver ts = { 0 };
    struct nbd_server_config cfg = { .resolver = &ts_resolver, .opaque = &ts };
    struct nbd_server *srv;
    struct nbd_stats st;
    sigset_t set;
    int opt, sig, r;

    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            sock = optarg;
            break;
        case 'z':
            size = strtoull(optarg, NULL, 0);
            break;
        case 'f':
            file = optarg;
            break;
        case 'w':
            workers = (unsigned)strtoul(optarg, NULL, 0);
            break;
        default:
            usage();
        }
    }
    if (!sock)
        usage();
    r = file ? nbd_filedev_open(file, false, &ts.bd) : nbd_memdev_new(size, 0, &ts.bd);
    if (r < 0) {
        fprintf(stderr, "nbd_testserver: cannot open device: %s\n", strerror(-r));
        return 1;
    }

    /* Block the signals before any thread exists, so only sigwait below sees them. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    cfg.workers = workers;
    r = nbd_server_new(&cfg, &srv);
    if (r == 0)
        r = nbd_server_listen_unix(srv, sock);
    if (r == 0)
        r = nbd_server_start(srv);
    if (r < 0) {
        fprintf(stderr, "nbd_testserver: %s: %s\n", sock, strerror(-r));
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    sigdelset(&set, SIGPIPE);
    do {
        r = sigwait(&set, &sig);
    } while (r != 0);

    nbd_server_stop(srv);
    nbd_server_get_stats(srv, &st);
    nbd_server_free(srv);
    ts.bd->ops->close(ts.bd);
    fprintf(stderr,
            "nbd_testserver: %llu connections, %llu requests, %llu errors, %llu protocol "
            "errors, %llu bytes read, %llu written; %ld opens, %ld releases\n",
            (unsigned long long)st.connections_accepted, (unsigned long long)st.requests,
            (unsigned long long)st.request_errors, (unsigned long long)st.protocol_errors,
            (unsigned long long)st.bytes_read, (unsigned long long)st.bytes_written, ts.opens,
            ts.releases);
    return ts.opens == ts.releases ? 0 : 1;
}
