/*
 * vmm_proc.c — QEMU as a process: launching it detached, finding it again, watching it go.
 *
 * Launch: the daemon forks once; the child resets its signal state, starts a new session,
 * caps file sizes (RLIMIT_FSIZE, so a chatty guest cannot fill the disk with console output
 * while nobody trims it), points stdio at /dev/null and a pipe, closes every other descriptor
 * and execs QEMU with -daemonize.  QEMU forks twice more; the process we forked exits 0 once
 * the machine is initialised (or 1 with the reason on stderr / in qemu.log), which gives the
 * daemon a precise "started or failed" without polling.  The QEMU that remains has init as its
 * parent: the daemon never reaps it and its exit never signals the daemon.
 *
 * Identity: QEMU write-locks its pid file (fcntl F_SETLK) for as long as it lives, so F_GETLK
 * names the live QEMU of a run directory, or nobody; the command line must also carry the
 * instance id.  Once found, the process is held through a pidfd, so waiting for it and
 * signalling it can never hit a process that reused the pid.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmm/vmm_int.h"

#define LAUNCH_ERR_MAX 2048 /* what we keep of QEMU's stderr while it starts */

int vmm_path(char *out, size_t outlen, const char *run_dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", run_dir, name);

    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int vmm_fd_high(int fd)
{
    int nfd;

    if (fd < 0)
        return fd;
    nfd = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    if (nfd < 0) {
        nfd = -errno;
        close(fd);
        return nfd;
    }
    close(fd);
    return nfd;
}

int vmm_lock_holder(const char *run_dir)
{
    char path[PATH_MAX];
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    int fd, rc;

    if ((rc = vmm_path(path, sizeof(path), run_dir, VMM_FILE_PID)) < 0)
        return rc;
    /* Opening and closing the file is harmless: we never hold a lock on it ourselves. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    rc = fcntl(fd, F_GETLK, &fl);
    rc = rc < 0 ? -errno : 0;
    close(fd);
    if (rc < 0)
        return rc;
    if (fl.l_type == F_UNLCK || fl.l_pid <= 0) /* l_pid 0: holder in another pid namespace */
        return -ESRCH;
    return (int)fl.l_pid;
}

int vmm_cmdline_matches(pid_t pid, const char *id)
{
    char path[64], *buf;
    size_t len = 0, idlen = strlen(id);
    const size_t cap = 64 << 10;
    int fd;

    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? -ESRCH : -errno;
    buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len == 0) { /* exiting (its memory is gone, its files not yet) or a zombie */
        free(buf);
        return -ESRCH;
    }
    buf[len] = '\0';
    int found = 0;
    for (size_t off = 0; off < len;) {
        const char *arg = buf + off;
        size_t alen = strlen(arg);
        size_t next = off + alen + 1;

        if (strcmp(arg, "-name") == 0 && next < len) {
            const char *v = buf + next;

            if (strncmp(v, "guest=", 6) == 0 && strncmp(v + 6, id, idlen) == 0 &&
                (v[6 + idlen] == '\0' || v[6 + idlen] == ',')) {
                found = 1;
                break;
            }
        }
        off = next;
    }
    free(buf);
    return found;
}

int vmm_find_binary(const char *name, char *out, size_t outlen)
{
    const char *path = getenv("PATH");

    if (strchr(name, '/')) {
        char abs[PATH_MAX];

        if (!realpath(name, abs))
            return -errno;
        if (access(abs, X_OK) < 0)
            return -errno;
        if (strlen(abs) >= outlen)
            return -ENAMETOOLONG;
        memcpy(out, abs, strlen(abs) + 1);
        return 0;
    }
    if (!path || !*path)
        path = VMM_DEFAULT_PATH + 5;
    while (*path) {
        const char *end = strchr(path, ':');
        size_t dlen = end ? (size_t)(end - path) : strlen(path);
        int n = snprintf(out, outlen, "%.*s/%s", (int)dlen, path, name);

        if (dlen > 0 && path[0] == '/' && n > 0 && (size_t)n < outlen && access(out, X_OK) == 0)
            return 0;
        path += dlen;
        if (*path == ':')
            path++;
    }
    return -ENOENT;
}

static int pidfd_open_(pid_t pid)
{
#ifdef SYS_pidfd_open
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    return fd < 0 ? -errno : fd;
#else
    (void)pid;
    return -ENOSYS;
#endif
}

/* Makes a handle for the QEMU holding run_dir's lock; re-checks the lock after opening the
 * pidfd, so the pidfd refers to that QEMU and not to a process that reused its pid. */
