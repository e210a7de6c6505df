/*
 * fx.h - what the adapter tests share: the time as adapters are given it,
 * and recording what an adapter writes and reports in the kit's buffer.
 */
#ifndef FX_H
#define FX_H

#include <stdarg.h>
#include <stdlib.h>

#include "im_buf.h"
#include "im_proto.h"

/* Both clocks at ms: a transcript's time.  Tests of the clocks' roles
 * build struct im_time themselves, with the two apart. */
#define AT(ms) ((struct im_time){ .mono_ms = (ms), .wall_ms = (ms) })

/* Append to a record, or abort: a test's record never fails. */
static inline void
fx_put(struct im_buf *b, const void *p, size_t n)
{
    if (im_buf_append(b, p, n))
        abort();
}

static inline void __attribute__((format(printf, 2, 3)))
fx_printf(struct im_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = im_buf_vprintf(b, fmt, ap);
    va_end(ap);
    if (rc)
        abort();
}

#endif
