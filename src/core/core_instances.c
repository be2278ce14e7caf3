/*
 * core_instances.c — instances: real QEMU virtual machines (src/vmm) booted from volumes made
 * from an image's snapshots, served to QEMU by the daemon's NBD server.
 *
 * States follow EC2: pending -> running -> stopping -> stopped -> pending ...; shutting-down ->
 * terminated.  An API call checks and records the transition's first state and queues a job;
 * the job, holding the instance's lock, drives QEMU (start, ACPI power-down with a time limit,
 * quit, reset) and records where it ended.  A supervisor thread notices guests that powered
 * themselves off (stopped, or terminated per InstanceInitiatedShutdownBehavior) and QEMUs that
 * died.  QEMU runs detached, so it outlives a daemon restart; at start-up core reattaches to
 * each QEMU it finds (its NBD client reconnects by itself) and repairs the rest.
 */
#include "core/core_int.h"
#include "vmm/vmm.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STOP_GRACE_MS           30000 /* ACPI power-down before QEMU is told to quit */
#define TERMINATED_VISIBLE_MS   (60LL * 60 * 1000)
#define MAX_RUNNING_PER_ACCOUNT 20
#define USER_DATA_MAX           16384
#define GUEST_IP                "169.254.2.15" /* QEMU user networking on 169.254/16 leases this first */

static const struct core_instance_type types[] = {
    { "c5.2xlarge", 8, 16384, false, true }, { "c5.4xlarge", 16, 32768, false, true },
    { "c5.large", 2, 4096, false, true },    { "c5.xlarge", 4, 8192, false, true },
    { "m5.2xlarge", 8, 32768, false, true }, { "m5.4xlarge", 16, 65536, false, true },
    { "m5.large", 2, 8192, false, true },    { "m5.xlarge", 4, 16384, false, true },
    { "t2.2xlarge", 8, 32768, true, true },  { "t2.large", 2, 8192, true, true },
    { "t2.medium", 2, 4096, true, true },    { "t2.micro", 1, 1024, true, true },
    { "t2.nano", 1, 512, true, true },       { "t2.small", 1, 2048, true, true },
    { "t2.xlarge", 4, 16384, true, true },   { "t3.2xlarge", 8, 32768, true, true },
    { "t3.large", 2, 8192, true, true },     { "t3.medium", 2, 4096, true, true },
    { "t3.micro", 2, 1024, true, true },     { "t3.nano", 2, 512, true, true },
    { "t3.small", 2, 2048, true, true },     { "t3.xlarge", 4, 16384, true, true },
};

const struct core_instance_type *core_instance_types(size_t *ret_n)
{
    *ret_n = ARRAY_SIZE(types);
    return types;
}

const struct core_instance_type *core_instance_type(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(types); i++)
        if (strcmp(types[i].name, name) == 0)
            return &types[i];
    return NULL;
}

int core_instance_state_code(const char *state)
{
    static const struct {
        const char *name;
        int code;
    } codes[] = { { "pending", 0 },     { "running", 16 },  { "shutting-down", 32 },
                  { "terminated", 48 }, { "stopping", 64 }, { "stopped", 80 } };
    for (size_t i = 0; i < ARRAY_SIZE(codes); i++)
        if (strcmp(codes[i].name, state) == 0)
            return codes[i].code;
    return 0;
}

/* ---- the runtime side: one entry per instance with a lock and its QEMU handle ---- */

struct core_inst {
    char id[32];
    pthread_mutex_t lock; /* held by whoever drives this instance's QEMU */
    struct vmm *vm;       /* NULL when no QEMU is known */
    struct core_inst *next;
};

static struct core_inst *inst_rt(struct app *app, const char *id)
{
    pthread_mutex_lock(&app->inst_lock);
    struct core_inst *r;
    for (r = app->insts; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            break;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (r) {
            snprintf(r->id, sizeof(r->id), "%s", id);
            pthread_mutex_init(&r->lock, NULL);
            r->next = app->insts;
            app->insts = r;
        }
    }
    pthread_mutex_unlock(&app->inst_lock);
    return r;
}

void core_instances_close(struct app *app)
{
    while (app->insts) {
        struct core_inst *r = app->insts;
        app->insts = r->next;
        vmm_free(r->vm); /* QEMU keeps running: a restarted daemon reattaches */
        pthread_mutex_destroy(&r->lock);
        free(r);
    }
}

static void run_dir_of(struct app *app, const char *id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/run/i/%s", app->datadir, id);
}

/* Reads, changes (fn) and writes an instance row in one transaction; -ESTALE (and no write)
 * when fn declines. */
struct row_update {
    const char *id;
    bool (*fn)(struct db_instance *i, void *ctx);
    void *ctx;
};

static int update_tx(struct app *app, struct db *db, void *vctx)
{
    (void)app;
    struct row_update *u = vctx;
    struct db_instance i;
    int rc = db_instance_get(db, u->id, &i);
    if (rc == 0) {
        rc = u->fn(&i, u->ctx) ? db_instance_update(db, &i) : -ESTALE;
        db_instance_free_data(&i);
    }
    return rc;
}

static int update_row(struct app *app, const char *id, bool (*fn)(struct db_instance *i, void *ctx),
                      void *ctx)
{
    struct row_update u = { id, fn, ctx };
    return core_tx(app, update_tx, &u);
}

struct state_change {
    struct app *app;
    const char *from, *state, *reason_code, *reason_msg, *transition;
};

static bool change_state(struct db_instance *i, void *vctx)
{
    struct state_change *c = vctx;
    if (c->from && strcmp(i->state, c->from) != 0)
        return false;
    snprintf(i->state, sizeof(i->state), "%s", c->state);
    if (c->reason_code) {
        snprintf(i->state_reason_code, sizeof(i->state_reason_code), "%s", c->reason_code);
        snprintf(i->state_reason_message, sizeof(i->state_reason_message), "%s",
                 c->reason_msg ? c->reason_msg : "");
    }
    if (c->transition)
        snprintf(i->transition_reason, sizeof(i->transition_reason), "%s", c->transition);
    if (strcmp(c->state, "terminated") == 0)
        i->terminated_ms = core_now_ms(c->app);
    return true;
}

/* Moves an instance from state `from` to `state`, with its reason (NULL: unchanged) and
 * transition reason (NULL: unchanged).  -ESTALE when it is no longer in `from`: someone else
 * moved it meanwhile (an API call does not take the instance's lock; the job it queued will). */
static int set_state(struct app *app, const char *id, const char *from, const char *state,
                     const char *reason_code, const char *reason_msg, const char *transition)
{
    struct state_change c = { app, from, state, reason_code, reason_msg, transition };
    return update_row(app, id, change_state, &c);
}

static bool change_accel(struct db_instance *i, void *ctx)
{
    snprintf(i->accel, sizeof(i->accel), "%s", (const char *)ctx);
    return true;
}

static const char *user_stamp(struct app *app, const char *what, char *buf, size_t n)
{
    char t[32];
    time_format_iso(core_now_ms(app), t);
    t[19] = '\0';
    snprintf(buf, n, "%s (%s GMT)", what, t);
    for (char *p = buf; *p; p++)
        if (*p == 'T' && p > buf && p[-1] >= '0' && p[-1] <= '9')
            *p = ' ';
    return buf;
}

/* ---- launching QEMU ---- */

struct disks_ctx {
    struct vmm_spec *spec;
    char names[VMM_MAX_DISKS][32];
    char serials[VMM_MAX_DISKS][24];
    const char *sock;
    const char *root;
};

static int add_disk(void *vctx, const struct db_attachment *a)
{
    struct disks_ctx *d = vctx;
    struct vmm_spec *s = d->spec;
    if (s->ndisks == VMM_MAX_DISKS || strcmp(a->state, "attached") != 0)
        return 0;
    unsigned k = s->ndisks++;
    /* The root device boots: it goes first. */
    if (strcmp(a->device_name, d->root) == 0 && k > 0) {
        s->disks[k] = s->disks[0];
        memcpy(d->names[k], d->names[0], sizeof(d->names[0]));
        memcpy(d->serials[k], d->serials[0], sizeof(d->serials[0]));
        s->disks[k].name = d->names[k];
        s->disks[k].serial = d->serials[k];
        s->disks[k].export_name = s->disks[k].name;
        k = 0;
    }
    snprintf(d->names[k], sizeof(d->names[k]), "%s", a->volume_id);
    /* EC2 shows a volume's serial as its id without the dash. */
    snprintf(d->serials[k], sizeof(d->serials[k]), "vol%.17s", a->volume_id + 4);
    s->disks[k] = (struct vmm_disk){ .name = d->names[k],
                                     .nbd_socket = d->sock,
                                     .export_name = d->names[k],
                                     .serial = d->serials[k] };
    return 0;
}

static enum vmm_accel accel(struct app *app)
{
    pthread_mutex_lock(&app->inst_lock);
    if (!app->accel_known) {
        const char *force = getenv("AMID_ACCEL");
        if (force && strcmp(force, "tcg") == 0) {
            app->accel = VMM_ACCEL_TCG;
        } else {
            enum vmm_accel a = VMM_ACCEL_TCG;
            char why[160];
            vmm_probe_accel(NULL, 3000, &a, why, sizeof(why));
            log_msg(LOG_INFO, "event=accel-probe accel=%s why=\"%s\"", vmm_accel_name(a), why);
            app->accel = a;
        }
        app->accel_known = true;
    }
    enum vmm_accel a = app->accel;
    pthread_mutex_unlock(&app->inst_lock);
    return a;
}

