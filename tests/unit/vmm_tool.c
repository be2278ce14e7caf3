/*
 * vmm_tool.c — the vmm library on the command line, for tests/integration/test_vmm_qemu.py and
 * for poking at instances by hand.  Every command but `start` and `probe` finds the QEMU with
 * vmm_attach(), so every invocation is a "daemon restart": a new process that has never seen
 * the instance before.
 *
 *   vmm_tool probe [--timeout MS] [--qemu PATH]             -> "tcg|kvm MS why..."
 *   vmm_tool start --id ID --run-dir DIR [--accel tcg|kvm] [--vcpus N] [--mem MIB] [--uefi]
 *                  --disk name=N,socket=S,export=E[,ro][,serial=X][,reconnect=SEC] ...
 *                  [--imds-arg ARG ...] [--no-net] [--mac MAC] [--hostfwd RULE ...]
 *                  [--env NAME=VALUE ...] [--console-max BYTES] [--qemu PATH]
 *                  [--start-timeout MS] [--print-argv]       -> "pid N"
 *   vmm_tool attach|state|powerdown|reset|pause|cont DIR ID
 *   vmm_tool quit DIR ID [MS]          vmm_tool kill DIR ID [SIGNAL]
 *   vmm_tool wait-gone DIR ID MS
 *   vmm_tool attach-disk DIR ID DISKSPEC          vmm_tool detach-disk DIR ID NAME [MS]
 *   vmm_tool disks DIR ID                         -> "name ro|rw io-status" per line
 *   vmm_tool qmp DIR ID COMMAND [ARGS_JSON]       -> the return value as JSON
 *   vmm_tool console DIR [--latest] [--max N]     -> raw console bytes
 *   vmm_tool send DIR TEXT                        types TEXT and a newline on the console
 *   vmm_tool trim DIR HEAD TAIL                   -> bytes removed
 *   vmm_tool log DIR [--max N]                    -> tail of qemu.log
 *
 * Exit status: 0, or the errno of the failure (ESRCH = 3, ...; 1 if it does not fit), with
 * "vmm_tool: ERRNAME: message" on stderr; 2 for usage errors.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vmm/vmm.h"
#include "vmm/vmm_int.h"

#define MAX_ARGS 32

static int fail(int rc, const struct err *e)
{
    const char *name = strerrorname_np(-rc);

    fprintf(stderr, "vmm_tool: %s: %s\n", name ? name : "error",
            e && e->msg[0] ? e->msg : strerror(-rc));
    return -rc > 0 && -rc < 126 ? -rc : 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: see the header of tests/unit/vmm_tool.c\n");
    return 2;
}

/* name=N,socket=S,export=E[,ro][,serial=X][,reconnect=SEC]; modifies s (kept alive). */
static int parse_disk(char *s, struct vmm_disk *d)
{
    memset(d, 0, sizeof(*d));
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        char *v = strchr(tok, '=');

        if (v)
            *v++ = '\0';
        if (strcmp(tok, "name") == 0 && v)
            d->name = v;
        else if (strcmp(tok, "socket") == 0 && v)
            d->nbd_socket = v;
        else if (strcmp(tok, "export") == 0 && v)
            d->export_name = v;
        else if (strcmp(tok, "serial") == 0 && v)
            d->serial = v;
        else if (strcmp(tok, "reconnect") == 0 && v)
            d->reconnect_delay_s = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(tok, "ro") == 0 && !v)
            d->readonly = true;
        else
            return -EINVAL;
    }
    return 0;
}

static int cmd_probe(int argc, char **argv)
{
    static const struct option opts[] = { { "timeout", required_argument, NULL, 't' },
                                          { "qemu", required_argument, NULL, 'q' },
                                          { 0 } };
    const char *qemu = NULL;
    int timeout = 0, c, rc;
    enum vmm_accel accel;
    char why[256];
    int64_t t0 = time_mono_us();

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 't')
            timeout = atoi(optarg);
        else if (c == 'q')
            qemu = optarg;
        else
            return usage();
    }
    rc = vmm_probe_accel(qemu, timeout, &accel, why, sizeof(why));
    if (rc < 0)
        return fail(rc, NULL);
    printf("%s %lld %s\n", vmm_accel_name(accel), (long long)(time_mono_us() - t0) / 1000, why);
    return 0;
}

