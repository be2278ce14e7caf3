/*
 * vmm_qmp.c — a small QMP client over a Unix stream socket.
 *
 * QMP is one JSON object per line in each direction: a greeting, then replies ({"return"} or
 * {"error"}, carrying the "id" of the command they answer) interleaved with asynchronous
 * events ({"event"}).  QEMU is not trusted to be well-behaved here (a wedged or hostile QEMU
 * must not hang or bloat the daemon): the socket is non-blocking, every wait has a deadline,
 * one message may be at most max_msg bytes, and at most VMM_QMP_MAX_EVENTS events are kept.
 * Commands carry an increasing id, so after a timeout the connection stays usable: the late
 * reply is recognised by its id and dropped.  Oversized or unparsable input, or the peer
 * closing, leaves the connection broken: every later call fails with the same error.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vmm/vmm_int.h"

struct vmm_qmp {
    int fd;
    size_t max_msg;
    char *rbuf; /* bytes read but not yet consumed */
    size_t rlen, rcap;
    json_t *events[VMM_QMP_MAX_EVENTS]; /* oldest first */
    size_t nevents;
    size_t dropped;
    json_int_t next_id;
    int broken;       /* 0, or the negative errno every later call returns */
    unsigned skipped; /* lines dropped while waiting for the greeting */
};

int vmm_ms_left(int64_t end_us)
{
    int64_t left = end_us - time_mono_us();

    if (left <= 0)
        return 0;
    left = (left + 999) / 1000;
    return left > INT_MAX ? INT_MAX : (int)left;
}

static int64_t deadline_us(int timeout_ms)
{
    return time_mono_us() + (int64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000;
}

static int qmp_break(struct vmm_qmp *q, int rc)
{
    q->broken = rc;
    return rc;
}

/* Reads until a complete line is buffered; parses and returns it (new reference, an object).
 * With `skip_bad`, a line that is not a JSON object is dropped instead of breaking the
 * connection. */
static int qmp_read_msg(struct vmm_qmp *q, int64_t end_us, bool skip_bad, json_t **ret)
{
    if (q->broken)
        return q->broken;
    for (;;) {
        char *nl = q->rlen ? memchr(q->rbuf, '\n', q->rlen) : NULL;

        if (nl) {
            size_t len = (size_t)(nl - q->rbuf), used = len + 1;
            json_error_t jerr;
            json_t *msg;

            if (len > 0 && q->rbuf[len - 1] == '\r')
                len--;
            if (len == 0) { /* blank line: tolerated */
                memmove(q->rbuf, q->rbuf + used, q->rlen - used);
                q->rlen -= used;
                continue;
            }
            if (len > q->max_msg)
                return qmp_break(q, -EMSGSIZE);
            msg = json_loadb(q->rbuf, len, JSON_REJECT_DUPLICATES, &jerr);
            memmove(q->rbuf, q->rbuf + used, q->rlen - used);
            q->rlen -= used;
            if (!msg || !json_is_object(msg)) {
                json_decref(msg);
                if (skip_bad) {
                    q->skipped++;
                    continue;
                }
                return qmp_break(q, -EPROTO);
            }
            *ret = msg;
            return 0;
        }
        /* No newline within max_msg (+2 for "\r\n"): the message is too big. */
        if (q->rlen >= q->max_msg + 2)
            return qmp_break(q, -EMSGSIZE);
        if (q->rlen == q->rcap) {
            size_t ncap = q->rcap ? q->rcap * 2 : 4096;
            char *n;

            if (ncap > q->max_msg + 2)
                ncap = q->max_msg + 2;
            n = realloc(q->rbuf, ncap);
            if (!n)
                return -ENOMEM;
            q->rbuf = n;
            q->rcap = ncap;
        }

        struct pollfd p = { .fd = q->fd, .events = POLLIN };
        int ms = vmm_ms_left(end_us);
        int r = poll(&p, 1, ms);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return -ETIMEDOUT;
        ssize_t n = read(q->fd, q->rbuf + q->rlen, q->rcap - q->rlen);
        if (n == 0)
            return qmp_break(q, -ECONNRESET);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return qmp_break(q, -errno);
        }
        q->rlen += (size_t)n;
    }
}