/* Starts QEMU for an instance (its volumes attached).  Under the instance's lock. */
static int qemu_start(struct app *app, struct core_inst *r, const struct db_instance *i,
                      struct err *e)
{
    char dir[PATH_MAX], sock[PATH_MAX];
    run_dir_of(app, i->id, dir, sizeof(dir));
    snprintf(sock, sizeof(sock), "%s/run", app->datadir);
    mkdir(sock, 0700);
    snprintf(sock, sizeof(sock), "%s/run/i", app->datadir);
    mkdir(sock, 0700);
    mkdir(dir, 0700);
    core_nbd_socket(app, sock, sizeof(sock));
    const struct core_instance_type *t = core_instance_type(i->instance_type);
    struct vmm_spec spec = { 0 };
    struct disks_ctx d = { &spec, { { 0 } }, { { 0 } }, sock, i->root_device_name };
    int rc = core_instance_attachments(app, i->id, add_disk, &d);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read the instance's volumes");
    if (spec.ndisks == 0)
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping", "The instance has no volumes");
    const char *argv[] = { app->exe, "imds", "--data", app->datadir, "--instance", i->id, NULL };
    spec.id = i->id;
    spec.run_dir = dir;
    spec.accel = accel(app);
    spec.vcpus = t ? t->vcpus : 1;
    spec.mem_mib = t ? t->mem_mib : 1024;
    spec.boot = strcmp(i->boot_mode, "uefi") == 0 ? VMM_BOOT_UEFI : VMM_BOOT_BIOS;
    spec.imds_argv = strcmp(i->http_endpoint, "disabled") == 0 ? NULL : argv;
    char mac[18];
    core_instance_mac(i->id, mac);
    spec.mac = mac;
    vmm_free(r->vm);
    r->vm = NULL;
    return vmm_start(&spec, &r->vm, e);
}

/* Stops QEMU: ACPI power-down and a grace period (none with `force`), then quit or kill. */
static void qemu_stop(struct core_inst *r, bool force, int grace_ms)
{
    if (!r->vm)
        return;
    struct vmm_status st;
    if (!force && vmm_powerdown(r->vm, NULL) == 0) {
        for (int waited = 0; waited < grace_ms; waited += 200) {
            if (vmm_state(r->vm, &st, NULL) < 0 || st.state == VMM_STATE_SHUTDOWN ||
                st.state == VMM_STATE_GONE)
                break;
            /* A guest still booting has no handler for the button yet: press it again. */
            if (waited > 0 && waited % 3000 == 0)
                vmm_powerdown(r->vm, NULL);
            usleep(200000);
        }
    }
    if (vmm_quit(r->vm, 10000, NULL) < 0) {
        vmm_kill(r->vm, SIGKILL);
        vmm_wait_gone(r->vm, 10000);
    }
    vmm_free(r->vm);
    r->vm = NULL;
}

/* Finds an instance's QEMU after a restart (or when the handle was lost). */
static void qemu_attach(struct app *app, struct core_inst *r)
{
    if (r->vm)
        return;
    char dir[PATH_MAX];
    run_dir_of(app, r->id, dir, sizeof(dir));
    if (vmm_attach(dir, r->id, &r->vm, NULL) < 0)
        r->vm = NULL;
}

/* ---- volumes of an instance ---- */

struct vol_list {
    struct db_attachment v[32];
    size_t n;
};

static int collect_att(void *vctx, const struct db_attachment *a)
{
    struct vol_list *l = vctx;
    if (l->n < ARRAY_SIZE(l->v))
        l->v[l->n++] = *a;
    return 0;
}

/* Detaches an instance's volumes when it terminates: deletes those marked DeleteOnTermination,
 * makes the others available. */
static void release_volumes(struct app *app, const struct db_instance *i)
{
    struct vol_list l;
    l.n = 0;
    core_instance_attachments(app, i->id, collect_att, &l);
    struct core_caller who = { i->owner, i->region, false };
    for (size_t k = 0; k < l.n; k++) {
        struct db *db = core_db_get(app);
        struct db_volume v;
        if (db_begin(db) == 0) {
            db_attachment_delete(db, l.v[k].volume_id);
            if (db_volume_get(db, l.v[k].volume_id, &v) == 0) {
                snprintf(v.state, sizeof(v.state), "available");
                db_volume_update(db, &v);
            }
            if (db_commit(db) < 0)
                db_rollback(db);
        }
        core_db_put(app, db);
        if (l.v[k].delete_on_termination) {
            struct err e = { 0 };
            core_volume_delete(app, &who, l.v[k].volume_id, &e);
        }
    }
}

/* ---- jobs: one transition each, under the instance's lock ---- */

static bool row(struct app *app, const char *id, struct db_instance *ret)
{
    struct db *db = core_db_get(app);
    int rc = db_instance_get(db, id, ret);
    core_db_put(app, db);
    return rc == 0;
}

/* Runs a transition's body on instance `arg` ("i-...", or "i-...:force") under its lock, if the
 * instance is (still) in `state`: the row is read under the lock, so the state seen is the one
 * the body acts on. */
static void locked_job(struct app *app, const char *arg, const char *state,
                       void (*body)(struct app *app, struct core_inst *r, struct db_instance *i,
                                    bool force))
{
    char id[32];
    snprintf(id, sizeof(id), "%.*s", (int)strcspn(arg, ":"), arg);
    struct core_inst *r = inst_rt(app, id);
    struct db_instance i;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    if (row(app, id, &i)) {
        if (strcmp(i.state, state) == 0)
            body(app, r, &i, strchr(arg, ':') != NULL);
        db_instance_free_data(&i);
    }
    pthread_mutex_unlock(&r->lock);
}

/* Readies the instance's volumes: fills those made from another encryption domain and opens
 * each once, so that a key the owner may no longer use fails the start with EC2's reason. */
static int volumes_ready(struct app *app, const struct db_instance *i, struct err *e)
{
    struct vol_list l = { .n = 0 };
    core_instance_attachments(app, i->id, collect_att, &l);
    for (size_t k = 0; k < l.n; k++) {
        struct core_openvol *ov = NULL;
        int rc = core_vol_get(app, i->region, l.v[k].volume_id, false, &ov);
        if (rc == -ENOENT && core_volume_fill(app, l.v[k].volume_id) == 0)
            rc = core_vol_get(app, i->region, l.v[k].volume_id, false, &ov); /* filled now */
        core_vol_put(app, ov, false);
        if (rc == -EACCES)
            return err_set(e, rc, "Client.InvalidKMSKey.InvalidState",
                           "Client.InvalidKMSKey.InvalidState: The KMS key provided is in an "
                           "incorrect state");
        if (rc < 0)
            return err_set(e, rc, "Server.InternalError",
                           "Server.InternalError: volume %s cannot be opened: %s", l.v[k].volume_id,
                           strerror(-rc));
    }
    return 0;
}

static void do_launch(struct app *app, struct core_inst *r, struct db_instance *i, bool force)
{
    (void)force;
    struct err e = { 0 };
    /* accel records what the instance first ran under: empty until its first start. */
    bool first = i->accel[0] == '\0';
    /* A QEMU already there was started just before a crash of the daemon. */
    qemu_attach(app, r);
    int rc = r->vm ? 0 : volumes_ready(app, i, &e);
    if (rc == -EACCES || (rc < 0 && !r->vm)) {
        log_msg(LOG_WARN, "event=instance-start-failed instance=%s err=\"%s\"", i->id, e.msg);
        if (!first)
            set_state(app, i->id, "pending", "stopped", e.code, e.msg, e.code);
        else if (set_state(app, i->id, "pending", "terminated", e.code, e.msg, e.code) == 0)
            release_volumes(app, i);
        return;
    }
    rc = r->vm ? 0 : qemu_start(app, r, i, &e);
    if (rc == 0) {
        /* A stop or terminate that came meanwhile finds the QEMU in its job. */
        set_state(app, i->id, "pending", "running", NULL, NULL, NULL);
        if (first)
            update_row(app, i->id, change_accel, (void *)vmm_accel_name(accel(app)));
        return;
    }
    log_msg(LOG_WARN, "event=instance-start-failed instance=%s err=\"%s\"", i->id, e.msg);
    char msg[300];
    snprintf(msg, sizeof(msg), "Server.InternalError: %s", e.msg);
    if (!first)
        set_state(app, i->id, "pending", "stopped", "Server.InternalError", msg,
                  "Server.InternalError");
    else if (set_state(app, i->id, "pending", "terminated", "Server.InternalError", msg,
                       "Server.InternalError") == 0)
        release_volumes(app, i);
}

static void do_stop(struct app *app, struct core_inst *r, struct db_instance *i, bool force)
{
    qemu_attach(app, r);
    qemu_stop(r, force, STOP_GRACE_MS);
    set_state(app, i->id, "stopping", "stopped", "Client.UserInitiatedShutdown",
              "Client.UserInitiatedShutdown: User initiated shutdown", NULL);
}

static void do_terminate(struct app *app, struct core_inst *r, struct db_instance *i, bool force)
{
    qemu_attach(app, r);
    qemu_stop(r, force, 5000);
    release_volumes(app, i);
    set_state(app, i->id, "shutting-down", "terminated", "Client.UserInitiatedShutdown",
              "Client.UserInitiatedShutdown: User initiated shutdown", NULL);
}

static void do_reboot(struct app *app, struct core_inst *r, struct db_instance *i, bool force)
{
    (void)i;
    (void)force;
    qemu_attach(app, r);
    if (r->vm)
        vmm_reset(r->vm, NULL);
}

static void job_launch(struct app *app, const char *arg)
{
    locked_job(app, arg, "pending", do_launch);
}

