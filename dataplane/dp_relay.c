/*
 * dp_relay.c - client sessions, emulated IM sessions, routing and message
 * conversion on one dataplane worker.
 *
 * Ownership: the relay owns every struct dp_client, dp_user and dp_account
 * of its worker.  A dp_client lives from accept until its connection's
 * on_close; a dp_account from DPM_ACCOUNT_UP until DPM_ACCOUNT_DOWN (its
 * emulated session comes and goes inside it); a dp_user as long as it has
 * accounts or logged-in clients.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>

#include "im_common.h"
#include "im_proto.h"
#include "client/cl_frame.h"
#include "dp_conn.h"
#include "dp_worker.h"
#include "dp_chan.h"
#include "dp_relay.h"

#define LOG(lvl, ...) IM_LOG(lvl, "dp", __VA_ARGS__)

#define DP_HASH_BUCKETS     4096
#define DP_QUEUE_PAUSE      1024        /* queued outbound msgs that pause senders */
#define DP_RX_MAX           (4 + CL_FRAME_MAX)
#define DP_BACKOFF_FIRST    1500        /* ms, +-20 %: first retry within 2 s */
#define DP_BACKOFF_CAP      (300 * 1000)
#define DP_DOWN_BATCH       256         /* commands handled per loop turn */

struct dp_user;
struct dp_account;

struct dp_client {
    struct dp_relay *r;
    struct dp_conn *c;
    uint32_t slot, gen;
    struct dp_user *user;               /* NULL until logged in */
    struct dp_client *unext;            /* in user->clients */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    bool closing;
    bool paused;
};

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

struct dp_out {
    struct dp_out *next;
    uint64_t msg;
    char *address;
    char *body;
};

struct dp_user {
    uint64_t uid;
    char name[65];
    struct dp_user *hnext;
    struct dp_client *clients;
    struct dp_account *accounts;
    struct dp_unified *unified;
    uint32_t n_unified;
    uint8_t *unified_raw;               /* the msgpack array as stored */
    size_t unified_raw_len;
};

struct dp_account {
    struct dp_relay *r;
    uint64_t id;
    struct dp_user *user;
    struct dp_account *unext, *hnext;
    const struct im_proto_ops *ops;
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
    /* the emulated session */
    struct im_sess *sess;
    struct dp_conn *conn;
    bool online;
    bool tls_pending;
    uint64_t next_try;                  /* mono ms; 0 = not scheduled */
    uint32_t backoff;
    /* ordered send queue: [head, unsent) handed to the session, [unsent, ..) waiting */
    struct dp_out *q_head, *q_tail, *q_unsent;
    uint32_t q_len;
    struct dp_client **paused;          /* clients paused on this queue */
    uint32_t n_paused;
};

struct dp_relay {
    struct dp_worker *w;
    struct dp_chan *ch;
    struct dp_listener *listeners[4];
    unsigned n_listeners;
    struct dp_client **slots;
    uint32_t *gens;
    uint32_t n_slots, *free_slots, n_free;
    struct dp_user *users[DP_HASH_BUCKETS];
    struct dp_account *accounts[DP_HASH_BUCKETS];
    uint64_t rng;
    struct dp_relay_stats st;           /* written by this worker only */
};

#define STAT_ADD(r, f, n) atomic_fetch_add_explicit((_Atomic uint64_t *)&(r)->st.f, (n), memory_order_relaxed)
#define STAT_SUB(r, f, n) atomic_fetch_sub_explicit((_Atomic uint64_t *)&(r)->st.f, (n), memory_order_relaxed)

static void account_connect(struct dp_account *a, uint64_t now);
static void account_flush_queue(struct dp_account *a);
static void client_close(struct dp_client *cl);

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */

static char *
xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d)
        abort();
    return d;
}

static char *
view_dup(struct im_str v)
{
    char *d = cl_strdup(v);
    if (!d)
        abort();
    return d;
}

static uint64_t
rng_next(struct dp_relay *r)
{
    /* xorshift64*: jitter only, not security */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ULL;
}

static unsigned
hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (unsigned)(k & (DP_HASH_BUCKETS - 1));
}

static struct dp_user *
user_find(struct dp_relay *r, uint64_t uid)
{
    for (struct dp_user *u = r->users[hash64(uid)]; u; u = u->hnext)
        if (u->uid == uid)
            return u;
    return NULL;
}

static struct dp_account *
account_find(struct dp_relay *r, uint64_t id)
{
    for (struct dp_account *a = r->accounts[hash64(id)]; a; a = a->hnext)
        if (a->id == id)
            return a;
    return NULL;
}

static void
unified_free(struct dp_user *u)
{
    for (uint32_t i = 0; i < u->n_unified; i++) {
        for (uint32_t j = 0; j < u->unified[i].n; j++)
            free(u->unified[i].m[j].address);
        free(u->unified[i].m);
    }
    free(u->unified);
    free(u->unified_raw);
    u->unified = NULL;
    u->unified_raw = NULL;
    u->n_unified = 0;
    u->unified_raw_len = 0;
}

/* Replace the user's unified list from a msgpack array as stored by the controlplane. */
static void
unified_set(struct dp_user *u, const msgpack_object *arr)
{
    unified_free(u);
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *arr);
    u->unified_raw = (uint8_t *)sb.data;
    u->unified_raw_len = sb.size;

    uint32_t n = arr->via.array.size;
    u->unified = calloc(n ? n : 1, sizeof(*u->unified));
    if (!u->unified)
        abort();
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *c = &arr->via.array.ptr[i];
        const msgpack_object *members;
        struct dp_unified *du = &u->unified[u->n_unified];
        const char *why;
        if (c->type != MSGPACK_OBJECT_MAP || cl_get_uint(c, "id", &du->id, &why) ||
            cl_get_array(c, "members", &members, &why))
            continue;
        if (cl_get_uint(c, "prefer", &du->prefer, &why))
            du->prefer = 0;
        du->m = calloc(members->via.array.size + 1, sizeof(*du->m));
        if (!du->m)
            abort();
        for (uint32_t j = 0; j < members->via.array.size; j++) {
            const msgpack_object *mo = &members->via.array.ptr[j];
            struct im_str addr;
            if (mo->type != MSGPACK_OBJECT_MAP ||
                cl_get_uint(mo, "account", &du->m[du->n].account, &why) ||
                cl_get_str(mo, "address", 1, 1024, &addr, &why))
                continue;
            du->m[du->n++].address = view_dup(addr);
        }
        u->n_unified++;
    }
}

static struct dp_user *
user_get(struct dp_relay *r, uint64_t uid, const char *name)
{
    struct dp_user *u = user_find(r, uid);
    if (u)
        return u;
    u = calloc(1, sizeof(*u));
    if (!u)
        abort();
    u->uid = uid;
    im_strlcpy(u->name, name ? name : "", sizeof(u->name));
    unsigned h = hash64(uid);
    u->hnext = r->users[h];
    r->users[h] = u;
    return u;
}

static void
user_maybe_free(struct dp_relay *r, struct dp_user *u)
{
    if (u->clients || u->accounts)
        return;
    struct dp_user **pp = &r->users[hash64(u->uid)];
    while (*pp != u)
        pp = &(*pp)->hnext;
    *pp = u->hnext;
    unified_free(u);
    free(u);
}

