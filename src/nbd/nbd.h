/*
 * nbd.h — an NBD server that serves any struct blockdev over Unix-domain sockets.
 *
 * The server owns only the wire protocol: the fixed newstyle handshake (NBD_OPT_GO, INFO, LIST,
 * EXPORT_NAME, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with base:allocation) and the
 * transmission phase (READ, WRITE with FUA, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE, DISC).
 * It knows nothing of volumes or snapshots: a resolver (a table of callbacks supplied by the
 * caller) opens an export by the name the client asked for, lists exports and releases them.
 * One listening socket serves many exports by name; users connect to
 * nbd+unix:///NAME?socket=PATH.
 *
 * Threads: one thread per connection, plus `workers - 1` more once the connection enters
 * transmission, so that several requests of one connection are executed concurrently.  Every
 * client-controlled size is capped (options 64 KiB, names 4096 bytes, READ/WRITE payloads 32 MiB,
 * payload memory in flight per connection 64 MiB) and every request is validated once, when it
 * is read, before any blockdev callback sees it.  The library does not log; it reports through
 * return values, an optional disconnect callback and counters.
 *
 * Ownership: the server never calls blockdev close; a device handed over by the resolver's open
 * is given back through the resolver's release exactly once, after every call on it returned.
 */
#ifndef AMID_NBD_NBD_H
#define AMID_NBD_NBD_H

#include <stdint.h>

#include "util/blockdev.h"

struct nbd_server;

/* Flags passed to nbd_resolver.open. */
#define NBD_OPEN_PROBE                                                    \
    (1u << 0) /* only to answer NBD_OPT_INFO or a meta-context query: the \
               * export is released before any I/O is done on it, so a    \
               * resolver need not claim the export's writer slot */

/* Flags the resolver sets in struct nbd_export.flags. */
#define NBD_EXPORT_READONLY (1u << 0) /* serve read-only even though the device is writable */
#define NBD_EXPORT_MULTI_CONN                                        \
    (1u << 1) /* every connection to this name is served by the same \
               * device, so a flush on one connection covers writes  \
               * acknowledged on another (NBD_FLAG_CAN_MULTI_CONN) */

/* What the resolver's open hands to the server for one connection. */
struct nbd_export {
    struct blockdev *bd; /* served device; valid until release */
    const char *name;    /* canonical name, or NULL for the name asked for; valid until release */
    const char *description; /* shown to humans, or NULL; valid until release */
    uint32_t flags;          /* NBD_EXPORT_* */
    void *cookie;            /* the resolver's own, untouched by the server */
};

/*
 * The resolver: how the server finds exports.  Its callbacks are called from connection
 * threads, concurrently; `opaque` is nbd_server_config.opaque.
 */
struct nbd_resolver {
    /*
     * Opens export `name` (NUL-terminated, at most 4096 bytes, no NUL inside; "" asks for the
     * default export, if the resolver has one).  `flags` holds NBD_OPEN_*.  On success fills
     * *ret (bd is required; name, description and cookie may be NULL) and returns 0; the server
     * then calls release exactly once.  On failure returns a negative errno and *ret is ignored:
     * -ENOENT (no such export: NBD_REP_ERR_UNKNOWN), -EBUSY, -EACCES or -EPERM (refused, e.g. a
     * second writer: NBD_REP_ERR_POLICY), -ESHUTDOWN (NBD_REP_ERR_SHUTDOWN), -EINVAL (invalid
     * name: NBD_REP_ERR_INVALID); anything else is reported as NBD_REP_ERR_UNKNOWN with a
     * message naming the error.
     */
    int (*open)(void *opaque, const char *name, unsigned flags, struct nbd_export *ret);
    /* Gives back an export that open filled; called once per successful open, after every
     * blockdev call on it returned.  `exp` is the struct open filled (the server's copy). */
    void (*release)(void *opaque, struct nbd_export *exp);
    /*
     * Lists exports for NBD_OPT_LIST: calls emit(ctx, name, description_or_NULL) once per
     * export and returns 0, or the first negative value emit returned (then stops), or a
     * negative errno of its own.  NULL: the server answers NBD_OPT_LIST with an empty list.
     */
    int (*list)(void *opaque, int (*emit)(void *ctx, const char *name, const char *description),
                void *ctx);
};

