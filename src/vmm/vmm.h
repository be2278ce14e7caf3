/*
 * vmm.h — one qemu-system-x86_64 process per instance: launch it detached, find it again after
 * a daemon restart, control it over QMP, hot-plug disks, read its serial console.
 *
 * Model.  An instance owns a run directory (absolute path, created by the caller, used by nobody
 * else).  vmm_start() launches QEMU there with `-daemonize`: QEMU runs in its own session with
 * init as its parent, so it outlives the daemon that started it and is never a child the daemon
 * has to reap.  Everything needed to find and control it again lives in the run directory under
 * fixed names (VMM_FILE_*): QEMU holds a POSIX write lock on its pid file for as long as it
 * lives, so "which process, if any, is this instance's QEMU" is answered by the kernel (F_GETLK),
 * not by a pid number that may have been reused.  A `struct vmm` is only a handle to such a
 * process: freeing it, or the daemon exiting, leaves QEMU running.  (Deployment: under systemd
 * the daemon's unit needs KillMode=process, or stopping the service kills the guests with it;
 * and the daemon must not make itself a child subreaper.)
 *
 * Disks are virtio-blk devices backed by QEMU's NBD client on a Unix socket (amid's NBD server;
 * export = volume id).  The client reconnects by itself when the server goes away and comes
 * back (reconnect-delay), so running guests keep their disks across a daemon restart; guest
 * I/O stalls meanwhile.  If the server stays away longer than the delay, the VM pauses with
 * state VMM_STATE_IO_ERROR instead of failing the guest's I/O (werror/rerror=stop);
 * vmm_cont() retries the failed requests once the server is back (the client reconnects in
 * the background with a backoff of up to 16 s: a cont that comes too early pauses again, so
 * repeat it while the state is IO_ERROR).
 *
 * Power.  QEMU runs with -no-shutdown: when the guest powers off, QEMU stays, in state
 * VMM_STATE_SHUTDOWN, until the supervisor calls vmm_quit().  So "powered off cleanly"
 * (SHUTDOWN) is always distinguishable from "crashed or killed" (GONE without SHUTDOWN having
 * been seen), even when it happened while the daemon was down.  Guest-initiated reboots reset
 * the machine in place.
 *
 * Threads and state.  No global state.  Functions on different handles may run concurrently.
 * A handle is not thread-safe: serialise calls on one instance (the caller's per-instance
 * lock).  Each control call opens its own short QMP connection (QEMU's monitor serves one
 * client at a time; another client holding it makes calls time out with -ETIMEDOUT).
 *
 * Errors.  Functions return 0 (or a count) on success or a negative errno; when `e` is
 * non-NULL it receives a message for the log (code "InternalError", or
 * "InvalidParameterValue" for a rejected spec).  The library never logs and never exits.
 * QEMU's own error messages are in VMM_FILE_LOG (vmm_log_read()).
 */
#ifndef AMID_VMM_VMM_H
#define AMID_VMM_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/util.h"

#define VMM_MAX_DISKS   16 /* disks at start; hot-plug may add more */
#define VMM_MAX_HOSTFWD 8
#define VMM_NAME_MAX    31         /* disk names: QEMU node name and device id */
#define VMM_ID_MAX      63         /* instance ids */
#define VMM_SERIAL_MAX  20         /* virtio-blk serial (VIRTIO_BLK_ID_BYTES) */
#define VMM_CONSOLE_EC2 (64 << 10) /* what GetConsoleOutput returns at most */

/*
 * Files in a run directory.  All but efivars.fd and the *.0 files are replaced by vmm_start.
 * The serial console is a QEMU "pipe" chardev: output goes to console.out, a symlink to
 * /dev/null, so QEMU's writes always succeed and its logfile, console.log, misses nothing;
 * input comes from the FIFO console.in (vmm_console_write()).  (A socket chardev would lose
 * output, log included, whenever a connected client does not keep up.)
 */
