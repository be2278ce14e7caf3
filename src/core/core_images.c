/*
 * core_images.c — the AMI catalogue: registering images from snapshots, who may see, launch and
 * change them (owner, grantee, public, stranger — a stranger always gets the answer it would get
 * for an image that does not exist), deprecation, deregistration protection with its cooldown,
 * disabling, deregistering with the snapshots, and image block public access.
 */
#include "core/core_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PROTECTION_COOLDOWN_MS (24LL * 3600 * 1000)

/* AWS's AMI names: 3-128 characters of letters, digits and ( ) [ ] space . / - ' @ _ */
static bool image_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("()[] ./-'@_", c)))
            return false;
    }
    return true;
}

/* EC2's descriptions: at most 255 characters (of UTF-8, up to 4 bytes each). */
static bool description_too_long(const char *s)
{
    size_t chars = 0;
    for (const char *p = s; *p; p++)
        chars += ((unsigned char)*p & 0xc0) != 0x80;
    return chars > 255 || strlen(s) > 255 * 4;
}

/* Device names as EC2 accepts them for HVM: /dev/sd[a-z][1-15]?, /dev/xvd[a-z]+, /dev/vd[a-z]. */
static bool device_name_valid(const char *s)
{
    const char *p;
    if (str_startswith(s, "/dev/sd"))
        p = s + 7;
    else if (str_startswith(s, "/dev/xvd"))
        p = s + 8;
    else if (str_startswith(s, "/dev/vd"))
        p = s + 7;
    else if (strlen(s) >= 3 && strlen(s) <= 5 && s[0] == 'x' && s[1] == 'v' && s[2] == 'd')
        p = s + 3;
    else
        return false;
    if (*p < 'a' || *p > 'z')
        return false;
    p++;
    if (*p >= 'a' && *p <= 'z')
        p++;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '\0' && strlen(s) < 32;
}

int core_account_alias(struct app *app, const char *account_id, char *out, size_t outlen)
{
    struct db *db = core_db_get(app);
    struct db_account a;
    int rc = db_account_get(db, account_id, &a);
    if (rc == 0)
        snprintf(out, outlen, "%s", a.alias);
    else if (outlen)
        out[0] = '\0';
    core_db_put(app, db);
    return rc == 0 || rc == -ENOENT ? 0 : -EIO;
}

struct alias_find {
    const char *alias;
    char id[16];
};

static int alias_cb(void *vctx, const struct db_account *a)
{
    struct alias_find *f = vctx;
    if (a->alias[0] && strcmp(a->alias, f->alias) == 0) {
        snprintf(f->id, sizeof(f->id), "%s", a->id);
        return 1;
    }
    return 0;
}

int core_owner_resolve(struct app *app, const struct core_caller *who, const char *owner,
                       char out[16])
{
    if (strcmp(owner, "self") == 0) {
        snprintf(out, 16, "%s", who->account_id);
        return 0;
    }
    if (strlen(owner) == 12 && strspn(owner, "0123456789") == 12) {
        snprintf(out, 16, "%s", owner);
        return 0;
    }
    struct alias_find f = { owner, "" };
    struct db *db = core_db_get(app);
    db_account_each(db, alias_cb, &f);
    core_db_put(app, db);
    if (!f.id[0])
        return -ENOENT;
    snprintf(out, 16, "%s", f.id);
    return 0;
}

/* ---- access ---- */

