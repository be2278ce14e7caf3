/*
 * api_ec2_images.c — the AMI operations: RegisterImage, DescribeImages (owners, executable
 * users, every filter, deprecated and disabled images, paging), the attribute calls, launch
 * permissions, image block public access, deprecation, deregistration protection, disabling and
 * deregistering.  The rules live in core_images.c.
 *
 * DescribeImages may walk thousands of rows per call: the filters on plain columns (image-id,
 * name, state) narrow the walk in SQL, rows failing a filter on a plain column are dropped before
 * any output tree is built (api_filters_check), the mappings and tags of the rows kept are read a
 * chunk at a time (a few queries, not two per image), and keyset paging stops the walk as soon as
 * a page is full.  The API's filters (api_filters_check on the row, api_filters_match on the
 * item) stay the judges.
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

/* ---- the Image shape ---- */

/* Items are built with their members in the model's order (Image, BlockDeviceMapping,
 * EbsBlockDevice), which lets the XML writer walk them without a lookup per member. */

/* String members whose value is the same in most items of a listing. */
enum {
    R_PLATFORM,
    R_USAGE,
    R_HYPERVISOR,
    R_ALIAS,
    R_ROOT_DEVICE,
    R_ROOT_TYPE,
    R_VIRTUALIZATION,
    R_PROTECTION,
    R_STATE,
    R_OWNER,
    R_ARCHITECTURE,
    R_TYPE,
    R_DEVICE,
    R_SNAPSHOT,
    R_VOLUME_TYPE,
    R_COUNT
};

/* What the items of one DescribeImages call share: for each member of the enum above, the last
 * value made, handed to the next item too when its value is the same (one reference more rather
 * than a new string), and the empty ProductCodes list. */
struct image_builder {
    json_t *last[R_COUNT];
    json_t *product_codes;
};

static void image_builder_free(struct image_builder *ib)
{
    for (size_t i = 0; i < R_COUNT; i++)
        json_decref(ib->last[i]);
    json_decref(ib->product_codes);
}

/* A new reference to a string holding `s`: the builder's last one for `member` when equal (a new
 * string without a builder). */
static json_t *repeated(struct image_builder *ib, int member, const char *s)
{
    json_t *v = ib ? ib->last[member] : NULL;
    if (v && strcmp(json_string_value(v), s) == 0)
        return json_incref(v);
    v = json_string(s);
    if (ib && v) {
        json_decref(ib->last[member]);
        ib->last[member] = json_incref(v);
    }
    return v;
}

/* Member names are literals: valid UTF-8 needs no checking. */
static void put(json_t *o, const char *key, json_t *v)
{
    json_object_set_new_nocheck(o, key, v);
}

static void put_string(json_t *o, const char *key, const char *s)
{
    put(o, key, json_string(s));
}

/* A BlockDeviceMapping item (`ib` may be NULL). */
static json_t *bdm_item(struct image_builder *ib, const struct db_bdm *b)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    bool none = strcmp(b->kind, "none") == 0, ephemeral = strcmp(b->kind, "ephemeral") == 0;
    if (!none && !ephemeral) {
        json_t *ebs = json_object();
        put(ebs, "DeleteOnTermination", json_boolean(b->delete_on_termination));
        if (b->iops)
            put(ebs, "Iops", json_integer(b->iops));
        if (b->snapshot_id[0])
            put(ebs, "SnapshotId", repeated(ib, R_SNAPSHOT, b->snapshot_id));
        put(ebs, "VolumeSize", json_integer(b->volume_size));
        put(ebs, "VolumeType", repeated(ib, R_VOLUME_TYPE, b->volume_type));
        if (b->kms_key_id[0])
            put_string(ebs, "KmsKeyId", b->kms_key_id);
        if (b->throughput)
            put(ebs, "Throughput", json_integer(b->throughput));
        put(ebs, "Encrypted", json_boolean(b->encrypted));
        put(o, "Ebs", ebs);
    }
    if (none)
        put_string(o, "NoDevice", "");
    put(o, "DeviceName", repeated(ib, R_DEVICE, b->device_name));
    if (ephemeral)
        put_string(o, "VirtualName", b->virtual_name);
    return o;
}

static int bdm_json(void *vctx, const struct db_bdm *b)
{
    return json_array_append_new(vctx, bdm_item(NULL, b));
}

static json_t *iso(int64_t ms)
{
    char t[32];
    time_format_iso(ms, t);
    return json_string(t);
}

/* The Image item of a row with its mappings and its tags (a list, or NULL for none), whose
 * references it takes. */
