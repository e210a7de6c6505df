/*
 * dp_client.c - client sessions on the dataplane: frames in, the op
 * table's dataplane ops answered, the controlplane's ops forwarded, replies
 * and events out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_chan.h"
#include "dp_relay_int.h"

/* ------------------------------------------------------------------------ */
/* writing to clients                                                        */

void
dp_client_write(struct dp_client *cl, const uint8_t *p, size_t n)
{
    if (cl->closing)
        return;
    int rc = dp_conn_write(cl->c, p, n);
    if (rc < 0) {
        /* The client does not read: drop the connection.  Nothing is lost,
         * unacknowledged messages are replayed at its next login. */
        DP_LOG(IM_LOG_WARN, "client %s: write backlog over limit, closing", dp_conn_peer(cl->c));
        STAT_ADD(cl->r, clients_dropped, 1);
        cl->closing = true;
        dp_conn_abort(cl->c, rc);
    }
}

void
dp_client_send(struct dp_client *cl, struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (f)
        dp_client_write(cl, f, len);
    else
        dp_relay_oom(cl->r, "reply frame");
    cl_enc_free(e);
}

void
dp_client_error(struct dp_client *cl, bool has_id, uint64_t id, const char *code, const char *msg)
{
    uint8_t *f;
    size_t len;
    if (cl_build_error(has_id, id, code, msg, &f, &len) == 0) {
        dp_client_write(cl, f, len);
        free(f);
    } else {
        dp_relay_oom(cl->r, "error frame");
    }
}

void
dp_client_ok(struct dp_client *cl, uint64_t id)
{
    uint8_t *f;
    size_t len;
    if (cl_build_ok(id, &f, &len) == 0) {
        dp_client_write(cl, f, len);
        free(f);
    } else {
        dp_relay_oom(cl->r, "reply frame");
    }
}

void
dp_user_broadcast(struct dp_relay *r, struct dp_user *u, struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (f) {
        for (struct dp_client *cl = u->clients; cl; cl = cl->unext) {
            dp_client_write(cl, f, len);
            STAT_ADD(r, events_out, 1);
        }
    } else {
        dp_relay_oom(r, "event frame");
    }
    cl_enc_free(e);
}

void
dp_client_close(struct dp_client *cl)
{
    if (!cl->closing) {
        cl->closing = true;
        dp_conn_close(cl->c);
    }
}

void
dp_client_pause(struct dp_client *cl, bool paused)
{
    if (cl->paused == paused)
        return;
    cl->paused = paused;
    dp_conn_pause(cl->c, paused);
}

/* Leave the user's list of logged-in clients. */
static void
client_unlogin(struct dp_client *cl)
{
    struct dp_user *u = cl->user;
    struct dp_client **pp = &u->clients;
    while (*pp != cl)
        pp = &(*pp)->unext;
    *pp = cl->unext;
    cl->user = NULL;
    cl->unext = NULL;
}

/* ------------------------------------------------------------------------ */
/* the dataplane's ops (cl_ops.c rows with CL_PLANE_DATA)                    */

/* Start {op: "ok", id, key: ...}; the caller packs key's value. */
static void
ok_head(struct cl_enc *e, uint64_t id, const char *key)
{
    cl_enc_init(e);
    msgpack_pack_map(&e->pk, 3);
    cl_pack_kstr(e, "op", "ok");
    cl_pack_kuint(e, "id", id);
    cl_pack_key(e, key);
}

static void
op_ping(struct dp_client *cl, const struct cl_msg *req)
{
    dp_client_ok(cl, req->id);
}

static void
op_logout(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_relay *r = cl->r;
    struct dp_user *u = cl->user;
    client_unlogin(cl);
    struct dp_msg m = { .type = CPM_CONN_LOGOUT, .conn = cl->slot, .gen = cl->gen, .uid = u->uid };
    dp_up(r, &m, NULL);
    dp_user_maybe_free(r, u);
    dp_client_ok(cl, req->id);
}

