/*
 * bench_xmpp.c - xmpp_ops on a dp_conn for imfuse-bench (bench_xmpp.h).
 *
 * The glue between the adapter's hooks and the connection: bytes both ways,
 * STARTTLS on IM_EV_STARTTLS, every message committed at once (the bench
 * stores nothing, so XEP-0198 acknowledgements are not held back), the
 * adapter's time passed in from the wall clock as the relay does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_xmpp.h"
#include "dp_conn.h"
#include "im_common.h"
#include "im_proto.h"

struct bench_xmpp {
    const struct im_proto_ops *ops;
    struct im_sess *sess;
    struct dp_conn *conn;
    struct im_account_cfg cfg;
    struct im_option opt;
    struct im_io io;
    char *jid, *password, *host, *resource, *domain;
    const struct bench_xmpp_cb *cb;
    void *ud;
    bool online, closing;
    char why[256];
};

static void
x_free(struct bench_xmpp *x)
{
    if (x->sess)
        x->ops->destroy(x->sess);
    free(x->jid);
    free(x->password);
    free(x->host);
    free(x->resource);
    free(x->domain);
    free(x);
}

/* Record why the session ends (the first reason wins) and drop the connection. */
static void
x_fail(struct bench_xmpp *x, int rc, const char *why)
{
    if (!x->why[0])
        snprintf(x->why, sizeof(x->why), "%s", why && *why ? why : im_strerror(rc));
    if (x->conn)
        dp_conn_abort(x->conn, rc);
}

static int
x_out(void *ud, const void *p, size_t n)
{
    struct bench_xmpp *x = ud;
    if (!x->conn)
        return -ENOTCONN;
    int rc = dp_conn_write(x->conn, p, n);
    return rc < 0 ? rc : 0;
}

static const char *
x_local(void *ud)
{
    struct bench_xmpp *x = ud;
    return x->conn ? dp_conn_local(x->conn) : "";
}

static void
x_event(void *ud, const struct im_event *ev)
{
    struct bench_xmpp *x = ud;

    switch (ev->type) {
    case IM_EV_STATE:
        if (ev->u.state.state == IM_ACC_ONLINE) {
            x->online = true;
            if (x->cb->online)
                x->cb->online(x->ud);
        } else if (ev->u.state.state == IM_ACC_AUTH_FAILED || ev->u.state.state == IM_ACC_ERROR) {
            snprintf(x->why, sizeof(x->why), "%s: %s: %.*s", x->jid,
                     im_account_state_name(ev->u.state.state),
                     (int)ev->u.state.detail.len, ev->u.state.detail.p);
        }
        break;
    case IM_EV_STARTTLS:
        if (dp_conn_start_tls_client(x->conn, x->domain) < 0)
            x_fail(x, -IM_ETLS, "cannot start TLS");
        break;
    case IM_EV_MESSAGE:
        if (x->cb->message)
            x->cb->message(x->ud, ev->u.message.body.p, ev->u.message.body.len);
        if (ev->u.message.token && x->sess)
            x->ops->committed(x->sess, ev->u.message.token);
        break;
    default:
        break;
    }
}

static void
x_on_open(struct dp_conn *c, int status, const char *detail)
{
    struct bench_xmpp *x = dp_conn_ud(c);
    if (status < 0) {
        char d[200];
        if (detail && *detail)
            snprintf(d, sizeof(d), "%s", detail);
        else
            snprintf(d, sizeof(d), "cannot connect to %s:%u: %s", x->host, x->cfg.port,
                     im_strerror(status));
        x_fail(x, status, d);
        return;
    }
    int rc = x->ops->start(x->sess, im_clock_read(NULL));
    if (rc < 0)
        x_fail(x, rc, NULL);
}

static void
x_on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct bench_xmpp *x = dp_conn_ud(c);
    if (!x->sess || x->closing)
        return;
    int rc = x->ops->input(x->sess, p, n, im_clock_read(NULL));
    if (rc < 0)
        x_fail(x, rc, NULL);
}

