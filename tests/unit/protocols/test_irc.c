/*
 * test_irc.c - the IRC adapter against scripted server transcripts.
 *
 * A transcript is a list of steps (server bytes, ticks, set_watch, sends).
 * run() plays it and records what the adapter wrote and reported; every
 * transcript is also replayed with each input step split at every position,
 * and must produce exactly the same record.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "t.h"
#include "fx.h"
#include "im_common.h"
#include "im_proto.h"
#include "irc/irc_int.h"

size_t irc_queued_lines(const struct im_sess *s);

#define T0 1700000000000ull

struct rec {
    char out[1 << 17];
    size_t outn;
    char ev[1 << 17];
    size_t evn;
    int rc;                         /* first negative return, else 0 */
    struct im_sess *s;
    uint64_t last_ts;               /* message.ts of the last message */
};

static int
h_out(void *ud, const void *p, size_t n)
{
    struct rec *r = ud;
    if (r->outn + n > sizeof(r->out))
        abort();
    memcpy(r->out + r->outn, p, n);
    r->outn += n;
    return 0;
}

static void __attribute__((format(printf, 2, 3)))
evf(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->ev + r->evn, sizeof(r->ev) - r->evn, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(r->ev) - r->evn)
        abort();
    r->evn += (size_t)n;
}

static void
h_event(void *ud, const struct im_event *e)
{
    struct rec *r = ud;
    switch (e->type) {
    case IM_EV_STATE:
        evf(r, "STATE %s %.*s\n", im_account_state_name(e->u.state.state),
            (int)e->u.state.detail.len, e->u.state.detail.p);
        break;
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len))
            abort();
        evf(r, "MSG %.*s %.*s\n", (int)e->u.message.from.len, e->u.message.from.p,
            (int)e->u.message.body.len, e->u.message.body.p);
        r->last_ts = e->u.message.ts;
        break;
    case IM_EV_NOTICE:
        evf(r, "NOTICE %.*s\n", (int)e->u.notice.text.len, e->u.notice.text.p);
        break;
    case IM_EV_PRESENCE:
        evf(r, "PRES %.*s %s\n", (int)e->u.presence.address.len, e->u.presence.address.p,
            im_presence_name(e->u.presence.presence));
        break;
    case IM_EV_SENT:
        evf(r, "SENT %llu\n", (unsigned long long)e->u.sent.msg);
        break;
    default:
        evf(r, "EV %d\n", e->type);
        break;
    }
}

enum step_kind { S_IN, S_TICK, S_WATCH, S_SEND, S_CHECK_QUEUED, S_MARK, S_END };

struct step {
    enum step_kind k;
    const char *text;               /* S_IN: bytes; S_WATCH: space separated nicks; S_SEND: "to body" */
    uint64_t t;                     /* ms after T0 */
    uint64_t msg;                   /* S_SEND id; S_CHECK_QUEUED: expected count */
};

#define IN(x, ms)       { S_IN, (x), (ms), 0 }
#define TICK(ms)        { S_TICK, NULL, (ms), 0 }
#define WATCH(x, ms)    { S_WATCH, (x), (ms), 0 }
#define SEND(id, x, ms) { S_SEND, (x), (ms), (id) }
#define MARK(ms)        { S_MARK, NULL, (ms), 0 }  /* "@ms\n" into the output record */
#define END             { S_END, NULL, 0, 0 }

struct setup {
    const char *login;
    const char *password;
    enum im_tls tls;
    struct im_option opts[8];
    uint32_t n_opts;
};

/* Play the steps; the input step number split_step is fed in two parts at split. */
static void
run(const struct setup *su, const struct step *steps, int split_step, size_t split, struct rec *r)
{
    memset(r, 0, sizeof(*r));
    struct im_account_cfg cfg = { .account = 1, .login = su->login ? su->login : "alice",
                                  .password = su->password ? su->password : "", .host = "127.0.0.1",
                                  .port = 6667, .tls = su->tls, .tls_name = "", .options = su->opts,
                                  .n_options = su->n_opts };
    struct im_io io = { .out = h_out, .event = h_event, .ud = r };
    struct im_sess *s = irc_ops.create(&cfg, &io);
    if (!s)
        abort();
    r->s = s;
    int rc = irc_ops.start(s, AT(T0));
    if (rc < 0) {
        r->rc = rc;
        goto out;
    }
    for (int i = 0; steps[i].k != S_END; i++) {
        const struct step *st = &steps[i];
        uint64_t now = T0 + st->t;
        switch (st->k) {
        case S_IN: {
            size_t n = strlen(st->text);
            if (i == split_step && split <= n) {
                rc = irc_ops.input(s, (const uint8_t *)st->text, split, AT(now));
                if (rc >= 0)
                    rc = irc_ops.input(s, (const uint8_t *)st->text + split, n - split, AT(now));
            } else {
                rc = irc_ops.input(s, (const uint8_t *)st->text, n, AT(now));
            }
            break;
        }
        case S_TICK:
            rc = irc_ops.tick(s, AT(now));
            break;
        case S_WATCH: {
            struct im_str v[16];
            uint32_t nv = 0;
            char buf[512];
            im_strlcpy(buf, st->text, sizeof(buf));
            for (char *tok = strtok(buf, " "); tok && nv < 16; tok = strtok(NULL, " "))
                v[nv++] = (struct im_str){ tok, (uint32_t)strlen(tok) };
            rc = irc_ops.set_watch(s, v, nv, AT(now));
            break;
        }
        case S_SEND: {
            const char *sp = strchr(st->text, ' ');
            struct im_msg m = { .msg = st->msg, .to = { st->text, (uint32_t)(sp - st->text) },
                                .body = { sp + 1, (uint32_t)strlen(sp + 1) } };
            rc = irc_ops.send_msg(s, &m);
            break;
        }
        case S_CHECK_QUEUED:
            evf(r, "QUEUED %zu\n", irc_queued_lines(s));
            break;
        case S_MARK: {
            char m[32];
            int n = snprintf(m, sizeof(m), "@%llu\n", (unsigned long long)st->t);
            h_out(r, m, (size_t)n);
            break;
        }
        case S_END:
            break;
        }
        if (rc < 0) {
            r->rc = rc;
            break;
        }
    }
out:
    irc_ops.destroy(s);
    r->s = NULL;
}

