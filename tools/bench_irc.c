/*
 * bench_irc.c - BitlBee 3.6 as the relay to compare with, driven over IRC
 * the way its users drive it, one IRC connection per user.
 *
 * Set-up per user: NICK and USER; after the welcome (001), in the control
 * channel &bitlbee: `account add jabber JID PASSWORD`, the server, port and
 * `tls try` (STARTTLS), `account jabber on`; ready when root says
 * "jabber - Logging in: Logged in".  Nothing is registered, so nothing is
 * stored on BitlBee's side between runs.  Send direction: `PRIVMSG PEER :body`
 * (BitlBee names a contact by the local part of its JID).  Receive
 * direction: the `PRIVMSG NICK :body` lines from the peer.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bench_int.h"
#include "dp_conn.h"
#include "im_common.h"

#define IRC_LINE_MAX    16384

enum irc_state {
    IRC_CONNECTING = 0,
    IRC_REGISTERING,
    IRC_LOGGING_IN,
    IRC_READY,
};

struct irc_user {
    struct bench *b;
    char nick[64], jid[320];
    struct dp_conn *c;
    enum irc_state st;
    char *buf;
    size_t len, cap;
};

struct irc {
    uint32_t n, open;
    struct irc_user *u;
};

static struct irc *
irc_of(const struct bench *b)
{
    return bench_relay_state(b);
}

static int
irc_write(struct irc_user *u, const char *line, size_t n)
{
    int rc = dp_conn_write(u->c, line, n);
    if (rc < 0) {
        bench_fail(u->b, "bitlbee: cannot write to %s's connection: %s", u->nick, im_strerror(rc));
        return rc;
    }
    return 0;
}

static void irc_printf(struct irc_user *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void
irc_printf(struct irc_user *u, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line) - 2)
        return;
    memcpy(line + n, "\r\n", 2);
    irc_write(u, line, (size_t)n + 2);
}

/* The text after "PREFIX" of a root message in &bitlbee. */
static void
on_root(struct irc_user *u, const char *text)
{
    struct bench *b = u->b;
    if (u->st == IRC_READY)
        return;
    if (strstr(text, "Logging in: Logged in")) {
        u->st = IRC_READY;
        bench_user_ready(b);
    } else if (strstr(text, "Login error") || strstr(text, "Couldn't log in") ||
               strstr(text, "Error:")) {
        bench_fail(b, "bitlbee: %s (%s): %s", u->nick, u->jid, text);
    } else if (strstr(text, "Logging in")) {
        bench_note(b, "bitlbee %s: %s", u->nick, text);
    }
}

/* One line without its CR LF. */
static void
on_line(struct irc_user *u, char *line)
{
    struct bench *b = u->b;
    const struct bench_opts *o = bench_opts(b);
    char *prefix = NULL, *cmd, *rest, empty[1] = "";

    if (line[0] == ':') {
        prefix = line + 1;
        char *sp = strchr(line, ' ');
        if (!sp)
            return;
        *sp = '\0';
        line = sp + 1;
    }
    cmd = line;
    rest = strchr(line, ' ');
    if (rest)
        *rest++ = '\0';
    else
        rest = empty;

    if (!strcmp(cmd, "PING")) {
        irc_printf(u, "PONG %s", rest);
    } else if (!strcmp(cmd, "001")) {
        u->st = IRC_LOGGING_IN;
        irc_printf(u, "PRIVMSG &bitlbee :account add jabber %s %s", u->jid, o->password);
        irc_printf(u, "PRIVMSG &bitlbee :account jabber set server %s", o->xmpp_host);
        irc_printf(u, "PRIVMSG &bitlbee :account jabber set port %u", o->xmpp_port);
        irc_printf(u, "PRIVMSG &bitlbee :account jabber set tls try");
        irc_printf(u, "PRIVMSG &bitlbee :account jabber on");
        bench_note(b, "bitlbee %s: adding account %s", u->nick, u->jid);
    } else if (!strcmp(cmd, "433")) {
        bench_fail(b, "bitlbee: nick %s is in use (another bench still connected?)", u->nick);
    } else if (!strcmp(cmd, "401")) {
        /* "401 NICK TARGET :No such nick/channel" */
        bench_fail(b, "bitlbee: no such nick: %s (is %s in %s's roster?)", rest,
                   bench_peer_jid(b), u->jid);
    } else if (!strcmp(cmd, "PRIVMSG") && prefix) {
        char *text = strstr(rest, " :");
        if (!text)
            return;
        *text = '\0';
        text += 2;
        const char *target = rest;
        size_t nl = strcspn(prefix, "!");
        if (nl == 4 && !strncmp(prefix, "root", 4)) {
            if (!strcmp(target, "&bitlbee"))
                on_root(u, text);
            return;
        }
        if (!strcasecmp(target, u->nick))
            bench_receipt(b, text, strlen(text));
    } else if (!strcmp(cmd, "ERROR")) {
        bench_fail(b, "bitlbee: %s: ERROR %s", u->nick, rest);
    }
}

