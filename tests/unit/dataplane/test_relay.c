/*
 * test_relay.c - the relay (dataplane/dp_relay.c and its files) without an
 * IM server: a fake network adapter plugged into the registry speaks a line
 * protocol to a fake server kept by this test, the test plays the
 * controlplane on the other end of the rings, and a client speaks the real
 * client protocol.  Time is the test's clock, so backoff is checked in
 * microseconds, not seconds.
 *
 * Fake network, server -> adapter:  OK | NO | PRES addr a|o | IN from body | ACK id
 *               adapter -> server:  LOGIN login password | MSG id to body | BYE
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

#include "t.h"
#include "im_clock.h"
#include "im_common.h"
#include "im_proto.h"
#include "client/cl_frame.h"
#include "dp_chan.h"
#include "dp_conn.h"
#include "dp_int.h"
#include "dp_msg.h"
#include "dp_relay.h"
#include "dp_worker.h"

/* ---- the test's clock ---------------------------------------------------- */

static uint64_t t_mono = 5000000, t_wall = 1700000000000ULL;
static uint64_t rd_mono(void *ud) { return t_mono; }
static uint64_t rd_wall(void *ud) { return t_wall; }
static const struct im_clock tclock = { rd_mono, rd_wall, NULL };

/* ---- the fake network adapter ---------------------------------------------- */

struct im_sess {
    const struct im_account_cfg *cfg;
    const struct im_io *io;
    char rx[1 << 16];
    size_t len;
    uint64_t token;
};

static unsigned fake_committed, fake_created, fake_destroyed;

static int
fake_norm(const char *in, char *out, size_t outsz, const char **why)
{
    if (!*in || strchr(in, ' ') || strlen(in) >= outsz) {
        *why = "no spaces";
        return -IM_EINVAL;
    }
    strcpy(out, in);
    return 0;
}

static struct im_sess *
fake_create(const struct im_account_cfg *cfg, const struct im_io *io)
{
    struct im_sess *s = calloc(1, sizeof(*s));
    if (s) {
        s->cfg = cfg;
        s->io = io;
        fake_created++;
    }
    return s;
}

static void
fake_destroy(struct im_sess *s)
{
    fake_destroyed++;
    free(s);
}

static int
fake_say(struct im_sess *s, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    return s->io->out(s->io->ud, line, (size_t)n);
}

static int
fake_start(struct im_sess *s, struct im_time now)
{
    return fake_say(s, "LOGIN %s %s\n", s->cfg->login, s->cfg->password);
}

static void
fake_emit(struct im_sess *s, const struct im_event *ev)
{
    s->io->event(s->io->ud, ev);
}

static int
fake_line(struct im_sess *s, char *l, struct im_time now)
{
    struct im_event ev = { 0 };
    if (!strcmp(l, "OK")) {
        static const struct im_str grp = { "G", 1 };
        static struct im_contact list[2] = {
            { { "x", 1 }, { "X", 1 }, &grp, 1, IM_PRES_UNKNOWN },
            { { "y", 1 }, { "", 0 }, NULL, 0, IM_PRES_UNKNOWN },
        };
        ev.type = IM_EV_STATE;
        ev.u.state.state = IM_ACC_ONLINE;
        fake_emit(s, &ev);
        ev = (struct im_event){ .type = IM_EV_CONTACTS };
        ev.u.contacts.list = list;
        ev.u.contacts.n = 2;
        fake_emit(s, &ev);
    } else if (!strcmp(l, "NO")) {
        ev.type = IM_EV_STATE;
        ev.u.state.state = IM_ACC_AUTH_FAILED;
        ev.u.state.detail = IM_STR("bad password");
        fake_emit(s, &ev);
        return -IM_EAUTH;
    } else if (!strncmp(l, "PRES ", 5)) {
        char *addr = l + 5, *p = strchr(addr, ' ');
        if (!p)
            return -IM_EPROTO;
        *p++ = '\0';
        ev.type = IM_EV_PRESENCE;
        ev.u.presence.address = (struct im_str){ addr, (uint32_t)strlen(addr) };
        ev.u.presence.presence = *p == 'a' ? IM_PRES_AVAILABLE : IM_PRES_OFFLINE;
        fake_emit(s, &ev);
    } else if (!strncmp(l, "IN ", 3)) {
        char *from = l + 3, *body = strchr(from, ' ');
        if (!body)
            return -IM_EPROTO;
        *body++ = '\0';
        ev.type = IM_EV_MESSAGE;
        ev.u.message.from = (struct im_str){ from, (uint32_t)strlen(from) };
        ev.u.message.body = (struct im_str){ body, (uint32_t)strlen(body) };
        ev.u.message.ts = now.wall_ms;
        ev.u.message.token = ++s->token;
        fake_emit(s, &ev);
    } else if (!strncmp(l, "ACK ", 4)) {
        ev.type = IM_EV_SENT;
        ev.u.sent.msg = strtoull(l + 4, NULL, 10);
        fake_emit(s, &ev);
    } else {
        return -IM_EPROTO;
    }
    return 0;
}

