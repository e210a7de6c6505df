/*
 * irc.c - the IRC client adapter (RFC 1459/2812 client side, IRCv3 CAP 302,
 * SASL PLAIN, MONITOR, ISUPPORT), sans-I/O.
 *
 * Login: PASS (options.server_password), CAP LS 302, NICK, USER; the server
 * holds the registration until CAP END.  When the server offers `sasl` (with
 * PLAIN) and the password is not empty, SASL PLAIN with the login and the
 * account password (option sasl = "no" never, "yes" requires it); otherwise
 * NickServ IDENTIFY after 001 when options.nickserv_password is set (or the
 * account password with option nickserv = "yes").  ONLINE at 001.  433/437
 * before 001: alternate nicks alice_, alice__, alice___, then alice1... (at
 * most IRC_MAX_ALT_NICKS), reported as the ONLINE detail and IM_EV_NOTICE.
 * 464 and SASL 904/905 are AUTH_FAILED; ERROR lines, 465 (banned), KILL and
 * 432 (erroneous nick) are ERROR.  tls = starttls is refused at start (IRC
 * has no STARTTLS); direct TLS is the glue's.
 *
 * Input: lines of at most IRC_MAX_IN_LINE bytes (LF or CRLF), else ERROR.  A
 * line that is not valid UTF-8 is read as Latin-1.  IRCv3 tags are skipped.
 *
 * Presence: the watch list (set_watch) is followed with MONITOR when
 * ISUPPORT advertises it (up to its limit; the rest, and nicks refused with
 * 734, are polled), else with ISON every ison_interval seconds (default 20).
 * Tracking starts at the end of the MOTD (376/422) or IRC_WATCH_DELAY_MS
 * after 001, once ISUPPORT is known.  Presence is reported on change only.
 * While message lines wait in the queue, ISON polls are at most every
 * IRC_ISON_BUSY_MS (30 s) so that they do not slow a burst down.
 *
 * Messages: PRIVMSG to our nick (channels are ignored); CTCP ACTION <-> a
 * body "/me ..."; CTCP VERSION and PING are answered with a NOTICE (at most
 * IRC_MAX_CTCP_QUEUED answers wait in the queue: a flood of requests is not
 * answered until it drained), other CTCP ignored; formatting codes stripped.  A NOTICE from a watched nick is
 * a chat message; any other NOTICE (services, the server) is IM_EV_NOTICE.
 * Outgoing bodies are cut at newlines and into lines that fit 512 bytes as
 * the server relays them (":nick!user@host PRIVMSG target :text\r\n", with
 * the prefix learned from 001/396 or assumed at its maximum), on UTF-8
 * boundaries, preferring a space (kept at the end of the piece, so joining
 * the pieces gives back the line).  IM_EV_SENT when the last piece has been
 * written.
 *
 * Flood control: every line but PONG, our keepalive PING, the login and
 * QUIT waits in the session's queues (control lines first, then messages)
 * and leaves through a token bucket: IRC_FLOOD_BURST lines back to back,
 * then one per IRC_FLOOD_INTERVAL_MS (options flood_burst,
 * flood_interval_ms); unpaced lines are charged too.  That keeps inspircd's
 * default fakelag (threshold 10, one command a second) from ever holding a
 * line, and ngircd far from its penalty.  No line is ever dropped.
 *
 * Keepalive: PING after IRC_PING_IDLE_MS without input; ERROR "ping timeout"
 * IRC_PING_TIMEOUT_MS later.
 *
 * Time: timers, polls and the token bucket run on the monotonic clock; the
 * wall clock only stamps incoming messages (message.ts).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/base64.h>

#include "im_buf.h"
#include "im_common.h"
#include "im_proto.h"
#include "irc_int.h"

#define DETAIL_MAX  IM_DETAIL_MAX
#define MAX_PARAMS  16

/* ---- the send queues --------------------------------------------------- */

/* A send queue is a FIFO of lines in one struct im_buf: records
 * {u64 msg, u16 len, u8 cost, bytes}, consumed from the front. */
#define REC_HDR (8 + 2 + 1)

struct watch {
    char nick[IRC_NICK_MAX + 1];        /* folded */
    enum im_presence pres;
    bool monitored;                     /* on the server's MONITOR list */
    uint32_t ison_batch;                /* number of the ISON that last asked for it */
};

enum phase {
    P_NEW = 0,
    P_REG,                              /* NICK/USER sent, waiting for 001 */
    P_ONLINE,
    P_DEAD,
};

enum sasl_mode { SASL_AUTO = 0, SASL_NO, SASL_YES };

struct im_sess {
    const struct im_account_cfg *cfg;
    const struct im_io *io;
    enum phase phase;
    int rc;                             /* returned once DEAD */

    /* configuration */
    const char *server_password;
    const char *nickserv_password;
    const char *ident;
    const char *realname;
    enum sasl_mode sasl_mode;
    uint32_t ison_ms;
    uint32_t burst;
    uint32_t interval_ms;

    /* registration */
    char nick[IRC_NICK_MAX + 1];        /* the nick we have (or asked for) */
    unsigned alt;                       /* alternate nick attempts */
    bool cap_ls_done, cap_sasl, sasl_active, sasl_ok, cap_ended;
    bool quitting;
    char user[16];                      /* learned ident ("" unknown) */
    char host[64];                      /* learned host ("" unknown) */

    /* ISUPPORT */
    bool has_monitor;
    uint32_t monitor_max;               /* 0 = unlimited */
    bool casemap_ascii;
    uint32_t nicklen;
    uint32_t linelen;

    /* input */
    char *line;                         /* IRC_MAX_IN_LINE + 1 */
    size_t line_len;
    bool line_cr;
    char *conv;                         /* Latin-1 conversion buffer */

    /* time: monotonic (timers, pacing), and wall for message.ts */
    uint64_t now;
    uint64_t wall;
    uint64_t started;
    uint64_t online_at;
    uint64_t last_in;
    uint64_t ping_sent;                 /* 0 when none outstanding */

    /* pacing */
    int64_t tokens;                     /* ms of credit; <= burst * interval */
    uint64_t tokens_at;
    struct im_buf ctl, msgs;            /* at most IRC_MAX_QUEUE bytes each */
    uint32_t ctcp_out;                  /* CTCP answers in ctl (0 again once it drained) */

    /* watch list */
    struct watch *watch;
    uint32_t n_watch;
    bool watch_ready;
    uint64_t last_ison;                 /* when the last ISON round was due */
    bool ison_now;                      /* poll at the next tick */
    uint32_t ison_sent, ison_done;
};

/* ---- small helpers ------------------------------------------------------ */

static const char *
opt(const struct im_account_cfg *cfg, const char *key)
{
    for (uint32_t i = 0; i < cfg->n_options; i++)
        if (cfg->options[i].key && !strcmp(cfg->options[i].key, key))
            return cfg->options[i].value;
    return NULL;
}

static uint32_t
opt_uint(const struct im_account_cfg *cfg, const char *key, uint32_t def, uint32_t lo, uint32_t hi)
{
    const char *v = opt(cfg, key);
    if (!v || !*v)
        return def;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*end || x < lo || x > hi)
        return def;
    return (uint32_t)x;
}

