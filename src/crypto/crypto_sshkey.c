/*
 * crypto_sshkey.c — EC2 key pairs: generating RSA and Ed25519 keys, reading the public keys
 * ImportKeyPair accepts, the OpenSSH wire encodings, and EC2's fingerprints.
 *
 * OpenSSH public key blobs are length-prefixed strings: string "ssh-rsa", mpint e, mpint n; or
 * string "ssh-ed25519", string key(32).  The Ed25519 private key EC2 returns is OpenSSH's own
 * "openssh-key-v1" container, unencrypted.
 */
#include "crypto/crypto.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/md5.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

static int put_u32(struct buf *b, uint32_t v)
{
    uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    return buf_append(b, x, 4);
}

static int put_string(struct buf *b, const void *p, size_t n)
{
    int rc = put_u32(b, (uint32_t)n);
    return rc ? rc : buf_append(b, p, n);
}

/* An mpint from big-endian magnitude bytes: a leading zero when the top bit is set. */
static int put_mpint(struct buf *b, const uint8_t *p, size_t n)
{
    while (n > 0 && p[0] == 0) {
        p++;
        n--;
    }
    bool pad = n > 0 && (p[0] & 0x80);
    int rc = put_u32(b, (uint32_t)(n + pad));
    if (rc == 0 && pad)
        rc = buf_append(b, "", 1);
    return rc ? rc : buf_append(b, p, n);
}

/* The OpenSSH public blob of an EVP key (rsa or ed25519). */
static int public_blob(EVP_PKEY *k, struct buf *blob, const char **ret_type)
{
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519) {
        uint8_t raw[32];
        size_t n = sizeof(raw);
        if (EVP_PKEY_get_raw_public_key(k, raw, &n) != 1 || n != 32)
            return -EIO;
        *ret_type = "ssh-ed25519";
        int rc = put_string(blob, "ssh-ed25519", 11);
        return rc ? rc : put_string(blob, raw, 32);
    }
    if (EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA)
        return -EINVAL;
    BIGNUM *e = NULL, *nn = NULL;
    if (EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_E, &e) != 1 ||
        EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_RSA_N, &nn) != 1) {
        BN_free(e);
        BN_free(nn);
        return -EIO;
    }
    uint8_t eb[16], *nb = malloc((size_t)BN_num_bytes(nn) + 1);
    int rc = nb && BN_num_bytes(e) <= (int)sizeof(eb) ? 0 : -ENOMEM;
    if (rc == 0) {
        int el = BN_bn2bin(e, eb), nl = BN_bn2bin(nn, nb);
        *ret_type = "ssh-rsa";
        rc = put_string(blob, "ssh-rsa", 7);
        if (rc == 0)
            rc = put_mpint(blob, eb, (size_t)el);
        if (rc == 0)
            rc = put_mpint(blob, nb, (size_t)nl);
    }
    free(nb);
    BN_free(e);
    BN_free(nn);
    return rc;
}

static int openssh_text(EVP_PKEY *k, const char *comment, char out[SSHKEY_PUB_MAX],
                        struct buf *blob)
{
    const char *type;
    int rc = public_blob(k, blob, &type);
    if (rc < 0)
        return rc;
    char *b64 = malloc(base64_encoded_len(blob->len) + 1);
    if (!b64)
        return -ENOMEM;
    base64_encode(blob->data, blob->len, b64);
    int n = snprintf(out, SSHKEY_PUB_MAX, "%s %s%s%s", type, b64, comment && *comment ? " " : "",
                     comment ? comment : "");
    free(b64);
    return n > 0 && n < SSHKEY_PUB_MAX ? 0 : -E2BIG;
}

static void colon_hex(const uint8_t *d, size_t n, char out[SSHKEY_FP_MAX])
{
    static const char hx[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < n && o + 3 < SSHKEY_FP_MAX; i++) {
        if (i)
            out[o++] = ':';
        out[o++] = hx[d[i] >> 4];
        out[o++] = hx[d[i] & 15];
    }
    out[o] = '\0';
}

/* base64 SHA-256 of an OpenSSH public blob, without padding, as OpenSSH prints it. */
static void sha256_fp(const struct buf *blob, char out[SSHKEY_FP_MAX])
{
    uint8_t d[32];
    crypto_sha256(blob->data, blob->len, d);
    char b64[48];
    base64_encode(d, 32, b64);
    char *eq = strchr(b64, '=');
    if (eq)
        *eq = '\0';
    snprintf(out, SSHKEY_FP_MAX, "%s", b64);
}