static int qmp_send_msg(struct vmm_qmp *q, json_t *msg, int64_t end_us)
{
    char *s;
    size_t len, off = 0;
    int rc = 0;

    if (q->broken)
        return q->broken;
    s = json_dumps(msg, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    len = strlen(s);
    s[len++] = '\n'; /* replaces the NUL: json_dumps' buffer is len + 1 */
    while (off < len) {
        ssize_t n = send(q->fd, s + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN) {
            rc = qmp_break(q, errno == ECONNRESET ? -ECONNRESET : -EPIPE);
            break;
        }
        struct pollfd p = { .fd = q->fd, .events = POLLOUT };
        int r = poll(&p, 1, vmm_ms_left(end_us));
        if (r == 0) {
            /* A partial command on the wire would corrupt the stream. */
            rc = off ? qmp_break(q, -ETIMEDOUT) : -ETIMEDOUT;
            break;
        }
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
    }
    free(s);
    return rc;
}

static void qmp_queue_event(struct vmm_qmp *q, json_t *ev)
{
    if (q->nevents == VMM_QMP_MAX_EVENTS) {
        json_decref(q->events[0]);
        memmove(q->events, q->events + 1, (VMM_QMP_MAX_EVENTS - 1) * sizeof(q->events[0]));
        q->nevents--;
        q->dropped++;
    }
    q->events[q->nevents++] = ev;
}

static int qmp_error_rc(const json_t *err, const char *cmd, struct err *e)
{
    const char *cls = json_string_value(json_object_get(err, "class"));
    const char *desc = json_string_value(json_object_get(err, "desc"));
    int rc = -EREMOTEIO;

    if (cls && strcmp(cls, "CommandNotFound") == 0)
        rc = -EOPNOTSUPP;
    else if (cls && strcmp(cls, "DeviceNotFound") == 0)
        rc = -ENODEV;
    return err_set(e, rc, "InternalError", "qmp %s: %s", cmd, desc ? desc : "error");
}

int vmm_qmp_exec(struct vmm_qmp *q, const char *cmd, json_t *args, int timeout_ms,
                 json_t **ret_return, struct err *e)
{
    int64_t end_us = deadline_us(timeout_ms);
    json_int_t id = ++q->next_id;
    json_t *msg;
    int rc;

    if (args && !json_is_object(args))
        return err_set(e, -EINVAL, "InternalError", "qmp %s: arguments must be an object", cmd);
    msg = json_pack("{s:s, s:I}", "execute", cmd, "id", id);
    if (!msg || (args && json_object_set(msg, "arguments", args) < 0)) {
        json_decref(msg);
        return -ENOMEM;
    }
    rc = qmp_send_msg(q, msg, end_us);
    json_decref(msg);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "qmp %s: cannot send: %s", cmd, strerror(-rc));
    for (;;) {
        json_t *m = NULL, *idv, *val;

        rc = qmp_read_msg(q, end_us, false, &m);
        if (rc < 0)
            return err_set(e, rc, "InternalError", "qmp %s: %s", cmd,
                           rc == -ETIMEDOUT ? "no reply in time" : strerror(-rc));
        if (json_object_get(m, "event")) {
            qmp_queue_event(q, m);
            continue;
        }
        idv = json_object_get(m, "id");
        if ((val = json_object_get(m, "error")) != NULL) {
            /* No id: QEMU could not even parse a command; it can only have been ours. */
            if (idv && !(json_is_integer(idv) && json_integer_value(idv) == id)) {
                json_decref(m);
                continue;
            }
            rc = qmp_error_rc(val, cmd, e);
            json_decref(m);
            return rc;
        }
        if ((val = json_object_get(m, "return")) != NULL) {
            if (!json_is_integer(idv) || json_integer_value(idv) != id) {
                json_decref(m); /* late reply to a command that timed out */
                continue;
            }
            if (ret_return)
                *ret_return = json_incref(val);
            json_decref(m);
            return 0;
        }
        json_decref(m);
        return err_set(e, qmp_break(q, -EPROTO), "InternalError", "qmp %s: unexpected message",
                       cmd);
    }
}

static bool event_matches(json_t *ev, const char *name, const char *key, const char *value)
{
    const char *n = json_string_value(json_object_get(ev, "event"));
    const char *v;

    if (!n || strcmp(n, name) != 0)
        return false;
    if (!key)
        return true;
    v = json_string_value(json_object_get(json_object_get(ev, "data"), key));
    return v && strcmp(v, value) == 0;
}