static void
op_accounts(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_user *u = cl->user;
    uint32_t n = 0;
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        n++;
    struct cl_enc e;
    ok_head(&e, req->id, "accounts");
    msgpack_pack_array(&e.pk, n);
    for (struct dp_account *a = u->accounts; a; a = a->unext) {
        msgpack_pack_map(&e.pk, a->detail[0] ? 8 : 7);
        cl_pack_kuint(&e, "account", a->id);
        cl_pack_kstr(&e, "network", a->network);
        cl_pack_kstr(&e, "login", a->login);
        cl_pack_kstr(&e, "server", a->server);
        cl_pack_kstr(&e, "tls", a->tls_s);
        cl_pack_kstr(&e, "name", a->name);
        cl_pack_kstr(&e, "state", im_account_state_name(a->state));
        if (a->detail[0])
            cl_pack_kstr(&e, "detail", a->detail);
    }
    dp_client_send(cl, &e);
}

static void
op_contacts(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_user *u = cl->user;
    uint32_t n = 0;
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        n += a->n_contacts;
    struct cl_enc e;
    ok_head(&e, req->id, "contacts");
    msgpack_pack_array(&e.pk, n);
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        for (uint32_t i = 0; i < a->n_contacts; i++)
            dp_pack_contact(&e, a, &a->contacts[i]);
    dp_client_send(cl, &e);
}

static void
op_unified(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_user *u = cl->user;
    struct cl_enc e;
    ok_head(&e, req->id, "contacts");
    if (u->unified_raw)
        cl_enc_raw(&e, u->unified_raw, u->unified_raw_len);
    else
        msgpack_pack_array(&e.pk, 0);
    dp_client_send(cl, &e);
}

static void op_add_contact(struct dp_client *cl, const struct cl_msg *req) { dp_op_contact(cl, req, true); }
static void op_remove_contact(struct dp_client *cl, const struct cl_msg *req) { dp_op_contact(cl, req, false); }

typedef void dp_op_fn(struct dp_client *cl, const struct cl_msg *req);

static dp_op_fn *const dp_op_handlers[CL_OP__COUNT] = {
    [CL_OP_PING] = op_ping,
    [CL_OP_LOGOUT] = op_logout,
    [CL_OP_ACCOUNTS] = op_accounts,
    [CL_OP_CONTACTS] = op_contacts,
    [CL_OP_ADD_CONTACT] = op_add_contact,
    [CL_OP_REMOVE_CONTACT] = op_remove_contact,
    [CL_OP_UNIFIED] = op_unified,
    [CL_OP_SEND] = dp_op_send,
};

bool
dp_client_serves(enum cl_op_id op)
{
    return op > CL_OP_NONE && op < CL_OP__COUNT && dp_op_handlers[op] != NULL;
}

/* A controlplane op: hand over the request as it came, with the peer address. */
static void
forward(struct dp_client *cl, const struct cl_op *op, uint64_t id, const uint8_t *body, uint32_t len)
{
    struct dp_relay *r = cl->r;
    const char *peer = dp_conn_peer(cl->c);
    size_t pl = strlen(peer);
    struct dp_msg m = { .type = CPM_CLIENT_REQ, .conn = cl->slot, .gen = cl->gen,
                        .uid = cl->user ? cl->user->uid : 0 };
    m.u.client_req.op = op->id;
    m.u.client_req.len = len;
    uint8_t *d = dp_msg_alloc(&m, (size_t)len + pl + 1);
    if (!d) {
        dp_relay_oom(r, "request to the controlplane");
        dp_client_error(cl, true, id, CL_ERR_INTERNAL, "out of memory, try again");
        return;
    }
    memcpy(d, body, len);
    memcpy(d + len, peer, pl + 1);
    dp_chan_send_up(r->ch, &m);
    if (op->one_at_a_time)
        cl->auth_busy = true;           /* until its answer comes down */
}

