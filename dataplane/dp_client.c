/*
 * dp_client.c - client sessions on the dataplane: frames in, the op
 * table's dataplane ops answered, the controlplane's ops forwarded, replies
 * and events out.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_chan.h"
#include "dp_worker.h"
#include "dp_relay_int.h"

/* ------------------------------------------------------------------------ */
/* writing to clients                                                        */

/* Read the client unless its send queue is full or its output is backed up. */
static void
client_update_read(struct dp_client *cl)
{
    dp_conn_pause(cl->c, cl->paused || cl->out_full);
}

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
    } else if (rc == 1 && !cl->out_full) {
        /* Its own output backed up: read nothing more until it drains. */
        cl->out_full = true;
        STAT_ADD(cl->r, clients_read_paused, 1);
        client_update_read(cl);
    }
}

int
dp_client_send(struct dp_client *cl, struct cl_enc *e)
{
    size_t len;
    int rc = 0;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (f)
        dp_client_write(cl, f, len);
    else if (e->too_big)
        rc = -IM_ETOOBIG;
    else
        rc = -ENOMEM;
    cl_enc_free(e);
    return rc;
}

void
dp_client_reply(struct dp_client *cl, uint64_t id, struct cl_enc *e)
{
    int rc = dp_client_send(cl, e);
    if (rc == -IM_ETOOBIG) {
        STAT_ADD(cl->r, replies_limit, 1);
        dp_client_error(cl, true, id, CL_ERR_LIMIT, "the reply would pass the 1 MiB frame limit");
    } else if (rc < 0) {
        dp_relay_oom(cl->r, "reply frame");
        dp_client_error(cl, true, id, CL_ERR_INTERNAL, "out of memory, try again");
    }
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
    } else if (e->too_big) {
        STAT_ADD(r, events_too_big, 1);
        DP_LOG(IM_LOG_ERROR, "an event for user %s is over the 1 MiB frame limit: not sent", u->name);
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
        cl->close_by = dp_worker_now(cl->r->w) + DP_CLOSE_GRACE_MS;
        dp_conn_close(cl->c);
    }
}

/* The receive buffer goes (closing, or emptied after a large frame). */
static void
client_rx_free(struct dp_client *cl)
{
    free(cl->rx);
    cl->rx = NULL;
    cl->rx_len = cl->rx_cap = 0;
    dp_admit_rx_set(cl, 0);
}

void
dp_client_limit_close(struct dp_client *cl, const char *why)
{
    if (cl->closing)
        return;
    dp_client_error(cl, false, 0, CL_ERR_LIMIT, why);
    dp_client_close(cl);
    client_rx_free(cl);
}

void
dp_client_pause(struct dp_client *cl, bool paused)
{
    if (cl->paused == paused)
        return;
    cl->paused = paused;
    client_update_read(cl);
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
    cl->replaying = cl->replay_wait = false;
    dp_admit_logout(cl);
    struct dp_msg m = { .type = CPM_CONN_LOGOUT, .conn = cl->slot, .gen = cl->gen, .uid = u->uid };
    dp_up(r, &m, NULL);
    dp_user_maybe_free(r, u);
    dp_client_ok(cl, req->id);
}

/*
 * A list reply (accounts, contacts): whole, or a page when the request has
 * offset or max, and never past the frame limit.  Entries are packed into
 * body one by one; the one that would pass DP_LIST_BUDGET is cut off again.
 */
#define DP_LIST_BUDGET  (CL_FRAME_MAX - 256)    /* room for the reply around the list */

struct page {
    bool paged;                 /* offset or max given: reply with total, cut to fit */
    uint64_t offset, max;
    uint64_t idx;               /* entries walked */
    uint64_t n;                 /* entries packed */
    bool stop, cut;             /* no more wanted; the last one did not fit */
    size_t mark;                /* body length before the entry being packed */
    struct cl_enc body;
};

/* Read offset and max; false when the request was answered (bad_request). */
static bool
page_start(struct dp_client *cl, const struct cl_msg *req, struct page *pg)
{
    const char *why;
    char msg[96];
    memset(pg, 0, sizeof(*pg));
    pg->max = UINT64_MAX;
    int ro = cl_get_uint(&req->root, "offset", &pg->offset, &why);
    int rm = ro == -IM_EINVAL ? 0 : cl_get_uint(&req->root, "max", &pg->max, &why);
    if (ro == -IM_EINVAL || rm == -IM_EINVAL) {
        snprintf(msg, sizeof(msg), "%s: %s", ro == -IM_EINVAL ? "offset" : "max", why);
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return false;
    }
    pg->paged = ro == 0 || rm == 0;
    cl_enc_init(&pg->body);
    return true;
}

