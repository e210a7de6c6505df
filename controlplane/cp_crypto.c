/*
 * cp_crypto.c - Argon2id password hashes (libargon2), the appliance key file
 * and AES-256-GCM credential sealing (mbedTLS).  See cp_crypto.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <argon2.h>
#include <mbedtls/gcm.h>

#include "im_common.h"
#include "im_rng.h"
#include "cp_crypto.h"

#define CR_SALT_LEN     16
#define CR_HASH_LEN     32
#define CR_SEAL_V1      1
#define CR_NONCE_LEN    12
#define CR_TAG_LEN      16
#define CR_SEAL_OVER    (1 + CR_NONCE_LEN + CR_TAG_LEN)
#define CR_KEY_FILE     "appliance.key"

struct cp_argon2_params cp_argon2_params = {
    .t_cost = 3,
    .m_cost_kib = 64 * 1024,
    .parallelism = 1,
};

int cp_random(void *buf, size_t n)
{
    return im_random(buf, n);
}

/* ---- passwords -------------------------------------------------------- */

int cp_password_hash(const char *password, size_t len, char out[CP_HASH_MAX + 1])
{
    const struct cp_argon2_params *pp = &cp_argon2_params;
    uint8_t salt[CR_SALT_LEN];
    int rc;

    out[0] = '\0';
    if (!password)
        password = "";
    size_t need = argon2_encodedlen(pp->t_cost, pp->m_cost_kib, pp->parallelism,
                                    CR_SALT_LEN, CR_HASH_LEN, Argon2_id);
    if (need > CP_HASH_MAX + 1)
        return -IM_ETOOBIG;
    if ((rc = cp_random(salt, sizeof(salt))))
        return rc;
    rc = argon2id_hash_encoded(pp->t_cost, pp->m_cost_kib, pp->parallelism, password, len,
                               salt, sizeof(salt), CR_HASH_LEN, out, CP_HASH_MAX + 1);
    if (rc == ARGON2_OK)
        return 0;
    out[0] = '\0';
    return rc == ARGON2_MEMORY_ALLOCATION_ERROR ? -ENOMEM : -IM_EINVAL;
}

int cp_password_verify(const char *encoded, const char *password, size_t len)
{
    if (!password)
        password = "";
    /* Only Argon2id hashes of this code's form are accepted: anything else is corrupt. */
    if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0 ||
        strnlen(encoded, CP_HASH_MAX + 1) > CP_HASH_MAX)
        return -IM_ECORRUPT;
    int rc = argon2id_verify(encoded, password, len);
    switch (rc) {
    case ARGON2_OK:                         return 0;
    case ARGON2_VERIFY_MISMATCH:            return -IM_EAUTH;
    case ARGON2_MEMORY_ALLOCATION_ERROR:    return -ENOMEM;
    case ARGON2_PWD_TOO_LONG:
    case ARGON2_PWD_PTR_MISMATCH:           return -IM_EAUTH;
    default:                                return -IM_ECORRUPT;
    }
}

/* ---- the appliance key ------------------------------------------------ */

