/*
 * dp_conn.c - the backend-neutral part of dp_conn.h: output buffering,
 * watermarks, pause, close-after-flush, TLS layering and the deferred
 * callbacks run from the loop (dp_conn_run_pending).
 *
 * Connection structs are freed only by dp_conn_run_pending(), after
 * on_close, so a pointer seen during one dispatch stays valid until the
 * end of it.  Output is not written from dp_conn_write(): the connection is
 * marked and flushed once per loop turn, so many small writes coalesce into
 * one system call (and, with TLS, into full records).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_int.h"
#include "im_common.h"

/* ---- buffer chains ---------------------------------------------------------- */

static struct dp_chunk *chunk_get(struct dp_worker *w)
{
    struct dp_chunk *k = w->free_chunks;
    if (k) {
        w->free_chunks = k->next;
        w->n_free_chunks--;
    } else {
        k = malloc(sizeof(*k));
        if (!k)
            return NULL;
    }
    k->next = NULL;
    k->off = k->end = 0;
    return k;
}

static void chunk_put(struct dp_worker *w, struct dp_chunk *k)
{
    if (w->n_free_chunks >= DP_CHUNK_KEEP) {
        free(k);
        return;
    }
    k->next = w->free_chunks;
    w->free_chunks = k;
    w->n_free_chunks++;
}

int dp_chain_append(struct dp_worker *w, struct dp_chain *ch, const void *p, size_t n)
{
    const uint8_t *s = p;
    size_t room = ch->tail ? DP_CHUNK_DATA - ch->tail->end : 0;
    /* Reserve the chunks first so a failure leaves the chain untouched. */
    struct dp_chunk *extra = NULL, **link = &extra;
    for (size_t need = n > room ? n - room : 0; need > 0;) {
        struct dp_chunk *k = chunk_get(w);
        if (!k) {
            while (extra) {
                struct dp_chunk *nx = extra->next;
                chunk_put(w, extra);
                extra = nx;
            }
            return -ENOMEM;
        }
        *link = k;
        link = &k->next;
        need -= need > DP_CHUNK_DATA ? DP_CHUNK_DATA : need;
    }
    if (room > n)
        room = n;
    if (room) {
        memcpy(ch->tail->data + ch->tail->end, s, room);
        ch->tail->end += (uint32_t)room;
    }
    size_t done = room;
    for (struct dp_chunk *k = extra; k; k = k->next) {
        size_t take = n - done > DP_CHUNK_DATA ? DP_CHUNK_DATA : n - done;
        memcpy(k->data, s + done, take);
        k->end = (uint32_t)take;
        done += take;
        if (ch->tail)
            ch->tail->next = k;
        else
            ch->head = k;
        ch->tail = k;
    }
    ch->len += n;
    return 0;
}

void dp_chain_consume(struct dp_worker *w, struct dp_chain *ch, size_t n)
{
    ch->len -= n;
    while (n > 0) {
        struct dp_chunk *k = ch->head;
        size_t have = k->end - k->off;
        if (n < have) {
            k->off += (uint32_t)n;
            return;
        }
        n -= have;
        ch->head = k->next;
        if (!ch->head)
            ch->tail = NULL;
        chunk_put(w, k);
    }
    /* Keep a lone, emptied-in-place chunk from lingering half used. */
    if (ch->head && ch->head->off == ch->head->end && ch->head == ch->tail)
        ch->head->off = ch->head->end = 0;
}

size_t dp_chain_read(struct dp_worker *w, struct dp_chain *ch, void *dst, size_t n)
{
    uint8_t *d = dst;
    size_t done = 0;
    for (struct dp_chunk *k = ch->head; k && done < n; k = k->next) {
        size_t take = k->end - k->off;
        if (take > n - done)
            take = n - done;
        memcpy(d + done, k->data + k->off, take);
        done += take;
    }
    dp_chain_consume(w, ch, done);
    return done;
}

int dp_chain_iov(const struct dp_chain *ch, struct iovec *iov, int max)
{
    int i = 0;
    for (struct dp_chunk *k = ch->head; k && i < max; k = k->next) {
        if (k->end == k->off)
            continue;
        iov[i].iov_base = k->data + k->off;
        iov[i].iov_len = k->end - k->off;
        i++;
    }
    return i;
}