/* Run a transcript whole, then split at every position of every input step;
 * every run must record the same.  The whole run is left in *ref. */
static int
run_all_splits(const struct setup *su, const struct step *steps, struct rec *ref)
{
    static struct rec r;
    run(su, steps, -1, 0, ref);
    for (int i = 0; steps[i].k != S_END; i++) {
        if (steps[i].k != S_IN)
            continue;
        size_t n = strlen(steps[i].text);
        for (size_t k = 0; k <= n; k++) {
            run(su, steps, i, k, &r);
            if (r.outn != ref->outn || memcmp(r.out, ref->out, r.outn) || r.evn != ref->evn ||
                memcmp(r.ev, ref->ev, r.evn) || r.rc != ref->rc) {
                fprintf(stderr, "split of step %d at %zu differs:\n--- whole\n%.*s%.*s--- split\n%.*s%.*s\n",
                        i, k, (int)ref->outn, ref->out, (int)ref->evn, ref->ev, (int)r.outn, r.out,
                        (int)r.evn, r.ev);
                return -1;
            }
        }
    }
    return 0;
}

static bool
has(const char *hay, size_t n, const char *needle)
{
    return memmem(hay, n, needle, strlen(needle)) != NULL;
}

#define OUT_HAS(r, x) T_ASSERT(has((r)->out, (r)->outn, (x)))
#define OUT_LACKS(r, x) T_ASSERT(!has((r)->out, (r)->outn, (x)))
#define EV_HAS(r, x) do { if (!has((r)->ev, (r)->evn, (x))) T_FAIL("events lack \"%s\":\n%.*s", (x), \
    (int)(r)->evn, (r)->ev); } while (0)
#define EV_LACKS(r, x) do { if (has((r)->ev, (r)->evn, (x))) T_FAIL("events have \"%s\":\n%.*s", (x), \
    (int)(r)->evn, (r)->ev); } while (0)

static struct rec ref;

/* A NUL-terminated copy of p[0..n) (two rotating static buffers). */
static const char *
z(const char *p, size_t n)
{
    static char buf[2][1 << 17];
    static int k;
    k ^= 1;
    memcpy(buf[k], p, n);
    buf[k][n] = 0;
    return buf[k];
}

#define WELCOME ":irc.test 001 alice :Welcome to the Testnet IRC Network alice!alice@127.0.0.1\r\n"
#define ISUPPORT_NOMON ":irc.test 005 alice CASEMAPPING=ascii NICKLEN=30 :are supported on this server\r\n"
#define ISUPPORT_MON ":irc.test 005 alice CASEMAPPING=rfc1459 MONITOR=2 NICKLEN=30 :are supported\r\n"
#define MOTD_END ":irc.test 376 alice :End of MOTD command\r\n"

/* ---- login ---------------------------------------------------------------- */

T_TEST(login_plain)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(":irc.test NOTICE * :*** Looking up your hostname...\r\n"
           ":irc.test CAP * LS :multi-prefix\r\n", 10),
        IN(WELCOME ":irc.test 002 alice :Your host\r\n" ISUPPORT_NOMON MOTD_END, 20),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    T_EQ_STR(z(ref.out, ref.outn), "CAP LS 302\r\nNICK alice\r\nUSER alice 0 * :alice\r\nCAP END\r\n");
    T_EQ_STR(z(ref.ev, ref.evn), "STATE online \n");
}

