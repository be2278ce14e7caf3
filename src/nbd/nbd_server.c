/*
 * nbd_server.c — the NBD server's lifecycle: listeners, the accept thread, connections and
 * their threads, stop, counters.
 *
 * One accept thread polls every listening socket plus a wake-up pipe (so listeners can be added
 * and stop can interrupt it without closing a descriptor another thread is blocked on).  Each
 * connection runs on its own thread; finished connection threads are joined by the accept loop
 * and by stop.  A connection's socket is closed only by its own thread, under the server lock,
 * and stop only calls shutdown() on sockets under that lock, so it never touches a descriptor
 * number that was reused.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "nbd/nbd_int.h"

struct nbd_listener {
    int fd;
    char *path;
    dev_t dev;
    ino_t ino;
};

struct nbd_server {
    struct nbd_server_config cfg;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* a connection finished or left the list */
    struct nbd_conn *conns;
    unsigned nactive; /* connections not yet finished */
    struct nbd_listener *listeners;
    size_t nlisteners;
    int wake[2];
    pthread_t accept_thread;
    bool started;
    bool stopping;
    bool stopped;
    void *zero_buf;
    struct nbd_stats stats; /* __atomic */
};

const struct nbd_server_config *nbd_server_cfg(const struct nbd_server *s)
{
    return &s->cfg;
}

const void *nbd_server_zero_buf(const struct nbd_server *s)
{
    return s->zero_buf;
}

