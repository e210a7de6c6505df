/*
 * dp_msg.h - the fixed message struct the two planes exchange over their
 * single-producer/single-consumer rings (defined once, here).
 *
 *   controlplane --- DPM_* (commands) ---> dataplane
 *   controlplane <--- CPM_* (events) ---- dataplane
 *
 * Every message names what it is about in the common header (a client
 * connection, a user, an account) and carries its own scalars in the union
 * member named after its type (m.u.deliver.seq, m.u.out_req.req...), never
 * in a field that means something else for another type.
 *
 * Payload.  A message may carry one heap payload (data, len).  Its layout is
 * given per type below; there are three kinds:
 *   FRAME   a client-protocol frame: 4-byte big-endian length L, then one
 *           msgpack map of L bytes (the same bytes the store keeps).  Read it
 *           with dp_msg_decode(), which checks the length, never by hand.
 *   WIRE    a complete frame to write to a client as it is (DPM_CONN_*).
 *   REQ     CPM_CLIENT_REQ only: the request's msgpack map (u.client_req.len
 *           bytes, no length prefix), then the client's peer address
 *           ("ip:port", NUL-terminated).  Read it with dp_msg_client_req().
 *   IDS     CPM_OUT_DONE only: len / 8 message ids (uint64_t, host order; the
 *           planes are one process).
 * Ownership of the payload passes with the message: whoever takes a message
 * from a ring releases it with dp_msg_release(), and a copy that takes over a
 * message is made with dp_msg_move().  Payloads are made only by
 * dp_msg_alloc() / dp_msg_set_frame() / dp_msg_copy() and read only through
 * dp_msg_bytes(): one of up to DP_MSG_INLINE bytes travels inside the message
 * itself (the ring slot), so the hot path's messages allocate nothing and no
 * thread frees memory another thread allocated; a larger one is on the heap.
 * Released payloads are wiped (a login or a linked account carries a
 * password), and so are the ring slots they crossed (dp_chan.c).
 *
 * Client connections are named by (conn, gen): a slot index in the
 * dataplane's connection table and a generation that changes when the slot is
 * reused, so a late reply for a closed connection is recognised and dropped.
 * conn 0 never names a connection (slots start at 1).
 */
#ifndef DP_MSG_H
#define DP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "im_common.h"

struct cl_msg;
struct cl_enc;

/* Payload bytes a message carries inside itself (sizeof(struct dp_msg) is 256). */
#define DP_MSG_INLINE   200

enum dp_msg_type {
    /* ---- controlplane -> dataplane ------------------------------------- */
    /* conn,gen.  WIRE: a complete client frame to write. */
    DPM_CONN_SEND = 1,
    /* conn,gen.  WIRE (optional): a last frame; then close the connection. */
    DPM_CONN_CLOSE,
    /* conn,gen, uid; u.login_ok.  FRAME {user, device, unified:[...]}: the
     * connection is logged in; the dataplane answers the login request. */
    DPM_LOGIN_OK,
    /* conn,gen: the connection is no longer logged in (kick): close it. */
    DPM_LOGOUT,
    /* uid, account.  FRAME {user, network, login, password, server, tls,
     * tls_name, name, options:{}, unified:[...], contacts:[...]?}: create
     * the account, or replace its configuration and reconnect. */
    DPM_ACCOUNT_UP,
    /* uid, account: unlink (log out politely, forget). */
    DPM_ACCOUNT_DOWN,
    /* uid, account, conn,gen (0: every connection of the user whose replay
     * is done, else a replayed message for that one only); u.deliver.  FRAME (optional) = the stored message
     * {account, network, from, resource?, body, ts}: it is durable now. */
    DPM_DELIVER,
    /* uid.  FRAME {unified:[...]}: the user's new unified list. */
    DPM_UNIFIED,
    /* uid, account; u.out_accepted.  FRAME = the stored outbox record
     * {account, network, address, body, ts, cid?}: queue it for sending. */
    DPM_OUT_ACCEPTED,
    /* uid: forget the user, close its connections and accounts. */
    DPM_USER_DEL,
    /* Close everything politely and stop the loop. */
    DPM_SHUTDOWN,
    /* Stop accepting new clients; existing sessions stay. */
    DPM_DRAIN,
    /* uid, account; u.resolve.  FRAME {addrs:[ip...]} or {error}: the
     * answer to a CPM_RESOLVE with the same seq. */
    DPM_RESOLVED,
    /* conn,gen, uid; u.replay_end.  No payload.  Ends one batch of the
     * paced replay of the user's queue to one connection (the DPM_DELIVERs
     * addressed to it just before).  more = 1: ask for the next batch
     * (CPM_REPLAY_NEXT after last) once the connection drained; more = 0:
     * every message committed before this one was replayed, and live
     * deliveries (with higher seqs) follow in the ring. */
    DPM_REPLAY_END,