T_TEST(login_pass_sasl_ok)
{
    struct setup su = { .password = "pencil", .n_opts = 2,
                        .opts = { { "server_password", "srvpw" }, { "nickserv_password", "unused" } } };
    struct step st[] = {
        IN(":irc.test CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL\n"
           ":irc.test CAP * LS :account-notify\r\n", 10),
        IN(":irc.test CAP alice ACK :sasl\r\n", 20),
        IN("AUTHENTICATE +\r\n", 30),
        IN(":irc.test 900 alice alice!alice@h alice :You are now logged in as alice\r\n"
           ":irc.test 903 alice :SASL authentication successful\r\n", 40),
        IN(WELCOME, 50),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    /* base64("alice\0alice\0pencil") */
    T_EQ_STR(z(ref.out, ref.outn),
             "PASS :srvpw\r\nCAP LS 302\r\nNICK alice\r\nUSER alice 0 * :alice\r\nCAP REQ :sasl\r\n"
             "AUTHENTICATE PLAIN\r\nAUTHENTICATE YWxpY2UAYWxpY2UAcGVuY2ls\r\nCAP END\r\n");
    T_EQ_STR(z(ref.ev, ref.evn), "STATE online \n");
}

T_TEST(login_sasl_fail)
{
    struct setup su = { .password = "wrong" };
    struct step st[] = {
        IN(":irc.test CAP * LS :sasl\r\n:irc.test CAP alice ACK :sasl\r\nAUTHENTICATE +\r\n"
           ":irc.test 904 alice :SASL authentication failed\r\n", 10),
        IN(WELCOME, 20),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, -IM_EAUTH);
    T_EQ_STR(z(ref.ev, ref.evn), "STATE auth_failed SASL login refused by the server: SASL authentication failed\n");
}

T_TEST(login_sasl_not_offered)
{
    /* sasl=yes requires it; auto goes on without. */
    struct setup req = { .password = "pw", .n_opts = 1, .opts = { { "sasl", "yes" } } };
    struct setup aut = { .password = "pw" };
    struct step st[] = { IN(":irc.test CAP * LS :multi-prefix\r\n" WELCOME, 10), END };
    T_EQ_INT(run_all_splits(&req, st, &ref), 0);
    T_EQ_INT(ref.rc, -IM_EAUTH);
    EV_HAS(&ref, "STATE auth_failed the server does not offer SASL PLAIN");
    T_EQ_INT(run_all_splits(&aut, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    OUT_LACKS(&ref, "AUTHENTICATE");
    EV_HAS(&ref, "STATE online");
}

T_TEST(login_server_password_refused)
{
    struct setup su = { .n_opts = 1, .opts = { { "server_password", "bad" } } };
    struct step st[] = {
        IN(":irc.test 464 alice :Password incorrect\r\nERROR :Closing link\r\n", 10),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, -IM_EAUTH);
    T_EQ_STR(z(ref.ev, ref.evn), "STATE auth_failed server password refused: Password incorrect\n");
}

T_TEST(login_nick_in_use)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(":irc.test CAP * LS :\r\n:irc.test 433 * alice :Nickname is already in use\r\n", 10),
        IN(":irc.test 433 * alice_ :Nickname is already in use\r\n", 20),
        IN(":irc.test 001 alice__ :Welcome alice__!alice@127.0.0.1\r\n", 30),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    OUT_HAS(&ref, "NICK alice\r\n");
    OUT_HAS(&ref, "NICK alice_\r\n");
    OUT_HAS(&ref, "NICK alice__\r\n");
    T_EQ_STR(z(ref.ev, ref.evn),
             "STATE online nick alice is in use; using alice__\nNOTICE nick alice is in use; using alice__\n");
}

T_TEST(login_nick_in_use_digits_and_nicklen)
{
    struct setup su = { .login = "abcdefghij" };
    static char in[4096];
    size_t n = 0;
    n += (size_t)snprintf(in + n, sizeof(in) - n, ":irc.test 005 * NICKLEN=10 :ok\r\n");
    for (int i = 0; i < 5; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, ":irc.test 433 * x :in use\r\n");
    struct step st[] = { IN(in, 10), END };
    run(&su, st, -1, 0, &ref);
    OUT_HAS(&ref, "NICK abcdefghi_\r\n");
    OUT_HAS(&ref, "NICK abcdefgh__\r\n");
    OUT_HAS(&ref, "NICK abcdefg___\r\n");
    OUT_HAS(&ref, "NICK abcdefghi1\r\n");
    OUT_HAS(&ref, "NICK abcdefghi2\r\n");
    /* and it gives up eventually */
    n = 0;
    for (int i = 0; i < IRC_MAX_ALT_NICKS + 1; i++)
        n += (size_t)snprintf(in + n, sizeof(in) - n, ":irc.test 433 * x :in use\r\n");
    run(&su, st, -1, 0, &ref);
    T_EQ_INT(ref.rc, -IM_EEXIST);
    EV_HAS(&ref, "STATE error nick abcdefghij is in use and no alternate nick was free");
}

T_TEST(login_starttls_refused)
{
    struct setup su = { .tls = IM_TLS_STARTTLS };
    struct step st[] = { END };
    run(&su, st, -1, 0, &ref);
    T_ASSERT(ref.rc < 0);
    T_EQ_INT(ref.outn, 0);
    EV_HAS(&ref, "STATE error IRC has no STARTTLS");
}

T_TEST(login_timeout_and_error_line)
{
    struct setup su = { 0 };
    struct step st[] = { TICK(IRC_REG_TIMEOUT_MS - 1), TICK(IRC_REG_TIMEOUT_MS), END };
    run(&su, st, -1, 0, &ref);
    T_ASSERT(ref.rc < 0);
    EV_HAS(&ref, "STATE error the server did not complete the registration within 60 s");
    struct step st2[] = {
        IN(WELCOME "ERROR :Closing link: (alice@127.0.0.1) [K-Lined: \x02go away\x02]\r\n", 10), END };
    T_EQ_INT(run_all_splits(&su, st2, &ref), 0);
    T_EQ_INT(ref.rc, -IM_EPROTO);
    EV_HAS(&ref, "STATE error server closed the session: Closing link: (alice@127.0.0.1) [K-Lined: go away]\n");
}

T_TEST(login_nickserv)
{
    struct setup su = { .password = "acct", .n_opts = 1, .opts = { { "nickserv", "yes" } } };
    struct step st[] = {
        IN(":irc.test CAP * LS :multi-prefix\r\n" WELCOME, 10),
        IN(":NickServ!services@services.test NOTICE alice :You are now \x02identified\x02 for alice.\r\n", 20),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    /* the server offers no SASL: NickServ with the account password */
    OUT_HAS(&ref, "CAP END\r\nPRIVMSG NickServ :IDENTIFY acct\r\n");
    T_EQ_STR(z(ref.ev, ref.evn), "STATE online \nNOTICE NickServ: You are now identified for alice.\n");
}

/* ---- keepalive -------------------------------------------------------------- */

T_TEST(ping_pong_and_timeout)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(WELCOME "PING :irc.test\r\n", 10),
        TICK(10 + IRC_PING_IDLE_MS - 1),
        TICK(10 + IRC_PING_IDLE_MS),
        TICK(10 + IRC_PING_IDLE_MS + IRC_PING_TIMEOUT_MS - 1),
        TICK(10 + IRC_PING_IDLE_MS + IRC_PING_TIMEOUT_MS),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    OUT_HAS(&ref, "PONG :irc.test\r\nPING :imfuse\r\n");
    T_ASSERT(ref.rc < 0);
    EV_HAS(&ref, "STATE error ping timeout");
    /* an answer resets it */
    struct step st2[] = {
        IN(WELCOME, 10), TICK(10 + IRC_PING_IDLE_MS),
        IN(":irc.test PONG irc.test :imfuse\r\n", 20 + IRC_PING_IDLE_MS),
        TICK(10 + IRC_PING_IDLE_MS + IRC_PING_TIMEOUT_MS + 5), END,
    };
    T_EQ_INT(run_all_splits(&su, st2, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    EV_LACKS(&ref, "ping timeout");
}

T_TEST(line_too_long)
{
    struct setup su = { 0 };
    static char big[IRC_MAX_IN_LINE + 100];
    memset(big, 'x', sizeof(big) - 1);
    struct step st[] = { IN(WELCOME, 10), IN(big, 20), END };
    run(&su, st, -1, 0, &ref);
    T_EQ_INT(ref.rc, -IM_ETOOBIG);
    EV_HAS(&ref, "STATE error the server sent a line longer than 8192 bytes");
    /* exactly the limit is fine */
    memset(big, 0, sizeof(big));
    memset(big, 'x', IRC_MAX_IN_LINE);
    big[0] = ':';
    strcpy(big + IRC_MAX_IN_LINE, "\r\n");
    run(&su, st, -1, 0, &ref);
    T_EQ_INT(ref.rc, 0);
}

/* ---- presence ----------------------------------------------------------------- */

T_TEST(presence_ison)
{
    struct setup su = { .n_opts = 1, .opts = { { "ison_interval", "20" } } };
    struct step st[] = {
        IN(WELCOME ISUPPORT_NOMON, 10),
        WATCH("bob Carol", 11),                 /* before the end of MOTD: nothing yet */
        IN(MOTD_END, 12),
        TICK(100),                              /* first poll at once */
        IN(":irc.test 303 alice :Bob\r\n", 200),
        TICK(5000),
        TICK(20100),                            /* next poll */
        IN(":irc.test 303 alice :\r\n", 20200),
        TICK(40100),
        IN(":irc.test 303 alice :\r\n", 40200),  /* no change: no event */
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    T_EQ_STR(z(ref.ev, ref.evn),
             "STATE online \nPRES bob available\nPRES carol offline\nPRES bob offline\n");
    const char *first = memmem(ref.out, ref.outn, "ISON bob carol\r\n", 16);
    T_ASSERT(first);
    const char *second = memmem(first + 1, ref.outn - (size_t)(first + 1 - ref.out), "ISON bob carol\r\n", 16);
    T_ASSERT(second);
    T_ASSERT(memmem(second + 1, ref.outn - (size_t)(second + 1 - ref.out), "ISON bob carol\r\n", 16));
}

/* The time of the last "@ms" mark before p in the output record. */
static uint64_t
mark_before(const struct rec *r, const char *p)
{
    uint64_t t = 0;
    for (const char *q = r->out; q < p && (q = memchr(q, '@', (size_t)(p - q))); q++)
        if (q == r->out || q[-1] == '\n')
            t = strtoull(q + 1, NULL, 10);
    return t;
}

T_TEST(presence_ison_yields_to_messages)
{
    /* ISON every 3 s, but a backlog of messages stretches polls to 30 s;
     * once the backlog drains, polls resume every 3 s at once (not one busy
     * period later: that is how a presence change went unseen for 30 s). */
    struct setup su = { .n_opts = 1, .opts = { { "ison_interval", "3" } } };
    static struct step st[256];
    int k = 0;
    st[k++] = (struct step)IN(WELCOME MOTD_END, 0);
    st[k++] = (struct step)WATCH("bob", 0);
    for (int i = 0; i < 30; i++)
        st[k++] = (struct step)SEND((uint64_t)i + 1, "bob x", 100);
    for (int t = 1; t <= 60; t++) {                 /* every poll is answered at once */
        st[k++] = (struct step)MARK((uint64_t)t * 1000);
        st[k++] = (struct step)TICK((uint64_t)t * 1000);
        st[k++] = (struct step)IN(":irc.test 303 alice :bob\r\n", (uint64_t)t * 1000 + 10);
    }
    st[k++] = (struct step)END;
    run(&su, st, -1, 0, &ref);
    T_EQ_INT(ref.rc, 0);
    size_t isons = 0, msgs = 0;
    const char *last_msg = NULL, *first_ison_after = NULL;
    uint64_t prev_ison = 0;
    for (const char *p = ref.out; (p = memmem(p, ref.outn - (size_t)(p - ref.out), "PRIVMSG bob", 11)); p++)
        msgs++, last_msg = p;
    T_EQ_INT(msgs, 30);                 /* the backlog drained, in the 60 s */
    for (const char *p = ref.out; (p = memmem(p, ref.outn - (size_t)(p - ref.out), "ISON bob", 8)); p++) {
        uint64_t t = mark_before(&ref, p);
        if (p < last_msg) {
            /* during the backlog: the first poll, then none closer than 30 s */
            T_ASSERT(isons == 0 || t - prev_ison >= 30000);
        } else if (!first_ison_after) {
            first_ison_after = p;
        }
        prev_ison = t;
        isons++;
    }
    T_ASSERT(first_ison_after);
    uint64_t drained = mark_before(&ref, last_msg);
    /* the next poll comes within one normal period (3 s) of the drain */
    T_ASSERT(mark_before(&ref, first_ison_after) <= drained + 3000);
    T_ASSERT(drained < 57000);          /* and there was room left to see it */
    EV_HAS(&ref, "PRES bob available");
}

T_TEST(presence_ison_without_motd_end)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(WELCOME, 10), WATCH("bob", 11), TICK(100), TICK(10 + IRC_WATCH_DELAY_MS), END,
    };
    run(&su, st, -1, 0, &ref);
    OUT_HAS(&ref, "ISON bob\r\n");
}

T_TEST(presence_monitor)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(WELCOME ISUPPORT_MON MOTD_END, 10),
        WATCH("bob carol dave", 20),            /* MONITOR=2: dave is polled with ISON */
        IN(":irc.test 730 alice :bob!bob@127.0.0.1\r\n:irc.test 731 alice :carol\r\n"
           ":irc.test 303 alice :\r\n", 30),
        IN(":irc.test 731 alice :bob\r\n:irc.test 730 alice :carol!c@h,bob!b@h\r\n", 40),
        WATCH("carol", 50),                     /* bob and dave leave */
        TICK(5000), TICK(6000), TICK(7000),     /* paced: MONITOR costs two lines */
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    OUT_HAS(&ref, "MONITOR + bob,carol\r\n");
    OUT_HAS(&ref, "ISON dave\r\n");
    OUT_HAS(&ref, "MONITOR - bob\r\n");
    OUT_LACKS(&ref, "MONITOR C");
    T_EQ_STR(z(ref.ev, ref.evn),
             "STATE online \nPRES bob available\nPRES carol offline\nPRES dave offline\n"
             "PRES bob offline\nPRES carol available\nPRES bob available\n");
}

T_TEST(presence_monitor_full)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(WELCOME ":irc.test 005 alice MONITOR :ok\r\n" MOTD_END, 10),
        WATCH("bob carol", 20),
        IN(":irc.test 734 alice 1 carol :Monitor list is full\r\n", 30),
        TICK(3000),
        IN(":irc.test 303 alice :carol\r\n", 3050),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    OUT_HAS(&ref, "MONITOR + bob,carol\r\n");
    OUT_HAS(&ref, "ISON carol\r\n");
    EV_HAS(&ref, "PRES carol available\n");
}

/* ---- messages in ------------------------------------------------------------------ */

T_TEST(messages_in)
{
    struct setup su = { 0 };
    struct step st[] = {
        IN(WELCOME ISUPPORT_NOMON MOTD_END, 10),
        WATCH("bob", 11),
        IN(":Bob!b@h PRIVMSG alice :hello \x02" "bold\x02 \x03" "4,12red\x03 \x1fu\x1f \x1di\x1d \x16r\x0f \x11m\x11!\r\n"
           ":Bob!b@h PRIVMSG alice :\x01" "ACTION waves\x01\r\n"
           ":Bob!b@h PRIVMSG alice :\x01VERSION\x01\r\n"
           ":Bob!b@h PRIVMSG alice :\x01" "DCC SEND x 1 2 3\x01\r\n"
           ":Bob!b@h PRIVMSG #chan :not for us\r\n"
           ":Bob!b@h PRIVMSG alice :caf\xe9 \xa3" "5\r\n"          /* Latin-1 */
           ":Bob!b@h PRIVMSG alice :\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\r\n"   /* UTF-8 */
           ":Bob!b@h NOTICE alice :a notice from a contact\r\n"
           ":NickServ!s@services.test NOTICE alice :This nickname is registered\r\n"
           ":irc.test NOTICE alice :*** server notice\r\n"
           ":Carol!c@h NOTICE alice :stranger notice\r\n"
           ":Bob!b@h NOTICE alice :\x01VERSION x\x01\r\n"
           "@time=2023-01-01T00:00:00Z :Bob!b@h PRIVMSG alice :tagged\r\n", 20),
        TICK(30),
        END,
    };
    T_EQ_INT(run_all_splits(&su, st, &ref), 0);
    T_EQ_INT(ref.rc, 0);
    T_EQ_STR(z(ref.ev, ref.evn),
             "STATE online \n"
             "PRES bob available\n"
             "MSG bob hello bold red u i r m!\n"
             "MSG bob /me waves\n"
             "MSG bob caf\xc3\xa9 \xc2\xa3" "5\n"
             "MSG bob \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\n"
             "MSG bob a notice from a contact\n"
             "NOTICE NickServ: This nickname is registered\n"
             "NOTICE irc.test: *** server notice\n"
             "NOTICE Carol: stranger notice\n"
             "MSG bob tagged\n");
    OUT_HAS(&ref, "NOTICE Bob :\x01VERSION imfuse\x01\r\n");
    OUT_LACKS(&ref, "DCC");
}

T_TEST(strip_format_unit)
{
    char a[] = "\x03" "12,4x\x03" "9y\x03,z\x04" "ff00AAq\x04" "ff00AA,00ff00w\x1e" "s\x7f";
    size_t n = irc_strip_format(a, strlen(a));
    a[n] = 0;
    T_EQ_STR(a, "xy,zqws");
    char b[] = "tab\there\x01";
    n = irc_strip_format(b, strlen(b));
    b[n] = 0;
    T_EQ_STR(b, "tab\there");
}

/* ---- messages out ------------------------------------------------------------------ */

T_TEST(messages_out_action_and_newlines)
{
    struct setup su = { .n_opts = 1, .opts = { { "flood_burst", "20" } } };
    struct step st[] = {
        IN(WELCOME, 10),
        SEND(7, "bob /me waves", 20),
        SEND(8, "bob one\r\ntwo\n\nthree \x01" "CTCP", 20),
        SEND(9, "bob \n\n", 20),                  /* nothing IRC can carry */
        END,
    };
    run(&su, st, -1, 0, &ref);
    T_EQ_INT(ref.rc, 0);
    OUT_HAS(&ref, "PRIVMSG bob :\x01" "ACTION waves\x01\r\n"
                  "PRIVMSG bob :one\r\nPRIVMSG bob :two\r\nPRIVMSG bob :three CTCP\r\n");
    T_EQ_STR(z(ref.ev, ref.evn), "STATE online \nSENT 7\nSENT 8\nSENT 9\n");
}

/* Check every PRIVMSG line: relayed size <= 512 with the given prefix length;
 * the pieces joined give back want. */
static void
check_split(const struct rec *r, size_t prefix, const char *want, size_t *lines)
{
    static char joined[16384];
    size_t jn = 0;
    *lines = 0;
    for (const char *p = r->out; p < r->out + r->outn;) {
        const char *e = memmem(p, (size_t)(r->out + r->outn - p), "\r\n", 2);
        if (!e)
            abort();
        if (!strncmp(p, "PRIVMSG bob :", 13)) {
            size_t len = (size_t)(e + 2 - p);
            if (prefix + len > 512)
                T_FAIL("line of %zu bytes + prefix %zu > 512", len, prefix);
            if (!im_utf8_valid(p + 13, (size_t)(e - p - 13)))
                T_FAIL("piece %zu is not valid UTF-8", *lines);
            memcpy(joined + jn, p + 13, (size_t)(e - p - 13));
            jn += (size_t)(e - p - 13);
            (*lines)++;
        }
        p = e + 2;
    }
    joined[jn] = 0;
    T_EQ_STR(joined, want);
}

T_TEST(messages_out_split_utf8)
{
    /* 1500 bytes: no spaces, characters of 1 to 4 bytes */
    static char body[2048] = "bob ";
    size_t n = 4;
    const char *chars[] = { "a", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
    for (int i = 0; n < 4 + 1500 - 4; i++) {
        const char *c = chars[i % 4];
        memcpy(body + n, c, strlen(c));
        n += strlen(c);
    }
    body[n] = 0;
    struct setup su = { .n_opts = 1, .opts = { { "flood_burst", "50" } } };

    /* unknown prefix: budget for nick + 10 + 63 */
    struct step st[] = {
        IN(":irc.test 001 alice :Welcome\r\n", 10), SEND(1, body, 20), END,
    };
    run(&su, st, -1, 0, &ref);
    size_t lines, lines_known;
    check_split(&ref, 1 + 5 + 1 + 10 + 1 + 63 + 1, body + 4, &lines);
    T_ASSERT(lines >= 4);
    EV_HAS(&ref, "SENT 1\n");

    /* known prefix from 001: longer pieces, still within 512 as relayed */
    struct step st2[] = { IN(WELCOME, 10), SEND(1, body, 20), END };
    run(&su, st2, -1, 0, &ref);
    check_split(&ref, strlen(":alice!alice@127.0.0.1 "), body + 4, &lines_known);
    T_ASSERT(lines_known <= lines);
    /* pieces are as long as the budget allows (no piece wastes > 3 bytes) */
    const char *p = memmem(ref.out, ref.outn, "PRIVMSG", 7);
    const char *e = memmem(p, ref.outn - (size_t)(p - ref.out), "\r\n", 2);
    T_ASSERT(strlen(":alice!alice@127.0.0.1 ") + (size_t)(e + 2 - p) >= 512 - 3);

    /* spaces are preferred as cut points, kept on the earlier piece */
    static char words[2048] = "bob ";
    n = 4;
    for (int i = 0; n < 1200; i++)
        n += (size_t)snprintf(words + n, sizeof(words) - n, "word%d ", i);
    run(&su, (struct step[]){ IN(WELCOME, 10), SEND(2, words, 20), END }, -1, 0, &ref);
    check_split(&ref, strlen(":alice!alice@127.0.0.1 "), words + 4, &lines);
    for (const char *q = ref.out; (q = memmem(q, ref.outn - (size_t)(q - ref.out), "\r\n", 2)); q += 2)
        if (q[-1] != ' ' && q + 2 < ref.out + ref.outn && !memcmp(q - 8, "ACTION", 6))
            T_FAIL("piece not cut at a space");
}

T_TEST(messages_out_split_all_prefixes)
{
    /* every cut against a relayed 512 for a 30-char nick with maximal prefix */
    struct setup su = { .login = "n23456789012345678901234567890",
                        .n_opts = 1, .opts = { { "flood_burst", "100" } } };
    static char body[2048];
    for (size_t len = 380; len < 480; len += 7) {
        size_t n = (size_t)snprintf(body, sizeof(body), "b23456789012345678901234567890 /me ");
        for (size_t i = 0; i < len; i++)
            body[n++] = (char)(i % 3 ? 'x' : ' ');
        body[n] = 0;
        run(&su, (struct step[]){ IN(":s 001 n23456789012345678901234567890 :hi\r\n", 10), SEND(3, body, 20), END },
            -1, 0, &ref);
        size_t pre = 1 + 30 + 1 + 10 + 1 + 63 + 1;
        for (const char *p = ref.out; p < ref.out + ref.outn;) {
            const char *e = memmem(p, (size_t)(ref.out + ref.outn - p), "\r\n", 2);
            if (!strncmp(p, "PRIVMSG", 7) && pre + (size_t)(e + 2 - p) > 512)
                T_FAIL("len %zu: line of %zu", len, (size_t)(e + 2 - p));
            p = e + 2;
        }
        OUT_HAS(&ref, "\x01" "ACTION ");
    }
}

/* ---- pacing ----------------------------------------------------------------------- */

/* A session of alice past the server's welcome at T0, writing into ref
 * (cleared first). */
static struct im_sess *
welcomed(void)
{
    static const struct im_account_cfg cfg = { .account = 1, .login = "alice", .password = "", .host = "h",
                                               .port = 1, .tls_name = "" };
    static struct im_io io;
    memset(&ref, 0, sizeof(ref));
    io = (struct im_io){ .out = h_out, .event = h_event, .ud = &ref };
    struct im_sess *s = irc_ops.create(&cfg, &io);
    T_ASSERT(s);
    T_EQ_INT(irc_ops.start(s, AT(T0)), 0);
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)WELCOME, strlen(WELCOME), AT(T0)), 0);
    return s;
}

