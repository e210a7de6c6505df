/*
 * xmpp.c - the XMPP client adapter (RFC 6120, RFC 6121, XEP-0198, XEP-0199,
 * XEP-0203), sans-I/O.
 *
 * Parsing: one expat parser per XML stream (a fresh one after STARTTLS and
 * after SASL success), fed incrementally.  Each top-level element (depth 2,
 * the stream being depth 1) is built into a small tree in a per-session
 * arena, handled when its end tag arrives, and the arena is rewound.
 * Limits: a top-level element may span at most XMPP_MAX_STANZA bytes of
 * input (bytes between two elements count too, so an endless start tag or
 * endless whitespace is caught), nesting at most XMPP_MAX_DEPTH, tree memory
 * at most XMPP_MAX_ARENA.  DOCTYPE, entity declarations are refused (so no
 * entity expansion is possible beyond the five predefined entities).
 *
 * Outgoing text: bodies are escaped (& < > and CR as a character reference);
 * characters XML 1.0 cannot carry (C0 controls other than TAB, LF, CR, and
 * U+FFFE/U+FFFF) are STRIPPED from bodies so that an accepted message is
 * never refused; addresses containing them are REJECTED by the normalisers.
 *
 * SASL: SCRAM-SHA-256, then SCRAM-SHA-1 (gs2 header "n,,", never -PLUS),
 * then PLAIN only when TLS is on.  SCRAM's PBKDF2 is handed to the glue when
 * it offers io->kdf: the login then waits after the server-first-message
 * until kdf_done brings the key (input meanwhile is parsed as usual; another
 * challenge or a success before our response is a protocol error), else it
 * is derived inline.  <failure/> conditions not-authorized,
 * account-disabled, credentials-expired, invalid-authzid and
 * encryption-required mean AUTH_FAILED (retrying cannot help); any other
 * condition is ERROR (retried).
 *
 * XEP-0198: enabled when offered after bind (no resumption).  Inbound h only
 * advances over consecutively handled stanzas; a message reported with a
 * token is handled once ops->committed(token) is called.  An <r/> is always
 * answered at once with the current h; if messages were then uncommitted, an
 * unsolicited <a/> follows when they are committed.  Tokens are the stanza's
 * inbound sequence number (never 0); 0 without stream management.  logout()
 * sends a final <a/> before closing, so that the server does not re-send
 * (ejabberd: re-store offline) messages that were committed after its last <r/>.
 *
 * Time: the monotonic clock drives the login timeout and the keepalive; the
 * wall clock only stamps messages that carry no XEP-0203 delay stamp.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>
#include <mbedtls/base64.h>

#include "im_buf.h"
#include "im_common.h"
#include "im_proto.h"
#include "xmpp_int.h"
#include "xmpp_scram.h"

/* Names as expat reports them with namespace processing: "URI local". */
#define NS_STREAM   "http://etherx.jabber.org/streams"
#define NS_CLIENT   "jabber:client"
#define NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND     "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION  "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STANZAS  "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_STREAMS  "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_ROSTER   "jabber:iq:roster"
#define NS_PING     "urn:xmpp:ping"
#define NS_SM       "urn:xmpp:sm:3"
#define NS_DELAY    "urn:xmpp:delay"
#define NS_XML      "http://www.w3.org/XML/1998/namespace"

#define FEED_STEP   4096

/* ---- the per-stanza tree and its arena --------------------------------- */

struct xnode {
    const char *name;               /* "ns local" or "local" */
    const char **attrs;             /* name, value, ..., NULL */
    char *text;                     /* concatenated character data */
    size_t text_len;
    struct xnode *parent, *child, *last, *next;
};

struct achunk {
    struct achunk *next;
    size_t used, cap;
    char data[];
};

#define ARENA_FIRST 8192

/* ---- the roster -------------------------------------------------------- */

struct xres {
    char *name;
    enum im_presence pres;
};

struct xcontact {
    char *jid;                      /* lower-cased bare JID */
    char *name;                     /* NULL when unknown */
    char **groups;
    uint32_t n_groups;
    struct xres res[XMPP_MAX_RESOURCES];
    uint32_t n_res;
    enum im_presence pres;          /* aggregate, UNKNOWN until first presence */
};

struct creq {                       /* an add/remove contact iq in flight */
    uint64_t req;
    char id[32];
};

struct sent_msg {
    uint32_t num;                   /* outbound stanza number (XEP-0198) */
    uint64_t msg;
};

enum phase {
    P_NEW = 0,
    P_FEATURES,                     /* stream header sent, waiting for <features/> */
    P_STARTTLS,                     /* <starttls/> sent */
    P_TLS_WAIT,                     /* IM_EV_STARTTLS reported, waiting for tls_ready() */
    P_AUTH,                         /* <auth/> sent */
    P_BIND,
    P_SESSION,
    P_ROSTER,
    P_ONLINE,
    P_DEAD,
};

enum sm_state { SM_OFF = 0, SM_REQUESTED, SM_ON };

struct im_sess {
    const struct im_account_cfg *cfg;
    const struct im_io *io;
    enum phase phase;
    int rc;                         /* the error returned once dead */
    bool tls_on, authed, closing;

    /* parser */
    XML_Parser xp;
    int depth;
    uint64_t fed;                   /* bytes given to the current parser */
    uint64_t mark;                  /* start of the current element or end of the last */
    char *carry;                    /* bytes expat held past a stream restart */
    size_t carry_len;
    bool restart, suspend_tls;
    struct xnode *root, *cur;
    struct achunk *arena;
    size_t arena_total;

    /* login */
    char local[XMPP_JID_MAX + 1], domain[XMPP_JID_MAX + 1];
    char bare[XMPP_JID_MAX + 1];    /* own bare JID, lower-cased */
    const char *resource;
    struct scram_ctx scram;
    bool scram_on;
    bool kdf_wait;                  /* io->kdf accepted kdf_req: the login waits for kdf_done */
    uint64_t kdf_req;
    bool sm_offered, session_required;

    /* time: monotonic for the timers, wall only for message.ts */
    uint64_t mono, wall, start_ms, last_rx, ping_sent;
    bool ping_out;
    uint32_t ping_seq;

    /* roster */
    struct xcontact *contacts;
    uint32_t n_contacts, cap_contacts;
    struct creq *creqs;
    uint32_t n_creqs;

    /* XEP-0198 */
    enum sm_state sm;
    uint64_t in_recv;               /* inbound stanzas since <enabled/> */
    uint64_t *uncommitted;          /* tokens (= stanza numbers), increasing */
    uint32_t n_unc, cap_unc;
    bool a_owed;                    /* an <r/> was answered while messages were uncommitted */
    bool r_out;                     /* our <r/> is waiting for the server's <a/> */
    uint32_t out_count;             /* outbound stanzas since <enable/> */
    struct sent_msg *unacked;
    uint32_t ua_head, ua_n, cap_ua;

    struct im_buf ob;               /* the stanza being built (secret: SASL goes through it) */
};

/* ---- small helpers ----------------------------------------------------- */

static void
lower_ascii(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] = (char)(p[i] - 'A' + 'a');
}

static struct im_str
str_of(const char *p)
{
    return (struct im_str){ p, p ? (uint32_t)strlen(p) : 0 };
}

static void
emit(struct im_sess *s, const struct im_event *ev)
{
    s->io->event(s->io->ud, ev);
}

