/*
 * im_kdf.c - PBKDF2-HMAC on mbedTLS (im_kdf.h).
 */
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>

#include "im_kdf.h"

static const mbedtls_md_info_t *
kdf_md(enum im_kdf_hash h)
{
    switch (h) {
    case IM_KDF_SHA1:   return mbedtls_md_info_from_type(MBEDTLS_MD_SHA1);
    case IM_KDF_SHA256: return mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    }
    return NULL;
}

size_t
im_kdf_keylen(enum im_kdf_hash h)
{
    const mbedtls_md_info_t *md = kdf_md(h);
    return md ? mbedtls_md_get_size(md) : 0;
}

int
im_kdf_pbkdf2(const struct im_kdf_params *p, uint8_t *key, size_t keysz)
{
    const mbedtls_md_info_t *md = kdf_md(p->hash);
    size_t kl = md ? mbedtls_md_get_size(md) : 0;
    mbedtls_md_context_t ctx;
    int rc;

    if (!kl || keysz < kl || p->iterations < 1 || p->iterations > IM_KDF_MAX_ITER)
        return -IM_EINVAL;
    mbedtls_md_init(&ctx);
    rc = mbedtls_md_setup(&ctx, md, 1);
    if (rc) {
        rc = rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? -ENOMEM : -IM_EINVAL;
        goto out;
    }
    rc = mbedtls_pkcs5_pbkdf2_hmac(&ctx, (const unsigned char *)p->password, p->password_len,
                                   p->salt, p->salt_len, p->iterations, (uint32_t)kl, key);
    if (rc)
        rc = -IM_EINVAL;
out:
    mbedtls_md_free(&ctx);              /* frees (and zeroises) the HMAC state */
    return rc;
}
