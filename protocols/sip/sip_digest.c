/*
 * sip_digest.c - HTTP digest access authentication as SIP uses it
 * (RFC 3261 22.4, RFC 2617 3.2.2, RFC 7616 3.4: MD5, SHA-256 and their
 * -sess variants, qop auth and auth-int).
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/md5.h>
#include <mbedtls/sha256.h>

#include "sip_int.h"

const char *
sip_digest_alg_name(enum sip_digest_alg alg)
{
    switch (alg) {
    case SIP_ALG_MD5:           return "MD5";
    case SIP_ALG_MD5_SESS:      return "MD5-sess";
    case SIP_ALG_SHA256:        return "SHA-256";
    case SIP_ALG_SHA256_SESS:   return "SHA-256-sess";
    }
    return "MD5";
}

static bool
eq_ci(struct im_str s, const char *z)
{
    size_t n = strlen(z);
    return s.len == n && !strncasecmp(s.p, z, n);
}

/* Copy a (possibly quoted-pair escaped) value; false when it does not fit. */
static bool
copy_val(char *dst, size_t dstsz, struct im_str v)
{
    size_t o = 0;
    for (uint32_t i = 0; i < v.len; i++) {
        char c = v.p[i];
        if (c == '\\' && i + 1 < v.len)
            c = v.p[++i];
        if ((unsigned char)c < 0x20 || c == 0x7f || c == '"' || c == '\\')
            return false;               /* nothing we could quote back safely */
        if (o + 1 >= dstsz)
            return false;
        dst[o++] = c;
    }
    dst[o] = 0;
    return true;
}

int
sip_digest_parse(struct im_str v, struct sip_chal *c)
{
    uint32_t i = 0;
    bool have_nonce = false, alg_ok = true;

    memset(c, 0, sizeof(*c));
    while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
        i++;
    if (v.len - i < 7 || strncasecmp(v.p + i, "digest", 6) ||
        (v.p[i + 6] != ' ' && v.p[i + 6] != '\t' && v.p[i + 6] != '\r' && v.p[i + 6] != '\n'))
        return -IM_EINVAL;
    i += 6;
    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == '\r' || v.p[i] == '\n' ||
                             v.p[i] == ','))
            i++;
        uint32_t ns = i;
        while (i < v.len && v.p[i] != '=' && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t')
            i++;
        struct im_str name = { v.p + ns, i - ns };
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
            i++;
        if (!name.len)
            break;
        if (i >= v.len || v.p[i] != '=')
            return -IM_EINVAL;
        i++;
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
            i++;
        struct im_str val;
        if (i < v.len && v.p[i] == '"') {
            uint32_t s = ++i;
            while (i < v.len && v.p[i] != '"')
                i += (v.p[i] == '\\' && i + 1 < v.len) ? 2 : 1;
            if (i >= v.len)
                return -IM_EINVAL;
            val = (struct im_str){ v.p + s, i - s };
            i++;
        } else {
            uint32_t s = i;
            while (i < v.len && v.p[i] != ',' && v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '\r')
                i++;
            val = (struct im_str){ v.p + s, i - s };
        }
        if (eq_ci(name, "realm")) {
            if (!copy_val(c->realm, sizeof(c->realm), val))
                return -IM_EINVAL;
        } else if (eq_ci(name, "nonce")) {
            if (!val.len || !copy_val(c->nonce, sizeof(c->nonce), val))
                return -IM_EINVAL;
            have_nonce = true;
        } else if (eq_ci(name, "opaque")) {
            if (!copy_val(c->opaque, sizeof(c->opaque), val))
                return -IM_EINVAL;
        } else if (eq_ci(name, "stale")) {
            c->stale = eq_ci(val, "true");
        } else if (eq_ci(name, "algorithm")) {
            if (eq_ci(val, "MD5"))
                c->alg = SIP_ALG_MD5;
            else if (eq_ci(val, "MD5-sess"))
                c->alg = SIP_ALG_MD5_SESS;
            else if (eq_ci(val, "SHA-256"))
                c->alg = SIP_ALG_SHA256;
            else if (eq_ci(val, "SHA-256-sess"))
                c->alg = SIP_ALG_SHA256_SESS;
            else
                alg_ok = false;
        } else if (eq_ci(name, "qop")) {
            /* A quoted comma-separated list of tokens. */
            uint32_t k = 0;
            while (k < val.len) {
                while (k < val.len && (val.p[k] == ' ' || val.p[k] == ',' || val.p[k] == '\t'))
                    k++;
                uint32_t s = k;
                while (k < val.len && val.p[k] != ',' && val.p[k] != ' ' && val.p[k] != '\t')
                    k++;
                struct im_str q = { val.p + s, k - s };
                if (eq_ci(q, "auth"))
                    c->qop_auth = true;
                else if (eq_ci(q, "auth-int"))
                    c->qop_auth_int = true;
            }
        }
    }
    if (!have_nonce || !alg_ok)
        return -IM_EINVAL;
    c->valid = true;
    return 0;
}

