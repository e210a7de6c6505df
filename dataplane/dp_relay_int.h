/*
 * dp_relay_int.h - the relay's internals, shared by its four files:
 *
 *   dp_relay.c    the plane dispatcher (DPM_* in, CPM_* out), the users and
 *                 accounts tables, the public API (dp_relay.h)
 *   dp_client.c   client sessions: frames in, the op table's dataplane ops,
 *                 replies and events out
 *   dp_account.c  emulated sessions: account configuration, the adapter's
 *                 events, the ordered send queue, reconnect backoff
 *   dp_route.c    unified contacts, the routing rule and `send`
 *   dp_admit.c    admission of client connections: caps in total and per
 *                 address, the pre-login clock and memory budget, the idle
 *                 timeout
 *
 * Ownership: the relay owns every struct dp_client, dp_user and dp_account
 * of its worker.  A dp_client lives from accept until its connection's
 * on_close; a dp_account from DPM_ACCOUNT_UP until DPM_ACCOUNT_DOWN (its
 * emulated session comes and goes inside it); a dp_user as long as it has
 * accounts or logged-in clients.  Everything runs on the worker's thread.
 */
#ifndef DP_RELAY_INT_H
#define DP_RELAY_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "im_common.h"
#include "im_proto.h"
#include "client/cl_frame.h"
#include "client/cl_ops.h"
#include "dp_conn.h"
#include "dp_msg.h"
#include "dp_relay.h"
#include "dp_stats.h"

#define DP_LOG(lvl, ...) IM_LOG(lvl, "dp", __VA_ARGS__)

#define DP_HASH_BUCKETS     4096
#define DP_QUEUE_PAUSE      1024        /* queued outbound msgs that pause senders */
#define DP_QUEUE_RESUME     (DP_QUEUE_PAUSE / 2)
#define DP_RX_MAX           (4 + CL_FRAME_MAX)
#define DP_BACKOFF_FIRST    1500        /* ms, +-20 %: first retry within 2 s */
#define DP_BACKOFF_CAP      (300 * 1000)
#define DP_DOWN_BATCH       256         /* commands handled per loop turn */
#define DP_ADDR_MAX         1024        /* bytes of an address the relay copies */
#define DP_IPS_MAX          8           /* server addresses tried per resolution */
#define DP_IP_LEN           46          /* an IPv6 literal and its NUL */
#define DP_RX_KEEP          (64u * 1024)    /* an emptied receive buffer larger than this is freed */
#define DP_PRELOGIN_HIWAT   (16u * 1024)    /* a client not logged in is not read past this backlog */
#define DP_PRELOGIN_LOWAT   (4u * 1024)
#define DP_LOG_EVERY_MS     10000           /* a limit's log line at most this often */
#define DP_CLOSE_GRACE_MS   5000            /* a closing client that cannot flush is aborted then */

struct dp_user;
struct dp_account;
struct dp_addr;

/* A client connection. */
struct dp_client {
    struct dp_relay *r;
    struct dp_conn *c;
    uint32_t slot, gen;                 /* its name across the planes (dp_msg.h) */
    struct dp_user *user;               /* NULL until logged in */
    struct dp_client *unext;            /* in user->clients */
    uint8_t *rx;                        /* bytes of frames not yet complete */
    size_t rx_len, rx_cap;
    bool closing;
    uint64_t close_by;                  /* mono ms: closing, aborted if not flushed by then */
    bool paused;                        /* stopped on a full send queue */
    bool out_full;                      /* output past its high watermark: not read until on_drain */
    /* admission (dp_admit.c) */
    struct dp_addr *addr;               /* its address's connection count */
    struct dp_client *pnext, *pprev;    /* the relay's clients not logged in, oldest first */
    bool prelogin;                      /* on that list */
    uint64_t deadline;                  /* mono ms: logged in by then, or closed */
    uint64_t last_in;                   /* mono ms of the last bytes received */
    size_t rx_counted;                  /* rx_cap as counted in the pre-login budget */
    /* the paced replay of the queue after login */
    bool replaying;                     /* queued messages still to come from the controlplane */
    bool replay_wait;                   /* the next batch is asked for at on_drain */
    uint64_t replay_last;               /* the highest seq replayed so far */
    uint64_t live_after;                /* live deliveries up to this seq came in the replay */
};