static int
fake_input(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now)
{
    if (s->len + n > sizeof(s->rx))
        return -IM_ETOOBIG;
    memcpy(s->rx + s->len, p, n);
    s->len += n;
    char *nl;
    while ((nl = memchr(s->rx, '\n', s->len))) {
        *nl = '\0';
        int rc = fake_line(s, s->rx, now);
        size_t used = (size_t)(nl - s->rx) + 1;
        memmove(s->rx, s->rx + used, s->len - used);
        s->len -= used;
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int fake_tick(struct im_sess *s, struct im_time now) { return 0; }

static int
fake_send(struct im_sess *s, const struct im_msg *m)
{
    return fake_say(s, "MSG %llu %.*s %.*s\n", (unsigned long long)m->msg, (int)m->to.len, m->to.p,
                    (int)m->body.len, m->body.p);
}

static void fake_commit(struct im_sess *s, uint64_t token) { fake_committed++; }
static void fake_logout(struct im_sess *s) { (void)fake_say(s, "BYE\n"); }

static const struct im_proto_ops fake_ops = {
    .name = "fake",
    .default_port = 1,
    .normalize_login = fake_norm,
    .normalize_address = fake_norm,
    .create = fake_create,
    .destroy = fake_destroy,
    .start = fake_start,
    .input = fake_input,
    .tick = fake_tick,
    .send_msg = fake_send,
    .committed = fake_commit,
    .logout = fake_logout,
};

/* ---- the fake server ---------------------------------------------------------- */

#define SRV_MAX 16

struct srv {
    int lfd;
    uint16_t port;
    int fd[SRV_MAX];
    char rx[SRV_MAX][1 << 16];
    size_t len[SRV_MAX];
    int n;
};

static void
srv_open(struct srv *s)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    memset(s, 0, sizeof(*s));
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) || listen(s->lfd, 16) ||
        getsockname(s->lfd, (struct sockaddr *)&a, &al))
        abort();
    s->port = ntohs(a.sin_port);
    for (int i = 0; i < SRV_MAX; i++)
        s->fd[i] = -1;
}

static void
srv_close(struct srv *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->fd[i] >= 0)
            close(s->fd[i]);
    close(s->lfd);
}

