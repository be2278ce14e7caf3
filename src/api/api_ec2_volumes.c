/*
 * api_ec2_volumes.c — EC2's volume and snapshot operations: CreateVolume, DescribeVolumes,
 * DeleteVolume, ModifyVolume, DescribeVolumesModifications, CreateSnapshot, DescribeSnapshots,
 * DeleteSnapshot, CopySnapshot and the snapshot attribute calls.  Translation only: the rules
 * live in core.
 */
#include "api/api_int.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct core_caller caller(struct api_call *c)
{
    struct core_caller w = { c->account_id, c->region, c->dry_run };
    return w;
}

/* The Tags list EC2 echoes for tags given at creation. */
static json_t *tags_json(const struct core_tag *tags, size_t n)
{
    json_t *tl = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(tl, json_pack("{s:s, s:s}", "Key", tags[i].key, "Value",
                                            tags[i].value ? tags[i].value : ""));
    return tl;
}

/* ---- volumes ---- */

static json_t *volume_item(struct api_call *c, struct db *db, const struct db_volume *v)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:I, s:[], s:s, s:b, s:b, s:b}", "VolumeId", v->id,
                          "Size", (json_int_t)v->size_gib, "AvailabilityZone", v->zone, "State",
                          v->state, "CreateTime", (json_int_t)v->create_ms, "Attachments",
                          "VolumeType", v->type, "Encrypted", v->encrypted, "MultiAttachEnabled",
                          v->multi_attach, "FastRestored", 0);
    if (!o)
        return NULL;
    json_object_set_new(o, "SnapshotId", json_string(v->snapshot_id));
    if (v->encrypted)
        json_object_set_new(o, "KmsKeyId", json_string(v->kms_key_id));
    if (v->iops)
        json_object_set_new(o, "Iops", json_integer(v->iops));
    if (v->throughput)
        json_object_set_new(o, "Throughput", json_integer(v->throughput));
    if (v->init_rate)
        json_object_set_new(o, "VolumeInitializationRate", json_integer(v->init_rate));
    json_object_set_new(o, "Operator", json_pack("{s:b}", "Managed", 0));
    struct db_attachment a;
    if (db && strcmp(v->state, "in-use") == 0 && db_attachment_of_volume(db, v->id, &a) == 0)
        json_array_append_new(
            json_object_get(o, "Attachments"),
            json_pack("{s:I, s:s, s:s, s:s, s:s, s:b}", "AttachTime", (json_int_t)a.attach_ms,
                      "Device", a.device_name, "InstanceId", a.instance_id, "State", a.state,
                      "VolumeId", a.volume_id, "DeleteOnTermination", a.delete_on_termination));
    if (db)
        api_add_tags(c, db, o, v->id);
    return o;
}

