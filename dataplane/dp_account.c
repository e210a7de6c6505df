/*
 * dp_account.c - emulated sessions: an account's configuration from the
 * controlplane, its connection and adapter session, the adapter's events,
 * its contact list, its ordered send queue and its reconnect backoff.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "dp_worker.h"
#include "dp_relay_int.h"

static void account_connect(struct dp_account *a, uint64_t now);
static void account_flush_queue(struct dp_account *a);

/* The time as adapters are given it: the worker's clocks (monotonic for
 * their timers, wall for message.ts). */
static struct im_time
acct_now(const struct dp_account *a)
{
    return dp_worker_time(a->r->w);
}

/* ------------------------------------------------------------------------ */
/* events to the user and state up                                           */

void
dp_pack_contact(struct cl_enc *e, const struct dp_account *a, const struct dp_contact *c)
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
    dp_user_broadcast(a->r, a->user, &e);
}

static void
pack_contact_list(struct cl_enc *e, const struct dp_account *a)
{
    cl_pack_key(e, "contacts");
    msgpack_pack_array(&e->pk, a->n_contacts);
    for (uint32_t i = 0; i < a->n_contacts; i++)
        dp_pack_contact(e, a, &a->contacts[i]);
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
    struct dp_msg m = { .type = CPM_ACCOUNT_STATE, .uid = a->user->uid, .account = a->id };
    m.u.state.state = st;
    dp_up(a->r, &m, &e);
}

/* ------------------------------------------------------------------------ */
/* the contact list                                                          */

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

/* msgpack sizes (the smallest encodings, as msgpack-c packs). */
static size_t mp_str(size_t n) { return n + (n < 32 ? 1 : n < 256 ? 2 : n < 65536 ? 3 : 5); }
static size_t mp_uint(uint64_t v) { return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9; }
static size_t mp_hdr(size_t n) { return n < 16 ? 1 : n < 65536 ? 3 : 5; }

/* The bytes dp_pack_contact() packs for c, or a few more (the longest
 * presence counted). */
static size_t
contact_size(const struct dp_account *a, const struct dp_contact *c)
{
    size_t n = mp_hdr(6) + mp_str(7) + mp_uint(a->id) + mp_str(7) + mp_str(strlen(a->network)) +
               mp_str(7) + mp_str(strlen(c->address)) + mp_str(4) + mp_str(strlen(c->name)) +
               mp_str(6) + mp_hdr(c->n_groups) + mp_str(8) + mp_str(sizeof("available") - 1);
    for (uint32_t i = 0; i < c->n_groups; i++)
        n += mp_str(strlen(c->groups[i]));
    return n;
}

/*
 * A list must fit a frame, with room for an account's configuration around
 * it (DPM_ACCOUNT_UP carries it at start-up).  A list from the server past
 * that is cut to the entries that fit, in the server's order, and the user
 * is told why; the list imfuse keeps refuses the entry that would not fit.
 */
#define DP_CONTACTS_BUDGET  (CL_FRAME_MAX - 64u * 1024)

/* How many of a's first contacts fit DP_CONTACTS_BUDGET; *bytes their size. */
static uint32_t
contacts_fitting(const struct dp_account *a, size_t *bytes)
{
    size_t total = mp_hdr(a->n_contacts);
    uint32_t i;
    for (i = 0; i < a->n_contacts; i++) {
        size_t n = contact_size(a, &a->contacts[i]);
        if (total + n > DP_CONTACTS_BUDGET)
            break;
        total += n;
    }
    if (bytes)
        *bytes = total;
    return i;
}

static void
contact_clear(struct dp_contact *c)
{
    free(c->address);
    free(c->name);
    for (uint32_t j = 0; j < c->n_groups; j++)
        free(c->groups[j]);
    free(c->groups);
}