static void
emit(struct im_sess *s, const struct im_event *ev)
{
    s->io->event(s->io->ud, ev);
}

static char
fold_c(char c)
{
    if (c >= 'A' && c <= 'Z')
        return (char)(c + 32);
    switch (c) {
    case '[':   return '{';
    case ']':   return '}';
    case '\\':  return '|';
    case '~':   return '^';
    }
    return c;
}

void
irc_fold(char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = fold_c(p[i]);
}

/* Case-insensitive nick compare (rfc1459 folding). */
static bool
nick_eq(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn)
        return false;
    for (size_t i = 0; i < an; i++)
        if (fold_c(a[i]) != fold_c(b[i]))
            return false;
    return true;
}

/* Report a final state (once) and stop.  Returns the session's code, for
 * tail calls: fail(s, state, code, fmt, ...). */
#define fail(s_, st_, code_, ...) \
    ((s_)->phase = P_DEAD, im_io_fail((s_)->io, &(s_)->rc, (st_), (code_), irc_strip_format, __VA_ARGS__))

/* n bytes of text (no NUL among them) as a notice, formatting removed. */
static void
notice(struct im_sess *s, const char *text, size_t n)
{
    im_io_notice(s->io, irc_strip_format, "%.*s", (int)(n > DETAIL_MAX ? DETAIL_MAX : n), text);
}

size_t
irc_strip_format(char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == 0x03) {                        /* ^C[fg[,bg]] with 1-2 digits each */
            size_t d = 0;
            while (d < 2 && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9')
                i++, d++;
            if (d && i + 2 < n && p[i + 1] == ',' && p[i + 2] >= '0' && p[i + 2] <= '9') {
                i += 2;
                if (i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9')
                    i++;
            }
            continue;
        }
        if (c == 0x04) {                        /* ^D[RRGGBB[,RRGGBB]] */
            size_t d = 0;
            while (d < 6 && i + 1 < n && strchr("0123456789abcdefABCDEF", p[i + 1]) && p[i + 1])
                i++, d++;
            if (d == 6 && i + 7 < n && p[i + 1] == ',') {
                size_t k = 0;
                while (k < 6 && p[i + 2 + k] && strchr("0123456789abcdefABCDEF", p[i + 2 + k]))
                    k++;
                if (k == 6)
                    i += 7;
            }
            continue;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            continue;                           /* ^B ^O ^Q ^V ^] ^^ ^_ and other controls */
        p[o++] = (char)c;
    }
    return o;
}

size_t
irc_to_utf8(const char *p, size_t n, char *out, size_t outsz)
{
    size_t o = 0;
    if (im_utf8_valid(p, n)) {
        if (n > outsz)
            n = outsz;
        memcpy(out, p, n);
        return n;
    }
    for (size_t i = 0; i < n && o + 2 <= outsz; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x80) {
            out[o++] = (char)c;
        } else {
            out[o++] = (char)(0xc0 | (c >> 6));
            out[o++] = (char)(0x80 | (c & 0x3f));
        }
    }
    return o;
}

/* ---- nick syntax -------------------------------------------------------- */

static bool
nick_special(char c)
{
    return c && strchr("[]\\`_^{|}", c);
}

static bool
nick_first(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || nick_special(c);
}

static bool
nick_char(char c)
{
    return nick_first(c) || (c >= '0' && c <= '9') || c == '-';
}

static int
irc_normalize_nick(const char *in, char *out, size_t outsz, const char **why)
{
    size_t n = strlen(in);
    if (!n) {
        *why = "empty nick";
        return -IM_EINVAL;
    }
    if (n > IRC_NICK_MAX) {
        *why = "nick longer than 30 characters";
        return -IM_EINVAL;
    }
    if (!nick_first(in[0])) {
        *why = "a nick starts with a letter or one of [ ] \\ ` _ ^ { | }";
        return -IM_EINVAL;
    }
    for (size_t i = 1; i < n; i++)
        if (!nick_char(in[i])) {
            *why = "a nick has only letters, digits and [ ] \\ ` _ ^ { | } -";
            return -IM_EINVAL;
        }
    if (n + 1 > outsz) {
        *why = "nick too long";
        return -IM_EINVAL;
    }
    memcpy(out, in, n + 1);
    irc_fold(out, n);
    return 0;
}

static void
irc_default_tls_name(const char *login, char *out, size_t outsz)
{
    (void)login;
    if (outsz)
        out[0] = 0;
}

/* ---- the send queues ---------------------------------------------------- */

/* Queue one line (n <= IRC_LINE_MAX).  0, -ENOMEM or -IM_ETOOBIG (the queue is full). */
static int
fifo_push(struct im_buf *f, const char *p, size_t n, uint64_t msg, uint8_t cost)
{
    uint8_t hdr[REC_HDR];
    uint16_t len = (uint16_t)n;
    int rc = im_buf_reserve(f, REC_HDR + n);

    if (rc) {
        f->err = 0;                     /* the queue is intact; the caller ends the session */
        return rc;
    }
    memcpy(hdr, &msg, 8);
    memcpy(hdr + 8, &len, 2);
    hdr[10] = cost;
    im_buf_append(f, hdr, REC_HDR);
    im_buf_append(f, p, n);
    return 0;
}

static bool
fifo_empty(const struct im_buf *f)
{
    return im_buf_len(f) == 0;
}

static size_t
fifo_lines(const struct im_buf *f)
{
    const char *b = im_buf_data(f);
    size_t k = 0;
    for (size_t at = 0; at < im_buf_len(f); k++) {
        uint16_t len;
        memcpy(&len, b + at + 8, 2);
        at += REC_HDR + len;
    }
    return k;
}

/* ---- output ------------------------------------------------------------- */

static void
refill(struct im_sess *s)
{
    int64_t cap = (int64_t)s->burst * s->interval_ms;
    if (s->now > s->tokens_at) {
        int64_t add = (int64_t)(s->now - s->tokens_at);
        s->tokens = s->tokens + add > cap ? cap : s->tokens + add;
    }
    s->tokens_at = s->now > s->tokens_at ? s->now : s->tokens_at;
}

static void
charge(struct im_sess *s, unsigned cost)
{
    int64_t floor = -(int64_t)s->burst * s->interval_ms;
    refill(s);
    s->tokens -= (int64_t)cost * s->interval_ms;
    if (s->tokens < floor)
        s->tokens = floor;
}

/* Cut a formatted line to fit bufsz with its CRLF, turn any CR or LF in it
 * into a space (nothing from the server can inject a line), add CRLF.
 * Returns the new length. */
static size_t
line_end(char *buf, size_t n, size_t bufsz)
{
    if (n > bufsz - 3)
        n = im_utf8_trim(buf, bufsz - 3);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\r' || buf[i] == '\n')
            buf[i] = ' ';
    buf[n++] = '\r';
    buf[n++] = '\n';
    return n;
}

/* Write a line now (it ends in CRLF), outside the queues but charged. */
static int
out_now(struct im_sess *s, const char *p, size_t n)
{
    charge(s, 1);
    return s->io->out(s->io->ud, p, n);
}

