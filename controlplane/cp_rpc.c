/*
 * cp_rpc.c - the control socket (imfusectl): a UNIX stream socket speaking
 * the client protocol's framing, and the one registry of operator commands.
 *
 * Replies are queued and leave after the loop turn's commit (cp_rpc_commit_done),
 * so an operator never sees "ok" for a change that is not durable.
 */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "dp_chan.h"
#include "dp_relay.h"
#include "dp_stats.h"
#include "client/cl_ctl.h"
#include "cp_int.h"

#define RPC_MAX_CONNS   64
#define RPC_ACCEPT_PAUSE_MS 200     /* accept failed for want of files: listen again after */
#define RPC_RX_MAX      (4 + 65536)

struct rpc_conn {
    int fd;
    uint32_t gen;
    uint8_t *rx;
    size_t rx_len;
    uint8_t *tx;
    size_t tx_len;
    bool closing;
};

struct rpc_pending {
    struct rpc_pending *next;
    unsigned slot;
    uint32_t gen;
    uint64_t id;
    uint8_t *frame;
    size_t len;
    bool durable;           /* replaced by an internal error when the commit fails */
};

struct cp_rpc {
    struct cp_core *c;
    int lfd;
    int spare_fd;                   /* /dev/null, given up so the operator gets in when files run out */
    uint64_t paused_until;          /* mono ms: accept failed for want of files, not polled until */
    char path[108];
    struct rpc_conn conns[RPC_MAX_CONNS];
    uint32_t next_gen;
    struct rpc_pending *pending, *pending_tail;
};

/* A command: transport-neutral handler over a decoded request. */
struct rpc_req {
    struct cp_rpc *r;
    unsigned slot;
    uint32_t gen;
    uint64_t id;
    const msgpack_object *args;
};

typedef void cp_cmd_fn(struct rpc_req *q);

/* ------------------------------------------------------------------------ */

static void
queue_frame(struct cp_rpc *r, unsigned slot, uint32_t gen, uint64_t id, uint8_t *f, size_t len, bool durable)
{
    struct rpc_pending *p = calloc(1, sizeof(*p));
    if (!p)
        cp_oom(__func__);
    p->slot = slot;
    p->gen = gen;
    p->id = id;
    p->frame = f;
    p->len = len;
    p->durable = durable;
    if (r->pending_tail)
        r->pending_tail->next = p;
    else
        r->pending = p;
    r->pending_tail = p;
}

static void reply_error(struct cp_rpc *r, unsigned slot, uint32_t gen, bool has_id, uint64_t id,
                        const char *code, const char *msg);

static void
reply_enc(struct rpc_req *q, struct cl_enc *e, bool durable)
{
    size_t len;
    if (!cl_enc_finish(e, &len)) {
        bool too_big = e->too_big;
        cl_enc_free(e);
        if (!too_big)
            cp_oom(__func__);
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_LIMIT,
                    "the reply would pass the 1 MiB frame limit");
        return;
    }
    uint8_t *f = cl_enc_release(e, &len);
    queue_frame(q->r, q->slot, q->gen, q->id, f, len, durable);
}

static void
reply_error(struct cp_rpc *r, unsigned slot, uint32_t gen, bool has_id, uint64_t id,
            const char *code, const char *msg)
{
    uint8_t *f;
    size_t len;
    if (cl_build_error(has_id, id, code, msg, &f, &len) == 0)
        queue_frame(r, slot, gen, id, f, len, false);
}

static void
reply_ok(struct rpc_req *q, bool durable)
{
    uint8_t *f;
    size_t len;
    if (cl_build_ok(q->id, &f, &len) == 0)
        queue_frame(q->r, q->slot, q->gen, q->id, f, len, durable);
}

static void
ok_head(struct cl_enc *e, uint64_t id, uint32_t extra)
{
    cl_enc_init(e);
    msgpack_pack_map(&e->pk, 2 + extra);
    cl_pack_kstr(e, "op", "ok");
    cl_pack_kuint(e, "id", id);
}

static int
arg_str(struct rpc_req *q, const char *key, uint32_t min, uint32_t max, struct im_str *out)
{
    const char *why;
    int rc = cl_get_str(q->args, key, min, max, out, &why);
    if (rc < 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s: %s", key, rc == -IM_ENOTFOUND ? "is required" : why);
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_BAD_REQUEST, msg);
    }
    return rc;
}

