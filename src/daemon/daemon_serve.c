/*
 * daemon_serve.c — start-up checks, the servers' lifetimes and clean shutdown on signals.
 */
#include "daemon/daemon.h"
#include "core/core.h"
#include "nbd/nbd.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* The NBD resolver: export names are volume and snapshot ids. */
static int nbd_open(void *opaque, const char *name, unsigned flags, struct nbd_export *ret)
{
    struct app *app = opaque;
    struct core_bdev *b;
    int rc = core_bdev_open(app, name, (flags & NBD_OPEN_PROBE) != 0, &b);
    if (rc < 0)
        return rc;
    ret->bd = core_bdev_dev(b);
    ret->name = NULL;
    ret->description = NULL;
    /* A read-only device (a snapshot) is the same immutable bytes on every connection: clients
     * may spread their reads over several (nbdcopy opens four). */
    ret->flags = (ret->bd->flags & BLOCKDEV_READONLY) ? NBD_EXPORT_MULTI_CONN : 0;
    ret->cookie = b;
    return 0;
}

static void nbd_release(void *opaque, struct nbd_export *exp)
{
    core_bdev_close(opaque, exp->cookie);
}

static const struct nbd_resolver resolver = { nbd_open, nbd_release, NULL };

static void nbd_gone(void *opaque, const char *export_name, int err)
{
    (void)opaque;
    if (err < 0 && err != -ECONNRESET)
        log_msg(LOG_WARN, "event=nbd-disconnect export=%s err=%d", export_name ? export_name : "-",
                err);
}

/* Descriptors: every open volume holds a few per layer (data, its O_DIRECT twin, bitmap) and
 * every client a socket; the usual soft limit of 1024 is raised towards the hard one. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int daemon_serve(const struct daemon_opts *o)
{
    struct err e = { 0 };
    raise_fd_limit();
    struct app *app;
    int rc = core_open(o->datadir, &app, &e);
    if (rc < 0) {
        fprintf(stderr, "amid serve: %s\n", e.msg);
        return rc;
    }
    /* Block the stop signals before any thread starts, so only sigwait below receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct api *api;
    rc = api_new(app, &o->api, &api);
    if (rc == 0)
        rc = api_start(api, &e);
    if (rc < 0) {
        fprintf(stderr, "amid serve: %s\n", e.code ? e.msg : strerror(-rc));
        api_free(api);
        core_close(app);
        return rc;
    }
    core_set_listen(app, o->api.listen);

    char sock[1200], run[1200];
    snprintf(run, sizeof(run), "%s/run", core_datadir(app));
    mkdir(run, 0700);
    core_nbd_socket(app, sock, sizeof(sock));
    struct nbd_server_config ncfg = {
        .resolver = &resolver, .opaque = app, .workers = 4, .on_disconnect = nbd_gone
    };
    struct nbd_server *nbd = NULL;
    rc = nbd_server_new(&ncfg, &nbd);
    if (rc == 0)
        rc = nbd_server_listen_unix(nbd, sock);
    if (rc == 0)
        rc = nbd_server_start(nbd);
    if (rc == 0)
        rc = core_start(app);
    if (rc < 0) {
        fprintf(stderr, "amid serve: cannot start the NBD server on %s: %s\n", sock, strerror(-rc));
        api_free(api);
        nbd_server_free(nbd);
        core_close(app);
        return rc;
    }
    log_msg(LOG_INFO, "event=start listen=%s nbd=%s data=%s", o->api.listen, sock,
            core_datadir(app));
    int sig = 0;
    sigwait(&set, &sig);
    log_msg(LOG_INFO, "event=stop signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    api_stop(api);
    nbd_server_stop(nbd);
    core_stop(app);
    api_free(api);
    nbd_server_free(nbd);
    core_close(app);
    log_msg(LOG_INFO, "event=stopped");
    return 0;
}