static void job_stop(struct app *app, const char *arg)
{
    locked_job(app, arg, "stopping", do_stop);
}

static void job_terminate(struct app *app, const char *arg)
{
    locked_job(app, arg, "shutting-down", do_terminate);
}

static void job_reboot(struct app *app, const char *arg)
{
    locked_job(app, arg, "running", do_reboot);
}

/* ---- the supervisor ---- */

/* Ids of instances in the given states (a NULL-terminated list), collected before acting on
 * them: acting takes instance locks and other connections. */
struct id_list {
    const char *const *states;
    char (*v)[32];
    size_t n, cap;
};

static int collect_ids(void *vctx, const struct db_instance *i)
{
    struct id_list *l = vctx;
    bool match = false;
    for (const char *const *s = l->states; *s; s++)
        match |= strcmp(i->state, *s) == 0;
    if (!match)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char(*v)[32] = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], 32, "%s", i->id);
    return 0;
}

static void ids_in_states(struct app *app, const char *const *states, struct id_list *l)
{
    memset(l, 0, sizeof(*l));
    l->states = states;
    struct db *db = core_db_get(app);
    db_instance_each(db, NULL, NULL, collect_ids, l);
    core_db_put(app, db);
}

/* Notices a guest that powered itself off, or a QEMU that died. */
static void supervise_one(struct app *app, const char *id)
{
    struct core_inst *r = inst_rt(app, id);
    if (!r || pthread_mutex_trylock(&r->lock) != 0)
        return; /* a transition is driving it */
    struct db_instance i;
    if (!row(app, id, &i)) {
        pthread_mutex_unlock(&r->lock);
        return;
    }
    if (strcmp(i.state, "running") != 0) {
        db_instance_free_data(&i);
        pthread_mutex_unlock(&r->lock);
        return;
    }
    qemu_attach(app, r);
    struct vmm_status st = { .state = VMM_STATE_GONE };
    if (r->vm)
        vmm_state(r->vm, &st, NULL);
    char dir[PATH_MAX];
    run_dir_of(app, id, dir, sizeof(dir));
    vmm_console_trim(dir, 1 << 20, 1 << 20);
    if (st.state == VMM_STATE_SHUTDOWN) {
        qemu_stop(r, true, 0);
        const char *msg = "Client.InstanceInitiatedShutdown: Instance initiated shutdown";
        if (strcmp(i.shutdown_behavior, "terminate") == 0) {
            if (set_state(app, id, "running", "terminated", "Client.InstanceInitiatedShutdown", msg,
                          NULL) == 0)
                release_volumes(app, &i);
        } else {
            set_state(app, id, "running", "stopped", "Client.InstanceInitiatedShutdown", msg, NULL);
        }
    } else if (st.state == VMM_STATE_GONE) {
        vmm_free(r->vm);
        r->vm = NULL;
        log_msg(LOG_WARN, "event=instance-gone instance=%s", id);
        set_state(app, id, "running", "stopped", "Server.InternalError",
                  "Server.InternalError: the instance's virtual machine exited unexpectedly", NULL);
    }
    db_instance_free_data(&i);
    pthread_mutex_unlock(&r->lock);
}

static void *supervisor(void *vapp)
{
    struct app *app = vapp;
    static const char *const running[] = { "running", NULL };
    pthread_mutex_lock(&app->job_lock);
    while (!app->stopping) {
        pthread_mutex_unlock(&app->job_lock);
        struct id_list l;
        ids_in_states(app, running, &l);
        for (size_t k = 0; k < l.n; k++)
            supervise_one(app, l.v[k]);
        free(l.v);
        pthread_mutex_lock(&app->job_lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        if (!app->stopping)
            pthread_cond_timedwait(&app->sup_cond, &app->job_lock, &until);
    }
    pthread_mutex_unlock(&app->job_lock);
    return NULL;
}

int core_instances_start(struct app *app)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        snprintf(app->exe, sizeof(app->exe), "%s", self);
    }
    /* Reattach to the QEMUs that outlived the last daemon; finish interrupted transitions. */
    static const char *const live[] = { "pending", "running", "stopping", "shutting-down", NULL };
    struct id_list l;
    ids_in_states(app, live, &l);
    for (size_t k = 0; k < l.n; k++) {
        struct db_instance i;
        struct core_inst *r = inst_rt(app, l.v[k]);
        if (!r || !row(app, l.v[k], &i))
            continue;
        qemu_attach(app, r);
        if (strcmp(i.state, "pending") == 0)
            core_job_submit(app, job_launch, i.id);
        else if (strcmp(i.state, "stopping") == 0)
            core_job_submit(app, job_stop, i.id);
        else if (strcmp(i.state, "shutting-down") == 0)
            core_job_submit(app, job_terminate, i.id);
        /* running without a QEMU: the supervisor records it as stopped. */
        db_instance_free_data(&i);
    }
    free(l.v);
    if (pthread_create(&app->supervisor, NULL, supervisor, app) != 0)
        return -EAGAIN;
    app->supervising = true;
    return 0;
}

void core_instances_stop(struct app *app)
{
    if (app->supervising) {
        pthread_join(app->supervisor, NULL);
        app->supervising = false;
    }
}

/* ---- lookups ---- */

