/*
 * core_blockstore.c — volumes and snapshots: EC2's rules for creating, describing, modifying,
 * sharing and deleting them, the snapshot capture job, and recovery after a crash.
 *
 * Snapshot of a volume: the API call freezes the volume's top layer (vol_snapshot_begin: durable
 * before the snapshot row is committed) and queues a capture job; the job stores the changed
 * blocks, saves the map, marks the snapshot completed and only then rebases the volume
 * (vol_snapshot_finish).  A crash anywhere is repaired by core_blockstore_recover from the two
 * records (database row, volume state): pending rows are captured again, completed ones
 * finished, begun snapshots without a row aborted.
 */
#include "core/core_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- volume types ---- */

struct voltype {
    const char *name;
    int64_t min_gib, max_gib;
    bool iops_settable, iops_required;
    int64_t iops_min, iops_max, iops_default, iops_per_gib;
    bool throughput_settable;
    int64_t tp_min, tp_max, tp_default;
    bool multi_attach;
};

static const struct voltype voltypes[] = {
    { "gp2", 1, 16384, false, false, 100, 16000, 0, 3, false, 0, 0, 0, false },
    { "gp3", 1, 16384, true, false, 3000, 16000, 3000, 500, true, 125, 1000, 125, false },
    { "io1", 4, 16384, true, true, 100, 64000, 0, 50, false, 0, 0, 0, true },
    { "io2", 4, 65536, true, true, 100, 256000, 0, 1000, false, 0, 0, 0, true },
    { "st1", 125, 16384, false, false, 0, 0, 0, 0, false, 0, 0, 0, false },
    { "sc1", 125, 16384, false, false, 0, 0, 0, 0, false, 0, 0, 0, false },
    { "standard", 1, 1024, false, false, 0, 0, 0, 0, false, 0, 0, 0, false },
};

static const struct voltype *voltype_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(voltypes); i++)
        if (strcmp(voltypes[i].name, name) == 0)
            return &voltypes[i];
    return NULL;
}

/* Checks size, iops and throughput against the type; fills the defaults EC2 reports. */
static int voltype_check(const struct voltype *t, int64_t size, int64_t *iops, int64_t *tp,
                         bool iops_given, bool tp_given, bool multi, struct err *e)
{
    if (size < t->min_gib)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Volume of %lld GiB is too small; minimum is %lld GiB for %s volumes.",
                       (long long)size, (long long)t->min_gib, t->name);
    if (size > t->max_gib)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Volume of %lld GiB is too large; maximum is %lld GiB for %s volumes.",
                       (long long)size, (long long)t->max_gib, t->name);
    if (iops_given && !t->iops_settable)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "The parameter iops is not supported for %s volumes.", t->name);
    if (!iops_given && t->iops_required)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "The parameter iops must be specified for %s volumes.", t->name);
    if (tp_given && !t->throughput_settable)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "The parameter throughput is not supported for %s volumes.", t->name);
    if (multi && !t->multi_attach)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "Multi-Attach is supported only for io1 and io2 volumes.");
    if (t->iops_settable) {
        if (!iops_given)
            *iops = t->iops_default;
        if (*iops < t->iops_min)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Volume iops of %lld is too low; minimum is %lld.", (long long)*iops,
                           (long long)t->iops_min);
        if (*iops > t->iops_max)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Volume iops of %lld is too high; maximum is %lld.", (long long)*iops,
                           (long long)t->iops_max);
        if (*iops > t->iops_per_gib * size && *iops > t->iops_default)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Iops to volume size ratio of %.1f is too high; maximum is %lld.",
                           (double)*iops / (double)size, (long long)t->iops_per_gib);
    } else if (t->iops_per_gib) {
        /* gp2: a baseline of 3 IOPS per GiB between 100 and 16000. */
        int64_t b = t->iops_per_gib * size;
        *iops = b < t->iops_min ? t->iops_min : b > t->iops_max ? t->iops_max : b;
    } else {
        *iops = 0;
    }
    if (t->throughput_settable) {
        if (!tp_given)
            *tp = t->tp_default;
        if (*tp < t->tp_min || *tp > t->tp_max)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Throughput of %lld MiB/s is out of range; it must be between %lld "
                           "and %lld.",
                           (long long)*tp, (long long)t->tp_min, (long long)t->tp_max);
        if ((double)*tp / (double)*iops > 0.25)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Throughput (MiBps) to iops ratio of %.3f is too high; maximum is "
                           "0.25 MiBps per iops.",
                           (double)*tp / (double)*iops);
    } else {
        *tp = 0;
    }
    return 0;
}

/* ---- ownership and visibility ---- */

int core_volume_owned(struct db *db, const char *region, const char *account, const char *id)
{
    struct db_volume v;
    int rc = db_volume_get(db, id, &v);
    if (rc < 0)
        return rc;
    return strcmp(v.owner, account) == 0 && strcmp(v.region, region) == 0 ? 0 : -ENOENT;
}

int core_snapshot_taggable(struct db *db, const char *region, const char *account, const char *id)
{
    struct db_snapshot s;
    int rc = db_snapshot_get(db, id, &s);
    if (rc < 0)
        return rc;
    if (strcmp(s.region, region) != 0)
        return -ENOENT;
    return strcmp(s.owner, account) == 0 ? 0 : db_snapshot_perm_has(db, id, account, true);
}

