/*
 * fuzz_xmpp.c - libFuzzer target for the XMPP adapter.
 *
 * Input: byte 0 selects the mode (bit 0: start from a fresh stream, or
 * after a canned login that reached ONLINE with stream management on;
 * bits 1-2: the TLS mode; bit 3: SCRAM's key derivation handed to the glue
 * (io->kdf), answered between chunks with a key, a key of the wrong length,
 * an error, or a late answer first), byte 1 seeds the chunk sizes; the rest is what
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
#include "fz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct im_sess *s;
    int starttls;
    unsigned events;
    bool kdf_pending;               /* io->kdf took a request not answered yet */
    uint64_t kdf_req;
    enum im_kdf_hash kdf_hash;
};

static int
fz_kdf(void *ud, uint64_t req, const struct im_kdf_params *p)
{
    struct fz *f = ud;
    if (f->kdf_pending || !p->salt_len || p->iterations < 1 || p->iterations > IM_KDF_MAX_ITER ||
        !im_kdf_keylen(p->hash) || p->password_len != 6 || memcmp(p->password, "pencil", 6))
        abort();                    /* one request at a time, always well-formed */
    f->kdf_pending = true;
    f->kdf_req = req;
    f->kdf_hash = p->hash;
    return 0;
}

/* Answer the pending request from outside any hook, as the glue does; the
 * key is made up (the derivation itself is not what is fuzzed here). */
static int
fz_kdf_answer(struct fz *f, unsigned how, uint64_t now)
{
    uint8_t key[IM_KDF_MAX_KEY];
    size_t kl = im_kdf_keylen(f->kdf_hash);
    memset(key, 0x42, sizeof(key));
    f->kdf_pending = false;
    switch (how & 3) {
    case 0:
        return xmpp_ops.kdf_done(f->s, f->kdf_req, -IM_ELIMIT, NULL, 0, FZ_AT(now));
    case 1:
        if (xmpp_ops.kdf_done(f->s, f->kdf_req + 1, 0, key, kl, FZ_AT(now)))
            abort();                /* a late answer is ignored */
        return xmpp_ops.kdf_done(f->s, f->kdf_req, 0, key, kl, FZ_AT(now));
    case 2:
        return xmpp_ops.kdf_done(f->s, f->kdf_req, 0, key, kl - 1, FZ_AT(now));
    default:
        return xmpp_ops.kdf_done(f->s, f->kdf_req, 0, key, kl, FZ_AT(now));
    }
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
    struct im_io io = { .out = fz_discard, .event = fz_event, .rng = &fz_rng, .ud = &f };
    uint64_t now = 3600000;                         /* monotonic; wall is later */

    if (size < 2)
        return 0;
    bool after_login = data[0] & 1;
    cfg.tls = after_login ? IM_TLS_DIRECT : (enum im_tls)((data[0] >> 1) % 3);
    if (data[0] & 8)
        io.kdf = fz_kdf;
    unsigned seed = data[1];
    data += 2;
    size -= 2;

    if (!fz_start(&xmpp_ops, &cfg, &io, &f.s, after_login ? login : NULL, sizeof(login) - 1, now))
        goto out;
    while (size) {
        size_t n = fz_chunk(&seed, size);
        now += 700;
        if (xmpp_ops.input(f.s, data, n, FZ_AT(now)))
            goto out;
        if (f.starttls) {
            f.starttls = 0;
            if (xmpp_ops.tls_ready(f.s, (seed >> 8) & 1 ? 0 : -IM_ETLS, FZ_AT(now)))
                goto out;
        }
        /* Sometimes the answer waits a chunk or more: input arrives meanwhile. */
        if (f.kdf_pending && ((seed >> 9) & 1) && fz_kdf_answer(&f, seed >> 10, now))
            goto out;
        if (xmpp_ops.tick(f.s, FZ_AT(now)))
            goto out;
        data += n;
        size -= n;
    }
    xmpp_ops.logout(f.s);
out:
    xmpp_ops.destroy(f.s);
    return 0;
}
