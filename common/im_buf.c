/*
 * im_buf.c - the growable byte buffer (im_buf.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "im_buf.h"

#define IM_BUF_FIRST 64

/* What im_buf_data() gives for a buffer that never stored anything. */
static char im_buf_nul[1];

static size_t
buf_limit(const struct im_buf *b)
{
    return b->max ? b->max : IM_BUF_MAX_DEFAULT;
}

void
im_buf_init(struct im_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void
im_buf_free(struct im_buf *b)
{
    if (b->p && b->secret)
        im_wipe(b->p, b->cap);
    free(b->p);
    b->p = NULL;
    b->head = b->len = b->cap = 0;
    b->err = 0;
}

void
im_buf_reset(struct im_buf *b)
{
    b->head = b->len = 0;
    b->err = 0;
    if (b->p)
        b->p[0] = '\0';
}

void
im_buf_wipe(struct im_buf *b)
{
    if (b->p)
        im_wipe(b->p, b->cap);
    im_buf_reset(b);
}

/* Storage of at least want bytes (the live bytes start at 0). */
static int
buf_grow(struct im_buf *b, size_t want)
{
    size_t cap = b->cap ? b->cap : IM_BUF_FIRST, top = buf_limit(b) + 1;
    char *np;

    while (cap < want)
        cap = cap <= SIZE_MAX / 2 ? cap * 2 : want;
    if (cap > top)
        cap = top;                      /* want <= top: the caller checked */
    if (b->secret) {
        /* Never leave a copy of key material in freed memory. */
        if (!(np = malloc(cap)))
            return -ENOMEM;
        if (b->p) {
            memcpy(np, b->p, b->len + 1);
            im_wipe(b->p, b->cap);
            free(b->p);
        }
    } else if (!(np = realloc(b->p, cap))) {
        return -ENOMEM;
    }
    if (!b->p)
        np[0] = '\0';
    b->p = np;
    b->cap = cap;
    return 0;
}

int
im_buf_reserve(struct im_buf *b, size_t n)
{
    size_t live = b->len - b->head;
    int rc;

    if (b->err)
        return b->err;
    if (n > buf_limit(b) - live)
        return b->err = -IM_ETOOBIG;
    if (b->p && b->cap - b->len > n)    /* room for n bytes and the NUL */
        return 0;
    if (b->head) {
        memmove(b->p, b->p + b->head, live + 1);
        b->head = 0;
        b->len = live;
        if (b->cap - b->len > n)
            return 0;
    }
    if ((rc = buf_grow(b, live + n + 1)))
        return b->err = rc;
    return 0;
}

int
im_buf_append(struct im_buf *b, const void *p, size_t n)
{
    int rc = im_buf_reserve(b, n);

    if (rc)
        return rc;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int
im_buf_puts(struct im_buf *b, const char *z)
{
    return im_buf_append(b, z, strlen(z));
}

int
im_buf_vprintf(struct im_buf *b, const char *fmt, va_list ap)
{
    size_t room = b->p ? b->cap - b->len : 0;
    va_list aq;
    int n, rc;

    if (b->err)
        return b->err;
    /* Try in the room there is; format again only when it does not fit. */
    va_copy(aq, ap);
    n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, aq);
    va_end(aq);
    if (n >= 0 && (size_t)n < room && (size_t)n <= buf_limit(b) - (b->len - b->head)) {
        b->len += (size_t)n;
        return 0;
    }
    if (b->p)
        b->p[b->len] = '\0';            /* undo a partial or refused write */
    if (n < 0)
        return b->err = -IM_EINVAL;
    if ((rc = im_buf_reserve(b, (size_t)n)))
        return rc;
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int
im_buf_printf(struct im_buf *b, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = im_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void
im_buf_consume(struct im_buf *b, size_t n)
{
    BUG_ON(n > b->len - b->head);
    b->head += n;
    if (b->head == b->len) {
        b->head = b->len = 0;
        if (b->p)
            b->p[0] = '\0';
    }
}

char *
im_buf_space(struct im_buf *b, size_t *room)
{
    size_t left = buf_limit(b) - (b->len - b->head);

    if (!b->p) {
        *room = 0;
        return im_buf_nul;
    }
    *room = b->cap - b->len - 1;
    if (*room > left)
        *room = left;
    return b->p + b->len;
}

void
im_buf_added(struct im_buf *b, size_t n)
{
    if (!n)
        return;
    BUG_ON(!b->p || n > b->cap - b->len - 1);
    b->len += n;
    b->p[b->len] = '\0';
}

char *
im_buf_steal(struct im_buf *b, size_t *len)
{
    size_t live = b->len - b->head;
    char *r;

    if (b->err)
        return NULL;
    if (!b->p) {
        if (!(r = malloc(1))) {
            b->err = -ENOMEM;
            return NULL;
        }
        r[0] = '\0';
        *len = 0;
        return r;
    }
    if (b->head)
        memmove(b->p, b->p + b->head, live + 1);
    r = b->p;
    *len = live;
    b->p = NULL;
    b->head = b->len = b->cap = 0;
    return r;
}

char *
im_buf_data(const struct im_buf *b)
{
    return b->p ? b->p + b->head : im_buf_nul;
}