/* Report a final state and stop.  Returns rc for convenient tail calls. */
static int __attribute__((format(printf, 4, 5)))
fail(struct im_sess *s, enum im_account_state st, int rc, const char *fmt, ...)
{
    va_list ap;

    if (s->phase != P_DEAD && s->xp)
        XML_StopParser(s->xp, XML_FALSE);
    s->phase = P_DEAD;
    s->kdf_wait = false;
    va_start(ap, fmt);
    rc = im_io_vfail(s->io, &s->rc, st, rc, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static void
set_time(struct im_sess *s, struct im_time now)
{
    s->mono = now.mono_ms;
    s->wall = now.wall_ms;
}

/* ---- output ------------------------------------------------------------ */

/*
 * Stanzas are built in s->ob with im_buf_append() and im_buf_puts(), whose
 * failures are sticky: ob_flush() checks once and never sends half a stanza.
 */

/* Length of the XML-forbidden character at p (0 when allowed). */
static size_t
xml_forbidden(const uint8_t *p, size_t n)
{
    if (p[0] < 0x20 && p[0] != '\t' && p[0] != '\n' && p[0] != '\r')
        return 1;
    if (n >= 3 && p[0] == 0xef && p[1] == 0xbf && (p[2] == 0xbe || p[2] == 0xbf))
        return 3;
    return 0;
}

/* Escape text (attr: also quotes).  Forbidden characters are dropped. */
static void
ob_esc(struct im_buf *b, const char *p, size_t n, bool attr)
{
    size_t run = 0, i = 0;

    while (i < n) {
        const uint8_t *c = (const uint8_t *)p + i;
        const char *rep = NULL;
        size_t skip = xml_forbidden(c, n - i);
        if (!skip) {
            switch (*c) {
            case '&': rep = "&amp;"; break;
            case '<': rep = "&lt;"; break;
            case '>': rep = "&gt;"; break;
            case '\r': rep = "&#13;"; break;
            case '"': rep = attr ? "&quot;" : NULL; break;
            case '\'': rep = attr ? "&apos;" : NULL; break;
            case '\n': rep = attr ? "&#10;" : NULL; break;
            case '\t': rep = attr ? "&#9;" : NULL; break;
            default: break;
            }
            if (!rep) {
                i++;
                continue;
            }
            skip = 1;
        }
        im_buf_append(b, p + run, i - run);
        if (rep)
            im_buf_puts(b, rep);
        i += skip;
        run = i;
    }
    im_buf_append(b, p + run, n - run);
}

static void
ob_attr(struct im_buf *b, const char *name, const char *v, size_t n)
{
    im_buf_puts(b, " ");
    im_buf_puts(b, name);
    im_buf_puts(b, "='");
    ob_esc(b, v, n, true);
    im_buf_puts(b, "'");
}

static int
ob_flush(struct im_sess *s, bool stanza)
{
    int rc;

    if (s->ob.err) {
        rc = s->ob.err;
        im_buf_reset(&s->ob);
        if (rc == -IM_ETOOBIG)
            return fail(s, IM_ACC_ERROR, rc, "outgoing stanza over %u MiB", XMPP_MAX_OUT >> 20);
        return fail(s, IM_ACC_ERROR, rc, "out of memory");
    }
    if (stanza && s->sm != SM_OFF)
        s->out_count++;
    rc = s->io->out(s->io->ud, im_buf_data(&s->ob), im_buf_len(&s->ob));
    im_buf_reset(&s->ob);
    return rc;
}

static int
send_z(struct im_sess *s, const char *z, bool stanza)
{
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, z);
    return ob_flush(s, stanza);
}

/* ---- the arena --------------------------------------------------------- */

static void *
arena_alloc(struct im_sess *s, size_t n, size_t align)
{
    struct achunk *c = s->arena;
    size_t off = c ? (c->used + align - 1) & ~(align - 1) : 0;

    if (!c || off > c->cap || c->cap - off < n) {
        size_t cap = ARENA_FIRST;
        while (cap < n)
            cap *= 2;
        if (s->arena_total + cap > XMPP_MAX_ARENA)
            return NULL;
        struct achunk *nc = malloc(sizeof(*nc) + cap);
        if (!nc)
            return NULL;
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        s->arena = c = nc;
        s->arena_total += cap;
        off = 0;
    }
    c->used = off + n;
    return c->data + off;
}

/* Rewind: keep the oldest chunk when it is the small first one. */
static void
arena_reset(struct im_sess *s)
{
    struct achunk *c = s->arena, *keep = NULL;

    while (c) {
        struct achunk *next = c->next;
        if (!next && c->cap == ARENA_FIRST) {
            keep = c;
            keep->used = 0;
        } else {
            free(c);
        }
        c = next;
    }
    s->arena = keep;
    s->arena_total = keep ? keep->cap : 0;
}

static char *
arena_strdup(struct im_sess *s, const char *z)
{
    size_t n = strlen(z);
    char *p = arena_alloc(s, n + 1, 1);
    if (p)
        memcpy(p, z, n + 1);
    return p;
}

/* Append text to node n; extends in place when it is the arena's last allocation. */
static int
node_text(struct im_sess *s, struct xnode *n, const char *p, size_t len)
{
    struct achunk *c = s->arena;

    if (n->text && c && n->text + n->text_len + 1 == c->data + c->used && c->cap - c->used >= len) {
        memcpy(n->text + n->text_len, p, len);
        n->text_len += len;
        n->text[n->text_len] = 0;
        c->used += len;
        return 0;
    }
    char *t = arena_alloc(s, n->text_len + len + 1, 1);
    if (!t)
        return -1;
    if (n->text_len)
        memcpy(t, n->text, n->text_len);
    memcpy(t + n->text_len, p, len);
    n->text = t;
    n->text_len += len;
    t[n->text_len] = 0;
    return 0;
}

/* ---- tree queries ------------------------------------------------------ */

static bool
is(const struct xnode *n, const char *ns, const char *local)
{
    size_t l = strlen(ns);
    return n && !strncmp(n->name, ns, l) && n->name[l] == ' ' && !strcmp(n->name + l + 1, local);
}

static bool
in_ns(const struct xnode *n, const char *ns)
{
    size_t l = strlen(ns);
    return n && !strncmp(n->name, ns, l) && n->name[l] == ' ';
}

static const char *
local_name(const struct xnode *n)
{
    const char *sp = strchr(n->name, ' ');
    return sp ? sp + 1 : n->name;
}

static const char *
attr(const struct xnode *n, const char *name)
{
    for (const char **a = n->attrs; a && a[0]; a += 2)
        if (!strcmp(a[0], name))
            return a[1];
    return NULL;
}

static struct xnode *
child(const struct xnode *n, const char *ns, const char *local)
{
    for (struct xnode *c = n ? n->child : NULL; c; c = c->next)
        if (is(c, ns, local))
            return c;
    return NULL;
}

static const char *
text(const struct xnode *n)
{
    return n && n->text ? n->text : "";
}

/* The defined condition of a stanza or stream error: first child in ns other than <text/>. */
static const char *
error_condition(const struct xnode *err, const char *ns, const char **txt)
{
    const char *cond = "undefined-condition";

    *txt = "";
    for (struct xnode *c = err ? err->child : NULL; c; c = c->next) {
        if (!in_ns(c, ns))
            continue;
        if (!strcmp(local_name(c), "text"))
            *txt = text(c);
        else if (!strcmp(cond, "undefined-condition"))
            cond = local_name(c);
    }
    return cond;
}

/* ---- JIDs -------------------------------------------------------------- */

/*
 * Validate and lower-case a bare JID (local@domain) of len bytes into out.
 * Returns 0 or -IM_EINVAL with *why.
 */
static int
jid_bare(const char *in, size_t len, char *out, size_t outsz, const char **why)
{
    const char *at = memchr(in, '@', len);

    if (len == 0)
        return *why = "empty address", -IM_EINVAL;
    if (!im_utf8_valid(in, len))
        return *why = "not valid UTF-8", -IM_EINVAL;
    if (memchr(in, '/', len))
        return *why = "a resource (\"/...\") is not allowed: give the bare JID local@domain", -IM_EINVAL;
    if (!at)
        return *why = "missing local part: give local@domain", -IM_EINVAL;
    if (at == in)
        return *why = "empty local part: give local@domain", -IM_EINVAL;
    if (memchr(at + 1, '@', len - (size_t)(at + 1 - in)))
        return *why = "more than one '@'", -IM_EINVAL;
    size_t ll = (size_t)(at - in), dl = len - ll - 1;
    if (dl && at[dl] == '.')            /* a trailing dot of the domain is dropped */
        dl--;
    if (dl == 0)
        return *why = "missing domain after '@'", -IM_EINVAL;
    if (ll > 1023 || dl > 1023 || ll + 1 + dl > XMPP_JID_MAX)
        return *why = "address too long (at most 255 bytes)", -IM_EINVAL;
    if (ll + 1 + dl + 1 > outsz)
        return *why = "address too long for the buffer", -IM_EINVAL;
    for (size_t i = 0; i < ll; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"&':<>", c))
            return *why = "the local part contains a forbidden character (space, control, \" & ' : < >)",
                   -IM_EINVAL;
    }
    const char *d = at + 1;
    for (size_t i = 0; i < dl; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"&'<>\\,;", c))
            return *why = "the domain contains a forbidden character", -IM_EINVAL;
        if (c == '.' && (i == 0 || d[i - 1] == '.'))
            return *why = "the domain has an empty label", -IM_EINVAL;
    }
    memcpy(out, in, ll + 1 + dl);
    out[ll + 1 + dl] = 0;
    lower_ascii(out, ll + 1 + dl);
    return 0;
}

static int
xmpp_normalize_login(const char *in, char *out, size_t outsz, const char **why)
{
    const char *w = NULL;
    int rc = jid_bare(in ? in : "", in ? strlen(in) : 0, out, outsz, &w);
    if (why)
        *why = w;
    return rc;
}

static int
xmpp_normalize_address(const char *in, char *out, size_t outsz, const char **why)
{
    return xmpp_normalize_login(in, out, outsz, why);
}

