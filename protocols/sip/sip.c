/*
 * sip.c - the SIP/SIMPLE adapter (sans-I/O): REGISTER with digest
 * authentication over one TCP (or TLS) connection, instant messages with
 * MESSAGE (RFC 3428) both ways, presence with SUBSCRIBE/NOTIFY and PUBLISH.
 *
 * Login.  The login is a SIP address of record, sip:user@domain.  start()
 * sends REGISTER for it with Contact = the connection's own local address
 * (io->local_addr), so the registrar reaches us over this very connection
 * (RFC 3261 18.2.2 / RFC 5626 style reuse).  A 401/407 challenge is answered
 * with digest credentials (RFC 7616: MD5, SHA-256, -sess, qop auth or
 * auth-int); the credentials are then sent pre-emptively with the nonce
 * count incremented, so most later requests are not challenged again.  The
 * first 2xx makes the account ONLINE; the binding is refreshed at 80 % of
 * the expiry the registrar granted.  A second challenge after credentials
 * (not marked stale) or 403 is AUTH_FAILED; any other failure is ERROR.
 * logout() removes the binding (Expires: 0) before the glue closes.
 *
 * Messages.  send_msg() sends MESSAGE text/plain;charset=UTF-8 with a fresh
 * Call-ID and keeps a transaction until the final answer (which comes only
 * after the recipient answered, so everything else goes on meanwhile).
 * 2xx (200, or 202 when the server stored it for an offline recipient) is
 * IM_EV_SENT.  A final error is reported as IM_EV_NOTICE and then still
 * IM_EV_SENT: the message was handed to the network and the relay must not
 * resend it forever.  No final answer within SIP_TX_TIMEOUT_MS: the same.
 *
 * Incoming MESSAGE with a text/ body (any subtype) (valid UTF-8) is reported as
 * IM_EV_MESSAGE with a token: its 200 OK is withheld until ops->committed()
 * says the message is durable (DESIGN 4: acknowledge only after the commit),
 * so a crash before the commit leaves the sender with a failure instead of a
 * lost message.  Other content types get 415, OPTIONS 200, methods we do not
 * handle 405 (known) or 501 (unknown); ACK is never answered.
 *
 * Keepalive: a CRLFCRLF ping every SIP_KEEPALIVE_MS (RFC 5626 4.4.1); the
 * server's own pings get a CRLF pong.  Nothing received within
 * SIP_PONG_TIMEOUT_MS of a ping is an ERROR (dead connection).
 *
 * Presence (SIMPLE).  Contacts are the list imfuse keeps: add/remove_contact
 * are NULL and set_watch() gives the watch list.  Each watched address gets
 * a subscription (RFC 6665, RFC 3856): SUBSCRIBE Event: presence, Accept:
 * application/pidf+xml, Contact = our local address so the NOTIFYs come
 * back over this connection.  At most SIP_SUB_WINDOW SUBSCRIBEs await an
 * answer at once; the rest follow as answers come.  Each subscription is a
 * dialog (Call-ID, both tags, CSeq, remote target, route set) refreshed in
 * the dialog at 80 % of the granted expiry (or of a shorter expires a NOTIFY
 * gives), and ended with Expires: 0 when its address leaves the watch list
 * and at logout.  Challenges are answered as for MESSAGE.  A NOTIFY in a
 * dialog is answered 200 (481 outside any, 489 for another event package)
 * and its PIDF body (sip_pidf.c) gives the contact's presence: basic open
 * is AVAILABLE (AWAY with an RPID away-like activity), closed is OFFLINE;
 * an empty body in an active subscription means nothing is published,
 * OFFLINE too.  A terminated subscription: with reason deactivated or
 * timeout it is renewed at once and the presence kept; rejected,
 * noresource and invariant end it for this session; other reasons (or
 * none) retry after retry-after or a backoff from SIP_RETRY_MIN_MS to
 * SIP_RETRY_MAX_MS; all of these report OFFLINE.  A SUBSCRIBE that fails
 * or times out retries the same way and reports UNKNOWN (the contact's
 * presence is no longer known).  IM_EV_PRESENCE is reported only on change.
 *
 * Our own presence: after the first REGISTER succeeds, PUBLISH (RFC 3903)
 * a PIDF document with basic open for our address of record, refreshed at
 * 80 % of the granted expiry with SIP-If-Match and no body (412: publish
 * the document again).  logout() removes it (Expires: 0), which watchers
 * see as closed.  A server that does not take PUBLISH (405, 489, 501) is
 * told once as a notice and not asked again this session.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sip_int.h"

enum sip_phase {
    P_NEW = 0,
    P_REG,          /* first REGISTER under way */
    P_ONLINE,
    P_DEAD,         /* a final state was reported; everything is refused */
};

/* An outgoing MESSAGE awaiting its final answer. */
struct sip_tx {
    uint64_t msg;
    uint64_t start_ms;
    uint32_t cseq;
    uint8_t auth_tries;
    char call_id[40];
    char ftag[20];
    char *to;           /* NUL-terminated; one allocation with body */
    char *body;
    uint32_t body_len;
};

enum sub_state {
    SUB_IDLE = 0,       /* no dialog: (re)SUBSCRIBE at `due` when the window allows */
    SUB_TRYING,         /* the initial SUBSCRIBE is under way */
    SUB_ACTIVE,         /* dialog up; refreshed at `due` */
    SUB_ENDING,         /* un-SUBSCRIBE sent; dropped at the final NOTIFY or at `due` */
    SUB_DONE,           /* terminated for good this session (rejected, noresource...) */
};

/* A presence subscription to one watched address (one dialog at a time). */
struct sip_sub {
    char *aor;          /* normalised address watched (owned) */
    uint32_t hash;      /* of aor, to find it fast */
    enum sub_state st;
    bool watched;       /* on the watch list; false while ending */
    bool mark;          /* scratch for set_watch() */
    bool tx;            /* a SUBSCRIBE awaits its final answer (counted in sub_inflight) */
    bool has_rcseq;
    uint8_t auth_tries, n423, fails;
    enum im_presence pres;  /* last reported */
    char call_id[40];
    char ftag[20];
    char *rtag;         /* remote tag, NULL before the dialog exists (owned) */
    char *target;       /* remote target URI, NULL = aor (owned) */
    char *routes;       /* "Route: <uri>\r\n" lines of the route set, or NULL (owned) */
    uint32_t cseq;      /* of our last SUBSCRIBE in this dialog */
    uint32_t rcseq;     /* of the last NOTIFY accepted */
    uint32_t want;      /* expiry to ask for (raised by 423) */
    uint32_t asked;     /* expiry asked by the SUBSCRIBE under way (0: un-SUBSCRIBE) */
    uint64_t tx_ms;     /* when the SUBSCRIBE under way was sent */
    uint64_t since;     /* when the dialog came up */
    uint64_t due;       /* see enum sub_state */
};

/* An incoming MESSAGE whose 200 OK waits for ops->committed(). */
struct sip_unc {
    uint64_t token;
    char *resp;
    size_t len;
};

struct im_sess {
    const struct im_account_cfg *cfg;
    const struct im_io *io;

    enum sip_phase phase;
    int rc;
    uint64_t now;                   /* monotonic: every timer */
    uint64_t wall;                  /* wall clock: message.ts only */

    char aor[SIP_ADDR_MAX + 1];     /* sip:user@host[:port] */
    char user[SIP_ADDR_MAX + 1];
    char host[SIP_ADDR_MAX + 1];    /* host[:port] as in the AOR */
    char local[96];                 /* our "ip:port" */
    const char *transport;          /* "TCP" or "TLS" */
    const char *tparam;             /* "tcp" or "tls" */
    uint32_t expires_req;
    const char *why_bad;            /* login or option problem found at create() */

    /* registration */
    char reg_call_id[40];
    char reg_tag[20];
    uint32_t reg_cseq;
    bool reg_pending;
    uint64_t reg_sent_ms;
    uint8_t reg_auth_tries;
    uint8_t reg_423;
    uint64_t refresh_at;
    uint32_t granted;

    /* cached challenges (401 and 407), reused with an increasing nonce count */
    struct sip_chal www, proxy;

    /* keepalive */
    uint64_t last_ping;
    uint64_t last_rx;
    bool ping_out;

    /* our publication (RFC 3903) */
    char pub_call_id[40];
    char pub_tag[20];
    char pub_tuple[20];
    char pub_etag[128];             /* entity tag, "" when none */
    uint32_t pub_cseq;
    uint32_t pub_want;              /* expiry to ask for (raised by 423) */
    uint32_t pub_asked;             /* of the PUBLISH under way (0: removal) */
    bool pub_started;
    bool pub_tx;                    /* a PUBLISH awaits its final answer */
    bool pub_body;                  /* ... and carries the document */
    bool pub_off;                   /* the server does not take PUBLISH */
    uint8_t pub_auth_tries, pub_423, pub_412, pub_fails;
    uint64_t pub_tx_ms;
    uint64_t pub_due;               /* refresh or retry, 0 = nothing planned */

    /* presence subscriptions, one per watched address (plus ending ones) */
    struct sip_sub *sub;
    size_t n_sub, cap_sub;
    unsigned sub_inflight;          /* subscriptions with tx set */
    uint64_t sub_due;               /* tick() looks at them from then on */
    bool watch_capped;              /* told once that the list is over SIP_MAX_WATCH */

    char to_tag[20];                /* our tag in answers to requests */
    uint64_t tok_base;
    uint32_t tok_next;

    struct sip_framer fr;
    struct sip_tx *tx;
    size_t n_tx, cap_tx;
    struct sip_unc *unc;
    size_t n_unc, cap_unc;
    struct im_buf ob;               /* the message being built (at most SIP_MAX_OUT bytes) */
};

/* ---- helpers ------------------------------------------------------------ */

