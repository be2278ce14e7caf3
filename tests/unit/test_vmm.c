/*
 * test_vmm.c — unit tests of src/vmm without QEMU.
 *
 *  - the QMP client against a scripted peer on a socketpair: greeting, capabilities, events
 *    interleaved with replies, replies for other ids, error classes, oversized and garbage
 *    messages, a peer that is slow, trickles bytes, or hangs up, the event queue's cap;
 *  - spec checks and the QEMU command line: quoting of the IMDS command (round-tripped through
 *    a re-implementation of the GLib shell-parser subset it relies on), QemuOpts escaping of
 *    paths, the JSON of disks and network, UEFI, KVM;
 *  - the console log: Latest vs. from the start, caps, trimming in place while a writer
 *    appends, QEMU's log tail;
 *  - finding and controlling a QEMU: a child process that holds the pid file's lock and
 *    carries "-name guest=ID" on its command line stands in for QEMU, and a fake QMP monitor on
 *    run_dir/qmp.sock answers like QEMU does (state mapping, hot-plug and unplug sequences,
 *    GONE after the process dies, kill through the pidfd).
 *
 * Every wait in the peers has a time limit, so a bug fails a test instead of hanging it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vmm/vmm_int.h"

static void msleep(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}

/* ---- a scripted QMP peer on a socketpair ---- */

struct peer {
    int fd;
    pthread_t th;
    void (*script)(struct peer *p);
    char rbuf[1 << 16];
    size_t rlen;
    int ncmds;
};

static void peer_send(struct peer *p, const char *s)
{
    size_t len = strlen(s), off = 0;

    while (off < len) {
        ssize_t n = send(p->fd, s + off, len - off, MSG_NOSIGNAL);

        if (n <= 0)
            return;
        off += (size_t)n;
    }
}

static void peer_sendf(struct peer *p, const char *fmt, ...) PRINTF(2, 3);
static void peer_sendf(struct peer *p, const char *fmt, ...)
{
    char buf[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    peer_send(p, buf);
}

/* Reads one command line (5 s limit); returns it parsed, or NULL. */
static json_t *peer_recv(struct peer *p)
{
    int64_t end = time_mono_us() + 5000000;

    for (;;) {
        char *nl = memchr(p->rbuf, '\n', p->rlen);

        if (nl) {
            size_t len = (size_t)(nl - p->rbuf);
            json_t *j = json_loadb(p->rbuf, len, 0, NULL);

            memmove(p->rbuf, nl + 1, p->rlen - len - 1);
            p->rlen -= len + 1;
            p->ncmds++;
            return j;
        }
        struct pollfd pf = { .fd = p->fd, .events = POLLIN };
        if (poll(&pf, 1, vmm_ms_left(end)) <= 0)
            return NULL;
        ssize_t n = read(p->fd, p->rbuf + p->rlen, sizeof(p->rbuf) - p->rlen);
        if (n <= 0)
            return NULL;
        p->rlen += (size_t)n;
    }
}

static const char *cmd_name(json_t *c)
{
    return json_string_value(json_object_get(c, "execute"));
}

static long long cmd_id(json_t *c)
{
    return (long long)json_integer_value(json_object_get(c, "id"));
}

/* Receives a command, checks its name, answers {"return": RET, "id": same}. */
static void peer_expect(struct peer *p, const char *name, const char *ret)
{
    json_t *c = peer_recv(p);

    if (!c || !cmd_name(c) || strcmp(cmd_name(c), name) != 0) {
        fprintf(stderr, "peer: expected %s\n", name);
        json_decref(c);
        return;
    }
    peer_sendf(p, "{\"return\": %s, \"id\": %lld}\r\n", ret, cmd_id(c));
    json_decref(c);
}

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": " \
    "\"\"}, \"capabilities\": [\"oob\"]}}\r\n"

static void peer_hello(struct peer *p)
{
    peer_send(p, GREETING);
    peer_expect(p, "qmp_capabilities", "{}");
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;

    p->script(p);
    return NULL;
}

/* Starts the peer; returns the client's end. */
static int peer_start(struct peer *p, void (*script)(struct peer *p))
{
    int sv[2];

    memset(p, 0, sizeof(*p));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    p->fd = sv[1];
    p->script = script;
    assert_int_equal(pthread_create(&p->th, NULL, peer_main, p), 0);
    return sv[0];
}

static void peer_join(struct peer *p)
{
    pthread_join(p->th, NULL);
    close(p->fd);
}

/* --- scripts --- */

static void script_basic(struct peer *p)
{
    json_t *c;

    peer_hello(p);
    /* query-status: two events before the reply, the reply split in three writes */
    c = peer_recv(p);
    peer_send(p, "{\"event\": \"STOP\", \"data\": {}, \"timestamp\": {}}\r\n");
    peer_send(p, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d1\"}}\r\n");
    peer_send(p, "{\"return\": {\"status\"");
    msleep(20);
    peer_send(p, ": \"running\", \"running\": true}, ");
    msleep(20);
    peer_sendf(p, "\"id\": %lld}\r\n", cmd_id(c));
    json_decref(c);
    /* query-name: a reply for another id first (late), a blank line, then ours */
    c = peer_recv(p);
    peer_sendf(p, "{\"return\": {\"name\": \"stale\"}, \"id\": %lld}\r\n\r\n", cmd_id(c) + 100);
    peer_sendf(p, "{\"return\": {\"name\": \"i-1\"}, \"id\": %lld}\n", cmd_id(c));
    json_decref(c);
    /* an event arriving while the client waits for events */
    msleep(50);
    peer_send(p, "{\"event\": \"SHUTDOWN\", \"data\": {\"reason\": \"guest-shutdown\"}}\r\n");
    /* the arguments arrive as sent */
    c = peer_recv(p);
    json_t *reply = json_pack("{s:{s:O}, s:I}", "return", "echo",
                              json_object_get(json_object_get(c, "arguments"), "id"), "id",
                              (json_int_t)cmd_id(c));
    char *text = json_dumps(reply, JSON_COMPACT);
    peer_sendf(p, "%s\r\n", text);
    free(text);
    json_decref(reply);
    json_decref(c);
}

static void test_qmp_basic(void **state)
{
    struct peer p;
    struct vmm_qmp *q;
    struct err e = { 0 };
    json_t *r = NULL, *ev = NULL;
    int fd = peer_start(&p, script_basic);

    (void)state;
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    assert_int_equal(vmm_qmp_exec(q, "query-status", NULL, 2000, &r, &e), 0);
    assert_string_equal(json_string_value(json_object_get(r, "status")), "running");
    json_decref(r);
    assert_int_equal(vmm_qmp_exec(q, "query-name", NULL, 2000, &r, &e), 0);
    assert_string_equal(json_string_value(json_object_get(r, "name")), "i-1");
    json_decref(r);
    /* queued while waiting for query-status */
    assert_int_equal(vmm_qmp_wait_event(q, "DEVICE_DELETED", "device", "d2", 0, NULL), -ETIMEDOUT);
    assert_int_equal(vmm_qmp_wait_event(q, "DEVICE_DELETED", "device", "d1", 0, &ev), 0);
    assert_string_equal(json_string_value(json_object_get(ev, "event")), "DEVICE_DELETED");
    json_decref(ev);
    assert_int_equal(vmm_qmp_wait_event(q, "STOP", NULL, NULL, 0, NULL), 0);
    assert_int_equal(vmm_qmp_wait_event(q, "STOP", NULL, NULL, 0, NULL), -ETIMEDOUT);
    /* read off the wire */
    assert_int_equal(vmm_qmp_wait_event(q, "SHUTDOWN", "reason", "guest-shutdown", 2000, NULL), 0);
    json_t *args = json_pack("{s:s}", "id", "d\"1");
    assert_int_equal(vmm_qmp_exec(q, "device_del", args, 2000, &r, &e), 0);
    assert_string_equal(json_string_value(json_object_get(r, "echo")), "d\"1");
    json_decref(r);
    json_decref(args);
    /* not an object */
    args = json_array();
    assert_int_equal(vmm_qmp_exec(q, "x", args, 100, NULL, &e), -EINVAL);
    json_decref(args);
    assert_int_equal(vmm_qmp_events_dropped(q), 0);
    vmm_qmp_close(q);
    peer_join(&p);
}

static void script_errors(struct peer *p)
{
    json_t *c;

    peer_hello(p);
    c = peer_recv(p);
    peer_sendf(p,
               "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", \"desc\": \"boom\"}}\r\n",
               cmd_id(c));
    json_decref(c);
    c = peer_recv(p);
    peer_sendf(p,
               "{\"id\": %lld, \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"x\"}}\r\n",
               cmd_id(c));
    json_decref(c);
    c = peer_recv(p);
    peer_sendf(p, "{\"id\": %lld, \"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"d\"}}\r\n",
               cmd_id(c));
    json_decref(c);
    /* an error without id (QEMU could not parse the command) */
    c = peer_recv(p);
    peer_send(p, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\r\n");
    json_decref(c);
    /* an error for another id is not ours */
    c = peer_recv(p);
    peer_sendf(p, "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", \"desc\": \"old\"}}\r\n",
               cmd_id(c) - 1);
    peer_sendf(p, "{\"id\": %lld, \"return\": {}}\r\n", cmd_id(c));
    json_decref(c);
}

static void test_qmp_errors(void **state)
{
    struct peer p;
    struct vmm_qmp *q;
    struct err e = { 0 };
    int fd = peer_start(&p, script_errors);

    (void)state;
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    assert_int_equal(vmm_qmp_exec(q, "a", NULL, 2000, NULL, &e), -EREMOTEIO);
    assert_non_null(strstr(e.msg, "boom"));
    assert_int_equal(vmm_qmp_exec(q, "b", NULL, 2000, NULL, &e), -EOPNOTSUPP);
    assert_int_equal(vmm_qmp_exec(q, "c", NULL, 2000, NULL, &e), -ENODEV);
    assert_int_equal(vmm_qmp_exec(q, "d", NULL, 2000, NULL, &e), -EREMOTEIO);
    assert_non_null(strstr(e.msg, "parse"));
    assert_int_equal(vmm_qmp_exec(q, "e", NULL, 2000, NULL, &e), 0);
    vmm_qmp_close(q);
    peer_join(&p);
}

static void script_oversized(struct peer *p)
{
    json_t *c;
    char *big = malloc(200000);

    peer_hello(p);
    c = peer_recv(p);
    memset(big, 'x', 199999);
    big[199999] = '\0';
    peer_sendf(p, "{\"id\": %lld, \"return\": \"", cmd_id(c));
    peer_send(p, big); /* no newline in sight: the client must give up at its cap */
    json_decref(c);
    free(big);
    peer_recv(p); /* wait for the client to hang up */
}

static void test_qmp_oversized(void **state)
{
    struct peer p;
    struct vmm_qmp *q;
    struct err e = { 0 };
    int fd = peer_start(&p, script_oversized);

    (void)state;
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 65536, &q, &e), 0);
    assert_int_equal(vmm_qmp_exec(q, "big", NULL, 2000, NULL, &e), -EMSGSIZE);
    /* the stream is unusable from now on */
    assert_int_equal(vmm_qmp_exec(q, "next", NULL, 2000, NULL, &e), -EMSGSIZE);
    vmm_qmp_close(q);
    peer_join(&p);
}