/* Unified contact id of (account, address), 0 when none. */
static uint64_t
unified_of(const struct dp_user *u, uint64_t account, const char *address)
{
    for (uint32_t i = 0; i < u->n_unified; i++)
        for (uint32_t j = 0; j < u->unified[i].n; j++)
            if (u->unified[i].m[j].account == account &&
                !strcmp(u->unified[i].m[j].address, address))
                return u->unified[i].id;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* writing to clients                                                        */

static void
client_write(struct dp_client *cl, const uint8_t *p, size_t n)
{
    if (cl->closing)
        return;
    int rc = dp_conn_write(cl->c, p, n);
    if (rc < 0) {
        /* The client does not read: drop the connection.  Nothing is lost,
         * unacknowledged messages are replayed at its next login. */
        LOG(IM_LOG_WARN, "client %s: write backlog over limit, closing", dp_conn_peer(cl->c));
        cl->closing = true;
        dp_conn_abort(cl->c, rc);
    }
}

static void
client_send_enc(struct dp_client *cl, struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (f)
        client_write(cl, f, len);
    cl_enc_free(e);
}

static void
client_error(struct dp_client *cl, bool has_id, uint64_t id, const char *code, const char *msg)
{
    uint8_t *f;
    size_t len;
    if (cl_build_error(has_id, id, code, msg, &f, &len) == 0) {
        client_write(cl, f, len);
        free(f);
    }
}

static void
client_ok(struct dp_client *cl, uint64_t id)
{
    uint8_t *f;
    size_t len;
    if (cl_build_ok(id, &f, &len) == 0) {
        client_write(cl, f, len);
        free(f);
    }
}

/* Send a finished event frame to every logged-in client of u. */
static void
user_broadcast(struct dp_relay *r, struct dp_user *u, struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (f) {
        for (struct dp_client *cl = u->clients; cl; cl = cl->unext) {
            client_write(cl, f, len);
            STAT_ADD(r, events_out, 1);
        }
    }
    cl_enc_free(e);
}

static void
pack_contact(struct cl_enc *e, const struct dp_account *a, const struct dp_contact *c)
{
    msgpack_pack_map(&e->pk, 6);
    cl_pack_kuint(e, "account", a->id);
    cl_pack_kstr(e, "network", a->network);
    cl_pack_kstr(e, "address", c->address);
    cl_pack_kstr(e, "name", c->name);
    cl_pack_key(e, "groups");
    msgpack_pack_array(&e->pk, c->n_groups);
    for (uint32_t i = 0; i < c->n_groups; i++)
        cl_pack_str(e, c->groups[i]);
    cl_pack_kstr(e, "presence", im_presence_name(c->presence));
}

static void
event_account(struct dp_account *a)
{
    struct cl_enc e;
    if (!a->user->clients)
        return;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, a->detail[0] ? 6 : 5);
    cl_pack_kstr(&e, "op", "account");
    cl_pack_kuint(&e, "account", a->id);
    cl_pack_kstr(&e, "network", a->network);
    cl_pack_kstr(&e, "login", a->login);
    cl_pack_kstr(&e, "state", im_account_state_name(a->state));
    if (a->detail[0])
        cl_pack_kstr(&e, "detail", a->detail);
    user_broadcast(a->r, a->user, &e);
}

static void
event_contacts(struct dp_account *a)
{
    struct cl_enc e;
    if (!a->user->clients)
        return;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "contacts");
    cl_pack_kuint(&e, "account", a->id);
    cl_pack_key(&e, "contacts");
    msgpack_pack_array(&e.pk, a->n_contacts);
    for (uint32_t i = 0; i < a->n_contacts; i++)
        pack_contact(&e, a, &a->contacts[i]);
    user_broadcast(a->r, a->user, &e);
}

/* ------------------------------------------------------------------------ */
/* talking to the controlplane                                               */

static void
send_up(struct dp_relay *r, uint16_t type, uint32_t conn, uint32_t gen, uint64_t uid,
        uint64_t account, uint64_t a, uint64_t b, struct cl_enc *payload)
{
    struct dp_msg m = { .type = type, .conn = conn, .gen = gen, .uid = uid,
                        .account = account, .a = a, .b = b };
    if (payload) {
        size_t len;
        if (!cl_enc_finish(payload, &len)) {
            cl_enc_free(payload);
            return;
        }
        m.data = cl_enc_release(payload, &len);
        m.len = (uint32_t)len;
    }
    dp_chan_send_up(r->ch, &m);
}

static void
account_state(struct dp_account *a, enum im_account_state st, const char *detail)
{
    a->state = st;
    im_strlcpy(a->detail, detail ? detail : "", sizeof(a->detail));
    event_account(a);
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kstr(&e, "detail", a->detail);
    send_up(a->r, CPM_ACCOUNT_STATE, 0, 0, a->user->uid, a->id, st, 0, &e);
}

static void
contacts_free(struct dp_contact *c, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(c[i].address);
        free(c[i].name);
        for (uint32_t j = 0; j < c[i].n_groups; j++)
            free(c[i].groups[j]);
        free(c[i].groups);
    }
    free(c);
}

/* Persist the account's list and push it to the user. */
static void
contacts_changed(struct dp_account *a)
{
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_key(&e, "contacts");
    msgpack_pack_array(&e.pk, a->n_contacts);
    for (uint32_t i = 0; i < a->n_contacts; i++)
        pack_contact(&e, a, &a->contacts[i]);
    send_up(a->r, CPM_CONTACTS, 0, 0, a->user->uid, a->id, 0, 0, &e);
    event_contacts(a);
}

/* Load a stored contact list (array of entries) into the account. */
static void
contacts_load(struct dp_account *a, const msgpack_object *arr)
{
    contacts_free(a->contacts, a->n_contacts);
    a->contacts = NULL;
    a->n_contacts = 0;
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return;
    a->contacts = calloc(arr->via.array.size + 1, sizeof(*a->contacts));
    if (!a->contacts)
        abort();
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i], *groups;
        struct im_str addr, name;
        const char *why;
        if (o->type != MSGPACK_OBJECT_MAP || cl_get_str(o, "address", 1, 1024, &addr, &why))
            continue;
        struct dp_contact *c = &a->contacts[a->n_contacts++];
        c->address = view_dup(addr);
        c->name = cl_get_str(o, "name", 0, 1024, &name, &why) ? xstrdup("") : view_dup(name);
        c->presence = IM_PRES_UNKNOWN;
        if (cl_get_array(o, "groups", &groups, &why) == 0) {
            c->groups = calloc(groups->via.array.size + 1, sizeof(char *));
            if (!c->groups)
                abort();
            for (uint32_t j = 0; j < groups->via.array.size; j++) {
                const msgpack_object *g = &groups->via.array.ptr[j];
                if (g->type == MSGPACK_OBJECT_STR)
                    c->groups[c->n_groups++] = view_dup((struct im_str){ g->via.str.ptr, g->via.str.size });
            }
        }
    }
}