static int __attribute__((format(printf, 2, 3)))
sendf_now(struct im_sess *s, const char *fmt, ...)
{
    char buf[IRC_LINE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -IM_EINVAL;
    n = (int)line_end(buf, (size_t)n, sizeof(buf));
    return out_now(s, buf, (size_t)n);
}

static int flush_queues(struct im_sess *s);

/* Queue a control line (cost = how many lines' worth of penalty it carries). */
static int __attribute__((format(printf, 3, 4)))
sendf_ctl(struct im_sess *s, unsigned cost, const char *fmt, ...)
{
    char buf[IRC_LINE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf) - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -IM_EINVAL;
    n = (int)line_end(buf, (size_t)n, sizeof(buf));
    return fifo_push(&s->ctl, buf, (size_t)n, 0, (uint8_t)cost);
}

/* Send what the token bucket allows: control lines first, then messages. */
static int
flush_queues(struct im_sess *s)
{
    refill(s);
    for (;;) {
        if (fifo_empty(&s->ctl))
            s->ctcp_out = 0;
        struct im_buf *f = !fifo_empty(&s->ctl) ? &s->ctl : !fifo_empty(&s->msgs) ? &s->msgs : NULL;
        if (!f)
            return 0;
        const uint8_t *r = (const uint8_t *)im_buf_data(f);
        uint64_t msg;
        uint16_t len;
        memcpy(&msg, r, 8);
        memcpy(&len, r + 8, 2);
        unsigned cost = r[10];
        /* A line may leave when a whole line's worth of credit is there;
         * an empty record only marks a message that had nothing to send. */
        if (len && s->tokens < (int64_t)s->interval_ms)
            return 0;
        s->tokens -= (int64_t)cost * s->interval_ms;
        int rc = len ? s->io->out(s->io->ud, r + REC_HDR, len) : 0;
        im_buf_consume(f, REC_HDR + len);
        if (rc < 0)
            return rc;
        if (msg) {
            im_io_sent(s->io, msg);
            if (s->phase == P_DEAD)
                return s->rc;
        }
    }
}

/* ---- the line parser ------------------------------------------------------ */

struct irc_line {
    const char *nick;                   /* prefix nick (or server name); "" when none */
    size_t nick_len;
    const char *userhost;               /* "user@host" after '!', or NULL */
    const char *cmd;
    const char *param[MAX_PARAMS];
    unsigned n;
};

/* Split a NUL-terminated line in place.  Returns 0 or -IM_EPROTO. */
static int
parse_line(char *p, struct irc_line *l)
{
    memset(l, 0, sizeof(*l));
    l->nick = "";
    if (*p == '@') {                    /* IRCv3 tags: skipped */
        p = strchr(p, ' ');
        if (!p)
            return -IM_EPROTO;
        while (*p == ' ')
            p++;
    }
    if (*p == ':') {
        char *pre = ++p;
        p = strchr(p, ' ');
        if (!p)
            return -IM_EPROTO;
        *p++ = 0;
        char *bang = strchr(pre, '!');
        if (bang) {
            *bang = 0;
            l->userhost = bang + 1;
        } else {
            char *at = strchr(pre, '@');
            if (at)
                *at = 0;
        }
        l->nick = pre;
        l->nick_len = strlen(pre);
        while (*p == ' ')
            p++;
    }
    if (!*p)
        return -IM_EPROTO;
    l->cmd = p;
    p = strchr(p, ' ');
    while (p) {
        *p++ = 0;
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (*p == ':' || l->n == MAX_PARAMS - 1) {
            l->param[l->n++] = *p == ':' ? p + 1 : p;
            break;
        }
        l->param[l->n++] = p;
        p = strchr(p, ' ');
    }
    return 0;
}

static const char *
last_param(const struct irc_line *l)
{
    return l->n ? l->param[l->n - 1] : "";
}

/* ---- watch list and presence ---------------------------------------------- */

static struct watch *
watch_find(struct im_sess *s, const char *nick, size_t n)
{
    for (uint32_t i = 0; i < s->n_watch; i++)
        if (nick_eq(s->watch[i].nick, strlen(s->watch[i].nick), nick, n))
            return &s->watch[i];
    return NULL;
}

static void
set_presence(struct im_sess *s, struct watch *w, enum im_presence p)
{
    if (w->pres == p)
        return;
    w->pres = p;
    struct im_event ev = { .type = IM_EV_PRESENCE };
    ev.u.presence.address = (struct im_str){ w->nick, (uint32_t)strlen(w->nick) };
    ev.u.presence.presence = p;
    emit(s, &ev);
}

/* Room for nicks in one MONITOR/ISON line: 510 bytes minus the command. */
#define BATCH_ROOM  (IRC_LINE_MAX - 2 - 16)

/* MONITOR +/- for the entries selected by want (1 add, 0 remove). */
static int
monitor_batch(struct im_sess *s, char sign, const char **nicks, uint32_t n)
{
    char buf[IRC_LINE_MAX];
    size_t len = 0;
    for (uint32_t i = 0; i <= n; i++) {
        size_t k = i < n ? strlen(nicks[i]) : 0;
        if (len && (i == n || len + 1 + k > BATCH_ROOM)) {
            buf[len] = 0;
            int rc = sendf_ctl(s, 2, "MONITOR %c %s", sign, buf);
            if (rc)
                return rc;
            len = 0;
        }
        if (i == n)
            break;
        if (len)
            buf[len++] = ',';
        memcpy(buf + len, nicks[i], k);
        len += k;
    }
    return 0;
}

/* Bring the server's MONITOR list in line with the watch list. */
static int
monitor_sync(struct im_sess *s, const char **gone, uint32_t n_gone)
{
    const char **add = calloc(s->n_watch + 1, sizeof(*add));
    if (!add)
        return -ENOMEM;
    uint32_t n_add = 0, have = 0;
    int rc = monitor_batch(s, '-', gone, n_gone);
    for (uint32_t i = 0; i < s->n_watch; i++)
        if (s->watch[i].monitored)
            have++;
    for (uint32_t i = 0; !rc && i < s->n_watch; i++) {
        struct watch *w = &s->watch[i];
        if (w->monitored || (s->monitor_max && have >= s->monitor_max))
            continue;
        w->monitored = true;
        have++;
        add[n_add++] = w->nick;
    }
    if (!rc)
        rc = monitor_batch(s, '+', add, n_add);
    free(add);
    return rc;
}

/* While message lines wait for the bucket, polls would eat their share of
 * it: poll only as often as the contract needs (IRC_ISON_BUSY_MS).  The
 * period is worked out at each tick, so the normal pace resumes as soon as
 * the queue drains rather than one busy period later. */
static bool
ison_due(const struct im_sess *s)
{
    if (s->ison_now)
        return true;
    uint32_t period = s->ison_ms;
    if (!fifo_empty(&s->msgs) && period < IRC_ISON_BUSY_MS)
        period = IRC_ISON_BUSY_MS;
    return s->now - s->last_ison >= period;
}

/* Start an ISON round over the nicks MONITOR does not cover. */
static int
ison_poll(struct im_sess *s)
{
    char buf[IRC_LINE_MAX];
    size_t len = 0;
    s->last_ison = s->now;
    s->ison_now = false;
    if (s->ison_done != s->ison_sent)
        return 0;                       /* the previous round is still unanswered */
    for (uint32_t i = 0; i <= s->n_watch; i++) {
        struct watch *w = i < s->n_watch ? &s->watch[i] : NULL;
        if (w && w->monitored)
            continue;
        size_t k = w ? strlen(w->nick) : 0;
        if (len && (!w || len + 1 + k > BATCH_ROOM)) {
            buf[len] = 0;
            int rc = sendf_ctl(s, 1, "ISON %s", buf);
            if (rc)
                return rc;
            s->ison_sent++;
            len = 0;
        }
        if (!w)
            break;
        w->ison_batch = s->ison_sent + 1;
        if (len)
            buf[len++] = ' ';
        memcpy(buf + len, w->nick, k);
        len += k;
    }
    return 0;
}

static void
on_ison_reply(struct im_sess *s, const char *list)
{
    uint32_t batch = ++s->ison_done;
    for (uint32_t i = 0; i < s->n_watch; i++) {
        struct watch *w = &s->watch[i];
        if (w->monitored || w->ison_batch != batch)
            continue;
        bool on = false;
        size_t wl = strlen(w->nick);
        for (const char *p = list; *p;) {
            while (*p == ' ')
                p++;
            const char *e = p;
            while (*e && *e != ' ')
                e++;
            if (e > p && nick_eq(p, (size_t)(e - p), w->nick, wl))
                on = true;
            p = e;
        }
        set_presence(s, w, on ? IM_PRES_AVAILABLE : IM_PRES_OFFLINE);
    }
}

/* 730/731: "nick!user@host,nick2..." */
static void
on_monitor_reply(struct im_sess *s, const char *list, enum im_presence p)
{
    while (*list) {
        const char *e = list;
        while (*e && *e != ',')
            e++;
        const char *bang = memchr(list, '!', (size_t)(e - list));
        size_t n = (size_t)((bang ? bang : e) - list);
        struct watch *w = watch_find(s, list, n);
        if (w)
            set_presence(s, w, p);
        list = *e ? e + 1 : e;
    }
}

/* 734: "limit targets :text" - those nicks fall back to ISON polling. */
static void
on_monitor_full(struct im_sess *s, const char *list)
{
    while (*list) {
        const char *e = list;
        while (*e && *e != ',')
            e++;
        struct watch *w = watch_find(s, list, (size_t)(e - list));
        if (w)
            w->monitored = false;
        list = *e ? e + 1 : e;
    }
    s->ison_now = true;
}

static int
watch_start(struct im_sess *s)
{
    if (s->watch_ready)
        return 0;
    s->watch_ready = true;
    int rc = 0;
    if (s->has_monitor)
        rc = monitor_sync(s, NULL, 0);
    s->ison_now = true;
    return rc;
}

/* ---- registration ---------------------------------------------------------- */

static int
send_nick(struct im_sess *s)
{
    return sendf_now(s, "NICK %s", s->nick);
}

/* The next nick to try after 433: login_, login__, login___, login1, ... */
static int
next_nick(struct im_sess *s)
{
    const char *login = s->cfg->login;
    size_t max = s->nicklen && s->nicklen < IRC_NICK_MAX ? s->nicklen : IRC_NICK_MAX;
    size_t base = strlen(login);
    char suffix[16];
    s->alt++;
    if (s->alt > IRC_MAX_ALT_NICKS)
        return fail(s, IM_ACC_ERROR, -IM_EEXIST, "nick %s is in use and no alternate nick was free",
                    login);
    if (s->alt <= 3) {
        memset(suffix, '_', s->alt);
        suffix[s->alt] = 0;
    } else {
        snprintf(suffix, sizeof(suffix), "%u", s->alt - 3);
    }
    size_t sl = strlen(suffix);
    if (base + sl > max)
        base = max > sl ? max - sl : 1;
    snprintf(s->nick, sizeof(s->nick), "%.*s%s", (int)base, login, suffix);
    return send_nick(s);
}

static int
cap_end(struct im_sess *s)
{
    if (s->cap_ended)
        return 0;
    s->cap_ended = true;
    return sendf_now(s, "CAP END");
}

/* "sasl" or "sasl=PLAIN,EXTERNAL" in a CAP LS list: true when PLAIN is usable. */
static bool
caps_offer_sasl_plain(const char *caps)
{
    const char *p = caps;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        size_t n = (size_t)(e - p);
        if (n >= 4 && !strncmp(p, "sasl", 4) && (n == 4 || p[4] == '=')) {
            if (n == 4)
                return true;
            const char *m = p + 5;
            while (m < e) {
                const char *c = m;
                while (c < e && *c != ',')
                    c++;
                if (c - m == 5 && !strncasecmp(m, "PLAIN", 5))
                    return true;
                m = c < e ? c + 1 : c;
            }
            return false;
        }
        p = e;
    }
    return false;
}

