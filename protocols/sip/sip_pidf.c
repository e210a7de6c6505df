/*
 * sip_pidf.c - what a PIDF presence document (RFC 3863) says about its
 * presentity, with the RPID (RFC 4480) activities that mean "away".
 *
 * The body is parsed in one pass by expat with namespace processing.  A
 * DOCTYPE (and so any entity declaration) stops the parse: PIDF has no use
 * for one, and refusing it rules out entity expansion attacks.  Size and
 * nesting depth are bounded.  Only elements in the PIDF and RPID
 * namespaces are looked at; everything else (data-model, caps, unknown
 * extensions) is skipped.
 */
#include <string.h>
#include <strings.h>

#include <expat.h>

#include "sip_int.h"

#define NS_PIDF "urn:ietf:params:xml:ns:pidf"
#define NS_RPID "urn:ietf:params:xml:ns:pidf:rpid"
#define SEP ' '

struct pidf {
    XML_Parser xp;
    int rc;                 /* first error, or 0 */
    unsigned depth;
    unsigned tuple_depth;   /* depth of the open <tuple>, 0 outside */
    unsigned acts_depth;    /* depth of the open <rpid:activities>, 0 outside */
    bool in_basic, in_note;
    bool root_seen;
    char text[16];          /* text of the current <basic> or <note>, trimmed later */
    size_t text_len;
    bool text_long;
    bool any_open, any_closed;
    bool away;              /* an RPID activity or a note says away */
};

static void
stop(struct pidf *d, int rc)
{
    if (!d->rc)
        d->rc = rc;
    XML_StopParser(d->xp, XML_FALSE);
}

/* Does the expat name "URI local" have this namespace and local name? */
static bool
is(const XML_Char *name, const char *ns, const char *local)
{
    size_t n = strlen(ns);
    return !strncmp(name, ns, n) && name[n] == SEP && !strcmp(name + n + 1, local);
}

static bool
is_ns(const XML_Char *name, const char *ns)
{
    size_t n = strlen(ns);
    return !strncmp(name, ns, n) && name[n] == SEP;
}

/* RFC 4480 3.2 activities that mean the person is not at the device now. */
static bool
away_activity(const char *local)
{
    static const char *const away[] = { "away", "busy", "steppedOut", "sleeping", "vacation",
                                        "permanent-absence", "appointment", "meeting", "travel" };
    for (size_t i = 0; i < IM_ARRAY_SIZE(away); i++)
        if (!strcmp(local, away[i]))
            return true;
    return false;
}

static void XMLCALL
h_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct pidf *d = ud;
    (void)atts;
    if (d->rc)
        return;
    if (++d->depth > SIP_PIDF_DEPTH) {
        stop(d, -IM_ETOOBIG);
        return;
    }
    if (d->depth == 1) {
        if (!is(name, NS_PIDF, "presence"))
            stop(d, -IM_EPROTO);
        d->root_seen = true;
        return;
    }
    if (is(name, NS_PIDF, "tuple") && !d->tuple_depth) {
        d->tuple_depth = d->depth;
    } else if (is(name, NS_PIDF, "basic") && d->tuple_depth) {
        d->in_basic = true;
        d->text_len = 0;
        d->text_long = false;
    } else if (is(name, NS_PIDF, "note")) {
        d->in_note = true;
        d->text_len = 0;
        d->text_long = false;
    } else if (is(name, NS_RPID, "activities") && !d->acts_depth) {
        d->acts_depth = d->depth;
    } else if (d->acts_depth && d->depth == d->acts_depth + 1 && is_ns(name, NS_RPID)) {
        if (away_activity(name + strlen(NS_RPID) + 1))
            d->away = true;
    }
}

/* The collected text without surrounding white space. */
static const char *
text_trim(struct pidf *d, size_t *n)
{
    const char *p = d->text;
    size_t len = d->text_len;
    while (len && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++, len--;
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '\r' || p[len - 1] == '\n'))
        len--;
    *n = len;
    return p;
}

static void XMLCALL
h_end(void *ud, const XML_Char *name)
{
    struct pidf *d = ud;
    if (d->rc)
        return;
    size_t n;
    const char *t;
    if (d->in_basic && is(name, NS_PIDF, "basic")) {
        d->in_basic = false;
        t = text_trim(d, &n);
        if (!d->text_long && n == 4 && !memcmp(t, "open", 4)) {
            d->any_open = true;
        } else if (!d->text_long && n == 6 && !memcmp(t, "closed", 6)) {
            d->any_closed = true;
        } else {
            stop(d, -IM_EPROTO);        /* RFC 3863 4.1.4: open or closed, nothing else */
            return;
        }
    } else if (d->in_note && is(name, NS_PIDF, "note")) {
        d->in_note = false;
        t = text_trim(d, &n);
        /* A note that is just "away" (what many UAs publish for it). */
        if (!d->text_long && n == 4 && !strncasecmp(t, "away", 4))
            d->away = true;
    } else if (d->tuple_depth == d->depth) {
        d->tuple_depth = 0;
    } else if (d->acts_depth == d->depth) {
        d->acts_depth = 0;
    }
    d->depth--;
}

static void XMLCALL
h_text(void *ud, const XML_Char *p, int len)
{
    struct pidf *d = ud;
    if (d->rc || (!d->in_basic && !d->in_note) || len <= 0)
        return;
    size_t room = sizeof(d->text) - d->text_len;
    size_t n = (size_t)len;
    if (n > room) {
        /* Only white space may spill over: "open" padded is still "open". */
        for (size_t i = room; i < n; i++)
            if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
                d->text_long = true;
        n = room;
    }
    memcpy(d->text + d->text_len, p, n);
    d->text_len += n;
}

static void XMLCALL
h_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid, int internal)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)internal;
    stop(ud, -IM_EPROTO);
}

static void XMLCALL
h_entity(void *ud, const XML_Char *name, int pe, const XML_Char *value, int vlen, const XML_Char *base,
         const XML_Char *sysid, const XML_Char *pubid, const XML_Char *notation)
{
    (void)name;
    (void)pe;
    (void)value;
    (void)vlen;
    (void)base;
    (void)sysid;
    (void)pubid;
    (void)notation;
    stop(ud, -IM_EPROTO);
}

int
sip_pidf_parse(const char *p, size_t n, enum im_presence *out)
{
    struct pidf d;

    if (n > SIP_PIDF_MAX)
        return -IM_ETOOBIG;
    memset(&d, 0, sizeof(d));
    d.xp = XML_ParserCreateNS(NULL, SEP);
    if (!d.xp)
        return -ENOMEM;
    XML_SetUserData(d.xp, &d);
    XML_SetElementHandler(d.xp, h_start, h_end);
    XML_SetCharacterDataHandler(d.xp, h_text);
    XML_SetStartDoctypeDeclHandler(d.xp, h_doctype);
    XML_SetEntityDeclHandler(d.xp, h_entity);
    XML_SetParamEntityParsing(d.xp, XML_PARAM_ENTITY_PARSING_NEVER);
    enum XML_Status st = XML_Parse(d.xp, p, (int)n, XML_TRUE);
    if (st != XML_STATUS_OK && !d.rc)
        d.rc = -IM_EPROTO;
    XML_ParserFree(d.xp);
    if (d.rc)
        return d.rc;
    if (!d.root_seen)
        return -IM_EPROTO;
    if (d.any_open)
        *out = d.away ? IM_PRES_AWAY : IM_PRES_AVAILABLE;
    else if (d.any_closed)
        *out = IM_PRES_OFFLINE;
    else
        return -IM_ENOTFOUND;
    return 0;
}