int core_instance_get(struct app *app, const struct core_caller *who, const char *id,
                      struct db_instance *ret, struct err *e)
{
    if (!core_id_valid(id, "i-"))
        return err_set(e, -EINVAL, "InvalidInstanceID.Malformed",
                       "Invalid id: \"%.64s\" (expecting \"i-...\")", id);
    struct db *db = core_db_get(app);
    int rc = db_instance_get(db, id, ret);
    core_db_put(app, db);
    if (rc == 0 &&
        (strcmp(ret->owner, who->account_id) != 0 || strcmp(ret->region, who->region) != 0 ||
         (strcmp(ret->state, "terminated") == 0 &&
          core_now_ms(app) - ret->terminated_ms > TERMINATED_VISIBLE_MS))) {
        db_instance_free_data(ret);
        rc = -ENOENT;
    }
    if (rc == -ENOENT)
        return err_set(e, rc, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist",
                       id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read instance %s", id);
    return 0;
}

struct each_ctx {
    struct app *app;
    int64_t now;
    int (*fn)(void *ctx, const struct db_instance *i);
    void *ctx;
};

static int each_visible(void *vctx, const struct db_instance *i)
{
    struct each_ctx *c = vctx;
    if (strcmp(i->state, "terminated") == 0 && c->now - i->terminated_ms > TERMINATED_VISIBLE_MS)
        return 0;
    return c->fn(c->ctx, i);
}

int core_instance_each(struct app *app, const struct core_caller *who,
                       int (*fn)(void *ctx, const struct db_instance *i), void *ctx)
{
    struct each_ctx c = { app, core_now_ms(app), fn, ctx };
    struct db *db = core_db_get(app);
    int rc = db_instance_each(db, who->region, who->account_id, each_visible, &c);
    core_db_put(app, db);
    return rc;
}

int core_instance_attachments(struct app *app, const char *id,
                              int (*fn)(void *ctx, const struct db_attachment *a), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_attachment_each(db, id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

bool core_instance_reachable(struct app *app, const struct db_instance *i)
{
    if (strcmp(i->state, "running") != 0)
        return false;
    char path[PATH_MAX];
    run_dir_of(app, i->id, path, sizeof(path));
    size_t n = strlen(path);
    snprintf(path + n, sizeof(path) - n, "/%s", VMM_FILE_CONSOLE);
    struct stat st;
    return stat(path, &st) == 0 && st.st_size > 0;
}

/* ---- RunInstances ---- */

struct image_bdms {
    struct db_bdm v[32];
    size_t n;
};

static int collect_bdm(void *vctx, const struct db_bdm *b)
{
    struct image_bdms *l = vctx;
    if (l->n < ARRAY_SIZE(l->v))
        l->v[l->n++] = *b;
    return 0;
}

static int count_running(void *vctx, const struct db_instance *i)
{
    if (strcmp(i->state, "terminated") != 0 && strcmp(i->state, "stopped") != 0 &&
        strcmp(i->state, "shutting-down") != 0)
        (*(int *)vctx)++;
    return 0;
}

/* Merges RunInstances' mappings into the image's: overrides by device, NoDevice, additions. */
static int merge_bdms(struct image_bdms *l, const struct core_run_spec *sp, struct err *e)
{
    for (size_t k = 0; k < sp->nbdms; k++) {
        const struct core_run_bdm *o = &sp->bdms[k];
        size_t i;
        for (i = 0; i < l->n; i++)
            if (strcmp(l->v[i].device_name, o->device) == 0)
                break;
        if (i == l->n) {
            if (o->nodevice)
                continue;
            if (!o->ebs)
                return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                               "The mapping for %s needs Ebs", o->device);
            if (l->n == ARRAY_SIZE(l->v))
                return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                               "Too many block device mappings");
            memset(&l->v[i], 0, sizeof(l->v[i]));
            snprintf(l->v[i].device_name, sizeof(l->v[i].device_name), "%s", o->device);
            snprintf(l->v[i].kind, sizeof(l->v[i].kind), "ebs");
            l->v[i].delete_on_termination = true;
            l->n++;
        }
        struct db_bdm *b = &l->v[i];
        if (o->nodevice) {
            snprintf(b->kind, sizeof(b->kind), "none");
            continue;
        }
        if (o->kms_key_id[0] && !o->encrypted)
            return err_set(e, -EINVAL, "InvalidParameterDependency",
                           "The parameter KmsKeyId requires the parameter Encrypted to be set.");
        if (o->encrypted) {
            b->encrypted = true;
            if (o->kms_key_id[0])
                snprintf(b->kms_key_id, sizeof(b->kms_key_id), "%s", o->kms_key_id);
        }
        if (o->snapshot_id[0])
            snprintf(b->snapshot_id, sizeof(b->snapshot_id), "%s", o->snapshot_id);
        if (o->size_gib)
            b->volume_size = o->size_gib;
        if (o->type[0])
            snprintf(b->volume_type, sizeof(b->volume_type), "%s", o->type);
        if (o->iops)
            b->iops = o->iops;
        if (o->throughput)
            b->throughput = o->throughput;
        if (o->delete_on_termination >= 0)
            b->delete_on_termination = o->delete_on_termination;
    }
    return 0;
}

struct run_ctx {
    const struct core_caller *who;
    const struct core_run_spec *spec;
    const char *digest;
    const char *public_key; /* of the key pair, or "" */
    bool replay; /* the token was recorded meanwhile: reservation_id is the first call's */
    const struct db_image *im;
    struct image_bdms *bdms;
    const struct core_enc *encs; /* per mapping */
    const char *zone;
    char *reservation_id;
    char (*ids)[32];
    size_t count;
    struct err *e;
};

static int run_tx(struct app *app, struct db *db, void *vctx)
{
    struct run_ctx *c = vctx;
    const struct core_run_spec *sp = c->spec;
    int64_t now = core_now_ms(app);
    bool token = sp->client_token && *sp->client_token;
    if (token) {
        int rc = core_idem_check(db, c->who, "RunInstances", sp->client_token, c->digest,
                                 c->reservation_id, 32, c->e);
        if (rc == 0) {
            c->replay = true;
            return 0;
        }
        if (rc != -ENOENT)
            return rc;
        rc = db_idem_put(db, c->who->account_id, c->who->region, "RunInstances", sp->client_token,
                         c->digest, c->reservation_id, now);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot record the client token");
    }
    for (size_t n = 0; n < c->count; n++) {
        struct db_instance i;
        memset(&i, 0, sizeof(i));
        rand_id(i.id, sizeof(i.id), "i-", 17);
        snprintf(c->ids[n], 32, "%s", i.id);
        snprintf(i.region, sizeof(i.region), "%s", c->who->region);
        snprintf(i.owner, sizeof(i.owner), "%s", c->who->account_id);
        snprintf(i.reservation_id, sizeof(i.reservation_id), "%s", c->reservation_id);
        snprintf(i.image_id, sizeof(i.image_id), "%s", c->im->id);
        snprintf(i.instance_type, sizeof(i.instance_type), "%s",
                 sp->instance_type ? sp->instance_type : "t2.micro");
        snprintf(i.zone, sizeof(i.zone), "%s", c->zone);
        snprintf(i.state, sizeof(i.state), "pending");
        i.launch_ms = now;
        snprintf(i.key_name, sizeof(i.key_name), "%s", sp->key_name ? sp->key_name : "");
        snprintf(i.public_key, sizeof(i.public_key), "%s", c->public_key);
        i.user_data = (uint8_t *)sp->user_data;
        i.user_data_len = sp->user_data_len;
        snprintf(i.client_token, sizeof(i.client_token), "%s",
                 sp->client_token ? sp->client_token : "");
        i.launch_index = (int64_t)n;
        snprintf(i.private_ip, sizeof(i.private_ip), GUEST_IP);
        snprintf(i.http_tokens, sizeof(i.http_tokens), "%s",
                 sp->http_tokens ? sp->http_tokens : "optional");
        snprintf(i.http_endpoint, sizeof(i.http_endpoint), "%s",
                 sp->http_endpoint ? sp->http_endpoint : "enabled");
        i.hop_limit = sp->hop_limit ? sp->hop_limit : 1;
        snprintf(i.metadata_tags, sizeof(i.metadata_tags), "%s",
                 sp->metadata_tags ? sp->metadata_tags : "disabled");
        snprintf(i.architecture, sizeof(i.architecture), "%s", c->im->architecture);
        snprintf(i.root_device_name, sizeof(i.root_device_name), "%s", c->im->root_device_name);
        snprintf(i.boot_mode, sizeof(i.boot_mode), "%s", c->im->boot_mode);
        i.ena_support = c->im->ena_support;
        i.disable_api_termination = sp->disable_api_termination;
        i.disable_api_stop = sp->disable_api_stop;
        snprintf(i.shutdown_behavior, sizeof(i.shutdown_behavior), "%s",
                 sp->shutdown_behavior ? sp->shutdown_behavior : "stop");
        run_dir_of(app, i.id, i.run_dir, sizeof(i.run_dir));
        int rc = db_instance_insert(db, &i);
        if (rc == 0)
            rc = core_tags_insert(db, c->who, i.id, "instance", sp->instance_tags,
                                  sp->ninstance_tags);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot record the instance");
        /* Its volumes, from the image's snapshots, in constant time. */
        for (size_t k = 0; k < c->bdms->n; k++) {
            struct db_bdm *b = &c->bdms->v[k];
            if (strcmp(b->kind, "ebs") != 0)
                continue;
            struct core_volume_spec vs = { 0 };
            vs.zone = c->zone;
            vs.size_gib = b->volume_size;
            vs.type = b->volume_type[0] ? b->volume_type : "gp2";
            vs.iops = b->iops;
            vs.throughput = b->throughput;
            vs.snapshot_id = b->snapshot_id[0] ? b->snapshot_id : NULL;
            vs.tags = sp->volume_tags;
            vs.ntags = sp->nvolume_tags;
            vs.enc = &c->encs[k];
            struct db_volume v;
            rc = core_volume_prepare(app, c->who, &vs, &v, c->e);
            if (rc == 0) {
                snprintf(v.state, sizeof(v.state), "in-use");
                rc = core_volume_new_tx(app, db, c->who, &vs, true, &v, c->e);
            }
            if (rc < 0)
                return rc;
            struct db_attachment a = { 0 };
            snprintf(a.instance_id, sizeof(a.instance_id), "%s", i.id);
            snprintf(a.volume_id, sizeof(a.volume_id), "%s", v.id);
            snprintf(a.device_name, sizeof(a.device_name), "%s", b->device_name);
            a.attach_ms = now;
            a.delete_on_termination = b->delete_on_termination;
            snprintf(a.state, sizeof(a.state), "attached");
            a.boot_index = strcmp(b->device_name, c->im->root_device_name) == 0 ? 0 : 1 + (int)k;
            rc = db_attachment_insert(db, &a);
            if (rc < 0)
                return err_set(c->e, rc, "InternalError", "cannot attach the volume");
        }
    }
    /* The image was launched (LastLaunchedTime). */
    struct db_image im;
    if (db_image_get(db, c->im->id, &im) == 0) {
        im.last_launched_ms = now;
        db_image_update(db, &im);
    }
    return 0;
}

static void hash_str(struct sha256 *h, const char *s)
{
    crypto_sha256_update(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

/* A digest of everything a RunInstances request asks for, to tell a retry (same client token,
 * same request) from a mismatch. */
static void run_digest(const struct core_run_spec *sp, char out[65])
{
    struct sha256 *h = crypto_sha256_new();
    uint8_t d[32];
    char num[96];
    if (!h) {
        snprintf(out, 65, "%s", "unhashed");
        return;
    }
    snprintf(num, sizeof(num), "%lld|%lld|%lld|%d|%d", (long long)sp->min_count,
             (long long)sp->max_count, (long long)sp->hop_limit, sp->disable_api_termination,
             sp->disable_api_stop);
    const char *strs[] = { sp->image_id,      sp->instance_type,     sp->key_name,
                           sp->zone,          sp->http_tokens,       sp->http_endpoint,
                           sp->metadata_tags, sp->shutdown_behavior, num };
    for (size_t k = 0; k < ARRAY_SIZE(strs); k++)
        hash_str(h, strs[k]);
    crypto_sha256_update(h, sp->user_data ? (const void *)sp->user_data : "", sp->user_data_len);
    for (size_t k = 0; k < sp->nbdms; k++)
        crypto_sha256_update(h, &sp->bdms[k], sizeof(sp->bdms[k]));
    for (size_t k = 0; k < sp->ninstance_tags; k++) {
        hash_str(h, sp->instance_tags[k].key);
        hash_str(h, sp->instance_tags[k].value);
    }
    hash_str(h, "|");
    for (size_t k = 0; k < sp->nvolume_tags; k++) {
        hash_str(h, sp->volume_tags[k].key);
        hash_str(h, sp->volume_tags[k].value);
    }
    crypto_sha256_final(h, d);
    crypto_sha256_free(h);
    hex_encode(d, sizeof(d), out);
}

struct replay_ctx {
    const char *reservation_id;
    char (*ids)[32];
    size_t max, n;
};

static int collect_reservation(void *vctx, const struct db_instance *i)
{
    struct replay_ctx *c = vctx;
    if (strcmp(i->reservation_id, c->reservation_id) == 0 && c->n < c->max)
        snprintf(c->ids[c->n++], 32, "%s", i->id);
    return 0;
}

/* Answers a repeated request with the instances of its first reservation (returns 1). */
static int replay(struct app *app, const struct core_caller *who, const char *reservation_id,
                  char (*ids)[32], size_t max, size_t *ret_n, struct err *e)
{
    struct replay_ctx c = { reservation_id, ids, max, 0 };
    struct db *db = core_db_get(app);
    int rc = db_instance_each(db, who->region, who->account_id, collect_reservation, &c);
    core_db_put(app, db);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read the reservation");
    *ret_n = c.n;
    return 1;
}

int core_run_instances(struct app *app, const struct core_caller *who,
                       const struct core_run_spec *sp, char reservation_id[32], char (*ret_ids)[32],
                       size_t max, size_t *ret_n, struct err *e)
{
    if (!sp->image_id)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter ImageId");
    const char *type = sp->instance_type ? sp->instance_type : "t2.micro";
    if (!core_instance_type(type))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Invalid value '%.32s' for InstanceType.", type);
    if (sp->min_count < 1 || sp->max_count < 1)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Value for parameter MinCount and MaxCount must be at least 1");
    if (sp->min_count > sp->max_count)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "MinCount (%lld) is greater than MaxCount (%lld)", (long long)sp->min_count,
                       (long long)sp->max_count);
    if (sp->user_data_len > USER_DATA_MAX)
        return err_set(e, -EINVAL, "InvalidParameterValue", "User data is limited to 16384 bytes");
    if (sp->hop_limit && (sp->hop_limit < 1 || sp->hop_limit > 64))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "HttpPutResponseHopLimit must be between 1 and 64");
    if (sp->shutdown_behavior && strcmp(sp->shutdown_behavior, "stop") != 0 &&
        strcmp(sp->shutdown_behavior, "terminate") != 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "InstanceInitiatedShutdownBehavior is stop or terminate");
    int rc = core_tags_check(sp->instance_tags, sp->ninstance_tags, e);
    if (rc == 0)
        rc = core_tags_check(sp->volume_tags, sp->nvolume_tags, e);
    if (rc < 0)
        return rc;
    /* The same client token again: the first call's reservation. */
    char digest[65];
    run_digest(sp, digest);
    if (sp->client_token && *sp->client_token) {
        struct db *db = core_db_get(app);
        rc = core_idem_check(db, who, "RunInstances", sp->client_token, digest, reservation_id, 32,
                             e);
        core_db_put(app, db);
        if (rc == 0)
            return replay(app, who, reservation_id, ret_ids, max, ret_n, e);
        if (rc != -ENOENT)
            return rc;
    }
    struct db_image im;
    rc = core_image_get(app, who, sp->image_id, CORE_IMAGE_LAUNCH, &im, e);
    if (rc < 0)
        return rc;
    if (strcmp(im.state, "available") != 0)
        return err_set(e, -EINVAL, "InvalidAMIID.Unavailable",
                       "The image id '[%s]' is not available (it is %s)", im.id, im.state);
    char zone[40];
    struct core_volume_spec zs = { .zone = sp->zone };
    if (!sp->zone) {
        /* Default: the region's first zone. */
        snprintf(zone, sizeof(zone), "%sa", who->region);
        zs.zone = zone;
    }
    struct db_volume probe;
    zs.size_gib = 1;
    rc = core_volume_prepare(app, who, &zs, &probe, e);
    if (rc < 0)
        return err_set(e, rc, "InvalidParameterValue", "Invalid availability zone: [%.40s]",
                       sp->zone ? sp->zone : zone);
    snprintf(zone, sizeof(zone), "%s", probe.zone);
    struct db_keypair kp = { 0 };
    if (sp->key_name) {
        rc = core_keypair_get(app, who, sp->key_name, NULL, &kp, e);
        if (rc < 0)
            return err_set(e, rc, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist",
                           sp->key_name);
    }
    struct image_bdms *bdms = calloc(1, sizeof(*bdms));
    if (!bdms)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    core_image_bdms(app, im.id, collect_bdm, bdms);
    rc = merge_bdms(bdms, sp, e);
    if (rc < 0) {
        free(bdms);
        return rc;
    }
    bool root = false;
    for (size_t k = 0; k < bdms->n; k++)
        root |= strcmp(bdms->v[k].device_name, im.root_device_name) == 0 &&
                strcmp(bdms->v[k].kind, "ebs") == 0;
    if (!root) {
        free(bdms);
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                       "The root device %s cannot be removed", im.root_device_name);
    }
    int running = 0;
    struct db *db = core_db_get(app);
    db_instance_each(db, NULL, who->account_id, count_running, &running);
    core_db_put(app, db);
    int64_t room = MAX_RUNNING_PER_ACCOUNT - running;
    if (room < sp->min_count) {
        free(bdms);
        return err_set(e, -EINVAL, "InstanceLimitExceeded",
                       "You have requested more instances (%lld) than your current instance "
                       "limit of %d allows for the specified instance type.",
                       (long long)sp->min_count, MAX_RUNNING_PER_ACCOUNT);
    }
    size_t count = (size_t)(sp->max_count < room ? sp->max_count : room);
    if (count > max)
        count = max;
    /* Each volume's encryption, outside the transaction (the key service writes): the launching
     * account must be able to use the key of every encrypted snapshot it launches from. */
    struct core_enc *encs = calloc(bdms->n ? bdms->n : 1, sizeof(*encs));
    if (!encs) {
        free(bdms);
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    }
    for (size_t k = 0; k < bdms->n && rc == 0; k++) {
        const struct db_bdm *b = &bdms->v[k];
        struct db_snapshot s;
        struct core_dkey sdk;
        if (strcmp(b->kind, "ebs") != 0)
            continue;
        bool from = b->snapshot_id[0] && core_snapshot_row(app, b->snapshot_id, &s) == 0;
        if (from)
            core_dkey_of_snapshot(&s, &sdk);
        rc = core_enc_plan(app, who, b->encrypted, b->kms_key_id[0] ? b->kms_key_id : NULL,
                           from ? &sdk : NULL, &encs[k], e);
    }
    rand_id(reservation_id, 32, "r-", 17);
    struct run_ctx c = { who,  sp,   digest,         kp.public_key, false, &im, bdms,
                         encs, zone, reservation_id, ret_ids,       count, e };
    if (rc == 0 && who->dry_run)
        rc = core_dry_run(e);
    if (rc == 0)
        rc = core_tx(app, run_tx, &c);
    for (size_t k = 0; k < bdms->n; k++)
        core_enc_wipe(&encs[k]);
    free(encs);
    free(bdms);
    if (rc < 0)
        return rc;
    if (c.replay)
        return replay(app, who, reservation_id, ret_ids, max, ret_n, e);
    *ret_n = count;
    for (size_t n = 0; n < count; n++)
        core_job_submit(app, job_launch, ret_ids[n]);
    return 0;
}