static int handle_new(const char *run_dir, const char *id, pid_t pid, struct vmm **ret)
{
    struct vmm *vm = calloc(1, sizeof(*vm));
    int fd;

    if (!vm)
        return -ENOMEM;
    snprintf(vm->id, sizeof(vm->id), "%s", id);
    snprintf(vm->run_dir, sizeof(vm->run_dir), "%s", run_dir);
    vm->pid = pid;
    fd = pidfd_open_(pid);
    vm->pidfd = fd >= 0 ? fd : -1;
    if (fd == -ESRCH || vmm_lock_holder(run_dir) != pid) {
        vmm_free(vm);
        return -ESRCH;
    }
    *ret = vm;
    return 0;
}

void vmm_free(struct vmm *vm)
{
    if (!vm)
        return;
    if (vm->pidfd >= 0)
        close(vm->pidfd);
    free(vm);
}

pid_t vmm_pid(const struct vmm *vm)
{
    return vm->pid;
}

const char *vmm_id(const struct vmm *vm)
{
    return vm->id;
}

const char *vmm_run_dir(const struct vmm *vm)
{
    return vm->run_dir;
}

bool vmm_is_gone(struct vmm *vm)
{
    if (vm->gone)
        return true;
    if (vm->pidfd >= 0) {
        struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };

        if (poll(&p, 1, 0) > 0)
            vm->gone = true;
    } else if (vmm_lock_holder(vm->run_dir) != vm->pid) {
        vm->gone = true;
    }
    return vm->gone;
}

int vmm_wait_gone(struct vmm *vm, int timeout_ms)
{
    int64_t end_us = time_mono_us() + (int64_t)timeout_ms * 1000;

    for (;;) {
        int ms = timeout_ms < 0 ? -1 : vmm_ms_left(end_us);

        if (vmm_is_gone(vm))
            return 0;
        if (timeout_ms >= 0 && ms == 0)
            return -ETIMEDOUT;
        if (vm->pidfd >= 0) {
            struct pollfd p = { .fd = vm->pidfd, .events = POLLIN };

            if (poll(&p, 1, ms) < 0 && errno != EINTR)
                return -errno;
        } else {
            struct timespec ts = { 0, 20 * 1000 * 1000 };

            nanosleep(&ts, NULL);
        }
    }
}

int vmm_kill(struct vmm *vm, int sig)
{
    if (vmm_is_gone(vm))
        return -ESRCH;
#ifdef SYS_pidfd_send_signal
    if (vm->pidfd >= 0)
        return syscall(SYS_pidfd_send_signal, vm->pidfd, sig, NULL, 0) < 0 ? -errno : 0;
#endif
    if (vmm_lock_holder(vm->run_dir) != vm->pid)
        return -ESRCH;
    return kill(vm->pid, sig) < 0 ? -errno : 0;
}

/*
 * The lock holder, once settled: a process that is exiting has lost its command line before it
 * closes its files (and so releases the lock), so such a holder is waited for (up to 2 s) and
 * then reported as -ESRCH.
 */
static int lock_holder_settled(const char *run_dir)
{
    int64_t end = time_mono_us() + 2000 * 1000;
    int pid;

    for (;;) {
        pid = vmm_lock_holder(run_dir);
        if (pid < 0 || vmm_cmdline_matches(pid, "") != -ESRCH)
            return pid;
        if (time_mono_us() > end)
            return -ESRCH;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

bool vmm_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    if (n == 0 || n > VMM_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(id[i] >= 'a' && id[i] <= 'z') && !(id[i] >= 'A' && id[i] <= 'Z') &&
            !(id[i] >= '0' && id[i] <= '9') && (i == 0 || !strchr("._-", id[i])))
            return false;
    return true;
}

int vmm_attach(const char *run_dir, const char *id, struct vmm **ret_vm, struct err *e)
{
    char rd[PATH_MAX];
    int pid, rc;

    if (!vmm_id_ok(id))
        return err_set(e, -EINVAL, "InvalidParameterValue", "bad instance id");
    if (!run_dir || !realpath(run_dir, rd))
        return err_set(e, run_dir ? -errno : -EINVAL, "InternalError", "run directory %s: %s",
                       run_dir ? run_dir : "(null)", strerror(errno));
    pid = lock_holder_settled(rd);
    if (pid < 0)
        return err_set(e, pid, "InternalError", "no QEMU runs in %s", rd);
    rc = vmm_cmdline_matches(pid, id);
    if (rc == -ESRCH)
        return err_set(e, rc, "InternalError", "no QEMU runs in %s (pid %d exited)", rd, pid);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read the command line of pid %d: %s", pid,
                       strerror(-rc));
    if (rc == 0)
        return err_set(e, -ESTALE, "InternalError", "the QEMU in %s (pid %d) is not instance %s",
                       rd, pid, id);
    rc = handle_new(rd, id, pid, ret_vm);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "QEMU pid %d in %s: %s", pid, rd, strerror(-rc));
    return 0;
}