static int volume_lookup(struct db *db, const struct core_caller *who, const char *id,
                         struct db_volume *ret, struct err *e)
{
    if (!core_id_valid(id, "vol-"))
        return err_set(e, -EINVAL, "InvalidVolumeID.Malformed",
                       "Invalid id: \"%.64s\" (expecting \"vol-...\")", id);
    int rc = db_volume_get(db, id, ret);
    if (rc == -ENOENT || (rc == 0 && (strcmp(ret->owner, who->account_id) != 0 ||
                                      strcmp(ret->region, who->region) != 0)))
        return err_set(e, -ENOENT, "InvalidVolume.NotFound", "The volume '%s' does not exist.", id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read volume %s", id);
    return 0;
}

static int snapshot_lookup(struct db *db, const struct core_caller *who, const char *id,
                           enum core_access access, struct db_snapshot *ret, struct err *e)
{
    if (!core_id_valid(id, "snap-"))
        return err_set(e, -EINVAL, "InvalidSnapshotID.Malformed",
                       "Invalid id: \"%.64s\" (expecting \"snap-...\")", id);
    int rc = db_snapshot_get(db, id, ret);
    bool ok = rc == 0 && strcmp(ret->region, who->region) == 0;
    if (ok && strcmp(ret->owner, who->account_id) != 0)
        ok = access == CORE_VISIBLE && db_snapshot_perm_has(db, id, who->account_id, true) == 0;
    if (rc == -ENOENT || (rc == 0 && !ok))
        return err_set(e, -ENOENT, "InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.",
                       id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read snapshot %s", id);
    return 0;
}

int core_volume_get(struct app *app, const struct core_caller *who, const char *id,
                    struct db_volume *ret, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = volume_lookup(db, who, id, ret, e);
    core_db_put(app, db);
    return rc;
}

int core_volume_each(struct app *app, const struct core_caller *who,
                     int (*fn)(void *ctx, const struct db_volume *v), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_volume_each(db, who->region, who->account_id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

int core_snapshot_get(struct app *app, const struct core_caller *who, const char *id,
                      enum core_access access, struct db_snapshot *ret, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = snapshot_lookup(db, who, id, access, ret, e);
    core_db_put(app, db);
    return rc;
}

int core_snapshot_each(struct app *app, const struct core_caller *who, const char *owner,
                       bool visible, int (*fn)(void *ctx, const struct db_snapshot *s), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_snapshot_each(db, who->region, owner, visible ? who->account_id : NULL, fn, ctx);
    core_db_put(app, db);
    return rc;
}

int core_snapshot_row(struct app *app, const char *id, struct db_snapshot *ret)
{
    struct db *db = core_db_get(app);
    int rc = db_snapshot_get(db, id, ret);
    core_db_put(app, db);
    return rc;
}

bool core_snapshot_granted(struct app *app, const char *id, const char *account, bool or_all)
{
    struct db *db = core_db_get(app);
    bool ok = db_snapshot_perm_has(db, id, account, or_all) == 0;
    core_db_put(app, db);
    return ok;
}

/* ---- idempotency ---- */

int core_idem_check(struct db *db, const struct core_caller *who, const char *op, const char *token,
                    const char *params, char *resource, size_t rlen, struct err *e)
{
    if (!token || !*token)
        return -ENOENT;
    if (strlen(token) > 64)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Client token is too long; the maximum is 64 characters");
    char had[512];
    int rc =
        db_idem_get(db, who->account_id, who->region, op, token, had, sizeof(had), resource, rlen);
    if (rc < 0)
        return rc;
    if (strcmp(had, params) != 0)
        return err_set(e, -EINVAL, "IdempotentParameterMismatch",
                       "The client token '%s' was used with different parameters", token);
    return 0;
}

/* ---- volumes ---- */

static int zone_resolve(struct app *app, const struct core_caller *who,
                        const struct core_volume_spec *spec, char zone[40], struct err *e);

struct zone_find {
    const char *want_name, *want_id, *region;
    char found[40];
};

static int zone_match(void *vctx, const char *zone, const char *zone_id, const char *rgn)
{
    struct zone_find *z = vctx;
    if ((z->want_name && strcmp(zone, z->want_name) == 0) ||
        (z->want_id && strcmp(zone_id, z->want_id) == 0)) {
        snprintf(z->found, sizeof(z->found), "%s", zone);
        return 1;
    }
    (void)rgn;
    return 0;
}

static int zone_resolve(struct app *app, const struct core_caller *who,
                        const struct core_volume_spec *spec, char zone[40], struct err *e)
{
    if (spec->zone && spec->zone_id)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "Only one of AvailabilityZone and AvailabilityZoneId may be given");
    if (!spec->zone && !spec->zone_id)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter AvailabilityZone");
    struct zone_find z = { spec->zone, spec->zone_id, who->region, "" };
    core_zone_each(app, who->region, zone_match, &z);
    if (!z.found[0])
        return err_set(e, -EINVAL, "InvalidParameterValue", "Invalid availability zone: [%.64s]",
                       spec->zone ? spec->zone : spec->zone_id);
    snprintf(zone, 40, "%s", z.found);
    return 0;
}

struct create_ctx {
    const struct core_caller *who;
    const struct core_volume_spec *spec;
    struct db_volume *v;
    const char *params;
    bool replay;
    struct err *e;
};

int core_volume_new_tx(struct app *app, struct db *db, const struct core_caller *who,
                       const struct core_volume_spec *spec, bool via_image, struct db_volume *v,
                       struct err *e)
{
    int rc;
    if (spec->snapshot_id) {
        struct db_snapshot s;
        /* Launching an image makes volumes from its snapshots without sharing them. */
        rc = snapshot_lookup(db, who, spec->snapshot_id, CORE_VISIBLE, &s, e);
        if (via_image && rc == -ENOENT && db_snapshot_get(db, spec->snapshot_id, &s) == 0 &&
            strcmp(s.region, who->region) == 0)
            rc = 0;
        if (rc < 0)
            return rc;
        if (strcmp(s.state, "completed") != 0)
            return err_set(e, -EINVAL, "IncorrectState",
                           "Snapshot '%s' is not completed (it is %s)", s.id, s.state);
        if (v->size_gib == 0)
            v->size_gib = s.volume_size_gib;
        if (v->size_gib < s.volume_size_gib)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Volume of %lld GiB is smaller than snapshot '%s', which is %lld GiB.",
                           (long long)v->size_gib, s.id, (long long)s.volume_size_gib);
        if (s.encrypted && !(spec->enc && spec->enc->dk.encrypted))
            return err_set(e, -EIO, "InternalError", "the encryption of %s was not planned", s.id);
    }
    bool fill = spec->enc && spec->enc->transcode;
    if (spec->enc)
        core_dkey_to_volume(&spec->enc->dk, v);
    const struct voltype *t = voltype_find(v->type);
    rc = voltype_check(t, v->size_gib, &v->iops, &v->throughput, spec->iops > 0,
                       spec->throughput > 0, v->multi_attach, e);
    if (rc < 0)
        return rc;
    if (who->dry_run)
        return core_dry_run(e);
    rc = db_volume_insert(db, v);
    if (rc == 0)
        rc = core_tags_insert(db, who, v->id, "volume", spec->tags, spec->ntags);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot record the volume");
    if (fill)
        return 0; /* another encryption domain: core_volume_fill makes its base, then its files */
    /* The volume's files, in constant time: a state file pointing at the snapshot's map. */
    struct vol_region *vr;
    rc = core_region_storage(app, who->region, NULL, &vr);
    if (rc == 0) {
        struct vol_params p = { v->id, (uint64_t)v->size_gib << 30, spec->snapshot_id,
                                v->encrypted ? &spec->enc->key : NULL };
        rc = vol_create(vr, &p);
    }
    if (rc < 0)
        return err_set(e, rc, rc == -ENOSPC ? "InsufficientVolumeCapacity" : "InternalError",
                       "cannot create the volume's storage: %s", strerror(-rc));
    return 0;
}

static int volume_create_tx(struct app *app, struct db *db, void *vctx)
{
    struct create_ctx *c = vctx;
    char had[32];
    int rc = core_idem_check(db, c->who, "CreateVolume", c->spec->client_token, c->params, had,
                             sizeof(had), c->e);
    if (rc == 0) {
        /* The same request again: answer with what the first one made. */
        rc = db_volume_get(db, had, c->v);
        if (rc == 0) {
            c->replay = true;
            return 0;
        }
    }
    if (rc != -ENOENT)
        return rc;
    rc = core_volume_new_tx(app, db, c->who, c->spec, false, c->v, c->e);
    if (rc == 0 && c->spec->client_token && *c->spec->client_token)
        rc = db_idem_put(db, c->who->account_id, c->who->region, "CreateVolume",
                         c->spec->client_token, c->params, c->v->id, c->v->create_ms);
    return rc;
}

int core_volume_prepare(struct app *app, const struct core_caller *who,
                        const struct core_volume_spec *spec, struct db_volume *v, struct err *e)
{
    memset(v, 0, sizeof(*v));
    int rc = zone_resolve(app, who, spec, v->zone, e);
    if (rc < 0)
        return rc;
    if (!spec->snapshot_id && spec->size_gib <= 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter size or snapshotId");
    if (spec->size_gib < 0)
        return err_set(e, -EINVAL, "InvalidParameterValue", "Volume size must be positive");
    const char *type = spec->type ? spec->type : "gp2";
    if (!voltype_find(type))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Value (%.32s) for parameter volumeType is invalid.", type);
    if (spec->kms_key_id && !spec->encrypted)
        return err_set(e, -EINVAL, "InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.");
    if (spec->init_rate && (spec->init_rate < 100 || spec->init_rate > 300))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "VolumeInitializationRate must be between 100 and 300 MiB/s");
    if (spec->init_rate && !spec->snapshot_id)
        return err_set(e, -EINVAL, "InvalidParameterCombination",
                       "VolumeInitializationRate needs a SnapshotId");
    rc = core_tags_check(spec->tags, spec->ntags, e);
    if (rc < 0)
        return rc;
    rc = rand_id(v->id, sizeof(v->id), "vol-", 17);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "no randomness");
    snprintf(v->region, sizeof(v->region), "%s", who->region);
    snprintf(v->owner, sizeof(v->owner), "%s", who->account_id);
    v->size_gib = spec->size_gib;
    snprintf(v->type, sizeof(v->type), "%s", type);
    v->iops = spec->iops;
    v->throughput = spec->throughput;
    snprintf(v->snapshot_id, sizeof(v->snapshot_id), "%s",
             spec->snapshot_id ? spec->snapshot_id : "");
    snprintf(v->state, sizeof(v->state), "available");
    v->create_ms = core_now_ms(app);
    v->multi_attach = spec->multi_attach;
    v->init_rate = spec->init_rate;
    return 0;
}

int core_volume_create(struct app *app, const struct core_caller *who,
                       const struct core_volume_spec *spec, struct db_volume *ret, struct err *e)
{
    struct db_volume v;
    int rc = core_volume_prepare(app, who, spec, &v, e);
    if (rc < 0)
        return rc;
    /* Encryption first, outside the transaction (the key service writes). */
    struct core_enc enc;
    struct core_dkey sdk;
    struct db_snapshot snap;
    if (spec->snapshot_id) {
        rc = core_snapshot_get(app, who, spec->snapshot_id, CORE_VISIBLE, &snap, e);
        if (rc < 0)
            return rc;
        core_dkey_of_snapshot(&snap, &sdk);
    }
    rc = core_enc_plan(app, who, spec->encrypted, spec->kms_key_id, spec->snapshot_id ? &sdk : NULL,
                       &enc, e);
    if (rc < 0)
        return rc;
    struct core_volume_spec sp = *spec;
    sp.enc = &enc;
    spec = &sp;
    if (enc.transcode)
        snprintf(v.state, sizeof(v.state), "creating");
    char params[512];
    snprintf(params, sizeof(params), "%s|%lld|%s|%lld|%lld|%s|%d|%lld|%d|%.160s", v.zone,
             (long long)spec->size_gib, v.type, (long long)spec->iops, (long long)spec->throughput,
             v.snapshot_id, spec->multi_attach, (long long)spec->init_rate, spec->encrypted,
             spec->kms_key_id ? spec->kms_key_id : "");
    struct create_ctx c = { who, spec, &v, params, false, e };
    rc = core_tx(app, volume_create_tx, &c);
    core_enc_wipe(&enc);
    if (rc < 0)
        return rc;
    if (enc.transcode && !c.replay)
        core_job_submit(app, core_job_fill_volume, v.id);
    *ret = v;
    /* EC2 answers CreateVolume with the volume still "creating". */
    if (!c.replay)
        snprintf(ret->state, sizeof(ret->state), "creating");
    return 0;
}

struct delete_ctx {
    const struct core_caller *who;
    const char *id;
    bool files;
    bool opened; /* refused only because the volume was open */
    struct err *e;
};

/* Whether a volume has snapshots begun and not yet finished (its frozen layers are needed). */
static int pending_snapshots(struct app *app, const char *region, const char *id)
{
    struct core_openvol *ov;
    if (core_vol_get(app, region, id, false, &ov) < 0)
        return 0;
    char ids[4][32];
    int n = vol_snapshot_pending(ov->v, ids, 4);
    core_vol_put(app, ov, false);
    return n;
}

static int volume_delete_tx(struct app *app, struct db *db, void *vctx)
{
    struct delete_ctx *c = vctx;
    struct db_volume v;
    int rc = volume_lookup(db, c->who, c->id, &v, c->e);
    if (rc < 0)
        return rc;
    if (strcmp(v.state, "in-use") == 0 || core_vol_busy(app, v.id)) {
        c->opened = strcmp(v.state, "in-use") != 0;
        return err_set(c->e, -EBUSY, "VolumeInUse", "Volume %s is currently attached or in use.",
                       v.id);
    }
    if (strcmp(v.state, "available") != 0)
        return err_set(c->e, -EINVAL, "IncorrectState", "The volume '%s' is %s.", v.id, v.state);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    if (pending_snapshots(app, v.region, v.id) > 0) {
        /* Its frozen layers hold snapshots in progress: the capture job deletes it after. */
        snprintf(v.state, sizeof(v.state), "deleting");
        rc = db_volume_update(db, &v);
    } else {
        rc = db_volume_delete(db, v.id);
        if (rc == 0)
            rc = db_tag_delete_all(db, v.region, v.id);
        c->files = true;
    }
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot delete the volume");
    return 0;
}

int core_volume_delete(struct app *app, const struct core_caller *who, const char *id,
                       struct err *e)
{
    struct delete_ctx c = { who, id, false, false, e };
    int rc = core_tx(app, volume_delete_tx, &c);
    if (rc == -EBUSY && c.opened) {
        /* Open by amid itself (a snapshot's capture letting go): once more when it has. */
        core_vol_settle(app, id, 3);
        c.opened = false;
        rc = core_tx(app, volume_delete_tx, &c);
    }
    if (rc == 0 && c.files) {
        struct vol_region *vr;
        if (core_region_storage(app, who->region, NULL, &vr) == 0)
            vol_delete(vr, id); /* a leftover directory harms nothing; verify reports it */
    }
    return rc;
}

struct modify_ctx {
    const struct core_caller *who;
    const char *id;
    const struct core_volume_mod *mod;
    char *body;
    struct err *e;
};

static int volume_modify_tx(struct app *app, struct db *db, void *vctx)
{
    struct modify_ctx *c = vctx;
    struct db_volume v;
    int rc = volume_lookup(db, c->who, c->id, &v, c->e);
    if (rc < 0)
        return rc;
    if (strcmp(v.state, "available") != 0 && strcmp(v.state, "in-use") != 0)
        return err_set(c->e, -EINVAL, "IncorrectState", "The volume '%s' is %s.", v.id, v.state);
    const struct core_volume_mod *m = c->mod;
    if (m->size_gib == 0 && !m->type && m->iops < 0 && m->throughput < 0 && m->multi_attach < 0)
        return err_set(c->e, -EINVAL, "MissingParameter",
                       "At least one of Size, VolumeType, Iops, Throughput or "
                       "MultiAttachEnabled must be given");
    struct db_volume n = v;
    if (m->size_gib) {
        if (m->size_gib < v.size_gib)
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "New size cannot be smaller than existing size");
        n.size_gib = m->size_gib;
    }
    if (m->type) {
        if (!voltype_find(m->type))
            return err_set(c->e, -EINVAL, "InvalidParameterValue",
                           "Value (%.32s) for parameter volumeType is invalid.", m->type);
        snprintf(n.type, sizeof(n.type), "%s", m->type);
    }
    if (m->multi_attach >= 0)
        n.multi_attach = m->multi_attach;
    const struct voltype *t = voltype_find(n.type);
    bool type_changed = strcmp(n.type, v.type) != 0;
    n.iops = m->iops >= 0 ? m->iops : (type_changed ? 0 : v.iops);
    n.throughput = m->throughput >= 0 ? m->throughput : (type_changed ? 0 : v.throughput);
    bool iops_given = m->iops >= 0 || (!type_changed && t->iops_settable && v.iops);
    bool tp_given = m->throughput >= 0 || (!type_changed && t->throughput_settable);
    rc = voltype_check(t, n.size_gib, &n.iops, &n.throughput, iops_given, tp_given, n.multi_attach,
                       c->e);
    if (rc < 0)
        return rc;
    if (c->who->dry_run)
        return core_dry_run(c->e);
    int64_t now = core_now_ms(app);
    rc = db_volume_update(db, &n);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot update the volume");
    if (n.size_gib != v.size_gib) {
        struct core_openvol *ov;
        rc = core_vol_get(app, v.region, v.id, false, &ov);
        if (rc == 0) {
            rc = vol_grow(ov->v, (uint64_t)n.size_gib << 30);
            core_vol_put(app, ov, false);
        }
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot grow the volume: %s", strerror(-rc));
    }
    json_t *mod = json_pack(
        "{s:s, s:s, s:I, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:b, s:b, s:I, "
        "s:I, s:I}",
        "VolumeId", v.id, "ModificationState", "completed", "TargetSize", (json_int_t)n.size_gib,
        "OriginalSize", (json_int_t)v.size_gib, "TargetVolumeType", n.type, "OriginalVolumeType",
        v.type, "TargetIops", (json_int_t)n.iops, "OriginalIops", (json_int_t)v.iops,
        "TargetThroughput", (json_int_t)n.throughput, "OriginalThroughput",
        (json_int_t)v.throughput, "TargetMultiAttachEnabled", n.multi_attach,
        "OriginalMultiAttachEnabled", v.multi_attach, "Progress", (json_int_t)100, "StartTime",
        (json_int_t)now, "EndTime", (json_int_t)now);
    c->body = mod ? json_dumps(mod, JSON_COMPACT) : NULL;
    json_decref(mod);
    if (!c->body)
        return err_set(c->e, -ENOMEM, "InternalError", "out of memory");
    rc = db_volmod_put(db, v.id, now, now, "completed", c->body);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot record the modification");
    return 0;
}

