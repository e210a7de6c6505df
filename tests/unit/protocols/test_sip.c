/*
 * test_sip.c - the SIP/SIMPLE adapter driven by scripted server byte streams,
 * plus its framer, address normalisation and digest arithmetic.
 *
 * Digest answers are checked against hashes computed here with mbedTLS from
 * the RFC 2617 / RFC 7616 formulas (HA1, HA2, KD), and the digest module
 * itself against the RFC 7616 3.9.1 example.  Presence: SUBSCRIBE dialogs
 * (challenge, refresh in the dialog with its route set, NOTIFY answered and
 * turned into presence events, terminated subscriptions, the watch list
 * shrinking, logout), PUBLISH of our own presence (entity tags, 412,
 * refusal), and the PIDF parser on good and hostile documents.  Randomness is a counter
 * (the session's io->rng), so every identifier is reproducible and server
 * transcripts can be prepared in advance and split at every position.
 */
#include <stdarg.h>

#include <mbedtls/md5.h>
#include <mbedtls/sha256.h>

#include "t.h"
#define FX_OPS sip_ops
#include "fx.h"
#include "im_common.h"
#include "im_proto.h"
#include "sip/sip_int.h"

#define T0 1700000000000ull
#define LOCAL "127.0.0.1:40000"

/* ---- fixture ------------------------------------------------------------ */

struct fx {
    struct im_account_cfg cfg;
    struct im_option opts[1];
    struct im_io io;
    struct im_rng rng;
    struct im_sess *s;
    struct im_buf out, ev;
    uint8_t ctr;
    uint64_t tokens[16];
    int n_tokens;
    bool keep_publish;      /* tick_at() leaves PUBLISHes to the test */
};

static void
fx_event(void *ud, const struct im_event *e)
{
    struct fx *f = ud;
    switch (e->type) {
    case IM_EV_STATE:
        fx_printf(&f->ev, "STATE %s %.*s\n", im_account_state_name(e->u.state.state),
                  (int)e->u.state.detail.len, e->u.state.detail.p);
        break;
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len))
            abort();
        fx_printf(&f->ev, "MESSAGE %.*s ts=%llu [%.*s]\n", (int)e->u.message.from.len, e->u.message.from.p,
                  (unsigned long long)e->u.message.ts, (int)e->u.message.body.len, e->u.message.body.p);
        if (e->u.message.token && f->n_tokens < 16)
            f->tokens[f->n_tokens++] = e->u.message.token;
        break;
    case IM_EV_SENT:
        fx_printf(&f->ev, "SENT %llu\n", (unsigned long long)e->u.sent.msg);
        break;
    case IM_EV_NOTICE:
        fx_printf(&f->ev, "NOTICE %.*s\n", (int)e->u.notice.text.len, e->u.notice.text.p);
        break;
    case IM_EV_PRESENCE:
        fx_printf(&f->ev, "PRESENCE %.*s %s\n", (int)e->u.presence.address.len, e->u.presence.address.p,
                  im_presence_name(e->u.presence.presence));
        break;
    default:
        fx_printf(&f->ev, "EVENT %d\n", (int)e->type);
        break;
    }
}

static int
fx_out(void *ud, const void *p, size_t n)
{
    struct fx *f = ud;
    fx_put(&f->out, p, n);
    return 0;
}

static const char *
fx_local(void *ud)
{
    return LOCAL;
}

static int
ctr_rand(void *ud, void *buf, size_t n)
{
    struct fx *f = ud;
    for (size_t i = 0; i < n; i++)
        ((uint8_t *)buf)[i] = f->ctr++;
    return 0;
}

static void
fx_init(struct fx *f, const char *login, const char *password, enum im_tls tls)
{
    fx_setup(f, login, password, tls, 5060, "sip.test", ctr_rand);
    f->io.local_addr = fx_local;
}

/* Copy the value of header `name` (first match, after position `from`) of text into out. */
static bool
hdr(const char *text, const char *name, char *out, size_t outsz)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\r\n%s: ", name);
    const char *p = strstr(text, pat);
    if (!p)
        return false;
    p += strlen(pat);
    const char *e = strstr(p, "\r\n");
    size_t n = (size_t)(e - p);
    if (n >= outsz)
        n = outsz - 1;
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

