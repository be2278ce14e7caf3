/*
 * core_kms.c — the key service (AWS KMS's TrentService): symmetric keys per account and region,
 * their aliases, key policies, grants and tags; Encrypt, Decrypt, ReEncrypt and data keys; the
 * AWS-managed alias/aws/ebs key; and EC2's EBS encryption defaults, which name keys.
 *
 * Key material is 32 random bytes per key, sealed (AES-256-GCM, the key id as associated data)
 * under the master key's "kms" subkey before it reaches the database, opened only for the
 * duration of one operation and wiped after.  It never leaves this file and is never logged.
 *
 * Ciphertext blobs are amid's own versioned format:
 *
 *     version (1) | id length (1, = 36) | key id (36 ASCII) | nonce (12) | ciphertext | tag (16)
 *
 * sealed with AES-256-GCM under the key material, with the header and the encryption context
 * (pairs sorted by key, each string length-prefixed) as associated data: a blob names its key, so
 * Decrypt needs no KeyId, and a wrong context or any changed byte fails authentication.
 *
 * Access follows KMS: every operation on a key is authorised by the key's policy (a JSON document
 * evaluated here: Allow/Deny statements, AWS principals, kms: actions with wildcards, key ARN
 * resources, and the condition keys kms:CallerAccount, kms:ViaService and aws:PrincipalAccount),
 * or, for the operations grants can give, by a grant to the caller whose encryption context
 * constraints the request meets.  An explicit Deny wins.  Every request is its account's root
 * user (amid has no IAM users), so a policy principal matches by account.  Another account's key
 * is reached only through its ARN (key or alias), and only by the operations KMS allows across
 * accounts.
 *
 * A key scheduled for deletion is gone once the deployment clock passes its deletion date: reads
 * treat it as absent from then on, and the next write transaction of the key service deletes it
 * with its aliases, grants and tags.
 */
#include "core/core_int.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BLOB_VERSION  1
#define BLOB_HDR      (2 + 36)
#define BLOB_OVERHEAD (BLOB_HDR + AEAD_OVERHEAD)
#define MATERIAL_LEN  32

#define KEYS_MAX              100000
#define GRANTS_MAX            50000
#define GRANTS_PER_GRANTEE    500
#define TAGS_MAX              50
#define DAY_MS                (24LL * 3600 * 1000)
#define GRANT_TOKEN_VERSION   1
#define EBS_ALIAS             "alias/aws/ebs"
#define EBS_KEY_DESCRIPTION   "Default key that protects my EBS volumes when no other key is defined"
#define SETTING_EBS_ENCRYPTED "ebs_encryption_by_default"
#define SETTING_EBS_KEY       "ebs_default_kms_key"

/* ---- ids, ARNs and references ---- */

/* Whether `s` is a UUID (either case); copies it in lower case into `out` when it is. */
static bool uuid_parse(const char *s, char out[40])
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return false;
        out[i] = (char)tolower((unsigned char)s[i]);
    }
    out[36] = '\0';
    return true;
}

/* The account a principal names: a 12-digit account id or arn:aws:iam::ACCOUNT:root. */
static bool principal_account(const char *p, char out[16])
{
    const char *acct = p;
    char tmp[16];
    if (str_startswith(p, "arn:aws:iam::")) {
        const char *a = p + strlen("arn:aws:iam::");
        const char *colon = strchr(a, ':');
        if (!colon || colon - a != 12 || strcmp(colon, ":root") != 0)
            return false;
        memcpy(tmp, a, 12);
        tmp[12] = '\0';
        acct = tmp;
    }
    if (!account_id_valid(acct))
        return false;
    if (out)
        snprintf(out, 16, "%s", acct);
    return true;
}

static void key_arn(const char *region, const char *account, const char *id, char out[128])
{
    snprintf(out, 128, "arn:aws:kms:%s:%s:key/%s", region, account, id);
}

static void alias_arn(const char *region, const char *account, const char *name, char *out,
                      size_t outlen)
{
    snprintf(out, outlen, "arn:aws:kms:%s:%s:%s", region, account, name);
}

static void fill_key(const struct db_kms_key *k, struct core_kms_key *ret)
{
    memset(ret, 0, sizeof(*ret));
    snprintf(ret->id, sizeof(ret->id), "%s", k->id);
    key_arn(k->region, k->owner, k->id, ret->arn);
    snprintf(ret->account, sizeof(ret->account), "%s", k->owner);
    snprintf(ret->region, sizeof(ret->region), "%s", k->region);
    snprintf(ret->state, sizeof(ret->state), "%s", k->state);
    ret->aws_managed = strcmp(k->manager, "AWS") == 0;
}

static void fill_meta(const struct db_kms_key *k, struct core_kms_meta *ret)
{
    memset(ret, 0, sizeof(*ret));
    fill_key(k, &ret->key);
    snprintf(ret->description, sizeof(ret->description), "%s", k->description);
    snprintf(ret->key_usage, sizeof(ret->key_usage), "%s", k->key_usage);
    snprintf(ret->key_spec, sizeof(ret->key_spec), "%s", k->key_spec);
    snprintf(ret->origin, sizeof(ret->origin), "%s", k->origin);
    ret->create_ms = k->create_ms;
    ret->deletion_ms = strcmp(k->state, "PendingDeletion") == 0 ? k->deletion_ms : 0;
}

/* Whether a key still exists on the deployment clock (its deletion date not passed). */
static bool key_live(const struct db_kms_key *k, int64_t now)
{
    return strcmp(k->state, "PendingDeletion") != 0 || k->deletion_ms > now;
}

/* A KeyId parameter, parsed. */
struct kref {
    bool arn;
    bool alias;
    char region[32];
    char account[16];
    char id[40];     /* a key id, when !alias */
    char name[264];  /* "alias/NAME", when alias */
    char shown[300]; /* how errors show it: an ARN */
};

#define R_ALIAS (1u << 0) /* alias names and alias ARNs are accepted */
#define R_CROSS (1u << 1) /* another account's key may be named by ARN */

static int invalid_keyid(struct err *e, const char *ref)
{
    return err_set(e, -ENOENT, "NotFoundException", "Invalid keyId '%.300s'", ref);
}

static int ref_parse(const struct core_caller *who, const char *ref, struct kref *r, struct err *e)
{
    memset(r, 0, sizeof(*r));
    if (!ref || !*ref)
        return err_set(e, -EINVAL, "ValidationException", "KeyId must not be empty");
    if (strlen(ref) > 300 || !str_utf8_valid(ref, strlen(ref)))
        return invalid_keyid(e, "");
    if (str_startswith(ref, "arn:")) {
        /* arn:aws:kms:REGION:ACCOUNT:key/ID or ...:alias/NAME */
        char f[6][300];
        const char *p = ref;
        int n = 0;
        for (; n < 6; n++) {
            const char *c = n < 5 ? strchr(p, ':') : p + strlen(p);
            if (!c || (size_t)(c - p) >= sizeof(f[0]))
                break;
            memcpy(f[n], p, (size_t)(c - p));
            f[n][c - p] = '\0';
            p = *c ? c + 1 : c;
        }
        if (n != 6 || strcmp(f[1], "aws") != 0 || strcmp(f[2], "kms") != 0 || !f[3][0] ||
            strlen(f[3]) >= sizeof(r->region) || !account_id_valid(f[4]))
            return err_set(e, -EINVAL, "InvalidArnException", "ARN %.300s is not a valid ARN", ref);
        r->arn = true;
        snprintf(r->region, sizeof(r->region), "%s", f[3]);
        snprintf(r->account, sizeof(r->account), "%s", f[4]);
        if (str_startswith(f[5], "alias/")) {
            r->alias = true;
            snprintf(r->name, sizeof(r->name), "%s", f[5]);
        } else if (!str_startswith(f[5], "key/") || !uuid_parse(f[5] + 4, r->id)) {
            return err_set(e, -EINVAL, "InvalidArnException", "ARN %.300s is not a valid ARN", ref);
        }
    } else {
        snprintf(r->region, sizeof(r->region), "%s", who->region);
        snprintf(r->account, sizeof(r->account), "%s", who->account_id);
        if (str_startswith(ref, "alias/")) {
            r->alias = true;
            snprintf(r->name, sizeof(r->name), "%s", ref);
        } else if (!uuid_parse(ref, r->id)) {
            return invalid_keyid(e, ref);
        }
    }
    if (r->alias)
        alias_arn(r->region, r->account, r->name, r->shown, sizeof(r->shown));
    else
        snprintf(r->shown, sizeof(r->shown), "arn:aws:kms:%s:%s:key/%s", r->region, r->account,
                 r->id);
    return 0;
}

/* Finds the key `ref` names as `who` may name it (`flags`): NotFoundException for anything that
 * is not a live key there (another account's key named without an ARN, or by an operation that
 * does not cross accounts, included). */
static int resolve(struct app *app, struct db *db, const struct core_caller *who, const char *ref,
                   unsigned flags, struct db_kms_key *k, struct err *e)
{
    struct kref r;
    int rc = ref_parse(who, ref, &r, e);
    if (rc < 0)
        return rc;
    if (r.alias && !(flags & R_ALIAS))
        return invalid_keyid(e, ref);
    if (strcmp(r.region, who->region) != 0 ||
        (strcmp(r.account, who->account_id) != 0 && !(flags & R_CROSS)))
        return err_set(e, -ENOENT, "NotFoundException", "%s '%s' does not exist",
                       r.alias ? "Alias" : "Key", r.shown);
    char id[40];
    if (r.alias) {
        struct db_kms_alias a;
        rc = db_kms_alias_get(db, r.region, r.account, r.name, &a);
        if (rc == -ENOENT)
            return err_set(e, rc, "NotFoundException", "Alias %s is not found.", r.shown);
        if (rc < 0)
            return err_set(e, rc, "KMSInternalException", "cannot read aliases");
        snprintf(id, sizeof(id), "%s", a.key_id);
    } else {
        snprintf(id, sizeof(id), "%s", r.id);
    }
    rc = db_kms_key_get(db, id, k);
    if (rc == 0 && (strcmp(k->owner, r.account) != 0 || strcmp(k->region, r.region) != 0 ||
                    !key_live(k, core_now_ms(app))))
        rc = -ENOENT;
    if (rc == -ENOENT)
        return err_set(e, rc, "NotFoundException", "%s '%s' does not exist",
                       r.alias ? "Alias" : "Key", r.shown);
    if (rc < 0)
        return err_set(e, rc, "KMSInternalException", "cannot read keys");
    return 0;
}

/* ---- encryption contexts ---- */

static int pair_cmp(const void *a, const void *b)
{
    return strcmp(((const struct core_kms_pair *)a)->key, ((const struct core_kms_pair *)b)->key);
}

/* Appends the context in canonical order (sorted by key, each string length-prefixed). */
static int ctx_canonical(const struct core_kms_context *ctx, struct buf *b)
{
    size_t n = ctx ? ctx->n : 0;
    struct core_kms_pair *v = n ? malloc(n * sizeof(*v)) : NULL;
    if (n && !v)
        return -ENOMEM;
    if (n)
        memcpy(v, ctx->v, n * sizeof(*v));
    if (n > 1)
        qsort(v, n, sizeof(*v), pair_cmp);
    uint8_t be[4] = { (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n };
    int rc = buf_append(b, be, 4);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        for (int s = 0; rc == 0 && s < 2; s++) {
            const char *str = s ? v[i].value : v[i].key;
            size_t l = strlen(str);
            uint8_t lb[4] = { (uint8_t)(l >> 24), (uint8_t)(l >> 16), (uint8_t)(l >> 8),
                              (uint8_t)l };
            rc = buf_append(b, lb, 4);
            if (rc == 0)
                rc = buf_append(b, str, l);
        }
    }
    free(v);
    return rc;
}

static const char *ctx_get(const struct core_kms_context *ctx, const char *key)
{
    for (size_t i = 0; ctx && i < ctx->n; i++)
        if (strcmp(ctx->v[i].key, key) == 0)
            return ctx->v[i].value;
    return NULL;
}

/* Whether every pair of `sub` is in `ctx`. */
static bool ctx_contains(const struct core_kms_context *ctx, const struct core_kms_context *sub)
{
    for (size_t i = 0; sub && i < sub->n; i++) {
        const char *v = ctx_get(ctx, sub->v[i].key);
        if (!v || strcmp(v, sub->v[i].value) != 0)
            return false;
    }
    return true;
}

