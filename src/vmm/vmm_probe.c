/*
 * vmm_probe.c — does KVM really work on this host?
 *
 * Measured on a nested host where /dev/kvm exists: creating a VM and running real-mode code
 * through the raw KVM ioctls works, and a real-mode boot sector under QEMU+SeaBIOS prints in
 * ~1.4 s, but once the guest turns paging on every memory access crawls (the Linux decompressor
 * ran at ~1 MB/s; syslinux also met "KVM internal error ... emulation failure").  A guest
 * "hangs" without any error.  So the probe must run what real guests run: protected mode with
 * paging, touching memory.  The boot sector below does exactly that (16 MiB written through
 * 4 MiB pages) and then prints a marker on COM1 — a few milliseconds of guest time on a working
 * KVM, which QEMU and SeaBIOS bring to a few hundred in all; on the host above it never ends.
 *
 * Boot sector source (GNU as, `gcc -c -m32 -x assembler-with-cpp`; the bytes below are its
 * .text, padded to 510 bytes and signed 0x55 0xAA):
 *
 *       .code16
 *   start: cli; xor %ax,%ax; mov %ax,%ds; mov %ax,%ss; mov $0x7c00,%sp
 *       in $0x92,%al; or $2,%al; and $0xfe,%al; out %al,$0x92        # A20 on
 *       lgdtl 0x7c00+gdt_desc-start
 *       mov %cr0,%eax; or $1,%al; mov %eax,%cr0                       # protected mode
 *       ljmpl $8, $(0x7c00+pm32-start)
 *       .code32
 *   pm32: mov $0x10,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss
 *       mov $0x9000,%edi; mov $0x83,%eax; mov $16,%ecx                # page directory:
 *   3:  mov %eax,(%edi); add $4,%edi; add $0x400000,%eax; loop 3b     # 16 x 4 MiB, identity
 *       mov $0x9000,%eax; mov %eax,%cr3
 *       mov %cr4,%eax; or $0x10,%eax; mov %eax,%cr4                   # PSE
 *       mov %cr0,%eax; or $0x80000000,%eax; mov %eax,%cr0             # paging on
 *       mov $1,%ebx
 *   4:  mov $0x100000,%edi; mov $(16<<20)/4,%ecx; mov $0xa5a55a5a,%eax; cld; rep stosl
 *       dec %ebx; jnz 4b
 *       mov $(0x7c00+msg-start),%esi; mov $0x3f8,%dx                  # print on COM1
 *   1:  lodsb; test %al,%al; jz 2f; out %al,%dx; jmp 1b
 *   2:  hlt; jmp 2b
 *       .p2align 3
 *   gdt: .quad 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
 *   gdt_desc: .word 23; .long 0x7c00+gdt-start
 *   msg: .asciz "AMID-KVM-PROBE-OK\r\n"
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vmm/vmm_int.h"

#define PROBE_MARKER     "AMID-KVM-PROBE-OK"
#define PROBE_TIMEOUT_MS 3000
#define PROBE_DISK_SIZE  (1 << 20) /* SeaBIOS will not boot a one-sector disk */

static const unsigned char probe_code[] = {
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xe4, 0x92, 0x0c, 0x02, 0x24, 0xfe,
    0xe6, 0x92, 0x66, 0x0f, 0x01, 0x16, 0xb0, 0x7c, 0x0f, 0x20, 0xc0, 0x0c, 0x01, 0x0f, 0x22, 0xc0,
    0x66, 0xea, 0x28, 0x7c, 0x00, 0x00, 0x08, 0x00, 0x66, 0xb8, 0x10, 0x00, 0x8e, 0xd8, 0x8e, 0xc0,
    0x8e, 0xd0, 0xbf, 0x00, 0x90, 0x00, 0x00, 0xb8, 0x83, 0x00, 0x00, 0x00, 0xb9, 0x10, 0x00, 0x00,
    0x00, 0x89, 0x07, 0x83, 0xc7, 0x04, 0x05, 0x00, 0x00, 0x40, 0x00, 0xe2, 0xf4, 0xb8, 0x00, 0x90,
    0x00, 0x00, 0x0f, 0x22, 0xd8, 0x0f, 0x20, 0xe0, 0x83, 0xc8, 0x10, 0x0f, 0x22, 0xe0, 0x0f, 0x20,
    0xc0, 0x0d, 0x00, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0xbb, 0x01, 0x00, 0x00, 0x00, 0xbf, 0x00,
    0x00, 0x10, 0x00, 0xb9, 0x00, 0x00, 0x40, 0x00, 0xb8, 0x5a, 0x5a, 0xa5, 0xa5, 0xfc, 0xf3, 0xab,
    0x4b, 0x75, 0xeb, 0xbe, 0xb6, 0x7c, 0x00, 0x00, 0x66, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74,
    0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0x00, 0x00, 0x00, 0x9a, 0xcf, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x92, 0xcf, 0x00,
    0x17, 0x00, 0x98, 0x7c, 0x00, 0x00, 0x41, 0x4d, 0x49, 0x44, 0x2d, 0x4b, 0x56, 0x4d, 0x2d, 0x50,
    0x52, 0x4f, 0x42, 0x45, 0x2d, 0x4f, 0x4b, 0x0d, 0x0a, 0x00,
};