static void
xmpp_default_tls_name(const char *login, char *out, size_t outsz)
{
    const char *at = login ? strchr(login, '@') : NULL;
    const char *d = at ? at + 1 : "";
    size_t n = strcspn(d, "/");

    if (!outsz)
        return;
    if (n >= outsz)
        n = 0;
    memcpy(out, d, n);
    out[n] = 0;
}

/*
 * Split a JID from the wire into the lower-cased bare part (out; a bare
 * domain is allowed here, as servers send from their domain) and the
 * resource view.  Returns 0 or -IM_EINVAL.
 */
static int
jid_from_wire(const char *in, char *out, size_t outsz, struct im_str *res)
{
    size_t len = strlen(in), bl = strcspn(in, "/");
    const char *why;

    *res = (struct im_str){ NULL, 0 };
    if (bl < len)
        *res = (struct im_str){ in + bl + 1, (uint32_t)(len - bl - 1) };
    if (!memchr(in, '@', bl)) {             /* domain only */
        if (bl == 0 || bl >= outsz || bl > XMPP_JID_MAX)
            return -IM_EINVAL;
        memcpy(out, in, bl);
        out[bl] = 0;
        lower_ascii(out, bl);
        return 0;
    }
    return jid_bare(in, bl, out, outsz, &why);
}

/* ---- time stamps (XEP-0082) -------------------------------------------- */

static int64_t
days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int
digits(const char *s, int n, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (unsigned)(s[i] - '0');
    }
    return 0;
}

int
xmpp_parse_stamp(const char *s, uint64_t *ms)
{
    unsigned Y, M, D, h, m, sec, frac = 0, fd = 0;

    if (strlen(s) < 20 || digits(s, 4, &Y) || s[4] != '-' || digits(s + 5, 2, &M) || s[7] != '-' ||
        digits(s + 8, 2, &D) || s[10] != 'T' || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &m) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -IM_EINVAL;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
        return -IM_EINVAL;
    s += 19;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return -IM_EINVAL;
        for (; *s >= '0' && *s <= '9'; s++)
            if (fd < 3) {
                frac = frac * 10 + (unsigned)(*s - '0');
                fd++;
            }
        while (fd < 3) {
            frac *= 10;
            fd++;
        }
    }
    int64_t off = 0;
    if (*s == 'Z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        unsigned oh, om;
        if (digits(s + 1, 2, &oh) || s[3] != ':' || digits(s + 4, 2, &om) || oh > 23 || om > 59)
            return -IM_EINVAL;
        off = ((int64_t)oh * 60 + om) * 60 * (*s == '+' ? 1 : -1);
        s += 6;
    } else {
        return -IM_EINVAL;
    }
    if (*s)
        return -IM_EINVAL;
    int64_t t = days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec - off;
    if (t < 0)
        return -IM_EINVAL;
    *ms = (uint64_t)t * 1000 + frac;
    return 0;
}

/* ---- roster ------------------------------------------------------------ */

static void
contact_free(struct xcontact *c)
{
    free(c->jid);
    free(c->name);
    for (uint32_t i = 0; i < c->n_groups; i++)
        free(c->groups[i]);
    free(c->groups);
    for (uint32_t i = 0; i < c->n_res; i++)
        free(c->res[i].name);
    memset(c, 0, sizeof(*c));
}

static void
roster_clear(struct im_sess *s)
{
    for (uint32_t i = 0; i < s->n_contacts; i++)
        contact_free(&s->contacts[i]);
    s->n_contacts = 0;
}

static struct xcontact *
roster_find(struct im_sess *s, const char *jid)
{
    for (uint32_t i = 0; i < s->n_contacts; i++)
        if (!strcmp(s->contacts[i].jid, jid))
            return &s->contacts[i];
    return NULL;
}

static void
roster_remove(struct im_sess *s, const char *jid)
{
    struct xcontact *c = roster_find(s, jid);
    if (!c)
        return;
    contact_free(c);
    *c = s->contacts[--s->n_contacts];
    memset(&s->contacts[s->n_contacts], 0, sizeof(*c));
}

/* Insert or update from a roster <item/>.  Returns 0, or -ENOMEM / -IM_ELIMIT. */
static int
roster_item(struct im_sess *s, const struct xnode *item)
{
    const char *jid = attr(item, "jid"), *sub = attr(item, "subscription"), *name = attr(item, "name");
    char bare[XMPP_JID_MAX + 1];
    struct im_str res;

    if (!jid || jid_from_wire(jid, bare, sizeof(bare), &res) || res.len)
        return 0;                               /* not a contact we can name: skip */
    if (sub && !strcmp(sub, "remove")) {
        roster_remove(s, bare);
        return 0;
    }
    struct xcontact *c = roster_find(s, bare);
    if (!c) {
        if (s->n_contacts >= XMPP_MAX_CONTACTS)
            return -IM_ELIMIT;
        if (s->n_contacts == s->cap_contacts) {
            uint32_t cap = s->cap_contacts ? s->cap_contacts * 2 : 16;
            struct xcontact *nc = realloc(s->contacts, cap * sizeof(*nc));
            if (!nc)
                return -ENOMEM;
            s->contacts = nc;
            s->cap_contacts = cap;
        }
        c = &s->contacts[s->n_contacts];
        memset(c, 0, sizeof(*c));
        if (!(c->jid = strdup(bare)))
            return -ENOMEM;
        s->n_contacts++;
    }
    free(c->name);
    c->name = (name && *name) ? strdup(name) : NULL;
    for (uint32_t i = 0; i < c->n_groups; i++)
        free(c->groups[i]);
    free(c->groups);
    c->groups = NULL;
    c->n_groups = 0;
    uint32_t ng = 0;
    for (struct xnode *g = item->child; g; g = g->next)
        ng += is(g, NS_ROSTER, "group") && g->text_len;
    if (ng) {
        if (!(c->groups = calloc(ng, sizeof(char *))))
            return -ENOMEM;
        for (struct xnode *g = item->child; g; g = g->next)
            if (is(g, NS_ROSTER, "group") && g->text_len) {
                if (!(c->groups[c->n_groups] = strdup(g->text)))
                    return -ENOMEM;
                c->n_groups++;
            }
    }
    return 0;
}

static int
emit_contacts(struct im_sess *s)
{
    uint32_t n = s->n_contacts, ng = 0;

    for (uint32_t i = 0; i < n; i++)
        ng += s->contacts[i].n_groups;
    struct im_contact *list = calloc(n ? n : 1, sizeof(*list));
    struct im_str *groups = calloc(ng ? ng : 1, sizeof(*groups));
    if (!list || !groups) {
        free(list);
        free(groups);
        return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
    }
    struct im_str *g = groups;
    for (uint32_t i = 0; i < n; i++) {
        struct xcontact *c = &s->contacts[i];
        list[i].address = str_of(c->jid);
        list[i].name = c->name ? str_of(c->name) : (struct im_str){ "", 0 };
        list[i].groups = g;
        list[i].n_groups = c->n_groups;
        for (uint32_t k = 0; k < c->n_groups; k++)
            *g++ = str_of(c->groups[k]);
        list[i].presence = c->pres;
    }
    struct im_event ev = { .type = IM_EV_CONTACTS };
    ev.u.contacts.list = list;
    ev.u.contacts.n = n;
    emit(s, &ev);
    free(list);
    free(groups);
    return 0;
}

/* ---- stream plumbing --------------------------------------------------- */

static int send_header(struct im_sess *s);
static int new_parser(struct im_sess *s);

static int
send_header(struct im_sess *s)
{
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, "<?xml version='1.0'?><stream:stream xmlns='" NS_CLIENT "' xmlns:stream='" NS_STREAM "'");
    ob_attr(&s->ob, "to", s->domain, strlen(s->domain));
    im_buf_puts(&s->ob, " version='1.0' xml:lang='en'>");
    return ob_flush(s, false);
}

static void
sm_reset(struct im_sess *s)
{
    s->sm = SM_OFF;
    s->in_recv = 0;
    s->n_unc = 0;
    s->a_owed = false;
    s->r_out = false;
    s->out_count = 0;
    s->ua_head = s->ua_n = 0;
}

static uint32_t
sm_h(const struct im_sess *s)
{
    return (uint32_t)(s->n_unc ? s->uncommitted[0] - 1 : s->in_recv);
}

static int
sm_send_a(struct im_sess *s)
{
    char buf[80];
    snprintf(buf, sizeof(buf), "<a xmlns='" NS_SM "' h='%u'/>", sm_h(s));
    return send_z(s, buf, false);
}

