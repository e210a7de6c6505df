/*
 * test_xmpp.c - the XMPP adapter driven by scripted server byte streams.
 *
 * The SCRAM exchange replays the RFC 5802 example (user "user", password
 * "pencil") with the client nonce injected as the session's io->rng, so every
 * byte the adapter writes is known in advance.
 */
#include <stdarg.h>

#include <mbedtls/base64.h>

#include "t.h"
#define FX_OPS xmpp_ops
#include "fx.h"
#include "im_common.h"
#include "im_proto.h"
#include "xmpp/xmpp_int.h"

#define HDR "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
            "xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='a.test' version='1.0'>"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NONCE "fyko+d2lbbFgONRv9qkxdawL"
#define SFIRST "r=" NONCE "3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
#define CFINAL "c=biws,r=" NONCE "3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
#define SFINAL "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="
#define T0 1700000000000ull

/* ---- fixture ------------------------------------------------------------ */

struct fx {
    struct im_account_cfg cfg;
    struct im_option opts[1];
    struct im_io io;
    struct im_rng rng;
    struct im_sess *s;
    struct im_buf out, ev;
    int starttls;
    uint64_t tokens[64];
    int n_tokens;
    bool commit_in_cb;
    int n_out;                      /* io->out calls */
    /* io->kdf, when the test takes the key derivation (fx_kdf) */
    int kdf_refuse;                 /* what io->kdf returns */
    bool kdf_pending;
    uint64_t kdf_req;
    struct im_kdf_params kdf;       /* copied, pointing into the two below */
    char kdf_pw[64];
    uint8_t kdf_salt[128];
};

/* io->kdf: copy the request (its pointers die with the call) and log it. */
static int
fx_kdf(void *ud, uint64_t req, const struct im_kdf_params *p)
{
    struct fx *f = ud;
    if (f->kdf_pending || p->password_len >= sizeof(f->kdf_pw) || p->salt_len > sizeof(f->kdf_salt))
        abort();
    fx_printf(&f->ev, "KDF %llu %s %u %.*s salt %zu\n", (unsigned long long)req,
              p->hash == IM_KDF_SHA1 ? "sha1" : "sha256", p->iterations, (int)p->password_len,
              p->password, p->salt_len);
    if (f->kdf_refuse)
        return f->kdf_refuse;
    memcpy(f->kdf_pw, p->password, p->password_len);
    memcpy(f->kdf_salt, p->salt, p->salt_len);
    f->kdf = *p;
    f->kdf.password = f->kdf_pw;
    f->kdf.salt = f->kdf_salt;
    f->kdf_req = req;
    f->kdf_pending = true;
    return 0;
}

/* The glue's answer, later and from outside any hook: the real key, or status. */
static int
fx_kdf_answer(struct fx *f, int status, uint64_t now)
{
    uint8_t key[IM_KDF_MAX_KEY];
    if (!f->kdf_pending || im_kdf_pbkdf2(&f->kdf, key, sizeof(key)))
        abort();
    f->kdf_pending = false;
    int rc = xmpp_ops.kdf_done(f->s, f->kdf_req, status, status ? NULL : key,
                               status ? 0 : im_kdf_keylen(f->kdf.hash), AT(now));
    im_wipe(key, sizeof(key));
    return rc;
}

static void
fx_event(void *ud, const struct im_event *e)
{
    struct fx *f = ud;
    switch (e->type) {
    case IM_EV_STATE:
        fx_printf(&f->ev, "STATE %s %.*s\n", im_account_state_name(e->u.state.state),
                  (int)e->u.state.detail.len, e->u.state.detail.p);
        break;
    case IM_EV_STARTTLS:
        f->starttls++;
        fx_printf(&f->ev, "STARTTLS\n");
        break;
    case IM_EV_CONTACTS:
        fx_printf(&f->ev, "CONTACTS %u:", e->u.contacts.n);
        for (uint32_t i = 0; i < e->u.contacts.n; i++) {
            const struct im_contact *c = &e->u.contacts.list[i];
            fx_printf(&f->ev, " %.*s|%.*s|", (int)c->address.len, c->address.p, (int)c->name.len,
                      c->name.p);
            for (uint32_t g = 0; g < c->n_groups; g++)
                fx_printf(&f->ev, "%s%.*s", g ? "," : "", (int)c->groups[g].len, c->groups[g].p);
            fx_printf(&f->ev, "|%s", im_presence_name(c->presence));
        }
        fx_printf(&f->ev, "\n");
        break;
    case IM_EV_PRESENCE:
        fx_printf(&f->ev, "PRESENCE %.*s %s\n", (int)e->u.presence.address.len, e->u.presence.address.p,
                  im_presence_name(e->u.presence.presence));
        break;
    case IM_EV_MESSAGE:
        fx_printf(&f->ev, "MESSAGE %.*s/%.*s ts=%llu tok=%llu [%.*s]\n", (int)e->u.message.from.len,
                  e->u.message.from.p, (int)e->u.message.resource.len,
                  e->u.message.resource.p ? e->u.message.resource.p : "",
                  (unsigned long long)e->u.message.ts, (unsigned long long)e->u.message.token,
                  (int)e->u.message.body.len, e->u.message.body.p);
        if (e->u.message.token && f->n_tokens < 64)
            f->tokens[f->n_tokens++] = e->u.message.token;
        if (e->u.message.token && f->commit_in_cb)
            xmpp_ops.committed(f->s, e->u.message.token);
        break;
    case IM_EV_SENT:
        fx_printf(&f->ev, "SENT %llu\n", (unsigned long long)e->u.sent.msg);
        break;
    case IM_EV_CONTACT_DONE:
        fx_printf(&f->ev, "DONE %llu %d %.*s\n", (unsigned long long)e->u.contact_done.req,
                  e->u.contact_done.status, (int)e->u.contact_done.detail.len, e->u.contact_done.detail.p);
        break;
    case IM_EV_NOTICE:
        fx_printf(&f->ev, "NOTICE %.*s\n", (int)e->u.notice.text.len, e->u.notice.text.p);
        break;
    }
}

static int
fx_out(void *ud, const void *p, size_t n)
{
    struct fx *f = ud;
    fx_put(&f->out, p, n);
    f->n_out++;
    return 0;
}