/* ---- stop, start, reboot, terminate ---- */

/* The state an operation moves an instance in state `prev` to, and the job that carries it out
 * (NULL: nothing to do, as for stopping a stopped instance). */
static const char *next_state(enum core_instance_op op, const char *prev,
                              void (**job)(struct app *app, const char *arg))
{
    bool live = strcmp(prev, "running") == 0 || strcmp(prev, "pending") == 0;
    *job = NULL;
    switch (op) {
    case CORE_OP_STOP:
        if (live)
            *job = job_stop;
        return live ? "stopping" : prev;
    case CORE_OP_START:
        if (strcmp(prev, "stopped") == 0)
            *job = job_launch;
        return *job ? "pending" : prev;
    case CORE_OP_REBOOT:
        *job = job_reboot;
        return prev;
    case CORE_OP_TERMINATE:
        if (strcmp(prev, "terminated") != 0 && strcmp(prev, "shutting-down") != 0)
            *job = job_terminate;
        return *job ? "shutting-down" : prev;
    }
    return prev;
}

/* Records one instance's transition and queues its job; retries when the state moved between
 * reading and writing.  Fills `prev`; returns the new state (NULL when the instance is gone). */
static const char *change_one(struct app *app, const struct core_caller *who,
                              enum core_instance_op op, const char *id, bool force, char prev[16])
{
    for (int attempt = 0; attempt < 8; attempt++) {
        struct db_instance i;
        if (core_instance_get(app, who, id, &i, NULL) < 0)
            return NULL;
        snprintf(prev, 16, "%s", i.state);
        db_instance_free_data(&i);
        void (*job)(struct app * app, const char *arg);
        const char *cur = next_state(op, prev, &job);
        char arg[48], stamp[96];
        snprintf(arg, sizeof(arg), "%s%s", id, force ? ":force" : "");
        int rc = 0;
        if (strcmp(cur, prev) != 0) {
            const char *why =
                op == CORE_OP_START ? "" : user_stamp(app, "User initiated", stamp, sizeof(stamp));
            rc = set_state(app, id, prev, cur, "", "", why);
        }
        if (rc == -ESTALE)
            continue;
        if (job)
            core_job_submit(app, job, op == CORE_OP_STOP || op == CORE_OP_TERMINATE ? arg : id);
        return cur;
    }
    return prev;
}