static int
alg_rank(enum sip_digest_alg a)
{
    return a == SIP_ALG_SHA256 || a == SIP_ALG_SHA256_SESS ? 2 : 1;
}

bool
sip_digest_better(const struct sip_chal *a, const struct sip_chal *b)
{
    return !b->valid || alg_rank(a->alg) > alg_rank(b->alg);
}

/* Hash of the concatenation of NULL-terminated pieces into lower-case hex. */
struct hctx {
    bool sha;
    mbedtls_md5_context md5;
    mbedtls_sha256_context sha256;
};

static int
h_begin(struct hctx *h, enum sip_digest_alg alg)
{
    h->sha = alg == SIP_ALG_SHA256 || alg == SIP_ALG_SHA256_SESS;
    if (h->sha) {
        mbedtls_sha256_init(&h->sha256);
        return mbedtls_sha256_starts_ret(&h->sha256, 0) ? -IM_EINVAL : 0;
    }
    mbedtls_md5_init(&h->md5);
    return mbedtls_md5_starts_ret(&h->md5) ? -IM_EINVAL : 0;
}

static int
h_add(struct hctx *h, const void *p, size_t n)
{
    if (h->sha)
        return mbedtls_sha256_update_ret(&h->sha256, p, n) ? -IM_EINVAL : 0;
    return mbedtls_md5_update_ret(&h->md5, p, n) ? -IM_EINVAL : 0;
}

static int
h_end(struct hctx *h, char hex[65])
{
    unsigned char d[32];
    size_t n = h->sha ? 32 : 16;
    int rc;
    if (h->sha) {
        rc = mbedtls_sha256_finish_ret(&h->sha256, d);
        mbedtls_sha256_free(&h->sha256);
    } else {
        rc = mbedtls_md5_finish_ret(&h->md5, d);
        mbedtls_md5_free(&h->md5);
    }
    if (rc)
        return -IM_EINVAL;
    static const char xd[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        hex[2 * i] = xd[d[i] >> 4];
        hex[2 * i + 1] = xd[d[i] & 15];
    }
    hex[2 * n] = 0;
    im_wipe(d, sizeof(d));
    return 0;
}

/* H(p1 ":" p2 ":" ... ) over NULL-terminated string pieces. */
static int
h_join(enum sip_digest_alg alg, char out[65], const char *const *parts)
{
    struct hctx h;
    int rc = h_begin(&h, alg);
    for (size_t i = 0; !rc && parts[i]; i++) {
        if (i)
            rc = h_add(&h, ":", 1);
        if (!rc)
            rc = h_add(&h, parts[i], strlen(parts[i]));
    }
    char tmp[65];
    int rc2 = h_end(&h, tmp);
    if (!rc && !rc2)
        memcpy(out, tmp, 65);
    return rc ? rc : rc2;
}

int
sip_digest_response(enum sip_digest_alg alg, const char *user, const char *realm, const char *password,
                    const char *nonce, const char *cnonce, const char *nc8, const char *qop,
                    const char *method, const char *uri, const void *body, size_t body_len,
                    char out[65])
{
    char ha1[65], ha2[65], hbody[65];
    int rc;

    rc = h_join(alg, ha1, (const char *const[]){ user, realm, password, NULL });
    if (!rc && (alg == SIP_ALG_MD5_SESS || alg == SIP_ALG_SHA256_SESS))
        rc = h_join(alg, ha1, (const char *const[]){ ha1, nonce, cnonce, NULL });
    if (rc)
        goto out;
    if (qop && !strcmp(qop, "auth-int")) {
        struct hctx h;
        rc = h_begin(&h, alg);
        if (!rc && body_len)
            rc = h_add(&h, body, body_len);
        int rc2 = h_end(&h, hbody);
        if (rc || (rc = rc2))
            goto out;
        rc = h_join(alg, ha2, (const char *const[]){ method, uri, hbody, NULL });
    } else {
        rc = h_join(alg, ha2, (const char *const[]){ method, uri, NULL });
    }
    if (rc)
        goto out;
    if (qop)
        rc = h_join(alg, out, (const char *const[]){ ha1, nonce, nc8, cnonce, qop, ha2, NULL });
    else
        rc = h_join(alg, out, (const char *const[]){ ha1, nonce, ha2, NULL });
out:
    im_wipe(ha1, sizeof(ha1));
    return rc;
}
