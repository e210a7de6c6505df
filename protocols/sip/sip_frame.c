/*
 * sip_frame.c - resumable framing of SIP messages on a stream transport
 * (RFC 3261 18.3: Content-Length delimits the body on TCP), with the
 * RFC 5626 4.4.1 CRLF keepalives between messages.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sip_int.h"

int
sip_framer_push(struct sip_framer *f, const uint8_t *p, size_t n)
{
    if (!n)
        return 0;
    /* Compact: drop what was consumed before growing. */
    if (f->off && (f->off == f->len || f->cap - f->len < n)) {
        memmove(f->buf, f->buf + f->off, f->len - f->off);
        f->len -= f->off;
        f->scan -= f->scan >= f->off ? f->off : f->scan;
        f->off = 0;
    }
    if (f->cap - f->len < n) {
        size_t cap = f->cap ? f->cap : 4096;
        while (cap - f->len < n)
            cap *= 2;
        uint8_t *nb = realloc(f->buf, cap);
        if (!nb)
            return -ENOMEM;
        f->buf = nb;
        f->cap = cap;
    }
    memcpy(f->buf + f->len, p, n);
    f->len += n;
    return 0;
}

/* Content-Length of the header block [p, p+n): 0 when absent. */
static int
content_length(const uint8_t *p, size_t n, size_t *out)
{
    bool seen = false;
    size_t val = 0;
    size_t i = 0;

    /* Skip the start line. */
    while (i < n && p[i] != '\n')
        i++;
    while (++i < n) {
        size_t ls = i;
        while (i < n && p[i] != '\n')
            i++;
        /* One line [ls, i) without its LF (and maybe CR). */
        size_t le = i;
        if (le > ls && p[le - 1] == '\r')
            le--;
        if (le == ls || p[ls] == ' ' || p[ls] == '\t')
            continue;                   /* blank or folded continuation */
        size_t c = ls;
        while (c < le && p[c] != ':' && p[c] != ' ' && p[c] != '\t')
            c++;
        size_t nl = c - ls;
        bool is_cl = (nl == 14 && !strncasecmp((const char *)p + ls, "content-length", 14)) ||
                     (nl == 1 && (p[ls] == 'l' || p[ls] == 'L'));
        if (!is_cl)
            continue;
        while (c < le && (p[c] == ' ' || p[c] == '\t'))
            c++;
        if (c >= le || p[c] != ':')
            return -IM_EPROTO;
        c++;
        while (c < le && (p[c] == ' ' || p[c] == '\t'))
            c++;
        size_t v = 0, digits = 0;
        while (c < le && p[c] >= '0' && p[c] <= '9') {
            if (v > SIP_MAX_BODY)
                return -IM_ETOOBIG;
            v = v * 10 + (size_t)(p[c] - '0');
            c++;
            digits++;
        }
        while (c < le && (p[c] == ' ' || p[c] == '\t'))
            c++;
        if (!digits || c != le)
            return -IM_EPROTO;
        if (seen && v != val)
            return -IM_EPROTO;          /* two different lengths: smuggling */
        seen = true;
        val = v;
    }
    if (val > SIP_MAX_BODY)
        return -IM_ETOOBIG;
    *out = val;
    return 0;
}

int
sip_framer_next(struct sip_framer *f, const uint8_t **p, size_t *hdr_len, size_t *body_len)
{
    if (!f->hdr_len) {
        /* Keepalives before a message. */
        while (f->off < f->len && (f->buf[f->off] == '\r' || f->buf[f->off] == '\n')) {
            size_t avail = f->len - f->off;
            const uint8_t *b = f->buf + f->off;
            if (avail >= 4 && !memcmp(b, "\r\n\r\n", 4)) {
                f->off += 4;
                f->scan = f->off;
                return SIP_FRAME_PING;
            }
            if (b[0] == '\r' && avail >= 2 && b[1] == '\n' && (avail < 3 || b[2] != '\r')) {
                if (avail == 2)
                    return -EAGAIN;     /* a pong, or the start of a ping */
                f->off += 2;            /* a pong */
                continue;
            }
            if (b[0] == '\r' && (avail < 4 && !memcmp(b, "\r\n\r\n", avail)))
                return -EAGAIN;
            f->off++;                   /* stray CR or LF */
        }
        if (f->scan < f->off)
            f->scan = f->off;
        /* The end of the headers. */
        size_t i = f->scan;
        size_t end = 0;
        for (; i + 4 <= f->len; i++) {
            if (f->buf[i + 3] != '\n') {
                continue;
            }
            if (!memcmp(f->buf + i, "\r\n\r\n", 4)) {
                end = i + 4;
                break;
            }
        }
        if (!end) {
            f->scan = f->len >= 3 && f->len - 3 > f->off ? f->len - 3 : f->off;
            if (f->len - f->off > SIP_MAX_HEADER_BYTES)
                return -IM_ETOOBIG;
            return -EAGAIN;
        }
        if (end - f->off > SIP_MAX_HEADER_BYTES)
            return -IM_ETOOBIG;
        int rc = content_length(f->buf + f->off, end - f->off, &f->body_len);
        if (rc)
            return rc;
        f->hdr_len = end - f->off;
    }
    if (f->len - f->off < f->hdr_len + f->body_len)
        return -EAGAIN;
    *p = f->buf + f->off;
    *hdr_len = f->hdr_len;
    *body_len = f->body_len;
    f->off += f->hdr_len + f->body_len;
    f->scan = f->off;
    f->hdr_len = f->body_len = 0;
    return SIP_FRAME_MSG;
}

void
sip_framer_free(struct sip_framer *f)
{
    free(f->buf);
    memset(f, 0, sizeof(*f));
}