static bool
want_sasl(const struct im_sess *s)
{
    return s->sasl_mode != SASL_NO && s->cfg->password && s->cfg->password[0];
}

static int
on_cap(struct im_sess *s, const struct irc_line *l)
{
    if (l->n < 2)
        return 0;
    const char *sub = l->param[1];
    if (!strcasecmp(sub, "LS")) {
        if (s->cap_ls_done)
            return 0;
        bool more = l->n >= 4 && !strcmp(l->param[2], "*");
        if (caps_offer_sasl_plain(last_param(l)))
            s->cap_sasl = true;
        if (more)
            return 0;
        s->cap_ls_done = true;
        if (s->cap_sasl && want_sasl(s))
            return sendf_now(s, "CAP REQ :sasl");
        if (s->sasl_mode == SASL_YES)
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "the server does not offer SASL PLAIN");
        return cap_end(s);
    }
    if (!strcasecmp(sub, "ACK")) {
        if (strstr(last_param(l), "sasl") && !s->sasl_active && !s->sasl_ok) {
            s->sasl_active = true;
            return sendf_now(s, "AUTHENTICATE PLAIN");
        }
        return 0;
    }
    if (!strcasecmp(sub, "NAK")) {
        if (s->sasl_mode == SASL_YES)
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "the server refused the SASL capability");
        return cap_end(s);
    }
    return 0;
}

/* AUTHENTICATE +: send authzid \0 authcid \0 password in base64, 400-byte pieces. */
static int
sasl_send_plain(struct im_sess *s)
{
    const char *user = s->cfg->login, *pw = s->cfg->password;
    size_t ul = strlen(user), pl = strlen(pw);
    size_t rawn = ul + 1 + ul + 1 + pl;
    uint8_t *raw = malloc(rawn);
    size_t b64cap = (rawn + 2) / 3 * 4 + 1, b64n = 0;
    char *b64 = malloc(b64cap);
    int rc = -ENOMEM;
    if (!raw || !b64)
        goto out;
    memcpy(raw, user, ul);
    raw[ul] = 0;
    memcpy(raw + ul + 1, user, ul);
    raw[2 * ul + 1] = 0;
    memcpy(raw + 2 * ul + 2, pw, pl);
    if (mbedtls_base64_encode((unsigned char *)b64, b64cap, &b64n, raw, rawn)) {
        rc = -IM_EINVAL;
        goto out;
    }
    rc = 0;
    for (size_t at = 0; !rc && at < b64n; at += 400) {
        size_t k = b64n - at > 400 ? 400 : b64n - at;
        rc = sendf_now(s, "AUTHENTICATE %.*s", (int)k, b64 + at);
    }
    if (!rc && b64n % 400 == 0)
        rc = sendf_now(s, "AUTHENTICATE +");
out:
    if (raw)
        im_wipe(raw, rawn);
    if (b64)
        im_wipe(b64, b64cap);
    free(raw);
    free(b64);
    return rc;
}