T_TEST(pacing_token_bucket)
{
    struct setup su = { 0 };                  /* defaults: burst 5, 1 line / 1000 ms */
    struct step st[32] = { IN(WELCOME, 0) };
    int k = 1;
    static char bodies[20][32];
    for (int i = 0; i < 20; i++) {
        snprintf(bodies[i], sizeof(bodies[i]), "bob m%d", i);
        st[k++] = (struct step)SEND((uint64_t)(100 + i), bodies[i], 0);
    }
    st[k++] = (struct step){ S_CHECK_QUEUED, NULL, 0, 0 };
    st[k++] = (struct step)END;
    run(&su, st, -1, 0, &ref);
    /* registration lines were charged: 4 of the 5-line burst are gone (CAP LS, NICK, USER, CAP END? no CAP END here) */
    size_t sent0 = 0;
    for (const char *p = ref.out; (p = memmem(p, ref.outn - (size_t)(p - ref.out), "PRIVMSG", 7)); p++)
        sent0++;
    T_ASSERT(sent0 <= 5);
    EV_HAS(&ref, "QUEUED ");

    /* play the clock: one line per second, never faster, none lost, in order */
    struct rec *r = &ref;
    struct im_sess *s = welcomed();
    /* the bucket refills with time: wait 10 s so that it is full */
    T_EQ_INT(irc_ops.tick(s, AT(T0 + 10000)), 0);
    size_t base = r->outn;
    for (int i = 0; i < 20; i++) {
        struct im_msg m = { .msg = (uint64_t)(100 + i), .to = IM_STR("bob"),
                            .body = { bodies[i] + 4, (uint32_t)strlen(bodies[i] + 4) } };
        T_EQ_INT(irc_ops.send_msg(s, &m), 0);
    }
    size_t count = 0;
    for (const char *p = r->out + base; (p = memmem(p, r->outn - (size_t)(p - r->out), "PRIVMSG", 7)); p++)
        count++;
    T_EQ_INT(count, 5);                     /* the burst */
    T_EQ_INT(irc_queued_lines(s), 15);
    /* a PING from the server is answered at once, ahead of the queue */
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)"PING :x\r\n", 9, AT(T0 + 10001)), 0);
    T_ASSERT(has(r->out, r->outn, "PONG :x\r\n"));
    T_EQ_INT(irc_queued_lines(s), 15);
    uint64_t t = T0 + 10000;
    size_t prev = 15;
    int seconds = 0;
    while (irc_queued_lines(s) && seconds < 60) {
        for (int step = 1; step <= 10; step++)
            T_EQ_INT(irc_ops.tick(s, AT(t + (uint64_t)step * 100)), 0);
        t += 1000;
        seconds++;
        size_t now = irc_queued_lines(s);
        T_ASSERT(prev - now <= 1);          /* never more than one line a second */
        prev = now;
    }
    T_EQ_INT(irc_queued_lines(s), 0);
    T_ASSERT(seconds >= 15 && seconds <= 17);   /* the PONG cost one line */
    /* all 20, in order, each SENT once */
    const char *p = r->out + base;
    for (int i = 0; i < 20; i++) {
        char want[64];
        snprintf(want, sizeof(want), "PRIVMSG bob :m%d\r\n", i);
        const char *q = memmem(p, r->outn - (size_t)(p - r->out), want, strlen(want));
        if (!q)
            T_FAIL("line %d missing or out of order", i);
        p = q + 1;
        snprintf(want, sizeof(want), "SENT %d\n", 100 + i);
        T_ASSERT(has(r->ev, r->evn, want));
    }
    irc_ops.logout(s);
    T_ASSERT(has(r->out, r->outn, "QUIT :imfuse\r\n"));
    irc_ops.destroy(s);
}

