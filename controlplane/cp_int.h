/*
 * cp_int.h - internals shared by the controlplane's files (cp_core.c loop and
 * plane messages, cp_client.c client requests, cp_rpc.c control socket).
 *
 * Everything here runs on the controlplane thread.
 *
 * Group commit: whatever a loop turn changes goes into one write transaction
 * (cp_txn()).  Anything that must not be seen before the change is durable
 * (replies, deliveries, commands to the dataplane) is queued with
 * cp_after_commit() and leaves only after the commit succeeded; if the
 * commit fails, each item's failure alternative is sent instead and messages
 * from the dataplane marked for retry are processed again later.  What does
 * not depend on the turn's writes but must keep its place after them (error
 * replies, commands that change nothing) is queued with cp_after_always():
 * it leaves whatever the commit's outcome, so a failing commit (a full disk)
 * never leaves a client waiting for an answer.  Reads that must not wait
 * for the turn (login) use a read-only snapshot of what is committed.
 */
#ifndef CP_INT_H
#define CP_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <poll.h>

#include "im_common.h"
#include "client/cl_ctl.h"
#include "client/cl_frame.h"
#include "client/cl_ops.h"
#include "dp_msg.h"
#include "cp_config.h"
#include "cp_store.h"
#include "cp_crypto.h"
#include "cp_auth.h"
#include "cp_resolve.h"

#define LOG(lvl, ...) IM_LOG(lvl, "cp", __VA_ARGS__)

struct dp_chan;
struct dp_relay;
struct cp_rpc;
struct cp_ops;
struct cp_reload;

struct cp_after {
    struct cp_after *next;
    struct dp_msg ok;               /* sent down after a successful commit (type 0: none) */
    struct dp_msg retry;            /* put back into the input after a failed commit */
    uint32_t fail_conn, fail_gen;   /* fail_reply: a failed commit answers this request */
    uint64_t fail_id;               /* ... with an internal error instead of ok */
    bool fail_reply;
    bool always;                    /* ok leaves even when the commit failed */
};

#define CP_AFTER_KEEP   4096        /* free after-commit items kept for reuse */

/* How often a limit refused something (controlplane side; imfusectl stats). */
struct cp_limit_stats {
    uint64_t lockout;           /* login: user, user from source, or source locked or busy */
    uint64_t auth_source;       /* login/register: auth-pending-per-address reached */
    uint64_t auth_total;        /* login/register: auth-pending-max reached */
    uint64_t register_rate;     /* register: register-per-address reached */
    uint64_t accounts;          /* link: max-accounts-per-user reached */
    uint64_t sessions;          /* link: max-sessions reached */
    uint64_t unified;           /* set_unified: max-unified-members or the frame limit */
    uint64_t queue_full;        /* a user's queue reached max-queued-per-user or -bytes */
};

struct cp_quota;

/* Login lockouts: a user (from anywhere, and from one source) after 5
 * failures for 30 s; a source after login-failures-per-address for 60 s;
 * both doubling per further lockout up to 15 min (cp_auth.h). */
#define CP_LOCK_USER_FAILURES   5
#define CP_LOCK_USER_MS         (30 * 1000)
#define CP_LOCK_ADDR_MS         (60 * 1000)
#define CP_RATELIM_ENTRIES      262144  /* per limiter; the least recently used goes first */

struct cp_session {
    struct cp_session *next;
    uint32_t conn, gen;
    uint64_t uid;
    char user[CP_NAME_MAX + 1];
    char peer[64];
    char device[65];
    uint64_t since;
    /* the paced replay of the queue after login (cp_client.c) */
    bool replaying;                 /* more of the queue is to be read for it */
};

/* What the controlplane knows of each stored account without reading the
 * store: whose it is (sends are checked against it) and its last state. */
struct cp_acct_state {
    struct cp_acct_state *next;
    uint64_t account;
    uint64_t uid;
    int state;
    char network[16];               /* "xmpp": accounts by network and state (stats, SNMP) */
    char detail[256];
};

/* A remembered cid: one allocation, the address follows the struct. */
struct cp_cid {
    struct cp_cid *hnext, *fnext, *fprev;   /* hash chain, FIFO for eviction */
    uint64_t uid, msg, account;
    uint32_t hash;                  /* of (uid, cid): compared before the bytes */
    uint8_t cid_len;
    bool pending;                   /* added this turn: forgotten if the commit fails */
    char network[16];
    char cid[CL_CID_MAX + 1];
    char address[];
};

#define CP_CID_BUCKETS (1u << 18)   /* a power of two, above CP_CID_MAX */
#define CP_CID_MAX     200000
#define CP_STATE_BUCKETS 4096

