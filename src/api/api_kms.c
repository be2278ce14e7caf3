/*
 * api_kms.c — the key service's operations (KMS's TrentService, JSON 1.1) and EC2's six EBS
 * encryption-by-default operations, which name its keys.  Handlers turn the decoded trees into
 * core's plain structs and back; core decides everything (see core_kms.c).
 *
 * Paging: ListKeys, ListAliases, ListGrants and ListResourceTags take Limit and Marker; a
 * Marker is amid's tamper-evident token (api_token.c) carrying the sort key of the last item
 * returned, good only for the caller, operation and region that received it
 * (InvalidMarkerException otherwise).
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

/* Core's DryRunOperation is KMS's DryRunOperationException. */
static int kms_rc(struct api_call *c, int rc)
{
    if (rc < 0 && c->err.code && strcmp(c->err.code, "DryRunOperation") == 0)
        err_set(&c->err, rc, "DryRunOperationException",
                "The request would have succeeded, but the DryRun option is set.");
    return rc;
}

static json_t *blob_json(const uint8_t *p, size_t n)
{
    return json_stringn_nocheck((const char *)p, n);
}

/* An encryption context from a map member (NULL when absent); *pairs is freed by the caller. */
static const struct core_kms_context *context_of(json_t *in, const char *member,
                                                 struct core_kms_context *ctx,
                                                 struct core_kms_pair **pairs)
{
    *pairs = NULL;
    json_t *o = json_object_get(in, member);
    if (!json_is_object(o))
        return NULL;
    size_t n = json_object_size(o), i = 0;
    struct core_kms_pair *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return NULL;
    const char *k;
    json_t *val;
    json_object_foreach(o, k, val)
    {
        v[i].key = k;
        v[i].value = json_string_value(val);
        i++;
    }
    ctx->v = v;
    ctx->n = i;
    *pairs = v;
    return ctx;
}

static int tokens_check(struct api_call *c, json_t *in)
{
    json_t *t = json_object_get(in, "GrantTokens");
    size_t n = json_array_size(t);
    const char *v[16];
    if (n > ARRAY_SIZE(v))
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "At most 10 grant tokens may be given");
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(t, i));
    return core_kms_grant_tokens_check(c->app, v, n, &c->err);
}

static int algorithm_check(struct api_call *c, json_t *in, const char *member)
{
    const char *a = jstr(in, member);
    if (a && strcmp(a, "SYMMETRIC_DEFAULT") != 0)
        return err_set(&c->err, -EINVAL, "InvalidKeyUsageException",
                       "The encryption algorithm %s is not valid for a symmetric encryption key: "
                       "use SYMMETRIC_DEFAULT",
                       a);
    return 0;
}

static int recipient_check(struct api_call *c, json_t *in)
{
    if (json_object_get(in, "Recipient"))
        return err_set(&c->err, -EOPNOTSUPP, "UnsupportedOperationException",
                       "Recipient (Nitro Enclaves attestation) is not supported by amid");
    return 0;
}

static bool ignore_ciphertext(json_t *in)
{
    return api_in_list(json_object_get(in, "DryRunModifiers"), "IGNORE_CIPHERTEXT");
}

/* ---- paging ---- */

struct page {
    struct api_call *c;
    json_t *items;
    int64_t limit;
    char last[600];
    bool truncated;
};

static int page_open(struct api_call *c, json_t *in, int64_t dflt, int64_t max, struct page *p,
                     char *after, size_t afterlen)
{
    memset(p, 0, sizeof(*p));
    p->c = c;
    json_t *l = json_object_get(in, "Limit");
    p->limit = l ? json_integer_value(l) : dflt;
    if (p->limit < 1 || p->limit > max)
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "1 validation error detected: Value '%lld' at 'limit' failed to satisfy "
                       "constraint: Member must have value between 1 and %lld",
                       (long long)p->limit, (long long)max);
    after[0] = '\0';
    const char *m = jstr(in, "Marker");
    if (m && api_token_open(c, m, after, afterlen) < 0)
        return err_set(&c->err, -EINVAL, "InvalidMarkerException",
                       "The marker is not valid for this request");
    p->items = json_array();
    return p->items ? 0 : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
}