static void script_slow(struct peer *p)
{
    json_t *c1, *c2;

    peer_hello(p);
    c1 = peer_recv(p);
    msleep(300); /* the client gave up on c1 after 100 ms and sent c2 */
    c2 = peer_recv(p);
    peer_sendf(p, "{\"return\": {\"n\": 1}, \"id\": %lld}\r\n", cmd_id(c1));
    peer_sendf(p, "{\"return\": {\"n\": 2}, \"id\": %lld}\r\n", cmd_id(c2));
    json_decref(c1);
    json_decref(c2);
    /* then trickle the next reply a byte at a time */
    c1 = peer_recv(p);
    char msg[128];
    snprintf(msg, sizeof(msg), "{\"return\": {\"n\": 3}, \"id\": %lld}\r\n", cmd_id(c1));
    for (size_t i = 0; msg[i]; i++) {
        char one[2] = { msg[i], 0 };

        peer_send(p, one);
        msleep(2);
    }
    json_decref(c1);
    /* then hang up in the middle of a message */
    peer_send(p, "{\"return\": ");
}

static void test_qmp_slow_and_closing_peer(void **state)
{
    struct peer p;
    struct vmm_qmp *q;
    struct err e = { 0 };
    json_t *r = NULL;
    int fd = peer_start(&p, script_slow);
    int64_t t0;

    (void)state;
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    t0 = time_mono_us();
    assert_int_equal(vmm_qmp_exec(q, "one", NULL, 100, NULL, &e), -ETIMEDOUT);
    assert_true(time_mono_us() - t0 < 1000000);
    /* the late reply to "one" is skipped by its id */
    assert_int_equal(vmm_qmp_exec(q, "two", NULL, 2000, &r, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "n")), 2);
    json_decref(r);
    assert_int_equal(vmm_qmp_exec(q, "three", NULL, 2000, &r, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(r, "n")), 3);
    json_decref(r);
    peer_join(&p); /* closes the peer's end after a partial reply */
    /* refused on sending (EPIPE) or on reading (ECONNRESET), and from then on */
    int rc = vmm_qmp_exec(q, "four", NULL, 2000, NULL, &e);
    assert_true(rc == -EPIPE || rc == -ECONNRESET);
    assert_int_equal(vmm_qmp_exec(q, "five", NULL, 2000, NULL, &e), rc);
    vmm_qmp_close(q);
}

