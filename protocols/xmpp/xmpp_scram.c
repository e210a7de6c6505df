/*
 * xmpp_scram.c - SCRAM-SHA-1 / SCRAM-SHA-256 client math (RFC 5802, 7677).
 */
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>

#include "im_common.h"
#include "xmpp_scram.h"

static const mbedtls_md_info_t *
scram_md(enum scram_hash h)
{
    return mbedtls_md_info_from_type(h == SCRAM_SHA256 ? MBEDTLS_MD_SHA256 : MBEDTLS_MD_SHA1);
}

const char *
scram_mech_name(enum scram_hash h)
{
    return h == SCRAM_SHA256 ? "SCRAM-SHA-256" : "SCRAM-SHA-1";
}

/* Append n bytes to out at *len; -IM_ETOOBIG when it does not fit. */
static int
put(char *out, size_t outsz, size_t *len, const char *p, size_t n)
{
    if (outsz - *len < n)
        return -IM_ETOOBIG;
    memcpy(out + *len, p, n);
    *len += n;
    return 0;
}

int
scram_client_first(struct scram_ctx *sc, enum scram_hash h, const char *user,
                   const char *cnonce, scram_rand_fn rnd, void *rnd_ud,
                   char *out, size_t outsz, size_t *outlen)
{
    char nonce[SCRAM_MAX_NONCE + 1];
    size_t nlen = 0, len = 0;
    int rc;

    memset(sc, 0, sizeof(*sc));
    sc->hash = h;
    if (!user || !*user)
        return -IM_EINVAL;
    if (cnonce) {
        nlen = strlen(cnonce);
        if (nlen == 0 || nlen > SCRAM_MAX_NONCE)
            return -IM_EINVAL;
        for (size_t i = 0; i < nlen; i++)
            if (cnonce[i] < 0x21 || cnonce[i] > 0x7e || cnonce[i] == ',')
                return -IM_EINVAL;
        memcpy(nonce, cnonce, nlen);
    } else {
        uint8_t raw[SCRAM_NONCE_BYTES];
        if (!rnd)
            return -IM_EINVAL;
        rc = rnd(rnd_ud, raw, sizeof(raw));
        if (rc)
            return rc;
        if (mbedtls_base64_encode((unsigned char *)nonce, sizeof(nonce), &nlen, raw, sizeof(raw)))
            return -IM_ETOOBIG;
        im_wipe(raw, sizeof(raw));
    }

    /* client-first-message-bare = "n=" saslname ",r=" nonce */
    if ((rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, "n=", 2)))
        return rc;
    for (const char *u = user; *u; u++) {
        if (*u == '=')
            rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, "=3D", 3);
        else if (*u == ',')
            rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, "=2C", 3);
        else
            rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, u, 1);
        if (rc)
            return rc;
    }
    if ((rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, ",r=", 3)))
        return rc;
    sc->nonce_off = len;
    sc->nonce_len = nlen;
    if ((rc = put(sc->cfb, sizeof(sc->cfb) - 1, &len, nonce, nlen)))
        return rc;
    sc->cfb[len] = 0;
    sc->cfb_len = len;

    *outlen = 0;
    if ((rc = put(out, outsz, outlen, "n,,", 3)) ||
        (rc = put(out, outsz, outlen, sc->cfb, sc->cfb_len)))
        return rc;
    sc->step = 1;
    return 0;
}

/* Find attribute `key` ("r", "s", "i", "v", "e") in a comma-separated SCRAM
 * message; sets *v and *vlen to its value.  Returns 0 or -IM_ENOTFOUND. */
static int
scram_attr(const char *m, size_t len, char key, const char **v, size_t *vlen)
{
    size_t i = 0;

    while (i < len) {
        size_t j = i;
        while (j < len && m[j] != ',')
            j++;
        if (j - i >= 2 && m[i] == key && m[i + 1] == '=') {
            *v = m + i + 2;
            *vlen = j - i - 2;
            return 0;
        }
        i = j + 1;
    }
    return -IM_ENOTFOUND;
}