#define VMM_FILE_PID          "qemu.pid"      /* pid, write-locked by QEMU while it lives */
#define VMM_FILE_QMP          "qmp.sock"      /* QMP monitor (one client at a time) */
#define VMM_FILE_CONSOLE_IN   "console.in"    /* FIFO: input to the serial console */
#define VMM_FILE_CONSOLE_OUT  "console.out"   /* -> /dev/null */
#define VMM_FILE_CONSOLE      "console.log"   /* serial console output of the current run */
#define VMM_FILE_CONSOLE_PREV "console.log.0" /* ... of the previous run */
#define VMM_FILE_LOG          "qemu.log"      /* QEMU's own messages (stderr), current run */
#define VMM_FILE_EFIVARS      "efivars.fd"    /* UEFI variable store, kept across runs */

enum vmm_accel {
    VMM_ACCEL_TCG, /* emulation: always works, slow */
    VMM_ACCEL_KVM,
};

enum vmm_boot {
    VMM_BOOT_BIOS, /* EC2 "legacy-bios": SeaBIOS */
    VMM_BOOT_UEFI, /* EC2 "uefi": OVMF, variables in VMM_FILE_EFIVARS */
};

enum vmm_state {
    VMM_STATE_GONE,     /* no QEMU process for this run directory */
    VMM_STATE_RUNNING,  /* guest running */
    VMM_STATE_PAUSED,   /* stopped by vmm_pause() (or another QMP client) */
    VMM_STATE_SHUTDOWN, /* the guest powered off; QEMU waits for vmm_quit() */
    VMM_STATE_IO_ERROR, /* paused by a disk error (NBD server away too long, store error) */
    VMM_STATE_CRASHED,  /* QEMU alive but the VM is dead: internal-error, guest-panicked */
    VMM_STATE_OTHER,    /* any other QEMU run state (see vmm_status.raw) */
};

/* Names for logs and the tool: "tcg"/"kvm"; "gone", "running", "paused", "shutdown",
 * "io-error", "crashed", "other".  Static strings. */
const char *vmm_accel_name(enum vmm_accel a);
const char *vmm_state_name(enum vmm_state s);

/* One disk.  Strings are borrowed for the duration of the call. */
struct vmm_disk {
    const char *name;        /* QEMU node name and device id, [A-Za-z][A-Za-z0-9_.-]{0,30}, not
                              * starting with "amid-"; unique per instance (e.g. the volume id) */
    const char *nbd_socket;  /* absolute path of the NBD server's Unix socket (< 108 bytes) */
    const char *export_name; /* NBD export name (the volume id), 1..4096 bytes, no control
                              * characters */
    const char *serial;      /* optional, <= 20 printable ASCII bytes; the guest sees it in
                              * /sys/block/vdX/serial (EC2 shows "vol0123...": the id without
                              * the dash) */
    bool readonly;
    unsigned reconnect_delay_s; /* how long guest I/O waits for a lost NBD server before the VM
                                 * pauses with IO_ERROR; 0: 60 */
};

