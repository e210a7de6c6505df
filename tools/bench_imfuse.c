/*
 * bench_imfuse.c - imfuse as the relay under test, driven over its client
 * protocol (docs/CLIENT-PROTOCOL.md) on plain TCP, one connection per user.
 *
 * Set-up per user: login, link the user's XMPP account (or find it with
 * `accounts` when it is linked already), wait until it is online.  Send
 * direction: one `send` per message (with a cid unless --no-cid), its reply
 * matched by id; an error reply is a refused message.  Receive direction: the
 * `message` events, acknowledged the way a client does it: one `ack` of the
 * highest seq in flight at a time, the next one when its `ok` is in.
 * Messages pushed at login from earlier runs are acknowledged too (they are
 * strays: another nonce).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_int.h"
#include "client/cl_frame.h"
#include "dp_conn.h"
#include "im_common.h"

#define ID_LOGIN        1u
#define ID_LINK         2u
#define ID_ACCOUNTS     3u
#define ID_ACK_BASE     (1ull << 40)
#define ID_SEND_BASE    (1ull << 48)

enum imf_state {
    IMF_CONNECTING = 0,
    IMF_LOGIN,
    IMF_LINK,
    IMF_WAIT_ONLINE,
    IMF_READY,
};

struct imf_user {
    struct bench *b;
    uint32_t idx;
    char name[64], jid[320];
    struct dp_conn *c;
    enum imf_state st;
    uint8_t *buf;
    size_t len, cap;
    bool have_account;
    uint64_t account;
    uint64_t high_seq, acked_seq, ack_seq_sent, n_acks;
    bool ack_pending;
    uint64_t replies_owed;          /* sends without a reply yet */
    bool finished;
};

struct imf {
    uint32_t n;
    uint32_t open;                  /* connections not yet closed */
    bool finishing;
    struct imf_user *u;
};

static struct imf *
imf_of(const struct bench *b)
{
    return bench_relay_state(b);
}

static int
send_frame(struct imf_user *u, struct cl_enc *e)
{
    size_t len;
    const uint8_t *p = cl_enc_finish(e, &len);
    int rc = p ? dp_conn_write(u->c, p, len) : -IM_ETOOBIG;
    cl_enc_free(e);
    if (rc < 0) {
        bench_fail(u->b, "imfuse: cannot write to %s's connection: %s", u->name, im_strerror(rc));
        return rc;
    }
    return 0;
}

static void
req_head(struct cl_enc *e, uint32_t nfields, const char *op, uint64_t id)
{
    cl_enc_init(e);
    msgpack_pack_map(&e->pk, nfields + 2);
    cl_pack_kstr(e, "op", op);
    cl_pack_kuint(e, "id", id);
}

static void
send_accounts(struct imf_user *u)
{
    struct cl_enc e;
    req_head(&e, 0, "accounts", ID_ACCOUNTS);
    send_frame(u, &e);
}

static void
send_link(struct imf_user *u)
{
    const struct bench_opts *o = bench_opts(u->b);
    char server[96];
    snprintf(server, sizeof(server), "%s:%u", o->xmpp_host, o->xmpp_port);
    struct cl_enc e;
    req_head(&e, 5, "link", ID_LINK);
    cl_pack_kstr(&e, "network", "xmpp");
    cl_pack_kstr(&e, "login", u->jid);
    cl_pack_kstr(&e, "password", o->password);
    cl_pack_kstr(&e, "server", server);
    cl_pack_kstr(&e, "tls", "starttls");
    u->st = IMF_LINK;
    send_frame(u, &e);
}

static void
maybe_ack(struct imf_user *u)
{
    if (u->ack_pending || u->high_seq <= u->acked_seq)
        return;
    struct cl_enc e;
    req_head(&e, 1, "ack", ID_ACK_BASE + ++u->n_acks);
    cl_pack_kuint(&e, "seq", u->high_seq);
    u->ack_pending = true;
    u->ack_seq_sent = u->high_seq;
    send_frame(u, &e);
}