static int key_load(int dirfd, const char *dir, struct cp_key *key, char *why, size_t whysz)
{
    struct stat st;
    int rc = 0;
    int fd = openat(dirfd, CR_KEY_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return -errno;          /* ENOENT: caller creates it */
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(why, whysz, "%s/" CR_KEY_FILE ": %s", dir, strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -IM_ECORRUPT;
        snprintf(why, whysz, "%s/" CR_KEY_FILE " is not a regular file", dir);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        rc = -EACCES;
        snprintf(why, whysz, "%s/" CR_KEY_FILE " is group/world accessible (mode %04o); chmod 600 it",
                 dir, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size != (off_t)sizeof(key->k)) {
        rc = -IM_ECORRUPT;
        snprintf(why, whysz, "%s/" CR_KEY_FILE " has %lld bytes, expected %zu "
                 "(damaged or not an imfuse key; restore it from a backup)",
                 dir, (long long)st.st_size, sizeof(key->k));
        goto out;
    }
    size_t got = 0;
    while (got < sizeof(key->k)) {
        ssize_t r = read(fd, key->k + got, sizeof(key->k) - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -IM_ECORRUPT;
            snprintf(why, whysz, "%s/" CR_KEY_FILE ": read failed (%s)", dir,
                     r < 0 ? strerror(errno) : "file shrank");
            im_wipe(key->k, sizeof(key->k));
            goto out;
        }
        got += (size_t)r;
    }
out:
    close(fd);
    return rc;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/*
 * Create the key without ever exposing a partial file under the final name:
 * write and fsync a temporary file (O_CREAT|O_EXCL, 0600), link() it to the
 * final name (fails if someone else created it first), fsync the directory.
 * Returns 0, -EEXIST when the key appeared meanwhile, or negative.
 */
static int key_create(int dirfd, const char *dir, char *why, size_t whysz)
{
    static const char tmp[] = CR_KEY_FILE ".new";
    struct cp_key key;
    int rc, fd;

    if ((rc = cp_random(key.k, sizeof(key.k)))) {
        snprintf(why, whysz, "cannot get random bytes for the appliance key: %s", strerror(-rc));
        return rc;
    }
    (void)unlinkat(dirfd, tmp, 0);      /* left by a crash during an earlier creation */
    fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = -errno;
        snprintf(why, whysz, "cannot create %s/%s: %s", dir, tmp, strerror(errno));
        goto out;
    }
    if (fchmod(fd, 0600) < 0 || (rc = write_all(fd, key.k, sizeof(key.k))) || fsync(fd) < 0) {
        rc = rc ? rc : -errno;
        snprintf(why, whysz, "cannot write %s/%s: %s", dir, tmp, strerror(-rc));
        close(fd);
        (void)unlinkat(dirfd, tmp, 0);
        goto out;
    }
    close(fd);
    if (linkat(dirfd, tmp, dirfd, CR_KEY_FILE, 0) < 0) {
        rc = -errno;
        if (rc != -EEXIST)
            snprintf(why, whysz, "cannot create %s/" CR_KEY_FILE ": %s", dir, strerror(errno));
    }
    (void)unlinkat(dirfd, tmp, 0);
    if (!rc && fsync(dirfd) < 0) {
        rc = -errno;
        snprintf(why, whysz, "cannot sync %s: %s", dir, strerror(errno));
    }
out:
    im_wipe(&key, sizeof(key));
    return rc;
}

int cp_key_load_or_create(const char *dir, struct cp_key *key, char *why, size_t whysz)
{
    char dummy[1];
    int rc;

    if (!why || !whysz) {
        why = dummy;
        whysz = sizeof(dummy);
    }
    why[0] = '\0';
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        rc = -errno;
        snprintf(why, whysz, "cannot open %s: %s", dir, strerror(errno));
        return rc;
    }
    for (int tries = 0; tries < 3; tries++) {
        rc = key_load(dirfd, dir, key, why, whysz);
        if (rc != -ENOENT)
            break;
        rc = key_create(dirfd, dir, why, whysz);
        if (rc && rc != -EEXIST)
            break;
        rc = -ENOENT;           /* created (or raced): load what is there */
    }
    if (rc == -ENOENT)
        snprintf(why, whysz, "%s/" CR_KEY_FILE " vanished while it was being created", dir);
    if (rc == -ELOOP)
        snprintf(why, whysz, "%s/" CR_KEY_FILE " is a symbolic link; refusing it", dir);
    close(dirfd);
    if (rc)
        im_wipe(key, sizeof(*key));
    return rc;
}

/* ---- sealing ---------------------------------------------------------- */

int cp_seal(const struct cp_key *key, const void *aad, size_t aadlen,
            const void *pt, size_t ptlen, uint8_t **out, size_t *outlen)
{
    mbedtls_gcm_context gcm;
    uint8_t *buf;
    int rc;

    *out = NULL;
    *outlen = 0;
    if (ptlen > SIZE_MAX - CR_SEAL_OVER || (ptlen && !pt) || (aadlen && !aad))
        return -IM_EINVAL;
    if (!(buf = malloc(ptlen + CR_SEAL_OVER)))
        return -ENOMEM;
    buf[0] = CR_SEAL_V1;
    if ((rc = cp_random(buf + 1, CR_NONCE_LEN))) {
        free(buf);
        return rc;
    }
    mbedtls_gcm_init(&gcm);
    rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key->k, 256);
    if (!rc)
        rc = mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, ptlen, buf + 1, CR_NONCE_LEN,
                                       aad, aadlen, pt, buf + 1 + CR_NONCE_LEN,
                                       CR_TAG_LEN, buf + 1 + CR_NONCE_LEN + ptlen);
    mbedtls_gcm_free(&gcm);
    if (rc) {
        im_wipe(buf, ptlen + CR_SEAL_OVER);
        free(buf);
        return -IM_EINVAL;
    }
    *out = buf;
    *outlen = ptlen + CR_SEAL_OVER;
    return 0;
}

int cp_unseal(const struct cp_key *key, const void *aad, size_t aadlen,
              const uint8_t *in, size_t inlen, uint8_t **out, size_t *ptlen)
{
    mbedtls_gcm_context gcm;
    uint8_t *buf;
    int rc;

    *out = NULL;
    *ptlen = 0;
    if (!in || inlen < CR_SEAL_OVER || in[0] != CR_SEAL_V1 || (aadlen && !aad))
        return -IM_ECORRUPT;
    size_t n = inlen - CR_SEAL_OVER;
    if (!(buf = malloc(n + 1)))
        return -ENOMEM;
    mbedtls_gcm_init(&gcm);
    rc = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key->k, 256);
    if (!rc)
        rc = mbedtls_gcm_auth_decrypt(&gcm, n, in + 1, CR_NONCE_LEN, aad, aadlen,
                                      in + 1 + CR_NONCE_LEN + n, CR_TAG_LEN,
                                      in + 1 + CR_NONCE_LEN, buf);
    mbedtls_gcm_free(&gcm);
    if (rc) {
        im_wipe(buf, n + 1);
        free(buf);
        return rc == MBEDTLS_ERR_GCM_AUTH_FAILED ? -IM_ECORRUPT : -IM_EINVAL;
    }
    buf[n] = '\0';
    *out = buf;
    *ptlen = n;
    return 0;
}