static void script_not_qmp(struct peer *p)
{
    peer_send(p, "{\"hello\": 1}\r\n");
}

static void script_garbage(struct peer *p)
{
    peer_send(p, "this is not json\r\n");
}

static void script_silent(struct peer *p)
{
    msleep(400);
}

static void script_garbage_later(struct peer *p)
{
    json_t *c;

    peer_hello(p);
    c = peer_recv(p);
    peer_send(p, "[1, 2]\r\n"); /* JSON, but not an object */
    json_decref(c);
}

/* QEMU flushing what it queued for the previous client before greeting the next: an event of a
 * guest shutting down, and the tail of one cut short. */
static void script_stale_then_hello(struct peer *p)
{
    peer_send(p, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, "
                 "\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}}\r\n");
    peer_send(p, "seconds\": 3}, \"event\": \"STOP\"}\r\n");
    peer_hello(p);
}

static void test_qmp_bad_peers(void **state)
{
    struct peer p;
    struct vmm_qmp *q = NULL;
    struct err e = { 0 };
    int fd;

    (void)state;
    fd = peer_start(&p, script_not_qmp);
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), -EPROTO);
    peer_join(&p);
    fd = peer_start(&p, script_garbage);
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), -EPROTO);
    peer_join(&p);
    fd = peer_start(&p, script_silent);
    assert_int_equal(vmm_qmp_open_fd(fd, 100, 0, &q, &e), -ETIMEDOUT);
    peer_join(&p);
    fd = peer_start(&p, script_stale_then_hello);
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    vmm_qmp_close(q);
    peer_join(&p);
    fd = peer_start(&p, script_garbage_later);
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    assert_int_equal(vmm_qmp_exec(q, "x", NULL, 2000, NULL, &e), -EPROTO);
    vmm_qmp_close(q);
    peer_join(&p);
    /* nobody listening */
    assert_int_equal(vmm_qmp_connect("/nonexistent/qmp.sock", 100, &q, &e), -ENOENT);
}

static void script_flood(struct peer *p)
{
    json_t *c;

    peer_hello(p);
    c = peer_recv(p);
    for (int i = 0; i < 100; i++)
        peer_sendf(p, "{\"event\": \"E\", \"data\": {\"n\": \"%d\"}}\r\n", i);
    peer_sendf(p, "{\"return\": {}, \"id\": %lld}\r\n", cmd_id(c));
    json_decref(c);
}

static void test_qmp_event_cap(void **state)
{
    struct peer p;
    struct vmm_qmp *q;
    struct err e = { 0 };
    int fd = peer_start(&p, script_flood);

    (void)state;
    assert_int_equal(vmm_qmp_open_fd(fd, 2000, 0, &q, &e), 0);
    assert_int_equal(vmm_qmp_exec(q, "x", NULL, 2000, NULL, &e), 0);
    assert_int_equal(vmm_qmp_events_dropped(q), 100 - VMM_QMP_MAX_EVENTS);
    assert_int_equal(vmm_qmp_wait_event(q, "E", "n", "0", 0, NULL), -ETIMEDOUT);
    assert_int_equal(vmm_qmp_wait_event(q, "E", "n", "99", 0, NULL), 0);
    assert_int_equal(vmm_qmp_wait_event(q, "E", "n", "36", 0, NULL), 0);
    vmm_qmp_close(q);
    peer_join(&p);
}

/* ---- spec checks and the command line ---- */

/* The subset of g_shell_parse_argv that vmm_shell_quote's output relies on: words split on
 * blanks, '...' literal, backslash outside quotes escapes the next character. */
static int gshell_parse(const char *s, char out[][256], int max)
{
    int n = 0;

    while (*s) {
        size_t len = 0;

        while (*s == ' ' || *s == '\t' || *s == '\n')
            s++;
        if (!*s)
            break;
        if (n == max)
            return -1;
        while (*s && *s != ' ' && *s != '\t' && *s != '\n') {
            if (*s == '\'') {
                const char *end = strchr(s + 1, '\'');

                if (!end)
                    return -1;
                memcpy(out[n] + len, s + 1, (size_t)(end - s - 1));
                len += (size_t)(end - s - 1);
                s = end + 1;
            } else if (*s == '\\' && s[1]) {
                out[n][len++] = s[1];
                s += 2;
            } else {
                out[n][len++] = *s++;
            }
        }
        out[n][len] = '\0';
        n++;
    }
    return n;
}

static void test_shell_quote(void **state)
{
    const char *argv[] = { "/usr/bin/amid",    "imds",        "--data",      "/var/lib/a b,c",
                           "it's \"x\" $HOME", "back\\slash", "#notcomment", "",
                           "tab\there",        "''",          NULL };
    char parsed[16][256];
    struct buf b;

    (void)state;
    buf_init(&b, 65536);
    assert_int_equal(vmm_shell_quote(&b, argv), 0);
    assert_int_equal(gshell_parse(b.data, parsed, 16), 10);
    for (int i = 0; i < 10; i++)
        assert_string_equal(parsed[i], argv[i]);
    buf_reset(&b);
    const char *simple[] = { "/bin/x", "a'b", NULL };
    assert_int_equal(vmm_shell_quote(&b, simple), 0);
    assert_string_equal(b.data, "'/bin/x' 'a'\\''b'");
    buf_reset(&b);
    assert_int_equal(vmm_opt_escape(&b, "/a,b,,c"), 0);
    assert_string_equal(b.data, "/a,,b,,,,c");
    buf_free(&b);
}

static struct vmm_spec good_spec(void)
{
    struct vmm_spec s = {
        .id = "i-0123456789abcdef0",
        .run_dir = "/run/amid/i-0123456789abcdef0",
        .accel = VMM_ACCEL_TCG,
        .vcpus = 2,
        .mem_mib = 512,
        .ndisks = 2,
    };

    s.disks[0] = (struct vmm_disk){ .name = "vol-0aaa",
                                    .nbd_socket = "/data/run/nbd.sock",
                                    .export_name = "vol-0aaa",
                                    .serial = "vol0aaa" };
    s.disks[1] = (struct vmm_disk){ .name = "vol-0bbb",
                                    .nbd_socket = "/data/run/nbd.sock",
                                    .export_name = "vol-0bbb",
                                    .readonly = true,
                                    .reconnect_delay_s = 5 };
    return s;
}

