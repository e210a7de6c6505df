/*
 * fz.h - what the adapter fuzz targets share: the time they give the
 * adapters, a constant random source, the chunking of the input, and the
 * start of a session.
 */
#ifndef FZ_H
#define FZ_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "im_proto.h"

/* The time adapters are given: the two clocks far apart, as they never agree. */
#define FZ_AT(ms) ((struct im_time){ .mono_ms = (ms), .wall_ms = (ms) + 1700000000000ull })

/* Every random byte is 0x5a, so identifiers are known (SIP: Call-ID 5a5a...). */
static inline int
fz_rand(void *ud, void *buf, size_t n)
{
    (void)ud;
    memset(buf, 0x5a, n);
    return 0;
}

static const struct im_rng fz_rng = { .fill = fz_rand };

/* io->out that keeps nothing. */
static inline int
fz_discard(void *ud, const void *p, size_t n)
{
    (void)ud;
    (void)p;
    (void)n;
    return 0;
}

/* The size of the next input chunk, 1..64 bytes (at most size), from *seed. */
static inline size_t
fz_chunk(unsigned *seed, size_t size)
{
    *seed = *seed * 1103515245u + 12345u;
    size_t n = 1 + (*seed >> 16) % 64;
    return n < size ? n : size;
}

/*
 * Create a session into *s (set before anything runs: events may use it),
 * start it at now and feed it the canned bytes, if any.  true while the
 * session is usable; either way the caller destroys *s (NULL is fine).
 */
static inline bool
fz_start(const struct im_proto_ops *ops, const struct im_account_cfg *cfg, const struct im_io *io,
         struct im_sess **s, const char *canned, size_t n, uint64_t now)
{
    *s = ops->create(cfg, io);
    return *s && !ops->start(*s, FZ_AT(now)) &&
           !(canned && ops->input(*s, (const uint8_t *)canned, n, FZ_AT(now)));
}

#endif