/* An ack whose removal waits for its turn (cp_client_acks_apply). */
struct cp_ack_wait {
    uint64_t uid, seq, id;
    uint32_t conn, gen;
};

struct cp_core {
    struct cp_config *cfg;
    struct cp_store *store;
    struct cp_key key;
    struct dp_chan *ch;
    struct dp_relay *relay;          /* for counters only (read-only) */
    struct cp_auth *auth;
    struct cp_resolver *resolver;
    struct cp_rpc *rpc;
    struct cp_ratelim *rl_user, *rl_addr;   /* login lockouts: per user, per source */
    struct cp_ratelim *rl_user_src;         /* per (user, source): not reset from elsewhere */
    struct cp_ratelim *rl_register;         /* registrations per source (a rate) */
    struct cp_limit_stats lim;              /* limits hit (imfusectl stats) */
    struct cp_quota *quota;                 /* per-user queue counts (cp_quota.c) */
    struct cp_kdf *kdf;                     /* IM servers' key derivations and their cache (cp_kdf.c) */

    struct cp_txn *txn;              /* the write transaction of this loop turn */
    struct cp_after *after, *after_tail;
    struct cp_after *after_free;        /* reusable items */
    unsigned n_after_free;
    struct dp_msg *retry;            /* messages to process again (failed commit) */
    size_t n_retry, cap_retry;
    uint64_t retry_at;

    struct cp_session *sessions;
    struct cp_acct_state *states[CP_STATE_BUCKETS];
    struct cp_cid **cids;               /* CP_CID_BUCKETS chains, made at first use */
    struct cp_cid *cid_head, *cid_tail;
    unsigned n_cids;

    bool stopping;
    uint64_t next_msg, next_msg_saved;  /* the next outbound message id (and at the last commit) */
    uint64_t msg_limit, msg_limit_saved;/* ids below it are reserved in meta "msg" (pending, stored) */
    uint64_t *done;                     /* sent messages whose outbox entries go with a commit */
    size_t n_done, cap_done, n_done_applied;
    uint64_t done_since;                /* mono ms of the oldest pending delete */
    struct cp_ack_wait *acks;           /* acks whose removals wait (cp_client_acks_apply) */
    size_t n_acks, cap_acks;
    uint64_t acks_applied_ms;           /* mono ms when waiting acks last went into a commit */
    uint64_t commits, commit_failures, msgs_committed, outbox_added, outbox_deleted;
    uint64_t plane_oversize;            /* plane messages sent smaller or refused: over the frame limit */
    uint32_t turn_msgs, turn_outbox;    /* counted into the two above if the turn commits */
    uint32_t batch_seen, last_batch;    /* messages in this commit so far, and in the last */
    uint64_t batch_first_us, batch_last_us; /* when this commit's first and last message came */
    struct cp_cid **turn_cids;          /* cids added this turn */
    unsigned n_turn_cids, cap_turn_cids;

    /* operations (cp_ops.c, cp_reload.c, cp_snmp.c, cp_stats.c) */
    struct cp_ops *ops;                 /* NULL: none (tests) */
    struct cp_reload *reload;           /* what the last reload loaded (TLS files) */
    uint64_t start_ms;                  /* mono ms at start-up (uptime) */
    uint64_t logins_failed;             /* logins refused: wrong user name or password */
    uint64_t acct_left_online;          /* account states that changed from online to another */
};

/*
 * Out of memory on the controlplane: log it and abort.  The controlplane
 * cannot keep its ordering promises without memory; everything it has
 * acknowledged is in the store, so a restart (systemd) loses nothing.
 */
void cp_oom(const char *where) __attribute__((noreturn));

/* The growing array arr of capacity *cap with room for need elements of
 * size bytes (the capacity doubles, from 64); out of memory is cp_oom(where). */
void *cp_reserve(void *arr, size_t *cap, size_t need, size_t size, const char *where);

/* The write transaction of this turn (begun on first use), or NULL with an
 * error logged when LMDB refuses. */
struct cp_txn *cp_txn(struct cp_core *c);

/* Queue an after-commit item: ok leaves after a successful commit, retry
 * (may be NULL) goes back into the input after a failed one.  The messages
 * are moved in (their payloads change owner). */
void cp_after_commit(struct cp_core *c, struct dp_msg *ok, struct dp_msg *retry);

/* Queue a message that leaves after the commit whatever its outcome. */
void cp_after_always(struct cp_core *c, struct dp_msg *m);