int core_volume_modify(struct app *app, const struct core_caller *who, const char *id,
                       const struct core_volume_mod *mod, char **ret_body, struct err *e)
{
    struct modify_ctx c = { who, id, mod, NULL, e };
    int rc = core_tx(app, volume_modify_tx, &c);
    if (rc < 0) {
        free(c.body);
        return rc;
    }
    *ret_body = c.body;
    return 0;
}

struct mods_ctx {
    struct app *app;
    const struct core_caller *who;
    struct db *db;
    int (*fn)(void *ctx, const char *body);
    void *ctx;
};

static int mod_row(void *vctx, const char *volume_id, const char *body)
{
    struct mods_ctx *m = vctx;
    if (core_volume_owned(m->db, m->who->region, m->who->account_id, volume_id) < 0)
        return 0;
    return m->fn(m->ctx, body);
}

int core_volume_mods_each(struct app *app, const struct core_caller *who, const char *volume_id,
                          int (*fn)(void *ctx, const char *body), void *ctx)
{
    struct db *db = core_db_get(app);
    struct mods_ctx m = { app, who, db, fn, ctx };
    int rc = db_volmod_each(db, volume_id, mod_row, &m);
    core_db_put(app, db);
    return rc;
}

/* ---- snapshots of volumes ---- */