static struct dp_contact *
contact_find(struct dp_account *a, const char *address)
{
    for (uint32_t i = 0; i < a->n_contacts; i++)
        if (!strcmp(a->contacts[i].address, address))
            return &a->contacts[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* emulated sessions                                                          */

static void
account_schedule_retry(struct dp_account *a, uint64_t now, const char *why)
{
    if (!a->backoff)
        a->backoff = DP_BACKOFF_FIRST;
    else if (a->backoff < DP_BACKOFF_CAP)
        a->backoff = a->backoff * 2 > DP_BACKOFF_CAP ? DP_BACKOFF_CAP : a->backoff * 2;
    /* +-20 % jitter */
    uint32_t span = a->backoff / 5;
    uint32_t delay = a->backoff - span + (uint32_t)(rng_next(a->r) % (2 * span + 1));
    a->next_try = now + delay;
    char d[300];
    snprintf(d, sizeof(d), "retrying in %u.%u s%s%s", delay / 1000, (delay % 1000) / 100,
             why && *why ? ": " : "", why ? why : "");
    account_state(a, IM_ACC_OFFLINE, d);
}

/* Drop the session and its connection; on_close of the connection finishes it. */
static void
account_drop_conn(struct dp_account *a, int reason)
{
    if (a->conn) {
        dp_conn_abort(a->conn, reason);
    }
}

static void
acct_io_event(void *ud, const struct im_event *ev);

static int
acct_io_out(void *ud, const void *p, size_t n)
{
    struct dp_account *a = ud;
    if (!a->conn)
        return -ENOTCONN;
    int rc = dp_conn_write(a->conn, p, n);
    return rc < 0 ? rc : 0;
}

static const char *
acct_io_local(void *ud)
{
    struct dp_account *a = ud;
    return a->conn ? dp_conn_local(a->conn) : "";
}

/* The time as adapters are given it: the worker's clocks (monotonic for
 * their timers, wall for message.ts). */
static struct im_time
account_time(const struct dp_account *a)
{
    return dp_worker_time(a->r->w);
}

/* Give a network without a server-side list the list imfuse keeps. */
static void
account_push_watch(struct dp_account *a)
{
    if (!a->online || !a->sess || !a->ops->set_watch)
        return;
    struct im_str *v = calloc(a->n_contacts + 1, sizeof(*v));
    if (!v)
        abort();
    for (uint32_t i = 0; i < a->n_contacts; i++)
        v[i] = (struct im_str){ a->contacts[i].address, (uint32_t)strlen(a->contacts[i].address) };
    int rc = a->ops->set_watch(a->sess, v, a->n_contacts, account_time(a));
    free(v);
    if (rc < 0)
        account_drop_conn(a, rc);
}

static void
acct_on_open(struct dp_conn *c, int status, const char *detail)
{
    struct dp_account *a = dp_conn_ud(c);
    if (status < 0) {
        char d[256];
        snprintf(d, sizeof(d), "cannot connect to %s: %s", a->server,
                 detail && *detail ? detail : im_strerror(status));
        if (a->state != IM_ACC_ERROR)
            account_state(a, IM_ACC_ERROR, d);
        return;                         /* on_close follows */
    }
    int rc = a->ops->start(a->sess, account_time(a));
    if (rc < 0)
        account_drop_conn(a, rc);
}

static void
acct_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct dp_account *a = dp_conn_ud(c);
    if (!a->sess)
        return;
    int rc = a->ops->input(a->sess, p, n, account_time(a));
    if (rc < 0) {
        if (a->state != IM_ACC_ERROR && a->state != IM_ACC_AUTH_FAILED) {
            char d[128];
            snprintf(d, sizeof(d), "protocol error: %s", im_strerror(rc));
            account_state(a, IM_ACC_ERROR, d);
        }
        if (a->state == IM_ACC_AUTH_FAILED)
            dp_conn_close(c);
        else
            account_drop_conn(a, rc);
    }
}

static void
acct_on_drain(struct dp_conn *c)
{
    account_flush_queue(dp_conn_ud(c));
}

static void
acct_on_tls(struct dp_conn *c, int status, const char *detail)
{
    struct dp_account *a = dp_conn_ud(c);
    a->tls_pending = false;
    if (status < 0) {
        char d[256];
        snprintf(d, sizeof(d), "TLS with %s failed: %s", a->server,
                 detail && *detail ? detail : im_strerror(status));
        account_state(a, IM_ACC_ERROR, d);
        account_drop_conn(a, status);
        return;
    }
    int rc = a->ops->tls_ready(a->sess, 0, account_time(a));
    if (rc < 0)
        account_drop_conn(a, rc);
}

static void
acct_on_close(struct dp_conn *c, int reason)
{
    struct dp_account *a = dp_conn_ud(c);
    uint64_t now = dp_worker_now(a->r->w);

    a->conn = NULL;
    if (a->sess) {
        a->ops->destroy(a->sess);
        a->sess = NULL;
    }
    a->online = false;
    a->tls_pending = false;
    /* Messages handed to the dead session but not confirmed go out again. */
    a->q_unsent = a->q_head;
    if (a->state == IM_ACC_AUTH_FAILED) {
        a->next_try = 0;                /* not retried until updated */
        return;
    }
    char why[300];
    if (a->state == IM_ACC_ERROR)
        im_strlcpy(why, a->detail, sizeof(why));
    else
        snprintf(why, sizeof(why), "connection lost: %s",
                 reason ? im_strerror(reason) : "closed by the server");
    account_schedule_retry(a, now, why);
}

static const struct dp_conn_cb acct_conn_cb = {
    .on_open = acct_on_open,
    .on_data = acct_on_data,
    .on_drain = acct_on_drain,
    .on_tls = acct_on_tls,
    .on_close = acct_on_close,
};

/* Callbacks for a connection whose account has moved on (update, unlink,
 * shutdown): it only flushes and closes. */
static void orphan_on_open(struct dp_conn *c, int status, const char *detail) { }
static void orphan_on_data(struct dp_conn *c, const uint8_t *p, size_t n) { }
static void orphan_on_close(struct dp_conn *c, int reason) { }
static const struct dp_conn_cb orphan_cb = {
    .on_open = orphan_on_open, .on_data = orphan_on_data, .on_close = orphan_on_close,
};

/* Say goodbye if online, forget the session, and let the connection close on its own. */
static void
account_detach_session(struct dp_account *a, bool polite)
{
    if (a->sess) {
        if (polite && a->online && a->ops->logout)
            a->ops->logout(a->sess);
        a->ops->destroy(a->sess);
        a->sess = NULL;
    }
    if (a->conn) {
        dp_conn_set_cb(a->conn, &orphan_cb, NULL);
        if (polite)
            dp_conn_close(a->conn);
        else
            dp_conn_abort(a->conn, 0);
        a->conn = NULL;
    }
    a->online = false;
    a->tls_pending = false;
    a->q_unsent = a->q_head;
}

static void
account_connect(struct dp_account *a, uint64_t now)
{
    int err = 0;

    a->next_try = 0;
    a->sess = a->ops->create(&a->cfg, &a->io);
    if (!a->sess) {
        account_schedule_retry(a, now, "out of memory");
        return;
    }
    account_state(a, IM_ACC_CONNECTING, NULL);
    STAT_ADD(a->r, acct_connects, 1);
    a->conn = dp_conn_connect(a->r->w, a->host, a->cfg.port,
                              a->cfg.tls == IM_TLS_DIRECT ? a->tls_name : NULL,
                              &acct_conn_cb, a, &err);
    if (!a->conn) {
        a->ops->destroy(a->sess);
        a->sess = NULL;
        char d[300];
        snprintf(d, sizeof(d), "cannot connect to %s: %s", a->server, im_strerror(err));
        account_state(a, IM_ACC_ERROR, d);
        account_schedule_retry(a, now, d);
    }
}

static void
account_resume_paused(struct dp_account *a)
{
    for (uint32_t i = 0; i < a->n_paused; i++) {
        struct dp_client *cl = a->paused[i];
        struct dp_relay *r = a->r;
        /* the pointer is only trusted if the slot still holds it */
        if (cl && cl->slot < r->n_slots && r->slots[cl->slot] == cl && cl->paused) {
            cl->paused = false;
            dp_conn_pause(cl->c, false);
        }
    }
    a->n_paused = 0;
}

/* Hand waiting messages to the session, in order, while the connection takes them. */
static void
account_flush_queue(struct dp_account *a)
{
    while (a->online && a->q_unsent && a->conn && dp_conn_backlog(a->conn) < DP_CONN_HIWAT) {
        struct dp_out *o = a->q_unsent;
        struct im_msg m = {
            .msg = o->msg,
            .to = { o->address, (uint32_t)strlen(o->address) },
            .body = { o->body, (uint32_t)strlen(o->body) },
        };
        a->q_unsent = o->next;
        int rc = a->ops->send_msg(a->sess, &m);
        if (rc < 0) {
            a->q_unsent = o;
            account_drop_conn(a, rc);
            return;
        }
        STAT_ADD(a->r, msgs_out, 1);
    }
}

static void
account_sent(struct dp_account *a, uint64_t msg)
{
    struct dp_out **pp = &a->q_head, *prev = NULL;
    while (*pp && (*pp)->msg != msg) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    struct dp_out *o = *pp;
    if (!o)
        return;
    *pp = o->next;
    if (a->q_tail == o)
        a->q_tail = prev;
    if (a->q_unsent == o)
        a->q_unsent = o->next;
    a->q_len--;
    STAT_SUB(a->r, send_queue_len, 1);
    send_up(a->r, CPM_OUT_DONE, 0, 0, a->user->uid, a->id, msg, 0, NULL);
    free(o->address);
    free(o->body);
    free(o);
    if (a->n_paused && a->q_len < DP_QUEUE_PAUSE / 2)
        account_resume_paused(a);
}

static void
acct_io_event(void *ud, const struct im_event *ev)
{
    struct dp_account *a = ud;
    struct dp_relay *r = a->r;

    switch (ev->type) {
    case IM_EV_STATE: {
        char d[256];
        size_t n = ev->u.state.detail.len < sizeof(d) - 1 ? ev->u.state.detail.len : sizeof(d) - 1;
        memcpy(d, ev->u.state.detail.p, n);
        d[n] = '\0';
        if (ev->u.state.state == IM_ACC_ONLINE) {
            a->online = true;
            a->backoff = 0;
            STAT_ADD(r, acct_online, 1);
            account_state(a, IM_ACC_ONLINE, d);
            account_push_watch(a);
            account_flush_queue(a);
        } else {
            if (ev->u.state.state == IM_ACC_AUTH_FAILED || ev->u.state.state == IM_ACC_ERROR)
                STAT_ADD(r, acct_failures, 1);
            a->online = ev->u.state.state == IM_ACC_ONLINE;
            account_state(a, ev->u.state.state, d);
        }
        break;
    }
    case IM_EV_STARTTLS:
        a->tls_pending = true;
        if (dp_conn_start_tls_client(a->conn, a->tls_name) < 0) {
            account_state(a, IM_ACC_ERROR, "cannot start TLS");
            account_drop_conn(a, -IM_ETLS);
        }
        break;
    case IM_EV_CONTACTS: {
        /* Keep presence already known for contacts that stay. */
        struct dp_contact *old = a->contacts;
        uint32_t n_old = a->n_contacts;
        struct dp_contact *nc = calloc(ev->u.contacts.n + 1, sizeof(*nc));
        if (!nc)
            abort();
        for (uint32_t i = 0; i < ev->u.contacts.n; i++) {
            const struct im_contact *ic = &ev->u.contacts.list[i];
            struct dp_contact *c = &nc[i];
            c->address = view_dup(ic->address);
            c->name = view_dup(ic->name);
            c->presence = ic->presence;
            c->groups = calloc(ic->n_groups + 1, sizeof(char *));
            if (!c->groups)
                abort();
            for (uint32_t j = 0; j < ic->n_groups; j++)
                c->groups[c->n_groups++] = view_dup(ic->groups[j]);
            for (uint32_t j = 0; j < n_old && c->presence == IM_PRES_UNKNOWN; j++)
                if (!strcmp(old[j].address, c->address))
                    c->presence = old[j].presence;
        }
        a->contacts = nc;
        a->n_contacts = ev->u.contacts.n;
        contacts_free(old, n_old);
        contacts_changed(a);
        break;
    }
    case IM_EV_PRESENCE: {
        char addr[1024];
        size_t n = ev->u.presence.address.len < sizeof(addr) - 1 ? ev->u.presence.address.len : sizeof(addr) - 1;
        memcpy(addr, ev->u.presence.address.p, n);
        addr[n] = '\0';
        struct dp_contact *c = contact_find(a, addr);
        if (c) {
            if (c->presence == ev->u.presence.presence)
                break;
            c->presence = ev->u.presence.presence;
        }
        if (!a->user->clients)
            break;
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, 4);
        cl_pack_kstr(&e, "op", "presence");
        cl_pack_kuint(&e, "account", a->id);
        cl_pack_kstr(&e, "address", addr);
        cl_pack_kstr(&e, "presence", im_presence_name(ev->u.presence.presence));
        user_broadcast(r, a->user, &e);
        break;
    }
    case IM_EV_MESSAGE: {
#define mm (&ev->u.message)
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, mm->resource.len ? 6 : 5);
        cl_pack_kuint(&e, "account", a->id);
        cl_pack_kstr(&e, "network", a->network);
        cl_pack_kstrn(&e, "from", mm->from.p, mm->from.len);
        if (mm->resource.len)
            cl_pack_kstrn(&e, "resource", mm->resource.p, mm->resource.len);
        cl_pack_kstrn(&e, "body", mm->body.p, mm->body.len);
        cl_pack_kuint(&e, "ts", mm->ts);
        STAT_ADD(r, msgs_in, 1);
        send_up(r, CPM_MSG_IN, 0, 0, a->user->uid, a->id, 0, mm->token, &e);
#undef mm
        break;
    }
    case IM_EV_SENT:
        account_sent(a, ev->u.sent.msg);
        break;
    case IM_EV_NOTICE: {
        char d[256];
        size_t n = ev->u.notice.text.len < sizeof(d) - 1 ? ev->u.notice.text.len : sizeof(d) - 1;
        memcpy(d, ev->u.notice.text.p, n);
        d[im_utf8_trim(d, n)] = '\0';
        account_state(a, a->state, d);
        break;
    }
    case IM_EV_CONTACT_DONE:
        /* add/remove_contact were answered when queued; the roster push
         * that follows a success brings the new list as a contacts event. */
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* accounts from the controlplane                                            */

static void
account_free_cfg(struct dp_account *a)
{
    if (a->password)
        im_wipe(a->password, strlen(a->password));
    free(a->network); free(a->login); free(a->password); free(a->host);
    free(a->server); free(a->tls_s); free(a->tls_name); free(a->name);
    for (uint32_t i = 0; i < a->n_opts; i++) {
        free((char *)a->opts[i].key);
        free((char *)a->opts[i].value);
    }
    free(a->opts);
    a->opts = NULL;
    a->n_opts = 0;
}

static void
account_unlink(struct dp_relay *r, struct dp_account *a)
{
    struct dp_user *u = a->user;
    struct dp_account **pp = &r->accounts[hash64(a->id)];
    while (*pp != a)
        pp = &(*pp)->hnext;
    *pp = a->hnext;
    pp = &u->accounts;
    while (*pp != a)
        pp = &(*pp)->unext;
    *pp = a->unext;

    while (a->q_head) {
        struct dp_out *o = a->q_head;
        a->q_head = o->next;
        STAT_SUB(r, send_queue_len, 1);
        free(o->address); free(o->body); free(o);
    }
    account_resume_paused(a);
    free(a->paused);
    contacts_free(a->contacts, a->n_contacts);
    account_detach_session(a, true);
    account_free_cfg(a);
    free(a);
    user_maybe_free(r, u);
}

/* DPM_ACCOUNT_UP: create, or replace the configuration of, an account. */
static void
handle_account_up(struct dp_relay *r, const struct dp_msg *m)
{
    struct cl_msg pm;
    struct im_str network, login, password, server, tls, tls_name, name, user;
    const msgpack_object *opts = NULL, *contacts = NULL, *unified = NULL;
    const char *why;

    if (!m->data || m->len < 4 || cl_msg_decode(&pm, (uint8_t *)m->data + 4, m->len - 4))
        return;
    const msgpack_object *o = &pm.root;
    if (cl_get_str(o, "network", 1, 64, &network, &why) ||
        cl_get_str(o, "login", 1, 1024, &login, &why) ||
        cl_get_str(o, "password", 0, 4096, &password, &why) ||
        cl_get_str(o, "server", 1, 1024, &server, &why) ||
        cl_get_str(o, "tls", 1, 16, &tls, &why) ||
        cl_get_str(o, "tls_name", 0, 1024, &tls_name, &why) ||
        cl_get_str(o, "user", 1, 64, &user, &why)) {
        LOG(IM_LOG_ERROR, "account %llu: malformed configuration from the controlplane",
            (unsigned long long)m->account);
        cl_msg_free(&pm);
        return;
    }
    if (cl_get_str(o, "name", 0, 1024, &name, &why))
        name = (struct im_str){ "", 0 };
    (void)cl_get_map(o, "options", &opts, &why);
    (void)cl_get_array(o, "contacts", &contacts, &why);
    bool has_unified = cl_get_array(o, "unified", &unified, &why) == 0;

    char ubuf[65];
    snprintf(ubuf, sizeof(ubuf), "%.*s", (int)user.len, user.p);
    struct dp_user *u = user_get(r, m->uid, ubuf);
    if (has_unified && !u->unified_raw)
        unified_set(u, unified);

    struct dp_account *a = account_find(r, m->account);
    bool fresh = !a;
    if (fresh) {
        a = calloc(1, sizeof(*a));
        if (!a)
            abort();
        a->r = r;
        a->id = m->account;
        a->user = u;
        unsigned h = hash64(a->id);
        a->hnext = r->accounts[h];
        r->accounts[h] = a;
        struct dp_account **tail = &u->accounts;
        while (*tail)
            tail = &(*tail)->unext;
        *tail = a;
    } else {
        /* update_account: drop the running session, reconnect with the new config */
        account_detach_session(a, true);
        account_free_cfg(a);
    }
    char *network_s = view_dup(network);
    a->ops = im_proto_find(network_s);
    a->network = network_s;
    a->login = view_dup(login);
    a->password = view_dup(password);
    a->server = view_dup(server);
    a->tls_s = view_dup(tls);
    a->tls_name = view_dup(tls_name);
    a->name = view_dup(name);
    if (opts) {
        a->opts = calloc(opts->via.map.size + 1, sizeof(*a->opts));
        if (!a->opts)
            abort();
        for (uint32_t i = 0; i < opts->via.map.size; i++) {
            const msgpack_object_kv *kv = &opts->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR)
                continue;
            a->opts[a->n_opts].key = view_dup((struct im_str){ kv->key.via.str.ptr, kv->key.via.str.size });
            a->opts[a->n_opts].value = view_dup((struct im_str){ kv->val.via.str.ptr, kv->val.via.str.size });
            a->n_opts++;
        }
    }
    if (fresh)
        contacts_load(a, contacts);
    cl_msg_free(&pm);

    a->cfg = (struct im_account_cfg){
        .account = a->id, .login = a->login, .password = a->password,
        .tls_name = a->tls_name, .options = a->opts, .n_options = a->n_opts,
    };
    a->cfg.tls = !strcmp(a->tls_s, "tls") ? IM_TLS_DIRECT :
                 !strcmp(a->tls_s, "starttls") ? IM_TLS_STARTTLS : IM_TLS_NONE;
    a->io = (struct im_io){ .out = acct_io_out, .event = acct_io_event, .local_addr = acct_io_local,
                            .kdf = NULL, .rng = NULL, .ud = a };
    a->backoff = 0;
    a->online = false;
    unsigned port = 0;
    if (!a->ops || im_split_hostport(a->server, &a->host, &port) < 0) {
        account_state(a, IM_ACC_ERROR, !a->ops ? "network not supported" : "bad server address");
        return;
    }
    a->cfg.host = a->host;
    a->cfg.port = (uint16_t)port;
    account_connect(a, dp_worker_now(r->w));
}