/* Report IM_EV_SENT for every queued message; used when acks are not coming. */
static void
sm_flush_unacked(struct im_sess *s, uint32_t h, bool all)
{
    while (s->ua_n && s->phase != P_DEAD) {
        struct sent_msg *m = &s->unacked[s->ua_head % s->cap_ua];
        if (!all && (int32_t)(h - m->num) < 0)
            break;
        uint64_t msg = m->msg;
        s->ua_head = (s->ua_head + 1) % s->cap_ua;
        s->ua_n--;
        im_io_sent(s->io, msg);
    }
}

/* ---- SASL -------------------------------------------------------------- */

static int
send_b64_elem(struct im_sess *s, const char *open, const void *p, size_t n, const char *close)
{
    size_t need = 4 * ((n + 2) / 3) + 1, olen;
    char *b = malloc(need);
    int rc;

    if (!b)
        return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
    if (mbedtls_base64_encode((unsigned char *)b, need, &olen, p, n)) {
        free(b);
        return fail(s, IM_ACC_ERROR, -IM_EINVAL, "internal error: base64");
    }
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, open);
    im_buf_append(&s->ob, b, olen);
    im_buf_puts(&s->ob, close);
    im_wipe(b, olen);
    free(b);
    rc = ob_flush(s, false);
    im_buf_wipe(&s->ob);
    return rc;
}

static int
start_auth(struct im_sess *s, const struct xnode *mechs)
{
    bool sha256 = false, sha1 = false, plain = false;
    char offered[160] = "";
    size_t off = 0;
    char out[SCRAM_MAX_CFB + 8];
    size_t n;
    int rc;

    for (struct xnode *m = mechs ? mechs->child : NULL; m; m = m->next) {
        if (!is(m, NS_SASL, "mechanism"))
            continue;
        const char *t = text(m);
        sha256 |= !strcmp(t, "SCRAM-SHA-256");
        sha1 |= !strcmp(t, "SCRAM-SHA-1");
        plain |= !strcmp(t, "PLAIN");
        if (off < sizeof(offered) - 1)
            off += (size_t)snprintf(offered + off, sizeof(offered) - off, "%s%s", off ? " " : "", t);
        if (off >= sizeof(offered))
            off = sizeof(offered) - 1;
    }
    if (sha256 || sha1) {
        enum scram_hash h = sha256 ? SCRAM_SHA256 : SCRAM_SHA1;
        rc = scram_client_first(&s->scram, h, s->local, NULL, s->io->rng, out, sizeof(out), &n);
        if (rc)
            return fail(s, IM_ACC_ERROR, rc, "SCRAM: cannot start (%s)", im_strerror(rc));
        s->scram_on = true;
        char open[120];
        snprintf(open, sizeof(open), "<auth xmlns='" NS_SASL "' mechanism='%s'>", scram_mech_name(h));
        s->phase = P_AUTH;
        return send_b64_elem(s, open, out, n, "</auth>");
    }
    if (plain && s->tls_on) {
        size_t ul = strlen(s->local), pl = strlen(s->cfg->password);
        char *buf = malloc(ul + pl + 2);
        if (!buf)
            return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
        buf[0] = 0;
        memcpy(buf + 1, s->local, ul);
        buf[1 + ul] = 0;
        memcpy(buf + 2 + ul, s->cfg->password, pl);
        s->phase = P_AUTH;
        rc = send_b64_elem(s, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>", buf, ul + pl + 2, "</auth>");
        im_wipe(buf, ul + pl + 2);
        free(buf);
        return rc;
    }
    if (plain)
        return fail(s, IM_ACC_ERROR, -IM_EPROTO,
                    "no usable SASL mechanism: PLAIN refused without TLS (server offers: %s)",
                    off ? offered : "none");
    return fail(s, IM_ACC_ERROR, -IM_EPROTO, "no usable SASL mechanism (server offers: %s)",
                off ? offered : "none");
}

/* Decode element text as base64 into a malloc'd buffer (NUL-terminated). */
static char *
b64_text(const struct xnode *n, size_t *len)
{
    size_t cap = n->text_len / 4 * 3 + 4;
    unsigned char *b = malloc(cap);

    if (!b)
        return NULL;
    if (n->text_len == 1 && n->text[0] == '=')        /* RFC 6120: empty response */
        *len = 0;
    else if (mbedtls_base64_decode(b, cap - 1, len, (const unsigned char *)n->text, n->text_len)) {
        free(b);
        return NULL;
    }
    b[*len] = 0;
    return (char *)b;
}

/* Send the client-final-message made from SaltedPassword (keylen bytes). */
static int
scram_answer(struct im_sess *s, const uint8_t *key, size_t keylen)
{
    char out[1024];
    size_t olen;
    int rc = scram_client_final_key(&s->scram, key, keylen, out, sizeof(out), &olen);

    if (rc == -IM_EINVAL)
        return fail(s, IM_ACC_ERROR, rc, "SCRAM: the derived key has the wrong length");
    if (rc)
        return fail(s, IM_ACC_ERROR, rc, "SCRAM: malformed server-first-message");
    rc = send_b64_elem(s, "<response xmlns='" NS_SASL "'>", out, olen, "</response>");
    im_wipe(out, sizeof(out));
    return rc;
}

/*
 * SCRAM needs PBKDF2 of the password with the server's salt and count: hand
 * it to the glue (io->kdf; the login waits for kdf_done) or derive it here.
 */
static int
scram_derive(struct im_sess *s)
{
    struct im_kdf_params p;
    uint8_t key[IM_KDF_MAX_KEY];
    int rc;

    scram_kdf_params(&s->scram, s->cfg->password, &p);
    if (s->io->kdf) {
        rc = s->io->kdf(s->io->ud, ++s->kdf_req, &p);
        if (rc < 0)
            return fail(s, IM_ACC_ERROR, rc, "SCRAM: key derivation refused (%s)", im_strerror(rc));
        s->kdf_wait = true;
        return 0;
    }
    rc = im_kdf_pbkdf2(&p, key, sizeof(key));
    if (rc)
        rc = fail(s, IM_ACC_ERROR, rc, "SCRAM: key derivation failed (%s)", im_strerror(rc));
    else
        rc = scram_answer(s, key, im_kdf_keylen(p.hash));
    im_wipe(key, sizeof(key));
    return rc;
}

static int
sasl_challenge(struct im_sess *s, const struct xnode *n)
{
    size_t len;
    char *d;
    int rc;

    if (!s->scram_on)
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected SASL challenge");
    if (s->scram.step == SCRAM_STEP_KEY)
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "SASL challenge before our SCRAM response");
    if (!(d = b64_text(n, &len)))
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "SASL challenge is not valid base64");
    if (s->scram.step == SCRAM_STEP_FIRST) {
        rc = scram_server_first(&s->scram, d, len);
        free(d);
        if (rc == -IM_ELIMIT)
            return fail(s, IM_ACC_ERROR, rc, "SCRAM: the server asks for %lu iterations of PBKDF2, more than "
                        "the %u imfuse allows: refused", (unsigned long)s->scram.iter, SCRAM_MAX_ITER);
        if (rc)
            return fail(s, IM_ACC_ERROR, rc, "SCRAM: malformed server-first-message");
        return scram_derive(s);
    }
    rc = scram_verify_server_final(&s->scram, d, len);
    free(d);
    if (rc)
        return fail(s, IM_ACC_ERROR, -IM_EAUTH, "SCRAM: server signature mismatch (the server "
                    "did not prove it knows the password)");
    return send_z(s, "<response xmlns='" NS_SASL "'/>", false);
}

static int
sasl_success(struct im_sess *s, const struct xnode *n)
{
    if (s->scram_on) {
        if (n->text_len) {
            size_t len;
            char *d = b64_text(n, &len);
            if (!d)
                return fail(s, IM_ACC_ERROR, -IM_EPROTO, "SASL success data is not valid base64");
            int rc = s->scram.step == SCRAM_STEP_FINAL ? scram_verify_server_final(&s->scram, d, len) :
                     s->scram.step == SCRAM_STEP_DONE ? 0 : -IM_EPROTO;
            free(d);
            if (rc)
                return fail(s, IM_ACC_ERROR, -IM_EAUTH, "SCRAM: server signature mismatch (the "
                            "server did not prove it knows the password)");
        }
        if (s->scram.step != SCRAM_STEP_DONE)
            return fail(s, IM_ACC_ERROR, -IM_EAUTH, "SCRAM: success without a server signature");
        scram_wipe(&s->scram);
        s->scram_on = false;
    }
    s->authed = true;
    s->restart = true;
    s->phase = P_FEATURES;
    return 0;
}

static int
sasl_failure(struct im_sess *s, const struct xnode *n)
{
    static const char *const final[] = {
        "not-authorized", "account-disabled", "credentials-expired", "invalid-authzid",
        "encryption-required",
    };
    const char *txt, *cond = error_condition(n, NS_SASL, &txt);
    enum im_account_state st = IM_ACC_ERROR;

    for (size_t i = 0; i < IM_ARRAY_SIZE(final); i++)
        if (!strcmp(cond, final[i]))
            st = IM_ACC_AUTH_FAILED;
    return fail(s, st, -IM_EAUTH, "%s%s%s", cond, *txt ? ": " : "", txt);
}