static int not_found(struct err *e, const char *id)
{
    return err_set(e, -ENOENT, "InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id);
}

static int image_lookup(struct app *app, struct db *db, const struct core_caller *who,
                        const char *id, enum core_image_access access, struct db_image *ret,
                        struct err *e)
{
    if (!core_id_valid(id, "ami-"))
        return err_set(e, -EINVAL, "InvalidAMIID.Malformed",
                       "Invalid id: \"%.64s\" (expecting \"ami-...\")", id);
    int rc = db_image_get(db, id, ret);
    if (rc == -ENOENT || (rc == 0 && strcmp(ret->region, who->region) != 0))
        return not_found(e, id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read image %s", id);
    bool owner = strcmp(ret->owner, who->account_id) == 0;
    bool deregistered = strcmp(ret->state, "deregistered") == 0;
    bool disabled = strcmp(ret->state, "disabled") == 0;
    bool granted = ret->public || db_image_perm_has(db, id, who->account_id) == 0;
    if (!owner && (!granted || disabled))
        return not_found(e, id);
    if (deregistered) {
        if (access != CORE_IMAGE_SEE ||
            core_now_ms(app) - ret->deregistered_ms > CORE_DEREGISTERED_VISIBLE_MS)
            return not_found(e, id);
        return 0;
    }
    if (access == CORE_IMAGE_OWNER && !owner)
        return err_set(e, -EPERM, "AuthFailure", "Not authorized for image:%s", id);
    if (access == CORE_IMAGE_LAUNCH && disabled)
        return err_set(e, -EINVAL, "InvalidAMIID.Unavailable",
                       "The image id '[%s]' is disabled and cannot be launched", id);
    return 0;
}

int core_image_get(struct app *app, const struct core_caller *who, const char *id,
                   enum core_image_access access, struct db_image *ret, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = image_lookup(app, db, who, id, access, ret, e);
    core_db_put(app, db);
    return rc;
}

int core_image_each(struct app *app, const struct db_image_query *q,
                    int (*fn)(void *ctx, const struct db_image *im), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_image_each(db, q, fn, ctx);
    core_db_put(app, db);
    return rc;
}

int core_image_bdms(struct app *app, const char *id, int (*fn)(void *ctx, const struct db_bdm *b),
                    void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_bdm_each(db, id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

/* ---- registering ---- */

struct reg_ctx {
    const struct core_caller *who;
    const struct core_image_spec *spec;
    struct db_image *im;
    struct err *e;
};

static int check_bdm(struct db *db, const struct core_caller *who, struct db_bdm *b, bool *pending,
                     bool *failed, struct err *e)
{
    if (!device_name_valid(b->device_name))
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping", "Invalid device name %.64s",
                       b->device_name);
    if (strcmp(b->kind, "none") == 0 || strcmp(b->kind, "ephemeral") == 0) {
        if (strcmp(b->kind, "ephemeral") == 0 &&
            (!str_startswith(b->virtual_name, "ephemeral") || !b->virtual_name[9]))
            return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                           "Invalid virtual name %.32s (expecting ephemeral0-23)", b->virtual_name);
        return 0;
    }
    if (b->kms_key_id[0] && !b->encrypted)
        return err_set(e, -EINVAL, "InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.");
    if (!b->volume_type[0])
        snprintf(b->volume_type, sizeof(b->volume_type), "gp2");
    int64_t snap_size = 0;
    if (b->snapshot_id[0]) {
        struct db_snapshot s;
        int rc = db_snapshot_get(db, b->snapshot_id, &s);
        bool ok = rc == 0 && strcmp(s.region, who->region) == 0 &&
                  (strcmp(s.owner, who->account_id) == 0 ||
                   db_snapshot_perm_has(db, s.id, who->account_id, true) == 0);
        if (!core_id_valid(b->snapshot_id, "snap-"))
            return err_set(e, -EINVAL, "InvalidSnapshotID.Malformed", "Invalid id: \"%.64s\"",
                           b->snapshot_id);
        if (!ok)
            return err_set(e, -ENOENT, "InvalidSnapshot.NotFound",
                           "The snapshot '%s' does not exist.", b->snapshot_id);
        b->encrypted |= s.encrypted; /* a volume from an encrypted snapshot is encrypted */
        if (strcmp(s.state, "error") == 0)
            *failed = true;
        else if (strcmp(s.state, "completed") != 0)
            *pending = true;
        snap_size = s.volume_size_gib;
        if (!b->volume_size)
            b->volume_size = snap_size;
        if (b->volume_size < snap_size)
            return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                           "Volume of %lld GiB is smaller than snapshot '%s' (%lld GiB)",
                           (long long)b->volume_size, s.id, (long long)snap_size);
    } else if (b->volume_size <= 0) {
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                       "The mapping for %s needs a SnapshotId or a VolumeSize", b->device_name);
    }
    if (b->volume_size > 65536)
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping", "Volume of %lld GiB is too large",
                       (long long)b->volume_size);
    return 0;
}

