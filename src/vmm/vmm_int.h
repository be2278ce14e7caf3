/*
 * vmm_int.h — what the vmm files share, and what the unit tests reach into: the QMP client,
 * the command-line builder, and the process helpers.  Not for other modules.
 */
#ifndef AMID_VMM_VMM_INT_H
#define AMID_VMM_VMM_INT_H

#include <jansson.h>
#include <limits.h>

#include "vmm/vmm.h"

#define VMM_QEMU_DEFAULT      "qemu-system-x86_64"
#define VMM_UEFI_CODE_DEFAULT "/usr/share/OVMF/OVMF_CODE_4M.fd"
#define VMM_UEFI_VARS_DEFAULT "/usr/share/OVMF/OVMF_VARS_4M.fd"
#define VMM_DEFAULT_PATH      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#define VMM_RECONNECT_DEFAULT_S 60
#define VMM_CONSOLE_MAX_DEFAULT ((size_t)64 << 20)
#define VMM_CONSOLE_MAX_MIN     ((size_t)1 << 20)
#define VMM_START_TIMEOUT_MS    30000
#define VMM_QMP_TIMEOUT_MS      5000       /* connect, greeting and an ordinary command */
#define VMM_QMP_SLOW_TIMEOUT_MS 120000     /* stop/cont/blockdev-add: may wait for NBD */
#define VMM_QMP_MAX_MSG         (1u << 20) /* cap on one QMP message from QEMU */
#define VMM_QMP_MAX_EVENTS      64         /* queued async events; older ones dropped */
#define VMM_RUN_DIR_MAX         90         /* so run_dir + "/qmp.sock" fits sun_path */
#define VMM_IMDS_CMD_MAX        4096

/* Ids of what vmm itself adds to the machine (disk names may not start with "amid-"). */
#define VMM_IOTHREAD_ID "amid-io0"
#define VMM_NETDEV_ID   "amid-net0"

/* ---- QMP client (vmm_qmp.c) ---- */

/*
 * One QMP connection.  Reads are bounded (max_msg per message, else -EMSGSIZE and the
 * connection is unusable), every call has a deadline, commands carry an "id" so that a reply
 * arriving after its command timed out is recognised and dropped, and asynchronous events that
 * arrive while waiting for a reply are queued (up to VMM_QMP_MAX_EVENTS, oldest dropped) for
 * vmm_qmp_wait_event().
 */
struct vmm_qmp;

/* Takes ownership of the connected stream socket `fd` (closed on failure too), reads the
 * greeting (skipping up to VMM_QMP_MAX_EVENTS lines before it: output QEMU still had for the
 * previous client) and negotiates capabilities (qmp_capabilities), all within timeout_ms.
 * max_msg 0: VMM_QMP_MAX_MSG.  Returns 0 and *ret (vmm_qmp_close()), -EPROTO (lines came but no
 * greeting), -EMSGSIZE, -ETIMEDOUT, -ECONNRESET (peer closed), or a negative errno. */
int vmm_qmp_open_fd(int fd, int timeout_ms, size_t max_msg, struct vmm_qmp **ret, struct err *e);
/* Connects to a QMP Unix socket, then as vmm_qmp_open_fd().  -ENOENT/-ECONNREFUSED when
 * nobody listens. */
int vmm_qmp_connect(const char *path, int timeout_ms, struct vmm_qmp **ret, struct err *e);
/*
 * Executes `cmd` with `args` (a JSON object, borrowed; NULL for none) and waits up to
 * timeout_ms for its reply.  On success returns 0 and, if ret_return is non-NULL, a new
 * reference to the "return" value.  A QMP error reply gives -EOPNOTSUPP (CommandNotFound),
 * -ENODEV (DeviceNotFound), or -EREMOTEIO (anything else), with QEMU's "desc" in e.  Also
 * -ETIMEDOUT (the connection stays usable), -EMSGSIZE, -EPROTO, -ECONNRESET, -EPIPE.
 */
int vmm_qmp_exec(struct vmm_qmp *q, const char *cmd, json_t *args, int timeout_ms,
                 json_t **ret_return, struct err *e);
/* Waits up to timeout_ms for an event called `name` whose "data" object has member `key`
 * equal to the string `value` (key NULL: any event of that name), looking first at the queued
 * ones.  Returns 0 and (if ret_event) a new reference to the whole event, -ETIMEDOUT, or an
 * error as vmm_qmp_exec(). */