/* name argument that must be an existing user */
static int
arg_user(struct rpc_req *q, struct cp_txn *t, struct cp_user *u)
{
    struct im_str name;
    char buf[CP_NAME_MAX + 1];
    if (arg_str(q, "name", 1, CP_NAME_MAX, &name) < 0)
        return -1;
    snprintf(buf, sizeof(buf), "%.*s", (int)name.len, name.p);
    if (!t || cp_user_get(t, buf, u) < 0) {
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_NOT_FOUND, "no such user");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* commands                                                                  */

struct hash_ctx {
    struct cp_rpc *r;
    bool passwd;
};

static void
user_hash_done(void *ctx, struct cp_auth_job *j)
{
    struct hash_ctx *hc = ctx;
    struct cp_rpc *r = hc->r;
    struct cp_core *c = r->c;
    struct cp_txn *t = cp_txn(c);
    struct rpc_req q = { .r = r, .slot = j->conn, .gen = j->gen, .id = j->req_id };
    struct cp_user u;
    int rc;

    bool passwd = hc->passwd;
    free(hc);
    if (j->result < 0 || !t) {
        reply_error(r, q.slot, q.gen, true, q.id, CL_ERR_INTERNAL, "cannot hash the password");
        return;
    }
    if (passwd) {
        rc = cp_user_get(t, j->user, &u);
        if (rc == 0) {
            im_strlcpy(u.hash, j->newhash, sizeof(u.hash));
            rc = cp_user_put(t, &u);
        }
    } else {
        memset(&u, 0, sizeof(u));
        im_strlcpy(u.name, j->user, sizeof(u.name));
        im_strlcpy(u.hash, j->newhash, sizeof(u.hash));
        rc = cp_user_add(t, &u);
    }
    if (rc == -IM_EEXIST)
        reply_error(r, q.slot, q.gen, true, q.id, CL_ERR_EXISTS, "user exists");
    else if (rc == -IM_ENOTFOUND)
        reply_error(r, q.slot, q.gen, true, q.id, CL_ERR_NOT_FOUND, "no such user");
    else if (rc < 0)
        reply_error(r, q.slot, q.gen, true, q.id, CL_ERR_INTERNAL, cp_store_strerror(rc));
    else {
        LOG(IM_LOG_INFO, "operator: user %s %s", j->user, passwd ? "password changed" : "added");
        reply_ok(&q, true);
    }
}

static void
cmd_user_hash(struct rpc_req *q, bool passwd)
{
    struct im_str name, pw;
    struct cp_user u;
    char buf[CP_NAME_MAX + 1];

    if (arg_str(q, "name", 1, 255, &name) < 0 || arg_str(q, "password", 1, 1024, &pw) < 0)
        return;
    if (!cp_user_name_ok(name.p, name.len)) {
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_BAD_REQUEST,
                    "name: must be 1-64 characters of a-z, 0-9, '.', '_' and '-'");
        return;
    }
    snprintf(buf, sizeof(buf), "%.*s", (int)name.len, name.p);
    struct cp_txn *t = cp_txn(q->r->c);
    bool exists = t && cp_user_get(t, buf, &u) == 0;
    if (!passwd && exists) {
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_EXISTS, "user exists");
        return;
    }
    if (passwd && !exists) {
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_NOT_FOUND, "no such user");
        return;
    }
    struct cp_auth_job *j = calloc(1, sizeof(*j));
    struct hash_ctx *hc = calloc(1, sizeof(*hc));
    if (!j || !hc || !(j->password = cl_strdup(pw)))
        cp_oom(__func__);
    hc->r = q->r;
    hc->passwd = passwd;
    j->kind = CP_AUTH_HASH;
    j->pwlen = pw.len;
    j->done = user_hash_done;
    j->ctx = hc;
    j->conn = q->slot;
    j->gen = q->gen;
    j->req_id = q->id;
    im_strlcpy(j->user, buf, sizeof(j->user));
    cp_auth_submit(q->r->c->auth, j);
}

static void cmd_user_add(struct rpc_req *q) { cmd_user_hash(q, false); }
static void cmd_user_passwd(struct rpc_req *q) { cmd_user_hash(q, true); }