static int register_tx(struct app *app, struct db *db, void *vctx)
{
    struct reg_ctx *c = vctx;
    const struct core_image_spec *sp = c->spec;
    struct db_image *im = c->im;
    struct db_image other;
    if (db_image_by_name(db, c->who->region, im->owner, sp->name, &other) == 0)
        return err_set(c->e, -EEXIST, "InvalidAMIName.Duplicate",
                       "AMI name %s is already in use by AMI %s", sp->name, other.id);
    bool pending = false, failed = false, root_found = false;
    for (size_t i = 0; i < sp->nbdms; i++) {
        int rc = check_bdm(db, c->who, &sp->bdms[i], &pending, &failed, c->e);
        if (rc < 0)
            return rc;
        for (size_t k = 0; k < i; k++)
            if (strcmp(sp->bdms[k].device_name, sp->bdms[i].device_name) == 0)
                return err_set(c->e, -EINVAL, "InvalidBlockDeviceMapping",
                               "The device %s is mapped twice", sp->bdms[i].device_name);
        if (strcmp(sp->bdms[i].device_name, im->root_device_name) == 0) {
            root_found = true;
            if (strcmp(sp->bdms[i].kind, "ebs") != 0 || !sp->bdms[i].snapshot_id[0])
                return err_set(c->e, -EINVAL, "InvalidBlockDeviceMapping",
                               "The root device %s must map an EBS snapshot", im->root_device_name);
        }
    }
    if (!root_found)
        return err_set(c->e, -EINVAL, "InvalidBlockDeviceMapping",
                       "The root device name %s is not in the block device mappings",
                       im->root_device_name);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    snprintf(im->state, sizeof(im->state), "%s",
             failed    ? "failed"
             : pending ? "pending"
                       : "available");
    if (failed) {
        snprintf(im->state_reason_code, sizeof(im->state_reason_code), "Client.SnapshotError");
        snprintf(im->state_reason_message, sizeof(im->state_reason_message),
                 "A snapshot of the image failed");
    }
    int rc = db_image_insert(db, im);
    for (size_t i = 0; rc == 0 && i < sp->nbdms; i++)
        rc = db_bdm_add(db, im->id, (int)i, &sp->bdms[i]);
    if (rc == 0) {
        struct core_caller owner = *c->who;
        owner.account_id = im->owner;
        rc = core_tags_insert(db, &owner, im->id, "image", sp->tags, sp->ntags);
    }
    if (rc == -EEXIST)
        return err_set(c->e, rc, "InvalidAMIName.Duplicate", "AMI name %s is already in use",
                       sp->name);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot record the image");
    (void)app;
    return 0;
}

