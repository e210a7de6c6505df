/*
 * cp_crypto.h - password hashing (Argon2id, libargon2) and credential sealing
 * (AES-256-GCM, mbedTLS) for the controlplane.
 */
#ifndef CP_CRYPTO_H
#define CP_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "cp_store.h"

/* Argon2id parameters: t=3, m=64 MiB, p=1 by default; tests may lower m. */
struct cp_argon2_params {
    uint32_t t_cost, m_cost_kib, parallelism;
};
extern struct cp_argon2_params cp_argon2_params;

/* Hash a password into an encoded Argon2id string (16-byte random salt,
 * 32-byte hash, cp_argon2_params).  0, -ENOMEM, or negative; out is "" on failure. */
int cp_password_hash(const char *password, size_t len, char out[CP_HASH_MAX + 1]);
/* 0 when the password matches the encoded hash (constant time), -IM_EAUTH when
 * not, -IM_ECORRUPT when encoded is not a well-formed Argon2id hash, -ENOMEM. */
int cp_password_verify(const char *encoded, const char *password, size_t len);

/*
 * The appliance key: 32 random bytes in DIR/appliance.key, created 0600 when
 * missing (written to appliance.key.new with O_CREAT|O_EXCL, fsync'd, linked
 * into place, directory fsync'd: never a partial key under the real name).
 * An existing key must be a regular file (not a symlink) of exactly 32 bytes
 * with no group/other permission bits.  0, or negative with the reason in why:
 * -EACCES (mode), -IM_ECORRUPT (size, not a regular file), -ELOOP (symlink), -errno.
 */
struct cp_key {
    uint8_t k[32];
};
int cp_key_load_or_create(const char *dir, struct cp_key *key, char *why, size_t whysz);

/*
 * Seal plaintext with AES-256-GCM under key, binding aad (e.g. uid.account)
 * as additional data.  Output: version byte | 12-byte nonce | ciphertext |
 * 16-byte tag, malloc'd into *out.  0 or negative.
 */
int cp_seal(const struct cp_key *key, const void *aad, size_t aadlen,
            const void *pt, size_t ptlen, uint8_t **out, size_t *outlen);
/* Open a sealed blob; *out is malloc'd and NUL-terminated (ptlen excludes the NUL).
 * -IM_ECORRUPT when the tag does not verify (wrong key, wrong aad, tampered),
 * the version byte is unknown or the input is too short; *out is NULL then. */
int cp_unseal(const struct cp_key *key, const void *aad, size_t aadlen,
              const uint8_t *in, size_t inlen, uint8_t **out, size_t *ptlen);

/* Fill buf with cryptographically random bytes (getrandom). 0 or negative. */
int cp_random(void *buf, size_t n);

#endif