static json_t *image_item(struct api_call *c, struct image_builder *ib, const struct db_image *im,
                          const char *alias, json_t *bdms, json_t *tags)
{
    json_t *o = json_object();
    if (!o) {
        json_decref(bdms);
        json_decref(tags);
        return NULL;
    }
    put(o, "PlatformDetails", repeated(ib, R_PLATFORM, "Linux/UNIX"));
    put(o, "UsageOperation", repeated(ib, R_USAGE, "RunInstances"));
    put(o, "BlockDeviceMappings", bdms);
    if (im->description[0])
        put_string(o, "Description", im->description);
    put(o, "EnaSupport", json_boolean(im->ena_support));
    put(o, "Hypervisor", repeated(ib, R_HYPERVISOR, "xen"));
    if (alias && *alias)
        put(o, "ImageOwnerAlias", repeated(ib, R_ALIAS, alias));
    put_string(o, "Name", im->name);
    put(o, "RootDeviceName", repeated(ib, R_ROOT_DEVICE, im->root_device_name));
    put(o, "RootDeviceType", repeated(ib, R_ROOT_TYPE, "ebs"));
    if (im->sriov_net_support[0])
        put_string(o, "SriovNetSupport", im->sriov_net_support);
    if (im->state_reason_code[0])
        put(o, "StateReason",
            json_pack("{s:s, s:s}", "Code", im->state_reason_code, "Message",
                      im->state_reason_message));
    if (tags)
        put(o, "Tags", tags);
    put(o, "VirtualizationType", repeated(ib, R_VIRTUALIZATION, im->virtualization_type));
    if (im->boot_mode[0])
        put_string(o, "BootMode", im->boot_mode);
    if (im->tpm_support[0])
        put_string(o, "TpmSupport", im->tpm_support);
    if (im->deprecation_ms) {
        /* EC2 writes the deprecation time without milliseconds. */
        char t[32];
        time_format_iso(im->deprecation_ms, t);
        snprintf(t + 19, sizeof(t) - 19, "Z");
        put_string(o, "DeprecationTime", t);
    }
    if (im->imds_support[0])
        put_string(o, "ImdsSupport", im->imds_support);
    if (im->source_instance_id[0])
        put_string(o, "SourceInstanceId", im->source_instance_id);
    char prot[64];
    core_image_protection_text(c->app, im, prot, sizeof(prot));
    put(o, "DeregistrationProtection", repeated(ib, R_PROTECTION, prot));
    if (im->last_launched_ms)
        put(o, "LastLaunchedTime", iso(im->last_launched_ms));
    if (im->source_image_id[0]) {
        put_string(o, "SourceImageId", im->source_image_id);
        put_string(o, "SourceImageRegion", im->source_region);
    }
    put_string(o, "ImageId", im->id);
    /* "owner/name", the owner by its alias when it has one (db_account.alias: under 72 bytes) */
    char location[128 + sizeof(im->name)];
    const char *who = alias && *alias ? alias : im->owner;
    size_t nw = strnlen(who, 127), nn = strlen(im->name);
    memcpy(location, who, nw);
    location[nw] = '/';
    memcpy(location + nw + 1, im->name, nn + 1);
    put(o, "ImageLocation", json_stringn(location, nw + 1 + nn));
    put(o, "State", repeated(ib, R_STATE, im->state));
    put(o, "OwnerId", repeated(ib, R_OWNER, im->owner));
    put(o, "CreationDate", iso(im->creation_ms));
    put(o, "Public", json_boolean(im->public));
    if (!ib->product_codes)
        ib->product_codes = json_array();
    put(o, "ProductCodes", json_incref(ib->product_codes));
    put(o, "Architecture", repeated(ib, R_ARCHITECTURE, im->architecture));
    put(o, "ImageType", repeated(ib, R_TYPE, "machine"));
    return o;
}

/* ---- RegisterImage ---- */