/* ---- names -------------------------------------------------------------------------- */

T_TEST(normalize)
{
    char out[64];
    const char *why = NULL;
    T_EQ_INT(irc_ops.normalize_login("Alice[x]\\~", out, sizeof(out), &why), -IM_EINVAL);   /* ~ invalid */
    T_EQ_INT(irc_ops.normalize_login("Alice[X]\\^", out, sizeof(out), &why), 0);
    T_EQ_STR(out, "alice{x}|^");
    T_EQ_INT(irc_ops.normalize_address("`_{|}-9", out, sizeof(out), &why), 0);
    T_EQ_INT(irc_ops.normalize_address("9lives", out, sizeof(out), &why), -IM_EINVAL);
    T_ASSERT(why && *why);
    T_EQ_INT(irc_ops.normalize_address("-x", out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(irc_ops.normalize_address("", out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(irc_ops.normalize_address("a b", out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(irc_ops.normalize_address("bob@x", out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(irc_ops.normalize_address("a23456789012345678901234567890", out, sizeof(out), &why), 0);
    T_EQ_INT(irc_ops.normalize_address("a234567890123456789012345678901", out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(irc_ops.normalize_address("abc", out, 3, &why), -IM_EINVAL);
    out[0] = 'x';
    irc_ops.default_tls_name("alice", out, sizeof(out));
    T_EQ_STR(out, "");
    T_EQ_STR(irc_ops.name, "irc");
    T_EQ_INT(irc_ops.default_port, 6667);
    T_EQ_INT(irc_ops.default_tls_port, 6697);
    T_ASSERT(im_proto_find("irc") == &irc_ops);
    T_ASSERT(irc_ops.add_contact == NULL && irc_ops.remove_contact == NULL && irc_ops.set_watch);
}

T_TEST(to_utf8)
{
    char out[64];
    size_t n = irc_to_utf8("a\xe9\xff", 3, out, sizeof(out));
    T_EQ_INT(n, 5);
    T_EQ_MEM(out, "a\xc3\xa9\xc3\xbf", 5);
    n = irc_to_utf8("\xc3\xa9", 2, out, sizeof(out));
    T_EQ_INT(n, 2);
}

/* The monotonic clock drives the timers and the bucket; the wall clock only
 * stamps messages. */
T_TEST(clock_roles)
{
    static struct rec r;
    const uint64_t wall = 1800000000000ull;
    struct im_account_cfg cfg = { .account = 1, .login = "alice", .password = "", .host = "h", .port = 1,
                                  .tls_name = "" };
    struct im_io io = { .out = h_out, .event = h_event, .ud = &r };
    struct im_sess *s = irc_ops.create(&cfg, &io);

    T_EQ_INT(irc_ops.start(s, ((struct im_time){ .mono_ms = 1000, .wall_ms = wall })), 0);
    /* the registration timeout: not by the wall clock */
    T_EQ_INT(irc_ops.tick(s, ((struct im_time){ .mono_ms = 1000 + IRC_REG_TIMEOUT_MS - 1,
                                                .wall_ms = wall + 36000000 })), 0);
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)WELCOME, strlen(WELCOME),
                           ((struct im_time){ .mono_ms = 2000, .wall_ms = wall })), 0);
    const char *pm = ":bob!b@h PRIVMSG alice :hi\r\n";
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)pm, strlen(pm),
                           ((struct im_time){ .mono_ms = 3000, .wall_ms = wall + 777 })), 0);
    EV_HAS(&r, "MSG bob hi\n");
    T_EQ_UINT(r.last_ts, wall + 777);
    /* our keepalive PING after IRC_PING_IDLE_MS of monotonic silence, whatever the wall says */
    size_t before = r.outn;
    T_EQ_INT(irc_ops.tick(s, ((struct im_time){ .mono_ms = 3000 + IRC_PING_IDLE_MS - 1,
                                                .wall_ms = wall + 36000000 })), 0);
    T_ASSERT(!has(r.out + before, r.outn - before, "PING :imfuse"));
    T_EQ_INT(irc_ops.tick(s, ((struct im_time){ .mono_ms = 3000 + IRC_PING_IDLE_MS, .wall_ms = wall })), 0);
    T_ASSERT(has(r.out + before, r.outn - before, "PING :imfuse\r\n"));
    irc_ops.destroy(s);
}

/* A flood of CTCP requests gets a bounded number of answers queued. */
T_TEST(ctcp_flood_bounded)
{
    struct rec *r = &ref;
    struct im_sess *s = welcomed();
    static char flood[64 * 1000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++)
        n += (size_t)snprintf(flood + n, sizeof(flood) - n, ":m%d!m@h PRIVMSG alice :\x01VERSION\x01\r\n", i % 7);
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)flood, n, AT(T0 + 1)), 0);
    T_ASSERT(irc_queued_lines(s) <= IRC_MAX_CTCP_QUEUED);
    /* once drained, requests are answered again */
    for (int step = 1; step <= 200; step++)
        T_EQ_INT(irc_ops.tick(s, AT(T0 + 1 + (uint64_t)step * 100)), 0);
    T_EQ_INT(irc_queued_lines(s), 0);
    size_t before = r->outn;
    const char *one = ":zed!z@h PRIVMSG alice :\x01VERSION\x01\r\n";
    T_EQ_INT(irc_ops.input(s, (const uint8_t *)one, strlen(one), AT(T0 + 30000)), 0);
    const char *want = "NOTICE zed :\x01VERSION imfuse\x01\r\n";
    T_ASSERT(memmem(r->out + before, r->outn - before, want, strlen(want)));
    irc_ops.destroy(s);
}

T_MAIN(T_RUN(login_plain), T_RUN(login_pass_sasl_ok), T_RUN(login_sasl_fail), T_RUN(login_sasl_not_offered),
       T_RUN(login_server_password_refused), T_RUN(login_nick_in_use),
       T_RUN(login_nick_in_use_digits_and_nicklen), T_RUN(login_starttls_refused),
       T_RUN(login_timeout_and_error_line), T_RUN(login_nickserv), T_RUN(ping_pong_and_timeout),
       T_RUN(line_too_long), T_RUN(presence_ison), T_RUN(presence_ison_yields_to_messages), T_RUN(presence_ison_without_motd_end),
       T_RUN(presence_monitor), T_RUN(presence_monitor_full), T_RUN(messages_in), T_RUN(strip_format_unit),
       T_RUN(messages_out_action_and_newlines), T_RUN(messages_out_split_utf8),
       T_RUN(messages_out_split_all_prefixes), T_RUN(pacing_token_bucket), T_RUN(normalize), T_RUN(to_utf8),
       T_RUN(clock_roles), T_RUN(ctcp_flood_bounded))
