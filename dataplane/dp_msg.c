/*
 * dp_msg.c - payloads of plane messages: the one place they are made,
 * freed and decoded (dp_msg.h).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_frame.h"
#include "client/cl_ops.h"
#include "dp_msg.h"

void *
dp_msg_alloc(struct dp_msg *m, size_t n)
{
    if (n > DP_MSG_MAX)
        return NULL;
    if (n <= DP_MSG_INLINE) {
        m->data = NULL;
        m->len = (uint32_t)n;
        return m->inl;
    }
    void *p = malloc(n);
    if (!p)
        return NULL;
    m->data = p;
    m->len = (uint32_t)n;
    return p;
}

int
dp_msg_copy(struct dp_msg *m, const void *p, size_t n)
{
    if (n > DP_MSG_MAX)
        return -IM_ETOOBIG;
    void *d = dp_msg_alloc(m, n);
    if (!d)
        return -ENOMEM;
    if (n)
        memcpy(d, p, n);
    return 0;
}

int
dp_msg_set_frame(struct dp_msg *m, struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (!f) {
        cl_enc_free(e);
        return -IM_ETOOBIG;
    }
    if (len <= DP_MSG_INLINE) {
        memcpy(m->inl, f, len);
        m->data = NULL;
        m->len = (uint32_t)len;
        cl_enc_free(e);                 /* the buffer serves the next frame */
        return 0;
    }
    m->data = cl_enc_release(e, &len);
    m->len = (uint32_t)len;
    cl_enc_free(e);
    return 0;
}

bool
dp_msg_secret(const struct dp_msg *m)
{
    if (m->type == DPM_ACCOUNT_UP)
        return true;                    /* the linked account's password */
    if (m->type == CPM_CLIENT_REQ) {
        const struct cl_op *op = cl_op_get(m->u.client_req.op);
        return !op || op->secret;       /* login, register, link, update_account */
    }
    return false;
}

void
dp_msg_release(struct dp_msg *m)
{
    bool secret = m->len && dp_msg_secret(m);
    if (m->data) {
        if (secret)
            im_wipe(m->data, m->len);
        free(m->data);
        m->data = NULL;
    } else if (secret) {
        im_wipe(m->inl, m->len < DP_MSG_INLINE ? m->len : DP_MSG_INLINE);
    }
    m->len = 0;
}

void
dp_msg_forget(struct dp_msg *m)
{
    if (!m->data && m->len && dp_msg_secret(m))
        im_wipe(m->inl, m->len < DP_MSG_INLINE ? m->len : DP_MSG_INLINE);
    m->data = NULL;
    m->len = 0;
}

void
dp_msg_move(struct dp_msg *dst, struct dp_msg *src)
{
    if (dst == src)
        return;
    *dst = *src;
    dp_msg_forget(src);
}

int
dp_msg_decode(const struct dp_msg *m, struct cl_msg *out)
{
    return cl_frame_decode(out, dp_msg_bytes(m), m->len);
}

bool
dp_msg_has_frame(const struct dp_msg *m)
{
    const uint8_t *d = dp_msg_bytes(m);
    return d && m->len >= 5 &&
           ((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]) == m->len - 4;
}

int
dp_msg_client_req(const struct dp_msg *m, const uint8_t **body, uint32_t *len, const char **peer)
{
    const uint8_t *d = dp_msg_bytes(m);
    uint32_t n = m->u.client_req.len;
    /* the map, then at least the peer's NUL */
    if (!d || n == 0 || n >= m->len || d[m->len - 1] != '\0')
        return -IM_EINVAL;
    *body = d;
    *len = n;
    *peer = (const char *)d + n;
    return 0;
}

#define KDF_HDR 8                       /* hash, iterations, salt length, password length */

int
dp_msg_set_kdf(struct dp_msg *m, const struct im_kdf_params *p)
{
    if (p->salt_len > 255 || p->password_len > 65535)
        return -IM_EINVAL;
    uint8_t *d = dp_msg_alloc(m, KDF_HDR + p->salt_len + p->password_len);
    if (!d)
        return -ENOMEM;
    uint32_t it = p->iterations;
    uint16_t pl = (uint16_t)p->password_len;
    d[0] = (uint8_t)p->hash;
    memcpy(d + 1, &it, 4);
    d[5] = (uint8_t)p->salt_len;
    memcpy(d + 6, &pl, 2);
    if (p->salt_len)
        memcpy(d + KDF_HDR, p->salt, p->salt_len);
    if (p->password_len)
        memcpy(d + KDF_HDR + p->salt_len, p->password, p->password_len);
    return 0;
}

int
dp_msg_kdf(const struct dp_msg *m, struct im_kdf_params *p)
{
    const uint8_t *d = dp_msg_bytes(m);
    uint32_t it;
    uint16_t pl;
    if (!d || m->len < KDF_HDR)
        return -IM_EINVAL;
    memcpy(&it, d + 1, 4);
    memcpy(&pl, d + 6, 2);
    if ((size_t)KDF_HDR + d[5] + pl != m->len)
        return -IM_EINVAL;
    p->hash = (enum im_kdf_hash)d[0];
    p->iterations = it;
    p->salt = d + KDF_HDR;
    p->salt_len = d[5];
    p->password = (const char *)d + KDF_HDR + d[5];
    p->password_len = pl;
    return 0;
}
