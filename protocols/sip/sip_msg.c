/*
 * sip_msg.c - parse one framed SIP message (RFC 3261 7, 20) into views.
 *
 * Only what the adapter needs is interpreted: the start line, header names
 * (long and compact forms), Call-ID, CSeq, From, To, Content-Type.  Values
 * are kept as views into the caller's bytes, folded lines included.
 */
#include <string.h>
#include <strings.h>

#include "sip_int.h"

static const struct {
    const char *name;
    char compact;
    enum sip_hid id;
} known[] = {
    { "via", 'v', SH_VIA },
    { "from", 'f', SH_FROM },
    { "to", 't', SH_TO },
    { "call-id", 'i', SH_CALL_ID },
    { "cseq", 0, SH_CSEQ },
    { "contact", 'm', SH_CONTACT },
    { "content-type", 'c', SH_CTYPE },
    { "content-length", 'l', SH_CLEN },
    { "expires", 0, SH_EXPIRES },
    { "min-expires", 0, SH_MIN_EXPIRES },
    { "www-authenticate", 0, SH_WWW_AUTH },
    { "proxy-authenticate", 0, SH_PROXY_AUTH },
    { "event", 'o', SH_EVENT },
    { "subscription-state", 0, SH_SUB_STATE },
    { "record-route", 0, SH_RECORD_ROUTE },
    { "sip-etag", 0, SH_SIP_ETAG },
    { "retry-after", 0, SH_RETRY_AFTER },
};

static enum sip_hid
hdr_id(const char *p, size_t n)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(known); i++) {
        if (n == 1 && known[i].compact && (p[0] | 0x20) == known[i].compact)
            return known[i].id;
        if (strlen(known[i].name) == n && !strncasecmp(p, known[i].name, n))
            return known[i].id;
    }
    return SH_OTHER;
}

static bool
is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static struct im_str
trim(const char *p, size_t n)
{
    while (n && is_ws(*p))
        p++, n--;
    while (n && is_ws(p[n - 1]))
        n--;
    return (struct im_str){ p, (uint32_t)n };
}

