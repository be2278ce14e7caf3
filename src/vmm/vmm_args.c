/*
 * vmm_args.c — checking a vmm_spec and turning it into QEMU's command line.
 *
 * Everything structured goes to QEMU as JSON (-blockdev, -device, -netdev, -object accept it
 * since QEMU 7.1), built with jansson, so volume ids, socket paths and the IMDS command need
 * no QemuOpts escaping there.  The two options that only take "key=value,..." (-chardev,
 * -machine) get paths with ',' doubled.  The IMDS command goes through two parsers: JSON to
 * QEMU, then GLib's g_shell_parse_argv in libslirp, for which every argument is single-quoted.
 *
 * The line, and why (QEMU 7.2, Debian 12):
 *   -daemonize -pidfile -D        QEMU forks into its own session and reports "initialised" or
 *                                 its error through the launching process's exit status; it
 *                                 write-locks the pid file for its lifetime (vmm_attach); -D
 *                                 keeps its stderr in qemu.log after daemonising.
 *   -no-shutdown                  guest power-off leaves QEMU in state "shutdown": the
 *                                 supervisor can tell a clean power-off from a crash, even
 *                                 across a daemon restart.
 *   -machine pc                   i440FX: ACPI PCI hot-plug on the root bus, no root ports to
 *                                 pre-allocate for AttachVolume; SeaBIOS or OVMF.
 *   -cpu host (kvm) / max (tcg)   all features the accelerator can give (x86-64-v2+ guests),
 *                                 under TCG without ERMS and FSRM: they make the guest kernel
 *                                 copy with `rep movsb`, which TCG runs a byte per iteration,
 *                                 and that halved guest disk throughput (every block of I/O is
 *                                 copied between page cache and user memory in the guest).
 *   nbd blockdev                  reconnect-delay: a lost server (daemon restart) stalls I/O
 *                                 instead of failing it; discard=unmap passes guest TRIM on to
 *                                 amid as NBD TRIM.  Caching: QEMU's defaults (writeback with
 *                                 flush passthrough: the guest sees a volatile write cache and
 *                                 its flushes become NBD FLUSH, which amid acknowledges only
 *                                 once durable).  aio= does not apply: it is a file-posix
 *                                 option; the NBD client does its own non-blocking I/O.
 *   virtio-blk-pci                werror/rerror=stop: an error that outlives reconnect-delay
 *                                 pauses the VM (io-error) instead of handing the guest EIO
 *                                 (ext4 would remount read-only); iothread: disk I/O off the
 *                                 main loop, so QMP and the console stay responsive;
 *                                 opt_io_size: amid's 512 KiB block (what its NBD server
 *                                 advertises as preferred block size), so guests align file
 *                                 systems to it (mkfs stripe width) and read ahead two blocks
 *                                 (Linux: 2 x io_opt) — whole blocks are amid's cheap case.
 *   -chardev pipe,logfile=        the serial console: output to console.out (/dev/null, so
 *                                 writes never fail and the log is complete), logged to
 *                                 console.log (appended, so vmm_console_trim can cut it in
 *                                 place); input from the FIFO console.in.
 *   -sandbox on,...               seccomp (inherited by the guestfwd command too): the default
 *                                 deny list, obsolete syscalls, resource control; spawn stays
 *                                 allowed (guestfwd), and so does elevateprivileges, because
 *                                 it also denies the setsid() that -daemonize needs.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/vmm_int.h"

/* The optimal I/O size guests are told for every disk: amid's volume block, the preferred block
 * size its NBD server advertises (the vmm module knows neither vol nor nbd). */
#define VMM_DISK_OPT_IO (512 * 1024)

