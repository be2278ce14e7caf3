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
 * a page is full.  The items kept are written straight into the response's XML (api_out), with no
 * tree unless a filter on another member needs one.  The API's filters (api_filters_check on the
 * row, api_filters_match on the item) stay the judges.
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

/* Items are written member by member in the model's order (Image, BlockDeviceMapping,
 * EbsBlockDevice) through api_out: straight into the response's XML, or into a tree when a
 * filter needs one. */

/* Writes the members of a BlockDeviceMapping. */
static int bdm_write(struct api_out *o, const struct db_bdm *b)
{
    bool none = strcmp(b->kind, "none") == 0, ephemeral = strcmp(b->kind, "ephemeral") == 0;
    int rc = 0;
    if (!none && !ephemeral) {
        struct api_out ebs;
        rc = api_out_open(o, "Ebs", &ebs);
        if (rc == 0)
            rc = api_out_bool(&ebs, "DeleteOnTermination", b->delete_on_termination);
        if (rc == 0 && b->iops)
            rc = api_out_int(&ebs, "Iops", b->iops);
        if (rc == 0 && b->snapshot_id[0])
            rc = api_out_string(&ebs, "SnapshotId", b->snapshot_id);
        if (rc == 0)
            rc = api_out_int(&ebs, "VolumeSize", b->volume_size);
        if (rc == 0)
            rc = api_out_string(&ebs, "VolumeType", b->volume_type);
        if (rc == 0 && b->kms_key_id[0])
            rc = api_out_string(&ebs, "KmsKeyId", b->kms_key_id);
        if (rc == 0 && b->throughput)
            rc = api_out_int(&ebs, "Throughput", b->throughput);
        if (rc == 0)
            rc = api_out_bool(&ebs, "Encrypted", b->encrypted);
        if (rc == 0)
            rc = api_out_end(&ebs);
    }
    if (rc == 0 && none)
        rc = api_out_string(o, "NoDevice", "");
    if (rc == 0)
        rc = api_out_string(o, "DeviceName", b->device_name);
    if (rc == 0 && ephemeral)
        rc = api_out_string(o, "VirtualName", b->virtual_name);
    return rc;
}

/* Appends a BlockDeviceMapping item to the list `vctx` (a struct api_out). */
static int bdm_append(void *vctx, const struct db_bdm *b)
{
    struct api_out item;
    int rc = api_out_item(vctx, &item);
    if (rc == 0)
        rc = bdm_write(&item, b);
    return rc < 0 ? rc : api_out_end(&item);
}

/* A mapping of a DescribeImages chunk, chained to the next one of its image. */
struct bdm_slot {
    struct db_bdm b;
    size_t next; /* index of the image's next mapping, SIZE_MAX after its last */
};

/* Writes the members of the Image of a row, with its mappings (the chain from pool[first]) and
 * its tags (a list, or NULL for none). */