/* What to launch.  Strings and arrays are borrowed for the duration of vmm_start(). */
struct vmm_spec {
    const char *id;      /* instance id, [A-Za-z0-9][A-Za-z0-9._-]{0,62}; QEMU's -name, checked
                          * by vmm_attach() */
    const char *run_dir; /* existing directory, absolute path, < 90 bytes (socket paths) */
    const char *qemu;    /* QEMU binary; NULL: qemu-system-x86_64 from PATH */
    enum vmm_accel accel;
    unsigned vcpus;   /* 1..255 */
    unsigned mem_mib; /* 32..4194304 */
    enum vmm_boot boot;
    const char *uefi_code; /* NULL: /usr/share/OVMF/OVMF_CODE_4M.fd */
    const char *uefi_vars; /* template copied to VMM_FILE_EFIVARS when that does not exist;
                            * NULL: /usr/share/OVMF/OVMF_VARS_4M.fd */
    struct vmm_disk disks[VMM_MAX_DISKS]; /* disks[0] is the boot disk */
    unsigned ndisks;                      /* 1..VMM_MAX_DISKS */
    /*
     * Network: one virtio-net NIC on QEMU user-mode networking, guest addresses in
     * 169.254.0.0/16 (DHCP).  With imds_argv (NULL-terminated, argv[0] preferably absolute),
     * every guest TCP connection to 169.254.169.254:80 is handed to a new process running
     * that command with the connection on its stdin/stdout (QEMU guestfwd; vmm quotes each
     * argument).  That process is QEMU's child: it inherits QEMU's environment (PATH plus
     * `env`), cwd "/", QEMU's seccomp sandbox (no mount, reboot, module loading, scheduler
     * or priority changes), SIGXFSZ ignored and an RLIMIT_FSIZE soft limit of console_max
     * (raise it with setrlimit if it writes larger files).
     */
    bool no_network;
    const char *const *imds_argv;
    const char *mac;                      /* optional "52:54:00:xx:xx:xx" (unicast) */
    const char *hostfwd[VMM_MAX_HOSTFWD]; /* optional QEMU hostfwd rules, "tcp:127.0.0.1:2222-:22";
                                           * NULL-terminated when shorter */
    const char *const *env;               /* optional extra "NAME=value" for QEMU, NULL-ended */
    /* Console: QEMU's files may not grow past this (RLIMIT_FSIZE soft limit); 0: 64 MiB;
     * at least 1 MiB.  vmm_console_trim() keeps console.log far below it. */
    size_t console_max;
    int start_timeout_ms; /* QEMU initialised and answering QMP within; 0: 30000 */
};

struct vmm;

/* What vmm_state() found. */
struct vmm_status {
    enum vmm_state state;
    pid_t pid;    /* 0 when GONE */
    char raw[32]; /* QEMU's run state ("running", "inmigrate", ...); "" when GONE */
};

/* One disk as QEMU sees it (vmm_disk_list()). */
struct vmm_disk_info {
    char name[VMM_NAME_MAX + 1]; /* node name == device id */
    bool readonly;
    char io_status[16]; /* "ok", "failed", "nospace" ("" if QEMU does not say) */
};

/*
 * Finds out whether KVM really works here, within about `timeout_ms` (<= 0: 3000).
 *
 * /dev/kvm existing is not enough: on nested hosts it can be present and accept a VM, yet run
 * guests so slowly that they never boot, or stop them with "KVM internal error".  So after the
 * cheap checks (open /dev/kvm, API version) this boots a 512-byte guest with `-accel kvm` that
 * switches to protected mode with paging and writes 16 MiB of memory, then prints a marker on
 * the serial port: milliseconds on a working KVM; minutes or never on a broken one.  The guest
 * disk is a memfd (no temporary files).  The QEMU is a child, killed and reaped before
 * returning (a child stuck in the kernel is left after 2 s more rather than hang the caller).
 *
 * Sets *ret_accel to VMM_ACCEL_KVM or VMM_ACCEL_TCG and, when `why` is non-NULL, a one-line
 * explanation with the time taken.  Returns 0 (a fallback to TCG is not an error), or a
 * negative errno when the probe itself could not run (fork, memfd; *ret_accel is TCG then).
 * Call it once at daemon start: it costs up to timeout_ms when KVM is broken.
 */
int vmm_probe_accel(const char *qemu, int timeout_ms, enum vmm_accel *ret_accel, char *why,
                    size_t why_len);

/*
 * Launches the instance's QEMU in spec->run_dir, detached (own session, stdio on /dev/null,
 * messages to VMM_FILE_LOG), and returns once QEMU has initialised and answers QMP.  The
 * previous run's console.log becomes console.log.0.  For UEFI, VMM_FILE_EFIVARS is created
 * from the template if missing.
 *
 * The NBD servers must be listening: QEMU connects to every disk before it reports itself
 * started (a missing server fails the start at once; reconnecting is for servers that go away
 * later).
 *
 * On success sets *ret_vm (owned by the caller, vmm_free()).  Returns -EINVAL for a bad spec,
 * -EBUSY if a QEMU already runs in run_dir, -ENAMETOOLONG, -ENOENT (no QEMU binary, no run_dir,
 * no firmware), -EIO when QEMU refused to start (its message, e.g. "Failed to connect to
 * '/…/nbd.sock'", is in e), -ENOEXEC (QEMU could not be executed), -ETIMEDOUT (QEMU killed),
 * or another negative errno.
 */