/* Checks `spec` and fills *im (a new id, the caller's region and the deployment's time). */
static int image_fill(struct app *app, const struct core_caller *who,
                      const struct core_image_spec *spec, struct db_image *im, struct err *e)
{
    if (!spec->name)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter name");
    if (!image_name_valid(spec->name))
        return err_set(e, -EINVAL, "InvalidAMIName.Malformed",
                       "AMI names must be between 3 and 128 characters long, and may contain "
                       "letters, numbers, '(', ')', '.', '-', '/', '_', ' ', '[', ']', '@' and "
                       "'''");
    if (spec->description && description_too_long(spec->description))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "The description is longer than 255 characters");
    if (spec->virtualization_type && strcmp(spec->virtualization_type, "hvm") != 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Value (%.32s) for parameter virtualizationType is invalid: amid images "
                       "are hvm",
                       spec->virtualization_type);
    if (spec->sriov_net_support && strcmp(spec->sriov_net_support, "simple") != 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Value (%.32s) for parameter sriovNetSupport is invalid. Expected: "
                       "'simple'",
                       spec->sriov_net_support);
    if (spec->tpm_support && spec->boot_mode && strcmp(spec->boot_mode, "uefi") != 0)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "TpmSupport requires the uefi boot mode");
    if (spec->nbdms == 0)
        return err_set(e, -EINVAL, "InvalidBlockDeviceMapping",
                       "An EBS-backed image needs at least one block device mapping");
    int rc = core_tags_check(spec->tags, spec->ntags, e);
    if (rc < 0)
        return rc;
    memset(im, 0, sizeof(*im));
    rand_id(im->id, sizeof(im->id), "ami-", 17);
    snprintf(im->region, sizeof(im->region), "%s", who->region);
    snprintf(im->owner, sizeof(im->owner), "%s",
             spec->owner_override ? spec->owner_override : who->account_id);
    snprintf(im->name, sizeof(im->name), "%s", spec->name);
    snprintf(im->description, sizeof(im->description), "%s",
             spec->description ? spec->description : "");
    snprintf(im->architecture, sizeof(im->architecture), "%s",
             spec->architecture ? spec->architecture : "x86_64");
    snprintf(im->root_device_name, sizeof(im->root_device_name), "%s",
             spec->root_device_name ? spec->root_device_name : spec->bdms[0].device_name);
    snprintf(im->virtualization_type, sizeof(im->virtualization_type), "hvm");
    snprintf(im->boot_mode, sizeof(im->boot_mode), "%s", spec->boot_mode ? spec->boot_mode : "");
    im->ena_support = spec->ena_support > 0;
    snprintf(im->sriov_net_support, sizeof(im->sriov_net_support), "%s",
             spec->sriov_net_support ? spec->sriov_net_support : "");
    snprintf(im->imds_support, sizeof(im->imds_support), "%s",
             spec->imds_support ? spec->imds_support : "");
    snprintf(im->tpm_support, sizeof(im->tpm_support), "%s",
             spec->tpm_support ? spec->tpm_support : "");
    im->creation_ms = core_now_ms(app);
    snprintf(im->source_instance_id, sizeof(im->source_instance_id), "%s",
             spec->source_instance_id ? spec->source_instance_id : "");
    snprintf(im->source_image_id, sizeof(im->source_image_id), "%s",
             spec->source_image_id ? spec->source_image_id : "");
    snprintf(im->source_region, sizeof(im->source_region), "%s",
             spec->source_region ? spec->source_region : "");
    return 0;
}

/* Registers in the caller's transaction on `db`, or in one of its own when `db` is NULL. */
static int do_register(struct app *app, struct db *db, const struct core_caller *who,
                       const struct core_image_spec *spec, char ret_id[32], struct err *e)
{
    struct db_image im;
    int rc = image_fill(app, who, spec, &im, e);
    if (rc < 0)
        return rc;
    struct reg_ctx c = { who, spec, &im, e };
    rc = db ? register_tx(app, db, &c) : core_tx(app, register_tx, &c);
    if (rc == 0)
        snprintf(ret_id, 32, "%s", im.id);
    return rc;
}

int core_image_register(struct app *app, const struct core_caller *who,
                        const struct core_image_spec *spec, char ret_id[32], struct err *e)
{
    return do_register(app, NULL, who, spec, ret_id, e);
}

int core_image_register_in(struct app *app, struct db *db, const struct core_caller *who,
                           const struct core_image_spec *spec, char ret_id[32], struct err *e)
{
    return do_register(app, db, who, spec, ret_id, e);
}

/* ---- images follow their snapshots ---- */

struct follow_ctx {
    struct db *db;
    bool pending, failed;
};

static int follow_bdm(void *vctx, const struct db_bdm *b)
{
    struct follow_ctx *f = vctx;
    if (!b->snapshot_id[0])
        return 0;
    struct db_snapshot s;
    if (db_snapshot_get(f->db, b->snapshot_id, &s) < 0 || strcmp(s.state, "error") == 0)
        f->failed = true;
    else if (strcmp(s.state, "completed") != 0)
        f->pending = true;
    return 0;
}

struct ids {
    char (*v)[32];
    size_t n, cap;
};

static int collect_id(void *vctx, const char *id)
{
    struct ids *l = vctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *nv = realloc(l->v, cap * 32);
        if (!nv)
            return -ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], 32, "%s", id);
    return 0;
}