static void
user_ready(struct imf_user *u)
{
    if (u->st == IMF_READY)
        return;
    u->st = IMF_READY;
    bench_user_ready(u->b);
}

/* Is every user done with what it owes (acks, replies)? */
static void
check_finished(struct bench *b)
{
    struct imf *s = imf_of(b);
    if (!s->finishing)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        struct imf_user *u = &s->u[i];
        if (u->replies_owed || u->ack_pending || u->high_seq > u->acked_seq)
            return;
    }
    s->finishing = false;
    bench_finished(b);
}

static void
str_field(const msgpack_object *map, const char *key, char *buf, size_t sz)
{
    struct im_str v;
    const char *why;
    if (cl_get_str(map, key, 0, 4096, &v, &why))
        v = (struct im_str){ "", 0 };
    snprintf(buf, sz, "%.*s", (int)v.len, v.p);
}

static void
on_reply(struct imf_user *u, const struct cl_msg *m)
{
    struct bench *b = u->b;
    bool ok = cl_view_eq(m->op, "ok");
    const char *why;
    char code[64], text[256];

    if (!ok) {
        str_field(&m->root, "code", code, sizeof(code));
        str_field(&m->root, "message", text, sizeof(text));
    }
    if (m->id >= ID_SEND_BASE) {
        if (u->replies_owed)
            u->replies_owed--;
        if (!ok) {
            char w[350];
            snprintf(w, sizeof(w), "%s: %s", code, text);
            bench_send_failed(b, m->id - ID_SEND_BASE, w);
        }
        check_finished(b);
        return;
    }
    if (m->id >= ID_ACK_BASE) {
        if (!ok) {
            bench_fail(b, "imfuse: ack %" PRIu64 " of %s refused: %s: %s", u->ack_seq_sent, u->name,
                       code, text);
            return;
        }
        u->ack_pending = false;
        u->acked_seq = u->ack_seq_sent;
        maybe_ack(u);
        check_finished(b);
        return;
    }
    switch (m->id) {
    case ID_LOGIN:
        if (!ok) {
            bench_fail(b, "imfuse: login as %s refused: %s: %s", u->name, code, text);
            return;
        }
        bench_note(b, "%s logged in, linking %s", u->name, u->jid);
        send_link(u);
        break;
    case ID_LINK:
        if (ok) {
            uint64_t acc;
            if (cl_get_uint(&m->root, "account", &acc, &why)) {
                bench_fail(b, "imfuse: link reply without an account id");
                return;
            }
            u->account = acc;
            u->have_account = true;
            u->st = IMF_WAIT_ONLINE;
            bench_note(b, "%s linked account %" PRIu64 ", waiting until it is online", u->name, acc);
            send_accounts(u);          /* in case it went online before we knew its id */
        } else if (!strcmp(code, "exists")) {
            u->st = IMF_WAIT_ONLINE;
            send_accounts(u);
        } else {
            bench_fail(b, "imfuse: link %s for %s refused: %s: %s", u->jid, u->name, code, text);
        }
        break;
    case ID_ACCOUNTS: {
        const msgpack_object *arr;
        if (!ok || cl_get_array(&m->root, "accounts", &arr, &why)) {
            bench_fail(b, "imfuse: accounts of %s: %s", u->name, ok ? "no list" : text);
            return;
        }
        for (uint32_t i = 0; i < arr->via.array.size; i++) {
            const msgpack_object *a = &arr->via.array.ptr[i];
            char login[320], state[32];
            uint64_t acc;
            str_field(a, "login", login, sizeof(login));
            str_field(a, "state", state, sizeof(state));
            if (strcmp(login, u->jid) || cl_get_uint(a, "account", &acc, &why))
                continue;
            u->account = acc;
            u->have_account = true;
            if (!strcmp(state, "online"))
                user_ready(u);
            else if (!strcmp(state, "auth_failed"))
                bench_fail(b, "imfuse: account %s of %s: auth_failed", u->jid, u->name);
            return;
        }
        bench_fail(b, "imfuse: %s has no account %s although link said it exists", u->name, u->jid);
        break;
    }
    default:
        break;
    }
}