static void test_spec_check(void **state)
{
    struct err e = { 0 };
    struct vmm_spec s;
    const char *bad_imds[] = { "/bin/x", "a\nb", NULL };
    const char *empty_imds[] = { NULL };
    const char *env[] = { "NOEQUALS", NULL };

    (void)state;
    s = good_spec();
    assert_int_equal(vmm_spec_check(&s, &e), 0);
#define EXPECT_BAD(stmt)                                      \
    do {                                                      \
        s = good_spec();                                      \
        stmt;                                                 \
        assert_int_equal(vmm_spec_check(&s, &e), -EINVAL);    \
        assert_string_equal(e.code, "InvalidParameterValue"); \
    } while (0)
    EXPECT_BAD(s.id = "i-1,2");
    EXPECT_BAD(s.id = "");
    EXPECT_BAD(s.id = "-i");
    EXPECT_BAD(s.run_dir = "relative/dir");
    EXPECT_BAD(s.run_dir = "/a/very/long/run/directory/that/would/not/fit/into/a/unix/socket/"
                           "path/that/is/far/too/long");
    EXPECT_BAD(s.vcpus = 0);
    EXPECT_BAD(s.mem_mib = 16);
    EXPECT_BAD(s.ndisks = 0);
    EXPECT_BAD(s.ndisks = VMM_MAX_DISKS + 1);
    EXPECT_BAD(s.disks[1].name = "vol-0aaa");
    EXPECT_BAD(s.disks[1].name = "amid-io0");
    EXPECT_BAD(s.disks[1].name = "1abc");
    EXPECT_BAD(s.disks[1].name = "a,b");
    EXPECT_BAD(s.disks[1].name = "abcdefghijklmnopqrstuvwxyz0123456");
    EXPECT_BAD(s.disks[0].nbd_socket = "nbd.sock");
    EXPECT_BAD(s.disks[0].export_name = "");
    EXPECT_BAD(s.disks[0].export_name = "vol\x01");
    EXPECT_BAD(s.disks[0].serial = "vol0123456789abcdef01");
    EXPECT_BAD(s.disks[0].reconnect_delay_s = 100000);
    EXPECT_BAD(s.imds_argv = bad_imds);
    EXPECT_BAD(s.imds_argv = empty_imds);
    EXPECT_BAD((s.imds_argv = (const char *const[]){ "/x", NULL }, s.no_network = true));
    EXPECT_BAD(s.mac = "01:00:00:00:00:01");
    EXPECT_BAD(s.mac = "52:54:00:00:00");
    EXPECT_BAD(s.mac = "52-54-00-00-00-01");
    EXPECT_BAD(s.hostfwd[0] = "tcp::22,x");
    EXPECT_BAD(s.env = env);
    EXPECT_BAD(s.console_max = 4096);
    EXPECT_BAD(s.uefi_code = "OVMF.fd");
#undef EXPECT_BAD
    s = good_spec();
    s.mac = "52:54:00:ab:CD:ef";
    s.hostfwd[0] = "tcp:127.0.0.1:2222-:22";
    assert_int_equal(vmm_spec_check(&s, &e), 0);
}

/* The argument after `opt` whose JSON has "key": value, parsed; or NULL. */
static json_t *find_json_arg(const struct vmm_argv *a, const char *opt, const char *key,
                             const char *value)
{
    for (size_t i = 0; i + 1 < a->n; i++) {
        json_t *j;
        const char *v;

        if (strcmp(a->v[i], opt) != 0 || a->v[i + 1][0] != '{')
            continue;
        j = json_loads(a->v[i + 1], 0, NULL);
        v = json_string_value(json_object_get(j, key));
        if (v && strcmp(v, value) == 0)
            return j;
        json_decref(j);
    }
    return NULL;
}

static const char *arg_after(const struct vmm_argv *a, const char *opt, int nth)
{
    for (size_t i = 0; i + 1 < a->n; i++)
        if (strcmp(a->v[i], opt) == 0 && nth-- == 0)
            return a->v[i + 1];
    return NULL;
}