void core_images_snapshot_done(struct app *app, const char *snapshot_id)
{
    struct db *db = core_db_get(app);
    struct ids l = { 0 };
    db_bdm_images_of_snapshot(db, snapshot_id, collect_id, &l);
    for (size_t i = 0; i < l.n; i++) {
        struct db_image im;
        if (db_begin(db) < 0)
            break;
        if (db_image_get(db, l.v[i], &im) == 0 && strcmp(im.state, "pending") == 0) {
            struct follow_ctx f = { db, false, false };
            db_bdm_each(db, im.id, follow_bdm, &f);
            if (f.failed) {
                snprintf(im.state, sizeof(im.state), "failed");
                snprintf(im.state_reason_code, sizeof(im.state_reason_code),
                         "Client.SnapshotError");
                snprintf(im.state_reason_message, sizeof(im.state_reason_message),
                         "Snapshot %s of the image failed", snapshot_id);
            } else if (!f.pending) {
                snprintf(im.state, sizeof(im.state), "available");
            }
            db_image_update(db, &im);
        }
        if (db_commit(db) < 0)
            db_rollback(db);
    }
    free(l.v);
    core_db_put(app, db);
}

/* ---- changes by the owner ---- */

struct snap_list {
    char v[64][32];
    size_t n;
};

struct change_ctx {
    const struct core_caller *who;
    const char *id;
    const char *const *add, *const *remove;
    size_t nadd, nremove;
    int op;
    const char *s1, *s2;
    int64_t at_ms;
    bool flag1, flag2;
    void (*fn)(void *ctx, const char *snapshot_id, const char *code);
    void *ctx;
    struct snap_list *deleted; /* snapshots deleted with the image: their maps go after commit */
    struct err *e;
};

enum { OP_PERMS, OP_RESET, OP_CANCEL, OP_SET, OP_DEPRECATE, OP_PROTECT, OP_DISABLE, OP_DEREGISTER };

/* Sets *(bool *)ctx when a mapping's snapshot holds encrypted data. */
static int encrypted_snapshot(void *vctx, const struct db_bdm *b)
{
    bool *found = vctx;
    *found |= b->snapshot_id[0] && b->encrypted;
    return 0;
}

static bool blocked_public(struct db *db, const struct core_caller *who)
{
    char v[32];
    return db_account_setting_get(db, who->account_id, who->region, "image-block-public-access", v,
                                  sizeof(v)) == 0 &&
           strcmp(v, "block-new-sharing") == 0;
}

static int deregister(struct app *app, struct db *db, struct change_ctx *c, struct db_image *im);