void dp_chain_clear(struct dp_worker *w, struct dp_chain *ch)
{
    while (ch->head) {
        struct dp_chunk *k = ch->head;
        ch->head = k->next;
        chunk_put(w, k);
    }
    ch->tail = NULL;
    ch->len = 0;
}

/* Words for a negative errno or IM_E* code, into buf. */
static const char *errtext(int rc, char *buf, size_t sz)
{
    rc = rc < 0 ? -rc : rc;
    if (rc == IM_ETLS)
        snprintf(buf, sz, "TLS failure");
    else if (rc >= IM_EBASE)
        snprintf(buf, sz, "error %d", rc);
    else
        snprintf(buf, sz, "%s", strerror_r(rc, (char[96]){0}, 96));
    return buf;
}

/* ---- connection structs ------------------------------------------------------- */

struct dp_conn *dp_conn_alloc(struct dp_worker *w)
{
    struct dp_conn *c = w->free_conns;
    if (c) {
        w->free_conns = c->next;
        w->n_free_conns--;
    } else {
        c = malloc(sizeof(*c));
        if (!c)
            return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->io.kind = DP_IO_CONN;
    c->io.fd = -1;
    c->w = w;
    c->state = DP_CS_OPEN;
    c->hiwat = DP_CONN_HIWAT;
    c->lowat = DP_CONN_LOWAT;
    c->next = w->live;
    if (w->live)
        w->live->prev = c;
    w->live = c;
    DP_STAT_ADD(w, conn_opened, 1);
    return c;
}

static void conn_free(struct dp_conn *c)
{
    struct dp_worker *w = c->w;
    if (c->tls)
        dp_tls_detach(c);
    dp_chain_clear(w, &c->out);
    dp_chain_clear(w, &c->app);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (w->n_free_conns >= DP_CONN_KEEP) {
        free(c);
        return;
    }
    c->next = w->free_conns;
    w->free_conns = c;
    w->n_free_conns++;
}

void dp_conn_mark(struct dp_conn *c, uint32_t flag)
{
    struct dp_worker *w = c->w;
    c->flags |= flag;
    if (c->flags & DP_CF_PENDING)
        return;
    c->flags |= DP_CF_PENDING;
    c->pnext = NULL;
    if (w->pend_tail)
        w->pend_tail->pnext = c;
    else
        w->pend_head = c;
    w->pend_tail = c;
}

static size_t backlog(const struct dp_conn *c)
{
    return c->out.len + c->app.len;
}

/* Whether the backend should read: reading continues while closing (input is
 * discarded) so the peer's FIN or reset is seen, and during a TLS handshake. */
static void update_read(struct dp_conn *c)
{
    bool on = c->state == DP_CS_OPEN && !(c->flags & DP_CF_EOF) &&
              (!(c->flags & DP_CF_PAUSED) || (c->flags & (DP_CF_CLOSING | DP_CF_HANDSHAKE)));
    c->w->ops->want_read(c, on);
}

/* Release the transport and schedule the owed callbacks. */
static void conn_kill(struct dp_conn *c, int reason, bool graceful)
{
    if (c->state == DP_CS_DEAD)
        return;
    c->state = DP_CS_DEAD;
    c->reason = reason;
    c->w->ops->want_write(c, false);
    c->w->ops->close(c, graceful);
    dp_chain_clear(c->w, &c->out);
    dp_chain_clear(c->w, &c->app);
    dp_conn_mark(c, 0);
}

void dp_conn_fail(struct dp_conn *c, int reason, const char *detail)
{
    if (c->state == DP_CS_DEAD)
        return;
    if ((c->flags & DP_CF_OUTBOUND) && !(c->flags & DP_CF_OPENED)) {
        c->flags |= DP_CF_REPORT_OPEN;
        c->open_status = reason;
        DP_STAT_ADD(c->w, connect_failed, 1);
    } else if (c->flags & DP_CF_STARTTLS) {
        c->flags |= DP_CF_REPORT_TLS;
        c->open_status = reason;
    }
    if (c->flags & (DP_CF_REPORT_OPEN | DP_CF_REPORT_TLS)) {
        if (detail && detail != c->detail)
            snprintf(c->detail, sizeof(c->detail), "%s", detail);
        else if (!detail)
            errtext(reason, c->detail, sizeof(c->detail));
    }
    c->flags &= ~(DP_CF_HANDSHAKE | DP_CF_STARTTLS);
    conn_kill(c, reason, false);
}

/* ---- output ------------------------------------------------------------------------- */

/* Encrypt queued plaintext while the raw backlog is modest; 0 or failure. */
static int conn_encrypt(struct dp_conn *c)
{
    while (c->app.len > 0 && c->out.len < DP_CONN_HIWAT) {
        struct dp_chunk *k = c->app.head;
        int n = dp_tls_write(c, k->data + k->off, k->end - k->off);
        if (n < 0)
            return n;
        dp_chain_consume(c->w, &c->app, (size_t)n);
    }
    if (c->app.len == 0 && (c->flags & DP_CF_CLOSING) && !(c->flags & DP_CF_NOTIFY)) {
        c->flags |= DP_CF_NOTIFY;
        dp_tls_close_notify(c);
    }
    return 0;
}

/*
 * Push the backlog into the transport, then: on_drain when owed, and the
 * end of a close-after-flush.  May run user callbacks (on_drain).
 */
static void conn_flush(struct dp_conn *c)
{
    struct dp_worker *w = c->w;
    c->flags &= ~DP_CF_FLUSH;
    if (c->state != DP_CS_OPEN)
        return;
    if (c->tls && !(c->flags & DP_CF_HANDSHAKE)) {
        int rc = conn_encrypt(c);
        if (rc < 0) {
            dp_conn_fail(c, -IM_ETLS, "TLS encryption failed");
            return;
        }
    }
    while (c->out.len > 0) {
        struct iovec iov[64];
        int cnt = dp_chain_iov(&c->out, iov, 64);
        size_t total = 0;
        for (int i = 0; i < cnt; i++)
            total += iov[i].iov_len;
        ssize_t n = w->ops->write(c, iov, cnt);
        if (n == -EAGAIN || n == 0)
            break;
        if (n < 0) {
            dp_conn_fail(c, (int)n, NULL);
            return;
        }
        DP_STAT_ADD(w, bytes_out, n);
        dp_chain_consume(w, &c->out, (size_t)n);
        /* Refill from the plaintext once the raw queue emptied. */
        if (c->out.len == 0 && c->app.len > 0 && c->tls && !(c->flags & DP_CF_HANDSHAKE)) {
            if (conn_encrypt(c) < 0) {
                dp_conn_fail(c, -IM_ETLS, "TLS encryption failed");
                return;
            }
        }
        if ((size_t)n < total)      /* short write: the transport is full */
            break;
    }
    w->ops->want_write(c, c->out.len > 0);
    if ((c->flags & DP_CF_HIWAT) && backlog(c) < c->lowat) {
        c->flags &= ~DP_CF_HIWAT;
        if (c->cb.on_drain && !(c->flags & DP_CF_CLOSING))
            c->cb.on_drain(c);
        if (c->state != DP_CS_OPEN)
            return;
    }
    if ((c->flags & DP_CF_CLOSING) && !(c->flags & DP_CF_HANDSHAKE) && backlog(c) == 0) {
        if (c->tls && !(c->flags & DP_CF_NOTIFY)) {
            dp_conn_mark(c, DP_CF_FLUSH);   /* conn_encrypt queues the close_notify */
            return;
        }
        conn_kill(c, 0, true);
    }
}

int dp_conn_write(struct dp_conn *c, const void *p, size_t n)
{
    if (c->state == DP_CS_DEAD || (c->flags & DP_CF_CLOSING))
        return -ENOTCONN;
    if (backlog(c) + n > DP_CONN_MAXBUF)
        return -ENOBUFS;
    /* Clear until TLS starts; plaintext for the TLS layer after. */
    struct dp_chain *ch = c->tls ? &c->app : &c->out;
    if (n > 0) {
        if (dp_chain_append(c->w, ch, p, n) < 0)
            return -ENOBUFS;
        if (c->state == DP_CS_OPEN)
            dp_conn_mark(c, DP_CF_FLUSH);
    }
    if (backlog(c) > c->hiwat) {
        c->flags |= DP_CF_HIWAT;
        return 1;
    }
    return 0;
}

size_t dp_conn_backlog(const struct dp_conn *c)
{
    return backlog(c);
}

void dp_conn_set_watermarks(struct dp_conn *c, size_t hiwat, size_t lowat)
{
    if (hiwat > DP_CONN_MAXBUF)
        hiwat = DP_CONN_MAXBUF;
    if (lowat >= hiwat)
        lowat = hiwat / 2;
    c->hiwat = (uint32_t)hiwat;
    c->lowat = (uint32_t)lowat;
    /* Already past the new mark: on_drain is owed when it falls below lowat. */
    if (backlog(c) > c->hiwat)
        c->flags |= DP_CF_HIWAT;
    else if ((c->flags & DP_CF_HIWAT) && backlog(c) < c->lowat && c->state == DP_CS_OPEN)
        dp_conn_mark(c, DP_CF_FLUSH);   /* conn_flush delivers the owed on_drain */
}

int dp_conn_keepalive(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt)
{
    if (c->state != DP_CS_OPEN)
        return -ENOTCONN;
    if (!c->w->ops->keepalive)
        return -EOPNOTSUPP;
    if (idle_s && (!intvl_s || !cnt))
        return -EINVAL;
    return c->w->ops->keepalive(c, idle_s, intvl_s, cnt);
}

/* ---- input ------------------------------------------------------------------------- */

/* The peer finished and nothing more is buffered: flush what is queued, then close. */
static void conn_peer_done(struct dp_conn *c)
{
    if (c->state != DP_CS_OPEN)
        return;
    c->flags |= DP_CF_CLOSING;
    update_read(c);
    dp_conn_mark(c, DP_CF_FLUSH);
}

static void tls_failed(struct dp_conn *c, int rc)
{
    DP_STAT_ADD(c->w, tls_failed, 1);
    /* An alert mbedTLS queued goes out on a best-effort basis before the close. */
    if (c->out.len > 0) {
        struct iovec iov[4];
        int cnt = dp_chain_iov(&c->out, iov, 4);
        (void)c->w->ops->write(c, iov, cnt);
    }
    dp_conn_fail(c, rc, c->detail);
}

/* Run the TLS layer over buffered ciphertext: handshake, then plaintext to on_data. */
static void conn_tls_input(struct dp_conn *c)
{
    c->flags &= ~DP_CF_INPUT;
    if (c->flags & DP_CF_HANDSHAKE) {
        int rc = dp_tls_handshake(c);
        if (c->out.len > 0)
            dp_conn_mark(c, DP_CF_FLUSH);
        if (rc == -EAGAIN)
            return;
        if (rc < 0) {
            tls_failed(c, rc);
            return;
        }
        DP_STAT_ADD(c->w, tls_ok, 1);
        c->flags &= ~DP_CF_HANDSHAKE;
        update_read(c);
        if (c->app.len > 0 || (c->flags & DP_CF_CLOSING))
            dp_conn_mark(c, DP_CF_FLUSH);
        if (c->flags & DP_CF_STARTTLS) {
            c->flags &= ~DP_CF_STARTTLS;
            if (c->cb.on_tls)
                c->cb.on_tls(c, 0, NULL);
        } else if ((c->flags & DP_CF_OUTBOUND) && !(c->flags & DP_CF_OPENED)) {
            c->flags |= DP_CF_OPENED;
            if (c->cb.on_open)
                c->cb.on_open(c, 0, NULL);
        }
        if (c->state != DP_CS_OPEN)
            return;
    }
    while (c->state == DP_CS_OPEN && !(c->flags & (DP_CF_PAUSED | DP_CF_HANDSHAKE))) {
        int n = dp_tls_read(c, c->w->tbuf, DP_TBUF_SIZE);
        if (n == -EAGAIN)
            break;
        if (n == 0) {           /* close_notify */
            c->flags |= DP_CF_EOF;
            break;
        }
        if (n < 0) {
            dp_conn_fail(c, -IM_ETLS, c->detail);
            return;
        }
        if (!(c->flags & DP_CF_CLOSING) && c->cb.on_data)
            c->cb.on_data(c, c->w->tbuf, (size_t)n);
    }
    if (c->state == DP_CS_OPEN && (c->flags & DP_CF_EOF) &&
        ((c->flags & DP_CF_CLOSING) || !(c->flags & DP_CF_PAUSED) || !dp_tls_has_input(c)))
        conn_peer_done(c);
}

void dp_conn_io_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    if (c->state != DP_CS_OPEN)
        return;
    DP_STAT_ADD(c->w, bytes_in, n);
    if (c->tls) {
        if (dp_tls_input(c, p, n) < 0) {
            dp_conn_fail(c, -ENOMEM, "out of memory");
            return;
        }
        conn_tls_input(c);
        return;
    }
    if (!(c->flags & DP_CF_CLOSING) && c->cb.on_data)
        c->cb.on_data(c, p, n);
}

