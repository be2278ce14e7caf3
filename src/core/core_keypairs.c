/*
 * core_keypairs.c — EC2 key pairs: created (the private key is handed out once and never kept)
 * or imported, named uniquely per account and region; their public keys reach guests through
 * the instance metadata service.
 */
#include "core/core_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int core_keypair_owned(struct db *db, const char *region, const char *account, const char *id)
{
    struct db_keypair k;
    int rc = db_keypair_get(db, id, &k);
    if (rc < 0)
        return rc;
    return strcmp(k.owner, account) == 0 && strcmp(k.region, region) == 0 ? 0 : -ENOENT;
}

static int name_check(const char *name, struct err *e)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter KeyName");
    if (n > 255)
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "The key pair name is longer than 255 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
            return err_set(e, -EINVAL, "InvalidParameterValue",
                           "Key pair names are printable ASCII characters");
    return 0;
}

struct kp_ctx {
    const struct core_caller *who;
    struct db_keypair *k;
    const struct core_tag *tags;
    size_t ntags;
    struct err *e;
};

static int insert_tx(struct app *app, struct db *db, void *vctx)
{
    struct kp_ctx *c = vctx;
    (void)app;
    struct db_keypair other;
    if (db_keypair_by_name(db, c->who->region, c->who->account_id, c->k->name, &other) == 0)
        return err_set(c->e, -EEXIST, "InvalidKeyPair.Duplicate",
                       "The keypair '%s' already exists.", c->k->name);
    if (c->who->dry_run)
        return core_dry_run(c->e);
    int rc = db_keypair_insert(db, c->k);
    if (rc == 0)
        rc = core_tags_insert(db, c->who, c->k->id, "key-pair", c->tags, c->ntags);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot record the key pair");
    return 0;
}

static int prepare(struct app *app, const struct core_caller *who, const char *name,
                   const struct core_tag *tags, size_t ntags, struct db_keypair *k, struct err *e)
{
    int rc = name_check(name, e);
    if (rc == 0)
        rc = core_tags_check(tags, ntags, e);
    if (rc < 0)
        return rc;
    memset(k, 0, sizeof(*k));
    rand_id(k->id, sizeof(k->id), "key-", 17);
    snprintf(k->region, sizeof(k->region), "%s", who->region);
    snprintf(k->owner, sizeof(k->owner), "%s", who->account_id);
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->create_ms = core_now_ms(app);
    return 0;
}

int core_keypair_create(struct app *app, const struct core_caller *who, const char *name,
                        const char *type, const struct core_tag *tags, size_t ntags,
                        struct db_keypair *ret, char **ret_private, struct err *e)
{
    struct db_keypair k;
    int rc = prepare(app, who, name, tags, ntags, &k, e);
    if (rc < 0)
        return rc;
    type = type ? type : "rsa";
    snprintf(k.type, sizeof(k.type), "%s", type);
    char *priv = NULL;
    rc = sshkey_generate(type, name, &priv, k.public_key, k.fingerprint);
    if (rc == -EINVAL)
        return err_set(e, rc, "InvalidParameterValue", "Unknown key type %.16s", type);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot generate the key");
    struct kp_ctx c = { who, &k, tags, ntags, e };
    rc = core_tx(app, insert_tx, &c);
    if (rc < 0) {
        crypto_wipe(priv, strlen(priv));
        free(priv);
        return rc;
    }
    *ret = k;
    *ret_private = priv;
    return 0;
}

int core_keypair_import(struct app *app, const struct core_caller *who, const char *name,
                        const uint8_t *material, size_t n, const struct core_tag *tags,
                        size_t ntags, struct db_keypair *ret, struct err *e)
{
    struct db_keypair k;
    int rc = prepare(app, who, name, tags, ntags, &k, e);
    if (rc < 0)
        return rc;
    if (!material || n == 0 || n > 16384 ||
        sshkey_import(material, n, k.type, k.public_key, k.fingerprint) < 0)
        return err_set(e, -EINVAL, "InvalidKey.Format",
                       "Key is not in valid OpenSSH public key format");
    struct kp_ctx c = { who, &k, tags, ntags, e };
    rc = core_tx(app, insert_tx, &c);
    if (rc == 0)
        *ret = k;
    return rc;
}

int core_keypair_get(struct app *app, const struct core_caller *who, const char *name,
                     const char *id, struct db_keypair *ret, struct err *e)
{
    struct db *db = core_db_get(app);
    int rc = name ? db_keypair_by_name(db, who->region, who->account_id, name, ret)
                  : db_keypair_get(db, id, ret);
    core_db_put(app, db);
    if (rc == 0 &&
        (strcmp(ret->owner, who->account_id) != 0 || strcmp(ret->region, who->region) != 0))
        rc = -ENOENT;
    if (rc == -ENOENT)
        return err_set(e, rc, "InvalidKeyPair.NotFound", "The key pair '%s' does not exist",
                       name ? name : id);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot read key pairs");
    return 0;
}

int core_keypair_each(struct app *app, const struct core_caller *who,
                      int (*fn)(void *ctx, const struct db_keypair *k), void *ctx)
{
    struct db *db = core_db_get(app);
    int rc = db_keypair_each(db, who->region, who->account_id, fn, ctx);
    core_db_put(app, db);
    return rc;
}

int core_keypair_delete(struct app *app, const struct core_caller *who, const char *name,
                        const char *id, char ret_id[32], struct err *e)
{
    if (!name && !id)
        return err_set(e, -EINVAL, "MissingParameter",
                       "The request must contain the parameter KeyName or KeyPairId");
    struct db_keypair k;
    int rc = core_keypair_get(app, who, name, id, &k, e);
    if (rc == -ENOENT && name) {
        ret_id[0] = '\0';
        return who->dry_run ? core_dry_run(e) : 0;
    }
    if (rc < 0)
        return rc;
    if (who->dry_run)
        return core_dry_run(e);
    struct db *db = core_db_get(app);
    rc = db_begin(db);
    if (rc == 0)
        rc = db_keypair_delete(db, k.id);
    if (rc == 0)
        rc = db_tag_delete_all(db, k.region, k.id) < 0 ? -EIO : 0;
    if (rc == 0)
        rc = db_commit(db);
    else
        db_rollback(db);
    core_db_put(app, db);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot delete the key pair");
    snprintf(ret_id, 32, "%s", k.id);
    return 0;
}