static void say(char *why, size_t why_len, const char *fmt, ...) PRINTF(3, 4);
static void say(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;

    if (!why || why_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* The disk: a memfd holding the boot sector, 1 MiB long, moved to fd >= 10. */
static int probe_disk(void)
{
    unsigned char sector[512] = { 0 };
    int fd = memfd_create("amid-kvm-probe", MFD_CLOEXEC);

    if (fd < 0)
        return -errno;
    memcpy(sector, probe_code, sizeof(probe_code));
    sector[510] = 0x55;
    sector[511] = 0xaa;
    if (ftruncate(fd, PROBE_DISK_SIZE) < 0 || pwrite(fd, sector, sizeof(sector), 0) != 512) {
        int rc = -errno;

        close(fd);
        return rc ? rc : -EIO;
    }
    return vmm_fd_high(fd);
}

struct probe_child {
    const char *qemu;
    char *const *argv;
    char *const *envp;
    int devnull, out_w, disk;
};

static void probe_exec(const struct probe_child *c) __attribute__((noreturn));
static void probe_exec(const struct probe_child *c)
{
    struct sigaction sa = { .sa_handler = SIG_DFL };
    sigset_t none;

    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &sa, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(c->devnull, 0) < 0 || dup2(c->out_w, 1) < 0 || dup2(c->out_w, 2) < 0 ||
        dup2(c->disk, 3) < 0)
        _exit(126);
    close_range(4, ~0u, 0);
    execve(c->qemu, c->argv, c->envp);
    _exit(127);
}

/* Reaps the probe QEMU, killing it unless it is exiting by itself (`exiting`): returns its
 * wait status, or -1 when it is still there after 2 s (stuck in the kernel: left behind). */
static int probe_reap(pid_t pid, bool exiting)
{
    int64_t end = time_mono_us() + 2000 * 1000;
    int status;
    pid_t w;

    if (!exiting)
        kill(pid, SIGKILL);
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && time_mono_us() < end) {
        struct timespec ts = { 0, 5 * 1000 * 1000 };

        nanosleep(&ts, NULL);
    }
    if (w == 0 && exiting) {
        kill(pid, SIGKILL);
        return probe_reap(pid, false);
    }
    return w == pid ? status : -1;
}

