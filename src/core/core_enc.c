/*
 * core_enc.c — encrypted volumes and snapshots: which KMS key new data gets, the data keys rows
 * keep, and the chunk store's encryption domain derived from a data key.
 *
 * An encrypted volume or snapshot row keeps its KMS key's ARN (kms_key_id) and a data key
 * wrapped by that key (data_key, a KMS ciphertext blob).  The data key's plaintext never leaves
 * memory: the domain's chunk-id key, chunk-data key and key id are derived from it with
 * HMAC-SHA256 under distinct labels.  Data deduplicates within one data key: a volume made from
 * a snapshot under the same KMS key, and every snapshot of that volume, keep the snapshot's data
 * key; any change of key (a different KMS key, encrypting clear data, another region's key for a
 * copy) gets a new data key and the data is re-encoded into it (core_copy.c's transcoding).
 * Opening a data key asks the key service as the account using the data, so a disabled, deleted
 * or unshared key stops new uses with the key service's answer.
 */
#include "core/core_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"

void core_store_key_derive(const uint8_t plain[32], struct store_key *k)
{
    static const char id_label[] = "amid chunk ids v1";
    static const char data_label[] = "amid chunk data v1";
    static const char kid_label[] = "amid data key id v1";
    uint8_t t[32];
    crypto_hmac_sha256(plain, 32, id_label, sizeof(id_label) - 1, k->id_key);
    crypto_hmac_sha256(plain, 32, data_label, sizeof(data_label) - 1, k->data_key);
    crypto_hmac_sha256(plain, 32, kid_label, sizeof(kid_label) - 1, t);
    memcpy(k->key_id, t, STORE_KEY_ID_LEN);
    crypto_wipe(t, sizeof(t));
}

/* The key service's refusal, in EC2's words: a key that cannot be used now is an incorrect
 * state; one that does not exist or is not the caller's to use is an invalid parameter. */
static int ec2_error(struct err *e, const struct err *kms, const char *key)
{
    bool state = strcmp(kms->code, "DisabledException") == 0 ||
                 strcmp(kms->code, "KMSInvalidStateException") == 0;
    return err_set(e, state ? -EINVAL : -EPERM, state ? "IncorrectState" : "InvalidParameterValue",
                   "%s: the KMS key %.160s cannot be used: %s",
                   state ? "Client.InvalidKMSKey.InvalidState" : "Client.InvalidKMSKey",
                   key && *key ? key : "(default)", kms->msg);
}

int core_dkey_new(struct app *app, const struct core_caller *who, const char *key_arn,
                  struct core_dkey *ret, struct store_key *sk, struct err *e)
{
    uint8_t plain[32];
    struct err ke = { 0 };
    size_t n = sizeof(ret->blob) < CORE_KMS_BLOB_MAX ? sizeof(ret->blob) : CORE_KMS_BLOB_MAX;
    int rc = core_kms_data_key_new(app, who, key_arn, plain, ret->blob, &n, &ke);
    if (rc < 0)
        return ec2_error(e, &ke, key_arn);
    ret->encrypted = true;
    ret->bloblen = n;
    snprintf(ret->key_arn, sizeof(ret->key_arn), "%s", key_arn);
    if (sk)
        core_store_key_derive(plain, sk);
    crypto_wipe(plain, sizeof(plain));
    return 0;
}

int core_dkey_open(struct app *app, const struct core_caller *who, const struct core_dkey *dk,
                   struct store_key *sk, struct err *e)
{
    uint8_t plain[32];
    struct err ke = { 0 };
    int rc = core_kms_data_key_open(app, who, dk->key_arn, dk->blob, dk->bloblen, plain, &ke);
    if (rc < 0)
        return ec2_error(e, &ke, dk->key_arn);
    core_store_key_derive(plain, sk);
    crypto_wipe(plain, sizeof(plain));
    return 0;
}

void core_dkey_of_volume(const struct db_volume *v, struct core_dkey *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->encrypted = v->encrypted;
    snprintf(ret->key_arn, sizeof(ret->key_arn), "%s", v->kms_key_id);
    memcpy(ret->blob, v->data_key, v->data_key_len);
    ret->bloblen = v->data_key_len;
}

void core_dkey_of_snapshot(const struct db_snapshot *s, struct core_dkey *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->encrypted = s->encrypted;
    snprintf(ret->key_arn, sizeof(ret->key_arn), "%s", s->kms_key_id);
    memcpy(ret->blob, s->data_key, s->data_key_len);
    ret->bloblen = s->data_key_len;
}

