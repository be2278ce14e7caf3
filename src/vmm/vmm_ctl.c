/*
 * vmm_ctl.c — controlling a running QEMU over QMP: run state, power, pause, quit, disk
 * hot-plug, and raw commands.
 *
 * Every call opens its own QMP connection and closes it before returning (the monitor serves
 * one client at a time, and a connection held across calls would be one more thing to lose
 * in a daemon restart).  Before reporting a QMP failure, each call checks whether QEMU is
 * simply gone, so callers see -ESRCH (or state GONE) rather than a socket error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmm/vmm_int.h"

#define DETACH_SLICE_MS 250

const char *vmm_accel_name(enum vmm_accel a)
{
    return a == VMM_ACCEL_KVM ? "kvm" : "tcg";
}

const char *vmm_state_name(enum vmm_state s)
{
    switch (s) {
    case VMM_STATE_GONE:
        return "gone";
    case VMM_STATE_RUNNING:
        return "running";
    case VMM_STATE_PAUSED:
        return "paused";
    case VMM_STATE_SHUTDOWN:
        return "shutdown";
    case VMM_STATE_IO_ERROR:
        return "io-error";
    case VMM_STATE_CRASHED:
        return "crashed";
    case VMM_STATE_OTHER:
        break;
    }
    return "other";
}

static enum vmm_state state_from_qemu(const char *s)
{
    static const struct {
        const char *qemu;
        enum vmm_state state;
    } map[] = {
        { "running", VMM_STATE_RUNNING },        { "paused", VMM_STATE_PAUSED },
        { "prelaunch", VMM_STATE_PAUSED },       { "suspended", VMM_STATE_PAUSED },
        { "shutdown", VMM_STATE_SHUTDOWN },      { "io-error", VMM_STATE_IO_ERROR },
        { "internal-error", VMM_STATE_CRASHED }, { "guest-panicked", VMM_STATE_CRASHED },
    };

    for (size_t i = 0; i < ARRAY_SIZE(map); i++)
        if (strcmp(map[i].qemu, s) == 0)
            return map[i].state;
    return VMM_STATE_OTHER;
}

int vmm_qmp_open(struct vmm *vm, int timeout_ms, struct vmm_qmp **ret, struct err *e)
{
    char path[PATH_MAX];
    int rc;

    if (vmm_is_gone(vm))
        return err_set(e, -ESRCH, "InternalError", "QEMU of %s is gone", vm->id);
    if ((rc = vmm_path(path, sizeof(path), vm->run_dir, VMM_FILE_QMP)) < 0)
        return rc;
    rc = vmm_qmp_connect(path, timeout_ms, ret, e);
    if (rc < 0 && vmm_wait_gone(vm, 200) == 0)
        return err_set(e, -ESRCH, "InternalError", "QEMU of %s is gone", vm->id);
    return rc;
}

/* One command on a fresh connection; the reply value (if wanted) in *ret. */
static int run1(struct vmm *vm, const char *cmd, json_t *args, int timeout_ms, json_t **ret,
                struct err *e)
{
    struct vmm_qmp *q;
    int rc = vmm_qmp_open(vm, VMM_QMP_TIMEOUT_MS, &q, e);

    if (rc < 0)
        return rc;
    rc = vmm_qmp_exec(q, cmd, args, timeout_ms, ret, e);
    vmm_qmp_close(q);
    if (rc < 0 && rc != -EREMOTEIO && vmm_wait_gone(vm, 200) == 0)
        rc = err_set(e, -ESRCH, "InternalError", "QEMU of %s is gone", vm->id);
    return rc;
}

int vmm_state(struct vmm *vm, struct vmm_status *ret, struct err *e)
{
    json_t *r = NULL;
    const char *s;
    int rc;

    memset(ret, 0, sizeof(*ret));
    if (vmm_is_gone(vm))
        return 0;
    rc = run1(vm, "query-status", NULL, VMM_QMP_TIMEOUT_MS, &r, e);
    if (rc == -ESRCH)
        return 0;
    if (rc < 0)
        return rc;
    s = json_string_value(json_object_get(r, "status"));
    if (!s) {
        json_decref(r);
        return err_set(e, -EPROTO, "InternalError", "query-status: no status");
    }
    ret->state = state_from_qemu(s);
    ret->pid = vm->pid;
    snprintf(ret->raw, sizeof(ret->raw), "%s", s);
    json_decref(r);
    return 0;
}

int vmm_powerdown(struct vmm *vm, struct err *e)
{
    return run1(vm, "system_powerdown", NULL, VMM_QMP_TIMEOUT_MS, NULL, e);
}

int vmm_reset(struct vmm *vm, struct err *e)
{
    return run1(vm, "system_reset", NULL, VMM_QMP_TIMEOUT_MS, NULL, e);
}

