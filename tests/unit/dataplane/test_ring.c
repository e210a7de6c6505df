/* test_ring.c - the SPSC ring: edge cases on one thread, then 10 million
 * sequence numbers across two threads, checked in order. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "t.h"
#include "dp_ring.h"

struct elem3 { uint32_t a; uint16_t b; uint8_t c; };

T_TEST(create_rejects_bad_sizes)
{
    T_ASSERT(dp_ring_new(8, 0) == NULL);
    T_ASSERT(dp_ring_new(8, 1) == NULL);
    T_ASSERT(dp_ring_new(8, 12) == NULL);
    T_ASSERT(dp_ring_new(0, 16) == NULL);
    struct dp_ring *r = dp_ring_new(8, 16);
    T_ASSERT(r != NULL);
    T_EQ_UINT(dp_ring_capacity(r), 16);
    dp_ring_free(r);
}

T_TEST(full_empty_and_wrap)
{
    struct dp_ring *r = dp_ring_new(sizeof(struct elem3), 4);
    T_ASSERT(r != NULL);
    struct elem3 e = {0}, out;
    T_EQ_INT(dp_ring_pop(r, &out), -EAGAIN);
    /* Walk the indices round the ring several times to cross the wrap. */
    uint32_t next_in = 0, next_out = 0;
    for (int round = 0; round < 10; round++) {
        while (1) {
            e.a = next_in; e.b = (uint16_t)(next_in * 3); e.c = (uint8_t)next_in;
            int rc = dp_ring_push(r, &e);
            if (rc == -ENOBUFS)
                break;
            T_EQ_INT(rc, 0);
            next_in++;
        }
        T_EQ_UINT(dp_ring_count(r), 4);
        /* Take out a varying number so the positions shift. */
        for (int k = 0; k < 1 + round % 4; k++) {
            T_EQ_INT(dp_ring_pop(r, &out), 0);
            T_EQ_UINT(out.a, next_out);
            T_EQ_UINT(out.b, (uint16_t)(next_out * 3));
            T_EQ_UINT(out.c, (uint8_t)next_out);
            next_out++;
        }
    }
    while (dp_ring_pop(r, &out) == 0)
        T_EQ_UINT(out.a, next_out++);
    T_EQ_UINT(next_out, next_in);
    T_EQ_UINT(dp_ring_count(r), 0);
    dp_ring_free(r);
}

T_TEST(bursts)
{
    struct dp_ring *r = dp_ring_new(sizeof(uint64_t), 8);
    uint64_t in[20], out[20];
    for (int i = 0; i < 20; i++)
        in[i] = 1000 + (uint64_t)i;
    T_EQ_UINT(dp_ring_push_burst(r, in, 5), 5);
    T_EQ_UINT(dp_ring_pop_burst(r, out, 3), 3);
    T_EQ_UINT(out[0], 1000);
    T_EQ_UINT(out[2], 1002);
    /* 2 queued, 6 free: a burst of 20 takes only 6 and wraps round the end. */
    T_EQ_UINT(dp_ring_push_burst(r, in + 5, 20 - 5), 6);
    T_EQ_UINT(dp_ring_count(r), 8);
    T_EQ_UINT(dp_ring_push_burst(r, in, 1), 0);
    T_EQ_UINT(dp_ring_pop_burst(r, out, 20), 8);
    for (int i = 0; i < 8; i++)
        T_EQ_UINT(out[i], 1003 + (uint64_t)i);
    T_EQ_UINT(dp_ring_pop_burst(r, out, 20), 0);
    dp_ring_free(r);
}

#define SEQ_TOTAL 10000000u

struct seq_arg { struct dp_ring *r; int use_burst; };

static void *producer(void *p)
{
    struct seq_arg *a = p;
    uint64_t next = 0, batch[32];
    while (next < SEQ_TOTAL) {
        if (a->use_burst) {
            size_t n = 0;
            while (n < 32 && next + n < SEQ_TOTAL) {
                batch[n] = next + n;
                n++;
            }
            size_t done = dp_ring_push_burst(a->r, batch, n);
            next += done;
            if (done == 0)
                sched_yield();
        } else if (dp_ring_push(a->r, &next) == 0) {
            next++;
        } else {
            sched_yield();
        }
    }
    return NULL;
}

/* Pops everything; returns the number of order violations (0 expected). */
static uint64_t consume(struct seq_arg *a)
{
    uint64_t expect = 0, bad = 0, batch[32];
    while (expect < SEQ_TOTAL) {
        size_t n;
        if (a->use_burst) {
            n = dp_ring_pop_burst(a->r, batch, 32);
        } else {
            n = dp_ring_pop(a->r, batch) == 0 ? 1 : 0;
        }
        if (n == 0) {
            sched_yield();
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            if (batch[i] != expect)
                bad++;
            expect = batch[i] + 1;
        }
    }
    return bad;
}

static void run_two_threads(int use_burst)
{
    struct seq_arg a = { dp_ring_new(sizeof(uint64_t), 1024), use_burst };
    T_ASSERT(a.r != NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th;
    T_EQ_INT(pthread_create(&th, NULL, producer, &a), 0);
    uint64_t bad = consume(&a);
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("    %u sequence numbers (%s) in %.2f s\n", SEQ_TOTAL, use_burst ? "burst" : "single", secs);
    T_EQ_UINT(bad, 0);
    T_EQ_UINT(dp_ring_count(a.r), 0);
    dp_ring_free(a.r);
}

T_TEST(two_threads_in_order_single)
{
    run_two_threads(0);
}

T_TEST(two_threads_in_order_burst)
{
    run_two_threads(1);
}

T_MAIN(T_RUN(create_rejects_bad_sizes), T_RUN(full_empty_and_wrap), T_RUN(bursts),
       T_RUN(two_threads_in_order_single), T_RUN(two_threads_in_order_burst))