/* Whether to pack the next entry. */
static bool
page_take(struct page *pg)
{
    if (pg->stop || pg->idx++ < pg->offset)
        return false;
    if (pg->n >= pg->max) {
        pg->stop = true;
        return false;
    }
    pg->mark = cl_enc_len(&pg->body);
    return true;
}

/* After packing an entry: keep it, or cut it off when it does not fit. */
static void
page_packed(struct page *pg)
{
    if (pg->body.too_big || cl_enc_len(&pg->body) > DP_LIST_BUDGET) {
        cl_enc_cut(&pg->body, pg->mark);
        pg->stop = pg->cut = true;
    } else {
        pg->n++;
    }
}

static void
page_reply(struct dp_client *cl, uint64_t id, struct page *pg, const char *key, uint64_t total,
           const char *what)
{
    char msg[200];
    if (pg->body.failed) {
        cl_enc_free(&pg->body);
        dp_relay_oom(cl->r, "list reply");
        dp_client_error(cl, true, id, CL_ERR_INTERNAL, "out of memory, try again");
        return;
    }
    if (pg->cut && (!pg->paged || pg->n == 0)) {
        cl_enc_free(&pg->body);
        STAT_ADD(cl->r, replies_limit, 1);
        if (pg->paged)
            snprintf(msg, sizeof(msg), "%s entry %llu alone passes the 1 MiB frame limit", what,
                     (unsigned long long)pg->offset);
        else
            snprintf(msg, sizeof(msg), "the %llu %s would pass the 1 MiB frame limit: ask for them in "
                     "pages (offset, max)", (unsigned long long)total, what);
        dp_client_error(cl, true, id, CL_ERR_LIMIT, msg);
        return;
    }
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, pg->paged ? 4 : 3);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    cl_pack_key(&e, key);
    msgpack_pack_array(&e.pk, (uint32_t)pg->n);
    cl_enc_raw(&e, (const uint8_t *)pg->body.buf.data + 4, cl_enc_len(&pg->body));
    if (pg->paged)
        cl_pack_kuint(&e, "total", total);
    cl_enc_free(&pg->body);
    dp_client_reply(cl, id, &e);
}

static void
op_accounts(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_user *u = cl->user;
    struct page pg;
    uint64_t total = 0;
    if (!page_start(cl, req, &pg))
        return;
    for (struct dp_account *a = u->accounts; a; a = a->unext, total++) {
        if (!page_take(&pg))
            continue;
        struct cl_enc *e = &pg.body;
        msgpack_pack_map(&e->pk, a->detail[0] ? 8 : 7);
        cl_pack_kuint(e, "account", a->id);
        cl_pack_kstr(e, "network", a->network);
        cl_pack_kstr(e, "login", a->login);
        cl_pack_kstr(e, "server", a->server);
        cl_pack_kstr(e, "tls", a->tls_s);
        cl_pack_kstr(e, "name", a->name);
        cl_pack_kstr(e, "state", im_account_state_name(a->state));
        if (a->detail[0])
            cl_pack_kstr(e, "detail", a->detail);
        page_packed(&pg);
    }
    page_reply(cl, req->id, &pg, "accounts", total, "accounts");
}

static void
op_contacts(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_user *u = cl->user;
    struct page pg;
    uint64_t total = 0;
    if (!page_start(cl, req, &pg))
        return;
    for (struct dp_account *a = u->accounts; a; a = a->unext) {
        total += a->n_contacts;
        for (uint32_t i = 0; i < a->n_contacts; i++)
            if (page_take(&pg)) {
                dp_pack_contact(&pg.body, a, &a->contacts[i]);
                page_packed(&pg);
            }
    }
    page_reply(cl, req->id, &pg, "contacts", total, "contacts");
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
    dp_client_reply(cl, req->id, &e);
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
}