struct snap_ctx {
    const struct core_caller *who;
    const char *volume_id;
    const char *description;
    const struct core_tag *tags;
    size_t ntags;
    struct db_snapshot *s;
    struct core_openvol *ov;
    struct err *e;
};

static int snapshot_create_tx(struct app *app, struct db *db, void *vctx)
{
    struct snap_ctx *c = vctx;
    struct db_volume v;
    int rc = volume_lookup(db, c->who, c->volume_id, &v, c->e);
    if (rc < 0)
        return rc;
    if (strcmp(v.state, "available") != 0 && strcmp(v.state, "in-use") != 0)
        return err_set(c->e, -EINVAL, "IncorrectState", "The volume '%s' is %s.", v.id, v.state);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    struct db_snapshot *s = c->s;
    snprintf(s->region, sizeof(s->region), "%s", v.region);
    snprintf(s->owner, sizeof(s->owner), "%s", v.owner);
    snprintf(s->volume_id, sizeof(s->volume_id), "%s", v.id);
    s->volume_size_gib = v.size_gib;
    snprintf(s->state, sizeof(s->state), "pending");
    s->start_ms = core_now_ms(app);
    snprintf(s->description, sizeof(s->description), "%s", c->description ? c->description : "");
    snprintf(s->source, sizeof(s->source), "volume");
    struct core_dkey dk; /* a snapshot is in its volume's encryption domain */
    core_dkey_of_volume(&v, &dk);
    core_dkey_to_snapshot(&dk, s);
    rc = db_snapshot_insert(db, s);
    if (rc == 0)
        rc = core_tags_insert(db, c->who, s->id, "snapshot", c->tags, c->ntags);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot record the snapshot");
    /* The point in time: freeze the volume now, durably, before the row commits. */
    rc = core_vol_get(app, v.region, v.id, false, &c->ov);
    if (rc == 0) {
        const char *ids[1] = { s->id };
        rc = vol_snapshot_begin(&c->ov->v, ids, 1);
        if (rc < 0) {
            core_vol_put(app, c->ov, false);
            c->ov = NULL;
        }
    }
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot freeze the volume: %s", strerror(-rc));
    return 0;
}