/* Reads BlockDeviceMappings into db_bdm structs (caller frees). */
static int read_bdms(struct api_call *c, json_t *list, struct db_bdm **ret, size_t *ret_n)
{
    size_t n = json_array_size(list);
    struct db_bdm *v = calloc(n + 1, sizeof(*v));
    if (!v)
        return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(list, i);
        struct db_bdm *b = &v[i];
        const char *dev = jstr(m, "DeviceName");
        if (!dev) {
            free(v);
            return err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                           "Every block device mapping needs a DeviceName");
        }
        snprintf(b->device_name, sizeof(b->device_name), "%s", dev);
        json_t *ebs = json_object_get(m, "Ebs");
        const char *vn = jstr(m, "VirtualName");
        bool nodev = json_object_get(m, "NoDevice") != NULL;
        if ((ebs != NULL) + (vn != NULL) + nodev != 1) {
            free(v);
            return err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                           "The mapping for %.64s must have exactly one of Ebs, VirtualName and "
                           "NoDevice",
                           dev);
        }
        b->delete_on_termination = true;
        if (nodev) {
            snprintf(b->kind, sizeof(b->kind), "none");
        } else if (vn) {
            snprintf(b->kind, sizeof(b->kind), "ephemeral");
            snprintf(b->virtual_name, sizeof(b->virtual_name), "%s", vn);
        } else {
            snprintf(b->kind, sizeof(b->kind), "ebs");
            const char *sid = jstr(ebs, "SnapshotId"), *vt = jstr(ebs, "VolumeType");
            snprintf(b->snapshot_id, sizeof(b->snapshot_id), "%s", sid ? sid : "");
            snprintf(b->volume_type, sizeof(b->volume_type), "%s", vt ? vt : "");
            json_t *x;
            if ((x = json_object_get(ebs, "VolumeSize")))
                b->volume_size = json_integer_value(x);
            if (x && b->volume_size <= 0) {
                free(v);
                return err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                               "VolumeSize must be positive");
            }
            if ((x = json_object_get(ebs, "Iops")))
                b->iops = json_integer_value(x);
            if ((x = json_object_get(ebs, "Throughput")))
                b->throughput = json_integer_value(x);
            b->delete_on_termination = jbool(ebs, "DeleteOnTermination", true);
            b->encrypted = jbool(ebs, "Encrypted", false);
            if (jstr(ebs, "KmsKeyId") && !b->encrypted) {
                free(v);
                return err_set(&c->err, -EINVAL, "InvalidParameterDependency",
                               "KmsKeyId requires Encrypted");
            }
            const char *kms = jstr(ebs, "KmsKeyId");
            snprintf(b->kms_key_id, sizeof(b->kms_key_id), "%s", kms ? kms : "");
            if (jstr(ebs, "OutpostArn") || jstr(ebs, "AvailabilityZone") ||
                jstr(ebs, "AvailabilityZoneId") || json_object_get(ebs, "EbsCardIndex") ||
                json_object_get(ebs, "VolumeInitializationRate")) {
                free(v);
                return err_set(&c->err, -EINVAL, "InvalidBlockDeviceMapping",
                               "The mapping for %.64s has a parameter images cannot carry", dev);
            }
        }
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int ec2_register_image(struct api_call *c, json_t *in, json_t **ret)
{
    static const char *const refused[] = { "ImageLocation", "BillingProducts", "KernelId",
                                           "RamdiskId", "UefiData" };
    for (size_t i = 0; i < ARRAY_SIZE(refused); i++)
        if (json_object_get(in, refused[i]))
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "%s is not supported: amid images are EBS-backed hvm images",
                           refused[i]);
    struct core_image_spec spec = { 0 };
    spec.name = jstr(in, "Name");
    spec.description = jstr(in, "Description");
    spec.architecture = jstr(in, "Architecture");
    spec.root_device_name = jstr(in, "RootDeviceName");
    spec.virtualization_type = jstr(in, "VirtualizationType");
    spec.boot_mode = jstr(in, "BootMode");
    json_t *ena = json_object_get(in, "EnaSupport");
    spec.ena_support = ena ? json_is_true(ena) : -1;
    spec.sriov_net_support = jstr(in, "SriovNetSupport");
    spec.imds_support = jstr(in, "ImdsSupport");
    spec.tpm_support = jstr(in, "TpmSupport");
    int rc = read_bdms(c, json_object_get(in, "BlockDeviceMappings"), &spec.bdms, &spec.nbdms);
    if (rc < 0)
        return rc;
    struct core_tag *tags;
    rc = api_tag_specs(c, in, "image", &tags, &spec.ntags);
    if (rc < 0) {
        free(spec.bdms);
        return rc;
    }
    spec.tags = tags;
    struct core_caller who = caller(c);
    char id[32];
    rc = core_image_register(c->app, &who, &spec, id, &c->err);
    free(spec.bdms);
    free(tags);
    if (rc == 0)
        *ret = json_pack("{s:s}", "ImageId", id);
    return rc;
}

