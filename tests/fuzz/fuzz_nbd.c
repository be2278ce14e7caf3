/*
 * fuzz_nbd.c — fuzz target for the NBD server: the input is everything a client sends on one
 * connection.
 *
 * Each input gets fresh memory devices and one connection over a socketpair, served by
 * nbd_server_handle_fd on the fuzzing thread; a pump thread feeds the input, then half-closes,
 * and drains the server's replies until the server closes.  Exports: "" and "a" (read-write,
 * 1 MiB), "ro" (read-only), "plain" (no trim, write-zeroes or block status callbacks: the
 * server's fallbacks), "busy" (refused with -EBUSY); anything else does not exist.
 *
 * With libFuzzer (clang 14 on Debian 12):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DNBD_FUZZ_LIBFUZZER -D_GNU_SOURCE \
 *       -Isrc tests/fuzz/fuzz_nbd.c src/nbd/nbd_*.c -lpthread -o /tmp/fuzz_nbd
 *   /tmp/fuzz_nbd -max_len=4096 /tmp/corpus tests/fuzz/corpus/nbd
 * Without NBD_FUZZ_LIBFUZZER, main() replays the files and directories named on the command
 * line (the committed corpus is replayed that way as an ordinary test).
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nbd/nbd.h"
#include "nbd/nbd_testdev.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DEV_SIZE (1u << 20)

struct fuzz_devs {
    struct blockdev *rw, *plain;
};

static int fz_open(void *opaque, const char *name, unsigned flags, struct nbd_export *ret)
{
    struct fuzz_devs *d = opaque;

    (void)flags;
    if (strcmp(name, "") == 0 || strcmp(name, "a") == 0)
        *ret = (struct nbd_export){ .bd = d->rw, .name = "a", .description = "fuzz" };
    else if (strcmp(name, "ro") == 0)
        *ret = (struct nbd_export){ .bd = d->rw, .flags = NBD_EXPORT_READONLY };
    else if (strcmp(name, "plain") == 0)
        *ret = (struct nbd_export){ .bd = d->plain, .flags = NBD_EXPORT_MULTI_CONN };
    else if (strcmp(name, "busy") == 0)
        return -EBUSY;
    else
        return -ENOENT;
    return 0;
}

static void fz_release(void *opaque, struct nbd_export *exp)
{
    (void)opaque;
    (void)exp;
}

static int fz_list(void *opaque, int (*emit)(void *ctx, const char *name, const char *description),
                   void *ctx)
{
    int r;

    (void)opaque;
    r = emit(ctx, "a", "fuzz");
    if (r == 0)
        r = emit(ctx, "ro", NULL);
    if (r == 0)
        r = emit(ctx, "plain", NULL);
    return r;
}

static const struct nbd_resolver fz_resolver = {
    .open = fz_open,
    .release = fz_release,
    .list = fz_list,
};

struct pump {
    int fd;
    const uint8_t *data;
    size_t size;
};

/* Writes the input and reads the replies without ever blocking on either. */
static void *pump_main(void *arg)
{
    struct pump *p = arg;
    size_t off = 0;
    bool wdone = false;
    static __thread char sink[65536];

    if (p->size == 0) {
        shutdown(p->fd, SHUT_WR);
        wdone = true;
    }
    for (;;) {
        struct pollfd pfd = { .fd = p->fd, .events = POLLIN | (wdone ? 0 : POLLOUT) };

        if (poll(&pfd, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(p->fd, sink, sizeof(sink), MSG_DONTWAIT);

            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
        if (!wdone && (pfd.revents & POLLOUT)) {
            ssize_t r = send(p->fd, p->data + off, p->size - off, MSG_DONTWAIT | MSG_NOSIGNAL);

            if (r > 0)
                off += (size_t)r;
            if ((r < 0 && errno != EAGAIN && errno != EINTR) || off == p->size) {
                shutdown(p->fd, SHUT_WR);
                wdone = true;
            }
        }
    }
    return NULL;
}

static struct nbd_server *srv;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct fuzz_devs devs;
    pthread_t pump_thread;
    struct pump p;
    int sv[2];

    if (!srv) {
        struct nbd_server_config cfg = {
            .resolver = &fz_resolver,
            .opaque = &devs,
            .workers = 2,
            .handshake_timeout_ms = 60000,
        };

        if (nbd_server_new(&cfg, &srv) < 0)
            abort();
    }
    if (nbd_memdev_new(FUZZ_DEV_SIZE, 0, &devs.rw) < 0 ||
        nbd_memdev_new(FUZZ_DEV_SIZE,
                       NBD_MEMDEV_NO_TRIM | NBD_MEMDEV_NO_WRITE_ZEROES | NBD_MEMDEV_NO_BLOCK_STATUS,
                       &devs.plain) < 0)
        abort();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    p = (struct pump){ .fd = sv[1], .data = data, .size = size };
    if (pthread_create(&pump_thread, NULL, pump_main, &p) != 0)
        abort();
    nbd_server_handle_fd(srv, sv[0]);
    pthread_join(pump_thread, NULL);
    close(sv[1]);
    devs.rw->ops->close(devs.rw);
    devs.plain->ops->close(devs.plain);
    return 0;
}

#ifndef NBD_FUZZ_LIBFUZZER
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long len;

    if (!f)
        return -errno;
    if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
        fclose(f);
        return -EIO;
    }
    buf = malloc(len ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        fclose(f);
        return -EIO;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    return 0;
}

static int replay(const char *path, unsigned *count)
{
    struct stat st;
    DIR *d;
    struct dirent *e;
    int r = 0;

    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode)) {
        r = replay_file(path);
        *count += r == 0;
        return r;
    }
    d = opendir(path);
    if (!d)
        return -errno;
    while (r == 0 && (e = readdir(d))) {
        char sub[4096];

        if (e->d_name[0] == '.')
            continue;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        r = replay(sub, count);
    }
    closedir(d);
    return r;
}

int main(int argc, char **argv)
{
    unsigned count = 0;

    for (int i = 1; i < argc; i++) {
        int r = replay(argv[i], &count);

        if (r < 0) {
            fprintf(stderr, "fuzz_nbd: %s: %s\n", argv[i], strerror(-r));
            return 1;
        }
    }
    if (count == 0) {
        fprintf(stderr, "fuzz_nbd: no inputs replayed\n");
        return 1;
    }
    nbd_server_free(srv);
    printf("fuzz_nbd: replayed %u inputs\n", count);
    return 0;
}
#endif