/* A digest parameter (quoted or not) out of an Authorization value. */
static bool
dparam(const char *v, const char *name, char *out, size_t outsz)
{
    char pat[32];
    snprintf(pat, sizeof(pat), "%s=", name);
    const char *p = v;
    while ((p = strstr(p, pat))) {
        if (p == v || p[-1] == ' ' || p[-1] == ',')
            break;
        p++;
    }
    if (!p)
        return false;
    p += strlen(pat);
    size_t n;
    if (*p == '"') {
        p++;
        n = strcspn(p, "\"");
    } else {
        n = strcspn(p, ", \r");
    }
    if (n >= outsz)
        return false;
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

/* ---- digest arithmetic done independently here (RFC 2617 3.2.2.1, RFC 7616 3.4.1) ---- */

static void
hexh(bool sha, const char *s, char out[65])
{
    unsigned char d[32];
    size_t n = sha ? 32 : 16;
    if (sha)
        mbedtls_sha256_ret((const unsigned char *)s, strlen(s), d, 0);
    else
        mbedtls_md5_ret((const unsigned char *)s, strlen(s), d);
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
expect_digest(bool sha, const char *user, const char *realm, const char *pw, const char *method,
              const char *uri, const char *nonce, const char *nc, const char *cnonce, char out[65])
{
    char a[512], ha1[65], ha2[65];
    snprintf(a, sizeof(a), "%s:%s:%s", user, realm, pw);
    hexh(sha, a, ha1);
    snprintf(a, sizeof(a), "%s:%s", method, uri);
    hexh(sha, a, ha2);
    snprintf(a, sizeof(a), "%s:%s:%s:%s:auth:%s", ha1, nonce, nc, cnonce, ha2);
    hexh(sha, a, out);
}

/* Check the Authorization (or Proxy-Authorization) header in the latest request of text. */
static void
check_auth(const char *text, const char *hname, bool sha, const char *method, const char *uri,
           const char *nonce, const char *want_nc)
{
    char v[1024], cn[128], nc[16], resp[80], exp[65], u[300], alg[32];
    T_ASSERT(hdr(text, hname, v, sizeof(v)));
    T_ASSERT(!strncmp(v, "Digest ", 7));
    T_ASSERT(dparam(v, "cnonce", cn, sizeof(cn)));
    T_ASSERT(dparam(v, "nc", nc, sizeof(nc)));
    T_EQ_STR(nc, want_nc);
    T_ASSERT(dparam(v, "uri", u, sizeof(u)));
    T_EQ_STR(u, uri);
    T_ASSERT(dparam(v, "algorithm", alg, sizeof(alg)));
    T_EQ_STR(alg, sha ? "SHA-256" : "MD5");
    T_ASSERT(dparam(v, "response", resp, sizeof(resp)));
    T_ASSERT(strstr(v, "qop=auth,") != NULL);
    T_ASSERT(strstr(v, "username=\"alice\"") != NULL);
    expect_digest(sha, "alice", "sip.test", "s3cret", method, uri, nonce, nc, cn, exp);
    T_EQ_STR(resp, exp);
}

/* ---- scripted server messages ------------------------------------------ */

static char *
resp_for(const char *req, int code, const char *reason, const char *extra)
{
    char callid[128], cseq[64], via[512], from[256], to[256];
    struct im_buf b = { 0 };
    if (!hdr(req, "Call-ID", callid, sizeof(callid)) || !hdr(req, "CSeq", cseq, sizeof(cseq)) ||
        !hdr(req, "Via", via, sizeof(via)) || !hdr(req, "From", from, sizeof(from)) ||
        !hdr(req, "To", to, sizeof(to)))
        abort();
    fx_printf(&b, "SIP/2.0 %d %s\r\nVia: %s;received=127.0.0.1\r\nFrom: %s\r\nTo: %s;tag=srv\r\n"
              "Call-ID: %s\r\nCSeq: %s\r\n%sServer: test\r\nContent-Length: 0\r\n\r\n",
              code, reason, via, from, to, callid, cseq, extra);
    return b.p;
}

#define CHAL_MD5 "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n0nce-1\", qop=\"auth\", algorithm=MD5\r\n"
#define CHAL_SHA "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n0nce-1\", qop=\"auth\", algorithm=SHA-256\r\n"
#define CHAL_P   "Proxy-Authenticate: Digest realm=\"sip.test\", nonce=\"pn-7\", qop=\"auth,auth-int\", " \
                 "opaque=\"op\"\r\n"

/* Log in: REGISTER, 401, REGISTER with credentials, 200 → ONLINE; leaves the
 * PUBLISH that follows in the output. */
static void
login_reg(struct fx *f, const char *chal)
{
    T_EQ_INT(sip_ops.start(f->s, AT(T0)), 0);
    char *r = resp_for(outs(f), 401, "Unauthorized", chal);
    clear(f);
    T_EQ_INT(feed(f, r, T0 + 10), 0);
    free(r);
    r = resp_for(outs(f), 200, "OK", "Contact: <sip:alice@" LOCAL ";transport=tcp>;expires=300\r\n");
    clear(f);
    T_EQ_INT(feed(f, r, T0 + 20), 0);
    free(r);
    T_EQ_STR(evs(f), "STATE online \n");
}

/* login_reg(), then the PUBLISH accepted for an hour with entity tag et-1. */
static void
login(struct fx *f, const char *chal)
{
    login_reg(f, chal);
    T_ASSERT(!strncmp(outs(f), "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36));
    char *r = resp_for(outs(f), 200, "OK", "SIP-ETag: et-1\r\nExpires: 3600\r\n");
    clear(f);
    T_EQ_INT(feed(f, r, T0 + 30), 0);
    free(r);
    T_EQ_STR(evs(f), "");
    T_EQ_STR(outs(f), "");
}

/* ---- tests -------------------------------------------------------------- */

T_TEST(digest_rfc7616_example)
{
    /* RFC 7616 3.9.1: Mufasa / "Circle of Life", GET /dir/index.html. */
    char out[65];
    T_EQ_INT(sip_digest_response(SIP_ALG_MD5, "Mufasa", "http-auth@example.org", "Circle of Life",
                                 "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                 "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "00000001", "auth", "GET",
                                 "/dir/index.html", NULL, 0, out), 0);
    T_EQ_STR(out, "8ca523f5e9506fed4657c9700eebdbec");
    T_EQ_INT(sip_digest_response(SIP_ALG_SHA256, "Mufasa", "http-auth@example.org", "Circle of Life",
                                 "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                                 "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "00000001", "auth", "GET",
                                 "/dir/index.html", NULL, 0, out), 0);
    T_EQ_STR(out, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    /* RFC 2617 3.5 without qop is the RFC 2069 form: H(HA1:nonce:HA2). */
    char exp[65], ha1[65], ha2[65], a[300];
    hexh(false, "u:r:p", ha1);
    hexh(false, "REGISTER:sip:x", ha2);
    snprintf(a, sizeof(a), "%s:n:%s", ha1, ha2);
    hexh(false, a, exp);
    T_EQ_INT(sip_digest_response(SIP_ALG_MD5, "u", "r", "p", "n", "c", "00000001", NULL, "REGISTER", "sip:x",
                                 NULL, 0, out), 0);
    T_EQ_STR(out, exp);
}

T_TEST(digest_parse)
{
    struct sip_chal c, d;
    T_EQ_INT(sip_digest_parse(IM_STR("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int, auth\", "
                                     "algorithm=SHA-256-sess, stale=TRUE, opaque=\"o\""), &c), 0);
    T_ASSERT(c.valid && c.qop_auth && c.qop_auth_int && c.stale && c.alg == SIP_ALG_SHA256_SESS);
    T_EQ_STR(c.realm, "r");
    T_EQ_STR(c.opaque, "o");
    T_ASSERT(sip_digest_parse(IM_STR("Basic realm=\"r\""), &d) < 0);
    T_ASSERT(sip_digest_parse(IM_STR("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"), &d) < 0);
    T_ASSERT(sip_digest_parse(IM_STR("Digest realm=\"r\""), &d) < 0);
    T_ASSERT(sip_digest_parse(IM_STR("Digest realm=\"r\", nonce=\"unterminated"), &d) < 0);
    T_EQ_INT(sip_digest_parse(IM_STR("Digest realm=\"r\", nonce=\"n\""), &d), 0);
    T_ASSERT(d.alg == SIP_ALG_MD5 && !d.qop_auth);
    T_ASSERT(sip_digest_better(&c, &d) && !sip_digest_better(&d, &c));
}

T_TEST(normalize)
{
    char out[300];
    const char *why;
    T_EQ_INT(sip_ops.normalize_login("sip:Alice@SIP.Test", out, sizeof(out), &why), 0);
    T_EQ_STR(out, "sip:Alice@sip.test");
    T_EQ_INT(sip_ops.normalize_address("bob@sip.test", out, sizeof(out), &why), 0);
    T_EQ_STR(out, "sip:bob@sip.test");
    T_EQ_INT(sip_ops.normalize_address("SIP:b.o_b%41@127.0.0.1:5070", out, sizeof(out), &why), 0);
    T_EQ_STR(out, "sip:b.o_b%41@127.0.0.1:5070");
    T_EQ_INT(sip_ops.normalize_address("sip:x@[::1]:5060", out, sizeof(out), &why), 0);
    static const char *const bad[] = { "bob", "sip:@x", "sip:bob@", "sip:bob@x;transport=tcp", "sip:bob@x?h=1",
                                       "sips:bob@x", "tel:+123", "sip:bob:pw@x", "sip:b ob@x", "sip:bob@x:0",
                                       "sip:bob@x:99999", "sip:bob@-x", "sip:bob@a..b", "sip:b<ob@x", "",
                                       "sip:bob@x:", "sip:%4@x", "sip:bob@[zz]" };
    for (size_t i = 0; i < IM_ARRAY_SIZE(bad); i++) {
        why = NULL;
        if (sip_ops.normalize_address(bad[i], out, sizeof(out), &why) != -IM_EINVAL || !why)
            T_FAIL("accepted %s", bad[i]);
    }
    char lng[300];
    memset(lng, 'a', sizeof(lng));
    memcpy(lng, "sip:", 4);
    memcpy(lng + 260, "@x", 3);
    T_ASSERT(sip_ops.normalize_address(lng, out, sizeof(out), &why) == -IM_EINVAL);
    sip_ops.default_tls_name("sip:alice@Sip.Test:5061", out, sizeof(out));
    T_EQ_STR(out, "sip.test");
    sip_ops.default_tls_name("alice@[::1]", out, sizeof(out));
    T_EQ_STR(out, "::1");
    T_EQ_INT(sip_ops.default_port, 5060);
    T_EQ_INT(sip_ops.default_tls_port, 5061);
    T_EQ_STR(sip_ops.name, "sip");
    T_ASSERT(im_proto_find("sip") == &sip_ops);
}

/* Run the framer over `in` split at position cut; record units as text. */
static int
frame_all(const char *in, size_t n, size_t cut, struct im_buf *rec)
{
    struct sip_framer fr = { 0 };
    size_t pos[3] = { 0, cut, n };
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++) {
        if (sip_framer_push(&fr, (const uint8_t *)in + pos[k], pos[k + 1] - pos[k]))
            abort();
        for (;;) {
            const uint8_t *p;
            size_t hl, bl;
            int r = sip_framer_next(&fr, &p, &hl, &bl);
            if (r == -EAGAIN)
                break;
            if (r < 0) {
                rc = r;
                break;
            }
            if (r == SIP_FRAME_PING)
                fx_printf(rec, "PING\n");
            else
                fx_printf(rec, "MSG %zu %zu [%.*s]\n", hl, bl, (int)bl, (const char *)p + hl);
        }
    }
    sip_framer_free(&fr);
    return rc;
}

T_TEST(framer_splits)
{
    static const char in[] =
        "\r\n\r\n"
        "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 5\r\n\r\nhello"
        "\r\n"
        "MESSAGE sip:a@b SIP/2.0\r\nl :3\r\nX: y\r\n z\r\n\r\nabc"
        "OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n"
        "\r\n\r\n\r\n";
    const char *want = "PING\nMSG 46 5 [hello]\nMSG 43 3 [abc]\nMSG 35 0 []\nPING\n";
    for (size_t cut = 0; cut <= sizeof(in) - 1; cut++) {
        struct im_buf rec = { 0 };
        T_EQ_INT(frame_all(in, sizeof(in) - 1, cut, &rec), 0);
        if (strcmp(rec.p ? rec.p : "", want))
            T_FAIL("cut %zu: got\n%s", cut, rec.p ? rec.p : "");
        im_buf_free(&rec);
    }
}

T_TEST(framer_limits)
{
    struct im_buf rec = { 0 };
    /* Body over 1 MiB. */
    static const char big[] = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1048577\r\n\r\n";
    T_EQ_INT(frame_all(big, sizeof(big) - 1, 0, &rec), -IM_ETOOBIG);
    static const char bad[] = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1x\r\n\r\n";
    T_EQ_INT(frame_all(bad, sizeof(bad) - 1, 3, &rec), -IM_EPROTO);
    static const char two[] = "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
    T_EQ_INT(frame_all(two, sizeof(two) - 1, 3, &rec), -IM_EPROTO);
    /* Headers over 64 KiB without an end. */
    size_t n = SIP_MAX_HEADER_BYTES + 10;
    char *h = malloc(n);
    memset(h, 'a', n);
    memcpy(h, "MESSAGE sip:a@b SIP/2.0\r\nX: ", 28);
    T_EQ_INT(frame_all(h, n, n / 2, &rec), -IM_ETOOBIG);
    free(h);
    im_buf_free(&rec);
}

T_TEST(msg_parse)
{
    static const char m1[] = "MESSAGE sip:alice@127.0.0.1:40000;transport=tcp SIP/2.0\r\n"
                             "v: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKa\r\n"
                             "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKb\r\n"
                             "f: \"Bob\" <sip:bob@sip.test>;tag=1\r\nt: <sip:alice@sip.test>\r\n"
                             "i: abc@x\r\nCSeq:   7  MESSAGE\r\nc: text/plain\r\nl: 2\r\n\r\nhi";
    struct sip_msg *m = malloc(sizeof(*m));
    T_EQ_INT(sip_msg_parse(m, m1, sizeof(m1) - 3, 2), 0);
    T_ASSERT(m->is_req && m->cseq == 7);
    T_ASSERT(m->call_id.len == 5 && !memcmp(m->call_id.p, "abc@x", 5));
    T_ASSERT(m->cseq_method.len == 7 && m->body.len == 2);
    const struct sip_hdr *v = sip_msg_find(m, SH_VIA, NULL);
    T_ASSERT(v && sip_msg_find(m, SH_VIA, v) && !sip_msg_find(m, SH_VIA, sip_msg_find(m, SH_VIA, v)));
    struct im_str p;
    T_ASSERT(sip_param(m->from, "tag", &p) && p.len == 1 && p.p[0] == '1');
    T_ASSERT(!sip_param(m->to, "tag", &p));
    static const char bad1[] = "SIP/2.0 99 x\r\n\r\n";
    T_ASSERT(sip_msg_parse(m, bad1, sizeof(bad1) - 1, 0) < 0);
    static const char bad2[] = "MESSAGE sip:a SIP/3.0\r\n\r\n";
    T_ASSERT(sip_msg_parse(m, bad2, sizeof(bad2) - 1, 0) < 0);
    static const char bad3[] = "SIP/2.0 200 OK\r\nCSeq: x MESSAGE\r\n\r\n";
    T_ASSERT(sip_msg_parse(m, bad3, sizeof(bad3) - 1, 0) < 0);
    free(m);
}

T_TEST(register_md5_split_everywhere)
{
    struct fx f;
    /* Learn the requests once, then replay the server's whole answer split at every position. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    const char *r1 = outs(&f);
    T_ASSERT(!strncmp(r1, "REGISTER sip:sip.test SIP/2.0\r\n", 31));
    T_ASSERT(strstr(r1, "\r\nContact: <sip:alice@" LOCAL ";transport=tcp>\r\n"));
    T_ASSERT(strstr(r1, "\r\nExpires: 600\r\n"));
    T_ASSERT(strstr(r1, "\r\nVia: SIP/2.0/TCP " LOCAL ";branch=z9hG4bK"));
    T_ASSERT(strstr(r1, "\r\nFrom: <sip:alice@sip.test>;tag="));
    T_ASSERT(strstr(r1, "\r\nTo: <sip:alice@sip.test>\r\n"));
    T_ASSERT(strstr(r1, "\r\nCSeq: 1 REGISTER\r\n"));
    T_ASSERT(!strstr(r1, "Authorization"));
    char *c401 = resp_for(r1, 401, "Unauthorized", CHAL_MD5);
    clear(&f);
    T_EQ_INT(feed(&f, c401, T0 + 5), 0);
    check_auth(outs(&f), "Authorization", false, "REGISTER", "sip:sip.test", "n0nce-1", "00000001");
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 2 REGISTER\r\n"));
    char *ok = resp_for(outs(&f), 200, "OK", "Contact: <sip:bob@127.0.0.1:1>;expires=99, "
                                             "<sip:alice@" LOCAL ";transport=tcp>;expires=300\r\n");
    fx_free(&f);

    struct im_buf all = { 0 };
    fx_printf(&all, "%s%s", c401, ok);
    for (size_t cut = 0; cut <= all.len; cut++) {
        fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
        T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p, cut, AT(T0 + 5)), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p + cut, all.len - cut, AT(T0 + 5)), 0);
        if (strcmp(evs(&f), "STATE online \n"))
            T_FAIL("cut %zu: events %s", cut, evs(&f));
        fx_free(&f);
    }
    im_buf_free(&all);
    free(c401);
    free(ok);
}

T_TEST(register_refresh_timing)
{
    struct fx f;
    fx_init(&f, "alice@Sip.Test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    /* Granted 300 s: refresh at 80 % = 240 s after the 200 (at T0+20). */
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 20 + 239000)), 0);
    T_ASSERT(!strstr(outs(&f), "REGISTER"));
    clear(&f);
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 20 + 240000)), 0);
    T_ASSERT(!strncmp(outs(&f), "REGISTER ", 9));
    /* Pre-emptive credentials with the next nonce count (2 went to the PUBLISH). */
    check_auth(outs(&f), "Authorization", false, "REGISTER", "sip:sip.test", "n0nce-1", "00000003");
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 3 REGISTER\r\n"));
    /* The refresh answered by a 200 with only an Expires header. */
    char *ok = resp_for(outs(&f), 200, "OK", "Expires: 100\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, ok, T0 + 300000), 0);
    free(ok);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 300000 + 79000)), 0);
    T_ASSERT(!strstr(outs(&f), "REGISTER"));
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 300000 + 80000)), 0);
    T_ASSERT(strstr(outs(&f), "REGISTER "));
    /* No answer within 30 s: ERROR. */
    T_ASSERT(sip_ops.tick(f.s, AT(T0 + 300000 + 80000 + 30000)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error no answer to REGISTER"));
    fx_free(&f);
}

T_TEST(register_sha256_preferred)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    char *r = resp_for(outs(&f), 401, "Unauthorized", CHAL_MD5 CHAL_SHA);
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    check_auth(outs(&f), "Authorization", true, "REGISTER", "sip:sip.test", "n0nce-1", "00000001");
    fx_free(&f);
}