void dp_conn_io_eof(struct dp_conn *c, int reason)
{
    if (c->state != DP_CS_OPEN)
        return;
    if (c->flags & DP_CF_HANDSHAKE) {
        DP_STAT_ADD(c->w, tls_failed, 1);
        dp_conn_fail(c, reason < 0 ? reason : -ECONNRESET,
                     "connection closed during the TLS handshake");
        return;
    }
    if (reason < 0) {
        dp_conn_fail(c, reason, NULL);
        return;
    }
    c->flags |= DP_CF_EOF;
    update_read(c);
    /* Paused TLS input still buffered is delivered on resume before the close. */
    if (c->tls && (c->flags & DP_CF_PAUSED) && dp_tls_has_input(c))
        return;
    conn_peer_done(c);
}

void dp_conn_io_writable(struct dp_conn *c)
{
    if (c->state == DP_CS_OPEN)
        conn_flush(c);
}

/* TCP is up: start the TLS client or report the open. */
void dp_conn_io_connected(struct dp_conn *c, int status, const char *detail)
{
    if (c->state != DP_CS_CONNECTING)
        return;
    if (status < 0) {
        c->state = DP_CS_OPEN;      /* so dp_conn_fail releases it */
        dp_conn_fail(c, status, detail);
        return;
    }
    c->state = DP_CS_OPEN;
    update_read(c);
    if (c->tls) {
        int rc = dp_tls_handshake(c);   /* queues the ClientHello */
        if (rc < 0 && rc != -EAGAIN) {
            tls_failed(c, rc);
            return;
        }
        dp_conn_mark(c, DP_CF_FLUSH);
        return;
    }
    c->flags |= DP_CF_OPENED;
    if (backlog(c) > 0)
        dp_conn_mark(c, DP_CF_FLUSH);
    if (c->cb.on_open)
        c->cb.on_open(c, 0, NULL);
}