int vmm_qmp_wait_event(struct vmm_qmp *q, const char *name, const char *key, const char *value,
                       int timeout_ms, json_t **ret_event)
{
    int64_t end_us = deadline_us(timeout_ms);

    for (size_t i = 0; i < q->nevents; i++) {
        json_t *ev = q->events[i];

        if (!event_matches(ev, name, key, value))
            continue;
        memmove(q->events + i, q->events + i + 1, (q->nevents - i - 1) * sizeof(q->events[0]));
        q->nevents--;
        if (ret_event)
            *ret_event = ev;
        else
            json_decref(ev);
        return 0;
    }
    for (;;) {
        json_t *m = NULL;
        int rc = qmp_read_msg(q, end_us, false, &m);

        if (rc < 0)
            return rc;
        if (!json_object_get(m, "event")) {
            json_decref(m); /* a late reply */
            continue;
        }
        if (!event_matches(m, name, key, value)) {
            qmp_queue_event(q, m);
            continue;
        }
        if (ret_event)
            *ret_event = m;
        else
            json_decref(m);
        return 0;
    }
}

size_t vmm_qmp_events_dropped(const struct vmm_qmp *q)
{
    return q->dropped;
}

void vmm_qmp_close(struct vmm_qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    for (size_t i = 0; i < q->nevents; i++)
        json_decref(q->events[i]);
    free(q->rbuf);
    free(q);
}

int vmm_qmp_open_fd(int fd, int timeout_ms, size_t max_msg, struct vmm_qmp **ret, struct err *e)
{
    int64_t end_us = deadline_us(timeout_ms);
    struct vmm_qmp *q;
    json_t *greeting = NULL;
    int rc, fl;

    q = calloc(1, sizeof(*q));
    if (!q) {
        close(fd);
        return -ENOMEM;
    }
    q->fd = fd;
    q->max_msg = max_msg ? max_msg : VMM_QMP_MAX_MSG;
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        rc = -errno;
        vmm_qmp_close(q);
        return err_set(e, rc, "InternalError", "qmp: %s", strerror(-rc));
    }
    /* Before the greeting, QEMU may still flush output queued for the previous client (an event
     * of a guest shutting down, or the tail of one): lines that are not the greeting are
     * skipped, a few of them, until the deadline. */
    for (;;) {
        rc = qmp_read_msg(q, end_us, true, &greeting);
        if (rc < 0 || json_is_object(json_object_get(greeting, "QMP")))
            break;
        json_decref(greeting);
        greeting = NULL;
        if (++q->skipped > VMM_QMP_MAX_EVENTS) {
            rc = -EPROTO;
            break;
        }
    }
    json_decref(greeting);
    /* Something came, but never a greeting: not a QMP server (rather than its EOF or silence). */
    if (rc < 0 && rc != -ENOMEM && q->skipped)
        rc = -EPROTO;
    if (rc < 0) {
        vmm_qmp_close(q);
        return err_set(e, rc, "InternalError", "qmp: no greeting: %s",
                       rc == -EPROTO ? "not a QMP server" : strerror(-rc));
    }
    rc = vmm_qmp_exec(q, "qmp_capabilities", NULL, vmm_ms_left(end_us), NULL, e);
    if (rc < 0) {
        vmm_qmp_close(q);
        return rc;
    }
    *ret = q;
    return 0;
}

int vmm_qmp_connect(const char *path, int timeout_ms, struct vmm_qmp **ret, struct err *e)
{
    int64_t end_us = deadline_us(timeout_ms);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sa.sun_path))
        return err_set(e, -ENAMETOOLONG, "InternalError", "qmp: socket path too long");
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* A Unix connect never blocks; EAGAIN means the listen backlog is full. */
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int rc = -errno;

        if ((rc == -EAGAIN || rc == -EINTR) && vmm_ms_left(end_us) > 0) {
            struct timespec ts = { 0, 10 * 1000 * 1000 };
            nanosleep(&ts, NULL);
            continue;
        }
        close(fd);
        return err_set(e, rc == -EAGAIN ? -ETIMEDOUT : rc, "InternalError",
                       "qmp: cannot connect to %s: %s", path, strerror(-rc));
    }
    return vmm_qmp_open_fd(fd, vmm_ms_left(end_us), 0, ret, e);
}