/* ---- features and login steps ------------------------------------------ */

static int
send_roster_get(struct im_sess *s)
{
    s->phase = P_ROSTER;
    return send_z(s, "<iq type='get' id='roster'><query xmlns='" NS_ROSTER "'/></iq>", true);
}

static int
after_bind(struct im_sess *s)
{
    if (s->sm_offered) {
        sm_reset(s);
        if (send_z(s, "<enable xmlns='" NS_SM "'/>", false) && s->phase == P_DEAD)
            return s->rc;
        s->sm = SM_REQUESTED;           /* outbound counting starts after <enable/> */
    }
    if (s->session_required) {
        s->phase = P_SESSION;
        return send_z(s, "<iq type='set' id='sess'><session xmlns='" NS_SESSION "'/></iq>", true);
    }
    return send_roster_get(s);
}

static int
on_features(struct im_sess *s, const struct xnode *f)
{
    if (s->phase != P_FEATURES)
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected stream features");
    if (!s->authed) {
        if (s->cfg->tls == IM_TLS_STARTTLS && !s->tls_on) {
            if (!child(f, NS_TLS, "starttls"))
                return fail(s, IM_ACC_ERROR, -IM_ETLS, "server does not offer STARTTLS");
            s->phase = P_STARTTLS;
            return send_z(s, "<starttls xmlns='" NS_TLS "'/>", false);
        }
        return start_auth(s, child(f, NS_SASL, "mechanisms"));
    }
    if (!child(f, NS_BIND, "bind"))
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "server does not offer resource binding");
    s->sm_offered = child(f, NS_SM, "sm") != NULL;
    const struct xnode *sess = child(f, NS_SESSION, "session");
    s->session_required = sess && !child(sess, NS_SESSION, "optional");
    s->phase = P_BIND;
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, "<iq type='set' id='bind'><bind xmlns='" NS_BIND "'><resource>");
    ob_esc(&s->ob, s->resource, strlen(s->resource), false);
    im_buf_puts(&s->ob, "</resource></bind></iq>");
    return ob_flush(s, false);
}

static int
go_online(struct im_sess *s)
{
    int rc = emit_contacts(s);
    if (rc)
        return rc;
    if (s->phase == P_DEAD)
        return s->rc;
    rc = send_z(s, "<presence/>", true);
    if (s->phase == P_DEAD)
        return s->rc;
    s->phase = P_ONLINE;
    struct im_event ev = { .type = IM_EV_STATE };
    ev.u.state.state = IM_ACC_ONLINE;
    ev.u.state.detail = (struct im_str){ "", 0 };
    emit(s, &ev);
    return rc;
}

/* ---- stanzas ----------------------------------------------------------- */

static int
iq_reply(struct im_sess *s, const struct xnode *iq, bool error)
{
    const char *id = attr(iq, "id"), *from = attr(iq, "from");

    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, error ? "<iq type='error'" : "<iq type='result'");
    if (id)
        ob_attr(&s->ob, "id", id, strlen(id));
    if (from)
        ob_attr(&s->ob, "to", from, strlen(from));
    if (error)
        im_buf_puts(&s->ob, "><error type='cancel'><service-unavailable xmlns='" NS_STANZAS "'/></error></iq>");
    else
        im_buf_puts(&s->ob, "/>");
    return ob_flush(s, true);
}

static int
on_iq_result(struct im_sess *s, const struct xnode *iq, const char *id, bool ok)
{
    const char *txt, *cond = "";
    const struct xnode *err = child(iq, NS_CLIENT, "error");

    if (!ok)
        cond = error_condition(err, NS_STANZAS, &txt);
    if (!strcmp(id, "bind") && s->phase == P_BIND) {
        if (!ok)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "resource binding failed: %s", cond);
        const char *jid = text(child(child(iq, NS_BIND, "bind"), NS_BIND, "jid"));
        char bare[XMPP_JID_MAX + 1];
        struct im_str res;
        if (*jid && !jid_from_wire(jid, bare, sizeof(bare), &res) && strchr(bare, '@'))
            im_strlcpy(s->bare, bare, sizeof(s->bare));
        return after_bind(s);
    }
    if (!strcmp(id, "sess") && s->phase == P_SESSION) {
        if (!ok)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "session establishment failed: %s", cond);
        return send_roster_get(s);
    }
    if (!strcmp(id, "roster") && s->phase == P_ROSTER) {
        roster_clear(s);
        for (struct xnode *it = ok ? child(iq, NS_ROSTER, "query") : NULL; it; it = NULL)
            for (struct xnode *c = it->child; c; c = c->next)
                if (is(c, NS_ROSTER, "item")) {
                    int rc = roster_item(s, c);
                    if (rc == -ENOMEM)
                        return fail(s, IM_ACC_ERROR, rc, "out of memory");
                    if (rc)
                        break;                  /* over the limit: keep what fits */
                }
        return go_online(s);
    }
    if (!strncmp(id, "ping", 4)) {
        s->ping_out = false;                /* an error reply proves liveness too */
        return 0;
    }
    for (uint32_t i = 0; i < s->n_creqs; i++) {
        if (strcmp(s->creqs[i].id, id))
            continue;
        struct im_event ev = { .type = IM_EV_CONTACT_DONE };
        ev.u.contact_done.req = s->creqs[i].req;
        ev.u.contact_done.status = ok ? 0 : -IM_EPROTO;
        ev.u.contact_done.detail = str_of(cond);
        s->creqs[i] = s->creqs[--s->n_creqs];
        emit(s, &ev);
        return 0;
    }
    return 0;                               /* a reply to nothing we asked: ignore */
}

static int
on_iq(struct im_sess *s, const struct xnode *iq)
{
    const char *type = attr(iq, "type"), *id = attr(iq, "id"), *from = attr(iq, "from");

    if (!type || !id)
        return 0;
    if (!strcmp(type, "result") || !strcmp(type, "error"))
        return on_iq_result(s, iq, id, !strcmp(type, "result"));
    if (strcmp(type, "get") && strcmp(type, "set"))
        return 0;
    if (!strcmp(type, "get") && child(iq, NS_PING, "ping"))
        return iq_reply(s, iq, false);
    const struct xnode *q = child(iq, NS_ROSTER, "query");
    if (!strcmp(type, "set") && q && s->phase == P_ONLINE) {
        char bare[XMPP_JID_MAX + 1];
        struct im_str res;
        /* RFC 6121 2.1.6: only pushes from no one or our own bare JID. */
        if (from && (jid_from_wire(from, bare, sizeof(bare), &res) || res.len || strcmp(bare, s->bare)))
            return iq_reply(s, iq, true);
        for (struct xnode *c = q->child; c; c = c->next)
            if (is(c, NS_ROSTER, "item")) {
                int rc = roster_item(s, c);
                if (rc == -ENOMEM)
                    return fail(s, IM_ACC_ERROR, rc, "out of memory");
            }
        int rc = iq_reply(s, iq, false);
        if (s->phase == P_DEAD)
            return s->rc;
        return rc ? rc : emit_contacts(s);
    }
    return iq_reply(s, iq, true);
}

static enum im_presence
contact_aggregate(const struct xcontact *c)
{
    enum im_presence p = IM_PRES_OFFLINE;
    for (uint32_t i = 0; i < c->n_res; i++) {
        if (c->res[i].pres == IM_PRES_AVAILABLE)
            return IM_PRES_AVAILABLE;
        p = IM_PRES_AWAY;
    }
    return p;
}

