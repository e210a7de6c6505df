/*
 * dp_relay.h - the relay: client sessions, emulated IM sessions and the
 * conversion between them, on one dataplane worker.
 *
 * Client frames are decoded here; the fast-path ops (ping, send routing,
 * contacts, accounts, unified, logout) are answered here, the rest is handed
 * to the controlplane as CPM_CLIENT_REQ and answered from there.  Messages
 * arriving on emulated sessions go up as CPM_MSG_IN and come back, committed,
 * as DPM_DELIVER before any client sees them.
 */
#ifndef DP_RELAY_H
#define DP_RELAY_H

#include <stdbool.h>
#include <stdint.h>

struct dp_relay;
struct dp_worker;
struct dp_chan;

/* Counters of one worker, written by it only, read by anyone (relaxed). */
struct dp_relay_stats {
    uint64_t clients_accepted, clients_open, logins_ok, frames_in, frames_bad, events_out;
    uint64_t msgs_in, msgs_out, msgs_delivered, acct_connects, acct_online, acct_failures;
    uint64_t send_queue_len;
};

struct dp_relay *dp_relay_new(struct dp_worker *w, struct dp_chan *ch);
void dp_relay_free(struct dp_relay *r);

/* Open a client listener on this worker.  0 or negative with why filled in. */
int dp_relay_listen(struct dp_relay *r, const char *host, uint16_t port, bool tls,
                    char *why, size_t whysz);
/* Stop accepting new clients (shutdown, drain). */
void dp_relay_stop_listening(struct dp_relay *r);

/* Snapshot of the counters (safe from any thread). */
void dp_relay_stats_read(const struct dp_relay *r, struct dp_relay_stats *out);

#endif