static bool ctx_equal(const struct core_kms_context *a, const struct core_kms_context *b)
{
    return (a ? a->n : 0) == (b ? b->n : 0) && ctx_contains(a, b);
}

/* A JSON object of a context (new reference). */
static json_t *ctx_json(const struct core_kms_context *ctx)
{
    json_t *o = json_object();
    for (size_t i = 0; o && ctx && i < ctx->n; i++)
        json_object_set_new(o, ctx->v[i].key, json_string(ctx->v[i].value));
    return o;
}

/* A context borrowing the strings of JSON object `o` (which must outlive it); *pairs is freed
 * by the caller. */
static int ctx_from_json(json_t *o, struct core_kms_context *ret, struct core_kms_pair **pairs)
{
    size_t n = json_object_size(o);
    struct core_kms_pair *v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    const char *k;
    json_t *val;
    size_t i = 0;
    json_object_foreach(o, k, val)
    {
        if (!json_is_string(val)) {
            free(v);
            return -EBADMSG;
        }
        v[i].key = k;
        v[i].value = json_string_value(val);
        i++;
    }
    ret->v = v;
    ret->n = i;
    *pairs = v;
    return 0;
}

/* ---- key material and blobs ---- */

static void material_aad(const char *id, char out[64])
{
    snprintf(out, 64, "amid-kms-key:%s", id);
}

static int material_seal(struct app *app, const char *id, const uint8_t plain[MATERIAL_LEN],
                         struct db_kms_key *k)
{
    uint8_t wrap[32];
    char aad[64];
    core_subkey(app, "kms", wrap);
    material_aad(id, aad);
    int rc = crypto_aead_seal(wrap, aad, strlen(aad), plain, MATERIAL_LEN, k->material);
    crypto_wipe(wrap, sizeof(wrap));
    k->material_len = MATERIAL_LEN + AEAD_OVERHEAD;
    return rc;
}

static int material_open(struct app *app, const struct db_kms_key *k, uint8_t out[MATERIAL_LEN],
                         struct err *e)
{
    uint8_t wrap[32];
    char aad[64];
    core_subkey(app, "kms", wrap);
    material_aad(k->id, aad);
    int rc = k->material_len == MATERIAL_LEN + AEAD_OVERHEAD
                 ? crypto_aead_open(wrap, aad, strlen(aad), k->material, k->material_len, out)
                 : -EBADMSG;
    crypto_wipe(wrap, sizeof(wrap));
    if (rc < 0)
        return err_set(e, -EIO, "KMSInternalException", "The key material of %s cannot be unsealed",
                       k->id);
    return 0;
}

/* The associated data of a blob: its header and the canonical context. */
static int blob_aad(const uint8_t hdr[BLOB_HDR], const struct core_kms_context *ctx, struct buf *b)
{
    int rc = buf_append(b, hdr, BLOB_HDR);
    return rc == 0 ? ctx_canonical(ctx, b) : rc;
}

/* Encrypts `n` bytes under key `k`; `out` holds n + BLOB_OVERHEAD bytes. */
static int blob_seal(struct app *app, const struct db_kms_key *k,
                     const struct core_kms_context *ctx, const uint8_t *plain, size_t n,
                     uint8_t *out, size_t *outlen, struct err *e)
{
    uint8_t key[MATERIAL_LEN];
    int rc = material_open(app, k, key, e);
    if (rc < 0)
        return rc;
    out[0] = BLOB_VERSION;
    out[1] = 36;
    memcpy(out + 2, k->id, 36);
    struct buf aad;
    buf_init(&aad, 1 << 20);
    rc = blob_aad(out, ctx, &aad);
    if (rc == 0)
        rc = crypto_aead_seal(key, aad.data, aad.len, plain, n, out + BLOB_HDR);
    crypto_wipe(key, sizeof(key));
    buf_free(&aad);
    if (rc < 0)
        return err_set(e, rc, "KMSInternalException", "cannot encrypt");
    *outlen = n + BLOB_OVERHEAD;
    return 0;
}

/* The key id a blob names, or -EBADMSG for anything that is not one of our blobs. */
static int blob_key_id(const uint8_t *blob, size_t n, char id[40])
{
    if (!blob || n < BLOB_OVERHEAD || blob[0] != BLOB_VERSION || blob[1] != 36)
        return -EBADMSG;
    char raw[37];
    memcpy(raw, blob + 2, 36);
    raw[36] = '\0';
    if (!uuid_parse(raw, id) || strcmp(raw, id) != 0)
        return -EBADMSG;
    return 0;
}

/* Decrypts a blob under key `k` into `out` (n - BLOB_OVERHEAD bytes). */
static int blob_open(struct app *app, const struct db_kms_key *k,
                     const struct core_kms_context *ctx, const uint8_t *blob, size_t n,
                     uint8_t *out, size_t *outlen, struct err *e)
{
    uint8_t key[MATERIAL_LEN];
    int rc = material_open(app, k, key, e);
    if (rc < 0)
        return rc;
    struct buf aad;
    buf_init(&aad, 1 << 20);
    rc = blob_aad(blob, ctx, &aad);
    if (rc == 0)
        rc = crypto_aead_open(key, aad.data, aad.len, blob + BLOB_HDR, n - BLOB_HDR, out);
    crypto_wipe(key, sizeof(key));
    buf_free(&aad);
    if (rc < 0) {
        crypto_wipe(out, n - BLOB_OVERHEAD);
        return err_set(e, -EBADMSG, "InvalidCiphertextException",
                       "The ciphertext is invalid, or the encryption context does not match");
    }
    *outlen = n - BLOB_OVERHEAD;
    return 0;
}

/* ---- key policies ---- */

enum pol { POL_NONE, POL_ALLOW, POL_DENY };

struct pol_req {
    const char *account;  /* the caller's account (its root user) */
    const char *action;   /* "kms:Encrypt" */
    const char *resource; /* the key's ARN */
    const char *via;      /* kms:ViaService, NULL when called directly */
};

static int malformed(struct err *e, const char *what)
{
    return err_set(e, -EINVAL, "MalformedPolicyDocumentException", "%s", what);
}

/* Calls fn on each string of a string-or-list value; false when it is neither or a list member
 * is not a string. */
static bool each_str(json_t *v, bool (*fn)(const char *s, void *arg), void *arg, bool *any)
{
    *any = false;
    if (json_is_string(v)) {
        *any = fn(json_string_value(v), arg);
        return true;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return false;
        if (fn(json_string_value(s), arg))
            *any = true;
    }
    return true;
}

static bool aws_principal_ok(const char *s, void *arg)
{
    (void)arg;
    return strcmp(s, "*") == 0 || principal_account(s, NULL);
}

static bool service_principal_ok(const char *s, void *arg)
{
    (void)arg;
    return str_endswith(s, ".amazonaws.com") && strlen(s) > strlen(".amazonaws.com");
}

static bool any_string(const char *s, void *arg)
{
    (void)s;
    (void)arg;
    return true;
}

static bool all_ok(json_t *v, bool (*fn)(const char *s, void *arg))
{
    bool any;
    if (json_is_string(v))
        return fn(json_string_value(v), NULL);
    if (!each_str(v, fn, NULL, &any))
        return false;
    for (size_t i = 0; i < json_array_size(v); i++)
        if (!fn(json_string_value(json_array_get(v, i)), NULL))
            return false;
    return true;
}

static bool action_ok(const char *s, void *arg)
{
    (void)arg;
    if (strcmp(s, "*") == 0)
        return true;
    if (strncasecmp(s, "kms:", 4) != 0 || strlen(s) == 4 || strlen(s) > 128)
        return false;
    for (const char *p = s + 4; *p; p++)
        if (!isalpha((unsigned char)*p) && *p != '*' && *p != '?')
            return false;
    return true;
}

static bool resource_ok(const char *s, void *arg)
{
    (void)arg;
    return strcmp(s, "*") == 0 || str_startswith(s, "arn:aws:kms:");
}

static const char *const cond_ops[] = { "StringEquals", "StringNotEquals", "StringLike",
                                        "StringNotLike" };
static const char *const cond_keys[] = { "kms:CallerAccount", "kms:ViaService",
                                         "aws:PrincipalAccount" };

static bool in_table(const char *s, const char *const *t, size_t n, bool icase)
{
    for (size_t i = 0; i < n; i++)
        if (icase ? strcasecmp(s, t[i]) == 0 : strcmp(s, t[i]) == 0)
            return true;
    return false;
}

/* Checks a policy document is one amid can evaluate exactly. */
static int policy_check(json_t *doc, struct err *e)
{
    if (!json_is_object(doc))
        return malformed(e, "The policy is not a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v)
    {
        if (strcmp(k, "Version") == 0) {
            if (!json_is_string(v) || (strcmp(json_string_value(v), "2012-10-17") != 0 &&
                                       strcmp(json_string_value(v), "2008-10-17") != 0))
                return malformed(e, "The policy's Version is not 2012-10-17 or 2008-10-17");
        } else if (strcmp(k, "Id") == 0) {
            if (!json_is_string(v))
                return malformed(e, "The policy's Id is not a string");
        } else if (strcmp(k, "Statement") != 0) {
            return malformed(e, "The policy has an element other than Version, Id and Statement");
        }
    }
    json_t *st = json_object_get(doc, "Statement");
    if (!st || (!json_is_object(st) && (!json_is_array(st) || json_array_size(st) == 0)))
        return malformed(e, "The policy has no Statement");
    size_t n = json_is_array(st) ? json_array_size(st) : 1;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(st) ? json_array_get(st, i) : st;
        if (!json_is_object(s))
            return malformed(e, "A policy statement is not a JSON object");
        json_object_foreach(s, k, v)
        {
            if (strcmp(k, "NotPrincipal") == 0 || strcmp(k, "NotAction") == 0 ||
                strcmp(k, "NotResource") == 0)
                return malformed(e, "amid does not evaluate NotPrincipal, NotAction or "
                                    "NotResource; use Principal, Action and Resource");
            if (strcmp(k, "Sid") != 0 && strcmp(k, "Effect") != 0 && strcmp(k, "Principal") != 0 &&
                strcmp(k, "Action") != 0 && strcmp(k, "Resource") != 0 &&
                strcmp(k, "Condition") != 0)
                return malformed(e, "A policy statement has an unknown element");
        }
        json_t *sid = json_object_get(s, "Sid");
        if (sid && !json_is_string(sid))
            return malformed(e, "A statement's Sid is not a string");
        const char *effect = json_string_value(json_object_get(s, "Effect"));
        if (!effect || (strcmp(effect, "Allow") != 0 && strcmp(effect, "Deny") != 0))
            return malformed(e, "A statement's Effect is not Allow or Deny");
        json_t *pr = json_object_get(s, "Principal");
        if (!pr)
            return malformed(e, "A statement has no Principal");
        if (json_is_string(pr)) {
            if (strcmp(json_string_value(pr), "*") != 0)
                return malformed(e, "Policy contains a statement with one or more invalid "
                                    "principals.");
        } else if (json_is_object(pr) && json_object_size(pr) > 0) {
            json_object_foreach(pr, k, v)
            {
                bool ok = strcmp(k, "AWS") == 0       ? all_ok(v, aws_principal_ok)
                          : strcmp(k, "Service") == 0 ? all_ok(v, service_principal_ok)
                                                      : false;
                if (!ok)
                    return malformed(e, "Policy contains a statement with one or more invalid "
                                        "principals.");
            }
        } else {
            return malformed(e, "Policy contains a statement with one or more invalid "
                                "principals.");
        }
        json_t *ac = json_object_get(s, "Action");
        if (!ac || !all_ok(ac, action_ok))
            return malformed(e, "Policy contains a statement with one or more invalid actions.");
        json_t *rs = json_object_get(s, "Resource");
        if (!rs || !all_ok(rs, resource_ok))
            return malformed(e, "Policy contains a statement with one or more invalid "
                                "resources.");
        json_t *cond = json_object_get(s, "Condition");
        if (cond) {
            if (!json_is_object(cond))
                return malformed(e, "A statement's Condition is not a JSON object");
            const char *op;
            json_t *body;
            json_object_foreach(cond, op, body)
            {
                if (!in_table(op, cond_ops, ARRAY_SIZE(cond_ops), false))
                    return malformed(e, "amid evaluates only the condition operators "
                                        "StringEquals, StringNotEquals, StringLike and "
                                        "StringNotLike");
                if (!json_is_object(body) || json_object_size(body) == 0)
                    return malformed(e, "A condition operator has no condition keys");
                const char *ck;
                json_t *cv;
                json_object_foreach(body, ck, cv)
                {
                    bool any;
                    if (!in_table(ck, cond_keys, ARRAY_SIZE(cond_keys), true))
                        return malformed(e, "amid evaluates only the condition keys "
                                            "kms:CallerAccount, kms:ViaService and "
                                            "aws:PrincipalAccount");
                    if (!each_str(cv, any_string, NULL, &any))
                        return malformed(e, "A condition's values are not strings");
                }
            }
        }
    }
    return 0;
}

