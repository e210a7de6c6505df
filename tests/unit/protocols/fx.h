/*
 * fx.h - what the adapter tests share: the time as adapters are given it,
 * and recording what an adapter writes and reports in the kit's buffer.
 */
#ifndef FX_H
#define FX_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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

/*
 * The fixtures of test_sip.c and test_xmpp.c: a struct fx holding the
 * session s, and the records out (what the adapter wrote) and ev (what it
 * reported, one line per event); FX_OPS names the adapter under test.
 * fx_setup() makes the session for a login to 127.0.0.1:port with the
 * file's recorders fx_out() and fx_event() and the random source fill.
 */
#define outs(f)         ((const char *)im_buf_data(&(f)->out))
#define evs(f)          ((const char *)im_buf_data(&(f)->ev))
#define clear(f)        (im_buf_reset(&(f)->out), im_buf_reset(&(f)->ev))
#define feed(f, z, now) (FX_OPS.input((f)->s, (const uint8_t *)(z), strlen(z), AT(now)))
#define fx_setup(f, login_, password_, tls_, port_, tls_name_, fill_) do { \
    memset((f), 0, sizeof(*(f))); \
    (f)->cfg = (struct im_account_cfg){ .account = 1, .login = (login_), .password = (password_), \
                                        .host = "127.0.0.1", .port = (port_), .tls = (tls_), \
                                        .tls_name = (tls_name_) }; \
    (f)->io = (struct im_io){ .out = fx_out, .event = fx_event, .rng = &(f)->rng, .ud = (f) }; \
    (f)->rng = (struct im_rng){ .fill = (fill_), .ud = (f) }; \
    if (!((f)->s = FX_OPS.create(&(f)->cfg, &(f)->io))) \
        abort(); \
} while (0)
#define fx_free(f)      (FX_OPS.destroy((f)->s), im_buf_free(&(f)->out), im_buf_free(&(f)->ev), \
                         memset((f), 0, sizeof(*(f))))

#endif