int vmm_start(const struct vmm_spec *spec, struct vmm **ret_vm, struct err *e);

/*
 * Finds the QEMU of instance `id` in run_dir (after a daemon restart): the process holding the
 * pid file's lock, whose command line carries `-name guest=ID`.  Needs no QMP, so it also
 * finds a wedged QEMU (which the caller may then vmm_kill()).
 *
 * Sets *ret_vm (caller frees with vmm_free()).  Returns -ESRCH when no QEMU runs there (the
 * instance is stopped, or QEMU crashed or was killed: see console.log and qemu.log; a QEMU
 * that is exiting right now counts as gone), -ESTALE when the QEMU there belongs to another
 * instance id, -ENOENT when run_dir does not exist, or a negative errno.
 */
int vmm_attach(const char *run_dir, const char *id, struct vmm **ret_vm, struct err *e);

/* Frees the handle; QEMU keeps running.  Accepts NULL. */
void vmm_free(struct vmm *vm);

/* The QEMU process id (valid while the process lives), the instance id and the absolute run
 * directory; strings owned by the handle. */
pid_t vmm_pid(const struct vmm *vm);
const char *vmm_id(const struct vmm *vm);
const char *vmm_run_dir(const struct vmm *vm);

/*
 * Asks QEMU for its run state (QMP query-status).  A QEMU that is gone gives 0 with
 * VMM_STATE_GONE, not an error.  Returns -ETIMEDOUT or -ECONNREFUSED when QEMU lives but does
 * not answer, or a negative errno.
 */
int vmm_state(struct vmm *vm, struct vmm_status *ret, struct err *e);

/* ACPI power button (QMP system_powerdown): a cooperative guest shuts down and the state
 * becomes SHUTDOWN; one that ignores it keeps running (then vmm_quit()/vmm_kill()).  Returns
 * once QEMU has pressed the button. */
int vmm_powerdown(struct vmm *vm, struct err *e);

/* Hard reset (QMP system_reset), like the reset button: the guest reboots at once without
 * shutting down; writes it had flushed are on disk, cached ones are lost.  In state SHUTDOWN it
 * restarts the guest (QEMU stays paused until vmm_cont()). */
int vmm_reset(struct vmm *vm, struct err *e);

/*
 * Pauses the vCPUs (QMP stop).  When it returns, every disk request the guest had issued has
 * completed and been flushed to the NBD server (QEMU drains and flushes on stop), so it is the
 * point at which all of the instance's volumes can be snapshotted together, crash-consistent
 * (CreateImage NoReboot).  May take as long as a disk's reconnect delay if the NBD server is
 * away.  vmm_cont() resumes (and retries requests that failed in IO_ERROR).
 */
int vmm_pause(struct vmm *vm, struct err *e);
int vmm_cont(struct vmm *vm, struct err *e);

/* Asks QEMU to exit (QMP quit: disks are flushed and closed) and waits up to timeout_ms
 * (<= 0: 10000) for the process to be gone.  Returns 0 when gone (also when it already was),
 * -ETIMEDOUT (then vmm_kill(vm, SIGKILL)), or a negative errno. */
int vmm_quit(struct vmm *vm, int timeout_ms, struct err *e);

/* Sends `sig` to this QEMU (through a pidfd, so never to a process that reused the pid).
 * Returns 0, -ESRCH when QEMU is already gone, or a negative errno. */
int vmm_kill(struct vmm *vm, int sig);

/* Waits up to timeout_ms (< 0: forever) for QEMU to be gone.  Returns 0 or -ETIMEDOUT. */
int vmm_wait_gone(struct vmm *vm, int timeout_ms);

