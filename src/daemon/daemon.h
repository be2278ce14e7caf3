/*
 * daemon.h — `amid serve`: opens a data directory and runs every server amid has (the HTTP API
 * now; the NBD server, instance supervisor and scheduler as they arrive) until SIGINT or
 * SIGTERM, then stops them in order.
 */
#ifndef AMID_DAEMON_H
#define AMID_DAEMON_H

#include "api/api.h"

struct daemon_opts {
    const char *datadir;
    struct api_config api;
};

/* Runs in the foreground.  Returns 0 after a clean stop, or a negative errno after printing
 * why it could not start (master key readable by others, newer database, port in use...). */
int daemon_serve(const struct daemon_opts *o);

#endif