/* ---- launching ---- */

/* Copies src to dst atomically (temporary file, fsync, rename, fsync of the directory). */
static int copy_file(const char *src, const char *dst, const char *dir)
{
    char tmp[PATH_MAX];
    char buf[65536];
    int in, out, rc = 0;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", dst) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = -errno;
        close(in);
        return rc;
    }
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : 0;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));

            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                rc = -errno;
                break;
            }
            off += w;
        }
        if (rc < 0)
            break;
    }
    if (rc == 0 && fsync(out) < 0)
        rc = -errno;
    close(in);
    if (close(out) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, dst) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* Moves run_dir/name to run_dir/name.0, or removes it when `keep` is false. */
static int retire(const char *run_dir, const char *name, bool keep)
{
    char a[PATH_MAX], b[PATH_MAX];
    int rc;

    if ((rc = vmm_path(a, sizeof(a), run_dir, name)) < 0)
        return rc;
    if (keep) {
        if (snprintf(b, sizeof(b), "%s.0", a) >= (int)sizeof(b))
            return -ENAMETOOLONG;
        rc = rename(a, b);
    } else {
        rc = unlink(a);
    }
    return rc < 0 && errno != ENOENT ? -errno : 0;
}

/* The pipe chardev's ends: console.in a FIFO (QEMU opens it read-write, so it never blocks
 * and never sees EOF), console.out a symlink to /dev/null.  Fresh ones every start. */
static int console_files(const char *run_dir)
{
    char path[PATH_MAX];
    int rc;

    if ((rc = retire(run_dir, VMM_FILE_CONSOLE_IN, false)) < 0 ||
        (rc = retire(run_dir, VMM_FILE_CONSOLE_OUT, false)) < 0)
        return rc;
    if ((rc = vmm_path(path, sizeof(path), run_dir, VMM_FILE_CONSOLE_IN)) < 0)
        return rc;
    if (mkfifo(path, 0600) < 0)
        return -errno;
    if ((rc = vmm_path(path, sizeof(path), run_dir, VMM_FILE_CONSOLE_OUT)) < 0)
        return rc;
    return symlink("/dev/null", path) < 0 ? -errno : 0;
}

/* The last line of QEMU's log that says something, for error messages. */
static void log_reason(const char *run_dir, char *out, size_t outlen)
{
    struct buf b;

    out[0] = '\0';
    buf_init(&b, 4096);
    if (vmm_log_read(run_dir, 2048, &b) > 0) {
        char *s = b.data, *last = NULL;

        for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n"))
            if (strstr(line, "qemu") || strstr(line, "error") || strstr(line, "rror"))
                last = line;
        if (last)
            snprintf(out, outlen, "%s", last);
    }
    buf_free(&b);
}

struct launch {
    const char *qemu;
    char **argv, **envp;
    const char *run_dir;
    int devnull, err_w;
    struct rlimit fsize;
};

/* In the forked child: only async-signal-safe calls until execve. */
static void launch_child(const struct launch *l) __attribute__((noreturn));
static void launch_child(const struct launch *l)
{
    struct sigaction sa = { .sa_handler = SIG_DFL };
    sigset_t none;
    static const char msg[] = "vmm: cannot execute QEMU\n";

    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL);
    sa.sa_handler = SIG_IGN; /* past RLIMIT_FSIZE: EFBIG (output dropped), not death */
    sigaction(SIGXFSZ, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setsid();
    setrlimit(RLIMIT_FSIZE, &l->fsize);
    if (dup2(l->devnull, 0) < 0 || dup2(l->devnull, 1) < 0 || dup2(l->err_w, 2) < 0)
        _exit(126);
    close_range(3, ~0u, 0);
    if (chdir(l->run_dir) < 0)
        _exit(126);
    execve(l->qemu, l->argv, l->envp);
    (void)!write(2, msg, sizeof(msg) - 1);
    _exit(127);
}

/* Waits for the launching QEMU process to exit, collecting its stderr.  Returns its wait
 * status, or -ETIMEDOUT (it is killed and reaped). */