/* One decoded frame from a client. */
static void
client_request(struct dp_client *cl, const struct cl_msg *req, const uint8_t *body, uint32_t len)
{
    const struct cl_op *op = cl_op_find(req->op);

    if (!op) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown op \"%.*s\"", (int)(req->op.len > 64 ? 64 : req->op.len),
                 req->op.p);
        dp_client_error(cl, true, req->id, CL_ERR_UNSUPPORTED, msg);
        return;
    }
    if (op->login == CL_LOGIN_FORBIDDEN && cl->user) {
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, "already logged in");
        return;
    }
    if (op->login == CL_LOGIN_REQUIRED && !cl->user) {
        dp_client_error(cl, true, req->id, CL_ERR_NOT_LOGGED_IN, "log in first");
        return;
    }
    if (op->plane == CL_PLANE_DATA)
        dp_op_handlers[op->id](cl, req);
    else
        forward(cl, op, req->id, body, len);
}

/* ------------------------------------------------------------------------ */
/* reading                                                                   */

/* Decode every complete frame in the receive buffer. */
static void
client_process(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    size_t off = 0;

    /* Frames stay buffered while the client's own output is backed up. */
    while (!cl->closing && !cl->out_full) {
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
        client_request(cl, &req, body, blen);
        cl_msg_free(&req);
        off += (size_t)n;
    }
    if (cl->closing)
        return;
    if (off) {
        memmove(cl->rx, cl->rx + off, cl->rx_len - off);
        cl->rx_len -= off;
    }
    if (cl->rx_len == 0 && cl->rx_cap > DP_RX_KEEP)
        client_rx_free(cl);
}

static void
cl_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct dp_client *cl = dp_conn_ud(c);
    if (cl->closing)
        return;
    cl->last_in = dp_worker_now(cl->r->w);
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
        /* Before login its growth comes out of the pre-login budget. */
        if (!dp_admit_rx_grow(cl, cap)) {
            dp_client_limit_close(cl, "too much memory held by connections that are not logged in "
                                      "(prelogin-memory): yours holds the largest partial frame");
            return;
        }
        uint8_t *nb = realloc(cl->rx, cap);
        if (!nb) {
            dp_admit_rx_set(cl, cl->rx_cap);
            dp_relay_oom(cl->r, "client receive buffer");
            dp_client_error(cl, false, 0, CL_ERR_INTERNAL, "out of memory");
            dp_client_close(cl);
            return;
        }
        cl->rx = nb;
        cl->rx_cap = cap;
    }
    memcpy(cl->rx + cl->rx_len, p, n);
    cl->rx_len += n;
    client_process(cl);
}

/* Ask the controlplane for the next batch of the replay. */
static void
replay_ask(struct dp_client *cl)
{
    struct dp_msg m = { .type = CPM_REPLAY_NEXT, .conn = cl->slot, .gen = cl->gen, .uid = cl->user->uid };
    m.u.replay_next.after = cl->replay_last;
    STAT_ADD(cl->r, replays_paced, 1);
    dp_up(cl->r, &m, NULL);
}

/* The output fell below the low watermark: read again, go on with the
 * frames held meanwhile, and ask for the replay's next batch. */
static void
cl_on_drain(struct dp_conn *c)
{
    struct dp_client *cl = dp_conn_ud(c);
    if (cl->closing)
        return;
    if (cl->out_full) {
        cl->out_full = false;
        client_update_read(cl);
    }
    if (cl->replay_wait && cl->user) {
        cl->replay_wait = false;
        replay_ask(cl);
    }
    if (cl->rx_len)
        client_process(cl);
}