int core_instances_change(struct app *app, const struct core_caller *who, enum core_instance_op op,
                          const char *const *ids, size_t n, bool force,
                          void (*fn)(void *ctx, const char *id, const char *prev, const char *cur),
                          void *ctx, struct err *e)
{
    if (n == 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter InstanceId");
    /* Check every id first: all or nothing. */
    for (size_t k = 0; k < n; k++) {
        struct db_instance i;
        int rc = core_instance_get(app, who, ids[k], &i, e);
        if (rc < 0)
            return rc;
        const char *st = i.state;
        bool ok = true;
        switch (op) {
        case CORE_OP_STOP:
            ok = strcmp(st, "running") == 0 || strcmp(st, "pending") == 0 ||
                 strcmp(st, "stopping") == 0 || strcmp(st, "stopped") == 0;
            if (ok && i.disable_api_stop && strcmp(st, "stopped") != 0) {
                db_instance_free_data(&i);
                return err_set(e, -EPERM, "OperationNotPermitted",
                               "The instance '%s' may not be stopped. Modify its "
                               "'disableApiStop' instance attribute and try again.",
                               ids[k]);
            }
            break;
        case CORE_OP_START:
            ok = strcmp(st, "stopped") == 0 || strcmp(st, "running") == 0 ||
                 strcmp(st, "pending") == 0;
            break;
        case CORE_OP_REBOOT:
            ok = strcmp(st, "running") == 0 || strcmp(st, "pending") == 0;
            break;
        case CORE_OP_TERMINATE:
            if (i.disable_api_termination && strcmp(st, "terminated") != 0) {
                db_instance_free_data(&i);
                return err_set(e, -EPERM, "OperationNotPermitted",
                               "The instance '%s' may not be terminated. Modify its "
                               "'disableApiTermination' instance attribute and try again.",
                               ids[k]);
            }
            break;
        }
        db_instance_free_data(&i);
        if (!ok)
            return err_set(e, -EINVAL, "IncorrectInstanceState",
                           "The instance '%s' is not in a state from which it can be %s.", ids[k],
                           op == CORE_OP_STOP    ? "stopped"
                           : op == CORE_OP_START ? "started"
                                                 : "rebooted");
    }
    if (who->dry_run)
        return core_dry_run(e);
    if (op == CORE_OP_START) {
        /* Starting needs room under the running-instance limit. */
        int running = 0;
        struct db *db = core_db_get(app);
        db_instance_each(db, NULL, who->account_id, count_running, &running);
        core_db_put(app, db);
        if (running + (int)n > MAX_RUNNING_PER_ACCOUNT)
            return err_set(e, -EINVAL, "InstanceLimitExceeded",
                           "Your quota allows for %d more running instance(s).",
                           MAX_RUNNING_PER_ACCOUNT - running);
    }
    for (size_t k = 0; k < n; k++) {
        char prev[16];
        const char *cur = change_one(app, who, op, ids[k], force, prev);
        if (fn && cur)
            fn(ctx, ids[k], prev, cur);
    }
    return 0;
}

/* ---- attributes ---- */

int core_instance_modify(struct app *app, const struct core_caller *who, const char *id,
                         const struct core_instance_mod *m, struct err *e)
{
    struct db_instance i;
    int rc = core_instance_get(app, who, id, &i, e);
    if (rc < 0)
        return rc;
    bool stopped = strcmp(i.state, "stopped") == 0;
    if ((m->instance_type || m->has_user_data) && !stopped) {
        db_instance_free_data(&i);
        return err_set(e, -EINVAL, "IncorrectInstanceState",
                       "The instance '%s' is not in the 'stopped' state.", id);
    }
    if (m->instance_type && !core_instance_type(m->instance_type)) {
        db_instance_free_data(&i);
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Invalid value '%.32s' for InstanceType.", m->instance_type);
    }
    if (m->has_user_data && m->user_data_len > USER_DATA_MAX) {
        db_instance_free_data(&i);
        return err_set(e, -EINVAL, "InvalidParameterValue", "User data is limited to 16384 bytes");
    }
    if (m->shutdown_behavior && strcmp(m->shutdown_behavior, "stop") != 0 &&
        strcmp(m->shutdown_behavior, "terminate") != 0) {
        db_instance_free_data(&i);
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "InstanceInitiatedShutdownBehavior is stop or terminate");
    }
    if (who->dry_run) {
        db_instance_free_data(&i);
        return core_dry_run(e);
    }
    if (m->instance_type)
        snprintf(i.instance_type, sizeof(i.instance_type), "%s", m->instance_type);
    uint8_t *old = i.user_data;
    if (m->has_user_data) {
        i.user_data = (uint8_t *)m->user_data;
        i.user_data_len = m->user_data_len;
    }
    if (m->disable_api_termination >= 0)
        i.disable_api_termination = m->disable_api_termination;
    if (m->disable_api_stop >= 0)
        i.disable_api_stop = m->disable_api_stop;
    if (m->shutdown_behavior)
        snprintf(i.shutdown_behavior, sizeof(i.shutdown_behavior), "%s", m->shutdown_behavior);
    struct db *db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_instance_update(db, &i);
    if (rc == 0 && m->dot_device) {
        struct vol_list l;
        l.n = 0;
        db_attachment_each(db, id, collect_att, &l);
        bool found = false;
        for (size_t k = 0; k < l.n && rc == 0; k++) {
            if (strcmp(l.v[k].device_name, m->dot_device) == 0) {
                l.v[k].delete_on_termination = m->dot;
                rc = db_attachment_update(db, &l.v[k]);
                found = true;
            }
        }
        if (rc == 0 && !found)
            rc = -ENODEV;
    }
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    i.user_data = old;
    db_instance_free_data(&i);
    if (rc == -ENODEV)
        return err_set(e, -EINVAL, "InvalidInstanceAttributeValue",
                       "No device %s is attached to the instance", m->dot_device);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot update the instance");
    return 0;
}

struct md_change {
    const char *tokens, *endpoint, *tags;
    int64_t hops;
};

static bool change_metadata(struct db_instance *i, void *vctx)
{
    struct md_change *m = vctx;
    if (m->tokens)
        snprintf(i->http_tokens, sizeof(i->http_tokens), "%s", m->tokens);
    if (m->endpoint)
        snprintf(i->http_endpoint, sizeof(i->http_endpoint), "%s", m->endpoint);
    if (m->tags)
        snprintf(i->metadata_tags, sizeof(i->metadata_tags), "%s", m->tags);
    if (m->hops)
        i->hop_limit = m->hops;
    return true;
}

static int one_of(const char *v, const char *a, const char *b)
{
    return !v || strcmp(v, a) == 0 || strcmp(v, b) == 0;
}

int core_instance_metadata_options(struct app *app, const struct core_caller *who, const char *id,
                                   const char *http_tokens, int64_t hop_limit,
                                   const char *http_endpoint, const char *metadata_tags,
                                   struct db_instance *ret, struct err *e)
{
    int rc = core_instance_get(app, who, id, ret, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(ret);
    if (strcmp(ret->state, "terminated") == 0 || strcmp(ret->state, "shutting-down") == 0)
        return err_set(e, -EINVAL, "IncorrectInstanceState",
                       "The instance '%s' is not in a state from which its metadata options can "
                       "be changed.",
                       id);
    if (!one_of(http_tokens, "optional", "required") ||
        !one_of(http_endpoint, "enabled", "disabled") ||
        !one_of(metadata_tags, "enabled", "disabled"))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "HttpTokens is optional or required; HttpEndpoint and "
                       "InstanceMetadataTags are enabled or disabled");
    if (who->dry_run)
        return core_dry_run(e);
    struct md_change m = { http_tokens, http_endpoint, metadata_tags, hop_limit };
    rc = update_row(app, id, change_metadata, &m);
    if (rc == 0)
        rc = core_instance_get(app, who, id, ret, e);
    return rc < 0 ? (e && e->code ? rc : err_set(e, rc, "InternalError", "cannot update")) : 0;
}