struct match_arg {
    const char *s;
    bool icase;
    bool wildcard;
};

static bool match_one(const char *pattern, void *arg)
{
    const struct match_arg *m = arg;
    if (!m->s)
        return false;
    if (!m->wildcard)
        return strcmp(pattern, m->s) == 0;
    if (!m->icase)
        return str_wildcard_match(pattern, m->s);
    char p[160], s[160];
    snprintf(p, sizeof(p), "%s", pattern);
    snprintf(s, sizeof(s), "%s", m->s);
    for (char *c = p; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    for (char *c = s; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return str_wildcard_match(p, s);
}

static bool any_match(json_t *v, const char *s, bool icase, bool wildcard)
{
    struct match_arg m = { s, icase, wildcard };
    bool any;
    return each_str(v, match_one, &m, &any) && any;
}

static bool aws_principal_match(const char *p, void *arg)
{
    char acct[16];
    return strcmp(p, "*") == 0 || (principal_account(p, acct) && strcmp(acct, arg) == 0);
}

static bool principal_matches(json_t *pr, const char *account)
{
    if (json_is_string(pr))
        return strcmp(json_string_value(pr), "*") == 0;
    bool any;
    json_t *aws = json_object_get(pr, "AWS");
    /* Service principals never sign amid's requests. */
    return aws && each_str(aws, aws_principal_match, (void *)account, &any) && any;
}

static bool condition_holds(json_t *cond, const struct pol_req *r)
{
    const char *op;
    json_t *body;
    json_object_foreach(cond, op, body)
    {
        bool like = strstr(op, "Like") != NULL, neg = strstr(op, "Not") != NULL;
        const char *ck;
        json_t *cv;
        json_object_foreach(body, ck, cv)
        {
            const char *val = strcasecmp(ck, "kms:ViaService") == 0 ? r->via : r->account;
            bool m = val && any_match(cv, val, false, like);
            if (neg ? m : !m)
                return false;
        }
    }
    return true;
}

static enum pol policy_eval(json_t *doc, const struct pol_req *r)
{
    json_t *st = json_object_get(doc, "Statement");
    size_t n = json_is_array(st) ? json_array_size(st) : 1;
    enum pol out = POL_NONE;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_is_array(st) ? json_array_get(st, i) : st;
        if (!principal_matches(json_object_get(s, "Principal"), r->account) ||
            !any_match(json_object_get(s, "Action"), r->action, true, true) ||
            !any_match(json_object_get(s, "Resource"), r->resource, false, true))
            continue;
        json_t *cond = json_object_get(s, "Condition");
        if (cond && !condition_holds(cond, r))
            continue;
        if (strcmp(json_string_value(json_object_get(s, "Effect")), "Deny") == 0)
            return POL_DENY;
        out = POL_ALLOW;
    }
    return out;
}

/* Parses and checks a policy text; the caller decrefs *ret. */
static int policy_parse(const char *text, json_t **ret, struct err *e)
{
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return malformed(e, "The policy is not valid JSON");
    int rc = policy_check(doc, e);
    if (rc < 0) {
        json_decref(doc);
        return rc;
    }
    *ret = doc;
    return 0;
}

/* The lockout safety check: the policy must let `account` call PutKeyPolicy later. */
static int policy_lockout_check(json_t *doc, const char *account, const char *arn, struct err *e)
{
    struct pol_req r = { account, "kms:PutKeyPolicy", arn, NULL };
    if (policy_eval(doc, &r) != POL_ALLOW)
        return malformed(e, "The new key policy will not allow you to update the key policy in "
                            "the future.");
    return 0;
}

static char *default_policy(const char *account)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"key-default-1\",\n"
                 "  \"Statement\" : [ {\n    \"Sid\" : \"Enable IAM User Permissions\",\n"
                 "    \"Effect\" : \"Allow\",\n    \"Principal\" : {\n"
                 "      \"AWS\" : \"arn:aws:iam::%s:root\"\n    },\n"
                 "    \"Action\" : \"kms:*\",\n    \"Resource\" : \"*\"\n  } ]\n}",
                 account) < 0)
        return NULL;
    return s;
}

/* The policy AWS gives alias/aws/ebs's key: the account may use it through EC2 and read its
 * metadata directly, nothing else. */
static char *ebs_policy(const char *account, const char *region)
{
    char *s = NULL;
    if (asprintf(&s,
                 "{\n  \"Version\" : \"2012-10-17\",\n  \"Id\" : \"auto-ebs-2\",\n"
                 "  \"Statement\" : [ {\n"
                 "    \"Sid\" : \"Allow access through EBS for all principals in the account "
                 "that are authorized to use EBS\",\n"
                 "    \"Effect\" : \"Allow\",\n    \"Principal\" : {\n      \"AWS\" : \"*\"\n"
                 "    },\n    \"Action\" : [ \"kms:Encrypt\", \"kms:Decrypt\", "
                 "\"kms:ReEncrypt*\", \"kms:GenerateDataKey*\", \"kms:CreateGrant\", "
                 "\"kms:DescribeKey\" ],\n    \"Resource\" : \"*\",\n"
                 "    \"Condition\" : {\n      \"StringEquals\" : {\n"
                 "        \"kms:CallerAccount\" : \"%s\",\n"
                 "        \"kms:ViaService\" : \"ec2.%s.amazonaws.com\"\n      }\n    }\n"
                 "  }, {\n    \"Sid\" : \"Allow direct access to key metadata to the account\",\n"
                 "    \"Effect\" : \"Allow\",\n    \"Principal\" : {\n"
                 "      \"AWS\" : \"arn:aws:iam::%s:root\"\n    },\n"
                 "    \"Action\" : [ \"kms:Describe*\", \"kms:Get*\", \"kms:List*\", "
                 "\"kms:RevokeGrant\" ],\n    \"Resource\" : \"*\"\n  } ]\n}",
                 account, region, account) < 0)
        return NULL;
    return s;
}

/* ---- grants ---- */

/* The grant operations of symmetric encryption keys, in KMS's order. */
static const char *const grant_ops[] = {
    "Decrypt",       "Encrypt",     "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom", "ReEncryptTo", "CreateGrant",     "RetireGrant",
    "DescribeKey",
};
/* Operations whose requests carry an encryption context (constraints apply to them). */
static bool op_has_context(const char *op)
{
    return strcmp(op, "CreateGrant") != 0 && strcmp(op, "RetireGrant") != 0 &&
           strcmp(op, "DescribeKey") != 0;
}

static bool ops_has(const char *list, const char *op)
{
    size_t n = strlen(op);
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t l = c ? (size_t)(c - p) : strlen(p);
        if (l == n && strncmp(p, op, n) == 0)
            return true;
        p = c ? c + 1 : NULL;
    }
    return false;
}

/* A grant's constraints, parsed. */
struct gcons {
    json_t *doc;
    struct core_kms_context subset, equals;
    struct core_kms_pair *sp, *ep;
    bool has_subset, has_equals;
};

static void gcons_free(struct gcons *c)
{
    free(c->sp);
    free(c->ep);
    json_decref(c->doc);
    memset(c, 0, sizeof(*c));
}

static int gcons_parse(const char *text, struct gcons *c)
{
    memset(c, 0, sizeof(*c));
    if (!text[0])
        return 0;
    json_error_t je;
    c->doc = json_loads(text, 0, &je);
    if (!c->doc)
        return -EBADMSG;
    json_t *s = json_object_get(c->doc, "EncryptionContextSubset");
    json_t *q = json_object_get(c->doc, "EncryptionContextEquals");
    int rc = 0;
    if (s) {
        c->has_subset = true;
        rc = ctx_from_json(s, &c->subset, &c->sp);
    }
    if (rc == 0 && q) {
        c->has_equals = true;
        rc = ctx_from_json(q, &c->equals, &c->ep);
    }
    if (rc < 0)
        gcons_free(c);
    return rc;
}

/* Whether a request with context `ctx` meets a grant's constraints. */
static bool gcons_met(const struct gcons *c, const struct core_kms_context *ctx)
{
    if (c->has_subset && !ctx_contains(ctx, &c->subset))
        return false;
    if (c->has_equals && !ctx_equal(ctx, &c->equals))
        return false;
    return true;
}

/* Whether child constraints are at least as strict as a parent grant's. */
static bool gcons_stricter(const struct gcons *parent, const struct core_kms_grant_spec *child)
{
    if (parent->has_equals && (!child->equals || !ctx_equal(child->equals, &parent->equals)))
        return false;
    if (parent->has_subset) {
        const struct core_kms_context *c = child->equals ? child->equals : child->subset;
        if (!c || !ctx_contains(c, &parent->subset))
            return false;
        if (child->equals && child->subset && !ctx_contains(child->subset, &parent->subset) &&
            !ctx_contains(child->equals, &parent->subset))
            return false;
    }
    return true;
}

static bool grantee_is(const char *principal, const char *account)
{
    char a[16];
    return principal[0] && principal_account(principal, a) && strcmp(a, account) == 0;
}

struct grant_find {
    const char *account;
    const char *op;
    const struct core_kms_context *ctx;
    const struct core_kms_grant_spec *child; /* CreateGrant through a grant */
    bool found;
};

static int grant_find_cb(void *vctx, const struct db_kms_grant *g)
{
    struct grant_find *f = vctx;
    if (!grantee_is(g->grantee, f->account) || !ops_has(g->operations, f->op))
        return 0;
    struct gcons c;
    if (gcons_parse(g->constraints, &c) < 0)
        return 0;
    bool ok;
    if (f->child) {
        ok = gcons_stricter(&c, f->child);
        for (size_t i = 0; ok && i < f->child->nops; i++)
            ok = ops_has(g->operations, f->child->ops[i]);
    } else {
        ok = !op_has_context(f->op) || gcons_met(&c, f->ctx);
    }
    gcons_free(&c);
    if (ok) {
        f->found = true;
        return 1;
    }
    return 0;
}

/* ---- authorisation ---- */

static int denied(struct err *e, const char *account, const char *action, const char *arn,
                  bool explicit_deny)
{
    return err_set(e, -EACCES, "AccessDeniedException",
                   "User: arn:aws:iam::%s:root is not authorized to perform: %s on resource: %s "
                   "%s",
                   account, action, arn,
                   explicit_deny ? "with an explicit deny in a resource-based policy"
                                 : "because no resource-based policy allows the action");
}

static void via_ec2(const char *region, char out[96])
{
    snprintf(out, 96, "ec2.%s.amazonaws.com", region);
}

/* Whether `who` may perform `action` on key `k`: by its policy, or by a grant giving
 * `grant_op` (NULL: grants cannot give this action) whose constraints `ctx` meets.  `child`
 * is the grant being created when action is kms:CreateGrant. */
static int authorize(struct db *db, const struct core_caller *who, const struct db_kms_key *k,
                     const char *action, const char *grant_op, const struct core_kms_context *ctx,
                     bool ec2, const struct core_kms_grant_spec *child, struct err *e)
{
    char arn[128], via[96];
    key_arn(k->region, k->owner, k->id, arn);
    via_ec2(who->region, via);
    char *text = NULL;
    int rc = db_kms_policy_get(db, k->id, &text);
    if (rc < 0)
        return err_set(e, rc, "KMSInternalException", "cannot read the key policy");
    json_error_t je;
    json_t *doc = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    free(text);
    struct pol_req r = { who->account_id, action, arn, ec2 ? via : NULL };
    enum pol p = doc && policy_check(doc, NULL) == 0 ? policy_eval(doc, &r) : POL_NONE;
    json_decref(doc);
    if (p == POL_DENY)
        return denied(e, who->account_id, action, arn, true);
    if (p == POL_ALLOW)
        return 0;
    if (grant_op) {
        struct grant_find f = { who->account_id, grant_op, ctx, child, false };
        rc = db_kms_grant_each(db, k->id, NULL, grant_find_cb, &f);
        if (rc < 0)
            return err_set(e, rc, "KMSInternalException", "cannot read grants");
        if (f.found)
            return 0;
    }
    return denied(e, who->account_id, action, arn, false);
}