/* 001: we are registered. */
static int
on_welcome(struct im_sess *s, const struct irc_line *l)
{
    if (s->phase != P_REG)
        return 0;
    if (l->n >= 1 && l->param[0][0] && strlen(l->param[0]) <= IRC_NICK_MAX)
        im_strlcpy(s->nick, l->param[0], sizeof(s->nick));
    /* The last word of the text is often our full prefix nick!user@host. */
    const char *text = last_param(l);
    const char *w = strrchr(text, ' ');
    w = w ? w + 1 : text;
    const char *bang = strchr(w, '!'), *at = bang ? strchr(bang, '@') : NULL;
    if (bang && at && nick_eq(w, (size_t)(bang - w), s->nick, strlen(s->nick)) &&
        (size_t)(at - bang - 1) < sizeof(s->user) && strlen(at + 1) < sizeof(s->host)) {
        snprintf(s->user, sizeof(s->user), "%.*s", (int)(at - bang - 1), bang + 1);
        im_strlcpy(s->host, at + 1, sizeof(s->host));
    }
    s->phase = P_ONLINE;
    s->online_at = s->now;

    char detail[DETAIL_MAX + 1] = "";
    if (!nick_eq(s->nick, strlen(s->nick), s->cfg->login, strlen(s->cfg->login)))
        snprintf(detail, sizeof(detail), "nick %s is in use; using %s", s->cfg->login, s->nick);
    struct im_event ev = { .type = IM_EV_STATE };
    ev.u.state.state = IM_ACC_ONLINE;
    ev.u.state.detail = (struct im_str){ detail, (uint32_t)strlen(detail) };
    emit(s, &ev);
    if (s->phase == P_DEAD)
        return s->rc;
    if (detail[0])
        notice(s, detail, strlen(detail));

    const char *ns = s->nickserv_password;
    if (ns && *ns && !s->sasl_ok) {
        int rc;
        if (!strcmp(s->nick, s->cfg->login))
            rc = sendf_ctl(s, 1, "PRIVMSG NickServ :IDENTIFY %s", ns);
        else
            rc = sendf_ctl(s, 1, "PRIVMSG NickServ :IDENTIFY %s %s", s->cfg->login, ns);
        if (rc)
            return rc;
    }
    return flush_queues(s);
}

static int
on_isupport(struct im_sess *s, const struct irc_line *l)
{
    for (unsigned i = 1; i + 1 < l->n; i++) {
        const char *t = l->param[i];
        const char *eq = strchr(t, '=');
        size_t kl = eq ? (size_t)(eq - t) : strlen(t);
        const char *v = eq ? eq + 1 : "";
        if (kl == 7 && !strncmp(t, "MONITOR", 7)) {
            s->has_monitor = true;
            s->monitor_max = (uint32_t)strtoul(v, NULL, 10);
        } else if (kl == 11 && !strncmp(t, "CASEMAPPING", 11)) {
            s->casemap_ascii = !strcmp(v, "ascii");
        } else if (kl == 7 && !strncmp(t, "NICKLEN", 7)) {
            s->nicklen = (uint32_t)strtoul(v, NULL, 10);
        } else if (kl == 7 && !strncmp(t, "LINELEN", 7)) {
            unsigned long x = strtoul(v, NULL, 10);
            s->linelen = x >= 512 && x <= IRC_MAX_IN_LINE ? (uint32_t)x : 0;
        }
    }
    return 0;
}

/* ---- messages in ---------------------------------------------------------- */

static int
on_privmsg(struct im_sess *s, const struct irc_line *l, bool is_notice)
{
    if (l->n < 2 || !l->nick_len)
        return 0;
    const char *target = l->param[0];
    const char *text = l->param[1];
    bool from_server = !l->userhost;
    bool to_me = nick_eq(target, strlen(target), s->nick, strlen(s->nick));

    if (is_notice) {
        if (text[0] == 0x01)
            return 0;                               /* CTCP reply */
        struct watch *w = from_server ? NULL : watch_find(s, l->nick, l->nick_len);
        if (!w || !to_me) {
            if (s->phase != P_ONLINE)
                return 0;                           /* connection chatter before 001 */
            char buf[DETAIL_MAX + 1];
            int n = snprintf(buf, sizeof(buf), "%.*s: %s",
                             (int)im_utf8_trim(l->nick, l->nick_len > 64 ? 64 : l->nick_len), l->nick, text);
            notice(s, buf, n < 0 ? 0 : (size_t)n > DETAIL_MAX ? DETAIL_MAX : (size_t)n);
            return 0;
        }
    }
    if (!to_me || from_server || l->nick_len > IRC_NICK_MAX)
        return 0;                                   /* channels, server messages */

    size_t tl = strlen(text);
    char *body = malloc(tl + 8);
    if (!body)
        return -ENOMEM;
    size_t bl;
    if (text[0] == 0x01) {
        const char *c = text + 1;
        const char *end = strchr(c, 0x01);
        size_t cl = end ? (size_t)(end - c) : strlen(c);
        if (cl >= 6 && !strncmp(c, "ACTION", 6) && (cl == 6 || c[6] == ' ')) {
            const char *a = cl > 6 ? c + 7 : c + cl;
            size_t al = cl > 6 ? cl - 7 : 0;
            memcpy(body, "/me ", 4);
            memcpy(body + 4, a, al);
            bl = 4 + al;
        } else {
            int rc = 0;
            free(body);
            if (s->ctcp_out >= IRC_MAX_CTCP_QUEUED)
                return 0;                           /* a flood of CTCP requests: not answered */
            if (!is_notice && cl >= 7 && !strncmp(c, "VERSION", 7) && (cl == 7 || c[7] == ' '))
                rc = sendf_ctl(s, 1, "NOTICE %.*s :\001VERSION imfuse\001", (int)l->nick_len, l->nick);
            else if (!is_notice && cl >= 4 && !strncmp(c, "PING", 4) && (cl == 4 || c[4] == ' ') && cl < 400)
                rc = sendf_ctl(s, 1, "NOTICE %.*s :\001%.*s\001", (int)l->nick_len, l->nick, (int)cl, c);
            else
                return 0;
            s->ctcp_out++;
            return rc ? rc : flush_queues(s);
        }
    } else {
        memcpy(body, text, tl);
        bl = tl;
    }
    bl = irc_strip_format(body, bl);
    if (!bl) {
        free(body);
        return 0;
    }
    char from[IRC_NICK_MAX + 1];
    memcpy(from, l->nick, l->nick_len);
    from[l->nick_len] = 0;
    irc_fold(from, l->nick_len);
    struct watch *w = watch_find(s, from, l->nick_len);
    if (w && w->pres != IM_PRES_AVAILABLE && w->pres != IM_PRES_AWAY)
        set_presence(s, w, IM_PRES_AVAILABLE);
    struct im_event ev = { .type = IM_EV_MESSAGE };
    ev.u.message.from = (struct im_str){ from, (uint32_t)l->nick_len };
    ev.u.message.body = (struct im_str){ body, (uint32_t)bl };
    ev.u.message.ts = s->wall;
    emit(s, &ev);
    free(body);
    return 0;
}

