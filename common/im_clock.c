/*
 * im_clock.c - the system clocks (im_clock.h).
 */
#include <time.h>

#include "im_clock.h"

static uint64_t
clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
im_now_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

uint64_t
im_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static uint64_t
read_mono(void *ud)
{
    (void)ud;
    return im_mono_ms();
}

static uint64_t
read_wall(void *ud)
{
    (void)ud;
    return im_now_ms();
}

const struct im_clock im_clock_default = { .mono_ms = read_mono, .wall_ms = read_wall, .ud = NULL };

struct im_time
im_clock_read(const struct im_clock *c)
{
    if (!c)
        c = &im_clock_default;
    return (struct im_time){ .mono_ms = c->mono_ms(c->ud), .wall_ms = c->wall_ms(c->ud) };
}
