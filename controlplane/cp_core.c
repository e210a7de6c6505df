/*
 * cp_core.c - the controlplane loop: group commit, messages from the
 * dataplane, sessions, and start-up of the emulated logins.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/signalfd.h>

#include "im_clock.h"
#include "dp_chan.h"
#include "cp_int.h"
#include "cp_sd.h"

#define CP_UP_BATCH     4096            /* dataplane messages per group commit */
#define CP_RETRY_MS     1000            /* a failed commit's messages are tried again after */
#define CP_IDLE_MS      1000            /* longest poll while nothing happens */
#define CP_LAZY_MS      10              /* sent messages' deletes wait this long for a commit */
#define CP_MSG_BLOCK    4096            /* outbound ids reserved per write of meta "msg" */
#define CP_BATCH_BUSY   128             /* a commit of this many messages means load: batch_wait() */
#define CP_BATCH_QUIET_US 500           /* ... commit when nothing more came for this long */
#define CP_BATCH_MAX_US 4000            /* ... or when the first has waited this long */

void
cp_oom(const char *where)
{
    IM_LOG(IM_LOG_ERROR, "cp", "out of memory in %s: stopping (nothing acknowledged is lost)", where);
    abort();
}

/* ------------------------------------------------------------------------ */
/* transactions and after-commit items                                       */

struct cp_txn *
cp_txn(struct cp_core *c)
{
    if (!c->txn) {
        int rc = cp_txn_begin(c->store, true, &c->txn);
        if (rc < 0) {
            LOG(IM_LOG_ERROR, "cannot begin a store transaction: %s", cp_store_strerror(rc));
            c->txn = NULL;
        }
    }
    return c->txn;
}

static struct cp_after *
after_new(struct cp_core *c)
{
    struct cp_after *a = c->after_free;
    if (a) {
        c->after_free = a->next;
        c->n_after_free--;
    } else if (!(a = malloc(sizeof(*a)))) {
        cp_oom(__func__);
    }
    a->next = NULL;
    a->ok.type = a->retry.type = 0;
    a->ok.data = a->retry.data = NULL;
    a->ok.len = a->retry.len = 0;
    a->fail_reply = a->always = false;
    return a;
}

static void
after_done(struct cp_core *c, struct cp_after *a)
{
    dp_msg_release(&a->ok);
    dp_msg_release(&a->retry);
    if (c->n_after_free < CP_AFTER_KEEP) {
        a->next = c->after_free;
        c->after_free = a;
        c->n_after_free++;
    } else {
        free(a);
    }
}

static struct cp_after *
after_queue(struct cp_core *c, struct dp_msg *ok, struct dp_msg *retry)
{
    struct cp_after *a = after_new(c);
    if (ok)
        dp_msg_move(&a->ok, ok);
    if (retry)
        dp_msg_move(&a->retry, retry);
    if (c->after_tail)
        c->after_tail->next = a;
    else
        c->after = a;
    c->after_tail = a;
    return a;
}

void
cp_after_commit(struct cp_core *c, struct dp_msg *ok, struct dp_msg *retry)
{
    (void)after_queue(c, ok, retry);
}

void
cp_after_always(struct cp_core *c, struct dp_msg *m)
{
    after_queue(c, m, NULL)->always = true;
}

static void
error_msg(struct dp_msg *m, uint32_t conn, uint32_t gen, uint64_t id, const char *code, const char *text)
{
    uint8_t *f;
    size_t len;
    m->type = DPM_CONN_SEND;
    m->conn = conn;
    m->gen = gen;
    m->data = NULL;
    m->len = 0;
    if (cl_build_error(true, id, code, text, &f, &len) == 0) {
        if (dp_msg_copy(m, f, len) < 0)
            cp_oom(__func__);
        free(f);
    }
}

void
cp_client_error(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id, const char *code, const char *msg)
{
    struct dp_msg m;
    error_msg(&m, conn, gen, id, code, msg);
    cp_after_always(c, &m);
}

void
cp_client_ok(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id)
{
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kstr(&e, "op", "ok");
    cl_pack_kuint(&e, "id", id);
    cp_client_reply_durable(c, conn, gen, id, &e);
}

void
cp_client_reply_durable(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t id, struct cl_enc *e)
{
    struct dp_msg ok = { .type = DPM_CONN_SEND, .conn = conn, .gen = gen };
    if (dp_msg_set_frame(&ok, e) < 0) {
        /* too large to send: the client hears why instead of nothing */
        c->plane_oversize++;
        error_msg(&ok, conn, gen, id, CL_ERR_LIMIT, "the reply would pass the 1 MiB frame limit");
    }
    struct cp_after *a = after_queue(c, &ok, NULL);
    a->fail_reply = true;               /* the error is made only if the commit fails */
    a->fail_conn = conn;
    a->fail_gen = gen;
    a->fail_id = id;
}