int vmm_pause(struct vmm *vm, struct err *e)
{
    return run1(vm, "stop", NULL, VMM_QMP_SLOW_TIMEOUT_MS, NULL, e);
}

int vmm_cont(struct vmm *vm, struct err *e)
{
    return run1(vm, "cont", NULL, VMM_QMP_SLOW_TIMEOUT_MS, NULL, e);
}

int vmm_quit(struct vmm *vm, int timeout_ms, struct err *e)
{
    int rc;

    if (timeout_ms <= 0)
        timeout_ms = 10000;
    if (vmm_is_gone(vm))
        return 0;
    rc = run1(vm, "quit", NULL, VMM_QMP_TIMEOUT_MS, NULL, e);
    /* QEMU may close the socket before its reply gets out: only the process matters. */
    if (rc < 0 && rc != -ESRCH && rc != -ECONNRESET && rc != -EPIPE)
        return rc;
    rc = vmm_wait_gone(vm, timeout_ms);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "QEMU of %s still runs %d ms after quit", vm->id,
                       timeout_ms);
    return 0;
}

/* ---- disks ---- */

/* Whether the array `cmd` returns (run with `args`, which this consumes) has an object whose
 * member `key` is `name`: 1, 0, or -errno. */
static int listed(struct vmm_qmp *q, const char *cmd, json_t *args, const char *key,
                  const char *name, struct err *e)
{
    json_t *r = NULL, *it;
    size_t i;
    int rc, found = 0;

    if (!args)
        return -ENOMEM;
    rc = vmm_qmp_exec(q, cmd, args, VMM_QMP_TIMEOUT_MS, &r, e);
    json_decref(args);
    if (rc < 0)
        return rc;
    json_array_foreach(r, i, it)
    {
        const char *n = json_string_value(json_object_get(it, key));

        if (n && strcmp(n, name) == 0)
            found = 1;
    }
    json_decref(r);
    return found;
}

/* Whether /machine/peripheral has a child called `name`: 1, 0, or -errno. */
static int device_exists(struct vmm_qmp *q, const char *name, struct err *e)
{
    return listed(q, "qom-list", json_pack("{s:s}", "path", "/machine/peripheral"), "name", name,
                  e);
}

/* Whether a block node called `name` exists: 1, 0, or -errno. */
static int node_exists(struct vmm_qmp *q, const char *name, struct err *e)
{
    return listed(q, "query-named-block-nodes", json_pack("{s:b}", "flat", 1), "node-name", name,
                  e);
}

static int node_del(struct vmm_qmp *q, const char *name, struct err *e)
{
    json_t *args = json_pack("{s:s}", "node-name", name);
    int rc;

    if (!args)
        return -ENOMEM;
    rc = vmm_qmp_exec(q, "blockdev-del", args, VMM_QMP_SLOW_TIMEOUT_MS, NULL, e);
    json_decref(args);
    return rc;
}

int vmm_disk_attach(struct vmm *vm, const struct vmm_disk *disk, struct err *e)
{
    struct vmm_qmp *q = NULL;
    json_t *j = NULL;
    bool created = false;
    int rc;

    if ((rc = vmm_disk_check(disk, e)) < 0)
        return rc;
    if ((rc = vmm_qmp_open(vm, VMM_QMP_TIMEOUT_MS, &q, e)) < 0)
        return rc;
    rc = device_exists(q, disk->name, e);
    if (rc > 0)
        rc = err_set(e, -EEXIST, "InternalError", "disk %s is already attached", disk->name);
    if (rc < 0)
        goto out;
    /* A node left behind by an earlier attach that failed half-way is reused. */
    rc = node_exists(q, disk->name, e);
    if (rc == 0) {
        j = vmm_disk_blockdev_json(disk);
        rc = j ? vmm_qmp_exec(q, "blockdev-add", j, VMM_QMP_SLOW_TIMEOUT_MS, NULL, e) : -ENOMEM;
        json_decref(j);
        created = rc == 0;
    }
    if (rc < 0)
        goto out;
    j = vmm_disk_device_json(disk, -1);
    rc = j ? vmm_qmp_exec(q, "device_add", j, VMM_QMP_TIMEOUT_MS, NULL, e) : -ENOMEM;
    json_decref(j);
    if (rc < 0 && created)
        node_del(q, disk->name, NULL);
out:
    vmm_qmp_close(q);
    return rc;
}