static int change_tx(struct app *app, struct db *db, void *vctx)
{
    struct change_ctx *c = vctx;
    struct db_image im;
    int access = c->op == OP_CANCEL ? CORE_IMAGE_SEE : CORE_IMAGE_OWNER;
    int rc = image_lookup(app, db, c->who, c->id, access, &im, c->e);
    if (rc < 0)
        return rc;
    if (strcmp(im.state, "deregistered") == 0)
        return not_found(c->e, c->id);
    int64_t now = core_now_ms(app);
    switch (c->op) {
    case OP_PERMS:
        for (size_t i = 0; i < c->nadd + c->nremove; i++) {
            const char *g = i < c->nadd ? c->add[i] : c->remove[i - c->nadd];
            if (strcmp(g, "all") != 0 && !account_id_valid(g))
                return err_set(c->e, -EINVAL, "InvalidUserID.Malformed",
                               "User ID '%.64s' is invalid", g);
        }
        for (size_t i = 0; i < c->nadd; i++) {
            if (strcmp(c->add[i], "all") == 0 && blocked_public(db, c->who) && !im.public)
                return err_set(c->e, -EPERM, "OperationNotPermitted",
                               "Image block public access is enabled for this account and "
                               "region: the image cannot be made public");
            bool enc = false;
            if (strcmp(c->add[i], "all") == 0)
                db_bdm_each(db, im.id, encrypted_snapshot, &enc);
            if (enc)
                return err_set(c->e, -EINVAL, "InvalidParameter",
                               "Images with encrypted snapshots cannot be made public (image "
                               "%s)",
                               im.id);
            if (strcmp(im.state, "disabled") == 0)
                return err_set(c->e, -EINVAL, "IncorrectState",
                               "The image %s is disabled and cannot be shared", im.id);
        }
        if (c->who->dry_run)
            return core_dry_run(c->e);
        for (size_t i = 0; rc == 0 && i < c->nadd; i++)
            rc = db_image_perm_add(db, im.id, c->add[i]);
        for (size_t i = 0; rc == 0 && i < c->nremove; i++)
            rc = db_image_perm_remove(db, im.id, c->remove[i]);
        break;
    case OP_RESET:
        if (c->who->dry_run)
            return core_dry_run(c->e);
        rc = db_image_perm_clear(db, im.id);
        break;
    case OP_CANCEL:
        if (strcmp(im.owner, c->who->account_id) == 0 ||
            db_image_perm_has(db, im.id, c->who->account_id) < 0)
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "The image %s has no launch permission for this account to cancel",
                           im.id);
        if (c->who->dry_run)
            return core_dry_run(c->e);
        rc = db_image_perm_remove(db, im.id, c->who->account_id);
        break;
    case OP_SET:
        if (c->s2 && strcmp(c->s2, "v2.0") != 0)
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "Value (%.16s) for parameter imdsSupport is invalid. Expected: 'v2.0'",
                           c->s2);
        if (c->s1 && description_too_long(c->s1))
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "The description is longer than 255 characters");
        if (c->who->dry_run)
            return core_dry_run(c->e);
        if (c->s1)
            snprintf(im.description, sizeof(im.description), "%s", c->s1);
        if (c->s2)
            snprintf(im.imds_support, sizeof(im.imds_support), "%s", c->s2);
        rc = db_image_update(db, &im);
        break;
    case OP_DEPRECATE:
        if (c->at_ms && c->at_ms < now - 60000)
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "The deprecation time must be in the future");
        if (c->who->dry_run)
            return core_dry_run(c->e);
        /* EC2 rounds the time to the minute. */
        im.deprecation_ms = c->at_ms ? (c->at_ms + 30000) / 60000 * 60000 : 0;
        rc = db_image_update(db, &im);
        break;
    case OP_PROTECT:
        if (c->who->dry_run)
            return core_dry_run(c->e);
        if (c->flag1) {
            snprintf(im.protection, sizeof(im.protection), "%s",
                     c->flag2 ? "with-cooldown" : "without-cooldown");
            im.protection_until_ms = 0;
        } else {
            if (strcmp(im.protection, "with-cooldown") == 0)
                im.protection_until_ms = now + PROTECTION_COOLDOWN_MS;
            im.protection[0] = '\0';
        }
        rc = db_image_update(db, &im);
        break;
    case OP_DISABLE:
        if (c->flag1 && strcmp(im.state, "available") != 0)
            return err_set(c->e, -EINVAL, "IncorrectState",
                           "The image %s is %s and cannot be disabled", im.id, im.state);
        if (!c->flag1 && strcmp(im.state, "disabled") != 0)
            return err_set(c->e, -EINVAL, "IncorrectState", "The image %s is not disabled", im.id);
        if (c->who->dry_run)
            return core_dry_run(c->e);
        snprintf(im.state, sizeof(im.state), c->flag1 ? "disabled" : "available");
        rc = db_image_update(db, &im);
        /* Disabling makes the image private: every launch permission goes. */
        if (rc == 0 && c->flag1)
            rc = db_image_perm_clear(db, im.id);
        break;
    case OP_DEREGISTER:
        return deregister(app, db, c, &im);
    }
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot update the image");
    return 0;
}

static int collect_snap(void *vctx, const struct db_bdm *b)
{
    struct snap_list *l = vctx;
    if (b->snapshot_id[0] && l->n < 64)
        snprintf(l->v[l->n++], 32, "%s", b->snapshot_id);
    return 0;
}

static int count_image(void *vctx, const char *id)
{
    (void)id;
    (*(int *)vctx)++;
    return 0;
}