static void
client_free(struct dp_client *cl)
{
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
    /* TCP keepalive (or the unacknowledged-output bound) gave up on the peer. */
    if (reason == -ETIMEDOUT || reason == -ECONNABORTED) {
        if (!cl->closing) {
            STAT_ADD(r, clients_timed_out, 1);
            DP_LOG(IM_LOG_INFO, "client %s: the peer stopped answering (%s): closed", dp_conn_peer(c),
                   im_strerror(reason));
        }
    }
    dp_admit_release(cl);
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
    .on_drain = cl_on_drain,
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

/* A connection over a cap: {error limit} and close; nothing of it is kept. */
static void
refuse(struct dp_conn *c, const char *why)
{
    uint8_t *f;
    size_t len;
    dp_conn_set_cb(c, &dp_orphan_cb, NULL);
    /* Over TLS the frame would cost a handshake first: the reset says it. */
    if (dp_conn_is_tls(c)) {
        dp_conn_abort(c, -ECONNREFUSED);
        return;
    }
    if (cl_build_error(false, 0, CL_ERR_LIMIT, why, &f, &len) == 0) {
        (void)dp_conn_write(c, f, len);
        free(f);
    }
    dp_conn_close(c);
}

void
dp_client_accept(void *ud, struct dp_conn *c)
{
    struct dp_relay *r = ud;
    const char *why;
    struct dp_client *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        dp_relay_oom(r, "client session");
        dp_conn_set_cb(c, &dp_orphan_cb, NULL);
        dp_conn_abort(c, -ENOMEM);
        return;
    }
    cl->r = r;
    cl->c = c;
    if (!dp_admit_accept(cl, &why)) {
        free(cl);
        refuse(c, why);
        return;
    }
    if (!r->n_free && !slots_grow(r)) {
        dp_admit_release(cl);
        free(cl);
        dp_relay_oom(r, "client session");
        dp_conn_set_cb(c, &dp_orphan_cb, NULL);
        dp_conn_abort(c, -ENOMEM);
        return;
    }
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
dp_client_login_ok(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
    struct cl_msg pm;
    struct im_str user;
    const msgpack_object *unified = NULL;
    const char *why;

    if (!cl || cl->user || dp_msg_decode(m, &pm) < 0)
        return;
    if (cl_get_str(&pm.root, "user", 1, 64, &user, &why)) {
        cl_msg_free(&pm);
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
    dp_admit_login(cl);
    /* The queue follows in batches (DPM_DELIVERs to cl, each batch ended
     * by DPM_REPLAY_END); live deliveries wait until it is done. */
    cl->replaying = true;
    cl->replay_wait = false;
    cl->replay_last = cl->live_after = 0;
    STAT_ADD(r, logins_ok, 1);

    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", m->u.login_ok.req);
    cl_pack_kstr(&e, "user", name);
    cl_pack_kuint(&e, "queued", m->u.login_ok.queued);
    dp_client_reply(cl, m->u.login_ok.req, &e);
}

void
dp_client_replay_end(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
    if (!cl || cl->closing || !cl->user || cl->user->uid != m->uid || !cl->replaying)
        return;
    if (m->u.replay_end.last > cl->replay_last)
        cl->replay_last = m->u.replay_end.last;
    if (!m->u.replay_end.more) {
        /* Caught up: what is committed later comes live, with higher seqs. */
        cl->replaying = false;
        cl->live_after = cl->replay_last;
        return;
    }
    /* The next batch once this one has mostly left (on_drain). */
    if (cl->out_full)
        cl->replay_wait = true;
    else
        replay_ask(cl);
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
        /* a replayed message: to the one connection it was read for */
        struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
        if (cl && cl->user == u && cl->replaying) {
            if (dp_client_send(cl, &e) == 0) {
                STAT_ADD(r, msgs_delivered, 1);
            } else {
                STAT_ADD(r, events_too_big, 1);
                DP_LOG(IM_LOG_ERROR, "message %llu of user %s cannot be encoded within the frame limit",
                       (unsigned long long)m->u.deliver.seq, u->name);
            }
            if (m->u.deliver.seq > cl->replay_last)
                cl->replay_last = m->u.deliver.seq;
        } else {
            cl_enc_free(&e);
        }
        return;
    }
    /* a live message: to every connection of the user, except those whose
     * replay has not caught up (the replay reads it from the queue) */
    size_t len;
    const uint8_t *f = cl_enc_finish(&e, &len);
    if (!f) {
        if (e.too_big)
            STAT_ADD(r, events_too_big, 1);
        else
            dp_relay_oom(r, "message frame");
        DP_LOG(IM_LOG_ERROR, "message %llu of user %s cannot be encoded: %s",
               (unsigned long long)m->u.deliver.seq, u->name,
               e.too_big ? "over the frame limit" : "out of memory");
        cl_enc_free(&e);
        return;
    }
    for (struct dp_client *cl = u->clients; cl; cl = cl->unext) {
        if (cl->replaying || m->u.deliver.seq <= cl->live_after)
            continue;
        dp_client_write(cl, f, len);
        STAT_ADD(r, msgs_delivered, 1);
        STAT_ADD(r, events_out, 1);
    }
    cl_enc_free(&e);
}
