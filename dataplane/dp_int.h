/*
 * dp_int.h - dataplane internals shared by dp_worker.c, dp_conn.c, dp_tls.c
 * and the I/O backends (dp_io_kernel.c; dp_io_dpdk.c with dp_lwip.c).
 *
 * Layering:  dp_conn.h API  ->  dp_conn.c (buffers, watermarks, TLS layering,
 * deferred callbacks)  ->  struct dp_io_ops (a backend moves raw bytes).
 * A backend reports events upward only through the dp_conn_io_* and
 * dp_listener_io_* calls below and never calls a user callback itself, so a
 * new backend touches nothing above this header.
 */
#ifndef DP_INT_H
#define DP_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "dp_conn.h"
#include "dp_stats.h"
#include "dp_worker.h"

#define DP_RBUF_SIZE    (64u * 1024)    /* per-worker read buffer (one read per event) */
#define DP_TBUF_SIZE    (16u * 1024)    /* per-worker TLS plaintext buffer (one record) */
#define DP_CHUNK_DATA   (16u * 1024)    /* payload bytes of one buffer-chain chunk */
#define DP_CHUNK_KEEP   256             /* free chunks a worker keeps for reuse */
#define DP_CONN_KEEP    256             /* free connection structs a worker keeps */
#define DP_LINGER_MS    2000            /* graceful close: wait this long for the peer's FIN */

#define dp_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* ---- buffer chains: FIFO byte queues made of pooled chunks -------------- */

struct dp_chunk {
    struct dp_chunk *next;
    uint32_t off, end;              /* live bytes are data[off, end) */
    uint8_t data[DP_CHUNK_DATA];
};

struct dp_chain {
    struct dp_chunk *head, *tail;
    size_t len;                     /* bytes queued */
};

/* Append n bytes (all or nothing): 0 or -ENOMEM. */
int dp_chain_append(struct dp_worker *w, struct dp_chain *ch, const void *p, size_t n);
/* Copy up to n bytes out and drop them; returns the count copied. */
size_t dp_chain_read(struct dp_worker *w, struct dp_chain *ch, void *dst, size_t n);
/* Drop the first n (<= len) bytes. */
void dp_chain_consume(struct dp_worker *w, struct dp_chain *ch, size_t n);
/* Describe up to max leading segments in iov; returns the count.  Views are valid until the chain changes. */
int dp_chain_iov(const struct dp_chain *ch, struct iovec *iov, int max);
/* Drop everything. */
void dp_chain_clear(struct dp_worker *w, struct dp_chain *ch);

/* ---- objects a backend sees ---------------------------------------------- */

enum dp_io_kind { DP_IO_CONN = 1, DP_IO_LISTENER, DP_IO_WAKE, DP_IO_LINGER };

/*
 * The backend's handle inside every connection and listener.  kind lets a
 * backend map one event pointer back to its object (dp_container_of).
 * fd/mask belong to the kernel backend, priv to any other backend.
 */
struct dp_io_slot {
    uint8_t kind;
    bool registered;                /* kernel: fd is in the epoll set */
    int fd;
    uint32_t mask;                  /* kernel: current epoll interest */
    void *priv;
};

enum dp_conn_state {
    DP_CS_CONNECTING = 1,           /* outbound, TCP not yet up */
    DP_CS_OPEN,                     /* transport up (TLS may still be handshaking) */
    DP_CS_DEAD,                     /* transport released; on_close pending from the loop */
};

/* dp_conn.flags */
#define DP_CF_PENDING     0x0001u   /* on the worker's pending list */
#define DP_CF_FLUSH       0x0002u   /* output to push to the backend */
#define DP_CF_INPUT       0x0004u   /* buffered TLS input to process */
#define DP_CF_CLOSING     0x0008u   /* flush, then close with on_close(0) */
#define DP_CF_EOF         0x0010u   /* peer finished sending */
#define DP_CF_PAUSED      0x0020u   /* dp_conn_pause(c, true) */
#define DP_CF_HIWAT       0x0040u   /* passed DP_CONN_HIWAT: on_drain owed */
#define DP_CF_OUTBOUND    0x0080u   /* made by dp_conn_connect: on_open owed */
#define DP_CF_OPENED      0x0100u   /* on_open(0) delivered */
#define DP_CF_REPORT_OPEN 0x0200u   /* on_open(open_status) owed from the loop */
#define DP_CF_HANDSHAKE   0x0400u   /* TLS handshake in progress */
#define DP_CF_STARTTLS    0x0800u   /* that handshake answers dp_conn_start_tls_client: on_tls owed */
#define DP_CF_REPORT_TLS  0x1000u   /* on_tls(open_status) owed from the loop */
#define DP_CF_NOTIFY      0x2000u   /* TLS close_notify queued */
#define DP_CF_CLOSED_CB   0x4000u   /* on_close is running or has run */