/* One decoded frame from a client; returns its op's row (NULL: unknown). */
static const struct cl_op *
client_request(struct dp_client *cl, const struct cl_msg *req, const uint8_t *body, uint32_t len)
{
    const struct cl_op *op = cl_op_find(req->op);

    if (!op) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown op \"%.*s\"", (int)(req->op.len > 64 ? 64 : req->op.len),
                 req->op.p);
        dp_client_error(cl, true, req->id, CL_ERR_UNSUPPORTED, msg);
        return NULL;
    }
    if (op->login == CL_LOGIN_FORBIDDEN && cl->user) {
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, "already logged in");
        return op;
    }
    if (op->login == CL_LOGIN_REQUIRED && !cl->user) {
        dp_client_error(cl, true, req->id, CL_ERR_NOT_LOGGED_IN, "log in first");
        return op;
    }
    if (op->one_at_a_time && cl->auth_busy) {
        STAT_ADD(cl->r, limit_auth_busy, 1);
        dp_client_error(cl, true, req->id, CL_ERR_LIMIT,
                        "a login or register is in progress on this connection: one at a time");
        return op;
    }
    if (op->plane == CL_PLANE_DATA)
        dp_op_handlers[op->id](cl, req);
    else
        forward(cl, op, req->id, body, len);
    return op;
}

/* ------------------------------------------------------------------------ */
/* reading                                                                   */

/* Decode every complete frame in the receive buffer. */
static void
client_process(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    size_t off = 0;
    bool secret = false;                /* a frame with a password was consumed */

    while (!cl->closing) {
        const uint8_t *body;
        uint32_t blen;
        long n = cl_frame_split(cl->rx + off, cl->rx_len - off, &body, &blen);
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            STAT_ADD(r, frames_bad, 1);
            dp_client_error(cl, false, 0, CL_ERR_BAD_REQUEST, "frame length out of range (1 byte to 1 MiB)");
            dp_client_close(cl);
            return;
        }
        STAT_ADD(r, frames_in, 1);
        struct cl_msg req;
        int rc = cl_msg_decode(&req, body, blen);
        if (rc == -ENOMEM) {
            dp_relay_oom(r, "request decoding");
            dp_client_error(cl, false, 0, CL_ERR_INTERNAL, "out of memory");
            dp_client_close(cl);
            return;
        }
        if (rc < 0) {
            STAT_ADD(r, frames_bad, 1);
            dp_client_error(cl, false, 0, CL_ERR_BAD_REQUEST, "frame is not one msgpack map with string keys");
            dp_client_close(cl);
            return;
        }
        if (req.op.len == 0 || !req.has_id) {
            STAT_ADD(r, frames_bad, 1);
            dp_client_error(cl, false, 0, CL_ERR_BAD_REQUEST,
                            req.op.len == 0 ? "op is missing or not a string" : "id is missing or not an unsigned integer");
            cl_msg_free(&req);
            dp_client_close(cl);
            return;
        }
        const struct cl_op *op = client_request(cl, &req, body, blen);
        if (op && op->secret)
            secret = true;              /* cl_msg_free() wipes the decoded copy */
        cl_msg_free(&req);
        off += (size_t)n;
    }
    if (off) {
        memmove(cl->rx, cl->rx + off, cl->rx_len - off);
        cl->rx_len -= off;
        if (secret)
            im_wipe(cl->rx + cl->rx_len, off);  /* what the move left behind */
    }
}

static void
cl_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct dp_client *cl = dp_conn_ud(c);
    if (cl->closing)
        return;
    if (cl->rx_len + n > cl->rx_cap) {
        size_t cap = cl->rx_cap ? cl->rx_cap : 4096;
        while (cap < cl->rx_len + n)
            cap *= 2;
        if (cap > DP_RX_MAX + 65536)
            cap = DP_RX_MAX + 65536;
        if (cl->rx_len + n > cap) {
            /* cannot happen with a valid length prefix: split rejects it first */
            dp_client_error(cl, false, 0, CL_ERR_BAD_REQUEST, "frame too large");
            dp_client_close(cl);
            return;
        }
        /* not realloc: the old buffer may hold part of a password */
        uint8_t *nb = malloc(cap);
        if (!nb) {
            dp_relay_oom(cl->r, "client receive buffer");
            dp_client_error(cl, false, 0, CL_ERR_INTERNAL, "out of memory");
            dp_client_close(cl);
            return;
        }
        if (cl->rx_len)
            memcpy(nb, cl->rx, cl->rx_len);
        if (cl->rx) {
            im_wipe(cl->rx, cl->rx_len);
            free(cl->rx);
        }
        cl->rx = nb;
        cl->rx_cap = cap;
    }
    memcpy(cl->rx + cl->rx_len, p, n);
    cl->rx_len += n;
    client_process(cl);
}