int
scram_client_final(struct scram_ctx *sc, const char *password,
                   const char *sf, size_t sflen,
                   char *out, size_t outsz, size_t *outlen)
{
    const mbedtls_md_info_t *md = scram_md(sc->hash);
    size_t hl = mbedtls_md_get_size(md);
    const char *r, *s, *it, *e;
    size_t rl, sl, il, el, saltlen, len = 0;
    uint8_t salt[128], salted[SCRAM_MAX_HASH], ckey[SCRAM_MAX_HASH], skey[SCRAM_MAX_HASH];
    uint8_t stored[SCRAM_MAX_HASH], csig[SCRAM_MAX_HASH], proof[SCRAM_MAX_HASH];
    char proof64[2 * SCRAM_MAX_HASH];
    size_t p64len;
    unsigned long iter = 0;
    mbedtls_md_context_t mctx;
    int rc = -IM_EPROTO;

    if (sc->step != 1)
        return -IM_EINVAL;
    if (!scram_attr(sf, sflen, 'e', &e, &el))
        return -IM_EPROTO;
    if (sflen < 2 || sf[0] != 'r' || sf[1] != '=')     /* no mandatory extensions ("m=") */
        return -IM_EPROTO;
    if (scram_attr(sf, sflen, 'r', &r, &rl) || scram_attr(sf, sflen, 's', &s, &sl) ||
        scram_attr(sf, sflen, 'i', &it, &il))
        return -IM_EPROTO;
    /* The combined nonce must extend ours by at least one character. */
    if (rl <= sc->nonce_len || memcmp(r, sc->cfb + sc->nonce_off, sc->nonce_len))
        return -IM_EPROTO;
    for (size_t i = 0; i < rl; i++)
        if (r[i] < 0x21 || r[i] > 0x7e || r[i] == ',')
            return -IM_EPROTO;
    if (il == 0 || il > 7)
        return -IM_EPROTO;
    for (size_t i = 0; i < il; i++) {
        if (it[i] < '0' || it[i] > '9')
            return -IM_EPROTO;
        iter = iter * 10 + (unsigned long)(it[i] - '0');
    }
    if (iter < SCRAM_MIN_ITER || iter > SCRAM_MAX_ITER)
        return -IM_EPROTO;
    if (sl == 0 || mbedtls_base64_decode(salt, sizeof(salt), &saltlen, (const unsigned char *)s, sl) ||
        saltlen == 0)
        return -IM_EPROTO;

    /* client-final-message-without-proof = "c=biws,r=" nonce   (biws = b64("n,,")) */
    *outlen = 0;
    if ((rc = put(out, outsz, &len, "c=biws,r=", 9)) || (rc = put(out, outsz, &len, r, rl)))
        return rc;

    mbedtls_md_init(&mctx);
    rc = -IM_EPROTO;
    if (mbedtls_md_setup(&mctx, md, 1) ||
        mbedtls_pkcs5_pbkdf2_hmac(&mctx, (const unsigned char *)password, strlen(password),
                                  salt, saltlen, (unsigned int)iter, (uint32_t)hl, salted))
        goto out;
    if (mbedtls_md_hmac(md, salted, hl, (const unsigned char *)"Client Key", 10, ckey) ||
        mbedtls_md(md, ckey, hl, stored) ||
        mbedtls_md_hmac(md, salted, hl, (const unsigned char *)"Server Key", 10, skey))
        goto out;
    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    if (mbedtls_md_hmac_starts(&mctx, stored, hl) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)sc->cfb, sc->cfb_len) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)sf, sflen) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)out, len) ||
        mbedtls_md_hmac_finish(&mctx, csig))
        goto out;
    if (mbedtls_md_hmac_starts(&mctx, skey, hl) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)sc->cfb, sc->cfb_len) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)sf, sflen) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(&mctx, (const unsigned char *)out, len) ||
        mbedtls_md_hmac_finish(&mctx, sc->server_sig))
        goto out;
    for (size_t i = 0; i < hl; i++)
        proof[i] = ckey[i] ^ csig[i];
    if (mbedtls_base64_encode((unsigned char *)proof64, sizeof(proof64), &p64len, proof, hl)) {
        rc = -IM_ETOOBIG;
        goto out;
    }
    if ((rc = put(out, outsz, &len, ",p=", 3)) || (rc = put(out, outsz, &len, proof64, p64len)))
        goto out;
    *outlen = len;
    sc->step = 2;
    rc = 0;
out:
    mbedtls_md_free(&mctx);
    im_wipe(salted, sizeof(salted));
    im_wipe(ckey, sizeof(ckey));
    im_wipe(skey, sizeof(skey));
    im_wipe(stored, sizeof(stored));
    im_wipe(csig, sizeof(csig));
    im_wipe(proof, sizeof(proof));
    return rc;
}

int
scram_verify_server_final(struct scram_ctx *sc, const char *sfin, size_t len)
{
    size_t hl = mbedtls_md_get_size(scram_md(sc->hash));
    uint8_t v[SCRAM_MAX_HASH + 8];
    size_t vl;
    const char *p;
    size_t pl;

    if (sc->step != 2)
        return -IM_EPROTO;
    if (!scram_attr(sfin, len, 'e', &p, &pl))
        return -IM_EAUTH;
    if (scram_attr(sfin, len, 'v', &p, &pl) ||
        mbedtls_base64_decode(v, sizeof(v), &vl, (const unsigned char *)p, pl))
        return -IM_EPROTO;
    if (vl != hl || im_ct_memcmp(v, sc->server_sig, hl))
        return -IM_EAUTH;
    sc->step = 3;
    return 0;
}

void
scram_wipe(struct scram_ctx *sc)
{
    im_wipe(sc, sizeof(*sc));
}