static void
contacts_fit(struct dp_account *a)
{
    uint32_t n = a->n_contacts, keep = contacts_fitting(a, NULL);
    if (keep == n)
        return;
    for (uint32_t i = keep; i < n; i++)
        contact_clear(&a->contacts[i]);
    a->n_contacts = keep;
    STAT_ADD(a->r, contacts_cut, 1);
    char d[160];
    snprintf(d, sizeof(d), "contact list cut to %u of %u entries: the rest would pass the 1 MiB "
             "frame limit", keep, n);
    DP_LOG(IM_LOG_WARN, "account %llu (%s): %s", (unsigned long long)a->id, a->login, d);
    account_state(a, a->state, d);
}

/* Persist the account's list and push it to the user. */
static void
contacts_changed(struct dp_account *a)
{
    contacts_fit(a);
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    pack_contact_list(&e, a);
    struct dp_msg m = { .type = CPM_CONTACTS, .uid = a->user->uid, .account = a->id };
    dp_up(a->r, &m, &e);

    if (!a->user->clients)
        return;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "op", "contacts");
    cl_pack_kuint(&e, "account", a->id);
    pack_contact_list(&e, a);
    dp_user_broadcast(a->r, a->user, &e);
}

/* Fill c from one stored entry or adapter contact; false on ENOMEM (c partly
 * filled: contacts_free() it). */
static bool
contact_fill(struct dp_relay *r, struct dp_contact *c, struct im_str addr, struct im_str name,
             const struct im_str *groups, uint32_t n_groups, enum im_presence pres)
{
    c->presence = pres;
    if (!(c->address = dp_strdup(r, addr)) || !(c->name = dp_strdup(r, name)))
        return false;
    c->groups = calloc(n_groups + 1, sizeof(char *));
    if (!c->groups) {
        dp_relay_oom(r, "contact groups");
        return false;
    }
    for (uint32_t j = 0; j < n_groups; j++) {
        if (!(c->groups[c->n_groups] = dp_strdup(r, groups[j])))
            return false;
        c->n_groups++;
    }
    return true;
}

/* Load a stored contact list (array of entries) into the account. */
static void
contacts_load(struct dp_account *a, const msgpack_object *arr)
{
    struct dp_relay *r = a->r;
    contacts_free(a->contacts, a->n_contacts);
    a->contacts = NULL;
    a->n_contacts = 0;
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return;
    struct dp_contact *list = calloc(arr->via.array.size + 1, sizeof(*list));
    if (!list) {
        dp_relay_oom(r, "contact list");
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < arr->via.array.size; i++) {
        const msgpack_object *o = &arr->via.array.ptr[i], *groups;
        struct im_str addr, name = { "", 0 }, *g = NULL;
        uint32_t ng = 0;
        const char *why;
        if (o->type != MSGPACK_OBJECT_MAP || cl_get_str(o, "address", 1, DP_ADDR_MAX, &addr, &why))
            continue;
        (void)cl_get_str(o, "name", 0, 1024, &name, &why);
        bool ok = true;
        if (cl_get_array(o, "groups", &groups, &why) == 0 && groups->via.array.size) {
            g = calloc(groups->via.array.size, sizeof(*g));
            ok = g != NULL;
            for (uint32_t j = 0; ok && j < groups->via.array.size; j++) {
                const msgpack_object *go = &groups->via.array.ptr[j];
                if (go->type == MSGPACK_OBJECT_STR)
                    g[ng++] = (struct im_str){ go->via.str.ptr, go->via.str.size };
            }
        }
        if (ok)
            ok = contact_fill(r, &list[n], addr, name, g, ng, IM_PRES_UNKNOWN);
        else
            dp_relay_oom(r, "contact groups");
        free(g);
        n++;
        if (!ok) {
            contacts_free(list, n);
            return;
        }
    }
    a->contacts = list;
    a->n_contacts = n;
}

struct dp_contact *
dp_contact_find(struct dp_account *a, const char *address)
{
    for (uint32_t i = 0; i < a->n_contacts; i++)
        if (!strcmp(a->contacts[i].address, address))
            return &a->contacts[i];
    return NULL;
}

/* IM_EV_CONTACTS: the adapter's full list replaces ours; presence already
 * known for contacts that stay is kept. */