/* Gives the bytes that base64-encode to the RFC 5802 client nonce. */
static int
rfc_rand(void *ud, void *buf, size_t n)
{
    size_t olen;
    (void)ud;
    if (mbedtls_base64_decode(buf, n, &olen, (const unsigned char *)NONCE, strlen(NONCE)) || olen != n)
        abort();
    return 0;
}

static void
fx_init(struct fx *f, const char *login, const char *password, enum im_tls tls)
{
    fx_setup(f, login, password, tls, 5222, "a.test", rfc_rand);
}

static char *
b64(const char *z)
{
    static char buf[4][512];
    static int k;
    size_t olen;
    char *b = buf[k++ % 4];
    if (mbedtls_base64_encode((unsigned char *)b, 512, &olen, (const unsigned char *)z, strlen(z)))
        abort();
    return b;
}

/* Each needle must appear in hay, in this order. */
static int
in_order(const char *hay, const char *const *needles, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = strstr(hay, needles[i]);
        if (!p) {
            fprintf(stderr, "  missing or out of order: %s\n  in: %s\n", needles[i], hay);
            return 0;
        }
        hay = p + strlen(needles[i]);
    }
    return 1;
}

/* ---- the full login transcript ------------------------------------------- */

static const char seg_plain[] =
    HDR "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "</stream:features><proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

static char seg_tls[4096];

static void
build_seg_tls(void)
{
    snprintf(seg_tls, sizeof(seg_tls),
             HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1-PLUS</mechanism>"
             "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms></stream:features>"
             "<challenge xmlns='" NS_SASL "'>%s</challenge>"
             "<success xmlns='" NS_SASL "'>%s</success>"
             HDR "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
             "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>"
             "<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<jid>user@a.test/imfuse</jid></bind></iq>"
             "\n  <iq type='result' id='sess'/> "
             "<iq type='result' id='roster'><query xmlns='jabber:iq:roster' ver='1'>"
             "<item jid='Bob@B.test' name='Bob &amp; Co' subscription='both'><group>Friends</group>"
             "<group>Work</group></item><item jid='carol@a.test' subscription='none' ask='subscribe'/>"
             "<item jid='bad/jid' subscription='both'/></query></iq>",
             b64(SFIRST), b64(SFINAL));
}

static const char expect_ev[] =
    "STARTTLS\n"
    "CONTACTS 2: bob@b.test|Bob & Co|Friends,Work|unknown carol@a.test|||unknown\n"
    "STATE online \n";

static void
check_login_out(struct fx *f)
{
    char auth[256], resp[256];
    snprintf(auth, sizeof(auth), "<auth xmlns='" NS_SASL "' mechanism='SCRAM-SHA-1'>%s</auth>",
             b64("n,,n=user,r=" NONCE));
    snprintf(resp, sizeof(resp), "<response xmlns='" NS_SASL "'>%s</response>", b64(CFINAL));
    const char *const want[] = {
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='a.test' "
        "version='1.0'",
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
        "<stream:stream ", auth, resp, "<stream:stream ",
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>imfuse</resource>"
        "</bind></iq>",
        "<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
        "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>",
        "<presence/>",
    };
    T_ASSERT(in_order(outs(f), want, IM_ARRAY_SIZE(want)));
    T_ASSERT(!strstr(outs(f), "PLUS"));
    T_ASSERT(!strstr(outs(f), "<enable"));
}

/* Feed seg in pieces cut at the given positions (sorted, may be empty). */
static int
feed_cuts(struct fx *f, const char *seg, const size_t *cuts, size_t ncuts, uint64_t now)
{
    size_t len = strlen(seg), prev = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : len;
        int rc = xmpp_ops.input(f->s, (const uint8_t *)seg + prev, end - prev, AT(now));
        if (rc)
            return rc;
        prev = end;
    }
    return 0;
}

static void
login_with_cuts(const size_t *c1, size_t n1, const size_t *c2, size_t n2)
{
    struct fx f;
    fx_init(&f, "User@A.test", "pencil", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed_cuts(&f, seg_plain, c1, n1, T0), 0);
    T_EQ_INT(f.starttls, 1);
    T_EQ_INT(xmpp_ops.tls_ready(f.s, 0, AT(T0)), 0);
    int rc = feed_cuts(&f, seg_tls, c2, n2, T0);
    if (rc) {
        for (size_t i = 0; i < n2; i++)
            fprintf(stderr, "%zu ", c2[i]);
        fprintf(stderr, "\n%s\n", evs(&f));
    }
    T_EQ_INT(rc, 0);
    T_EQ_STR(evs(&f), expect_ev);
    check_login_out(&f);
    fx_free(&f);
}

T_TEST(login_starttls_scram_sha1)
{
    build_seg_tls();
    login_with_cuts(NULL, 0, NULL, 0);
}

T_TEST(login_split_at_every_position)
{
    build_seg_tls();
    for (size_t i = 1; i < strlen(seg_plain); i++)
        login_with_cuts(&i, 1, NULL, 0);
    for (size_t i = 1; i < strlen(seg_tls); i++)
        login_with_cuts(NULL, 0, &i, 1);
}

T_TEST(login_split_at_random)
{
    size_t c1[64], c2[256];
    unsigned seed = 12345;
    build_seg_tls();
    for (int round = 0; round < 40; round++) {
        size_t l1 = strlen(seg_plain), l2 = strlen(seg_tls), n1 = 0, n2 = 0;
        for (size_t i = 1; i < l1 && n1 < 64; i++)
            if ((seed = seed * 1103515245 + 12345) >> 16 & 1)
                c1[n1++] = i;
        unsigned every = 1 + round % 9;
        for (size_t i = 1; i < l2 && n2 < 256; i++)
            if (((seed = seed * 1103515245 + 12345) >> 16) % (every * 4) == 0)
                c2[n2++] = i;
        login_with_cuts(c1, n1, c2, n2);
    }
    /* and byte by byte */
    size_t *all = malloc(strlen(seg_tls) * sizeof(size_t));
    for (size_t i = 1; i < strlen(seg_tls); i++)
        all[i - 1] = i;
    login_with_cuts(NULL, 0, all, strlen(seg_tls) - 1);
    free(all);
}

/* ---- quick logins over direct TLS with PLAIN --------------------------- */