/* ------------------------------------------------------------------------ */
/* client requests served here                                               */

static void
reply_accounts(struct dp_client *cl, uint64_t id)
{
    struct dp_user *u = cl->user;
    uint32_t n = 0;
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        n++;
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    cl_pack_key(&e, "accounts");
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
    client_send_enc(cl, &e);
}

static void
reply_contacts(struct dp_client *cl, uint64_t id)
{
    struct dp_user *u = cl->user;
    uint32_t n = 0;
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        n += a->n_contacts;
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    cl_pack_key(&e, "contacts");
    msgpack_pack_array(&e.pk, n);
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        for (uint32_t i = 0; i < a->n_contacts; i++)
            pack_contact(&e, a, &a->contacts[i]);
    client_send_enc(cl, &e);
}

static void
reply_unified(struct dp_client *cl, uint64_t id)
{
    struct dp_user *u = cl->user;
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    cl_pack_key(&e, "contacts");
    if (u->unified_raw)
        msgpack_sbuffer_write(&e.buf, (const char *)u->unified_raw, u->unified_raw_len);
    else
        msgpack_pack_array(&e.pk, 0);
    client_send_enc(cl, &e);
}

static struct dp_account *
user_account(struct dp_user *u, uint64_t id)
{
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        if (a->id == id)
            return a;
    return NULL;
}