T_TEST(register_failures)
{
    struct fx f;
    /* A second 401 after credentials: AUTH_FAILED. */
    fx_init(&f, "sip:alice@sip.test", "wrong", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    char *r = resp_for(outs(&f), 401, "Unauthorized", CHAL_MD5);
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    r = resp_for(outs(&f), 401, "Unauthorized", CHAL_MD5);
    T_ASSERT(feed(&f, r, T0) == -IM_EAUTH);
    free(r);
    T_EQ_STR(evs(&f), "STATE auth_failed REGISTER refused: 401 Unauthorized (wrong password?)\n");
    T_ASSERT(feed(&f, "\r\n", T0) < 0);
    fx_free(&f);

    /* stale=true is retried with the new nonce, not a failure. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    r = resp_for(outs(&f), 401, "Unauthorized", CHAL_MD5);
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    r = resp_for(outs(&f), 401, "Unauthorized",
                 "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n2\", qop=\"auth\", stale=true\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    check_auth(outs(&f), "Authorization", false, "REGISTER", "sip:sip.test", "n2", "00000001");
    T_EQ_STR(evs(&f), "");
    fx_free(&f);

    /* 403: AUTH_FAILED with the reason phrase. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    r = resp_for(outs(&f), 403, "Forbidden Here", "");
    T_ASSERT(feed(&f, r, T0) < 0);
    free(r);
    T_EQ_STR(evs(&f), "STATE auth_failed REGISTER refused: 403 Forbidden Here\n");
    fx_free(&f);

    /* 500: ERROR with the status line. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    r = resp_for(outs(&f), 500, "Server \x01" "Error", "");
    T_ASSERT(feed(&f, r, T0) < 0);
    free(r);
    T_EQ_STR(evs(&f), "STATE error REGISTER failed: 500 Server  Error\n");
    fx_free(&f);

    /* 423 Interval Too Brief: retried with Min-Expires. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    r = resp_for(outs(&f), 423, "Interval Too Brief", "Min-Expires: 900\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    T_ASSERT(strstr(outs(&f), "\r\nExpires: 900\r\n"));
    fx_free(&f);

    /* STARTTLS is refused at start; a bad login too. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_STARTTLS);
    T_ASSERT(sip_ops.start(f.s, AT(T0)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SIP has no STARTTLS"));
    T_EQ_STR(outs(&f), "");
    fx_free(&f);
    fx_init(&f, "alice", "s3cret", IM_TLS_NONE);
    T_ASSERT(sip_ops.start(f.s, AT(T0)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error "));
    fx_free(&f);
    /* TLS: the transport says so. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_DIRECT);
    T_EQ_INT(sip_ops.start(f.s, AT(T0)), 0);
    T_ASSERT(strstr(outs(&f), "Via: SIP/2.0/TLS ") && strstr(outs(&f), ";transport=tls>"));
    fx_free(&f);
}

T_TEST(message_out_407_then_202)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    struct im_msg m = { .msg = 41, .to = IM_STR("sip:bob@sip.test"), .body = IM_STR("h\xc3\xa9llo") };
    T_EQ_INT(sip_ops.send_msg(f.s, &m), 0);
    const char *o = outs(&f);
    T_ASSERT(!strncmp(o, "MESSAGE sip:bob@sip.test SIP/2.0\r\n", 34));
    T_ASSERT(strstr(o, "\r\nTo: <sip:bob@sip.test>\r\n"));
    T_ASSERT(strstr(o, "\r\nCSeq: 1 MESSAGE\r\n"));
    T_ASSERT(strstr(o, "\r\nContent-Type: text/plain;charset=UTF-8\r\n"));
    T_ASSERT(strstr(o, "\r\nContent-Length: 6\r\n\r\nh\xc3\xa9llo"));
    char cid1[128];
    T_ASSERT(hdr(o, "Call-ID", cid1, sizeof(cid1)));
    /* The server challenges; meanwhile a second message goes out and is answered first. */
    char *c407 = resp_for(o, 407, "Proxy Authentication Required", CHAL_P);
    struct im_msg m2 = { .msg = 42, .to = IM_STR("sip:carol@sip.test"), .body = IM_STR("second") };
    clear(&f);
    T_EQ_INT(sip_ops.send_msg(f.s, &m2), 0);
    char *ok2 = resp_for(outs(&f), 200, "OK", "");
    clear(&f);
    T_EQ_INT(feed(&f, c407, T0 + 100), 0);
    free(c407);
    o = outs(&f);
    T_ASSERT(strstr(o, "\r\nCSeq: 2 MESSAGE\r\n"));
    char cid2[128];
    T_ASSERT(hdr(o, "Call-ID", cid2, sizeof(cid2)));
    T_EQ_STR(cid2, cid1);
    check_auth(o, "Proxy-Authorization", false, "MESSAGE", "sip:bob@sip.test", "pn-7", "00000001");
    T_ASSERT(strstr(o, "opaque=\"op\""));
    char *acc = resp_for(o, 202, "Accepted", "");
    T_EQ_INT(feed(&f, ok2, T0 + 110), 0);
    T_EQ_STR(evs(&f), "SENT 42\n");
    T_EQ_INT(feed(&f, acc, T0 + 120), 0);
    T_EQ_STR(evs(&f), "SENT 42\nSENT 41\n");
    free(ok2);
    /* A repeated final answer is a stray: ignored. */
    T_EQ_INT(feed(&f, acc, T0 + 130), 0);
    T_EQ_STR(evs(&f), "SENT 42\nSENT 41\n");
    free(acc);
    /* The next message carries the proxy credentials with nc 2; a 404 is a notice, then sent. */
    clear(&f);
    struct im_msg m3 = { .msg = 43, .to = IM_STR("sip:dave@sip.test"), .body = IM_STR("x") };
    T_EQ_INT(sip_ops.send_msg(f.s, &m3), 0);
    check_auth(outs(&f), "Proxy-Authorization", false, "MESSAGE", "sip:dave@sip.test", "pn-7", "00000002");
    char *nf = resp_for(outs(&f), 404, "Not Found", "");
    T_EQ_INT(feed(&f, nf, T0 + 140), 0);
    free(nf);
    T_EQ_STR(evs(&f), "NOTICE message to sip:dave@sip.test not delivered: 404 Not Found\nSENT 43\n");
    /* A second 407 after credentials: notice and sent. */
    clear(&f);
    m3.msg = 44;
    T_EQ_INT(sip_ops.send_msg(f.s, &m3), 0);
    char *p1 = resp_for(outs(&f), 407, "Proxy Authentication Required", CHAL_P);
    clear(&f);
    T_EQ_INT(feed(&f, p1, T0 + 150), 0);
    free(p1);
    p1 = resp_for(outs(&f), 407, "Proxy Authentication Required", CHAL_P);
    T_EQ_INT(feed(&f, p1, T0 + 150), 0);
    free(p1);
    T_ASSERT(strstr(evs(&f), "not delivered: 407") && strstr(evs(&f), "SENT 44\n"));
    /* No final answer at all: after 40 s a notice and sent. */
    clear(&f);
    m3.msg = 45;
    T_EQ_INT(sip_ops.send_msg(f.s, &m3), 0);
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 150 + 1000)), 0);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 150 + SIP_TX_TIMEOUT_MS + 1000)), 0);
    T_ASSERT(strstr(evs(&f), "NOTICE no final answer") && strstr(evs(&f), "SENT 45\n"));
    fx_free(&f);
}

#define IN_MSG "MESSAGE sip:alice@" LOCAL ";transport=tcp SIP/2.0\r\n" \
    "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsrv;i=1\r\n" \
    "v: SIP/2.0/TCP 127.0.0.1:51000;rport=51000;branch=z9hG4bKbob\r\n" \
    "Max-Forwards: 69\r\n" \
    "f: \"Bob\" <sip:bob@SIP.test;transport=tcp>;tag=b1\r\n" \
    "t: <sip:alice@sip.test>\r\n" \
    "i: call-9@bob\r\n" \
    "CSeq: 3 MESSAGE\r\n" \
    "c: text/plain; charset=UTF-8\r\n" \
    "l: 11\r\n\r\n" \
    "hi \xe2\x82\xac \xf0\x9f\x98\x80"