static void
online(struct fx *f, bool sm, const char *roster_items)
{
    char buf[4096];
    fx_init(f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f->s, AT(T0)), 0);
    snprintf(buf, sizeof(buf),
             HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism></mechanisms>"
             "</stream:features><success xmlns='" NS_SASL "'/>"
             HDR "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>%s"
             "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>"
             "<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
             "<jid>user@a.test/imfuse</jid></bind></iq>%s"
             "<iq type='result' id='roster'><query xmlns='jabber:iq:roster'>%s</query></iq>",
             sm ? "<sm xmlns='urn:xmpp:sm:3'/>" : "", sm ? "<enabled xmlns='urn:xmpp:sm:3'/>" : "",
             roster_items);
    T_EQ_INT(feed(f, buf, T0), 0);
    T_ASSERT(strstr(evs(f), "STATE online \n"));
    /* PLAIN: base64("\0user\0pencil") */
    T_ASSERT(strstr(outs(f), "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>AHVzZXIAcGVuY2ls</auth>"));
    T_ASSERT(!strstr(outs(f), "xmpp-session'/>"));         /* optional session skipped */
    T_ASSERT(!sm == !strstr(outs(f), "<enable xmlns='urn:xmpp:sm:3'/>"));
    clear(f);
}

#define BOB "<item jid='bob@b.test' name='Bob' subscription='both'/>"

T_TEST(auth_failure)
{
    struct fx f;
    build_seg_tls();
    fx_init(&f, "user@a.test", "wrong", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, seg_plain, T0), 0);
    T_EQ_INT(xmpp_ops.tls_ready(f.s, 0, AT(T0)), 0);
    int rc = feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1</mechanism>"
                  "</mechanisms></stream:features><failure xmlns='" NS_SASL "'><not-authorized/>"
                  "<text xml:lang='en'>Invalid username or password</text></failure>", T0);
    T_ASSERT(rc < 0);
    T_EQ_STR(evs(&f), "STARTTLS\nSTATE auth_failed not-authorized: Invalid username or password\n");
    /* dead: further input keeps failing, no more events */
    T_ASSERT(feed(&f, "<a/>", T0) < 0);
    T_ASSERT(xmpp_ops.tick(f.s, AT(T0 + 100000)) < 0);
    fx_free(&f);

    /* a temporary failure is an ERROR (retried), not AUTH_FAILED */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"
                  "</mechanisms></stream:features><failure xmlns='" NS_SASL "'><temporary-auth-failure/>"
                  "</failure>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error temporary-auth-failure\n");
    fx_free(&f);
}

T_TEST(scram_server_signature_mismatch)
{
    struct fx f;
    char buf[2048];
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    snprintf(buf, sizeof(buf), HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1"
             "</mechanism></mechanisms></stream:features><challenge xmlns='" NS_SASL "'>%s</challenge>"
             "<success xmlns='" NS_SASL "'>%s</success>", b64(SFIRST), b64("v=rmF9pqV8S7suAoZWja4dJRkFsKU="));
    T_ASSERT(feed(&f, buf, T0) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SCRAM: server signature mismatch"));
    fx_free(&f);

    /* success without any server signature is refused too */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    snprintf(buf, sizeof(buf), HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1"
             "</mechanism></mechanisms></stream:features><challenge xmlns='" NS_SASL "'>%s</challenge>"
             "<success xmlns='" NS_SASL "'/>", b64(SFIRST));
    T_ASSERT(feed(&f, buf, T0) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SCRAM: success without a server signature"));
    fx_free(&f);

    /* a server asking for more than SCRAM_MAX_ITER iterations: error, not
     * auth_failed, naming the count; nothing derived, nothing answered */
    const char *counts[] = { "1000000", "100001", "99999999999999999999" };
    for (size_t i = 0; i < 3; i++) {
        fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
        f.io.kdf = fx_kdf;
        T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
        char sf[256];
        snprintf(sf, sizeof(sf), "r=" NONCE "3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=%s", counts[i]);
        snprintf(buf, sizeof(buf), HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1"
                 "</mechanism></mechanisms></stream:features><challenge xmlns='" NS_SASL "'>%s</challenge>",
                 b64(sf));
        T_EQ_INT(feed(&f, buf, T0), -IM_ELIMIT);
        T_ASSERT(strstr(evs(&f), "STATE error SCRAM: the server asks for "));
        T_ASSERT(strstr(evs(&f), "iterations of PBKDF2, more than the 100000 imfuse allows: refused\n"));
        T_ASSERT(i != 0 || strstr(evs(&f), "asks for 1000000 iterations"));
        T_ASSERT(!f.kdf_pending && !strstr(outs(&f), "<response"));
        fx_free(&f);
    }

    /* SCRAM-SHA-256 is preferred over SCRAM-SHA-1 */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1</mechanism>"
                  "<mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-256</mechanism></mechanisms>"
                  "</stream:features>", T0), 0);
    T_ASSERT(strstr(outs(&f), "mechanism='SCRAM-SHA-256'>"));
    fx_free(&f);
}