/* RFC 3261 25.1 token characters. */
static bool
is_token(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-.!%*_+`'~", c));
}

static int
parse_start(struct sip_msg *m, const char *p, size_t n)
{
    if (n >= 8 && !memcmp(p, "SIP/2.0 ", 8)) {
        if (n < 11)
            return -IM_EPROTO;
        int st = 0;
        for (size_t i = 8; i < 11; i++) {
            if (p[i] < '0' || p[i] > '9')
                return -IM_EPROTO;
            st = st * 10 + (p[i] - '0');
        }
        if (st < 100 || st > 699 || (n > 11 && p[11] != ' '))
            return -IM_EPROTO;
        m->is_req = false;
        m->status = st;
        m->reason = n > 12 ? trim(p + 12, n - 12) : (struct im_str){ "", 0 };
        return 0;
    }
    /* Method SP Request-URI SP SIP/2.0 */
    size_t i = 0;
    while (i < n && is_token(p[i]))
        i++;
    if (!i || i >= n || p[i] != ' ')
        return -IM_EPROTO;
    m->is_req = true;
    m->method = (struct im_str){ p, (uint32_t)i };
    size_t u = ++i;
    while (i < n && p[i] != ' ')
        i++;
    if (i == u || n - i != 8 || memcmp(p + i, " SIP/2.0", 8))
        return -IM_EPROTO;
    m->ruri = (struct im_str){ p + u, (uint32_t)(i - u) };
    return 0;
}

static int
parse_cseq(struct sip_msg *m, struct im_str v)
{
    uint32_t i = 0, num = 0, digits = 0;
    while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9') {
        if (num > 429496729u || digits >= 10)
            return -IM_EPROTO;
        num = num * 10 + (uint32_t)(v.p[i] - '0');
        i++;
        digits++;
    }
    if (!digits || i >= v.len || !is_ws(v.p[i]))
        return -IM_EPROTO;
    struct im_str meth = trim(v.p + i, v.len - i);
    for (uint32_t k = 0; k < meth.len; k++)
        if (!is_token(meth.p[k]))
            return -IM_EPROTO;
    if (!meth.len)
        return -IM_EPROTO;
    m->cseq = num;
    m->cseq_method = meth;
    m->has_cseq = true;
    return 0;
}

int
sip_msg_parse(struct sip_msg *m, const char *p, size_t hdr_len, size_t body_len)
{
    memset(m, 0, sizeof(*m));
    m->body = (struct im_str){ p + hdr_len, (uint32_t)body_len };
    /* Start line. */
    size_t i = 0;
    while (i < hdr_len && p[i] != '\n')
        i++;
    if (i >= hdr_len || i == 0 || p[i - 1] != '\r')
        return -IM_EPROTO;
    int rc = parse_start(m, p, i - 1);
    if (rc)
        return rc;
    i++;
    /* Header fields, each possibly folded over several lines. */
    while (i < hdr_len) {
        size_t ls = i;
        if (i + 2 <= hdr_len && p[i] == '\r' && p[i + 1] == '\n')
            break;                      /* the blank line */
        if (p[i] == ' ' || p[i] == '\t')
            return -IM_EPROTO;          /* continuation without a field */
        /* Find the end of the field: a CRLF not followed by SP/HTAB. */
        size_t e = i;
        for (;;) {
            while (e < hdr_len && p[e] != '\n')
                e++;
            if (e >= hdr_len)
                return -IM_EPROTO;
            if (e + 1 < hdr_len && (p[e + 1] == ' ' || p[e + 1] == '\t')) {
                e++;
                continue;
            }
            break;
        }
        /* [ls, e) is the field without its final LF. */
        size_t c = ls;
        while (c < e && is_token(p[c]))
            c++;
        size_t nl = c - ls;
        while (c < e && (p[c] == ' ' || p[c] == '\t'))
            c++;
        if (!nl || c >= e || p[c] != ':')
            return -IM_EPROTO;
        if (m->n_hdr >= SIP_MAX_HDRS)
            return -IM_ETOOBIG;
        struct sip_hdr *h = &m->hdr[m->n_hdr++];
        h->name = (struct im_str){ p + ls, (uint32_t)nl };
        h->id = hdr_id(p + ls, nl);
        h->value = trim(p + c + 1, e - c - 1);
        switch (h->id) {
        case SH_CALL_ID:
            if (!m->call_id.len)
                m->call_id = h->value;
            break;
        case SH_FROM:
            if (!m->from.len)
                m->from = h->value;
            break;
        case SH_TO:
            if (!m->to.len)
                m->to = h->value;
            break;
        case SH_CTYPE:
            if (!m->ctype.len)
                m->ctype = h->value;
            break;
        case SH_CSEQ:
            if (!m->has_cseq && (rc = parse_cseq(m, h->value)))
                return rc;
            break;
        default:
            break;
        }
        i = e + 1;
    }
    return 0;
}

const struct sip_hdr *
sip_msg_find(const struct sip_msg *m, enum sip_hid id, const struct sip_hdr *after)
{
    uint32_t i = after ? (uint32_t)(after - m->hdr) + 1 : 0;
    for (; i < m->n_hdr; i++)
        if (m->hdr[i].id == id)
            return &m->hdr[i];
    return NULL;
}

bool
sip_param(struct im_str v, const char *name, struct im_str *out)
{
    size_t nl = strlen(name);
    uint32_t i = 0;
    bool in_q = false, in_a = false;

    *out = (struct im_str){ "", 0 };
    while (i < v.len) {
        char c = v.p[i];
        if (in_q) {
            if (c == '\\' && i + 1 < v.len)
                i++;
            else if (c == '"')
                in_q = false;
            i++;
            continue;
        }
        if (c == '"') {
            in_q = true;
            i++;
            continue;
        }
        if (c == '<')
            in_a = true;
        else if (c == '>')
            in_a = false;
        if (c != ';' || in_a) {
            i++;
            continue;
        }
        /* A parameter starts after ';'. */
        i++;
        while (i < v.len && is_ws(v.p[i]))
            i++;
        uint32_t ns = i;
        while (i < v.len && is_token(v.p[i]))
            i++;
        uint32_t ne = i;
        while (i < v.len && is_ws(v.p[i]))
            i++;
        if (ne - ns != nl || strncasecmp(v.p + ns, name, nl))
            continue;
        if (i >= v.len || v.p[i] != '=') {
            *out = (struct im_str){ v.p + ns, 0 };
            return true;                /* flag parameter */
        }
        i++;
        while (i < v.len && is_ws(v.p[i]))
            i++;
        if (i < v.len && v.p[i] == '"') {
            uint32_t s = ++i;
            while (i < v.len && v.p[i] != '"')
                i += (v.p[i] == '\\' && i + 1 < v.len) ? 2 : 1;
            *out = (struct im_str){ v.p + s, (i < v.len ? i : v.len) - s };
            return true;
        }
        uint32_t s = i;
        while (i < v.len && v.p[i] != ';' && v.p[i] != ',' && !is_ws(v.p[i]))
            i++;
        *out = (struct im_str){ v.p + s, i - s };
        return true;
    }
    return false;
}