T_TEST(message_in_200_after_commit)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    /* Split at every position, including inside a UTF-8 character of the body. */
    static const char in[] = IN_MSG;
    struct im_buf b = { 0 };
    fx_printf(&b, "%s", in);
    for (size_t cut = 0; cut <= b.len; cut++) {
        clear(&f);
        f.n_tokens = 0;
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)b.p, cut, AT(T0 + 500)), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)b.p + cut, b.len - cut, AT(T0 + 500)), 0);
        if (strcmp(evs(&f), "MESSAGE sip:bob@sip.test ts=1700000000500 [hi \xe2\x82\xac \xf0\x9f\x98\x80]\n"))
            T_FAIL("cut %zu: %s", cut, evs(&f));
        T_EQ_STR(outs(&f), "");            /* no 200 before the commit */
        T_EQ_INT(f.n_tokens, 1);
        sip_ops.committed(f.s, f.tokens[0] + 12345);  /* unknown token: nothing */
        T_EQ_STR(outs(&f), "");
        sip_ops.committed(f.s, f.tokens[0]);
        const char *o = outs(&f);
        T_ASSERT(!strncmp(o, "SIP/2.0 200 OK\r\n"
                             "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKsrv;i=1\r\n"
                             "Via: SIP/2.0/TCP 127.0.0.1:51000;rport=51000;branch=z9hG4bKbob\r\n"
                             "From: \"Bob\" <sip:bob@SIP.test;transport=tcp>;tag=b1\r\n"
                             "To: <sip:alice@sip.test>;tag=", 213));
        T_ASSERT(strstr(o, "\r\nCall-ID: call-9@bob\r\nCSeq: 3 MESSAGE\r\n"));
        T_ASSERT(strstr(o, "\r\nContent-Length: 0\r\n\r\n"));
        sip_ops.committed(f.s, f.tokens[0]);          /* twice: nothing more */
        T_ASSERT(strstr(o, "Content-Length: 0\r\n\r\n") + 21 == o + f.out.len);
    }
    im_buf_free(&b);
    fx_free(&f);
}

static char *
request(const char *method, const char *ctype, const char *body)
{
    struct im_buf b = { 0 };
    fx_printf(&b, "%s sip:alice@" LOCAL " SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
              "From: <sip:bob@sip.test>;tag=b\r\nTo: <sip:alice@sip.test>;tag=a\r\nCall-ID: c1\r\n"
              "CSeq: 1 %s\r\n%s%s%sContent-Length: %zu\r\n\r\n%s", method, method,
              ctype ? "Content-Type: " : "", ctype ? ctype : "", ctype ? "\r\n" : "", strlen(body), body);
    return b.p;
}

T_TEST(requests_answered)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    static const struct {
        const char *method, *ctype, *body, *status;
        bool has_allow;
    } cases[] = {
        { "OPTIONS", NULL, "", "SIP/2.0 200 OK\r\n", true },
        { "INFO", NULL, "", "SIP/2.0 405 Method Not Allowed\r\n", true },
        { "INVITE", "application/sdp", "v=0\r\n", "SIP/2.0 405 Method Not Allowed\r\n", true },
        { "FROB", NULL, "", "SIP/2.0 501 Not Implemented\r\n", true },
        { "MESSAGE", "application/im-iscomposing+xml", "<x/>", "SIP/2.0 415 Unsupported Media Type\r\n", true },
        { "MESSAGE", "text/plain;charset=ISO-8859-1", "x", "SIP/2.0 415 Unsupported Media Type\r\n", false },
        { "MESSAGE", "text/plain", "\xff", "SIP/2.0 400 Body Is Not UTF-8\r\n", false },
        { "MESSAGE", "text/plain", "", "SIP/2.0 200 OK\r\n", false },
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(cases); i++) {
        clear(&f);
        char *r = request(cases[i].method, cases[i].ctype, cases[i].body);
        T_EQ_INT(feed(&f, r, T0), 0);
        free(r);
        if (strncmp(outs(&f), cases[i].status, strlen(cases[i].status)))
            T_FAIL("%s: %s", cases[i].method, outs(&f));
        T_ASSERT(!cases[i].has_allow || strstr(outs(&f), "\r\nAllow: MESSAGE, NOTIFY, OPTIONS, ACK\r\n"));
        T_ASSERT(strstr(outs(&f), "\r\nTo: <sip:alice@sip.test>;tag=a\r\n"));  /* kept, not doubled */
        T_EQ_STR(evs(&f), "");
    }
    /* text/html is still text: delivered. */
    clear(&f);
    char *r = request("MESSAGE", "text/html", "<b>x</b>");
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    T_EQ_STR(evs(&f), "MESSAGE sip:bob@sip.test ts=1700000000000 [<b>x</b>]\n");
    /* ACK: never answered.  Missing headers: 400.  Garbage: a notice, the session goes on. */
    clear(&f);
    r = request("ACK", NULL, "");
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(feed(&f, "MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n", T0), 0);
    T_ASSERT(!strncmp(outs(&f), "SIP/2.0 400 ", 12));
    clear(&f);
    T_EQ_INT(feed(&f, "HELLO\r\nfoo\r\n\r\n", T0), 0);
    T_EQ_STR(evs(&f), "NOTICE ignored a malformed SIP message from the server\n");
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 1000)), 0);
    fx_free(&f);
}

T_TEST(keepalive_and_logout)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    /* The server's ping gets a pong; a pong is ignored. */
    T_EQ_INT(feed(&f, "\r\n\r\n", T0 + 1000), 0);
    T_EQ_STR(outs(&f), "\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, "\r\n", T0 + 2000), 0);
    T_EQ_STR(outs(&f), "");
    /* Our ping every 30 s (from the start at T0). */
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 29000)), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 30000)), 0);
    T_EQ_STR(outs(&f), "\r\n\r\n");
    T_EQ_INT(feed(&f, "\r\n", T0 + 30010), 0);
    clear(&f);
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 59000)), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 60000)), 0);
    T_EQ_STR(outs(&f), "\r\n\r\n");
    /* logout: our publication removed, then REGISTER with Expires: 0 for our contact, with credentials. */
    clear(&f);
    sip_ops.logout(f.s);
    T_ASSERT(!strncmp(outs(&f), "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36));
    const char *reg = strstr(outs(&f), "REGISTER sip:sip.test SIP/2.0\r\n");
    T_ASSERT(reg);
    T_ASSERT(strstr(reg, "\r\nExpires: 0\r\n"));
    T_ASSERT(strstr(reg, "\r\nContact: <sip:alice@" LOCAL ";transport=tcp>\r\n"));
    check_auth(reg - 2, "Authorization", false, "REGISTER", "sip:sip.test", "n0nce-1", "00000004");
    fx_free(&f);

    /* No pong within 15 s of our ping: ERROR. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 30000)), 0);
    T_EQ_INT(sip_ops.tick(f.s, AT(T0 + 44000)), 0);
    T_ASSERT(sip_ops.tick(f.s, AT(T0 + 45000)) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error the SIP server stopped answering keepalives"));
    fx_free(&f);

    /* Framing errors are final. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    T_ASSERT(feed(&f, "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2000000\r\n\r\n", T0) == -IM_ETOOBIG);
    T_ASSERT(strstr(evs(&f), "STATE error the server sent a SIP message over the limits"));
    fx_free(&f);
}

/* ---- presence ------------------------------------------------------------ */

/* Copy the n-th (0-based) message of a byte stream of SIP messages into a
 * malloc'd string; NULL when there are fewer. */
static char *
msg_n(const char *text, int n)
{
    const char *p = text;
    for (int k = 0; *p; k++) {
        const char *e = strstr(p, "\r\n\r\n");
        if (!e)
            return NULL;
        size_t cl = 0;
        const char *c = strstr(p, "\r\nContent-Length: ");
        if (c && c < e)
            cl = strtoul(c + 18, NULL, 10);
        size_t len = (size_t)(e + 4 - p) + cl;
        if (k == n)
            return strndup(p, len);
        p += len;
    }
    return NULL;
}

static int
count_str(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* The value of `param` (e.g. "tag") in header `name` of req, copied. */
static bool
hdr_param(const char *req, const char *name, const char *param, char *out, size_t outsz)
{
    char v[600], pat[32];
    if (!hdr(req, name, v, sizeof(v)))
        return false;
    snprintf(pat, sizeof(pat), ";%s=", param);
    const char *p = strstr(v, pat);
    if (!p)
        return false;
    p += strlen(pat);
    size_t n = strcspn(p, ";>, ");
    if (n >= outsz)
        return false;
    memcpy(out, p, n);
    out[n] = 0;
    return true;
}

/* A NOTIFY in the dialog of SUBSCRIBE sub (its Call-ID and From tag), from tag `rtag`. */
static char *
notify_for(const char *sub, const char *rtag, unsigned cseq, const char *state, const char *ctype,
           const char *body, const char *extra)
{
    char callid[128], ftag[64], to[300];
    struct im_buf b = { 0 };
    if (!hdr(sub, "Call-ID", callid, sizeof(callid)) || !hdr_param(sub, "From", "tag", ftag, sizeof(ftag)) ||
        !hdr(sub, "To", to, sizeof(to)))
        abort();
    *strchr(to, '>') = 0;
    fx_printf(&b, "NOTIFY sip:alice@" LOCAL ";transport=tcp SIP/2.0\r\n"
              "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKn%u\r\n"
              "To: <sip:alice@sip.test>;tag=%s\r\nFrom: %s>;tag=%s\r\nCSeq: %u NOTIFY\r\nCall-ID: %s\r\n"
              "Max-Forwards: 70\r\nEvent: presence\r\nContact: <sip:127.0.0.1:5060;transport=tcp>\r\n"
              "Subscription-State: %s\r\n%s", cseq, ftag, to, rtag, cseq, callid, state, extra ? extra : "");
    if (ctype)
        fx_printf(&b, "Content-Type: %s\r\n", ctype);
    fx_printf(&b, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    return b.p;
}

#define PIDF_HEAD "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
    "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@sip.test\">"
#define PIDF_OPEN PIDF_HEAD "<tuple id=\"a\"><status><basic>open</basic></status></tuple></presence>"
#define PIDF_CLOSED PIDF_HEAD "<tuple id=\"a\"><status><basic>closed</basic></status></tuple></presence>"
#define PIDF_AWAY "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" " \
    "xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" " \
    "entity=\"sip:bob@sip.test\"><tuple id=\"t1\"><status><basic>open</basic></status></tuple>" \
    "<dm:person id=\"p1\"><rpid:activities><rpid:away/></rpid:activities></dm:person></presence>"
#define CT_PIDF "application/pidf+xml"

T_TEST(pidf_documents)
{
    static const struct {
        const char *doc;
        int rc;
        enum im_presence p;
    } cases[] = {
        { PIDF_OPEN, 0, IM_PRES_AVAILABLE },
        { PIDF_CLOSED, 0, IM_PRES_OFFLINE },
        { PIDF_AWAY, 0, IM_PRES_AWAY },
        /* kamailio's aggregate: namespaces repeated, white space around the status */
        { "<?xml version=\"1.0\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:b@x\">\n"
          "<tuple xmlns=\"urn:ietf:params:xml:ns:pidf\" id=\"x\"><status xmlns=\"urn:ietf:params:xml:ns:pidf\">"
          "\n  <basic>  closed\n </basic>\n</status></tuple>\n<tuple id=\"y\"><status><basic>open</basic>"
          "</status><note>  Away </note></tuple></presence>", 0, IM_PRES_AWAY },
        /* prefixed PIDF, an unknown extension with its own "basic", a busy activity */
        { "<p:presence xmlns:p=\"urn:ietf:params:xml:ns:pidf\" xmlns:r=\"urn:ietf:params:xml:ns:pidf:rpid\" "
          "entity=\"sip:b@x\"><p:tuple id=\"a\"><p:status><p:basic>open</p:basic><x:basic xmlns:x=\"urn:x\">"
          "closed</x:basic></p:status><r:activities><r:busy/></r:activities></p:tuple></p:presence>",
          0, IM_PRES_AWAY },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>closed</basic></status><note>away</note></tuple>"
          "<tuple id=\"b\"><status/></tuple></presence>", 0, IM_PRES_OFFLINE },
        { PIDF_HEAD "<tuple id=\"a\"><status/></tuple></presence>", -IM_ENOTFOUND, IM_PRES_UNKNOWN },
        { PIDF_HEAD "</presence>", -IM_ENOTFOUND, IM_PRES_UNKNOWN },
        { PIDF_HEAD "<basic>open</basic></presence>", -IM_ENOTFOUND, IM_PRES_UNKNOWN },  /* not in a tuple */
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>maybe</basic></status></tuple></presence>", -IM_EPROTO,
          IM_PRES_UNKNOWN },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>open and much more text</basic></status></tuple>"
          "</presence>", -IM_EPROTO, IM_PRES_UNKNOWN },
        { "<presence xmlns=\"urn:other\"><tuple><status><basic>open</basic></status></tuple></presence>",
          -IM_EPROTO, IM_PRES_UNKNOWN },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>open</basic></status></tuple>", -IM_EPROTO, IM_PRES_UNKNOWN },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>open</basic></status></tuple></presence><x/>", -IM_EPROTO,
          IM_PRES_UNKNOWN },
        { "", -IM_EPROTO, IM_PRES_UNKNOWN },
        { "open", -IM_EPROTO, IM_PRES_UNKNOWN },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>op\xffn</basic></status></tuple></presence>", -IM_EPROTO,
          IM_PRES_UNKNOWN },
        /* entity expansion ("billion laughs") and external entities: refused at the DOCTYPE */
        { "<?xml version=\"1.0\"?><!DOCTYPE presence [<!ENTITY a \"open\"><!ENTITY b \"&a;&a;&a;&a;&a;\">"
          "<!ENTITY c \"&b;&b;&b;&b;&b;&b;\">]><presence xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple id=\"a\">"
          "<status><basic>&c;</basic></status></tuple></presence>", -IM_EPROTO, IM_PRES_UNKNOWN },
        { "<!DOCTYPE presence [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><presence "
          "xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple id=\"a\"><status><basic>&x;</basic></status></tuple>"
          "</presence>", -IM_EPROTO, IM_PRES_UNKNOWN },
        { PIDF_HEAD "<tuple id=\"a\"><status><basic>&undefined;</basic></status></tuple></presence>", -IM_EPROTO,
          IM_PRES_UNKNOWN },
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(cases); i++) {
        enum im_presence p = IM_PRES_UNKNOWN;
        int rc = sip_pidf_parse(cases[i].doc, strlen(cases[i].doc), &p);
        if (rc != cases[i].rc || p != cases[i].p)
            T_FAIL("case %zu: rc %d presence %s", i, rc, im_presence_name(p));
    }
    /* Nesting and size limits. */
    struct im_buf b = { 0 };
    fx_printf(&b, "%s", PIDF_HEAD "<tuple id=\"a\">");
    for (int i = 0; i < SIP_PIDF_DEPTH; i++)
        fx_printf(&b, "<x:e xmlns:x=\"urn:x\">");
    enum im_presence p = IM_PRES_UNKNOWN;
    T_EQ_INT(sip_pidf_parse(b.p, b.len, &p), -IM_ETOOBIG);
    b.len = 0;
    fx_printf(&b, "%s", PIDF_HEAD "<tuple id=\"a\"><status><basic>open</basic></status><note>");
    while (b.len <= SIP_PIDF_MAX)
        fx_printf(&b, "padding ");
    fx_printf(&b, "</note></tuple></presence>");
    T_EQ_INT(sip_pidf_parse(b.p, b.len, &p), -IM_ETOOBIG);
    T_ASSERT(p == IM_PRES_UNKNOWN);
    im_buf_free(&b);
    /* Every truncation of a valid document is refused, never misread. */
    static const char full[] = PIDF_AWAY;
    for (size_t n = 0; n < sizeof(full) - 1; n++) {
        p = IM_PRES_UNKNOWN;
        if (sip_pidf_parse(full, n, &p) != -IM_EPROTO || p != IM_PRES_UNKNOWN)
            T_FAIL("truncated at %zu accepted", n);
    }
}

