/*
 * core_tags.c — tags on every resource, with EC2's rules: at most 50 per resource, keys of 1-128
 * and values of 0-256 Unicode characters, the "aws:" prefix reserved; CreateTags and DeleteTags
 * apply to all the named resources or to none.
 *
 * Resource types register in `restypes` below (the resources' own modules provide `taggable`).
 * Tags are per account: each account reads and writes only the tags it put on a resource.
 */
#include "core/core_int.h"

#include <errno.h>
#include <string.h>

static const struct core_restype restypes[] = {
    { "vol-", "volume", "InvalidVolume.NotFound", "volume", core_volume_owned },
    { "snap-", "snapshot", "InvalidSnapshot.NotFound", "snapshot", core_snapshot_taggable },
    { "ami-", "image", "InvalidAMIID.NotFound", "image", core_image_taggable },
    { "key-", "key-pair", "InvalidKeyPair.NotFound", "key pair", core_keypair_owned },
    { NULL, NULL, NULL, NULL, NULL },
};

const struct core_restype *core_restype_of(const char *id)
{
    for (const struct core_restype *t = restypes; t->prefix; t++)
        if (str_startswith(id, t->prefix))
            return t;
    return NULL;
}

bool core_id_valid(const char *id, const char *prefix)
{
    if (!str_startswith(id, prefix))
        return false;
    const char *h = id + strlen(prefix);
    size_t n = strlen(h);
    if (n != 8 && n != 17)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    return true;
}