/* Snapshot descriptions: at most 255 characters (of UTF-8, up to 4 bytes each). */
static bool description_too_long(const char *s)
{
    size_t chars = 0;
    for (const char *p = s; *p; p++)
        chars += ((unsigned char)*p & 0xc0) != 0x80;
    return chars > 255 || strlen(s) > 255 * 4;
}

int core_snapshot_create(struct app *app, const struct core_caller *who, const char *volume_id,
                         const char *description, const struct core_tag *tags, size_t ntags,
                         struct db_snapshot *ret, struct err *e)
{
    if (description && description_too_long(description))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "The description is longer than 255 characters");
    int rc = core_tags_check(tags, ntags, e);
    if (rc < 0)
        return rc;
    struct db_snapshot s;
    memset(&s, 0, sizeof(s));
    rc = rand_id(s.id, sizeof(s.id), "snap-", 17);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "no randomness");
    struct snap_ctx c = { who, volume_id, description, tags, ntags, &s, NULL, e };
    rc = core_tx(app, snapshot_create_tx, &c);
    if (c.ov) {
        if (rc < 0)
            vol_snapshot_abort(c.ov->v, s.id);
        core_vol_put(app, c.ov, false);
    }
    if (rc < 0)
        return rc;
    *ret = s;
    core_job_submit(app, core_job_capture, s.id);
    return 0;
}

struct progress_ctx {
    struct app *app;
    const char *id;
    int last;
};