struct dp_tls;

struct dp_conn {
    struct dp_io_slot io;           /* backend handle */
    struct dp_worker *w;
    struct dp_conn_cb cb;           /* copied from the caller */
    void *ud;
    struct dp_conn *next, *prev;    /* worker's list of live connections */
    struct dp_conn *pnext;          /* worker's pending list */
    uint32_t flags;
    uint8_t state;                  /* enum dp_conn_state */
    int reason;                     /* on_close reason once DEAD */
    int open_status;                /* status for a deferred on_open / on_tls */
    struct dp_chain out;            /* raw bytes for the transport, in order */
    struct dp_chain app;            /* plaintext waiting for TLS (handshake or encryption) */
    uint32_t hiwat, lowat;          /* watermarks (dp_conn_set_watermarks) */
    struct dp_tls *tls;             /* NULL: plain */
    char peer[64], local[64];
    char detail[320];               /* text for a deferred on_open / on_tls failure */
};

struct dp_listener {
    struct dp_io_slot io;
    struct dp_worker *w;
    bool tls;
    bool dead;                      /* dp_listener_close() called; freed by the loop */
    uint16_t port;                  /* bound port (the real one when 0 was asked) */
    uint32_t backoff_ms;            /* kernel: accept pauses after EMFILE/ENFILE, doubling */
    uint64_t resume_ms;             /* kernel: accepting paused until then (0: not paused) */
    dp_accept_fn *on_accept;
    void *ud;
    struct dp_listener *next;       /* worker's list (live or dead) */
};

/*
 * An I/O backend.  Every hook runs on the worker thread except wake.
 * Backends never call user callbacks; they report through dp_conn_io_*.
 */
struct dp_io_ops {
    const char *name;
    /* Set up the backend's per-worker state (w->io).  0, or negative with why filled. */
    int (*init)(struct dp_worker *w, char *why, size_t whysz);
    /* Release everything init and the other hooks made (connections are already gone). */
    void (*fini)(struct dp_worker *w);
    /* Wait at most timeout_ms (0: do not wait) and dispatch what is ready.  Returns events seen. */
    int (*poll)(struct dp_worker *w, int timeout_ms);
    /* Make a concurrent or later poll return soon.  Any thread, async-signal-safe. */
    void (*wake)(struct dp_worker *w);
    /* Bind and listen; fill l->port.  0 or -errno. */
    int (*listen)(struct dp_listener *l, const char *host, uint16_t port);
    /* Stop listening and release the listener's transport. */
    void (*unlisten)(struct dp_listener *l);
    /*
     * Begin connecting c.  0: in progress, dp_conn_io_connected() follows
     * from poll (never from inside this call).  Negative -errno with
     * c->detail filled: failed at once (the caller reports it from the loop).
     */
    int (*connect)(struct dp_conn *c, const char *host, uint16_t port);
    /* Hand raw bytes to the transport: bytes taken (maybe fewer), -EAGAIN, or another -errno. */
    ssize_t (*write)(struct dp_conn *c, const struct iovec *iov, int iovcnt);
    /* Report writability (dp_conn_io_writable) while on; on only while a backlog exists. */
    void (*want_write)(struct dp_conn *c, bool on);
    /* Read and report data / EOF while on. */
    void (*want_read)(struct dp_conn *c, bool on);
    /* Release c's transport.  graceful: after a full flush (FIN, then drain the peer); else abort. */
    void (*close)(struct dp_conn *c, bool graceful);
    /* TCP keepalive as dp_conn_keepalive() describes (idle_s 0: off).  0 or -errno. */
    int (*keepalive)(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt);
};

extern const struct dp_io_ops dp_io_kernel_ops;
extern const struct dp_io_ops dp_io_dpdk_ops;

/* ---- the worker ------------------------------------------------------------ */

/* Counters written by the worker thread only, read anywhere (dp_stats.h). */
struct dp_stats_live {
    _Atomic uint64_t conn_opened, conn_closed, connect_failed, bytes_in, bytes_out, tls_ok,
        tls_failed, accept_paused;
    /* the dpdk backend's (dp_stats.h) */
    _Atomic uint64_t io_pkts_in, io_pkts_out, io_bytes_in, io_bytes_out, io_drop_bad, io_drop_tx,
        io_drop_nombuf, io_nic_missed, io_nic_errors, io_nic_nombuf, io_sleeps, io_busy_cycles,
        io_busy_turns, tcp_open, tcp_retransmits, tcp_refused, tcp_drops;
};

/* Single writer: a relaxed load + store, no locked instruction (dp_stats.h). */
#define DP_STAT_ADD(w, field, n) DP_CTR_ADD((w)->stats.field, (n))

