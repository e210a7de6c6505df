/*
 * test_sip.c - the SIP/SIMPLE adapter driven by scripted server byte streams,
 * plus its framer, address normalisation and digest arithmetic.
 *
 * Digest answers are checked against hashes computed here with mbedTLS from
 * the RFC 2617 / RFC 7616 formulas (HA1, HA2, KD), and the digest module
 * itself against the RFC 7616 3.9.1 example.  Randomness is a counter
 * (sip_set_rand), so every identifier is reproducible and server
 * transcripts can be prepared in advance and split at every position.
 */
#include <stdarg.h>

#include <mbedtls/md5.h>
#include <mbedtls/sha256.h>

#include "t.h"
#include "im_common.h"
#include "im_proto.h"
#include "sip/sip_int.h"

#define T0 1700000000000ull
#define LOCAL "127.0.0.1:40000"

/* ---- fixture ------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void
sb_put(struct sbuf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            abort();
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void __attribute__((format(printf, 2, 3)))
sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    char *tmp = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    sb_put(b, tmp, (size_t)n);
    free(tmp);
}

struct fx {
    struct im_account_cfg cfg;
    struct im_option opts[1];
    struct im_io io;
    struct im_sess *s;
    struct sbuf out, ev;
    uint8_t ctr;
    uint64_t tokens[16];
    int n_tokens;
};

static void
fx_event(void *ud, const struct im_event *e)
{
    struct fx *f = ud;
    switch (e->type) {
    case IM_EV_STATE:
        sb_printf(&f->ev, "STATE %s %.*s\n", im_account_state_name(e->u.state.state),
                  (int)e->u.state.detail.len, e->u.state.detail.p);
        break;
    case IM_EV_MESSAGE:
        if (!im_utf8_valid(e->u.message.body.p, e->u.message.body.len))
            abort();
        sb_printf(&f->ev, "MESSAGE %.*s ts=%llu [%.*s]\n", (int)e->u.message.from.len, e->u.message.from.p,
                  (unsigned long long)e->u.message.ts, (int)e->u.message.body.len, e->u.message.body.p);
        if (e->u.message.token && f->n_tokens < 16)
            f->tokens[f->n_tokens++] = e->u.message.token;
        break;
    case IM_EV_SENT:
        sb_printf(&f->ev, "SENT %llu\n", (unsigned long long)e->u.sent.msg);
        break;
    case IM_EV_NOTICE:
        sb_printf(&f->ev, "NOTICE %.*s\n", (int)e->u.notice.text.len, e->u.notice.text.p);
        break;
    default:
        sb_printf(&f->ev, "EVENT %d\n", (int)e->type);
        break;
    }
}

static int
fx_out(void *ud, const void *p, size_t n)
{
    struct fx *f = ud;
    sb_put(&f->out, p, n);
    return 0;
}

static const char *
fx_local(void *ud)
{
    return LOCAL;
}

static int
ctr_rand(void *ud, uint8_t *buf, size_t n)
{
    struct fx *f = ud;
    for (size_t i = 0; i < n; i++)
        buf[i] = f->ctr++;
    return 0;
}

static void
fx_init(struct fx *f, const char *login, const char *password, enum im_tls tls)
{
    memset(f, 0, sizeof(*f));
    f->cfg.account = 1;
    f->cfg.login = login;
    f->cfg.password = password;
    f->cfg.host = "127.0.0.1";
    f->cfg.port = 5060;
    f->cfg.tls = tls;
    f->cfg.tls_name = "sip.test";
    f->io.out = fx_out;
    f->io.event = fx_event;
    f->io.local_addr = fx_local;
    f->io.ud = f;
    f->s = sip_ops.create(&f->cfg, &f->io);
    if (!f->s)
        abort();
    sip_set_rand(f->s, ctr_rand, f);
}

static void
fx_free(struct fx *f)
{
    sip_ops.destroy(f->s);
    free(f->out.p);
    free(f->ev.p);
    memset(f, 0, sizeof(*f));
}

static int
feed(struct fx *f, const char *z, uint64_t now)
{
    return sip_ops.input(f->s, (const uint8_t *)z, strlen(z), now);
}

static void
clear(struct fx *f)
{
    f->out.len = f->ev.len = 0;
    if (f->out.p)
        f->out.p[0] = 0;
    if (f->ev.p)
        f->ev.p[0] = 0;
}

static const char *
outs(struct fx *f)
{
    return f->out.p ? f->out.p : "";
}

static const char *
evs(struct fx *f)
{
    return f->ev.p ? f->ev.p : "";
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
    struct sbuf b = { 0 };
    if (!hdr(req, "Call-ID", callid, sizeof(callid)) || !hdr(req, "CSeq", cseq, sizeof(cseq)) ||
        !hdr(req, "Via", via, sizeof(via)) || !hdr(req, "From", from, sizeof(from)) ||
        !hdr(req, "To", to, sizeof(to)))
        abort();
    sb_printf(&b, "SIP/2.0 %d %s\r\nVia: %s;received=127.0.0.1\r\nFrom: %s\r\nTo: %s;tag=srv\r\n"
              "Call-ID: %s\r\nCSeq: %s\r\n%sServer: test\r\nContent-Length: 0\r\n\r\n",
              code, reason, via, from, to, callid, cseq, extra);
    return b.p;
}

#define CHAL_MD5 "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n0nce-1\", qop=\"auth\", algorithm=MD5\r\n"
#define CHAL_SHA "WWW-Authenticate: Digest realm=\"sip.test\", nonce=\"n0nce-1\", qop=\"auth\", algorithm=SHA-256\r\n"
#define CHAL_P   "Proxy-Authenticate: Digest realm=\"sip.test\", nonce=\"pn-7\", qop=\"auth,auth-int\", " \
                 "opaque=\"op\"\r\n"

/* Log in: REGISTER, 401, REGISTER with credentials, 200 → ONLINE. */
static void
login(struct fx *f, const char *chal)
{
    T_EQ_INT(sip_ops.start(f->s, T0), 0);
    char *r = resp_for(outs(f), 401, "Unauthorized", chal);
    clear(f);
    T_EQ_INT(feed(f, r, T0 + 10), 0);
    free(r);
    r = resp_for(outs(f), 200, "OK", "Contact: <sip:alice@" LOCAL ";transport=tcp>;expires=300\r\n");
    T_EQ_INT(feed(f, r, T0 + 20), 0);
    free(r);
    T_EQ_STR(evs(f), "STATE online \n");
    clear(f);
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
frame_all(const char *in, size_t n, size_t cut, struct sbuf *rec)
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
                sb_printf(rec, "PING\n");
            else
                sb_printf(rec, "MSG %zu %zu [%.*s]\n", hl, bl, (int)bl, (const char *)p + hl);
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
        struct sbuf rec = { 0 };
        T_EQ_INT(frame_all(in, sizeof(in) - 1, cut, &rec), 0);
        if (strcmp(rec.p ? rec.p : "", want))
            T_FAIL("cut %zu: got\n%s", cut, rec.p ? rec.p : "");
        free(rec.p);
    }
}