void dp_listener_io_accept(struct dp_listener *l, struct dp_conn *c)
{
    if (l->tls) {
        if (dp_tls_attach(c, true, NULL) < 0) {
            DP_STAT_ADD(c->w, tls_failed, 1);
            conn_kill(c, -IM_ETLS, false);
        } else {
            c->flags |= DP_CF_HANDSHAKE;
        }
    }
    update_read(c);
    l->on_accept(l->ud, c);
}

/* ---- the pending list ---------------------------------------------------------------- */

static void conn_report_dead(struct dp_conn *c)
{
    c->flags |= DP_CF_CLOSED_CB;
    if ((c->flags & DP_CF_REPORT_OPEN) && c->cb.on_open)
        c->cb.on_open(c, c->open_status, c->detail);
    if ((c->flags & DP_CF_REPORT_TLS) && c->cb.on_tls)
        c->cb.on_tls(c, c->open_status, c->detail);
    DP_STAT_ADD(c->w, conn_closed, 1);
    if (c->cb.on_close)
        c->cb.on_close(c, c->reason);
    conn_free(c);
}

void dp_conn_run_pending(struct dp_worker *w)
{
    struct dp_conn *c = w->pend_head;
    w->pend_head = w->pend_tail = NULL;
    while (c) {
        struct dp_conn *next = c->pnext;
        c->flags &= ~DP_CF_PENDING;
        if (c->state == DP_CS_DEAD) {
            if (!(c->flags & DP_CF_CLOSED_CB))
                conn_report_dead(c);
        } else if (c->state == DP_CS_OPEN) {
            if (c->state == DP_CS_OPEN && (c->flags & DP_CF_INPUT) && c->tls)
                conn_tls_input(c);
            if (c->state == DP_CS_OPEN && (c->flags & DP_CF_FLUSH))
                conn_flush(c);
        }
        c = next;
    }
}