int vmm_qmp_wait_event(struct vmm_qmp *q, const char *name, const char *key, const char *value,
                       int timeout_ms, json_t **ret_event);
/* Number of events dropped because the queue was full. */
size_t vmm_qmp_events_dropped(const struct vmm_qmp *q);
/* Closes the connection; frees queued events.  Accepts NULL. */
void vmm_qmp_close(struct vmm_qmp *q);

/* ---- spec checks and the QEMU command line (vmm_args.c) ---- */

/* A NULL-terminated vector of malloc'd strings. */
struct vmm_argv {
    char **v;
    size_t n, cap;
};
void vmm_argv_free(struct vmm_argv *a);
int vmm_argv_add(struct vmm_argv *a, const char *s);

/* Checks everything in the spec that can be checked without touching the file system. */
int vmm_spec_check(const struct vmm_spec *s, struct err *e);
/* Checks one disk (also used by hot-plug). */
int vmm_disk_check(const struct vmm_disk *d, struct err *e);

/* Quotes argv for GLib's g_shell_parse_argv (what libslirp uses to run a guestfwd command):
 * every argument in single quotes, ' as '\''.  Appends to b. */
int vmm_shell_quote(struct buf *b, const char *const *argv);
/* Appends `s` escaped for QEMU's "key=value,..." option syntax (',' doubled). */
int vmm_opt_escape(struct buf *b, const char *s);

/* The QMP/command-line JSON of a disk's NBD block node and of its virtio-blk-pci device (the
 * same objects serve -blockdev/-device and blockdev-add/device_add).  bootindex < 0: none.
 * New references; NULL on out of memory. */
json_t *vmm_disk_blockdev_json(const struct vmm_disk *d);
json_t *vmm_disk_device_json(const struct vmm_disk *d, int bootindex);

/* Builds QEMU's argv for `s` (checked with vmm_spec_check) launched from run_dir (absolute,
 * resolved) with binary `qemu`.  Appends to ret (caller frees). */
int vmm_args_build(const struct vmm_spec *s, const char *run_dir, const char *qemu,
                   struct vmm_argv *ret, struct err *e);
/* Builds QEMU's environment: the default PATH, then spec->env. */
int vmm_env_build(const struct vmm_spec *s, struct vmm_argv *ret);

/* ---- processes (vmm_proc.c) ---- */

struct vmm {
    char id[VMM_ID_MAX + 1];
    char run_dir[PATH_MAX];
    pid_t pid;
    int pidfd; /* -1 when the kernel has no pidfds */
    bool gone; /* seen gone once: stays gone */
};

/* Whether `id` is a valid instance id ([A-Za-z0-9][A-Za-z0-9._-]{0,62}). */
bool vmm_id_ok(const char *id);
/* Joins run_dir and a file name into out (PATH_MAX).  -ENAMETOOLONG. */
int vmm_path(char *out, size_t outlen, const char *run_dir, const char *name);
/* The pid holding the write lock on run_dir's pid file: >0, or -ESRCH when nobody holds it
 * (or there is no pid file), or a negative errno. */
int vmm_lock_holder(const char *run_dir);
/* Whether /proc/PID/cmdline has "-name" followed by "guest=ID[,...]": 1, 0, -ESRCH when the
 * process is gone or exiting (an empty command line: its memory is released before its files,
 * so an exiting QEMU still holds its lock for a moment), or -errno. */
int vmm_cmdline_matches(pid_t pid, const char *id);
/* Finds `name` in PATH (or checks it is executable if it has a '/'); absolute result in out. */
int vmm_find_binary(const char *name, char *out, size_t outlen);
/* Moves fd (>= 0) to a number >= 10 (close-on-exec), closing the old one; returns the new fd
 * or -errno.  Child setup dup2()s from there to 0..3 without clobbering. */
int vmm_fd_high(int fd);
/* Whether the handle's QEMU is gone (pidfd readable or lock free); sets vm->gone. */
bool vmm_is_gone(struct vmm *vm);
/* Opens a QMP connection to the handle's QEMU. */
int vmm_qmp_open(struct vmm *vm, int timeout_ms, struct vmm_qmp **ret, struct err *e);

/* Milliseconds left until the monotonic deadline `end_us` (>= 0); INT_MAX-capped. */
int vmm_ms_left(int64_t end_us);

#endif