static bool
account_usable(const struct dp_account *a)
{
    return a->online;
}

/* `send`: route, then hand to the controlplane, which makes it durable and answers. */
static void
handle_send(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_relay *r = cl->r;
    struct dp_user *u = cl->user;
    const msgpack_object *to;
    struct im_str body, cid;
    const char *why;
    bool has_cid;
    int rc;

    if ((rc = cl_get_map(&req->root, "to", &to, &why)) != 0) {
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, rc == -IM_ENOTFOUND ? "to is required" : "to must be a map");
        return;
    }
    if ((rc = cl_get_str(&req->root, "body", 1, 65536, &body, &why)) != 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "body: %s", rc == -IM_ENOTFOUND ? "is required" : why);
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    rc = cl_get_str(&req->root, "cid", 1, CL_CID_MAX, &cid, &why);
    if (rc == -IM_EINVAL) {
        char msg[128];
        snprintf(msg, sizeof(msg), "cid: %s", why);
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    has_cid = rc == 0;

    struct dp_account *a = NULL;
    char address[1024];
    uint64_t contact, account;
    struct im_str addr;
    if ((rc = cl_get_uint(to, "contact", &contact, &why)) == 0) {
        struct dp_unified *uc = NULL;
        for (uint32_t i = 0; i < u->n_unified; i++)
            if (u->unified[i].id == contact)
                uc = &u->unified[i];
        if (!uc) {
            client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such unified contact");
            return;
        }
        struct dp_member *pick = NULL;
        for (uint32_t i = 0; i < uc->n && uc->prefer && !pick; i++) {
            struct dp_account *ma = user_account(u, uc->m[i].account);
            if (uc->m[i].account != uc->prefer || !ma || !account_usable(ma))
                continue;
            struct dp_contact *c = contact_find(ma, uc->m[i].address);
            if (!c || c->presence != IM_PRES_OFFLINE)
                pick = &uc->m[i];
        }
        for (uint32_t i = 0; i < uc->n && !pick; i++) {
            struct dp_account *ma = user_account(u, uc->m[i].account);
            if (ma && account_usable(ma))
                pick = &uc->m[i];
        }
        if (!pick) {
            client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "no account of this contact is online");
            return;
        }
        a = user_account(u, pick->account);
        im_strlcpy(address, pick->address, sizeof(address));
    } else if (rc == -IM_ENOTFOUND && cl_get_uint(to, "account", &account, &why) == 0 &&
               cl_get_str(to, "address", 1, 255, &addr, &why) == 0) {
        a = user_account(u, account);
        if (!a) {
            client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such account");
            return;
        }
        char in[1024];
        snprintf(in, sizeof(in), "%.*s", (int)addr.len, addr.p);
        if (!a->ops || a->ops->normalize_address(in, address, sizeof(address), &why) < 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "to.address: %s", a->ops ? why : "unsupported network");
            client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
            return;
        }
        if (!account_usable(a)) {
            client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "the account is not online");
            return;
        }
    } else {
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST,
                     "to must be {contact: id} or {account: id, address: str}");
        return;
    }

    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, has_cid ? 4 : 3);
    cl_pack_kstr(&e, "address", address);
    cl_pack_kstrn(&e, "body", body.p, body.len);
    cl_pack_kstr(&e, "network", a->network);
    if (has_cid)
        cl_pack_kstrn(&e, "cid", cid.p, cid.len);
    send_up(r, CPM_OUT_REQ, cl->slot, cl->gen, u->uid, a->id, 0, req->id, &e);

    /* Back-pressure: a full queue stops reading this client. */
    if (a->q_len >= DP_QUEUE_PAUSE && !cl->paused) {
        struct dp_client **np = realloc(a->paused, (a->n_paused + 1) * sizeof(*np));
        if (np) {
            a->paused = np;
            a->paused[a->n_paused++] = cl;
            cl->paused = true;
            dp_conn_pause(cl->c, true);
        }
    }
}