/* Accept and read what is there. */
static void
srv_poll(struct srv *s)
{
    int fd;
    while (s->n < SRV_MAX && (fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0)
        s->fd[s->n++] = fd;
    for (int i = 0; i < s->n; i++) {
        if (s->fd[i] < 0)
            continue;
        ssize_t r = read(s->fd[i], s->rx[i] + s->len[i], sizeof(s->rx[i]) - 1 - s->len[i]);
        if (r > 0) {
            s->len[i] += (size_t)r;
            s->rx[i][s->len[i]] = '\0';
        } else if (r == 0) {
            close(s->fd[i]);
            s->fd[i] = -1;
        }
    }
}

static void
srv_say(struct srv *s, int i, const char *line)
{
    if (write(s->fd[i], line, strlen(line)) != (ssize_t)strlen(line))
        abort();
}

static void
srv_drop(struct srv *s, int i)
{
    close(s->fd[i]);
    s->fd[i] = -1;
}

/* How many lines of connection i start with prefix. */
static int
srv_count(const struct srv *s, int i, const char *prefix)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (const char *p = s->rx[i]; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        n += !strncmp(p, prefix, pl);
    return n;
}

/* ---- the world: worker, relay, rings, server, a client ------------------------------ */

struct world {
    struct dp_worker *w;
    struct dp_relay *r;
    struct dp_chan *ch;
    struct srv srv;
    int cfd;                            /* the client's socket */
    uint8_t crx[1 << 20];
    size_t clen;
    struct dp_msg up[8192];             /* what came up, in order */
    unsigned n_up;
    uint32_t conn, gen;                 /* the client's name across the planes */
};

static struct world W;

/* Let everything run a few turns; wait_ms: how long each turn may wait for I/O. */
static void
pump_wait(int turns, int wait_ms)
{
    for (int i = 0; i < turns; i++) {
        struct pollfd p = { .fd = W.srv.lfd, .events = POLLIN };
        (void)poll(&p, 1, wait_ms);
        dp_worker_run_once(W.w, 0);
        srv_poll(&W.srv);
        struct dp_msg m;
        while (dp_chan_recv_up(W.ch, &m) == 0) {
            if (W.n_up < IM_ARRAY_SIZE(W.up))
                dp_msg_move(&W.up[W.n_up++], &m);
            else
                dp_msg_release(&m);
        }
        if (W.cfd >= 0) {
            ssize_t r = read(W.cfd, W.crx + W.clen, sizeof(W.crx) - W.clen);
            if (r > 0)
                W.clen += (size_t)r;
        }
    }
}

static void
pump(int turns)
{
    pump_wait(turns, 1);
}

/* Advance the test's clock by ms, in ticks, letting the relay run. */
static void
advance(uint64_t ms)
{
    while (ms) {
        uint64_t step = ms < DP_TICK_MS ? ms : DP_TICK_MS;
        t_mono += step;
        t_wall += step;
        ms -= step;
        pump_wait(2, 0);
    }
}

static void
down(struct dp_msg *m)
{
    dp_chan_send_down(W.ch, m);
    dp_chan_flush_down(W.ch);
    pump(5);
}

static void
up_clear(void)
{
    for (unsigned i = 0; i < W.n_up; i++)
        dp_msg_release(&W.up[i]);
    W.n_up = 0;
}

/* The last message of type that came up (after index from), or NULL. */
static struct dp_msg *
up_last(uint16_t type)
{
    for (unsigned i = W.n_up; i-- > 0;)
        if (W.up[i].type == type)
            return &W.up[i];
    return NULL;
}

static unsigned
up_count(uint16_t type)
{
    unsigned n = 0;
    for (unsigned i = 0; i < W.n_up; i++)
        n += W.up[i].type == type;
    return n;
}

/* A frame field of an up message. */
static bool
up_str(const struct dp_msg *m, const char *key, char *out, size_t sz)
{
    struct cl_msg pm;
    struct im_str v;
    const char *why;
    if (dp_msg_decode(m, &pm))
        return false;
    bool ok = cl_get_str(&pm.root, key, 0, 4096, &v, &why) == 0;
    if (ok)
        snprintf(out, sz, "%.*s", (int)v.len, v.p);
    cl_msg_free(&pm);
    return ok;
}

static void
account_up(uint64_t uid, uint64_t account, const char *login)
{
    char server[64];
    snprintf(server, sizeof(server), "127.0.0.1:%u", W.srv.port);
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 10);
    cl_pack_kstr(&e, "user", "u");
    cl_pack_kstr(&e, "network", "fake");
    cl_pack_kstr(&e, "login", login);
    cl_pack_kstr(&e, "password", "pw");
    cl_pack_kstr(&e, "server", server);
    cl_pack_kstr(&e, "tls", "none");
    cl_pack_kstr(&e, "tls_name", "");
    cl_pack_kstr(&e, "name", "");
    cl_pack_key(&e, "options");
    msgpack_pack_map(&e.pk, 0);
    cl_pack_key(&e, "contacts");        /* no "unified": the login brings it */
    msgpack_pack_array(&e.pk, 0);
    struct dp_msg m = { .type = DPM_ACCOUNT_UP, .uid = uid, .account = account };
    if (dp_msg_set_frame(&m, &e))
        abort();
    down(&m);
}

