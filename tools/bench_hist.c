/*
 * bench_hist.c - the log-linear latency histogram (bench_hist.h).
 */
#include <string.h>

#include "bench_hist.h"

void
bench_hist_init(struct bench_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

uint32_t
bench_hist_index(uint64_t v)
{
    if (v < BENCH_HIST_SUB)
        return (uint32_t)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - BENCH_HIST_SUB_BITS;
    return ((shift + 1u) << BENCH_HIST_SUB_BITS) + (uint32_t)((v >> shift) & (BENCH_HIST_SUB - 1));
}

uint64_t
bench_hist_upper(uint32_t i)
{
    if (i < BENCH_HIST_SUB)
        return i;
    unsigned shift = (i >> BENCH_HIST_SUB_BITS) - 1u;
    uint64_t m = (uint64_t)((i & (BENCH_HIST_SUB - 1)) | BENCH_HIST_SUB);
    return (m << shift) + ((uint64_t)1 << shift) - 1u;
}

void
bench_hist_add(struct bench_hist *h, uint64_t v)
{
    h->count[bench_hist_index(v)]++;
    h->n++;
    h->sum += (long double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

uint64_t
bench_hist_quantile(const struct bench_hist *h, double q)
{
    if (!h->n)
        return 0;
    if (q <= 0)
        return h->min;
    if (q > 1)
        q = 1;
    /* rank = ceil(q * n), at least 1; the epsilon keeps 0.9 * 100000 (not
     * exact in binary) from becoming rank 90001 */
    long double r = (long double)q * (long double)h->n - 1e-9L;
    uint64_t rank = (uint64_t)r;
    if ((long double)rank < r)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t u = bench_hist_upper(i);
            return u > h->max ? h->max : u < h->min ? h->min : u;
        }
    }
    return h->max;
}

double
bench_hist_mean(const struct bench_hist *h)
{
    return h->n ? (double)(h->sum / (long double)h->n) : 0.0;
}
