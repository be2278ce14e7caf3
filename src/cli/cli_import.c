/*
 * cli_import.c — `amid import FILE`: a disk image in, a completed snapshot out.
 *
 * The pipeline: a producer cuts the image into 512 KiB blocks; workers skip all-zero blocks,
 * hash the others (SHA-256) and put them — through the EBS direct API of the daemon (or AWS)
 * that AWS_ENDPOINT_URL names, or, with --data DIR, straight into the data directory through
 * core; then CompleteSnapshot with the count and the LINEAR checksum (SHA-256 over the blocks'
 * SHA-256s in index order).  Memory is bounded: a fixed pool of block buffers, which the
 * producer waits for.
 *
 * Producers: a raw image is read directly (holes of a sparse file skipped with SEEK_DATA).
 * Any other format goes through `qemu-img convert -n -O raw SRC nbd+unix://...` into a private
 * NBD server (src/nbd) serving the "snapshot builder", a write-only block device that
 * assembles blocks from qemu-img's writes and hands each to the workers as soon as it is fully
 * written (see struct builder).
 *
 * Also here, shared with cli_export.c: running a helper program, the private NBD server,
 * opening a data directory as an account, and signal handling.
 */
#include "cli/cli.h"
#include "cli/cli_http.h"
#include "crypto/crypto.h"
#include "nbd/nbd.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define BS              ((uint64_t)CORE_BLOCK_SIZE)
#define GIB             (1ULL << 30)
#define MAX_SIZE_GIB    65536 /* EBS's largest volume */
#define TIMEOUT_MIN     1440  /* StartSnapshot's Timeout: a day to finish the upload */
#define MAX_PENDING     64    /* blocks the builder assembles at once (32 MiB) */
#define WINDOW_BLOCKS   32    /* a partial block this far behind the writes is finished */
#define SECTOR          512
#define SECTORS         (CORE_BLOCK_SIZE / SECTOR)
#define DEFAULT_API_PAR 8
#define DIRECT_ALIGN    4096 /* what O_DIRECT asks of buffers, offsets and lengths */

/* ---- small shared helpers ---- */

volatile sig_atomic_t cli_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: a blocking read or wait returns EINTR and the loop sees the flag. */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

long cli_parse_count(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    return v;
}

unsigned cli_default_workers(bool direct)
{
    if (!direct)
        return DEFAULT_API_PAR;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    return n > 8 ? 16 : (unsigned)(2 * n < 2 ? 2 : 2 * n);
}

/* Whether `n` bytes are all zero: the first 16 checked, then the buffer compared with itself
 * shifted by 16 (memcmp is vectorised). */
static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    size_t head = n < 16 ? n : 16;
    for (size_t i = 0; i < head; i++)
        if (b[i])
            return false;
    return n <= 16 || memcmp(b, b + 16, n - 16) == 0;
}