T_TEST(stream_errors)
{
    struct fx f;
    online(&f, false, BOB);
    T_ASSERT(feed(&f, "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                  "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text>"
                  "</stream:error></stream:stream>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error stream error: conflict: Replaced by new connection\n");
    fx_free(&f);

    online(&f, false, BOB);
    T_ASSERT(feed(&f, "</stream:stream>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error server closed the stream\n");
    fx_free(&f);

    online(&f, false, BOB);
    T_ASSERT(feed(&f, "<message><body>x</bo", T0) == 0);
    T_ASSERT(feed(&f, "dx></message>", T0) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error XML error: "));
    fx_free(&f);

    /* no DOCTYPE, no entity declarations */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_NONE);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(feed(&f, "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]>"
                  "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error server sent a DOCTYPE (not allowed in XMPP)\n");
    fx_free(&f);
}

T_TEST(plain_refused_without_tls)
{
    struct fx f;
    fx_init(&f, "user@a.test", "pencil", IM_TLS_NONE);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"
                  "<mechanism>X-OAUTH2</mechanism></mechanisms></stream:features>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error no usable SASL mechanism: PLAIN refused without TLS "
             "(server offers: PLAIN X-OAUTH2)\n");
    T_ASSERT(!strstr(outs(&f), "<auth"));
    T_ASSERT(!strstr(outs(&f), "cGVuY2ls"));            /* "pencil" never leaves */
    fx_free(&f);

    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>DIGEST-MD5</mechanism>"
                  "</mechanisms></stream:features>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error no usable SASL mechanism (server offers: DIGEST-MD5)\n");
    fx_free(&f);

    /* STARTTLS demanded but not offered */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"
                  "</mechanisms></stream:features>", T0) < 0);
    T_EQ_STR(evs(&f), "STATE error server does not offer STARTTLS\n");
    fx_free(&f);

    /* bytes after <proceed/> (before the handshake) are an injection attempt */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    char buf[1024];
    snprintf(buf, sizeof(buf), "%s<success xmlns='" NS_SASL "'/>", seg_plain);
    T_ASSERT(feed(&f, buf, T0) < 0);
    T_EQ_STR(evs(&f), "STARTTLS\nSTATE error server sent data before the TLS handshake\n");
    fx_free(&f);

    /* a failed handshake */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, seg_plain, T0), 0);
    T_ASSERT(xmpp_ops.tls_ready(f.s, -IM_ETLS, AT(T0)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error TLS handshake failed"));
    fx_free(&f);
}

T_TEST(roster_push_and_presence)
{
    struct fx f;
    online(&f, false, BOB);
    /* a push from a stranger is refused and changes nothing */
    T_EQ_INT(feed(&f, "<iq type='set' id='p0' from='eve@evil.test'><query xmlns='jabber:iq:roster'>"
                  "<item jid='eve@evil.test' subscription='both'/></query></iq>", T0), 0);
    T_EQ_STR(evs(&f), "");
    T_ASSERT(strstr(outs(&f), "<iq type='error' id='p0' to='eve@evil.test'>"));
    clear(&f);
    /* from our bare JID: applied, answered, full list reported */
    T_EQ_INT(feed(&f, "<iq type='set' id='p1' from='User@A.test'><query xmlns='jabber:iq:roster'>"
                  "<item jid='dave@a.test' name='Dave' subscription='none' ask='subscribe'><group>G</group>"
                  "</item></query></iq>", T0), 0);
    T_EQ_STR(evs(&f), "CONTACTS 2: bob@b.test|Bob||unknown dave@a.test|Dave|G|unknown\n");
    T_EQ_STR(outs(&f), "<iq type='result' id='p1' to='User@A.test'/>");
    clear(&f);
    /* without from; removal */
    T_EQ_INT(feed(&f, "<iq type='set' id='p2'><query xmlns='jabber:iq:roster'>"
                  "<item jid='bob@b.test' subscription='remove'/></query></iq>", T0), 0);
    T_EQ_STR(evs(&f), "CONTACTS 1: dave@a.test|Dave|G|unknown\n");
    T_EQ_STR(outs(&f), "<iq type='result' id='p2'/>");
    clear(&f);
    /* presence: two resources, aggregate */
    T_EQ_INT(feed(&f, "<presence from='Dave@a.test/phone'><show>away</show></presence>"
                  "<presence from='dave@a.test/pc'/>"
                  "<presence from='dave@a.test/pc' type='unavailable'/>"
                  "<presence from='dave@a.test/phone'><show>dnd</show></presence>"
                  "<presence from='dave@a.test/phone' type='unavailable'/>"
                  "<presence from='stranger@a.test/x'/>"
                  "<presence from='user@a.test/other'/>", T0), 0);
    T_EQ_STR(evs(&f), "PRESENCE dave@a.test away\nPRESENCE dave@a.test available\n"
             "PRESENCE dave@a.test away\nPRESENCE dave@a.test offline\n");
    clear(&f);
    /* subscription requests: approved for roster contacts only */
    T_EQ_INT(feed(&f, "<presence from='dave@a.test' type='subscribe'/>"
                  "<presence from='eve@evil.test' type='subscribe'/>", T0), 0);
    T_EQ_STR(outs(&f), "<presence type='subscribed' to='dave@a.test'/>");
    clear(&f);
    /* presence is reflected in the next contacts list */
    T_EQ_INT(feed(&f, "<presence from='dave@a.test/pc'/><iq type='set' id='p3'><query xmlns='jabber:iq:roster'>"
                  "<item jid='dave@a.test' name='D2'/></query></iq>", T0), 0);
    T_EQ_STR(evs(&f), "PRESENCE dave@a.test available\nCONTACTS 1: dave@a.test|D2||available\n");
    /* unknown iq get: service-unavailable; server ping: result */
    clear(&f);
    T_EQ_INT(feed(&f, "<iq type='get' id='v1' from='a.test'><query xmlns='jabber:iq:version'/></iq>"
                  "<iq type='get' id='pg' from='a.test'><ping xmlns='urn:xmpp:ping'/></iq>", T0), 0);
    T_ASSERT(strstr(outs(&f), "<iq type='error' id='v1' to='a.test'><error type='cancel'><service-unavailable"));
    T_ASSERT(strstr(outs(&f), "<iq type='result' id='pg' to='a.test'/>"));
    fx_free(&f);
}

T_TEST(incoming_messages)
{
    struct fx f;
    online(&f, false, BOB);
    T_EQ_INT(feed(&f, "<message from='Bob@B.test/Phone' type='chat' id='x1'>"
                  "<body>a &lt;b&gt; &amp; &quot;c&quot; &#x263A; &apos;</body>"
                  "<delay xmlns='urn:xmpp:delay' from='b.test' stamp='2002-09-10T23:08:25Z'/></message>", T0 + 5),
             0);
    T_EQ_STR(evs(&f), "MESSAGE bob@b.test/Phone ts=1031699305000 tok=0 [a <b> & \"c\" \xe2\x98\xba ']\n");
    clear(&f);
    T_EQ_INT(feed(&f, "<message from='bob@b.test/Phone' type='chat'><active xmlns="
                  "'http://jabber.org/protocol/chatstates'/></message>"
                  "<message from='bob@b.test' type='error'><body>bounced</body></message>"
                  "<message from='room@conf.test/nick' type='groupchat'><body>muc</body></message>"
                  "<message from='bob@b.test'><body>no type</body>"
                  "<delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:08:25.123-01:30'/></message>"
                  "<message from='bob@b.test/r' type='normal'><body>line1\nline2</body>"
                  "<delay xmlns='urn:xmpp:delay' stamp='garbage'/></message>", T0 + 7), 0);
    T_EQ_STR(evs(&f), "MESSAGE bob@b.test/ ts=1031704705123 tok=0 [no type]\n"
             "MESSAGE bob@b.test/r ts=1700000000007 tok=0 [line1\nline2]\n");
    fx_free(&f);
}

T_TEST(outgoing_escaping)
{
    struct fx f;
    online(&f, false, BOB);
    const char body[] = "x < y & z > 'q' \"r\"\x01\x1f\r\n\tok \xef\xbf\xbe\xe2\x98\xba";
    struct im_msg m = { .msg = 42, .to = IM_STR("Bob@B.test"), .body = { body, sizeof(body) - 1 } };
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), 0);
    T_EQ_STR(outs(&f), "<message type='chat' to='bob@b.test' id='m2a'><body>x &lt; y &amp; z &gt; 'q' \"r\""
             "&#13;\n\tok \xe2\x98\xba</body></message>");
    T_EQ_STR(evs(&f), "SENT 42\n");
    /* bad addresses and bodies are refused */
    m.to = IM_STR("bob@b.test/res");
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), -IM_EINVAL);
    m.to = IM_STR("bo'b@b.test");
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), -IM_EINVAL);
    m.to = IM_STR("bob@b.test");
    m.body = IM_STR("\xc3\x28");
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), -IM_EUTF8);
    /* attribute escaping of a contact name */
    clear(&f);
    T_EQ_INT(xmpp_ops.add_contact(f.s, 7, IM_STR("Carol@A.test"), IM_STR("C'a\"r<o>l&")), 0);
    T_EQ_STR(outs(&f), "<iq type='set' id='ca7'><query xmlns='jabber:iq:roster'><item jid='carol@a.test' "
             "name='C&apos;a&quot;r&lt;o&gt;l&amp;'/></query></iq><presence type='subscribe' to='carol@a.test'/>");
    T_EQ_INT(xmpp_ops.remove_contact(f.s, 8, IM_STR("bob@b.test")), 0);
    T_ASSERT(strstr(outs(&f), "<iq type='set' id='cr8'><query xmlns='jabber:iq:roster'><item jid='bob@b.test' "
                    "subscription='remove'/></query></iq>"));
    clear(&f);
    T_EQ_INT(feed(&f, "<iq type='error' id='cr8'><error type='cancel'><item-not-found "
                  "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq><iq type='result' id='ca7'/>"
                  "<iq type='result' id='ca7'/>", T0), 0);
    char want[128];
    snprintf(want, sizeof(want), "DONE 8 %d item-not-found\nDONE 7 0 \n", -IM_EPROTO);
    T_EQ_STR(evs(&f), want);
    /* logout */
    clear(&f);
    xmpp_ops.logout(f.s);
    T_EQ_STR(outs(&f), "<presence type='unavailable'/></stream:stream>");
    T_EQ_INT(feed(&f, "</stream:stream>", T0), 0);
    T_EQ_STR(evs(&f), "");
    fx_free(&f);
}

