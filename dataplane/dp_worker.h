/*
 * dp_worker.h - one dataplane worker: a run-to-completion event loop pinned
 * to a core, owning every connection created on it (dp_conn.h).
 *
 * The loop: wait for I/O (at most DP_TICK_MS), dispatch connection events,
 * call the poll hook (ring consumers), and call the tick hook about every
 * DP_TICK_MS.  Nothing in the loop blocks.
 */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "im_clock.h"

#define DP_TICK_MS 100

struct dp_worker;

struct dp_worker_cfg {
    unsigned id;                /* worker index, 0-based */
    const char *io;             /* "kernel" (default) or "dpdk" */
    const char *ca_file;        /* NULL: the system CA bundle */
    const char *tls_cert;       /* server certificate chain (PEM), NULL: no TLS listener */
    const char *tls_key;
    const struct im_clock *clock;   /* NULL: the system clocks; must outlive the worker */
};

typedef void dp_poll_fn(void *ud);
typedef void dp_tick_fn(void *ud, uint64_t now_ms);

/*
 * Create a worker (not yet running).  Returns NULL and writes the reason
 * into why on failure (bad CA file, unknown backend, ...).
 */
struct dp_worker *dp_worker_new(const struct dp_worker_cfg *cfg, char *why, size_t whysz);
void dp_worker_free(struct dp_worker *w);

/* Hooks run on the worker thread: poll every loop turn, tick every ~DP_TICK_MS. */
void dp_worker_set_hooks(struct dp_worker *w, dp_poll_fn *poll, dp_tick_fn *tick, void *ud);

/* Wake the loop from another thread (async-signal-safe). */
void dp_worker_wake(struct dp_worker *w);

/* Run the loop on the calling thread until dp_worker_stop().  Returns 0. */
int dp_worker_run(struct dp_worker *w);
/* Ask the loop to return (any thread). */
void dp_worker_stop(struct dp_worker *w);

/* Monotonic milliseconds as seen at the top of the current loop turn. */
uint64_t dp_worker_now(const struct dp_worker *w);
/* Both clocks (cfg->clock) read now: what the relay hands the adapters
 * (input arrives in the middle of a loop turn, after its wait). */
struct im_time dp_worker_time(const struct dp_worker *w);
unsigned dp_worker_id(const struct dp_worker *w);

#endif