/*
 * tick() at `now` for the presence tests, which span hours: a ping from the
 * server is fed first (so ours never go unanswered), and the pong, our pings and REGISTER refreshes (answered
 * 200 here) are taken out of the output, which is left with the rest.
 */
static int
tick_at(struct fx *f, uint64_t now)
{
    size_t at = f->out.len;
    T_EQ_INT(feed(f, "\r\n\r\n", now), 0);      /* the server's ping: "\r\n" back */
    int rc = sip_ops.tick(f->s, AT(now));
    while (at < f->out.len) {
        char *p = f->out.p + at;
        size_t cut = 0;
        if (f->out.len - at >= 4 && !memcmp(p, "\r\n\r\n", 4)) {
            cut = 4;
        } else if (f->out.len - at >= 2 && !memcmp(p, "\r\n", 2)) {
            cut = 2;
        } else {
            char *m = msg_n(p, 0);
            if (!m)
                break;
            cut = strlen(m);
            bool reg = !strncmp(m, "REGISTER ", 9), publ = !strncmp(m, "PUBLISH ", 8) && !f->keep_publish;
            if (!reg && !publ) {
                free(m);
                at += cut;
                continue;
            }
            char *r = resp_for(m, 200, "OK", reg ? "Expires: 300\r\n" : "SIP-ETag: et-1\r\nExpires: 3600\r\n");
            free(m);
            memmove(p, p + cut, f->out.len - at - cut + 1);
            f->out.len -= cut;
            T_EQ_INT(feed(f, r, now), 0);
            free(r);
            continue;
        }
        memmove(p, p + cut, f->out.len - at - cut + 1);
        f->out.len -= cut;
    }
    return rc;
}

/* The answer in out (one message) has this status line and echoes the NOTIFY's CSeq. */
static void
check_answer(struct fx *f, const char *status, unsigned cseq)
{
    char want[64];
    snprintf(want, sizeof(want), "\r\nCSeq: %u NOTIFY\r\n", cseq);
    if (strncmp(outs(f), status, strlen(status)) || !strstr(outs(f), want))
        T_FAIL("wanted %s for CSeq %u, got:\n%s", status, cseq, outs(f));
}