/* ---- dispatch --------------------------------------------------------------- */

static int
numeric(const char *cmd)
{
    if (cmd[0] < '0' || cmd[0] > '9' || cmd[1] < '0' || cmd[1] > '9' || cmd[2] < '0' || cmd[2] > '9' || cmd[3])
        return -1;
    return (cmd[0] - '0') * 100 + (cmd[1] - '0') * 10 + (cmd[2] - '0');
}

static int
handle(struct im_sess *s, struct irc_line *l)
{
    const char *cmd = l->cmd;
    int num = numeric(cmd);

    if (num >= 0) {
        switch (num) {
        case 1:
            return on_welcome(s, l);
        case 5:
            return on_isupport(s, l);
        case 303:                                   /* RPL_ISON */
            if (s->ison_done != s->ison_sent)
                on_ison_reply(s, last_param(l));
            return 0;
        case 376: case 422:                         /* end of MOTD / no MOTD */
            return s->phase == P_ONLINE ? watch_start(s) : 0;
        case 396:                                   /* RPL_VISIBLEHOST <nick> <host> :text */
            if (l->n >= 3 && strlen(l->param[1]) < sizeof(s->host)) {
                const char *h = l->param[1], *at = strchr(h, '@');
                im_strlcpy(s->host, at ? at + 1 : h, sizeof(s->host));
            }
            return 0;
        case 432:                                   /* erroneous nick */
            if (s->phase == P_REG)
                return fail(s, IM_ACC_ERROR, -IM_EINVAL, "the server refuses the nick %s: %s", s->nick,
                            last_param(l));
            return 0;
        case 433: case 436: case 437:               /* nick in use / collision / unavailable */
            if (s->phase == P_REG)
                return next_nick(s);
            return 0;
        case 464:                                   /* password mismatch */
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "server password refused: %s", last_param(l));
        case 465:                                   /* banned */
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "banned from the server: %s", last_param(l));
        case 730:
            on_monitor_reply(s, last_param(l), IM_PRES_AVAILABLE);
            return 0;
        case 731:
            on_monitor_reply(s, last_param(l), IM_PRES_OFFLINE);
            return 0;
        case 734:                                   /* MONITOR list full: <nick> <limit> <targets> :text */
            if (l->n >= 3)
                on_monitor_full(s, l->param[2]);
            return 0;
        case 903:                                   /* SASL success */
            s->sasl_ok = true;
            s->sasl_active = false;
            return cap_end(s);
        case 904: case 905:                         /* SASL failed / too long */
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "SASL login refused by the server: %s", last_param(l));
        case 902:                                   /* nick unavailable for SASL */
            return fail(s, IM_ACC_AUTH_FAILED, -IM_EAUTH, "SASL refused: %s", last_param(l));
        case 906: case 907:                         /* aborted / already authenticated */
            s->sasl_active = false;
            return cap_end(s);
        case 421:                                   /* unknown command (e.g. CAP on an old server) */
            if (l->n >= 2 && !strcasecmp(l->param[1], "CAP"))
                s->cap_ended = true;
            return 0;
        }
        return 0;
    }
    if (!strcasecmp(cmd, "PING"))
        return sendf_now(s, "PONG :%s", last_param(l));
    if (!strcasecmp(cmd, "PONG"))
        return 0;
    if (!strcasecmp(cmd, "PRIVMSG"))
        return on_privmsg(s, l, false);
    if (!strcasecmp(cmd, "NOTICE"))
        return on_privmsg(s, l, true);
    if (!strcasecmp(cmd, "CAP"))
        return on_cap(s, l);
    if (!strcasecmp(cmd, "AUTHENTICATE")) {
        if (s->sasl_active && l->n >= 1 && !strcmp(l->param[0], "+"))
            return sasl_send_plain(s);
        return 0;
    }
    if (!strcasecmp(cmd, "ERROR")) {
        if (s->quitting)
            return 0;                               /* the answer to our QUIT */
        return fail(s, IM_ACC_ERROR, -IM_EPROTO, "server closed the session: %s", last_param(l));
    }
    if (!strcasecmp(cmd, "NICK")) {
        if (l->n >= 1 && nick_eq(l->nick, l->nick_len, s->nick, strlen(s->nick)) &&
            strlen(l->param[0]) <= IRC_NICK_MAX)
            im_strlcpy(s->nick, l->param[0], sizeof(s->nick));
        return 0;
    }
    if (!strcasecmp(cmd, "KILL")) {
        if (l->n >= 1 && nick_eq(l->param[0], strlen(l->param[0]), s->nick, strlen(s->nick)))
            return fail(s, IM_ACC_ERROR, -IM_EPROTO, "killed by %.*s: %s", (int)l->nick_len, l->nick,
                        last_param(l));
        return 0;
    }
    if (!strcasecmp(cmd, "CHGHOST")) {                 /* IRCv3: :nick!u@h CHGHOST user host */
        if (l->n >= 2 && nick_eq(l->nick, l->nick_len, s->nick, strlen(s->nick)) &&
            strlen(l->param[0]) < sizeof(s->user) && strlen(l->param[1]) < sizeof(s->host)) {
            im_strlcpy(s->user, l->param[0], sizeof(s->user));
            im_strlcpy(s->host, l->param[1], sizeof(s->host));
        }
        return 0;
    }
    if (!strcasecmp(cmd, "JOIN") && l->userhost && nick_eq(l->nick, l->nick_len, s->nick, strlen(s->nick))) {
        const char *at = strchr(l->userhost, '@');
        if (at && (size_t)(at - l->userhost) < sizeof(s->user) && strlen(at + 1) < sizeof(s->host)) {
            snprintf(s->user, sizeof(s->user), "%.*s", (int)(at - l->userhost), l->userhost);
            im_strlcpy(s->host, at + 1, sizeof(s->host));
        }
        return 0;
    }
    return 0;
}

static int
process_line(struct im_sess *s)
{
    const char *src = s->line;
    size_t n = s->line_len;
    if (!n)
        return 0;
    if (!im_utf8_valid(src, n)) {
        n = irc_to_utf8(src, n, s->conv, 2 * IRC_MAX_IN_LINE);
        src = s->conv;
    } else {
        memcpy(s->conv, src, n);
        src = s->conv;
    }
    s->conv[n] = 0;
    if (strlen(s->conv) != n)
        return 0;                                   /* a NUL inside: not a valid line */
    struct irc_line l;
    if (parse_line(s->conv, &l) < 0)
        return 0;                                   /* tolerate garbage lines */
    return handle(s, &l);
}

/* ---- ops -------------------------------------------------------------------- */