int ec2_copy_image(struct api_call *c, json_t *in, json_t **ret)
{
    if (json_object_get(in, "DestinationOutpostArn") ||
        json_object_get(in, "DestinationAvailabilityZone") ||
        json_object_get(in, "DestinationAvailabilityZoneId"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Copies to Outposts or Local Zones are not available in amid");
    json_t *cdm = json_object_get(in, "SnapshotCopyCompletionDurationMinutes");
    if (cdm && (json_integer_value(cdm) < 15 || json_integer_value(cdm) > 2880))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "SnapshotCopyCompletionDurationMinutes must be between 15 and 2880");
    if (jstr(in, "KmsKeyId") && !jbool(in, "Encrypted", false))
        return err_set(&c->err, -EINVAL, "InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.");
    struct core_tag *tags[2] = { NULL, NULL };
    size_t ntags[2] = { 0, 0 };
    static const char *const types[] = { "image", "snapshot" };
    int rc = api_tag_specs_multi(c, in, types, 2, tags, ntags);
    if (rc < 0)
        return rc;
    struct core_image_copy_req req = {
        .source_region = jstr(in, "SourceRegion"),
        .source_image_id = jstr(in, "SourceImageId"),
        .name = jstr(in, "Name"),
        .description = jstr(in, "Description"),
        .client_token = jstr(in, "ClientToken"),
        .encrypted = jbool(in, "Encrypted", false),
        .kms_key_id = jstr(in, "KmsKeyId"),
        .copy_image_tags = jbool(in, "CopyImageTags", false),
        .image_tags = tags[0],
        .nimage_tags = ntags[0],
        .snapshot_tags = tags[1],
        .nsnapshot_tags = ntags[1],
    };
    struct core_caller who = caller(c);
    char id[32];
    rc = core_image_copy(c->app, &who, &req, id, &c->err);
    free(tags[0]);
    free(tags[1]);
    if (rc == 0)
        *ret = json_pack("{s:s}", "ImageId", id);
    return rc;
}

/* ---- DescribeImages ---- */

static const struct api_filter_def image_filters[] = {
    { "architecture", "Architecture", 0, NULL },
    { "block-device-mapping.delete-on-termination", "BlockDeviceMappings.Ebs.DeleteOnTermination",
      0, NULL },
    { "block-device-mapping.device-name", "BlockDeviceMappings.DeviceName", 0, NULL },
    { "block-device-mapping.snapshot-id", "BlockDeviceMappings.Ebs.SnapshotId", 0, NULL },
    { "block-device-mapping.volume-size", "BlockDeviceMappings.Ebs.VolumeSize", 0, NULL },
    { "block-device-mapping.volume-type", "BlockDeviceMappings.Ebs.VolumeType", 0, NULL },
    { "block-device-mapping.encrypted", "BlockDeviceMappings.Ebs.Encrypted", 0, NULL },
    { "creation-date", "CreationDate", 0, NULL },
    { "deprecation-time", "DeprecationTime", 0, NULL },
    { "description", "Description", 0, NULL },
    { "ena-support", "EnaSupport", 0, NULL },
    { "free-tier-eligible", "FreeTierEligible", 0, NULL },
    { "hypervisor", "Hypervisor", 0, NULL },
    { "image-allowed", "ImageAllowed", 0, NULL },
    { "image-id", "ImageId", 0, NULL },
    { "image-type", "ImageType", 0, NULL },
    { "is-public", "Public", 0, NULL },
    { "kernel-id", "KernelId", 0, NULL },
    { "manifest-location", "ImageLocation", 0, NULL },
    { "name", "Name", 0, NULL },
    { "owner-alias", "ImageOwnerAlias", 0, NULL },
    { "owner-id", "OwnerId", 0, NULL },
    { "platform", "Platform", 0, NULL },
    { "platform-details", "PlatformDetails", 0, NULL },
    { "product-code", "ProductCodes.ProductCodeId", 0, NULL },
    { "product-code.type", "ProductCodes.ProductCodeType", 0, NULL },
    { "ramdisk-id", "RamdiskId", 0, NULL },
    { "root-device-name", "RootDeviceName", 0, NULL },
    { "root-device-type", "RootDeviceType", 0, NULL },
    { "source-image-id", "SourceImageId", 0, NULL },
    { "source-image-region", "SourceImageRegion", 0, NULL },
    { "source-instance-id", "SourceInstanceId", 0, NULL },
    { "state", "State", 0, NULL },
    { "state-reason-code", "StateReason.Code", 0, NULL },
    { "state-reason-message", "StateReason.Message", 0, NULL },
    { "sriov-net-support", "SriovNetSupport", 0, NULL },
    { "usage-operation", "UsageOperation", 0, NULL },
    { "virtualization-type", "VirtualizationType", 0, NULL },
    { NULL, NULL, 0, NULL },
};

/* Rows a DescribeImages walk holds at once: its SQL limit, and the most rows kept before their
 * mappings and tags are read (one query each for all of them, not one per image). */
#define DESCRIBE_CHUNK 128

/* A row that passed row_passes, waiting for its mappings and tags to become an item. */
struct pending {
    struct db_image im;
    json_t *bdms; /* BlockDeviceMappings */
    json_t *tags; /* Tags, NULL while it has none */
};

struct describe_ctx {
    struct api_call *c;
    struct api_filters *f;
    json_t *items;
    int64_t limit; /* stop after this many (+1 to know there is more), -1: all */
    bool more;
    int64_t now;
    bool include_deprecated, include_disabled, by_id;
    json_t *owners;     /* account ids (resolved), or NULL */
    json_t *executable; /* "self", "all" or account ids, or NULL */
    char alias_owner[16];
    char alias[72];
    struct pending *pend;    /* the chunk, of `cap` rows */
    struct pending **sorted; /* the chunk by id, for the batched reads */
    size_t npend, cap;
    size_t want;     /* the walk stops when the chunk holds this many */
    size_t nread;    /* rows the walk gave */
    char cursor[40]; /* id of the last row the walk gave (at least as long as db_image.id) */
    struct image_builder ib;
};

static bool executable_by(struct describe_ctx *d, const struct db_image *im)
{
    for (size_t i = 0; i < json_array_size(d->executable); i++) {
        const char *u = json_string_value(json_array_get(d->executable, i));
        if (strcmp(u, "all") == 0) {
            if (im->public)
                return true;
            continue;
        }
        const char *acct = strcmp(u, "self") == 0 ? d->c->account_id : u;
        bool self = strcmp(acct, d->c->account_id) == 0;
        if (strcmp(im->owner, acct) == 0 && self)
            return true;
        /* Launch permissions are their owner's to read: another account's id matches only the
         * caller's own images shared with it. */
        if ((self || strcmp(im->owner, d->c->account_id) == 0) &&
            core_image_permission_granted(d->c->app, im->id, acct))
            return true;
    }
    return false;
}

/* The filters row_passes applies to the very values image_item writes (not description: an empty
 * one is left out of the item, where no pattern matches it). */
static const char *const row_filters[] = { "name",         "image-id",  "owner-id",         "state",
                                           "architecture", "is-public", "root-device-name", NULL };

/* Everything DescribeImages decides from the row alone, before building the item. */
static bool row_passes(struct describe_ctx *d, const struct db_image *im)
{
    bool owner = strcmp(im->owner, d->c->account_id) == 0;
    if (strcmp(im->state, "deregistered") == 0 &&
        (!d->by_id || d->now - im->deregistered_ms > CORE_DEREGISTERED_VISIBLE_MS))
        return false;
    if (strcmp(im->state, "disabled") == 0 && (!owner || (!d->include_disabled && !d->by_id)))
        return false;
    if (im->deprecation_ms && im->deprecation_ms <= d->now && !owner && !d->include_deprecated &&
        !d->by_id)
        return false;
    if (d->owners && !api_in_list(d->owners, im->owner))
        return false;
    if (d->executable && !executable_by(d, im))
        return false;
    struct api_filters *f = d->f;
    return api_filters_check(f, "name", im->name) && api_filters_check(f, "image-id", im->id) &&
           api_filters_check(f, "owner-id", im->owner) &&
           api_filters_check(f, "state", im->state) &&
           api_filters_check(f, "architecture", im->architecture) &&
           api_filters_check(f, "is-public", im->public ? "true" : "false") &&
           api_filters_check(f, "description", im->description) &&
           api_filters_check(f, "root-device-name", im->root_device_name);
}

/* A row of the walk (or an image asked for by id): it joins the chunk when it passes.  Returns 1
 * to stop the walk when the chunk holds `want` rows. */
static int describe_row(void *vctx, const struct db_image *im)
{
    struct describe_ctx *d = vctx;
    d->nread++;
    memcpy(d->cursor, im->id, sizeof(im->id)); /* a string within its array */
    if (!row_passes(d, im))
        return 0;
    struct pending *p = &d->pend[d->npend];
    p->bdms = json_array();
    if (!p->bdms)
        return -ENOMEM;
    p->im = *im;
    p->tags = NULL;
    d->npend++;
    return d->npend >= d->want ? 1 : 0;
}

static int pending_cmp(const void *a, const void *b)
{
    return strcmp((*(struct pending *const *)a)->im.id, (*(struct pending *const *)b)->im.id);
}

static int pending_key_cmp(const void *key, const void *elem)
{
    return strcmp(key, (*(struct pending *const *)elem)->im.id);
}

/* The chunk's row with this id (its ids are unique), or NULL. */
static struct pending *pending_find(struct describe_ctx *d, const char *id)
{
    struct pending **p = bsearch(id, d->sorted, d->npend, sizeof(*d->sorted), pending_key_cmp);
    return p ? *p : NULL;
}

static int bdm_of(void *vctx, const char *image_id, const struct db_bdm *b)
{
    struct describe_ctx *d = vctx;
    struct pending *p = pending_find(d, image_id);
    if (p && json_array_append_new(p->bdms, bdm_item(&d->ib, b)) < 0)
        return -ENOMEM;
    return 0;
}

static int tag_of(void *vctx, const struct db_tag *t)
{
    struct pending *p = pending_find(vctx, t->resource_id);
    if (!p)
        return 0;
    if (!p->tags && !(p->tags = json_array()))
        return -ENOMEM;
    json_t *o = json_pack("{s:s, s:s}", "Key", t->key, "Value", t->value);
    return o ? json_array_append_new(p->tags, o) : -ENOMEM;
}

/* Drops the chunk's rows. */
static void describe_clear(struct describe_ctx *d)
{
    for (size_t i = 0; i < d->npend; i++) {
        json_decref(d->pend[i].bdms);
        json_decref(d->pend[i].tags);
    }
    d->npend = 0;
}

/* Reads the mappings and tags of the chunk's rows (a few queries for all of them), makes their
 * items and keeps those passing every filter, up to the page's limit; empties the chunk. */
static int describe_flush(struct describe_ctx *d, struct db *db)
{
    const char **ids = malloc((d->npend + 1) * sizeof(*ids));
    int rc = ids ? 0 : -ENOMEM;
    for (size_t i = 0; i < d->npend && rc == 0; i++) {
        d->sorted[i] = &d->pend[i];
        ids[i] = d->pend[i].im.id;
    }
    if (rc == 0 && d->npend) {
        qsort(d->sorted, d->npend, sizeof(*d->sorted), pending_cmp);
        rc = db_bdm_each_of(db, ids, d->npend, bdm_of, d);
    }
    /* Tags are per account, as on AWS: each account sees the tags it put on an image, the
     * owner's included, and no other account's. */
    if (rc == 0 && d->npend)
        rc = db_image_tags_each(db, d->c->region, d->c->account_id, ids, d->npend, tag_of, d);
    free(ids);
    for (size_t i = 0; i < d->npend && rc == 0 && !d->more; i++) {
        struct pending *p = &d->pend[i];
        if (strcmp(d->alias_owner, p->im.owner) != 0) {
            snprintf(d->alias_owner, sizeof(d->alias_owner), "%s", p->im.owner);
            core_account_alias(d->c->app, p->im.owner, d->alias, sizeof(d->alias));
        }
        json_t *item = image_item(d->c, &d->ib, &p->im, d->alias, p->bdms, p->tags);
        p->bdms = p->tags = NULL;
        if (!item) {
            rc = -ENOMEM;
        } else if (api_filters_match_rest(d->f, item, row_filters)) {
            if (d->limit >= 0 && (int64_t)json_array_size(d->items) == d->limit)
                d->more = true;
            else
                json_array_append(d->items, item);
        }
        json_decref(item);
    }
    describe_clear(d);
    return rc < 0 ? err_set(&d->c->err, rc, "InternalError", "cannot list images") : 0;
}

/* Walks the images `q` selects after `after`, a chunk at a time, until the page is full (and one
 * more item tells there is more) or the walk ends. */
static int describe_walk(struct describe_ctx *d, struct db_image_query *q, const char *after)
{
    char from[sizeof(d->cursor)];
    snprintf(d->cursor, sizeof(d->cursor), "%s", after);
    q->after = from;
    struct db *db = core_db_get(d->c->app);
    int rc = 0;
    for (;;) {
        size_t want = DESCRIBE_CHUNK;
        if (d->limit >= 0 && (size_t)(d->limit + 1) - json_array_size(d->items) < want)
            want = (size_t)(d->limit + 1) - json_array_size(d->items);
        d->want = q->limit = want;
        d->nread = 0;
        /* The walk moves d->cursor while SQLite reads the id it started after. */
        memcpy(from, d->cursor, sizeof(from));
        rc = db_image_each(db, q, describe_row, d);
        if (rc < 0) {
            err_set(&d->c->err, rc, "InternalError", "cannot list images");
            break;
        }
        /* Fewer rows than asked for: there are no more. */
        bool ended = rc == 0 && d->nread < q->limit;
        rc = describe_flush(d, db);
        if (rc < 0 || ended || d->more)
            break;
    }
    core_db_put(d->c->app, db);
    return rc;
}

int ec2_describe_images(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *ids = json_object_get(in, "ImageIds");
    json_t *mr = json_object_get(in, "MaxResults");
    if (json_array_size(ids) && mr)
        return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                       "The parameter imageIds cannot be used with the parameter maxResults");
    int64_t limit = -1;
    if (mr) {
        limit = json_integer_value(mr);
        if (limit < 5)
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "Value ( %lld ) for parameter maxResults is invalid. Expecting a value "
                           "greater than 5.",
                           (long long)limit);
        if (limit > 1000)
            limit = 1000;
    }
    char after[40] = "";
    const char *tok = jstr(in, "NextToken");
    if (tok && api_token_open(c, tok, after, sizeof(after)) < 0)
        return -EINVAL;
    struct core_caller who = caller(c);
    struct describe_ctx d = {
        .c = c,
        .items = json_array(),
        .limit = limit,
        .now = c->now_ms,
        .include_deprecated = jbool(in, "IncludeDeprecated", false),
        .include_disabled = jbool(in, "IncludeDisabled", false),
        .by_id = json_array_size(ids) > 0,
    };
    /* Room for a page and one more (or a chunk): a db_image is a couple of KiB. */
    d.cap = limit >= 0 && limit + 1 < DESCRIBE_CHUNK ? (size_t)limit + 1 : DESCRIBE_CHUNK;
    d.pend = malloc(d.cap * sizeof(*d.pend));
    d.sorted = malloc(d.cap * sizeof(*d.sorted));
    int rc = d.items && d.pend && d.sorted
                 ? 0
                 : err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    if (rc == 0)
        rc = api_filters_parse(in, image_filters, true, &d.f, &c->err);
    json_t *owners = json_object_get(in, "Owners");
    if (rc == 0 && json_array_size(owners)) {
        d.owners = json_array();
        for (size_t i = 0; i < json_array_size(owners) && rc == 0; i++) {
            const char *o = json_string_value(json_array_get(owners, i));
            char id[16];
            if (core_owner_resolve(c->app, &who, o, id) == 0)
                json_array_append_new(d.owners, json_string(id));
            else if (strcmp(o, "amazon") != 0 && strcmp(o, "aws-marketplace") != 0 &&
                     strcmp(o, "aws-backup-vault") != 0)
                rc = err_set(&c->err, -EINVAL, "InvalidUserID.Malformed",
                             "Invalid user id: \"%.64s\"", o);
        }
    }
    json_t *exe = json_object_get(in, "ExecutableUsers");
    if (rc == 0 && json_array_size(exe)) {
        d.executable = exe;
        for (size_t i = 0; i < json_array_size(exe) && rc == 0; i++) {
            const char *u = json_string_value(json_array_get(exe, i));
            if (strcmp(u, "self") != 0 && strcmp(u, "all") != 0 &&
                !(strlen(u) == 12 && strspn(u, "0123456789") == 12))
                rc = err_set(&c->err, -EINVAL, "InvalidUserID.Malformed",
                             "Invalid user id: \"%.64s\"", u);
        }
    }
    if (rc == 0 && d.by_id) {
        /* Each id must name an image the caller may see. */
        d.want = DESCRIBE_CHUNK;
        for (size_t i = 0; i < json_array_size(ids) && rc == 0; i++) {
            struct db_image im;
            const char *id = json_string_value(json_array_get(ids, i));
            bool again = false; /* an id named twice is described once */
            for (size_t k = 0; k < i && !again; k++)
                again = strcmp(id, json_string_value(json_array_get(ids, k))) == 0;
            rc = core_image_get(c->app, &who, id, CORE_IMAGE_SEE, &im, &c->err);
            if (rc == 0 && !again)
                rc = describe_row(&d, &im);
            if (rc > 0 || (rc == 0 && i + 1 == json_array_size(ids))) {
                struct db *db = core_db_get(c->app);
                rc = describe_flush(&d, db);
                core_db_put(c->app, db);
            }
        }
    } else if (rc == 0) {
        /* Deregistered images only show when asked for by id; the filters on plain columns
         * narrow the walk in SQL (row_passes and api_filters_match still decide). */
        struct db_image_query q = { .region = c->region,
                                    .visible_to = c->account_id,
                                    .live = true };
        /* One owner: walk that owner's index (others' images only when visible). */
        if (json_array_size(d.owners) == 1)
            q.owner = json_string_value(json_array_get(d.owners, 0));
        api_filters_values(d.f, "image-id", q.ids, DB_IMAGE_PATTERNS);
        api_filters_values(d.f, "name", q.names, DB_IMAGE_PATTERNS);
        api_filters_values(d.f, "state", q.states, DB_IMAGE_PATTERNS);
        rc = describe_walk(&d, &q, after);
    }
    describe_clear(&d);
    free(d.pend);
    free(d.sorted);
    image_builder_free(&d.ib);
    api_filters_free(d.f);
    json_decref(d.owners);
    if (rc < 0) {
        json_decref(d.items);
        return rc;
    }
    *ret = json_pack("{s:o}", "Images", d.items);
    if (d.more && json_array_size(d.items)) {
        char *next = api_token_make(
            c, jstr(json_array_get(d.items, json_array_size(d.items) - 1), "ImageId"));
        if (next)
            json_object_set_new(*ret, "NextToken", json_string(next));
        free(next);
    }
    return 0;
}