/* Adds an item (stolen) with sort key `key`; 1 once the page is full and more exist. */
static int page_add(struct page *p, json_t *item, const char *key)
{
    if ((int64_t)json_array_size(p->items) >= p->limit) {
        json_decref(item);
        p->truncated = true;
        return 1;
    }
    json_array_append_new(p->items, item);
    snprintf(p->last, sizeof(p->last), "%s", key);
    return 0;
}

static int page_close(struct page *p, int rc, const char *member, json_t **ret)
{
    if (rc < 0) {
        json_decref(p->items);
        return rc;
    }
    json_t *out = json_pack("{s:o, s:b}", member, p->items, "Truncated", p->truncated);
    if (p->truncated) {
        char *t = api_token_make(p->c, p->last);
        if (!t) {
            json_decref(out);
            return err_set(&p->c->err, -ENOMEM, "KMSInternalException", "cannot make a marker");
        }
        json_object_set_new(out, "NextMarker", json_string(t));
        free(t);
    }
    *ret = out;
    return 0;
}

/* ---- keys ---- */

static json_t *meta_json(const struct core_kms_meta *m)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:I, s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[s], s:b}", "AWSAccountId",
        m->key.account, "KeyId", m->key.id, "Arn", m->key.arn, "CreationDate",
        (json_int_t)m->create_ms, "Enabled", strcmp(m->key.state, "Enabled") == 0, "Description",
        m->description, "KeyUsage", m->key_usage, "KeyState", m->key.state, "Origin", m->origin,
        "KeyManager", m->key.aws_managed ? "AWS" : "CUSTOMER", "CustomerMasterKeySpec", m->key_spec,
        "KeySpec", m->key_spec, "EncryptionAlgorithms", "SYMMETRIC_DEFAULT", "MultiRegion", 0);
    if (o && m->deletion_ms)
        json_object_set_new(o, "DeletionDate", json_integer(m->deletion_ms));
    return o;
}

int kms_create_key(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *tl = json_object_get(in, "Tags");
    size_t nt = json_array_size(tl);
    struct core_tag *tags = calloc(nt ? nt : 1, sizeof(*tags));
    if (!tags)
        return err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    for (size_t i = 0; i < nt; i++) {
        tags[i].key = jstr(json_array_get(tl, i), "TagKey");
        tags[i].value = jstr(json_array_get(tl, i), "TagValue");
    }
    json_t *mr = json_object_get(in, "MultiRegion");
    struct core_kms_create p = {
        .policy = jstr(in, "Policy"),
        .bypass_lockout = jbool(in, "BypassPolicyLockoutSafetyCheck", false),
        .description = jstr(in, "Description"),
        .key_usage = jstr(in, "KeyUsage"),
        .key_spec = jstr(in, "KeySpec"),
        .cmk_spec = jstr(in, "CustomerMasterKeySpec"),
        .origin = jstr(in, "Origin"),
        .custom_key_store_id = jstr(in, "CustomKeyStoreId"),
        .xks_key_id = jstr(in, "XksKeyId"),
        .multi_region = mr ? json_is_true(mr) : -1,
        .tags = tags,
        .ntags = nt,
    };
    struct core_caller who = caller(c);
    struct core_kms_meta *m = malloc(sizeof(*m));
    int rc = m ? core_kms_create_key(c->app, &who, &p, m, &c->err)
               : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret = json_pack("{s:o}", "KeyMetadata", meta_json(m));
    free(m);
    free(tags);
    return rc;
}

int kms_describe_key(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = tokens_check(c, in);
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    struct core_kms_meta *m = malloc(sizeof(*m));
    rc = m ? core_kms_describe_key(c->app, &who, jstr(in, "KeyId"), m, &c->err)
           : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret = json_pack("{s:o}", "KeyMetadata", meta_json(m));
    free(m);
    return rc;
}

static int key_item(void *ctx, const struct core_kms_key *k)
{
    return page_add(ctx, json_pack("{s:s, s:s}", "KeyId", k->id, "KeyArn", k->arn), k->id);
}

int kms_list_keys(struct api_call *c, json_t *in, json_t **ret)
{
    struct page p;
    char after[600];
    int rc = page_open(c, in, 100, 1000, &p, after, sizeof(after));
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    rc = core_kms_keys_each(c->app, &who, after[0] ? after : NULL, key_item, &p);
    if (rc < 0)
        err_set(&c->err, rc, "KMSInternalException", "cannot list keys");
    return page_close(&p, rc, "Keys", ret);
}