/* add_contact / remove_contact */
static void
handle_contact_op(struct dp_client *cl, const struct cl_msg *req, bool add)
{
    struct dp_user *u = cl->user;
    uint64_t account;
    struct im_str addr, name = { "", 0 };
    const char *why;
    int rc;

    if ((rc = cl_get_uint(&req->root, "account", &account, &why)) != 0 ||
        (rc = cl_get_str(&req->root, "address", 1, 255, &addr, &why)) != 0 ||
        (add && (rc = cl_get_str(&req->root, "name", 0, 255, &name, &why)) == -IM_EINVAL)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "%s", rc == -IM_ENOTFOUND ? "account and address are required" : why);
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    struct dp_account *a = user_account(u, account);
    if (!a) {
        client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such account");
        return;
    }
    char in[1024], address[1024];
    snprintf(in, sizeof(in), "%.*s", (int)addr.len, addr.p);
    if (!a->ops || a->ops->normalize_address(in, address, sizeof(address), &why) < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "address: %s", a->ops ? why : "unsupported network");
        client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    struct im_str av = { address, (uint32_t)strlen(address) };
    struct dp_contact *c = contact_find(a, address);
    if (!add && !c) {
        client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such contact");
        return;
    }
    if (a->ops->add_contact) {
        /* The server keeps the list: it changes there, and the roster push
         * brings the new list back as a contacts event. */
        if (!a->online) {
            client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "the account is not online");
            return;
        }
        rc = add ? a->ops->add_contact(a->sess, req->id, av, name)
                 : a->ops->remove_contact(a->sess, req->id, av);
        if (rc < 0) {
            client_error(cl, true, req->id, CL_ERR_INTERNAL, im_strerror(rc));
            return;
        }
        client_ok(cl, req->id);
        return;
    }
    /* imfuse keeps the list */
    if (add) {
        if (!c) {
            struct dp_contact *nc = realloc(a->contacts, (a->n_contacts + 1) * sizeof(*nc));
            if (!nc)
                abort();
            a->contacts = nc;
            c = &a->contacts[a->n_contacts++];
            memset(c, 0, sizeof(*c));
            c->address = xstrdup(address);
            c->presence = IM_PRES_UNKNOWN;
        } else {
            free(c->name);
        }
        c->name = view_dup(name);
    } else {
        uint32_t i = (uint32_t)(c - a->contacts);
        free(c->address); free(c->name);
        for (uint32_t j = 0; j < c->n_groups; j++)
            free(c->groups[j]);
        free(c->groups);
        memmove(&a->contacts[i], &a->contacts[i + 1], (a->n_contacts - i - 1) * sizeof(*c));
        a->n_contacts--;
    }
    client_ok(cl, req->id);
    contacts_changed(a);
    account_push_watch(a);
}

/* One decoded frame from a client. */
static void
client_request(struct dp_client *cl, struct cl_msg *req, const uint8_t *body, uint32_t len)
{
    struct dp_relay *r = cl->r;
    struct im_str op = req->op;

    if (cl_view_eq(op, "ping")) {
        client_ok(cl, req->id);
        return;
    }
    if (cl_view_eq(op, "login") || cl_view_eq(op, "register")) {
        if (cl->user) {
            client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, "already logged in");
            return;
        }
        goto forward;
    }
    static const char *const known[] = {
        "logout", "link", "update_account", "unlink", "accounts", "contacts", "add_contact",
        "remove_contact", "set_unified", "unified", "send", "ack",
    };
    bool is_known = false;
    for (size_t i = 0; i < IM_ARRAY_SIZE(known) && !is_known; i++)
        is_known = cl_view_eq(op, known[i]);
    if (!is_known) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown op \"%.*s\"", (int)(op.len > 64 ? 64 : op.len), op.p);
        client_error(cl, true, req->id, CL_ERR_UNSUPPORTED, msg);
        return;
    }
    if (!cl->user) {
        client_error(cl, true, req->id, CL_ERR_NOT_LOGGED_IN, "log in first");
        return;
    }
    if (cl_view_eq(op, "logout")) {
        struct dp_user *u = cl->user;
        struct dp_client **pp = &u->clients;
        while (*pp != cl)
            pp = &(*pp)->unext;
        *pp = cl->unext;
        cl->user = NULL;
        cl->unext = NULL;
        send_up(r, CPM_CONN_LOGOUT, cl->slot, cl->gen, u->uid, 0, 0, 0, NULL);
        user_maybe_free(r, u);
        client_ok(cl, req->id);
        return;
    }
    if (cl_view_eq(op, "accounts")) {
        reply_accounts(cl, req->id);
        return;
    }
    if (cl_view_eq(op, "contacts")) {
        reply_contacts(cl, req->id);
        return;
    }
    if (cl_view_eq(op, "unified")) {
        reply_unified(cl, req->id);
        return;
    }
    if (cl_view_eq(op, "send")) {
        handle_send(cl, req);
        return;
    }
    if (cl_view_eq(op, "add_contact") || cl_view_eq(op, "remove_contact")) {
        handle_contact_op(cl, req, cl_view_eq(op, "add_contact"));
        return;
    }

forward:;
    /* Served by the controlplane: hand over the frame as it came. */
    struct dp_msg m = { .type = CPM_CLIENT_REQ, .conn = cl->slot, .gen = cl->gen,
                        .uid = cl->user ? cl->user->uid : 0 };
    m.data = malloc(len + 4 + 64);
    if (!m.data)
        abort();
    uint8_t *d = m.data;
    d[0] = (uint8_t)(len >> 24); d[1] = (uint8_t)(len >> 16); d[2] = (uint8_t)(len >> 8); d[3] = (uint8_t)len;
    memcpy(d + 4, body, len);
    /* the peer address rides after the frame, NUL-terminated */
    size_t pl = im_strlcpy((char *)d + 4 + len, dp_conn_peer(cl->c), 64);
    m.len = len + 4 + (uint32_t)(pl < 63 ? pl : 63) + 1;
    dp_chan_send_up(r->ch, &m);
}