int cli_run(char *const argv[], struct buf *out, char *err, size_t errlen)
{
    int po[2] = { -1, -1 }, pe[2] = { -1, -1 };
    if (err && errlen)
        err[0] = '\0';
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        int rc = -errno;
        if (po[0] >= 0) {
            close(po[0]);
            close(po[1]);
        }
        return rc;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    posix_spawnattr_init(&at);
    sigset_t def;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    close(po[1]);
    close(pe[1]);
    if (rc != 0) {
        close(po[0]);
        close(pe[0]);
        return -rc;
    }
    char tail[4096];
    size_t tl = 0;
    struct pollfd fds[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2;
    bool killed = false;
    while (open_fds > 0) {
        if (cli_interrupted && !killed) {
            kill(pid, SIGTERM);
            killed = true;
        }
        int pr = poll(fds, 2, 200);
        if (pr < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2 && pr > 0; i++) {
            if (fds[i].fd < 0 || !fds[i].revents)
                continue;
            char chunk[4096];
            ssize_t n = read(fds[i].fd, chunk, sizeof(chunk));
            if (n <= 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                close(fds[i].fd);
                fds[i].fd = -1;
                open_fds--;
                continue;
            }
            if (i == 0) {
                if (out)
                    buf_append(out, chunk, (size_t)n);
            } else {
                /* Keep the last 4 KiB of stderr. */
                if ((size_t)n >= sizeof(tail)) {
                    memcpy(tail, chunk + n - (ssize_t)sizeof(tail), sizeof(tail));
                    tl = sizeof(tail);
                } else {
                    if (tl + (size_t)n > sizeof(tail)) {
                        size_t drop = tl + (size_t)n - sizeof(tail);
                        memmove(tail, tail + drop, tl - drop);
                        tl -= drop;
                    }
                    memcpy(tail + tl, chunk, (size_t)n);
                    tl += (size_t)n;
                }
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i].fd >= 0)
            close(fds[i].fd);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
        if (cli_interrupted && !killed) {
            kill(pid, SIGTERM);
            killed = true;
        }
    }
    if (err && errlen) {
        /* The last non-empty line. */
        while (tl > 0 && (tail[tl - 1] == '\n' || tail[tl - 1] == '\r' || tail[tl - 1] == ' '))
            tl--;
        size_t start = tl;
        while (start > 0 && tail[start - 1] != '\n')
            start--;
        size_t l = tl - start < errlen - 1 ? tl - start : errlen - 1;
        memcpy(err, tail + start, l);
        err[l] = '\0';
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

void cli_qemu_path(const char *path, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s", path[0] == '/' ? "" : "./", path);
}

/* ---- the private NBD server ---- */

struct cli_nbd {
    struct nbd_server *srv;
    char dir[PATH_MAX];
    char sock[PATH_MAX];
    char uri[PATH_MAX * 3];
};

static int one_open(void *opaque, const char *name, unsigned flags, struct nbd_export *ret)
{
    (void)name;
    (void)flags;
    memset(ret, 0, sizeof(*ret));
    ret->bd = opaque;
    return 0;
}

static void one_release(void *opaque, struct nbd_export *exp)
{
    (void)opaque;
    (void)exp;
}

static const struct nbd_resolver one_resolver = { one_open, one_release, NULL };

int cli_nbd_start(struct blockdev *bd, const char *prefix, unsigned workers, struct cli_nbd **ret)
{
    struct cli_nbd *n = calloc(1, sizeof(*n));
    if (!n)
        return -ENOMEM;
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 64)
        tmp = "/tmp";
    snprintf(n->dir, sizeof(n->dir), "%s/amid-%s-XXXXXX", tmp, prefix);
    if (!mkdtemp(n->dir)) {
        int rc = -errno;
        free(n);
        return rc;
    }
    snprintf(n->sock, sizeof(n->sock), "%s/nbd.sock", n->dir);
    struct buf u;
    buf_init(&u, sizeof(n->uri) - 1);
    int rc = buf_puts(&u, "nbd+unix:///amid?socket=");
    if (rc == 0)
        rc = uri_encode(&u, n->sock, strlen(n->sock), true);
    if (rc == 0)
        snprintf(n->uri, sizeof(n->uri), "%s", u.data);
    buf_free(&u);
    struct nbd_server_config cfg = {
        .resolver = &one_resolver,
        .opaque = bd,
        .workers = workers,
        .max_connections = 8,
    };
    if (rc == 0)
        rc = nbd_server_new(&cfg, &n->srv);
    if (rc == 0)
        rc = nbd_server_listen_unix(n->srv, n->sock);
    if (rc == 0)
        rc = nbd_server_start(n->srv);
    if (rc < 0) {
        cli_nbd_stop(n);
        return rc;
    }
    *ret = n;
    return 0;
}

const char *cli_nbd_uri(const struct cli_nbd *n)
{
    return n->uri;
}

void cli_nbd_stop(struct cli_nbd *n)
{
    if (!n)
        return;
    nbd_server_free(n->srv);
    unlink(n->sock);
    rmdir(n->dir);
    free(n);
}

/* ---- a data directory, as an account ---- */

struct pick_ctx {
    const char *want; /* id or name, or NULL for the first non-system account */
    char id[16];
    bool found;
};

static int pick_account(void *vctx, const struct core_account_info *a)
{
    struct pick_ctx *p = vctx;
    bool match =
        p->want ? strcmp(a->id, p->want) == 0 || strcmp(a->name, p->want) == 0 : !a->system;
    if (match && !p->found) {
        snprintf(p->id, sizeof(p->id), "%s", a->id);
        p->found = true;
    }
    return 0;
}

int cli_direct_open(const char *cmd, const char *data, const char *account, const char *region,
                    struct cli_direct *ret)
{
    memset(ret, 0, sizeof(*ret));
    struct err e = { 0 };
    if (core_open(data, &ret->app, &e) < 0) {
        fprintf(stderr, "amid %s: %s\n", cmd, e.msg);
        return -1;
    }
    if (region) {
        if (!core_region_find(ret->app, region)) {
            fprintf(stderr, "amid %s: %s has no region '%s'\n", cmd, data, region);
            cli_direct_close(ret);
            return -1;
        }
        snprintf(ret->region, sizeof(ret->region), "%s", region);
    } else {
        size_t n;
        const struct core_region *r = core_regions(ret->app, &n);
        const char *pick = n ? r[0].name : "us-east-1";
        for (size_t i = 0; i < n; i++)
            if (strcmp(r[i].name, "us-east-1") == 0)
                pick = r[i].name;
        snprintf(ret->region, sizeof(ret->region), "%s", pick);
    }
    struct pick_ctx p = { account, { 0 }, false };
    core_account_each(ret->app, pick_account, &p);
    if (!p.found) {
        if (account)
            fprintf(stderr, "amid %s: no account '%s' in %s\n", cmd, account, data);
        else
            fprintf(stderr, "amid %s: %s has no account\n", cmd, data);
        cli_direct_close(ret);
        return -1;
    }
    snprintf(ret->account_id, sizeof(ret->account_id), "%s", p.id);
    ret->who.account_id = ret->account_id;
    ret->who.region = ret->region;
    ret->who.dry_run = false;
    return 0;
}

void cli_direct_close(struct cli_direct *d)
{
    if (d->app)
        core_close(d->app);
    d->app = NULL;
}

/* ---- where blocks go: the API or a data directory ---- */

struct sink {
    struct cli_ebs *api;          /* API mode */
    struct cli_direct *direct;    /* or direct mode, */
    struct core_ebs_batch *batch; /* which stages blocks and commits them every ~64 MiB */
    char snap[64];
};

/* ---- the pipeline ---- */

struct job {
    int64_t idx;
    uint8_t *buf;
};

struct result {
    int64_t idx;
    uint8_t sha[32];
};

struct pipe {
    struct sink *sink;
    unsigned nworkers;
    pthread_t *threads;
    struct cli_ebs_conn **conns; /* one per worker, API mode */
    unsigned started;
    pthread_mutex_t lock;
    pthread_cond_t cv_job;  /* a job queued, or closing */
    pthread_cond_t cv_buf;  /* a buffer came back, or the pipeline failed */
    pthread_cond_t cv_idle; /* nothing queued and nothing in flight */
    uint8_t **free_bufs;
    size_t nfree, nbufs, pool_max;
    struct job *q; /* ring of pool_max jobs: never more jobs than buffers */
    size_t qhead, qlen;
    size_t inflight;
    bool closing;
    int err; /* first failure, negative errno */
    char errmsg[700];
    struct result *res;
    size_t nres, rescap;
    uint64_t uploaded_blocks, zero_blocks;
    struct worker_arg {
        struct pipe *pl;
        unsigned i;
    } * args;
};

static void pipe_fail(struct pipe *pl, int rc, const char *fmt, ...) PRINTF(3, 4);

/* Records the first failure; the caller holds pl->lock. */
static void pipe_fail(struct pipe *pl, int rc, const char *fmt, ...)
{
    if (pl->err)
        return;
    pl->err = rc < 0 ? rc : -EIO;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pl->errmsg, sizeof(pl->errmsg), fmt, ap);
    va_end(ap);
    pthread_cond_broadcast(&pl->cv_buf);
    pthread_cond_broadcast(&pl->cv_idle);
}

/* Stores one block; returns 0 or a negative errno with the message in `msg`. */
static int put_block(struct pipe *pl, unsigned w, int64_t idx, const uint8_t *data,
                     const uint8_t sha[32], char *msg, size_t msglen)
{
    struct sink *s = pl->sink;
    if (s->api) {
        struct cli_ebs_err e;
        int rc = cli_ebs_put(pl->conns[w], s->snap, idx, data, sha, &e);
        if (rc < 0) {
            char line[700];
            cli_ebs_err_format(&e, line, sizeof(line));
            snprintf(msg, msglen, "block %lld: %s", (long long)idx, line);
        }
        return rc;
    }
    struct err e = { 0 };
    int rc = core_ebs_batch_put(s->batch, idx, data, CORE_BLOCK_SIZE, sha, &e);
    if (rc < 0)
        snprintf(msg, msglen, "block %lld: %s: %s", (long long)idx, e.code ? e.code : "Error",
                 e.msg);
    return rc;
}

static void *worker_main(void *varg)
{
    struct worker_arg *a = varg;
    struct pipe *pl = a->pl;
    pthread_mutex_lock(&pl->lock);
    for (;;) {
        while (!pl->qlen && !pl->closing)
            pthread_cond_wait(&pl->cv_job, &pl->lock);
        if (!pl->qlen)
            break;
        struct job j = pl->q[pl->qhead];
        pl->qhead = (pl->qhead + 1) % pl->pool_max;
        pl->qlen--;
        pl->inflight++;
        bool skip = pl->err != 0;
        pthread_mutex_unlock(&pl->lock);

        int rc = 0;
        bool zero = false;
        uint8_t sha[32];
        char msg[700] = "";
        if (!skip) {
            zero = all_zero(j.buf, CORE_BLOCK_SIZE);
            if (!zero) {
                crypto_sha256(j.buf, CORE_BLOCK_SIZE, sha);
                rc = put_block(pl, a->i, j.idx, j.buf, sha, msg, sizeof(msg));
            }
        }

        pthread_mutex_lock(&pl->lock);
        pl->inflight--;
        if (rc < 0) {
            pipe_fail(pl, rc, "%s", msg);
        } else if (!skip && zero) {
            pl->zero_blocks++;
        } else if (!skip) {
            if (pl->nres == pl->rescap) {
                size_t cap = pl->rescap ? pl->rescap * 2 : 4096;
                void *nr = realloc(pl->res, cap * sizeof(*pl->res));
                if (!nr) {
                    pipe_fail(pl, -ENOMEM, "out of memory");
                } else {
                    pl->res = nr;
                    pl->rescap = cap;
                }
            }
            if (pl->nres < pl->rescap) {
                pl->res[pl->nres].idx = j.idx;
                memcpy(pl->res[pl->nres].sha, sha, 32);
                pl->nres++;
                pl->uploaded_blocks++;
            }
        }
        pl->free_bufs[pl->nfree++] = j.buf;
        pthread_cond_signal(&pl->cv_buf);
        if (!pl->qlen && !pl->inflight)
            pthread_cond_broadcast(&pl->cv_idle);
    }
    pthread_mutex_unlock(&pl->lock);
    return NULL;
}

static void pipe_free(struct pipe *pl)
{
    if (!pl)
        return;
    for (size_t i = 0; i < pl->nfree; i++)
        free(pl->free_bufs[i]);
    for (size_t i = 0; i < pl->qlen; i++)
        free(pl->q[(pl->qhead + i) % pl->pool_max].buf);
    for (unsigned i = 0; pl->conns && i < pl->nworkers; i++)
        cli_ebs_conn_free(pl->conns[i]);
    free(pl->conns);
    free(pl->free_bufs);
    free(pl->q);
    free(pl->threads);
    free(pl->args);
    free(pl->res);
    pthread_mutex_destroy(&pl->lock);
    pthread_cond_destroy(&pl->cv_job);
    pthread_cond_destroy(&pl->cv_buf);
    pthread_cond_destroy(&pl->cv_idle);
    free(pl);
}

/* Starts `nworkers` workers with room for `pool` blocks in memory (queued, in flight, or held
 * by the producer). */
static int pipe_new(struct sink *sink, unsigned nworkers, size_t pool, struct pipe **ret)
{
    struct pipe *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return -ENOMEM;
    pl->sink = sink;
    pl->nworkers = nworkers;
    pl->pool_max = pool;
    pthread_mutex_init(&pl->lock, NULL);
    pthread_cond_init(&pl->cv_job, NULL);
    pthread_cond_init(&pl->cv_buf, NULL);
    pthread_cond_init(&pl->cv_idle, NULL);
    pl->free_bufs = calloc(pool, sizeof(*pl->free_bufs));
    pl->q = calloc(pool, sizeof(*pl->q));
    pl->threads = calloc(nworkers, sizeof(*pl->threads));
    pl->conns = calloc(nworkers, sizeof(*pl->conns));
    pl->args = calloc(nworkers, sizeof(*pl->args));
    int rc = pl->free_bufs && pl->q && pl->threads && pl->conns && pl->args ? 0 : -ENOMEM;
    for (unsigned i = 0; rc == 0 && sink->api && i < nworkers; i++)
        rc = cli_ebs_conn_new(sink->api, &pl->conns[i]);
    for (unsigned i = 0; rc == 0 && i < nworkers; i++) {
        pl->args[i].pl = pl;
        pl->args[i].i = i;
        if (pthread_create(&pl->threads[i], NULL, worker_main, &pl->args[i]) != 0)
            break;
        pl->started++;
    }
    if (rc == 0 && pl->started == 0)
        rc = -EAGAIN;
    if (rc < 0) {
        pipe_free(pl);
        return rc;
    }
    *ret = pl;
    return 0;
}

/* A free block buffer (contents undefined), waiting for one when all are in use.  NULL once
 * the pipeline failed or the command is interrupted. */
static uint8_t *pipe_buf_get(struct pipe *pl)
{
    uint8_t *b = NULL;
    pthread_mutex_lock(&pl->lock);
    while (!pl->err && !pl->nfree && pl->nbufs >= pl->pool_max)
        pthread_cond_wait(&pl->cv_buf, &pl->lock);
    if (!pl->err && cli_interrupted)
        pipe_fail(pl, -EINTR, "interrupted");
    if (!pl->err) {
        if (pl->nfree) {
            b = pl->free_bufs[--pl->nfree];
        } else {
            b = aligned_alloc(DIRECT_ALIGN, CORE_BLOCK_SIZE); /* for O_DIRECT reads */
            if (b)
                pl->nbufs++;
            else
                pipe_fail(pl, -ENOMEM, "out of memory");
        }
    }
    pthread_mutex_unlock(&pl->lock);
    return b;
}

/* Gives back a buffer that will not be submitted. */
static void pipe_buf_put(struct pipe *pl, uint8_t *b)
{
    pthread_mutex_lock(&pl->lock);
    pl->free_bufs[pl->nfree++] = b;
    pthread_cond_signal(&pl->cv_buf);
    pthread_mutex_unlock(&pl->lock);
}

/* Queues block `idx` (its buffer now belongs to the pipeline).  Returns the pipeline's error
 * when it failed. */
static int pipe_submit(struct pipe *pl, int64_t idx, uint8_t *b)
{
    pthread_mutex_lock(&pl->lock);
    int rc = pl->err;
    if (rc) {
        pl->free_bufs[pl->nfree++] = b;
    } else {
        pl->q[(pl->qhead + pl->qlen) % pl->pool_max] = (struct job){ idx, b };
        pl->qlen++;
        pthread_cond_signal(&pl->cv_job);
    }
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

/* Waits until every submitted block is stored (or the pipeline failed). */
static int pipe_drain(struct pipe *pl)
{
    pthread_mutex_lock(&pl->lock);
    while (!pl->err && (pl->qlen || pl->inflight))
        pthread_cond_wait(&pl->cv_idle, &pl->lock);
    int rc = pl->err;
    pthread_mutex_unlock(&pl->lock);
    return rc;
}

/* Stops the workers once the queue is empty and joins them; returns the pipeline's error. */
static int pipe_close(struct pipe *pl)
{
    pthread_mutex_lock(&pl->lock);
    pl->closing = true;
    pthread_cond_broadcast(&pl->cv_job);
    pthread_mutex_unlock(&pl->lock);
    for (unsigned i = 0; i < pl->started; i++)
        pthread_join(pl->threads[i], NULL);
    pl->started = 0;
    return pl->err;
}

static int cmp_result(const void *a, const void *b)
{
    const struct result *x = a, *y = b;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* The LINEAR checksum: SHA-256 over the stored blocks' SHA-256s in index order. */
static int pipe_linear(struct pipe *pl, uint8_t out[32])
{
    qsort(pl->res, pl->nres, sizeof(*pl->res), cmp_result);
    struct sha256 *h = crypto_sha256_new();
    if (!h)
        return -ENOMEM;
    for (size_t i = 0; i < pl->nres; i++)
        crypto_sha256_update(h, pl->res[i].sha, 32);
    crypto_sha256_final(h, out);
    crypto_sha256_free(h);
    return 0;
}

/* ---- producer 1: a raw image, read directly ---- */

/* Reads block `off` (`want` bytes, the rest of the file when shorter than a block) of a raw image
 * into `b`.  With *direct, by O_DIRECT (no copy through the page cache, and the device reads
 * ahead of no one: every block is read once); where the file system refuses it, *direct goes
 * false and the read is done again through the page cache.  0, or a negative errno with `msg`. */
static int read_block(int fd, bool *direct, uint8_t *b, uint64_t off, size_t want, char *msg,
                      size_t msglen)
{
    size_t got = 0;
    while (got < want) {
        /* O_DIRECT lengths are whole sectors: ask for the block; the file's end cuts it short. */
        size_t ask = *direct ? CORE_BLOCK_SIZE - got : want - got;
        ssize_t n = pread(fd, b + got, ask, (off_t)(off + got));
        if (n < 0 && errno == EINTR && !cli_interrupted)
            continue;
        if (n < 0 && errno == EINVAL && *direct) {
            *direct = false;
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
            continue;
        }
        if (n <= 0 || (*direct && (size_t)n < ask && got + (size_t)n < want &&
                       (size_t)n % DIRECT_ALIGN != 0)) {
            snprintf(msg, msglen, "cannot read at offset %llu: %s", (unsigned long long)off,
                     n < 0 ? strerror(errno) : "the file shrank");
            return n < 0 ? -errno : -EIO;
        }
        got += (size_t)n;
    }
    return 0;
}

static int produce_raw(struct pipe *pl, int fd, uint64_t size, struct cli_progress *prog, char *msg,
                       size_t msglen)
{
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    /* Regular files and block devices only (O_DIRECT on a pipe means packet mode). */
    struct stat st;
    int fl = fcntl(fd, F_GETFL);
    bool direct = fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) && fl >= 0 &&
                  fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    uint64_t ds = 0, de = 0; /* the data extent at or after the current block */
    bool seek_ok = true;
    for (uint64_t off = 0; off < size; off += BS) {
        uint64_t end = off + BS < size ? off + BS : size;
        if (seek_ok && off >= de) {
            off_t d = lseek(fd, (off_t)off, SEEK_DATA);
            if (d < 0 && errno == ENXIO) {
                ds = de = size; /* only a hole is left */
            } else if (d < 0) {
                seek_ok = false; /* no SEEK_DATA here: read everything */
                ds = 0;
                de = size;
            } else {
                off_t h = lseek(fd, d, SEEK_HOLE);
                ds = (uint64_t)d;
                de = h < 0 ? size : (uint64_t)h;
            }
        }
        if (ds >= end) {
            /* A hole: on to the block where the data starts, in one step. */
            uint64_t next = ds / BS * BS;
            if (next >= size) {
                cli_progress_add(prog, size - off);
                break;
            }
            cli_progress_add(prog, next - off);
            off = next - BS;
            continue;
        }
        uint8_t *b = pipe_buf_get(pl);
        if (!b)
            return -EIO; /* the pipeline's error says why */
        size_t want = (size_t)(end - off);
        int rc = read_block(fd, &direct, b, off, want, msg, msglen);
        if (rc < 0) {
            pipe_buf_put(pl, b);
            return rc;
        }
        if (want < BS)
            memset(b + want, 0, BS - want);
        if (pipe_submit(pl, (int64_t)(off / BS), b) < 0)
            return -EIO;
        cli_progress_add(prog, want);
    }
    return 0;
}

/* ---- producer 2: qemu-img convert into the snapshot builder ---- */

/*
 * The snapshot builder: a write-only block device of the volume's size that assembles 512 KiB
 * blocks from what qemu-img writes.  The snapshot has no parent, so every byte nobody writes
 * is zero; a block is therefore finished as soon as all its bytes were written or zeroed,
 * and then handed to the workers (all-zero blocks are dropped).  A block only partly written
 * is finished (zero-filled) when a request arrives WINDOW_BLOCKS past it (qemu-img writes in
 * order), when MAX_PENDING blocks are in the making (the oldest goes), or at FLUSH and close.
 * WRITE_ZEROES and TRIM over whole blocks cost nothing; over part of a block they count as
 * written.  Coverage is tracked per 512-byte sector (a sector only partly written counts as
 * unwritten, which only delays that block's finish).
 *
 * Writing to a block after it was handed over cannot be honoured (its bytes are gone): such a
 * write fails with EIO and the import with it.  qemu-img never does it.
 */
struct pend {
    int64_t idx;
    uint8_t *buf; /* NULL while only zeroes were written */
    uint64_t cover[SECTORS / 64];
};

struct builder {
    struct blockdev bd;
    struct pipe *pl;
    pthread_mutex_t lock;
    struct pend pend[MAX_PENDING];
    size_t npend;
    uint8_t *sent; /* bitmap: blocks handed to the workers */
    uint64_t nblocks;
    int err;
    char errmsg[256];
    struct cli_progress *prog;
    uint64_t bytes;
};

static bool sent_get(const struct builder *b, uint64_t i)
{
    return b->sent[i / 8] & (1u << (i % 8));
}

static void b_fail(struct builder *b, int rc, const char *fmt, ...) PRINTF(3, 4);

static void b_fail(struct builder *b, int rc, const char *fmt, ...)
{
    if (b->err)
        return;
    b->err = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->errmsg, sizeof(b->errmsg), fmt, ap);
    va_end(ap);
}

/* Finishes pending block `k` (the caller holds b->lock): hands it to the workers unless it is
 * all zero, and forgets it. */
static int b_finish(struct builder *b, size_t k)
{
    struct pend p = b->pend[k];
    b->pend[k] = b->pend[--b->npend];
    if (!p.buf)
        return 0;
    if (all_zero(p.buf, CORE_BLOCK_SIZE)) {
        pipe_buf_put(b->pl, p.buf);
        return 0;
    }
    b->sent[p.idx / 8] |= (uint8_t)(1u << (p.idx % 8));
    if (pipe_submit(b->pl, p.idx, p.buf) < 0) {
        b_fail(b, -EIO, "the upload failed");
        return -EIO;
    }
    return 0;
}

/* Finishes the blocks a request at `off` has left behind. */
static int b_behind(struct builder *b, uint64_t off)
{
    uint64_t cur = off / BS;
    for (size_t k = 0; k < b->npend;) {
        if ((uint64_t)b->pend[k].idx + WINDOW_BLOCKS < cur) {
            int rc = b_finish(b, k);
            if (rc < 0)
                return rc;
        } else {
            k++;
        }
    }
    return 0;
}

/* The pending block `idx`, made when absent; with `data`, it gets a (zeroed) buffer. */
static struct pend *b_pend(struct builder *b, int64_t idx, bool data)
{
    struct pend *p = NULL;
    for (size_t k = 0; k < b->npend; k++)
        if (b->pend[k].idx == idx)
            p = &b->pend[k];
    if (!p) {
        if (b->npend == MAX_PENDING) {
            size_t low = 0;
            for (size_t k = 1; k < b->npend; k++)
                if (b->pend[k].idx < b->pend[low].idx)
                    low = k;
            if (b_finish(b, low) < 0)
                return NULL;
        }
        p = &b->pend[b->npend++];
        memset(p, 0, sizeof(*p));
        p->idx = idx;
    }
    if (data && !p->buf) {
        p->buf = pipe_buf_get(b->pl);
        if (!p->buf) {
            b_fail(b, -EIO, "the upload failed");
            return NULL;
        }
        memset(p->buf, 0, CORE_BLOCK_SIZE);
    }
    return p;
}

/* Marks the whole sectors of [a, a+n) within the block as written; whether all are. */
static bool b_cover(struct pend *p, uint64_t a, uint64_t n)
{
    uint64_t s0 = (a + SECTOR - 1) / SECTOR, s1 = (a + n) / SECTOR;
    for (uint64_t s = s0; s < s1; s++)
        p->cover[s / 64] |= 1ULL << (s % 64);
    for (size_t w = 0; w < ARRAY_SIZE(p->cover); w++)
        if (p->cover[w] != UINT64_MAX)
            return false;
    return true;
}

static int b_check(struct builder *b, uint64_t bi)
{
    if (sent_get(b, bi)) {
        b_fail(b, -EIO, "block %llu was written again after it was uploaded",
               (unsigned long long)bi);
        return -EIO;
    }
    return 0;
}

static int b_pwrite(struct blockdev *bd, const void *buf, size_t len, uint64_t off, unsigned flags)
{
    struct builder *b = (struct builder *)bd;
    (void)flags; /* FUA: the snapshot is durable at CompleteSnapshot, not before */
    pthread_mutex_lock(&b->lock);
    int rc = b->err ? -EIO : b_behind(b, off);
    const uint8_t *src = buf;
    uint64_t o = off, left = len;
    while (rc == 0 && left) {
        uint64_t bi = o / BS, bo = o % BS, n = BS - bo < left ? BS - bo : left;
        rc = b_check(b, bi);
        if (rc < 0)
            break;
        struct pend *p = b_pend(b, (int64_t)bi, true);
        if (!p) {
            rc = -EIO;
            break;
        }
        memcpy(p->buf + bo, src, n);
        if (b_cover(p, bo, n))
            rc = b_finish(b, (size_t)(p - b->pend));
        src += n;
        o += n;
        left -= n;
    }
    if (rc == 0) {
        b->bytes += len;
        cli_progress_add(b->prog, len);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static int b_zero(struct blockdev *bd, uint64_t len, uint64_t off)
{
    struct builder *b = (struct builder *)bd;
    pthread_mutex_lock(&b->lock);
    int rc = b->err ? -EIO : b_behind(b, off);
    uint64_t o = off, left = len;
    while (rc == 0 && left) {
        uint64_t bi = o / BS, bo = o % BS, n = BS - bo < left ? BS - bo : left;
        rc = b_check(b, bi);
        if (rc < 0)
            break;
        if (n == BS) {
            /* A whole block of zeroes: whatever was pending there is gone. */
            for (size_t k = 0; k < b->npend; k++) {
                if (b->pend[k].idx == (int64_t)bi) {
                    if (b->pend[k].buf)
                        pipe_buf_put(b->pl, b->pend[k].buf);
                    b->pend[k] = b->pend[--b->npend];
                    break;
                }
            }
        } else {
            struct pend *p = b_pend(b, (int64_t)bi, false);
            if (!p) {
                rc = -EIO;
                break;
            }
            if (p->buf)
                memset(p->buf + bo, 0, n);
            if (b_cover(p, bo, n))
                rc = b_finish(b, (size_t)(p - b->pend));
        }
        o += n;
        left -= n;
    }
    if (rc == 0) {
        b->bytes += len;
        cli_progress_add(b->prog, len);
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static int b_write_zeroes(struct blockdev *bd, uint64_t len, uint64_t off, unsigned flags)
{
    (void)flags;
    return b_zero(bd, len, off);
}

static int b_trim(struct blockdev *bd, uint64_t len, uint64_t off)
{
    /* Trimmed bytes read back as zero (blockdev.h), so a trim is a write of zeroes here. */
    return b_zero(bd, len, off);
}

/* Finishes every pending block (the caller holds b->lock). */
static int b_finish_all(struct builder *b)
{
    int rc = 0;
    while (rc == 0 && b->npend)
        rc = b_finish(b, 0);
    return rc;
}

static int b_flush(struct blockdev *bd)
{
    struct builder *b = (struct builder *)bd;
    pthread_mutex_lock(&b->lock);
    int rc = b->err ? -EIO : b_finish_all(b);
    pthread_mutex_unlock(&b->lock);
    if (rc == 0 && pipe_drain(b->pl) < 0)
        rc = -EIO;
    return rc;
}

static int b_pread(struct blockdev *bd, void *buf, size_t len, uint64_t off)
{
    /* Nothing reads the target of a conversion; answer truthfully anyway while we can. */
    struct builder *b = (struct builder *)bd;
    pthread_mutex_lock(&b->lock);
    int rc = 0;
    uint8_t *dst = buf;
    uint64_t o = off, left = len;
    while (left) {
        uint64_t bi = o / BS, bo = o % BS, n = BS - bo < left ? BS - bo : left;
        if (sent_get(b, bi)) {
            rc = -EIO;
            break;
        }
        const uint8_t *from = NULL;
        for (size_t k = 0; k < b->npend; k++)
            if (b->pend[k].idx == (int64_t)bi)
                from = b->pend[k].buf;
        if (from)
            memcpy(dst, from + bo, n);
        else
            memset(dst, 0, n);
        dst += n;
        o += n;
        left -= n;
    }
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static void b_close(struct blockdev *bd)
{
    (void)bd; /* the builder outlives the server that serves it */
}

static const struct blockdev_ops builder_ops = {
    .pread = b_pread,
    .pwrite = b_pwrite,
    .flush = b_flush,
    .trim = b_trim,
    .write_zeroes = b_write_zeroes,
    .block_status = NULL,
    .close = b_close,
};

/* Runs qemu-img convert from `file` (format `fmt`) into a builder of `size_gib` GiB. */
static int produce_qemu(struct pipe *pl, const char *file, const char *fmt, int64_t size_gib,
                        struct cli_progress *prog, char *msg, size_t msglen)
{
    struct builder *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->bd.ops = &builder_ops;
    b->bd.size = (uint64_t)size_gib * GIB;
    b->bd.block_size = CORE_BLOCK_SIZE;
    b->pl = pl;
    b->prog = prog;
    b->nblocks = (uint64_t)size_gib * CORE_BLOCKS_PER_GIB;
    b->sent = calloc((size_t)(b->nblocks / 8 + 1), 1);
    pthread_mutex_init(&b->lock, NULL);
    struct cli_nbd *srv = NULL;
    int rc = b->sent ? cli_nbd_start(&b->bd, "import", 1, &srv) : -ENOMEM;
    if (rc < 0) {
        snprintf(msg, msglen, "cannot start the NBD server for qemu-img: %s", strerror(-rc));
    } else {
        char src[PATH_MAX + 2];
        cli_qemu_path(file, src, sizeof(src));
        char *argv[] = { "qemu-img", "convert",   "-n",
                         "-f",       (char *)fmt, "-O",
                         "raw",      src,         (char *)cli_nbd_uri(srv),
                         NULL };
        char err[512];
        int st = cli_run(argv, NULL, err, sizeof(err));
        /* Every callback has returned once the server is stopped. */
        cli_nbd_stop(srv);
        pthread_mutex_lock(&b->lock);
        if (st == 0 && !b->err)
            rc = b_finish_all(b);
        pthread_mutex_unlock(&b->lock);
        if (st == -ENOENT) {
            rc = -ENOENT;
            snprintf(msg, msglen, "%s", "qemu-img is not installed (apt-get install qemu-utils)");
        } else if (st < 0) {
            rc = st;
            snprintf(msg, msglen, "cannot run qemu-img: %s", strerror(-st));
        } else if (b->err) {
            rc = b->err;
            snprintf(msg, msglen, "%s", b->errmsg);
        } else if (st != 0) {
            rc = -EIO;
            snprintf(msg, msglen, "qemu-img convert failed: %s", err[0] ? err : "(no message)");
        }
    }
    /* Blocks still pending after a failure are given back. */
    for (size_t k = 0; k < b->npend; k++)
        if (b->pend[k].buf)
            pipe_buf_put(pl, b->pend[k].buf);
    pthread_mutex_destroy(&b->lock);
    free(b->sent);
    free(b);
    return rc;
}

/* ---- what the image is ---- */

static const char *const image_formats[] = { "raw", "qcow2", "vmdk", "vhdx", "vpc", "auto" };

/* Asks qemu-img for the format (when `fmt` is "auto") and the virtual size of `file`. */
static int qemu_info(const char *file, const char *fmt, char ret_fmt[32], uint64_t *ret_size,
                     char *msg, size_t msglen)
{
    struct buf out;
    buf_init(&out, 4 << 20);
    char err[512], src[PATH_MAX + 2];
    cli_qemu_path(file, src, sizeof(src));
    char *argv_auto[] = { "qemu-img", "info", "--output=json", src, NULL };
    char *argv_fmt[] = { "qemu-img", "info", "--output=json", "-f", (char *)fmt, src, NULL };
    bool autodetect = strcmp(fmt, "auto") == 0;
    int st = cli_run(autodetect ? argv_auto : argv_fmt, &out, err, sizeof(err));
    int rc = 0;
    if (st == -ENOENT) {
        rc = -ENOENT;
        snprintf(msg, msglen, "%s", "qemu-img is not installed (apt-get install qemu-utils)");
    } else if (st != 0) {
        rc = -EINVAL;
        snprintf(msg, msglen, "%s", err[0] ? err : "qemu-img info failed");
    } else {
        json_t *j = json_loadb(out.data ? out.data : "", out.len, 0, NULL);
        json_t *vs = json_object_get(j, "virtual-size");
        const char *f = json_string_value(json_object_get(j, "format"));
        if (!json_is_integer(vs) || json_integer_value(vs) < 0 || !f || strlen(f) >= 32) {
            rc = -EBADMSG;
            snprintf(msg, msglen, "%s", "qemu-img info gave no virtual size or format");
        } else {
            *ret_size = (uint64_t)json_integer_value(vs);
            snprintf(ret_fmt, 32, "%s", f);
        }
        json_decref(j);
    }
    buf_free(&out);
    return rc;
}

/* The size of an open raw image: a regular file's length or a block device's. */
static int raw_size(int fd, uint64_t *ret)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode)) {
        *ret = (uint64_t)st.st_size;
        return 0;
    }
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(fd, 0, SEEK_END);
        if (end < 0)
            return -errno;
        *ret = (uint64_t)end;
        return 0;
    }
    return -EINVAL;
}

/* ---- amid import ---- */

static int import_usage(void)
{
    fprintf(stderr, "usage: amid import FILE [--image-format raw|qcow2|vmdk|vhdx|vpc|auto] "
                    "[--description D] [--size-gib N] [--parallel N] [--data DIR [--account ID]] "
                    "[--region R] [--encrypted [--kms-key-id K]] [--format env|json] "
                    "[--no-progress]\n");
    return 2;
}

/* Removes the half-made snapshot of a failed import, as far as it can. */
static void import_cleanup(struct sink *s)
{
    if (!s->snap[0])
        return;
    if (s->api) {
        struct cli_ebs_conn *k;
        struct cli_ebs_err e;
        if (cli_ebs_conn_new(s->api, &k) == 0) {
            if (cli_ec2_delete_snapshot(k, s->snap, &e) < 0) {
                char line[700];
                cli_ebs_err_format(&e, line, sizeof(line));
                fprintf(stderr,
                        "amid import: could not delete the unfinished snapshot %s (%s); "
                        "it expires unfinished\n",
                        s->snap, line);
            }
            cli_ebs_conn_free(k);
        }
    } else {
        struct err e = { 0 };
        if (core_snapshot_delete(s->direct->app, &s->direct->who, s->snap, &e) < 0)
            fprintf(stderr, "amid import: could not delete the unfinished snapshot %s: %s\n",
                    s->snap, e.msg);
    }
}

static void human_bytes(uint64_t n, char *out, size_t outlen)
{
    if (n >= GIB)
        snprintf(out, outlen, "%.2f GiB", (double)n / (double)GIB);
    else
        snprintf(out, outlen, "%.1f MiB", (double)n / (1 << 20));
}

int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        { "image-format", required_argument, NULL, 'i' },
        { "description", required_argument, NULL, 'D' },
        { "size-gib", required_argument, NULL, 's' },
        { "parallel", required_argument, NULL, 'p' },
        { "data", required_argument, NULL, 'd' },
        { "account", required_argument, NULL, 'a' },
        { "region", required_argument, NULL, 'r' },
        { "format", required_argument, NULL, 'f' },
        { "no-progress", no_argument, NULL, 'P' },
        { "encrypted", no_argument, NULL, 'E' },
        { "kms-key-id", required_argument, NULL, 'K' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *fmt_in = "auto", *description = NULL, *data = NULL, *account = NULL, *region = NULL;
    const char *kms_key = NULL;
    bool encrypted = false;
    long size_gib_min = 0, parallel = 0;
    int fmt = FMT_ENV, c;
    bool progress = true;
    while ((c = getopt_long(argc, argv, "f:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': {
            fmt_in = NULL;
            for (size_t i = 0; i < ARRAY_SIZE(image_formats); i++)
                if (strcmp(optarg, image_formats[i]) == 0)
                    fmt_in = image_formats[i];
            if (!fmt_in)
                return import_usage();
            break;
        }
        case 'D':
            description = optarg;
            break;
        case 's':
            if ((size_gib_min = cli_parse_count(optarg, 1, MAX_SIZE_GIB)) < 0)
                return import_usage();
            break;
        case 'p':
            if ((parallel = cli_parse_count(optarg, 1, 64)) < 0)
                return import_usage();
            break;
        case 'd':
            data = optarg;
            break;
        case 'a':
            account = optarg;
            break;
        case 'r':
            region = optarg;
            break;
        case 'f':
            if ((fmt = cli_format_parse(optarg)) < 0)
                return import_usage();
            break;
        case 'P':
            progress = false;
            break;
        case 'E':
            encrypted = true;
            break;
        case 'K':
            kms_key = optarg;
            break;
        case 'h':
            printf("usage: amid import FILE [--image-format raw|qcow2|vmdk|vhdx|vpc|auto] "
                   "[--description D] [--size-gib N] [--parallel N] [--data DIR [--account ID]] "
                   "[--region R] [--encrypted [--kms-key-id K]] [--format env|json] "
                   "[--no-progress]\n");
            return 0;
        default:
            return import_usage();
        }
    }
    if (optind + 1 != argc || (account && !data) || (kms_key && !encrypted))
        return import_usage();
    const char *file = argv[optind];
    if (description && strlen(description) > 255) {
        fprintf(stderr, "amid import: the description is longer than 255 characters\n");
        return 2;
    }
    cli_catch_signals();

    /* What the image is, before anything is created. */
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "amid import: %s: %s\n", file, strerror(errno));
        return 1;
    }
    char msg[800] = "";
    char detected[32];
    uint64_t vsize = 0;
    snprintf(detected, sizeof(detected), "%s", fmt_in);
    if (strcmp(fmt_in, "raw") != 0) {
        if (qemu_info(file, fmt_in, detected, &vsize, msg, sizeof(msg)) < 0) {
            fprintf(stderr, "amid import: %s: %s\n", file, msg);
            close(fd);
            return 1;
        }
    }
    bool raw = strcmp(detected, "raw") == 0;
    if (raw) {
        int rc = raw_size(fd, &vsize);
        if (rc < 0) {
            fprintf(stderr, "amid import: %s: %s\n", file,
                    rc == -EINVAL ? "not a regular file or block device" : strerror(-rc));
            close(fd);
            return 1;
        }
    } else {
        close(fd);
        fd = -1;
    }
    int64_t size_gib = (int64_t)((vsize + GIB - 1) / GIB);
    if (size_gib < 1)
        size_gib = 1;
    if (size_gib < size_gib_min)
        size_gib = size_gib_min;
    if (size_gib > MAX_SIZE_GIB) {
        fprintf(stderr, "amid import: %s: %llu bytes is more than the largest volume (%d GiB)\n",
                file, (unsigned long long)vsize, MAX_SIZE_GIB);
        if (fd >= 0)
            close(fd);
        return 1;
    }
    char descbuf[300];
    if (!description) {
        const char *base = strrchr(file, '/');
        snprintf(descbuf, sizeof(descbuf), "Imported by amid from %.200s", base ? base + 1 : file);
        description = descbuf;
    }

    /* Where the blocks go. */
    struct sink sink = { 0 };
    struct cli_direct direct;
    memset(&direct, 0, sizeof(direct));
    int rc = 0;
    if (data) {
        if (cli_direct_open("import", data, account, region, &direct) < 0) {
            if (fd >= 0)
                close(fd);
            return 1;
        }
        sink.direct = &direct;
        struct core_ebs_start p = { .volume_size_gib = size_gib,
                                    .description = description,
                                    .timeout_min = TIMEOUT_MIN,
                                    .encrypted = encrypted,
                                    .kms_key_arn = kms_key };
        struct db_snapshot s;
        struct err e = { 0 };
        rc = core_ebs_start(direct.app, &direct.who, &p, &s, &e);
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "StartSnapshot: %s: %s", e.code ? e.code : "Error", e.msg);
        } else {
            snprintf(sink.snap, sizeof(sink.snap), "%s", s.id);
            rc = core_ebs_batch_new(direct.app, &direct.who, s.id, &sink.batch, &e);
            if (rc < 0) {
                snprintf(msg, sizeof(msg), "%s: %s", e.code ? e.code : "Error", e.msg);
                import_cleanup(&sink);
            }
        }
    } else {
        struct cli_ebs_err e;
        rc = cli_ebs_new(region, &sink.api, &e);
        struct cli_ebs_conn *k = NULL;
        if (rc == 0)
            rc = cli_ebs_conn_new(sink.api, &k);
        if (rc == 0)
            rc = cli_ebs_start(k, size_gib, description, TIMEOUT_MIN, encrypted, kms_key, sink.snap,
                               &e);
        cli_ebs_conn_free(k);
        if (rc < 0) {
            char line[700];
            cli_ebs_err_format(&e, line, sizeof(line));
            snprintf(msg, sizeof(msg), "%s%s", sink.api ? "StartSnapshot: " : "", line);
        }
    }
    if (rc < 0) {
        fprintf(stderr, "amid import: %s\n", msg);
        if (fd >= 0)
            close(fd);
        cli_ebs_free(sink.api);
        cli_direct_close(&direct);
        return 1;
    }

    /* The pipeline: the builder holds up to MAX_PENDING blocks, the queue two per worker. */
    unsigned nworkers = parallel ? (unsigned)parallel : cli_default_workers(data != NULL);
    size_t pool = 2 * nworkers + 2 + (raw ? 0 : MAX_PENDING);
    struct pipe *pl = NULL;
    int64_t t0 = time_mono_us();
    rc = pipe_new(&sink, nworkers, pool, &pl);
    if (rc < 0)
        snprintf(msg, sizeof(msg), "cannot start the workers: %s", strerror(-rc));
    struct cli_progress *prog = progress && rc == 0 ? cli_progress_new("import", vsize) : NULL;
    if (rc == 0) {
        if (raw)
            rc = produce_raw(pl, fd, vsize, prog, msg, sizeof(msg));
        else
            rc = produce_qemu(pl, file, detected, size_gib, prog, msg, sizeof(msg));
        /* A worker's failure is the first cause (the producer then only saw the pipeline
         * stop); otherwise the producer's own error stands. */
        int prc = pipe_close(pl);
        if (cli_interrupted) {
            rc = -EINTR;
            snprintf(msg, sizeof(msg), "interrupted");
        } else if (prc < 0) {
            rc = prc;
            snprintf(msg, sizeof(msg), "%s", pl->errmsg);
        }
    }
    if (fd >= 0)
        close(fd);

    /* Complete. */
    char status[32] = "";
    uint64_t nblocks = pl ? pl->nres : 0;
    if (rc == 0) {
        uint8_t linear[32];
        rc = pipe_linear(pl, linear);
        if (rc < 0) {
            snprintf(msg, sizeof(msg), "out of memory");
        } else if (sink.api) {
            struct cli_ebs_conn *k = NULL;
            struct cli_ebs_err e;
            rc = cli_ebs_conn_new(sink.api, &k);
            if (rc == 0)
                rc = cli_ebs_complete(k, sink.snap, (int64_t)nblocks, linear, status, &e);
            if (rc < 0) {
                char line[700];
                cli_ebs_err_format(&e, line, sizeof(line));
                snprintf(msg, sizeof(msg), "CompleteSnapshot: %s", line);
            }
            cli_ebs_conn_free(k);
        } else {
            struct db_snapshot s;
            struct err e = { 0 };
            rc = core_ebs_batch_commit(sink.batch, &e);
            if (rc == 0)
                rc = core_ebs_complete(direct.app, &direct.who, sink.snap, (int64_t)nblocks, linear,
                                       &s, &e);
            if (rc < 0)
                snprintf(msg, sizeof(msg), "CompleteSnapshot: %s: %s", e.code ? e.code : "Error",
                         e.msg);
            else
                snprintf(status, sizeof(status), "%s", s.state);
        }
    }
    cli_progress_end(prog, rc == 0);
    core_ebs_batch_free(sink.batch);
    if (rc < 0) {
        fprintf(stderr, "amid import: %s: %s\n", file, msg);
        import_cleanup(&sink);
    } else {
        double secs = (double)(time_mono_us() - t0) / 1e6;
        char sb[32], su[32];
        human_bytes(vsize, sb, sizeof(sb));
        human_bytes(nblocks * BS, su, sizeof(su));
        fprintf(stderr,
                "amid: imported %s (%s %s) as %s: %lld GiB volume, %llu blocks (%s) stored, "
                "%.1f s, %.1f MiB/s\n",
                file, detected, sb, sink.snap, (long long)size_gib, (unsigned long long)nblocks, su,
                secs, secs > 0 ? (double)vsize / (1 << 20) / secs : 0.0);
        if (fmt == FMT_JSON) {
            json_t *o = json_pack("{s:s, s:I, s:I, s:s, s:s}", "SnapshotId", sink.snap,
                                  "VolumeSize", (json_int_t)size_gib, "ChangedBlocksCount",
                                  (json_int_t)nblocks, "Status", status, "SourceFormat", detected);
            char *txt = json_dumps(o, JSON_INDENT(2));
            printf("%s\n", txt);
            free(txt);
            json_decref(o);
        } else {
            printf("AMID_SNAPSHOT_ID=%s AMID_VOLUME_SIZE=%lld\n", sink.snap, (long long)size_gib);
        }
        fflush(stdout);
    }
    pipe_free(pl);
    cli_ebs_free(sink.api);
    cli_direct_close(&direct);
    return rc < 0 ? 1 : 0;
}