static int
on_presence(struct im_sess *s, const struct xnode *pr)
{
    const char *type = attr(pr, "type"), *from = attr(pr, "from");
    char bare[XMPP_JID_MAX + 1];
    struct im_str res;

    if (!from || jid_from_wire(from, bare, sizeof(bare), &res) || !strcmp(bare, s->bare))
        return 0;
    struct xcontact *c = roster_find(s, bare);
    if (!c)
        return 0;
    if (type && !strcmp(type, "subscribe")) {
        im_buf_reset(&s->ob);
        im_buf_puts(&s->ob, "<presence type='subscribed'");
        ob_attr(&s->ob, "to", bare, strlen(bare));
        im_buf_puts(&s->ob, "/>");
        return ob_flush(s, true);
    }
    enum im_presence np;
    if (!type) {
        const char *show = text(child(pr, NS_CLIENT, "show"));
        np = (!strcmp(show, "away") || !strcmp(show, "xa") || !strcmp(show, "dnd")) ?
             IM_PRES_AWAY : IM_PRES_AVAILABLE;
    } else if (!strcmp(type, "unavailable")) {
        np = IM_PRES_OFFLINE;
    } else {
        return 0;                           /* subscribed, unsubscribe(d), error, probe */
    }
    uint32_t i;
    for (i = 0; i < c->n_res; i++)
        if (strlen(c->res[i].name) == res.len && (res.len == 0 || !memcmp(c->res[i].name, res.p, res.len)))
            break;
    if (np == IM_PRES_OFFLINE) {
        if (i < c->n_res) {
            free(c->res[i].name);
            c->res[i] = c->res[--c->n_res];
        }
        if (!res.len)                       /* unavailable from the bare JID: all gone */
            while (c->n_res)
                free(c->res[--c->n_res].name);
    } else if (i < c->n_res) {
        c->res[i].pres = np;
    } else if (c->n_res < XMPP_MAX_RESOURCES) {
        char *r = malloc(res.len + 1);
        if (!r)
            return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
        memcpy(r, res.p ? res.p : "", res.len);
        r[res.len] = 0;
        c->res[c->n_res].name = r;
        c->res[c->n_res].pres = np;
        c->n_res++;
    }
    enum im_presence agg = contact_aggregate(c);
    if (agg == c->pres)
        return 0;
    c->pres = agg;
    struct im_event ev = { .type = IM_EV_PRESENCE };
    ev.u.presence.address = str_of(c->jid);
    ev.u.presence.presence = agg;
    emit(s, &ev);
    return 0;
}

/* Returns 0 when handled, 1 when reported with a token (withheld), <0 on error. */
static int
on_message(struct im_sess *s, const struct xnode *m, uint64_t num)
{
    const char *type = attr(m, "type"), *from = attr(m, "from");
    const struct xnode *body = child(m, NS_CLIENT, "body");
    char bare[XMPP_JID_MAX + 1];
    struct im_str res;

    if (type && strcmp(type, "chat") && strcmp(type, "normal"))
        return 0;
    if (!body || !body->text_len || !from || !im_utf8_valid(body->text, body->text_len))
        return 0;
    if (jid_from_wire(from, bare, sizeof(bare), &res) || !im_utf8_valid(res.p, res.len))
        return 0;
    uint64_t ts = s->wall;
    const struct xnode *delay = child(m, NS_DELAY, "delay");
    const char *stamp = delay ? attr(delay, "stamp") : NULL;
    if (stamp && xmpp_parse_stamp(stamp, &ts))
        ts = s->wall;
    uint64_t token = 0;
    if (s->sm == SM_ON) {
        if (s->n_unc >= XMPP_MAX_UNCOMMITTED)
            return fail(s, IM_ACC_ERROR, -IM_ELIMIT, "too many messages awaiting storage");
        if (s->n_unc == s->cap_unc) {
            uint32_t cap = s->cap_unc ? s->cap_unc * 2 : 64;
            uint64_t *nu = realloc(s->uncommitted, cap * sizeof(*nu));
            if (!nu)
                return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
            s->uncommitted = nu;
            s->cap_unc = cap;
        }
        s->uncommitted[s->n_unc++] = token = num;
    }
    struct im_event ev = { .type = IM_EV_MESSAGE };
    ev.u.message.from = str_of(bare);
    ev.u.message.resource = res;
    ev.u.message.body = (struct im_str){ body->text, (uint32_t)body->text_len };
    ev.u.message.ts = ts;
    ev.u.message.token = token;
    emit(s, &ev);
    return token ? 1 : 0;
}

static int
on_sm(struct im_sess *s, const struct xnode *n)
{
    const char *l = local_name(n);

    if (!strcmp(l, "enabled") && s->sm == SM_REQUESTED) {
        s->sm = SM_ON;
        s->in_recv = 0;
        s->n_unc = 0;
        return 0;
    }
    if (!strcmp(l, "failed") && s->sm == SM_REQUESTED) {
        s->sm = SM_OFF;
        sm_flush_unacked(s, 0, true);
        return 0;
    }
    if (!strcmp(l, "r") && s->sm == SM_ON) {
        s->a_owed = s->n_unc != 0;
        return sm_send_a(s);
    }
    if (!strcmp(l, "a") && s->sm == SM_ON) {
        const char *h = attr(n, "h");
        char *end;
        unsigned long v = h ? strtoul(h, &end, 10) : 0;
        if (!h || !*h || *end || v > UINT32_MAX)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "malformed stream management ack");
        if ((int32_t)((uint32_t)v - s->out_count) > 0)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "server acknowledged more stanzas than were sent");
        sm_flush_unacked(s, (uint32_t)v, false);
        /* One request at a time: what was sent while this one was out is
         * covered by the next (one <r/> and one <a/> per round trip, not
         * per message). */
        s->r_out = false;
        if (s->ua_n && s->phase == P_ONLINE) {
            s->r_out = true;
            return send_z(s, "<r xmlns='" NS_SM "'/>", false);
        }
        return 0;
    }
    return 0;
}

static int
on_stream_error(struct im_sess *s, const struct xnode *n)
{
    const char *txt, *cond = error_condition(n, NS_STREAMS, &txt);
    return fail(s, IM_ACC_ERROR, -IM_EPROTO, "stream error: %s%s%s", cond, *txt ? ": " : "", txt);
}

/* A complete top-level element. */
static int
process(struct im_sess *s, const struct xnode *n)
{
    if (in_ns(n, NS_CLIENT)) {
        const char *l = local_name(n);
        bool stanza = !strcmp(l, "message") || !strcmp(l, "presence") || !strcmp(l, "iq");
        if (!stanza)
            return 0;
        uint64_t num = 0;
        if (s->sm == SM_ON)
            num = ++s->in_recv;
        if (!strcmp(l, "iq"))
            return on_iq(s, n);
        if (s->phase != P_ONLINE && s->phase != P_ROSTER)
            return 0;
        if (!strcmp(l, "presence"))
            return on_presence(s, n);
        int rc = on_message(s, n, num);
        return rc < 0 ? rc : 0;
    }
    if (is(n, NS_STREAM, "features"))
        return on_features(s, n);
    if (is(n, NS_STREAM, "error"))
        return on_stream_error(s, n);
    if (in_ns(n, NS_TLS)) {
        if (s->phase != P_STARTTLS)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected STARTTLS element");
        if (!is(n, NS_TLS, "proceed"))
            return fail(s, IM_ACC_ERROR, -IM_ETLS, "server refused STARTTLS");
        s->phase = P_TLS_WAIT;
        s->suspend_tls = true;
        struct im_event ev = { .type = IM_EV_STARTTLS };
        emit(s, &ev);
        return 0;
    }
    if (in_ns(n, NS_SASL)) {
        if (s->phase != P_AUTH)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected SASL element");
        if (is(n, NS_SASL, "challenge"))
            return sasl_challenge(s, n);
        if (is(n, NS_SASL, "success"))
            return sasl_success(s, n);
        if (is(n, NS_SASL, "failure"))
            return sasl_failure(s, n);
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "unexpected SASL element");
    }
    if (in_ns(n, NS_SM))
        return on_sm(s, n);
    return 0;
}

/* ---- expat handlers ---------------------------------------------------- */

/*
 * Suspend parsing after the current element: the stream restarts (or TLS
 * starts) here.  Expat may already hold bytes after it that it has not
 * parsed yet (it can report an end tag one XML_Parse call late): copy them
 * out of its buffer so they can be given to the next parser.
 */
static void
stop_suspend(struct im_sess *s)
{
    int off = 0, size = 0, cnt = XML_GetCurrentByteCount(s->xp);
    const char *ctx = XML_GetInputContext(s->xp, &off, &size);

    s->carry_len = 0;
    if (!ctx || cnt < 0 || off + cnt > size) {
        fail(s, IM_ACC_ERROR, -IM_EPROTO, "XML parser lost its position at a stream restart");
        return;
    }
    size_t rest = (size_t)(size - off - cnt);
    if (rest) {
        s->carry = malloc(rest);
        if (!s->carry) {
            fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
            return;
        }
        memcpy(s->carry, ctx + off + cnt, rest);
        s->carry_len = rest;
    }
    XML_StopParser(s->xp, XML_TRUE);
}

