/*
 * dp_relay.c - the relay's plane dispatcher: commands from the controlplane
 * (DPM_*) handed to the file that owns them, the way up (CPM_*), the users
 * and accounts tables, and the public API (dp_relay.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_chan.h"
#include "dp_worker.h"
#include "dp_relay_int.h"

/* ------------------------------------------------------------------------ */
/* tables                                                                    */

static unsigned
hash64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (unsigned)(k & (DP_HASH_BUCKETS - 1));
}

struct dp_user *
dp_user_find(struct dp_relay *r, uint64_t uid)
{
    for (struct dp_user *u = r->users[hash64(uid)]; u; u = u->hnext)
        if (u->uid == uid)
            return u;
    return NULL;
}

struct dp_user *
dp_user_get(struct dp_relay *r, uint64_t uid, const char *name)
{
    struct dp_user *u = dp_user_find(r, uid);
    if (u)
        return u;
    u = calloc(1, sizeof(*u));
    if (!u) {
        dp_relay_oom(r, "user");
        return NULL;
    }
    u->uid = uid;
    im_strlcpy(u->name, name ? name : "", sizeof(u->name));
    unsigned h = hash64(uid);
    u->hnext = r->users[h];
    r->users[h] = u;
    return u;
}

void
dp_user_maybe_free(struct dp_relay *r, struct dp_user *u)
{
    if (u->clients || u->accounts)
        return;
    struct dp_user **pp = &r->users[hash64(u->uid)];
    while (*pp != u)
        pp = &(*pp)->hnext;
    *pp = u->hnext;
    dp_unified_free(u);
    free(u);
}

struct dp_account *
dp_account_find(struct dp_relay *r, uint64_t id)
{
    for (struct dp_account *a = r->accounts[hash64(id)]; a; a = a->hnext)
        if (a->id == id)
            return a;
    return NULL;
}

struct dp_account *
dp_user_account(struct dp_user *u, uint64_t id)
{
    for (struct dp_account *a = u->accounts; a; a = a->unext)
        if (a->id == id)
            return a;
    return NULL;
}

void
dp_account_hash_add(struct dp_relay *r, struct dp_account *a)
{
    unsigned h = hash64(a->id);
    a->hnext = r->accounts[h];
    r->accounts[h] = a;
}

void
dp_account_hash_del(struct dp_relay *r, struct dp_account *a)
{
    struct dp_account **pp = &r->accounts[hash64(a->id)];
    while (*pp && *pp != a)
        pp = &(*pp)->hnext;
    BUG_ON(!*pp);
    *pp = a->hnext;
}

uint64_t
dp_relay_rand(struct dp_relay *r)
{
    /* xorshift64*: jitter only, not security */
    r->rng ^= r->rng >> 12;
    r->rng ^= r->rng << 25;
    r->rng ^= r->rng >> 27;
    return r->rng * 2685821657736338717ULL;
}

void
dp_relay_oom(struct dp_relay *r, const char *what)
{
    STAT_ADD(r, oom, 1);
    DP_LOG(IM_LOG_ERROR, "out of memory (%s): the operation is dropped", what);
}

static void orphan_on_open(struct dp_conn *c, int status, const char *detail) { }
static void orphan_on_data(struct dp_conn *c, const uint8_t *p, size_t n) { }
static void orphan_on_close(struct dp_conn *c, int reason) { }

const struct dp_conn_cb dp_orphan_cb = {
    .on_open = orphan_on_open, .on_data = orphan_on_data, .on_close = orphan_on_close,
};

char *
dp_strdup(struct dp_relay *r, struct im_str v)
{
    char *d = cl_strdup(v);
    if (!d)
        dp_relay_oom(r, "string");
    return d;
}

/* ------------------------------------------------------------------------ */
/* the way up                                                                */

int
dp_up(struct dp_relay *r, struct dp_msg *m, struct cl_enc *e)
{
    m->data = NULL;
    m->len = 0;
    if (e) {
        int rc = dp_msg_set_frame(m, e);
        if (rc < 0) {
            STAT_ADD(r, up_dropped, 1);
            DP_LOG(IM_LOG_ERROR, "plane message %u for uid %llu: %s: not sent", m->type,
                (unsigned long long)m->uid, im_strerror(rc));
            return rc;
        }
    }
    dp_chan_send_up(r->ch, m);
    return 0;
}

void
dp_relay_flush_sent(struct dp_relay *r)
{
    if (!r->n_sent)
        return;
    struct dp_msg m = { .type = CPM_OUT_DONE };
    if (dp_msg_copy(&m, r->sent, (size_t)r->n_sent * sizeof(*r->sent)) == 0)
        dp_chan_send_up(r->ch, &m);
    else
        dp_relay_oom(r, "sent message ids");    /* left in the outbox: sent again after a restart */
    r->n_sent = 0;
}

void
dp_relay_sent(struct dp_relay *r, uint64_t msg)
{
    if (r->n_sent == r->cap_sent) {
        uint32_t n = r->cap_sent ? r->cap_sent * 2 : 256;
        uint64_t *ns = realloc(r->sent, n * sizeof(*ns));
        if (!ns) {
            dp_relay_flush_sent(r);     /* make room: send what there is now */
            if (!r->cap_sent) {
                dp_relay_oom(r, "sent message ids");
                return;
            }
        } else {
            r->sent = ns;
            r->cap_sent = n;
        }
    }
    r->sent[r->n_sent++] = msg;
}

/* ------------------------------------------------------------------------ */
/* commands from the controlplane                                            */