static void
on_event(struct imf_user *u, const struct cl_msg *m)
{
    struct bench *b = u->b;
    const char *why;

    if (cl_view_eq(m->op, "message")) {
        uint64_t seq;
        struct im_str body;
        if (cl_get_uint(&m->root, "seq", &seq, &why) ||
            cl_get_str(&m->root, "body", 1, 1u << 20, &body, &why)) {
            bench_fail(b, "imfuse: malformed message event for %s", u->name);
            return;
        }
        if (seq > u->high_seq)
            u->high_seq = seq;
        bench_receipt(b, body.p, body.len);
        maybe_ack(u);
    } else if (cl_view_eq(m->op, "account")) {
        uint64_t acc;
        char state[32], login[320], detail[256];
        if (cl_get_uint(&m->root, "account", &acc, &why))
            return;
        str_field(&m->root, "state", state, sizeof(state));
        str_field(&m->root, "login", login, sizeof(login));
        str_field(&m->root, "detail", detail, sizeof(detail));
        if (u->have_account ? acc != u->account : strcmp(login, u->jid))
            return;
        if (!strcmp(state, "online")) {
            u->account = acc;
            u->have_account = true;
            if (u->st >= IMF_WAIT_ONLINE)
                user_ready(u);
        } else if (!strcmp(state, "auth_failed")) {
            bench_fail(b, "imfuse: account %s of %s: auth_failed: %s", u->jid, u->name, detail);
        } else {
            if (u->st == IMF_READY)
                bench_fail(b, "imfuse: account %s of %s went %s: %s", u->jid, u->name, state, detail);
            else
                bench_note(b, "account %s of %s is %s: %s", u->jid, u->name, state, detail);
        }
    } else if (cl_view_eq(m->op, "error")) {
        char text[256];
        str_field(&m->root, "message", text, sizeof(text));
        bench_fail(b, "imfuse: error without id for %s (the connection closes): %s", u->name, text);
    }
}

static void
imf_on_open(struct dp_conn *c, int status, const char *detail)
{
    struct imf_user *u = dp_conn_ud(c);
    if (status < 0) {
        bench_fail(u->b, "imfuse: cannot connect to %s: %s", bench_opts(u->b)->imfuse,
                   detail && *detail ? detail : im_strerror(status));
        return;
    }
    const struct bench_opts *o = bench_opts(u->b);
    struct cl_enc e;
    req_head(&e, 3, "login", ID_LOGIN);
    cl_pack_kstr(&e, "user", u->name);
    cl_pack_kstr(&e, "password", o->password);
    cl_pack_kstr(&e, "device", "imfuse-bench");
    u->st = IMF_LOGIN;
    send_frame(u, &e);
}

static void
imf_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct imf_user *u = dp_conn_ud(c);
    if (u->len + n > u->cap) {
        size_t cap = u->cap ? u->cap : 65536;
        while (cap < u->len + n)
            cap *= 2;
        uint8_t *nb = realloc(u->buf, cap);
        if (!nb) {
            bench_fail(u->b, "imfuse: out of memory");
            return;
        }
        u->buf = nb;
        u->cap = cap;
    }
    memcpy(u->buf + u->len, p, n);
    u->len += n;
    size_t off = 0;
    while (off < u->len) {
        const uint8_t *body;
        uint32_t blen;
        long fl = cl_frame_split(u->buf + off, u->len - off, &body, &blen);
        if (fl == -EAGAIN)
            break;
        if (fl < 0) {
            bench_fail(u->b, "imfuse: bad frame length from the relay (%s)", im_strerror((int)fl));
            return;
        }
        struct cl_msg m;
        if (cl_msg_decode(&m, body, blen)) {
            bench_fail(u->b, "imfuse: undecodable frame from the relay");
            return;
        }
        if (m.has_id)
            on_reply(u, &m);
        else
            on_event(u, &m);
        cl_msg_free(&m);
        off += (size_t)fl;
    }
    if (off) {
        memmove(u->buf, u->buf + off, u->len - off);
        u->len -= off;
    }
}