/* ---- attributes ---- */

static int perm_item(void *vctx, const char *grantee)
{
    json_t *list = vctx;
    if (strcmp(grantee, "all") == 0)
        return json_array_append_new(list, json_pack("{s:s}", "Group", "all"));
    return json_array_append_new(list, json_pack("{s:s}", "UserId", grantee));
}

static json_t *value_of(const char *s)
{
    return json_pack("{s:s}", "Value", s);
}

int ec2_describe_image_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    const char *id = jstr(in, "ImageId"), *attr = jstr(in, "Attribute");
    struct core_caller who = caller(c);
    struct db_image im;
    /* Launch permissions are the owner's to read; the rest is for whoever sees the image. */
    bool owner_only = strcmp(attr, "launchPermission") == 0;
    int rc = core_image_get(c->app, &who, id, owner_only ? CORE_IMAGE_OWNER : CORE_IMAGE_SEE, &im,
                            &c->err);
    if (rc < 0)
        return rc;
    if (c->dry_run)
        return api_dry_run(c);
    json_t *o = json_pack("{s:s}", "ImageId", id);
    if (strcmp(attr, "description") == 0) {
        json_object_set_new(o, "Description", value_of(im.description));
    } else if (strcmp(attr, "launchPermission") == 0) {
        json_t *l = json_array();
        core_image_permission_each(c->app, id, perm_item, l);
        json_object_set_new(o, "LaunchPermissions", l);
    } else if (strcmp(attr, "productCodes") == 0) {
        json_object_set_new(o, "ProductCodes", json_array());
    } else if (strcmp(attr, "blockDeviceMapping") == 0) {
        json_t *l = json_array();
        core_image_bdms(c->app, id, bdm_json, l);
        json_object_set_new(o, "BlockDeviceMappings", l);
    } else if (strcmp(attr, "sriovNetSupport") == 0) {
        json_object_set_new(o, "SriovNetSupport", value_of(im.sriov_net_support));
    } else if (strcmp(attr, "bootMode") == 0) {
        json_object_set_new(o, "BootMode", value_of(im.boot_mode));
    } else if (strcmp(attr, "tpmSupport") == 0) {
        json_object_set_new(o, "TpmSupport", value_of(im.tpm_support));
    } else if (strcmp(attr, "imdsSupport") == 0) {
        json_object_set_new(o, "ImdsSupport", value_of(im.imds_support));
    } else if (strcmp(attr, "lastLaunchedTime") == 0) {
        char t[32] = "";
        if (im.last_launched_ms)
            time_format_iso(im.last_launched_ms, t);
        json_object_set_new(o, "LastLaunchedTime", value_of(t));
    } else if (strcmp(attr, "deregistrationProtection") == 0) {
        char prot[64];
        core_image_protection_text(c->app, &im, prot, sizeof(prot));
        json_object_set_new(o, "DeregistrationProtection", value_of(prot));
    } else if (strcmp(attr, "kernel") == 0 || strcmp(attr, "ramdisk") == 0 ||
               strcmp(attr, "uefiData") == 0) {
        /* Nothing to report for hvm images without UEFI variables: EC2 leaves it out. */
    }
    *ret = o;
    return 0;
}

