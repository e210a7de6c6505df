/*
 * im_proto.c - helpers every adapter uses to report events (im_proto.h).
 */
#include <stdio.h>
#include <string.h>

#include "im_proto.h"

/* Format, cut, clean and validate one detail or notice into buf. */
static size_t __attribute__((format(printf, 4, 0)))
make_text(char *buf, size_t bufsz, im_text_clean_fn *clean, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, bufsz, fmt, ap);
    size_t len = n < 0 ? 0 : (size_t)n < bufsz ? (size_t)n : bufsz - 1;

    len = im_utf8_trim(buf, len);
    if (clean)
        len = clean(buf, len);
    if (!im_utf8_valid(buf, len))
        len = 0;
    buf[len] = '\0';
    return len;
}

void
im_io_vstate(const struct im_io *io, enum im_account_state st, im_text_clean_fn *clean,
             const char *fmt, va_list ap)
{
    char d[IM_DETAIL_MAX + 1];
    struct im_event ev = { .type = IM_EV_STATE };

    ev.u.state.state = st;
    ev.u.state.detail.len = (uint32_t)make_text(d, sizeof(d), clean, fmt, ap);
    ev.u.state.detail.p = d;
    io->event(io->ud, &ev);
}

void
im_io_state(const struct im_io *io, enum im_account_state st, im_text_clean_fn *clean,
            const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    im_io_vstate(io, st, clean, fmt, ap);
    va_end(ap);
}

int
im_io_vfail(const struct im_io *io, int *final, enum im_account_state st, int rc,
            im_text_clean_fn *clean, const char *fmt, va_list ap)
{
    if (*final)
        return *final;
    *final = rc < 0 ? rc : -IM_EPROTO;
    im_io_vstate(io, st, clean, fmt, ap);
    return *final;
}

int
im_io_fail(const struct im_io *io, int *final, enum im_account_state st, int rc,
           im_text_clean_fn *clean, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rc = im_io_vfail(io, final, st, rc, clean, fmt, ap);
    va_end(ap);
    return rc;
}

void
im_io_vnotice(const struct im_io *io, im_text_clean_fn *clean, const char *fmt, va_list ap)
{
    char d[IM_DETAIL_MAX + 1];
    struct im_event ev = { .type = IM_EV_NOTICE };

    ev.u.notice.text.len = (uint32_t)make_text(d, sizeof(d), clean, fmt, ap);
    ev.u.notice.text.p = d;
    if (ev.u.notice.text.len)
        io->event(io->ud, &ev);
}

void
im_io_notice(const struct im_io *io, im_text_clean_fn *clean, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    im_io_vnotice(io, clean, fmt, ap);
    va_end(ap);
}

void
im_io_sent(const struct im_io *io, uint64_t msg)
{
    struct im_event ev = { .type = IM_EV_SENT };

    ev.u.sent.msg = msg;
    io->event(io->ud, &ev);
}