static void
contacts_from_adapter(struct dp_account *a, const struct im_contact *list, uint32_t n)
{
    struct dp_contact *nc = calloc(n + 1, sizeof(*nc));
    if (!nc) {
        dp_relay_oom(a->r, "contact list");
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct im_contact *ic = &list[i];
        if (!contact_fill(a->r, &nc[i], ic->address, ic->name, ic->groups, ic->n_groups, ic->presence)) {
            contacts_free(nc, i + 1);
            return;
        }
        for (uint32_t j = 0; j < a->n_contacts && nc[i].presence == IM_PRES_UNKNOWN; j++)
            if (!strcmp(a->contacts[j].address, nc[i].address))
                nc[i].presence = a->contacts[j].presence;
    }
    contacts_free(a->contacts, a->n_contacts);
    a->contacts = nc;
    a->n_contacts = n;
    contacts_changed(a);
}

/* ------------------------------------------------------------------------ */
/* the emulated session                                                      */

static void
account_schedule_retry(struct dp_account *a, uint64_t now, const char *why)
{
    if (!a->backoff)
        a->backoff = DP_BACKOFF_FIRST;
    else if (a->backoff < DP_BACKOFF_CAP)
        a->backoff = a->backoff * 2 > DP_BACKOFF_CAP ? DP_BACKOFF_CAP : a->backoff * 2;
    /* +-20 % jitter */
    uint32_t span = a->backoff / 5;
    uint32_t delay = a->backoff - span + (uint32_t)(dp_relay_rand(a->r) % (2 * span + 1));
    a->next_try = now + delay;
    char d[300];
    snprintf(d, sizeof(d), "retrying in %u.%u s%s%s", delay / 1000, (delay % 1000) / 100,
             why && *why ? ": " : "", why ? why : "");
    account_state(a, IM_ACC_OFFLINE, d);
}

/* Drop the session's connection; its on_close finishes the job. */
static void
account_drop_conn(struct dp_account *a, int reason)
{
    if (a->conn)
        dp_conn_abort(a->conn, reason);
}

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

/* Give a network without a server-side list the list imfuse keeps. */
static void
account_push_watch(struct dp_account *a)
{
    if (!a->online || !a->sess || !a->ops->set_watch)
        return;
    struct im_str *v = calloc(a->n_contacts + 1, sizeof(*v));
    if (!v) {
        dp_relay_oom(a->r, "watch list");
        return;
    }
    for (uint32_t i = 0; i < a->n_contacts; i++)
        v[i] = (struct im_str){ a->contacts[i].address, (uint32_t)strlen(a->contacts[i].address) };
    int rc = a->ops->set_watch(a->sess, v, a->n_contacts, acct_now(a));
    free(v);
    if (rc < 0)
        account_drop_conn(a, rc);
}

static void
acct_on_open(struct dp_conn *c, int status, const char *detail)
{
    struct dp_account *a = dp_conn_ud(c);
    a->opened = status == 0;
    if (status < 0) {
        char d[256];
        snprintf(d, sizeof(d), "cannot connect to %s: %s", a->server,
                 detail && *detail ? detail : im_strerror(status));
        if (a->state != IM_ACC_ERROR)
            account_state(a, IM_ACC_ERROR, d);
        return;                         /* on_close follows */
    }
    int rc = a->ops->start(a->sess, acct_now(a));
    if (rc < 0)
        account_drop_conn(a, rc);
}

static void
acct_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct dp_account *a = dp_conn_ud(c);
    if (!a->sess)
        return;
    int rc = a->ops->input(a->sess, p, n, acct_now(a));
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
    int rc = a->ops->tls_ready(a->sess, 0, acct_now(a));
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
    /* A name with several addresses: the next one at once. */
    if (!a->opened && a->ip_i + 1 < a->n_ips) {
        a->ip_i++;
        account_connect(a, now);
        return;
    }
    a->n_ips = a->ip_i = 0;             /* the next attempt resolves again (cached) */
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