static void test_args_build(void **state)
{
    const char *imds[] = { "/usr/bin/amid",       "imds", "--data", "/srv/a b,c", "--id",
                           "i-0123456789abcdef0", NULL };
    const char *env[] = { "ASAN_OPTIONS=detect_leaks=0", NULL };
    struct vmm_spec s = good_spec();
    struct vmm_argv a = { 0 }, ev = { 0 };
    struct err e = { 0 };
    json_t *j;
    char parsed[16][256];

    (void)state;
    s.imds_argv = imds;
    s.mac = "52:54:00:12:34:56";
    s.hostfwd[0] = "tcp:127.0.0.1:2222-:22";
    s.env = env;
    assert_int_equal(vmm_args_build(&s, "/run/a,b", "/usr/bin/qemu-system-x86_64", &a, &e), 0);
    assert_string_equal(a.v[0], "/usr/bin/qemu-system-x86_64");
    assert_null(a.v[a.n]);
    assert_string_equal(arg_after(&a, "-name", 0), "guest=i-0123456789abcdef0,debug-threads=on");
    assert_string_equal(arg_after(&a, "-accel", 0), "tcg");
    assert_string_equal(arg_after(&a, "-cpu", 0), "max,erms=off,fsrm=off");
    assert_string_equal(arg_after(&a, "-smp", 0), "2");
    assert_string_equal(arg_after(&a, "-m", 0), "512M");
    assert_string_equal(arg_after(&a, "-machine", 0), "pc");
    assert_string_equal(arg_after(&a, "-pidfile", 0), "/run/a,b/qemu.pid");
    assert_string_equal(arg_after(&a, "-D", 0), "/run/a,b/qemu.log");
    /* QemuOpts escaping of the run directory's comma */
    assert_string_equal(arg_after(&a, "-chardev", 0),
                        "socket,id=amid-qmp0,path=/run/a,,b/qmp.sock,server=on,wait=off");
    assert_string_equal(arg_after(&a, "-chardev", 1), "pipe,id=amid-con0,path=/run/a,,b/console,"
                                                      "logfile=/run/a,,b/console.log,logappend=on");
    bool no_shutdown = false, daemonize = false, no_reboot = false;
    for (size_t i = 0; i < a.n; i++) {
        no_shutdown |= strcmp(a.v[i], "-no-shutdown") == 0;
        daemonize |= strcmp(a.v[i], "-daemonize") == 0;
        no_reboot |= strcmp(a.v[i], "-no-reboot") == 0;
    }
    assert_true(no_shutdown && daemonize && !no_reboot);

    /* disks: NBD nodes with reconnect, virtio-blk devices, boot index only on the first */
    j = find_json_arg(&a, "-blockdev", "node-name", "vol-0aaa");
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "driver")), "nbd");
    assert_string_equal(json_string_value(json_object_get(j, "export")), "vol-0aaa");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "server"), "path")),
                        "/data/run/nbd.sock");
    assert_int_equal(json_integer_value(json_object_get(j, "reconnect-delay")),
                     VMM_RECONNECT_DEFAULT_S);
    assert_true(json_is_false(json_object_get(j, "read-only")));
    json_decref(j);
    j = find_json_arg(&a, "-blockdev", "node-name", "vol-0bbb");
    assert_true(json_is_true(json_object_get(j, "read-only")));
    assert_int_equal(json_integer_value(json_object_get(j, "reconnect-delay")), 5);
    json_decref(j);
    j = find_json_arg(&a, "-device", "id", "vol-0aaa");
    assert_string_equal(json_string_value(json_object_get(j, "driver")), "virtio-blk-pci");
    assert_string_equal(json_string_value(json_object_get(j, "drive")), "vol-0aaa");
    assert_string_equal(json_string_value(json_object_get(j, "serial")), "vol0aaa");
    assert_string_equal(json_string_value(json_object_get(j, "werror")), "stop");
    assert_string_equal(json_string_value(json_object_get(j, "iothread")), VMM_IOTHREAD_ID);
    assert_int_equal(json_integer_value(json_object_get(j, "opt_io_size")), 512 * 1024);
    assert_int_equal(json_integer_value(json_object_get(j, "bootindex")), 0);
    json_decref(j);
    j = find_json_arg(&a, "-device", "id", "vol-0bbb");
    assert_null(json_object_get(j, "bootindex"));
    assert_null(json_object_get(j, "serial"));
    json_decref(j);

    /* network: guestfwd command quoted for GLib, hostfwd, MAC */
    j = find_json_arg(&a, "-netdev", "id", VMM_NETDEV_ID);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "net")), "169.254.0.0/16");
    const char *fwd = json_string_value(
        json_object_get(json_array_get(json_object_get(j, "guestfwd"), 0), "str"));
    const char *prefix = "tcp:169.254.169.254:80-cmd:";
    assert_true(str_startswith(fwd, prefix));
    assert_int_equal(gshell_parse(fwd + strlen(prefix), parsed, 16), 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(parsed[i], imds[i]);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "hostfwd"), 0), "str")),
        "tcp:127.0.0.1:2222-:22");
    json_decref(j);
    j = find_json_arg(&a, "-device", "driver", "virtio-net-pci");
    assert_string_equal(json_string_value(json_object_get(j, "mac")), "52:54:00:12:34:56");
    assert_string_equal(json_string_value(json_object_get(j, "romfile")), "");
    json_decref(j);
    vmm_argv_free(&a);

    assert_int_equal(vmm_env_build(&s, &ev), 0);
    assert_int_equal(ev.n, 2);
    assert_true(str_startswith(ev.v[0], "PATH=/"));
    assert_string_equal(ev.v[1], "ASAN_OPTIONS=detect_leaks=0");
    assert_null(ev.v[2]);
    vmm_argv_free(&ev);

    /* KVM, UEFI, no network */
    s = good_spec();
    s.accel = VMM_ACCEL_KVM;
    s.boot = VMM_BOOT_UEFI;
    s.no_network = true;
    assert_int_equal(vmm_args_build(&s, "/run/x", "qemu", &a, &e), 0);
    assert_string_equal(arg_after(&a, "-accel", 0), "kvm");
    assert_string_equal(arg_after(&a, "-cpu", 0), "host");
    assert_string_equal(arg_after(&a, "-machine", 0),
                        "pc,pflash0=amid-fw-code,pflash1=amid-fw-vars");
    j = find_json_arg(&a, "-blockdev", "node-name", "amid-fw-code");
    assert_string_equal(json_string_value(json_object_get(j, "filename")), VMM_UEFI_CODE_DEFAULT);
    assert_true(json_is_true(json_object_get(j, "read-only")));
    json_decref(j);
    j = find_json_arg(&a, "-blockdev", "node-name", "amid-fw-vars");
    assert_string_equal(json_string_value(json_object_get(j, "filename")), "/run/x/efivars.fd");
    json_decref(j);
    assert_null(arg_after(&a, "-netdev", 0));
    assert_null(find_json_arg(&a, "-device", "driver", "virtio-net-pci"));
    vmm_argv_free(&a);
}

/* ---- console ---- */

struct tmpdir {
    char path[64];
};

static void tmpdir_make(struct tmpdir *t)
{
    snprintf(t->path, sizeof(t->path), "/tmp/test_vmm.XXXXXX");
    assert_non_null(mkdtemp(t->path));
}

static void tmpdir_remove(struct tmpdir *t)
{
    static const char *names[] = { "console.log", "console.log.0", "qemu.log",   "qemu.log.0",
                                   "qemu.pid",    "qmp.sock",      "console.in", "console.out" };
    char p[PATH_MAX];

    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        vmm_path(p, sizeof(p), t->path, names[i]);
        unlink(p);
    }
    rmdir(t->path);
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char p[PATH_MAX];
    int fd;

    vmm_path(p, sizeof(p), dir, name);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void pattern(unsigned char *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)('a' + (i * 7 + seed + i / 4096) % 26);
}

static void test_console_read(void **state)
{
    struct tmpdir t;
    size_t len = 200000;
    unsigned char *data = malloc(len);
    struct buf b;

    (void)state;
    tmpdir_make(&t);
    buf_init(&b, 1 << 20);
    assert_int_equal(vmm_console_read(t.path, true, 0, &b), -ENOENT);
    pattern(data, len, 1);
    write_file(t.path, VMM_FILE_CONSOLE, data, len);

    assert_int_equal(vmm_console_read(t.path, true, 1000, &b), 1000);
    assert_memory_equal(b.data, data + len - 1000, 1000);
    buf_reset(&b);
    assert_int_equal(vmm_console_read(t.path, false, 1000, &b), 1000);
    assert_memory_equal(b.data, data, 1000);
    buf_reset(&b);
    /* default: EC2's 64 KiB */
    assert_int_equal(vmm_console_read(t.path, true, 0, &b), VMM_CONSOLE_EC2);
    assert_memory_equal(b.data, data + len - VMM_CONSOLE_EC2, VMM_CONSOLE_EC2);
    buf_reset(&b);
    /* a short file comes whole either way */
    write_file(t.path, VMM_FILE_CONSOLE, "AMID-BOOT: ready\n", 17);
    assert_int_equal(vmm_console_read(t.path, true, 0, &b), 17);
    assert_int_equal(vmm_console_read(t.path, false, 0, &b), 17);
    assert_string_equal(b.data, "AMID-BOOT: ready\nAMID-BOOT: ready\n");
    buf_free(&b);
    /* a buffer that cannot take the answer gets nothing */
    buf_init(&b, 10);
    assert_int_equal(vmm_console_read(t.path, true, 0, &b), -E2BIG);
    assert_int_equal(b.len, 0);
    buf_free(&b);
    /* an empty log (QEMU just started) */
    write_file(t.path, VMM_FILE_CONSOLE, "", 0);
    buf_init(&b, 100);
    assert_int_equal(vmm_console_read(t.path, false, 0, &b), 0);
    /* QEMU's log: the tail */
    write_file(t.path, VMM_FILE_LOG, data, len);
    assert_int_equal(vmm_log_read(t.path, 50, &b), 50);
    assert_memory_equal(b.data, data + len - 50, 50);
    buf_free(&b);
    free(data);
    tmpdir_remove(&t);
}