/* 2n lower-case hex characters of randomness into out (2n+1 bytes). */
static int
rand_hex(struct im_sess *s, char *out, size_t nbytes)
{
    uint8_t b[32];
    static const char xd[] = "0123456789abcdef";
    if (nbytes > sizeof(b))
        nbytes = sizeof(b);
    int rc = im_rng_fill(s->io->rng, b, nbytes);
    if (rc)
        return rc;
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = xd[b[i] >> 4];
        out[2 * i + 1] = xd[b[i] & 15];
    }
    out[2 * nbytes] = 0;
    return 0;
}

static bool
str_eq(struct im_str a, const char *z)
{
    size_t n = strlen(z);
    return a.len == n && !memcmp(a.p, z, n);
}

static bool
str_ieq(struct im_str a, const char *z)
{
    size_t n = strlen(z);
    return a.len == n && !strncasecmp(a.p, z, n);
}

/* Printable, valid UTF-8 text for a detail or a notice. */
static size_t
clean_text(char *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)d[i] < 0x20 || d[i] == 0x7f)
            d[i] = ' ';
    if (!im_utf8_valid(d, n))
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)d[i] >= 0x80)
                d[i] = '?';
    return n;
}

/* Report a final state (once) and stop.  Returns the session's code, for
 * tail calls: fail(s, state, code, fmt, ...). */
#define fail(s_, st_, code_, ...) \
    ((s_)->phase = P_DEAD, im_io_fail((s_)->io, &(s_)->rc, (st_), (code_), clean_text, __VA_ARGS__))

static void __attribute__((format(printf, 2, 3)))
notice(struct im_sess *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    im_io_vnotice(s->io, clean_text, fmt, ap);
    va_end(ap);
}

/* s->ob could not hold the message being built: the session ends. */
static int
ob_failed(struct im_sess *s)
{
    int rc = s->ob.err;

    im_buf_reset(&s->ob);
    if (rc == -IM_ETOOBIG)
        return fail(s, IM_ACC_ERROR, rc, "outgoing SIP message over %u KiB", SIP_MAX_OUT / 1024);
    return fail(s, IM_ACC_ERROR, rc, "out of memory");
}

/* A reason phrase fit for a detail: at most 80 bytes. */
static int
reason_len(struct im_str r)
{
    return (int)(r.len > 80 ? 80 : r.len);
}

/* ---- addresses ------------------------------------------------------------ */

static bool
user_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-_.!~*'()&=+$,/", c));
}