static void capture_progress(void *vctx, int percent)
{
    struct progress_ctx *p = vctx;
    if (percent < p->last + 10 || percent >= 100)
        return;
    p->last = percent;
    struct db *db = core_db_get(p->app);
    struct db_snapshot s;
    if (db_snapshot_get(db, p->id, &s) == 0 && strcmp(s.state, "pending") == 0) {
        s.progress = percent;
        db_snapshot_update(db, &s);
    }
    core_db_put(p->app, db);
}

/* Deletes a volume left in "deleting" once no snapshot needs its layers any more. */
static void volume_reap(struct app *app, const char *region, const char *id)
{
    struct db *db = core_db_get(app);
    struct db_volume v;
    bool reap = db_volume_get(db, id, &v) == 0 && strcmp(v.state, "deleting") == 0 &&
                !core_vol_busy(app, id) && pending_snapshots(app, region, id) == 0;
    if (reap && db_begin(db) == 0) {
        if (db_volume_delete(db, id) == 0 && db_tag_delete_all(db, region, id) >= 0 &&
            db_commit(db) == 0) {
            struct vol_region *vr;
            if (core_region_storage(app, region, NULL, &vr) == 0)
                vol_delete(vr, id);
        } else {
            db_rollback(db);
        }
    }
    core_db_put(app, db);
}

void core_job_capture(struct app *app, const char *snapshot_id)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    int rc = db_snapshot_get(db, snapshot_id, &s);
    core_db_put(app, db);
    if (rc < 0 || strcmp(s.state, "pending") != 0 || strcmp(s.source, "volume") != 0)
        return;
    struct core_openvol *ov = NULL;
    rc = core_vol_get(app, s.region, s.volume_id, false, &ov);
    struct vol_snapshot_stats st;
    memset(&st, 0, sizeof(st));
    int64_t t0 = time_mono_us();
    if (rc == 0) {
        struct progress_ctx p = { app, s.id, 0 };
        rc = vol_snapshot_capture(ov->v, s.id, capture_progress, &p, &st);
    }
    log_msg(rc == 0 ? LOG_INFO : LOG_WARN,
            "event=snapshot-captured snapshot=%s volume=%s rc=%d changed_blocks=%llu "
            "stored_bytes=%llu ms=%.1f",
            s.id, s.volume_id, rc, (unsigned long long)st.changed_blocks,
            (unsigned long long)st.stored_bytes, (double)(time_mono_us() - t0) / 1000.0);
    db = core_db_get(app);
    struct db_snapshot now;
    bool still = db_snapshot_get(db, s.id, &now) == 0 && strcmp(now.state, "pending") == 0;
    if (still) {
        if (rc == 0) {
            snprintf(now.state, sizeof(now.state), "completed");
            now.progress = 100;
            now.complete_ms = core_now_ms(app);
            now.blocks = (int64_t)st.blocks;
            now.full_bytes = (int64_t)st.blocks * CORE_BLOCK_SIZE;
            now.stored_bytes = (int64_t)st.stored_bytes;
            memcpy(now.linear, st.linear, 32);
            now.has_linear = true;
        } else {
            snprintf(now.state, sizeof(now.state), "error");
            snprintf(now.state_message, sizeof(now.state_message),
                     rc == -ENOSPC ? "Server.InsufficientStorage: the chunk store is full"
                                   : "Server.InternalError: capture failed: %s",
                     strerror(-rc));
        }
        int urc = db_snapshot_update(db, &now);
        if (urc < 0)
            rc = urc; /* not recorded: leave the volume as it is; recovery repeats */
    }
    core_db_put(app, db);
    if (still)
        core_images_snapshot_done(app, s.id);
    if (ov) {
        if (still && rc == 0)
            vol_snapshot_finish(ov->v, s.id);
        else if (!still || rc < 0)
            vol_snapshot_abort(ov->v, s.id);
        core_vol_put(app, ov, false);
    }
    volume_reap(app, s.region, s.volume_id);
}

/* ---- deleting, copying and sharing snapshots ---- */

struct sdel_ctx {
    const struct core_caller *who;
    const char *id;
    struct db_snapshot s;
    struct err *e;
};

static int first_image(void *vctx, const char *id)
{
    snprintf(vctx, 32, "%s", id);
    return 1;
}

static int snapshot_delete_tx(struct app *app, struct db *db, void *vctx)
{
    struct sdel_ctx *c = vctx;
    (void)app;
    int rc = snapshot_lookup(db, c->who, c->id, CORE_OWNER, &c->s, c->e);
    if (rc < 0) {
        /* A snapshot shared with the caller exists for it, but it may not delete it. */
        if (rc == -ENOENT && snapshot_lookup(db, c->who, c->id, CORE_VISIBLE, &c->s, NULL) == 0)
            return err_set(c->e, -EPERM, "UnauthorizedOperation",
                           "You are not authorized to delete snapshot %s", c->id);
        return rc;
    }
    char user[32] = "";
    db_bdm_images_of_snapshot(db, c->id, first_image, user);
    if (user[0])
        return err_set(c->e, -EBUSY, "InvalidSnapshot.InUse",
                       "The snapshot %s is currently in use by %s", c->id, user);
    if (strcmp(c->s.state, "pending") == 0 && strcmp(c->s.source, "volume") == 0)
        return err_set(c->e, -EINVAL, "IncorrectState",
                       "The snapshot '%s' is still being captured; delete it once it completes",
                       c->id);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    rc = db_snapshot_delete(db, c->id);
    if (rc == 0)
        rc = db_tag_delete_all(db, c->s.region, c->id);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot delete the snapshot");
    return 0;
}