    /* ---- dataplane -> controlplane ------------------------------------- */
    /* conn,gen, uid (0 before login); u.client_req.  REQ. */
    CPM_CLIENT_REQ = 100,
    /* conn,gen, uid (0 if it never logged in): the connection is gone. */
    CPM_CONN_CLOSED,
    /* conn,gen, uid: logged out, the connection stays. */
    CPM_CONN_LOGOUT,
    /* uid, account; u.msg_in.  FRAME {account, network, from, resource?, body, ts}. */
    CPM_MSG_IN,
    /* uid, account; u.state.  FRAME {detail}. */
    CPM_ACCOUNT_STATE,
    /* uid, account.  FRAME {contacts:[entry...]}: the account's full list. */
    CPM_CONTACTS,
    /* conn,gen, uid, account; u.out_req.  FRAME {address, body, network, cid?}. */
    CPM_OUT_REQ,
    /* IDS: these messages left for the network (a loop turn's worth). */
    CPM_OUT_DONE,
    /* uid, account; u.resolve.  FRAME {host}: resolve the account's server
     * name (the dataplane connects to IP literals only). */
    CPM_RESOLVE,
    /* conn,gen, uid; u.replay_next.  No payload.  The next batch of the
     * user's queue for this connection: the messages with seq > after, as
     * DPM_DELIVERs addressed to it, then DPM_REPLAY_END. */
    CPM_REPLAY_NEXT,
};

struct dp_msg {
    uint16_t type;              /* enum dp_msg_type */
    uint16_t _pad;
    uint32_t len;               /* payload bytes */
    uint32_t conn, gen;         /* a client connection, or 0 */
    uint64_t uid;               /* a user, or 0 */
    uint64_t account;           /* an account, or 0 */
    union {
        struct {
            uint64_t req;       /* the login request's id */
            uint64_t queued;    /* unacknowledged messages replayed after the ok */
        } login_ok;
        struct {
            uint64_t seq;       /* the message's seq for the user (0: none, token only) */
            uint64_t token;     /* the adapter's withheld acknowledgement, or 0 */
        } deliver;
        struct {
            uint64_t msg;       /* the appliance's message id */
        } out_accepted;
        struct {
            uint32_t op;        /* enum cl_op_id of the request (protocols/client/cl_ops.h) */
            uint32_t len;       /* bytes of the msgpack map at the start of the payload */
        } client_req;
        struct {
            uint64_t token;     /* the adapter's token, passed back in DPM_DELIVER */
        } msg_in;
        struct {
            uint32_t state;     /* enum im_account_state */
        } state;
        struct {
            uint64_t req;       /* the send request's id (the client's reply names it) */
        } out_req;
        struct {
            uint64_t seq;       /* the account's request number: a stale answer is dropped */
        } resolve;
        struct {
            uint64_t last;      /* the highest seq replayed so far (this batch's last) */
            uint32_t more;      /* 1: more is queued, ask again; 0: caught up */
        } replay_end;
        struct {
            uint64_t after;     /* the highest seq the connection got */
        } replay_next;
    } u;
    void *data;                 /* a heap payload, or NULL (inline or none) */
    uint8_t inl[DP_MSG_INLINE]; /* an inline payload of len bytes when data is NULL */
};

/* Largest payload a plane message may carry. */
#define DP_MSG_MAX      (4u + (1u << 20) + 64u)

/* The payload's bytes (len of them), or NULL when there is none. */
static inline const uint8_t *
dp_msg_bytes(const struct dp_msg *m)
{
    return m->data ? (const uint8_t *)m->data : m->len ? m->inl : NULL;
}

/* Copy src into dst, which takes its payload over; src is left empty (and
 * its inline bytes wiped). */
void dp_msg_move(struct dp_msg *dst, struct dp_msg *src);
/* m's payload now belongs to a copy made by value (a ring slot): empty m
 * without freeing, wiping its inline bytes. */
void dp_msg_forget(struct dp_msg *m);

/* Give m a payload of n bytes (contents undefined).  Returns it, or NULL
 * (-ENOMEM or n > DP_MSG_MAX; m unchanged). */
void *dp_msg_alloc(struct dp_msg *m, size_t n);
/* Give m a copy of [p, p+n) as its payload.  0, -ENOMEM or -IM_ETOOBIG. */
int dp_msg_copy(struct dp_msg *m, const void *p, size_t n);
/* Finish e (a FRAME) and make it m's payload; e is released either way.
 * 0, or -IM_ETOOBIG when the frame is over the protocol's limit. */
int dp_msg_set_frame(struct dp_msg *m, struct cl_enc *e);
/* Free the payload (NULL is fine) and zero data and len. */
void dp_msg_release(struct dp_msg *m);

/* Decode a FRAME payload.  0 (the caller then owns *out: cl_msg_free()),
 * -IM_EINVAL when there is none or it does not decode, -ENOMEM. */
int dp_msg_decode(const struct dp_msg *m, struct cl_msg *out);
/* Whether m carries a well-formed FRAME payload (length checked, not decoded). */
bool dp_msg_has_frame(const struct dp_msg *m);
/* The parts of a REQ payload (views into m->data).  0, or -IM_EINVAL when
 * the layout is broken. */
int dp_msg_client_req(const struct dp_msg *m, const uint8_t **body, uint32_t *len,
                      const char **peer);

#endif
