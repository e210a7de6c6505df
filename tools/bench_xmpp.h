/*
 * bench_xmpp.h - an XMPP client for imfuse-bench: the project's own sans-I/O
 * adapter (xmpp_ops, protocols/im_proto.h) on a dataplane connection
 * (dataplane/dp_conn.h, STARTTLS with mbedTLS).  It is the peer that
 * receives what the relays send (and sends what they receive), and the
 * sender of the "direct" runs.
 *
 * This file and bench_xmpp.c are the only place where the bench calls
 * im_proto_ops hooks: when their signatures change, only bench_xmpp.c
 * changes.
 *
 * Everything runs on the worker's thread.  Strings passed to the callbacks
 * are valid during the call only.
 */
#ifndef BENCH_XMPP_H
#define BENCH_XMPP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dp_worker;
struct bench_xmpp;

struct bench_xmpp_cfg {
    const char *jid;            /* bare JID to log in as */
    const char *password;
    const char *host;           /* server IP */
    uint16_t port;
    const char *resource;       /* NULL: "bench" */
};

struct bench_xmpp_cb {
    /* Logged in, roster fetched, presence sent: messages can flow. */
    void (*online)(void *ud);
    /* A chat message arrived (body is valid UTF-8, not NUL-terminated). */
    void (*message)(void *ud, const char *body, size_t len);
    /* The session failed or the connection ended; why is in words.  After
     * bench_xmpp_close(): called once with why NULL when the connection is
     * gone, and x is freed right after. */
    void (*down)(void *ud, const char *why);
};

/*
 * Connect and log in (STARTTLS, checked against the JID's domain with the
 * worker's CA set).  All strings are copied.  Returns NULL with *err set.
 * cb->online or cb->down follows.
 */
struct bench_xmpp *bench_xmpp_open(struct dp_worker *w, const struct bench_xmpp_cfg *cfg,
                                   const struct bench_xmpp_cb *cb, void *ud, int *err);

/* Send a chat message to bare JID `to` (only once online).  0 or negative. */
int bench_xmpp_send(struct bench_xmpp *x, const char *to, const char *body, size_t len);

/* Keepalives and stream-management acks; call about every 100 ms. */
void bench_xmpp_tick(struct bench_xmpp *x);

/* The connection's write backlog is above its high watermark: hold off sending. */
bool bench_xmpp_busy(const struct bench_xmpp *x);

/* Say goodbye, flush and close; frees x once the connection is gone. */
void bench_xmpp_close(struct bench_xmpp *x);

#endif