static void
user_del(struct dp_relay *r, uint64_t uid)
{
    struct dp_user *u = dp_user_find(r, uid);
    if (!u)
        return;
    for (struct dp_client *cl = u->clients; cl; cl = cl->unext)
        dp_client_close(cl);
    /* The user is freed with its last account unless clients remain;
     * their on_close frees it then. */
    while (u->accounts) {
        bool last = !u->accounts->unext && !u->clients;
        dp_account_destroy(u->accounts, true);
        if (last)
            return;
    }
}

static void
unified_update(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_user *u = dp_user_find(r, m->uid);
    struct cl_msg pm;
    const msgpack_object *arr;
    const char *why;
    if (!u || dp_msg_decode(m, &pm) < 0)
        return;
    if (cl_get_array(&pm.root, "unified", &arr, &why) == 0)
        dp_unified_set(r, u, arr);
    cl_msg_free(&pm);
}

static void
shutdown_all(struct dp_relay *r)
{
    dp_relay_stop_listening(r);
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
        for (struct dp_account *a = r->accounts[i]; a; a = a->hnext)
            dp_account_detach(a, true);
    for (uint32_t i = 1; i < r->n_slots; i++)
        if (r->slots[i])
            dp_client_close(r->slots[i]);
}

static void
handle_down(struct dp_relay *r, struct dp_msg *m)
{
    switch ((enum dp_msg_type)m->type) {
    case DPM_CONN_SEND:
    case DPM_CONN_CLOSE: {
        struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
        if (cl && m->len)
            dp_client_write(cl, dp_msg_bytes(m), m->len);
        if (cl && m->type == DPM_CONN_CLOSE)
            dp_client_close(cl);
        break;
    }
    case DPM_LOGIN_OK:
        dp_client_login_ok(r, m);
        break;
    case DPM_LOGOUT: {
        struct dp_client *cl = dp_client_by_id(r, m->conn, m->gen);
        if (cl)
            dp_client_close(cl);
        break;
    }
    case DPM_ACCOUNT_UP:
        dp_account_up(r, m);
        break;
    case DPM_ACCOUNT_DOWN: {
        struct dp_account *a = dp_account_find(r, m->account);
        if (a && a->user->uid == m->uid)
            dp_account_destroy(a, true);
        break;
    }
    case DPM_DELIVER:
        dp_client_deliver(r, m);
        break;
    case DPM_REPLAY_END:
        dp_client_replay_end(r, m);
        break;
    case DPM_UNIFIED:
        unified_update(r, m);
        break;
    case DPM_OUT_ACCEPTED:
        dp_account_accepted(r, m);
        break;
    case DPM_RESOLVED:
        dp_account_resolved(r, m);
        break;
    case DPM_USER_DEL:
        user_del(r, m->uid);
        break;
    case DPM_DRAIN:
        dp_relay_stop_listening(r);
        break;
    case DPM_SHUTDOWN:
        shutdown_all(r);
        break;
    default:
        DP_LOG(IM_LOG_ERROR, "unknown command %u from the controlplane", m->type);
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
    dp_relay_flush_sent(r);
    dp_chan_flush_up(r->ch);
}

static void
relay_tick(void *ud, uint64_t now)
{
    struct dp_relay *r = ud;

    dp_admit_tick(r, now);
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
        for (struct dp_account *a = r->accounts[i], *next; a; a = next) {
            next = a->hnext;
            dp_account_tick(a, now);
        }
    dp_relay_flush_sent(r);
    dp_chan_flush_up(r->ch);
}

/* ------------------------------------------------------------------------ */
/* public API                                                                */

struct dp_relay *
dp_relay_new(struct dp_worker *w, struct dp_chan *ch)
{
    struct dp_relay *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->w = w;
    r->ch = ch;
    r->rng = im_now_ms() ^ 0x9e3779b97f4a7c15ULL;
    r->lim = (struct dp_client_limits)DP_CLIENT_LIMITS_DEFAULT;
    dp_worker_set_hooks(w, relay_poll, relay_tick, r);
    return r;
}

void
dp_relay_set_limits(struct dp_relay *r, const struct dp_client_limits *l)
{
    r->lim = *l;
}

void
dp_relay_free(struct dp_relay *r)
{
    if (!r)
        return;
    /* The worker is stopped: sessions go without goodbyes, clients
     * without on_close (the worker frees their connections). */
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
        while (r->accounts[i])
            dp_account_destroy(r->accounts[i], false);
    dp_clients_free(r);
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
        while (r->users[i]) {
            struct dp_user *u = r->users[i];
            r->users[i] = u->hnext;
            dp_unified_free(u);
            free(u);
        }
    dp_admit_free(r);
    free(r->slots);
    free(r->gens);
    free(r->free_slots);
    free(r->sent);
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
    struct dp_listener *l = dp_listen(r->w, host, port, tls, dp_client_accept, r, &err);
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

uint16_t
dp_relay_listen_port(const struct dp_relay *r, unsigned n)
{
    return n < r->n_listeners ? dp_listener_port(r->listeners[n]) : 0;
}

void
dp_relay_stats_read(const struct dp_relay *r, struct dp_relay_stats *out)
{
    struct dp_relay_live *st = (struct dp_relay_live *)(uintptr_t)&r->st;
#define DP_X(f) out->f = DP_CTR_READ(st->f);
    DP_RELAY_COUNTERS(DP_X)
#undef DP_X
}

struct dp_worker *
dp_relay_worker(const struct dp_relay *r)
{
    return r->w;
}