/* One entry of an account's contact list. */
struct dp_contact {
    char *address;
    char *name;
    char **groups;
    uint32_t n_groups;
    enum im_presence presence;
};

struct dp_member {
    uint64_t account;
    char *address;
};

struct dp_unified {
    uint64_t id;
    uint64_t prefer;                    /* 0: none */
    struct dp_member *m;
    uint32_t n;
};

/* An accepted outbound message waiting in an account's send queue (one
 * allocation: the strings follow the struct). */
struct dp_out {
    struct dp_out *next;
    uint64_t msg;
    uint32_t address_len, body_len;
    char *address;                      /* NUL-terminated, in buf */
    char *body;                         /* NUL-terminated, in buf */
    char buf[];
};

struct dp_user {
    uint64_t uid;
    char name[65];
    struct dp_user *hnext;
    struct dp_client *clients;          /* logged-in connections */
    struct dp_account *accounts;        /* in link order */
    struct dp_unified *unified;         /* parsed, for routing and tagging */
    uint32_t n_unified;
    uint8_t *unified_raw;               /* the msgpack array as stored */
    size_t unified_raw_len;
};

struct dp_account {
    struct dp_relay *r;
    uint64_t id;
    struct dp_user *user;
    struct dp_account *unext, *hnext;
    const struct im_proto_ops *ops;     /* NULL: network not built in */
    /* configuration (owned strings) */
    char *network, *login, *password, *host, *server, *tls_s, *tls_name, *name;
    struct im_option *opts;
    uint32_t n_opts;
    struct im_account_cfg cfg;
    struct im_io io;
    /* state */
    enum im_account_state state;
    char detail[256];
    struct dp_contact *contacts;
    uint32_t n_contacts;
    /* the server's addresses (IP literals from the controlplane's resolver) */
    char ips[DP_IPS_MAX][DP_IP_LEN];
    uint32_t n_ips, ip_i;               /* tried in order; ip_i == n_ips: resolve again */
    uint64_t resolve_seq;               /* of the last CPM_RESOLVE */
    bool resolving;
    /* the emulated session */
    struct im_sess *sess;
    struct dp_conn *conn;
    bool opened;                        /* the connection came up */
    bool online;
    bool tls_pending;
    uint64_t next_try;                  /* mono ms; 0 = not scheduled */
    uint32_t backoff;
    /* ordered send queue: [head, unsent) handed to the session, [unsent, ..) waiting */
    struct dp_out *q_head, *q_tail, *q_unsent;
    uint32_t q_len;
    struct dp_client **paused;          /* clients paused on this queue */
    uint32_t n_paused, cap_paused;
};

/* The counters, written by the worker only (single writer, DP_CTR_ADD). */
struct dp_relay_live {
#define DP_X(f) _Atomic uint64_t f;
    DP_RELAY_COUNTERS(DP_X)
#undef DP_X
};

struct dp_relay {
    struct dp_worker *w;
    struct dp_chan *ch;
    struct dp_listener *listeners[4];
    unsigned n_listeners;
    struct dp_client **slots;           /* by slot; slot 0 is never used */
    uint32_t *gens;
    uint32_t n_slots, *free_slots, n_free;
    struct dp_user *users[DP_HASH_BUCKETS];
    struct dp_account *accounts[DP_HASH_BUCKETS];
    uint64_t rng;
    uint64_t *sent;                     /* ids that left this turn: one CPM_OUT_DONE */
    uint32_t n_sent, cap_sent;
    /* admission of clients (dp_admit.c) */
    struct dp_client_limits lim;
    uint32_t n_clients;                 /* client connections open */
    struct dp_addr *addrs[DP_HASH_BUCKETS]; /* connections per address */
    struct dp_client *pre_head, *pre_tail; /* not logged in, by deadline */
    uint64_t pre_bytes;                 /* their receive buffers */
    uint64_t next_idle_check;           /* mono ms */
    uint64_t log_at[8];                 /* when each limit was last logged (enum dp_admit_log) */
    uint64_t accept_paused_seen;        /* the worker's accept_paused last logged */
    struct dp_relay_live st;
};