/*
 * Hot-plugs a disk (QMP blockdev-add, then device_add of a virtio-blk-pci; the node is removed
 * again if device_add fails).  QEMU connects to the NBD server before returning.  Returns 0,
 * -EEXIST if a device of that name is attached, -EINVAL, -EREMOTEIO with QEMU's reason (no
 * such export, server unreachable), or a negative errno.
 */
int vmm_disk_attach(struct vmm *vm, const struct vmm_disk *disk, struct err *e);

/*
 * Unplugs disk `name` (QMP device_del, wait for the guest to release it: DEVICE_DELETED, then
 * blockdev-del).  Unplug needs the guest's cooperation (ACPI hot-plug); if it has not released
 * the device within timeout_ms (<= 0: 10000) this returns -ETIMEDOUT and the request stays
 * pending: call again later to finish.  Returns 0 when neither device nor node remains (also
 * when there was nothing to remove), or a negative errno.
 */
int vmm_disk_detach(struct vmm *vm, const char *name, int timeout_ms, struct err *e);

/* Lists the disks attached to devices (QMP query-block) into ret[0..max); sets *ret_n to the
 * number found (which may exceed max: only max are written).  Returns 0 or a negative errno. */
int vmm_disk_list(struct vmm *vm, struct vmm_disk_info *ret, size_t max, size_t *ret_n,
                  struct err *e);

/*
 * Runs any QMP command: `args_json` is a JSON object or NULL; the command's "return" value is
 * appended to ret_json (if non-NULL) as compact JSON.  For what this header does not wrap
 * (query-pci, block-job, ...).  Returns 0, -EREMOTEIO (QEMU's error in e), -E2BIG when the
 * answer exceeds ret_json's cap, -ETIMEDOUT, or a negative errno.
 */
int vmm_qmp(struct vmm *vm, const char *command, const char *args_json, int timeout_ms,
            struct buf *ret_json, struct err *e);

/*
 * Reads the serial console of the current (or last) run in run_dir, appending at most `max`
 * bytes (0: VMM_CONSOLE_EC2) to `out`, raw bytes as the guest wrote them.  With `latest`, the
 * last `max` bytes (EC2 GetConsoleOutput Latest=true); otherwise the first `max` bytes since
 * QEMU started, i.e. since StartInstances (Latest=false: "output since boot", which also
 * survives trimming).  Works whether or not QEMU runs.  Returns the number of bytes appended,
 * -ENOENT when there is no console log, -E2BIG if `out` cannot take them (nothing appended),
 * or a negative errno.
 */
int vmm_console_read(const char *run_dir, bool latest, size_t max, struct buf *out);

/*
 * Keeps console.log small while QEMU appends to it: when it is larger than keep_head +
 * keep_tail (plus a few blocks), the middle is cut out in place (fallocate COLLAPSE_RANGE, so
 * the file shrinks and QEMU's appends continue at the new end; where the file system cannot,
 * the middle is punched out instead, which frees the disk space but not the file size).  The
 * supervisor calls it now and then (cheap: one stat when there is nothing to do).  Not to be
 * run concurrently with vmm_console_read() on the same run_dir (a read may see the cut).
 * Returns the number of bytes removed (0: nothing to do), or a negative errno (-ENOENT).
 */
long long vmm_console_trim(const char *run_dir, size_t keep_head, size_t keep_tail);

/*
 * Types `len` bytes on the serial console (into console.in, without blocking; for an
 * interactive console, or to drive a guest shell in tests).  Returns the number of bytes
 * written, which is less than len when the pipe is full (the guest is not reading), -ENXIO
 * when no QEMU is reading it, -ENOENT when there is no console.in, or a negative errno.
 */
int vmm_console_write(const char *run_dir, const void *data, size_t len);

/* Appends the last `max` bytes (0: 8 KiB) of QEMU's own log (VMM_FILE_LOG: its stderr,
 * timestamped) to `out`, for post-mortems.  Returns bytes appended, -ENOENT, or -errno. */
int vmm_log_read(const char *run_dir, size_t max, struct buf *out);

#endif