/* Unicode characters in valid UTF-8. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            n++;
    return n;
}

int core_tag_validate(const char *key, const char *value, struct err *e)
{
    if (!str_utf8_valid(key, strlen(key)) || (value && !str_utf8_valid(value, strlen(value))))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Tag keys and values must be valid UTF-8");
    size_t kn = utf8_chars(key);
    if (kn == 0)
        return err_set(e, -EINVAL, "InvalidParameterValue", "Tag key cannot be empty");
    if (kn > CORE_TAG_KEY_MAX)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Tag key exceeds the maximum length of %d characters", CORE_TAG_KEY_MAX);
    if (value && utf8_chars(value) > CORE_TAG_VALUE_MAX)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Tag value exceeds the maximum length of %d characters", CORE_TAG_VALUE_MAX);
    if (strncasecmp(key, "aws:", 4) == 0)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "Tag keys starting with 'aws:' are reserved for internal use");
    return 0;
}

struct tags_ctx {
    const struct core_caller *who;
    const char *const *ids;
    size_t nids;
    const struct core_tag *tags;
    size_t ntags;
    struct err *e;
};

/* Resolves one resource id, giving the error EC2 gives for a malformed or unknown one. */
static int resolve(struct db *db, const struct core_caller *who, const char *id,
                   const struct core_restype **ret, struct err *e)
{
    const struct core_restype *t = core_restype_of(id);
    if (!t || !core_id_valid(id, t->prefix))
        return err_set(e, -EINVAL, "InvalidID", "The ID '%s' is not valid", id);
    int rc = t->taggable(db, who->region, who->account_id, id);
    if (rc == -ENOENT)
        return err_set(e, rc, t->notfound, "The %s '%s' does not exist", t->noun, id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot look up %s", id);
    *ret = t;
    return 0;
}

struct key_seen {
    const struct core_tag *tags;
    size_t ntags;
    int have; /* keys of `tags` the resource already has */
};

static int count_existing(void *vctx, const struct db_tag *t)
{
    struct key_seen *k = vctx;
    for (size_t i = 0; i < k->ntags; i++) {
        if (strcmp(k->tags[i].key, t->key) == 0) {
            k->have++;
            break;
        }
    }
    return 0;
}

static int create_tx(struct app *app, struct db *db, void *vctx)
{
    struct tags_ctx *c = vctx;
    (void)app;
    for (size_t i = 0; i < c->nids; i++) {
        const struct core_restype *t;
        int rc = resolve(db, c->who, c->ids[i], &t, c->e);
        if (rc < 0)
            return rc;
        int n = db_tag_count(db, c->who->region, c->who->account_id, c->ids[i]);
        struct key_seen ks = { c->tags, c->ntags, 0 };
        rc = db_tag_each_of(db, c->who->region, c->who->account_id, c->ids[i], count_existing, &ks);
        if (n < 0 || rc < 0)
            return err_set(c->e, -EIO, "InternalError", "cannot read tags");
        if ((size_t)n + c->ntags - (size_t)ks.have > CORE_TAGS_MAX)
            return err_set(c->e, -EINVAL, "TagLimitExceeded",
                           "The maximum number of Tags for a resource has been reached.");
    }
    if (c->who->dry_run)
        return core_dry_run(c->e);
    for (size_t i = 0; i < c->nids; i++) {
        const struct core_restype *t = core_restype_of(c->ids[i]);
        for (size_t k = 0; k < c->ntags; k++) {
            int rc = db_tag_put(db, c->who->region, c->who->account_id, c->ids[i], t->type,
                                c->tags[k].key, c->tags[k].value ? c->tags[k].value : "");
            if (rc < 0)
                return err_set(c->e, rc, "InternalError", "cannot write tags");
        }
    }
    return 0;
}

static int check_tags(const struct core_tag *tags, size_t ntags, bool values_required,
                      struct err *e)
{
    for (size_t i = 0; i < ntags; i++) {
        if (values_required && !tags[i].value)
            return err_set(e, -EINVAL, "InvalidParameterValue", "Tag value cannot be null");
        int rc = core_tag_validate(tags[i].key, tags[i].value, e);
        if (rc < 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(tags[i].key, tags[j].key) == 0)
                return err_set(e, -EINVAL, "InvalidParameterValue",
                               "Duplicate tag key '%s' specified", tags[i].key);
    }
    return 0;
}

int core_tags_check(const struct core_tag *tags, size_t ntags, struct err *e)
{
    if (ntags > CORE_TAGS_MAX)
        return err_set(e, -EINVAL, "TagLimitExceeded",
                       "The maximum number of Tags for a resource has been reached.");
    return check_tags(tags, ntags, false, e);
}

int core_tags_create(struct app *app, const struct core_caller *who, const char *const *ids,
                     size_t nids, const struct core_tag *tags, size_t ntags, struct err *e)
{
    if (nids == 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter resourceIdSet");
    if (ntags == 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter Tags");
    if (ntags > CORE_TAGS_MAX)
        return err_set(e, -EINVAL, "TagLimitExceeded",
                       "The maximum number of Tags for a resource has been reached.");
    int rc = check_tags(tags, ntags, false, e);
    if (rc < 0)
        return rc;
    struct tags_ctx c = { who, ids, nids, tags, ntags, e };
    return core_tx(app, create_tx, &c);
}

static int delete_tx(struct app *app, struct db *db, void *vctx)
{
    struct tags_ctx *c = vctx;
    (void)app;
    for (size_t i = 0; i < c->nids; i++) {
        const struct core_restype *t;
        int rc = resolve(db, c->who, c->ids[i], &t, c->e);
        if (rc < 0)
            return rc;
    }
    if (c->who->dry_run)
        return core_dry_run(c->e);
    for (size_t i = 0; i < c->nids; i++) {
        int rc = 0;
        if (c->ntags == 0)
            rc = db_tag_delete(db, c->who->region, c->who->account_id, c->ids[i], NULL, NULL);
        for (size_t k = 0; k < c->ntags && rc >= 0; k++)
            rc = db_tag_delete(db, c->who->region, c->who->account_id, c->ids[i], c->tags[k].key,
                               c->tags[k].value);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot delete tags");
    }
    return 0;
}

int core_tags_delete(struct app *app, const struct core_caller *who, const char *const *ids,
                     size_t nids, const struct core_tag *tags, size_t ntags, struct err *e)
{
    if (nids == 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter resourceIdSet");
    for (size_t i = 0; i < ntags; i++)
        if (strncasecmp(tags[i].key, "aws:", 4) == 0)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Tag keys starting with 'aws:' are reserved for internal use");
    struct tags_ctx c = { who, ids, nids, tags, ntags, e };
    return core_tx(app, delete_tx, &c);
}

int core_tags_insert(struct db *db, const struct core_caller *who, const char *resource_id,
                     const char *type, const struct core_tag *tags, size_t ntags)
{
    for (size_t i = 0; i < ntags; i++) {
        int rc = db_tag_put(db, who->region, who->account_id, resource_id, type, tags[i].key,
                            tags[i].value ? tags[i].value : "");
        if (rc < 0)
            return rc;
    }
    return 0;
}

struct each_ctx {
    int (*fn)(void *ctx, const struct core_tag_row *t);
    void *ctx;
};

static int each_cb(void *vctx, const struct db_tag *t)
{
    struct each_ctx *c = vctx;
    struct core_tag_row r = { t->resource_id, t->resource_type, t->key, t->value };
    return c->fn(c->ctx, &r);
}

int core_tags_each(struct app *app, const struct core_caller *who,
                   int (*fn)(void *ctx, const struct core_tag_row *t), void *ctx)
{
    struct each_ctx c = { fn, ctx };
    struct db *db = core_db_get(app);
    int rc = db_tag_each_owned(db, who->region, who->account_id, each_cb, &c);
    core_db_put(app, db);
    return rc;
}

int core_tags_of(struct app *app, struct db *db, const char *region, const char *account,
                 const char *resource_id, int (*fn)(void *ctx, const struct core_tag_row *t),
                 void *ctx)
{
    (void)app;
    struct each_ctx c = { fn, ctx };
    return db_tag_each_of(db, region, account, resource_id, each_cb, &c);
}