void nbd_server_count(struct nbd_server *s, size_t field_offset, uint64_t n)
{
    uint64_t *p = (uint64_t *)((char *)&s->stats + field_offset);

    __atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

int nbd_server_new(const struct nbd_server_config *cfg, struct nbd_server **ret_server)
{
    struct nbd_server *s;
    pthread_condattr_t ca;

    if (!cfg || !cfg->resolver || !cfg->resolver->open || !cfg->resolver->release)
        return -EINVAL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    if (s->cfg.workers == 0)
        s->cfg.workers = NBD_DEFAULT_WORKERS;
    if (s->cfg.workers > NBD_MAX_WORKERS)
        s->cfg.workers = NBD_MAX_WORKERS;
    if (s->cfg.max_connections == 0)
        s->cfg.max_connections = NBD_DEFAULT_MAX_CONNS;
    if (s->cfg.handshake_timeout_ms == 0)
        s->cfg.handshake_timeout_ms = NBD_DEFAULT_HANDSHAKE_MS;
    if (s->cfg.stop_grace_ms == 0)
        s->cfg.stop_grace_ms = NBD_DEFAULT_GRACE_MS;
    s->zero_buf = calloc(1, NBD_ZERO_BUF_SIZE);
    if (!s->zero_buf || pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        free(s->zero_buf);
        free(s);
        return -ENOMEM;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    *ret_server = s;
    return 0;
}

static void wake_accept(struct nbd_server *s)
{
    char b = 0;

    (void)!write(s->wake[1], &b, 1); /* a full pipe already wakes the loop */
}

/* ---- connections ---- */

static void conn_free(struct nbd_conn *c)
{
    pthread_mutex_destroy(&c->read_lock);
    pthread_mutex_destroy(&c->write_lock);
    pthread_mutex_destroy(&c->budget_lock);
    pthread_cond_destroy(&c->budget_cond);
    free(c->rbuf);
    free(c->meta_export);
    free(c->exp_name);
    free(c);
}

/* Registers a connection on `fd`; on failure closes fd. */
static int conn_new(struct nbd_server *s, int fd, bool own_thread, struct nbd_conn **ret)
{
    struct nbd_conn *c = calloc(1, sizeof(*c));
    int r = 0;

    if (c)
        c->rbuf = malloc(NBD_RBUF_SIZE);
    if (!c || !c->rbuf) {
        free(c);
        close(fd);
        return -ENOMEM;
    }
    c->srv = s;
    c->fd = fd;
    c->own_thread = own_thread;
    pthread_mutex_init(&c->read_lock, NULL);
    pthread_mutex_init(&c->write_lock, NULL);
    pthread_mutex_init(&c->budget_lock, NULL);
    pthread_cond_init(&c->budget_cond, NULL);

    pthread_mutex_lock(&s->lock);
    if (s->stopping)
        r = -ESHUTDOWN;
    else if (s->nactive >= s->cfg.max_connections)
        r = -EBUSY;
    if (r == 0) {
        c->next = s->conns;
        s->conns = c;
        s->nactive++;
    }
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        NBD_COUNT(s, connections_refused, 1);
        close(fd);
        conn_free(c);
        return r;
    }
    NBD_COUNT(s, connections_accepted, 1);
    NBD_COUNT(s, connections_active, 1);
    *ret = c;
    return 0;
}

static void set_send_timeout(int fd, unsigned ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/*
 * Lets the socket hold a few whole READ replies: with the default (about 200 KiB) a worker
 * sending a 256 KiB or 1 MiB reply blocks until the client has read most of it, holding the
 * write lock meanwhile.  The kernel caps the request at net.core.wmem_max; failure is harmless.
 */
static void set_send_buffer(int fd)
{
    int n = NBD_SNDBUF_SIZE;

    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof(n));
}

/* Runs a connection to its end; afterwards it no longer touches the server but to finish. */
static int conn_run(struct nbd_conn *c)
{
    struct nbd_server *s = c->srv;
    int r;

    c->deadline_ns = nbd_now_ns() + (int64_t)s->cfg.handshake_timeout_ms * 1000000;
    set_send_timeout(c->fd, s->cfg.handshake_timeout_ms);
    r = nbd_handshake(c);
    if (r == 1) {
        c->deadline_ns = 0;
        set_send_timeout(c->fd, 0);
        set_send_buffer(c->fd);
        r = nbd_transmit(c);
    }
    nbd_conn_release_export(c);
    if (r == -EPROTO)
        NBD_COUNT(s, protocol_errors, 1);
    if (s->cfg.on_disconnect)
        s->cfg.on_disconnect(s->cfg.opaque, c->exp_name, r);

    pthread_mutex_lock(&s->lock);
    close(c->fd);
    c->fd = -1;
    c->finished = true;
    s->nactive--;
    __atomic_fetch_sub(&s->stats.connections_active, 1, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return r;
}

static void *conn_thread(void *arg)
{
    conn_run(arg);
    return NULL;
}

static bool reapable(const struct nbd_conn *c)
{
    return c->own_thread && c->joinable && c->finished;
}

/* Joins and frees finished server-owned connections. */
static void reap(struct nbd_server *s)
{
    struct nbd_conn *done = NULL, **pp;

    pthread_mutex_lock(&s->lock);
    for (pp = &s->conns; *pp;) {
        struct nbd_conn *c = *pp;

        if (reapable(c)) {
            *pp = c->next;
            c->next = done;
            done = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (done) {
        struct nbd_conn *c = done;

        done = c->next;
        pthread_join(c->thread, NULL);
        conn_free(c);
    }
}

static void conn_unlink(struct nbd_server *s, struct nbd_conn *c)
{
    for (struct nbd_conn **pp = &s->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
}

int nbd_server_serve_fd(struct nbd_server *s, int fd)
{
    struct nbd_conn *c;
    int r;

    reap(s);
    r = conn_new(s, fd, true, &c);
    if (r < 0)
        return r;
    r = pthread_create(&c->thread, NULL, conn_thread, c);
    if (r != 0) {
        pthread_mutex_lock(&s->lock);
        conn_unlink(s, c);
        s->nactive--;
        pthread_cond_broadcast(&s->cond);
        pthread_mutex_unlock(&s->lock);
        __atomic_fetch_sub(&s->stats.connections_active, 1, __ATOMIC_RELAXED);
        close(c->fd);
        conn_free(c);
        return -r;
    }
    /* The thread may already have finished; only now may reap() join it. */
    pthread_mutex_lock(&s->lock);
    c->joinable = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int nbd_server_handle_fd(struct nbd_server *s, int fd)
{
    struct nbd_conn *c;
    int r;

    r = conn_new(s, fd, false, &c);
    if (r < 0)
        return r;
    r = conn_run(c);
    pthread_mutex_lock(&s->lock);
    conn_unlink(s, c);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    conn_free(c);
    return r;
}

/* ---- listening ---- */

/* Removes a socket file nobody listens on, so that bind can reuse the path. */
static int clear_stale_socket(const struct sockaddr_un *sa)
{
    struct stat st;
    int fd, r;

    if (lstat(sa->sun_path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    if (r == 0 || errno != ECONNREFUSED) {
        close(fd);
        return -EADDRINUSE;
    }
    close(fd);
    if (unlink(sa->sun_path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int nbd_server_listen_unix(struct nbd_server *s, const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct nbd_listener *grown;
    struct stat st;
    char *copy;
    int fd, r;

    if (!path || !*path)
        return -EINVAL;
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        free(copy);
        return -errno;
    }
    r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (r < 0 && errno == EADDRINUSE) {
        r = clear_stale_socket(&sa);
        if (r == 0)
            r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        else
            errno = -r;
    }
    if (r < 0 || listen(fd, 128) < 0 || stat(path, &st) < 0) {
        r = -errno;
        close(fd);
        free(copy);
        return r;
    }

    pthread_mutex_lock(&s->lock);
    grown = s->stopping ? NULL : realloc(s->listeners, (s->nlisteners + 1) * sizeof(*s->listeners));
    if (grown) {
        s->listeners = grown;
        s->listeners[s->nlisteners++] =
            (struct nbd_listener){ .fd = fd, .path = copy, .dev = st.st_dev, .ino = st.st_ino };
    }
    r = grown ? 0 : s->stopping ? -ESHUTDOWN : -ENOMEM;
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        unlink(path);
        close(fd);
        free(copy);
        return r;
    }
    wake_accept(s);
    return 0;
}

static void accept_one(struct nbd_server *s, int lfd)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* Out of descriptors or memory: back off rather than spin on a readable listener. */
            struct timespec ts = { .tv_nsec = 50 * 1000000 };
            nanosleep(&ts, NULL);
        }
        return;
    }
    nbd_server_serve_fd(s, fd);
}

static void *accept_main(void *arg)
{
    struct nbd_server *s = arg;
    struct pollfd *pfd = NULL;

    for (;;) {
        size_t n;
        struct pollfd *grown;
        char drain[64];

        pthread_mutex_lock(&s->lock);
        if (s->stopping) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        n = s->nlisteners;
        grown = realloc(pfd, (n + 1) * sizeof(*pfd));
        if (grown) {
            pfd = grown;
            pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
            for (size_t i = 0; i < n; i++)
                pfd[i + 1] = (struct pollfd){ .fd = s->listeners[i].fd, .events = POLLIN };
        }
        pthread_mutex_unlock(&s->lock);
        if (!grown) {
            struct timespec ts = { .tv_nsec = 50 * 1000000 };
            nanosleep(&ts, NULL);
            continue;
        }
        if (poll(pfd, n + 1, -1) < 0)
            continue;
        if (pfd[0].revents)
            while (read(s->wake[0], drain, sizeof(drain)) > 0)
                ;
        for (size_t i = 1; i <= n; i++)
            if (pfd[i].revents & POLLIN)
                accept_one(s, pfd[i].fd);
        reap(s);
    }
    free(pfd);
    return NULL;
}

int nbd_server_start(struct nbd_server *s)
{
    int r = 0;

    pthread_mutex_lock(&s->lock);
    if (s->stopping)
        r = -ESHUTDOWN;
    else if (s->started)
        r = -EALREADY;
    else if ((r = -pthread_create(&s->accept_thread, NULL, accept_main, s)) == 0)
        s->started = true;
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* ---- stop ---- */

static void shutdown_all(struct nbd_server *s, int how)
{
    for (struct nbd_conn *c = s->conns; c; c = c->next)
        if (!c->finished)
            shutdown(c->fd, how);
}

void nbd_server_stop(struct nbd_server *s)
{
    struct timespec deadline;
    bool started;

    pthread_mutex_lock(&s->lock);
    if (s->stopping) {
        /* Stopped, or another thread is stopping it: return once it is done. */
        while (!s->stopped)
            pthread_cond_wait(&s->cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    s->stopping = true;
    started = s->started;
    pthread_mutex_unlock(&s->lock);

    wake_accept(s);
    if (started)
        pthread_join(s->accept_thread, NULL);
    for (size_t i = 0; i < s->nlisteners; i++) {
        struct nbd_listener *l = &s->listeners[i];
        struct stat st;

        /* Unlink only the socket file we created, not one that replaced it since. */
        if (stat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
            unlink(l->path);
        close(l->fd);
        free(l->path);
    }
    free(s->listeners);
    s->listeners = NULL;
    s->nlisteners = 0;

    /* First stop reading requests but let replies in flight go out, then cut. */
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += s->cfg.stop_grace_ms / 1000;
    deadline.tv_nsec += (long)(s->cfg.stop_grace_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->lock);
    shutdown_all(s, SHUT_RD);
    while (s->nactive > 0) {
        if (pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == ETIMEDOUT)
            break;
    }
    shutdown_all(s, SHUT_RDWR);
    while (s->nactive > 0)
        pthread_cond_wait(&s->cond, &s->lock);

    /* Join our threads; nbd_server_handle_fd callers unlink their connections themselves. */
    while (s->conns) {
        bool any = false;

        for (struct nbd_conn *c = s->conns; c; c = c->next)
            any = any || reapable(c);
        if (any) {
            pthread_mutex_unlock(&s->lock);
            reap(s);
            pthread_mutex_lock(&s->lock);
        } else {
            pthread_cond_wait(&s->cond, &s->lock);
        }
    }
    s->stopped = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

void nbd_server_free(struct nbd_server *s)
{
    if (!s)
        return;
    nbd_server_stop(s);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->zero_buf);
    free(s);
}

void nbd_server_get_stats(struct nbd_server *s, struct nbd_stats *ret)
{
    const uint64_t *src = (const uint64_t *)&s->stats;
    uint64_t *dst = (uint64_t *)ret;

    for (size_t i = 0; i < sizeof(*ret) / sizeof(uint64_t); i++)
        dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}