/* Error replies leave after the commit, whatever its outcome. */
void cp_client_error(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id,
                     const char *code, const char *msg);
void cp_client_ok(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id);

/* Build an "ok" frame that the failure path of an after-commit item replaces
 * with {error internal "storage failure"}. */
void cp_client_reply_durable(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id,
                             struct cl_enc *e);


/*
 * Acks (cp_client.c).  Their removals go into a commit at most once per
 * CP_ACK_MS: at once when the last went in longer ago (an idle appliance),
 * else with the first commit after that; their oks follow that commit.
 * cp_client_acks_apply puts them into this turn's transaction when due;
 * cp_client_acks_wait says in how many ms they are due (0: now), -1 when
 * none waits.
 */
#define CP_ACK_MS  10
#define CP_ACK_MAX 4096             /* waiting acks that make them due at once */
void cp_client_acks_apply(struct cp_core *c, uint64_t now_ms);
int cp_client_acks_wait(const struct cp_core *c, uint64_t now_ms);

/* Client requests (cp_client.c): CPM_CLIENT_REQ, dispatched by the op table. */
void cp_client_request(struct cp_core *c, struct dp_msg *m);
/* CPM_REPLAY_NEXT: the next batch of a connection's paced replay. */
void cp_client_replay_next(struct cp_core *c, const struct dp_msg *m);
/* CPM_CONN_CLOSED, CPM_CONN_LOGOUT: the session ends (acks it held back go through). */
void cp_client_session_end(struct cp_core *c, const struct dp_msg *m);
/* Whether the controlplane serves op (the table's CONTROL rows; for the checks). */
bool cp_client_serves(enum cl_op_id op);
/* Build the DPM_ACCOUNT_UP for a stored account (unsealing its password). */
int cp_account_up(struct cp_core *c, struct cp_txn *t, const struct cp_account *a, bool with_contacts);
/* Pack the user's unified list as stored (msgpack array) into e. */
int cp_pack_unified(struct cp_core *c, struct cp_txn *t, uint64_t uid, struct cl_enc *e);

/* The account cache: an entry per stored account (made at start-up and at
 * link), its owner and its last state for `imfusectl accounts`. */
struct cp_acct_state *cp_state_add(struct cp_core *c, uint64_t uid, uint64_t account, const char *network);
struct cp_acct_state *cp_state_get(struct cp_core *c, uint64_t account);
void cp_state_del(struct cp_core *c, uint64_t account);
/* Forget every account of uid (user deleted). */
void cp_state_del_user(struct cp_core *c, uint64_t uid);

/* cid de-duplication. */
struct cp_cid *cp_cid_find(struct cp_core *c, uint64_t uid, const char *cid, size_t len);
void cp_cid_add(struct cp_core *c, uint64_t uid, const char *cid, size_t len, uint64_t msg,
                uint64_t account, const char *network, const char *address);

/* Sessions (logged-in client connections). */
void cp_session_add(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t uid,
                    const char *user, const char *peer, const char *device);
void cp_session_del(struct cp_core *c, uint32_t conn, uint32_t gen);

/* Control socket (cp_rpc.c). */
struct cp_rpc *cp_rpc_open(struct cp_core *c, const char *path, char *why, size_t whysz);
void cp_rpc_close(struct cp_rpc *r);
/* Fill pollfds for the socket and its connections; returns how many. */
unsigned cp_rpc_pollfds(struct cp_rpc *r, struct pollfd *fds, unsigned max);
/* Handle readiness reported on those pollfds. */
void cp_rpc_handle(struct cp_rpc *r, const struct pollfd *fds, unsigned n);
/* The turn's commit is done: send the replies queued behind it (ok), or
 * answer them with an internal error (!ok). */
void cp_rpc_commit_done(struct cp_rpc *r, bool ok);
/* Whether the daemon has a handler for the command (LOCAL rows have none). */
bool cp_rpc_serves(enum cl_ctl_id id);

/* A control request answered later (reload waits for the dataplane, backup
 * for its thread): who asked. */
struct cp_rpc_who {
    unsigned slot;
    uint32_t gen;
    uint64_t id;
};
/* Begin an ok reply's map with room for extra more keys. */
void cp_rpc_ok_head(struct cl_enc *e, uint64_t id, uint32_t extra);
/* Send a deferred reply (a map begun with cp_rpc_ok_head(), e is consumed), or
 * an error; both leave after the current turn's commit.  A connection gone
 * meanwhile gets nothing. */
void cp_rpc_answer(struct cp_rpc *r, const struct cp_rpc_who *w, struct cl_enc *e);
void cp_rpc_answer_error(struct cp_rpc *r, const struct cp_rpc_who *w, const char *code, const char *msg);

