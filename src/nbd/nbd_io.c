/*
 * nbd_io.c — socket I/O for one NBD connection.
 *
 * Reads go through a per-connection buffer so that a burst of pipelined requests costs one
 * recv() rather than one per header; large payloads bypass it.  While negotiating, every wait
 * for input is bounded by the connection's handshake deadline (and writes by SO_SNDTIMEO), so a
 * silent or slow client cannot hold a thread for longer than that.  Writes use MSG_NOSIGNAL:
 * a client that disappears is an error return, never a SIGPIPE.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "nbd/nbd_int.h"

int64_t nbd_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until fd is readable or the handshake deadline passes. */
static int wait_readable(struct nbd_conn *c)
{
    for (;;) {
        int64_t left = c->deadline_ns - nbd_now_ns();
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int timeout, r;

        if (left <= 0)
            return -ETIMEDOUT;
        timeout = left / 1000000 + 1;
        r = poll(&pfd, 1, timeout);
        if (r > 0)
            return 0; /* readable, hung up or in error: recv tells which */
        if (r < 0 && errno != EINTR)
            return -errno;
    }
}

static ssize_t recv_some(struct nbd_conn *c, void *buf, size_t len, int flags)
{
    for (;;) {
        ssize_t r;

        if (c->deadline_ns) {
            int w = wait_readable(c);
            if (w < 0)
                return w;
        }
        r = recv(c->fd, buf, len, flags);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -ETIMEDOUT;
        if (errno == EPIPE)
            return -ECONNRESET;
        return -errno;
    }
}

/*
 * Reads exactly `len` bytes.  Returns 0, NBD_EOF if the peer closed before the first byte and
 * `msg_start` says that is a clean place to stop, -ECONNRESET if it closed mid-message,
 * -ETIMEDOUT past the handshake deadline, or another negative errno.
 */
int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len, bool msg_start)
{
    uint8_t *p = buf;
    size_t got = 0;

    while (got < len) {
        size_t want = len - got;
        ssize_t r;

        if (c->rpos < c->rlen) {
            size_t n = c->rlen - c->rpos;

            if (n > want)
                n = want;
            memcpy(p + got, c->rbuf + c->rpos, n);
            c->rpos += n;
            got += n;
            continue;
        }
        if (want >= NBD_RBUF_SIZE) {
            /* A large payload straight into place; in transmission (no deadline to watch) in
             * one call that returns only once it is all there. */
            r = recv_some(c, p + got, want, c->deadline_ns ? 0 : MSG_WAITALL);
            if (r > 0)
                got += (size_t)r;
        } else {
            r = recv_some(c, c->rbuf, NBD_RBUF_SIZE, 0);
            if (r > 0) {
                c->rpos = 0;
                c->rlen = (size_t)r;
            }
        }
        if (r == 0)
            return msg_start && got == 0 ? NBD_EOF : -ECONNRESET;
        if (r < 0)
            return (int)r;
    }
    return 0;
}

/* Reads and drops `len` bytes (an option or payload the server refuses but must skip). */
int nbd_conn_discard(struct nbd_conn *c, uint64_t len)
{
    while (len > 0) {
        ssize_t r;

        if (c->rpos < c->rlen) {
            size_t n = c->rlen - c->rpos;

            if (n > len)
                n = (size_t)len;
            c->rpos += n;
            len -= n;
            continue;
        }
        r = recv_some(c, c->rbuf, NBD_RBUF_SIZE, 0);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0)
            return (int)r;
        c->rpos = 0;
        c->rlen = (size_t)r;
    }
    return 0;
}

/* Writes all of iov[0..iovcnt); modifies iov.  Returns 0 or a negative errno. */
int nbd_conn_writev(struct nbd_conn *c, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
        ssize_t r;

        if (iovcnt > IOV_MAX)
            msg.msg_iovlen = IOV_MAX;
        r = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -ETIMEDOUT;
            if (errno == EPIPE)
                return -ECONNRESET;
            return -errno;
        }
        while (iovcnt > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return nbd_conn_writev(c, &iov, 1);
}

/*
 * Marks the connection as ending for `reason` (the first reason wins) and shuts the socket
 * down, which wakes whichever thread is blocked reading or writing it.
 */
void nbd_conn_fail(struct nbd_conn *c, int reason)
{
    int zero = 0;

    __atomic_compare_exchange_n(&c->reason, &zero, reason, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    __atomic_store_n(&c->quit, 1, __ATOMIC_SEQ_CST);
    shutdown(c->fd, SHUT_RDWR);
}