int kms_enable_key(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_key_enable(c->app, &who, jstr(in, "KeyId"), true, &c->err);
}

int kms_disable_key(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_key_enable(c->app, &who, jstr(in, "KeyId"), false, &c->err);
}

int kms_schedule_key_deletion(struct api_call *c, json_t *in, json_t **ret)
{
    json_t *d = json_object_get(in, "PendingWindowInDays");
    struct core_caller who = caller(c);
    struct core_kms_meta *m = malloc(sizeof(*m));
    int rc = m ? core_kms_key_schedule_deletion(c->app, &who, jstr(in, "KeyId"),
                                                d ? json_integer_value(d) : 30, m, &c->err)
               : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret = json_pack("{s:s, s:I, s:s, s:I}", "KeyId", m->key.arn, "DeletionDate",
                         (json_int_t)m->deletion_ms, "KeyState", m->key.state,
                         "PendingWindowInDays", (json_int_t)(d ? json_integer_value(d) : 30));
    free(m);
    return rc;
}

int kms_cancel_key_deletion(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    struct core_kms_key k;
    int rc = core_kms_key_cancel_deletion(c->app, &who, jstr(in, "KeyId"), &k, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s}", "KeyId", k.arn);
    return rc;
}

/* ---- cryptography ---- */

int kms_encrypt(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = tokens_check(c, in);
    if (rc == 0)
        rc = algorithm_check(c, in, "EncryptionAlgorithm");
    if (rc < 0)
        return rc;
    json_t *pt = json_object_get(in, "Plaintext");
    struct core_kms_context ctx;
    struct core_kms_pair *pairs;
    const struct core_kms_context *cp = context_of(in, "EncryptionContext", &ctx, &pairs);
    uint8_t *blob = malloc(CORE_KMS_CIPHERTEXT_MAX);
    size_t bn = 0;
    char arn[128];
    struct core_caller who = caller(c);
    rc = blob ? core_kms_encrypt(c->app, &who, jstr(in, "KeyId"), cp,
                                 (const uint8_t *)json_string_value(pt), json_string_length(pt),
                                 blob, &bn, arn, &c->err)
              : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret = json_pack("{s:o, s:s, s:s}", "CiphertextBlob", blob_json(blob, bn), "KeyId", arn,
                         "EncryptionAlgorithm", "SYMMETRIC_DEFAULT");
    free(blob);
    free(pairs);
    return kms_rc(c, rc);
}

int kms_decrypt(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = tokens_check(c, in);
    if (rc == 0)
        rc = algorithm_check(c, in, "EncryptionAlgorithm");
    if (rc == 0)
        rc = recipient_check(c, in);
    if (rc < 0)
        return rc;
    json_t *ct = json_object_get(in, "CiphertextBlob");
    if (!ct || json_string_length(ct) == 0)
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "1 validation error detected: Value null at 'ciphertextBlob' failed to "
                       "satisfy constraint: Member must not be null");
    struct core_kms_context ctx;
    struct core_kms_pair *pairs;
    const struct core_kms_context *cp = context_of(in, "EncryptionContext", &ctx, &pairs);
    size_t n = json_string_length(ct), pn = 0;
    uint8_t *plain = malloc(n);
    char arn[128];
    struct core_caller who = caller(c);
    rc = plain ? core_kms_decrypt(c->app, &who, jstr(in, "KeyId"), cp,
                                  (const uint8_t *)json_string_value(ct), n, ignore_ciphertext(in),
                                  plain, &pn, arn, &c->err)
               : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret = json_pack("{s:s, s:o, s:s}", "KeyId", arn, "Plaintext", blob_json(plain, pn),
                         "EncryptionAlgorithm", "SYMMETRIC_DEFAULT");
    if (plain)
        crypto_wipe(plain, n);
    free(plain);
    free(pairs);
    return kms_rc(c, rc);
}