int vmm_probe_accel(const char *qemu, int timeout_ms, enum vmm_accel *ret_accel, char *why,
                    size_t why_len)
{
    char qpath[PATH_MAX], out[4096];
    struct vmm_argv argv = { 0 }, envp = { 0 };
    struct probe_child c = { .devnull = -1, .out_w = -1, .disk = -1 };
    int64_t t0 = time_mono_us(), end_us;
    int kvm, api, rc, pipefd[2] = { -1, -1 };
    size_t outlen = 0;
    sigset_t all, old;
    pid_t pid;

    *ret_accel = VMM_ACCEL_TCG;
    if (timeout_ms <= 0)
        timeout_ms = PROBE_TIMEOUT_MS;
    end_us = t0 + (int64_t)timeout_ms * 1000;

    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        say(why, why_len, "tcg: /dev/kvm: %s", strerror(errno));
        return 0;
    }
    api = ioctl(kvm, KVM_GET_API_VERSION, 0);
    close(kvm);
    if (api != KVM_API_VERSION) {
        say(why, why_len, "tcg: KVM API version %d, not %d", api, KVM_API_VERSION);
        return 0;
    }
    rc = vmm_find_binary(qemu ? qemu : VMM_QEMU_DEFAULT, qpath, sizeof(qpath));
    if (rc < 0) {
        say(why, why_len, "tcg: no QEMU binary: %s", strerror(-rc));
        return 0;
    }

    const char *args[] = { qpath,
                           "-nodefaults",
                           "-no-user-config",
                           "-machine",
                           "pc",
                           "-accel",
                           "kvm",
                           "-cpu",
                           "host",
                           "-m",
                           "32",
                           "-smp",
                           "1",
                           "-display",
                           "none",
                           "-no-reboot",
                           "-serial",
                           "stdio",
                           "-drive",
                           "file=/proc/self/fd/3,format=raw,if=virtio,readonly=on",
                           NULL };
    for (size_t i = 0; args[i] && rc == 0; i++)
        rc = vmm_argv_add(&argv, args[i]);
    if (rc == 0)
        rc = vmm_argv_add(&envp, VMM_DEFAULT_PATH);
    if (rc < 0)
        goto out;
    c.disk = probe_disk();
    c.devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    c.devnull = c.devnull < 0 ? -errno : vmm_fd_high(c.devnull);
    if (c.disk < 0 || c.devnull < 0) {
        rc = c.disk < 0 ? c.disk : c.devnull;
        goto out;
    }
    if (pipe2(pipefd, O_CLOEXEC) < 0) {
        rc = -errno;
        goto out;
    }
    pipefd[0] = vmm_fd_high(pipefd[0]);
    pipefd[1] = vmm_fd_high(pipefd[1]);
    if (pipefd[0] < 0 || pipefd[1] < 0) {
        rc = pipefd[0] < 0 ? pipefd[0] : pipefd[1];
        goto out;
    }
    c.qemu = qpath;
    c.argv = argv.v;
    c.envp = envp.v;
    c.out_w = pipefd[1];

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = fork();
    if (pid == 0)
        probe_exec(&c);
    rc = pid < 0 ? -errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0)
        goto out;
    close(pipefd[1]);
    pipefd[1] = -1;

    /* Read QEMU's serial output and stderr until the marker, an error, EOF or the deadline. */
    const char *verdict = NULL;
    for (;;) {
        struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
        int ms = vmm_ms_left(end_us);
        ssize_t n;

        if (ms == 0) {
            verdict = "timeout";
            break;
        }
        if (poll(&p, 1, ms) <= 0)
            continue;
        if (outlen == sizeof(out) - 1) { /* keep the last half: the marker may straddle */
            memmove(out, out + sizeof(out) / 2, outlen - sizeof(out) / 2);
            outlen -= sizeof(out) / 2;
        }
        n = read(pipefd[0], out + outlen, sizeof(out) - 1 - outlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            verdict = "exit";
            break;
        }
        outlen += (size_t)n;
        out[outlen] = '\0';
        if (strstr(out, PROBE_MARKER)) {
            verdict = "ok";
            break;
        }
        if (strstr(out, "KVM internal error")) {
            verdict = "internal";
            break;
        }
    }
    int status = probe_reap(pid, strcmp(verdict, "exit") == 0);
    out[outlen] = '\0';

    long long took = (time_mono_us() - t0) / 1000;
    if (strcmp(verdict, "ok") == 0) {
        *ret_accel = VMM_ACCEL_KVM;
        say(why, why_len, "kvm: probe guest (paging, 16 MiB written) finished in %lld ms", took);
    } else if (strcmp(verdict, "timeout") == 0) {
        say(why, why_len, "tcg: KVM probe guest did not finish within %d ms (KVM too slow or hung)",
            timeout_ms);
    } else if (strcmp(verdict, "internal") == 0) {
        say(why, why_len, "tcg: KVM internal error after %lld ms", took);
    } else if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        /* -no-reboot: a guest reset (triple fault) makes QEMU exit 0 */
        say(why, why_len, "tcg: KVM probe guest crashed (reset) after %lld ms", took);
    } else {
        char *nl, *msg = strstr(out, "qemu");

        if (msg && (nl = strchr(msg, '\n')) != NULL)
            *nl = '\0';
        say(why, why_len, "tcg: qemu -accel kvm exited after %lld ms: %s", took,
            msg ? msg : "no message");
    }
    rc = 0;
out:
    if (rc < 0)
        say(why, why_len, "tcg: probe could not run: %s", strerror(-rc));
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (c.disk >= 0)
        close(c.disk);
    if (c.devnull >= 0)
        close(c.devnull);
    vmm_argv_free(&argv);
    vmm_argv_free(&envp);
    return rc;
}