void vmm_argv_free(struct vmm_argv *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

int vmm_argv_add(struct vmm_argv *a, const char *s)
{
    if (a->n + 2 > a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 32;
        char **n = realloc(a->v, ncap * sizeof(*n));

        if (!n)
            return -ENOMEM;
        a->v = n;
        a->cap = ncap;
    }
    a->v[a->n] = strdup(s);
    if (!a->v[a->n])
        return -ENOMEM;
    a->n++;
    a->v[a->n] = NULL;
    return 0;
}

static int argv_addf(struct vmm_argv *a, const char *fmt, ...) PRINTF(2, 3);
static int argv_addf(struct vmm_argv *a, const char *fmt, ...)
{
    struct buf b;
    va_list ap;
    int rc;

    buf_init(&b, 1 << 20);
    va_start(ap, fmt);
    rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc == 0)
        rc = vmm_argv_add(a, b.data ? b.data : "");
    buf_free(&b);
    return rc;
}

/* Adds `opt` then `j` dumped as compact JSON; consumes the reference to j. */
static int argv_add_json(struct vmm_argv *a, const char *opt, json_t *j)
{
    char *s;
    int rc;

    if (!j)
        return -ENOMEM;
    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return -ENOMEM;
    rc = vmm_argv_add(a, opt);
    if (rc == 0)
        rc = vmm_argv_add(a, s);
    free(s);
    return rc;
}

/* ---- checks ---- */

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static bool name_ok(const char *s, size_t max, bool first_alpha)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > max)
        return false;
    if (first_alpha ? !isalpha((unsigned char)s[0]) : !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
            return false;
    return true;
}

static bool abs_path_ok(const char *p, size_t max)
{
    return p && p[0] == '/' && strlen(p) < max && !has_ctl(p);
}

static bool mac_ok(const char *m)
{
    unsigned v[6];
    char tail;

    if (strlen(m) != 17 || sscanf(m, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                                  &v[5], &tail) != 6)
        return false;
    for (int i = 0; i < 6; i++)
        if (!isxdigit((unsigned char)m[i * 3]) || !isxdigit((unsigned char)m[i * 3 + 1]) ||
            (i < 5 && m[i * 3 + 2] != ':'))
            return false;
    return (v[0] & 1) == 0; /* not multicast */
}

static bool hostfwd_ok(const char *s)
{
    if (!*s || strlen(s) > 128)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr(".:-", *s))
            return false;
    return true;
}

#define BAD(...) err_set(e, -EINVAL, "InvalidParameterValue", __VA_ARGS__)

int vmm_disk_check(const struct vmm_disk *d, struct err *e)
{
    if (!name_ok(d->name, VMM_NAME_MAX, true) || strncmp(d->name, "amid-", 5) == 0)
        return BAD("disk name '%s' is not a valid QEMU node name", d->name ? d->name : "");
    /* 108 = sizeof(sun_path), the limit of QEMU's Unix socket addresses too */
    if (!abs_path_ok(d->nbd_socket, 108))
        return BAD("disk %s: NBD socket must be an absolute path under 108 bytes", d->name);
    if (!d->export_name || !*d->export_name || strlen(d->export_name) > 4096 ||
        has_ctl(d->export_name))
        return BAD("disk %s: bad NBD export name", d->name);
    if (d->serial) {
        if (strlen(d->serial) > VMM_SERIAL_MAX)
            return BAD("disk %s: serial longer than %d bytes", d->name, VMM_SERIAL_MAX);
        for (const char *p = d->serial; *p; p++)
            if (!isprint((unsigned char)*p))
                return BAD("disk %s: serial must be printable ASCII", d->name);
    }
    if (d->reconnect_delay_s > 3600)
        return BAD("disk %s: reconnect delay over an hour", d->name);
    return 0;
}

