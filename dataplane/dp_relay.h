/*
 * dp_relay.h - the relay: client sessions, emulated IM sessions and the
 * conversion between them, on one dataplane worker.
 *
 * Client frames are decoded here; the ops the op table (protocols/client/
 * cl_ops.h) gives the dataplane are answered here, the rest is handed to the
 * controlplane as CPM_CLIENT_REQ and answered from there.  Messages arriving
 * on emulated sessions go up as CPM_MSG_IN and come back, committed, as
 * DPM_DELIVER before any client sees them.  The relay's files and their
 * shares are listed in dp_relay_int.h.
 */
#ifndef DP_RELAY_H
#define DP_RELAY_H

#include <stdbool.h>
#include <stdint.h>

struct dp_relay;
struct dp_worker;
struct dp_chan;

/* The relay's counters, listed once (X-macro): name, in order. */
#define DP_RELAY_COUNTERS(X) \
    X(clients_accepted)     /* client connections accepted */ \
    X(clients_open)         /* client connections open now */ \
    X(logins_ok)            /* sessions logged in */ \
    X(frames_in)            /* client frames received */ \
    X(frames_bad)           /* of which undecodable (connection closed) */ \
    X(events_out)           /* event frames pushed to clients */ \
    X(msgs_in)              /* messages received from IM servers */ \
    X(msgs_out)             /* messages handed to IM sessions */ \
    X(msgs_delivered)       /* message events pushed to clients */ \
    X(acct_connects)        /* emulated logins started */ \
    X(acct_online)          /* emulated logins that reached online */ \
    X(acct_failures)        /* emulated logins that failed (auth or error) */ \
    X(send_queue_len)       /* outbound messages queued now */ \
    X(clients_dropped)      /* clients closed for not reading their output */ \
    X(oom)                  /* allocations that failed on the fast path */ \
    X(up_dropped)           /* plane messages not sent up (payload too large or no memory) */ \
    X(clients_prelogin)     /* client connections open now that are not logged in */ \
    X(prelogin_bytes)       /* bytes of their receive buffers now (prelogin-memory) */ \
    X(prelogin_timeouts)    /* closed for not logging in within prelogin-timeout */ \
    X(prelogin_evicted)     /* closed for the largest partial frame past prelogin-memory */ \
    X(refused_max_conns)    /* connections refused at max-conns */ \
    X(refused_per_address)  /* connections refused at max-conns-per-address */ \
    X(clients_read_paused)  /* times a client was not read until its output drained */ \
    X(clients_timed_out)    /* clients whose peer stopped answering (TCP keepalive) */ \
    X(idle_timeouts)        /* logged-in clients closed after idle-timeout of silence */ \
    X(replays_paced)        /* replay batches asked for after the first (paced by on_drain) */ \
    X(replies_limit)        /* replies answered `limit`: over the frame limit */ \
    X(events_too_big)       /* events not sent: over the frame limit */ \
    X(contacts_cut)         /* contact lists cut to fit the frame limit */

/* Counters of one worker, written by it only, read by anyone (relaxed). */
struct dp_relay_stats {
#define DP_X(f) uint64_t f;
    DP_RELAY_COUNTERS(DP_X)
#undef DP_X
};

/* A relay on worker w talking to the controlplane over ch (poll and tick
 * hooks installed on w).  NULL on ENOMEM. */
struct dp_relay *dp_relay_new(struct dp_worker *w, struct dp_chan *ch);
void dp_relay_free(struct dp_relay *r);

/*
 * Limits on client connections (docs/OPERATIONS.md, "Client connections").
 * A value 0 turns that limit off.  dp_relay_new() starts with
 * DP_CLIENT_LIMITS_DEFAULT.
 */
struct dp_client_limits {
    uint32_t max_conns;             /* client connections at once */
    uint32_t max_conns_per_addr;    /* from one address (IPv6: one /64) */
    uint32_t prelogin_timeout_ms;   /* a connection not logged in by then is closed */
    uint64_t prelogin_memory;       /* receive-buffer bytes of all connections not logged in */
    uint32_t keepalive_idle_s;      /* TCP keepalive: silence before the first probe */
    uint32_t keepalive_intvl_s;     /* between probes */
    uint32_t keepalive_cnt;         /* unanswered probes before the peer counts as dead */
    uint32_t idle_timeout_ms;       /* a logged-in connection silent this long is closed */
};

#define DP_CLIENT_LIMITS_DEFAULT { .max_conns = 10000, .max_conns_per_addr = 100, \
    .prelogin_timeout_ms = 30000, .prelogin_memory = 32u << 20, .keepalive_idle_s = 60, \
    .keepalive_intvl_s = 10, .keepalive_cnt = 6, .idle_timeout_ms = 0 }

/* Replace the limits (worker not running yet, or on its thread). */
void dp_relay_set_limits(struct dp_relay *r, const struct dp_client_limits *l);

/* Open a client listener on this worker.  0 or negative with why filled in. */
int dp_relay_listen(struct dp_relay *r, const char *host, uint16_t port, bool tls,
                    char *why, size_t whysz);
/* Stop accepting new clients (shutdown, drain). */
void dp_relay_stop_listening(struct dp_relay *r);
/* The port of the n-th listener (0 when there is none): tests listen on port 0. */
uint16_t dp_relay_listen_port(const struct dp_relay *r, unsigned n);

/* Snapshot of the counters (safe from any thread). */
void dp_relay_stats_read(const struct dp_relay *r, struct dp_relay_stats *out);
/* The relay's worker (for its transport counters). */
struct dp_worker *dp_relay_worker(const struct dp_relay *r);

#endif