int core_snapshot_delete(struct app *app, const struct core_caller *who, const char *id,
                         struct err *e)
{
    struct sdel_ctx c = { who, id, { { 0 } }, e };
    int rc = core_tx(app, snapshot_delete_tx, &c);
    if (rc == 0) {
        /* The map goes; its chunks stay until `amid gc` finds nothing else refers to them.  A
         * volume based on the snapshot (or still finishing it) or an upload building on it needs
         * the map: it then stays, and gc removes it once nothing does. */
        struct vol_region *vr;
        if (core_region_storage(app, c.s.region, NULL, &vr) == 0 &&
            !core_map_needed(app, c.s.region, id)) {
            char path[1200];
            vol_map_path(vr, id, path, sizeof(path));
            unlink(path);
        }
    }
    return rc;
}

struct copy_ctx {
    const struct core_caller *who;
    const char *src_region;
    const char *src_id;
    const char *description;
    const struct core_enc *enc;
    const struct core_tag *tags;
    size_t ntags;
    struct db_snapshot *s;
    struct err *e;
};

static int snapshot_copy_tx(struct app *app, struct db *db, void *vctx)
{
    struct copy_ctx *c = vctx;
    struct db_snapshot src;
    struct core_caller src_who = *c->who;
    src_who.region = c->src_region;
    int rc = snapshot_lookup(db, &src_who, c->src_id, CORE_VISIBLE, &src, c->e);
    if (rc < 0)
        return rc;
    if (strcmp(src.state, "completed") != 0)
        return err_set(c->e, -EINVAL, "IncorrectState", "Snapshot '%s' is not completed (it is %s)",
                       src.id, src.state);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    struct db_snapshot *s = c->s;
    *s = src;
    rand_id(s->id, sizeof(s->id), "snap-", 17);
    snprintf(s->region, sizeof(s->region), "%s", c->who->region);
    snprintf(s->owner, sizeof(s->owner), "%s", c->who->account_id);
    snprintf(s->description, sizeof(s->description), "%s", c->description ? c->description : "");
    snprintf(s->source, sizeof(s->source), "copy");
    snprintf(s->parent_id, sizeof(s->parent_id), "%s", src.id);
    s->start_ms = core_now_ms(app);
    if (src.encrypted != c->enc->dk.encrypted && !c->enc->transcode)
        return err_set(c->e, -EIO, "InternalError", "the encryption of %s was not planned", src.id);
    core_dkey_to_snapshot(&c->enc->dk, s);
    bool remote = strcmp(c->src_region, c->who->region) != 0;
    if (remote || c->enc->transcode) {
        /* Another region's store or another encryption domain: the copy job moves (or
         * re-encodes) the chunks this store lacks. */
        snprintf(s->source_region, sizeof(s->source_region), "%s", c->src_region);
        snprintf(s->state, sizeof(s->state), "pending");
        s->progress = 0;
        s->complete_ms = 0;
        s->stored_bytes = 0;
        rc = db_snapshot_insert(db, s);
        if (rc == 0)
            rc = core_tags_insert(db, c->who, s->id, "snapshot", c->tags, c->ntags);
        return rc < 0 ? err_set(c->e, rc, "InternalError", "cannot record the copy") : 0;
    }
    snprintf(s->state, sizeof(s->state), "completed");
    s->progress = 100;
    s->complete_ms = s->start_ms;
    s->stored_bytes = 0; /* every chunk is shared with the source */
    /* The copy's map: the same blocks under a new name, durable before the row commits. */
    struct vol_region *vr;
    rc = core_region_storage(app, c->who->region, NULL, &vr);
    struct vol_map *m = NULL;
    char from[1200], to[1200];
    if (rc == 0) {
        vol_map_path(vr, src.id, from, sizeof(from));
        vol_map_path(vr, s->id, to, sizeof(to));
        rc = vol_map_load(from, &m);
    }
    if (rc == 0)
        rc = vol_map_save(m, to);
    vol_map_unref(m);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot copy the snapshot's map: %s",
                       strerror(-rc));
    rc = db_snapshot_insert(db, s);
    if (rc == 0)
        rc = core_tags_insert(db, c->who, s->id, "snapshot", c->tags, c->ntags);
    if (rc < 0) {
        unlink(to);
        return err_set(c->e, rc, "InternalError", "cannot record the copy");
    }
    return 0;
}

int core_snapshot_copy(struct app *app, const struct core_caller *who, const char *source_region,
                       const char *source_id, const char *description, bool encrypted,
                       const char *kms_key_id, const struct core_tag *tags, size_t ntags,
                       struct db_snapshot *ret, struct err *e)
{
    if (!core_region_find(app, source_region))
        return err_set(e, -EINVAL, "InvalidParameterValue", "Invalid source region: %.64s",
                       source_region);
    if (description && description_too_long(description))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "The description is longer than 255 characters");
    int rc = core_tags_check(tags, ntags, e);
    if (rc < 0)
        return rc;
    /* The encryption, outside the transaction (the key service writes). */
    struct core_caller src_who = *who;
    src_who.region = source_region;
    struct db_snapshot src;
    struct core_enc enc;
    rc = core_snapshot_get(app, &src_who, source_id, CORE_VISIBLE, &src, e);
    if (rc == 0)
        rc = core_copy_enc_plan(app, who, source_region, &src, encrypted, kms_key_id, &enc, e);
    if (rc < 0)
        return rc;
    struct db_snapshot s;
    memset(&s, 0, sizeof(s));
    struct copy_ctx c = { who, source_region, source_id, description, &enc, tags, ntags, &s, e };
    rc = core_tx(app, snapshot_copy_tx, &c);
    core_enc_wipe(&enc);
    if (rc == 0)
        *ret = s;
    if (rc == 0 && strcmp(s.state, "pending") == 0)
        core_job_submit(app, core_job_copy, s.id);
    return rc;
}

struct perm_ctx {
    const struct core_caller *who;
    const char *id;
    const char *const *add, *const *remove;
    size_t nadd, nremove;
    bool reset;
    struct err *e;
};

