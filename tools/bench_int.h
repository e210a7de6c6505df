/*
 * bench_int.h - the parts of imfuse-bench shared by its files: the run
 * (struct bench, imfuse-bench.c) and the relays it drives through one ops
 * struct each: imfuse over its client protocol (bench_imfuse.c), BitlBee over
 * IRC (bench_irc.c), and "direct", an XMPP client talking to the server itself
 * (bench_direct.c), which is the baseline for the latency a relay adds.
 *
 * Directions: "send" is user -> relay -> XMPP server -> peer; "recv" is
 * peer -> XMPP server -> relay -> user.  The peer is an XMPP client the bench
 * runs (bench_xmpp.h).  Everything runs on one dataplane worker's thread.
 */
#ifndef BENCH_INT_H
#define BENCH_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct bench;
struct dp_conn;
struct dp_conn_cb;
struct dp_worker;

/* The command line, checked. */
struct bench_opts {
    const char *relay;          /* "imfuse", "bitlbee" or "direct" */
    const char *imfuse;         /* imfused's client listener host:port */
    const char *control;        /* imfused's control socket, or NULL */
    const char *irc;            /* BitlBee's host:port */
    char xmpp_host[64];         /* the XMPP server, an IP literal */
    uint16_t xmpp_port;
    const char *ca_file;        /* CA of the XMPP server's certificate */
    const char *domain;         /* XMPP domain of every account */
    const char *prefix;         /* user i (1-based) is PREFIX<i>, XMPP PREFIX<i>@DOMAIN */
    const char *password;       /* of every user and XMPP account */
    const char *peer;           /* the peer's local part */
    const char *peer_password;
    uint32_t users;
    uint64_t messages;
    uint32_t window;            /* closed loop: messages in flight */
    double rate;                /* open loop: messages per second (0: closed loop) */
    uint32_t size;              /* body bytes */
    bool recv;                  /* direction peer -> user */
    bool cid;                   /* imfuse: give every send a cid */
    pid_t pid;                  /* the relay daemon (0: unknown) */
    pid_t xmpp_pid;             /* the XMPP server (0: not measured) */
    double setup_timeout, idle_timeout, timeout;   /* seconds */
    bool json;
    const char *label;
};

/* A relay as the run drives it.  Every hook is called on the worker thread. */
struct bench_relay_ops {
    const char *name;
    /* Connect and set up every user; each reports bench_user_ready() once,
     * or bench_fail().  0 or negative (then nothing is left open). */
    int (*start)(struct bench *b);
    /* Send direction: hand message body (of sequence number seq) from user
     * `user` to the peer.  0 done, 1 "back-pressure: try again later"
     * (nothing sent), negative: failure (bench_fail() was called). */
    int (*send)(struct bench *b, uint32_t user, uint64_t seq, const char *body, size_t len);
    /* The last message is in: finish what the protocol owes (acks, replies)
     * and call bench_finished().  NULL: finished at once. */
    void (*finish)(struct bench *b);
    /* About every 100 ms. */
    void (*tick)(struct bench *b);
    /* Say goodbye and close every connection; closed() is true once all are gone. */
    void (*close)(struct bench *b);
    bool (*closed)(struct bench *b);
    /* Free what start() made (after closed(), or at exit). */
    void (*free)(struct bench *b);
};

extern const struct bench_relay_ops bench_imfuse_ops;
extern const struct bench_relay_ops bench_irc_ops;
extern const struct bench_relay_ops bench_direct_ops;

/* ---- what relays call ------------------------------------------------------ */

const struct bench_opts *bench_opts(const struct bench *b);
struct dp_worker *bench_worker(const struct bench *b);
/* The relay's private state (set by start()). */
void *bench_relay_state(const struct bench *b);
void bench_set_relay_state(struct bench *b, void *st);

/* "PREFIX<i+1>" and "PREFIX<i+1>@DOMAIN" for user i (0-based). */
void bench_user_name(const struct bench *b, uint32_t i, char *buf, size_t sz);
void bench_user_jid(const struct bench *b, uint32_t i, char *buf, size_t sz);
/* The peer's bare JID. */
const char *bench_peer_jid(const struct bench *b);

/* Set-up of one user is complete. */
void bench_user_ready(struct bench *b);
/* A message body reached its receiver (user side in recv, peer in send). */
void bench_receipt(struct bench *b, const char *body, size_t len);
/* The relay refused message seq (send direction), in words. */
void bench_send_failed(struct bench *b, uint64_t seq, const char *why);
/* finish() is done. */
void bench_finished(struct bench *b);
/* What a relay is waiting for during set-up, shown if set-up times out (printf format). */
void bench_note(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Something broke: the run stops and says why (printf format). */
void bench_fail(struct bench *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Split "host:port" into an IP-literal host and port: 0 or -IM_EINVAL. */
int bench_split_addr(const char *s, char *host, size_t hostsz, uint16_t *port);
/* Open a connection to the relay's listener opt_val (IP:PORT, given as option
 * opt) with cb and ud.  NULL after bench_fail() ("relay: ...") with *err set. */
struct dp_conn *bench_connect(struct bench *b, const char *relay, const char *opt,
                              const char *opt_val, const struct dp_conn_cb *cb, void *ud,
                              int *err);

#endif
