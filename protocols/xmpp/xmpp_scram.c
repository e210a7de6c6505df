/*
 * xmpp_scram.c - SCRAM-SHA-1 / SCRAM-SHA-256 client math (RFC 5802, 7677).
 */
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/md.h>

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
                   const char *cnonce, const struct im_rng *rng,
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
        rc = im_rng_fill(rng, raw, sizeof(raw));
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
    sc->step = SCRAM_STEP_FIRST;
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
scram_server_first(struct scram_ctx *sc, const char *sf, size_t sflen)
{
    const char *r, *s, *it, *e;
    size_t rl, sl, il, el, saltlen;
    unsigned long iter = 0;

    if (sc->step != SCRAM_STEP_FIRST)
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
    if (il == 0)
        return -IM_EPROTO;
    for (size_t i = 0; i < il; i++) {
        if (it[i] < '0' || it[i] > '9')
            return -IM_EPROTO;
        if (iter <= UINT32_MAX)
            iter = iter * 10 + (unsigned long)(it[i] - '0');
    }
    if (iter < SCRAM_MIN_ITER)
        return -IM_EPROTO;
    if (iter > SCRAM_MAX_ITER) {
        sc->iter = iter > UINT32_MAX ? UINT32_MAX : (uint32_t)iter;
        return -IM_ELIMIT;              /* the server chooses the work: bounded */
    }
    if (sl == 0 || mbedtls_base64_decode(sc->salt, sizeof(sc->salt), &saltlen, (const unsigned char *)s, sl) ||
        saltlen == 0)
        return -IM_EPROTO;
    if (sflen > sizeof(sc->sf))
        return -IM_ETOOBIG;
    memcpy(sc->sf, sf, sflen);
    sc->sf_len = sflen;
    sc->rnonce_off = (size_t)(r - sf);
    sc->rnonce_len = rl;
    sc->salt_len = saltlen;
    sc->iter = (uint32_t)iter;
    sc->step = SCRAM_STEP_KEY;
    return 0;
}

void
scram_kdf_params(const struct scram_ctx *sc, const char *password, struct im_kdf_params *p)
{
    *p = (struct im_kdf_params){
        .hash = sc->hash == SCRAM_SHA256 ? IM_KDF_SHA256 : IM_KDF_SHA1,
        .password = password,
        .password_len = strlen(password),
        .salt = sc->salt,
        .salt_len = sc->salt_len,
        .iterations = sc->iter,
    };
}

/* HMAC(key, AuthMessage) into out; AuthMessage = client-first-bare ","
 * server-first "," client-final-without-proof (cfwp, n bytes). */
static int
auth_hmac(const struct scram_ctx *sc, mbedtls_md_context_t *mctx, const uint8_t *key, size_t hl,
          const char *cfwp, size_t n, uint8_t *out)
{
    if (mbedtls_md_hmac_starts(mctx, key, hl) ||
        mbedtls_md_hmac_update(mctx, (const unsigned char *)sc->cfb, sc->cfb_len) ||
        mbedtls_md_hmac_update(mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(mctx, (const unsigned char *)sc->sf, sc->sf_len) ||
        mbedtls_md_hmac_update(mctx, (const unsigned char *)",", 1) ||
        mbedtls_md_hmac_update(mctx, (const unsigned char *)cfwp, n) ||
        mbedtls_md_hmac_finish(mctx, out))
        return -IM_EPROTO;
    return 0;
}

int
scram_client_final_key(struct scram_ctx *sc, const uint8_t *salted, size_t saltedlen,
                       char *out, size_t outsz, size_t *outlen)
{
    const mbedtls_md_info_t *md = scram_md(sc->hash);
    size_t hl = mbedtls_md_get_size(md), len = 0, p64len;
    uint8_t ckey[SCRAM_MAX_HASH], skey[SCRAM_MAX_HASH];
    uint8_t stored[SCRAM_MAX_HASH], csig[SCRAM_MAX_HASH], proof[SCRAM_MAX_HASH];
    char proof64[2 * SCRAM_MAX_HASH];
    mbedtls_md_context_t mctx;
    int rc;

    if (sc->step != SCRAM_STEP_KEY || saltedlen != hl)
        return -IM_EINVAL;
    /* client-final-message-without-proof = "c=biws,r=" nonce   (biws = b64("n,,")) */
    *outlen = 0;
    if ((rc = put(out, outsz, &len, "c=biws,r=", 9)) ||
        (rc = put(out, outsz, &len, sc->sf + sc->rnonce_off, sc->rnonce_len)))
        return rc;

    mbedtls_md_init(&mctx);
    rc = -IM_EPROTO;
    if (mbedtls_md_setup(&mctx, md, 1))
        goto out;
    if (mbedtls_md_hmac(md, salted, hl, (const unsigned char *)"Client Key", 10, ckey) ||
        mbedtls_md(md, ckey, hl, stored) ||
        mbedtls_md_hmac(md, salted, hl, (const unsigned char *)"Server Key", 10, skey))
        goto out;
    if (auth_hmac(sc, &mctx, stored, hl, out, len, csig) ||
        auth_hmac(sc, &mctx, skey, hl, out, len, sc->server_sig))
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
    sc->step = SCRAM_STEP_FINAL;
    rc = 0;
out:
    mbedtls_md_free(&mctx);
    im_wipe(ckey, sizeof(ckey));
    im_wipe(skey, sizeof(skey));
    im_wipe(stored, sizeof(stored));
    im_wipe(csig, sizeof(csig));
    im_wipe(proof, sizeof(proof));
    return rc;
}

int
scram_client_final(struct scram_ctx *sc, const char *password,
                   const char *sf, size_t sflen,
                   char *out, size_t outsz, size_t *outlen)
{
    uint8_t salted[IM_KDF_MAX_KEY];
    struct im_kdf_params p;
    int rc = scram_server_first(sc, sf, sflen);

    if (rc)
        return rc;
    scram_kdf_params(sc, password, &p);
    rc = im_kdf_pbkdf2(&p, salted, sizeof(salted));
    if (!rc)
        rc = scram_client_final_key(sc, salted, im_kdf_keylen(p.hash), out, outsz, outlen);
    im_wipe(salted, sizeof(salted));
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

    if (sc->step != SCRAM_STEP_FINAL)
        return -IM_EPROTO;
    if (!scram_attr(sfin, len, 'e', &p, &pl))
        return -IM_EAUTH;
    if (scram_attr(sfin, len, 'v', &p, &pl) ||
        mbedtls_base64_decode(v, sizeof(v), &vl, (const unsigned char *)p, pl))
        return -IM_EPROTO;
    if (vl != hl || im_ct_memcmp(v, sc->server_sig, hl))
        return -IM_EAUTH;
    sc->step = SCRAM_STEP_DONE;
    return 0;
}

void
scram_wipe(struct scram_ctx *sc)
{
    im_wipe(sc, sizeof(*sc));
}
