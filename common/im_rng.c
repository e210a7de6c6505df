/*
 * im_rng.c - the default random source (im_rng.h).
 */
#include <sys/random.h>

#include "im_rng.h"

int
im_random(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int
rng_kernel(void *ud, void *buf, size_t n)
{
    (void)ud;
    return im_random(buf, n);
}

const struct im_rng im_rng_default = { .fill = rng_kernel, .ud = NULL };

int
im_rng_fill(const struct im_rng *r, void *buf, size_t n)
{
    if (!r || !r->fill)
        r = &im_rng_default;
    int rc = r->fill(r->ud, buf, n);
    return rc > 0 ? -EIO : rc;
}
