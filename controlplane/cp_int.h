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
    char detail[256];
};

struct cp_cid {
    struct cp_cid *hnext, *fnext, *fprev;   /* hash chain, FIFO for eviction */
    bool pending;                   /* added this turn: forgotten if the commit fails */
    uint64_t uid, msg, account;
    char network[16];
    char *address;
    char cid[CL_CID_MAX + 1];
};

#define CP_CID_BUCKETS 16384
#define CP_CID_MAX     200000
#define CP_STATE_BUCKETS 4096

struct cp_core {
    struct cp_config *cfg;
    struct cp_store *store;
    struct cp_key key;
    struct dp_chan *ch;
    struct dp_relay *relay;          /* for counters only (read-only) */
    struct cp_auth *auth;
    struct cp_resolver *resolver;
    struct cp_rpc *rpc;
    struct cp_ratelim *rl_user, *rl_addr;

    struct cp_txn *txn;              /* the write transaction of this loop turn */
    struct cp_after *after, *after_tail;
    struct cp_after *after_free;        /* reusable items */
    unsigned n_after_free;
    struct dp_msg *retry;            /* messages to process again (failed commit) */
    unsigned n_retry, cap_retry;
    uint64_t retry_at;

    struct cp_session *sessions;
    struct cp_acct_state *states[CP_STATE_BUCKETS];
    struct cp_cid *cids[CP_CID_BUCKETS];
    struct cp_cid *cid_head, *cid_tail;
    unsigned n_cids;

    bool stopping;
    uint64_t next_msg, next_msg_saved;  /* outbound message ids: next, and as stored in meta */
    uint64_t *done;                     /* sent messages whose outbox entries go with a commit */
    size_t n_done, cap_done, n_done_applied;
    uint64_t done_since;                /* mono ms of the oldest pending delete */
    uint64_t commits, commit_failures, msgs_committed, outbox_added, outbox_deleted;
    uint64_t plane_oversize;            /* plane messages sent smaller or refused: over the frame limit */
    uint32_t turn_msgs, turn_outbox;    /* counted into the two above if the turn commits */
    struct cp_cid **turn_cids;          /* cids added this turn */
    unsigned n_turn_cids, cap_turn_cids;
};

/*
 * Out of memory on the controlplane: log it and abort.  The controlplane
 * cannot keep its ordering promises without memory; everything it has
 * acknowledged is in the store, so a restart (systemd) loses nothing.
 */
void cp_oom(const char *where) __attribute__((noreturn));

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
struct cp_acct_state *cp_state_add(struct cp_core *c, uint64_t uid, uint64_t account);
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

/* Start the controlplane: load accounts and the outbox into the dataplane. */
int cp_core_start(struct cp_core *c);
/* Run the loop until a signal on sigfd asks to stop; returns 0. */
int cp_core_run(struct cp_core *c, int sigfd);
/* After the dataplane stopped: handle and commit what it sent up last. */
void cp_core_drain(struct cp_core *c);
/* Free the in-memory tables (not the store, channel or pool). */
void cp_core_free(struct cp_core *c);

/* user name syntax: 1-64 bytes of [a-z0-9._-] */
bool cp_user_name_ok(const char *s, size_t n);

#endif