static int image_write(struct api_out *o, struct api_call *c, const struct db_image *im,
                       const char *alias, const struct bdm_slot *pool, size_t first, json_t *tags)
{
    struct api_out list, sub;
    char t[32];
    int rc = api_out_string(o, "PlatformDetails", "Linux/UNIX");
    if (rc == 0)
        rc = api_out_string(o, "UsageOperation", "RunInstances");
    if (rc == 0)
        rc = api_out_open(o, "BlockDeviceMappings", &list);
    for (size_t i = first; i != SIZE_MAX && rc == 0; i = pool[i].next)
        rc = bdm_append(&list, &pool[i].b);
    if (rc == 0)
        rc = api_out_end(&list);
    if (rc == 0 && im->description[0])
        rc = api_out_string(o, "Description", im->description);
    if (rc == 0)
        rc = api_out_bool(o, "EnaSupport", im->ena_support);
    if (rc == 0)
        rc = api_out_string(o, "Hypervisor", "xen");
    if (rc == 0 && alias && *alias)
        rc = api_out_string(o, "ImageOwnerAlias", alias);
    if (rc == 0)
        rc = api_out_string(o, "Name", im->name);
    if (rc == 0)
        rc = api_out_string(o, "RootDeviceName", im->root_device_name);
    if (rc == 0)
        rc = api_out_string(o, "RootDeviceType", "ebs");
    if (rc == 0 && im->sriov_net_support[0])
        rc = api_out_string(o, "SriovNetSupport", im->sriov_net_support);
    if (rc == 0 && im->state_reason_code[0]) {
        rc = api_out_open(o, "StateReason", &sub);
        if (rc == 0)
            rc = api_out_string(&sub, "Code", im->state_reason_code);
        if (rc == 0)
            rc = api_out_string(&sub, "Message", im->state_reason_message);
        if (rc == 0)
            rc = api_out_end(&sub);
    }
    if (rc == 0)
        rc = api_out_json(o, "Tags", tags);
    if (rc == 0)
        rc = api_out_string(o, "VirtualizationType", im->virtualization_type);
    if (rc == 0 && im->boot_mode[0])
        rc = api_out_string(o, "BootMode", im->boot_mode);
    if (rc == 0 && im->tpm_support[0])
        rc = api_out_string(o, "TpmSupport", im->tpm_support);
    if (rc == 0 && im->deprecation_ms) {
        /* EC2 writes the deprecation time without milliseconds. */
        time_format_iso(im->deprecation_ms, t);
        t[19] = 'Z';
        t[20] = '\0';
        rc = api_out_string(o, "DeprecationTime", t);
    }
    if (rc == 0 && im->imds_support[0])
        rc = api_out_string(o, "ImdsSupport", im->imds_support);
    if (rc == 0 && im->source_instance_id[0])
        rc = api_out_string(o, "SourceInstanceId", im->source_instance_id);
    char prot[64];
    core_image_protection_text(im, c->now_ms, prot, sizeof(prot));
    if (rc == 0)
        rc = api_out_string(o, "DeregistrationProtection", prot);
    if (rc == 0 && im->last_launched_ms) {
        time_format_iso(im->last_launched_ms, t);
        rc = api_out_string(o, "LastLaunchedTime", t);
    }
    if (rc == 0 && im->source_image_id[0]) {
        rc = api_out_string(o, "SourceImageId", im->source_image_id);
        if (rc == 0)
            rc = api_out_string(o, "SourceImageRegion", im->source_region);
    }
    if (rc == 0)
        rc = api_out_string(o, "ImageId", im->id);
    /* "owner/name", the owner by its alias when it has one (db_account.alias: under 72 bytes) */
    char location[128 + sizeof(im->name)];
    const char *who = alias && *alias ? alias : im->owner;
    size_t nw = strnlen(who, 127), nn = strlen(im->name);
    memcpy(location, who, nw);
    location[nw] = '/';
    memcpy(location + nw + 1, im->name, nn + 1);
    if (rc == 0)
        rc = api_out_string(o, "ImageLocation", location);
    if (rc == 0)
        rc = api_out_string(o, "State", im->state);
    if (rc == 0)
        rc = api_out_string(o, "OwnerId", im->owner);
    time_format_iso(im->creation_ms, t);
    if (rc == 0)
        rc = api_out_string(o, "CreationDate", t);
    if (rc == 0)
        rc = api_out_bool(o, "Public", im->public);
    if (rc == 0)
        rc = api_out_open(o, "ProductCodes", &list);
    if (rc == 0)
        rc = api_out_end(&list);
    if (rc == 0)
        rc = api_out_string(o, "Architecture", im->architecture);
    if (rc == 0)
        rc = api_out_string(o, "ImageType", "machine");
    return rc;
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
    size_t bdm_first, bdm_last; /* its chain of mappings in describe_ctx.bdms, or SIZE_MAX */
    json_t *tags;               /* Tags, NULL while it has none */
};

struct describe_ctx {
    struct api_call *c;
    struct api_filters *f;
    bool tree_filters; /* a filter needs the item as a tree (api_filters_match_rest) */
    const struct model_shape *image; /* the Image shape, for those trees */
    struct api_out items;            /* the page's items, written into c->encoded */
    size_t nitems;
    char last_id[40]; /* the page's last image (at least as long as db_image.id) */
    int64_t limit;    /* stop after this many (+1 to know there is more), -1: all */
    bool more;
    int64_t now;
    int64_t until; /* the first time after `now` at which a row seen would answer otherwise */
    bool include_deprecated, include_disabled, by_id;
    json_t *owners;     /* account ids (resolved), or NULL */
    json_t *executable; /* "self", "all" or account ids, or NULL */
    char alias_owner[16];
    char alias[72];
    struct pending *pend;    /* the chunk, of `cap` rows */
    struct pending **sorted; /* the chunk by id, for the batched reads */
    size_t npend, cap;
    size_t want;           /* the walk stops when the chunk holds this many */
    size_t nread;          /* rows the walk gave */
    char cursor[40];       /* id of the last row the walk gave (at least as long as db_image.id) */
    struct bdm_slot *bdms; /* the chunk's mappings, of `bdm_cap` */
    size_t nbdms, bdm_cap;
    int err; /* a read that failed while deciding a row (the request fails: never a guess) */
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
        if (self || strcmp(im->owner, d->c->account_id) == 0) {
            int g = core_image_permission_granted(d->c->app, im->id, acct);
            if (g < 0 && !d->err)
                d->err = g;
            if (g > 0)
                return true;
        }
    }
    return false;
}

/* The filters row_passes applies to the very values image_write writes (not description: an empty
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

/* Lowers d->until to the times at which this row would be described otherwise by time alone:
 * its deprecation (hidden from others' listings), the end of its deregistered grace (hidden by
 * id too) and of its protection cooldown (DeregistrationProtection's text). */
static void note_time_limits(struct describe_ctx *d, const struct db_image *im)
{
    int64_t t[3] = { im->deprecation_ms, im->protection_until_ms, 0 };
    if (strcmp(im->state, "deregistered") == 0)
        t[2] = im->deregistered_ms + CORE_DEREGISTERED_VISIBLE_MS + 1;
    for (int i = 0; i < 3; i++)
        if (t[i] > d->now && t[i] < d->until)
            d->until = t[i];
}