static void
irc_on_open(struct dp_conn *c, int status, const char *detail)
{
    struct irc_user *u = dp_conn_ud(c);
    if (status < 0) {
        bench_fail(u->b, "bitlbee: cannot connect to %s: %s", bench_opts(u->b)->irc,
                   detail && *detail ? detail : im_strerror(status));
        return;
    }
    u->st = IRC_REGISTERING;
    irc_printf(u, "NICK %s", u->nick);
    irc_printf(u, "USER %s 0 * :imfuse-bench", u->nick);
}

static void
irc_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct irc_user *u = dp_conn_ud(c);
    if (u->len + n + 1 > u->cap) {
        size_t cap = u->cap ? u->cap : 65536;
        while (cap < u->len + n + 1)
            cap *= 2;
        char *nb = realloc(u->buf, cap);
        if (!nb) {
            bench_fail(u->b, "bitlbee: out of memory");
            return;
        }
        u->buf = nb;
        u->cap = cap;
    }
    memcpy(u->buf + u->len, p, n);
    u->len += n;
    size_t off = 0;
    for (;;) {
        char *nl = memchr(u->buf + off, '\n', u->len - off);
        if (!nl)
            break;
        size_t end = (size_t)(nl - u->buf);
        if (end > off && u->buf[end - 1] == '\r')
            u->buf[end - 1] = '\0';
        *nl = '\0';
        on_line(u, u->buf + off);
        off = end + 1;
        if (!u->c)
            return;
    }
    if (u->len - off > IRC_LINE_MAX) {
        bench_fail(u->b, "bitlbee: a line longer than %u bytes", IRC_LINE_MAX);
        return;
    }
    if (off) {
        memmove(u->buf, u->buf + off, u->len - off);
        u->len -= off;
    }
}

static void
irc_on_close(struct dp_conn *c, int reason)
{
    struct irc_user *u = dp_conn_ud(c);
    struct irc *s = irc_of(u->b);
    u->c = NULL;
    s->open--;
    bench_fail(u->b, "bitlbee: %s's connection closed: %s", u->nick,
               reason ? im_strerror(reason) : "by the relay");
}

static const struct dp_conn_cb irc_cb = {
    .on_open = irc_on_open,
    .on_data = irc_on_data,
    .on_close = irc_on_close,
};

static int
irc_start(struct bench *b)
{
    const struct bench_opts *o = bench_opts(b);
    struct irc *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->u = calloc(o->users, sizeof(*s->u));
    if (!s->u) {
        free(s);
        return -ENOMEM;
    }
    s->n = o->users;
    bench_set_relay_state(b, s);
    for (uint32_t i = 0; i < s->n; i++) {
        struct irc_user *u = &s->u[i];
        int err;
        u->b = b;
        bench_user_name(b, i, u->nick, sizeof(u->nick));
        bench_user_jid(b, i, u->jid, sizeof(u->jid));
        if (!(u->c = bench_connect(b, "bitlbee", "--irc", o->irc, &irc_cb, u, &err)))
            return err;
        s->open++;
    }
    bench_note(b, "connecting to bitlbee");
    return 0;
}

static int
irc_send(struct bench *b, uint32_t user, uint64_t seq, const char *body, size_t len)
{
    struct irc *s = irc_of(b);
    struct irc_user *u = &s->u[user];
    if (!u->c)
        return -ENOTCONN;
    if (dp_conn_backlog(u->c) > DP_CONN_HIWAT)
        return 1;
    char line[8192];
    int n = snprintf(line, sizeof(line), "PRIVMSG %s :%.*s\r\n", bench_opts(b)->peer, (int)len, body);
    if (n < 0 || (size_t)n >= sizeof(line))
        return -IM_ETOOBIG;
    return irc_write(u, line, (size_t)n);
}

static void
irc_close(struct bench *b)
{
    struct irc *s = irc_of(b);
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        struct irc_user *u = &s->u[i];
        if (!u->c)
            continue;
        irc_printf(u, "QUIT :imfuse-bench done");
        dp_conn_close(u->c);
    }
}

static bool
irc_closed(struct bench *b)
{
    struct irc *s = irc_of(b);
    return !s || s->open == 0;
}

static void
irc_free(struct bench *b)
{
    struct irc *s = irc_of(b);
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++)
        free(s->u[i].buf);
    free(s->u);
    free(s);
    bench_set_relay_state(b, NULL);
}

const struct bench_relay_ops bench_irc_ops = {
    .name = "bitlbee",
    .start = irc_start,
    .send = irc_send,
    .close = irc_close,
    .closed = irc_closed,
    .free = irc_free,
};