static void test_console_trim(void **state)
{
    struct tmpdir t;
    size_t len = 1 << 20, keep = 64 << 10;
    unsigned char *data = malloc(len), *more = malloc(5000);
    char p[PATH_MAX];
    struct buf b;
    struct stat st;
    long long cut;
    int wfd;

    (void)state;
    tmpdir_make(&t);
    assert_int_equal(vmm_console_trim(t.path, keep, keep), -ENOENT);
    pattern(data, len, 3);
    pattern(more, 5000, 9);
    write_file(t.path, VMM_FILE_CONSOLE, data, len);
    vmm_path(p, sizeof(p), t.path, VMM_FILE_CONSOLE);
    /* QEMU's logfile descriptor: O_APPEND, opened before the trim */
    wfd = open(p, O_WRONLY | O_APPEND);
    assert_true(wfd >= 0);

    cut = vmm_console_trim(t.path, keep, keep);
    assert_true(cut > 0);
    assert_true((size_t)cut <= len - 2 * keep);
    buf_init(&b, 4 << 20);
    assert_int_equal(vmm_console_read(t.path, false, keep, &b), (int)keep);
    assert_memory_equal(b.data, data, keep);
    buf_reset(&b);
    assert_int_equal(vmm_console_read(t.path, true, keep, &b), (int)keep);
    assert_memory_equal(b.data, data + len - keep, keep);
    buf_reset(&b);
    assert_int_equal(stat(p, &st), 0);
    if ((size_t)st.st_size < len) {
        /* collapsed: the file shrank and appends land at the new end */
        assert_int_equal((size_t)st.st_size, len - (size_t)cut);
        assert_int_equal(write(wfd, more, 5000), 5000);
        assert_int_equal(vmm_console_read(t.path, true, 5000, &b), 5000);
        assert_memory_equal(b.data, more, 5000);
        buf_reset(&b);
        assert_int_equal(vmm_console_read(t.path, true, keep + 5000, &b), (int)(keep + 5000));
        assert_memory_equal(b.data, data + len - keep, keep);
    } else {
        /* punched: same size, the middle freed */
        assert_true((size_t)st.st_blocks * 512 < len);
    }
    /* nothing more to do (within a few blocks) */
    assert_true(vmm_console_trim(t.path, keep, keep + 5000) == 0);
    /* small files are left alone */
    write_file(t.path, VMM_FILE_CONSOLE, data, 2 * keep + 4096);
    assert_int_equal(vmm_console_trim(t.path, keep, keep), 0);
    close(wfd);
    buf_free(&b);
    free(data);
    free(more);
    tmpdir_remove(&t);
}

static void test_console_write(void **state)
{
    struct tmpdir t;
    char path[PATH_MAX], got[16] = "";
    char *big;
    int fd, n;

    (void)state;
    tmpdir_make(&t);
    assert_int_equal(vmm_console_write(t.path, "x", 1), -ENOENT);
    vmm_path(path, sizeof(path), t.path, VMM_FILE_CONSOLE_IN);
    assert_int_equal(mkfifo(path, 0600), 0);
    /* nobody reads (QEMU gone): refused at once instead of blocking */
    assert_int_equal(vmm_console_write(t.path, "x", 1), -ENXIO);
    /* a reader holding the FIFO read-write, as QEMU does, but not reading (a busy guest) */
    fd = open(path, O_RDWR | O_NONBLOCK);
    assert_true(fd >= 0);
    assert_int_equal(vmm_console_write(t.path, "uname -r\n", 9), 9);
    /* the pipe fills up: a short count, never a hang */
    big = malloc(1 << 20);
    memset(big, 'z', 1 << 20);
    n = vmm_console_write(t.path, big, 1 << 20);
    assert_true(n > 0 && n < (1 << 20));
    assert_int_equal(vmm_console_write(t.path, big, 1 << 20), 0);
    free(big);
    assert_int_equal(read(fd, got, 9), 9);
    assert_string_equal(got, "uname -r\n");
    close(fd);
    tmpdir_remove(&t);
}

/* ---- a fake QEMU: a process holding the pid-file lock, plus a fake QMP monitor ---- */

struct fake_monitor {
    char path[PATH_MAX];
    int lfd;
    pthread_t th;
    const char *status; /* query-status answer */
    bool disk_present;  /* "d1" device and node */
    bool node_present;
    bool guest_releases; /* device_del leads to DEVICE_DELETED */
    bool fail_device_add;
    char log[2048]; /* commands received, space-separated */
    pthread_mutex_t lock;
};

static void monitor_serve(struct fake_monitor *m, int fd)
{
    struct peer p;

    memset(&p, 0, sizeof(p));
    p.fd = fd;
    peer_send(&p, GREETING);
    for (;;) {
        json_t *c = peer_recv(&p), *args;
        const char *name;
        char ret[1024] = "{}";
        bool event = false;

        if (!c)
            break;
        name = cmd_name(c);
        args = json_object_get(c, "arguments");
        pthread_mutex_lock(&m->lock);
        strncat(m->log, name, sizeof(m->log) - strlen(m->log) - 2);
        strcat(m->log, " ");
        if (strcmp(name, "query-status") == 0) {
            snprintf(ret, sizeof(ret), "{\"status\": \"%s\", \"running\": false}", m->status);
        } else if (strcmp(name, "qom-list") == 0) {
            snprintf(ret, sizeof(ret), "[{\"name\": \"type\", \"type\": \"string\"}%s]",
                     m->disk_present ? ", {\"name\": \"d1\", \"type\": \"child<virtio-blk-pci>\"}"
                                     : "");
        } else if (strcmp(name, "query-named-block-nodes") == 0) {
            snprintf(ret, sizeof(ret), "[%s]", m->node_present ? "{\"node-name\": \"d1\"}" : "");
        } else if (strcmp(name, "blockdev-add") == 0) {
            m->node_present = true;
        } else if (strcmp(name, "device_add") == 0) {
            if (m->fail_device_add) {
                peer_sendf(&p,
                           "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", "
                           "\"desc\": \"no slot\"}}\r\n",
                           cmd_id(c));
                pthread_mutex_unlock(&m->lock);
                json_decref(c);
                continue;
            }
            m->disk_present = true;
        } else if (strcmp(name, "device_del") == 0) {
            event = m->guest_releases;
            if (event)
                m->disk_present = false;
        } else if (strcmp(name, "blockdev-del") == 0) {
            m->node_present = false;
        } else if (strcmp(name, "query-block") == 0) {
            snprintf(ret, sizeof(ret),
                     "[{\"io-status\": \"ok\", \"qdev\": \"/machine/peripheral/vol-1/"
                     "virtio-backend\", \"inserted\": {\"node-name\": \"vol-1\", \"ro\": false}}, "
                     "{\"qdev\": \"/machine/peripheral/d1/virtio-backend\", \"io-status\": "
                     "\"failed\", \"inserted\": {\"node-name\": \"d1\", \"ro\": true}}, "
                     "{\"qdev\": \"/machine/unattached/device[3]\", \"inserted\": "
                     "{\"node-name\": \"amid-fw-code\", \"ro\": true}}]");
        } else if (strcmp(name, "echo") == 0) {
            char *s = json_dumps(args, JSON_COMPACT);

            snprintf(ret, sizeof(ret), "%s", s);
            free(s);
        }
        pthread_mutex_unlock(&m->lock);
        peer_sendf(&p, "{\"return\": %s, \"id\": %lld}\r\n", ret, cmd_id(c));
        if (event)
            peer_send(&p, "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d1\", "
                          "\"path\": \"/machine/peripheral/d1\"}}\r\n");
        json_decref(c);
    }
    close(fd);
}

