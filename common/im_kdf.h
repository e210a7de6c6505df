/*
 * im_kdf.h - password-based key derivation (PBKDF2-HMAC, RFC 8018).
 *
 * The work an adapter may hand off (struct im_io.kdf in im_proto.h) so that
 * thousands of iterations of HMAC never run on the dataplane; the same
 * function derives inline where no one takes the work.
 */
#ifndef IM_KDF_H
#define IM_KDF_H

#include <stddef.h>
#include <stdint.h>

#include "im_common.h"

enum im_kdf_hash {
    IM_KDF_SHA1 = 1,
    IM_KDF_SHA256,
};

#define IM_KDF_MAX_KEY      32          /* SHA-256 output, the longest key */
#define IM_KDF_MAX_ITER     1000000u    /* iterations im_kdf_pbkdf2() accepts */

/* One derivation.  Nothing is owned: the caller keeps every pointer valid
 * for the duration of the call it passes the params to. */
struct im_kdf_params {
    enum im_kdf_hash hash;
    const char *password;       /* not NUL-terminated necessarily */
    size_t password_len;
    const uint8_t *salt;
    size_t salt_len;
    uint32_t iterations;        /* 1 .. IM_KDF_MAX_ITER */
};

/* The key length of a hash (its output size: 20 or 32); 0 when unknown. */
size_t im_kdf_keylen(enum im_kdf_hash h);

/*
 * PBKDF2-HMAC of p into key (keysz >= im_kdf_keylen(p->hash); exactly that
 * many bytes are written).  Returns 0, -IM_EINVAL (unknown hash, iterations
 * out of range, keysz too small) or -ENOMEM.  Key material the function
 * uses internally is wiped; key is the caller's to wipe.
 */
int im_kdf_pbkdf2(const struct im_kdf_params *p, uint8_t *key, size_t keysz);

#endif