/* The key must be Enabled (cryptographic operations). */
static int usable(const struct db_kms_key *k, struct err *e)
{
    char arn[128];
    key_arn(k->region, k->owner, k->id, arn);
    if (strcmp(k->state, "Disabled") == 0)
        return err_set(e, -EPERM, "DisabledException", "%s is disabled.", arn);
    if (strcmp(k->state, "Enabled") != 0)
        return err_set(e, -EPERM, "KMSInvalidStateException", "%s is %s.", arn,
                       strcmp(k->state, "PendingDeletion") == 0 ? "pending deletion" : k->state);
    return 0;
}

/* The key must not be pending deletion (management operations). */
static int not_pending(const struct db_kms_key *k, struct err *e)
{
    if (strcmp(k->state, "PendingDeletion") == 0) {
        char arn[128];
        key_arn(k->region, k->owner, k->id, arn);
        return err_set(e, -EPERM, "KMSInvalidStateException", "%s is pending deletion.", arn);
    }
    return 0;
}

/* ---- transactions ---- */

struct kms_tx {
    int (*fn)(struct app *app, struct db *db, void *ctx);
    void *ctx;
};

static int kms_tx_fn(struct app *app, struct db *db, void *vctx)
{
    struct kms_tx *t = vctx;
    /* Keys whose deletion date has passed go first, with everything that names them. */
    int rc = db_kms_key_purge(db, core_now_ms(app));
    if (rc < 0)
        return rc;
    return t->fn(app, db, t->ctx);
}

/* Runs fn in a write transaction of the key service. */
static int kms_tx(struct app *app, int (*fn)(struct app *app, struct db *db, void *ctx), void *ctx)
{
    struct kms_tx t = { fn, ctx };
    return core_tx(app, kms_tx_fn, &t);
}

static int internal(struct err *e, int rc, const char *what)
{
    if (e && e->code)
        return rc;
    return err_set(e, rc < 0 ? rc : -EIO, "KMSInternalException", "%s", what);
}

/* ---- creating keys ---- */

/* Builds a new key row (material sealed) in `k`. */
static int key_new(struct app *app, const struct core_caller *who, const char *manager,
                   const char *description, struct db_kms_key *k, struct err *e)
{
    memset(k, 0, sizeof(*k));
    rand_uuid(k->id);
    snprintf(k->region, sizeof(k->region), "%s", who->region);
    snprintf(k->owner, sizeof(k->owner), "%s", who->account_id);
    snprintf(k->description, sizeof(k->description), "%s", description ? description : "");
    snprintf(k->key_usage, sizeof(k->key_usage), "ENCRYPT_DECRYPT");
    snprintf(k->key_spec, sizeof(k->key_spec), "SYMMETRIC_DEFAULT");
    snprintf(k->origin, sizeof(k->origin), "AWS_KMS");
    snprintf(k->manager, sizeof(k->manager), "%s", manager);
    snprintf(k->state, sizeof(k->state), "Enabled");
    k->create_ms = core_now_ms(app);
    uint8_t m[MATERIAL_LEN];
    int rc = rand_bytes(m, sizeof(m));
    if (rc == 0)
        rc = material_seal(app, k->id, m, k);
    crypto_wipe(m, sizeof(m));
    if (rc < 0)
        return err_set(e, rc, "KMSInternalException", "cannot make key material");
    return 0;
}

struct ebs_ctx {
    const struct core_caller *who;
    struct db_kms_key k;
    struct err *e;
};

static int ebs_lookup(struct app *app, struct db *db, const struct core_caller *who,
                      struct db_kms_key *k)
{
    struct db_kms_alias a;
    int rc = db_kms_alias_get(db, who->region, who->account_id, EBS_ALIAS, &a);
    if (rc == 0)
        rc = db_kms_key_get(db, a.key_id, k);
    if (rc == 0 && !key_live(k, core_now_ms(app)))
        rc = -ENOENT;
    return rc;
}

static int ebs_tx(struct app *app, struct db *db, void *vctx)
{
    struct ebs_ctx *c = vctx;
    int rc = ebs_lookup(app, db, c->who, &c->k);
    if (rc != -ENOENT)
        return rc < 0 ? internal(c->e, rc, "cannot read aliases") : 0;
    rc = key_new(app, c->who, "AWS", EBS_KEY_DESCRIPTION, &c->k, c->e);
    if (rc < 0)
        return rc;
    char *policy = ebs_policy(c->who->account_id, c->who->region);
    if (!policy)
        return internal(c->e, -ENOMEM, "out of memory");
    rc = db_kms_key_insert(db, &c->k, policy);
    free(policy);
    struct db_kms_alias a = { 0 };
    snprintf(a.region, sizeof(a.region), "%s", c->who->region);
    snprintf(a.owner, sizeof(a.owner), "%s", c->who->account_id);
    snprintf(a.name, sizeof(a.name), EBS_ALIAS);
    snprintf(a.key_id, sizeof(a.key_id), "%s", c->k.id);
    a.create_ms = a.update_ms = c->k.create_ms;
    if (rc == 0)
        rc = db_kms_alias_insert(db, &a);
    return rc < 0 ? internal(c->e, rc, "cannot record the key") : 0;
}

static int ebs_key_row(struct app *app, const struct core_caller *who, struct db_kms_key *ret,
                       struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = ebs_lookup(app, db, who, ret);
    core_db_put(app, db);
    if (rc == 0)
        return 0;
    if (rc != -ENOENT)
        return internal(e, rc, "cannot read aliases");
    struct ebs_ctx c = { who, { { 0 } }, e };
    rc = kms_tx(app, ebs_tx, &c);
    if (rc < 0)
        return internal(e, rc, "cannot create the key");
    *ret = c.k;
    return 0;
}

int core_kms_ebs_key(struct app *app, const struct core_caller *who, struct core_kms_key *ret,
                     struct err *e)
{
    struct db_kms_key k;
    int rc = ebs_key_row(app, who, &k, e);
    if (rc == 0)
        fill_key(&k, ret);
    return rc;
}

/* Creates the caller's alias/aws/ebs key when `ref` names it and it does not exist yet. */
static int managed_ensure(struct app *app, const struct core_caller *who, const char *ref,
                          struct err *e)
{
    char arn[160];
    alias_arn(who->region, who->account_id, EBS_ALIAS, arn, sizeof(arn));
    if (!ref || (strcmp(ref, EBS_ALIAS) != 0 && strcmp(ref, arn) != 0))
        return 0;
    struct core_kms_key k;
    return core_kms_ebs_key(app, who, &k, e);
}

/* KMS's tag rules: keys of 1-128 and values of 0-256 characters of letters, digits, spaces
 * and _ . : / = + - @; the aws: prefix reserved. */
static int tag_check(const char *key, const char *value, struct err *e)
{
    for (int s = 0; s < 2; s++) {
        const char *t = s ? value : key;
        if (!t || !str_utf8_valid(t, strlen(t)))
            return err_set(e, -EINVAL, "TagException", "Tag keys and values must be UTF-8");
        for (const unsigned char *p = (const unsigned char *)t; *p; p++)
            if (*p < 0x80 && !isalnum(*p) && !isspace(*p) && !strchr("_.:/=+-@", *p))
                return err_set(e, -EINVAL, "TagException",
                               "Tag %s '%.128s' contains characters other than letters, digits, "
                               "spaces and _ . : / = + - @",
                               s ? "value" : "key", t);
    }
    size_t kn = 0, vn = 0;
    for (const char *p = key; *p; p++)
        kn += ((unsigned char)*p & 0xc0) != 0x80;
    for (const char *p = value; *p; p++)
        vn += ((unsigned char)*p & 0xc0) != 0x80;
    if (kn < 1 || kn > 128 || vn > 256)
        return err_set(e, -EINVAL, "TagException",
                       "Tag keys are 1 to 128 characters and values 0 to 256");
    if (strncasecmp(key, "aws:", 4) == 0)
        return err_set(e, -EINVAL, "TagException",
                       "Tags beginning with aws: are reserved for AWS use");
    return 0;
}

static int tags_check(const struct core_tag *tags, size_t n, struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        int rc = tag_check(tags[i].key, tags[i].value, e);
        if (rc < 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(tags[i].key, tags[j].key) == 0)
                return err_set(e, -EINVAL, "TagException", "Duplicate tag key '%.128s'",
                               tags[i].key);
    }
    if (n > TAGS_MAX)
        return err_set(e, -EINVAL, "LimitExceededException", "A key may have at most %d tags",
                       TAGS_MAX);
    return 0;
}

struct create_ctx {
    const struct core_caller *who;
    const struct core_kms_create *p;
    struct db_kms_key k;
    const char *policy;
    struct err *e;
};

static int create_tx(struct app *app, struct db *db, void *vctx)
{
    struct create_ctx *c = vctx;
    (void)app;
    int n = db_kms_key_count(db, c->who->region, c->who->account_id);
    if (n < 0)
        return internal(c->e, n, "cannot count keys");
    if (n >= KEYS_MAX)
        return err_set(c->e, -EDQUOT, "LimitExceededException",
                       "An account may have at most %d keys in a region", KEYS_MAX);
    int rc = db_kms_key_insert(db, &c->k, c->policy);
    for (size_t i = 0; rc == 0 && i < c->p->ntags; i++)
        rc = db_kms_tag_put(db, c->k.id, c->p->tags[i].key, c->p->tags[i].value);
    return rc < 0 ? internal(c->e, rc, "cannot record the key") : 0;
}

int core_kms_create_key(struct app *app, const struct core_caller *who,
                        const struct core_kms_create *p, struct core_kms_meta *ret, struct err *e)
{
    if (p->key_spec && p->cmk_spec)
        return err_set(e, -EINVAL, "ValidationException",
                       "You cannot specify KeySpec and CustomerMasterKeySpec in the same "
                       "request. CustomerMasterKeySpec is deprecated.");
    const char *spec = p->key_spec ? p->key_spec : p->cmk_spec;
    if (spec && strcmp(spec, "SYMMETRIC_DEFAULT") != 0)
        return err_set(e, -EOPNOTSUPP, "UnsupportedOperationException",
                       "KeySpec %s is not supported: amid implements symmetric encryption keys "
                       "(SYMMETRIC_DEFAULT) only",
                       spec);
    if (p->key_usage && strcmp(p->key_usage, "ENCRYPT_DECRYPT") != 0)
        return err_set(e, -EINVAL, "ValidationException",
                       "KeyUsage %s is not compatible with KeySpec SYMMETRIC_DEFAULT",
                       p->key_usage);
    if (p->custom_key_store_id)
        return err_set(e, -ENOENT, "CustomKeyStoreNotFoundException",
                       "Custom key store %.64s does not exist", p->custom_key_store_id);
    if (p->origin && strcmp(p->origin, "AWS_KMS") != 0)
        return err_set(e, -EOPNOTSUPP, "UnsupportedOperationException",
                       "Origin %s is not supported: amid generates key material (AWS_KMS) only",
                       p->origin);
    if (p->xks_key_id)
        return err_set(e, -EINVAL, "ValidationException",
                       "XksKeyId is valid only with Origin EXTERNAL_KEY_STORE");
    if (p->multi_region == 1)
        return err_set(e, -EOPNOTSUPP, "UnsupportedOperationException",
                       "Multi-Region keys are not supported by amid");
    if (p->description && strlen(p->description) > DB_KMS_DESCRIPTION_MAX)
        return err_set(e, -EINVAL, "ValidationException", "Description is longer than %d bytes",
                       DB_KMS_DESCRIPTION_MAX);
    int rc = tags_check(p->tags, p->ntags, e);
    if (rc < 0)
        return rc;
    struct create_ctx c = { who, p, { { 0 } }, NULL, e };
    rc = key_new(app, who, "CUSTOMER", p->description, &c.k, e);
    if (rc < 0)
        return rc;
    char arn[128];
    key_arn(who->region, who->account_id, c.k.id, arn);
    char *owned = NULL;
    if (p->policy) {
        json_t *doc;
        rc = policy_parse(p->policy, &doc, e);
        if (rc < 0)
            return rc;
        if (!p->bypass_lockout)
            rc = policy_lockout_check(doc, who->account_id, arn, e);
        json_decref(doc);
        if (rc < 0)
            return rc;
        c.policy = p->policy;
    } else {
        owned = default_policy(who->account_id);
        if (!owned)
            return internal(e, -ENOMEM, "out of memory");
        c.policy = owned;
    }
    if (who->dry_run)
        rc = core_dry_run(e);
    else
        rc = kms_tx(app, create_tx, &c);
    free(owned);
    if (rc < 0)
        return rc;
    fill_meta(&c.k, ret);
    return 0;
}