/* ---- the client ------------------------------------------------------------------ */

static void
cli_send(struct cl_enc *e)
{
    size_t len;
    const uint8_t *f = cl_enc_finish(e, &len);
    if (!f || write(W.cfd, f, len) != (ssize_t)len)
        abort();
    cl_enc_free(e);
    pump(5);
}

/* Take the next frame the client got: true with *m (cl_msg_free it). */
static bool
cli_next(struct cl_msg *m)
{
    for (int tries = 0; tries < 50; tries++) {
        const uint8_t *body;
        uint32_t blen;
        long n = cl_frame_split(W.crx, W.clen, &body, &blen);
        if (n > 0) {
            int rc = cl_msg_decode(m, body, blen);
            memmove(W.crx, W.crx + n, W.clen - (size_t)n);
            W.clen -= (size_t)n;
            return rc == 0;
        }
        pump(1);
    }
    return false;
}

/* The next frame whose op is op (others skipped). */
static bool
cli_wait(const char *op, struct cl_msg *m)
{
    for (int i = 0; i < 64; i++) {
        if (!cli_next(m))
            return false;
        if (cl_view_eq(m->op, op))
            return true;
        cl_msg_free(m);
    }
    return false;
}

static void
login(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons(dp_relay_listen_port(W.r, 0)) };
    W.cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (W.cfd < 0 || connect(W.cfd, (struct sockaddr *)&a, sizeof(a)))
        abort();
    fcntl(W.cfd, F_SETFL, O_NONBLOCK);
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "login");
    cl_pack_kuint(&e, "id", 1);
    cl_pack_kstr(&e, "user", "u");
    cl_pack_kstr(&e, "password", "p");
    up_clear();
    cli_send(&e);
    struct dp_msg *req = up_last(CPM_CLIENT_REQ);
    if (!req)
        abort();
    W.conn = req->conn;
    W.gen = req->gen;

    /* the controlplane's answer: logged in, with unified contact 5 =
     * (2, y), (1, x) preferred */
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 3);
    cl_pack_kstr(&e, "user", "u");
    cl_pack_kstr(&e, "device", "");
    cl_pack_key(&e, "unified");
    msgpack_pack_array(&e.pk, 1);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kuint(&e, "id", 5);
    cl_pack_kstr(&e, "name", "P");
    cl_pack_key(&e, "members");
    msgpack_pack_array(&e.pk, 2);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kuint(&e, "account", 2);
    cl_pack_kstr(&e, "address", "y");
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kuint(&e, "account", 1);
    cl_pack_kstr(&e, "address", "x");
    cl_pack_kuint(&e, "prefer", 1);
    struct dp_msg m = { .type = DPM_LOGIN_OK, .conn = W.conn, .gen = W.gen, .uid = 7 };
    m.u.login_ok.req = 1;
    if (dp_msg_set_frame(&m, &e))
        abort();
    down(&m);
    /* nothing queued: the replay is over at once */
    struct dp_msg end = { .type = DPM_REPLAY_END, .conn = W.conn, .gen = W.gen, .uid = 7 };
    down(&end);
}

/* Send {op: send, to: {contact: 5}, body} with id; the account it went up for
 * (0 when it did not go up) and the error code of the reply, if any. */
static uint64_t
send_to_contact(uint64_t id, char *err, size_t errsz)
{
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 4);
    cl_pack_kstr(&e, "op", "send");
    cl_pack_kuint(&e, "id", id);
    cl_pack_key(&e, "to");
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kuint(&e, "contact", 5);
    cl_pack_kstr(&e, "body", "hi");
    up_clear();
    err[0] = '\0';
    cli_send(&e);
    struct dp_msg *r = up_last(CPM_OUT_REQ);
    if (r)
        return r->u.out_req.req == id ? r->account : 0;
    struct cl_msg m;
    if (cli_wait("error", &m)) {
        struct im_str code;
        const char *why;
        if (cl_get_str(&m.root, "code", 1, 64, &code, &why) == 0)
            snprintf(err, errsz, "%.*s", (int)code.len, code.p);
        cl_msg_free(&m);
    }
    return 0;
}