T_TEST(stream_management)
{
    struct fx f;
    char buf[64];
    online(&f, true, BOB);
    /* inbound, counted from <enabled/>: roster result (1), message (2), presence (3), message (4) */
    T_EQ_INT(feed(&f, "<message from='bob@b.test/x' type='chat'><body>one</body></message>"
                  "<presence from='bob@b.test/x'/>"
                  "<message from='bob@b.test/x' type='chat'><body>three</body></message>"
                  "<r xmlns='urn:xmpp:sm:3'/>", T0), 0);
    T_EQ_INT(f.n_tokens, 2);
    T_EQ_UINT(f.tokens[0], 2);
    T_EQ_UINT(f.tokens[1], 4);
    /* nothing committed: h stays before message 2 */
    T_EQ_STR(outs(&f), "<a xmlns='urn:xmpp:sm:3' h='1'/>");
    clear(&f);
    xmpp_ops.committed(f.s, 4);              /* out of order: h cannot pass message 2 */
    T_EQ_STR(outs(&f), "");
    xmpp_ops.committed(f.s, 2);              /* now 1..4 are handled: the owed ack follows */
    T_EQ_STR(outs(&f), "<a xmlns='urn:xmpp:sm:3' h='4'/>");
    clear(&f);
    xmpp_ops.committed(f.s, 2);              /* repeated and unknown tokens are harmless */
    xmpp_ops.committed(f.s, 99);
    T_EQ_INT(feed(&f, "<iq type='get' id='pg'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>", T0),
             0);
    T_EQ_STR(outs(&f), "<iq type='result' id='pg'/><a xmlns='urn:xmpp:sm:3' h='5'/>");
    clear(&f);
    /* committing from inside the event callback works too */
    f.commit_in_cb = true;
    T_EQ_INT(feed(&f, "<message from='bob@b.test/x'><body>five</body></message><r xmlns='urn:xmpp:sm:3'/>", T0),
             0);
    T_EQ_STR(outs(&f), "<a xmlns='urn:xmpp:sm:3' h='6'/>");
    clear(&f);

    /* outbound, counted from <enable/>: roster get (1), presence (2), the ping result (3) */
    struct im_msg m = { .msg = 7, .to = IM_STR("bob@b.test"), .body = IM_STR("hi") };
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), 0);
    m.msg = 8;
    T_EQ_INT(xmpp_ops.send_msg(f.s, &m), 0);
    /* one request for both: the second message rides on the first's <r/> */
    const char *o = outs(&f), *r1 = strstr(o, "</message><r xmlns='urn:xmpp:sm:3'/>");
    T_ASSERT(r1 && !strstr(r1 + strlen("</message><r"), "<r xmlns"));
    clear(&f);
    T_EQ_STR(evs(&f), "");                  /* not yet acknowledged */
    T_EQ_INT(feed(&f, "<a xmlns='urn:xmpp:sm:3' h='3'/>", T0), 0);
    T_EQ_STR(evs(&f), "");
    T_EQ_STR(outs(&f), "<r xmlns='urn:xmpp:sm:3'/>");      /* 7 and 8 still out: ask again */
    clear(&f);
    T_EQ_INT(feed(&f, "<a xmlns='urn:xmpp:sm:3' h='4'/>", T0), 0);
    T_EQ_STR(evs(&f), "SENT 7\n");
    T_EQ_STR(outs(&f), "<r xmlns='urn:xmpp:sm:3'/>");
    clear(&f);
    T_EQ_INT(feed(&f, "<a xmlns='urn:xmpp:sm:3' h='5'/>", T0), 0);
    T_EQ_STR(evs(&f), "SENT 8\n");
    T_EQ_STR(outs(&f), "");                                 /* nothing left to ask for */
    /* acknowledging more than was sent is a protocol violation */
    snprintf(buf, sizeof(buf), "<a xmlns='urn:xmpp:sm:3' h='%d'/>", 6);
    T_ASSERT(feed(&f, buf, T0) < 0);
    fx_free(&f);

    /* <failed/> to <enable/>: plain mode, tokens 0 */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>PLAIN</mechanism>"
                  "</mechanisms></stream:features><success xmlns='" NS_SASL "'/>"
                  HDR "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><sm xmlns='urn:xmpp:sm:3'/>"
                  "</stream:features><iq type='result' id='bind'/><failed xmlns='urn:xmpp:sm:3'/>"
                  "<iq type='result' id='roster'/><message from='bob@b.test'><body>x</body></message>", T0), 0);
    T_ASSERT(strstr(evs(&f), "STATE online \nMESSAGE bob@b.test/ ts=1700000000000 tok=0 [x]\n"));
    fx_free(&f);
}