static void
x_on_tls(struct dp_conn *c, int status, const char *detail)
{
    struct bench_xmpp *x = dp_conn_ud(c);
    if (status < 0) {
        char d[200];
        snprintf(d, sizeof(d), "TLS failed: %s", detail && *detail ? detail : im_strerror(status));
        x_fail(x, status, d);
        return;
    }
    int rc = x->ops->tls_ready(x->sess, 0, im_clock_read(NULL));
    if (rc < 0)
        x_fail(x, rc, NULL);
}

static void
x_on_close(struct dp_conn *c, int reason)
{
    struct bench_xmpp *x = dp_conn_ud(c);
    x->conn = NULL;
    x->online = false;
    if (x->closing) {
        if (x->cb->down)
            x->cb->down(x->ud, NULL);
        x_free(x);
        return;
    }
    if (!x->why[0])
        snprintf(x->why, sizeof(x->why), "%s: connection closed%s%s", x->jid,
                 reason ? ": " : " by the server", reason ? im_strerror(reason) : "");
    if (x->cb->down)
        x->cb->down(x->ud, x->why);
}

static const struct dp_conn_cb x_conn_cb = {
    .on_open = x_on_open,
    .on_data = x_on_data,
    .on_tls = x_on_tls,
    .on_close = x_on_close,
};

struct bench_xmpp *
bench_xmpp_open(struct dp_worker *w, const struct bench_xmpp_cfg *cfg,
                const struct bench_xmpp_cb *cb, void *ud, int *err)
{
    struct bench_xmpp *x = calloc(1, sizeof(*x));
    const char *at = strchr(cfg->jid, '@');
    if (!x || !at) {
        free(x);
        *err = x ? -IM_EINVAL : -ENOMEM;
        return NULL;
    }
    x->ops = im_proto_find("xmpp");
    x->jid = strdup(cfg->jid);
    x->password = strdup(cfg->password);
    x->host = strdup(cfg->host);
    x->resource = strdup(cfg->resource ? cfg->resource : "bench");
    x->domain = strdup(at + 1);
    x->cb = cb;
    x->ud = ud;
    if (!x->ops || !x->jid || !x->password || !x->host || !x->resource || !x->domain) {
        x_free(x);
        *err = -ENOMEM;
        return NULL;
    }
    x->opt = (struct im_option){ "resource", x->resource };
    x->cfg = (struct im_account_cfg){
        .account = 0, .login = x->jid, .password = x->password, .host = x->host,
        .port = cfg->port, .tls = IM_TLS_STARTTLS, .tls_name = x->domain,
        .options = &x->opt, .n_options = 1,
    };
    x->io = (struct im_io){ .out = x_out, .event = x_event, .local_addr = x_local, .ud = x };
    x->sess = x->ops->create(&x->cfg, &x->io);
    if (!x->sess) {
        x_free(x);
        *err = -ENOMEM;
        return NULL;
    }
    x->conn = dp_conn_connect(w, x->host, x->cfg.port, NULL, &x_conn_cb, x, err);
    if (!x->conn) {
        x_free(x);
        return NULL;
    }
    return x;
}

int
bench_xmpp_send(struct bench_xmpp *x, const char *to, const char *body, size_t len)
{
    if (!x->online || !x->sess)
        return -ENOTCONN;
    struct im_msg m = {
        .msg = 1,
        .to = { to, (uint32_t)strlen(to) },
        .body = { body, (uint32_t)len },
    };
    int rc = x->ops->send_msg(x->sess, &m);
    if (rc < 0)
        x_fail(x, rc, NULL);
    return rc;
}

void
bench_xmpp_tick(struct bench_xmpp *x)
{
    if (!x->conn || !x->sess || x->closing)
        return;
    int rc = x->ops->tick(x->sess, im_clock_read(NULL));
    if (rc < 0)
        x_fail(x, rc, NULL);
}

bool
bench_xmpp_busy(const struct bench_xmpp *x)
{
    return x->conn && dp_conn_backlog(x->conn) > DP_CONN_HIWAT;
}

void
bench_xmpp_close(struct bench_xmpp *x)
{
    if (!x)
        return;
    if (!x->conn) {
        if (x->cb->down)
            x->cb->down(x->ud, NULL);
        x_free(x);
        return;
    }
    x->closing = true;
    if (x->online && x->sess && x->ops->logout)
        x->ops->logout(x->sess);
    x->online = false;
    dp_conn_close(x->conn);     /* x is freed by x_on_close */
}
