/*
 * dp_msg.h - the fixed message struct the two planes exchange over their
 * single-producer/single-consumer rings (defined once, here).
 *
 *   controlplane --- DPM_* (commands) ---> dataplane
 *   controlplane <--- CPM_* (events) ---- dataplane
 *
 * A message may carry one heap payload (data, len): a msgpack map whose
 * fields are listed next to each type.  Ownership of the payload passes with
 * the message: the consumer frees it (dp_msg_release()).
 *
 * Client connections are named by (conn, gen): a slot index in the
 * dataplane's connection table and a generation that changes when the slot is
 * reused, so a late reply for a closed connection is recognised and dropped.
 */
#ifndef DP_MSG_H
#define DP_MSG_H

#include <stdint.h>
#include <stdlib.h>

enum dp_msg_type {
    /* ---- controlplane -> dataplane ---- */
    DPM_CONN_SEND = 1,  /* conn,gen: data = a complete client frame to write */
    DPM_CONN_CLOSE,     /* conn,gen: data (optional) = last frame; then close */
    DPM_LOGIN_OK,       /* conn,gen,uid; a = queued count; data = {user, device, unified:[...]} */
    DPM_LOGOUT,         /* conn,gen: the connection is no longer logged in (kick) */
    DPM_ACCOUNT_UP,     /* uid, account; data = {user, network, login, password, server, tls,
                           tls_name, name, options:{}, contacts:[...], unified:[...]} (create or replace) */
    DPM_ACCOUNT_DOWN,   /* uid, account: unlink (logout politely, forget) */
    DPM_DELIVER,        /* uid, a = seq, account, b = token; conn,gen: 0 = every connection of the
                           user, else replay to that one only; data = stored message map */
    DPM_UNIFIED,        /* uid; data = {unified:[...]} the user's new unified list */
    DPM_OUT_ACCEPTED,   /* uid, account, a = msg, b = request id (conn,gen: who asked, 0 = none);
                           data = {address, body, cid?, network} */
    DPM_USER_DEL,       /* uid: forget the user, close its connections and accounts */
    DPM_SHUTDOWN,       /* close everything politely and stop the loop */
    DPM_DRAIN,          /* stop accepting new clients; existing sessions stay */

    /* ---- dataplane -> controlplane ---- */
    CPM_CLIENT_REQ = 100, /* conn,gen, uid (0 before login); data = the request frame body
                             (msgpack map, already checked to have op and id) */
    CPM_CONN_CLOSED,    /* conn,gen, uid (0 if it never logged in) */
    CPM_CONN_LOGOUT,    /* conn,gen, uid: logged out, connection stays */
    CPM_MSG_IN,         /* uid, account, b = token; data = {account, network, from, resource?, body, ts} */
    CPM_ACCOUNT_STATE,  /* uid, account, a = enum im_account_state; data = {detail} */
    CPM_CONTACTS,       /* uid, account; data = {contacts:[entry...]} the account's full list */
    CPM_OUT_REQ,        /* conn,gen, uid, account, b = request id; data = {address, body, cid?, network} */
    CPM_OUT_DONE,       /* uid, a = msg: left for the network, drop it from the outbox */
};

struct dp_msg {
    uint16_t type;
    uint16_t _pad;
    uint32_t conn;
    uint32_t gen;
    uint32_t len;               /* payload size */
    uint64_t uid;
    uint64_t account;
    uint64_t a;
    uint64_t b;
    void *data;                 /* malloc'd payload or NULL */
};

static inline void
dp_msg_release(struct dp_msg *m)
{
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

#endif
