/*
 * dp_msg.c - payloads of plane messages: the one place they are made,
 * freed and decoded (dp_msg.h).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "client/cl_frame.h"
#include "dp_msg.h"

void *
dp_msg_alloc(struct dp_msg *m, size_t n)
{
    if (n > DP_MSG_MAX)
        return NULL;
    void *p = malloc(n ? n : 1);
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
    uint8_t *f = cl_enc_release(e, &len);
    cl_enc_free(e);
    if (!f)
        return -IM_ETOOBIG;
    m->data = f;
    m->len = (uint32_t)len;
    return 0;
}

void
dp_msg_release(struct dp_msg *m)
{
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

int
dp_msg_decode(const struct dp_msg *m, struct cl_msg *out)
{
    return cl_frame_decode(out, m->data, m->len);
}

bool
dp_msg_has_frame(const struct dp_msg *m)
{
    const uint8_t *d = m->data;
    return d && m->len >= 5 &&
           ((uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3]) == m->len - 4;
}

int
dp_msg_client_req(const struct dp_msg *m, const uint8_t **body, uint32_t *len, const char **peer)
{
    const uint8_t *d = m->data;
    uint32_t n = m->u.client_req.len;
    /* the map, then at least the peer's NUL */
    if (!d || n == 0 || n >= m->len || d[m->len - 1] != '\0')
        return -IM_EINVAL;
    *body = d;
    *len = n;
    *peer = (const char *)d + n;
    return 0;
}