#define STAT_ADD(r, f, n) DP_CTR_ADD((r)->st.f, (n))
#define STAT_SUB(r, f, n) DP_CTR_SUB((r)->st.f, (n))

/* ---- dp_relay.c: tables and the way up ---------------------------------- */

struct dp_user *dp_user_find(struct dp_relay *r, uint64_t uid);
/* Find or create; NULL on ENOMEM (counted). */
struct dp_user *dp_user_get(struct dp_relay *r, uint64_t uid, const char *name);
/* Free u when it has neither clients nor accounts. */
void dp_user_maybe_free(struct dp_relay *r, struct dp_user *u);
struct dp_account *dp_account_find(struct dp_relay *r, uint64_t id);
/* The account id of u, or NULL. */
struct dp_account *dp_user_account(struct dp_user *u, uint64_t id);
void dp_account_hash_add(struct dp_relay *r, struct dp_account *a);
void dp_account_hash_del(struct dp_relay *r, struct dp_account *a);
/* xorshift jitter (not security). */
uint64_t dp_relay_rand(struct dp_relay *r);
/* A message left for the network: its outbox entry goes (batched per turn). */
void dp_relay_sent(struct dp_relay *r, uint64_t msg);
/* Send the turn's batch up (end of every hook run). */
void dp_relay_flush_sent(struct dp_relay *r);
/* Count an allocation failure on the fast path. */
void dp_relay_oom(struct dp_relay *r, const char *what);
/* Callbacks for a connection whose owner has gone (an account that moved
 * on, a relay being freed): it only flushes and closes. */
extern const struct dp_conn_cb dp_orphan_cb;
/* Copy a view into a new string; NULL on ENOMEM (counted). */
char *dp_strdup(struct dp_relay *r, struct im_str v);

/*
 * Send a message up.  m's scalars are the caller's; with e non-NULL its
 * frame becomes the payload (e is released either way).  0, or negative
 * when the payload cannot be made (over the limit, out of memory): the
 * message is then dropped, counted and logged, and the caller answers for
 * it where a client waits.
 */
int dp_up(struct dp_relay *r, struct dp_msg *m, struct cl_enc *e);

/* ---- dp_client.c -------------------------------------------------------- */

void dp_client_accept(void *ud, struct dp_conn *c);
struct dp_client *dp_client_by_id(struct dp_relay *r, uint32_t slot, uint32_t gen);
/* Queue bytes to the client; a client that does not read is dropped. */
void dp_client_write(struct dp_client *cl, const uint8_t *p, size_t n);
/* Finish e and write it (e is released): 0, -IM_ETOOBIG (over the frame
 * limit) or -ENOMEM, and then nothing is written. */
int dp_client_send(struct dp_client *cl, struct cl_enc *e);
/* Finish the reply e to request id and write it; over the frame limit the
 * client gets `limit` instead, out of memory `internal` (e is released). */
void dp_client_reply(struct dp_client *cl, uint64_t id, struct cl_enc *e);
void dp_client_error(struct dp_client *cl, bool has_id, uint64_t id, const char *code, const char *msg);
void dp_client_ok(struct dp_client *cl, uint64_t id);
/* Flush, then close. */
void dp_client_close(struct dp_client *cl);
/* Stop / resume reading the client (a full send queue). */
void dp_client_pause(struct dp_client *cl, bool paused);
/* Send a finished event frame to every logged-in client of u (e is released). */
void dp_user_broadcast(struct dp_relay *r, struct dp_user *u, struct cl_enc *e);
/* DPM_LOGIN_OK, DPM_DELIVER. */
void dp_client_login_ok(struct dp_relay *r, const struct dp_msg *m);
void dp_client_deliver(struct dp_relay *r, const struct dp_msg *m);
/* Whether the dataplane serves op (the table's DATA rows; for the checks). */
bool dp_client_serves(enum cl_op_id op);
/* Free every client struct without closing (dp_relay_free). */
void dp_clients_free(struct dp_relay *r);
/* Write {op: error, code: limit, message: why} (without id) and close; the
 * receive buffer goes at once. */