static void
client_free(struct dp_client *cl)
{
    if (cl->rx)
        im_wipe(cl->rx, cl->rx_len);    /* a frame cut short may hold a password */
    free(cl->rx);
    free(cl);
}

static void
cl_on_close(struct dp_conn *c, int reason)
{
    struct dp_client *cl = dp_conn_ud(c);
    struct dp_relay *r = cl->r;
    uint64_t uid = 0;

    if (cl->user) {
        struct dp_user *u = cl->user;
        uid = u->uid;
        client_unlogin(cl);
        dp_user_maybe_free(r, u);
    }
    struct dp_msg m = { .type = CPM_CONN_CLOSED, .conn = cl->slot, .gen = cl->gen, .uid = uid };
    dp_up(r, &m, NULL);
    r->slots[cl->slot] = NULL;
    r->gens[cl->slot]++;
    r->free_slots[r->n_free++] = cl->slot;
    STAT_SUB(r, clients_open, 1);
    client_free(cl);
}

static const struct dp_conn_cb client_cb = {
    .on_data = cl_on_data,
    .on_close = cl_on_close,
};

/* Grow the slot table; false on ENOMEM.  Slot 0 is never handed out. */
static bool
slots_grow(struct dp_relay *r)
{
    uint32_t n = r->n_slots ? r->n_slots * 2 : 1024;
    struct dp_client **ns = realloc(r->slots, n * sizeof(*ns));
    if (ns)
        r->slots = ns;
    uint32_t *ng = realloc(r->gens, n * sizeof(*ng));
    if (ng)
        r->gens = ng;
    uint32_t *nf = realloc(r->free_slots, n * sizeof(*nf));
    if (nf)
        r->free_slots = nf;
    if (!ns || !ng || !nf)
        return false;
    for (uint32_t i = n; i > r->n_slots; i--) {
        r->slots[i - 1] = NULL;
        r->gens[i - 1] = 1;
        if (i - 1 > 0)
            r->free_slots[r->n_free++] = i - 1;
    }
    r->n_slots = n;
    return true;
}

void
dp_client_accept(void *ud, struct dp_conn *c)
{
    struct dp_relay *r = ud;
    struct dp_client *cl = calloc(1, sizeof(*cl));
    if (!cl || (!r->n_free && !slots_grow(r))) {
        free(cl);
        dp_relay_oom(r, "client session");
        dp_conn_set_cb(c, &dp_orphan_cb, NULL);
        dp_conn_abort(c, -ENOMEM);
        return;
    }
    cl->r = r;
    cl->c = c;
    cl->slot = r->free_slots[--r->n_free];
    cl->gen = r->gens[cl->slot];
    r->slots[cl->slot] = cl;
    STAT_ADD(r, clients_accepted, 1);
    STAT_ADD(r, clients_open, 1);
    dp_conn_set_cb(c, &client_cb, cl);
}

struct dp_client *
dp_client_by_id(struct dp_relay *r, uint32_t slot, uint32_t gen)
{
    if (slot == 0 || slot >= r->n_slots)
        return NULL;
    struct dp_client *cl = r->slots[slot];
    return cl && cl->gen == gen ? cl : NULL;
}

void
dp_clients_free(struct dp_relay *r)
{
    for (uint32_t i = 1; i < r->n_slots; i++) {
        struct dp_client *cl = r->slots[i];
        if (!cl)
            continue;
        if (cl->user)
            client_unlogin(cl);
        dp_conn_set_cb(cl->c, &dp_orphan_cb, NULL);
        r->slots[i] = NULL;
        client_free(cl);
    }
}