void core_dkey_to_volume(const struct core_dkey *dk, struct db_volume *v)
{
    v->encrypted = dk->encrypted;
    snprintf(v->kms_key_id, sizeof(v->kms_key_id), "%s", dk->encrypted ? dk->key_arn : "");
    memcpy(v->data_key, dk->blob, dk->bloblen);
    v->data_key_len = dk->encrypted ? dk->bloblen : 0;
}

void core_dkey_to_snapshot(const struct core_dkey *dk, struct db_snapshot *s)
{
    s->encrypted = dk->encrypted;
    snprintf(s->kms_key_id, sizeof(s->kms_key_id), "%s", dk->encrypted ? dk->key_arn : "");
    memcpy(s->data_key, dk->blob, dk->bloblen);
    s->data_key_len = dk->encrypted ? dk->bloblen : 0;
}

int core_dkey_key(struct app *app, const struct core_caller *who, const struct core_dkey *dk,
                  struct store_key *sk, const struct store_key **ret, struct err *e)
{
    *ret = NULL;
    if (!dk->encrypted)
        return 0;
    int rc = core_dkey_open(app, who, dk, sk, e);
    if (rc == 0)
        *ret = sk;
    return rc;
}

/* Whether KMS key ARN `arn` is a key of `region` (keys never leave their region). */
static bool key_in_region(const char *arn, const char *region)
{
    static const char prefix[] = "arn:aws:kms:";
    size_t n = strlen(region);
    return strncmp(arn, prefix, sizeof(prefix) - 1) == 0 &&
           strncmp(arn + sizeof(prefix) - 1, region, n) == 0 && arn[sizeof(prefix) - 1 + n] == ':';
}

int core_enc_plan(struct app *app, const struct core_caller *who, bool encrypted,
                  const char *kms_key_id, const struct core_dkey *src, struct core_enc *ret,
                  struct err *e)
{
    memset(ret, 0, sizeof(*ret));
    if (kms_key_id && !encrypted)
        return err_set(e, -EINVAL, "InvalidParameterDependency",
                       "The parameter KmsKeyId requires the parameter Encrypted to be set.");
    bool by_default = false;
    struct core_kms_key key;
    struct err ke = { 0 };
    int rc;
    if (!encrypted && !(src && src->encrypted)) {
        rc = core_ebs_encryption_enabled(app, who, &by_default, &ke);
        if (rc < 0)
            return err_set(e, rc, "InternalError", "cannot read the encryption settings");
    }
    if (!encrypted && !by_default && !(src && src->encrypted))
        return 0; /* clear data, as its source */
    ret->dk.encrypted = true;
    if (kms_key_id) {
        rc = core_kms_key_for_use(app, who, kms_key_id, &key, &ke);
        if (rc < 0)
            return ec2_error(e, &ke, kms_key_id);
    } else if (src && src->encrypted && key_in_region(src->key_arn, who->region)) {
        snprintf(key.arn, sizeof(key.arn), "%s", src->key_arn);
    } else {
        bool on;
        rc = core_ebs_encryption_defaults(app, who, &on, &key, &ke);
        if (rc == 0 && !key.state[0])
            rc = err_set(&ke, -ENOENT, "NotFoundException", "the default key no longer exists");
        if (rc == 0)
            rc = core_kms_key_for_use(app, who, key.arn, &key, &ke);
        if (rc < 0)
            return ec2_error(e, &ke, key.arn);
    }
    if (src && src->encrypted && strcmp(src->key_arn, key.arn) == 0) {
        /* The same KMS key: keep the source's data key, so the data is shared, not re-encoded.
         * Opening it checks that the caller may use the key now. */
        ret->dk = *src;
        return core_dkey_open(app, who, src, &ret->key, e);
    }
    ret->transcode = src != NULL;
    return core_dkey_new(app, who, key.arn, &ret->dk, &ret->key, e);
}

int core_copy_enc_plan(struct app *app, const struct core_caller *who, const char *source_region,
                       const struct db_snapshot *src, bool encrypted, const char *kms_key_id,
                       struct core_enc *ret, struct err *e)
{
    struct core_dkey sdk;
    core_dkey_of_snapshot(src, &sdk);
    if (sdk.encrypted) {
        struct core_caller swho = { who->account_id, source_region, false };
        struct store_key k;
        int rc = core_dkey_open(app, &swho, &sdk, &k, e);
        crypto_wipe(&k, sizeof(k));
        if (rc < 0)
            return rc;
    }
    return core_enc_plan(app, who, encrypted, kms_key_id, &sdk, ret, e);
}

void core_enc_wipe(struct core_enc *enc)
{
    crypto_wipe(&enc->key, sizeof(enc->key));
}