int kms_re_encrypt(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = tokens_check(c, in);
    if (rc == 0)
        rc = algorithm_check(c, in, "SourceEncryptionAlgorithm");
    if (rc == 0)
        rc = algorithm_check(c, in, "DestinationEncryptionAlgorithm");
    if (rc < 0)
        return rc;
    json_t *ct = json_object_get(in, "CiphertextBlob");
    if (!ct || json_string_length(ct) == 0)
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "1 validation error detected: Value null at 'ciphertextBlob' failed to "
                       "satisfy constraint: Member must not be null");
    struct core_kms_context sctx, dctx;
    struct core_kms_pair *sp, *dp;
    const struct core_kms_context *scp = context_of(in, "SourceEncryptionContext", &sctx, &sp);
    const struct core_kms_context *dcp = context_of(in, "DestinationEncryptionContext", &dctx, &dp);
    uint8_t *out = malloc(CORE_KMS_CIPHERTEXT_MAX);
    size_t on = 0;
    char src[128], dst[128];
    struct core_caller who = caller(c);
    rc = out ? core_kms_reencrypt(c->app, &who, jstr(in, "SourceKeyId"), scp,
                                  (const uint8_t *)json_string_value(ct), json_string_length(ct),
                                  ignore_ciphertext(in), jstr(in, "DestinationKeyId"), dcp, out,
                                  &on, src, dst, &c->err)
             : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0)
        *ret =
            json_pack("{s:o, s:s, s:s, s:s, s:s}", "CiphertextBlob", blob_json(out, on),
                      "SourceKeyId", src, "KeyId", dst, "SourceEncryptionAlgorithm",
                      "SYMMETRIC_DEFAULT", "DestinationEncryptionAlgorithm", "SYMMETRIC_DEFAULT");
    free(out);
    free(sp);
    free(dp);
    return kms_rc(c, rc);
}

static int data_key(struct api_call *c, json_t *in, json_t **ret, bool with_plaintext)
{
    int rc = tokens_check(c, in);
    if (rc == 0)
        rc = recipient_check(c, in);
    if (rc < 0)
        return rc;
    json_t *nb = json_object_get(in, "NumberOfBytes");
    const char *spec = jstr(in, "KeySpec");
    if (nb && spec)
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "KeySpec and NumberOfBytes are mutually exclusive");
    if (!nb && !spec)
        return err_set(&c->err, -EINVAL, "ValidationException",
                       "Please specify either number of bytes or key spec.");
    size_t n = nb ? (size_t)json_integer_value(nb) : strcmp(spec, "AES_128") == 0 ? 16 : 32;
    struct core_kms_context ctx;
    struct core_kms_pair *pairs;
    const struct core_kms_context *cp = context_of(in, "EncryptionContext", &ctx, &pairs);
    uint8_t plain[1024], *blob = malloc(CORE_KMS_CIPHERTEXT_MAX);
    size_t bn = 0;
    char arn[128];
    struct core_caller who = caller(c);
    rc = blob ? core_kms_generate_data_key(c->app, &who, jstr(in, "KeyId"), cp, n,
                                           with_plaintext ? plain : NULL, blob, &bn, arn, &c->err)
              : err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    if (rc == 0) {
        *ret = json_pack("{s:o, s:s}", "CiphertextBlob", blob_json(blob, bn), "KeyId", arn);
        if (with_plaintext)
            json_object_set_new(*ret, "Plaintext", blob_json(plain, n));
    }
    crypto_wipe(plain, sizeof(plain));
    free(blob);
    free(pairs);
    return kms_rc(c, rc);
}

int kms_generate_data_key(struct api_call *c, json_t *in, json_t **ret)
{
    return data_key(c, in, ret, true);
}

int kms_generate_data_key_without_plaintext(struct api_call *c, json_t *in, json_t **ret)
{
    return data_key(c, in, ret, false);
}

/* ---- aliases ---- */

int kms_create_alias(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_alias_create(c->app, &who, jstr(in, "AliasName"), jstr(in, "TargetKeyId"),
                                 &c->err);
}

int kms_update_alias(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_alias_update(c->app, &who, jstr(in, "AliasName"), jstr(in, "TargetKeyId"),
                                 &c->err);
}

int kms_delete_alias(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_alias_delete(c->app, &who, jstr(in, "AliasName"), &c->err);
}

static int alias_item(void *ctx, const struct core_kms_alias *a)
{
    json_t *o = json_pack("{s:s, s:s}", "AliasName", a->name, "AliasArn", a->arn);
    if (o && a->key_id[0]) {
        json_object_set_new(o, "TargetKeyId", json_string(a->key_id));
        json_object_set_new(o, "CreationDate", json_integer(a->create_ms));
        json_object_set_new(o, "LastUpdatedDate", json_integer(a->update_ms));
    }
    return o ? page_add(ctx, o, a->name) : -ENOMEM;
}

