/*
 * fuzz_sip.c - libFuzzer target for the SIP/SIMPLE adapter and its framer.
 *
 * Input: byte 0 selects the mode (bit 0: start from a fresh REGISTER, or
 * after a canned 401 + 200 that made the session ONLINE; bit 1: TLS
 * transport; bit 2: also run the bare framer + message parser over the
 * whole input; bit 3: a slow clock), byte 1 seeds the chunk sizes; the rest
 * is what the server sends, fed in chunks of 1..64 bytes with the clock
 * advancing 1..17 s per chunk (refreshes, keepalives, transaction timeouts),
 * or 0..255 ms with the slow clock (long exchanges before any timeout).  Events are checked for basic
 * invariants; message tokens are committed, messages are sent on some events.
 *
 * Presence: when the session goes ONLINE it watches sip:bob@sip.test and
 * sip:carol@sip.test (from inside the event, as the relay does), and now and
 * then carol gives way to dave or back between chunks.  The randomness is constant, so every
 * SUBSCRIBE has Call-ID 5a5a... and From tag 5a5a5a5a5a5a5a5a: a NOTIFY with
 * those reaches the dialog code and its body the PIDF parser (see the seed
 * notify_pidf).  In framer-only mode every body also goes to sip_pidf_parse().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "im_common.h"
#include "im_proto.h"
#include "sip/sip_int.h"
#include "fz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz {
    struct im_sess *s;
    unsigned events;
    uint64_t next_msg;
    uint64_t now;
};

/* Two watch lists: bob stays on both, carol and dave come and go. */
static const struct im_str watch[2][2] = {
    { IM_STR("sip:bob@sip.test"), IM_STR("sip:carol@sip.test") },
    { IM_STR("sip:bob@sip.test"), IM_STR("sip:dave@sip.test") },
};

static const char *
fz_local(void *ud)
{
    (void)ud;
    return "127.0.0.1:40000";
}

static void
fz_event(void *ud, const struct im_event *e)
{
    struct fz *f = ud;
    f->events++;
    switch (e->type) {
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len) || !e->u.message.from.len ||
            !im_utf8_valid(e->u.message.from.p, e->u.message.from.len))
            abort();
        if (e->u.message.token && (f->events & 1))
            sip_ops.committed(f->s, e->u.message.token);
        break;
    case IM_EV_STATE:
        if (!im_utf8_valid(e->u.state.detail.p, e->u.state.detail.len))
            abort();
        if (e->u.state.state == IM_ACC_ONLINE) {
            struct im_msg m = { .msg = ++f->next_msg, .to = IM_STR("sip:bob@sip.test"), .body = IM_STR("hi") };
            sip_ops.send_msg(f->s, &m);
            sip_ops.set_watch(f->s, watch[0], 2, FZ_AT(f->now));
        }
        break;
    case IM_EV_NOTICE:
        if (!im_utf8_valid(e->u.notice.text.p, e->u.notice.text.len))
            abort();
        break;
    case IM_EV_PRESENCE:
        if (e->u.presence.presence > IM_PRES_OFFLINE ||
            !im_utf8_valid(e->u.presence.address.p, e->u.presence.address.len) ||
            strncmp(e->u.presence.address.p, "sip:", 4))
            abort();
        break;
    default:
        break;
    }
}

#define CID "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
static const char login[] =
    "SIP/2.0 401 Unauthorized\r\nCall-ID: " CID "\r\nCSeq: 1 REGISTER\r\n"
    "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"abc\", qop=\"auth\"\r\nContent-Length: 0\r\n\r\n"
    "SIP/2.0 200 OK\r\ni: " CID "\r\nCSeq: 2 REGISTER\r\nExpires: 60\r\nl: 0\r\n\r\n";

static void
framer_only(const uint8_t *data, size_t size, unsigned seed)
{
    struct sip_framer fr = { 0 };
    struct sip_msg *m = malloc(sizeof(*m));
    if (!m)
        return;
    while (size) {
        size_t n = fz_chunk(&seed, size);
        if (sip_framer_push(&fr, data, n))
            break;
        data += n;
        size -= n;
        int rc;
        const uint8_t *p;
        size_t hl, bl;
        while ((rc = sip_framer_next(&fr, &p, &hl, &bl)) > 0) {
            if (rc == SIP_FRAME_MSG && !sip_msg_parse(m, (const char *)p, hl, bl)) {
                struct im_str v;
                for (uint32_t i = 0; i < m->n_hdr; i++) {
                    sip_param(m->hdr[i].value, "tag", &v);
                    struct sip_chal c;
                    sip_digest_parse(m->hdr[i].value, &c);
                }
                enum im_presence pres = IM_PRES_UNKNOWN;
                if (!sip_pidf_parse(m->body.p, m->body.len, &pres) && pres != IM_PRES_AVAILABLE &&
                    pres != IM_PRES_AWAY && pres != IM_PRES_OFFLINE)
                    abort();
            }
        }
        if (rc != -EAGAIN)
            break;
    }
    sip_framer_free(&fr);
    free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fz f = { 0 };
    struct im_account_cfg cfg = { .account = 1, .login = "sip:alice@sip.test", .password = "pw",
                                  .host = "127.0.0.1", .port = 5060, .tls_name = "sip.test" };
    struct im_io io = { .out = fz_discard, .event = fz_event, .local_addr = fz_local, .rng = &fz_rng, .ud = &f };
    uint64_t now = 3600000;                         /* monotonic; wall is later */

    if (size < 2)
        return 0;
    bool after_login = data[0] & 1, slow = data[0] & 8;
    cfg.tls = (data[0] & 2) ? IM_TLS_DIRECT : IM_TLS_NONE;
    unsigned seed = data[1];
    if (data[0] & 4)
        framer_only(data + 2, size - 2, seed);
    data += 2;
    size -= 2;

    f.now = now;
    if (!fz_start(&sip_ops, &cfg, &io, &f.s, after_login ? login : NULL, sizeof(login) - 1, now))
        goto out;
    while (size) {
        size_t n = fz_chunk(&seed, size);
        now += slow ? (seed & 0xff) : 1000 + (seed & 0x3fff);
        f.now = now;
        if (sip_ops.input(f.s, data, n, FZ_AT(now)))
            goto out;
        if (((seed >> 8) & 15) == 0 && sip_ops.set_watch(f.s, watch[(seed >> 12) & 1], 2, FZ_AT(now)))
            goto out;
        if (sip_ops.tick(f.s, FZ_AT(now)))
            goto out;
        data += n;
        size -= n;
    }
    sip_ops.logout(f.s);
out:
    sip_ops.destroy(f.s);
    return 0;
}