static void *monitor_main(void *arg)
{
    struct fake_monitor *m = arg;

    for (;;) {
        int fd = accept(m->lfd, NULL, NULL);

        if (fd < 0)
            break;
        monitor_serve(m, fd);
    }
    return NULL;
}

static void monitor_start(struct fake_monitor *m, const char *dir)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };

    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->status = "running";
    vmm_path(m->path, sizeof(m->path), dir, VMM_FILE_QMP);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", m->path);
    m->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(m->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(m->lfd, 4), 0);
    assert_int_equal(pthread_create(&m->th, NULL, monitor_main, m), 0);
}

static void monitor_stop(struct fake_monitor *m)
{
    shutdown(m->lfd, SHUT_RDWR);
    pthread_join(m->th, NULL);
    close(m->lfd);
    unlink(m->path);
    pthread_mutex_destroy(&m->lock);
}

/* Forks a process that write-locks dir/qemu.pid and waits with "-name guest=ID,..." in its
 * command line (a shell reading a pipe), like a QEMU.  *ret_pipe ends it when closed. */
static pid_t fake_qemu(const char *dir, const char *id, int *ret_pipe)
{
    char path[PATH_MAX], name[128];
    int pfd[2], ready[2];
    pid_t pid;
    char c;

    vmm_path(path, sizeof(path), dir, VMM_FILE_PID);
    snprintf(name, sizeof(name), "guest=%s,debug-threads=on", id);
    assert_int_equal(pipe(pfd), 0);
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        int fd = open(path, O_WRONLY | O_CREAT, 0600); /* not close-on-exec: keeps the lock */

        if (fd < 0 || fcntl(fd, F_SETLK, &fl) < 0)
            _exit(1);
        dprintf(fd, "%d\n", (int)getpid());
        dup2(pfd[0], 0);
        close(pfd[1]);
        (void)!write(ready[1], "x", 1);
        execl("/bin/sh", "sh", "-c", "read x", "-name", name, (char *)NULL);
        _exit(1);
    }
    close(pfd[0]);
    close(ready[1]);
    /* the lock is held once "x" arrives; the exec follows at once, so wait for it too */
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    for (int i = 0; i < 200 && vmm_cmdline_matches(pid, id) != 1; i++)
        msleep(5);
    *ret_pipe = pfd[1];
    return pid;
}

static void test_lock_and_cmdline(void **state)
{
    struct tmpdir t;
    int pipe_w, status;
    pid_t pid;

    (void)state;
    tmpdir_make(&t);
    assert_int_equal(vmm_lock_holder(t.path), -ESRCH); /* no pid file */
    pid = fake_qemu(t.path, "i-fake1", &pipe_w);
    assert_int_equal(vmm_lock_holder(t.path), pid);
    assert_int_equal(vmm_cmdline_matches(pid, "i-fake1"), 1);
    assert_int_equal(vmm_cmdline_matches(pid, "i-fake"), 0);
    assert_int_equal(vmm_cmdline_matches(pid, "i-fake12"), 0);
    assert_int_equal(vmm_cmdline_matches(getpid(), "i-fake1"), 0);
    /* a zombie (or a process on its way out) has no command line: gone */
    pid_t z = fork();
    if (z == 0)
        _exit(0);
    msleep(50);
    assert_int_equal(vmm_cmdline_matches(z, "i-fake1"), -ESRCH);
    assert_int_equal(waitpid(z, &status, 0), z);
    assert_int_equal(vmm_cmdline_matches(z, "i-fake1"), -ESRCH);
    close(pipe_w);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    /* the file stays, the lock is gone */
    assert_int_equal(vmm_lock_holder(t.path), -ESRCH);
    tmpdir_remove(&t);
}