static void
world_up(void)
{
    const char *why = NULL;
    memset(&W, 0, sizeof(W));
    W.cfd = -1;
    fake_committed = fake_created = fake_destroyed = 0;
    T_ASSERT(im_proto_find("fake") || im_proto_register(&fake_ops, &why) == 0);
    srv_open(&W.srv);
    struct dp_worker_cfg wc = { .id = 0, .io = "kernel", .clock = &tclock };
    char whybuf[256];
    W.w = dp_worker_new(&wc, whybuf, sizeof(whybuf));
    T_ASSERT(W.w);
    W.ch = dp_chan_new(16384);
    T_ASSERT(W.ch);
    dp_chan_set_worker(W.ch, W.w);
    W.r = dp_relay_new(W.w, W.ch);
    T_ASSERT(W.r);
    T_EQ_INT(dp_relay_listen(W.r, "127.0.0.1", 0, false, whybuf, sizeof(whybuf)), 0);
}

static void
world_down(void)
{
    if (W.cfd >= 0)
        close(W.cfd);
    W.cfd = -1;
    up_clear();
    dp_relay_free(W.r);
    dp_worker_free(W.w);
    dp_chan_free(W.ch);
    srv_close(&W.srv);
}

/* Two accounts of uid 7, both online. */
static void
two_online(void)
{
    account_up(7, 1, "a1");
    account_up(7, 2, "a2");
    for (int i = 0; i < 20 && W.srv.n < 2; i++)
        pump(2);
    T_EQ_INT(W.srv.n, 2);
    pump(5);
    T_EQ_INT(srv_count(&W.srv, 0, "LOGIN "), 1);
    T_EQ_INT(srv_count(&W.srv, 1, "LOGIN "), 1);
    srv_say(&W.srv, 0, "OK\n");
    srv_say(&W.srv, 1, "OK\n");
    pump(5);
}

/* Which server connection belongs to account a1 (its LOGIN line). */
static int
conn_of(const char *login)
{
    char want[32];
    snprintf(want, sizeof(want), "LOGIN %s ", login);
    for (int i = 0; i < W.srv.n; i++)
        if (W.srv.fd[i] >= 0 && srv_count(&W.srv, i, want))
            return i;
    return -1;
}

/* ---- the tests ------------------------------------------------------------------- */

/* DESIGN 4: the preferred member if its account is online and the member is
 * not known to be offline, else the first member whose account is online. */
T_TEST(routing_rule)
{
    char err[64];
    world_up();
    two_online();
    login();
    struct cl_msg m;
    T_ASSERT(cli_wait("ok", &m));
    cl_msg_free(&m);

    T_EQ_UINT(send_to_contact(10, err, sizeof(err)), 1);        /* prefer */
    srv_say(&W.srv, conn_of("a1"), "PRES x o\n");
    pump(5);
    T_EQ_UINT(send_to_contact(11, err, sizeof(err)), 2);        /* x offline: the first online, y */
    srv_say(&W.srv, conn_of("a1"), "PRES x a\n");
    pump(5);
    T_EQ_UINT(send_to_contact(12, err, sizeof(err)), 1);        /* back */

    srv_drop(&W.srv, conn_of("a2"));                            /* account 2 down */
    pump(10);
    T_EQ_UINT(send_to_contact(13, err, sizeof(err)), 1);
    srv_say(&W.srv, conn_of("a1"), "PRES x o\n");
    pump(5);
    T_EQ_UINT(send_to_contact(14, err, sizeof(err)), 1);        /* x offline, but its account is the only one */
    srv_drop(&W.srv, conn_of("a1"));
    pump(10);
    T_EQ_UINT(send_to_contact(15, err, sizeof(err)), 0);
    T_EQ_STR(err, "account_offline");
    world_down();
}

/* A message is pushed with its seq, tagged with the unified contact, and
 * the network gets its acknowledgement only when the store has it. */
