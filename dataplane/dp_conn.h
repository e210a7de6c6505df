/*
 * dp_conn.h - the dataplane connection API.
 *
 * Everything above this header (client sessions, protocol glue, relay) sees
 * connections only through it; the I/O backend (kernel epoll today, DPDK +
 * lwIP next) implements it.  A connection carries an optional TLS layer
 * (mbedTLS, dp_tls.c): once TLS is on, dp_conn_write() takes plaintext and
 * on_data delivers plaintext.
 *
 * Threading: a connection belongs to one worker; every call and callback
 * happens on that worker's thread.
 *
 * Lifetime: a connection lives until its on_close callback returns; the
 * pointer is invalid after that.  dp_conn_close() never calls on_close
 * synchronously: on_close always comes from the event loop.
 */
#ifndef DP_CONN_H
#define DP_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

struct dp_worker;
struct dp_conn;
struct dp_listener;

struct dp_conn_cb {
    /*
     * Outbound connect finished (for a direct-TLS connect: after the
     * handshake).  status 0 or negative; detail is a human explanation on
     * failure (e.g. "certificate name mismatch: expected a.test").  After a
     * failure on_close follows.
     */
    void (*on_open)(struct dp_conn *c, int status, const char *detail);
    /* Bytes arrived (plaintext when TLS is on).  Valid during the call only. */
    void (*on_data)(struct dp_conn *c, const uint8_t *p, size_t n);
    /* The write backlog fell below DP_CONN_LOWAT after having passed DP_CONN_HIWAT. */
    void (*on_drain)(struct dp_conn *c);
    /* A handshake started by dp_conn_start_tls_client() finished (0 or negative + detail). */
    void (*on_tls)(struct dp_conn *c, int status, const char *detail);
    /*
     * The connection is gone: peer closed, error (reason negative), or a
     * dp_conn_close() finished flushing (reason 0).  Freed after return.
     */
    void (*on_close)(struct dp_conn *c, int reason);
};

#define DP_CONN_HIWAT   (256u * 1024)   /* backlog that asks the writer to pause */
#define DP_CONN_LOWAT   (64u * 1024)
#define DP_CONN_MAXBUF  (8u * 1024 * 1024) /* backlog beyond which writes fail */

/*
 * Start an outbound TCP connection to host:port (host: an IPv4/IPv6 literal;
 * names are resolved on the controlplane, controlplane/cp_resolve.h, never
 * here).  With tls_name != NULL the TLS
 * client handshake runs first and the certificate is verified against the
 * worker's CA set and tls_name.  Returns the connection (on_open follows)
 * or NULL with *err set.
 */
struct dp_conn *dp_conn_connect(struct dp_worker *w, const char *host, uint16_t port,
                                const char *tls_name, const struct dp_conn_cb *cb, void *ud,
                                int *err);

/* Install callbacks on an accepted connection (before returning from on_accept). */
void dp_conn_set_cb(struct dp_conn *c, const struct dp_conn_cb *cb, void *ud);
void *dp_conn_ud(const struct dp_conn *c);
struct dp_worker *dp_conn_worker(const struct dp_conn *c);

/*
 * Queue bytes.  Never short: everything is buffered in order.  Returns 0,
 * 1 when the backlog is now above DP_CONN_HIWAT (stop producing until
 * on_drain), or -ENOBUFS when it would exceed DP_CONN_MAXBUF (nothing queued)
 * or -ENOTCONN after close.
 */
int dp_conn_write(struct dp_conn *c, const void *p, size_t n);
/* Bytes queued but not yet handed to the transport. */
size_t dp_conn_backlog(const struct dp_conn *c);
/*
 * This connection's watermarks (DP_CONN_HIWAT / DP_CONN_LOWAT until set):
 * past hiwat dp_conn_write() returns 1, and on_drain follows once the
 * backlog falls below lowat (lowat < hiwat).  DP_CONN_MAXBUF stays the cap.
 */
void dp_conn_set_watermarks(struct dp_conn *c, size_t hiwat, size_t lowat);

/*
 * TCP keepalive: after idle_s seconds without traffic the peer is probed
 * every intvl_s seconds; after cnt unanswered probes the connection ends
 * with on_close(-ETIMEDOUT) (lwIP: -ECONNABORTED).  The kernel backend also
 * bounds unacknowledged output by the same total (TCP_USER_TIMEOUT).
 * idle_s 0 turns it off.  0, or -errno from the backend.
 */
int dp_conn_keepalive(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt);

/* Stop / resume delivering on_data (back-pressure on the peer). */
void dp_conn_pause(struct dp_conn *c, bool paused);

/*
 * Begin a TLS client handshake on an established connection (STARTTLS).
 * Bytes written before are sent in clear first.  on_tls follows.
 */
int dp_conn_start_tls_client(struct dp_conn *c, const char *tls_name);

/* Flush what is queued, then close.  on_close(c, 0) follows from the loop. */
void dp_conn_close(struct dp_conn *c);
/* Close at once, dropping the backlog; on_close(c, reason) follows from the loop. */
void dp_conn_abort(struct dp_conn *c, int reason);

/* Textual peer address ("127.0.0.1:40312"), for logs and rate limits. */
const char *dp_conn_peer(const struct dp_conn *c);
/* Textual local address. */
const char *dp_conn_local(const struct dp_conn *c);
bool dp_conn_is_tls(const struct dp_conn *c);

/* ---- listeners ------------------------------------------------------- */

typedef void dp_accept_fn(void *ud, struct dp_conn *c);

/*
 * Listen on host:port.  With tls true the worker's server certificate is
 * used and the handshake completes before the first on_data.  on_accept must
 * install callbacks with dp_conn_set_cb().  Returns NULL with *err set.
 */
struct dp_listener *dp_listen(struct dp_worker *w, const char *host, uint16_t port, bool tls,
                              dp_accept_fn *on_accept, void *ud, int *err);
/* Stop accepting; existing connections stay. */
void dp_listener_close(struct dp_listener *l);
/* The port a listener is bound to (the backend's choice when 0 was asked). */
uint16_t dp_listener_port(const struct dp_listener *l);

#endif
