/*
 * test_bench_hist.c - imfuse-bench's log-linear latency histogram: bucket
 * arithmetic over the whole 64-bit range, the 1/128 relative error bound,
 * and quantiles against exactly known distributions.
 */
#include "t.h"

/* The tools are programs, not a library: compile the code under test in. */
#include "../../../tools/bench_hist.c"

/* A small deterministic generator (xorshift64*), so failures repeat. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t
rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

T_TEST(small_values_are_exact)
{
    for (uint64_t v = 0; v < BENCH_HIST_SUB; v++) {
        T_EQ_UINT(bench_hist_index(v), v);
        T_EQ_UINT(bench_hist_upper((uint32_t)v), v);
    }
    /* the first power of two above the exact range is still exact */
    for (uint64_t v = BENCH_HIST_SUB; v < 2 * BENCH_HIST_SUB; v++)
        T_EQ_UINT(bench_hist_upper(bench_hist_index(v)), v);
}

T_TEST(buckets_tile_the_range)
{
    /* every bucket's upper edge is in it, the next value starts the next bucket */
    for (uint32_t i = 0; i + 1 < BENCH_HIST_BUCKETS; i++) {
        uint64_t u = bench_hist_upper(i);
        T_EQ_UINT(bench_hist_index(u), i);
        T_EQ_UINT(bench_hist_index(u + 1), i + 1);
    }
    T_EQ_UINT(bench_hist_index(UINT64_MAX), BENCH_HIST_BUCKETS - 1);
    T_EQ_UINT(bench_hist_upper(BENCH_HIST_BUCKETS - 1), UINT64_MAX);
}

T_TEST(relative_error_bound)
{
    for (int k = 0; k < 200000; k++) {
        uint64_t v = rng() >> (rng() % 64);
        uint64_t u = bench_hist_upper(bench_hist_index(v));
        T_ASSERT(u >= v);
        /* (u - v) / v <= 1/128, written without division rounding */
        T_ASSERT((long double)(u - v) * BENCH_HIST_SUB <= (long double)v);
    }
}

T_TEST(empty)
{
    static struct bench_hist h;
    bench_hist_init(&h);
    T_EQ_UINT(bench_hist_quantile(&h, 0.5), 0);
    T_EQ_UINT(bench_hist_quantile(&h, 1.0), 0);
    T_ASSERT(bench_hist_mean(&h) == 0.0);
}

T_TEST(uniform_quantiles)
{
    static struct bench_hist h;
    bench_hist_init(&h);
    /* 1 .. 100000 once each, in a scrambled order */
    const uint64_t n = 100000;
    for (uint64_t i = 0; i < n; i++)
        bench_hist_add(&h, (i * 7919) % n + 1);
    T_EQ_UINT(h.n, n);
    T_EQ_UINT(h.min, 1);
    T_EQ_UINT(h.max, n);
    T_EQ_UINT(bench_hist_quantile(&h, 0), 1);
    T_EQ_UINT(bench_hist_quantile(&h, 1), n);
    const double qs[] = { 0.5, 0.9, 0.99, 0.999 };
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        uint64_t exact = (uint64_t)(qs[i] * (double)n + 0.5);       /* the ceil(q n)-th value */
        uint64_t got = bench_hist_quantile(&h, qs[i]);
        T_ASSERT(got >= exact);
        T_ASSERT((double)(got - exact) <= (double)exact / BENCH_HIST_SUB);
    }
    T_ASSERT(bench_hist_mean(&h) > 50000.49 && bench_hist_mean(&h) < 50000.51);
}

T_TEST(tail_is_seen)
{
    static struct bench_hist h;
    bench_hist_init(&h);
    /* 999 fast samples and one slow: p99.9 is fast, p100 is slow; 1998 + 2 slow: p99.9 slow */
    for (int i = 0; i < 999; i++)
        bench_hist_add(&h, 1000000);        /* 1 ms in ns */
    bench_hist_add(&h, 250000000);          /* 250 ms */
    T_ASSERT(bench_hist_quantile(&h, 0.999) <= 1000000 + 1000000 / BENCH_HIST_SUB);
    T_EQ_UINT(bench_hist_quantile(&h, 1.0), 250000000);
    T_EQ_UINT(h.max, 250000000);
    for (int i = 0; i < 999; i++)
        bench_hist_add(&h, 1000000);
    bench_hist_add(&h, 250000000);
    bench_hist_add(&h, 250000000);
    uint64_t p999 = bench_hist_quantile(&h, 0.999);
    T_ASSERT(p999 >= 250000000 && p999 <= 250000000 + 250000000 / BENCH_HIST_SUB);
}

T_TEST(extremes_do_not_overflow)
{
    static struct bench_hist h;
    bench_hist_init(&h);
    bench_hist_add(&h, 0);
    bench_hist_add(&h, UINT64_MAX);
    T_EQ_UINT(bench_hist_quantile(&h, 0.5), 0);
    T_EQ_UINT(bench_hist_quantile(&h, 1.0), UINT64_MAX);
    T_EQ_UINT(bench_hist_quantile(&h, 2.0), UINT64_MAX);
}

T_MAIN(T_RUN(small_values_are_exact), T_RUN(buckets_tile_the_range), T_RUN(relative_error_bound),
       T_RUN(empty), T_RUN(uniform_quantiles), T_RUN(tail_is_seen), T_RUN(extremes_do_not_overflow))