static void XMLCALL
h_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct im_sess *s = ud;

    if (s->phase == P_DEAD)
        return;
    s->depth++;
    if (s->depth > XMPP_MAX_DEPTH) {
        fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "XML nested deeper than %d levels", XMPP_MAX_DEPTH);
        return;
    }
    if (s->depth == 1) {
        if (strcmp(name, NS_STREAM " stream"))
            fail(s, IM_ACC_ERROR, -IM_EPROTO, "not an XMPP stream");
        return;
    }
    if (s->depth == 2)
        s->mark = (uint64_t)XML_GetCurrentByteIndex(s->xp);
    size_t na = 0;
    while (atts[na])
        na++;
    struct xnode *n = arena_alloc(s, sizeof(*n), sizeof(void *));
    const char **a = n ? arena_alloc(s, (na + 1) * sizeof(char *), sizeof(void *)) : NULL;
    if (!a) {
        fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "stanza too large (parsed tree over %u bytes)", XMPP_MAX_ARENA);
        return;
    }
    memset(n, 0, sizeof(*n));
    n->name = arena_strdup(s, name);
    for (size_t i = 0; i < na; i++)
        if (!(a[i] = arena_strdup(s, atts[i])))
            n->name = NULL;
    a[na] = NULL;
    n->attrs = a;
    if (!n->name) {
        fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "stanza too large (parsed tree over %u bytes)", XMPP_MAX_ARENA);
        return;
    }
    if (s->depth == 2) {
        s->root = n;
    } else {
        n->parent = s->cur;
        if (s->cur->last)
            s->cur->last->next = n;
        else
            s->cur->child = n;
        s->cur->last = n;
    }
    s->cur = n;
}

static void XMLCALL
h_end(void *ud, const XML_Char *name)
{
    struct im_sess *s = ud;
    (void)name;

    if (s->phase == P_DEAD)
        return;
    if (s->depth == 1) {
        s->depth = 0;
        if (s->closing)
            return;
        fail(s, IM_ACC_ERROR, -IM_EPROTO, "server closed the stream");
        return;
    }
    s->depth--;
    if (s->depth > 1) {
        s->cur = s->cur->parent;
        return;
    }
    struct xnode *root = s->root;
    s->root = s->cur = NULL;
    s->mark = (uint64_t)XML_GetCurrentByteIndex(s->xp) + (uint64_t)XML_GetCurrentByteCount(s->xp);
    process(s, root);
    arena_reset(s);
    if (s->phase != P_DEAD && (s->restart || s->suspend_tls))
        stop_suspend(s);
}

static void XMLCALL
h_text(void *ud, const XML_Char *p, int len)
{
    struct im_sess *s = ud;

    if (s->phase == P_DEAD || s->depth < 2 || !s->cur)
        return;
    if (node_text(s, s->cur, p, (size_t)len))
        fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "stanza too large (parsed tree over %u bytes)", XMPP_MAX_ARENA);
}

static void XMLCALL
h_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid, int internal)
{
    fail(ud, IM_ACC_ERROR, -IM_EPROTO, "server sent a DOCTYPE (not allowed in XMPP)");
}

static void XMLCALL
h_entity(void *ud, const XML_Char *name, int pe, const XML_Char *value, int vlen, const XML_Char *base,
         const XML_Char *sysid, const XML_Char *pubid, const XML_Char *notation)
{
    fail(ud, IM_ACC_ERROR, -IM_EPROTO, "server declared an XML entity (not allowed in XMPP)");
}

static int
new_parser(struct im_sess *s)
{
    if (s->xp)
        XML_ParserFree(s->xp);
    s->xp = XML_ParserCreateNS("UTF-8", ' ');
    if (!s->xp)
        return fail(s, IM_ACC_ERROR, -ENOMEM, "out of memory");
    XML_SetUserData(s->xp, s);
    XML_SetElementHandler(s->xp, h_start, h_end);
    XML_SetCharacterDataHandler(s->xp, h_text);
    XML_SetStartDoctypeDeclHandler(s->xp, h_doctype);
    XML_SetEntityDeclHandler(s->xp, h_entity);
    /*
     * Expat's reparse deferral (2.6, backported to Debian's 2.5.0) holds a
     * token split across reads until "enough" new data arrives, so a stanza
     * completed by the last bytes the server sent would not be reported until
     * the server sends more.  An XMPP stream needs every complete element at
     * once; the re-parse cost it guards against is bounded here by
     * XMPP_MAX_STANZA.  An expat without it (built before the backport)
     * reports every token at once anyway.
     */
#ifdef IM_HAVE_XML_REPARSE_DEFERRAL
    XML_SetReparseDeferralEnabled(s->xp, XML_FALSE);
#endif
    s->depth = 0;
    s->fed = s->mark = 0;
    s->restart = s->suspend_tls = false;
    s->root = s->cur = NULL;
    arena_reset(s);
    return 0;
}

/* New parser and new stream header (after STARTTLS or SASL). */
static int
restart_stream(struct im_sess *s)
{
    int rc = new_parser(s);
    if (rc)
        return rc;
    s->phase = P_FEATURES;
    rc = send_header(s);
    return s->phase == P_DEAD ? s->rc : rc;
}

/* ---- ops --------------------------------------------------------------- */

static struct im_sess *
xmpp_create(const struct im_account_cfg *cfg, const struct im_io *io)
{
    struct im_sess *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->cfg = cfg;
    s->io = io;
    s->resource = "imfuse";
    for (uint32_t i = 0; i < cfg->n_options; i++)
        if (!strcmp(cfg->options[i].key, "resource") && cfg->options[i].value[0])
            s->resource = cfg->options[i].value;
    im_buf_init(&s->ob, XMPP_MAX_OUT);
    s->ob.secret = true;                /* SASL credentials pass through it */
    /* A login that does not normalise is caught at start(). */
    const char *why;
    if (!jid_bare(cfg->login ? cfg->login : "", cfg->login ? strlen(cfg->login) : 0,
                  s->bare, sizeof(s->bare), &why)) {
        char *at = strchr(s->bare, '@');
        memcpy(s->local, s->bare, (size_t)(at - s->bare));
        s->local[at - s->bare] = 0;
        im_strlcpy(s->domain, at + 1, sizeof(s->domain));
    }
    return s;
}

static void
xmpp_destroy(struct im_sess *s)
{
    if (!s)
        return;
    if (s->xp)
        XML_ParserFree(s->xp);
    free(s->carry);
    s->root = s->cur = NULL;
    arena_reset(s);
    free(s->arena);
    roster_clear(s);
    free(s->contacts);
    free(s->creqs);
    free(s->uncommitted);
    free(s->unacked);
    scram_wipe(&s->scram);
    im_buf_free(&s->ob);
    free(s);
}

static int
xmpp_start(struct im_sess *s, struct im_time now)
{
    if (s->phase != P_NEW)
        return -IM_EINVAL;
    set_time(s, now);
    s->start_ms = s->last_rx = now.mono_ms;
    if (!s->bare[0])
        return fail(s, IM_ACC_ERROR, -IM_EINVAL, "the login is not a bare JID (local@domain)");
    s->tls_on = s->cfg->tls == IM_TLS_DIRECT;
    return restart_stream(s);
}

/* Feed bytes to the parser(s); handles stream restarts in the middle. */
static int
feed_loop(struct im_sess *s, const uint8_t *p, size_t n)
{
    while (n) {
        size_t step = n < FEED_STEP ? n : FEED_STEP;
        enum XML_Status st = XML_Parse(s->xp, (const char *)p, (int)step, XML_FALSE);
        if (s->phase == P_DEAD)
            return s->rc;
        if (st == XML_STATUS_ERROR)
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "XML error: %s",
                        XML_ErrorString(XML_GetErrorCode(s->xp)));
        p += step;
        n -= step;
        if (st == XML_STATUS_SUSPENDED) {
            char *carry = s->carry;
            size_t clen = s->carry_len;
            s->carry = NULL;
            s->carry_len = 0;
            if (s->suspend_tls) {
                s->suspend_tls = false;
                free(carry);
                if (clen || n)
                    return fail(s, IM_ACC_ERROR, -IM_ETLS, "server sent data before the TLS handshake");
                return 0;
            }
            int rc = restart_stream(s);
            if (!rc && clen)
                rc = feed_loop(s, (const uint8_t *)carry, clen);
            free(carry);
            if (rc)
                return rc;
            continue;
        }
        s->fed += step;
        if (s->fed - s->mark > XMPP_MAX_STANZA)
            return fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "stanza over %u KiB", XMPP_MAX_STANZA / 1024);
    }
    return 0;
}

static int
xmpp_input(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    if (s->phase == P_NEW)
        return -IM_EINVAL;
    set_time(s, now);
    if (n)
        s->last_rx = now.mono_ms;
    if (s->phase == P_TLS_WAIT && n)
        return fail(s, IM_ACC_ERROR, -IM_ETLS, "server sent data before the TLS handshake");
    return feed_loop(s, p, n);
}

static int
xmpp_tls_ready(struct im_sess *s, int status, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    if (s->phase != P_TLS_WAIT)
        return -IM_EINVAL;
    set_time(s, now);
    if (status < 0)
        return fail(s, IM_ACC_ERROR, -IM_ETLS, "TLS handshake failed: %s", im_strerror(status));
    s->tls_on = true;
    return restart_stream(s);
}