/* ---- reading keys ---- */

int core_kms_describe_key(struct app *app, const struct core_caller *who, const char *ref,
                          struct core_kms_meta *ret, struct err *e)
{
    int rc = managed_ensure(app, who, ref, e);
    if (rc < 0)
        return rc;
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    rc = resolve(app, db, who, ref, R_ALIAS | R_CROSS, &k, e);
    if (rc == 0)
        rc = authorize(db, who, &k, "kms:DescribeKey", "DescribeKey", NULL, false, NULL, e);
    core_db_put(app, db);
    if (rc == 0)
        fill_meta(&k, ret);
    return rc;
}

struct keys_ctx {
    int64_t now;
    int (*fn)(void *ctx, const struct core_kms_key *k);
    void *ctx;
};

static int keys_cb(void *vctx, const struct db_kms_key *k)
{
    struct keys_ctx *c = vctx;
    if (!key_live(k, c->now))
        return 0;
    struct core_kms_key out;
    fill_key(k, &out);
    return c->fn(c->ctx, &out);
}

int core_kms_keys_each(struct app *app, const struct core_caller *who, const char *after,
                       int (*fn)(void *ctx, const struct core_kms_key *k), void *ctx)
{
    struct keys_ctx c = { core_now_ms(app), fn, ctx };
    struct db *db = core_db_get(app);
    int rc = db_kms_key_each(db, who->region, who->account_id, after, keys_cb, &c);
    core_db_put(app, db);
    return rc;
}

/* ---- changing keys ---- */

enum key_op { KOP_ENABLE, KOP_DISABLE, KOP_SCHEDULE, KOP_CANCEL };

struct keyop_ctx {
    const struct core_caller *who;
    const char *ref;
    enum key_op op;
    int64_t days;
    struct db_kms_key k;
    struct err *e;
};

static int keyop_tx(struct app *app, struct db *db, void *vctx)
{
    struct keyop_ctx *c = vctx;
    static const char *const actions[] = { "kms:EnableKey", "kms:DisableKey",
                                           "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion" };
    int rc = resolve(app, db, c->who, c->ref, 0, &c->k, c->e);
    if (rc == 0)
        rc = authorize(db, c->who, &c->k, actions[c->op], NULL, NULL, false, NULL, c->e);
    if (rc < 0)
        return rc;
    char arn[128];
    key_arn(c->k.region, c->k.owner, c->k.id, arn);
    switch (c->op) {
    case KOP_ENABLE:
    case KOP_DISABLE:
        rc = not_pending(&c->k, c->e);
        if (rc == 0)
            snprintf(c->k.state, sizeof(c->k.state), c->op == KOP_ENABLE ? "Enabled" : "Disabled");
        break;
    case KOP_SCHEDULE:
        rc = not_pending(&c->k, c->e);
        if (rc == 0) {
            snprintf(c->k.state, sizeof(c->k.state), "PendingDeletion");
            c->k.pending_days = c->days;
            c->k.deletion_ms = core_now_ms(app) + c->days * DAY_MS;
        }
        break;
    case KOP_CANCEL:
        if (strcmp(c->k.state, "PendingDeletion") != 0)
            rc = err_set(c->e, -EPERM, "KMSInvalidStateException",
                         "%s is not pending deletion (current state: %s).", arn, c->k.state);
        if (rc == 0) {
            snprintf(c->k.state, sizeof(c->k.state), "Disabled");
            c->k.deletion_ms = 0;
            c->k.pending_days = 0;
        }
        break;
    }
    if (rc < 0)
        return rc;
    if (c->who->dry_run)
        return core_dry_run(c->e);
    rc = db_kms_key_update(db, &c->k);
    return rc < 0 ? internal(c->e, rc, "cannot update the key") : 0;
}

static int key_op(struct app *app, const struct core_caller *who, const char *ref, enum key_op op,
                  int64_t days, struct db_kms_key *ret, struct err *e)
{
    struct keyop_ctx c = { who, ref, op, days, { { 0 } }, e };
    int rc = kms_tx(app, keyop_tx, &c);
    if (rc < 0)
        return internal(e, rc, "cannot update the key");
    if (ret)
        *ret = c.k;
    return 0;
}

int core_kms_key_enable(struct app *app, const struct core_caller *who, const char *ref,
                        bool enable, struct err *e)
{
    return key_op(app, who, ref, enable ? KOP_ENABLE : KOP_DISABLE, 0, NULL, e);
}

int core_kms_key_schedule_deletion(struct app *app, const struct core_caller *who, const char *ref,
                                   int64_t days, struct core_kms_meta *ret, struct err *e)
{
    if (days == 0)
        days = 30;
    if (days < 7 || days > 30)
        return err_set(e, -EINVAL, "ValidationException",
                       "1 validation error detected: Value '%lld' at 'pendingWindowInDays' failed "
                       "to satisfy constraint: Member must have value between 7 and 30",
                       (long long)days);
    struct db_kms_key k;
    int rc = key_op(app, who, ref, KOP_SCHEDULE, days, &k, e);
    if (rc == 0) {
        fill_meta(&k, ret);
    }
    return rc;
}

int core_kms_key_cancel_deletion(struct app *app, const struct core_caller *who, const char *ref,
                                 struct core_kms_key *ret, struct err *e)
{
    struct db_kms_key k;
    int rc = key_op(app, who, ref, KOP_CANCEL, 0, &k, e);
    if (rc == 0)
        fill_key(&k, ret);
    return rc;
}

/* ---- cryptographic operations ---- */

/* Resolves, authorises and checks the state of a key for one cryptographic use. */
static int crypto_key(struct app *app, const struct core_caller *who, const char *ref,
                      const char *action, const char *grant_op, const struct core_kms_context *ctx,
                      bool ec2, struct db_kms_key *k, struct err *e)
{
    int rc = managed_ensure(app, who, ref, e);
    if (rc < 0)
        return rc;
    struct db *db = core_db_get(app);
    rc = resolve(app, db, who, ref, R_ALIAS | R_CROSS, k, e);
    if (rc == 0)
        rc = authorize(db, who, k, action, grant_op, ctx, ec2, NULL, e);
    core_db_put(app, db);
    if (rc == 0)
        rc = usable(k, e);
    return rc;
}

int core_kms_encrypt(struct app *app, const struct core_caller *who, const char *ref,
                     const struct core_kms_context *ctx, const uint8_t *plain, size_t n,
                     uint8_t *blob, size_t *bloblen, char ret_arn[128], struct err *e)
{
    if (n == 0 || n > CORE_KMS_PLAINTEXT_MAX)
        return err_set(e, -EINVAL, "ValidationException", "Plaintext must be 1 to %d bytes",
                       CORE_KMS_PLAINTEXT_MAX);
    struct db_kms_key k;
    int rc = crypto_key(app, who, ref, "kms:Encrypt", "Encrypt", ctx, false, &k, e);
    if (rc < 0)
        return rc;
    if (who->dry_run)
        return core_dry_run(e);
    rc = blob_seal(app, &k, ctx, plain, n, blob, bloblen, e);
    if (rc == 0)
        key_arn(k.region, k.owner, k.id, ret_arn);
    return rc;
}

/* The key a blob names, as a source of decryption: `ref` (when given) must name it. */
static int source_key(struct app *app, const struct core_caller *who, const char *ref,
                      const uint8_t *blob, size_t n, const char *action, const char *grant_op,
                      const struct core_kms_context *ctx, bool ec2, struct db_kms_key *k,
                      struct err *e)
{
    char id[40];
    if (n > CORE_KMS_CIPHERTEXT_MAX || blob_key_id(blob, n, id) < 0)
        return err_set(e, -EBADMSG, "InvalidCiphertextException",
                       "The ciphertext is not a valid ciphertext blob");
    int rc = managed_ensure(app, who, ref, e);
    if (rc < 0)
        return rc;
    struct db *db = core_db_get(app);
    if (ref) {
        rc = resolve(app, db, who, ref, R_ALIAS | R_CROSS, k, e);
        if (rc == 0 && strcmp(k->id, id) != 0)
            rc = err_set(e, -EINVAL, "IncorrectKeyException",
                         "The key ID in the request does not identify a CMK that can perform "
                         "this operation.");
    } else {
        rc = db_kms_key_get(db, id, k);
        if (rc == 0 && (strcmp(k->region, who->region) != 0 || !key_live(k, core_now_ms(app))))
            rc = -ENOENT;
        if (rc == -ENOENT)
            rc = err_set(e, -EACCES, "AccessDeniedException",
                         "The ciphertext refers to a customer master key that does not exist, "
                         "does not exist in this region, or you are not allowed to access.");
        else if (rc < 0)
            rc = internal(e, rc, "cannot read keys");
    }
    if (rc == 0)
        rc = authorize(db, who, k, action, grant_op, ctx, ec2, NULL, e);
    core_db_put(app, db);
    if (rc == 0)
        rc = usable(k, e);
    return rc;
}

int core_kms_decrypt(struct app *app, const struct core_caller *who, const char *ref,
                     const struct core_kms_context *ctx, const uint8_t *blob, size_t n,
                     bool ignore_ciphertext, uint8_t *plain, size_t *plen, char ret_arn[128],
                     struct err *e)
{
    struct db_kms_key k;
    int rc = source_key(app, who, ref, blob, n, "kms:Decrypt", "Decrypt", ctx, false, &k, e);
    if (rc < 0)
        return rc;
    if (who->dry_run && ignore_ciphertext)
        return core_dry_run(e);
    rc = blob_open(app, &k, ctx, blob, n, plain, plen, e);
    if (rc == 0 && who->dry_run) {
        crypto_wipe(plain, *plen);
        return core_dry_run(e);
    }
    if (rc == 0)
        key_arn(k.region, k.owner, k.id, ret_arn);
    return rc;
}

int core_kms_reencrypt(struct app *app, const struct core_caller *who, const char *src_ref,
                       const struct core_kms_context *src_ctx, const uint8_t *blob, size_t n,
                       bool ignore_ciphertext, const char *dst_ref,
                       const struct core_kms_context *dst_ctx, uint8_t *out, size_t *outlen,
                       char ret_src_arn[128], char ret_dst_arn[128], struct err *e)
{
    struct db_kms_key src, dst;
    int rc = source_key(app, who, src_ref, blob, n, "kms:ReEncryptFrom", "ReEncryptFrom", src_ctx,
                        false, &src, e);
    if (rc == 0)
        rc = crypto_key(app, who, dst_ref, "kms:ReEncryptTo", "ReEncryptTo", dst_ctx, false, &dst,
                        e);
    if (rc < 0)
        return rc;
    if (who->dry_run && ignore_ciphertext)
        return core_dry_run(e);
    uint8_t *plain = malloc(n);
    if (!plain)
        return internal(e, -ENOMEM, "out of memory");
    size_t pn = 0;
    rc = blob_open(app, &src, src_ctx, blob, n, plain, &pn, e);
    if (rc == 0 && who->dry_run)
        rc = core_dry_run(e);
    if (rc == 0)
        rc = blob_seal(app, &dst, dst_ctx, plain, pn, out, outlen, e);
    crypto_wipe(plain, n);
    free(plain);
    if (rc == 0) {
        key_arn(src.region, src.owner, src.id, ret_src_arn);
        key_arn(dst.region, dst.owner, dst.id, ret_dst_arn);
    }
    return rc;
}

