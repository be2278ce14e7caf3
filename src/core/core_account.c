/*
 * core_account.c — accounts and access keys.  Account ids are 12 random digits; access key ids
 * are "AKIA" and 16 characters of base32; secrets are 40 characters of base64's alphabet,
 * returned once and stored only sealed (AES-256-GCM) under a subkey of the master key, with the
 * key id as associated data so a sealed secret cannot be moved to another key's row.
 */
#include "core/core_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool account_name_valid(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int random_from(char *out, size_t n, const char *alphabet, size_t alen)
{
    uint8_t r[64];
    if (n > sizeof(r))
        return -EINVAL;
    int rc = rand_bytes(r, n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        out[i] = alphabet[r[i] % alen]; /* alen divides 256: 32 or 64 (no bias) */
    out[n] = '\0';
    crypto_wipe(r, sizeof(r));
    return 0;
}

static int new_key(struct app *app, struct db *db, const char *account_id, const char *label,
                   struct core_creds *ret)
{
    static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    struct db_key k = { 0 };
    int rc;
    memcpy(k.id, "AKIA", 4);
    if ((rc = random_from(k.id + 4, 16, b32, 32)) < 0)
        return rc;
    if ((rc = random_from(ret->secret, 40, b64, 64)) < 0)
        return rc;
    snprintf(k.account_id, sizeof(k.account_id), "%s", account_id);
    snprintf(k.label, sizeof(k.label), "%s", label ? label : "");
    k.created_ms = core_now_ms(app);
    rc = crypto_aead_seal(app->secrets_key, k.id, strlen(k.id), ret->secret, 40, k.secret_enc);
    if (rc < 0)
        return rc;
    k.secret_enc_len = 40 + AEAD_OVERHEAD;
    rc = db_key_insert(db, &k);
    if (rc < 0)
        return rc;
    snprintf(ret->key_id, sizeof(ret->key_id), "%s", k.id);
    return 0;
}

int core_account_insert_tx(struct app *app, struct db *db, const char *name, struct core_creds *ret,
                           struct err *e)
{
    if (!account_name_valid(name))
        return err_set(e, -EINVAL, "InvalidParameterValue",
                       "invalid account name '%s': use 1-64 of A-Z a-z 0-9 . _ -", name);
    struct db_account a = { 0 };
    if (db_account_by_name(db, name, &a) == 0)
        return err_set(e, -EEXIST, "InvalidParameterValue", "account '%s' already exists", name);
    int rc;
    for (int attempt = 0; attempt < 8; attempt++) {
        uint8_t r[12];
        if ((rc = rand_bytes(r, sizeof(r))) < 0)
            return err_set(e, rc, "InternalError", "no randomness");
        for (int i = 0; i < 12; i++)
            a.id[i] = (char)('0' + r[i] % 10);
        if (a.id[0] == '0')
            a.id[0] = '1' + r[0] % 9;
        a.id[12] = '\0';
        snprintf(a.name, sizeof(a.name), "%s", name);
        a.created_ms = core_now_ms(app);
        rc = db_account_insert(db, &a);
        if (rc != -EEXIST)
            break;
    }
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create account: %s", strerror(-rc));
    snprintf(ret->account_id, sizeof(ret->account_id), "%s", a.id);
    snprintf(ret->account_name, sizeof(ret->account_name), "%s", a.name);
    rc = new_key(app, db, a.id, "", ret);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create access key: %s", strerror(-rc));
    return 0;
}

struct account_ctx {
    const char *name;
    const char *label;
    bool replace;
    const char *key_id;
    struct core_creds *ret;
    struct err *e;
};

static int account_create_tx(struct app *app, struct db *db, void *vctx)
{
    struct account_ctx *c = vctx;
    return core_account_insert_tx(app, db, c->name, c->ret, c->e);
}

int core_account_create(struct app *app, const char *name, struct core_creds *ret, struct err *e)
{
    struct account_ctx c = { .name = name, .ret = ret, .e = e };
    int rc = core_tx(app, account_create_tx, &c);
    if (rc < 0 && e && !e->code)
        err_set(e, rc, "InternalError", "cannot create account: %s", strerror(-rc));
    return rc;
}

struct label_ctx {
    const char *label;
    char ids[16][24];
    int n;
};

static int collect_labelled(void *vctx, const struct db_key *k)
{
    struct label_ctx *c = vctx;
    if (strcmp(k->label, c->label) == 0 && c->n < 16)
        snprintf(c->ids[c->n++], sizeof(c->ids[0]), "%s", k->id);
    return 0;
}

static int key_create_tx(struct app *app, struct db *db, void *vctx)
{
    struct account_ctx *c = vctx;
    struct db_account a;
    int rc = db_account_get(db, c->name, &a);
    if (rc == -ENOENT)
        rc = db_account_by_name(db, c->name, &a);
    if (rc == -ENOENT)
        return err_set(c->e, rc, "InvalidParameterValue", "no account '%s'", c->name);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot read accounts");
    if (a.system)
        return err_set(c->e, -EPERM, "InvalidParameterValue",
                       "account '%s' is a system account and has no keys", c->name);
    if (c->replace && c->label && c->label[0]) {
        struct label_ctx lc = { .label = c->label };
        rc = db_key_each(db, a.id, collect_labelled, &lc);
        for (int i = 0; rc == 0 && i < lc.n; i++)
            rc = db_key_delete(db, lc.ids[i]);
        if (rc < 0)
            return err_set(c->e, rc, "InternalError", "cannot replace keys");
    }
    snprintf(c->ret->account_id, sizeof(c->ret->account_id), "%s", a.id);
    snprintf(c->ret->account_name, sizeof(c->ret->account_name), "%s", a.name);
    rc = new_key(app, db, a.id, c->label, c->ret);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot create key");
    return 0;
}

int core_key_create(struct app *app, const char *account, const char *label, bool replace,
                    struct core_creds *ret, struct err *e)
{
    struct account_ctx c = {
        .name = account, .label = label, .replace = replace, .ret = ret, .e = e
    };
    return core_tx(app, key_create_tx, &c);
}

static int key_delete_tx(struct app *app, struct db *db, void *vctx)
{
    struct account_ctx *c = vctx;
    int rc = db_key_delete(db, c->key_id);
    if (rc == -ENOENT)
        return err_set(c->e, rc, "InvalidParameterValue", "no access key '%s'", c->key_id);
    if (rc < 0)
        return err_set(c->e, rc, "InternalError", "cannot delete key");
    return 0;
}

int core_key_delete(struct app *app, const char *key_id, struct err *e)
{
    struct account_ctx c = { .key_id = key_id, .e = e };
    return core_tx(app, key_delete_tx, &c);
}

int core_key_secret(struct app *app, const char *key_id, char account_id[16], char secret[48])
{
    struct db_key k;
    struct db_account a;
    struct db *db = core_db_get(app);
    int rc = db_key_get(db, key_id, &k);
    if (rc == 0)
        rc = db_account_get(db, k.account_id, &a);
    core_db_put(app, db);
    if (rc < 0)
        return rc;
    if (a.system)
        return -ENOENT;
    if (k.secret_enc_len != 40 + AEAD_OVERHEAD)
        return -EBADMSG;
    rc = crypto_aead_open(app->secrets_key, k.id, strlen(k.id), k.secret_enc, k.secret_enc_len,
                          (uint8_t *)secret);
    if (rc < 0)
        return rc;
    secret[40] = '\0';
    memcpy(account_id, k.account_id, 16);
    return 0;
}

struct info_ctx {
    int (*afn)(void *ctx, const struct core_account_info *a);
    int (*kfn)(void *ctx, const struct core_key_info *k);
    void *ctx;
};

static int account_info(void *vctx, const struct db_account *a)
{
    struct info_ctx *c = vctx;
    struct core_account_info i = { a->id, a->name, a->alias, a->system };
    return c->afn(c->ctx, &i);
}

int core_account_each(struct app *app, int (*fn)(void *ctx, const struct core_account_info *a),
                      void *ctx)
{
    struct info_ctx c = { .afn = fn, .ctx = ctx };
    struct db *db = core_db_get(app);
    int rc = db_account_each(db, account_info, &c);
    core_db_put(app, db);
    return rc;
}

static int key_info(void *vctx, const struct db_key *k)
{
    struct info_ctx *c = vctx;
    struct core_key_info i = { k->id, k->account_id, k->label, k->created_ms };
    return c->kfn(c->ctx, &i);
}

int core_key_each(struct app *app, const char *account,
                  int (*fn)(void *ctx, const struct core_key_info *k), void *ctx)
{
    struct info_ctx c = { .kfn = fn, .ctx = ctx };
    struct db *db = core_db_get(app);
    struct db_account a;
    int rc = 0;
    if (account) {
        rc = db_account_get(db, account, &a);
        if (rc == -ENOENT)
            rc = db_account_by_name(db, account, &a);
    }
    if (rc == 0)
        rc = db_key_each(db, account ? a.id : NULL, key_info, &c);
    core_db_put(app, db);
    return rc;
}

struct sys_find {
    const char *alias;
    char id[16];
};

static int find_system(void *vctx, const struct db_account *a)
{
    struct sys_find *f = vctx;
    if (a->system && strcmp(a->alias, f->alias) == 0) {
        snprintf(f->id, sizeof(f->id), "%s", a->id);
        return 1;
    }
    return 0;
}

static int system_tx(struct app *app, struct db *db, void *vctx)
{
    struct sys_find *f = vctx;
    if (db_account_each(db, find_system, f) == 1)
        return 0;
    struct db_account a = { 0 };
    uint8_t r[12];
    int rc = rand_bytes(r, sizeof(r));
    for (int i = 0; rc == 0 && i < 12; i++)
        a.id[i] = (char)('0' + r[i] % 10);
    if (rc < 0)
        return rc;
    if (a.id[0] == '0')
        a.id[0] = '7';
    snprintf(a.name, sizeof(a.name), "%s-catalog", f->alias);
    snprintf(a.alias, sizeof(a.alias), "%s", f->alias);
    a.created_ms = core_now_ms(app);
    a.system = true;
    rc = db_account_insert(db, &a);
    if (rc == 0)
        snprintf(f->id, sizeof(f->id), "%s", a.id);
    return rc;
}

int core_system_account(struct app *app, const char *alias, char ret_id[16], struct err *e)
{
    struct sys_find f = { alias, "" };
    int rc = core_tx(app, system_tx, &f);
    if (rc < 0)
        return err_set(e, rc, "InternalError", "cannot create the system account: %s",
                       strerror(-rc));
    snprintf(ret_id, 16, "%s", f.id);
    return 0;
}