void
dp_account_detach(struct dp_account *a, bool polite)
{
    if (a->sess) {
        if (polite && a->online && a->ops->logout)
            a->ops->logout(a->sess);
        a->ops->destroy(a->sess);
        a->sess = NULL;
    }
    if (a->conn) {
        dp_conn_set_cb(a->conn, &dp_orphan_cb, NULL);
        if (polite)
            dp_conn_close(a->conn);
        else
            dp_conn_abort(a->conn, 0);
        a->conn = NULL;
    }
    a->online = false;
    a->tls_pending = false;
    a->resolving = false;
    a->q_unsent = a->q_head;
}

static bool
is_ip_literal(const char *host)
{
    uint8_t buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Ask the controlplane for the server name's addresses (DPM_RESOLVED answers). */
static void
account_resolve(struct dp_account *a)
{
    a->resolving = true;
    a->n_ips = a->ip_i = 0;
    account_state(a, IM_ACC_CONNECTING, "resolving the server's name");
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kstr(&e, "host", a->host);
    struct dp_msg m = { .type = CPM_RESOLVE, .uid = a->user->uid, .account = a->id };
    m.u.resolve.seq = ++a->resolve_seq;
    if (dp_up(a->r, &m, &e) < 0) {
        a->resolving = false;
        account_schedule_retry(a, dp_worker_now(a->r->w), "out of memory");
    }
}

void
dp_account_resolved(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_account *a = dp_account_find(r, m->account);
    struct cl_msg pm;
    const msgpack_object *arr;
    struct im_str err;
    const char *why;
    char d[300];

    if (!a || !a->resolving || a->resolve_seq != m->u.resolve.seq || a->user->uid != m->uid)
        return;                         /* stale: the account moved on */
    a->resolving = false;
    uint64_t now = dp_worker_now(r->w);
    if (dp_msg_decode(m, &pm) < 0) {
        account_schedule_retry(a, now, "no answer from the resolver");
        return;
    }
    if (cl_get_str(&pm.root, "error", 1, 256, &err, &why) == 0) {
        snprintf(d, sizeof(d), "cannot resolve %s: %.*s", a->host, (int)err.len, err.p);
    } else if (cl_get_array(&pm.root, "addrs", &arr, &why) == 0) {
        for (uint32_t i = 0; i < arr->via.array.size && a->n_ips < DP_IPS_MAX; i++) {
            const msgpack_object *o = &arr->via.array.ptr[i];
            if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= DP_IP_LEN)
                continue;
            char *ip = a->ips[a->n_ips];
            memcpy(ip, o->via.str.ptr, o->via.str.size);
            ip[o->via.str.size] = '\0';
            if (is_ip_literal(ip))
                a->n_ips++;
        }
        snprintf(d, sizeof(d), "cannot resolve %s: no address", a->host);
    } else {
        snprintf(d, sizeof(d), "cannot resolve %s: malformed answer", a->host);
    }
    cl_msg_free(&pm);
    if (!a->n_ips) {
        STAT_ADD(r, acct_failures, 1);
        account_state(a, IM_ACC_ERROR, d);
        account_schedule_retry(a, now, d);
        return;
    }
    a->ip_i = 0;
    account_connect(a, now);
}