static struct im_sess *
irc_create(const struct im_account_cfg *cfg, const struct im_io *io)
{
    struct im_sess *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->line = malloc(IRC_MAX_IN_LINE + 1);
    s->conv = malloc(2 * IRC_MAX_IN_LINE + 1);
    if (!s->line || !s->conv) {
        free(s->line);
        free(s->conv);
        free(s);
        return NULL;
    }
    s->cfg = cfg;
    s->io = io;
    im_buf_init(&s->ctl, IRC_MAX_QUEUE);
    s->ctl.secret = true;               /* NickServ IDENTIFY waits here */
    im_buf_init(&s->msgs, IRC_MAX_QUEUE);
    s->server_password = opt(cfg, "server_password");
    s->nickserv_password = opt(cfg, "nickserv_password");
    const char *ns = opt(cfg, "nickserv");
    if ((!s->nickserv_password || !*s->nickserv_password) && ns && !strcmp(ns, "yes"))
        s->nickserv_password = cfg->password;
    const char *sm = opt(cfg, "sasl");
    s->sasl_mode = sm && !strcmp(sm, "no") ? SASL_NO : sm && !strcmp(sm, "yes") ? SASL_YES : SASL_AUTO;
    s->ident = opt(cfg, "username");
    if (!s->ident || !*s->ident)
        s->ident = opt(cfg, "ident");
    if (!s->ident || !*s->ident)
        s->ident = cfg->login;
    s->realname = opt(cfg, "realname");
    if (!s->realname || !*s->realname)
        s->realname = cfg->login;
    s->ison_ms = opt_uint(cfg, "ison_interval", IRC_ISON_DEFAULT_MS / 1000, 1, 300) * 1000;
    s->burst = opt_uint(cfg, "flood_burst", IRC_FLOOD_BURST, 1, 100);
    s->interval_ms = opt_uint(cfg, "flood_interval_ms", IRC_FLOOD_INTERVAL_MS, 10, 60000);
    im_strlcpy(s->nick, cfg->login, sizeof(s->nick));
    return s;
}

static void
irc_destroy(struct im_sess *s)
{
    if (!s)
        return;
    free(s->line);
    free(s->conv);
    im_buf_free(&s->ctl);
    im_buf_free(&s->msgs);
    free(s->watch);
    free(s);
}

/* The ident as sent in USER: only characters servers accept, at most 10. */
static void
ident_of(const char *in, char *out, size_t outsz)
{
    size_t o = 0;
    for (; *in && o + 1 < outsz && o < 10; in++) {
        char c = *in;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-')
            out[o++] = c;
    }
    if (!o)
        out[o++] = 'u';
    out[o] = 0;
}

/* Take the time a hook is given; the monotonic clock never goes back here. */
static void
set_time(struct im_sess *s, struct im_time now)
{
    if (now.mono_ms > s->now)
        s->now = now.mono_ms;
    s->wall = now.wall_ms;
}

static int
irc_start(struct im_sess *s, struct im_time now)
{
    s->now = s->started = s->last_in = s->tokens_at = now.mono_ms;
    s->wall = now.wall_ms;
    s->tokens = (int64_t)s->burst * s->interval_ms;
    if (s->cfg->tls == IM_TLS_STARTTLS)
        return fail(s, IM_ACC_ERROR, -IM_EINVAL,
                    "IRC has no STARTTLS: use tls \"tls\" (direct TLS, usually port 6697) or \"none\"");
    if (s->phase != P_NEW)
        return -IM_EINVAL;
    s->phase = P_REG;
    int rc = 0;
    char ident[11];
    ident_of(s->ident, ident, sizeof(ident));
    if (s->server_password && *s->server_password)
        rc = sendf_now(s, "PASS :%s", s->server_password);
    if (!rc)
        rc = sendf_now(s, "CAP LS 302");
    if (!rc)
        rc = send_nick(s);
    if (!rc)
        rc = sendf_now(s, "USER %s 0 * :%s", ident, s->realname);
    return rc;
}

static int
irc_input(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    s->now = now.mono_ms;
    s->wall = now.wall_ms;
    if (n) {
        s->last_in = now.mono_ms;
        s->ping_sent = 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = (char)p[i];
        if (c == '\n') {
            int rc = process_line(s);
            s->line_len = 0;
            s->line_cr = false;
            if (rc < 0)
                return s->phase == P_DEAD ? s->rc : rc;
            if (s->phase == P_DEAD)
                return s->rc;
            continue;
        }
        if (s->line_cr) {                           /* a CR not followed by LF: a space */
            if (s->line_len >= IRC_MAX_IN_LINE)
                goto toolong;
            s->line[s->line_len++] = ' ';
            s->line_cr = false;
        }
        if (c == '\r') {
            s->line_cr = true;
            continue;
        }
        if (s->line_len >= IRC_MAX_IN_LINE)
            goto toolong;
        s->line[s->line_len++] = c;
    }
    return 0;
toolong:
    return fail(s, IM_ACC_ERROR, -IM_ETOOBIG, "the server sent a line longer than %u bytes",
                IRC_MAX_IN_LINE);
}

static int
irc_tls_ready(struct im_sess *s, int status, struct im_time now)
{
    (void)status;
    (void)now;
    return fail(s, IM_ACC_ERROR, -IM_EPROTO, "IRC has no STARTTLS");
}

static int
irc_tick(struct im_sess *s, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    set_time(s, now);
    if (s->phase == P_REG && s->now - s->started >= IRC_REG_TIMEOUT_MS)
        return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "the server did not complete the registration within %d s",
                    IRC_REG_TIMEOUT_MS / 1000);
    if (s->ping_sent) {
        if (s->now - s->ping_sent >= IRC_PING_TIMEOUT_MS)
            return fail(s, IM_ACC_ERROR, -ETIMEDOUT, "ping timeout: no answer from the server for %d s",
                        (IRC_PING_IDLE_MS + IRC_PING_TIMEOUT_MS) / 1000);
    } else if (s->now - s->last_in >= IRC_PING_IDLE_MS) {
        s->ping_sent = s->now;
        int rc = sendf_now(s, "PING :imfuse");
        if (rc)
            return rc;
    }
    int rc = 0;
    if (s->phase == P_ONLINE) {
        if (!s->watch_ready && s->now - s->online_at >= IRC_WATCH_DELAY_MS)
            rc = watch_start(s);
        if (!rc && s->watch_ready && ison_due(s)) {
            bool any = false;
            for (uint32_t i = 0; i < s->n_watch && !any; i++)
                any = !s->watch[i].monitored;
            if (any)
                rc = ison_poll(s);
            else
                s->last_ison = s->now;
        }
    }
    if (!rc)
        rc = flush_queues(s);
    return rc;
}

/* The bytes the server adds in front of what we send: ":nick!user@host ". */
static size_t
prefix_len(const struct im_sess *s)
{
    size_t nl = strlen(s->nick);
    size_t ul = s->user[0] ? strlen(s->user) : 10;
    size_t hl = s->host[0] ? strlen(s->host) : 63;
    return 1 + nl + 1 + ul + 1 + hl + 1;
}