static bool
hexd(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

int
sip_normalize(const char *in, size_t n, char *out, size_t outsz, const char **why)
{
    const char *p = in, *e = in + n;
    static const char *w;

    if (!why)
        why = &w;
    if (n >= 5 && !strncasecmp(p, "sips:", 5)) {
        *why = "sips: addresses are not supported (use sip: and tls)";
        return -IM_EINVAL;
    }
    if (n >= 4 && !strncasecmp(p, "sip:", 4))
        p += 4;
    const char *at = memchr(p, '@', (size_t)(e - p));
    if (!at) {
        *why = "a SIP address is sip:user@domain";
        return -IM_EINVAL;
    }
    if (at == p) {
        *why = "the user part of the SIP address is empty";
        return -IM_EINVAL;
    }
    for (const char *q = p; q < at; q++) {
        if (*q == '%') {
            if (at - q < 3 || !hexd(q[1]) || !hexd(q[2])) {
                *why = "bad %-escape in the user part of the SIP address";
                return -IM_EINVAL;
            }
            q += 2;
            continue;
        }
        if (*q == ':') {
            *why = "a SIP address must not carry a password or another scheme (sip:user@domain)";
            return -IM_EINVAL;
        }
        if (!user_char(*q)) {
            *why = "the user part of the SIP address has a character that is not allowed "
                   "(no parameters, headers, spaces or quotes)";
            return -IM_EINVAL;
        }
    }
    const char *h = at + 1;
    if (h >= e) {
        *why = "the domain of the SIP address is empty";
        return -IM_EINVAL;
    }
    const char *he;                     /* end of the host proper */
    if (*h == '[') {
        he = h + 1;
        while (he < e && (hexd(*he) || *he == ':' || *he == '.'))
            he++;
        if (he >= e || *he != ']' || he == h + 1) {
            *why = "bad IPv6 reference in the SIP address";
            return -IM_EINVAL;
        }
        he++;
    } else {
        he = h;
        while (he < e && ((*he >= 'a' && *he <= 'z') || (*he >= 'A' && *he <= 'Z') ||
                          (*he >= '0' && *he <= '9') || *he == '-' || *he == '.'))
            he++;
        if (he == h || *h == '.' || *h == '-' || he[-1] == '-' || memmem(h, (size_t)(he - h), "..", 2)) {
            *why = "the domain of the SIP address is not a host name or IP address";
            return -IM_EINVAL;
        }
    }
    if (he < e && *he == ':') {
        const char *d = he + 1;
        unsigned port = 0;
        while (d < e && *d >= '0' && *d <= '9' && port <= 65535)
            port = port * 10 + (unsigned)(*d++ - '0');
        if (d == he + 1 || d != e || !port || port > 65535) {
            *why = "bad port in the SIP address";
            return -IM_EINVAL;
        }
    } else if (he != e) {
        *why = "a SIP address must not carry parameters or headers (sip:user@domain)";
        return -IM_EINVAL;
    }
    size_t ulen = (size_t)(at - p), hlen = (size_t)(e - h);
    size_t total = 4 + ulen + 1 + hlen;
    if (total > SIP_ADDR_MAX || total >= outsz) {
        *why = "the SIP address is too long (255 bytes at most)";
        return -IM_EINVAL;
    }
    memcpy(out, "sip:", 4);
    memcpy(out + 4, p, ulen);
    out[4 + ulen] = '@';
    for (size_t i = 0; i < hlen; i++) {
        char c = h[i];
        out[5 + ulen + i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    out[total] = 0;
    return 0;
}

static int
sip_normalize_z(const char *in, char *out, size_t outsz, const char **why)
{
    if (!in) {
        *why = "a SIP address is sip:user@domain";
        return -IM_EINVAL;
    }
    return sip_normalize(in, strlen(in), out, outsz, why);
}

static void
sip_default_tls_name(const char *login, char *out, size_t outsz)
{
    char aor[SIP_ADDR_MAX + 1];
    const char *why;
    if (!outsz)
        return;
    out[0] = 0;
    if (sip_normalize_z(login, aor, sizeof(aor), &why))
        return;
    const char *h = strchr(aor, '@') + 1;
    size_t n;
    if (*h == '[') {
        const char *cb = strchr(h, ']');
        h++;
        n = (size_t)(cb - h);
    } else {
        const char *c = strchr(h, ':');
        n = c ? (size_t)(c - h) : strlen(h);
    }
    if (n >= outsz)
        n = outsz - 1;
    memcpy(out, h, n);
    out[n] = 0;
}

/* The URI of a From/To/Contact value ("name" <uri>;params or uri;params). */
static struct im_str
value_uri(struct im_str v)
{
    uint32_t i = 0;
    bool q = false;
    for (; i < v.len; i++) {
        if (q) {
            if (v.p[i] == '\\')
                i++;
            else if (v.p[i] == '"')
                q = false;
            continue;
        }
        if (v.p[i] == '"')
            q = true;
        else if (v.p[i] == '<')
            break;
    }
    if (i < v.len) {
        uint32_t s = i + 1, k = s;
        while (k < v.len && v.p[k] != '>')
            k++;
        return (struct im_str){ v.p + s, k - s };
    }
    uint32_t k = 0;
    while (k < v.len && v.p[k] != ';' && v.p[k] != ' ' && v.p[k] != '\t')
        k++;
    return (struct im_str){ v.p, k };
}

/* Normalised address of a URI; the raw URI (trimmed to valid UTF-8) when it
 * is not a plain sip:user@host. */
static size_t
uri_address(struct im_str uri, char *out, size_t outsz)
{
    const char *why;
    uint32_t cut = uri.len;
    const char *at = memchr(uri.p, '@', uri.len);
    uint32_t from = at ? (uint32_t)(at - uri.p) : 0;
    for (uint32_t i = from; i < uri.len; i++)
        if (uri.p[i] == ';' || uri.p[i] == '?') {
            cut = i;
            break;
        }
    if (!sip_normalize(uri.p, cut, out, outsz, &why))
        return strlen(out);
    size_t n = uri.len < outsz - 1 ? uri.len : outsz - 1;
    if (n > SIP_ADDR_MAX)
        n = SIP_ADDR_MAX;
    memcpy(out, uri.p, n);
    n = clean_text(out, im_utf8_trim(out, n));
    if (!n) {
        im_strlcpy(out, "sip:unknown@invalid", outsz);
        n = strlen(out);
    }
    out[n] = 0;
    return n;
}

/* ---- requests ------------------------------------------------------------- */

static void
put_auth(struct im_sess *s, struct sip_chal *c, const char *method, const char *ruri,
         const void *body, size_t blen)
{
    char cnonce[33], nc8[9], resp[65];
    const char *qop = c->qop_auth ? "auth" : c->qop_auth_int ? "auth-int" : NULL;

    if (rand_hex(s, cnonce, 16))
        return;
    c->nc++;
    snprintf(nc8, sizeof(nc8), "%08x", c->nc);
    if (sip_digest_response(c->alg, s->user, c->realm, s->cfg->password ? s->cfg->password : "",
                            c->nonce, cnonce, nc8, qop, method, ruri, body, blen, resp))
        return;
    im_buf_printf(&s->ob, "%s: Digest username=\"%s\", realm=\"%s\", nonce=\"%s\", uri=\"%s\", "
              "response=\"%s\", algorithm=%s", c->proxy ? "Proxy-Authorization" : "Authorization",
              s->user, c->realm, c->nonce, ruri, resp, sip_digest_alg_name(c->alg));
    if (c->opaque[0])
        im_buf_printf(&s->ob, ", opaque=\"%s\"", c->opaque);
    if (qop)
        im_buf_printf(&s->ob, ", qop=%s, nc=%s, cnonce=\"%s\"", qop, nc8, cnonce);
    im_buf_append(&s->ob, "\r\n", 2);
}

/*
 * Build and write one request.  to_tag is the remote tag of a dialog or
 * NULL.  `extra` holds whole header lines (CRLF terminated) or is "".
 * ctype NULL means no body.
 */
static int
send_request(struct im_sess *s, const char *method, const char *ruri, const char *to_uri, const char *to_tag,
             const char *call_id, const char *ftag, uint32_t cseq, const char *extra,
             const char *ctype, const void *body, size_t blen)
{
    char branch[25];
    int rc = rand_hex(s, branch, 12);
    if (rc)
        return fail(s, IM_ACC_ERROR, rc, "no randomness for the SIP branch");
    im_buf_reset(&s->ob);
    im_buf_printf(&s->ob, "%s %s SIP/2.0\r\n"
              "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n"
              "Max-Forwards: 70\r\n"
              "From: <%s>;tag=%s\r\n"
              "To: <%s>%s%s\r\n"
              "Call-ID: %s\r\n"
              "CSeq: %u %s\r\n%s",
              method, ruri, s->transport, s->local, branch, s->aor, ftag, to_uri, to_tag ? ";tag=" : "",
              to_tag ? to_tag : "", call_id, cseq, method, extra);
    if (s->www.valid)
        put_auth(s, &s->www, method, ruri, body, blen);
    if (s->proxy.valid)
        put_auth(s, &s->proxy, method, ruri, body, blen);
    im_buf_printf(&s->ob, "User-Agent: imfuse\r\n");
    if (ctype)
        im_buf_printf(&s->ob, "Content-Type: %s\r\n", ctype);
    im_buf_printf(&s->ob, "Content-Length: %zu\r\n\r\n", blen);
    if (blen)
        im_buf_append(&s->ob, body, blen);
    if (s->ob.err)
        return ob_failed(s);
    rc = s->io->out(s->io->ud, im_buf_data(&s->ob), im_buf_len(&s->ob));
    if (rc < 0) {
        s->phase = P_DEAD;
        s->rc = rc;
    }
    return rc;
}

static int
send_register(struct im_sess *s, uint32_t expires)
{
    char ruri[SIP_ADDR_MAX + 8], extra[SIP_ADDR_MAX + 200];
    snprintf(ruri, sizeof(ruri), "sip:%s", s->host);
    snprintf(extra, sizeof(extra), "Contact: <sip:%s@%s;transport=%s>\r\nExpires: %u\r\n",
             s->user, s->local, s->tparam, expires);
    s->reg_cseq++;
    s->reg_pending = expires != 0;
    s->reg_sent_ms = s->now;
    return send_request(s, "REGISTER", ruri, s->aor, NULL, s->reg_call_id, s->reg_tag, s->reg_cseq, extra,
                        NULL, NULL, 0);
}

static int
send_tx(struct im_sess *s, struct sip_tx *t)
{
    return send_request(s, "MESSAGE", t->to, t->to, NULL, t->call_id, t->ftag, t->cseq, "",
                        "text/plain;charset=UTF-8", t->body, t->body_len);
}

static void
tx_free(struct sip_tx *t)
{
    free(t->to);
    t->to = t->body = NULL;
}

static void
tx_remove(struct im_sess *s, size_t i)
{
    tx_free(&s->tx[i]);
    memmove(&s->tx[i], &s->tx[i + 1], (s->n_tx - i - 1) * sizeof(*s->tx));
    s->n_tx--;
}

/* ---- answers to requests ---------------------------------------------------- */

static bool
has_tag(struct im_str to)
{
    struct im_str v;
    return sip_param(to, "tag", &v);
}

/*
 * Build the answer to request m into s->ob.  `extra` is whole header lines.
 */
static void
build_answer(struct im_sess *s, const struct sip_msg *m, int code, const char *reason, const char *extra)
{
    im_buf_reset(&s->ob);
    im_buf_printf(&s->ob, "SIP/2.0 %d %s\r\n", code, reason);
    for (const struct sip_hdr *h = sip_msg_find(m, SH_VIA, NULL); h; h = sip_msg_find(m, SH_VIA, h)) {
        im_buf_append(&s->ob, "Via: ", 5);
        im_buf_append(&s->ob, h->value.p, h->value.len);
        im_buf_append(&s->ob, "\r\n", 2);
    }
    if (m->from.len) {
        im_buf_append(&s->ob, "From: ", 6);
        im_buf_append(&s->ob, m->from.p, m->from.len);
        im_buf_append(&s->ob, "\r\n", 2);
    }
    if (m->to.len) {
        im_buf_append(&s->ob, "To: ", 4);
        im_buf_append(&s->ob, m->to.p, m->to.len);
        if (!has_tag(m->to))
            im_buf_printf(&s->ob, ";tag=%s", s->to_tag);
        im_buf_append(&s->ob, "\r\n", 2);
    }
    if (m->call_id.len) {
        im_buf_append(&s->ob, "Call-ID: ", 9);
        im_buf_append(&s->ob, m->call_id.p, m->call_id.len);
        im_buf_append(&s->ob, "\r\n", 2);
    }
    if (m->has_cseq)
        im_buf_printf(&s->ob, "CSeq: %u %.*s\r\n", m->cseq, (int)m->cseq_method.len, m->cseq_method.p);
    im_buf_printf(&s->ob, "%sUser-Agent: imfuse\r\nContent-Length: 0\r\n\r\n", extra);
}

static int
answer(struct im_sess *s, const struct sip_msg *m, int code, const char *reason, const char *extra)
{
    build_answer(s, m, code, reason, extra);
    if (s->ob.err)
        return ob_failed(s);
    int rc = s->io->out(s->io->ud, im_buf_data(&s->ob), im_buf_len(&s->ob));
    if (rc < 0) {
        s->phase = P_DEAD;
        s->rc = rc;
    }
    return rc;
}

#define ALLOW "Allow: MESSAGE, NOTIFY, OPTIONS, ACK\r\nAccept: text/plain\r\n"

static int on_notify(struct im_sess *s, const struct sip_msg *m);

/* Content type acceptable as a chat message: text/<anything>, or none at all. */
static bool
text_type(struct im_str ct)
{
    if (!ct.len)
        return true;
    return ct.len >= 5 && !strncasecmp(ct.p, "text/", 5);
}

static int
on_message(struct im_sess *s, const struct sip_msg *m)
{
    if (!text_type(m->ctype))
        return answer(s, m, 415, "Unsupported Media Type", ALLOW);
    struct im_str cs;
    if (sip_param(m->ctype, "charset", &cs) && cs.len && !str_ieq(cs, "utf-8") && !str_ieq(cs, "us-ascii"))
        return answer(s, m, 415, "Unsupported Media Type", "Accept: text/plain;charset=UTF-8\r\n");
    if (!im_utf8_valid(m->body.p, m->body.len))
        return answer(s, m, 400, "Body Is Not UTF-8", "");
    if (!m->body.len)
        return answer(s, m, 200, "OK", "");
    if (s->n_unc >= SIP_MAX_UNCOMMITTED)
        return answer(s, m, 503, "Service Unavailable", "Retry-After: 5\r\n");

    char from[SIP_ADDR_MAX + 1];
    size_t flen = uri_address(value_uri(m->from), from, sizeof(from));

    /* The 200 OK is built now and written when the message is committed. */
    build_answer(s, m, 200, "OK", "");
    if (s->ob.err)
        return ob_failed(s);
    if (s->n_unc == s->cap_unc) {
        size_t cap = s->cap_unc ? s->cap_unc * 2 : 16;
        struct sip_unc *nu = realloc(s->unc, cap * sizeof(*nu));
        if (!nu)
            return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
        s->unc = nu;
        s->cap_unc = cap;
    }
    size_t rlen = im_buf_len(&s->ob);
    char *resp = malloc(rlen);
    if (!resp)
        return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
    memcpy(resp, im_buf_data(&s->ob), rlen);
    uint64_t tok = s->tok_base | ++s->tok_next;
    if (!(uint32_t)tok)
        tok = s->tok_base | ++s->tok_next;
    s->unc[s->n_unc++] = (struct sip_unc){ .token = tok, .resp = resp, .len = rlen };

    struct im_event ev = { .type = IM_EV_MESSAGE };
    ev.u.message.from = (struct im_str){ from, (uint32_t)flen };
    ev.u.message.resource = (struct im_str){ "", 0 };
    ev.u.message.body = m->body;
    ev.u.message.ts = s->wall;
    ev.u.message.token = tok;
    s->io->event(s->io->ud, &ev);
    return s->phase == P_DEAD ? s->rc : 0;
}

static int
on_request(struct im_sess *s, const struct sip_msg *m)
{
    if (str_eq(m->method, "ACK"))
        return 0;                       /* never answered (RFC 3261 17.2.1) */
    if (!sip_msg_find(m, SH_VIA, NULL) || !m->from.len || !m->to.len || !m->call_id.len ||
        !m->has_cseq)
        return answer(s, m, 400, "Missing Mandatory Header", "");
    if (m->cseq_method.len != m->method.len || memcmp(m->cseq_method.p, m->method.p, m->method.len))
        return answer(s, m, 400, "CSeq Method Does Not Match", "");
    if (str_eq(m->method, "MESSAGE"))
        return on_message(s, m);
    if (str_eq(m->method, "NOTIFY"))
        return on_notify(s, m);
    if (str_eq(m->method, "OPTIONS"))
        return answer(s, m, 200, "OK", ALLOW);
    static const char *const known[] = { "INVITE", "BYE", "CANCEL", "REGISTER", "SUBSCRIBE", "PUBLISH",
                                         "REFER", "INFO", "UPDATE", "PRACK" };
    for (size_t i = 0; i < IM_ARRAY_SIZE(known); i++)
        if (str_eq(m->method, known[i]))
            return answer(s, m, 405, "Method Not Allowed", ALLOW);
    return answer(s, m, 501, "Not Implemented", ALLOW);
}

/* ---- responses ------------------------------------------------------------- */

/* Remember the best challenge of a 401/407.  0, or -IM_EINVAL when none is usable. */
static int
take_challenge(struct im_sess *s, const struct sip_msg *m, bool *stale)
{
    bool proxy = m->status == 407;
    enum sip_hid id = proxy ? SH_PROXY_AUTH : SH_WWW_AUTH;
    struct sip_chal best = { 0 }, c;
    for (const struct sip_hdr *h = sip_msg_find(m, id, NULL); h; h = sip_msg_find(m, id, h))
        if (!sip_digest_parse(h->value, &c) && sip_digest_better(&c, &best))
            best = c;
    if (!best.valid)
        return -IM_EINVAL;
    best.proxy = proxy;
    *stale = best.stale;
    if (proxy)
        s->proxy = best;
    else
        s->www = best;
    return 0;
}

/* Parse a decimal number of seconds; false when not one. */
static bool
parse_secs(struct im_str v, uint32_t *out)
{
    uint64_t x = 0;
    uint32_t i = 0;
    while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
        i++;
    uint32_t s = i;
    while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9' && x < 0xffffffffull)
        x = x * 10 + (uint64_t)(v.p[i++] - '0');
    if (i == s || x > 0xffffffffull)
        return false;
    *out = (uint32_t)x;
    return true;
}

/* The next element of a comma-separated header value (Contact, Record-Route):
 * up to a comma outside <> and quotes.  false when *rest is used up. */
static bool
next_elem(struct im_str *rest, struct im_str *el)
{
    if (!rest->len)
        return false;
    uint32_t i = 0;
    bool q = false, a = false;
    for (; i < rest->len; i++) {
        char c = rest->p[i];
        if (q) {
            if (c == '"')
                q = false;
        } else if (c == '"')
            q = true;
        else if (c == '<')
            a = true;
        else if (c == '>')
            a = false;
        else if (c == ',' && !a)
            break;
    }
    *el = (struct im_str){ rest->p, i };
    *rest = i < rest->len ? (struct im_str){ rest->p + i + 1, rest->len - i - 1 } : (struct im_str){ "", 0 };
    return true;
}

/* The expiry the registrar granted to our contact. */
static uint32_t
granted_expiry(struct im_sess *s, const struct sip_msg *m)
{
    uint32_t v;
    /* Contact: <uri>;expires=N[, <uri>;expires=N]... - find ours. */
    for (const struct sip_hdr *h = sip_msg_find(m, SH_CONTACT, NULL); h; h = sip_msg_find(m, SH_CONTACT, h)) {
        struct im_str rest = h->value, el;
        while (next_elem(&rest, &el)) {
            struct im_str uri = value_uri(el);
            struct im_str ex;
            if (memmem(uri.p, uri.len, s->local, strlen(s->local)) && sip_param(el, "expires", &ex) &&
                parse_secs(ex, &v))
                return v;
        }
    }
    const struct sip_hdr *e = sip_msg_find(m, SH_EXPIRES, NULL);
    if (e && parse_secs(e->value, &v))
        return v;
    return s->expires_req;
}

static int sub_pump(struct im_sess *s);
static int pub_start(struct im_sess *s);

/* A 401/407 to a request we may send again with our answer: true when the
 * challenge was taken and *tries allows another try (one, or three while the
 * server says our nonce was stale); the try is counted. */
static bool
auth_again(struct im_sess *s, const struct sip_msg *m, uint8_t *tries)
{
    bool stale = false;
    if (take_challenge(s, m, &stale) || !(*tries < 1 || (stale && *tries < 3)))
        return false;
    (*tries)++;
    return true;
}

/* A 423 whose Min-Expires raises `asked` (to at most a week), three times at
 * most: true with *out set to it; the try is counted. */
static bool
min_expires_again(const struct sip_msg *m, uint32_t asked, uint8_t *tries, uint32_t *out)
{
    const struct sip_hdr *h = sip_msg_find(m, SH_MIN_EXPIRES, NULL);
    uint32_t v;
    if (m->status != 423 || *tries >= 3 || !h || !parse_secs(h->value, &v) || v <= asked || v > 7 * 86400)
        return false;
    (*tries)++;
    *out = v;
    return true;
}

static int
on_register_response(struct im_sess *s, const struct sip_msg *m)
{
    s->reg_pending = false;
    if (m->status >= 200 && m->status < 300) {
        uint32_t g = granted_expiry(s, m);
        if (!g)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "the registrar accepted REGISTER but granted no time");
        s->granted = g;
        s->reg_auth_tries = 0;
        s->reg_423 = 0;
        s->refresh_at = s->now + (uint64_t)g * 800u;
        if (s->phase == P_REG) {
            s->phase = P_ONLINE;
            struct im_event ev = { .type = IM_EV_STATE };
            ev.u.state.state = IM_ACC_ONLINE;
            ev.u.state.detail = (struct im_str){ "", 0 };
            s->io->event(s->io->ud, &ev);
            /* The glue gives the watch list from inside the event; then our own presence. */
            if (s->phase == P_ONLINE) {
                int rc = sub_pump(s);
                if (rc < 0)
                    return rc;
                rc = pub_start(s);
                if (rc < 0)
                    return rc;
            }
        }
        return s->phase == P_DEAD ? s->rc : 0;
    }
    if (m->status == 401 || m->status == 407) {
        bool stale = false;
        if (take_challenge(s, m, &stale))
            return fail(s, IM_ACC_ERROR, -IM_EAUTH,
                        "the registrar asks for an authentication imfuse does not support (%d %.*s)",
                        m->status, reason_len(m->reason), m->reason.p);
        if ((s->reg_auth_tries >= 1 && !stale) || s->reg_auth_tries >= 3)
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "REGISTER refused: %d %.*s (wrong password?)",
                        m->status, reason_len(m->reason), m->reason.p);
        s->reg_auth_tries++;
        return send_register(s, s->expires_req);
    }
    if (min_expires_again(m, s->expires_req, &s->reg_423, &s->expires_req))
        return send_register(s, s->expires_req);
    if (m->status == 403)
        return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "REGISTER refused: %d %.*s", m->status,
                    reason_len(m->reason), m->reason.p);
    return fail(s, IM_ACC_ERROR, -IM_EPROTO, "REGISTER failed: %d %.*s", m->status,
                reason_len(m->reason), m->reason.p);
}