int vmm_spec_check(const struct vmm_spec *s, struct err *e)
{
    int rc;

    if (!name_ok(s->id, VMM_ID_MAX, false))
        return BAD("instance id '%s' is not valid", s->id ? s->id : "");
    if (!abs_path_ok(s->run_dir, VMM_RUN_DIR_MAX))
        return BAD("run directory must be an absolute path under %d bytes", VMM_RUN_DIR_MAX);
    if (s->qemu && (!*s->qemu || has_ctl(s->qemu)))
        return BAD("bad QEMU binary name");
    if (s->accel != VMM_ACCEL_TCG && s->accel != VMM_ACCEL_KVM)
        return BAD("unknown accelerator");
    if (s->vcpus < 1 || s->vcpus > 255)
        return BAD("vcpus must be 1..255, not %u", s->vcpus);
    if (s->mem_mib < 32 || s->mem_mib > (4u << 20))
        return BAD("memory must be 32 MiB..4 TiB, not %u MiB", s->mem_mib);
    if (s->boot != VMM_BOOT_BIOS && s->boot != VMM_BOOT_UEFI)
        return BAD("unknown boot mode");
    if ((s->uefi_code && !abs_path_ok(s->uefi_code, PATH_MAX)) ||
        (s->uefi_vars && !abs_path_ok(s->uefi_vars, PATH_MAX)))
        return BAD("UEFI firmware paths must be absolute");
    if (s->ndisks < 1 || s->ndisks > VMM_MAX_DISKS)
        return BAD("an instance needs 1..%d disks, not %u", VMM_MAX_DISKS, s->ndisks);
    for (unsigned i = 0; i < s->ndisks; i++) {
        if ((rc = vmm_disk_check(&s->disks[i], e)) < 0)
            return rc;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(s->disks[i].name, s->disks[j].name) == 0)
                return BAD("disk name '%s' used twice", s->disks[i].name);
    }
    if (s->imds_argv) {
        size_t total = 0;

        if (!s->imds_argv[0] || !*s->imds_argv[0])
            return BAD("IMDS command is empty");
        for (const char *const *a = s->imds_argv; *a; a++) {
            if (has_ctl(*a))
                return BAD("IMDS command has a control character");
            total += strlen(*a) + 3;
        }
        if (total > VMM_IMDS_CMD_MAX)
            return BAD("IMDS command longer than %d bytes", VMM_IMDS_CMD_MAX);
        if (s->no_network)
            return BAD("IMDS needs the network");
    }
    if (s->mac && !mac_ok(s->mac))
        return BAD("bad MAC address '%s'", s->mac);
    for (int i = 0; i < VMM_MAX_HOSTFWD && s->hostfwd[i]; i++)
        if (!hostfwd_ok(s->hostfwd[i]))
            return BAD("bad hostfwd rule '%s'", s->hostfwd[i]);
    if (s->env)
        for (const char *const *v = s->env; *v; v++)
            if (!strchr(*v, '=') || **v == '=' || has_ctl(*v))
                return BAD("bad environment entry");
    if (s->console_max && s->console_max < VMM_CONSOLE_MAX_MIN)
        return BAD("console cap must be at least 1 MiB");
    if (s->start_timeout_ms < 0)
        return BAD("negative start timeout");
    return 0;
}

/* ---- quoting ---- */

int vmm_shell_quote(struct buf *b, const char *const *argv)
{
    int rc = 0;

    for (size_t i = 0; argv[i] && rc == 0; i++) {
        if (i > 0)
            rc = buf_puts(b, " ");
        if (rc == 0)
            rc = buf_puts(b, "'");
        for (const char *p = argv[i]; *p && rc == 0; p++)
            rc = *p == '\'' ? buf_puts(b, "'\\''") : buf_append(b, p, 1);
        if (rc == 0)
            rc = buf_puts(b, "'");
    }
    return rc;
}

int vmm_opt_escape(struct buf *b, const char *s)
{
    int rc = 0;

    for (; *s && rc == 0; s++)
        rc = *s == ',' ? buf_puts(b, ",,") : buf_append(b, s, 1);
    return rc;
}

/* ---- JSON pieces ---- */

json_t *vmm_disk_blockdev_json(const struct vmm_disk *d)
{
    unsigned delay = d->reconnect_delay_s ? d->reconnect_delay_s : VMM_RECONNECT_DEFAULT_S;

    return json_pack("{s:s, s:s, s:{s:s, s:s}, s:s, s:b, s:I, s:s}", "driver", "nbd", "node-name",
                     d->name, "server", "type", "unix", "path", d->nbd_socket, "export",
                     d->export_name, "read-only", d->readonly, "reconnect-delay", (json_int_t)delay,
                     "discard", "unmap");
}