static int cmd_start(int argc, char **argv)
{
    static const struct option opts[] = { { "id", required_argument, NULL, 'i' },
                                          { "run-dir", required_argument, NULL, 'r' },
                                          { "accel", required_argument, NULL, 'a' },
                                          { "vcpus", required_argument, NULL, 'c' },
                                          { "mem", required_argument, NULL, 'm' },
                                          { "uefi", no_argument, NULL, 'u' },
                                          { "disk", required_argument, NULL, 'd' },
                                          { "imds-arg", required_argument, NULL, 'I' },
                                          { "no-net", no_argument, NULL, 'N' },
                                          { "mac", required_argument, NULL, 'M' },
                                          { "hostfwd", required_argument, NULL, 'H' },
                                          { "env", required_argument, NULL, 'E' },
                                          { "console-max", required_argument, NULL, 'C' },
                                          { "qemu", required_argument, NULL, 'q' },
                                          { "start-timeout", required_argument, NULL, 'T' },
                                          { "print-argv", no_argument, NULL, 'P' },
                                          { 0 } };
    struct vmm_spec s = { .vcpus = 1, .mem_mib = 256 };
    const char *imds[MAX_ARGS + 1] = { 0 }, *env[MAX_ARGS + 1] = { 0 };
    int nimds = 0, nenv = 0, nfwd = 0, c, rc;
    bool print_argv = false;
    struct err e = { 0 };
    struct vmm *vm;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            s.id = optarg;
            break;
        case 'r':
            s.run_dir = optarg;
            break;
        case 'a':
            s.accel = strcmp(optarg, "kvm") == 0 ? VMM_ACCEL_KVM : VMM_ACCEL_TCG;
            break;
        case 'c':
            s.vcpus = (unsigned)atoi(optarg);
            break;
        case 'm':
            s.mem_mib = (unsigned)atoi(optarg);
            break;
        case 'u':
            s.boot = VMM_BOOT_UEFI;
            break;
        case 'd':
            if (s.ndisks == VMM_MAX_DISKS || parse_disk(optarg, &s.disks[s.ndisks]) < 0)
                return usage();
            s.ndisks++;
            break;
        case 'I':
            if (nimds == MAX_ARGS)
                return usage();
            imds[nimds++] = optarg;
            s.imds_argv = imds;
            break;
        case 'N':
            s.no_network = true;
            break;
        case 'M':
            s.mac = optarg;
            break;
        case 'H':
            if (nfwd == VMM_MAX_HOSTFWD)
                return usage();
            s.hostfwd[nfwd++] = optarg;
            break;
        case 'E':
            if (nenv == MAX_ARGS)
                return usage();
            env[nenv++] = optarg;
            s.env = env;
            break;
        case 'C':
            s.console_max = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'q':
            s.qemu = optarg;
            break;
        case 'T':
            s.start_timeout_ms = atoi(optarg);
            break;
        case 'P':
            print_argv = true;
            break;
        default:
            return usage();
        }
    }
    if (print_argv) {
        struct vmm_argv a = { 0 };

        rc = vmm_spec_check(&s, &e);
        if (rc == 0)
            rc = vmm_args_build(&s, s.run_dir, s.qemu ? s.qemu : VMM_QEMU_DEFAULT, &a, &e);
        for (size_t i = 0; rc == 0 && i < a.n; i++)
            printf("%s\n", a.v[i]);
        vmm_argv_free(&a);
        return rc < 0 ? fail(rc, &e) : 0;
    }
    rc = vmm_start(&s, &vm, &e);
    if (rc < 0)
        return fail(rc, &e);
    printf("pid %d\n", (int)vmm_pid(vm));
    vmm_free(vm);
    return 0;
}

static int cmd_console(int argc, char **argv, bool qemu_log)
{
    static const struct option opts[] = { { "latest", no_argument, NULL, 'l' },
                                          { "max", required_argument, NULL, 'm' },
                                          { 0 } };
    bool latest = false;
    size_t max = 0;
    struct buf b;
    int c, rc;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'l')
            latest = true;
        else if (c == 'm')
            max = (size_t)strtoull(optarg, NULL, 10);
        else
            return usage();
    }
    if (optind >= argc)
        return usage();
    buf_init(&b, 64 << 20);
    rc = qemu_log ? vmm_log_read(argv[optind], max, &b)
                  : vmm_console_read(argv[optind], latest, max, &b);
    if (rc < 0) {
        buf_free(&b);
        return fail(rc, NULL);
    }
    fwrite(b.data ? b.data : "", 1, b.len, stdout);
    buf_free(&b);
    return 0;
}