int kms_list_aliases(struct api_call *c, json_t *in, json_t **ret)
{
    struct page p;
    char after[600];
    int rc = page_open(c, in, 50, 100, &p, after, sizeof(after));
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    rc = core_kms_aliases_each(c->app, &who, jstr(in, "KeyId"), after[0] ? after : NULL, alias_item,
                               &p, &c->err);
    return page_close(&p, rc, "Aliases", ret);
}

/* ---- grants ---- */

int kms_create_grant(struct api_call *c, json_t *in, json_t **ret)
{
    int rc = tokens_check(c, in);
    if (rc < 0)
        return rc;
    json_t *ol = json_object_get(in, "Operations");
    size_t nops = json_array_size(ol);
    const char **ops = calloc(nops ? nops : 1, sizeof(*ops));
    if (!ops)
        return err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    for (size_t i = 0; i < nops; i++)
        ops[i] = json_string_value(json_array_get(ol, i));
    json_t *cons = json_object_get(in, "Constraints");
    struct core_kms_context sctx, ectx;
    struct core_kms_pair *sp, *ep;
    struct core_kms_grant_spec spec = {
        .grantee = jstr(in, "GranteePrincipal"),
        .retiring = jstr(in, "RetiringPrincipal"),
        .name = jstr(in, "Name"),
        .ops = ops,
        .nops = nops,
        .subset = context_of(cons, "EncryptionContextSubset", &sctx, &sp),
        .equals = context_of(cons, "EncryptionContextEquals", &ectx, &ep),
    };
    char id[72], token[CORE_KMS_GRANT_TOKEN_MAX];
    struct core_caller who = caller(c);
    rc = core_kms_grant_create(c->app, &who, jstr(in, "KeyId"), &spec, id, token, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s, s:s}", "GrantToken", token, "GrantId", id);
    free(ops);
    free(sp);
    free(ep);
    return kms_rc(c, rc);
}

static json_t *context_json(const struct core_kms_context *ctx)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < ctx->n; i++)
        json_object_set_new(o, ctx->v[i].key, json_string(ctx->v[i].value));
    return o;
}

static int grant_item(void *ctx, const struct core_kms_grant *g)
{
    json_t *ops = json_array();
    for (size_t i = 0; i < g->nops; i++)
        json_array_append_new(ops, json_string(g->ops[i]));
    /* ListGrants names the key by its ARN. */
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o}", "KeyId", g->key_arn, "GrantId", g->id,
                          "CreationDate", (json_int_t)g->create_ms, "GranteePrincipal", g->grantee,
                          "IssuingAccount", g->issuer, "Operations", ops);
    if (!o)
        return -ENOMEM;
    if (g->name[0])
        json_object_set_new(o, "Name", json_string(g->name));
    if (g->retiring[0])
        json_object_set_new(o, "RetiringPrincipal", json_string(g->retiring));
    if (g->subset || g->equals) {
        json_t *cons = json_object();
        if (g->subset)
            json_object_set_new(cons, "EncryptionContextSubset", context_json(g->subset));
        if (g->equals)
            json_object_set_new(cons, "EncryptionContextEquals", context_json(g->equals));
        json_object_set_new(o, "Constraints", cons);
    }
    return page_add(ctx, o, g->id);
}

int kms_list_grants(struct api_call *c, json_t *in, json_t **ret)
{
    struct page p;
    char after[600];
    int rc = page_open(c, in, 50, 100, &p, after, sizeof(after));
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    rc = core_kms_grants_each(c->app, &who, jstr(in, "KeyId"), after[0] ? after : NULL,
                              jstr(in, "GrantId"), jstr(in, "GranteePrincipal"), grant_item, &p,
                              &c->err);
    return page_close(&p, rc, "Grants", ret);
}

int kms_revoke_grant(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return kms_rc(
        c, core_kms_grant_revoke(c->app, &who, jstr(in, "KeyId"), jstr(in, "GrantId"), &c->err));
}

int kms_retire_grant(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return kms_rc(c, core_kms_grant_retire(c->app, &who, jstr(in, "GrantToken"), jstr(in, "KeyId"),
                                           jstr(in, "GrantId"), &c->err));
}