/* A row of the walk (or an image asked for by id): it joins the chunk when it passes.  Returns 1
 * to stop the walk when the chunk holds `want` rows. */
static int describe_row(void *vctx, const struct db_image *im)
{
    struct describe_ctx *d = vctx;
    d->nread++;
    note_time_limits(d, im);
    memcpy(d->cursor, im->id, sizeof(im->id)); /* a string within its array */
    if (!row_passes(d, im))
        return 0;
    struct pending *p = &d->pend[d->npend];
    p->bdm_first = p->bdm_last = SIZE_MAX;
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
    if (!p)
        return 0;
    if (d->nbdms == d->bdm_cap) {
        size_t cap = d->bdm_cap ? 2 * d->bdm_cap : DESCRIBE_CHUNK;
        struct bdm_slot *v = realloc(d->bdms, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        d->bdms = v;
        d->bdm_cap = cap;
    }
    size_t i = d->nbdms++;
    d->bdms[i].b = *b;
    d->bdms[i].next = SIZE_MAX;
    if (p->bdm_last == SIZE_MAX)
        p->bdm_first = i;
    else
        d->bdms[p->bdm_last].next = i;
    p->bdm_last = i;
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
    for (size_t i = 0; i < d->npend; i++)
        json_decref(d->pend[i].tags);
    d->npend = 0;
    d->nbdms = 0;
}

/* Makes the item of a row of the chunk, keeping it when it passes every filter and the page has
 * room for it (else there is more). */
static int describe_item(struct describe_ctx *d, const struct pending *p)
{
    int rc = 0;
    if (d->tree_filters) {
        json_t *tree = json_object();
        struct api_out o;
        api_out_tree(&o, tree, d->image);
        rc = tree ? image_write(&o, d->c, &p->im, d->alias, d->bdms, p->bdm_first, p->tags)
                  : -ENOMEM;
        bool keep = rc == 0 && api_filters_match_rest(d->f, tree, row_filters);
        json_decref(tree);
        if (!keep)
            return rc;
    }
    if (d->limit >= 0 && (int64_t)d->nitems == d->limit) {
        d->more = true;
        return 0;
    }
    struct api_out item;
    rc = api_out_item(&d->items, &item);
    if (rc == 0)
        rc = image_write(&item, d->c, &p->im, d->alias, d->bdms, p->bdm_first, p->tags);
    if (rc == 0)
        rc = api_out_end(&item);
    d->nitems++;
    memcpy(d->last_id, p->im.id, sizeof(p->im.id));
    return rc;
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
            rc = core_account_alias(d->c->app, p->im.owner, d->alias, sizeof(d->alias));
        }
        if (rc == 0)
            rc = describe_item(d, p);
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
        if (d->limit >= 0 && (size_t)(d->limit + 1) - d->nitems < want)
            want = (size_t)(d->limit + 1) - d->nitems;
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
        .limit = limit,
        .now = c->now_ms,
        .until = INT64_MAX,
        .include_deprecated = jbool(in, "IncludeDeprecated", false),
        .include_disabled = jbool(in, "IncludeDisabled", false),
        .by_id = json_array_size(ids) > 0,
    };
    /* Room for a page and one more (or a chunk): a db_image is a couple of KiB. */
    d.cap = limit >= 0 && limit + 1 < DESCRIBE_CHUNK ? (size_t)limit + 1 : DESCRIBE_CHUNK;
    d.pend = malloc(d.cap * sizeof(*d.pend));
    d.sorted = malloc(d.cap * sizeof(*d.sorted));
    int rc = d.pend && d.sorted ? 0 : err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    if (rc == 0)
        rc = api_filters_parse(in, image_filters, true, &d.f, &c->err);
    /* The items go straight into the response's XML; trees only for filters needing them. */
    const struct model_shape *list = model_member_find(c->mop->output, "Images")->shape;
    d.image = list->member->shape;
    d.tree_filters = !api_filters_within(d.f, row_filters);
    buf_init(&c->encoded, c->resp->body.max);
    c->encoded_member = "Images";
    api_out_xml(&d.items, &c->encoded, list);
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
    if (rc == 0 && d.err) /* rows left out on a failed read: no answer rather than a wrong one */
        rc = err_set(&c->err, d.err, "InternalError", "cannot list images");
    describe_clear(&d);
    free(d.pend);
    free(d.sorted);
    free(d.bdms);
    api_filters_free(d.f);
    json_decref(d.owners);
    if (rc < 0)
        return rc;
    /* Every row that could have changed the answer passed describe_row: the rest were left out
     * by owner, name, id or state, none of which time changes. */
    c->cache_until_ms = d.until;
    *ret = json_object();
    if (d.more && d.nitems) {
        char *next = api_token_make(c, d.last_id);
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
        struct api_out list;
        api_out_tree(&list, l, model_member_find(c->mop->output, "BlockDeviceMappings")->shape);
        core_image_bdms(c->app, id, bdm_append, &list);
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
        core_image_protection_text(&im, c->now_ms, prot, sizeof(prot));
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