int vmm_disk_detach(struct vmm *vm, const char *name, int timeout_ms, struct err *e)
{
    struct vmm_disk probe = { .name = name, .nbd_socket = "/", .export_name = "x" };
    struct vmm_qmp *q = NULL;
    int64_t end_us;
    int rc;

    if ((rc = vmm_disk_check(&probe, e)) < 0)
        return rc;
    if (timeout_ms <= 0)
        timeout_ms = 10000;
    end_us = time_mono_us() + (int64_t)timeout_ms * 1000;
    if ((rc = vmm_qmp_open(vm, VMM_QMP_TIMEOUT_MS, &q, e)) < 0)
        return rc;
    rc = device_exists(q, name, e);
    if (rc > 0) {
        json_t *args = json_pack("{s:s}", "id", name);
        struct err e2 = { 0 };

        rc = args ? vmm_qmp_exec(q, "device_del", args, VMM_QMP_TIMEOUT_MS, NULL, &e2) : -ENOMEM;
        json_decref(args);
        /* -ENODEV: it went away meanwhile.  "already in the process of unplug": an earlier
         * request is pending, keep waiting for it. */
        if (rc < 0 && rc != -ENODEV && !strstr(e2.msg, "process of unplug")) {
            if (e)
                *e = e2;
            goto out;
        }
        for (;;) {
            int ms = vmm_ms_left(end_us);

            rc = vmm_qmp_wait_event(q, "DEVICE_DELETED", "device", name,
                                    ms < DETACH_SLICE_MS ? ms : DETACH_SLICE_MS, NULL);
            if (rc == 0)
                break;
            if (rc != -ETIMEDOUT)
                goto out;
            /* The event may have come before we connected (an earlier call's request). */
            rc = device_exists(q, name, e);
            if (rc <= 0)
                break;
            if (vmm_ms_left(end_us) == 0) {
                rc = err_set(e, -ETIMEDOUT, "InternalError",
                             "the guest has not released disk %s yet", name);
                goto out;
            }
        }
        if (rc < 0)
            goto out;
    } else if (rc < 0) {
        goto out;
    }
    /* The device is gone; its node may stay "in use" for a moment while QEMU finishes. */
    for (;;) {
        rc = node_exists(q, name, e);
        if (rc <= 0)
            break;
        rc = node_del(q, name, e);
        if (rc == 0 || rc != -EREMOTEIO || vmm_ms_left(end_us) == 0)
            break;
        struct timespec ts = { 0, 50 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
out:
    vmm_qmp_close(q);
    if (rc < 0 && rc != -EREMOTEIO && rc != -ETIMEDOUT && vmm_wait_gone(vm, 200) == 0)
        rc = err_set(e, -ESRCH, "InternalError", "QEMU of %s is gone", vm->id);
    return rc;
}

int vmm_disk_list(struct vmm *vm, struct vmm_disk_info *ret, size_t max, size_t *ret_n,
                  struct err *e)
{
    json_t *r = NULL, *it;
    size_t i, n = 0;
    int rc = run1(vm, "query-block", NULL, VMM_QMP_TIMEOUT_MS, &r, e);

    if (rc < 0)
        return rc;
    json_array_foreach(r, i, it)
    {
        const char *qdev = json_string_value(json_object_get(it, "qdev"));
        json_t *ins = json_object_get(it, "inserted");
        const char *node = json_string_value(json_object_get(ins, "node-name"));
        const char *ios = json_string_value(json_object_get(it, "io-status"));

        /* Only our disks: a device under /machine/peripheral/ with a node (not firmware). */
        if (!qdev || strncmp(qdev, "/machine/peripheral/", 20) != 0 || !node ||
            strncmp(node, "amid-", 5) == 0)
            continue;
        if (n < max) {
            struct vmm_disk_info *d = &ret[n];

            memset(d, 0, sizeof(*d));
            snprintf(d->name, sizeof(d->name), "%s", node);
            d->readonly = json_is_true(json_object_get(ins, "ro"));
            snprintf(d->io_status, sizeof(d->io_status), "%s", ios ? ios : "");
        }
        n++;
    }
    json_decref(r);
    *ret_n = n;
    return 0;
}

int vmm_qmp(struct vmm *vm, const char *command, const char *args_json, int timeout_ms,
            struct buf *ret_json, struct err *e)
{
    json_t *args = NULL, *r = NULL;
    json_error_t jerr;
    char *s;
    int rc;

    if (!command || !*command)
        return err_set(e, -EINVAL, "InternalError", "no QMP command");
    if (args_json && *args_json) {
        args = json_loads(args_json, JSON_REJECT_DUPLICATES, &jerr);
        if (!json_is_object(args)) {
            json_decref(args);
            return err_set(e, -EINVAL, "InternalError", "QMP arguments must be a JSON object");
        }
    }
    rc = run1(vm, command, args, timeout_ms > 0 ? timeout_ms : VMM_QMP_TIMEOUT_MS, &r, e);
    json_decref(args);
    if (rc < 0)
        return rc;
    if (ret_json) {
        s = json_dumps(r, JSON_COMPACT | JSON_ENCODE_ANY);
        rc = s ? buf_puts(ret_json, s) : -ENOMEM;
        free(s);
    }
    json_decref(r);
    return rc;
}
