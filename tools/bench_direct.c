/*
 * bench_direct.c - no relay: each user is an XMPP client of the server itself
 * (bench_xmpp.h).  The same messages between the same server and peer as
 * through a relay, so latency here is the floor a relay adds to.
 */
#include <stdlib.h>

#include "bench_int.h"
#include "bench_xmpp.h"
#include "im_common.h"

struct direct_user {
    struct bench *b;
    struct bench_xmpp *x;
    char jid[320];
    bool ready, gone;
};

struct direct {
    uint32_t n;
    struct direct_user *u;
};

static struct direct *
direct_of(const struct bench *b)
{
    return bench_relay_state(b);
}

static void
d_online(void *ud)
{
    struct direct_user *u = ud;
    if (!u->ready) {
        u->ready = true;
        bench_user_ready(u->b);
    }
}

static void
d_message(void *ud, const char *body, size_t len)
{
    struct direct_user *u = ud;
    if (bench_opts(u->b)->recv)
        bench_receipt(u->b, body, len);
}

static void
d_down(void *ud, const char *why)
{
    struct direct_user *u = ud;
    if (!why) {
        u->gone = true;
        u->x = NULL;
        return;
    }
    bench_fail(u->b, "direct: %s: %s", u->jid, why);
}

static const struct bench_xmpp_cb d_cb = {
    .online = d_online, .message = d_message, .down = d_down,
};

static int
d_start(struct bench *b)
{
    const struct bench_opts *o = bench_opts(b);
    struct direct *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->u = calloc(o->users, sizeof(*s->u));
    if (!s->u) {
        free(s);
        return -ENOMEM;
    }
    s->n = o->users;
    bench_set_relay_state(b, s);
    for (uint32_t i = 0; i < s->n; i++)
        s->u[i].gone = true;            /* until its session exists */
    for (uint32_t i = 0; i < s->n; i++) {
        struct direct_user *u = &s->u[i];
        u->b = b;
        bench_user_jid(b, i, u->jid, sizeof(u->jid));
        struct bench_xmpp_cfg cfg = {
            .jid = u->jid, .password = o->password, .host = o->xmpp_host, .port = o->xmpp_port,
        };
        int err = 0;
        u->x = bench_xmpp_open(bench_worker(b), &cfg, &d_cb, u, &err);
        u->gone = !u->x;
        if (!u->x) {
            bench_fail(b, "direct: cannot connect %s: %s", u->jid, im_strerror(err));
            return err;
        }
    }
    bench_note(b, "logging in to the XMPP server");
    return 0;
}

static int
d_send(struct bench *b, uint32_t user, uint64_t seq, const char *body, size_t len)
{
    struct direct_user *u = &direct_of(b)->u[user];
    if (!u->x)
        return -ENOTCONN;
    if (bench_xmpp_busy(u->x))
        return 1;
    int rc = bench_xmpp_send(u->x, bench_peer_jid(b), body, len);
    if (rc < 0)
        bench_fail(b, "direct: %s cannot send: %s", u->jid, im_strerror(rc));
    return rc;
}

static void
d_tick(struct bench *b)
{
    struct direct *s = direct_of(b);
    for (uint32_t i = 0; s && i < s->n; i++)
        if (s->u[i].x)
            bench_xmpp_tick(s->u[i].x);
}

static void
d_close(struct bench *b)
{
    struct direct *s = direct_of(b);
    for (uint32_t i = 0; s && i < s->n; i++)
        if (s->u[i].x)
            bench_xmpp_close(s->u[i].x);
}

static bool
d_closed(struct bench *b)
{
    struct direct *s = direct_of(b);
    for (uint32_t i = 0; s && i < s->n; i++)
        if (!s->u[i].gone)
            return false;
    return true;
}

static void
d_free(struct bench *b)
{
    struct direct *s = direct_of(b);
    if (!s)
        return;
    free(s->u);
    free(s);
    bench_set_relay_state(b, NULL);
}

const struct bench_relay_ops bench_direct_ops = {
    .name = "direct",
    .start = d_start,
    .send = d_send,
    .tick = d_tick,
    .close = d_close,
    .closed = d_closed,
    .free = d_free,
};