/* Commands on a running instance: DIR ID [args...] */
static int cmd_instance(const char *cmd, int argc, char **argv)
{
    struct err e = { 0 };
    struct vmm *vm;
    int rc;

    if (argc < 2)
        return usage();
    rc = vmm_attach(argv[0], argv[1], &vm, &e);
    if (rc < 0)
        return fail(rc, &e);
    argc -= 2;
    argv += 2;
    if (strcmp(cmd, "attach") == 0) {
        printf("pid %d\n", (int)vmm_pid(vm));
    } else if (strcmp(cmd, "state") == 0) {
        struct vmm_status st;

        rc = vmm_state(vm, &st, &e);
        if (rc == 0)
            printf("%s %s\n", vmm_state_name(st.state), st.raw);
    } else if (strcmp(cmd, "powerdown") == 0) {
        rc = vmm_powerdown(vm, &e);
    } else if (strcmp(cmd, "reset") == 0) {
        rc = vmm_reset(vm, &e);
    } else if (strcmp(cmd, "pause") == 0) {
        rc = vmm_pause(vm, &e);
    } else if (strcmp(cmd, "cont") == 0) {
        rc = vmm_cont(vm, &e);
    } else if (strcmp(cmd, "quit") == 0) {
        rc = vmm_quit(vm, argc > 0 ? atoi(argv[0]) : 0, &e);
    } else if (strcmp(cmd, "kill") == 0) {
        rc = vmm_kill(vm, argc > 0 ? atoi(argv[0]) : SIGKILL);
    } else if (strcmp(cmd, "wait-gone") == 0 && argc > 0) {
        rc = vmm_wait_gone(vm, atoi(argv[0]));
    } else if (strcmp(cmd, "attach-disk") == 0 && argc > 0) {
        struct vmm_disk d;

        rc = parse_disk(argv[0], &d);
        if (rc == 0)
            rc = vmm_disk_attach(vm, &d, &e);
    } else if (strcmp(cmd, "detach-disk") == 0 && argc > 0) {
        rc = vmm_disk_detach(vm, argv[0], argc > 1 ? atoi(argv[1]) : 0, &e);
    } else if (strcmp(cmd, "disks") == 0) {
        struct vmm_disk_info d[64];
        size_t n = 0;

        rc = vmm_disk_list(vm, d, ARRAY_SIZE(d), &n, &e);
        for (size_t i = 0; rc == 0 && i < n && i < ARRAY_SIZE(d); i++)
            printf("%s %s %s\n", d[i].name, d[i].readonly ? "ro" : "rw", d[i].io_status);
    } else if (strcmp(cmd, "qmp") == 0 && argc > 0) {
        struct buf b;

        buf_init(&b, 16 << 20);
        rc = vmm_qmp(vm, argv[0], argc > 1 ? argv[1] : NULL, 0, &b, &e);
        if (rc == 0)
            printf("%s\n", b.data ? b.data : "");
        buf_free(&b);
    } else {
        vmm_free(vm);
        return usage();
    }
    vmm_free(vm);
    return rc < 0 ? fail(rc, &e) : 0;
}

int main(int argc, char **argv)
{
    const char *cmd;

    if (argc < 2)
        return usage();
    cmd = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (strcmp(cmd, "probe") == 0)
        return cmd_probe(argc - 1, argv + 1);
    if (strcmp(cmd, "start") == 0)
        return cmd_start(argc - 1, argv + 1);
    if (strcmp(cmd, "console") == 0)
        return cmd_console(argc - 1, argv + 1, false);
    if (strcmp(cmd, "log") == 0)
        return cmd_console(argc - 1, argv + 1, true);
    if (strcmp(cmd, "send") == 0 && argc == 4) {
        struct buf b;
        int rc;

        buf_init(&b, 1 << 20);
        rc = buf_printf(&b, "%s\n", argv[3]);
        if (rc == 0)
            rc = vmm_console_write(argv[2], b.data, b.len);
        if (rc >= 0 && (size_t)rc < b.len)
            rc = -EAGAIN;
        buf_free(&b);
        return rc < 0 ? fail(rc, NULL) : 0;
    }
    if (strcmp(cmd, "trim") == 0 && argc == 5) {
        long long r = vmm_console_trim(argv[2], (size_t)strtoull(argv[3], NULL, 10),
                                       (size_t)strtoull(argv[4], NULL, 10));
        if (r < 0)
            return fail((int)r, NULL);
        printf("%lld\n", r);
        return 0;
    }
    return cmd_instance(cmd, argc - 2, argv + 2);
}