static void
imf_on_close(struct dp_conn *c, int reason)
{
    struct imf_user *u = dp_conn_ud(c);
    struct imf *s = imf_of(u->b);
    u->c = NULL;
    s->open--;
    bench_fail(u->b, "imfuse: %s's connection closed: %s", u->name,
               reason ? im_strerror(reason) : "by the relay");
}

static const struct dp_conn_cb imf_cb = {
    .on_open = imf_on_open,
    .on_data = imf_on_data,
    .on_close = imf_on_close,
};

static int
imf_start(struct bench *b)
{
    const struct bench_opts *o = bench_opts(b);
    struct imf *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->u = calloc(o->users, sizeof(*s->u));
    if (!s->u) {
        free(s);
        return -ENOMEM;
    }
    s->n = o->users;
    bench_set_relay_state(b, s);
    for (uint32_t i = 0; i < s->n; i++) {
        struct imf_user *u = &s->u[i];
        int err;
        u->b = b;
        u->idx = i;
        bench_user_name(b, i, u->name, sizeof(u->name));
        bench_user_jid(b, i, u->jid, sizeof(u->jid));
        if (!(u->c = bench_connect(b, "imfuse", "--imfuse", o->imfuse, &imf_cb, u, &err)))
            return err;
        s->open++;
    }
    bench_note(b, "logging in to imfuse");
    return 0;
}

static int
imf_send(struct bench *b, uint32_t user, uint64_t seq, const char *body, size_t len)
{
    struct imf *s = imf_of(b);
    struct imf_user *u = &s->u[user];
    if (!u->c)
        return -ENOTCONN;
    if (dp_conn_backlog(u->c) > DP_CONN_HIWAT)
        return 1;
    const struct bench_opts *o = bench_opts(b);
    struct cl_enc e;
    req_head(&e, o->cid ? 3 : 2, "send", ID_SEND_BASE + seq);
    cl_pack_key(&e, "to");
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kuint(&e, "account", u->account);
    cl_pack_kstr(&e, "address", bench_peer_jid(b));
    cl_pack_kstrn(&e, "body", body, len);
    if (o->cid) {
        /* the body starts with "bench NONCE SEQ ": the cid is "NONCE-SEQ" */
        char cid[40];
        snprintf(cid, sizeof(cid), "%.8s-%" PRIu64, body + 6, seq);
        cl_pack_kstr(&e, "cid", cid);
    }
    u->replies_owed++;
    return send_frame(u, &e);
}

static void
imf_finish(struct bench *b)
{
    struct imf *s = imf_of(b);
    s->finishing = true;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->u[i].c)
            maybe_ack(&s->u[i]);
    check_finished(b);
}

static void
imf_close(struct bench *b)
{
    struct imf *s = imf_of(b);
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        if (s->u[i].c)
            dp_conn_close(s->u[i].c);
}

static bool
imf_closed(struct bench *b)
{
    struct imf *s = imf_of(b);
    return !s || s->open == 0;
}

static void
imf_free(struct bench *b)
{
    struct imf *s = imf_of(b);
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        free(s->u[i].buf);
    free(s->u);
    free(s);
    bench_set_relay_state(b, NULL);
}

const struct bench_relay_ops bench_imfuse_ops = {
    .name = "imfuse",
    .start = imf_start,
    .send = imf_send,
    .finish = imf_finish,
    .close = imf_close,
    .closed = imf_closed,
    .free = imf_free,
};