/* ---- key policies ---- */

int kms_get_key_policy(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    char *policy = NULL;
    int rc = core_kms_policy_get(c->app, &who, jstr(in, "KeyId"), jstr(in, "PolicyName"), &policy,
                                 &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s, s:s}", "Policy", policy, "PolicyName", "default");
    free(policy);
    return rc;
}

int kms_put_key_policy(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    struct core_caller who = caller(c);
    return core_kms_policy_put(c->app, &who, jstr(in, "KeyId"), jstr(in, "PolicyName"),
                               jstr(in, "Policy"),
                               jbool(in, "BypassPolicyLockoutSafetyCheck", false), &c->err);
}

/* ---- tags ---- */

int kms_tag_resource(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    json_t *tl = json_object_get(in, "Tags");
    size_t n = json_array_size(tl);
    struct core_tag *tags = calloc(n ? n : 1, sizeof(*tags));
    if (!tags)
        return err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    for (size_t i = 0; i < n; i++) {
        tags[i].key = jstr(json_array_get(tl, i), "TagKey");
        tags[i].value = jstr(json_array_get(tl, i), "TagValue");
    }
    struct core_caller who = caller(c);
    int rc = core_kms_tag(c->app, &who, jstr(in, "KeyId"), tags, n, &c->err);
    free(tags);
    return rc;
}

int kms_untag_resource(struct api_call *c, json_t *in, json_t **ret)
{
    (void)ret;
    json_t *kl = json_object_get(in, "TagKeys");
    size_t n = json_array_size(kl);
    const char **keys = calloc(n ? n : 1, sizeof(*keys));
    if (!keys)
        return err_set(&c->err, -ENOMEM, "KMSInternalException", "out of memory");
    for (size_t i = 0; i < n; i++)
        keys[i] = json_string_value(json_array_get(kl, i));
    struct core_caller who = caller(c);
    int rc = core_kms_untag(c->app, &who, jstr(in, "KeyId"), keys, n, &c->err);
    free(keys);
    return rc;
}

static int tag_item(void *ctx, const char *key, const char *value)
{
    return page_add(ctx, json_pack("{s:s, s:s}", "TagKey", key, "TagValue", value), key);
}

int kms_list_resource_tags(struct api_call *c, json_t *in, json_t **ret)
{
    struct page p;
    char after[600];
    int rc = page_open(c, in, 50, 50, &p, after, sizeof(after));
    if (rc < 0)
        return rc;
    struct core_caller who = caller(c);
    rc = core_kms_tags_each(c->app, &who, jstr(in, "KeyId"), after[0] ? after : NULL, tag_item, &p,
                            &c->err);
    return page_close(&p, rc, "Tags", ret);
}

/* ---- EC2: EBS encryption by default ---- */

static int ebs_encryption(struct api_call *c, bool enable, json_t **ret)
{
    struct core_caller who = caller(c);
    int rc = core_ebs_encryption_set(c->app, &who, enable, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:b}", "EbsEncryptionByDefault", enable);
    return rc;
}

int ec2_enable_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    return ebs_encryption(c, true, ret);
}

int ec2_disable_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    return ebs_encryption(c, false, ret);
}

int ec2_get_ebs_encryption_by_default(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    struct core_caller who = caller(c);
    bool on;
    int rc = core_ebs_encryption_enabled(c->app, &who, &on, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:b}", "EbsEncryptionByDefault", on);
    return rc;
}

int ec2_get_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    struct core_caller who = caller(c);
    char arn[160];
    int rc = core_ebs_default_key_name(c->app, &who, arn, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s}", "KmsKeyId", arn);
    return rc;
}

int ec2_modify_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret)
{
    struct core_caller who = caller(c);
    char arn[160];
    int rc = core_ebs_default_key_set(c->app, &who, jstr(in, "KmsKeyId"), arn, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s}", "KmsKeyId", arn);
    return rc;
}

int ec2_reset_ebs_default_kms_key_id(struct api_call *c, json_t *in, json_t **ret)
{
    (void)in;
    struct core_caller who = caller(c);
    char arn[160];
    int rc = core_ebs_default_key_set(c->app, &who, NULL, arn, &c->err);
    if (rc == 0)
        *ret = json_pack("{s:s}", "KmsKeyId", arn);
    return rc;
}