static int launch_wait(pid_t pid, int err_r, int64_t end_us, char *errbuf, size_t errcap)
{
    size_t errlen = 0;
    bool exited = false, eof = false;
    int status = 0;
    /* The launcher's exit wakes the poll at once through its pidfd (where there is none, the
     * poll times out every 5 ms to look). */
    int pfd = pidfd_open_(pid);

    fcntl(err_r, F_SETFL, O_NONBLOCK);
    while (!(exited && eof)) {
        struct pollfd p[2] = { { .fd = eof ? -1 : err_r, .events = POLLIN },
                               { .fd = exited ? -1 : pfd, .events = POLLIN } };
        int ms = vmm_ms_left(end_us);

        if (!exited) {
            pid_t w = waitpid(pid, &status, WNOHANG);

            if (w == pid || (w < 0 && errno == ECHILD)) {
                exited = true;
                /* The survivor closed or redirected its stderr before the launcher exited;
                 * read what is left, but never wait long for it. */
                end_us = time_mono_us() + 200 * 1000;
                continue;
            }
        }
        if (ms == 0) {
            if (exited)
                break;
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            if (pfd >= 0)
                close(pfd);
            return -ETIMEDOUT;
        }
        int cap = pfd >= 0 ? ms : (ms < 5 ? ms : 5);
        if (poll(p, 2, cap) > 0 && (p[0].revents & (POLLIN | POLLHUP))) {
            char tmp[512];
            ssize_t n = read(err_r, tmp, sizeof(tmp));

            if (n == 0) {
                eof = true;
            } else if (n > 0) {
                size_t k = (size_t)n < errcap - 1 - errlen ? (size_t)n : errcap - 1 - errlen;

                memcpy(errbuf + errlen, tmp, k);
                errlen += k;
            }
        }
    }
    if (pfd >= 0)
        close(pfd);
    errbuf[errlen] = '\0';
    return status;
}

/* Kills a QEMU that daemonised but never finished starting (found by its lock). */
static void kill_orphan(const char *run_dir)
{
    int pid = vmm_lock_holder(run_dir);

    if (pid > 0) {
        int fd = pidfd_open_(pid);

        if (fd >= 0 && vmm_lock_holder(run_dir) == pid) {
#ifdef SYS_pidfd_send_signal
            syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
#endif
        }
        if (fd >= 0)
            close(fd);
    }
}

static void chomp(char *s)
{
    size_t n = strlen(s);

    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
        s[--n] = '\0';
}

