/*
 * im_rng.h - sources of random bytes.
 *
 * One type for every consumer that needs randomness (SCRAM nonces, SIP
 * Call-IDs and tags, appliance keys), so a test injects a deterministic
 * source the same way everywhere.  A NULL source means im_rng_default.
 */
#ifndef IM_RNG_H
#define IM_RNG_H

#include <stddef.h>

#include "im_common.h"

/* Write n random bytes into buf.  Returns 0 or a negative code. */
typedef int im_rng_fill_fn(void *ud, void *buf, size_t n);

struct im_rng {
    im_rng_fill_fn *fill;
    void *ud;                   /* passed to fill as is */
};

/* The kernel's CSPRNG (getrandom(2)). */
extern const struct im_rng im_rng_default;

/* Fill buf with n bytes from the kernel's CSPRNG.  0 or -errno. */
int im_random(void *buf, size_t n);

/* Fill buf with n bytes from r (NULL: im_rng_default).  0 or negative; a
 * positive return of a source's fill is reported as -EIO. */
int im_rng_fill(const struct im_rng *r, void *buf, size_t n);

#endif