T_TEST(receive_committed_then_pushed)
{
    world_up();
    two_online();
    login();
    struct cl_msg m;
    T_ASSERT(cli_wait("ok", &m));
    cl_msg_free(&m);
    up_clear();
    srv_say(&W.srv, conn_of("a1"), "IN x hello\n");
    pump(5);
    struct dp_msg *in = up_last(CPM_MSG_IN);
    T_ASSERT(in);
    T_EQ_UINT(in->account, 1);
    T_ASSERT(in->u.msg_in.token != 0);
    T_EQ_UINT(fake_committed, 0);
    struct cl_msg probe;
    T_ASSERT(!cli_next(&probe));                 /* nothing before the commit */

    struct dp_msg d = { .type = DPM_DELIVER, .uid = 7, .account = 1 };
    d.u.deliver.seq = 42;
    d.u.deliver.token = in->u.msg_in.token;
    T_EQ_INT(dp_msg_copy(&d, dp_msg_bytes(in), in->len), 0);
    down(&d);
    T_EQ_UINT(fake_committed, 1);
    T_ASSERT(cli_wait("message", &m));
    uint64_t seq = 0, contact = 0;
    const char *why;
    T_EQ_INT(cl_get_uint(&m.root, "seq", &seq, &why), 0);
    T_EQ_INT(cl_get_uint(&m.root, "contact", &contact, &why), 0);
    T_EQ_UINT(seq, 42);
    T_EQ_UINT(contact, 5);
    cl_msg_free(&m);
    world_down();
}

/* A full send queue stops reading the client that filled it, and reading
 * resumes at half; sent messages leave the outbox in one message a turn. */
T_TEST(queue_back_pressure)
{
    char err[64];
    world_up();
    two_online();
    login();
    struct cl_msg m;
    T_ASSERT(cli_wait("ok", &m));
    cl_msg_free(&m);

    for (uint64_t id = 1; id <= 1024; id++) {
        struct cl_enc e;
        cl_enc_init(&e);
        msgpack_pack_map(&e.pk, 5);
        cl_pack_kuint(&e, "account", 1);
        cl_pack_kstr(&e, "network", "fake");
        cl_pack_kstr(&e, "address", "x");
        cl_pack_kstr(&e, "body", "q");
        cl_pack_kuint(&e, "ts", 1);
        struct dp_msg a = { .type = DPM_OUT_ACCEPTED, .uid = 7, .account = 1 };
        a.u.out_accepted.msg = id;
        T_EQ_INT(dp_msg_set_frame(&a, &e), 0);
        dp_chan_send_down(W.ch, &a);
    }
    dp_chan_flush_down(W.ch);
    pump(40);
    int c1 = conn_of("a1");
    T_EQ_INT(srv_count(&W.srv, c1, "MSG "), 1024);             /* in order, all handed over */
    T_ASSERT(strstr(W.srv.rx[c1], "MSG 1 x q\n") && strstr(W.srv.rx[c1], "MSG 1024 x q\n"));

    /* the queue is full: this send goes up, then the client is not read */
    T_EQ_UINT(send_to_contact(20, err, sizeof(err)), 1);
    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kstr(&e, "op", "ping");
    cl_pack_kuint(&e, "id", 21);
    cli_send(&e);
    pump(20);
    T_ASSERT(!cli_next(&m));                                   /* not read: no answer */

    /* 600 leave: under half, the client is read again */
    up_clear();
    char acks[600 * 12], *p = acks;
    for (int id = 1; id <= 600; id++)
        p += sprintf(p, "ACK %d\n", id);
    if (write(W.srv.fd[c1], acks, (size_t)(p - acks)) != p - acks)
        abort();
    pump(20);
    struct dp_relay_stats rst;
    dp_relay_stats_read(W.r, &rst);
    T_EQ_UINT(rst.send_queue_len, 1024 - 600);               /* the send of id 20 was never accepted */
    T_ASSERT(cli_wait("ok", &m));
    uint64_t id = 0;
    const char *why;
    T_EQ_INT(cl_get_uint(&m.root, "id", &id, &why), 0);
    T_EQ_UINT(id, 21);
    cl_msg_free(&m);
    unsigned ids = 0;
    for (unsigned i = 0; i < W.n_up; i++)
        if (W.up[i].type == CPM_OUT_DONE)
            ids += W.up[i].len / 8;
    T_EQ_UINT(ids, 600);
    T_ASSERT(up_count(CPM_OUT_DONE) < 600);                    /* batched per turn */
    world_down();
}

