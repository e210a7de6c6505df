/*
 * cp_quota.c - per-user queue quotas: how many received messages, and how
 * many bytes of them, wait for each user's ack.
 *
 * The counts live in memory, loaded from the store at start-up and changed
 * with every turn that commits: a message queued adds to its user, an ack
 * takes away what it deleted, a deleted user goes.  A turn's changes are
 * applied only when its commit succeeded, so the counts stay exact across
 * failed commits, acks and restarts.
 *
 * When a user's queue reaches max-queued-per-user or max-queued-bytes-per-user,
 * the dataplane is told (DPM_QUEUE_FULL): it stops reading that user's IM
 * servers (TCP back-pressure; XEP-0198 acknowledgements follow commits, so a
 * server keeps what was not read) and says so in each account's detail.
 * Nothing that arrives is dropped: what was already read when the queue
 * filled is still committed.  Once acks bring the queue under both limits,
 * the servers are read again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_chan.h"
#include "cp_int.h"

#define QUOTA_BUCKETS 4096

struct uq {
    struct uq *next;
    uint64_t uid;
    uint64_t count, bytes;          /* committed */
    int64_t d_count, d_bytes;       /* this turn's changes, not yet committed */
    bool touched;                   /* in q->turn */
    bool full;                      /* the dataplane was told so */
};

struct cp_quota {
    uint64_t max_count, max_bytes;
    struct uq *b[QUOTA_BUCKETS];
    struct uq **turn;               /* entries changed this turn */
    size_t n_turn, cap_turn;
    uint64_t n_full;                /* users whose queue is full now */
};

struct cp_quota *
cp_quota_new(const struct cp_config *cfg)
{
    struct cp_quota *q = calloc(1, sizeof(*q));
    if (q) {
        q->max_count = cfg->max_queued_per_user;
        q->max_bytes = cfg->max_queued_bytes_per_user;
    }
    return q;
}

void
cp_quota_free(struct cp_quota *q)
{
    if (!q)
        return;
    for (unsigned i = 0; i < QUOTA_BUCKETS; i++)
        while (q->b[i]) {
            struct uq *e = q->b[i];
            q->b[i] = e->next;
            free(e);
        }
    free(q->turn);
    free(q);
}

static struct uq *
uq_find(const struct cp_quota *q, uint64_t uid)
{
    for (struct uq *e = q->b[uid % QUOTA_BUCKETS]; e; e = e->next)
        if (e->uid == uid)
            return e;
    return NULL;
}

static struct uq *
uq_get(struct cp_quota *q, uint64_t uid)
{
    struct uq *e = uq_find(q, uid);
    if (e)
        return e;
    if (!(e = calloc(1, sizeof(*e))))
        cp_oom(__func__);
    e->uid = uid;
    e->next = q->b[uid % QUOTA_BUCKETS];
    q->b[uid % QUOTA_BUCKETS] = e;
    return e;
}

static void
uq_del(struct cp_quota *q, struct uq *e)
{
    struct uq **pp = &q->b[e->uid % QUOTA_BUCKETS];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    free(e);
}

static int
load_one(void *ud, uint64_t uid, uint64_t seq, const void *v, size_t n)
{
    struct uq *e = uq_get(ud, uid);
    e->count++;
    e->bytes += n;
    return 0;
}

static bool
over(const struct cp_quota *q, const struct uq *e)
{
    return e->count >= q->max_count || e->bytes >= q->max_bytes;
}

/* Tell the dataplane that uid's queue is full (or has room again). */
static void
send_state(struct cp_core *c, const struct uq *e, bool after_commit)
{
    struct cp_quota *q = c->quota;
    struct cl_enc enc;
    char d[256];
    if (e->full)
        snprintf(d, sizeof(d), "paused: %llu messages (%llu bytes) wait for the user's ack "
                 "(max-queued-per-user %llu, max-queued-bytes-per-user %llu); acknowledge to resume",
                 (unsigned long long)e->count, (unsigned long long)e->bytes,
                 (unsigned long long)q->max_count, (unsigned long long)q->max_bytes);
    else
        d[0] = '\0';
    cl_enc_init(&enc);
    msgpack_pack_map(&enc.pk, 1);
    cl_pack_kstr(&enc, "detail", d);
    struct dp_msg m = { .type = DPM_QUEUE_FULL, .uid = e->uid };
    m.u.queue.full = e->full;
    (void)dp_msg_set_frame(&m, &enc);
    if (after_commit)
        cp_after_always(c, &m);
    else
        dp_chan_send_down(c->ch, &m);
}