static void
cmd_user_del(struct rpc_req *q)
{
    struct cp_core *c = q->r->c;
    struct cp_txn *t = cp_txn(c);
    struct cp_user u;
    if (arg_user(q, t, &u) < 0)
        return;
    int rc = cp_user_del(t, u.name);
    if (rc < 0) {
        reply_error(q->r, q->slot, q->gen, true, q->id, CL_ERR_INTERNAL, cp_store_strerror(rc));
        return;
    }
    struct dp_msg m = { .type = DPM_USER_DEL, .uid = u.uid };
    cp_after_commit(c, &m, NULL);
    cp_state_del_user(c, u.uid);
    LOG(IM_LOG_INFO, "operator: user %s deleted", u.name);
    reply_ok(q, true);
}

struct count_ctx {
    uint64_t n;
};

static int
count_acc(void *ud, const struct cp_account *a)
{
    ((struct count_ctx *)ud)->n++;
    return 0;
}

struct list_ctx {
    struct cp_core *c;
    struct cp_txn *t;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint32_t n;
};

static void
pk_kstr(msgpack_packer *pk, const char *k, const char *v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_str_with_body(pk, v, strlen(v));
}

static void
pk_kuint(msgpack_packer *pk, const char *k, uint64_t v)
{
    msgpack_pack_str_with_body(pk, k, strlen(k));
    msgpack_pack_uint64(pk, v);
}

static int
list_user(void *ud, const struct cp_user *u)
{
    struct list_ctx *l = ud;
    struct count_ctx acc = { 0 };
    uint64_t queued = 0, sessions = 0;
    (void)cp_account_each(l->t, u->uid, count_acc, &acc);
    (void)cp_blob_count(l->t, CP_DB_QUEUE, u->uid, &queued);
    for (struct cp_session *s = l->c->sessions; s; s = s->next)
        sessions += s->uid == u->uid;
    msgpack_pack_map(&l->pk, 5);
    pk_kstr(&l->pk, "name", u->name);
    pk_kuint(&l->pk, "uid", u->uid);
    pk_kuint(&l->pk, "accounts", acc.n);
    pk_kuint(&l->pk, "queued", queued);
    pk_kuint(&l->pk, "sessions", sessions);
    l->n++;
    return 0;
}

static void
finish_list(struct rpc_req *q, struct list_ctx *l, const char *key)
{
    struct cl_enc e;
    ok_head(&e, q->id, 1);
    cl_pack_key(&e, key);
    msgpack_pack_array(&e.pk, l->n);
    cl_enc_raw(&e, l->sb.data, l->sb.size);
    msgpack_sbuffer_destroy(&l->sb);
    reply_enc(q, &e, false);
}

static void
list_init(struct list_ctx *l, struct cp_core *c, struct cp_txn *t)
{
    memset(l, 0, sizeof(*l));
    l->c = c;
    l->t = t;
    msgpack_sbuffer_init(&l->sb);
    msgpack_packer_init(&l->pk, &l->sb, msgpack_sbuffer_write);
}

static void
cmd_user_list(struct rpc_req *q)
{
    struct list_ctx l;
    struct cp_txn *t = cp_txn(q->r->c);
    list_init(&l, q->r->c, t);
    if (t)
        (void)cp_user_each(t, list_user, &l);
    finish_list(q, &l, "users");
}

static int
list_account(void *ud, const struct cp_account *a)
{
    struct list_ctx *l = ud;
    struct cp_acct_state *s = cp_state_get(l->c, a->account);
    msgpack_pack_map(&l->pk, 8);
    pk_kuint(&l->pk, "account", a->account);
    pk_kstr(&l->pk, "network", a->network);
    pk_kstr(&l->pk, "login", a->login);
    pk_kstr(&l->pk, "server", a->server);
    pk_kstr(&l->pk, "tls", a->tls);
    pk_kstr(&l->pk, "name", a->name);
    pk_kstr(&l->pk, "state", im_account_state_name(s ? (enum im_account_state)s->state : IM_ACC_OFFLINE));
    pk_kstr(&l->pk, "detail", s ? s->detail : "");
    l->n++;
    return 0;
}