/*
 * Found against ejabberd 23.01: it sends <r/> after each stanza; a client that
 * committed a message but closed the stream before the next <r/> left it
 * unacknowledged, and ejabberd re-routed it to offline storage, so the same
 * message came again at the next login.  logout() must send a final <a/>
 * covering every committed stanza (and no uncommitted one).
 */
T_TEST(logout_acks_committed_stanzas)
{
    struct fx f;
    online(&f, true, BOB);
    /* roster result (1), message (2) committed at once; the server's <r/> has not come yet */
    f.commit_in_cb = true;
    T_EQ_INT(feed(&f, "<message from='bob@b.test/py' type='chat'><body>hello</body></message>", T0), 0);
    T_EQ_STR(outs(&f), "");
    f.n_out = 0;
    xmpp_ops.logout(f.s);
    T_EQ_STR(outs(&f), "<presence type='unavailable'/><a xmlns='urn:xmpp:sm:3' h='2'/></stream:stream>");
    T_EQ_INT(f.n_out, 1);                   /* one write: the close cannot overtake the <a/> */
    fx_free(&f);

    /* an uncommitted message is not acknowledged: the server keeps it and re-sends it */
    online(&f, true, BOB);
    T_EQ_INT(feed(&f, "<message from='bob@b.test/py' type='chat'><body>one</body></message>"
                  "<message from='bob@b.test/py' type='chat'><body>two</body></message>", T0), 0);
    T_EQ_INT(f.n_tokens, 2);
    xmpp_ops.committed(f.s, f.tokens[1]);   /* h cannot pass the first, uncommitted one */
    xmpp_ops.logout(f.s);
    T_EQ_STR(outs(&f), "<presence type='unavailable'/><a xmlns='urn:xmpp:sm:3' h='1'/></stream:stream>");
    xmpp_ops.logout(f.s);                   /* once only */
    T_EQ_STR(outs(&f), "<presence type='unavailable'/><a xmlns='urn:xmpp:sm:3' h='1'/></stream:stream>");
    fx_free(&f);
}

T_TEST(ping_and_login_timeouts)
{
    struct fx f;
    online(&f, false, BOB);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 59999)), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 60000)), 0);
    T_EQ_STR(outs(&f), "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    clear(&f);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 61000)), 0);       /* one ping at a time */
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(feed(&f, "<iq type='result' id='ping1' from='a.test'/>", T0 + 62000), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 62000 + 59000)), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 62000 + 60000)), 0);
    T_EQ_STR(outs(&f), "<iq type='get' id='ping2'><ping xmlns='urn:xmpp:ping'/></iq>");
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 62000 + 60000 + 29999)), 0);
    T_EQ_STR(evs(&f), "");
    T_ASSERT(xmpp_ops.tick(f.s, AT(T0 + 62000 + 60000 + 30000)) < 0);
    T_EQ_STR(evs(&f), "STATE error ping timeout\n");
    fx_free(&f);

    fx_init(&f, "user@a.test", "pencil", IM_TLS_STARTTLS);
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, HDR, T0 + 1000), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 29999)), 0);
    T_ASSERT(xmpp_ops.tick(f.s, AT(T0 + 30000)) < 0);
    T_EQ_STR(evs(&f), "STATE error login timed out after 30 s\n");
    fx_free(&f);
}

T_TEST(oversize_and_deep)
{
    struct fx f;
    size_t big = XMPP_MAX_STANZA + 10;
    char *buf = malloc(big + 64);
    int rc = 0;

    online(&f, false, BOB);
    memset(buf, 'a', big);
    buf[big] = 0;
    T_EQ_INT(feed(&f, "<message from='bob@b.test'><body>", T0), 0);
    for (size_t off = 0; off < big && rc == 0; off += 1000)
        rc = xmpp_ops.input(f.s, (const uint8_t *)buf + off, big - off < 1000 ? big - off : 1000, AT(T0));
    T_ASSERT(rc < 0);
    T_EQ_STR(evs(&f), "STATE error stanza over 256 KiB\n");
    fx_free(&f);

    /* an endless start tag is caught as well (expat would buffer it) */
    online(&f, false, BOB);
    memcpy(buf, "<message a='", 12);
    T_ASSERT(xmpp_ops.input(f.s, (const uint8_t *)buf, big, AT(T0)) < 0);
    T_EQ_STR(evs(&f), "STATE error stanza over 256 KiB\n");
    fx_free(&f);

    /* a stanza just under the limit passes */
    online(&f, false, BOB);
    size_t ok = XMPP_MAX_STANZA - 200;
    char *msg = malloc(ok + 200);
    int n = snprintf(msg, 200, "<message from='bob@b.test'><body>");
    memset(msg + n, 'b', ok);
    strcpy(msg + n + ok, "</body></message>");
    T_EQ_INT(feed(&f, msg, T0), 0);
    T_ASSERT(!strncmp(evs(&f), "MESSAGE bob@b.test/ ts=", 23));
    T_EQ_UINT(f.ev.len, strlen("MESSAGE bob@b.test/ ts=1700000000000 tok=0 []\n") + ok);
    free(msg);
    fx_free(&f);

    online(&f, false, BOB);
    char *deep = malloc(40 * 3 + 1);
    for (int i = 0; i < 40; i++)
        memcpy(deep + 3 * i, "<a>", 3);
    deep[120] = 0;
    T_ASSERT(feed(&f, deep, T0) < 0);
    T_EQ_STR(evs(&f), "STATE error XML nested deeper than 32 levels\n");
    free(deep);
    fx_free(&f);
    free(buf);
}