json_t *vmm_disk_device_json(const struct vmm_disk *d, int bootindex)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "driver", "virtio-blk-pci", "id",
                          d->name, "drive", d->name, "iothread", VMM_IOTHREAD_ID, "werror", "stop",
                          "rerror", "stop", "opt_io_size", (json_int_t)VMM_DISK_OPT_IO);

    if (!j)
        return NULL;
    if ((d->serial && *d->serial && json_object_set_new(j, "serial", json_string(d->serial))) ||
        (bootindex >= 0 && json_object_set_new(j, "bootindex", json_integer(bootindex)))) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static json_t *netdev_json(const struct vmm_spec *s)
{
    json_t *j =
        json_pack("{s:s, s:s, s:s}", "type", "user", "id", VMM_NETDEV_ID, "net", "169.254.0.0/16");
    json_t *list;
    struct buf b;
    int rc;

    if (!j)
        return NULL;
    if (s->imds_argv) {
        buf_init(&b, VMM_IMDS_CMD_MAX * 4 + 64);
        rc = buf_puts(&b, "tcp:169.254.169.254:80-cmd:");
        if (rc == 0)
            rc = vmm_shell_quote(&b, s->imds_argv);
        list = rc == 0 ? json_pack("[{s:s}]", "str", b.data) : NULL;
        buf_free(&b);
        if (!list || json_object_set_new(j, "guestfwd", list) < 0)
            goto fail;
    }
    if (s->hostfwd[0]) {
        list = json_array();
        if (!list || json_object_set_new(j, "hostfwd", list) < 0)
            goto fail;
        for (int i = 0; i < VMM_MAX_HOSTFWD && s->hostfwd[i]; i++)
            if (json_array_append_new(list, json_pack("{s:s}", "str", s->hostfwd[i])) < 0)
                goto fail;
    }
    return j;
fail:
    json_decref(j);
    return NULL;
}

/* The NIC: romfile="" (no iPXE option ROM: SeaBIOS does not try to boot from the network). */
static json_t *nic_json(const struct vmm_spec *s)
{
    json_t *nic = json_pack("{s:s, s:s, s:s, s:s}", "driver", "virtio-net-pci", "id", "amid-nic0",
                            "netdev", VMM_NETDEV_ID, "romfile", "");

    if (nic && s->mac && json_object_set_new(nic, "mac", json_string(s->mac)) < 0) {
        json_decref(nic);
        return NULL;
    }
    return nic;
}

/* "-chardev socket,id=ID,path=RUN/NAME,server=on,wait=off", or with log:
 * "-chardev pipe,id=ID,path=RUN/NAME,logfile=RUN/LOG,logappend=on" (NAME.in, NAME.out). */
static int chardev_arg(struct vmm_argv *a, const char *id, const char *run_dir, const char *name,
                       const char *log)
{
    struct buf b;
    int rc;

    buf_init(&b, 4 * PATH_MAX);
    rc = buf_printf(&b, "%s,id=%s,path=", log ? "pipe" : "socket", id);
    rc = rc ? rc : vmm_opt_escape(&b, run_dir);
    rc = rc ? rc : buf_printf(&b, "/%s%s", name, log ? "" : ",server=on,wait=off");
    if (log) {
        rc = rc ? rc : buf_puts(&b, ",logfile=");
        rc = rc ? rc : vmm_opt_escape(&b, run_dir);
        rc = rc ? rc : buf_printf(&b, "/%s,logappend=on", log);
    }
    rc = rc ? rc : vmm_argv_add(a, "-chardev");
    rc = rc ? rc : vmm_argv_add(a, b.data);
    buf_free(&b);
    return rc;
}

int vmm_args_build(const struct vmm_spec *s, const char *run_dir, const char *qemu,
                   struct vmm_argv *ret, struct err *e)
{
    struct vmm_argv *a = ret;
    bool kvm = s->accel == VMM_ACCEL_KVM, uefi = s->boot == VMM_BOOT_UEFI;
    int rc = 0;

#define ADD(x)                         \
    do {                               \
        if (rc == 0)                   \
            rc = vmm_argv_add(a, (x)); \
    } while (0)
#define ADDF(...)                           \
    do {                                    \
        if (rc == 0)                        \
            rc = argv_addf(a, __VA_ARGS__); \
    } while (0)
#define ADDJ(opt, j)                           \
    do {                                       \
        if (rc == 0)                           \
            rc = argv_add_json(a, (opt), (j)); \
    } while (0)

