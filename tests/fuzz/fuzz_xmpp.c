/*
 * fuzz_xmpp.c - libFuzzer target for the XMPP adapter.
 *
 * Input: byte 0 selects the mode (bit 0: start from a fresh stream, or
 * after a canned login that reached ONLINE with stream management on;
 * bits 1-2: the TLS mode), byte 1 seeds the chunk sizes; the rest is what
 * the server sends, fed in chunks of 1..64 bytes.  Events are checked for
 * basic invariants (valid UTF-8 bodies, non-empty addresses); message tokens
 * are committed, outgoing messages are sent on some events.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "im_proto.h"
#include "xmpp/xmpp_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct im_sess *s;
    int starttls;
    unsigned events;
};

static int
fz_out(void *ud, const void *p, size_t n)
{
    (void)ud;
    (void)p;
    (void)n;
    return 0;
}

static void
fz_event(void *ud, const struct im_event *e)
{
    struct fz *f = ud;
    f->events++;
    switch (e->type) {
    case IM_EV_STARTTLS:
        f->starttls = 1;
        break;
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len) || !e->u.message.from.len)
            abort();
        if (e->u.message.token && (f->events & 1))
            xmpp_ops.committed(f->s, e->u.message.token);
        break;
    case IM_EV_CONTACTS:
        for (uint32_t i = 0; i < e->u.contacts.n; i++)
            if (!e->u.contacts.list[i].address.len)
                abort();
        break;
    case IM_EV_STATE:
        if (e->u.state.state == IM_ACC_ONLINE) {
            struct im_msg m = { .msg = 1, .to = IM_STR("bob@b.test"), .body = IM_STR("hi <&>") };
            xmpp_ops.send_msg(f->s, &m);
        }
        break;
    default:
        break;
    }
}

static int
fz_rand(void *ud, uint8_t *buf, size_t n)
{
    (void)ud;
    memset(buf, 0x5a, n);
    return 0;
}

static const char login[] =
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "id='x' from='a.test' version='1.0'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='y' from='a.test' "
    "version='1.0'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/>"
    "</stream:features><iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
    "<jid>user@a.test/imfuse</jid></bind></iq><enabled xmlns='urn:xmpp:sm:3'/>"
    "<iq type='result' id='roster'><query xmlns='jabber:iq:roster'><item jid='bob@b.test' name='Bob' "
    "subscription='both'><group>F</group></item></query></iq>";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = { 0 };
    struct im_account_cfg cfg = { .account = 1, .login = "user@a.test", .password = "pencil",
                                  .host = "127.0.0.1", .port = 5222, .tls_name = "a.test" };
    struct im_io io = { .out = fz_out, .event = fz_event, .ud = &f };
    uint64_t now = 1700000000000ull;

    if (size < 2)
        return 0;
    bool after_login = data[0] & 1;
    cfg.tls = after_login ? IM_TLS_DIRECT : (enum im_tls)((data[0] >> 1) % 3);
    unsigned seed = data[1];
    data += 2;
    size -= 2;

    f.s = xmpp_ops.create(&cfg, &io);
    if (!f.s)
        return 0;
    xmpp_set_rand(f.s, fz_rand, NULL);
    if (xmpp_ops.start(f.s, now))
        goto out;
    if (after_login && xmpp_ops.input(f.s, (const uint8_t *)login, sizeof(login) - 1, now))
        goto out;
    while (size) {
        seed = seed * 1103515245u + 12345u;
        size_t n = 1 + (seed >> 16) % 64;
        if (n > size)
            n = size;
        now += 700;
        if (xmpp_ops.input(f.s, data, n, now))
            goto out;
        if (f.starttls) {
            f.starttls = 0;
            if (xmpp_ops.tls_ready(f.s, (seed >> 8) & 1 ? 0 : -IM_ETLS, now))
                goto out;
        }
        if (xmpp_ops.tick(f.s, now))
            goto out;
        data += n;
        size -= n;
    }
    xmpp_ops.logout(f.s);
out:
    xmpp_ops.destroy(f.s);
    return 0;
}
