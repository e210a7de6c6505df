/*
 * dp_chan.h - the link between the controlplane and one dataplane worker: two
 * SPSC rings of struct dp_msg (dp_msg.h) plus wakeups.
 *
 * Sending never fails and never drops: when a ring is full the message waits
 * in the producer's private overflow list and is pushed by the next flush.
 * The dataplane flushes once per loop turn (one eventfd write to wake the
 * controlplane); the controlplane flushes after each group commit and wakes
 * the worker.
 */
#ifndef DP_CHAN_H
#define DP_CHAN_H

#include <stdbool.h>

#include "dp_msg.h"

struct dp_chan;
struct dp_worker;

/* cap: ring capacity per direction (power of two).  NULL on failure. */
struct dp_chan *dp_chan_new(unsigned cap);
/* Free the rings and every message still queued (payloads included). */
void dp_chan_free(struct dp_chan *ch);
/* The worker to wake when commands are sent down. */
void dp_chan_set_worker(struct dp_chan *ch, struct dp_worker *w);

/* ---- dataplane side ---- */
/* Queue m for the controlplane; on return the payload belongs to the channel. */
void dp_chan_send_up(struct dp_chan *ch, struct dp_msg *m);
/* Push overflow and wake the controlplane if anything was sent. */
void dp_chan_flush_up(struct dp_chan *ch);
/* Take one command: 0, or -EAGAIN when none. */
int dp_chan_recv_down(struct dp_chan *ch, struct dp_msg *m);

/* ---- controlplane side ---- */
void dp_chan_send_down(struct dp_chan *ch, struct dp_msg *m);
void dp_chan_flush_down(struct dp_chan *ch);
int dp_chan_recv_up(struct dp_chan *ch, struct dp_msg *m);
/* eventfd that becomes readable when the dataplane sent something up. */
int dp_chan_up_fd(const struct dp_chan *ch);
/* Reset that eventfd after waking (call before draining). */
void dp_chan_up_ack(struct dp_chan *ch);
/*
 * The controlplane is about to wait in poll: true when it may (nothing is in
 * the up ring), and the dataplane then wakes it through the eventfd; false
 * when messages wait (do not sleep).  dp_chan_cp_awake() after the poll.
 */
bool dp_chan_cp_sleep(struct dp_chan *ch);
void dp_chan_cp_awake(struct dp_chan *ch);

/* For dp_worker_set_pending(): commands wait in the down ring (ch). */
bool dp_chan_down_pending(void *ch);

#endif