/* ------------------------------------------------------------------------ */
/* commands from the controlplane                                            */

void
dp_client_frame_down(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
    if (!cl)
        return;
    if (!cl->user)
        cl->auth_busy = false;          /* before login, the answer to the login or register */
    if (m->len)
        dp_client_write(cl, dp_msg_bytes(m), m->len);
    if (m->type == DPM_CONN_CLOSE)
        dp_client_close(cl);
}

void
dp_client_login_ok(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
    struct cl_msg pm;
    struct im_str user;
    const msgpack_object *unified = NULL;
    const char *why;

    if (cl)
        cl->auth_busy = false;
    if (!cl || cl->user)
        return;
    if (dp_msg_decode(m, &pm) < 0) {
        dp_client_error(cl, true, m->u.login_ok.req, CL_ERR_INTERNAL, "malformed login from the controlplane");
        return;
    }
    if (cl_get_str(&pm.root, "user", 1, 64, &user, &why)) {
        cl_msg_free(&pm);
        dp_client_error(cl, true, m->u.login_ok.req, CL_ERR_INTERNAL, "malformed login from the controlplane");
        return;
    }
    char name[65];
    snprintf(name, sizeof(name), "%.*s", (int)user.len, user.p);
    struct dp_user *u = dp_user_get(r, m->uid, name);
    if (!u) {
        cl_msg_free(&pm);
        dp_client_error(cl, true, m->u.login_ok.req, CL_ERR_INTERNAL, "out of memory, try again");
        return;
    }
    if (cl_get_array(&pm.root, "unified", &unified, &why) == 0 && !u->unified_raw)
        dp_unified_set(r, u, unified);
    cl_msg_free(&pm);

    cl->user = u;
    cl->unext = u->clients;
    u->clients = cl;
    STAT_ADD(r, logins_ok, 1);

    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", m->u.login_ok.req);
    cl_pack_kstr(&e, "user", name);
    cl_pack_kuint(&e, "queued", m->u.login_ok.queued);
    dp_client_send(cl, &e);
}

void
dp_client_deliver(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_user *u = dp_user_find(r, m->uid);
    struct dp_account *a = dp_account_find(r, m->account);

    /* The message is durable now: let the network have its acknowledgement. */
    if (m->u.deliver.token && a && a->sess && a->ops->committed)
        a->ops->committed(a->sess, m->u.deliver.token);
    if (!u || !m->len)
        return;

    struct cl_msg pm;
    if (dp_msg_decode(m, &pm) < 0)
        return;
    struct im_str from;
    const char *why;
    uint64_t account = 0, contact = 0;
    if (cl_get_str(&pm.root, "from", 1, 4096, &from, &why) == 0 &&
        cl_get_uint(&pm.root, "account", &account, &why) == 0) {
        char f[DP_ADDR_MAX];
        snprintf(f, sizeof(f), "%.*s", (int)from.len, from.p);
        contact = dp_unified_of(u, account, f);
    }
    struct cl_enc e;
    cl_enc_init(&e);
    uint32_t n = pm.root.via.map.size;
    msgpack_pack_map(&e.pk, n + 2 + (contact ? 1 : 0));
    cl_pack_kstr(&e, "op", "message");
    cl_pack_kuint(&e, "seq", m->u.deliver.seq);
    if (contact)
        cl_pack_kuint(&e, "contact", contact);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_object(&e.pk, pm.root.via.map.ptr[i].key);
        msgpack_pack_object(&e.pk, pm.root.via.map.ptr[i].val);
    }
    cl_msg_free(&pm);

    if (m->conn) {
        struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
        if (cl && cl->user == u) {
            dp_client_send(cl, &e);
            STAT_ADD(r, msgs_delivered, 1);
        } else {
            cl_enc_free(&e);
        }
    } else {
        for (struct dp_client *cl = u->clients; cl; cl = cl->unext)
            STAT_ADD(r, msgs_delivered, 1);
        dp_user_broadcast(r, u, &e);
    }
}
