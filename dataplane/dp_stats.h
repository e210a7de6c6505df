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
    uint64_t accept_paused;     /* kernel: listener paused after accept failed (EMFILE, ENFILE...) */
    /* The dpdk backend only (zero with the kernel backend). */
    uint64_t io_pkts_in, io_pkts_out;   /* frames received / sent on the port */
    uint64_t io_bytes_in, io_bytes_out; /* their bytes (Ethernet header included) */
    uint64_t io_drop_bad;       /* frames dropped by the glue: short, oversize, multi-segment, bad checksum */
    uint64_t io_drop_tx;        /* frames the port did not take (Tx queue full) */
    uint64_t io_drop_nombuf;    /* frames not sent: the mbuf pool was empty */
    uint64_t io_nic_missed, io_nic_errors, io_nic_nombuf; /* the NIC's own drop counters */
    uint64_t io_sleeps;         /* adaptive idle: times the loop slept */
    uint64_t io_busy_cycles;    /* TSC cycles of loop turns that did work (idle polls excluded) */
    uint64_t io_busy_turns;     /* those turns */
    uint64_t tcp_open;          /* TCP connections held now (gauge) */
    uint64_t tcp_retransmits;   /* TCP segments retransmitted */
    uint64_t tcp_refused;       /* connections refused at accept (dpdk-max-conns, memory) */
    uint64_t tcp_drops;         /* segments lwIP dropped (checksum, malformed, no connection) */
};

/* Copy the worker's counters into out (any thread). */
void dp_worker_stats(const struct dp_worker *w, struct dp_stats *out);

/* Add b into a, field by field (summing the workers). */
void dp_stats_add(struct dp_stats *a, const struct dp_stats *b);

#endif