void dp_conn_shutdown_all(struct dp_worker *w)
{
    for (struct dp_conn *c = w->live; c; c = c->next)
        if (c->state != DP_CS_DEAD)
            conn_kill(c, -ECANCELED, false);
    while (w->pend_head)
        dp_conn_run_pending(w);
    while (w->free_conns) {
        struct dp_conn *c = w->free_conns;
        w->free_conns = c->next;
        free(c);
    }
    w->n_free_conns = 0;
    while (w->free_chunks) {
        struct dp_chunk *k = w->free_chunks;
        w->free_chunks = k->next;
        free(k);
    }
    w->n_free_chunks = 0;
}

/* ---- the API ------------------------------------------------------------------------- */

struct dp_conn *dp_conn_connect(struct dp_worker *w, const char *host, uint16_t port,
                                const char *tls_name, const struct dp_conn_cb *cb, void *ud,
                                int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    if (!w || !host || !cb || port == 0 || (tls_name && !*tls_name)) {
        *err = -EINVAL;
        return NULL;
    }
    struct dp_conn *c = dp_conn_alloc(w);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    c->cb = *cb;
    c->ud = ud;
    c->flags |= DP_CF_OUTBOUND;
    c->state = DP_CS_CONNECTING;
    if (tls_name) {
        if (dp_tls_attach(c, false, tls_name) < 0) {
            c->state = DP_CS_OPEN;
            DP_STAT_ADD(w, tls_failed, 1);
            dp_conn_fail(c, -IM_ETLS, c->detail);
            return c;
        }
        c->flags |= DP_CF_HANDSHAKE;
    }
    int rc = w->ops->connect(c, host, port);
    if (rc < 0) {
        c->state = DP_CS_OPEN;
        dp_conn_fail(c, rc, c->detail[0] ? c->detail : NULL);
    }
    return c;
}