int core_console_output(struct app *app, const struct core_caller *who, const char *id, bool latest,
                        struct buf *out, struct err *e)
{
    struct db_instance i;
    int rc = core_instance_get(app, who, id, &i, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(&i);
    char dir[PATH_MAX];
    run_dir_of(app, id, dir, sizeof(dir));
    rc = vmm_console_read(dir, latest, 0, out);
    return rc == -ENOENT ? 0
           : rc < 0      ? err_set(e, rc, "InternalError", "cannot read the console")
                         : 0;
}

/* ---- attaching volumes ---- */

int core_volume_attach(struct app *app, const struct core_caller *who, const char *volume_id,
                       const char *instance_id, const char *device, struct db_attachment *ret,
                       struct err *e)
{
    struct db_instance i;
    int rc = core_instance_get(app, who, instance_id, &i, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(&i);
    struct db_volume v;
    rc = core_volume_get(app, who, volume_id, &v, e);
    if (rc < 0)
        return rc;
    if (strcmp(v.state, "available") != 0)
        return err_set(e, -EBUSY, "VolumeInUse", "%s is already attached to an instance",
                       volume_id);
    if (strcmp(v.zone, i.zone) != 0)
        return err_set(e, -EINVAL, "InvalidVolume.ZoneMismatch",
                       "The volume '%s' is not in the same availability zone as instance '%s'",
                       volume_id, instance_id);
    if (strcmp(i.state, "running") != 0 && strcmp(i.state, "stopped") != 0)
        return err_set(e, -EINVAL, "IncorrectInstanceState",
                       "The instance '%s' is not 'running' or 'stopped'.", instance_id);
    if (!device || strncmp(device, "/dev/", 5) != 0 || strlen(device) > 32)
        return err_set(e, -EINVAL, "InvalidParameterValue", "Invalid value '%.40s' for unixDevice.",
                       device ? device : "");
    struct vol_list l;
    l.n = 0;
    core_instance_attachments(app, instance_id, collect_att, &l);
    for (size_t k = 0; k < l.n; k++)
        if (strcmp(l.v[k].device_name, device) == 0)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Attachment point %s is already in use", device);
    if (who->dry_run)
        return core_dry_run(e);
    struct core_inst *r = inst_rt(app, instance_id);
    if (!r)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    pthread_mutex_lock(&r->lock);
    struct db_attachment a = { 0 };
    snprintf(a.instance_id, sizeof(a.instance_id), "%s", instance_id);
    snprintf(a.volume_id, sizeof(a.volume_id), "%s", volume_id);
    snprintf(a.device_name, sizeof(a.device_name), "%s", device);
    a.attach_ms = core_now_ms(app);
    snprintf(a.state, sizeof(a.state), "attached");
    a.boot_index = 100 + (int64_t)l.n;
    struct db *db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_attachment_insert(db, &a);
    if (rc == 0) {
        snprintf(v.state, sizeof(v.state), "in-use");
        rc = db_volume_update(db, &v);
    }
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    /* Hot plug into a running guest. */
    if (rc == 0 && strcmp(i.state, "running") == 0) {
        qemu_attach(app, r);
        char sock[PATH_MAX], serial[24];
        core_nbd_socket(app, sock, sizeof(sock));
        snprintf(serial, sizeof(serial), "vol%.17s", volume_id + 4);
        struct vmm_disk d = {
            .name = volume_id, .nbd_socket = sock, .export_name = volume_id, .serial = serial
        };
        rc = r->vm ? vmm_disk_attach(r->vm, &d, e) : -ESRCH;
        if (rc < 0) {
            db = core_db_get(app);
            if (db_begin(db) == 0) {
                db_attachment_delete(db, volume_id);
                snprintf(v.state, sizeof(v.state), "available");
                db_volume_update(db, &v);
                if (db_commit(db) < 0)
                    db_rollback(db);
            }
            core_db_put(app, db);
            err_set(e, rc, "InternalError", "cannot attach the volume to the running guest");
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (rc < 0)
        return e && e->code ? rc : err_set(e, rc, "InternalError", "cannot attach the volume");
    *ret = a;
    snprintf(ret->state, sizeof(ret->state), "attaching");
    return 0;
}

int core_volume_detach(struct app *app, const struct core_caller *who, const char *volume_id,
                       const char *instance_id, const char *device, bool force,
                       struct db_attachment *ret, struct err *e)
{
    struct db_volume v;
    int rc = core_volume_get(app, who, volume_id, &v, e);
    if (rc < 0)
        return rc;
    struct db_attachment a;
    struct db *db = core_db_get(app);
    rc = db_attachment_of_volume(db, volume_id, &a);
    core_db_put(app, db);
    if (rc < 0)
        return err_set(e, -EINVAL, "IncorrectState", "Volume '%s' is in the 'available' state.",
                       volume_id);
    if ((instance_id && strcmp(instance_id, a.instance_id) != 0) ||
        (device && strcmp(device, a.device_name) != 0))
        return err_set(e, -EINVAL, "InvalidAttachment.NotFound",
                       "The volume '%s' is not attached to that instance or device", volume_id);
    struct db_instance i;
    rc = core_instance_get(app, who, a.instance_id, &i, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(&i);
    bool running = strcmp(i.state, "running") == 0;
    if (running && strcmp(a.device_name, i.root_device_name) == 0)
        return err_set(e, -EPERM, "OperationNotPermitted",
                       "The volume %s is the root device of running instance %s and cannot be "
                       "detached",
                       volume_id, a.instance_id);
    if (who->dry_run)
        return core_dry_run(e);
    struct core_inst *r = inst_rt(app, a.instance_id);
    if (!r)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    pthread_mutex_lock(&r->lock);
    if (running) {
        qemu_attach(app, r);
        rc = r->vm ? vmm_disk_detach(r->vm, volume_id, force ? 2000 : 15000, e) : 0;
        if (rc < 0 && !force) {
            pthread_mutex_unlock(&r->lock);
            return err_set(e, rc, "IncorrectState",
                           "The guest did not release volume %s; retry, or detach with Force",
                           volume_id);
        }
    }
    db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_attachment_delete(db, volume_id);
    if (rc == 0) {
        snprintf(v.state, sizeof(v.state), "available");
        rc = db_volume_update(db, &v);
    }
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    pthread_mutex_unlock(&r->lock);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot detach the volume");
    *ret = a;
    snprintf(ret->state, sizeof(ret->state), "detaching");
    return 0;
}

/* ---- images and snapshots of instances ---- */

struct tag_list {
    struct db_tag *v;
    size_t n, cap;
};

static int collect_tag(void *vctx, const struct db_tag *t)
{
    struct tag_list *l = vctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct db_tag *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *t;
    return 0;
}

/* Copies a volume's tags (but not aws: ones) to a snapshot of it (CopyTagsFromSource). */
static int copy_tags(struct db *db, const struct core_caller *who, const char *volume_id,
                     const char *snapshot_id)
{
    struct tag_list l = { 0 };
    int rc = db_tag_each_of(db, who->region, who->account_id, volume_id, collect_tag, &l);
    for (size_t k = 0; rc >= 0 && k < l.n; k++)
        if (strncmp(l.v[k].key, "aws:", 4) != 0)
            rc = db_tag_put(db, who->region, who->account_id, snapshot_id, "snapshot", l.v[k].key,
                            l.v[k].value);
    free(l.v);
    return rc < 0 ? rc : 0;
}

/* Begins snapshots of volumes at one instant (their ids in `vols`), recording pending rows;
 * fills `snaps`. */
static int snapshot_volumes(struct app *app, const struct core_caller *who,
                            const struct db_attachment *atts, size_t n, const char *description,
                            const struct core_tag *tags, size_t ntags, bool copy_volume_tags,
                            struct db_snapshot *snaps, struct err *e)
{
    struct core_openvol *ovs[32] = { 0 };
    struct vol *vols[32];
    const char *ids[32];
    int rc = 0;
    size_t got = 0;
    for (; got < n && rc == 0; got++) {
        struct db_volume v;
        rc = core_volume_get(app, who, atts[got].volume_id, &v, e);
        if (rc == 0)
            rc = core_vol_get(app, who->region, v.id, false, &ovs[got]);
        if (rc < 0)
            break;
        vols[got] = ovs[got]->v;
        memset(&snaps[got], 0, sizeof(snaps[got]));
        rand_id(snaps[got].id, sizeof(snaps[got].id), "snap-", 17);
        snprintf(snaps[got].region, sizeof(snaps[got].region), "%s", who->region);
        snprintf(snaps[got].owner, sizeof(snaps[got].owner), "%s", who->account_id);
        snprintf(snaps[got].volume_id, sizeof(snaps[got].volume_id), "%s", v.id);
        snaps[got].volume_size_gib = v.size_gib;
        snprintf(snaps[got].state, sizeof(snaps[got].state), "pending");
        snaps[got].start_ms = core_now_ms(app);
        snprintf(snaps[got].description, sizeof(snaps[got].description), "%s",
                 description ? description : "");
        snprintf(snaps[got].source, sizeof(snaps[got].source), "volume");
        struct core_dkey dk; /* a snapshot is in its volume's encryption domain */
        core_dkey_of_volume(&v, &dk);
        core_dkey_to_snapshot(&dk, &snaps[got]);
        ids[got] = snaps[got].id;
    }
    /* Rows first (pending), then the instant: a crash in between leaves pending rows whose
     * volumes never began them; recovery sees no begun snapshot and captures the volume as it
     * is then, which is still a consistent point (the rows are not acknowledged yet). */
    struct db *db = core_db_get(app);
    if (rc == 0)
        rc = db_begin(db);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        rc = db_snapshot_insert(db, &snaps[k]);
        if (rc == 0)
            if (rc == 0 && copy_volume_tags)
                rc = copy_tags(db, who, atts[k].volume_id, snaps[k].id);
        if (rc == 0)
            rc = core_tags_insert(db, who, snaps[k].id, "snapshot", tags, ntags);
    }
    if (rc == 0)
        rc = vol_snapshot_begin(vols, ids, n);
    if (rc == 0) {
        rc = db_commit(db);
        if (rc < 0)
            for (size_t k = 0; k < n; k++)
                vol_snapshot_abort(vols[k], ids[k]);
    } else {
        db_rollback(db);
    }
    core_db_put(app, db);
    for (size_t k = 0; k < got && k < n; k++)
        core_vol_put(app, ovs[k], false);
    if (rc < 0)
        return e && e->code ? rc : err_set(e, rc, "InternalError", "cannot snapshot volumes");
    for (size_t k = 0; k < n; k++)
        core_job_submit(app, core_job_capture, snaps[k].id);
    return 0;
}

int core_snapshots_create(struct app *app, const struct core_caller *who, const char *instance_id,
                          bool exclude_boot, const char *const *exclude, size_t nexclude,
                          const char *description, const struct core_tag *tags, size_t ntags,
                          bool copy_volume_tags, void (*fn)(void *ctx, const struct db_snapshot *s),
                          void *ctx, struct err *e)
{
    struct db_instance i;
    int rc = core_instance_get(app, who, instance_id, &i, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(&i);
    rc = core_tags_check(tags, ntags, e);
    if (rc < 0)
        return rc;
    struct vol_list l;
    l.n = 0;
    core_instance_attachments(app, instance_id, collect_att, &l);
    struct db_attachment pick[32];
    size_t n = 0;
    for (size_t k = 0; k < l.n; k++) {
        if (exclude_boot && strcmp(l.v[k].device_name, i.root_device_name) == 0)
            continue;
        bool skip = false;
        for (size_t x = 0; x < nexclude; x++)
            skip |= strcmp(exclude[x], l.v[k].volume_id) == 0;
        if (!skip)
            pick[n++] = l.v[k];
    }
    if (n == 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "No volumes of instance %s are left to snapshot", instance_id);
    if (who->dry_run)
        return core_dry_run(e);
    struct core_inst *r = inst_rt(app, instance_id);
    if (!r)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    struct db_snapshot snaps[32];
    pthread_mutex_lock(&r->lock);
    /* One instant across the volumes: the guest is paused while the snapshots begin. */
    qemu_attach(app, r);
    bool paused = r->vm && strcmp(i.state, "running") == 0 && vmm_pause(r->vm, NULL) == 0;
    rc = snapshot_volumes(app, who, pick, n, description, tags, ntags, copy_volume_tags, snaps, e);
    if (paused)
        vmm_cont(r->vm, NULL);
    pthread_mutex_unlock(&r->lock);
    if (rc < 0)
        return rc;
    for (size_t k = 0; fn && k < n; k++)
        fn(ctx, &snaps[k]);
    return 0;
}

int core_image_create(struct app *app, const struct core_caller *who, const char *instance_id,
                      const char *name, const char *description, bool no_reboot,
                      const struct core_run_bdm *bdms, size_t nbdms,
                      const struct core_tag *image_tags, size_t nimage_tags,
                      const struct core_tag *snapshot_tags, size_t nsnapshot_tags, char ret_id[32],
                      struct err *e)
{
    struct db_instance i;
    int rc = core_instance_get(app, who, instance_id, &i, e);
    if (rc < 0)
        return rc;
    db_instance_free_data(&i);
    if (strcmp(i.state, "running") != 0 && strcmp(i.state, "stopped") != 0)
        return err_set(e, -EINVAL, "IncorrectInstanceState",
                       "The instance '%s' is not in the 'running' or 'stopped' state.",
                       instance_id);
    rc = core_tags_check(image_tags, nimage_tags, e);
    if (rc == 0)
        rc = core_tags_check(snapshot_tags, nsnapshot_tags, e);
    if (rc < 0)
        return rc;
    if (!name)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter name");
    struct db_image other;
    struct db *db = core_db_get(app);
    bool dup = db_image_by_name(db, who->region, who->account_id, name, &other) == 0;
    core_db_put(app, db);
    if (dup)
        return err_set(e, -EEXIST, "InvalidAMIName.Duplicate",
                       "AMI name %s is already in use by AMI %s", name, other.id);
    /* The instance's volumes, minus NoDevice overrides. */
    struct vol_list l;
    l.n = 0;
    core_instance_attachments(app, instance_id, collect_att, &l);
    struct db_attachment pick[32];
    size_t n = 0;
    for (size_t k = 0; k < l.n; k++) {
        bool suppressed = false;
        for (size_t b = 0; b < nbdms; b++)
            suppressed |= bdms[b].nodevice && strcmp(bdms[b].device, l.v[k].device_name) == 0;
        if (strcmp(l.v[k].device_name, i.root_device_name) == 0 && suppressed)
            return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                           "The root device cannot be excluded from the image");
        if (!suppressed)
            pick[n++] = l.v[k];
    }
    if (who->dry_run)
        return core_dry_run(e);
    struct core_inst *r = inst_rt(app, instance_id);
    if (!r)
        return err_set(e, -ENOMEM, "InternalError", "out of memory");
    struct db_snapshot snaps[32];
    pthread_mutex_lock(&r->lock);
    bool running = strcmp(i.state, "running") == 0;
    qemu_attach(app, r);
    bool paused = false;
    if (running && no_reboot) {
        /* Crash-consistent: all volumes at one instant while the guest is paused. */
        paused = r->vm && vmm_pause(r->vm, NULL) == 0;
    } else if (running) {
        /* With reboot: a clean shutdown (ACPI, then forced), snapshots, start again. */
        qemu_stop(r, false, STOP_GRACE_MS);
    }
    rc = snapshot_volumes(app, who, pick, n, description, snapshot_tags, nsnapshot_tags, false,
                          snaps, e);
    if (paused)
        vmm_cont(r->vm, NULL);
    if (running && !no_reboot) {
        struct db_instance full;
        struct err se = { 0 };
        if (row(app, instance_id, &full)) {
            if (qemu_start(app, r, &full, &se) < 0)
                set_state(app, instance_id, "running", "stopped", "Server.InternalError", se.msg,
                          NULL);
            db_instance_free_data(&full);
        }
    }
    pthread_mutex_unlock(&r->lock);
    if (rc < 0)
        return rc;
    /* The image: the snapshots plus mappings added by the request. */
    struct db_bdm ib[48];
    size_t ni = 0;
    for (size_t k = 0; k < n; k++) {
        struct db_volume v;
        memset(&ib[ni], 0, sizeof(ib[ni]));
        snprintf(ib[ni].device_name, sizeof(ib[ni].device_name), "%s", pick[k].device_name);
        snprintf(ib[ni].kind, sizeof(ib[ni].kind), "ebs");
        snprintf(ib[ni].snapshot_id, sizeof(ib[ni].snapshot_id), "%s", snaps[k].id);
        ib[ni].volume_size = snaps[k].volume_size_gib;
        ib[ni].delete_on_termination = pick[k].delete_on_termination;
        if (core_volume_get(app, who, pick[k].volume_id, &v, NULL) == 0) {
            snprintf(ib[ni].volume_type, sizeof(ib[ni].volume_type), "%s", v.type);
            ib[ni].iops = strcmp(v.type, "gp2") == 0 ? 0 : v.iops;
            ib[ni].throughput = v.throughput;
        }
        for (size_t b = 0; b < nbdms; b++) {
            if (strcmp(bdms[b].device, pick[k].device_name) != 0 || bdms[b].nodevice)
                continue;
            if (bdms[b].size_gib)
                ib[ni].volume_size = bdms[b].size_gib;
            if (bdms[b].type[0])
                snprintf(ib[ni].volume_type, sizeof(ib[ni].volume_type), "%s", bdms[b].type);
            if (bdms[b].delete_on_termination >= 0)
                ib[ni].delete_on_termination = bdms[b].delete_on_termination;
        }
        ni++;
    }
    for (size_t b = 0; b < nbdms && ni < ARRAY_SIZE(ib); b++) {
        bool known = false;
        for (size_t k = 0; k < l.n; k++)
            known |= strcmp(bdms[b].device, l.v[k].device_name) == 0;
        if (known || bdms[b].nodevice)
            continue;
        memset(&ib[ni], 0, sizeof(ib[ni]));
        snprintf(ib[ni].device_name, sizeof(ib[ni].device_name), "%s", bdms[b].device);
        snprintf(ib[ni].kind, sizeof(ib[ni].kind), "ebs");
        snprintf(ib[ni].snapshot_id, sizeof(ib[ni].snapshot_id), "%s", bdms[b].snapshot_id);
        ib[ni].volume_size = bdms[b].size_gib;
        snprintf(ib[ni].volume_type, sizeof(ib[ni].volume_type), "%s",
                 bdms[b].type[0] ? bdms[b].type : "gp2");
        ib[ni].delete_on_termination = bdms[b].delete_on_termination != 0;
        ni++;
    }
    struct core_image_spec spec = {
        .name = name,
        .description = description,
        .architecture = i.architecture,
        .root_device_name = i.root_device_name,
        .boot_mode = i.boot_mode[0] ? i.boot_mode : NULL,
        .ena_support = i.ena_support,
        .bdms = ib,
        .nbdms = ni,
        .tags = image_tags,
        .ntags = nimage_tags,
        .source_instance_id = instance_id,
    };
    return core_image_register(app, who, &spec, ret_id, e);
}

/* ---- the metadata service ---- */

void core_instance_mac(const char *id, char out[18])
{
    uint8_t h[32];
    crypto_sha256(id, strlen(id), h);
    snprintf(out, 18, "52:54:00:%02x:%02x:%02x", h[0], h[1], h[2]);
}

int core_imds_instance(struct app *app, const char *id, struct db_instance *ret)
{
    struct db *db = core_db_get(app);
    int rc = db_instance_get(db, id, ret);
    core_db_put(app, db);
    return rc;
}

static void imds_mac(struct app *app, const char *id, int64_t expiry_s, uint8_t out[32])
{
    uint8_t key[32];
    core_subkey(app, "amid.imds-tokens.v1", key);
    char msg[96];
    int n = snprintf(msg, sizeof(msg), "%s|%lld", id, (long long)expiry_s);
    crypto_hmac_sha256(key, sizeof(key), msg, (size_t)n, out);
    crypto_wipe(key, sizeof(key));
}

void core_imds_token(struct app *app, const char *instance_id, int64_t ttl_s, char out[96])
{
    int64_t expiry = core_now_ms(app) / 1000 + ttl_s; /* the deployment clock, as every rule */
    uint8_t raw[8 + 24], mac[32];
    for (int k = 0; k < 8; k++)
        raw[k] = (uint8_t)((uint64_t)expiry >> (8 * (7 - k)));
    imds_mac(app, instance_id, expiry, mac);
    memcpy(raw + 8, mac, 24);
    base64url_encode(raw, sizeof(raw), out);
}

int core_imds_token_check(struct app *app, const char *instance_id, const char *token)
{
    uint8_t raw[48], mac[32];
    size_t n;
    if (!token || strlen(token) > 64 || base64_decode(token, strlen(token), true, raw, &n) < 0 ||
        n != 32)
        return -EINVAL;
    int64_t expiry = 0;
    for (int k = 0; k < 8; k++)
        expiry = (int64_t)((uint64_t)expiry << 8 | raw[k]);
    imds_mac(app, instance_id, expiry, mac);
    if (!crypto_memeq(mac, raw + 8, 24) || core_now_ms(app) / 1000 > expiry)
        return -EINVAL;
    return 0;
}

int core_imds_public_key(struct app *app, const struct db_instance *i, char *out, size_t outlen)
{
    (void)app;
    if (!i->public_key[0])
        return -ENOENT;
    snprintf(out, outlen, "%s", i->public_key);
    return 0;
}