T_TEST(subscribe_challenge_notify)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    struct im_str w[] = { IM_STR("sip:bob@sip.test"), IM_STR("carol@SIP.test") };
    T_EQ_INT(sip_ops.set_watch(f.s, w, 2, AT(T0 + 1000)), 0);
    T_EQ_INT(count_str(outs(&f), "SUBSCRIBE sip:"), 2);
    char *sb = msg_n(outs(&f), 0), *sc = msg_n(outs(&f), 1);
    T_ASSERT(!strncmp(sb, "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    T_ASSERT(!strncmp(sc, "SUBSCRIBE sip:carol@sip.test SIP/2.0\r\n", 37));
    T_ASSERT(strstr(sb, "\r\nTo: <sip:bob@sip.test>\r\n"));
    T_ASSERT(strstr(sb, "\r\nFrom: <sip:alice@sip.test>;tag="));
    T_ASSERT(strstr(sb, "\r\nCSeq: 1 SUBSCRIBE\r\n"));
    T_ASSERT(strstr(sb, "\r\nEvent: presence\r\n"));
    T_ASSERT(strstr(sb, "\r\nAccept: application/pidf+xml\r\n"));
    T_ASSERT(strstr(sb, "\r\nExpires: 600\r\n"));
    T_ASSERT(strstr(sb, "\r\nContact: <sip:alice@" LOCAL ";transport=tcp>\r\n"));
    T_ASSERT(strstr(sb, "\r\nContent-Length: 0\r\n\r\n"));
    check_auth(sb, "Authorization", false, "SUBSCRIBE", "sip:bob@sip.test", "n0nce-1", "00000003");
    char cid1[128], cid2[128];
    T_ASSERT(hdr(sb, "Call-ID", cid1, sizeof(cid1)) && hdr(sc, "Call-ID", cid2, sizeof(cid2)));
    T_ASSERT(strcmp(cid1, cid2));
    T_EQ_STR(evs(&f), "");

    /* The proxy challenges bob's: answered in the same dialog-to-be with the next CSeq. */
    char *r = resp_for(sb, 407, "Proxy Authentication Required", CHAL_P);
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 1100), 0);
    free(r);
    free(sb);
    sb = strdup(outs(&f));
    T_ASSERT(!strncmp(sb, "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    T_ASSERT(strstr(sb, "\r\nCSeq: 2 SUBSCRIBE\r\n"));
    char cid3[128];
    T_ASSERT(hdr(sb, "Call-ID", cid3, sizeof(cid3)));
    T_EQ_STR(cid3, cid1);
    check_auth(sb, "Proxy-Authorization", false, "SUBSCRIBE", "sip:bob@sip.test", "pn-7", "00000001");
    /* 202 Accepted (RFC 3265) is as good as 200; carol is unknown: 404, tried again in 30 s. */
    r = resp_for(sb, 202, "Accepted", "Expires: 300\r\nContact: <sip:127.0.0.1:5060;transport=tcp>\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 1200), 0);
    free(r);
    r = resp_for(sc, 404, "Not Found", "");
    T_EQ_INT(feed(&f, r, T0 + 1200), 0);
    free(r);
    T_EQ_STR(outs(&f), "");
    T_EQ_STR(evs(&f), "");                   /* never known: nothing to report */

    /* NOTIFYs: open, the same again, closed, away, nothing published. */
    static const struct {
        const char *ctype, *body, *ev;
    } seq[] = {
        { CT_PIDF, PIDF_OPEN, "PRESENCE sip:bob@sip.test available\n" },
        { CT_PIDF, PIDF_OPEN, "" },
        { CT_PIDF, PIDF_CLOSED, "PRESENCE sip:bob@sip.test offline\n" },
        { "application/pidf+xml;charset=UTF-8", PIDF_AWAY, "PRESENCE sip:bob@sip.test away\n" },
        { NULL, "", "PRESENCE sip:bob@sip.test offline\n" },
        /* malformed or foreign bodies: answered, nothing reported */
        { CT_PIDF, "<presence", "" },
        { CT_PIDF, "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY a \"open\">]><presence "
                   "xmlns=\"urn:ietf:params:xml:ns:pidf\"><tuple id=\"a\"><status><basic>&a;</basic></status>"
                   "</tuple></presence>", "" },
        { "text/plain", "open", "" },
        { CT_PIDF, "\xff\xfe<presence/>", "" },
        { CT_PIDF, PIDF_OPEN, "PRESENCE sip:bob@sip.test available\n" },
    };
    unsigned cseq = 1;
    for (size_t i = 0; i < IM_ARRAY_SIZE(seq); i++) {
        clear(&f);
        r = notify_for(sb, "srv", ++cseq, "active;expires=299", seq[i].ctype, seq[i].body, NULL);
        T_EQ_INT(feed(&f, r, T0 + 2000), 0);
        free(r);
        check_answer(&f, "SIP/2.0 200 OK\r\n", cseq);
        T_ASSERT(strstr(outs(&f), "\r\nTo: <sip:alice@sip.test>;tag="));
        if (strcmp(evs(&f), seq[i].ev))
            T_FAIL("NOTIFY %zu: events %s", i, evs(&f));
    }
    /* Split at every position: closed whole, then open in two pieces. */
    struct im_buf all = { 0 };
    for (size_t cut = 0; cut < 600; cut += 7) {
        clear(&f);
        r = notify_for(sb, "srv", ++cseq, "active", CT_PIDF, PIDF_CLOSED, NULL);
        T_EQ_INT(feed(&f, r, T0 + 3000), 0);
        free(r);
        all.len = 0;
        r = notify_for(sb, "srv", ++cseq, "active", CT_PIDF, PIDF_OPEN, NULL);
        fx_printf(&all, "%s", r);
        free(r);
        size_t c = cut < all.len ? cut : all.len;
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p, c, AT(T0 + 3000)), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p + c, all.len - c, AT(T0 + 3000)), 0);
        if (strcmp(evs(&f), "PRESENCE sip:bob@sip.test offline\nPRESENCE sip:bob@sip.test available\n"))
            T_FAIL("cut %zu: %s", cut, evs(&f));
    }
    im_buf_free(&all);

    /* Outside any dialog: 481; another package: 489; an older CSeq: 500; no
     * Subscription-State: 400; another remote tag: 481.  None changes anything. */
    clear(&f);
    r = notify_for(sc, "srv", 7, "active", CT_PIDF, PIDF_CLOSED, NULL);    /* carol's dialog failed */
    T_EQ_INT(feed(&f, r, T0 + 4000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 481 Subscription Does Not Exist\r\n", 7);
    clear(&f);
    r = notify_for(sb, "srv", ++cseq, "active", CT_PIDF, PIDF_CLOSED, NULL);
    char *ev = strstr(r, "Event: presence");
    memcpy(ev, "Event: dialog  ", 15);     /* same length */
    T_EQ_INT(feed(&f, r, T0 + 4000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 489 Bad Event\r\n", cseq);
    clear(&f);
    r = notify_for(sb, "srv", cseq - 5, "active", CT_PIDF, PIDF_CLOSED, NULL);
    T_EQ_INT(feed(&f, r, T0 + 4000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 500 CSeq Out Of Order\r\n", cseq - 5);
    clear(&f);
    r = notify_for(sb, "srv", ++cseq, "active", CT_PIDF, PIDF_CLOSED, NULL);
    ev = strstr(r, "Subscription-State:");
    memcpy(ev, "X", 1);
    T_EQ_INT(feed(&f, r, T0 + 4000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 400 Missing Subscription-State\r\n", cseq);
    clear(&f);
    r = notify_for(sb, "other", ++cseq, "active", CT_PIDF, PIDF_CLOSED, NULL);
    T_EQ_INT(feed(&f, r, T0 + 4000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 481 Subscription Does Not Exist\r\n", cseq);
    T_EQ_STR(evs(&f), "");

    /* carol's retry: 30 s after the 404, a new dialog. */
    clear(&f);
    T_EQ_INT(tick_at(&f, T0 + 1200 + 29999), 0);
    T_ASSERT(!strstr(outs(&f), "SUBSCRIBE"));
    T_EQ_INT(tick_at(&f, T0 + 1200 + 30000), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:carol@sip.test SIP/2.0\r\n", 37));
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 1 SUBSCRIBE\r\n"));
    T_ASSERT(hdr(outs(&f), "Call-ID", cid3, sizeof(cid3)));
    T_ASSERT(strcmp(cid3, cid2));
    /* A second failure waits twice as long; Retry-After wins over that. */
    r = resp_for(outs(&f), 503, "Service Unavailable", "Retry-After: 90\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 40000), 0);
    free(r);
    T_EQ_INT(tick_at(&f, T0 + 40000 + 89000), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(tick_at(&f, T0 + 40000 + 90000), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:carol@sip.test SIP/2.0\r\n", 37));
    free(sb);
    free(sc);
    fx_free(&f);
}

T_TEST(subscribe_refresh_route_set)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    struct im_str w[] = { IM_STR("sip:bob@sip.test") };
    uint64_t t1 = T0 + 5000;
    T_EQ_INT(sip_ops.set_watch(f.s, w, 1, AT(t1)), 0);
    char *sb = strdup(outs(&f));
    char *r = resp_for(sb, 200, "OK", "Expires: 300\r\nContact: <sip:127.0.0.1:5060;transport=tcp>\r\n"
                                      "Record-Route: <sip:p1.test;lr>, <sip:p2.test;lr;ftag=x>\r\n"
                                      "Record-Route: <sip:p3.test;lr>\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, t1), 0);
    free(r);
    /* Refresh at 80 % of 300 s, in the dialog: remote target, remote tag, reversed route set. */
    T_EQ_INT(tick_at(&f, t1 + 239999), 0);
    T_ASSERT(!strstr(outs(&f), "SUBSCRIBE"));
    T_EQ_INT(tick_at(&f, t1 + 240000), 0);
    const char *o = outs(&f);
    T_ASSERT(!strncmp(o, "SUBSCRIBE sip:127.0.0.1:5060;transport=tcp SIP/2.0\r\n", 52));
    T_ASSERT(strstr(o, "\r\nTo: <sip:bob@sip.test>;tag=srv\r\n"));
    T_ASSERT(strstr(o, "\r\nCSeq: 2 SUBSCRIBE\r\n"));
    T_ASSERT(strstr(o, "\r\nRoute: <sip:p3.test;lr>\r\nRoute: <sip:p2.test;lr;ftag=x>\r\nRoute: <sip:p1.test;lr>\r\n"));
    char a[128], b[128];
    T_ASSERT(hdr(o, "Call-ID", a, sizeof(a)) && hdr(sb, "Call-ID", b, sizeof(b)));
    T_EQ_STR(a, b);
    T_ASSERT(hdr_param(o, "From", "tag", a, sizeof(a)) && hdr_param(sb, "From", "tag", b, sizeof(b)));
    T_EQ_STR(a, b);
    /* (nonce count 4 went to the REGISTER refresh in the same tick) */
    check_auth(o, "Authorization", false, "SUBSCRIBE", "sip:127.0.0.1:5060;transport=tcp", "n0nce-1",
               "00000005");
    /* Granted 100 s this time; a NOTIFY saying 50 s left brings the refresh forward (never back). */
    r = resp_for(o, 200, "OK", "Expires: 100\r\n");
    clear(&f);
    uint64_t t2 = t1 + 241000;
    T_EQ_INT(feed(&f, r, t2), 0);
    free(r);
    r = notify_for(sb, "srv", 2, "active;expires=50", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(&f, r, t2 + 1000), 0);
    free(r);
    T_EQ_STR(evs(&f), "PRESENCE sip:bob@sip.test available\n");
    /* ... and a NOTIFY's Contact is the new remote target (target refresh). */
    r = notify_for(sb, "srv", 3, "active;expires=3000", CT_PIDF, PIDF_OPEN, NULL);
    char *c = strstr(r, "Contact: <sip:127.0.0.1:5060;transport=tcp>");
    memcpy(c, "Contact: <sip:127.0.0.2:5070;transport=tcp>", 43);
    T_EQ_INT(feed(&f, r, t2 + 1000), 0);
    free(r);
    clear(&f);
    T_EQ_INT(tick_at(&f, t2 + 1000 + 39999), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(tick_at(&f, t2 + 1000 + 40000), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:127.0.0.2:5070;transport=tcp SIP/2.0\r\n", 52));
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 3 SUBSCRIBE\r\n"));
    /* No answer to that refresh: the presence is no longer known; a new dialog 30 s later. */
    clear(&f);
    uint64_t t3 = t2 + 41000;
    T_EQ_INT(tick_at(&f, t3 + SIP_SUB_TIMEOUT_MS - 1001), 0);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(tick_at(&f, t3 + SIP_SUB_TIMEOUT_MS), 0);
    T_EQ_STR(evs(&f), "PRESENCE sip:bob@sip.test unknown\n");
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(tick_at(&f, t3 + SIP_SUB_TIMEOUT_MS + 30000), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    T_ASSERT(strstr(outs(&f), "\r\nTo: <sip:bob@sip.test>\r\n") && !strstr(outs(&f), "Route:"));
    T_ASSERT(hdr(outs(&f), "Call-ID", a, sizeof(a)));
    T_ASSERT(strcmp(a, b));
    free(sb);

    /* A NOTIFY before the 2xx makes the dialog: its Record-Route in order, its Contact. */
    sb = strdup(outs(&f));
    clear(&f);
    r = notify_for(sb, "n1", 1, "active;expires=600", CT_PIDF, PIDF_OPEN,
                   "Record-Route: <sip:p1.test;lr>, <sip:p2.test;lr>\r\n");
    c = strstr(r, "Contact: <sip:127.0.0.1:5060;transport=tcp>");
    memcpy(c, "Contact: <sip:127.0.0.9:5060;transport=tcp>", 43);
    T_EQ_INT(feed(&f, r, t3 + 70000), 0);
    free(r);
    T_EQ_STR(evs(&f), "PRESENCE sip:bob@sip.test available\n");
    r = resp_for(sb, 200, "OK", "Expires: 600\r\n");
    T_EQ_INT(feed(&f, r, t3 + 70000), 0);
    free(r);
    clear(&f);
    T_EQ_INT(tick_at(&f, t3 + 70000 + 480000), 0);
    o = outs(&f);
    T_ASSERT(!strncmp(o, "SUBSCRIBE sip:127.0.0.9:5060;transport=tcp SIP/2.0\r\n", 52));
    T_ASSERT(strstr(o, "\r\nTo: <sip:bob@sip.test>;tag=n1\r\n"));
    T_ASSERT(strstr(o, "\r\nRoute: <sip:p1.test;lr>\r\nRoute: <sip:p2.test;lr>\r\n"));
    /* A 481 to a refresh: the server lost the dialog; a new one at once, presence kept. */
    r = resp_for(o, 481, "Call/Transaction Does Not Exist", "");
    clear(&f);
    T_EQ_INT(feed(&f, r, t3 + 560000), 0);
    free(r);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(tick_at(&f, t3 + 560100), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    free(sb);
    fx_free(&f);
}

/* Watch bob, accept the SUBSCRIBE and report him available; the SUBSCRIBE is returned. */
static char *
bob_available(struct fx *f, uint64_t now)
{
    struct im_str w[] = { IM_STR("sip:bob@sip.test") };
    T_EQ_INT(sip_ops.set_watch(f->s, w, 1, AT(now)), 0);
    char *sb = strdup(outs(f));
    char *r = resp_for(sb, 200, "OK", "Expires: 600\r\n");
    clear(f);
    T_EQ_INT(feed(f, r, now), 0);
    free(r);
    r = notify_for(sb, "srv", 1, "active;expires=600", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(f, r, now), 0);
    free(r);
    T_EQ_STR(evs(f), "PRESENCE sip:bob@sip.test available\n");
    clear(f);
    return sb;
}

T_TEST(notify_terminated)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    uint64_t t = T0 + 1000;
    char *sb = bob_available(&f, t);
    /* deactivated after a while: subscribe again at once, the presence stands. */
    t += 60000;
    char *r = notify_for(sb, "srv", 2, "terminated;reason=deactivated", NULL, "", NULL);
    T_EQ_INT(feed(&f, r, t), 0);
    free(r);
    check_answer(&f, "SIP/2.0 200 OK\r\n", 2);
    T_EQ_STR(evs(&f), "");
    char *sub2 = msg_n(outs(&f), 1);
    T_ASSERT(sub2 && !strncmp(sub2, "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    T_ASSERT(strstr(sub2, "\r\nTo: <sip:bob@sip.test>\r\n"));
    char c1[128], c2[128];
    T_ASSERT(hdr(sub2, "Call-ID", c1, sizeof(c1)) && hdr(sb, "Call-ID", c2, sizeof(c2)));
    T_ASSERT(strcmp(c1, c2));
    free(sb);
    sb = sub2;
    r = resp_for(sb, 200, "OK", "Expires: 600\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, t + 200), 0);
    free(r);
    r = notify_for(sb, "srv", 1, "active", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(&f, r, t + 200), 0);
    free(r);
    T_EQ_STR(evs(&f), "");
    /* probation with retry-after: offline now, again in 20 s. */
    clear(&f);
    r = notify_for(sb, "srv", 2, "terminated;reason=probation;retry-after=20", NULL, "", NULL);
    T_EQ_INT(feed(&f, r, t + 300), 0);
    free(r);
    T_EQ_STR(evs(&f), "PRESENCE sip:bob@sip.test offline\n");
    clear(&f);
    T_EQ_INT(tick_at(&f, t + 300 + 19999), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(tick_at(&f, t + 300 + 20000), 0);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
    free(sb);
    sb = strdup(outs(&f));
    r = resp_for(sb, 200, "OK", "Expires: 600\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, t + 21000), 0);
    free(r);
    /* A terminating NOTIFY's own document counts; then rejected: over for this session. */
    r = notify_for(sb, "srv", 1, "active", CT_PIDF, PIDF_AWAY, NULL);
    T_EQ_INT(feed(&f, r, t + 21000), 0);
    free(r);
    r = notify_for(sb, "srv", 2, "terminated;reason=rejected", NULL, "", NULL);
    T_EQ_INT(feed(&f, r, t + 22000), 0);
    free(r);
    T_EQ_STR(evs(&f), "PRESENCE sip:bob@sip.test away\nPRESENCE sip:bob@sip.test offline\n");
    clear(&f);
    for (uint64_t k = 1; k <= 40; k++)
        T_EQ_INT(tick_at(&f, t + 22000 + k * 60000), 0);
    T_ASSERT(!strstr(outs(&f), "SUBSCRIBE"));
    /* A NOTIFY in the ended dialog: 481. */
    r = notify_for(sb, "srv", 3, "active", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(&f, r, t + 3000000), 0);
    free(r);
    check_answer(&f, "SIP/2.0 481 ", 3);
    T_EQ_STR(evs(&f), "");
    free(sb);
    fx_free(&f);

    /* Terminated at once with no reason, again and again: the retries back off. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    t = T0 + 1000;
    sb = bob_available(&f, t);
    uint64_t want = 30000;
    for (int k = 0; k < 8; k++) {
        r = notify_for(sb, "srv", 2, "terminated", NULL, "", NULL);
        clear(&f);
        T_EQ_INT(feed(&f, r, t), 0);
        free(r);
        T_EQ_STR(evs(&f), k ? "" : "PRESENCE sip:bob@sip.test offline\n");
        clear(&f);
        T_EQ_INT(tick_at(&f, t + want - 1), 0);
        T_EQ_STR(outs(&f), "");
        T_EQ_INT(tick_at(&f, t + want), 0);
        T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:bob@sip.test SIP/2.0\r\n", 35));
        t += want;
        free(sb);
        sb = strdup(outs(&f));
        r = resp_for(sb, 200, "OK", "Expires: 600\r\n");
        clear(&f);
        T_EQ_INT(feed(&f, r, t), 0);
        free(r);
        want = want * 2 > SIP_RETRY_MAX_MS ? SIP_RETRY_MAX_MS : want * 2;
    }
    free(sb);
    fx_free(&f);
}

T_TEST(unwatch_and_logout)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    uint64_t t = T0 + 1000;
    char *sb = bob_available(&f, t);
    struct im_str w2[] = { IM_STR("sip:bob@sip.test"), IM_STR("sip:carol@sip.test") };
    T_EQ_INT(sip_ops.set_watch(f.s, w2, 2, AT(t)), 0);
    T_EQ_INT(count_str(outs(&f), "SUBSCRIBE "), 1);      /* bob's stays as it is */
    char *sc = strdup(outs(&f));
    T_ASSERT(!strncmp(sc, "SUBSCRIBE sip:carol@sip.test SIP/2.0\r\n", 37));
    char *r = resp_for(sc, 200, "OK", "Expires: 600\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, t), 0);
    free(r);
    r = notify_for(sc, "srv", 1, "active", CT_PIDF, PIDF_CLOSED, NULL);
    T_EQ_INT(feed(&f, r, t), 0);
    free(r);
    T_EQ_STR(evs(&f), "PRESENCE sip:carol@sip.test offline\n");

    /* bob leaves the list: un-SUBSCRIBE in his dialog, nothing reported. */
    clear(&f);
    struct im_str w1[] = { IM_STR("sip:carol@sip.test") };
    T_EQ_INT(sip_ops.set_watch(f.s, w1, 1, AT(t + 1000)), 0);
    const char *o = outs(&f);
    /* (to the remote target the NOTIFY's Contact gave) */
    T_ASSERT(!strncmp(o, "SUBSCRIBE sip:127.0.0.1:5060;transport=tcp SIP/2.0\r\n", 52));
    T_ASSERT(strstr(o, "\r\nExpires: 0\r\n") && strstr(o, "\r\nTo: <sip:bob@sip.test>;tag=srv\r\n"));
    T_ASSERT(strstr(o, "\r\nCSeq: 2 SUBSCRIBE\r\n"));
    r = resp_for(o, 200, "OK", "Expires: 0\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, t + 1100), 0);
    free(r);
    r = notify_for(sb, "srv", 2, "terminated;reason=timeout", CT_PIDF, PIDF_CLOSED, NULL);
    T_EQ_INT(feed(&f, r, t + 1100), 0);
    free(r);
    check_answer(&f, "SIP/2.0 200 OK\r\n", 2);
    clear(&f);
    r = notify_for(sb, "srv", 3, "active", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(&f, r, t + 1200), 0);
    free(r);
    check_answer(&f, "SIP/2.0 481 ", 3);
    T_EQ_STR(evs(&f), "");

    /* erin is added and removed before her SUBSCRIBE is answered: ended at its 2xx. */
    clear(&f);
    struct im_str w3[] = { IM_STR("sip:carol@sip.test"), IM_STR("sip:erin@sip.test") };
    T_EQ_INT(sip_ops.set_watch(f.s, w3, 2, AT(t + 2000)), 0);
    char *se = strdup(outs(&f));
    clear(&f);
    T_EQ_INT(sip_ops.set_watch(f.s, w1, 1, AT(t + 2100)), 0);
    T_EQ_STR(outs(&f), "");
    r = resp_for(se, 200, "OK", "Expires: 600\r\n");
    T_EQ_INT(feed(&f, r, t + 2200), 0);
    free(r);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:erin@sip.test SIP/2.0\r\n", 36));
    T_ASSERT(strstr(outs(&f), "\r\nExpires: 0\r\n") && strstr(outs(&f), ";tag=srv\r\n"));
    r = notify_for(se, "srv", 1, "active", CT_PIDF, PIDF_OPEN, NULL);   /* crossed on the wire */
    clear(&f);
    T_EQ_INT(feed(&f, r, t + 2200), 0);
    free(r);
    check_answer(&f, "SIP/2.0 200 OK\r\n", 1);
    T_EQ_STR(evs(&f), "");
    /* ... and when no final NOTIFY comes, dropped after 32 s: its NOTIFYs are then unknown. */
    T_EQ_INT(tick_at(&f, t + 2200 + SIP_SUB_TIMEOUT_MS + 1), 0);
    clear(&f);
    r = notify_for(se, "srv", 2, "active", CT_PIDF, PIDF_OPEN, NULL);
    T_EQ_INT(feed(&f, r, t + 2200 + SIP_SUB_TIMEOUT_MS + 2), 0);
    free(r);
    T_ASSERT(!strncmp(outs(&f), "SIP/2.0 481 ", 12));

    /* logout: the publication removed, carol's subscription ended, then the binding. */
    clear(&f);
    sip_ops.logout(f.s);
    char *m0 = msg_n(outs(&f), 0), *m1 = msg_n(outs(&f), 1), *m2 = msg_n(outs(&f), 2);
    T_ASSERT(m0 && m1 && m2 && !msg_n(outs(&f), 3));
    T_ASSERT(!strncmp(m0, "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36));
    T_ASSERT(strstr(m0, "\r\nExpires: 0\r\n") && strstr(m0, "\r\nSIP-If-Match: et-1\r\n"));
    T_ASSERT(strstr(m0, "\r\nContent-Length: 0\r\n"));
    T_ASSERT(!strncmp(m1, "SUBSCRIBE sip:127.0.0.1:5060;transport=tcp SIP/2.0\r\n", 52));
    T_ASSERT(strstr(m1, "\r\nExpires: 0\r\n") && strstr(m1, "\r\nTo: <sip:carol@sip.test>;tag=srv\r\n"));
    T_ASSERT(!strncmp(m2, "REGISTER sip:sip.test SIP/2.0\r\n", 31) && strstr(m2, "\r\nExpires: 0\r\n"));
    free(m0);
    free(m1);
    free(m2);
    free(se);
    free(sc);
    free(sb);
    fx_free(&f);
}

T_TEST(subscribe_window)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    char names[40][32];
    struct im_str w[40];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof(names[i]), "sip:u%02d@sip.test", i);
        w[i] = (struct im_str){ names[i], (uint32_t)strlen(names[i]) };
    }
    T_EQ_INT(sip_ops.set_watch(f.s, w, 40, AT(T0 + 1000)), 0);
    T_EQ_INT(count_str(outs(&f), "SUBSCRIBE sip:"), SIP_SUB_WINDOW);
    /* Each final answer lets one more go. */
    char *m = msg_n(outs(&f), 3);
    char *r = resp_for(m, 404, "Not Found", "");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 1100), 0);
    free(r);
    free(m);
    T_EQ_INT(count_str(outs(&f), "SUBSCRIBE sip:"), 1);
    T_ASSERT(!strncmp(outs(&f), "SUBSCRIBE sip:u16@sip.test ", 27));
    /* Ticks alone do not exceed the window. */
    clear(&f);
    T_EQ_INT(tick_at(&f, T0 + 2000), 0);
    T_EQ_STR(outs(&f), "");
    /* The same list again changes nothing; a list without u00 ends nothing under way yet. */
    T_EQ_INT(sip_ops.set_watch(f.s, w, 40, AT(T0 + 2100)), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.set_watch(f.s, w + 1, 39, AT(T0 + 2200)), 0);
    T_EQ_STR(outs(&f), "");
    /* Timeouts free the window too: every one under way gets its chance. */
    int seen = 0;
    for (uint64_t k = 1; k <= 12 && seen < 40; k++) {
        clear(&f);
        T_EQ_INT(tick_at(&f, T0 + 2200 + k * SIP_SUB_TIMEOUT_MS), 0);
        seen += count_str(outs(&f), "SUBSCRIBE sip:u39@");
    }
    T_ASSERT(seen >= 1);
    T_ASSERT(!strstr(evs(&f), "PRESENCE"));     /* never known, so never "unknown" */
    fx_free(&f);
}

T_TEST(publish_own_presence)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    f.keep_publish = true;
    login_reg(&f, CHAL_MD5);
    const char *o = outs(&f);
    T_ASSERT(!strncmp(o, "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36));
    T_ASSERT(strstr(o, "\r\nTo: <sip:alice@sip.test>\r\n"));
    T_ASSERT(strstr(o, "\r\nEvent: presence\r\n") && strstr(o, "\r\nExpires: 600\r\n"));
    T_ASSERT(strstr(o, "\r\nContent-Type: application/pidf+xml\r\n"));
    T_ASSERT(!strstr(o, "SIP-If-Match"));
    check_auth(o, "Authorization", false, "PUBLISH", "sip:alice@sip.test", "n0nce-1", "00000002");
    const char *body = strstr(o, "\r\n\r\n") + 4;
    enum im_presence p = IM_PRES_UNKNOWN;
    T_EQ_INT(sip_pidf_parse(body, strlen(body), &p), 0);   /* our own parser agrees */
    T_ASSERT(p == IM_PRES_AVAILABLE);
    T_ASSERT(strstr(body, "entity=\"sip:alice@sip.test\"") && strstr(body, "<basic>open</basic>"));
    char cl[16];
    T_ASSERT(hdr(o, "Content-Length", cl, sizeof(cl)));
    T_EQ_INT(strtoul(cl, NULL, 10), strlen(body));
    char cid[128], cid2[128];
    T_ASSERT(hdr(o, "Call-ID", cid, sizeof(cid)));
    /* 407: again with proxy credentials and the document. */
    char *r = resp_for(o, 407, "Proxy Authentication Required", CHAL_P);
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 100), 0);
    free(r);
    o = outs(&f);
    T_ASSERT(!strncmp(o, "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36) && strstr(o, "\r\nCSeq: 2 PUBLISH\r\n"));
    T_ASSERT(strstr(o, "<basic>open</basic>"));
    check_auth(o, "Proxy-Authorization", false, "PUBLISH", "sip:alice@sip.test", "pn-7", "00000001");
    /* 200 with an entity tag: refreshed at 80 % with SIP-If-Match and no body. */
    r = resp_for(o, 200, "OK", "SIP-ETag: et-A\r\nExpires: 300\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 200), 0);
    free(r);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(tick_at(&f, T0 + 200 + 239999), 0);
    T_ASSERT(!strstr(outs(&f), "PUBLISH"));
    T_EQ_INT(tick_at(&f, T0 + 200 + 240000), 0);
    o = outs(&f);
    T_ASSERT(!strncmp(o, "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36) && strstr(o, "\r\nCSeq: 3 PUBLISH\r\n"));
    T_ASSERT(strstr(o, "\r\nSIP-If-Match: et-A\r\n") && strstr(o, "\r\nContent-Length: 0\r\n\r\n"));
    T_ASSERT(!strstr(o, "Content-Type"));
    T_ASSERT(hdr(o, "Call-ID", cid2, sizeof(cid2)));
    T_EQ_STR(cid2, cid);
    /* 412: the server forgot the tag; the whole document again, without SIP-If-Match. */
    r = resp_for(o, 412, "Conditional Request Failed", "");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 241000), 0);
    free(r);
    o = outs(&f);
    T_ASSERT(strstr(o, "\r\nCSeq: 4 PUBLISH\r\n") && !strstr(o, "SIP-If-Match") && strstr(o, "<basic>open</basic>"));
    /* 500: a notice, retried in 30 s. */
    r = resp_for(o, 500, "Server Error", "");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 242000), 0);
    free(r);
    T_EQ_STR(evs(&f), "NOTICE presence not published: 500 Server Error (retrying in 30 s)\n");
    T_EQ_INT(tick_at(&f, T0 + 242000 + 29999), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(tick_at(&f, T0 + 242000 + 30000), 0);
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 5 PUBLISH\r\n"));
    /* No answer: the same, after 32 s, with the next backoff. */
    clear(&f);
    T_EQ_INT(tick_at(&f, T0 + 272000 + SIP_SUB_TIMEOUT_MS), 0);
    T_EQ_STR(evs(&f), "NOTICE presence not published: no answer to PUBLISH within 32 s (retrying in 60 s)\n");
    /* A new tag from a 2xx replaces the old one; logout removes the publication with it. */
    T_EQ_INT(tick_at(&f, T0 + 272000 + SIP_SUB_TIMEOUT_MS + 60000), 0);
    r = resp_for(outs(&f), 200, "OK", "SIP-ETag: et-B\r\nExpires: 300\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 400000), 0);
    free(r);
    sip_ops.logout(f.s);
    o = outs(&f);
    T_ASSERT(!strncmp(o, "PUBLISH sip:alice@sip.test SIP/2.0\r\n", 36));
    T_ASSERT(strstr(o, "\r\nSIP-If-Match: et-B\r\n") && strstr(o, "\r\nExpires: 0\r\n"));
    fx_free(&f);

    /* A server without PUBLISH: told once, never asked again. */
    fx_init(&f, "sip:o'k&x@sip.test", "s3cret", IM_TLS_NONE);
    f.keep_publish = true;
    login_reg(&f, CHAL_MD5);
    T_ASSERT(strstr(outs(&f), "entity=\"sip:o&apos;k&amp;x@sip.test\""));
    body = strstr(outs(&f), "\r\n\r\n") + 4;
    T_EQ_INT(sip_pidf_parse(body, strlen(body), &p), 0);
    r = resp_for(outs(&f), 405, "Method Not Allowed", "");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0 + 100), 0);
    free(r);
    T_ASSERT(strstr(evs(&f), "NOTICE the SIP server does not take PUBLISH (405 Method Not Allowed)"));
    for (uint64_t k = 1; k <= 30; k++)
        T_EQ_INT(tick_at(&f, T0 + k * 120000), 0);
    T_ASSERT(!strstr(outs(&f), "PUBLISH"));
    clear(&f);
    sip_ops.logout(f.s);
    T_ASSERT(!strncmp(outs(&f), "REGISTER ", 9));
    fx_free(&f);
}

/* The monotonic clock drives the timers; the wall clock only stamps messages. */
T_TEST(clock_roles)
{
    struct fx f;
    const uint64_t wall = 1800000000000ull;

    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    clear(&f);
    char *r = request("MESSAGE", "text/plain", "hi");
    T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)r, strlen(r),
                           (struct im_time){ .mono_ms = T0 + 100, .wall_ms = wall }), 0);
    free(r);
    T_EQ_STR(evs(&f), "MESSAGE sip:bob@sip.test ts=1800000000000 [hi]\n");
    /* our keepalive every SIP_KEEPALIVE_MS of the monotonic clock, whatever the wall says */
    clear(&f);
    T_EQ_INT(sip_ops.tick(f.s, (struct im_time){ .mono_ms = T0 + SIP_KEEPALIVE_MS - 1,
                                                 .wall_ms = wall + 36000000 }), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, (struct im_time){ .mono_ms = T0 + SIP_KEEPALIVE_MS, .wall_ms = wall - 36000000 }),
             0);
    T_EQ_STR(outs(&f), "\r\n\r\n");
    fx_free(&f);
}

T_MAIN(T_RUN(digest_rfc7616_example), T_RUN(digest_parse), T_RUN(normalize), T_RUN(framer_splits),
       T_RUN(framer_limits), T_RUN(msg_parse), T_RUN(register_md5_split_everywhere),
       T_RUN(register_refresh_timing), T_RUN(register_sha256_preferred), T_RUN(register_failures),
       T_RUN(message_out_407_then_202), T_RUN(message_in_200_after_commit), T_RUN(requests_answered),
       T_RUN(keepalive_and_logout), T_RUN(pidf_documents), T_RUN(subscribe_challenge_notify),
       T_RUN(subscribe_refresh_route_set), T_RUN(notify_terminated), T_RUN(unwatch_and_logout),
       T_RUN(subscribe_window), T_RUN(publish_own_presence), T_RUN(clock_roles))