/* OpenSSH's unencrypted "openssh-key-v1" container for an Ed25519 key. */
static int openssh_private(EVP_PKEY *k, const struct buf *pubblob, const char *comment, char **ret)
{
    uint8_t seed[32], pub[32];
    size_t sn = 32, pn = 32;
    if (EVP_PKEY_get_raw_private_key(k, seed, &sn) != 1 ||
        EVP_PKEY_get_raw_public_key(k, pub, &pn) != 1)
        return -EIO;
    struct buf priv, all;
    buf_init(&priv, 4096);
    buf_init(&all, 8192);
    uint32_t check;
    rand_bytes(&check, sizeof(check));
    uint8_t sk[64];
    memcpy(sk, seed, 32);
    memcpy(sk + 32, pub, 32);
    int rc = put_u32(&priv, check);
    if (rc == 0)
        rc = put_u32(&priv, check);
    if (rc == 0)
        rc = put_string(&priv, "ssh-ed25519", 11);
    if (rc == 0)
        rc = put_string(&priv, pub, 32);
    if (rc == 0)
        rc = put_string(&priv, sk, 64);
    if (rc == 0)
        rc = put_string(&priv, comment ? comment : "", comment ? strlen(comment) : 0);
    for (uint8_t pad = 1; rc == 0 && priv.len % 8; pad++)
        rc = buf_append(&priv, &pad, 1);
    if (rc == 0)
        rc = buf_append(&all, "openssh-key-v1", 15);
    if (rc == 0)
        rc = put_string(&all, "none", 4);
    if (rc == 0)
        rc = put_string(&all, "none", 4);
    if (rc == 0)
        rc = put_string(&all, "", 0);
    if (rc == 0)
        rc = put_u32(&all, 1);
    if (rc == 0)
        rc = put_string(&all, pubblob->data, pubblob->len);
    if (rc == 0)
        rc = put_string(&all, priv.data, priv.len);
    char *b64 = rc == 0 ? malloc(base64_encoded_len(all.len) + 1) : NULL;
    struct buf pem;
    buf_init(&pem, 16384);
    if (b64) {
        base64_encode(all.data, all.len, b64);
        rc = buf_puts(&pem, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
        for (size_t i = 0; rc == 0 && i < strlen(b64); i += 70) {
            size_t l = strlen(b64) - i < 70 ? strlen(b64) - i : 70;
            rc = buf_append(&pem, b64 + i, l);
            if (rc == 0)
                rc = buf_append(&pem, "\n", 1);
        }
        if (rc == 0)
            rc = buf_puts(&pem, "-----END OPENSSH PRIVATE KEY-----\n");
        crypto_wipe(b64, strlen(b64));
        free(b64);
    } else if (rc == 0) {
        rc = -ENOMEM;
    }
    crypto_wipe(seed, sizeof(seed));
    crypto_wipe(sk, sizeof(sk));
    if (priv.data)
        crypto_wipe(priv.data, priv.len);
    if (all.data)
        crypto_wipe(all.data, all.len);
    buf_free(&priv);
    buf_free(&all);
    if (rc < 0) {
        if (pem.data)
            crypto_wipe(pem.data, pem.len);
        buf_free(&pem);
        return rc;
    }
    *ret = buf_steal(&pem);
    return 0;
}

int sshkey_generate(const char *type, const char *comment, char **priv, char pub[SSHKEY_PUB_MAX],
                    char fp[SSHKEY_FP_MAX])
{
    bool rsa = strcmp(type, "rsa") == 0;
    if (!rsa && strcmp(type, "ed25519") != 0)
        return -EINVAL;
    EVP_PKEY *k = rsa ? EVP_RSA_gen(2048) : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k)
        return -EIO;
    struct buf blob;
    buf_init(&blob, 4096);
    int rc = openssh_text(k, comment, pub, &blob);
    if (rc == 0 && rsa) {
        /* EC2: the SHA-1 of the DER (PKCS#8) private key; the PEM it returns is PKCS#1. */
        unsigned char *der = NULL;
        int dl = i2d_PrivateKey(k, &der);
        PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
        unsigned char *p8der = NULL;
        int p8l = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &p8der) : -1;
        uint8_t d[SHA_DIGEST_LENGTH];
        if (p8l > 0) {
            SHA1(p8der, (size_t)p8l, d);
            colon_hex(d, sizeof(d), fp);
        } else {
            rc = -EIO;
        }
        if (der)
            OPENSSL_clear_free(der, (size_t)(dl > 0 ? dl : 0));
        if (p8der)
            OPENSSL_clear_free(p8der, (size_t)p8l);
        PKCS8_PRIV_KEY_INFO_free(p8);
        BIO *bio = rc == 0 ? BIO_new(BIO_s_mem()) : NULL;
        if (bio && PEM_write_bio_PrivateKey_traditional(bio, k, NULL, NULL, 0, NULL, NULL) == 1) {
            char *data;
            long n = BIO_get_mem_data(bio, &data);
            *priv = malloc((size_t)n + 1);
            if (*priv) {
                memcpy(*priv, data, (size_t)n);
                (*priv)[n] = '\0';
            } else {
                rc = -ENOMEM;
            }
        } else if (rc == 0) {
            rc = -EIO;
        }
        BIO_free(bio);
    } else if (rc == 0) {
        sha256_fp(&blob, fp);
        rc = openssh_private(k, &blob, comment, priv);
    }
    buf_free(&blob);
    EVP_PKEY_free(k);
    return rc;
}

