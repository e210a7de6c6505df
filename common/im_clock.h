/*
 * im_clock.h - the two clocks, and the time as adapters are given it.
 *
 * Monotonic milliseconds are for every timer, timeout, backoff and pacing
 * decision: they never jump.  Wall milliseconds (since the Unix epoch) are
 * only for time stamps a user sees, such as message.ts.  Code that must be
 * testable takes a struct im_clock (or the struct im_time read from one)
 * instead of reading the system clocks itself.
 */
#ifndef IM_CLOCK_H
#define IM_CLOCK_H

#include <stdint.h>

/* Both clocks read at one moment, passed by value. */
struct im_time {
    uint64_t mono_ms;           /* monotonic: timers, timeouts, pacing */
    uint64_t wall_ms;           /* since the epoch: message.ts only */
};

typedef uint64_t im_clock_read_fn(void *ud);

/* A pair of clocks; tests supply their own to drive time. */
struct im_clock {
    im_clock_read_fn *mono_ms;
    im_clock_read_fn *wall_ms;
    void *ud;                   /* passed to both as is */
};

/* CLOCK_MONOTONIC and CLOCK_REALTIME. */
extern const struct im_clock im_clock_default;

/* The system clocks in milliseconds: wall since the epoch, and monotonic. */
uint64_t im_now_ms(void);
uint64_t im_mono_ms(void);

/* Read both clocks of c (NULL: im_clock_default). */
struct im_time im_clock_read(const struct im_clock *c);

#endif