static void
cmd_accounts(struct rpc_req *q)
{
    struct cp_txn *t = cp_txn(q->r->c);
    struct cp_user u;
    struct list_ctx l;
    if (arg_user(q, t, &u) < 0)
        return;
    list_init(&l, q->r->c, t);
    (void)cp_account_each(t, u.uid, list_account, &l);
    finish_list(q, &l, "accounts");
}

static void
cmd_sessions(struct rpc_req *q)
{
    struct list_ctx l;
    list_init(&l, q->r->c, NULL);
    for (struct cp_session *s = q->r->c->sessions; s; s = s->next) {
        msgpack_pack_map(&l.pk, 4);
        pk_kstr(&l.pk, "user", s->user);
        pk_kstr(&l.pk, "peer", s->peer);
        pk_kstr(&l.pk, "device", s->device);
        pk_kuint(&l.pk, "since", s->since);
        l.n++;
    }
    finish_list(q, &l, "sessions");
}

static void
cmd_stats(struct rpc_req *q)
{
    struct cp_core *c = q->r->c;
    struct dp_relay_stats st;
    struct dp_stats ws;
    struct cp_store_stats ss;
    memset(&st, 0, sizeof(st));
    memset(&ws, 0, sizeof(ws));
    memset(&ss, 0, sizeof(ss));
    if (c->relay) {
        dp_relay_stats_read(c->relay, &st);
        dp_worker_stats(dp_relay_worker(c->relay), &ws);    /* one worker (lcore) today: the sums */
    }
    (void)cp_store_stats(c->store, &ss);
    struct cp_resolve_stats rs = { 0 };
    if (c->resolver)
        cp_resolver_stats(c->resolver, &rs);
    unsigned n_sessions = 0;
    for (struct cp_session *s = c->sessions; s; s = s->next)
        n_sessions++;
    const struct { const char *k; uint64_t v; } kv[] = {
        { "clients_accepted", st.clients_accepted }, { "clients_open", st.clients_open },
        { "clients_dropped", st.clients_dropped },
        { "logins_ok", st.logins_ok }, { "sessions", n_sessions },
        { "frames_in", st.frames_in }, { "frames_bad", st.frames_bad },
        { "events_out", st.events_out }, { "msgs_in", st.msgs_in }, { "msgs_out", st.msgs_out },
        { "msgs_delivered", st.msgs_delivered }, { "msgs_committed", c->msgs_committed },
        { "outbox_added", c->outbox_added }, { "outbox_deleted", c->outbox_deleted },
        { "outbox_pending_deletes", c->n_done }, { "send_queue_len", st.send_queue_len },
        { "account_connects", st.acct_connects }, { "account_online", st.acct_online },
        { "account_failures", st.acct_failures }, { "store_commits", c->commits },
        { "store_commit_failures", c->commit_failures }, { "store_map_size", ss.map_size },
        { "store_pages_used", ss.last_pgno + 1 }, { "store_page_size", ss.page_size },
        { "store_pages_written", ss.pages_written },
        { "store_users", ss.users }, { "store_accounts", ss.accounts }, { "store_queued", ss.queued },
        { "auth_pending", cp_auth_pending(c->auth) },
        { "dp_oom", st.oom }, { "dp_up_dropped", st.up_dropped },
        /* client connections and their limits */
        { "clients_prelogin", st.clients_prelogin }, { "prelogin_bytes", st.prelogin_bytes },
        { "prelogin_timeouts", st.prelogin_timeouts }, { "prelogin_evicted", st.prelogin_evicted },
        { "refused_max_conns", st.refused_max_conns }, { "refused_per_address", st.refused_per_address },
        { "accept_paused", ws.accept_paused }, { "clients_read_paused", st.clients_read_paused },
        { "clients_timed_out", st.clients_timed_out }, { "idle_timeouts", st.idle_timeouts },
        { "replays_paced", st.replays_paced }, { "replies_limit", st.replies_limit },
        { "events_too_big", st.events_too_big }, { "contacts_cut", st.contacts_cut },
        { "plane_oversize", c->plane_oversize },
        { "resolver_lookups", rs.lookups }, { "resolver_cache_hits", rs.cache_hits },
        { "resolver_failures", rs.failures }, { "resolver_pending", rs.pending },
        { "conn_opened", ws.conn_opened }, { "conn_closed", ws.conn_closed },
        { "connect_failed", ws.connect_failed }, { "bytes_in", ws.bytes_in },
        { "bytes_out", ws.bytes_out }, { "tls_ok", ws.tls_ok }, { "tls_failed", ws.tls_failed },
        /* the dpdk backend's per-lcore counters (0 with io kernel) */
        { "io_rx_packets", ws.io_pkts_in }, { "io_tx_packets", ws.io_pkts_out },
        { "io_rx_bytes", ws.io_bytes_in }, { "io_tx_bytes", ws.io_bytes_out },
        { "io_rx_drops", ws.io_drop_bad + ws.io_nic_missed + ws.io_nic_errors },
        { "io_tx_drops", ws.io_drop_tx }, { "io_nombuf_drops", ws.io_drop_nombuf + ws.io_nic_nombuf },
        { "io_busy_cycles", ws.io_busy_cycles }, { "io_busy_turns", ws.io_busy_turns },
        { "io_sleeps", ws.io_sleeps },
        { "tcp_open", ws.tcp_open }, { "tcp_retransmits", ws.tcp_retransmits },
        { "tcp_refused", ws.tcp_refused }, { "tcp_drops", ws.tcp_drops },
    };
    struct cl_enc e;
    ok_head(&e, q->id, 1);
    cl_pack_key(&e, "stats");
    msgpack_pack_map(&e.pk, (uint32_t)IM_ARRAY_SIZE(kv));
    for (size_t i = 0; i < IM_ARRAY_SIZE(kv); i++)
        cl_pack_kuint(&e, kv[i].k, kv[i].v);
    reply_enc(q, &e, false);
}