void dp_client_limit_close(struct dp_client *cl, const char *why);
/* DPM_REPLAY_END: the end of one batch of the paced replay. */
void dp_client_replay_end(struct dp_relay *r, const struct dp_msg *m);

/* ---- dp_admit.c ----------------------------------------------------------- */

/* Log lines rate-limited per limit (r->log_at). */
enum dp_admit_log { DP_ALOG_MAX_CONNS, DP_ALOG_PER_ADDR, DP_ALOG_PRELOGIN_MEM, DP_ALOG_ACCEPT };

/*
 * A new connection: within max-conns and max-conns-per-address?  true: it
 * is counted and on the pre-login clock; false: *why says which cap (the
 * caller refuses it, nothing is counted).
 */
bool dp_admit_accept(struct dp_client *cl, const char **why);
/* The connection is gone: uncount it. */
void dp_admit_release(struct dp_client *cl);
/* Logged in: off the pre-login clock and budget.  Logged out: back on them. */
void dp_admit_login(struct dp_client *cl);
void dp_admit_logout(struct dp_client *cl);
/*
 * The receive buffer of a client not logged in is to grow to cap bytes.
 * Past prelogin-memory the clients holding the largest buffers are closed
 * until it fits; false when cl itself holds the largest (the caller closes
 * it), true when the growth may go ahead (it is counted).
 */
bool dp_admit_rx_grow(struct dp_client *cl, size_t cap);
/* The receive buffer changed size without growing (freed, shrunk). */
void dp_admit_rx_set(struct dp_client *cl, size_t cap);
/* Pre-login and idle deadlines, the accept pauses' log (every tick). */
void dp_admit_tick(struct dp_relay *r, uint64_t now);
/* Free the address table (dp_relay_free). */
void dp_admit_free(struct dp_relay *r);

/* ---- dp_account.c ------------------------------------------------------- */

void dp_account_up(struct dp_relay *r, const struct dp_msg *m);
/* DPM_RESOLVED: connect to the addresses, or report why there are none. */
void dp_account_resolved(struct dp_relay *r, const struct dp_msg *m);
/* Log out (politely or not) and free the account, its queue and its list. */
void dp_account_destroy(struct dp_account *a, bool polite);
/* Queue an accepted outbound message (DPM_OUT_ACCEPTED). */
void dp_account_accepted(struct dp_relay *r, const struct dp_msg *m);
/* Adapter ticks and reconnects (every DP_TICK_MS). */
void dp_account_tick(struct dp_account *a, uint64_t now);
/* Say goodbye if online and drop the session (shutdown). */
void dp_account_detach(struct dp_account *a, bool polite);
/* Pause cl until a's queue is below DP_QUEUE_RESUME. */
void dp_account_pause_client(struct dp_account *a, struct dp_client *cl);
/* add_contact / remove_contact. */
void dp_op_contact(struct dp_client *cl, const struct cl_msg *req, bool add);
struct dp_contact *dp_contact_find(struct dp_account *a, const char *address);
/* Pack one contact entry {account, network, address, name, groups, presence}. */
void dp_pack_contact(struct cl_enc *e, const struct dp_account *a, const struct dp_contact *c);

/* ---- dp_route.c ----------------------------------------------------------- */

/* Replace u's unified list from the stored msgpack array (NULL: empty). */
void dp_unified_set(struct dp_relay *r, struct dp_user *u, const msgpack_object *arr);
void dp_unified_free(struct dp_user *u);
/* Unified contact id of (account, address), 0 when none. */
uint64_t dp_unified_of(const struct dp_user *u, uint64_t account, const char *address);
/* `send`: route, then hand to the controlplane, which makes it durable and answers. */
void dp_op_send(struct dp_client *cl, const struct cl_msg *req);

#endif