/* "retrying in N s": the detail of the last offline state that came up. */
static double
retry_delay(void)
{
    char d[300];
    for (unsigned i = W.n_up; i-- > 0;)
        if (W.up[i].type == CPM_ACCOUNT_STATE && W.up[i].u.state.state == IM_ACC_OFFLINE &&
            up_str(&W.up[i], "detail", d, sizeof(d)) && !strncmp(d, "retrying in ", 12))
            return atof(d + 12);
    return -1;
}

/* First retry within 2 s (1.5 s +-20 %), doubling per failure, capped at 5 min,
 * reset by a login that succeeds; auth_failed is not retried. */
T_TEST(reconnect_backoff)
{
    world_up();
    account_up(7, 1, "a1");
    pump(10);
    T_EQ_INT(W.srv.n, 1);
    up_clear();
    srv_drop(&W.srv, 0);
    pump(10);
    double d = retry_delay();
    T_ASSERT(d >= 1.2 && d <= 1.8);
    advance(1100);
    T_EQ_INT(W.srv.n, 1);                                      /* not yet */
    advance(800);
    T_EQ_INT(W.srv.n, 2);                                      /* within 2 s */

    /* failures double the delay up to the cap */
    double last = d;
    for (int i = 0; i < 12; i++) {
        up_clear();
        int n = W.srv.n;
        srv_drop(&W.srv, n - 1);
        pump(10);
        d = retry_delay();
        T_ASSERT(d > 0);
        T_ASSERT(d <= 300.0 * 1.2 + 0.1);
        if (last * 2 * 1.2 < 300.0 * 0.8)
            T_ASSERT(d >= last * 2 * 0.8 * 0.8 / 1.2 - 0.1);   /* grows (jitter aside) */
        last = d;
        advance((uint64_t)(d * 1000) + 200);
        T_EQ_INT(W.srv.n, n + 1);
    }
    T_ASSERT(last >= 300.0 * 0.8 - 0.1);                       /* reached the cap */

    /* a successful login resets it */
    srv_say(&W.srv, W.srv.n - 1, "OK\n");
    pump(5);
    up_clear();
    srv_drop(&W.srv, W.srv.n - 1);
    pump(10);
    d = retry_delay();
    T_ASSERT(d >= 1.2 && d <= 1.8);

    /* auth_failed: never again until the account is updated */
    advance(2000);
    int n = W.srv.n;
    srv_say(&W.srv, n - 1, "NO\n");
    pump(10);
    advance(10 * 60 * 1000);
    T_EQ_INT(W.srv.n, n);
    account_up(7, 1, "a1");                                    /* update_account */
    pump(10);
    T_EQ_INT(W.srv.n, n + 1);
    world_down();
}

/* Unlink logs out politely and forgets the account; no session leaks. */
T_TEST(unlink_and_teardown)
{
    world_up();
    two_online();
    struct dp_msg m = { .type = DPM_ACCOUNT_DOWN, .uid = 7, .account = 1 };
    int c1 = conn_of("a1");
    down(&m);
    pump(10);
    T_EQ_INT(srv_count(&W.srv, c1, "BYE"), 1);
    T_ASSERT(W.srv.fd[c1] < 0);                                /* closed after the goodbye */
    struct dp_msg u = { .type = DPM_USER_DEL, .uid = 7 };
    down(&u);
    pump(10);
    T_EQ_UINT(fake_created, fake_destroyed);
    world_down();
}

T_MAIN(T_RUN(routing_rule), T_RUN(receive_committed_then_pushed), T_RUN(queue_back_pressure),
       T_RUN(reconnect_backoff), T_RUN(unlink_and_teardown))