/* Reads a length-prefixed string from an OpenSSH blob. */
static int get_string(const uint8_t **p, size_t *n, const uint8_t **ret, size_t *ret_n)
{
    if (*n < 4)
        return -EINVAL;
    uint32_t l =
        (uint32_t)(*p)[0] << 24 | (uint32_t)(*p)[1] << 16 | (uint32_t)(*p)[2] << 8 | (*p)[3];
    if (l > *n - 4)
        return -EINVAL;
    *ret = *p + 4;
    *ret_n = l;
    *p += 4 + l;
    *n -= 4 + l;
    return 0;
}

/* An EVP key from an OpenSSH public blob. */
static EVP_PKEY *from_blob(const uint8_t *blob, size_t n)
{
    const uint8_t *p = blob, *t, *a, *b;
    size_t left = n, tl, al, bl;
    if (get_string(&p, &left, &t, &tl) < 0)
        return NULL;
    if (tl == 11 && memcmp(t, "ssh-ed25519", 11) == 0) {
        if (get_string(&p, &left, &a, &al) < 0 || al != 32 || left != 0)
            return NULL;
        return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a, 32);
    }
    if (tl != 7 || memcmp(t, "ssh-rsa", 7) != 0 || get_string(&p, &left, &a, &al) < 0 ||
        get_string(&p, &left, &b, &bl) < 0 || left != 0 || al == 0 || bl == 0 || al > 16 ||
        bl > 2049)
        return NULL;
    BIGNUM *e = BN_bin2bn(a, (int)al, NULL), *nn = BN_bin2bn(b, (int)bl, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL;
    if (e && nn && bld && ctx && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, nn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1 &&
        (params = OSSL_PARAM_BLD_to_param(bld)) && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params) != 1)
        k = NULL;
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    BN_free(e);
    BN_free(nn);
    return k;
}

int sshkey_import(const uint8_t *data, size_t n, char type[16], char pub[SSHKEY_PUB_MAX],
                  char fp[SSHKEY_FP_MAX])
{
    EVP_PKEY *k = NULL;
    char *text = malloc(n + 1);
    if (!text)
        return -ENOMEM;
    memcpy(text, data, n);
    text[n] = '\0';
    char comment[256] = "";
    if (strncmp(text, "ssh-rsa ", 8) == 0 || strncmp(text, "ssh-ed25519 ", 12) == 0) {
        char *sp = strchr(text, ' ') + 1, *end = sp;
        while (*end && *end != ' ' && *end != '\n' && *end != '\r')
            end++;
        uint8_t *blob = malloc(base64_decoded_max((size_t)(end - sp)) + 1);
        size_t bl;
        if (blob && base64_decode(sp, (size_t)(end - sp), false, blob, &bl) == 0)
            k = from_blob(blob, bl);
        free(blob);
        if (*end == ' ') {
            snprintf(comment, sizeof(comment), "%s", end + 1);
            comment[strcspn(comment, "\r\n")] = '\0';
        }
    } else if (strstr(text, "-----BEGIN PUBLIC KEY-----") ||
               strstr(text, "-----BEGIN RSA PUBLIC KEY-----")) {
        BIO *bio = BIO_new_mem_buf(data, (int)n);
        k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
    } else {
        const unsigned char *p = data;
        k = d2i_PUBKEY(NULL, &p, (long)n);
    }
    free(text);
    if (!k)
        return -EINVAL;
    int rc = 0;
    bool rsa = EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA;
    if (rsa && EVP_PKEY_get_bits(k) < 1024)
        rc = -EINVAL;
    struct buf blob;
    buf_init(&blob, 4096);
    if (rc == 0)
        rc = openssh_text(k, comment, pub, &blob);
    if (rc == 0 && rsa) {
        unsigned char *der = NULL;
        int dl = i2d_PUBKEY(k, &der);
        if (dl > 0) {
            uint8_t d[MD5_DIGEST_LENGTH];
            EVP_Digest(der, (size_t)dl, d, NULL, EVP_md5(), NULL);
            colon_hex(d, sizeof(d), fp);
        } else {
            rc = -EIO;
        }
        OPENSSL_free(der);
        snprintf(type, 16, "rsa");
    } else if (rc == 0) {
        sha256_fp(&blob, fp);
        snprintf(type, 16, "ed25519");
    }
    buf_free(&blob);
    EVP_PKEY_free(k);
    return rc;
}