static void
account_connect(struct dp_account *a, uint64_t now)
{
    int err = 0;

    a->next_try = 0;
    const char *ip = a->host;
    if (!is_ip_literal(a->host)) {
        if (a->ip_i >= a->n_ips) {
            account_resolve(a);
            return;
        }
        ip = a->ips[a->ip_i];
    }
    a->opened = false;
    a->sess = a->ops->create(&a->cfg, &a->io);
    if (!a->sess) {
        account_schedule_retry(a, now, "out of memory");
        return;
    }
    account_state(a, IM_ACC_CONNECTING, NULL);
    STAT_ADD(a->r, acct_connects, 1);
    a->conn = dp_conn_connect(a->r->w, ip, a->cfg.port,
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

void
dp_account_tick(struct dp_account *a, uint64_t now)
{
    if (!a->sess) {
        if (a->next_try && a->next_try <= now && a->ops && !a->conn && !a->resolving)
            account_connect(a, now);
        return;
    }
    if (a->tls_pending)
        return;
    int rc = a->ops->tick(a->sess, acct_now(a));
    if (rc < 0)
        account_drop_conn(a, rc);
}

/* ------------------------------------------------------------------------ */
/* the send queue                                                            */

void
dp_account_pause_client(struct dp_account *a, struct dp_client *cl)
{
    if (cl->paused)
        return;
    if (a->n_paused == a->cap_paused) {
        uint32_t n = a->cap_paused ? a->cap_paused * 2 : 8;
        struct dp_client **np = realloc(a->paused, n * sizeof(*np));
        if (!np) {
            dp_relay_oom(a->r, "paused clients");
            return;
        }
        a->paused = np;
        a->cap_paused = n;
    }
    a->paused[a->n_paused++] = cl;
    dp_client_pause(cl, true);
}

static void
account_resume_paused(struct dp_account *a)
{
    struct dp_relay *r = a->r;
    for (uint32_t i = 0; i < a->n_paused; i++) {
        struct dp_client *cl = a->paused[i];
        /* the pointer is only trusted if its slot still holds it */
        if (cl && cl->slot < r->n_slots && r->slots[cl->slot] == cl)
            dp_client_pause(cl, false);
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
            .to = { o->address, o->address_len },
            .body = { o->body, o->body_len },
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
out_free(struct dp_out *o)
{
    free(o);
}

/* A queue entry for msg; NULL on ENOMEM (counted). */
static struct dp_out *
out_new(struct dp_relay *r, uint64_t msg, struct im_str address, struct im_str body)
{
    struct dp_out *o = malloc(sizeof(*o) + (size_t)address.len + 1 + body.len + 1);
    if (!o) {
        dp_relay_oom(r, "send queue");
        return NULL;
    }
    o->next = NULL;
    o->msg = msg;
    o->address_len = address.len;
    o->body_len = body.len;
    o->address = o->buf;
    o->body = o->buf + address.len + 1;
    memcpy(o->address, address.p, address.len);
    o->address[address.len] = '\0';
    memcpy(o->body, body.p, body.len);
    o->body[body.len] = '\0';
    return o;
}

/* IM_EV_SENT: the message left; forget it here and in the outbox. */
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
    dp_relay_sent(a->r, msg);
    out_free(o);
    if (a->n_paused && a->q_len < DP_QUEUE_RESUME)
        account_resume_paused(a);
}

void
dp_account_accepted(struct dp_relay *r, const struct dp_msg *m)
{
    struct dp_account *a = dp_account_find(r, m->account);
    struct cl_msg pm;
    struct im_str address, body;
    const char *why;

    if (!a || dp_msg_decode(m, &pm) < 0)
        return;
    if (cl_get_str(&pm.root, "address", 1, DP_ADDR_MAX, &address, &why) ||
        cl_get_str(&pm.root, "body", 1, 65536, &body, &why)) {
        cl_msg_free(&pm);
        return;
    }
    struct dp_out *o = out_new(r, m->u.out_accepted.msg, address, body);
    if (!o) {
        /* It stays in the outbox and leaves after the next restart. */
        DP_LOG(IM_LOG_ERROR, "message %llu of account %llu not queued (out of memory): kept in the "
            "outbox", (unsigned long long)m->u.out_accepted.msg, (unsigned long long)a->id);
        cl_msg_free(&pm);
        return;
    }
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

/* ------------------------------------------------------------------------ */
/* the adapter's events                                                      */

static void
view_copy(char *dst, size_t dsz, struct im_str v)
{
    size_t n = v.len < dsz - 1 ? v.len : dsz - 1;
    if (n)
        memcpy(dst, v.p, n);
    dst[im_utf8_trim(dst, n)] = '\0';
}

static void
acct_io_event(void *ud, const struct im_event *ev)
{
    struct dp_account *a = ud;
    struct dp_relay *r = a->r;

    switch (ev->type) {
    case IM_EV_STATE: {
        char d[256];
        view_copy(d, sizeof(d), ev->u.state.detail);
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
            a->online = false;
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
    case IM_EV_CONTACTS:
        contacts_from_adapter(a, ev->u.contacts.list, ev->u.contacts.n);
        break;
    case IM_EV_PRESENCE: {
        char addr[DP_ADDR_MAX];
        size_t n = ev->u.presence.address.len < sizeof(addr) - 1 ? ev->u.presence.address.len : sizeof(addr) - 1;
        memcpy(addr, ev->u.presence.address.p, n);
        addr[n] = '\0';
        struct dp_contact *c = dp_contact_find(a, addr);
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
        dp_user_broadcast(r, a->user, &e);
        break;
    }
    case IM_EV_MESSAGE: {
        const __typeof__(ev->u.message) *mm = &ev->u.message;
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
        struct dp_msg m = { .type = CPM_MSG_IN, .uid = a->user->uid, .account = a->id };
        m.u.msg_in.token = mm->token;
        dp_up(r, &m, &e);
        break;
    }
    case IM_EV_SENT:
        account_sent(a, ev->u.sent.msg);
        break;
    case IM_EV_NOTICE: {
        char d[256];
        view_copy(d, sizeof(d), ev->u.notice.text);
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
    a->network = a->login = a->password = a->host = NULL;
    a->server = a->tls_s = a->tls_name = a->name = NULL;
    for (uint32_t i = 0; i < a->n_opts; i++) {
        free((char *)a->opts[i].key);
        free((char *)a->opts[i].value);
    }
    free(a->opts);
    a->opts = NULL;
    a->n_opts = 0;
}

void
dp_account_destroy(struct dp_account *a, bool polite)
{
    struct dp_relay *r = a->r;
    struct dp_user *u = a->user;

    dp_account_hash_del(r, a);
    struct dp_account **pp = &u->accounts;
    while (*pp != a)
        pp = &(*pp)->unext;
    *pp = a->unext;

    account_resume_paused(a);
    dp_account_detach(a, polite);
    while (a->q_head) {
        struct dp_out *o = a->q_head;
        a->q_head = o->next;
        STAT_SUB(r, send_queue_len, 1);
        out_free(o);
    }
    free(a->paused);
    contacts_free(a->contacts, a->n_contacts);
    account_free_cfg(a);
    free(a);
    dp_user_maybe_free(r, u);
}

/* The configuration strings of DPM_ACCOUNT_UP; false on ENOMEM. */
static bool
account_take_cfg(struct dp_account *a, const msgpack_object *o)
{
    struct dp_relay *r = a->r;
    struct im_str network, login, password, server, tls, tls_name, name = { "", 0 };
    const msgpack_object *opts = NULL;
    const char *why;

    (void)cl_get_str(o, "network", 1, 64, &network, &why);
    (void)cl_get_str(o, "login", 1, 1024, &login, &why);
    (void)cl_get_str(o, "password", 0, 4096, &password, &why);
    (void)cl_get_str(o, "server", 1, 1024, &server, &why);
    (void)cl_get_str(o, "tls", 1, 16, &tls, &why);
    (void)cl_get_str(o, "tls_name", 0, 1024, &tls_name, &why);
    (void)cl_get_str(o, "name", 0, 1024, &name, &why);
    if (!(a->network = dp_strdup(r, network)) || !(a->login = dp_strdup(r, login)) ||
        !(a->password = dp_strdup(r, password)) || !(a->server = dp_strdup(r, server)) ||
        !(a->tls_s = dp_strdup(r, tls)) || !(a->tls_name = dp_strdup(r, tls_name)) ||
        !(a->name = dp_strdup(r, name)))
        return false;
    if (cl_get_map(o, "options", &opts, &why) == 0 && opts->via.map.size) {
        a->opts = calloc(opts->via.map.size, sizeof(*a->opts));
        if (!a->opts) {
            dp_relay_oom(r, "account options");
            return false;
        }
        for (uint32_t i = 0; i < opts->via.map.size; i++) {
            const msgpack_object_kv *kv = &opts->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR)
                continue;
            struct im_option *op = &a->opts[a->n_opts];
            op->key = dp_strdup(r, (struct im_str){ kv->key.via.str.ptr, kv->key.via.str.size });
            op->value = dp_strdup(r, (struct im_str){ kv->val.via.str.ptr, kv->val.via.str.size });
            if (op->key || op->value)
                a->n_opts++;
            if (!op->key || !op->value)
                return false;
        }
    }
    a->ops = im_proto_find(a->network);
    return true;
}

void
dp_account_up(struct dp_relay *r, const struct dp_msg *m)
{
    struct cl_msg pm;
    struct im_str user, s;
    const msgpack_object *contacts = NULL, *unified = NULL;
    const char *why;

    if (dp_msg_decode(m, &pm) < 0) {
        DP_LOG(IM_LOG_ERROR, "account %llu: undecodable configuration from the controlplane",
            (unsigned long long)m->account);
        return;
    }
    const msgpack_object *o = &pm.root;
    if (cl_get_str(o, "network", 1, 64, &s, &why) || cl_get_str(o, "login", 1, 1024, &s, &why) ||
        cl_get_str(o, "password", 0, 4096, &s, &why) || cl_get_str(o, "server", 1, 1024, &s, &why) ||
        cl_get_str(o, "tls", 1, 16, &s, &why) || cl_get_str(o, "tls_name", 0, 1024, &s, &why) ||
        cl_get_str(o, "user", 1, 64, &user, &why)) {
        DP_LOG(IM_LOG_ERROR, "account %llu: malformed configuration from the controlplane",
            (unsigned long long)m->account);
        cl_msg_free(&pm);
        return;
    }
    (void)cl_get_array(o, "contacts", &contacts, &why);
    bool has_unified = cl_get_array(o, "unified", &unified, &why) == 0;

    char ubuf[65];
    snprintf(ubuf, sizeof(ubuf), "%.*s", (int)user.len, user.p);
    struct dp_user *u = dp_user_get(r, m->uid, ubuf);
    if (!u) {
        cl_msg_free(&pm);
        return;
    }
    if (has_unified && !u->unified_raw)
        dp_unified_set(r, u, unified);

    struct dp_account *a = dp_account_find(r, m->account);
    bool fresh = !a;
    if (fresh) {
        a = calloc(1, sizeof(*a));
        if (!a) {
            dp_relay_oom(r, "account");
            cl_msg_free(&pm);
            dp_user_maybe_free(r, u);
            return;
        }
        a->r = r;
        a->id = m->account;
        a->user = u;
        dp_account_hash_add(r, a);
        struct dp_account **tail = &u->accounts;
        while (*tail)
            tail = &(*tail)->unext;
        *tail = a;
    } else {
        /* update_account: drop the running session, reconnect with the new config */
        dp_account_detach(a, true);
        account_free_cfg(a);
        a->n_ips = a->ip_i = 0;
    }
    bool cfg_ok = account_take_cfg(a, o);
    if (fresh && cfg_ok)
        contacts_load(a, contacts);
    cl_msg_free(&pm);

    a->cfg = (struct im_account_cfg){
        .account = a->id, .login = a->login, .password = a->password,
        .tls_name = a->tls_name, .options = a->opts, .n_options = a->n_opts,
    };
    a->io = (struct im_io){ .out = acct_io_out, .event = acct_io_event, .local_addr = acct_io_local,
                            .kdf = NULL, .rng = NULL, .ud = a };
    a->backoff = 0;
    a->online = false;
    if (!cfg_ok) {
        a->ops = NULL;
        account_state(a, IM_ACC_ERROR, "out of memory: the account is not started");
        return;
    }
    a->cfg.tls = !strcmp(a->tls_s, "tls") ? IM_TLS_DIRECT :
                 !strcmp(a->tls_s, "starttls") ? IM_TLS_STARTTLS : IM_TLS_NONE;
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
/* add_contact / remove_contact                                              */

static void
contact_remove_at(struct dp_account *a, struct dp_contact *c)
{
    uint32_t i = (uint32_t)(c - a->contacts);
    free(c->address);
    free(c->name);
    for (uint32_t j = 0; j < c->n_groups; j++)
        free(c->groups[j]);
    free(c->groups);
    memmove(&a->contacts[i], &a->contacts[i + 1], (a->n_contacts - i - 1) * sizeof(*c));
    a->n_contacts--;
}

void
dp_op_contact(struct dp_client *cl, const struct cl_msg *req, bool add)
{
    struct dp_relay *r = cl->r;
    uint64_t account;
    struct im_str addr, name = { "", 0 };
    const char *why;
    int rc;

    if ((rc = cl_get_uint(&req->root, "account", &account, &why)) != 0 ||
        (rc = cl_get_str(&req->root, "address", 1, 255, &addr, &why)) != 0 ||
        (add && (rc = cl_get_str(&req->root, "name", 0, 255, &name, &why)) == -IM_EINVAL)) {
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST,
                        rc == -IM_ENOTFOUND ? "account and address are required" : why);
        return;
    }
    struct dp_account *a = dp_user_account(cl->user, account);
    if (!a) {
        dp_client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such account");
        return;
    }
    char in[256], address[DP_ADDR_MAX];
    snprintf(in, sizeof(in), "%.*s", (int)addr.len, addr.p);
    if (!a->ops || a->ops->normalize_address(in, address, sizeof(address), &why) < 0) {
        char msg[160];
        snprintf(msg, sizeof(msg), "address: %s", a->ops ? why : "unsupported network");
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    struct im_str av = { address, (uint32_t)strlen(address) };
    struct dp_contact *c = dp_contact_find(a, address);
    if (!add && !c) {
        dp_client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such contact");
        return;
    }
    if (a->ops->add_contact) {
        /* The server keeps the list: it changes there, and the roster push
         * brings the new list back as a contacts event. */
        if (!a->online) {
            dp_client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "the account is not online");
            return;
        }
        rc = add ? a->ops->add_contact(a->sess, req->id, av, name)
                 : a->ops->remove_contact(a->sess, req->id, av);
        if (rc < 0) {
            dp_client_error(cl, true, req->id, CL_ERR_INTERNAL, im_strerror(rc));
            return;
        }
        dp_client_ok(cl, req->id);
        return;
    }
    /* imfuse keeps the list: an entry that would not fit is refused */
    if (add) {
        char nm[256];
        snprintf(nm, sizeof(nm), "%.*s", (int)name.len, name.p);
        struct dp_contact probe = { .address = address, .name = nm };
        size_t total;
        (void)contacts_fitting(a, &total);
        size_t after = total + contact_size(a, &probe) - (c ? contact_size(a, c) : 0) +
                       (c ? 0 : mp_hdr(a->n_contacts + 1) - mp_hdr(a->n_contacts));
        if (after > DP_CONTACTS_BUDGET) {
            char msg[160];
            STAT_ADD(r, replies_limit, 1);
            snprintf(msg, sizeof(msg), "the contact list (%u entries) would pass the 1 MiB frame limit",
                     a->n_contacts + (c ? 0 : 1));
            dp_client_error(cl, true, req->id, CL_ERR_LIMIT, msg);
            return;
        }
    }
    if (add && c) {
        char *nn = dp_strdup(r, name);
        if (!nn) {
            dp_client_error(cl, true, req->id, CL_ERR_INTERNAL, "out of memory");
            return;
        }
        free(c->name);
        c->name = nn;
    } else if (add) {
        struct dp_contact *nc = realloc(a->contacts, (a->n_contacts + 1) * sizeof(*nc));
        if (!nc) {
            dp_relay_oom(r, "contact list");
            dp_client_error(cl, true, req->id, CL_ERR_INTERNAL, "out of memory");
            return;
        }
        a->contacts = nc;
        c = &a->contacts[a->n_contacts];
        memset(c, 0, sizeof(*c));
        if (!contact_fill(r, c, av, name, NULL, 0, IM_PRES_UNKNOWN)) {
            free(c->address);
            free(c->name);
            free(c->groups);
            dp_client_error(cl, true, req->id, CL_ERR_INTERNAL, "out of memory");
            return;
        }
        a->n_contacts++;
    } else {
        contact_remove_at(a, c);
    }
    dp_client_ok(cl, req->id);
    contacts_changed(a);
    account_push_watch(a);
}