T_TEST(normalize)
{
    char out[300];
    const char *why;
    static const char *const good[][2] = {
        { "Alice@A.Test", "alice@a.test" }, { "alice@a.test.", "alice@a.test" },
        { "j\xc3\xbcrgen@b.test", "j\xc3\xbcrgen@b.test" }, { "a.b-c_d@x.y.z", "a.b-c_d@x.y.z" },
    };
    static const char *const bad[] = {
        "", "alice", "@a.test", "alice@", "alice@a.test/res", "a@b@c", "al ice@a.test", "al<ice@a.test",
        "alice@a..test", "alice@.a.test", "\xc3\x28@a.test", "alice@a test", "a:b@c.test",
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(good); i++) {
        why = NULL;
        T_EQ_INT(xmpp_ops.normalize_login(good[i][0], out, sizeof(out), &why), 0);
        T_EQ_STR(out, good[i][1]);
        T_EQ_INT(xmpp_ops.normalize_address(good[i][0], out, sizeof(out), &why), 0);
        T_EQ_STR(out, good[i][1]);
    }
    for (size_t i = 0; i < IM_ARRAY_SIZE(bad); i++) {
        why = NULL;
        T_EQ_INT(xmpp_ops.normalize_login(bad[i], out, sizeof(out), &why), -IM_EINVAL);
        T_ASSERT(why && *why);
        T_EQ_INT(xmpp_ops.normalize_address(bad[i], out, sizeof(out), &why), -IM_EINVAL);
    }
    T_EQ_INT(xmpp_ops.normalize_login("alice@a.test/x", out, sizeof(out), &why), -IM_EINVAL);
    T_ASSERT(strstr(why, "resource"));
    char longjid[400];
    memset(longjid, 'a', sizeof(longjid));
    longjid[200] = '@';
    longjid[399] = 0;
    T_EQ_INT(xmpp_ops.normalize_login(longjid, out, sizeof(out), &why), -IM_EINVAL);
    T_EQ_INT(xmpp_ops.normalize_login("alice@a.test", out, 5, &why), -IM_EINVAL);
    xmpp_ops.default_tls_name("alice@a.test", out, sizeof(out));
    T_EQ_STR(out, "a.test");
    T_EQ_STR(xmpp_ops.name, "xmpp");
    T_EQ_INT(xmpp_ops.default_port, 5222);
}

T_TEST(stamps)
{
    uint64_t ms;
    T_EQ_INT(xmpp_parse_stamp("1970-01-01T00:00:00Z", &ms), 0);
    T_EQ_UINT(ms, 0);
    T_EQ_INT(xmpp_parse_stamp("2000-02-29T12:00:00.5+02:00", &ms), 0);
    T_EQ_UINT(ms, 951818400500ull);
    T_EQ_INT(xmpp_parse_stamp("2024-12-31T23:59:59.999999Z", &ms), 0);
    T_EQ_UINT(ms, 1735689599999ull);
    T_ASSERT(xmpp_parse_stamp("2024-12-31 23:59:59Z", &ms) < 0);
    T_ASSERT(xmpp_parse_stamp("2024-13-31T23:59:59Z", &ms) < 0);
    T_ASSERT(xmpp_parse_stamp("2024-12-31T23:59:59", &ms) < 0);
    T_ASSERT(xmpp_parse_stamp("2024-12-31T23:59:59Zx", &ms) < 0);
}

/* ---- SCRAM's key derivation handed to the glue (io->kdf) ---------------- */

/* The full STARTTLS login with the derivation taken by the glue: the login
 * pauses after the server-first-message and writes exactly what the inline
 * derivation writes once kdf_done brings the key. */
T_TEST(scram_kdf_handed_off)
{
    struct fx f;
    build_seg_tls();
    fx_init(&f, "User@A.test", "pencil", IM_TLS_STARTTLS);
    f.io.kdf = fx_kdf;
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, seg_plain, T0), 0);
    T_EQ_INT(xmpp_ops.tls_ready(f.s, 0, AT(T0)), 0);
    const char *rest = strstr(seg_tls, "</challenge>") + strlen("</challenge>");
    T_EQ_INT(xmpp_ops.input(f.s, (const uint8_t *)seg_tls, (size_t)(rest - seg_tls), AT(T0)), 0);
    T_EQ_STR(evs(&f), "STARTTLS\nKDF 1 sha1 4096 pencil salt 12\n");
    T_ASSERT(f.kdf_pending);
    T_ASSERT(!strstr(outs(&f), "<response"));              /* paused */
    /* meanwhile: whitespace and ticks are fine, a late answer is ignored */
    T_EQ_INT(feed(&f, "\n  \n", T0 + 10), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + 100)), 0);
    uint8_t junk[20] = { 0 };
    T_EQ_INT(xmpp_ops.kdf_done(f.s, f.kdf_req + 1, 0, junk, sizeof(junk), AT(T0 + 150)), 0);
    T_ASSERT(!strstr(outs(&f), "<response"));
    T_EQ_INT(fx_kdf_answer(&f, 0, T0 + 200), 0);
    char resp[256];
    snprintf(resp, sizeof(resp), "<response xmlns='" NS_SASL "'>%s</response>", b64(CFINAL));
    T_ASSERT(strstr(outs(&f), resp));
    /* the same key again (a duplicate answer) changes nothing */
    size_t before = f.out.len;
    T_EQ_INT(xmpp_ops.kdf_done(f.s, f.kdf_req, 0, junk, sizeof(junk), AT(T0 + 250)), 0);
    T_EQ_UINT(f.out.len, before);
    T_EQ_INT(feed(&f, rest, T0 + 300), 0);
    T_EQ_STR(evs(&f), "STARTTLS\nKDF 1 sha1 4096 pencil salt 12\n"
             "CONTACTS 2: bob@b.test|Bob & Co|Friends,Work|unknown carol@a.test|||unknown\n"
             "STATE online \n");
    check_login_out(&f);                                    /* byte for byte the inline transcript */
    fx_free(&f);
}