/* Length of the next piece of text (<= room) to put on one line. */
static size_t
cut(const char *p, size_t n, size_t room)
{
    if (n <= room)
        return n;
    size_t k = im_utf8_trim(p, room);
    for (size_t i = k; i > k / 2; i--)
        if (p[i - 1] == ' ')
            return i;                               /* keep the space on this piece */
    if (!k) {                                       /* never stall on a tiny room */
        k = 1;
        while (k < n && ((unsigned char)p[k] & 0xc0) == 0x80)
            k++;
    }
    return k;
}

/* Queue one PRIVMSG piece; msg is non-zero on the last piece of a message. */
static int
push_piece(struct im_sess *s, const char *target, const char *p, size_t n, bool action, uint64_t msg)
{
    char line[IRC_MAX_IN_LINE + 64];
    int w = snprintf(line, sizeof(line), action ? "PRIVMSG %s :\001ACTION %.*s\001\r\n" : "PRIVMSG %s :%.*s\r\n",
                     target, (int)n, p);
    if (w < 0 || (size_t)w >= sizeof(line))
        return -IM_ETOOBIG;
    return fifo_push(&s->msgs, line, (size_t)w, msg, 1);
}

static int
irc_send_msg(struct im_sess *s, const struct im_msg *m)
{
    if (s->phase != P_ONLINE)
        return -IM_EPROTO;
    if (!m->to.len || m->to.len > IRC_NICK_MAX)
        return -IM_EINVAL;
    char target[IRC_NICK_MAX + 1];
    memcpy(target, m->to.p, m->to.len);
    target[m->to.len] = 0;
    for (size_t i = 0; i < m->to.len; i++)
        if (!nick_char(target[i]))
            return -IM_EINVAL;

    /* A copy without the bytes a line cannot carry (CR, NUL) or that would
     * start a CTCP (\001); removing ASCII keeps it valid UTF-8. */
    char *body = malloc(m->body.len + 1);
    if (!body)
        return -ENOMEM;
    size_t n = 0;
    for (uint32_t i = 0; i < m->body.len; i++) {
        char c = m->body.p[i];
        if (c != '\r' && c != '\0' && c != 0x01)
            body[n++] = c;
    }
    size_t limit = s->linelen ? s->linelen : IRC_LINE_MAX;
    size_t fixed = prefix_len(s) + strlen("PRIVMSG ") + m->to.len + strlen(" :") + 2;
    size_t room = limit > fixed + 16 ? limit - fixed : 16;
    const char *p = body;
    bool action = n >= 4 && !memcmp(p, "/me ", 4);
    if (action) {
        p += 4;
        n -= 4;
    }
    /* Pieces are queued one behind, so that the last one carries the msg id. */
    const char *pp = NULL;
    size_t pn = 0;
    bool pact = false, have = false, first = true;
    int rc = 0;
    while (!rc && (n || (first && action))) {
        const char *nl = memchr(p, '\n', n);
        size_t ll = nl ? (size_t)(nl - p) : n;
        bool act = first && action;
        size_t r = act ? (room > 24 ? room - 9 : 16) : room;   /* "\001ACTION " + "\001" */
        const char *lp = p;
        size_t left = ll;
        while (!rc && (left || act)) {
            size_t k = cut(lp, left, r);
            if (have)
                rc = push_piece(s, target, pp, pn, pact, 0);
            pp = lp;
            pn = k;
            pact = act;
            have = true;
            lp += k;
            left -= k;
            act = false;
            r = room;
        }
        first = false;
        if (!nl)
            break;
        p = nl + 1;
        n -= ll + 1;
    }
    if (!rc && have)
        rc = push_piece(s, target, pp, pn, pact, m->msg);
    free(body);
    if (!rc && !have)                               /* nothing IRC can carry: SENT in its turn */
        rc = fifo_push(&s->msgs, "", 0, m->msg, 0);
    if (rc)
        return rc;
    rc = flush_queues(s);
    return rc < 0 && s->phase == P_DEAD ? 0 : rc;
}

static int
irc_set_watch(struct im_sess *s, const struct im_str *addresses, uint32_t n, struct im_time now)
{
    if (s->phase == P_DEAD)
        return s->rc;
    set_time(s, now);
    if (n > IRC_MAX_WATCH)
        n = IRC_MAX_WATCH;
    struct watch *nw = calloc(n + 1, sizeof(*nw));
    if (!nw)
        return -ENOMEM;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!addresses[i].len || addresses[i].len > IRC_NICK_MAX)
            continue;
        struct watch *w = &nw[k];
        memcpy(w->nick, addresses[i].p, addresses[i].len);
        w->nick[addresses[i].len] = 0;
        irc_fold(w->nick, addresses[i].len);
        bool dup = false;
        for (uint32_t j = 0; j < k && !dup; j++)
            dup = !strcmp(nw[j].nick, w->nick);
        if (dup)
            continue;
        struct watch *old = watch_find(s, w->nick, addresses[i].len);
        if (old)
            *w = *old;
        k++;
    }
    /* Nicks that left the list come off the server's MONITOR list. */
    const char **gone = calloc(s->n_watch + 1, sizeof(*gone));
    char (*gone_buf)[IRC_NICK_MAX + 1] = calloc(s->n_watch + 1, sizeof(*gone_buf));
    uint32_t n_gone = 0;
    int rc = 0;
    if (!gone || !gone_buf) {
        rc = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; i < s->n_watch; i++) {
        bool kept = false;
        for (uint32_t j = 0; j < k && !kept; j++)
            kept = !strcmp(nw[j].nick, s->watch[i].nick);
        if (!kept && s->watch[i].monitored) {
            im_strlcpy(gone_buf[n_gone], s->watch[i].nick, sizeof(gone_buf[0]));
            gone[n_gone] = gone_buf[n_gone];
            n_gone++;
        }
    }
    free(s->watch);
    s->watch = nw;
    s->n_watch = k;
    nw = NULL;
    if (s->phase == P_ONLINE && s->watch_ready) {
        if (s->has_monitor)
            rc = monitor_sync(s, gone, n_gone);
        s->ison_now = true;                         /* poll new nicks soon */
        if (!rc)
            rc = irc_tick(s, now);
    }
out:
    free(nw);
    free(gone);
    free(gone_buf);
    return rc;
}

static void
irc_logout(struct im_sess *s)
{
    if (s->phase != P_ONLINE && s->phase != P_REG)
        return;
    s->quitting = true;
    (void)sendf_now(s, "QUIT :imfuse");
}

/* For tests: lines waiting in the queues. */
size_t irc_queued_lines(const struct im_sess *s);
size_t
irc_queued_lines(const struct im_sess *s)
{
    return fifo_lines(&s->ctl) + fifo_lines(&s->msgs);
}

const struct im_proto_ops irc_ops = {
    .name = "irc",
    .default_port = 6667,
    .default_tls_port = 6697,
    .normalize_login = irc_normalize_nick,
    .normalize_address = irc_normalize_nick,
    .default_tls_name = irc_default_tls_name,
    .create = irc_create,
    .destroy = irc_destroy,
    .start = irc_start,
    .input = irc_input,
    .tls_ready = irc_tls_ready,
    .tick = irc_tick,
    .send_msg = irc_send_msg,
    .set_watch = irc_set_watch,
    .logout = irc_logout,
};