/* Collects launch permission grantees from [{UserId}|{Group}|{Organization...}] into `out`. */
static int grantees(struct api_call *c, json_t *list, const char **out, size_t *n)
{
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *p = json_array_get(list, i);
        if (jstr(p, "OrganizationArn") || jstr(p, "OrganizationalUnitArn"))
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "Sharing with organizations is not available in amid");
        const char *u = jstr(p, "UserId"), *g = jstr(p, "Group");
        if ((u && g) || (!u && !g))
            return err_set(&c->err, -EINVAL, "InvalidParameterCombination",
                           "Each launch permission names either a UserId or the group 'all'");
        out[(*n)++] = u ? u : g;
    }
    return 0;
}

int ec2_modify_image_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    const char *id = jstr(in, "ImageId");
    const char *attr = jstr(in, "Attribute");
    const char *value = jstr(in, "Value");
    struct core_caller who = caller(c);
    if (json_object_get(in, "ProductCodes") || json_object_get(in, "OrganizationArns") ||
        json_object_get(in, "OrganizationalUnitArns"))
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Product codes and organization sharing are not available in amid");
    const char *desc = jstr(json_object_get(in, "Description"), "Value");
    const char *imds = jstr(json_object_get(in, "ImdsSupport"), "Value");
    if (attr && strcmp(attr, "description") == 0)
        desc = value ? value : desc;
    else if (attr && strcmp(attr, "imdsSupport") == 0)
        imds = value ? value : imds;
    else if (attr && strcmp(attr, "launchPermission") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The attribute %.32s cannot be modified", attr);
    if (desc || imds)
        return core_image_set(c->app, &who, id, desc, imds, &c->err);
    json_t *lp = json_object_get(in, "LaunchPermission");
    json_t *users = json_object_get(in, "UserIds"), *groups = json_object_get(in, "UserGroups");
    const char *optype = jstr(in, "OperationType");
    size_t cap = json_array_size(json_object_get(lp, "Add")) +
                 json_array_size(json_object_get(lp, "Remove")) + json_array_size(users) +
                 json_array_size(groups) + 1;
    const char **add = calloc(cap, sizeof(*add)), **rem = calloc(cap, sizeof(*rem));
    size_t nadd = 0, nrem = 0;
    int rc = add && rem ? 0 : err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    if (rc == 0 && lp) {
        rc = grantees(c, json_object_get(lp, "Add"), add, &nadd);
        if (rc == 0)
            rc = grantees(c, json_object_get(lp, "Remove"), rem, &nrem);
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
            if (strcmp(g, "all") != 0)
                rc = err_set(&c->err, -EINVAL, "InvalidParameterValue",
                             "Unknown user group %.32s (only 'all')", g);
            dst[(*dn)++] = g;
        }
    }
    if (rc == 0 && nadd + nrem == 0)
        rc = err_set(&c->err, -EINVAL, "MissingParameter",
                     "The request must name an attribute to modify");
    if (rc == 0)
        rc = core_image_permission(c->app, &who, id, add, nadd, rem, nrem, &c->err);
    free(add);
    free(rem);
    return rc;
}

