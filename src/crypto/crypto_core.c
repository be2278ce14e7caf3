/*
 * crypto_core.c — SHA-256, HMAC, AES-256-GCM and the master key file.
 */
#include "crypto/crypto.h"
#include "util/util.h"

#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

void crypto_sha256(const void *data, size_t n, uint8_t out[SHA256_LEN])
{
    SHA256(data, n, out);
}

struct sha256 {
    EVP_MD_CTX *ctx;
};

struct sha256 *crypto_sha256_new(void)
{
    struct sha256 *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(h->ctx);
        free(h);
        return NULL;
    }
    return h;
}

void crypto_sha256_update(struct sha256 *h, const void *data, size_t n)
{
    EVP_DigestUpdate(h->ctx, data, n);
}

void crypto_sha256_final(struct sha256 *h, uint8_t out[SHA256_LEN])
{
    unsigned int len = SHA256_LEN;
    EVP_DigestFinal_ex(h->ctx, out, &len);
    EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL);
}

void crypto_sha256_free(struct sha256 *h)
{
    if (!h)
        return;
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void crypto_hmac_sha256(const void *key, size_t klen, const void *data, size_t n,
                        uint8_t out[SHA256_LEN])
{
    unsigned int len = SHA256_LEN;
    HMAC(EVP_sha256(), key, (int)klen, data, n, out, &len);
}

bool crypto_memeq(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

int crypto_aead_seal(const uint8_t key[AEAD_KEY_LEN], const void *aad, size_t aadlen,
                     const void *in, size_t n, uint8_t *out)
{
    int rc = rand_bytes(out, AEAD_NONCE_LEN);
    if (rc < 0)
        return rc;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -ENOMEM;
    int len, ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, out) == 1;
    if (ok && aadlen)
        ok = EVP_EncryptUpdate(c, NULL, &len, aad, (int)aadlen) == 1;
    if (ok && n)
        ok = EVP_EncryptUpdate(c, out + AEAD_NONCE_LEN, &len, in, (int)n) == 1;
    if (ok)
        ok = EVP_EncryptFinal_ex(c, out + AEAD_NONCE_LEN + n, &len) == 1;
    if (ok)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_LEN, out + AEAD_NONCE_LEN + n) ==
             1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -EIO;
}

int crypto_xts(const uint8_t key[XTS_KEY_LEN], bool encrypt, uint64_t salt, uint64_t first_unit,
               const void *in, void *out, size_t n)
{
    if (n % XTS_UNIT)
        return -EINVAL;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -ENOMEM;
    /* The key schedule once; each unit then sets only its tweak. */
    int len, ok = EVP_CipherInit_ex(c, EVP_aes_256_xts(), NULL, key, NULL, encrypt) == 1;
    const uint8_t *src = in;
    uint8_t *dst = out;
    for (size_t i = 0; ok && i < n / XTS_UNIT; i++) {
        uint8_t tweak[16];
        uint64_t u = first_unit + i;
        for (int b = 0; b < 8; b++) {
            tweak[b] = (uint8_t)(u >> (8 * b));
            tweak[8 + b] = (uint8_t)(salt >> (8 * b));
        }
        ok = EVP_CipherInit_ex(c, NULL, NULL, NULL, tweak, -1) == 1 &&
             EVP_CipherUpdate(c, dst + i * XTS_UNIT, &len, src + i * XTS_UNIT, XTS_UNIT) == 1;
    }
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -EIO;
}

int crypto_aead_open(const uint8_t key[AEAD_KEY_LEN], const void *aad, size_t aadlen,
                     const uint8_t *in, size_t n, uint8_t *out)
{
    if (n < AEAD_OVERHEAD)
        return -EBADMSG;
    size_t clen = n - AEAD_OVERHEAD;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -ENOMEM;
    int len, ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, in) == 1;
    if (ok && aadlen)
        ok = EVP_DecryptUpdate(c, NULL, &len, aad, (int)aadlen) == 1;
    if (ok && clen)
        ok = EVP_DecryptUpdate(c, out, &len, in + AEAD_NONCE_LEN, (int)clen) == 1;
    if (ok)
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_LEN,
                                 (void *)(in + AEAD_NONCE_LEN + clen)) == 1;
    if (ok)
        ok = EVP_DecryptFinal_ex(c, out + clen, &len) == 1;
    EVP_CIPHER_CTX_free(c);
    if (!ok) {
        crypto_wipe(out, clen);
        return -EBADMSG;
    }
    return 0;
}

static int fsync_dir_of(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    int fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int masterkey_create(const char *path, struct masterkey *ret)
{
    struct masterkey mk;
    int rc = rand_bytes(mk.key, sizeof(mk.key));
    if (rc < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = 0;
    if (write(fd, mk.key, sizeof(mk.key)) != (ssize_t)sizeof(mk.key) || fsync(fd) < 0)
        rc = -EIO;
    close(fd);
    if (rc == 0)
        rc = fsync_dir_of(path);
    if (rc < 0) {
        unlink(path);
        masterkey_wipe(&mk);
        return rc;
    }
    *ret = mk;
    masterkey_wipe(&mk);
    return 0;
}

int masterkey_load(const char *path, struct masterkey *ret)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (st.st_mode & 077) {
        close(fd);
        return -EPERM;
    }
    struct masterkey mk;
    uint8_t extra;
    ssize_t n = read(fd, mk.key, sizeof(mk.key));
    ssize_t more = read(fd, &extra, 1);
    close(fd);
    if (n != (ssize_t)sizeof(mk.key) || more != 0) {
        masterkey_wipe(&mk);
        return -EBADMSG;
    }
    *ret = mk;
    masterkey_wipe(&mk);
    return 0;
}

void masterkey_wipe(struct masterkey *mk)
{
    crypto_wipe(mk->key, sizeof(mk->key));
}

void masterkey_derive(const struct masterkey *mk, const char *label, uint8_t out[32])
{
    crypto_hmac_sha256(mk->key, sizeof(mk->key), label, strlen(label), out);
}
