/*
 * dp_stats.h - per-worker counters (STYLE 10: kept per core, summed by the
 * reader).
 *
 * The worker thread is the only writer; any thread may read a snapshot with
 * dp_worker_stats() (relaxed atomic loads: each counter is exact, the set is
 * not one instant).
 */
#ifndef DP_STATS_H
#define DP_STATS_H

#include <stdatomic.h>
#include <stdint.h>

struct dp_worker;

/*
 * Add to / subtract from an _Atomic uint64_t counter that only the calling
 * thread writes: a relaxed load and store, no locked instruction; readers on
 * other threads see whole values.
 */
#define DP_CTR_ADD(ctr, n) \
    atomic_store_explicit(&(ctr), atomic_load_explicit(&(ctr), memory_order_relaxed) + \
                          (uint64_t)(n), memory_order_relaxed)
#define DP_CTR_SUB(ctr, n) \
    atomic_store_explicit(&(ctr), atomic_load_explicit(&(ctr), memory_order_relaxed) - \
                          (uint64_t)(n), memory_order_relaxed)
#define DP_CTR_READ(ctr) atomic_load_explicit(&(ctr), memory_order_relaxed)

struct dp_stats {
    uint64_t conn_opened;       /* connections created: accepted + outbound attempts */
    uint64_t conn_closed;       /* on_close delivered (opened - closed = live now) */
    uint64_t connect_failed;    /* outbound connects that failed (TCP or TLS) */
    uint64_t bytes_in;          /* raw bytes read from the transport */
    uint64_t bytes_out;         /* raw bytes handed to the transport */
    uint64_t tls_ok;            /* TLS handshakes completed (client and server) */
    uint64_t tls_failed;        /* TLS handshakes failed, certificate checks included */
};

/* Copy the worker's counters into out (any thread). */
void dp_worker_stats(const struct dp_worker *w, struct dp_stats *out);

/* Add b into a, field by field (summing the workers). */
void dp_stats_add(struct dp_stats *a, const struct dp_stats *b);

#endif