/* Set a gauge or a counter copied from elsewhere (single writer). */
#define DP_STAT_SET(w, field, v) \
    atomic_store_explicit(&(w)->stats.field, (uint64_t)(v), memory_order_relaxed)

struct dp_tls_ctx;

struct dp_worker {
    unsigned id;
    const struct dp_io_ops *ops;
    void *io;                       /* backend per-worker state */
    atomic_bool stop;
    const struct im_clock *clock;   /* the loop's time source */
    uint64_t now_ms, next_tick_ms;  /* monotonic */
    dp_poll_fn *poll_hook;
    dp_tick_fn *tick_hook;
    void *hook_ud;
    struct dp_conn *live;           /* every connection not yet freed */
    struct dp_conn *pend_head, *pend_tail;
    struct dp_conn *free_conns;
    unsigned n_free_conns;
    struct dp_chunk *free_chunks;
    unsigned n_free_chunks;
    struct dp_listener *listeners;
    uint8_t *rbuf;                  /* DP_RBUF_SIZE: backends read into it */
    uint8_t *tbuf;                  /* DP_TBUF_SIZE: TLS plaintext */
    struct dp_tls_ctx *tls;
    struct dp_stats_live stats;
};

/*
 * One loop turn: poll at most max_wait_ms (less when work is pending or a
 * tick is due), run pending connection work and deferred callbacks, the poll
 * hook, and the tick hook when due.  dp_worker_run() is this in a loop;
 * tests call it directly.  Returns 0.
 */
int dp_worker_run_once(struct dp_worker *w, int max_wait_ms);


/* ---- generic connection code (dp_conn.c) ---------------------------------- */

/* A fresh connection struct on w's live list, state DP_CS_OPEN, fd -1; NULL on ENOMEM. */
struct dp_conn *dp_conn_alloc(struct dp_worker *w);
/* Put c on the pending list with flag. */
void dp_conn_mark(struct dp_conn *c, uint32_t flag);
/* Run the pending list once (flushes, deferred callbacks, frees). */
void dp_conn_run_pending(struct dp_worker *w);
/* Close everything still open with on_close(-ECANCELED) and free the pools (dp_worker_free). */
void dp_conn_shutdown_all(struct dp_worker *w);
/* Release the transport and schedule on_close(reason) (with the owed on_open/on_tls first). */
void dp_conn_fail(struct dp_conn *c, int reason, const char *detail);

/*
 * A server-side TLS handshake on an established connection (the peer of a
 * STARTTLS client).  Bytes queued before go out in clear; on_tls follows.
 * Internal for now (tests); a STARTTLS server would make it public.
 */
int dp_conn_start_tls_server(struct dp_conn *c);

/* Backend upcalls (worker thread, from ops->poll). */
void dp_conn_io_connected(struct dp_conn *c, int status, const char *detail);
void dp_conn_io_data(struct dp_conn *c, const uint8_t *p, size_t n);
void dp_conn_io_writable(struct dp_conn *c);
/* Peer finished (reason 0) or the transport failed (negative). */
void dp_conn_io_eof(struct dp_conn *c, int reason);
/* A connection accepted on l (made with dp_conn_alloc, transport ready). */
void dp_listener_io_accept(struct dp_listener *l, struct dp_conn *c);

/* ---- TLS (dp_tls.c) ----------------------------------------------------- */

/* Per-worker configs from cfg; 0, or negative with why filled. */
int dp_tls_ctx_new(struct dp_worker *w, const struct dp_worker_cfg *cfg, char *why, size_t whysz);
void dp_tls_ctx_free(struct dp_worker *w);
bool dp_tls_have_server(const struct dp_worker *w);

/* Give c a TLS layer (client checking name, or server).  0, or negative with c->detail filled. */
int dp_tls_attach(struct dp_conn *c, bool server, const char *name);
void dp_tls_detach(struct dp_conn *c);
/* Queue received ciphertext. 0 or -ENOMEM. */
int dp_tls_input(struct dp_conn *c, const uint8_t *p, size_t n);
/* True when received bytes wait for dp_tls_handshake / dp_tls_read. */
bool dp_tls_has_input(const struct dp_conn *c);
/* Advance the handshake: 0 done, -EAGAIN needs input, else failure with c->detail filled. */
int dp_tls_handshake(struct dp_conn *c);
/* Decrypt into buf: bytes (> 0), -EAGAIN needs input, 0 close_notify, else failure (c->detail). */
int dp_tls_read(struct dp_conn *c, uint8_t *buf, size_t n);
/* Encrypt up to n plaintext bytes into c->out: bytes taken (> 0) or failure. */
int dp_tls_write(struct dp_conn *c, const uint8_t *p, size_t n);
/* Queue a close_notify alert into c->out. */
void dp_tls_close_notify(struct dp_conn *c);

#endif