static int
xmpp_tick(struct im_sess *s, struct im_time now)
{
    uint64_t now_ms = now.mono_ms;

    if (s->phase == P_DEAD)
        return s->rc;
    if (s->phase == P_NEW)
        return 0;
    set_time(s, now);
    if (s->phase != P_ONLINE) {
        if (now_ms - s->start_ms >= XMPP_LOGIN_TIMEOUT_MS)
            return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "login timed out after %u s",
                        XMPP_LOGIN_TIMEOUT_MS / 1000);
        return 0;
    }
    if (s->ping_out) {
        if (now_ms - s->ping_sent >= XMPP_PING_TIMEOUT_MS)
            return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "ping timeout");
        return 0;
    }
    if (now_ms - s->last_rx >= XMPP_PING_IDLE_MS) {
        char buf[160];
        snprintf(buf, sizeof(buf), "<iq type='get' id='ping%u'><ping xmlns='" NS_PING "'/></iq>",
                 ++s->ping_seq);
        s->ping_out = true;
        s->ping_sent = now_ms;
        int rc = send_z(s, buf, true);
        return s->phase == P_DEAD ? s->rc : rc;
    }
    return 0;
}

static int
xmpp_send_msg(struct im_sess *s, const struct im_msg *m)
{
    char to[XMPP_JID_MAX + 1], id[32];
    const char *why;
    int rc;

    if (s->phase != P_ONLINE)
        return s->phase == P_DEAD ? s->rc : -ENOTCONN;
    if (jid_bare(m->to.p, m->to.len, to, sizeof(to), &why))
        return -IM_EINVAL;
    if (!im_utf8_valid(m->body.p, m->body.len))
        return -IM_EUTF8;
    bool track = s->sm != SM_OFF;
    if (track && s->ua_n >= XMPP_MAX_UNACKED)
        return -IM_ELIMIT;
    if (track && s->ua_n == s->cap_ua) {
        uint32_t cap = s->cap_ua ? s->cap_ua * 2 : 64;
        struct sent_msg *nu = malloc(cap * sizeof(*nu));
        if (!nu)
            return -ENOMEM;
        for (uint32_t i = 0; i < s->ua_n; i++)
            nu[i] = s->unacked[(s->ua_head + i) % s->cap_ua];
        free(s->unacked);
        s->unacked = nu;
        s->cap_ua = cap;
        s->ua_head = 0;
    }
    snprintf(id, sizeof(id), "m%llx", (unsigned long long)m->msg);
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, "<message type='chat'");
    ob_attr(&s->ob, "to", to, strlen(to));
    ob_attr(&s->ob, "id", id, strlen(id));
    im_buf_puts(&s->ob, "><body>");
    ob_esc(&s->ob, m->body.p, m->body.len, false);
    im_buf_puts(&s->ob, "</body></message>");
    bool ask = track && !s->r_out;
    if (ask)
        im_buf_puts(&s->ob, "<r xmlns='" NS_SM "'/>");
    rc = ob_flush(s, true);
    if (s->phase == P_DEAD)
        return s->rc;
    if (rc)
        return rc;
    if (ask)
        s->r_out = true;
    if (track) {
        s->unacked[(s->ua_head + s->ua_n) % s->cap_ua] = (struct sent_msg){ s->out_count, m->msg };
        s->ua_n++;
    } else {
        im_io_sent(s->io, m->msg);
    }
    return 0;
}

static int
roster_set(struct im_sess *s, uint64_t req, struct im_str address, struct im_str name, bool remove)
{
    char jid[XMPP_JID_MAX + 1];
    const char *why;
    int rc;

    if (s->phase != P_ONLINE)
        return s->phase == P_DEAD ? s->rc : -ENOTCONN;
    if (jid_bare(address.p, address.len, jid, sizeof(jid), &why))
        return -IM_EINVAL;
    if (name.len && !im_utf8_valid(name.p, name.len))
        return -IM_EUTF8;
    if (s->n_creqs >= 1024)
        return -IM_ELIMIT;
    struct creq *nc = realloc(s->creqs, (s->n_creqs + 1) * sizeof(*nc));
    if (!nc)
        return -ENOMEM;
    s->creqs = nc;
    struct creq *c = &s->creqs[s->n_creqs];
    c->req = req;
    snprintf(c->id, sizeof(c->id), "%s%llx", remove ? "cr" : "ca", (unsigned long long)req);
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, "<iq type='set'");
    ob_attr(&s->ob, "id", c->id, strlen(c->id));
    im_buf_puts(&s->ob, "><query xmlns='" NS_ROSTER "'><item");
    ob_attr(&s->ob, "jid", jid, strlen(jid));
    if (remove)
        im_buf_puts(&s->ob, " subscription='remove'");
    else if (name.len)
        ob_attr(&s->ob, "name", name.p, name.len);
    im_buf_puts(&s->ob, "/></query></iq>");
    s->n_creqs++;
    rc = ob_flush(s, true);
    if (rc || remove || s->phase == P_DEAD)
        return s->phase == P_DEAD ? s->rc : rc;
    im_buf_reset(&s->ob);
    im_buf_puts(&s->ob, "<presence type='subscribe'");
    ob_attr(&s->ob, "to", jid, strlen(jid));
    im_buf_puts(&s->ob, "/>");
    rc = ob_flush(s, true);
    return s->phase == P_DEAD ? s->rc : rc;
}

static int
xmpp_add_contact(struct im_sess *s, uint64_t req, struct im_str address, struct im_str name)
{
    return roster_set(s, req, address, name, false);
}

static int
xmpp_remove_contact(struct im_sess *s, uint64_t req, struct im_str address)
{
    return roster_set(s, req, address, (struct im_str){ NULL, 0 }, true);
}

static void
xmpp_committed(struct im_sess *s, uint64_t token)
{
    uint32_t i;

    if (!token || s->phase == P_DEAD || s->sm != SM_ON)
        return;
    for (i = 0; i < s->n_unc && s->uncommitted[i] != token; i++)
        ;
    if (i == s->n_unc)
        return;
    memmove(&s->uncommitted[i], &s->uncommitted[i + 1], (s->n_unc - i - 1) * sizeof(uint64_t));
    s->n_unc--;
    if (s->a_owed && (i == 0)) {
        /* h advanced over a message the server asked about: tell it. */
        s->a_owed = s->n_unc != 0;
        sm_send_a(s);
    }
}

static void
xmpp_logout(struct im_sess *s)
{
    char a[80];

    if (s->phase == P_DEAD || s->phase == P_NEW || s->closing)
        return;
    s->closing = true;
    /*
     * One write, so that the goodbye travels as one piece (one TLS record):
     * a peer that sees the connection end right after it still has all of it.
     * XEP-0198 (since 1.5.2) recommends an <a/> right before a graceful close:
     * a server re-sends what it has no ack for when the stream ends (ejabberd
     * routes it to offline storage), so a message committed since the last
     * <r/> would come again at the next login.  h covers committed ones only.
     */
    bool online = s->phase == P_ONLINE;
    im_buf_reset(&s->ob);
    if (online)
        im_buf_puts(&s->ob, "<presence type='unavailable'/>");
    if (s->sm == SM_ON) {
        snprintf(a, sizeof(a), "<a xmlns='" NS_SM "' h='%u'/>", sm_h(s));
        im_buf_puts(&s->ob, a);
    }
    im_buf_puts(&s->ob, "</stream:stream>");
    ob_flush(s, online);
}

static int
xmpp_kdf_done(struct im_sess *s, uint64_t req, int status, const uint8_t *key, size_t keylen,
              struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    if (!s->kdf_wait || req != s->kdf_req)
        return 0;                       /* a late answer: nothing waits for it */
    s->kdf_wait = false;
    set_time(s, now);
    if (status < 0)
        return fail(s, IM_ACC_ERROR, status, "SCRAM: key derivation failed (%s)", im_strerror(status));
    return scram_answer(s, key, key ? keylen : 0);
}

const struct im_proto_ops xmpp_ops = {
    .name = "xmpp",
    .has_starttls = true,
    .default_port = 5222,
    .default_tls_port = 5223,
    .normalize_login = xmpp_normalize_login,
    .normalize_address = xmpp_normalize_address,
    .default_tls_name = xmpp_default_tls_name,
    .create = xmpp_create,
    .destroy = xmpp_destroy,
    .start = xmpp_start,
    .input = xmpp_input,
    .tls_ready = xmpp_tls_ready,
    .tick = xmpp_tick,
    .send_msg = xmpp_send_msg,
    .add_contact = xmpp_add_contact,
    .remove_contact = xmpp_remove_contact,
    .committed = xmpp_committed,
    .logout = xmpp_logout,
    .kdf_done = xmpp_kdf_done,
};