    ADD(qemu);
    ADD("-name");
    ADDF("guest=%s,debug-threads=on", s->id);
    ADD("-no-user-config");
    ADD("-nodefaults");
    ADD("-machine");
    ADD(uefi ? "pc,pflash0=amid-fw-code,pflash1=amid-fw-vars" : "pc");
    ADD("-accel");
    ADD(kvm ? "kvm" : "tcg");
    ADD("-cpu");
    ADD(kvm ? "host" : "max,erms=off,fsrm=off");
    ADD("-smp");
    ADDF("%u", s->vcpus);
    ADD("-m");
    ADDF("%uM", s->mem_mib);
    ADD("-display");
    ADD("none");
    ADD("-no-shutdown");
    ADD("-daemonize");
    ADD("-pidfile");
    ADDF("%s/%s", run_dir, VMM_FILE_PID);
    ADD("-D");
    ADDF("%s/%s", run_dir, VMM_FILE_LOG);
    ADD("-msg");
    ADD("timestamp=on");
    ADD("-sandbox");
    ADD("on,obsolete=deny,resourcecontrol=deny");
    if (rc == 0)
        rc = chardev_arg(a, "amid-qmp0", run_dir, VMM_FILE_QMP, NULL);
    ADD("-mon");
    ADD("chardev=amid-qmp0,mode=control");
    if (rc == 0)
        rc = chardev_arg(a, "amid-con0", run_dir, "console", VMM_FILE_CONSOLE);
    ADD("-device");
    ADD("isa-serial,chardev=amid-con0");
    ADDJ("-object", json_pack("{s:s, s:s}", "qom-type", "iothread", "id", VMM_IOTHREAD_ID));
    if (uefi) {
        const char *code = s->uefi_code ? s->uefi_code : VMM_UEFI_CODE_DEFAULT;
        char vars[PATH_MAX];

        if (rc == 0)
            rc = vmm_path(vars, sizeof(vars), run_dir, VMM_FILE_EFIVARS);
        ADDJ("-blockdev", json_pack("{s:s, s:s, s:s, s:b}", "driver", "file", "filename", code,
                                    "node-name", "amid-fw-code", "read-only", 1));
        ADDJ("-blockdev", json_pack("{s:s, s:s, s:s}", "driver", "file", "filename", vars,
                                    "node-name", "amid-fw-vars"));
    }
    for (unsigned i = 0; i < s->ndisks; i++) {
        ADDJ("-blockdev", vmm_disk_blockdev_json(&s->disks[i]));
        ADDJ("-device", vmm_disk_device_json(&s->disks[i], i == 0 ? 0 : -1));
    }
    if (!s->no_network) {
        ADDJ("-netdev", netdev_json(s));
        ADDJ("-device", nic_json(s));
    }
    /* Entropy for early boot (ssh host keys, cloud-init) */
    ADDJ("-object", json_pack("{s:s, s:s, s:s}", "qom-type", "rng-random", "id", "amid-rng0",
                              "filename", "/dev/urandom"));
    ADDJ("-device", json_pack("{s:s, s:s, s:s}", "driver", "virtio-rng-pci", "id", "amid-rng1",
                              "rng", "amid-rng0"));
#undef ADD
#undef ADDF
#undef ADDJ
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot build the QEMU command line: %s",
                       strerror(-rc));
    return 0;
}

int vmm_env_build(const struct vmm_spec *s, struct vmm_argv *ret)
{
    int rc = vmm_argv_add(ret, VMM_DEFAULT_PATH);

    if (s->env)
        for (const char *const *v = s->env; *v && rc == 0; v++)
            rc = vmm_argv_add(ret, *v);
    return rc;
}
