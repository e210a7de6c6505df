/*
 * sip_frame.c - resumable framing of SIP messages on a stream transport
 * (RFC 3261 18.3: Content-Length delimits the body on TCP), with the
 * RFC 5626 4.4.1 CRLF keepalives between messages.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sip_int.h"

/* Drop n bytes from the front; the search position follows them. */
static void
drop(struct sip_framer *f, size_t n)
{
    im_buf_consume(&f->buf, n);
    f->scan = f->scan > n ? f->scan - n : 0;
}

/* Drop the unit returned last: its view ends here. */
static void
drop_taken(struct sip_framer *f)
{
    if (f->taken) {
        drop(f, f->taken);
        f->taken = 0;
    }
}

int
sip_framer_push(struct sip_framer *f, const uint8_t *p, size_t n)
{
    if (!n)
        return 0;
    drop_taken(f);
    if (!f->buf.max)
        f->buf.max = SIP_FRAMER_MAX;
    return im_buf_append(&f->buf, p, n);
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
    const uint8_t *b;
    size_t len;

    drop_taken(f);
    if (!f->hdr_len) {
        /* Keepalives before a message. */
        for (;;) {
            b = (const uint8_t *)im_buf_data(&f->buf);
            len = im_buf_len(&f->buf);
            if (!len || (b[0] != '\r' && b[0] != '\n'))
                break;
            if (len >= 4 && !memcmp(b, "\r\n\r\n", 4)) {
                drop(f, 4);
                return SIP_FRAME_PING;
            }
            if (b[0] == '\r' && len >= 2 && b[1] == '\n' && (len < 3 || b[2] != '\r')) {
                if (len == 2)
                    return -EAGAIN;     /* a pong, or the start of a ping */
                drop(f, 2);             /* a pong */
                continue;
            }
            if (b[0] == '\r' && (len < 4 && !memcmp(b, "\r\n\r\n", len)))
                return -EAGAIN;
            drop(f, 1);                 /* stray CR or LF */
        }
        /* The end of the headers. */
        size_t i = f->scan;
        size_t end = 0;
        for (; i + 4 <= len; i++) {
            if (b[i + 3] != '\n') {
                continue;
            }
            if (!memcmp(b + i, "\r\n\r\n", 4)) {
                end = i + 4;
                break;
            }
        }
        if (!end) {
            f->scan = len >= 3 ? len - 3 : 0;
            if (len > SIP_MAX_HEADER_BYTES)
                return -IM_ETOOBIG;
            return -EAGAIN;
        }
        if (end > SIP_MAX_HEADER_BYTES)
            return -IM_ETOOBIG;
        int rc = content_length(b, end, &f->body_len);
        if (rc)
            return rc;
        f->hdr_len = end;
    }
    b = (const uint8_t *)im_buf_data(&f->buf);
    len = im_buf_len(&f->buf);
    if (len < f->hdr_len + f->body_len)
        return -EAGAIN;
    *p = b;
    *hdr_len = f->hdr_len;
    *body_len = f->body_len;
    f->taken = f->hdr_len + f->body_len;
    f->scan = f->taken;
    f->hdr_len = f->body_len = 0;
    return SIP_FRAME_MSG;
}

void
sip_framer_free(struct sip_framer *f)
{
    im_buf_free(&f->buf);
    memset(f, 0, sizeof(*f));
}
