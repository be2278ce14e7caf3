/*
 * api_ec2_keypairs.c — CreateKeyPair, ImportKeyPair, DescribeKeyPairs and DeleteKeyPair.
 */
#include "api/api_int.h"
#include "core/core.h"
#include "crypto/crypto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static struct core_caller caller(struct api_call *c)
{
    struct core_caller w = { c->account_id, c->region, c->dry_run };
    return w;
}

static json_t *keypair_item(struct api_call *c, struct db *db, const struct db_keypair *k,
                            bool public_key)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "KeyPairId", k->id, "KeyName", k->name,
                          "KeyFingerprint", k->fingerprint, "KeyType", k->type, "CreateTime",
                          (json_int_t)k->create_ms);
    if (o && public_key)
        json_object_set_new(o, "PublicKey", json_string(k->public_key));
    if (o && db)
        api_add_tags(c, db, o, k->id);
    return o;
}

static int with_tags(struct api_call *c, json_t *in, struct core_tag **tags, size_t *ntags)
{
    return api_tag_specs(c, in, "key-pair", tags, ntags);
}

int ec2_create_key_pair(struct api_call *c, json_t *in, json_t **ret)
{
    const char *format = jstr(in, "KeyFormat");
    if (format && strcmp(format, "pem") != 0)
        return err_set(&c->err, -EINVAL, "InvalidParameterValue",
                       "Key format %.16s is not available in amid; use pem", format);
    struct core_tag *tags;
    size_t ntags;
    int rc = with_tags(c, in, &tags, &ntags);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct db_keypair k;
    char *priv = NULL;
    rc = core_keypair_create(c->app, &who, jstr(in, "KeyName"), jstr(in, "KeyType"), tags, ntags,
                             &k, &priv, &c->err);
    if (rc == 0) {
        *ret = json_pack("{s:s, s:s, s:s, s:s}", "KeyPairId", k.id, "KeyName", k.name,
                         "KeyFingerprint", k.fingerprint, "KeyMaterial", priv);
        crypto_wipe(priv, strlen(priv));
        free(priv);
        struct db *db = core_db_get(c->app);
        api_add_tags(c, db, *ret, k.id);
        core_db_put(c->app, db);
    }
    free(tags);
    return rc;
}

int ec2_import_key_pair(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_tag *tags;
    size_t ntags;
    int rc = with_tags(c, in, &tags, &ntags);
    if (rc < 0)
        return rc;
    json_t *m = json_object_get(in, "PublicKeyMaterial");
    struct core_caller who = caller(c);
    struct db_keypair k;
    rc = core_keypair_import(c->app, &who, jstr(in, "KeyName"),
                             (const uint8_t *)json_string_value(m), json_string_length(m), tags,
                             ntags, &k, &c->err);
    if (rc == 0) {
        *ret = json_pack("{s:s, s:s, s:s}", "KeyPairId", k.id, "KeyName", k.name, "KeyFingerprint",
                         k.fingerprint);
        struct db *db = core_db_get(c->app);
        api_add_tags(c, db, *ret, k.id);
        core_db_put(c->app, db);
    }
    free(tags);
    return rc;
}

static const struct api_filter_def keypair_filters[] = {
    { "key-pair-id", "KeyPairId", 0, NULL },
    { "key-name", "KeyName", 0, NULL },
    { "fingerprint", "KeyFingerprint", 0, NULL },
    { "key-type", "KeyType", 0, NULL },
    { NULL, NULL, 0, NULL },
};

struct list_ctx {
    struct api_call *c;
    struct db *db;
    json_t *items;
    struct api_filters *f;
    bool public_key;
};

static int keypair_row(void *vctx, const struct db_keypair *k)
{
    struct list_ctx *l = vctx;
    json_t *item = keypair_item(l->c, l->db, k, l->public_key);
    if (!item)
        return -ENOMEM;
    if (api_filters_match(l->f, item))
        json_array_append(l->items, item);
    json_decref(item);
    return 0;
}

int ec2_describe_key_pairs(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *names = json_object_get(in, "KeyNames"), *ids = json_object_get(in, "KeyPairIds");
    struct core_caller who = caller(c);
    /* Every name and id asked for must exist. */
    for (int pass = 0; pass < 2; pass++) {
        json_t *want = pass ? ids : names;
        for (size_t i = 0; i < json_array_size(want); i++) {
            struct db_keypair k;
            const char *v = json_string_value(json_array_get(want, i));
            int rc = core_keypair_get(c->app, &who, pass ? NULL : v, pass ? v : NULL, &k, &c->err);
            if (rc < 0)
                return rc;
        }
    }
    struct list_ctx l = { c, NULL, json_array(), NULL, jbool(in, "IncludePublicKey", false) };
    int rc = api_filters_parse(in, keypair_filters, true, &l.f, &c->err);
    if (rc == 0) {
        l.db = core_db_get(c->app);
        rc = core_keypair_each(c->app, &who, keypair_row, &l);
        core_db_put(c->app, l.db);
    }
    api_filters_free(l.f);
    if (rc < 0) {
        json_decref(l.items);
        return rc;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < json_array_size(l.items); i++) {
        json_t *it = json_array_get(l.items, i);
        if ((json_array_size(names) && !api_in_list(names, jstr(it, "KeyName"))) ||
            (json_array_size(ids) && !api_in_list(ids, jstr(it, "KeyPairId"))))
            continue;
        json_array_append(out, it);
    }
    json_decref(l.items);
    *ret = json_pack("{s:o}", "KeyPairs", out);
    return 0;
}

int ec2_delete_key_pair(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    char id[32];
    int rc =
        core_keypair_delete(c->app, &who, jstr(in, "KeyName"), jstr(in, "KeyPairId"), id, &c->err);
    if (rc < 0)
        return rc;
    *ret = json_pack("{s:b}", "Return", 1);
    if (id[0])
        json_object_set_new(*ret, "KeyPairId", json_string(id));
    return 0;
}