static void
cmd_kick(struct rpc_req *q)
{
    struct cp_core *c = q->r->c;
    struct cp_txn *t = cp_txn(c);
    struct cp_user u;
    unsigned n = 0;
    if (arg_user(q, t, &u) < 0)
        return;
    for (struct cp_session *s = c->sessions; s; s = s->next) {
        if (s->uid != u.uid)
            continue;
        struct dp_msg m = { .type = DPM_LOGOUT, .conn = s->conn, .gen = s->gen, .uid = u.uid };
        cp_after_always(c, &m);
        n++;
    }
    struct cl_enc e;
    ok_head(&e, q->id, 1);
    cl_pack_kuint(&e, "kicked", n);
    reply_enc(q, &e, false);
}

static void
cmd_drain(struct rpc_req *q)
{
    struct dp_msg m = { .type = DPM_DRAIN };
    cp_after_always(q->r->c, &m);
    LOG(IM_LOG_INFO, "operator: drain: no new client connections are accepted");
    reply_ok(q, false);
}

static void cmd_help(struct rpc_req *q);

/* The handlers of the operator commands, by their row in
 * protocols/client/cl_ctl.c (the table imfusectl reads too). */
static cp_cmd_fn *const cmd_handlers[CL_CTL__COUNT] = {
    [CL_CTL_USER_ADD] = cmd_user_add,
    [CL_CTL_USER_DEL] = cmd_user_del,
    [CL_CTL_USER_PASSWD] = cmd_user_passwd,
    [CL_CTL_USER_LIST] = cmd_user_list,
    [CL_CTL_ACCOUNTS] = cmd_accounts,
    [CL_CTL_SESSIONS] = cmd_sessions,
    [CL_CTL_STATS] = cmd_stats,
    [CL_CTL_KICK] = cmd_kick,
    [CL_CTL_DRAIN] = cmd_drain,
    [CL_CTL_HELP] = cmd_help,
};

static void
cmd_help(struct rpc_req *q)
{
    struct cl_enc e;
    ok_head(&e, q->id, 1);
    cl_pack_key(&e, "commands");
    msgpack_pack_array(&e.pk, CL_CTL__COUNT);
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *cmd = &cl_ctl_cmds[i];
        char help[256];
        snprintf(help, sizeof(help), "%s%s%s: %s", cmd->op,
                 cmd->flags & CL_CTL_ARG_NAME ? " {name" : "",
                 cmd->flags & CL_CTL_ARG_NAME ? (cmd->flags & CL_CTL_ARG_PASSWORD ? ", password}" : "}") : "",
                 cmd->help);
        msgpack_pack_map(&e.pk, 2);
        cl_pack_kstr(&e, "name", cmd->op);
        cl_pack_kstr(&e, "help", help);
    }
    reply_enc(q, &e, false);
}