/* Decode every complete frame in the receive buffer. */
static void
client_process(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    size_t off = 0;

    while (!cl->closing) {
        const uint8_t *body;
        uint32_t blen;
        long n = cl_frame_split(cl->rx + off, cl->rx_len - off, &body, &blen);
        if (n == -EAGAIN)
            break;
        if (n < 0) {
            STAT_ADD(r, frames_bad, 1);
            client_error(cl, false, 0, CL_ERR_BAD_REQUEST,
                         n == -IM_ETOOBIG ? "frame length out of range (1 byte to 1 MiB)"
                                          : "frame length out of range (1 byte to 1 MiB)");
            client_close(cl);
            return;
        }
        STAT_ADD(r, frames_in, 1);
        struct cl_msg req;
        if (cl_msg_decode(&req, body, blen) < 0) {
            STAT_ADD(r, frames_bad, 1);
            client_error(cl, false, 0, CL_ERR_BAD_REQUEST, "frame is not one msgpack map with string keys");
            client_close(cl);
            return;
        }
        if (req.op.len == 0 || !req.has_id) {
            STAT_ADD(r, frames_bad, 1);
            client_error(cl, false, 0, CL_ERR_BAD_REQUEST,
                         req.op.len == 0 ? "op is missing or not a string" : "id is missing or not an unsigned integer");
            cl_msg_free(&req);
            client_close(cl);
            return;
        }
        client_request(cl, &req, body, blen);
        cl_msg_free(&req);
        off += (size_t)n;
    }
    if (off) {
        memmove(cl->rx, cl->rx + off, cl->rx_len - off);
        cl->rx_len -= off;
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
            client_error(cl, false, 0, CL_ERR_BAD_REQUEST, "frame too large");
            client_close(cl);
            return;
        }
        uint8_t *nb = realloc(cl->rx, cap);
        if (!nb)
            abort();
        cl->rx = nb;
        cl->rx_cap = cap;
    }
    memcpy(cl->rx + cl->rx_len, p, n);
    cl->rx_len += n;
    client_process(cl);
}

static void
cl_on_close(struct dp_conn *c, int reason)
{
    struct dp_client *cl = dp_conn_ud(c);
    struct dp_relay *r = cl->r;
    uint64_t uid = 0;

    if (cl->user) {
        struct dp_user *u = cl->user;
        struct dp_client **pp = &u->clients;
        while (*pp != cl)
            pp = &(*pp)->unext;
        *pp = cl->unext;
        uid = u->uid;
        user_maybe_free(r, u);
    }
    send_up(r, CPM_CONN_CLOSED, cl->slot, cl->gen, uid, 0, 0, 0, NULL);
    r->slots[cl->slot] = NULL;
    r->gens[cl->slot]++;
    r->free_slots[r->n_free++] = cl->slot;
    STAT_SUB(r, clients_open, 1);
    free(cl->rx);
    free(cl);
}

static void
client_close(struct dp_client *cl)
{
    if (!cl->closing) {
        cl->closing = true;
        dp_conn_close(cl->c);
    }
}

static const struct dp_conn_cb client_cb = {
    .on_data = cl_on_data,
    .on_close = cl_on_close,
};

