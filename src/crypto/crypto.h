/*
 * crypto.h — hashing, MACs, authenticated encryption and the master key, on OpenSSL's libcrypto.
 *
 * Everything secret passes through here: compare secrets with crypto_memeq (constant time) and
 * wipe them with crypto_wipe.  The master key (32 random bytes in DATA/master.key, mode 0600)
 * wraps every secret amid stores: access key secrets now, KMS key material later.
 */
#ifndef AMID_CRYPTO_H
#define AMID_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN     32
#define AEAD_KEY_LEN   32
#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN   16
/* Bytes aead_seal adds to a plaintext: nonce in front, tag behind. */
#define AEAD_OVERHEAD (AEAD_NONCE_LEN + AEAD_TAG_LEN)

void crypto_sha256(const void *data, size_t n, uint8_t out[SHA256_LEN]);

/* Incremental SHA-256.  crypto_sha256_new returns NULL when out of memory; the caller frees
 * with crypto_sha256_free (accepts NULL). */
struct sha256;
struct sha256 *crypto_sha256_new(void);
void crypto_sha256_update(struct sha256 *h, const void *data, size_t n);
/* Writes the digest and resets the context for reuse. */
void crypto_sha256_final(struct sha256 *h, uint8_t out[SHA256_LEN]);
void crypto_sha256_free(struct sha256 *h);

void crypto_hmac_sha256(const void *key, size_t klen, const void *data, size_t n,
                        uint8_t out[SHA256_LEN]);

/* Constant-time equality of two `n`-byte buffers. */
bool crypto_memeq(const void *a, const void *b, size_t n);
/* Overwrites `n` bytes with zeroes in a way the compiler keeps. */
void crypto_wipe(void *p, size_t n);

/* AES-256-GCM.  aead_seal writes nonce || ciphertext || tag (n + AEAD_OVERHEAD bytes) into
 * `out`, with a fresh random nonce; `aad` is authenticated, not encrypted.  Returns 0 or -EIO. */
int crypto_aead_seal(const uint8_t key[AEAD_KEY_LEN], const void *aad, size_t aadlen,
                     const void *in, size_t n, uint8_t *out);
/* Opens what crypto_aead_seal produced (`n` bytes including overhead) into `out`
 * (n - AEAD_OVERHEAD bytes).  Returns 0, or -EBADMSG when the data, tag, aad or key is wrong. */
int crypto_aead_open(const uint8_t key[AEAD_KEY_LEN], const void *aad, size_t aadlen,
                     const uint8_t *in, size_t n, uint8_t *out);

/* AES-256-XTS over whole units of XTS_UNIT bytes, as disks encrypt sectors: unit i of the `n`
 * bytes (a multiple of XTS_UNIT) is transformed under the tweak (first_unit + i, salt), each a
 * little-endian 64-bit half.  Same size out as in; `in` and `out` may be the same.  The two
 * halves of the key must differ.  Returns 0, -EINVAL for a length that is not whole units, or
 * -EIO. */
#define XTS_KEY_LEN 64
#define XTS_UNIT    512u
int crypto_xts(const uint8_t key[XTS_KEY_LEN], bool encrypt, uint64_t salt, uint64_t first_unit,
               const void *in, void *out, size_t n);

/* The master key of a data directory. */
struct masterkey {
    uint8_t key[AEAD_KEY_LEN];
};

/* Creates DATA/master.key with 32 random bytes, mode 0600, durably.  -EEXIST if present. */
int masterkey_create(const char *path, struct masterkey *ret);
/* Loads the key.  Refuses with -EPERM when the file is readable or writable by group or others,
 * -EBADMSG when it is not 32 bytes. */
int masterkey_load(const char *path, struct masterkey *ret);
void masterkey_wipe(struct masterkey *mk);
/* Derives a purpose-specific subkey (HMAC-SHA256 of `label` under the master key), so one key
 * never serves two purposes. */
void masterkey_derive(const struct masterkey *mk, const char *label, uint8_t out[32]);

/* ---- SSH key pairs (EC2 key pairs) ---- */

#define SSHKEY_PUB_MAX 1024
#define SSHKEY_FP_MAX  128

/* A new key pair: `type` "rsa" (2048 bits) or "ed25519".  Writes the private key PEM (PKCS#1
 * "RSA PRIVATE KEY" for rsa, "OPENSSH PRIVATE KEY" for ed25519, as EC2 hands them out) into
 * `priv` (caller frees with crypto_wipe + free), the public key in OpenSSH text form ("ssh-rsa
 * AAAA... name") into pub, and EC2's fingerprint: the SHA-1 of the DER private key (rsa) or the
 * base64 SHA-256 of the public key (ed25519).  Returns 0, -EINVAL (type) or -EIO. */
int sshkey_generate(const char *type, const char *comment, char **priv, char pub[SSHKEY_PUB_MAX],
                    char fp[SSHKEY_FP_MAX]);
/* Parses a public key as ImportKeyPair takes it (OpenSSH "ssh-rsa"/"ssh-ed25519" text, or PEM/DER
 * SubjectPublicKeyInfo): sets its type ("rsa"/"ed25519"), its OpenSSH text and EC2's fingerprint
 * for imported keys (MD5 of the DER public key for rsa, base64 SHA-256 for ed25519).
 * -EINVAL for anything else (RSA under 1024 bits included). */
int sshkey_import(const uint8_t *data, size_t n, char type[16], char pub[SSHKEY_PUB_MAX],
                  char fp[SSHKEY_FP_MAX]);

#endif