int vmm_start(const struct vmm_spec *spec, struct vmm **ret_vm, struct err *e)
{
    char rd[PATH_MAX], qemu[PATH_MAX], path[PATH_MAX], errbuf[LAUNCH_ERR_MAX];
    struct vmm_argv argv = { 0 }, envp = { 0 };
    struct launch l = { 0 };
    struct stat st;
    sigset_t all, old;
    int64_t end_us;
    int rc, pid, err_pipe[2] = { -1, -1 }, timeout;
    struct vmm *vm = NULL;

    if ((rc = vmm_spec_check(spec, e)) < 0)
        return rc;
    timeout = spec->start_timeout_ms ? spec->start_timeout_ms : VMM_START_TIMEOUT_MS;
    end_us = time_mono_us() + (int64_t)timeout * 1000;
    if (!realpath(spec->run_dir, rd) || stat(rd, &st) < 0)
        return err_set(e, -errno, "InternalError", "run directory %s: %s", spec->run_dir,
                       strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return err_set(e, -ENOTDIR, "InternalError", "%s is not a directory", rd);
    if (strlen(rd) >= VMM_RUN_DIR_MAX)
        return err_set(e, -ENAMETOOLONG, "InternalError", "run directory %s too long", rd);
    pid = lock_holder_settled(rd);
    if (pid > 0)
        return err_set(e, -EBUSY, "InternalError", "a QEMU (pid %d) already runs in %s", pid, rd);
    rc = vmm_find_binary(spec->qemu ? spec->qemu : VMM_QEMU_DEFAULT, qemu, sizeof(qemu));
    if (rc < 0)
        return err_set(e, rc, "InternalError", "QEMU binary %s: %s",
                       spec->qemu ? spec->qemu : VMM_QEMU_DEFAULT, strerror(-rc));
    if (spec->boot == VMM_BOOT_UEFI) {
        const char *code = spec->uefi_code ? spec->uefi_code : VMM_UEFI_CODE_DEFAULT;
        const char *vars = spec->uefi_vars ? spec->uefi_vars : VMM_UEFI_VARS_DEFAULT;

        if (access(code, R_OK) < 0)
            return err_set(e, -errno, "InternalError", "UEFI firmware %s: %s", code,
                           strerror(errno));
        if ((rc = vmm_path(path, sizeof(path), rd, VMM_FILE_EFIVARS)) < 0)
            return rc;
        if (access(path, F_OK) < 0 && (rc = copy_file(vars, path, rd)) < 0)
            return err_set(e, rc, "InternalError", "UEFI variables %s: %s", vars, strerror(-rc));
    }
    /* A fresh console and log per run; stale sockets and pid file out of the way. */
    if ((rc = retire(rd, VMM_FILE_CONSOLE, true)) < 0 ||
        (rc = retire(rd, VMM_FILE_LOG, true)) < 0 || (rc = retire(rd, VMM_FILE_QMP, false)) < 0 ||
        (rc = retire(rd, VMM_FILE_PID, false)) < 0 || (rc = console_files(rd)) < 0)
        return err_set(e, rc, "InternalError", "cannot prepare %s: %s", rd, strerror(-rc));
    if ((rc = vmm_path(path, sizeof(path), rd, VMM_FILE_CONSOLE)) < 0)
        return rc;
    int cfd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (cfd < 0)
        return err_set(e, -errno, "InternalError", "%s: %s", path, strerror(errno));
    close(cfd);

    if ((rc = vmm_args_build(spec, rd, qemu, &argv, e)) < 0)
        goto out;
    if ((rc = vmm_env_build(spec, &envp)) < 0)
        goto out;
    l.qemu = qemu;
    l.argv = argv.v;
    l.envp = envp.v;
    l.run_dir = rd;
    getrlimit(RLIMIT_FSIZE, &l.fsize);
    l.fsize.rlim_cur = spec->console_max ? spec->console_max : VMM_CONSOLE_MAX_DEFAULT;
    if (l.fsize.rlim_max != RLIM_INFINITY && l.fsize.rlim_cur > l.fsize.rlim_max)
        l.fsize.rlim_cur = l.fsize.rlim_max;
    l.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    l.devnull = l.devnull < 0 ? -errno : vmm_fd_high(l.devnull);
    if (l.devnull < 0) {
        rc = l.devnull;
        goto out;
    }
    if (pipe2(err_pipe, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    err_pipe[0] = vmm_fd_high(err_pipe[0]);
    err_pipe[1] = vmm_fd_high(err_pipe[1]);
    if (err_pipe[0] < 0 || err_pipe[1] < 0) {
        rc = err_pipe[0] < 0 ? err_pipe[0] : err_pipe[1];
        goto out;
    }
    l.err_w = err_pipe[1];

    /* No handler of ours may run in the child between fork and exec. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        launch_child(&l);
    rc = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        err_set(e, rc, "InternalError", "fork: %s", strerror(-rc));
        goto out;
    }
    close(err_pipe[1]);
    err_pipe[1] = -1;

    int status = launch_wait(pid, err_pipe[0], end_us, errbuf, sizeof(errbuf));
    if (status == -ETIMEDOUT) {
        kill_orphan(rd);
        rc = err_set(e, -ETIMEDOUT, "InternalError", "QEMU did not start within %d ms", timeout);
        goto out;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char reason[512];

        chomp(errbuf);
        log_reason(rd, reason, sizeof(reason));
        kill_orphan(rd);
        rc = WIFEXITED(status) && WEXITSTATUS(status) >= 126 ? -ENOEXEC : -EIO;
        err_set(e, rc, "InternalError", "QEMU failed to start: %s",
                reason[0]   ? reason
                : errbuf[0] ? errbuf
                            : "no reason given");
        goto out;
    }

    pid = vmm_lock_holder(rd);
    if (pid < 0) {
        rc = err_set(e, -ESRCH, "InternalError", "QEMU exited right after starting");
        goto out;
    }
    if ((rc = handle_new(rd, spec->id, pid, &vm)) < 0) {
        err_set(e, rc, "InternalError", "QEMU exited right after starting");
        goto out;
    }
    /* Initialised means QMP is listening; make sure it answers before calling it started. */
    struct vmm_status stt;
    rc = vmm_state(vm, &stt, e);
    if (rc == 0 && stt.state == VMM_STATE_GONE)
        rc = err_set(e, -ESRCH, "InternalError", "QEMU exited right after starting");
    if (rc < 0) {
        vmm_kill(vm, SIGKILL);
        vmm_free(vm);
        vm = NULL;
        goto out;
    }
    *ret_vm = vm;
out:
    if (l.devnull > 0)
        close(l.devnull);
    if (err_pipe[0] >= 0)
        close(err_pipe[0]);
    if (err_pipe[1] >= 0)
        close(err_pipe[1]);
    vmm_argv_free(&argv);
    vmm_argv_free(&envp);
    return rc;
}