int ec2_reset_image_attribute(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    const char *attr = jstr(in, "Attribute");
    if (strcmp(attr, "launchPermission") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The attribute %.32s cannot be reset", attr);
    struct core_caller who = caller(c);
    return core_image_permission_reset(c->app, &who, jstr(in, "ImageId"), &c->err);
}

static int returns_true(json_t **ret)
{
    *ret = json_pack("{s:b}", "Return", 1);
    return 0;
}

int ec2_cancel_image_launch_permission(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_image_cancel_permission(c->app, &who, jstr(in, "ImageId"), &c->err);
    return rc < 0 ? rc : returns_true(ret);
}

static int block_public(struct api_call *c, const char *set, const char *key, json_t **ret)
{
    struct core_caller who = caller(c);
    char state[32];
    int rc = core_image_block_public(c->app, &who, set, state, sizeof(state), &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s}", "ImageBlockPublicAccessState", state);
    if (key)
        json_object_set_new(*ret, key, json_string("account"));
    return 0;
}

int ec2_enable_image_block_public_access(struct api_call *c, json_t *in, json_t **ret)
{
    return block_public(c, jstr(in, "ImageBlockPublicAccessState"), NULL, ret);
}

int ec2_disable_image_block_public_access(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    return block_public(c, "unblocked", NULL, ret);
}

int ec2_get_image_block_public_access_state(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    return block_public(c, NULL, "ManagedBy", ret);
}

int ec2_enable_image_deprecation(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    int64_t at = json_integer_value(json_object_get(in, "DeprecateAt"));
    if (at <= c->now_ms - 60000)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "The deprecation time must be in the future");
    int rc = core_image_deprecate(c->app, &who, jstr(in, "ImageId"), at, &c->err);
    return rc < 0 ? rc : returns_true(ret);
}