int
cp_quota_load(struct cp_core *c, struct cp_txn *t)
{
    struct cp_quota *q = c->quota;
    int rc = cp_blob_each(t, CP_DB_QUEUE, 0, 0, load_one, q);
    if (rc < 0)
        return rc;
    for (unsigned i = 0; i < QUOTA_BUCKETS; i++)
        for (struct uq *e = q->b[i]; e; e = e->next)
            if (over(q, e)) {
                e->full = true;
                q->n_full++;
                c->lim.queue_full++;
                send_state(c, e, true);     /* behind the accounts' start */
            }
    return 0;
}

void
cp_quota_queue(struct cp_core *c, uint64_t uid, int64_t count, int64_t bytes)
{
    struct cp_quota *q = c->quota;
    struct uq *e = uq_get(q, uid);
    e->d_count += count;
    e->d_bytes += bytes;
    if (e->touched)
        return;
    if (q->n_turn == q->cap_turn) {
        size_t n = q->cap_turn ? q->cap_turn * 2 : 64;
        struct uq **nt = realloc(q->turn, n * sizeof(*nt));
        if (!nt)
            cp_oom(__func__);
        q->turn = nt;
        q->cap_turn = n;
    }
    e->touched = true;
    q->turn[q->n_turn++] = e;
}

void
cp_quota_user_del(struct cp_core *c, uint64_t uid)
{
    struct uq *e = uq_find(c->quota, uid);
    if (e)
        cp_quota_queue(c, uid, -(int64_t)e->count - e->d_count, -(int64_t)e->bytes - e->d_bytes);
}

void
cp_quota_turn_end(struct cp_core *c, bool ok)
{
    struct cp_quota *q = c->quota;
    for (size_t i = 0; i < q->n_turn; i++) {
        struct uq *e = q->turn[i];
        if (ok) {
            int64_t n = (int64_t)e->count + e->d_count, b = (int64_t)e->bytes + e->d_bytes;
            e->count = n > 0 ? (uint64_t)n : 0;
            e->bytes = b > 0 ? (uint64_t)b : 0;
        }
        e->d_count = e->d_bytes = 0;
        e->touched = false;
        bool full = over(q, e);
        if (full != e->full) {
            e->full = full;
            if (full) {
                q->n_full++;
                c->lim.queue_full++;
                LOG(IM_LOG_WARN, "uid %llu: queue full (%llu messages, %llu bytes): its IM servers are not "
                    "read until the user acknowledges", (unsigned long long)e->uid,
                    (unsigned long long)e->count, (unsigned long long)e->bytes);
            } else {
                q->n_full--;
            }
            send_state(c, e, false);
        }
        if (!e->count && !e->bytes && !e->full)
            uq_del(q, e);
    }
    q->n_turn = 0;
}

void
cp_quota_account_up(struct cp_core *c, uint64_t uid)
{
    struct uq *e = uq_find(c->quota, uid);
    if (e && e->full)
        send_state(c, e, true);
}

void
cp_quota_stats(const struct cp_core *c, uint64_t *full_users)
{
    *full_users = c->quota ? c->quota->n_full : 0;
}

bool
cp_quota_get(const struct cp_core *c, uint64_t uid, uint64_t *count, uint64_t *bytes)
{
    const struct uq *e = c->quota ? uq_find(c->quota, uid) : NULL;
    *count = e ? e->count : 0;
    *bytes = e ? e->bytes : 0;
    return e && e->full;
}