int ec2_create_volume(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_volume_spec spec = { 0 };
    spec.zone = jstr(in, "AvailabilityZone");
    spec.zone_id = jstr(in, "AvailabilityZoneId");
    json_t *v;
    if ((v = json_object_get(in, "Size")))
        spec.size_gib = json_integer_value(v);
    if (v && spec.size_gib <= 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Value (%lld) for parameter size is invalid.", (long long)spec.size_gib);
    spec.type = jstr(in, "VolumeType");
    if ((v = json_object_get(in, "Iops")))
        spec.iops = json_integer_value(v);
    if (v && spec.iops <= 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Value (%lld) for parameter iops is invalid.", (long long)spec.iops);
    if ((v = json_object_get(in, "Throughput")))
        spec.throughput = json_integer_value(v);
    if (v && spec.throughput <= 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Value (%lld) for parameter throughput is invalid.",
                       (long long)spec.throughput);
    spec.snapshot_id = jstr(in, "SnapshotId");
    spec.multi_attach = jbool(in, "MultiAttachEnabled", false);
    if ((v = json_object_get(in, "VolumeInitializationRate")))
        spec.init_rate = json_integer_value(v);
    spec.encrypted = jbool(in, "Encrypted", false);
    spec.kms_key_id = jstr(in, "KmsKeyId");
    spec.client_token = jstr(in, "ClientToken");
    if (json_object_get(in, "OutpostArn"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Outposts are not available in amid");
    if (json_object_get(in, "Operator"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Managed volumes (Operator) are not available in amid");
    struct core_tag *tags;
    size_t ntags;
    int rc = api_tag_specs(c, in, "volume", &tags, &ntags);
    if (rc < 0)
        return rc;
    spec.tags = tags;
    spec.ntags = ntags;
    struct core_caller who = caller(c);
    struct db_volume vol;
    rc = core_volume_create(c->app, &who, &spec, &vol, &c->err);
    if (rc == 0) {
        *ret = volume_item(c, NULL, &vol);
        if (ntags)
            json_object_set_new(*ret, "Tags", tags_json(tags, ntags));
    }
    free(tags);
    return rc;
}

static const struct api_filter_def volume_filters[] = {
    { "attachment.attach-time", "Attachments.AttachTime", API_FILTER_TIME, NULL },
    { "attachment.delete-on-termination", "Attachments.DeleteOnTermination", 0, NULL },
    { "attachment.device", "Attachments.Device", 0, NULL },
    { "attachment.instance-id", "Attachments.InstanceId", 0, NULL },
    { "attachment.status", "Attachments.State", 0, NULL },
    { "availability-zone", "AvailabilityZone", 0, NULL },
    { "availability-zone-id", "AvailabilityZoneId", 0, NULL },
    { "create-time", "CreateTime", API_FILTER_TIME, NULL },
    { "encrypted", "Encrypted", 0, NULL },
    { "fast-restored", "FastRestored", 0, NULL },
    { "multi-attach-enabled", "MultiAttachEnabled", 0, NULL },
    { "operator.managed", "Operator.Managed", 0, NULL },
    { "operator.principal", "Operator.Principal", 0, NULL },
    { "size", "Size", 0, NULL },
    { "snapshot-id", "SnapshotId", 0, NULL },
    { "status", "State", 0, NULL },
    { "volume-id", "VolumeId", 0, NULL },
    { "volume-type", "VolumeType", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct list_ctx {
    struct api_call *c;
    struct db *db;
    json_t *items;
    struct api_filters *f;
    json_t *ids; /* only these, when non-NULL */
    struct core_caller *who;
    json_t *owners, *restorable; /* DescribeSnapshots */
};

static int volume_row(void *vctx, const struct db_volume *v)
{
    struct list_ctx *l = vctx;
    if (!api_wanted(l->ids, v->id))
        return 0;
    json_t *item = volume_item(l->c, l->db, v);
    if (!item)
        return -ENOMEM;
    if (api_filters_match(l->f, item))
        json_array_append(l->items, item);
    json_decref(item);
    return 0;
}

int ec2_describe_volumes(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *ids = json_object_get(in, "VolumeIds");
    if (json_array_size(ids) && json_object_get(in, "MaxResults"))
        return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                       "The parameter volumeSet cannot be used with the parameter maxResults");
    struct core_caller who = caller(c);
    struct list_ctx l = { c,    NULL, json_array(), NULL, json_array_size(ids) ? ids : NULL,
                          &who, NULL, NULL };
    int rc = api_filters_parse(in, volume_filters, true, &l.f, &c->err);
    if (rc == 0) {
        l.db = core_db_get(c->app);
        rc = db_volume_each(l.db, c->region, c->account_id, volume_row, &l);
        core_db_put(c->app, l.db);
        if (rc < 0)
            err_set(&c->err, rc, "InternalError", "cannot list volumes");
    }
    api_filters_free(l.f);
    if (rc == 0 && l.ids) {
        /* Filters may hide a volume asked for by id; only a missing one is an error. */
        json_t *all = json_array();
        struct list_ctx l2 = { c, NULL, all, NULL, l.ids, &who, NULL, NULL };
        l2.db = core_db_get(c->app);
        db_volume_each(l2.db, c->region, c->account_id, volume_row, &l2);
        core_db_put(c->app, l2.db);
        rc = api_ids_found(c, ids, all, "VolumeId", "vol-", "InvalidVolumeID.Malformed",
                           "InvalidVolume.NotFound", "volume");
        json_decref(all);
    }
    if (rc == 0)
        rc = api_page_into(c, in, l.items, "VolumeId", 5, 500, "Volumes", ret);
    json_decref(l.items);
    return rc;
}

int ec2_delete_volume(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_volume_delete(c->app, &who, jstr(in, "VolumeId"), &c->err);
}

int ec2_modify_volume(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_volume_mod m = { 0, NULL, -1, -1, -1 };
    json_t *v;
    if ((v = json_object_get(in, "Size"))) {
        m.size_gib = json_integer_value(v);
        if (m.size_gib <= 0)
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "Value (%lld) for parameter size is invalid.", (long long)m.size_gib);
    }
    m.type = jstr(in, "VolumeType");
    if ((v = json_object_get(in, "Iops")))
        m.iops = json_integer_value(v);
    if ((v = json_object_get(in, "Throughput")))
        m.throughput = json_integer_value(v);
    if ((v = json_object_get(in, "MultiAttachEnabled")))
        m.multi_attach = json_is_true(v);
    struct core_caller who = caller(c);
    char *body;
    int rc = core_volume_modify(c->app, &who, jstr(in, "VolumeId"), &m, &body, &c->err);
    if (rc < 0)
        return rc;
    json_t *mod = json_loads(body, 0, NULL);
    free(body);
    if (!mod)
        return err_set(&c->err, -EIO, "InternalError", "bad modification record");
    *ret = json_pack("{s:o}", "VolumeModification", mod);
    return 0;
}

static const struct api_filter_def volmod_filters[] = {
    { "modification-state", "ModificationState", 0, NULL },
    { "original-iops", "OriginalIops", 0, NULL },
    { "original-size", "OriginalSize", 0, NULL },
    { "original-volume-type", "OriginalVolumeType", 0, NULL },
    { "original-multi-attach-enabled", "OriginalMultiAttachEnabled", 0, NULL },
    { "start-time", "StartTime", API_FILTER_TIME, NULL },
    { "target-iops", "TargetIops", 0, NULL },
    { "target-size", "TargetSize", 0, NULL },
    { "target-volume-type", "TargetVolumeType", 0, NULL },
    { "target-multi-attach-enabled", "TargetMultiAttachEnabled", 0, NULL },
    { "volume-id", "VolumeId", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct mods_ctx {
    json_t *items;
    struct api_filters *f;
    json_t *ids;
};

static int mod_item(void *vctx, const char *body)
{
    struct mods_ctx *m = vctx;
    json_t *o = json_loads(body, 0, NULL);
    if (!o)
        return 0;
    char pos[64];
    snprintf(pos, sizeof(pos), "%s/%020lld", jstr(o, "VolumeId"),
             (long long)json_integer_value(json_object_get(o, "StartTime")));
    json_object_set_new(o, "_pos", json_string(pos));
    if (api_wanted(m->ids, jstr(o, "VolumeId")) && api_filters_match(m->f, o))
        json_array_append(m->items, o);
    json_decref(o);
    return 0;
}

int ec2_describe_volumes_modifications(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *ids = json_object_get(in, "VolumeIds");
    struct core_caller who = caller(c);
    for (size_t i = 0; i < json_array_size(ids); i++) {
        struct db_volume v;
        int rc =
            core_volume_get(c->app, &who, json_string_value(json_array_get(ids, i)), &v, &c->err);
        if (rc < 0)
            return rc;
    }
    struct mods_ctx m = { json_array(), NULL, json_array_size(ids) ? ids : NULL };
    int rc = api_filters_parse(in, volmod_filters, false, &m.f, &c->err);
    if (rc == 0)
        rc = core_volume_mods_each(c->app, &who, NULL, mod_item, &m);
    api_filters_free(m.f);
    if (rc == 0) {
        api_sort_items(m.items, "_pos");
        struct list_ctx l = { c, NULL, m.items, NULL, NULL, &who, NULL, NULL };
        rc = api_page_into(c, in, l.items, "_pos", 1, 500, "VolumesModifications", ret);
    }
    json_decref(m.items);
    return rc;
}

/* ---- snapshots ---- */

static json_t *snapshot_item(struct api_call *c, struct db *db, const struct db_snapshot *s)
{
    char progress[8];
    snprintf(progress, sizeof(progress), "%lld%%", (long long)s->progress);
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:I, s:b, s:s}", "SnapshotId", s->id,
                  "VolumeId", s->volume_id[0] ? s->volume_id : "vol-ffffffff", "State", s->state,
                  "StartTime", (json_int_t)s->start_ms, "Progress", progress, "OwnerId", s->owner,
                  "Description", s->description, "VolumeSize", (json_int_t)s->volume_size_gib,
                  "Encrypted", s->encrypted, "StorageTier", "standard");
    if (!o)
        return NULL;
    if (s->state_message[0])
        json_object_set_new(o, "StateMessage", json_string(s->state_message));
    if (s->encrypted)
        json_object_set_new(o, "KmsKeyId", json_string(s->kms_key_id));
    if (strcmp(s->state, "completed") == 0) {
        json_object_set_new(o, "CompletionTime", json_integer(s->complete_ms));
        json_object_set_new(o, "FullSnapshotSizeInBytes", json_integer(s->full_bytes));
    }
    if (strcmp(s->source, "copy") == 0)
        json_object_set_new(o, "TransferType", json_string("standard"));
    if (db) /* the caller's own tags, whoever owns the snapshot */
        api_add_tags(c, db, o, s->id);
    return o;
}

int ec2_create_snapshot(struct api_call *c, json_t *in, json_t **ret)
{
    if (json_object_get(in, "OutpostArn") || json_object_get(in, "Location"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Snapshots on Outposts or in Local Zones are not available in amid");
    struct core_tag *tags;
    size_t ntags;
    int rc = api_tag_specs(c, in, "snapshot", &tags, &ntags);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    rc = core_snapshot_create(c->app, &who, jstr(in, "VolumeId"), jstr(in, "Description"), tags,
                              ntags, &s, &c->err);
    if (rc == 0) {
        *ret = snapshot_item(c, NULL, &s);
        if (ntags)
            json_object_set_new(*ret, "Tags", tags_json(tags, ntags));
    }
    free(tags);
    return rc;
}

static const struct api_filter_def snapshot_filters[] = {
    { "description", "Description", 0, NULL },
    { "encrypted", "Encrypted", 0, NULL },
    { "owner-alias", "OwnerAlias", 0, NULL },
    { "owner-id", "OwnerId", 0, NULL },
    { "progress", "Progress", 0, NULL },
    { "snapshot-id", "SnapshotId", 0, NULL },
    { "start-time", "StartTime", API_FILTER_TIME, NULL },
    { "status", "State", 0, NULL },
    { "storage-tier", "StorageTier", 0, NULL },
    { "transfer-type", "TransferType", 0, NULL },
    { "volume-id", "VolumeId", 0, NULL },
    { "volume-size", "VolumeSize", 0, NULL },
    { NULL, NULL, 0, NULL },
};

/* Whether an owner matches one of DescribeSnapshots' Owners values. */
static bool owner_matches(json_t *owners, const char *owner, const char *self)
{
    for (size_t i = 0; i < json_array_size(owners); i++) {
        const char *o = json_string_value(json_array_get(owners, i));
        if (strcmp(o, "self") == 0 ? strcmp(owner, self) == 0 : strcmp(o, owner) == 0)
            return true;
    }
    return false;
}

static bool restorable_by(struct api_call *c, json_t *users, const struct db_snapshot *s)
{
    for (size_t i = 0; i < json_array_size(users); i++) {
        const char *u = json_string_value(json_array_get(users, i));
        const char *acct = strcmp(u, "self") == 0 ? c->account_id : u;
        bool mine = strcmp(s->owner, c->account_id) == 0;
        if (strcmp(acct, "all") == 0) {
            if (core_snapshot_granted(c->app, s->id, "all", false))
                return true;
        } else if (strcmp(acct, c->account_id) == 0) {
            if (mine || core_snapshot_granted(c->app, s->id, acct, false))
                return true;
        } else if (mine && core_snapshot_granted(c->app, s->id, acct, false)) {
            /* Another account's id: only the caller's own snapshots ("if you own the
             * snapshots"), whose permissions only their owner may read. */
            return true;
        }
    }
    return false;
}

static int snapshot_row(void *vctx, const struct db_snapshot *s)
{
    struct list_ctx *l = vctx;
    if (!api_wanted(l->ids, s->id))
        return 0;
    if (json_array_size(l->owners) && !owner_matches(l->owners, s->owner, l->c->account_id))
        return 0;
    if (json_array_size(l->restorable) && !restorable_by(l->c, l->restorable, s))
        return 0;
    json_t *item = snapshot_item(l->c, l->db, s);
    if (!item)
        return -ENOMEM;
    if (api_filters_match(l->f, item))
        json_array_append(l->items, item);
    json_decref(item);
    return 0;
}

int ec2_describe_snapshots(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *ids = json_object_get(in, "SnapshotIds");
    if (json_array_size(ids) && json_object_get(in, "MaxResults"))
        return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                       "The parameter snapshotSet cannot be used with the parameter maxResults");
    json_t *owners = json_object_get(in, "OwnerIds");
    for (size_t i = 0; i < json_array_size(owners); i++) {
        const char *o = json_string_value(json_array_get(owners, i));
        bool ok = strcmp(o, "self") == 0 || strcmp(o, "amazon") == 0 ||
                  strcmp(o, "aws-marketplace") == 0 || strcmp(o, "aws-backup-vault") == 0 ||
                  (strlen(o) == 12 && strspn(o, "0123456789") == 12);
        if (!ok)
            return err_set(&c->err, -EINVAL, "InvalidUserID.Malformed",
                           "Invalid user id: \"%.64s\"", o);
    }
    json_t *restorable = json_object_get(in, "RestorableByUserIds");
    for (size_t i = 0; i < json_array_size(restorable); i++) {
        const char *u = json_string_value(json_array_get(restorable, i));
        if (strcmp(u, "self") != 0 && strcmp(u, "all") != 0 &&
            !(strlen(u) == 12 && strspn(u, "0123456789") == 12))
            return err_set(&c->err, -EINVAL, "InvalidUserID.Malformed",
                           "Invalid user id: \"%.64s\"", u);
    }
    struct core_caller who = caller(c);
    struct list_ctx l = { c,    NULL,   json_array(), NULL, json_array_size(ids) ? ids : NULL,
                          &who, owners, restorable };
    int rc = api_filters_parse(in, snapshot_filters, true, &l.f, &c->err);
    if (rc == 0) {
        l.db = core_db_get(c->app);
        rc = db_snapshot_each(l.db, c->region, NULL, c->account_id, snapshot_row, &l);
        core_db_put(c->app, l.db);
        if (rc < 0)
            err_set(&c->err, rc, "InternalError", "cannot list snapshots");
    }
    api_filters_free(l.f);
    if (rc == 0 && l.ids) {
        for (size_t i = 0; i < json_array_size(ids) && rc == 0; i++) {
            struct db_snapshot s;
            rc = core_snapshot_get(c->app, &who, json_string_value(json_array_get(ids, i)),
                                   CORE_VISIBLE, &s, &c->err);
        }
    }
    if (rc == 0)
        rc = api_page_into(c, in, l.items, "SnapshotId", 5, 1000, "Snapshots", ret);
    json_decref(l.items);
    return rc;
}

int ec2_delete_snapshot(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_snapshot_delete(c->app, &who, jstr(in, "SnapshotId"), &c->err);
}

int ec2_copy_snapshot(struct api_call *c, json_t *in, json_t **ret)
{
    const char *dest = jstr(in, "DestinationRegion");
    if (dest && strcmp(dest, c->region) != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "DestinationRegion %.64s is not the region this request was signed for "
                       "(%s)",
                       dest, c->region);
    if (jstr(in, "KmsKeyId") && !jbool(in, "Encrypted", false))
        return err_set(&c->err, -EINVAL, "InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.");
    if (json_object_get(in, "DestinationOutpostArn") ||
        json_object_get(in, "DestinationAvailabilityZone"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Copies to Outposts or Local Zones are not available in amid");
    json_t *cdm = json_object_get(in, "CompletionDurationMinutes");
    if (cdm && (json_integer_value(cdm) < 15 || json_integer_value(cdm) > 2880))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "CompletionDurationMinutes must be between 15 and 2880");
    const char *psu = jstr(in, "PresignedUrl");
    if (psu) {
        /* Proof, signed by the caller's account, that it asked for this copy. */
        int rc = api_presigned_check(c, psu, "CopySnapshot", "SourceSnapshotId",
                                     jstr(in, "SourceSnapshotId"));
        if (rc < 0)
            return rc;
    }
    struct core_tag *tags;
    size_t ntags;
    int rc = api_tag_specs(c, in, "snapshot", &tags, &ntags);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_snapshot s;
    rc = core_snapshot_copy(c->app, &who, jstr(in, "SourceRegion"), jstr(in, "SourceSnapshotId"),
                            jstr(in, "Description"), jbool(in, "Encrypted", false),
                            jstr(in, "KmsKeyId"), tags, ntags, &s, &c->err);
    if (rc == 0) {
        *ret = json_pack("{s:s}", "SnapshotId", s.id);
        if (ntags)
            json_object_set_new(*ret, "Tags", tags_json(tags, ntags));
    }
    free(tags);
    return rc;
}

static int perm_item(void *vctx, const char *grantee)
{
    json_t *list = vctx;
    if (strcmp(grantee, "all") == 0)
        return json_array_append_new(list, json_pack("{s:s}", "Group", "all"));
    return json_array_append_new(list, json_pack("{s:s}", "UserId", grantee));
}

int ec2_describe_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    const char *id = jstr(in, "SnapshotId");
    const char *attr = jstr(in, "Attribute");
    struct core_caller who = caller(c);
    json_t *list = json_array();
    int rc = core_snapshot_permission_each(c->app, &who, id, perm_item, list, &c->err);
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    if (strcmp(attr, "createVolumePermission") == 0) {
        *ret = json_pack("{s:s, s:o}", "SnapshotId", id, "CreateVolumePermissions", list);
    } else {
        json_decref(list);
        *ret = json_pack("{s:s, s:[]}", "SnapshotId", id, "ProductCodes");
    }
    return 0;
}

/* Collects grantees from [{UserId}|{Group}] into `out`. */
static int grantees(struct api_call *c, json_t *list, const char **out, size_t *n)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *p = json_array_get(list, i);
        const char *u = jstr(p, "UserId"), *g = jstr(p, "Group");
        if ((u && g) || (!u && !g))
            return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                           "Each permission names either a UserId or the group 'all'");
        out[(*n)++] = u ? u : g;
    }
    return 0;
}

int ec2_modify_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    const char *attr = jstr(in, "Attribute");
    if (attr && strcmp(attr, "createVolumePermission") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The attribute %s cannot be modified", attr);
    json_t *cvp = json_object_get(in, "CreateVolumePermission");
    json_t *users = json_object_get(in, "UserIds"), *groups = json_object_get(in, "GroupNames");
    const char *optype = jstr(in, "OperationType");
    size_t cap = json_array_size(json_object_get(cvp, "Add")) +
                 json_array_size(json_object_get(cvp, "Remove")) + json_array_size(users) +
                 json_array_size(groups) + 1;
    const char **add = calloc(cap, sizeof(*add)), **rem = calloc(cap, sizeof(*rem));
    size_t nadd = 0, nrem = 0;
    int rc = add && rem ? 0 : err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    if (rc == 0 && cvp) {
        rc = grantees(c, json_object_get(cvp, "Add"), add, &nadd);
        if (rc == 0)
            rc = grantees(c, json_object_get(cvp, "Remove"), rem, &nrem);
    }
    if (rc == 0 && (json_array_size(users) || json_array_size(groups))) {
        if (!optype)
            rc = err_set(&c->err, -EINVAL, "MissingParameter",
                         "The request must contain the parameter OperationType");
        const char **dst = optype && strcmp(optype, "add") == 0 ? add : rem;
        size_t *dn = dst == add ? &nadd : &nrem;
        for (size_t i = 0; rc == 0 && i < json_array_size(users); i++)
            dst[(*dn)++] = json_string_value(json_array_get(users, i));
        for (size_t i = 0; rc == 0 && i < json_array_size(groups); i++) {
            const char *g = json_string_value(json_array_get(groups, i));
            /* As CreateVolumePermission's Group, whose only value is "all". */
            if (strcmp(g, "all") != 0)
                rc = err_set(&c->err, -EINVAL, "InvalidParameterValue",
                             "Unknown user group %.32s (only 'all')", g);
            dst[(*dn)++] = g;
        }
    }
    if (rc == 0 && nadd + nrem == 0)
        rc = err_set(&c->err, -EINVAL, "MissingParameter",
                     "The request must name permissions to add or remove");
    if (rc == 0) {
        struct core_caller who = caller(c);
        rc = core_snapshot_permission(c->app, &who, jstr(in, "SnapshotId"), add, nadd, rem, nrem,
                                      &c->err);
    }
    free(add);
    free(rem);
    return rc;
}

int ec2_reset_snapshot_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    const char *attr = jstr(in, "Attribute");
    if (strcmp(attr, "createVolumePermission") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The attribute %s cannot be reset", attr);
    struct core_caller who = caller(c);
    return core_snapshot_permission_reset(c->app, &who, jstr(in, "SnapshotId"), &c->err);
}
