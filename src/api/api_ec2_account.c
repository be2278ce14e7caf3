/*
 * api_ec2_account.c — the deployment as EC2 describes it: DescribeRegions,
 * DescribeAvailabilityZones, DescribeAccountAttributes; and STS GetCallerIdentity.
 */
#include "api/api_int.h"
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The endpoint host every region answers on: all regions share amid's one endpoint. */
static void endpoint_host(struct api_call *c, char *out, size_t outlen)
{
    char url[160];
    core_endpoint(c->app, url, sizeof(url));
    const char *h = strstr(url, "://");
    snprintf(out, outlen, "%s", h ? h + 3 : url);
}

static const struct api_filter_def region_filters[] = {
    { "endpoint", "Endpoint", 0, NULL },
    { "opt-in-status", "OptInStatus", 0, NULL },
    { "region-name", "RegionName", 0, NULL },
    { NULL, NULL, 0, NULL },
};

int ec2_describe_regions(struct api_call *c, json_t *in, json_t **ret)
{
    struct api_filters *f;
    int rc = api_filters_parse(in, region_filters, false, &f, &c->err);
    if (rc < 0)
        return rc;
    json_t *names = json_object_get(in, "RegionNames");
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *n = json_string_value(json_array_get(names, i));
        if (!core_region_find(c->app, n)) {
            api_filters_free(f);
            return err_set(&c->err, -EINVAL, "InvalidParameterValue", "Invalid region: %.64s", n);
        }
    }
    char host[160];
    endpoint_host(c, host, sizeof(host));
    size_t n;
    const struct core_region *r = core_regions(c->app, &n);
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        if (json_array_size(names) && !api_in_list(names, r[i].name))
            continue;
        json_t *item = json_pack("{s:s, s:s, s:s}", "RegionName", r[i].name, "Endpoint", host,
                                 "OptInStatus", "opt-in-not-required");
        if (api_filters_match(f, item))
            json_array_append(list, item);
        json_decref(item);
    }
    api_filters_free(f);
    *ret = json_pack("{s:o}", "Regions", list);
    return 0;
}

static const struct api_filter_def zone_filters[] = {
    { "group-long-name", "GroupLongName", 0, NULL },
    { "group-name", "GroupName", 0, NULL },
    { "message", "Messages.Message", 0, NULL },
    { "opt-in-status", "OptInStatus", 0, NULL },
    { "parent-zone-id", "ParentZoneId", 0, NULL },
    { "parent-zone-name", "ParentZoneName", 0, NULL },
    { "region-name", "RegionName", 0, NULL },
    { "state", "State", 0, NULL },
    { "zone-id", "ZoneId", 0, NULL },
    { "zone-name", "ZoneName", 0, NULL },
    { "zone-type", "ZoneType", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct zone_ctx {
    json_t *list;
};

static int zone_item(void *vctx, const char *zone, const char *zone_id, const char *rgn)
{
    struct zone_ctx *z = vctx;
    json_t *item = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[]}", "ZoneName", zone, "ZoneId", zone_id,
        "RegionName", rgn, "State", "available", "OptInStatus", "opt-in-not-required", "GroupName",
        rgn, "NetworkBorderGroup", rgn, "ZoneType", "availability-zone", "Messages");
    if (!item)
        return -ENOMEM;
    char longname[96];
    snprintf(longname, sizeof(longname), "amid %s", rgn);
    json_object_set_new(item, "GroupLongName", json_string(longname));
    return json_array_append_new(z->list, item);
}

int ec2_describe_availability_zones(struct api_call *c, json_t *in, json_t **ret)
{
    struct api_filters *f;
    int rc = api_filters_parse(in, zone_filters, false, &f, &c->err);
    if (rc < 0)
        return rc;
    struct zone_ctx z = { json_array() };
    rc = core_zone_each(c->app, c->region, zone_item, &z);
    if (rc < 0) {
        json_decref(z.list);
        api_filters_free(f);
        return err_set(&c->err, rc, "InternalError", "cannot read zones");
    }
    json_t *names = json_object_get(in, "ZoneNames");
    json_t *ids = json_object_get(in, "ZoneIds");
    /* Every name or id asked for must exist, as EC2 insists. */
    for (int pass = 0; pass < 2; pass++) {
        json_t *want = pass ? ids : names;
        for (size_t i = 0; i < json_array_size(want); i++) {
            const char *w = json_string_value(json_array_get(want, i));
            bool found = false;
            for (size_t k = 0; k < json_array_size(z.list) && !found; k++)
                found =
                    strcmp(jstr(json_array_get(z.list, k), pass ? "ZoneId" : "ZoneName"), w) == 0;
            if (!found) {
                json_decref(z.list);
                api_filters_free(f);
                return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                               "The %s '%.64s' does not exist", pass ? "zone ID" : "zone", w);
            }
        }
    }
    json_t *list = json_array();
    for (size_t k = 0; k < json_array_size(z.list); k++) {
        json_t *item = json_array_get(z.list, k);
        if (json_array_size(names) && !api_in_list(names, jstr(item, "ZoneName")))
            continue;
        if (json_array_size(ids) && !api_in_list(ids, jstr(item, "ZoneId")))
            continue;
        if (api_filters_match(f, item))
            json_array_append(list, item);
    }
    json_decref(z.list);
    api_filters_free(f);
    *ret = json_pack("{s:o}", "AvailabilityZones", list);
    return 0;
}

int ec2_describe_account_attributes(struct api_call *c, json_t *in, json_t **ret)
{
    (void)c;
    static const struct {
        const char *name, *value;
    } attrs[] = {
        { "supported-platforms", "VPC" }, { "vpc-max-security-groups-per-interface", "5" },
        { "max-elastic-ips", "5" },       { "max-instances", "20" },
        { "vpc-max-elastic-ips", "5" },   { "default-vpc", "none" },
    };
    json_t *names = json_object_get(in, "AttributeNames");
    json_t *list = json_array();
    for (size_t i = 0; i < ARRAY_SIZE(attrs); i++) {
        if (json_array_size(names) && !api_in_list(names, attrs[i].name))
            continue;
        json_array_append_new(list, json_pack("{s:s, s:[{s:s}]}", "AttributeName", attrs[i].name,
                                              "AttributeValues", "AttributeValue", attrs[i].value));
    }
    *ret = json_pack("{s:o}", "AccountAttributes", list);
    return 0;
}

int sts_get_caller_identity(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    char arn[64];
    snprintf(arn, sizeof(arn), "arn:aws:iam::%s:root", c->account_id);
    *ret =
        json_pack("{s:s, s:s, s:s}", "UserId", c->account_id, "Account", c->account_id, "Arn", arn);
    return 0;
}