int ec2_disable_image_deprecation(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_image_deprecate(c->app, &who, jstr(in, "ImageId"), 0, &c->err);
    return rc < 0 ? rc : returns_true(ret);
}

static int protect(struct api_call *c, json_t *in, bool enable, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_image_protect(c->app, &who, jstr(in, "ImageId"), enable,
                                jbool(in, "WithCooldown", false), &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:s}", "Return", "true");
    return 0;
}

int ec2_enable_image_deregistration_protection(struct api_call *c, json_t *in, json_t **ret)
{
    return protect(c, in, true, ret);
}

int ec2_disable_image_deregistration_protection(struct api_call *c, json_t *in, json_t **ret)
{
    return protect(c, in, false, ret);
}

int ec2_enable_image(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_image_disable(c->app, &who, jstr(in, "ImageId"), false, &c->err);
    return rc < 0 ? rc : returns_true(ret);
}

int ec2_disable_image(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_image_disable(c->app, &who, jstr(in, "ImageId"), true, &c->err);
    return rc < 0 ? rc : returns_true(ret);
}

static void snapshot_result(void *vctx, const char *snapshot_id, const char *code)
{
    json_array_append_new(vctx,
                          json_pack("{s:s, s:s}", "SnapshotId", snapshot_id, "ReturnCode", code));
}

int ec2_deregister_image(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    bool del = jbool(in, "DeleteAssociatedSnapshots", false);
    json_t *results = json_array();
    int rc = core_image_deregister(c->app, &who, jstr(in, "ImageId"), del, snapshot_result, results,
                                   &c->err);
    if (rc < 0) {
        json_decref(results);
        return rc;
    }
    *ret = json_pack("{s:b}", "Return", 1);
    if (del)
        json_object_set_new(*ret, "DeleteSnapshotResults", results);
    else
        json_decref(results);
    return 0;
}
