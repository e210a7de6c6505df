/*
 * bench_hist.h - a log-linear latency histogram for imfuse-bench.
 *
 * HDR-style buckets: values below 2^BENCH_HIST_SUB_BITS are counted exactly;
 * above, every power of two is split into 2^BENCH_HIST_SUB_BITS equal
 * buckets, so a bucket is never wider than 1/128 of its lower bound.  A
 * percentile read back is the upper edge of its bucket: never below the true
 * sample, at most 0.79 % above it.  The memory is fixed (about 59 KiB)
 * whatever the number of samples; counts are 64-bit.
 *
 * Values are unsigned 64-bit integers in any unit (imfuse-bench records
 * nanoseconds).  The functions never fail and never allocate.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS)
/* Exact buckets for [0, SUB), then SUB buckets for each msb from SUB_BITS to 63. */
#define BENCH_HIST_BUCKETS  ((64 - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

struct bench_hist {
    uint64_t n;                 /* samples recorded */
    uint64_t min, max;          /* exact extremes (min is UINT64_MAX when n == 0) */
    long double sum;            /* for the mean */
    uint64_t count[BENCH_HIST_BUCKETS];
};

void bench_hist_init(struct bench_hist *h);
void bench_hist_add(struct bench_hist *h, uint64_t v);

/*
 * The value at quantile q (0 <= q <= 1): the smallest bucket upper edge such
 * that at least ceil(q * n) samples are at or below it (q = 0 gives min),
 * clamped to the exact max.  0 when the histogram is empty.
 */
uint64_t bench_hist_quantile(const struct bench_hist *h, double q);
/* The mean of the samples (0 when empty). */
double bench_hist_mean(const struct bench_hist *h);

/* Bucket arithmetic, exposed for the unit test. */
uint32_t bench_hist_index(uint64_t v);
/* The largest value that falls into bucket i. */
uint64_t bench_hist_upper(uint32_t i);

#endif