static int deregister(struct app *app, struct db *db, struct change_ctx *c, struct db_image *im)
{
    int64_t now = core_now_ms(app);
    if (im->protection[0])
        return err_set(c->e, -EPERM, "OperationNotPermitted",
                       "The image %s has deregistration protection enabled", im->id);
    if (im->protection_until_ms > now) {
        char t[32];
        time_format_iso(im->protection_until_ms, t);
        return err_set(c->e, -EPERM, "OperationNotPermitted",
                       "The image %s is protected from deregistration until %s (cooldown)", im->id,
                       t);
    }
    if (c->who->dry_run)
        return core_dry_run(c->e);
    bool was_pending = strcmp(im->state, "pending") == 0;
    snprintf(im->state, sizeof(im->state), "deregistered");
    im->deregistered_ms = now;
    int rc = db_image_update(db, im);
    if (rc == 0)
        rc = db_image_perm_clear(db, im->id);
    if (rc == 0)
        rc = db_tag_delete_all(db, im->region, im->id);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot deregister the image");
    if (!c->flag1 && !was_pending)
        return 0;
    /* The snapshots no other image still uses go with it; without DeleteAssociatedSnapshots,
     * only a pending image's unfinished copies (the copy is cancelled: its job stops). */
    struct snap_list l;
    l.n = 0;
    db_bdm_each(db, im->id, collect_snap, &l);
    for (size_t i = 0; i < l.n; i++) {
        int users = 0;
        db_bdm_images_of_snapshot(db, l.v[i], count_image, &users);
        struct db_snapshot s;
        const char *code;
        if (!c->flag1) {
            if (users == 0 && db_snapshot_get(db, l.v[i], &s) == 0 &&
                strcmp(s.state, "pending") == 0 && strcmp(s.source, "copy") == 0 &&
                strcmp(s.owner, c->who->account_id) == 0 && db_snapshot_delete(db, s.id) == 0)
                db_tag_delete_all(db, s.region, s.id);
            continue;
        }
        if (users > 0) {
            code = "skipped";
        } else if (db_snapshot_get(db, l.v[i], &s) < 0) {
            code = "client-error";
        } else if (strcmp(s.owner, c->who->account_id) != 0) {
            code = "missing-permissions";
        } else if (db_snapshot_delete(db, s.id) == 0) {
            db_tag_delete_all(db, s.region, s.id);
            if (c->deleted && c->deleted->n < 64)
                snprintf(c->deleted->v[c->deleted->n++], 32, "%s", s.id);
            code = "success";
        } else {
            code = "internal-error";
        }
        if (c->fn)
            c->fn(c->ctx, l.v[i], code);
    }
    return 0;
}

static int change(struct app *app, struct change_ctx *c)
{
    return core_tx(app, change_tx, c);
}

int core_image_permission(struct app *app, const struct core_caller *who, const char *id,
                          const char *const *add, size_t nadd, const char *const *remove,
                          size_t nremove, struct err *e)
{
    struct change_ctx c = { .who = who,
                            .id = id,
                            .add = add,
                            .remove = remove,
                            .nadd = nadd,
                            .nremove = nremove,
                            .op = OP_PERMS,
                            .e = e };
    return change(app, &c);
}

int core_image_permission_reset(struct app *app, const struct core_caller *who, const char *id,
                                struct err *e)
{
    struct change_ctx c = { .who = who, .id = id, .op = OP_RESET, .e = e };
    return change(app, &c);
}

