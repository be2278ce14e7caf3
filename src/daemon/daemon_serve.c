/*
 * daemon_serve.c — start-up checks, the servers' lifetimes and clean shutdown on signals.
 */
#include "daemon/daemon.h"
#include "core/core.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

int daemon_serve(const struct daemon_opts *o)
{
    struct err e = { 0 };
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
    log_msg(LOG_INFO, "event=start listen=%s data=%s", o->api.listen, core_datadir(app));
    int sig = 0;
    sigwait(&set, &sig);
    log_msg(LOG_INFO, "event=stop signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    api_stop(api);
    api_free(api);
    core_close(app);
    log_msg(LOG_INFO, "event=stopped");
    return 0;
}