void dp_conn_set_cb(struct dp_conn *c, const struct dp_conn_cb *cb, void *ud)
{
    c->cb = *cb;
    c->ud = ud;
}

void *dp_conn_ud(const struct dp_conn *c)
{
    return c->ud;
}

struct dp_worker *dp_conn_worker(const struct dp_conn *c)
{
    return c->w;
}

void dp_conn_pause(struct dp_conn *c, bool paused)
{
    if (c->state == DP_CS_DEAD || paused == !!(c->flags & DP_CF_PAUSED))
        return;
    if (paused)
        c->flags |= DP_CF_PAUSED;
    else
        c->flags &= ~DP_CF_PAUSED;
    if (c->state != DP_CS_OPEN)
        return;
    update_read(c);
    if (!paused && c->tls && (dp_tls_has_input(c) || (c->flags & DP_CF_EOF)))
        dp_conn_mark(c, DP_CF_INPUT);
}

static int start_tls(struct dp_conn *c, bool server, const char *name)
{
    if (c->state != DP_CS_OPEN || (c->flags & DP_CF_CLOSING))
        return -ENOTCONN;
    if (c->tls)
        return -EALREADY;
    if (!server && (!name || !*name))
        return -EINVAL;
    if (dp_tls_attach(c, server, name) < 0)
        return server ? -EINVAL : -IM_ETLS;
    c->flags |= DP_CF_HANDSHAKE | DP_CF_STARTTLS;
    update_read(c);
    if (!server) {
        int rc = dp_tls_handshake(c);   /* queues the ClientHello after the clear bytes */
        if (rc < 0 && rc != -EAGAIN) {
            tls_failed(c, rc);
            return 0;   /* on_tls reports it */
        }
    }
    dp_conn_mark(c, DP_CF_FLUSH);
    return 0;
}

int dp_conn_start_tls_client(struct dp_conn *c, const char *tls_name)
{
    return start_tls(c, false, tls_name);
}

int dp_conn_start_tls_server(struct dp_conn *c)
{
    if (!dp_tls_have_server(c->w))
        return -EINVAL;
    return start_tls(c, true, NULL);
}

void dp_conn_close(struct dp_conn *c)
{
    if (c->state == DP_CS_DEAD || (c->flags & DP_CF_CLOSING))
        return;
    if (c->state == DP_CS_CONNECTING) {
        conn_kill(c, 0, false);
        return;
    }
    c->flags |= DP_CF_CLOSING;
    update_read(c);
    dp_conn_mark(c, DP_CF_FLUSH);
}

void dp_conn_abort(struct dp_conn *c, int reason)
{
    if (c->state == DP_CS_DEAD)
        return;
    conn_kill(c, reason, false);
}

const char *dp_conn_peer(const struct dp_conn *c)
{
    return c->peer;
}

const char *dp_conn_local(const struct dp_conn *c)
{
    return c->local;
}

bool dp_conn_is_tls(const struct dp_conn *c)
{
    return c->tls != NULL;
}