int core_image_permission_each(struct app *app, const char *id,
                               int (*fn)(void *ctx, const char *grantee), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_image_perm_each(db, id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

int core_image_permission_granted(struct app *app, const char *id, const char *account)
{
    struct db *db = core_db_get(app);
    int rc = db_image_perm_has(db, id, account);
    core_db_put(app, db);
    return rc == 0 ? 1 : rc == -ENOENT ? 0 : -EIO;
}

int core_image_cancel_permission(struct app *app, const struct core_caller *who, const char *id,
                                 struct err *e)
{
    struct change_ctx c = { .who = who, .id = id, .op = OP_CANCEL, .e = e };
    return change(app, &c);
}

int core_image_set(struct app *app, const struct core_caller *who, const char *id,
                   const char *description, const char *imds_support, struct err *e)
{
    struct change_ctx c = {
        .who = who, .id = id, .op = OP_SET, .s1 = description, .s2 = imds_support, .e = e
    };
    return change(app, &c);
}

int core_image_deprecate(struct app *app, const struct core_caller *who, const char *id,
                         int64_t at_ms, struct err *e)
{
    struct change_ctx c = { .who = who, .id = id, .op = OP_DEPRECATE, .at_ms = at_ms, .e = e };
    return change(app, &c);
}

int core_image_protect(struct app *app, const struct core_caller *who, const char *id, bool enable,
                       bool with_cooldown, struct err *e)
{
    struct change_ctx c = {
        .who = who, .id = id, .op = OP_PROTECT, .flag1 = enable, .flag2 = with_cooldown, .e = e
    };
    return change(app, &c);
}

int core_image_disable(struct app *app, const struct core_caller *who, const char *id, bool disable,
                       struct err *e)
{
    struct change_ctx c = { .who = who, .id = id, .op = OP_DISABLE, .flag1 = disable, .e = e };
    return change(app, &c);
}

int core_image_deregister(struct app *app, const struct core_caller *who, const char *id,
                          bool delete_snapshots,
                          void (*fn)(void *ctx, const char *snapshot_id, const char *code),
                          void *ctx, struct err *e)
{
    struct snap_list deleted;
    deleted.n = 0;
    struct change_ctx c = { .who = who,
                            .id = id,
                            .op = OP_DEREGISTER,
                            .flag1 = delete_snapshots,
                            .fn = fn,
                            .ctx = ctx,
                            .deleted = &deleted,
                            .e = e };
    int rc = change(app, &c);
    /* Deleted snapshots' maps go once the deletion is committed (as DeleteSnapshot does). */
    struct vol_region *vr;
    if (rc == 0 && deleted.n && core_region_storage(app, who->region, NULL, &vr) == 0) {
        for (size_t i = 0; i < deleted.n; i++) {
            char path[1200];
            vol_map_path(vr, deleted.v[i], path, sizeof(path));
            unlink(path);
        }
    }
    return rc;
}

void core_image_protection_text(const struct db_image *im, int64_t now_ms, char *out, size_t outlen)
{
    if (strcmp(im->protection, "with-cooldown") == 0) {
        snprintf(out, outlen, "enabled-with-cooldown");
    } else if (strcmp(im->protection, "without-cooldown") == 0) {
        snprintf(out, outlen, "enabled-without-cooldown");
    } else if (im->protection_until_ms > now_ms) {
        char t[32];
        time_format_iso(im->protection_until_ms, t);
        snprintf(out, outlen, "disabled-until-%s", t);
    } else {
        snprintf(out, outlen, "disabled");
    }
}

int core_image_block_public(struct app *app, const struct core_caller *who, const char *set,
                            char *out, size_t outlen, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = 0;
    if (set) {
        if (who->dry_run) {
            core_db_put(app, db);
            return core_dry_run(e);
        }
        rc = db_account_setting_set(db, who->account_id, who->region, "image-block-public-access",
                                    set);
    }
    if (rc == 0 && out) {
        if (db_account_setting_get(db, who->account_id, who->region, "image-block-public-access",
                                   out, outlen) < 0)
            snprintf(out, outlen, "unblocked");
    }
    core_db_put(app, db);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot record the setting");
    return 0;
}

int core_image_taggable(struct db *db, const char *region, const char *account, const char *id)
{
    struct db_image im;
    int rc = db_image_get(db, id, &im);
    if (rc < 0)
        return rc;
    if (strcmp(im.region, region) != 0 || strcmp(im.state, "deregistered") == 0)
        return -ENOENT;
    if (strcmp(im.owner, account) == 0)
        return 0;
    /* what another account sees by id: granted or public, and not disabled */
    if (strcmp(im.state, "disabled") == 0)
        return -ENOENT;
    return im.public ? 0 : db_image_perm_has(db, id, account);
}

int core_image_find_tagged(struct app *app, const char *region, const char *owner, const char *key,
                           const char *value, char ret_id[32])
{
    struct db *db = core_db_get(app);
    int rc = db_tag_find(db, region, owner, "image", key, value, ret_id, 32);
    core_db_put(app, db);
    return rc;
}