static int data_key(struct app *app, const struct core_caller *who, const char *ref,
                    const struct core_kms_context *ctx, size_t nbytes, uint8_t *plain, bool ec2,
                    uint8_t *blob, size_t *bloblen, char ret_arn[128], struct err *e)
{
    if (nbytes < 1 || nbytes > 1024)
        return err_set(e, -EINVAL, "ValidationException",
                       "NumberOfBytes must be between 1 and 1024");
    const char *op = plain ? "GenerateDataKey" : "GenerateDataKeyWithoutPlaintext";
    char action[64];
    snprintf(action, sizeof(action), "kms:%s", op);
    struct db_kms_key k;
    int rc = crypto_key(app, who, ref, action, op, ctx, ec2, &k, e);
    if (rc < 0)
        return rc;
    if (who->dry_run)
        return core_dry_run(e);
    uint8_t tmp[1024];
    rc = rand_bytes(tmp, nbytes);
    if (rc < 0)
        rc = internal(e, rc, "cannot generate random bytes");
    if (rc == 0)
        rc = blob_seal(app, &k, ctx, tmp, nbytes, blob, bloblen, e);
    if (rc == 0 && plain)
        memcpy(plain, tmp, nbytes);
    crypto_wipe(tmp, sizeof(tmp));
    if (rc == 0)
        key_arn(k.region, k.owner, k.id, ret_arn);
    return rc;
}

int core_kms_generate_data_key(struct app *app, const struct core_caller *who, const char *ref,
                               const struct core_kms_context *ctx, size_t nbytes, uint8_t *plain,
                               uint8_t *blob, size_t *bloblen, char ret_arn[128], struct err *e)
{
    return data_key(app, who, ref, ctx, nbytes, plain, false, blob, bloblen, ret_arn, e);
}

/* ---- what EC2 calls ---- */

int core_kms_key_for_use(struct app *app, const struct core_caller *who, const char *ref,
                         struct core_kms_key *ret, struct err *e)
{
    struct db_kms_key k;
    int rc = crypto_key(app, who, ref, "kms:GenerateDataKey", "GenerateDataKey", NULL, true, &k, e);
    if (rc < 0)
        return rc;
    struct db *db = core_db_get(app);
    rc = authorize(db, who, &k, "kms:Decrypt", "Decrypt", NULL, true, NULL, e);
    core_db_put(app, db);
    if (rc == 0)
        fill_key(&k, ret);
    return rc;
}

int core_kms_data_key_new(struct app *app, const struct core_caller *who, const char *key_arn,
                          uint8_t plain[32], uint8_t *blob, size_t *bloblen, struct err *e)
{
    struct core_caller w = { who->account_id, who->region, false };
    char arn[128];
    return data_key(app, &w, key_arn, NULL, 32, plain, true, blob, bloblen, arn, e);
}

int core_kms_data_key_open(struct app *app, const struct core_caller *who, const char *key_arn,
                           const uint8_t *blob, size_t bloblen, uint8_t plain[32], struct err *e)
{
    struct core_caller w = { who->account_id, who->region, false };
    if (!key_arn)
        return err_set(e, -EINVAL, "ValidationException", "A key is required");
    struct db_kms_key k;
    int rc =
        source_key(app, &w, key_arn, blob, bloblen, "kms:Decrypt", "Decrypt", NULL, true, &k, e);
    if (rc < 0)
        return rc;
    if (bloblen != 32 + BLOB_OVERHEAD)
        return err_set(e, -EBADMSG, "InvalidCiphertextException",
                       "The ciphertext is not a data key's");
    size_t n;
    return blob_open(app, &k, NULL, blob, bloblen, plain, &n, e);
}

/* ---- EBS encryption by default ---- */

static int setting_get(struct app *app, const struct core_caller *who, const char *key, char *out,
                       size_t outlen, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = db_account_setting_get(db, who->account_id, who->region, key, out, outlen);
    core_db_put(app, db);
    if (rc == -ENOENT) {
        out[0] = '\0';
        rc = 0;
    }
    return rc < 0 ? err_set(e, rc, "InternalError", "cannot read account settings") : 0;
}

static int setting_set(struct app *app, const struct core_caller *who, const char *key,
                       const char *value, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = db_account_setting_set(db, who->account_id, who->region, key, value);
    core_db_put(app, db);
    return rc < 0 ? err_set(e, rc, "InternalError", "cannot write account settings") : 0;
}

int core_ebs_encryption_defaults(struct app *app, const struct core_caller *who, bool *enabled,
                                 struct core_kms_key *key, struct err *e)
{
    char v[160];
    int rc = setting_get(app, who, SETTING_EBS_ENCRYPTED, v, sizeof(v), e);
    if (rc < 0)
        return rc;
    *enabled = strcmp(v, "true") == 0;
    rc = setting_get(app, who, SETTING_EBS_KEY, v, sizeof(v), e);
    if (rc < 0)
        return rc;
    if (!v[0])
        return core_kms_ebs_key(app, who, key, e);
    struct kref r;
    struct core_caller w = { who->account_id, who->region, false };
    if (ref_parse(&w, v, &r, e) < 0 || r.alias)
        return err_set(e, -EIO, "InternalError", "the default key setting is damaged");
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    rc = db_kms_key_get(db, r.id, &k);
    core_db_put(app, db);
    if (rc == 0 && key_live(&k, core_now_ms(app))) {
        fill_key(&k, key);
        return 0;
    }
    if (rc < 0 && rc != -ENOENT)
        return err_set(e, rc, "InternalError", "cannot read keys");
    memset(key, 0, sizeof(*key));
    snprintf(key->id, sizeof(key->id), "%s", r.id);
    snprintf(key->arn, sizeof(key->arn), "%s", v);
    snprintf(key->account, sizeof(key->account), "%s", r.account);
    snprintf(key->region, sizeof(key->region), "%s", r.region);
    return 0;
}

int core_ebs_encryption_enabled(struct app *app, const struct core_caller *who, bool *ret,
                                struct err *e)
{
    char v[16];
    int rc = setting_get(app, who, SETTING_EBS_ENCRYPTED, v, sizeof(v), e);
    if (rc == 0)
        *ret = strcmp(v, "true") == 0;
    return rc;
}

int core_ebs_encryption_set(struct app *app, const struct core_caller *who, bool enabled,
                            struct err *e)
{
    if (who->dry_run)
        return core_dry_run(e);
    return setting_set(app, who, SETTING_EBS_ENCRYPTED, enabled ? "true" : "false", e);
}

int core_ebs_default_key_set(struct app *app, const struct core_caller *who, const char *ref,
                             char ret_arn[160], struct err *e)
{
    if (!ref) {
        if (who->dry_run)
            return core_dry_run(e);
        int rc = setting_set(app, who, SETTING_EBS_KEY, "", e);
        if (rc == 0)
            alias_arn(who->region, who->account_id, EBS_ALIAS, ret_arn, 160);
        return rc;
    }
    struct core_kms_key k;
    struct err ke = { 0 };
    int rc = core_kms_key_for_use(app, who, ref, &k, &ke);
    if (rc < 0)
        return err_set(e, -EINVAL, "InvalidParameterValue", "KmsKeyId %.300s: %s (%s)", ref, ke.msg,
                       ke.code ? ke.code : "error");
    if (who->dry_run)
        return core_dry_run(e);
    rc = setting_set(app, who, SETTING_EBS_KEY, k.arn, e);
    if (rc == 0)
        snprintf(ret_arn, 160, "%s", k.arn);
    return rc;
}

int core_ebs_default_key_name(struct app *app, const struct core_caller *who, char ret_arn[160],
                              struct err *e)
{
    char v[160];
    int rc = setting_get(app, who, SETTING_EBS_KEY, v, sizeof(v), e);
    if (rc < 0)
        return rc;
    if (v[0])
        snprintf(ret_arn, 160, "%s", v);
    else
        alias_arn(who->region, who->account_id, EBS_ALIAS, ret_arn, 160);
    return 0;
}

/* ---- aliases ---- */

static int alias_name_check(const char *name, struct err *e)
{
    if (!str_startswith(name, "alias/"))
        return err_set(e, -EINVAL, "ValidationException",
                       "Alias must start with the prefix \"alias/\". Please see "
                       "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html");
    if (!name[6])
        return err_set(e, -EINVAL, "InvalidAliasNameException", "Alias name %s is empty", name);
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("/_-", *p))
            return err_set(e, -EINVAL, "ValidationException",
                           "%.256s contains invalid characters for an alias", name);
    if (strlen(name) > 256)
        return err_set(e, -EINVAL, "ValidationException",
                       "Alias names are at most 256 "
                       "characters");
    return 0;
}

static int alias_reserved(const struct core_caller *who, const char *name, const char *action,
                          struct err *e)
{
    if (!str_startswith(name, "alias/aws/"))
        return 0;
    char arn[320];
    alias_arn(who->region, who->account_id, name, arn, sizeof(arn));
    return err_set(e, -EACCES, "AccessDeniedException",
                   "User: arn:aws:iam::%s:root is not authorized to perform: %s on resource: %s "
                   "because the alias/aws/ prefix is reserved for AWS managed keys",
                   who->account_id, action, arn);
}

/* The target of CreateAlias / UpdateAlias: the caller's own key, by id or key ARN. */
static int alias_target(struct app *app, struct db *db, const struct core_caller *who,
                        const char *target, const char *action, struct db_kms_key *k, struct err *e)
{
    if (str_startswith(target, "alias/") ||
        (str_startswith(target, "arn:") && strstr(target, ":alias/")))
        return err_set(e, -EINVAL, "ValidationException",
                       "Aliases must refer to keys. Not aliases");
    int rc = resolve(app, db, who, target, 0, k, e);
    if (rc == 0)
        rc = authorize(db, who, k, action, NULL, NULL, false, NULL, e);
    if (rc == 0)
        rc = not_pending(k, e);
    return rc;
}

enum alias_op { AOP_CREATE, AOP_UPDATE, AOP_DELETE };

struct alias_ctx {
    const struct core_caller *who;
    const char *name;
    const char *target;
    enum alias_op op;
    struct err *e;
};

static int alias_tx(struct app *app, struct db *db, void *vctx)
{
    struct alias_ctx *c = vctx;
    static const char *const actions[] = { "kms:CreateAlias", "kms:UpdateAlias",
                                           "kms:DeleteAlias" };
    const char *action = actions[c->op];
    char arn[320];
    alias_arn(c->who->region, c->who->account_id, c->name, arn, sizeof(arn));
    struct db_kms_alias a;
    int rc = db_kms_alias_get(db, c->who->region, c->who->account_id, c->name, &a);
    if (rc < 0 && rc != -ENOENT)
        return internal(c->e, rc, "cannot read aliases");
    bool exists = rc == 0;
    struct db_kms_key cur;
    if (exists) {
        /* An alias whose key's deletion date passed went with it. */
        rc = db_kms_key_get(db, a.key_id, &cur);
        if (rc == -ENOENT || (rc == 0 && !key_live(&cur, core_now_ms(app))))
            exists = false;
        else if (rc < 0)
            return internal(c->e, rc, "cannot read keys");
    }
    if (c->op == AOP_CREATE) {
        rc = alias_reserved(c->who, c->name, action, c->e);
        if (rc < 0)
            return rc;
        if (exists)
            return err_set(c->e, -EEXIST, "AlreadyExistsException",
                           "An alias with the name %s already exists", arn);
    } else {
        if (!exists)
            return err_set(c->e, -ENOENT, "NotFoundException", "Alias %s is not found.", arn);
        rc = alias_reserved(c->who, c->name, action, c->e);
        if (rc == 0)
            rc = authorize(db, c->who, &cur, action, NULL, NULL, false, NULL, c->e);
        if (rc < 0)
            return rc;
    }
    struct db_kms_key k;
    if (c->op != AOP_DELETE) {
        rc = alias_target(app, db, c->who, c->target, action, &k, c->e);
        if (rc < 0)
            return rc;
    }
    if (c->who->dry_run)
        return core_dry_run(c->e);
    int64_t now = core_now_ms(app);
    if (c->op == AOP_CREATE) {
        struct db_kms_alias n = { 0 };
        snprintf(n.region, sizeof(n.region), "%s", c->who->region);
        snprintf(n.owner, sizeof(n.owner), "%s", c->who->account_id);
        snprintf(n.name, sizeof(n.name), "%s", c->name);
        snprintf(n.key_id, sizeof(n.key_id), "%s", k.id);
        n.create_ms = n.update_ms = now;
        /* A stale row of a key deleted but not yet purged is replaced. */
        db_kms_alias_delete(db, n.region, n.owner, n.name);
        rc = db_kms_alias_insert(db, &n);
    } else if (c->op == AOP_UPDATE) {
        rc = db_kms_alias_retarget(db, c->who->region, c->who->account_id, c->name, k.id, now);
    } else {
        rc = db_kms_alias_delete(db, c->who->region, c->who->account_id, c->name);
    }
    return rc < 0 ? internal(c->e, rc, "cannot record the alias") : 0;
}