static int
on_message_response(struct im_sess *s, const struct sip_msg *m, size_t i)
{
    struct sip_tx *t = &s->tx[i];
    if (m->status >= 200 && m->status < 300) {
        uint64_t id = t->msg;
        tx_remove(s, i);
        im_io_sent(s->io, id);
        return s->phase == P_DEAD ? s->rc : 0;
    }
    if ((m->status == 401 || m->status == 407) && auth_again(s, m, &t->auth_tries)) {
        t->cseq++;
        return send_tx(s, t);
    }
    uint64_t id = t->msg;
    notice(s, "message to %.*s not delivered: %d %.*s", (int)(strlen(t->to) > 120 ? 120 : strlen(t->to)),
           t->to, m->status, reason_len(m->reason), m->reason.p);
    tx_remove(s, i);
    im_io_sent(s->io, id);
    return s->phase == P_DEAD ? s->rc : 0;
}

/* ---- presence: dialogs ------------------------------------------------------ */

static bool
tok_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-.!%*_+`'~", c));
}

/* A tag or entity tag we can echo back: 1..127 token characters. */
static bool
token_ok(struct im_str t)
{
    if (!t.len || t.len > 127)
        return false;
    for (uint32_t i = 0; i < t.len; i++)
        if (!tok_char(t.p[i]))
            return false;
    return true;
}

/* A URI we can put in a Request-URI or Route: sip:/sips:, printable, no
 * spaces, quotes or angle brackets (so it cannot break the header). */
static bool
dlg_uri_ok(struct im_str u)
{
    if (u.len < 5 || u.len > SIP_DLG_URI_MAX)
        return false;
    if (strncasecmp(u.p, "sip:", 4) && strncasecmp(u.p, "sips:", 5))
        return false;
    for (uint32_t i = 0; i < u.len; i++) {
        unsigned char c = (unsigned char)u.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return false;
    }
    return true;
}

static char *
str_dup(struct im_str v)
{
    char *p = malloc((size_t)v.len + 1);
    if (p) {
        memcpy(p, v.p, v.len);
        p[v.len] = 0;
    }
    return p;
}

static uint32_t
str_hash(const char *z)
{
    uint32_t h = 2166136261u;
    while (*z)
        h = (h ^ (uint8_t)*z++) * 16777619u;
    return h;
}

static uint64_t
backoff_ms(uint8_t fails)
{
    uint64_t d = SIP_RETRY_MIN_MS;
    for (uint8_t i = 0; i < fails && d < SIP_RETRY_MAX_MS; i++)
        d *= 2;
    return d > SIP_RETRY_MAX_MS ? SIP_RETRY_MAX_MS : d;
}

/* A Retry-After header or parameter in seconds, capped; 0 when absent. */
static uint64_t
retry_after_ms(struct im_str v)
{
    uint32_t secs;
    if (!v.len || !parse_secs(v, &secs))
        return 0;
    uint64_t ms = (uint64_t)secs * 1000u;
    return ms > SIP_RETRY_MAX_MS ? SIP_RETRY_MAX_MS : ms;
}

static void
sub_wake(struct im_sess *s, uint64_t t)
{
    if (t < s->sub_due)
        s->sub_due = t;
}

static void
sub_clear_dialog(struct sip_sub *u)
{
    free(u->rtag);
    free(u->target);
    free(u->routes);
    u->rtag = u->target = u->routes = NULL;
    u->has_rcseq = false;
}

static void
sub_tx_end(struct im_sess *s, struct sip_sub *u)
{
    if (u->tx) {
        u->tx = false;
        s->sub_inflight--;
    }
}

static void
sub_remove(struct im_sess *s, size_t i)
{
    struct sip_sub *u = &s->sub[i];
    sub_tx_end(s, u);
    sub_clear_dialog(u);
    free(u->aor);
    memmove(&s->sub[i], &s->sub[i + 1], (s->n_sub - i - 1) * sizeof(*s->sub));
    s->n_sub--;
}

/* The first Contact URI of m when it is fit to be a remote target, else len 0. */
static struct im_str
contact_target(const struct sip_msg *m)
{
    const struct sip_hdr *c = sip_msg_find(m, SH_CONTACT, NULL);
    if (c) {
        struct im_str rest = c->value, el;
        if (next_elem(&rest, &el)) {
            struct im_str uri = value_uri(el);
            if (dlg_uri_ok(uri))
                return uri;
        }
    }
    return (struct im_str){ "", 0 };
}

/* A NOTIFY or a 2xx to a refresh in an established dialog moves the remote
 * target to its Contact (RFC 6665 4.1.2.1, 4.1.3: target refresh). */
static void
sub_target_refresh(struct sip_sub *u, const struct sip_msg *m)
{
    struct im_str t = contact_target(m);
    if (!t.len || (u->target && str_eq(t, u->target)))
        return;
    char *nt = str_dup(t);
    if (nt) {
        free(u->target);
        u->target = nt;
    }
}

/*
 * Take the dialog of subscription u from m: the remote tag (To of a 2xx,
 * From of a NOTIFY), the remote target (Contact) and the route set
 * (Record-Route; reversed for a response, RFC 3261 12.1.2; in order for a
 * request, 12.1.1).  A target or route we could not safely echo is left
 * out (the target falls back to the address).  false when the tag is
 * missing or unusable, or out of memory.
 */
static bool
sub_take_dialog(struct sip_sub *u, const struct sip_msg *m, struct im_str tag, bool response)
{
    if (!token_ok(tag))
        return false;
    sub_clear_dialog(u);
    u->rtag = str_dup(tag);
    if (!u->rtag)
        return false;
    struct im_str t = contact_target(m);
    if (t.len)
        u->target = str_dup(t);
    struct im_str rr[SIP_DLG_ROUTES_MAX];
    uint32_t n = 0;
    bool ok = true;
    for (const struct sip_hdr *h = sip_msg_find(m, SH_RECORD_ROUTE, NULL); h && ok;
         h = sip_msg_find(m, SH_RECORD_ROUTE, h)) {
        struct im_str rest = h->value, el;
        while (ok && next_elem(&rest, &el)) {
            struct im_str uri = value_uri(el);
            if (n >= SIP_DLG_ROUTES_MAX || !dlg_uri_ok(uri))
                ok = false;             /* a route set we cannot follow: none */
            else
                rr[n++] = uri;
        }
    }
    if (ok && n) {
        size_t len = 1;
        for (uint32_t i = 0; i < n; i++)
            len += rr[i].len + 11;
        u->routes = malloc(len);
        if (u->routes) {
            size_t o = 0;
            for (uint32_t k = 0; k < n; k++) {
                struct im_str r = rr[response ? n - 1 - k : k];
                memcpy(u->routes + o, "Route: <", 8);
                memcpy(u->routes + o + 8, r.p, r.len);
                memcpy(u->routes + o + 8 + r.len, ">\r\n", 3);
                o += 11 + r.len;
            }
            u->routes[o] = 0;
        }
    }
    return true;
}

/* Report a contact's presence if it changed.  Call last: the event may
 * reach back into the session. */
static void
sub_report(struct im_sess *s, size_t i, enum im_presence p)
{
    struct sip_sub *u = &s->sub[i];
    if (u->pres == p || !u->watched)
        return;
    u->pres = p;
    char a[SIP_ADDR_MAX + 1];
    im_strlcpy(a, u->aor, sizeof(a));
    struct im_event ev = { .type = IM_EV_PRESENCE };
    ev.u.presence.address = (struct im_str){ a, (uint32_t)strlen(a) };
    ev.u.presence.presence = p;
    s->io->event(s->io->ud, &ev);
}

/* SUBSCRIBE in the subscription's dialog (or creating it); expires 0 ends it. */
static int
send_subscribe(struct im_sess *s, size_t i, uint32_t expires)
{
    struct sip_sub *u = &s->sub[i];
    char extra[SIP_DLG_ROUTES_MAX * (SIP_DLG_URI_MAX + 11) + SIP_ADDR_MAX + 256];
    snprintf(extra, sizeof(extra), "%sContact: <sip:%s@%s;transport=%s>\r\nEvent: presence\r\n"
             "Accept: application/pidf+xml\r\nExpires: %u\r\n", u->routes ? u->routes : "", s->user, s->local,
             s->tparam, expires);
    u->cseq++;
    if (!u->tx) {
        u->tx = true;
        s->sub_inflight++;
    }
    u->tx_ms = s->now;
    u->asked = expires;
    sub_wake(s, s->now + SIP_SUB_TIMEOUT_MS);
    return send_request(s, "SUBSCRIBE", u->target ? u->target : u->aor, u->aor, u->rtag, u->call_id, u->ftag,
                        u->cseq, extra, NULL, NULL, 0);
}

/* A new subscription (a new dialog) for s->sub[i]. */
static int
sub_start(struct im_sess *s, size_t i)
{
    struct sip_sub *u = &s->sub[i];
    sub_clear_dialog(u);
    if (rand_hex(s, u->call_id, 16) || rand_hex(s, u->ftag, 8))
        return fail(s, IM_ACC_ERROR, -EIO, "no randomness for SIP identifiers");
    u->cseq = 0;
    u->auth_tries = u->n423 = 0;
    u->st = SUB_TRYING;
    return send_subscribe(s, i, u->want);
}

/* Start waiting subscriptions while the window has room. */
static int
sub_pump(struct im_sess *s)
{
    for (size_t i = 0; i < s->n_sub && s->sub_inflight < SIP_SUB_WINDOW && s->phase == P_ONLINE; i++) {
        struct sip_sub *u = &s->sub[i];
        if (u->st != SUB_IDLE || !u->watched)
            continue;
        if (u->due > s->now) {
            sub_wake(s, u->due);
            continue;
        }
        int rc = sub_start(s, i);
        if (rc < 0)
            return rc;
    }
    return s->phase == P_DEAD ? s->rc : 0;
}

/* No dialog any more: try a new subscription after `delay` ms. */
static void
sub_retry_in(struct im_sess *s, struct sip_sub *u, uint64_t delay)
{
    sub_tx_end(s, u);
    sub_clear_dialog(u);
    u->st = SUB_IDLE;
    u->due = s->now + delay;
    sub_wake(s, u->due);
}

/* Try a new subscription after retry_after ms, else after the backoff of
 * its failures so far; counts one more failure. */
static void
sub_backoff(struct im_sess *s, struct sip_sub *u, uint64_t retry_after)
{
    sub_retry_in(s, u, retry_after ? retry_after : backoff_ms(u->fails));
    if (u->fails < 16)
        u->fails++;
}

/* A SUBSCRIBE failed (final error or no answer): retry later, presence unknown. */
static void
sub_failed(struct im_sess *s, size_t i, uint64_t retry_after)
{
    struct sip_sub *u = &s->sub[i];
    if (!u->watched) {
        sub_remove(s, i);
        return;
    }
    sub_backoff(s, u, retry_after);
    sub_report(s, i, IM_PRES_UNKNOWN);
}

static int
on_subscribe_response(struct im_sess *s, const struct sip_msg *m, size_t i)
{
    struct sip_sub *u = &s->sub[i];
    sub_tx_end(s, u);
    if ((m->status == 401 || m->status == 407) && auth_again(s, m, &u->auth_tries))
        return send_subscribe(s, i, u->asked);
    if (!u->asked) {                    /* the answer to an un-SUBSCRIBE */
        if (m->status >= 300) {
            sub_remove(s, i);
            return 0;
        }
        u->st = SUB_ENDING;             /* the final NOTIFY is on its way */
        u->due = s->now + SIP_SUB_TIMEOUT_MS;
        sub_wake(s, u->due);
        return 0;
    }
    if (m->status >= 200 && m->status < 300) {
        struct im_str tag;
        if (u->rtag) {
            sub_target_refresh(u, m);
        } else if (!(sip_param(m->to, "tag", &tag) && sub_take_dialog(u, m, tag, true))) {
            sub_failed(s, i, 0);
            return 0;
        }
        uint32_t g = u->asked;
        const struct sip_hdr *e = sip_msg_find(m, SH_EXPIRES, NULL);
        if (e && !parse_secs(e->value, &g))
            g = u->asked;
        if (!g) {                       /* over at once: a NOTIFY terminated follows */
            sub_failed(s, i, 0);
            return 0;
        }
        u->auth_tries = u->n423 = 0;
        if (u->st == SUB_TRYING) {
            u->st = SUB_ACTIVE;
            u->since = s->now;
        }
        u->due = s->now + (uint64_t)g * 800u;
        sub_wake(s, u->due);
        if (!u->watched) {              /* left the watch list meanwhile */
            u->st = SUB_ENDING;
            return send_subscribe(s, i, 0);
        }
        return 0;
    }
    if (min_expires_again(m, u->asked, &u->n423, &u->want))
        return send_subscribe(s, i, u->want);
    if (m->status == 481 && u->watched) {
        /* The server lost the dialog: a new subscription, at once the first time. */
        sub_retry_in(s, u, u->fails ? backoff_ms(u->fails) : 0);
        if (u->fails < 16)
            u->fails++;
        return 0;
    }
    const struct sip_hdr *ra = sip_msg_find(m, SH_RETRY_AFTER, NULL);
    sub_failed(s, i, ra ? retry_after_ms(ra->value) : 0);
    return s->phase == P_DEAD ? s->rc : 0;
}

/* The media type of a Content-Type value without parameters, trimmed. */
static struct im_str
media_type(struct im_str ct)
{
    uint32_t n = 0;
    while (n < ct.len && ct.p[n] != ';')
        n++;
    while (n && (ct.p[n - 1] == ' ' || ct.p[n - 1] == '\t'))
        n--;
    return (struct im_str){ ct.p, n };
}

static int
on_notify(struct im_sess *s, const struct sip_msg *m)
{
    struct im_str totag, ftag = { "", 0 };
    size_t i = s->n_sub;
    if (sip_param(m->to, "tag", &totag))
        for (i = 0; i < s->n_sub; i++) {
            struct sip_sub *u = &s->sub[i];
            if ((u->st == SUB_TRYING || u->st == SUB_ACTIVE || u->st == SUB_ENDING) &&
                str_eq(m->call_id, u->call_id) && str_eq(totag, u->ftag))
                break;
        }
    bool has_ftag = sip_param(m->from, "tag", &ftag);
    if (i == s->n_sub || (s->sub[i].rtag && (!has_ftag || !str_eq(ftag, s->sub[i].rtag))))
        return answer(s, m, 481, "Subscription Does Not Exist", "");
    struct sip_sub *u = &s->sub[i];
    const struct sip_hdr *ev = sip_msg_find(m, SH_EVENT, NULL);
    if (!ev || !str_ieq(media_type(ev->value), "presence"))
        return answer(s, m, 489, "Bad Event", "Allow-Events: presence\r\n");
    const struct sip_hdr *ss = sip_msg_find(m, SH_SUB_STATE, NULL);
    if (!ss)
        return answer(s, m, 400, "Missing Subscription-State", "");
    if (u->has_rcseq && m->cseq < u->rcseq)
        return answer(s, m, 500, "CSeq Out Of Order", "");
    if (u->rtag)
        sub_target_refresh(u, m);
    else if (!sub_take_dialog(u, m, ftag, false))
        return answer(s, m, 400, "Bad From Tag", "");
    u->rcseq = m->cseq;
    u->has_rcseq = true;

    struct im_str state = media_type(ss->value);        /* the value up to its parameters */
    bool terminated = str_ieq(state, "terminated"), active = str_ieq(state, "active");
    enum im_presence p = IM_PRES_UNKNOWN;
    bool have = false;
    if (m->body.len) {
        if (str_ieq(media_type(m->ctype), "application/pidf+xml"))
            have = sip_pidf_parse(m->body.p, m->body.len, &p) == 0;
    } else if (active) {
        p = IM_PRES_OFFLINE;            /* nothing published for this presentity */
        have = true;
    }
    int rc = answer(s, m, 200, "OK", "");
    if (rc < 0)
        return rc;

    if (terminated) {
        struct im_str reason, ra;
        sip_param(ss->value, "reason", &reason);
        sip_param(ss->value, "retry-after", &ra);
        if (!u->watched) {
            sub_remove(s, i);
            return 0;
        }
        if ((str_ieq(reason, "deactivated") || str_ieq(reason, "timeout")) && u->st == SUB_ACTIVE &&
            s->now - u->since >= SIP_RETRY_MIN_MS) {
            /* RFC 6665 4.1.3: subscribe again at once; the presence stands meanwhile. */
            sub_retry_in(s, u, 0);
        } else if (str_ieq(reason, "rejected") || str_ieq(reason, "noresource") || str_ieq(reason, "invariant")) {
            sub_tx_end(s, u);
            sub_clear_dialog(u);
            u->st = SUB_DONE;
            p = IM_PRES_OFFLINE;
            have = true;
        } else {
            sub_backoff(s, u, retry_after_ms(ra));
            p = IM_PRES_OFFLINE;
            have = true;
        }
    } else {
        struct im_str ex;
        uint32_t secs;
        if (u->st == SUB_TRYING) {
            u->st = SUB_ACTIVE;
            u->since = s->now;
            u->due = s->now + (uint64_t)u->want * 800u;     /* until the 2xx says */
        }
        if (u->st == SUB_ACTIVE && !u->tx && sip_param(ss->value, "expires", &ex) && parse_secs(ex, &secs) &&
            s->now + (uint64_t)secs * 800u < u->due)
            u->due = s->now + (uint64_t)secs * 800u;
        sub_wake(s, u->due);
        if (active && have && p != IM_PRES_UNKNOWN)
            u->fails = 0;
    }
    if (have && u->watched)
        sub_report(s, i, p);
    rc = sub_pump(s);
    return rc < 0 ? rc : (s->phase == P_DEAD ? s->rc : 0);
}

/* Look after the subscriptions whose time has come: timeouts, refreshes,
 * retries, ending ones given up. */
static int
sub_scan(struct im_sess *s)
{
    s->sub_due = UINT64_MAX;
    for (size_t i = 0; i < s->n_sub && s->phase == P_ONLINE;) {
        struct sip_sub *u = &s->sub[i];
        if (u->tx) {
            if (s->now - u->tx_ms < SIP_SUB_TIMEOUT_MS) {
                sub_wake(s, u->tx_ms + SIP_SUB_TIMEOUT_MS);
                i++;
            } else if (!u->asked || !u->watched) {
                sub_remove(s, i);
            } else {
                size_t n = s->n_sub;
                sub_failed(s, i, 0);
                i += s->n_sub == n;
            }
            continue;
        }
        int rc = 0;
        if (u->st == SUB_ENDING && s->now >= u->due) {
            sub_remove(s, i);
            continue;
        }
        if (u->st == SUB_ACTIVE && s->now >= u->due) {
            u->auth_tries = 0;
            rc = send_subscribe(s, i, u->want);
        } else if (u->st == SUB_ACTIVE || u->st == SUB_ENDING || (u->st == SUB_IDLE && u->watched && u->due > s->now)) {
            sub_wake(s, u->due);        /* idle ones already due start from sub_pump() */
        }
        if (rc < 0)
            return rc;
        i++;
    }
    return sub_pump(s);
}

/* ---- presence: our publication -------------------------------------------- */

/* Escape for an XML attribute value. */
static void
xml_attr(char *out, size_t outsz, const char *in)
{
    size_t o = 0;
    for (; *in && o + 7 < outsz; in++) {
        const char *e = NULL;
        switch (*in) {
        case '&': e = "&amp;"; break;
        case '<': e = "&lt;"; break;
        case '>': e = "&gt;"; break;
        case '"': e = "&quot;"; break;
        case '\'': e = "&apos;"; break;
        default: break;
        }
        if (e) {
            memcpy(out + o, e, strlen(e));
            o += strlen(e);
        } else {
            out[o++] = *in;
        }
    }
    out[o] = 0;
}

/* PUBLISH our presence; with_body sends the document, else it is a refresh
 * (SIP-If-Match); expires 0 removes the publication. */
static int
send_publish(struct im_sess *s, uint32_t expires, bool with_body)
{
    char extra[sizeof(s->pub_etag) + 80], ent[SIP_ADDR_MAX * 6 + 1], body[SIP_ADDR_MAX * 6 + 400];
    int blen = 0;
    if (!s->pub_etag[0])
        with_body = true;               /* nothing to refresh: the whole document */
    if (with_body) {
        xml_attr(ent, sizeof(ent), s->aor);
        blen = snprintf(body, sizeof(body), "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n"
                        "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"%s\">"
                        "<tuple id=\"%s\"><status><basic>open</basic></status></tuple></presence>\r\n",
                        ent, s->pub_tuple);
        if (blen < 0 || (size_t)blen >= sizeof(body))
            return fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "presence document too long");
    }
    snprintf(extra, sizeof(extra), "Event: presence\r\nExpires: %u\r\n%s%s%s", expires,
             s->pub_etag[0] ? "SIP-If-Match: " : "", s->pub_etag, s->pub_etag[0] ? "\r\n" : "");
    s->pub_cseq++;
    s->pub_tx = true;
    s->pub_tx_ms = s->now;
    s->pub_asked = expires;
    s->pub_body = with_body;
    return send_request(s, "PUBLISH", s->aor, s->aor, NULL, s->pub_call_id, s->pub_tag, s->pub_cseq, extra,
                        with_body ? "application/pidf+xml" : NULL, body, with_body ? (size_t)blen : 0);
}

static int
pub_start(struct im_sess *s)
{
    if (s->pub_started)
        return 0;
    s->pub_started = true;
    s->pub_want = s->expires_req;
    if (rand_hex(s, s->pub_call_id, 16) || rand_hex(s, s->pub_tag, 8) || rand_hex(s, s->pub_tuple + 1, 4))
        return fail(s, IM_ACC_ERROR, -EIO, "no randomness for SIP identifiers");
    s->pub_tuple[0] = 't';              /* an XML ID starts with a letter */
    return send_publish(s, s->pub_want, true);
}

/* A PUBLISH failed: tell the user, try again later. */
static void
pub_failed(struct im_sess *s, const char *what, uint64_t retry_after)
{
    uint64_t d = retry_after ? retry_after : backoff_ms(s->pub_fails);
    if (s->pub_fails < 16)
        s->pub_fails++;
    s->pub_due = s->now + d;
    notice(s, "presence not published: %s (retrying in %u s)", what, (unsigned)(d / 1000));
}

static int
on_publish_response(struct im_sess *s, const struct sip_msg *m)
{
    char what[120];
    s->pub_tx = false;
    if ((m->status == 401 || m->status == 407) && auth_again(s, m, &s->pub_auth_tries))
        return send_publish(s, s->pub_asked, s->pub_body);
    if (!s->pub_asked)
        return 0;                       /* the removal at logout */
    if (m->status >= 200 && m->status < 300) {
        const struct sip_hdr *et = sip_msg_find(m, SH_SIP_ETAG, NULL);
        uint32_t g = s->pub_asked;
        const struct sip_hdr *e = sip_msg_find(m, SH_EXPIRES, NULL);
        if (e && !parse_secs(e->value, &g))
            g = s->pub_asked;
        s->pub_etag[0] = 0;
        if (et && token_ok(et->value)) {
            memcpy(s->pub_etag, et->value.p, et->value.len);
            s->pub_etag[et->value.len] = 0;
        }
        s->pub_auth_tries = s->pub_423 = s->pub_412 = s->pub_fails = 0;
        s->pub_due = s->now + (uint64_t)(g ? g : 1) * 800u;
        return 0;
    }
    if (m->status == 412 && s->pub_412 < 3) {
        /* The server forgot our entity tag: publish the document anew. */
        s->pub_412++;
        s->pub_etag[0] = 0;
        return send_publish(s, s->pub_asked, true);
    }
    if (min_expires_again(m, s->pub_asked, &s->pub_423, &s->pub_want))
        return send_publish(s, s->pub_want, s->pub_body);
    if (m->status == 405 || m->status == 489 || m->status == 501) {
        s->pub_off = true;
        s->pub_due = 0;
        notice(s, "the SIP server does not take PUBLISH (%d %.*s): other SIMPLE users will not see "
               "this account's presence", m->status, reason_len(m->reason), m->reason.p);
        return s->phase == P_DEAD ? s->rc : 0;
    }
    snprintf(what, sizeof(what), "%d %.*s", m->status, reason_len(m->reason), m->reason.p);
    const struct sip_hdr *ra = sip_msg_find(m, SH_RETRY_AFTER, NULL);
    pub_failed(s, what, ra ? retry_after_ms(ra->value) : 0);
    return s->phase == P_DEAD ? s->rc : 0;
}

static int
on_response(struct im_sess *s, const struct sip_msg *m)
{
    if (!m->has_cseq || !m->call_id.len || m->status < 200)
        return 0;                       /* provisional or unmatched: nothing to do */
    if (str_eq(m->cseq_method, "REGISTER")) {
        if (s->reg_pending && m->cseq == s->reg_cseq && str_eq(m->call_id, s->reg_call_id))
            return on_register_response(s, m);
        return 0;
    }
    if (str_eq(m->cseq_method, "MESSAGE"))
        for (size_t i = 0; i < s->n_tx; i++)
            if (s->tx[i].cseq == m->cseq && str_eq(m->call_id, s->tx[i].call_id))
                return on_message_response(s, m, i);
    if (str_eq(m->cseq_method, "SUBSCRIBE"))
        for (size_t i = 0; i < s->n_sub; i++)
            if (s->sub[i].tx && s->sub[i].cseq == m->cseq && str_eq(m->call_id, s->sub[i].call_id)) {
                int rc = on_subscribe_response(s, m, i);
                if (rc >= 0 && s->phase == P_ONLINE)
                    rc = sub_pump(s);   /* the window has room again */
                return s->phase == P_DEAD ? s->rc : rc;
            }
    if (str_eq(m->cseq_method, "PUBLISH") && s->pub_tx && m->cseq == s->pub_cseq &&
        str_eq(m->call_id, s->pub_call_id))
        return on_publish_response(s, m);
    return 0;                           /* a stray answer (after a timeout) */
}

/* ---- ops --------------------------------------------------------------------- */

static struct im_sess *
sip_create(const struct im_account_cfg *cfg, const struct im_io *io)
{
    struct im_sess *s = calloc(1, sizeof(*s));
    const char *why;

    if (!s)
        return NULL;
    s->cfg = cfg;
    s->io = io;
    im_buf_init(&s->ob, SIP_MAX_OUT);
    s->ob.secret = true;                /* digest answers go through it */
    s->expires_req = SIP_DEFAULT_EXPIRES;
    if (sip_normalize_z(cfg->login, s->aor, sizeof(s->aor), &why)) {
        s->why_bad = why;
    } else {
        const char *at = strchr(s->aor, '@');
        memcpy(s->user, s->aor + 4, (size_t)(at - s->aor - 4));
        s->user[at - s->aor - 4] = 0;
        im_strlcpy(s->host, at + 1, sizeof(s->host));
    }
    for (uint32_t i = 0; i < cfg->n_options; i++) {
        if (strcmp(cfg->options[i].key, "expires"))
            continue;
        char *end;
        unsigned long v = strtoul(cfg->options[i].value, &end, 10);
        if (!*cfg->options[i].value || *end || v < 30 || v > 7 * 86400)
            s->why_bad = "option expires must be a number of seconds from 30 to 604800";
        else
            s->expires_req = (uint32_t)v;
    }
    return s;
}

static void
sip_destroy(struct im_sess *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_tx; i++)
        tx_free(&s->tx[i]);
    free(s->tx);
    for (size_t i = 0; i < s->n_unc; i++)
        free(s->unc[i].resp);
    free(s->unc);
    for (size_t i = 0; i < s->n_sub; i++) {
        sub_clear_dialog(&s->sub[i]);
        free(s->sub[i].aor);
    }
    free(s->sub);
    sip_framer_free(&s->fr);
    im_buf_free(&s->ob);
    im_wipe(s, sizeof(*s));
    free(s);
}

static int
sip_start(struct im_sess *s, struct im_time now)
{
    if (s->phase != P_NEW)
        return -IM_EINVAL;
    s->now = s->last_rx = s->last_ping = now.mono_ms;
    s->wall = now.wall_ms;
    s->phase = P_REG;
    if (s->cfg->tls == IM_TLS_STARTTLS)
        return fail(s, IM_ACC_ERROR, -IM_EINVAL,
                    "SIP has no STARTTLS: use tls \"tls\" (SIP over TLS, usually port 5061) or \"none\"");
    if (s->why_bad)
        return fail(s, IM_ACC_ERROR, -IM_EINVAL, "%s", s->why_bad);
    s->transport = s->cfg->tls == IM_TLS_DIRECT ? "TLS" : "TCP";
    s->tparam = s->cfg->tls == IM_TLS_DIRECT ? "tls" : "tcp";
    const char *la = s->io->local_addr ? s->io->local_addr(s->io->ud) : NULL;
    im_strlcpy(s->local, la && *la ? la : "imfuse.invalid", sizeof(s->local));
    uint8_t tb[4];
    int rc = im_rng_fill(s->io->rng, tb, sizeof(tb));
    if (!rc)
        rc = rand_hex(s, s->reg_call_id, 16);
    if (!rc)
        rc = rand_hex(s, s->reg_tag, 8);
    if (!rc)
        rc = rand_hex(s, s->to_tag, 8);
    if (rc)
        return fail(s, IM_ACC_ERROR, rc < 0 ? rc : -EIO, "no randomness for SIP identifiers");
    s->tok_base = ((uint64_t)tb[0] << 56 | (uint64_t)tb[1] << 48 | (uint64_t)tb[2] << 40 |
                   (uint64_t)tb[3] << 32) | (1ull << 63);
    s->reg_cseq = 0;
    return send_register(s, s->expires_req);
}

static int
handle(struct im_sess *s, const uint8_t *p, size_t hl, size_t bl)
{
    struct sip_msg *m = malloc(sizeof(*m));
    if (!m)
        return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
    int rc = sip_msg_parse(m, (const char *)p, hl, bl);
    if (rc) {
        free(m);
        notice(s, "ignored a malformed SIP message from the server");
        return s->phase == P_DEAD ? s->rc : 0;
    }
    rc = m->is_req ? on_request(s, m) : on_response(s, m);
    free(m);
    return s->phase == P_DEAD ? s->rc : rc;
}

static int
sip_input(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc ? s->rc : -IM_EPROTO;
    if (s->phase == P_NEW)
        return -IM_EINVAL;
    s->now = now.mono_ms;
    s->wall = now.wall_ms;
    if (n) {
        s->last_rx = now.mono_ms;
        s->ping_out = false;
    }
    while (n) {
        size_t step = n < SIP_FEED_STEP ? n : SIP_FEED_STEP;
        int prc = sip_framer_push(&s->fr, p, step);
        if (prc == -IM_ETOOBIG)
            return fail(s, IM_ACC_ERROR, prc, "SIP input over %u KiB unframed", SIP_FRAMER_MAX / 1024);
        if (prc)
            return fail(s, IM_ACC_ERROR, prc, "out of memory");
        p += step;
        n -= step;
        for (;;) {
            const uint8_t *mp;
            size_t hl, bl;
            int rc = sip_framer_next(&s->fr, &mp, &hl, &bl);
            if (rc == -EAGAIN)
                break;
            if (rc == SIP_FRAME_PING) {
                rc = s->io->out(s->io->ud, "\r\n", 2);
                if (rc < 0) {
                    s->phase = P_DEAD;
                    return s->rc = rc;
                }
                continue;
            }
            if (rc < 0)
                return fail(s, IM_ACC_ERROR, rc, rc == -IM_ETOOBIG ?
                            "the server sent a SIP message over the limits (64 KiB of headers, 1 MiB of body)" :
                            "the server broke SIP framing (bad Content-Length)");
            rc = handle(s, mp, hl, bl);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

static int
sip_tls_ready(struct im_sess *s, int status, struct im_time now)
{
    /* SIP never asks for STARTTLS. */
    return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected TLS upgrade on a SIP connection");
}

static int
sip_tick(struct im_sess *s, struct im_time now)
{
    uint64_t now_ms = now.mono_ms;

    if (s->phase == P_DEAD)
        return s->rc ? s->rc : -IM_EPROTO;
    if (s->phase == P_NEW)
        return 0;
    s->now = now_ms;
    s->wall = now.wall_ms;
    if (s->reg_pending && now_ms - s->reg_sent_ms >= SIP_REG_TIMEOUT_MS)
        return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "no answer to REGISTER within %u s",
                    SIP_REG_TIMEOUT_MS / 1000);
    if (s->phase == P_ONLINE && !s->reg_pending && now_ms >= s->refresh_at) {
        s->reg_auth_tries = 0;
        int rc = send_register(s, s->expires_req);
        if (rc < 0)
            return rc;
    }
    if (s->phase == P_ONLINE && s->pub_tx && now_ms - s->pub_tx_ms >= SIP_SUB_TIMEOUT_MS) {
        s->pub_tx = false;
        if (s->pub_asked)
            pub_failed(s, "no answer to PUBLISH within 32 s", 0);
        if (s->phase == P_DEAD)
            return s->rc;
    } else if (s->phase == P_ONLINE && !s->pub_tx && !s->pub_off && s->pub_due && now_ms >= s->pub_due) {
        s->pub_auth_tries = 0;
        int rc = send_publish(s, s->pub_want, false);
        if (rc < 0)
            return rc;
    }
    if (s->phase == P_ONLINE && now_ms >= s->sub_due) {
        int rc = sub_scan(s);
        if (rc < 0)
            return rc;
    }
    while (s->n_tx && now_ms - s->tx[0].start_ms >= SIP_TX_TIMEOUT_MS) {
        uint64_t id = s->tx[0].msg;
        notice(s, "no final answer to the message to %.*s within %u s",
               (int)(strlen(s->tx[0].to) > 120 ? 120 : strlen(s->tx[0].to)), s->tx[0].to,
               SIP_TX_TIMEOUT_MS / 1000);
        tx_remove(s, 0);
        im_io_sent(s->io, id);
        if (s->phase == P_DEAD)
            return s->rc;
    }
    if (s->ping_out && now_ms - s->last_ping >= SIP_PONG_TIMEOUT_MS)
        return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "the SIP server stopped answering keepalives");
    if (!s->ping_out && now_ms - s->last_ping >= SIP_KEEPALIVE_MS) {
        s->last_ping = now_ms;
        s->ping_out = true;
        int rc = s->io->out(s->io->ud, "\r\n\r\n", 4);
        if (rc < 0) {
            s->phase = P_DEAD;
            return s->rc = rc;
        }
    }
    return 0;
}

static int
sip_send_msg(struct im_sess *s, const struct im_msg *m)
{
    char to[SIP_ADDR_MAX + 1];
    const char *why;

    if (s->phase != P_ONLINE)
        return -IM_EINVAL;
    if (sip_normalize(m->to.p, m->to.len, to, sizeof(to), &why)) {
        /* The relay normalised it already; report rather than loop on it. */
        notice(s, "message not sent: bad SIP address (%s)", why);
        im_io_sent(s->io, m->msg);
        return s->phase == P_DEAD ? s->rc : 0;
    }
    if (s->n_tx >= SIP_MAX_PENDING_TX)
        return -IM_ELIMIT;
    if (s->n_tx == s->cap_tx) {
        size_t cap = s->cap_tx ? s->cap_tx * 2 : 16;
        struct sip_tx *nt = realloc(s->tx, cap * sizeof(*nt));
        if (!nt)
            return -ENOMEM;
        s->tx = nt;
        s->cap_tx = cap;
    }
    size_t tl = strlen(to);
    char *blk = malloc(tl + 1 + m->body.len + 1);
    if (!blk)
        return -ENOMEM;
    struct sip_tx *t = &s->tx[s->n_tx];
    memset(t, 0, sizeof(*t));
    t->msg = m->msg;
    t->start_ms = s->now;
    t->cseq = 1;
    t->to = blk;
    memcpy(blk, to, tl + 1);
    t->body = blk + tl + 1;
    memcpy(t->body, m->body.p, m->body.len);
    t->body[m->body.len] = 0;
    t->body_len = m->body.len;
    if (rand_hex(s, t->call_id, 16) || rand_hex(s, t->ftag, 8)) {
        free(blk);
        return fail(s, IM_ACC_ERROR, -EIO, "no randomness for SIP identifiers");
    }
    s->n_tx++;
    return send_tx(s, t);
}

static void
sip_committed(struct im_sess *s, uint64_t token)
{
    for (size_t i = 0; i < s->n_unc; i++) {
        if (s->unc[i].token != token)
            continue;
        struct sip_unc u = s->unc[i];
        memmove(&s->unc[i], &s->unc[i + 1], (s->n_unc - i - 1) * sizeof(*s->unc));
        s->n_unc--;
        if (s->phase != P_DEAD && s->io->out(s->io->ud, u.resp, u.len) < 0) {
            s->phase = P_DEAD;
            s->rc = -EPIPE;
        }
        free(u.resp);
        return;
    }
}

static int
sip_set_watch(struct im_sess *s, const struct im_str *addresses, uint32_t n, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc ? s->rc : -IM_EPROTO;
    s->now = now.mono_ms;
    s->wall = now.wall_ms;
    for (size_t i = 0; i < s->n_sub; i++)
        s->sub[i].mark = false;
    size_t watched = 0;
    for (size_t i = 0; i < s->n_sub; i++)
        watched += s->sub[i].watched;
    for (uint32_t k = 0; k < n; k++) {
        char a[SIP_ADDR_MAX + 1];
        const char *why;
        if (sip_normalize(addresses[k].p, addresses[k].len, a, sizeof(a), &why))
            continue;                   /* the relay normalised it; nothing to watch */
        uint32_t h = str_hash(a);
        size_t i = 0;
        for (; i < s->n_sub; i++)
            if (s->sub[i].watched && s->sub[i].hash == h && !strcmp(s->sub[i].aor, a))
                break;
        if (i < s->n_sub) {
            s->sub[i].mark = true;
            continue;
        }
        if (watched >= SIP_MAX_WATCH || s->n_sub >= 2 * SIP_MAX_WATCH) {
            if (!s->watch_capped)
                notice(s, "presence is followed for the first %u SIP contacts only", SIP_MAX_WATCH);
            s->watch_capped = true;
            if (s->phase == P_DEAD)
                return s->rc;
            continue;
        }
        if (s->n_sub == s->cap_sub) {
            size_t cap = s->cap_sub ? s->cap_sub * 2 : 16;
            struct sip_sub *ns = realloc(s->sub, cap * sizeof(*ns));
            if (!ns)
                return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
            s->sub = ns;
            s->cap_sub = cap;
        }
        struct sip_sub *u = &s->sub[s->n_sub];
        memset(u, 0, sizeof(*u));
        u->aor = str_dup((struct im_str){ a, (uint32_t)strlen(a) });
        if (!u->aor)
            return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
        u->hash = h;
        u->watched = u->mark = true;
        u->st = SUB_IDLE;
        u->pres = IM_PRES_UNKNOWN;
        u->want = s->expires_req;
        s->n_sub++;
        watched++;
    }
    /* Addresses no longer watched: end their subscriptions. */
    for (size_t i = s->n_sub; i-- > 0;) {
        struct sip_sub *u = &s->sub[i];
        if (!u->watched || u->mark)
            continue;
        u->watched = false;
        if (u->st == SUB_IDLE || u->st == SUB_DONE || (u->st == SUB_TRYING && u->tx && !u->rtag)) {
            if (u->st != SUB_TRYING)
                sub_remove(s, i);       /* a SUBSCRIBE under way is ended at its 2xx */
            continue;
        }
        if (u->st == SUB_ENDING || s->phase != P_ONLINE)
            continue;
        u->st = SUB_ENDING;
        int rc = send_subscribe(s, i, 0);
        if (rc < 0)
            return rc;
    }
    if (s->phase != P_ONLINE)
        return s->phase == P_DEAD ? s->rc : 0;
    return sub_pump(s);
}

static void
sip_logout(struct im_sess *s)
{
    if (s->phase != P_ONLINE)
        return;
    /* Our publication, then our subscriptions, then the binding. */
    if (s->pub_etag[0] && !s->pub_off)
        send_publish(s, 0, false);
    for (size_t i = 0; i < s->n_sub && s->phase == P_ONLINE; i++)
        if (s->sub[i].rtag && s->sub[i].st == SUB_ACTIVE) {
            s->sub[i].st = SUB_ENDING;
            send_subscribe(s, i, 0);
        }
    if (s->phase != P_ONLINE)
        return;
    send_register(s, 0);
    s->reg_pending = false;
    if (s->phase != P_DEAD) {
        s->phase = P_DEAD;
        s->rc = -IM_EPROTO;
    }
}

const struct im_proto_ops sip_ops = {
    .name = "sip",
    .default_port = 5060,
    .default_tls_port = 5061,
    .normalize_login = sip_normalize_z,
    .normalize_address = sip_normalize_z,
    .default_tls_name = sip_default_tls_name,
    .create = sip_create,
    .destroy = sip_destroy,
    .start = sip_start,
    .input = sip_input,
    .tls_ready = sip_tls_ready,
    .tick = sip_tick,
    .send_msg = sip_send_msg,
    .add_contact = NULL,
    .remove_contact = NULL,
    .set_watch = sip_set_watch,
    .committed = sip_committed,
    .logout = sip_logout,
};
