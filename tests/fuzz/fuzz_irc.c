/*
 * fuzz_irc.c - libFuzzer target for the IRC adapter.
 *
 * Input: byte 0 selects the mode (bit 0: SASL password set; bit 1: a
 * canned welcome first so the session is ONLINE; bit 2: watch list set;
 * bit 3: send messages on events), byte 1 seeds the chunk sizes and the
 * clock steps; the rest is what the server sends, fed in chunks of 1..64
 * bytes with ticks in between.  Events are checked for basic invariants
 * (valid UTF-8 bodies and notices, non-empty addresses); every line the
 * adapter writes must end in CRLF, hold no other CR/LF/NUL and fit its
 * length limit.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "im_proto.h"
#include "irc/irc_int.h"
#include "fz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct im_sess *s;
    bool send_on_events;
    bool online;
    unsigned events;
};

static int
fz_out(void *ud, const void *p, size_t n)
{
    const char *c = p;
    (void)ud;
    if (n < 2 || c[n - 2] != '\r' || c[n - 1] != '\n')
        abort();
    for (size_t i = 0; i + 2 < n; i++)
        if (c[i] == '\r' || c[i] == '\n' || c[i] == 0)
            abort();
    /* PRIVMSG pieces are budgeted against the prefix and LINELEN (checked
     * exactly by the unit tests); every other line fits 512 bytes. */
    if (n > (n >= 8 && !memcmp(c, "PRIVMSG ", 8) ? IRC_MAX_IN_LINE : IRC_LINE_MAX))
        abort();
    return 0;
}

static void
fz_event(void *ud, const struct im_event *e)
{
    struct fz *f = ud;
    f->events++;
    switch (e->type) {
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len) || !e->u.message.from.len)
            abort();
        if (f->send_on_events && f->online) {
            struct im_msg m = { .msg = f->events, .to = e->u.message.from, .body = e->u.message.body };
            irc_ops.send_msg(f->s, &m);
        }
        break;
    case IM_EV_NOTICE:
        if (!im_utf8_valid(e->u.notice.text.p, e->u.notice.text.len))
            abort();
        break;
    case IM_EV_PRESENCE:
        if (!e->u.presence.address.len)
            abort();
        break;
    case IM_EV_STATE:
        if (!im_utf8_valid(e->u.state.detail.p, e->u.state.detail.len))
            abort();
        if (e->u.state.state == IM_ACC_ONLINE) {
            f->online = true;
            struct im_msg m = { .msg = 1, .to = IM_STR("bob"),
                                .body = IM_STR("/me hi \xc3\xa9\nsecond line\r\n\x01x") };
            irc_ops.send_msg(f->s, &m);
        } else {
            f->online = false;
        }
        break;
    default:
        break;
    }
}

static const char welcome[] =
    ":irc.test 001 alice :Welcome alice!alice@127.0.0.1\r\n"
    ":irc.test 005 alice MONITOR=3 CASEMAPPING=rfc1459 NICKLEN=30 :are supported\r\n"
    ":irc.test 376 alice :End of MOTD\r\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = { 0 };
    struct im_option opts[] = { { "server_password", "srv" }, { "nickserv_password", "ns" },
                                { "ison_interval", "1" } };
    struct im_account_cfg cfg = { .account = 1, .login = "alice", .password = "", .host = "127.0.0.1",
                                  .port = 6667, .tls = IM_TLS_NONE, .tls_name = "",
                                  .options = opts, .n_options = 3 };
    struct im_io io = { .out = fz_out, .event = fz_event, .ud = &f };
    uint64_t now = 3600000;                         /* monotonic; wall is a day later */

    if (size < 2)
        return 0;
    if (data[0] & 1)
        cfg.password = "pencil";
    bool after_login = data[0] & 2;
    bool watch = data[0] & 4;
    f.send_on_events = data[0] & 8;
    unsigned seed = data[1];
    data += 2;
    size -= 2;

    if (!fz_start(&irc_ops, &cfg, &io, &f.s, after_login ? welcome : NULL, sizeof(welcome) - 1, now))
        goto out;
    if (watch) {
        struct im_str w[] = { IM_STR("bob"), IM_STR("carol"), IM_STR("dave"), IM_STR("eve"), IM_STR("Bob") };
        if (irc_ops.set_watch(f.s, w, 5, FZ_AT(now)))
            goto out;
    }
    while (size) {
        size_t n = fz_chunk(&seed, size);
        now += (seed >> 8) % 4000;
        if (irc_ops.input(f.s, data, n, FZ_AT(now)))
            goto out;
        if (irc_ops.tick(f.s, FZ_AT(now)))
            goto out;
        data += n;
        size -= n;
    }
    for (int i = 0; i < 30; i++) {                  /* drain the queues */
        now += 1000;
        if (irc_ops.tick(f.s, FZ_AT(now)))
            goto out;
    }
    irc_ops.logout(f.s);
out:
    irc_ops.destroy(f.s);
    return 0;
}