void *
cp_reserve(void *arr, size_t *cap, size_t need, size_t size, const char *where)
{
    if (need <= *cap)
        return arr;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *p = realloc(arr, n * size);
    if (!p)
        cp_oom(where);
    *cap = n;
    return p;
}

static void
retry_push(struct cp_core *c, struct dp_msg *m)
{
    c->retry = cp_reserve(c->retry, &c->cap_retry, c->n_retry + 1, sizeof(*c->retry), __func__);
    dp_msg_move(&c->retry[c->n_retry++], m);
}

static void cid_turn_end(struct cp_core *c, bool committed);

/*
 * Sent messages leave the outbox lazily: their deletes ride on the next
 * commit that happens anyway, or get one of their own when none has come
 * for CP_LAZY_MS (an idle appliance).  A crash before that commit sends them
 * again at the next start (at least once), so the resend window is that
 * one commit.  One durable write per message instead of two.
 */
static void
done_add(struct cp_core *c, const void *ids, size_t n)
{
    if (!n)
        return;
    c->done = cp_reserve(c->done, &c->cap_done, c->n_done + n, sizeof(*c->done), __func__);
    if (!c->n_done)
        c->done_since = im_mono_ms();
    memcpy(c->done + c->n_done, ids, n * sizeof(uint64_t));
    c->n_done += n;
}

/* The turn's commit will carry the pending deletes (and the id counter). */
static void
done_apply(struct cp_core *c, uint64_t now)
{
    bool due = c->n_done && (c->stopping || now - c->done_since >= CP_LAZY_MS);
    if (!c->txn && !due)
        return;
    struct cp_txn *t = cp_txn(c);
    if (!t)
        return;
    for (size_t i = 0; i < c->n_done; i++)
        (void)cp_outbox_del(t, c->done[i]);     /* absent (unlinked): fine */
    c->n_done_applied = c->n_done;
    if (c->msg_limit != c->msg_limit_saved)
        (void)cp_meta_set(t, "msg", c->msg_limit);
}

/* Commit the turn's transaction and release what waited for it. */
static void
commit_turn(struct cp_core *c)
{
    bool ok = true;
    uint64_t now = im_mono_ms();
    cp_client_acks_apply(c, now);
    done_apply(c, now);
    if (c->txn) {
        int rc = cp_txn_commit(c->txn);
        c->txn = NULL;
        if (rc < 0) {
            ok = false;
            c->commit_failures++;
            LOG(IM_LOG_ERROR, "store commit failed: %s; replies withheld, messages kept for retry",
                cp_store_strerror(rc));
        } else {
            c->commits++;
            c->msgs_committed += c->turn_msgs;
            c->outbox_added += c->turn_outbox;
            c->outbox_deleted += c->n_done_applied;
        }
        if (ok) {
            c->n_done = 0;
            c->next_msg_saved = c->next_msg;
            c->msg_limit_saved = c->msg_limit;
        } else {
            c->next_msg = c->next_msg_saved;    /* this turn's ids were never stored */
            c->msg_limit = c->msg_limit_saved;
        }
        c->n_done_applied = 0;
    }
    c->turn_msgs = c->turn_outbox = 0;
    cid_turn_end(c, ok);
    cp_quota_turn_end(c, ok);
    while (c->after) {
        struct cp_after *a = c->after;
        c->after = a->next;
        if (ok || a->always) {
            if (a->ok.type)
                dp_chan_send_down(c->ch, &a->ok);
        }
        if (!ok && a->fail_reply) {
            struct dp_msg f;
            error_msg(&f, a->fail_conn, a->fail_gen, a->fail_id, CL_ERR_INTERNAL,
                      "storage failure: the change was not saved");
            dp_chan_send_down(c->ch, &f);
        }
        if (!ok && a->retry.type) {
            retry_push(c, &a->retry);
            c->retry_at = im_mono_ms() + CP_RETRY_MS;
        }
        after_done(c, a);
    }
    c->after_tail = NULL;
    if (c->rpc)
        cp_rpc_commit_done(c->rpc, ok);
    dp_chan_flush_down(c->ch);
}

/* ------------------------------------------------------------------------ */
/* small in-memory tables                                                    */

struct cp_acct_state *
cp_state_get(struct cp_core *c, uint64_t account)
{
    for (struct cp_acct_state *s = c->states[account % CP_STATE_BUCKETS]; s; s = s->next)
        if (s->account == account)
            return s;
    return NULL;
}