static void test_attach_and_control(void **state)
{
    struct tmpdir t;
    struct fake_monitor m;
    struct vmm *vm = NULL;
    struct vmm_status st;
    struct err e = { 0 };
    int pipe_w, status;
    pid_t pid;

    (void)state;
    tmpdir_make(&t);
    assert_int_equal(vmm_attach(t.path, "i-fake2", &vm, &e), -ESRCH);
    assert_int_equal(vmm_attach("/nonexistent/run", "i-fake2", &vm, &e), -ENOENT);
    assert_int_equal(vmm_attach(t.path, "bad,id", &vm, &e), -EINVAL);
    pid = fake_qemu(t.path, "i-fake2", &pipe_w);
    monitor_start(&m, t.path);
    assert_int_equal(vmm_attach(t.path, "i-other", &vm, &e), -ESTALE);
    assert_int_equal(vmm_attach(t.path, "i-fake2", &vm, &e), 0);
    assert_int_equal(vmm_pid(vm), pid);
    assert_string_equal(vmm_id(vm), "i-fake2");
    assert_string_equal(vmm_run_dir(vm), t.path);

    /* run states as QEMU names them */
    static const struct {
        const char *qemu;
        enum vmm_state state;
    } states[] = {
        { "running", VMM_STATE_RUNNING },        { "paused", VMM_STATE_PAUSED },
        { "prelaunch", VMM_STATE_PAUSED },       { "shutdown", VMM_STATE_SHUTDOWN },
        { "io-error", VMM_STATE_IO_ERROR },      { "internal-error", VMM_STATE_CRASHED },
        { "guest-panicked", VMM_STATE_CRASHED }, { "inmigrate", VMM_STATE_OTHER },
    };
    for (size_t i = 0; i < ARRAY_SIZE(states); i++) {
        m.status = states[i].qemu;
        assert_int_equal(vmm_state(vm, &st, &e), 0);
        assert_int_equal(st.state, states[i].state);
        assert_string_equal(st.raw, states[i].qemu);
        assert_int_equal(st.pid, pid);
    }
    assert_string_equal(vmm_state_name(VMM_STATE_IO_ERROR), "io-error");
    assert_int_equal(vmm_powerdown(vm, &e), 0);
    assert_int_equal(vmm_reset(vm, &e), 0);
    assert_int_equal(vmm_pause(vm, &e), 0);
    assert_int_equal(vmm_cont(vm, &e), 0);

    /* hot-plug: node then device; refused when present; rollback when device_add fails */
    struct vmm_disk d = { .name = "d1", .nbd_socket = "/tmp/nbd.sock", .export_name = "vol-9" };
    m.log[0] = '\0';
    assert_int_equal(vmm_disk_attach(vm, &d, &e), 0);
    assert_non_null(strstr(m.log, "qom-list query-named-block-nodes blockdev-add device_add"));
    assert_int_equal(vmm_disk_attach(vm, &d, &e), -EEXIST);
    m.disk_present = m.node_present = false;
    m.fail_device_add = true;
    assert_int_equal(vmm_disk_attach(vm, &d, &e), -EREMOTEIO);
    assert_non_null(strstr(e.msg, "no slot"));
    assert_false(m.node_present);
    m.fail_device_add = false;
    d.name = "amid-x";
    assert_int_equal(vmm_disk_attach(vm, &d, &e), -EINVAL);

    /* unplug: the guest releases it */
    m.disk_present = m.node_present = true;
    m.guest_releases = true;
    m.log[0] = '\0';
    assert_int_equal(vmm_disk_detach(vm, "d1", 2000, &e), 0);
    assert_non_null(strstr(m.log, "device_del"));
    assert_non_null(strstr(m.log, "blockdev-del"));
    assert_false(m.disk_present || m.node_present);
    /* nothing left: still fine */
    assert_int_equal(vmm_disk_detach(vm, "d1", 2000, &e), 0);
    /* the guest does not release it: time out, the request stays pending */
    m.disk_present = m.node_present = true;
    m.guest_releases = false;
    assert_int_equal(vmm_disk_detach(vm, "d1", 300, &e), -ETIMEDOUT);
    assert_true(m.node_present);
    /* ...until it does (device gone, node left): a second call finishes the job */
    m.disk_present = false;
    assert_int_equal(vmm_disk_detach(vm, "d1", 2000, &e), 0);
    assert_false(m.node_present);

    struct vmm_disk_info info[1];
    size_t n = 0;
    assert_int_equal(vmm_disk_list(vm, info, 1, &n, &e), 0);
    assert_int_equal(n, 2); /* firmware node skipped; only one written */
    assert_string_equal(info[0].name, "vol-1");
    assert_false(info[0].readonly);
    assert_string_equal(info[0].io_status, "ok");

    struct buf b;
    buf_init(&b, 4096);
    assert_int_equal(vmm_qmp(vm, "echo", "{\"a\": [1, \"x\"]}", 0, &b, &e), 0);
    assert_string_equal(b.data, "{\"a\":[1,\"x\"]}");
    assert_int_equal(vmm_qmp(vm, "echo", "[1]", 0, &b, &e), -EINVAL);
    buf_free(&b);
    buf_init(&b, 4);
    assert_int_equal(vmm_qmp(vm, "echo", "{\"long\": \"answer\"}", 0, &b, &e), -E2BIG);
    buf_free(&b);

    /* the process dies: GONE, not an error; kill through the pidfd; quit is a no-op */
    assert_int_equal(vmm_wait_gone(vm, 50), -ETIMEDOUT);
    assert_int_equal(vmm_kill(vm, SIGTERM), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid); /* our child: reap it */
    assert_true(WIFSIGNALED(status));
    assert_int_equal(vmm_wait_gone(vm, 2000), 0);
    assert_int_equal(vmm_state(vm, &st, &e), 0);
    assert_int_equal(st.state, VMM_STATE_GONE);
    assert_string_equal(st.raw, "");
    assert_int_equal(vmm_kill(vm, SIGKILL), -ESRCH);
    assert_int_equal(vmm_quit(vm, 100, &e), 0);
    assert_int_equal(vmm_powerdown(vm, &e), -ESRCH);
    vmm_free(vm);
    assert_int_equal(vmm_attach(t.path, "i-fake2", &vm, &e), -ESRCH);
    vmm_free(NULL);
    close(pipe_w);
    monitor_stop(&m);
    tmpdir_remove(&t);
}

static void test_start_refusals(void **state)
{
    struct tmpdir t;
    struct vmm_spec s = good_spec();
    struct vmm *vm = NULL;
    struct err e = { 0 };
    int pipe_w, status;
    pid_t pid;

    (void)state;
    tmpdir_make(&t);
    s.run_dir = t.path;
    /* a run directory with a live QEMU in it */
    pid = fake_qemu(t.path, "i-0123456789abcdef0", &pipe_w);
    assert_int_equal(vmm_start(&s, &vm, &e), -EBUSY);
    close(pipe_w);
    waitpid(pid, &status, 0);
    /* no such binary, no such directory */
    s.qemu = "/nonexistent/qemu";
    assert_int_equal(vmm_start(&s, &vm, &e), -ENOENT);
    s.qemu = "no-such-qemu-binary-anywhere";
    assert_int_equal(vmm_start(&s, &vm, &e), -ENOENT);
    s.run_dir = "/nonexistent/run";
    assert_int_equal(vmm_start(&s, &vm, &e), -ENOENT);
    /* a "QEMU" that fails at once: its stderr becomes the message */
    s = good_spec();
    s.run_dir = t.path;
    s.qemu = "/bin/false";
    assert_int_equal(vmm_start(&s, &vm, &e), -EIO);
    assert_null(vm);
    tmpdir_remove(&t);
}

static void test_probe_without_kvm(void **state)
{
    enum vmm_accel a = VMM_ACCEL_KVM;
    char why[256] = "";
    int64_t t0 = time_mono_us();

    (void)state;
    /* Whatever this host has, the answer comes within the limit and says why. */
    assert_int_equal(vmm_probe_accel("/nonexistent/qemu", 500, &a, why, sizeof(why)), 0);
    assert_int_equal(a, VMM_ACCEL_TCG);
    assert_true(str_startswith(why, "tcg: "));
    assert_true(time_mono_us() - t0 < 2000000);
    assert_string_equal(vmm_accel_name(VMM_ACCEL_KVM), "kvm");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qmp_basic),        cmocka_unit_test(test_qmp_errors),
        cmocka_unit_test(test_qmp_oversized),    cmocka_unit_test(test_qmp_slow_and_closing_peer),
        cmocka_unit_test(test_qmp_bad_peers),    cmocka_unit_test(test_qmp_event_cap),
        cmocka_unit_test(test_shell_quote),      cmocka_unit_test(test_spec_check),
        cmocka_unit_test(test_args_build),       cmocka_unit_test(test_console_read),
        cmocka_unit_test(test_console_trim),     cmocka_unit_test(test_console_write),
        cmocka_unit_test(test_lock_and_cmdline), cmocka_unit_test(test_attach_and_control),
        cmocka_unit_test(test_start_refusals),   cmocka_unit_test(test_probe_without_kvm),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