/* ------------------------------------------------------------------------ */
/* socket                                                                    */

struct cp_rpc *
cp_rpc_open(struct cp_core *c, const char *path, char *why, size_t whysz)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct cp_rpc *r;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(why, whysz, "control socket path too long: %s", path);
        return NULL;
    }
    im_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));

    /* A socket file left by a crash is replaced; a live daemon is not. */
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(why, whysz, "%s exists and is not a socket", path);
            return NULL;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(probe);
            snprintf(why, whysz, "another imfused is serving %s", path);
            return NULL;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->c = c;
    im_strlcpy(r->path, path, sizeof(r->path));
    for (unsigned i = 0; i < RPC_MAX_CONNS; i++)
        r->conns[i].fd = -1;
    r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    r->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177);    /* the socket is created 0600 */
    int rc = r->lfd < 0 ? -1 : bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(r->lfd, 16) < 0) {
        snprintf(why, whysz, "cannot open control socket %s: %s", path, strerror(errno));
        if (r->lfd >= 0)
            close(r->lfd);
        if (r->spare_fd >= 0)
            close(r->spare_fd);
        free(r);
        return NULL;
    }
    return r;
}

static void
conn_close(struct cp_rpc *r, unsigned i)
{
    struct rpc_conn *k = &r->conns[i];
    if (k->fd >= 0)
        close(k->fd);
    free(k->rx);
    free(k->tx);
    memset(k, 0, sizeof(*k));
    k->fd = -1;
}

void
cp_rpc_close(struct cp_rpc *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < RPC_MAX_CONNS; i++)
        conn_close(r, i);
    while (r->pending) {
        struct rpc_pending *p = r->pending;
        r->pending = p->next;
        free(p->frame);
        free(p);
    }
    close(r->lfd);
    if (r->spare_fd >= 0)
        close(r->spare_fd);
    unlink(r->path);
    free(r);
}

unsigned
cp_rpc_pollfds(struct cp_rpc *r, struct pollfd *fds, unsigned max)
{
    unsigned n = 0;
    if (max == 0)
        return 0;
    /* Out of files: level-triggered readiness would spin the loop; wait a little. */
    bool paused = r->paused_until && im_mono_ms() < r->paused_until;
    fds[n++] = (struct pollfd){ .fd = paused ? -1 : r->lfd, .events = POLLIN };
    for (unsigned i = 0; i < RPC_MAX_CONNS && n < max; i++) {
        struct rpc_conn *k = &r->conns[i];
        if (k->fd < 0)
            continue;
        fds[n++] = (struct pollfd){ .fd = k->fd, .events = (short)(POLLIN | (k->tx_len ? POLLOUT : 0)) };
    }
    return n;
}

static void
conn_flush(struct cp_rpc *r, unsigned i)
{
    struct rpc_conn *k = &r->conns[i];
    while (k->tx_len) {
        ssize_t w = send(k->fd, k->tx, k->tx_len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            conn_close(r, i);
            return;
        }
        memmove(k->tx, k->tx + w, k->tx_len - (size_t)w);
        k->tx_len -= (size_t)w;
    }
    if (k->closing)
        conn_close(r, i);
}

static void
conn_queue(struct cp_rpc *r, unsigned i, const uint8_t *f, size_t len)
{
    struct rpc_conn *k = &r->conns[i];
    uint8_t *nt = realloc(k->tx, k->tx_len + len);
    if (!nt)
        cp_oom(__func__);
    k->tx = nt;
    memcpy(k->tx + k->tx_len, f, len);
    k->tx_len += len;
    conn_flush(r, i);
}

static void
conn_request(struct cp_rpc *r, unsigned i, const uint8_t *body, uint32_t len)
{
    struct rpc_conn *k = &r->conns[i];
    struct cl_msg m;
    int rc = cl_msg_decode(&m, body, len);
    if (rc < 0 || !m.op.len || !m.has_id) {
        if (rc == 0)
            cl_msg_free(&m);
        reply_error(r, i, k->gen, false, 0, CL_ERR_BAD_REQUEST, "malformed request");
        k->closing = true;
        return;
    }
    struct rpc_req q = { .r = r, .slot = i, .gen = k->gen, .id = m.id, .args = &m.root };
    const struct cl_ctl_cmd *cmd = cl_ctl_find(m.op);
    if (cmd && cmd_handlers[cmd->id])
        cmd_handlers[cmd->id](&q);
    else
        reply_error(r, i, k->gen, true, m.id, CL_ERR_UNSUPPORTED, "unknown command (try help)");
    cl_msg_free(&m);
}