static int permission_tx(struct app *app, struct db *db, void *vctx)
{
    struct perm_ctx *c = vctx;
    (void)app;
    struct db_snapshot s;
    int rc = snapshot_lookup(db, c->who, c->id, CORE_OWNER, &s, c->e);
    /* A snapshot shared with the caller exists for it (as for DeleteSnapshot). */
    if (rc == -ENOENT && snapshot_lookup(db, c->who, c->id, CORE_VISIBLE, &s, NULL) == 0)
        return err_set(c->e, -EPERM, "UnauthorizedOperation",
                       "You are not authorized to change the permissions of snapshot %s", c->id);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < c->nadd; i++) {
        if (strcmp(c->add[i], "all") != 0 && !account_id_valid(c->add[i]))
            return err_set(c->e, -EINVAL, "InvalidUserID.Malformed", "User ID '%.64s' is invalid",
                           c->add[i]);
        if (strcmp(c->add[i], "all") == 0 && s.encrypted)
            return err_set(c->e, -EINVAL, "InvalidParameter",
                           "Encrypted snapshots cannot be made public (snapshot %s)", s.id);
    }
    for (size_t i = 0; i < c->nremove; i++)
        if (strcmp(c->remove[i], "all") != 0 && !account_id_valid(c->remove[i]))
            return err_set(c->e, -EINVAL, "InvalidUserID.Malformed", "User ID '%.64s' is invalid",
                           c->remove[i]);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    if (c->reset)
        rc = db_snapshot_perm_clear(db, c->id);
    for (size_t i = 0; rc == 0 && i < c->nadd; i++)
        rc = db_snapshot_perm_add(db, c->id, c->add[i]);
    for (size_t i = 0; rc == 0 && i < c->nremove; i++)
        rc = db_snapshot_perm_remove(db, c->id, c->remove[i]);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot change permissions");
    return 0;
}

int core_snapshot_permission(struct app *app, const struct core_caller *who, const char *id,
                             const char *const *add, size_t nadd, const char *const *remove,
                             size_t nremove, struct err *e)
{
    struct perm_ctx c = { who, id, add, remove, nadd, nremove, false, e };
    return core_tx(app, permission_tx, &c);
}

int core_snapshot_permission_reset(struct app *app, const struct core_caller *who, const char *id,
                                   struct err *e)
{
    struct perm_ctx c = { who, id, NULL, NULL, 0, 0, true, e };
    return core_tx(app, permission_tx, &c);
}

int core_snapshot_permission_each(struct app *app, const struct core_caller *who, const char *id,
                                  int (*fn)(void *ctx, const char *grantee), void *ctx,
                                  struct err *e)
{
    struct db *db = core_db_get(app);
    struct db_snapshot s;
    int rc = snapshot_lookup(db, who, id, CORE_OWNER, &s, e);
    if (rc == -ENOENT && snapshot_lookup(db, who, id, CORE_VISIBLE, &s, NULL) == 0)
        rc = err_set(e, -EPERM, "UnauthorizedOperation",
                     "You are not authorized to read the attributes of snapshot %s", id);
    if (rc == 0)
        rc = db_snapshot_perm_each(db, id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

/* ---- recovery ---- */

/* A volume still "creating" is being filled from a snapshot of another encryption domain. */
static int recover_creating(void *vctx, const struct db_volume *v)
{
    if (strcmp(v->state, "creating") == 0)
        core_job_submit(vctx, core_job_fill_volume, v->id);
    return 0;
}

static int recover_pending(void *vctx, const struct db_snapshot *s)
{
    struct app *app = vctx;
    if (strcmp(s->source, "volume") == 0)
        core_job_submit(app, core_job_capture, s->id);
    else if (strcmp(s->source, "copy") == 0)
        core_job_submit(app, core_job_copy, s->id);
    return 0;
}

struct vol_list {
    char (*ids)[32];
    char (*regions)[32];
    size_t n, cap;
};

static int collect_volume(void *vctx, const struct db_volume *v)
{
    struct vol_list *l = vctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *a = realloc(l->ids, cap * 32), *b = realloc(l->regions, cap * 32);
        if (a)
            l->ids = a;
        if (b)
            l->regions = b;
        if (!a || !b)
            return -ENOMEM;
        l->cap = cap;
    }
    snprintf(l->ids[l->n], 32, "%s", v->id);
    snprintf(l->regions[l->n], 32, "%s", v->region);
    l->n++;
    return 0;
}

int core_blockstore_recover(struct app *app)
{
    /* Volumes' begun snapshots that have no pending row: finish or abort them. */
    struct vol_list l = { 0 };
    size_t nr;
    const struct core_region *regions = core_regions(app, &nr);
    struct db *db = core_db_get(app);
    int rc = 0;
    for (size_t i = 0; i < nr && rc == 0; i++)
        rc = db_volume_each(db, regions[i].name, NULL, collect_volume, &l);
    core_db_put(app, db);
    for (size_t i = 0; i < l.n; i++) {
        struct core_openvol *ov;
        if (core_vol_get(app, l.regions[i], l.ids[i], false, &ov) < 0)
            continue;
        char pend[16][32];
        int np = vol_snapshot_pending(ov->v, pend, 16);
        for (int k = 0; k < np; k++) {
            struct db_snapshot s;
            db = core_db_get(app);
            int g = db_snapshot_get(db, pend[k], &s);
            core_db_put(app, db);
            if (g == 0 && strcmp(s.state, "completed") == 0)
                vol_snapshot_finish(ov->v, pend[k]);
            else if (g < 0 || strcmp(s.state, "pending") != 0)
                vol_snapshot_abort(ov->v, pend[k]);
        }
        core_vol_put(app, ov, false);
        volume_reap(app, l.regions[i], l.ids[i]);
    }
    free(l.ids);
    free(l.regions);
    /* Pending captures and copies run again (both are idempotent), and so do fills. */
    db = core_db_get(app);
    rc = db_snapshot_each_state(db, "pending", recover_pending, app);
    for (size_t i = 0; i < nr && rc == 0; i++)
        rc = db_volume_each(db, regions[i].name, NULL, recover_creating, app);
    core_db_put(app, db);
    return rc;
}