struct cp_acct_state *
cp_state_add(struct cp_core *c, uint64_t uid, uint64_t account, const char *network)
{
    struct cp_acct_state *s = cp_state_get(c, account);
    if (s)
        return s;
    struct cp_acct_state **pp = &c->states[account % CP_STATE_BUCKETS];
    s = calloc(1, sizeof(*s));
    if (!s)
        cp_oom(__func__);
    s->account = account;
    s->uid = uid;
    s->state = IM_ACC_CONNECTING;
    im_strlcpy(s->network, network, sizeof(s->network));
    s->next = *pp;
    *pp = s;
    return s;
}

void
cp_state_del_user(struct cp_core *c, uint64_t uid)
{
    for (unsigned i = 0; i < CP_STATE_BUCKETS; i++)
        for (struct cp_acct_state **pp = &c->states[i]; *pp;) {
            struct cp_acct_state *s = *pp;
            if (s->uid == uid) {
                *pp = s->next;
                free(s);
            } else {
                pp = &s->next;
            }
        }
}

void
cp_state_del(struct cp_core *c, uint64_t account)
{
    struct cp_acct_state **pp = &c->states[account % CP_STATE_BUCKETS];
    while (*pp && (*pp)->account != account)
        pp = &(*pp)->next;
    if (*pp) {
        struct cp_acct_state *s = *pp;
        *pp = s->next;
        free(s);
    }
}

static uint32_t
cid_hash(uint64_t uid, const char *cid, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ uid;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)cid[i]) * 1099511628211ULL;
    return (uint32_t)(h ^ (h >> 32));
}

struct cp_cid *
cp_cid_find(struct cp_core *c, uint64_t uid, const char *cid, size_t len)
{
    uint32_t h = cid_hash(uid, cid, len);
    if (!c->cids)
        return NULL;
    for (struct cp_cid *e = c->cids[h & (CP_CID_BUCKETS - 1)]; e; e = e->hnext)
        if (e->hash == h && e->uid == uid && e->cid_len == len && !memcmp(e->cid, cid, len))
            return e;
    return NULL;
}