static void
conn_read(struct cp_rpc *r, unsigned i)
{
    struct rpc_conn *k = &r->conns[i];
    if (!k->rx && !(k->rx = malloc(RPC_RX_MAX)))
        cp_oom(__func__);
    ssize_t n = recv(k->fd, k->rx + k->rx_len, RPC_RX_MAX - k->rx_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(r, i);
        return;
    }
    if (n < 0)
        return;
    k->rx_len += (size_t)n;
    size_t off = 0;
    while (!k->closing) {
        const uint8_t *body;
        uint32_t blen;
        long fl = cl_frame_split(k->rx + off, k->rx_len - off, &body, &blen);
        if (fl == -EAGAIN) {
            if (k->rx_len - off == RPC_RX_MAX) {
                reply_error(r, i, k->gen, false, 0, CL_ERR_BAD_REQUEST, "request too large");
                k->closing = true;
            }
            break;
        }
        if (fl < 0 || (size_t)fl > RPC_RX_MAX) {
            reply_error(r, i, k->gen, false, 0, CL_ERR_BAD_REQUEST, "bad frame length");
            k->closing = true;
            break;
        }
        conn_request(r, i, body, blen);
        off += (size_t)fl;
    }
    memmove(k->rx, k->rx + off, k->rx_len - off);
    k->rx_len -= off;
}

void
cp_rpc_handle(struct cp_rpc *r, const struct pollfd *fds, unsigned n)
{
    for (unsigned f = 1; f < n; f++) {
        if (!fds[f].revents)
            continue;
        unsigned i;
        for (i = 0; i < RPC_MAX_CONNS && r->conns[i].fd != fds[f].fd; i++)
            ;
        if (i == RPC_MAX_CONNS)
            continue;
        if (fds[f].revents & (POLLIN | POLLHUP | POLLERR))
            conn_read(r, i);
        if (r->conns[i].fd >= 0 && (fds[f].revents & POLLOUT))
            conn_flush(r, i);
    }
    if (r->spare_fd < 0)
        r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (n && (fds[0].revents & POLLIN)) {
        for (;;) {
            int fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0 && (errno == EMFILE || errno == ENFILE) && r->spare_fd >= 0) {
                /* the reserve file makes room for the operator */
                close(r->spare_fd);
                r->spare_fd = -1;
                fd = accept4(r->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            }
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    if (!r->paused_until)   /* once per episode */
                        LOG(IM_LOG_WARN, "control socket: accept: %s: retrying every %u ms",
                            strerror(errno), RPC_ACCEPT_PAUSE_MS);
                    r->paused_until = im_mono_ms() + RPC_ACCEPT_PAUSE_MS;
                }
                break;
            }
            r->paused_until = 0;
            unsigned i;
            for (i = 0; i < RPC_MAX_CONNS && r->conns[i].fd >= 0; i++)
                ;
            if (i == RPC_MAX_CONNS) {
                close(fd);
                continue;
            }
            r->conns[i].fd = fd;
            r->conns[i].gen = ++r->next_gen;
        }
    }
}

void
cp_rpc_commit_done(struct cp_rpc *r, bool ok)
{
    while (r->pending) {
        struct rpc_pending *p = r->pending;
        r->pending = p->next;
        struct rpc_conn *k = &r->conns[p->slot];
        if (k->fd >= 0 && k->gen == p->gen) {
            if (ok || !p->durable) {
                conn_queue(r, p->slot, p->frame, p->len);
            } else {
                uint8_t *f;
                size_t len;
                if (cl_build_error(true, p->id, CL_ERR_INTERNAL,
                                   "storage failure: the change was not saved", &f, &len) == 0) {
                    conn_queue(r, p->slot, f, len);
                    free(f);
                }
            }
        }
        free(p->frame);
        free(p);
    }
    r->pending_tail = NULL;
}