struct nbd_server_config {
    const struct nbd_resolver *resolver; /* required; must outlive the server */
    void *opaque;                        /* passed to every resolver callback and on_disconnect */
    unsigned workers;              /* threads executing requests per connection; 0: 16; 1: none
                                    * besides the connection's own thread (requests in order) */
    unsigned max_connections;      /* connections at once; more are closed at accept; 0: 256 */
    unsigned handshake_timeout_ms; /* a client must finish negotiating in this time; 0: 30000 */
    unsigned stop_grace_ms;        /* nbd_server_stop lets requests in flight finish for up to
                                    * this long before cutting connections; 0: 2000 */
    /*
     * Optional: called on a connection's thread as it ends.  `export_name` is the name the
     * client opened in transmission, or NULL if it never got there; `err` is 0 for a clean end
     * (NBD_OPT_ABORT, NBD_CMD_DISC, the client closing between messages, server stop), or
     * -EPROTO (protocol violation, oversized message), -ETIMEDOUT (handshake timeout),
     * -ECONNRESET (client vanished mid-message), or another negative errno from the socket.
     */
    void (*on_disconnect)(void *opaque, const char *export_name, int err);
};

/* Counters since nbd_server_new; monotonically increasing except connections_active. */
struct nbd_stats {
    uint64_t connections_accepted;
    uint64_t connections_refused; /* over max_connections, or after stop */
    uint64_t connections_active;
    uint64_t requests;        /* transmission requests read (DISC included) */
    uint64_t request_errors;  /* requests answered with an error */
    uint64_t protocol_errors; /* connections dropped for a protocol violation */
    uint64_t bytes_read;      /* payload bytes sent to clients by READ */
    uint64_t bytes_written;   /* payload bytes written by WRITE */
};

/*
 * Creates a server with configuration `cfg` (copied; the resolver table it points to is not).
 * It does not listen until nbd_server_listen_unix and accept until nbd_server_start.
 * Returns 0 and sets *ret_server, owned by the caller (nbd_server_free), or -EINVAL for a bad
 * configuration, -ENOMEM.
 */
int nbd_server_new(const struct nbd_server_config *cfg, struct nbd_server **ret_server);

/*
 * Binds a listening Unix stream socket at `path` (mode from the umask).  A stale socket file
 * that nobody listens on is replaced; a live one gives -EADDRINUSE, any other file -EEXIST.
 * May be called several times, before or after nbd_server_start; the socket file is removed
 * by nbd_server_stop.  Returns 0, -ENAMETOOLONG, -ESHUTDOWN after stop, or a negative errno.
 */
int nbd_server_listen_unix(struct nbd_server *server, const char *path);

/*
 * Starts the accept thread, which serves every listening socket, each connection on its own
 * thread.  Returns 0, -EALREADY if started, -ESHUTDOWN after stop, or a negative errno.
 */
int nbd_server_start(struct nbd_server *server);

/*
 * Serves one already-connected stream socket `fd` on a new thread, as if accepted.  Takes
 * ownership of fd in every case (closed on failure).  Works whether or not the server was
 * started.  Returns 0, -EBUSY over max_connections, -ESHUTDOWN after stop, or -errno.
 */
int nbd_server_serve_fd(struct nbd_server *server, int fd);

/*
 * Serves one already-connected stream socket `fd` on the calling thread and returns when the
 * connection ends (as nbd_server_stop also ends it).  Takes ownership of fd.  Returns what
 * on_disconnect would get: 0 for a clean end, or a negative errno; -EBUSY or -ESHUTDOWN as
 * nbd_server_serve_fd.  For embedding and fuzzing.
 */
int nbd_server_handle_fd(struct nbd_server *server, int fd);

/*
 * Stops the server: closes and unlinks the listening sockets, stops accepting, lets requests
 * in flight finish (up to stop_grace_ms), then closes every connection, joins every thread the
 * server started and waits for nbd_server_handle_fd callers to return.  Every export opened has
 * been released when it returns.  Idempotent and safe from several threads; must not be called
 * from a resolver callback or on_disconnect (it would wait for itself).  A blockdev call that
 * never returns makes it wait forever: devices must not block indefinitely.
 */
void nbd_server_stop(struct nbd_server *server);

/* Stops the server (nbd_server_stop) and frees it.  Accepts NULL. */
void nbd_server_free(struct nbd_server *server);

/* Copies the current counters into *ret.  Safe from any thread while the server lives. */
void nbd_server_get_stats(struct nbd_server *server, struct nbd_stats *ret);

#endif