static int alias_op(struct app *app, const struct core_caller *who, const char *name,
                    const char *target, enum alias_op op, struct err *e)
{
    int rc = alias_name_check(name ? name : "", e);
    if (rc < 0)
        return rc;
    struct alias_ctx c = { who, name, target, op, e };
    rc = kms_tx(app, alias_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot record the alias") : 0;
}

int core_kms_alias_create(struct app *app, const struct core_caller *who, const char *name,
                          const char *target, struct err *e)
{
    return alias_op(app, who, name, target, AOP_CREATE, e);
}

int core_kms_alias_update(struct app *app, const struct core_caller *who, const char *name,
                          const char *target, struct err *e)
{
    return alias_op(app, who, name, target, AOP_UPDATE, e);
}

int core_kms_alias_delete(struct app *app, const struct core_caller *who, const char *name,
                          struct err *e)
{
    return alias_op(app, who, name, NULL, AOP_DELETE, e);
}

struct aliases_ctx {
    struct app *app;
    struct db *db;
    const struct core_caller *who;
    const char *after;
    bool predefined; /* alias/aws/ebs is still to be listed without a target */
    int (*fn)(void *ctx, const struct core_kms_alias *a);
    void *ctx;
};

static int predefined_emit(struct aliases_ctx *c)
{
    c->predefined = false;
    char arn[160];
    alias_arn(c->who->region, c->who->account_id, EBS_ALIAS, arn, sizeof(arn));
    struct core_kms_alias a = { EBS_ALIAS, arn, "", 0, 0 };
    return c->fn(c->ctx, &a);
}

static int aliases_cb(void *vctx, const struct db_kms_alias *a)
{
    struct aliases_ctx *c = vctx;
    struct db_kms_key k;
    int rc = db_kms_key_get(c->db, a->key_id, &k);
    if (rc == -ENOENT || (rc == 0 && !key_live(&k, core_now_ms(c->app))))
        return 0;
    if (rc < 0)
        return rc;
    if (c->predefined && strcmp(EBS_ALIAS, a->name) < 0) {
        rc = predefined_emit(c);
        if (rc)
            return rc;
    }
    if (strcmp(a->name, EBS_ALIAS) == 0)
        c->predefined = false;
    char arn[320];
    alias_arn(a->region, a->owner, a->name, arn, sizeof(arn));
    struct core_kms_alias out = { a->name, arn, a->key_id, a->create_ms, a->update_ms };
    return c->fn(c->ctx, &out);
}

int core_kms_aliases_each(struct app *app, const struct core_caller *who, const char *key_ref,
                          const char *after, int (*fn)(void *ctx, const struct core_kms_alias *a),
                          void *ctx, struct err *e)
{
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    int rc = 0;
    if (key_ref)
        rc = resolve(app, db, who, key_ref, 0, &k, e);
    struct aliases_ctx c = { app, db, who, after, false, fn, ctx };
    if (rc == 0) {
        c.predefined = !key_ref && (!after || strcmp(EBS_ALIAS, after) > 0);
        rc = db_kms_alias_each(db, who->region, who->account_id, key_ref ? k.id : NULL, after,
                               aliases_cb, &c);
        if (rc == 0 && c.predefined)
            rc = predefined_emit(&c);
        if (rc < 0)
            rc = internal(e, rc, "cannot read aliases");
    }
    core_db_put(app, db);
    return rc;
}

/* ---- grants ---- */

static void grant_token(struct app *app, const char *grant_id, char out[CORE_KMS_GRANT_TOKEN_MAX])
{
    uint8_t raw[1 + 32 + 32], key[32];
    raw[0] = GRANT_TOKEN_VERSION;
    hex_decode(grant_id, raw + 1, 32);
    core_subkey(app, "kms-grant-token", key);
    crypto_hmac_sha256(key, sizeof(key), raw, 33, raw + 33);
    crypto_wipe(key, sizeof(key));
    base64url_encode(raw, sizeof(raw), out);
}

/* The grant id a token names; -EINVAL for a token amid did not issue. */
static int grant_token_open(struct app *app, const char *token, char grant_id[72])
{
    size_t n = token ? strlen(token) : 0, rn;
    uint8_t raw[80], key[32], mac[32];
    if (n == 0 || base64_decoded_max(n) > sizeof(raw) ||
        base64_decode(token, n, true, raw, &rn) < 0 || rn != 65 || raw[0] != GRANT_TOKEN_VERSION)
        return -EINVAL;
    core_subkey(app, "kms-grant-token", key);
    crypto_hmac_sha256(key, sizeof(key), raw, 33, mac);
    crypto_wipe(key, sizeof(key));
    if (!crypto_memeq(mac, raw + 33, 32))
        return -EINVAL;
    hex_encode(raw + 1, 32, grant_id);
    return 0;
}

int core_kms_grant_tokens_check(struct app *app, const char *const *tokens, size_t n, struct err *e)
{
    char id[72];
    for (size_t i = 0; i < n; i++)
        if (grant_token_open(app, tokens[i], id) < 0)
            return err_set(e, -EINVAL, "InvalidGrantTokenException",
                           "The grant token is not valid");
    return 0;
}

static bool grant_id_valid(const char *id)
{
    if (!id || strlen(id) != 64)
        return false;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static bool grant_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 256)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr(":/_-", *s))
            return false;
    return true;
}

/* Validates a grant spec and builds its row's operations and constraints. */
static int grant_build(const struct core_kms_grant_spec *s, struct db_kms_grant *g, struct err *e)
{
    if (!s->grantee || !principal_account(s->grantee, NULL))
        return err_set(e, -EINVAL, "ValidationException",
                       "GranteePrincipal %.256s is not a valid principal: amid accepts an "
                       "account id or arn:aws:iam::ACCOUNT:root",
                       s->grantee ? s->grantee : "");
    if (s->retiring && !principal_account(s->retiring, NULL))
        return err_set(e, -EINVAL, "ValidationException",
                       "RetiringPrincipal %.256s is not a valid principal: amid accepts an "
                       "account id or arn:aws:iam::ACCOUNT:root",
                       s->retiring);
    if (s->name && !grant_name_valid(s->name))
        return err_set(e, -EINVAL, "ValidationException",
                       "Grant names are 1 to 256 characters of [a-zA-Z0-9:/_-]");
    if (s->nops == 0)
        return err_set(e, -EINVAL, "ValidationException",
                       "A grant must allow at least one operation");
    bool has[ARRAY_SIZE(grant_ops)] = { false };
    for (size_t i = 0; i < s->nops; i++) {
        size_t j = 0;
        while (j < ARRAY_SIZE(grant_ops) && strcmp(grant_ops[j], s->ops[i]) != 0)
            j++;
        if (j == ARRAY_SIZE(grant_ops))
            return err_set(e, -EINVAL, "ValidationException",
                           "Grant operation %.64s is not valid for a symmetric encryption key",
                           s->ops[i]);
        has[j] = true;
    }
    g->operations[0] = '\0';
    for (size_t j = 0; j < ARRAY_SIZE(grant_ops); j++)
        if (has[j]) {
            size_t l = strlen(g->operations);
            snprintf(g->operations + l, sizeof(g->operations) - l, "%s%s", l ? "," : "",
                     grant_ops[j]);
        }
    g->constraints[0] = '\0';
    if (s->subset || s->equals) {
        json_t *o = json_object();
        if (s->subset)
            json_object_set_new(o, "EncryptionContextSubset", ctx_json(s->subset));
        if (s->equals)
            json_object_set_new(o, "EncryptionContextEquals", ctx_json(s->equals));
        char *t = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(o);
        if (!t)
            return internal(e, -ENOMEM, "out of memory");
        size_t l = strlen(t);
        if (l <= DB_KMS_CONSTRAINTS_MAX)
            memcpy(g->constraints, t, l + 1);
        free(t);
        if (l > DB_KMS_CONSTRAINTS_MAX)
            return err_set(e, -EINVAL, "ValidationException",
                           "The grant constraints are longer than %d bytes",
                           DB_KMS_CONSTRAINTS_MAX);
    }
    snprintf(g->grantee, sizeof(g->grantee), "%s", s->grantee);
    snprintf(g->retiring, sizeof(g->retiring), "%s", s->retiring ? s->retiring : "");
    snprintf(g->name, sizeof(g->name), "%s", s->name ? s->name : "");
    return 0;
}

struct grant_ctx {
    const struct core_caller *who;
    const char *ref;
    const struct core_kms_grant_spec *spec;
    struct db_kms_grant g;
    bool existing;
    struct err *e;
};

static int same_grant_cb(void *vctx, const struct db_kms_grant *g)
{
    struct grant_ctx *c = vctx;
    if (c->g.name[0] && strcmp(g->name, c->g.name) == 0 && strcmp(g->grantee, c->g.grantee) == 0 &&
        strcmp(g->retiring, c->g.retiring) == 0 && strcmp(g->operations, c->g.operations) == 0 &&
        strcmp(g->constraints, c->g.constraints) == 0) {
        snprintf(c->g.id, sizeof(c->g.id), "%s", g->id);
        c->existing = true;
        return 1;
    }
    return 0;
}

static int grant_tx(struct app *app, struct db *db, void *vctx)
{
    struct grant_ctx *c = vctx;
    struct db_kms_key k;
    int rc = resolve(app, db, c->who, c->ref, R_CROSS, &k, c->e);
    if (rc == 0)
        rc =
            authorize(db, c->who, &k, "kms:CreateGrant", "CreateGrant", NULL, false, c->spec, c->e);
    if (rc == 0)
        rc = not_pending(&k, c->e);
    if (rc < 0)
        return rc;
    rc = db_kms_grant_each(db, k.id, NULL, same_grant_cb, c);
    if (rc < 0)
        return internal(c->e, rc, "cannot read grants");
    if (c->who->dry_run)
        return core_dry_run(c->e);
    if (c->existing)
        return 0;
    int all = db_kms_grant_count(db, k.id, NULL);
    int mine = db_kms_grant_count(db, k.id, c->g.grantee);
    if (all < 0 || mine < 0)
        return internal(c->e, all < 0 ? all : mine, "cannot count grants");
    if (all >= GRANTS_MAX || mine >= GRANTS_PER_GRANTEE)
        return err_set(c->e, -EDQUOT, "LimitExceededException",
                       "A key may have at most %d grants, and at most %d for one grantee "
                       "principal",
                       GRANTS_MAX, GRANTS_PER_GRANTEE);
    uint8_t r[32];
    rand_bytes(r, sizeof(r));
    hex_encode(r, sizeof(r), c->g.id);
    snprintf(c->g.key_id, sizeof(c->g.key_id), "%s", k.id);
    snprintf(c->g.issuer, sizeof(c->g.issuer), "%s", c->who->account_id);
    c->g.create_ms = core_now_ms(app);
    rc = db_kms_grant_insert(db, &c->g);
    return rc < 0 ? internal(c->e, rc, "cannot record the grant") : 0;
}

int core_kms_grant_create(struct app *app, const struct core_caller *who, const char *ref,
                          const struct core_kms_grant_spec *spec, char ret_id[72],
                          char ret_token[CORE_KMS_GRANT_TOKEN_MAX], struct err *e)
{
    struct grant_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return internal(e, -ENOMEM, "out of memory");
    c->who = who;
    c->ref = ref;
    c->spec = spec;
    c->e = e;
    int rc = grant_build(spec, &c->g, e);
    if (rc == 0)
        rc = kms_tx(app, grant_tx, c);
    if (rc < 0) {
        free(c);
        return internal(e, rc, "cannot record the grant");
    }
    snprintf(ret_id, 72, "%s", c->g.id);
    grant_token(app, c->g.id, ret_token);
    free(c);
    return 0;
}