static void
on_accept(void *ud, struct dp_conn *c)
{
    struct dp_relay *r = ud;
    struct dp_client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        abort();
    if (!r->n_free) {
        uint32_t n = r->n_slots ? r->n_slots * 2 : 1024;
        r->slots = realloc(r->slots, n * sizeof(*r->slots));
        r->gens = realloc(r->gens, n * sizeof(*r->gens));
        r->free_slots = realloc(r->free_slots, n * sizeof(*r->free_slots));
        if (!r->slots || !r->gens || !r->free_slots)
            abort();
        for (uint32_t i = n; i > r->n_slots; i--) {
            r->slots[i - 1] = NULL;
            r->gens[i - 1] = 1;
            r->free_slots[r->n_free++] = i - 1;
        }
        r->n_slots = n;
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

static struct dp_client *
client_by_id(struct dp_relay *r, uint32_t slot, uint32_t gen)
{
    if (slot >= r->n_slots)
        return NULL;
    struct dp_client *cl = r->slots[slot];
    return cl && cl->gen == gen ? cl : NULL;
}

/* ------------------------------------------------------------------------ */
/* commands from the controlplane                                            */

static void
handle_deliver(struct dp_relay *r, struct dp_msg *m)
{
    struct dp_user *u = user_find(r, m->uid);
    struct dp_account *a = account_find(r, m->account);

    /* The message is durable now: let the network have its acknowledgement. */
    if (m->b && a && a->sess && a->ops->committed)
        a->ops->committed(a->sess, m->b);
    if (!u || !m->data)
        return;

    struct cl_msg pm;
    if (cl_msg_decode(&pm, (uint8_t *)m->data + 4, m->len - 4))
        return;
    struct im_str from;
    const char *why;
    uint64_t account = 0, contact = 0;
    if (cl_get_str(&pm.root, "from", 1, 4096, &from, &why) == 0 &&
        cl_get_uint(&pm.root, "account", &account, &why) == 0) {
        char f[1024];
        snprintf(f, sizeof(f), "%.*s", (int)from.len, from.p);
        contact = unified_of(u, account, f);
    }
    struct cl_enc e;
    cl_enc_init(&e);
    uint32_t n = pm.root.via.map.size;
    msgpack_pack_map(&e.pk, n + 2 + (contact ? 1 : 0));
    cl_pack_kstr(&e, "op", "message");
    cl_pack_kuint(&e, "seq", m->a);
    if (contact)
        cl_pack_kuint(&e, "contact", contact);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_object(&e.pk, pm.root.via.map.ptr[i].key);
        msgpack_pack_object(&e.pk, pm.root.via.map.ptr[i].val);
    }
    cl_msg_free(&pm);

    if (m->conn) {
        struct dp_client *cl = client_by_id(r, m->conn, m->gen);
        if (cl && cl->user == u) {
            client_send_enc(cl, &e);
            STAT_ADD(r, msgs_delivered, 1);
        } else {
            cl_enc_free(&e);
        }
    } else {
        for (struct dp_client *cl = u->clients; cl; cl = cl->unext)
            STAT_ADD(r, msgs_delivered, 1);
        user_broadcast(r, u, &e);
    }
}

static void
handle_login_ok(struct dp_relay *r, struct dp_msg *m)
{
    struct dp_client *cl = client_by_id(r, m->conn, m->gen);
    struct cl_msg pm;
    struct im_str user;
    const msgpack_object *unified = NULL;
    const char *why;

    if (!cl || cl->user || !m->data || cl_msg_decode(&pm, (uint8_t *)m->data + 4, m->len - 4))
        return;
    if (cl_get_str(&pm.root, "user", 1, 64, &user, &why)) {
        cl_msg_free(&pm);
        return;
    }
    char name[65];
    snprintf(name, sizeof(name), "%.*s", (int)user.len, user.p);
    struct dp_user *u = user_get(r, m->uid, name);
    if (cl_get_array(&pm.root, "unified", &unified, &why) == 0 && !u->unified_raw)
        unified_set(u, unified);
    uint64_t req_id = 0;
    (void)cl_get_uint(&pm.root, "id", &req_id, &why);
    cl_msg_free(&pm);

    cl->user = u;
    cl->unext = u->clients;
    u->clients = cl;
    STAT_ADD(r, logins_ok, 1);

    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", req_id);
    cl_pack_kstr(&e, "user", name);
    cl_pack_kuint(&e, "queued", m->a);
    client_send_enc(cl, &e);
}

static void
handle_out_accepted(struct dp_relay *r, struct dp_msg *m)
{
    struct dp_account *a = account_find(r, m->account);
    struct cl_msg pm;
    struct im_str address, body;
    const char *why;

    if (!a || !m->data || cl_msg_decode(&pm, (uint8_t *)m->data + 4, m->len - 4))
        return;
    if (cl_get_str(&pm.root, "address", 1, 1024, &address, &why) ||
        cl_get_str(&pm.root, "body", 1, 65536, &body, &why)) {
        cl_msg_free(&pm);
        return;
    }
    struct dp_out *o = calloc(1, sizeof(*o));
    if (!o)
        abort();
    o->msg = m->a;
    o->address = view_dup(address);
    o->body = view_dup(body);
    cl_msg_free(&pm);
    if (a->q_tail)
        a->q_tail->next = o;
    else
        a->q_head = o;
    a->q_tail = o;
    if (!a->q_unsent)
        a->q_unsent = o;
    a->q_len++;
    STAT_ADD(r, send_queue_len, 1);
    account_flush_queue(a);
}

static void
handle_user_del(struct dp_relay *r, uint64_t uid)
{
    struct dp_user *u = user_find(r, uid);
    if (!u)
        return;
    for (struct dp_client *cl = u->clients; cl; cl = cl->unext)
        client_close(cl);
    /* accounts: unlink each (the user is freed with the last one if no clients) */
    while (u->accounts) {
        struct dp_account *a = u->accounts;
        if (!a->unext && !u->clients) {
            account_unlink(r, a);
            return;
        }
        account_unlink(r, a);
    }
}

static void
handle_down(struct dp_relay *r, struct dp_msg *m)
{
    switch (m->type) {
    case DPM_CONN_SEND:
    case DPM_CONN_CLOSE: {
        struct dp_client *cl = client_by_id(r, m->conn, m->gen);
        if (cl && m->data)
            client_write(cl, m->data, m->len);
        if (cl && m->type == DPM_CONN_CLOSE)
            client_close(cl);
        break;
    }
    case DPM_LOGIN_OK:
        handle_login_ok(r, m);
        break;
    case DPM_LOGOUT: {
        struct dp_client *cl = client_by_id(r, m->conn, m->gen);
        if (cl)
            client_close(cl);
        break;
    }
    case DPM_ACCOUNT_UP:
        handle_account_up(r, m);
        break;
    case DPM_ACCOUNT_DOWN: {
        struct dp_account *a = account_find(r, m->account);
        if (a && a->user && a->user->uid == m->uid)
            account_unlink(r, a);
        break;
    }
    case DPM_DELIVER:
        handle_deliver(r, m);
        break;
    case DPM_UNIFIED: {
        struct dp_user *u = user_find(r, m->uid);
        struct cl_msg pm;
        const msgpack_object *arr;
        const char *why;
        if (u && m->data && cl_msg_decode(&pm, (uint8_t *)m->data + 4, m->len - 4) == 0) {
            if (cl_get_array(&pm.root, "unified", &arr, &why) == 0)
                unified_set(u, arr);
            cl_msg_free(&pm);
        }
        break;
    }
    case DPM_OUT_ACCEPTED:
        handle_out_accepted(r, m);
        break;
    case DPM_USER_DEL:
        handle_user_del(r, m->uid);
        break;
    case DPM_DRAIN:
        dp_relay_stop_listening(r);
        break;
    case DPM_SHUTDOWN:
        dp_relay_stop_listening(r);
        for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
            for (struct dp_account *a = r->accounts[i]; a; a = a->hnext)
                account_detach_session(a, true);
        for (uint32_t i = 0; i < r->n_slots; i++)
            if (r->slots[i])
                client_close(r->slots[i]);
        break;
    default:
        break;
    }
}

static void
relay_poll(void *ud)
{
    struct dp_relay *r = ud;
    struct dp_msg m;

    for (int i = 0; i < DP_DOWN_BATCH && dp_chan_recv_down(r->ch, &m) == 0; i++) {
        handle_down(r, &m);
        dp_msg_release(&m);
    }
    dp_chan_flush_up(r->ch);
}

static void
relay_tick(void *ud, uint64_t now)
{
    struct dp_relay *r = ud;

    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++) {
        for (struct dp_account *a = r->accounts[i]; a; a = a->hnext) {
            if (!a->sess) {
                if (a->next_try && a->next_try <= now && a->ops && !a->conn)
                    account_connect(a, now);
                continue;
            }
            if (a->tls_pending)
                continue;
            int rc = a->ops->tick(a->sess, account_time(a));
            if (rc < 0)
                account_drop_conn(a, rc);
        }
    }
    dp_chan_flush_up(r->ch);
}

/* ------------------------------------------------------------------------ */

struct dp_relay *
dp_relay_new(struct dp_worker *w, struct dp_chan *ch)
{
    struct dp_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->w = w;
    r->ch = ch;
    r->rng = im_now_ms() ^ 0x9e3779b97f4a7c15ULL;
    dp_worker_set_hooks(w, relay_poll, relay_tick, r);
    return r;
}

void
dp_relay_free(struct dp_relay *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++) {
        while (r->accounts[i]) {
            struct dp_account *a = r->accounts[i];
            r->accounts[i] = a->hnext;
            while (a->q_head) {
                struct dp_out *o = a->q_head;
                a->q_head = o->next;
                free(o->address); free(o->body); free(o);
            }
            if (a->sess)
                a->ops->destroy(a->sess);
            free(a->paused);
            contacts_free(a->contacts, a->n_contacts);
            account_free_cfg(a);
            free(a);
        }
        while (r->users[i]) {
            struct dp_user *u = r->users[i];
            r->users[i] = u->hnext;
            unified_free(u);
            free(u);
        }
    }
    for (uint32_t i = 0; i < r->n_slots; i++)
        if (r->slots[i]) {
            free(r->slots[i]->rx);
            free(r->slots[i]);
        }
    free(r->slots);
    free(r->gens);
    free(r->free_slots);
    free(r);
}

int
dp_relay_listen(struct dp_relay *r, const char *host, uint16_t port, bool tls, char *why, size_t whysz)
{
    int err = 0;
    if (r->n_listeners == IM_ARRAY_SIZE(r->listeners)) {
        snprintf(why, whysz, "too many listeners");
        return -IM_ELIMIT;
    }
    struct dp_listener *l = dp_listen(r->w, host, port, tls, on_accept, r, &err);
    if (!l) {
        snprintf(why, whysz, "cannot listen on %s:%u: %s", host, port, im_strerror(err));
        return err ? err : -EINVAL;
    }
    r->listeners[r->n_listeners++] = l;
    return 0;
}

void
dp_relay_stop_listening(struct dp_relay *r)
{
    for (unsigned i = 0; i < r->n_listeners; i++)
        dp_listener_close(r->listeners[i]);
    r->n_listeners = 0;
}

void
dp_relay_stats_read(const struct dp_relay *r, struct dp_relay_stats *out)
{
    const _Atomic uint64_t *src = (const _Atomic uint64_t *)&r->st;
    uint64_t *dst = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        dst[i] = atomic_load_explicit(&src[i], memory_order_relaxed);
}