/* Up to the server-first-message over direct TLS, the derivation handed off. */
static void
to_challenge(struct fx *f, const char *password)
{
    char buf[2048];
    fx_init(f, "user@a.test", password, IM_TLS_DIRECT);
    f->io.kdf = fx_kdf;
    T_EQ_INT(xmpp_ops.start(f->s, AT(T0)), 0);
    snprintf(buf, sizeof(buf), HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1"
             "</mechanism></mechanisms></stream:features><challenge xmlns='" NS_SASL "'>%s</challenge>",
             b64(SFIRST));
    clear(f);
    T_EQ_INT(feed(f, buf, T0), 0);
}

T_TEST(scram_kdf_failures)
{
    struct fx f;

    /* the glue refuses the work: the login ends (ERROR, retried) */
    char buf[2048];
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    f.io.kdf = fx_kdf;
    f.kdf_refuse = -IM_ELIMIT;
    snprintf(buf, sizeof(buf), HDR "<stream:features><mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-1"
             "</mechanism></mechanisms></stream:features><challenge xmlns='" NS_SASL "'>%s</challenge>",
             b64(SFIRST));
    T_EQ_INT(xmpp_ops.start(f.s, AT(T0)), 0);
    T_EQ_INT(feed(&f, buf, T0), -IM_ELIMIT);
    T_ASSERT(strstr(evs(&f), "STATE error SCRAM: key derivation refused (rate limited)\n"));
    T_ASSERT(!strstr(outs(&f), "<response"));
    fx_free(&f);

    /* the derivation fails */
    to_challenge(&f, "pencil");
    T_EQ_INT(fx_kdf_answer(&f, -ENOMEM, T0 + 5), -ENOMEM);
    T_EQ_STR(evs(&f), "KDF 1 sha1 4096 pencil salt 12\nSTATE error SCRAM: key derivation failed "
             "(Cannot allocate memory)\n");
    T_ASSERT(!strstr(outs(&f), "<response"));
    fx_free(&f);

    /* a key of the wrong length */
    to_challenge(&f, "pencil");
    uint8_t key[IM_KDF_MAX_KEY] = { 0 };
    T_ASSERT(xmpp_ops.kdf_done(f.s, f.kdf_req, 0, key, 32, AT(T0 + 5)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SCRAM: the derived key has the wrong length\n"));
    fx_free(&f);

    /* the server speaks before our response: another challenge is an error,
     * a failure ends the login; a late key then changes nothing */
    to_challenge(&f, "pencil");
    T_ASSERT(feed(&f, "<challenge xmlns='" NS_SASL "'>AAAA</challenge>", T0 + 5) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SASL challenge before our SCRAM response\n"));
    fx_free(&f);
    to_challenge(&f, "pencil");
    T_ASSERT(feed(&f, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>", T0 + 5) < 0);
    T_ASSERT(strstr(evs(&f), "STATE auth_failed not-authorized\n"));
    size_t before = f.out.len;
    T_ASSERT(fx_kdf_answer(&f, 0, T0 + 10) < 0);            /* dead: returns its code, writes nothing */
    T_EQ_UINT(f.out.len, before);
    fx_free(&f);

    /* the login timeout still runs while the key is awaited */
    to_challenge(&f, "pencil");
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + XMPP_LOGIN_TIMEOUT_MS - 1)), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, AT(T0 + XMPP_LOGIN_TIMEOUT_MS)), -ETIMEDOUT);
    T_ASSERT(strstr(evs(&f), "STATE error login timed out after 30 s\n"));
    fx_free(&f);

    /* destroyed while the request is pending: nothing to do for the adapter
     * (the glue drops the late result); ASan checks nothing leaks */
    to_challenge(&f, "pencil");
    T_ASSERT(f.kdf_pending);
    fx_free(&f);
}

/* The monotonic clock drives the timers; the wall clock only stamps messages. */
T_TEST(clock_roles)
{
    struct fx f;
    const uint64_t wall = 1800000000000ull;     /* the wall clock nowhere near the monotonic one */

    online(&f, false, BOB);
    T_EQ_INT(xmpp_ops.input(f.s, (const uint8_t *)"<message from='bob@b.test/r' type='chat'><body>x</body>"
                            "</message>", 65, (struct im_time){ .mono_ms = T0 + 5, .wall_ms = wall }), 0);
    T_EQ_STR(evs(&f), "MESSAGE bob@b.test/r ts=1800000000000 tok=0 [x]\n");
    /* idle for the keepalive is measured on the monotonic clock: wall jumps do nothing */
    T_EQ_INT(xmpp_ops.tick(f.s, (struct im_time){ .mono_ms = T0 + 5 + XMPP_PING_IDLE_MS - 1,
                                                  .wall_ms = wall + 36000000 }), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(xmpp_ops.tick(f.s, (struct im_time){ .mono_ms = T0 + 5 + XMPP_PING_IDLE_MS,
                                                  .wall_ms = wall - 36000000 }), 0);
    T_EQ_STR(outs(&f), "<iq type='get' id='ping1'><ping xmlns='urn:xmpp:ping'/></iq>");
    fx_free(&f);

    /* the login timeout too */
    fx_init(&f, "user@a.test", "pencil", IM_TLS_DIRECT);
    T_EQ_INT(xmpp_ops.start(f.s, (struct im_time){ .mono_ms = 1000, .wall_ms = wall }), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, (struct im_time){ .mono_ms = 1000 + XMPP_LOGIN_TIMEOUT_MS - 1,
                                                  .wall_ms = wall + 36000000 }), 0);
    T_EQ_INT(xmpp_ops.tick(f.s, (struct im_time){ .mono_ms = 1000 + XMPP_LOGIN_TIMEOUT_MS, .wall_ms = 0 }),
             -ETIMEDOUT);
    fx_free(&f);
}

T_MAIN(T_RUN(login_starttls_scram_sha1), T_RUN(login_split_at_every_position), T_RUN(login_split_at_random),
       T_RUN(scram_kdf_handed_off), T_RUN(scram_kdf_failures), T_RUN(clock_roles),
       T_RUN(auth_failure), T_RUN(scram_server_signature_mismatch), T_RUN(stream_errors),
       T_RUN(plain_refused_without_tls), T_RUN(roster_push_and_presence), T_RUN(incoming_messages),
       T_RUN(outgoing_escaping), T_RUN(stream_management), T_RUN(logout_acks_committed_stanzas),
       T_RUN(ping_and_login_timeouts),
       T_RUN(oversize_and_deep), T_RUN(normalize), T_RUN(stamps))
