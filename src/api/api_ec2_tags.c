/*
 * api_ec2_tags.c — CreateTags, DeleteTags and DescribeTags over core's one tag store.
 */
#include "api/api_int.h"
#include "core/core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Reads Resources and Tags from the input into arrays the caller frees. */
static int read_args(struct api_call *c, json_t *in, const char ***ret_ids, size_t *ret_nids,
                     struct core_tag **ret_tags, size_t *ret_ntags)
{
    json_t *res = json_object_get(in, "Resources");
    json_t *tags = json_object_get(in, "Tags");
    size_t nids = json_array_size(res), ntags = json_array_size(tags);
    const char **ids = calloc(nids + 1, sizeof(*ids));
    struct core_tag *t = calloc(ntags + 1, sizeof(*t));
    if (!ids || !t) {
        free(ids);
        free(t);
        return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
    }
    for (size_t i = 0; i < nids; i++)
        ids[i] = json_string_value(json_array_get(res, i));
    for (size_t i = 0; i < ntags; i++) {
        json_t *one = json_array_get(tags, i);
        t[i].key = jstr(one, "Key");
        t[i].value = jstr(one, "Value");
        if (!t[i].key) {
            free(ids);
            free(t);
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "Tag %zu has no key; every tag needs a Key", i + 1);
        }
    }
    *ret_ids = ids;
    *ret_nids = nids;
    *ret_tags = t;
    *ret_ntags = ntags;
    return 0;
}

static int tags_call(struct api_call *c, json_t *in, bool create)
{
    const char **ids = NULL;
    struct core_tag *tags = NULL;
    size_t nids = 0, ntags = 0;
    int rc = read_args(c, in, &ids, &nids, &tags, &ntags);
    if (rc < 0)
        return rc;
    struct core_caller who = { c->account_id, c->region, c->dry_run };
    rc = create ? core_tags_create(c->app, &who, ids, nids, tags, ntags, &c->err)
                : core_tags_delete(c->app, &who, ids, nids, tags, ntags, &c->err);
    free(ids);
    free(tags);
    return rc;
}

int ec2_create_tags(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    return tags_call(c, in, true);
}

int ec2_delete_tags(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    return tags_call(c, in, false);
}

static const struct api_filter_def tag_filters[] = {
    { "key", "Key", 0, NULL },
    { "resource-id", "ResourceId", 0, NULL },
    { "resource-type", "ResourceType", 0, NULL },
    { "value", "Value", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct describe_ctx {
    json_t *list;
    struct api_filters *f;
};

static int tag_row(void *vctx, const struct core_tag_row *t)
{
    struct describe_ctx *d = vctx;
    json_t *item = json_pack("{s:s, s:s, s:s, s:s}", "ResourceId", t->resource_id, "ResourceType",
                             t->resource_type, "Key", t->key, "Value", t->value);
    if (!item)
        return -ENOMEM;
    if (api_filters_match(d->f, item)) {
        /* Sort key for pagination; the XML writer ignores members the model lacks. */
        struct buf pos;
        buf_init(&pos, 1200);
        buf_printf(&pos, "%s%c%s", t->resource_id, 1, t->key);
        json_object_set_new(item, "_pos", json_string(pos.data));
        buf_free(&pos);
        json_array_append(d->list, item);
    }
    json_decref(item);
    return 0;
}

int ec2_describe_tags(struct api_call *c, json_t *in, json_t **ret)
{
    struct describe_ctx d = { json_array(), NULL };
    int rc = api_filters_parse(in, tag_filters, false, &d.f, &c->err);
    if (rc < 0) {
        json_decref(d.list);
        return rc;
    }
    struct core_caller who = { c->account_id, c->region, false };
    rc = core_tags_each(c->app, &who, tag_row, &d);
    api_filters_free(d.f);
    if (rc < 0) {
        json_decref(d.list);
        return err_set(&c->err, rc, "InternalError", "cannot read tags");
    }
    rc = api_page_into(c, in, d.list, "_pos", 5, 1000, "Tags", ret);
    json_decref(d.list);
    return rc;
}

int api_tag_specs_multi(struct api_call *c, json_t *in, const char *const *types, size_t ntypes,
                        struct core_tag **ret, size_t *ret_n)
{
    json_t *specs = json_object_get(in, "TagSpecifications");
    for (size_t i = 0; i < json_array_size(specs); i++) {
        const char *rt = jstr(json_array_get(specs, i), "ResourceType");
        bool known = false;
        for (size_t t = 0; t < ntypes && !known; t++)
            known = rt && strcmp(rt, types[t]) == 0;
        if (!known)
            return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                           "'%.40s' is not a valid taggable resource type for this operation.",
                           rt ? rt : "null");
    }
    for (size_t t = 0; t < ntypes; t++) {
        size_t n = 0;
        for (size_t i = 0; i < json_array_size(specs); i++)
            n += json_array_size(json_object_get(json_array_get(specs, i), "Tags"));
        ret[t] = calloc(n + 1, sizeof(*ret[t]));
        ret_n[t] = 0;
        if (!ret[t]) {
            for (size_t k = 0; k < t; k++)
                free(ret[k]);
            return err_set(&c->err, -ENOMEM, "InternalError", "out of memory");
        }
    }
    for (size_t i = 0; i < json_array_size(specs); i++) {
        json_t *spec = json_array_get(specs, i);
        size_t t = 0;
        while (strcmp(jstr(spec, "ResourceType"), types[t]) != 0)
            t++;
        json_t *tags = json_object_get(spec, "Tags");
        for (size_t j = 0; j < json_array_size(tags); j++) {
            json_t *tg = json_array_get(tags, j);
            struct core_tag *k = &ret[t][ret_n[t]++];
            k->key = jstr(tg, "Key");
            k->value = jstr(tg, "Value") ? jstr(tg, "Value") : "";
            if (!k->key) {
                for (size_t x = 0; x < ntypes; x++)
                    free(ret[x]);
                return err_set(&c->err, -EINVAL, "InvalidParameterValue", "Every tag needs a Key");
            }
        }
    }
    return 0;
}

int api_tag_specs(struct api_call *c, json_t *in, const char *type, struct core_tag **ret,
                  size_t *ret_n)
{
    const char *types[] = { type };
    return api_tag_specs_multi(c, in, types, 1, ret, ret_n);
}