struct grants_ctx {
    const char *region, *account; /* the key's */
    const char *grant_id;
    const char *grantee;
    int (*fn)(void *ctx, const struct core_kms_grant *g);
    void *ctx;
};

static int grants_cb(void *vctx, const struct db_kms_grant *g)
{
    struct grants_ctx *c = vctx;
    if ((c->grant_id && strcmp(c->grant_id, g->id) != 0) ||
        (c->grantee && strcmp(c->grantee, g->grantee) != 0))
        return 0;
    const char *ops[ARRAY_SIZE(grant_ops)];
    size_t nops = 0;
    for (size_t j = 0; j < ARRAY_SIZE(grant_ops); j++)
        if (ops_has(g->operations, grant_ops[j]))
            ops[nops++] = grant_ops[j];
    struct gcons cons;
    if (gcons_parse(g->constraints, &cons) < 0)
        return -EBADMSG;
    char issuer[64], arn[128];
    snprintf(issuer, sizeof(issuer), "arn:aws:iam::%s:root", g->issuer);
    key_arn(c->region, c->account, g->key_id, arn);
    struct core_kms_grant out = {
        g->key_id,
        arn,
        g->id,
        g->name,
        g->grantee,
        g->retiring,
        issuer,
        g->create_ms,
        ops,
        nops,
        cons.has_subset ? &cons.subset : NULL,
        cons.has_equals ? &cons.equals : NULL,
    };
    int rc = c->fn(c->ctx, &out);
    gcons_free(&cons);
    return rc;
}

int core_kms_grants_each(struct app *app, const struct core_caller *who, const char *ref,
                         const char *after, const char *grant_id, const char *grantee,
                         int (*fn)(void *ctx, const struct core_kms_grant *g), void *ctx,
                         struct err *e)
{
    if (grant_id && !grant_id_valid(grant_id))
        return err_set(e, -EINVAL, "InvalidGrantIdException", "Grant ID %.128s is not valid",
                       grant_id);
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    int rc = resolve(app, db, who, ref, R_CROSS, &k, e);
    if (rc == 0)
        rc = authorize(db, who, &k, "kms:ListGrants", NULL, NULL, false, NULL, e);
    if (rc == 0) {
        struct grants_ctx c = { k.region, k.owner, grant_id, grantee, fn, ctx };
        rc = db_kms_grant_each(db, k.id, after, grants_cb, &c);
        if (rc < 0)
            rc = internal(e, rc, "cannot read grants");
    }
    core_db_put(app, db);
    return rc;
}

struct retire_ctx {
    const struct core_caller *who;
    const char *token;
    const char *ref;
    const char *grant_id;
    bool revoke;
    struct err *e;
};

static int retire_tx(struct app *app, struct db *db, void *vctx)
{
    struct retire_ctx *c = vctx;
    char id[72];
    struct db_kms_key k;
    int rc;
    if (c->token) {
        if (grant_token_open(app, c->token, id) < 0)
            return err_set(c->e, -EINVAL, "InvalidGrantTokenException",
                           "The grant token is not valid");
    } else {
        snprintf(id, sizeof(id), "%s", c->grant_id);
    }
    if (c->ref) {
        rc = resolve(app, db, c->who, c->ref, R_CROSS, &k, c->e);
        if (rc == 0 && c->revoke)
            rc = authorize(db, c->who, &k, "kms:RevokeGrant", NULL, NULL, false, NULL, c->e);
        if (rc < 0)
            return rc;
    }
    struct db_kms_grant g;
    rc = db_kms_grant_get(db, id, &g);
    if (rc == 0 && c->ref && strcmp(g.key_id, k.id) != 0)
        rc = -ENOENT;
    if (rc == 0 && !c->ref) {
        rc = db_kms_key_get(db, g.key_id, &k);
        if (rc == 0 && !key_live(&k, core_now_ms(app)))
            rc = -ENOENT;
    }
    if (rc == -ENOENT)
        return err_set(c->e, rc, "NotFoundException", "Grant ID %s not found", id);
    if (rc < 0)
        return internal(c->e, rc, "cannot read grants");
    if (!c->revoke) {
        const char *me = c->who->account_id;
        bool ok = grantee_is(g.retiring, me) ||
                  (grantee_is(g.grantee, me) && ops_has(g.operations, "RetireGrant")) ||
                  strcmp(g.issuer, me) == 0 || strcmp(k.owner, me) == 0;
        if (!ok) {
            char arn[128];
            key_arn(k.region, k.owner, k.id, arn);
            return err_set(c->e, -EACCES, "AccessDeniedException",
                           "User: arn:aws:iam::%s:root is not authorized to perform: "
                           "kms:RetireGrant on resource: %s because it is neither the grant's "
                           "retiring principal, nor its grantee with RetireGrant, nor the key's "
                           "account",
                           me, arn);
        }
    }
    if (c->who->dry_run)
        return core_dry_run(c->e);
    rc = db_kms_grant_delete(db, id);
    return rc < 0 ? internal(c->e, rc, "cannot delete the grant") : 0;
}

int core_kms_grant_revoke(struct app *app, const struct core_caller *who, const char *ref,
                          const char *grant_id, struct err *e)
{
    if (!grant_id_valid(grant_id))
        return err_set(e, -EINVAL, "InvalidGrantIdException", "Grant ID %.128s is not valid",
                       grant_id ? grant_id : "");
    struct retire_ctx c = { who, NULL, ref, grant_id, true, e };
    int rc = kms_tx(app, retire_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot revoke the grant") : 0;
}

int core_kms_grant_retire(struct app *app, const struct core_caller *who, const char *token,
                          const char *ref, const char *grant_id, struct err *e)
{
    if (!token && !(ref && grant_id))
        return err_set(e, -EINVAL, "ValidationException",
                       "Either GrantToken, or both KeyId and GrantId, must be specified");
    if (!token && !grant_id_valid(grant_id))
        return err_set(e, -EINVAL, "InvalidGrantIdException", "Grant ID %.128s is not valid",
                       grant_id);
    if (token && grant_id && !grant_id_valid(grant_id))
        return err_set(e, -EINVAL, "InvalidGrantIdException", "Grant ID %.128s is not valid",
                       grant_id);
    struct retire_ctx c = { who, token, ref, grant_id, false, e };
    if (token && grant_id) {
        char id[72];
        if (grant_token_open(app, token, id) < 0)
            return err_set(e, -EINVAL, "InvalidGrantTokenException",
                           "The grant token is not valid");
        if (strcmp(id, grant_id) != 0)
            return err_set(e, -EINVAL, "InvalidGrantIdException",
                           "The grant token and GrantId name different grants");
    }
    int rc = kms_tx(app, retire_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot retire the grant") : 0;
}

/* ---- key policies ---- */

static int policy_name_check(const char *name, struct err *e)
{
    if (name && strcmp(name, "default") != 0)
        return err_set(e, -ENOENT, "NotFoundException",
                       "No such policy exists: the only key policy name is default");
    return 0;
}

int core_kms_policy_get(struct app *app, const struct core_caller *who, const char *ref,
                        const char *name, char **ret, struct err *e)
{
    int rc = policy_name_check(name, e);
    if (rc < 0)
        return rc;
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    rc = resolve(app, db, who, ref, 0, &k, e);
    if (rc == 0)
        rc = authorize(db, who, &k, "kms:GetKeyPolicy", NULL, NULL, false, NULL, e);
    if (rc == 0 && db_kms_policy_get(db, k.id, ret) < 0)
        rc = internal(e, -EIO, "cannot read the key policy");
    core_db_put(app, db);
    return rc;
}

struct policy_ctx {
    const struct core_caller *who;
    const char *ref;
    const char *policy;
    bool bypass;
    struct err *e;
};

static int policy_tx(struct app *app, struct db *db, void *vctx)
{
    struct policy_ctx *c = vctx;
    struct db_kms_key k;
    int rc = resolve(app, db, c->who, c->ref, 0, &k, c->e);
    if (rc == 0)
        rc = authorize(db, c->who, &k, "kms:PutKeyPolicy", NULL, NULL, false, NULL, c->e);
    if (rc < 0)
        return rc;
    json_t *doc;
    rc = policy_parse(c->policy, &doc, c->e);
    if (rc < 0)
        return rc;
    char arn[128];
    key_arn(k.region, k.owner, k.id, arn);
    if (!c->bypass)
        rc = policy_lockout_check(doc, c->who->account_id, arn, c->e);
    json_decref(doc);
    if (rc < 0)
        return rc;
    if (c->who->dry_run)
        return core_dry_run(c->e);
    rc = db_kms_policy_set(db, k.id, c->policy);
    return rc < 0 ? internal(c->e, rc, "cannot record the key policy") : 0;
}

int core_kms_policy_put(struct app *app, const struct core_caller *who, const char *ref,
                        const char *name, const char *policy, bool bypass_lockout, struct err *e)
{
    int rc = policy_name_check(name, e);
    if (rc < 0)
        return rc;
    if (!policy)
        return err_set(e, -EINVAL, "ValidationException", "Policy is required");
    struct policy_ctx c = { who, ref, policy, bypass_lockout, e };
    rc = kms_tx(app, policy_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot record the key policy") : 0;
}

/* ---- tags ---- */

struct tag_ctx {
    const struct core_caller *who;
    const char *ref;
    const struct core_tag *tags;
    const char *const *keys;
    size_t n;
    struct err *e;
};

static int tag_tx(struct app *app, struct db *db, void *vctx)
{
    struct tag_ctx *c = vctx;
    struct db_kms_key k;
    int rc = resolve(app, db, c->who, c->ref, 0, &k, c->e);
    if (rc == 0)
        rc = authorize(db, c->who, &k, c->tags ? "kms:TagResource" : "kms:UntagResource", NULL,
                       NULL, false, NULL, c->e);
    if (rc == 0)
        rc = not_pending(&k, c->e);
    if (rc < 0)
        return rc;
    if (c->who->dry_run)
        return core_dry_run(c->e);
    for (size_t i = 0; rc >= 0 && i < c->n; i++)
        rc = c->tags ? db_kms_tag_put(db, k.id, c->tags[i].key, c->tags[i].value)
                     : db_kms_tag_delete(db, k.id, c->keys[i]);
    if (rc < 0)
        return internal(c->e, rc, "cannot record tags");
    int n = db_kms_tag_count(db, k.id);
    if (n < 0)
        return internal(c->e, n, "cannot count tags");
    if (n > TAGS_MAX)
        return err_set(c->e, -EDQUOT, "LimitExceededException", "A key may have at most %d tags",
                       TAGS_MAX);
    return 0;
}

int core_kms_tag(struct app *app, const struct core_caller *who, const char *ref,
                 const struct core_tag *tags, size_t n, struct err *e)
{
    int rc = tags_check(tags, n, e);
    if (rc < 0)
        return rc;
    struct tag_ctx c = { who, ref, tags, NULL, n, e };
    rc = kms_tx(app, tag_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot record tags") : 0;
}

int core_kms_untag(struct app *app, const struct core_caller *who, const char *ref,
                   const char *const *keys, size_t n, struct err *e)
{
    for (size_t i = 0; i < n; i++)
        if (strncasecmp(keys[i], "aws:", 4) == 0)
            return err_set(e, -EINVAL, "TagException",
                           "Tags beginning with aws: are reserved for AWS use");
    struct tag_ctx c = { who, ref, NULL, keys, n, e };
    int rc = kms_tx(app, tag_tx, &c);
    return rc < 0 ? internal(e, rc, "cannot remove tags") : 0;
}

int core_kms_tags_each(struct app *app, const struct core_caller *who, const char *ref,
                       const char *after, int (*fn)(void *ctx, const char *key, const char *value),
                       void *ctx, struct err *e)
{
    struct db *db = core_db_get(app);
    struct db_kms_key k;
    int rc = resolve(app, db, who, ref, 0, &k, e);
    if (rc == 0)
        rc = authorize(db, who, &k, "kms:ListResourceTags", NULL, NULL, false, NULL, e);
    if (rc == 0) {
        rc = db_kms_tag_each(db, k.id, after, fn, ctx);
        if (rc < 0)
            rc = internal(e, rc, "cannot read tags");
    }
    core_db_put(app, db);
    return rc;
}