T_TEST(framer_limits)
{
    struct sbuf rec = { 0 };
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
    free(rec.p);
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
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
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

    struct sbuf all = { 0 };
    sb_printf(&all, "%s%s", c401, ok);
    for (size_t cut = 0; cut <= all.len; cut++) {
        fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
        T_EQ_INT(sip_ops.start(f.s, T0), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p, cut, T0 + 5), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)all.p + cut, all.len - cut, T0 + 5), 0);
        if (strcmp(evs(&f), "STATE online \n"))
            T_FAIL("cut %zu: events %s", cut, evs(&f));
        fx_free(&f);
    }
    free(all.p);
    free(c401);
    free(ok);
}

T_TEST(register_refresh_timing)
{
    struct fx f;
    fx_init(&f, "alice@Sip.Test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    /* Granted 300 s: refresh at 80 % = 240 s after the 200 (at T0+20). */
    T_EQ_INT(sip_ops.tick(f.s, T0 + 20 + 239000), 0);
    T_ASSERT(!strstr(outs(&f), "REGISTER"));
    clear(&f);
    T_EQ_INT(sip_ops.tick(f.s, T0 + 20 + 240000), 0);
    T_ASSERT(!strncmp(outs(&f), "REGISTER ", 9));
    /* Pre-emptive credentials with the next nonce count. */
    check_auth(outs(&f), "Authorization", false, "REGISTER", "sip:sip.test", "n0nce-1", "00000002");
    T_ASSERT(strstr(outs(&f), "\r\nCSeq: 3 REGISTER\r\n"));
    /* The refresh answered by a 200 with only an Expires header. */
    char *ok = resp_for(outs(&f), 200, "OK", "Expires: 100\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, ok, T0 + 300000), 0);
    free(ok);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, T0 + 300000 + 79000), 0);
    T_ASSERT(!strstr(outs(&f), "REGISTER"));
    T_EQ_INT(sip_ops.tick(f.s, T0 + 300000 + 80000), 0);
    T_ASSERT(strstr(outs(&f), "REGISTER "));
    /* No answer within 30 s: ERROR. */
    T_ASSERT(sip_ops.tick(f.s, T0 + 300000 + 80000 + 30000) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error no answer to REGISTER"));
    fx_free(&f);
}

T_TEST(register_sha256_preferred)
{
    struct fx f;
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
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
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
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
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
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
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
    r = resp_for(outs(&f), 403, "Forbidden Here", "");
    T_ASSERT(feed(&f, r, T0) < 0);
    free(r);
    T_EQ_STR(evs(&f), "STATE auth_failed REGISTER refused: 403 Forbidden Here\n");
    fx_free(&f);

    /* 500: ERROR with the status line. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
    r = resp_for(outs(&f), 500, "Server \x01" "Error", "");
    T_ASSERT(feed(&f, r, T0) < 0);
    free(r);
    T_EQ_STR(evs(&f), "STATE error REGISTER failed: 500 Server  Error\n");
    fx_free(&f);

    /* 423 Interval Too Brief: retried with Min-Expires. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
    r = resp_for(outs(&f), 423, "Interval Too Brief", "Min-Expires: 900\r\n");
    clear(&f);
    T_EQ_INT(feed(&f, r, T0), 0);
    free(r);
    T_ASSERT(strstr(outs(&f), "\r\nExpires: 900\r\n"));
    fx_free(&f);

    /* STARTTLS is refused at start; a bad login too. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_STARTTLS);
    T_ASSERT(sip_ops.start(f.s, T0) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error SIP has no STARTTLS"));
    T_EQ_STR(outs(&f), "");
    fx_free(&f);
    fx_init(&f, "alice", "s3cret", IM_TLS_NONE);
    T_ASSERT(sip_ops.start(f.s, T0) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error "));
    fx_free(&f);
    /* TLS: the transport says so. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_DIRECT);
    T_EQ_INT(sip_ops.start(f.s, T0), 0);
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
    T_EQ_INT(sip_ops.tick(f.s, T0 + 150 + 1000), 0);
    T_EQ_STR(evs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, T0 + 150 + SIP_TX_TIMEOUT_MS + 1000), 0);
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
    struct sbuf b = { 0 };
    sb_printf(&b, "%s", in);
    for (size_t cut = 0; cut <= b.len; cut++) {
        clear(&f);
        f.n_tokens = 0;
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)b.p, cut, T0 + 500), 0);
        T_EQ_INT(sip_ops.input(f.s, (const uint8_t *)b.p + cut, b.len - cut, T0 + 500), 0);
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
    free(b.p);
    fx_free(&f);
}

static char *
request(const char *method, const char *ctype, const char *body)
{
    struct sbuf b = { 0 };
    sb_printf(&b, "%s sip:alice@" LOCAL " SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
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
        T_ASSERT(!cases[i].has_allow || strstr(outs(&f), "\r\nAllow: MESSAGE, OPTIONS, ACK\r\n"));
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
    T_EQ_INT(sip_ops.tick(f.s, T0 + 1000), 0);
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
    T_EQ_INT(sip_ops.tick(f.s, T0 + 29000), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, T0 + 30000), 0);
    T_EQ_STR(outs(&f), "\r\n\r\n");
    T_EQ_INT(feed(&f, "\r\n", T0 + 30010), 0);
    clear(&f);
    T_EQ_INT(sip_ops.tick(f.s, T0 + 59000), 0);
    T_EQ_STR(outs(&f), "");
    T_EQ_INT(sip_ops.tick(f.s, T0 + 60000), 0);
    T_EQ_STR(outs(&f), "\r\n\r\n");
    /* logout: REGISTER with Expires: 0 for our contact, with credentials. */
    clear(&f);
    sip_ops.logout(f.s);
    T_ASSERT(!strncmp(outs(&f), "REGISTER sip:sip.test SIP/2.0\r\n", 31));
    T_ASSERT(strstr(outs(&f), "\r\nExpires: 0\r\n"));
    T_ASSERT(strstr(outs(&f), "\r\nContact: <sip:alice@" LOCAL ";transport=tcp>\r\n"));
    check_auth(outs(&f), "Authorization", false, "REGISTER", "sip:sip.test", "n0nce-1", "00000002");
    fx_free(&f);

    /* No pong within 15 s of our ping: ERROR. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    T_EQ_INT(sip_ops.tick(f.s, T0 + 30000), 0);
    T_EQ_INT(sip_ops.tick(f.s, T0 + 44000), 0);
    T_ASSERT(sip_ops.tick(f.s, T0 + 45000) < 0);
    T_ASSERT(strstr(evs(&f), "STATE error the SIP server stopped answering keepalives"));
    fx_free(&f);

    /* Framing errors are final. */
    fx_init(&f, "sip:alice@sip.test", "s3cret", IM_TLS_NONE);
    login(&f, CHAL_MD5);
    T_ASSERT(feed(&f, "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2000000\r\n\r\n", T0) == -IM_ETOOBIG);
    T_ASSERT(strstr(evs(&f), "STATE error the server sent a SIP message over the limits"));
    fx_free(&f);
}

T_MAIN(T_RUN(digest_rfc7616_example), T_RUN(digest_parse), T_RUN(normalize), T_RUN(framer_splits),
       T_RUN(framer_limits), T_RUN(msg_parse), T_RUN(register_md5_split_everywhere),
       T_RUN(register_refresh_timing), T_RUN(register_sha256_preferred), T_RUN(register_failures),
       T_RUN(message_out_407_then_202), T_RUN(message_in_200_after_commit), T_RUN(requests_answered),
       T_RUN(keepalive_and_logout))