/*
 * Operations (cp_ops.c): work that outlives a request or a loop turn.  Its
 * eventfd joins the loop's poll; cp_ops_turn() runs once per loop turn,
 * before the commit: it finishes a backup, publishes the SNMP snapshot when
 * due or asked for, and checks the alarms (store nearly full, account
 * storm, port down) once a second.
 */
struct cp_ops *cp_ops_new(struct cp_core *c, char *why, size_t whysz);
void cp_ops_free(struct cp_ops *o);
int cp_ops_fd(const struct cp_ops *o);
void cp_ops_turn(struct cp_core *c);
/* backup: copy the store into fd (taken over) on a thread; answered when done. */
void cp_ops_backup(struct cp_core *c, const struct cp_rpc_who *w, int fd, const char *name);

/*
 * Reload (cp_reload.c): read the config file again and apply what can change
 * at run time: log level, open registration, account-storm, the TLS
 * certificate and key and the CA file (read here, swapped on the worker by
 * DPM_TLS_RELOAD).  who is NULL for SIGHUP (the outcome is logged only),
 * else the reply says what changed once the dataplane has answered.
 */
void cp_reload(struct cp_core *c, const struct cp_rpc_who *who);
/* CPM_TLS_RELOADED: the worker's answer. */
void cp_reload_tls_done(struct cp_core *c, struct dp_msg *m);
/* Remember the TLS files as loaded at start-up (what a reload compares with). */
void cp_reload_init(struct cp_core *c);
void cp_reload_free(struct cp_core *c);
/* log-level LEVEL: 0, or -IM_EINVAL for an unknown level; *was gets the old one. */
int cp_set_log_level(struct cp_core *c, const char *level, const char **was);

/* Start the controlplane: load accounts and the outbox into the dataplane. */
int cp_core_start(struct cp_core *c);
/* Run the loop until a signal on sigfd asks to stop; returns 0. */
int cp_core_run(struct cp_core *c, int sigfd);
/* After the dataplane stopped: handle and commit what it sent up last. */
void cp_core_drain(struct cp_core *c);
/* Free the in-memory tables (not the store, channel or pool). */
void cp_core_free(struct cp_core *c);

/*
 * Per-user queue quotas (cp_quota.c): the count and bytes of each user's
 * queued messages, kept in memory, exact across acks, failed commits and
 * restarts; a user at max-queued-per-user or max-queued-bytes-per-user has
 * its IM servers' input paused (DPM_QUEUE_FULL) until acks make room.
 */
struct cp_quota *cp_quota_new(const struct cp_config *cfg);
void cp_quota_free(struct cp_quota *q);
/* Count every stored queue (start-up); tells the dataplane about full ones. */
int cp_quota_load(struct cp_core *c, struct cp_txn *t);
/* This turn changed uid's queue by count messages of bytes (negative: an ack). */
void cp_quota_queue(struct cp_core *c, uint64_t uid, int64_t count, int64_t bytes);
/* The turn's commit ended: apply its changes (ok) or forget them; tell the
 * dataplane about users whose queue became full or has room again. */
void cp_quota_turn_end(struct cp_core *c, bool ok);
/* The user is deleted in this turn: its counts go with the commit. */
void cp_quota_user_del(struct cp_core *c, uint64_t uid);
/* A DPM_ACCOUNT_UP of uid was queued: repeat the pause behind it if full. */
void cp_quota_account_up(struct cp_core *c, uint64_t uid);
/* Users whose queue is full now. */
void cp_quota_stats(const struct cp_core *c, uint64_t *full_users);
/* uid's committed counts; true when its queue is full. */
bool cp_quota_get(const struct cp_core *c, uint64_t uid, uint64_t *count, uint64_t *bytes);

/*
 * IM servers' key derivations (cp_kdf.c): CPM_KDF is answered from a cache
 * of derived keys or by the auth pool, always with one DPM_KDF_DONE.
 */
#define CP_KDF_CACHE_MAX    65536       /* derived keys kept; the least recently used goes */
struct cp_kdf;
struct cp_kdf *cp_kdf_new(void);
void cp_kdf_free(struct cp_kdf *k);
void cp_kdf_request(struct cp_core *c, const struct dp_msg *m);
void cp_kdf_stats(const struct cp_core *c, uint64_t *hits, uint64_t *derived, uint64_t *entries);

/* user name syntax: 1-64 bytes of [a-z0-9._-] */
bool cp_user_name_ok(const char *s, size_t n);

#endif