static void
cid_unlink(struct cp_core *c, struct cp_cid *e)
{
    struct cp_cid **pp = &c->cids[e->hash & (CP_CID_BUCKETS - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->fprev)
        e->fprev->fnext = e->fnext;
    else
        c->cid_head = e->fnext;
    if (e->fnext)
        e->fnext->fprev = e->fprev;
    else
        c->cid_tail = e->fprev;
    free(e);
    c->n_cids--;
}

/* The oldest settled entry goes; entries of this turn stay until it ends. */
static void
cid_evict_oldest(struct cp_core *c)
{
    if (c->cid_head && !c->cid_head->pending)
        cid_unlink(c, c->cid_head);
}

/* End of a turn: keep its cids if the commit made their messages durable,
 * else forget them, so that the client's retry with the same cid is sent
 * rather than answered with the id of a message that was never stored. */
static void
cid_turn_end(struct cp_core *c, bool committed)
{
    for (unsigned i = 0; i < c->n_turn_cids; i++) {
        if (committed)
            c->turn_cids[i]->pending = false;
        else
            cid_unlink(c, c->turn_cids[i]);
    }
    c->n_turn_cids = 0;
}

void
cp_cid_add(struct cp_core *c, uint64_t uid, const char *cid, size_t len, uint64_t msg,
           uint64_t account, const char *network, const char *address)
{
    if (len == 0 || len > CL_CID_MAX || cp_cid_find(c, uid, cid, len))
        return;
    if (!c->cids && !(c->cids = calloc(CP_CID_BUCKETS, sizeof(*c->cids))))
        cp_oom(__func__);
    if (c->n_cids >= CP_CID_MAX)
        cid_evict_oldest(c);
    size_t alen = strlen(address);
    struct cp_cid *e = malloc(sizeof(*e) + alen + 1);
    if (!e)
        cp_oom(__func__);
    e->uid = uid;
    e->msg = msg;
    e->account = account;
    e->hash = cid_hash(uid, cid, len);
    e->cid_len = (uint8_t)len;
    im_strlcpy(e->network, network, sizeof(e->network));
    memcpy(e->cid, cid, len);
    e->cid[len] = '\0';
    memcpy(e->address, address, alen + 1);
    unsigned b = e->hash & (CP_CID_BUCKETS - 1);
    e->hnext = c->cids[b];
    c->cids[b] = e;
    e->fnext = NULL;
    e->fprev = c->cid_tail;
    if (c->cid_tail)
        c->cid_tail->fnext = e;
    else
        c->cid_head = e;
    c->cid_tail = e;
    c->n_cids++;
    if (c->n_turn_cids == c->cap_turn_cids) {
        unsigned n = c->cap_turn_cids ? c->cap_turn_cids * 2 : 64;
        struct cp_cid **nt = realloc(c->turn_cids, n * sizeof(*nt));
        if (!nt)
            cp_oom(__func__);
        c->turn_cids = nt;
        c->cap_turn_cids = n;
    }
    e->pending = true;
    c->turn_cids[c->n_turn_cids++] = e;
}

void
cp_session_add(struct cp_core *c, uint32_t conn, uint32_t gen, uint64_t uid,
               const char *user, const char *peer, const char *device)
{
    struct cp_session *s = calloc(1, sizeof(*s));
    if (!s)
        cp_oom(__func__);
    s->conn = conn;
    s->gen = gen;
    s->uid = uid;
    im_strlcpy(s->user, user, sizeof(s->user));
    im_strlcpy(s->peer, peer, sizeof(s->peer));
    im_strlcpy(s->device, device, sizeof(s->device));
    s->since = im_now_ms();
    s->next = c->sessions;
    c->sessions = s;
}

void
cp_session_del(struct cp_core *c, uint32_t conn, uint32_t gen)
{
    for (struct cp_session **pp = &c->sessions; *pp; pp = &(*pp)->next) {
        if ((*pp)->conn == conn && (*pp)->gen == gen) {
            struct cp_session *s = *pp;
            *pp = s->next;
            free(s);
            return;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* messages from the dataplane                                               */

/* CPM_MSG_IN: commit to the user's queue, then deliver. */
static void
handle_msg_in(struct cp_core *c, struct dp_msg *m)
{
    struct cp_txn *t = cp_txn(c);
    struct cp_user u;
    int rc;

    if (!t) {
        retry_push(c, m);
        c->retry_at = im_mono_ms() + CP_RETRY_MS;
        return;
    }
    rc = cp_user_get_uid(t, m->uid, &u);
    if (rc < 0 || !dp_msg_has_frame(m)) {
        /* user deleted meanwhile: release the network acknowledgement only */
        struct dp_msg d = { .type = DPM_DELIVER, .uid = m->uid, .account = m->account };
        d.u.deliver.token = m->u.msg_in.token;
        cp_after_always(c, &d);
        return;
    }
    uint64_t seq = u.next_seq++;
    u.max_pushed = seq;
    if ((rc = cp_user_put(t, &u)) < 0 ||
        (rc = cp_blob_put(t, CP_DB_QUEUE, m->uid, seq, dp_msg_bytes(m), m->len)) < 0) {
        LOG(IM_LOG_ERROR, "cannot queue a message for uid %llu: %s", (unsigned long long)m->uid,
            cp_store_strerror(rc));
        /* The transaction is unusable now; everything of this turn fails. */
        retry_push(c, m);
        return;
    }
    c->turn_msgs++;
    cp_quota_queue(c, m->uid, 1, m->len);
    struct dp_msg d = { .type = DPM_DELIVER, .uid = m->uid, .account = m->account };
    d.u.deliver.seq = seq;
    d.u.deliver.token = m->u.msg_in.token;
    if (dp_msg_copy(&d, dp_msg_bytes(m), m->len) < 0)
        cp_oom("delivery");
    cp_after_commit(c, &d, m);
}

/* CPM_OUT_REQ: make an outbound message durable, then accept it. */
static void
handle_out_req(struct cp_core *c, struct dp_msg *m)
{
    struct cp_txn *t = cp_txn(c);
    struct cl_msg pm;
    struct im_str address, body, cid = { NULL, 0 }, network;
    const char *why;
    bool has_cid;

    uint64_t req = m->u.out_req.req;
    if (dp_msg_decode(m, &pm) < 0) {
        cp_client_error(c, m->conn, m->gen, req, CL_ERR_INTERNAL, "malformed send from the dataplane");
        return;
    }
    if (cl_get_str(&pm.root, "address", 1, 1024, &address, &why) ||
        cl_get_str(&pm.root, "body", 1, 65536, &body, &why) ||
        cl_get_str(&pm.root, "network", 1, 15, &network, &why)) {
        cl_msg_free(&pm);
        cp_client_error(c, m->conn, m->gen, req, CL_ERR_INTERNAL, "malformed send from the dataplane");
        return;
    }
    has_cid = cl_get_str(&pm.root, "cid", 1, CL_CID_MAX, &cid, &why) == 0;

    char net[16], addr[1025];
    snprintf(net, sizeof(net), "%.*s", (int)network.len, network.p);
    snprintf(addr, sizeof(addr), "%.*s", (int)address.len, address.p);
    uint64_t msg = 0, account = m->account;
    bool dup = false;

    if (has_cid) {
        struct cp_cid *e = cp_cid_find(c, m->uid, cid.p, cid.len);
        if (e) {
            dup = true;
            msg = e->msg;
            account = e->account;
            im_strlcpy(net, e->network, sizeof(net));
            im_strlcpy(addr, e->address, sizeof(addr));
        }
    }
    if (!dup) {
        int rc;
        if (!t) {
            cp_client_error(c, m->conn, m->gen, req, CL_ERR_INTERNAL, "storage unavailable");
            cl_msg_free(&pm);
            return;
        }
        struct cp_acct_state *as = cp_state_get(c, m->account);
        if (!as || as->uid != m->uid) {
            cp_client_error(c, m->conn, m->gen, req, CL_ERR_NOT_FOUND, "no such account");
            cl_msg_free(&pm);
            return;
        }
        /* Ids are reserved in blocks: meta "msg" (the first id not reserved)
         * is written once per CP_MSG_BLOCK ids, not in every commit; after
         * a restart ids go on from there, so they never repeat. */
        if (c->next_msg >= c->msg_limit)
            c->msg_limit = c->next_msg + CP_MSG_BLOCK;
        msg = c->next_msg++;
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, has_cid ? 6 : 5);
        cl_pack_kuint(&e, "account", m->account);
        cl_pack_kstr(&e, "network", net);
        cl_pack_kstr(&e, "address", addr);
        cl_pack_kstrn(&e, "body", body.p, body.len);
        cl_pack_kuint(&e, "ts", im_now_ms());
        if (has_cid)
            cl_pack_kstrn(&e, "cid", cid.p, cid.len);
        size_t flen;
        const uint8_t *f = cl_enc_finish(&e, &flen);
        rc = f ? cp_outbox_put(t, msg, m->uid, f, flen) : -IM_ETOOBIG;
        if (rc < 0) {
            cl_enc_free(&e);
            cp_client_error(c, m->conn, m->gen, req, CL_ERR_INTERNAL, cp_store_strerror(rc));
            cl_msg_free(&pm);
            return;
        }
        c->turn_outbox++;
        /* the accepted message goes to the account's queue after the commit */
        struct dp_msg acc_msg = { .type = DPM_OUT_ACCEPTED, .uid = m->uid, .account = m->account };
        acc_msg.u.out_accepted.msg = msg;
        (void)dp_msg_set_frame(&acc_msg, &e);      /* finished above: fits */
        cp_after_commit(c, &acc_msg, NULL);
        if (has_cid)
            cp_cid_add(c, m->uid, cid.p, cid.len, msg, m->account, net, addr);
    }

    struct cl_enc r;
    cl_enc_init(&r);
    msgpack_pack_map(&r.pk, has_cid ? 7 : 6);
    cl_pack_kstr(&r, "op", "ok");
    cl_pack_kuint(&r, "id", req);
    cl_pack_kuint(&r, "msg", msg);
    cl_pack_kuint(&r, "account", account);
    cl_pack_kstr(&r, "network", net);
    cl_pack_kstr(&r, "address", addr);
    if (has_cid)
        cl_pack_kstrn(&r, "cid", cid.p, cid.len);
    cl_msg_free(&pm);
    cp_client_reply_durable(c, m->conn, m->gen, req, &r);
}

/* CPM_RESOLVE: look the account's server name up off the loop. */
struct resolve_ctx {
    struct cp_core *c;
    uint64_t uid, account, seq;
};

static void
send_resolved(struct cp_core *c, uint64_t uid, uint64_t account, uint64_t seq, int err,
              const char *why, const char *const *addrs, unsigned n)
{
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    if (err) {
        cl_pack_kstr(&e, "error", why && *why ? why : im_strerror(err));
    } else {
        cl_pack_key(&e, "addrs");
        msgpack_pack_array(&e.pk, n);
        for (unsigned i = 0; i < n; i++)
            cl_pack_str(&e, addrs[i]);
    }
    struct dp_msg d = { .type = DPM_RESOLVED, .uid = uid, .account = account };
    d.u.resolve.seq = seq;
    (void)dp_msg_set_frame(&d, &e);
    dp_chan_send_down(c->ch, &d);
}

static void
resolved(void *ctx, int err, const char *why, const char *const *addrs, unsigned n)
{
    struct resolve_ctx *x = ctx;
    if (err != -ECANCELED)
        send_resolved(x->c, x->uid, x->account, x->seq, err, why, addrs, n);
    free(x);
}

static void
handle_resolve(struct cp_core *c, struct dp_msg *m)
{
    struct cl_msg pm;
    struct im_str host;
    const char *why;
    char h[CP_RESOLVE_HOST_MAX + 1];
    int rc = -IM_EINVAL;

    if (dp_msg_decode(m, &pm) == 0) {
        if (cl_get_str(&pm.root, "host", 1, CP_RESOLVE_HOST_MAX, &host, &why) == 0) {
            snprintf(h, sizeof(h), "%.*s", (int)host.len, host.p);
            struct resolve_ctx *x = malloc(sizeof(*x));
            if (!x)
                cp_oom(__func__);
            *x = (struct resolve_ctx){ c, m->uid, m->account, m->u.resolve.seq };
            rc = cp_resolve(c->resolver, h, resolved, x);
            if (rc < 0)
                free(x);
        }
        cl_msg_free(&pm);
    }
    if (rc < 0)
        send_resolved(c, m->uid, m->account, m->u.resolve.seq, rc,
                      rc == -IM_ELIMIT ? "too many names being resolved, try later" : im_strerror(rc),
                      NULL, 0);
}

static void
handle_up(struct cp_core *c, struct dp_msg *m)
{
    switch (m->type) {
    case CPM_CLIENT_REQ:
        cp_client_request(c, m);
        break;
    case CPM_MSG_IN:
        handle_msg_in(c, m);
        break;
    case CPM_OUT_REQ:
        handle_out_req(c, m);
        break;
    case CPM_OUT_DONE:
        done_add(c, dp_msg_bytes(m), m->len / sizeof(uint64_t));
        break;
    case CPM_CONTACTS: {
        struct cp_txn *t = cp_txn(c);
        struct cp_account acc;
        if (t && m->len && cp_account_get(t, m->uid, m->account, &acc) == 0) {
            cp_account_free(&acc);
            (void)cp_blob_put(t, CP_DB_CONTACTS, m->uid, m->account, dp_msg_bytes(m), m->len);
        }
        break;
    }
    case CPM_ACCOUNT_STATE: {
        struct cp_acct_state *s = cp_state_get(c, m->account);
        struct cl_msg pm;
        if (!s || s->uid != m->uid)
            break;                      /* unlinked meanwhile */
        struct im_str d;
        const char *why;
        if (s->state == IM_ACC_ONLINE && m->u.state.state != IM_ACC_ONLINE)
            c->acct_left_online++;      /* the account storm alarm counts these (cp_ops.c) */
        s->state = (int)m->u.state.state;
        s->detail[0] = '\0';
        if (dp_msg_decode(m, &pm) == 0) {
            if (cl_get_str(&pm.root, "detail", 0, 4096, &d, &why) == 0)
                snprintf(s->detail, sizeof(s->detail), "%.*s", (int)d.len, d.p);
            cl_msg_free(&pm);
        }
        LOG(IM_LOG_INFO, "account %llu: %s%s%s", (unsigned long long)m->account,
            im_account_state_name((enum im_account_state)s->state), s->detail[0] ? ": " : "", s->detail);
        break;
    }
    case CPM_RESOLVE:
        handle_resolve(c, m);
        break;
    case CPM_TLS_RELOADED:
        cp_reload_tls_done(c, m);
        break;
    case CPM_REPLAY_NEXT:
        cp_client_replay_next(c, m);
        break;
    case CPM_KDF:
        cp_kdf_request(c, m);
        break;
    case CPM_CONN_CLOSED:
    case CPM_CONN_LOGOUT:
        cp_client_session_end(c, m);
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* start-up                                                                  */

static int
start_account(void *ud, const struct cp_account *a)
{
    struct cp_core *c = ud;
    (void)cp_state_add(c, a->uid, a->account, a->network);
    if (cp_account_up(c, c->txn, a, true) < 0)
        LOG(IM_LOG_ERROR, "account %llu (%s %s): cannot start: credential does not unseal",
            (unsigned long long)a->account, a->network, a->login);
    return 0;
}

static int
start_outbox(void *ud, uint64_t msg, uint64_t uid, const void *v, size_t n)
{
    struct cp_core *c = ud;
    struct cl_msg pm;
    uint64_t account;
    struct im_str cid, net, addr;
    const char *why;

    if (cl_frame_decode(&pm, v, n) < 0) {
        LOG(IM_LOG_ERROR, "outbox message %llu does not decode: left in the outbox",
            (unsigned long long)msg);
        return 0;
    }
    if (cl_get_uint(&pm.root, "account", &account, &why) == 0) {
        if (cl_get_str(&pm.root, "cid", 1, CL_CID_MAX, &cid, &why) == 0 &&
            cl_get_str(&pm.root, "network", 1, 15, &net, &why) == 0 &&
            cl_get_str(&pm.root, "address", 1, 1024, &addr, &why) == 0) {
            char nb[16], ab[1025];
            snprintf(nb, sizeof(nb), "%.*s", (int)net.len, net.p);
            snprintf(ab, sizeof(ab), "%.*s", (int)addr.len, addr.p);
            cp_cid_add(c, uid, cid.p, cid.len, msg, account, nb, ab);
        }
        struct dp_msg m = { .type = DPM_OUT_ACCEPTED, .uid = uid, .account = account };
        m.u.out_accepted.msg = msg;
        if (dp_msg_copy(&m, v, n) < 0)
            cp_oom("outbox load");
        dp_chan_send_down(c->ch, &m);
    }
    cl_msg_free(&pm);
    return 0;
}

int
cp_core_start(struct cp_core *c)
{
    int rc = cp_txn_begin(c->store, false, &c->txn);
    if (rc < 0)
        return rc;
    rc = cp_meta_get(c->txn, "msg", &c->next_msg);     /* the next id to hand out */
    if (rc == -IM_ENOTFOUND)
        c->next_msg = 1;
    else if (rc < 0 || c->next_msg == 0) {
        cp_txn_abort(c->txn);
        c->txn = NULL;
        return rc < 0 ? rc : -IM_ECORRUPT;
    }
    c->next_msg_saved = c->next_msg;
    c->msg_limit = c->msg_limit_saved = c->next_msg;
    rc = cp_account_each(c->txn, 0, start_account, c);
    if (rc == 0)
        rc = cp_outbox_each(c->txn, start_outbox, c);
    if (rc == 0)
        rc = cp_quota_load(c, c->txn);
    cp_txn_abort(c->txn);
    c->txn = NULL;
    cid_turn_end(c, true);              /* the outbox's cids are durable already */
    dp_chan_flush_down(c->ch);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the loop                                                                  */

static uint64_t
mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * Group commit that grows with load.  A commit costs the same whatever it
 * carries (two synchronous writes), so under load it should carry more: when
 * the last commit carried at least CP_BATCH_BUSY messages, the turn's commit
 * waits while messages keep arriving, until none came for CP_BATCH_QUIET_US
 * or the first has waited CP_BATCH_MAX_US.  An idle appliance commits at
 * once.  Below CP_BATCH_BUSY the wait gains nothing: at 50 messages in
 * flight the commits carried ~25 messages with it and without it (the
 * clients' round trips split a window into two groups), and each wait cost
 * timer wake-ups: 10 % more CPU per message and 15 % fewer messages/s (make
 * bench's set-up, side by side).  At 1,000 in flight a threshold of 8 made
 * commits ~15 % larger; 128 seldom engages there either (one commit below
 * it switches the next wait off: 233-253 messages a commit against 280-312),
 * with CPU per message within this machine's noise (8.0-9.75 against
 * 6.75-9.75 us, 4 runs each).  Returns how long to wait (µs) before looking again, 0 to commit now.
 */
static uint64_t
batch_wait(struct cp_core *c, uint64_t now)
{
    unsigned writes = c->turn_msgs + c->turn_outbox;
    if (!c->txn || !writes || c->stopping || c->last_batch < CP_BATCH_BUSY)
        return 0;
    uint64_t age = now - c->batch_first_us, quiet = now - c->batch_last_us;
    if (age >= CP_BATCH_MAX_US || quiet >= CP_BATCH_QUIET_US)
        return 0;
    uint64_t left = CP_BATCH_MAX_US - age, q = CP_BATCH_QUIET_US - quiet;
    return left < q ? left : q;
}

int
cp_core_run(struct cp_core *c, int sigfd)
{
    struct pollfd fds[256];

    bool more = false;
    uint64_t wait_us = 0;               /* a commit waiting for more (batch_wait) */

    while (!c->stopping) {
        unsigned n = 0;
        fds[n++] = (struct pollfd){ .fd = sigfd, .events = POLLIN };
        fds[n++] = (struct pollfd){ .fd = dp_chan_up_fd(c->ch), .events = POLLIN };
        fds[n++] = (struct pollfd){ .fd = cp_auth_fd(c->auth), .events = POLLIN };
        fds[n++] = (struct pollfd){ .fd = cp_resolver_fd(c->resolver), .events = POLLIN };
        if (c->ops)
            fds[n++] = (struct pollfd){ .fd = cp_ops_fd(c->ops), .events = POLLIN };
        unsigned rpc_first = n;
        if (c->rpc)
            n += cp_rpc_pollfds(c->rpc, fds + n, IM_ARRAY_SIZE(fds) - n);

        int timeout = more ? 0 : CP_IDLE_MS;
        if (!more && (c->n_done || c->n_acks)) {
            /* deletes and acks that wait for a commit: wake when one is due */
            uint64_t now = im_mono_ms();
            if (c->n_done) {
                uint64_t since = now - c->done_since;
                timeout = since >= CP_LAZY_MS ? 0 : (int)(CP_LAZY_MS - since);
            }
            int ack_ms = cp_client_acks_wait(c, now);
            if (ack_ms >= 0 && ack_ms < timeout)
                timeout = ack_ms;
        }
        int prc;
        if (wait_us && !more) {
            /* A commit gathers more: the dataplane need not wake us, we
             * look at the ring when the wait is over. */
            struct timespec ts = { (time_t)(wait_us / 1000000u), (long)(wait_us % 1000000u) * 1000 };
            prc = ppoll(fds, n, &ts, NULL);
        } else {
            /* the dataplane wakes us through the eventfd only while we wait */
            if (timeout != 0 && !dp_chan_cp_sleep(c->ch))
                timeout = 0;
            prc = poll(fds, n, timeout);
            dp_chan_cp_awake(c->ch);
        }
        if (prc < 0 && errno != EINTR) {
            LOG(IM_LOG_ERROR, "poll: %s", strerror(errno));
            return -errno;
        }
        cp_sd_watchdog();
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sigfd, &si, sizeof(si)) != sizeof(si)) {
            } else if (si.ssi_signo == SIGHUP) {
                LOG(IM_LOG_INFO, "SIGHUP: reloading the configuration");
                cp_reload(c, NULL);
            } else {
                LOG(IM_LOG_INFO, "signal %u: shutting down", si.ssi_signo);
                c->stopping = true;
            }
        }

        /* messages from the dataplane, retries first (their order matters) */
        if (c->n_retry && im_mono_ms() >= c->retry_at) {
            struct dp_msg *list = c->retry;
            size_t nr = c->n_retry;
            c->retry = NULL;
            c->n_retry = c->cap_retry = 0;
            for (size_t i = 0; i < nr; i++) {
                handle_up(c, &list[i]);
                dp_msg_release(&list[i]);
            }
            free(list);
        }
        if (fds[1].revents & POLLIN)
            dp_chan_up_ack(c->ch);
        struct dp_msg m;
        unsigned got = 0;
        while (got < CP_UP_BATCH && dp_chan_recv_up(c->ch, &m) == 0) {
            /* Incoming messages queue behind those waiting for the store
             * to take them again, so that seqs follow the arrival order. */
            if (c->n_retry && m.type == CPM_MSG_IN)
                retry_push(c, &m);
            else
                handle_up(c, &m);
            dp_msg_release(&m);
            got++;
        }
        more = got == CP_UP_BATCH;
        if (fds[2].revents & POLLIN)
            cp_auth_dispatch(c->auth);
        if (fds[3].revents & POLLIN)
            cp_resolver_dispatch(c->resolver);
        if (c->rpc)
            cp_rpc_handle(c->rpc, fds + rpc_first, n - rpc_first);
        if (c->ops)
            cp_ops_turn(c);     /* reads its eventfd itself (non-blocking) */

        uint64_t now = mono_us();
        unsigned writes = c->turn_msgs + c->turn_outbox;
        if (writes > c->batch_seen) {
            if (!c->batch_seen)
                c->batch_first_us = now;
            c->batch_last_us = now;
            c->batch_seen = writes;
        }
        wait_us = batch_wait(c, now);
        if (wait_us)
            continue;
        if (c->txn) {
            c->last_batch = writes;
            c->batch_seen = 0;
        }
        commit_turn(c);
    }
    return 0;
}

void
cp_core_drain(struct cp_core *c)
{
    struct dp_msg m;
    while (dp_chan_recv_up(c->ch, &m) == 0) {
        handle_up(c, &m);
        dp_msg_release(&m);
    }
    commit_turn(c);
}

void
cp_core_free(struct cp_core *c)
{
    while (c->sessions) {
        struct cp_session *s = c->sessions;
        c->sessions = s->next;
        free(s);
    }
    for (unsigned i = 0; i < CP_STATE_BUCKETS; i++)
        while (c->states[i]) {
            struct cp_acct_state *s = c->states[i];
            c->states[i] = s->next;
            free(s);
        }
    while (c->cid_head)
        cid_unlink(c, c->cid_head);
    free(c->cids);
    c->cids = NULL;
    free(c->turn_cids);
    c->turn_cids = NULL;
    free(c->done);
    c->done = NULL;
    c->n_done = c->cap_done = 0;
    free(c->acks);
    c->acks = NULL;
    c->n_acks = c->cap_acks = 0;
    c->n_turn_cids = c->cap_turn_cids = 0;
    for (size_t i = 0; i < c->n_retry; i++)
        dp_msg_release(&c->retry[i]);
    free(c->retry);
    c->retry = NULL;
    c->n_retry = 0;
    while (c->after) {
        struct cp_after *a = c->after;
        c->after = a->next;
        dp_msg_release(&a->ok);
        dp_msg_release(&a->retry);
        free(a);
    }
    while (c->after_free) {
        struct cp_after *a = c->after_free;
        c->after_free = a->next;
        free(a);
    }
    c->n_after_free = 0;
    if (c->txn) {
        cp_txn_abort(c->txn);
        c->txn = NULL;
    }
}
