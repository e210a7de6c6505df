/*
 * dp_worker.c - the worker object and its run-to-completion loop
 * (dp_worker.h), the backend registry and the listener API of dp_conn.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_int.h"

/* Every backend built in; the loop and dp_conn.c never name one. */
static const struct dp_io_ops *const dp_backends[] = {
    &dp_io_kernel_ops,
    &dp_io_dpdk_ops,
};

/* The loop's view of the monotonic time until the next turn. */
static void read_clock(struct dp_worker *w)
{
    w->now_ms = w->clock->mono_ms(w->clock->ud);
}

struct dp_worker *dp_worker_new(const struct dp_worker_cfg *cfg, char *why, size_t whysz)
{
    char dummy[8];
    if (!why) {
        why = dummy;
        whysz = sizeof(dummy);
    }
    const char *io = cfg->io && *cfg->io ? cfg->io : "kernel";
    const struct dp_io_ops *ops = NULL;
    for (size_t i = 0; i < sizeof(dp_backends) / sizeof(dp_backends[0]); i++)
        if (!strcmp(dp_backends[i]->name, io))
            ops = dp_backends[i];
    if (!ops) {
        snprintf(why, whysz, "unknown I/O backend \"%s\" (kernel or dpdk)", io);
        return NULL;
    }
    struct dp_worker *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(why, whysz, "out of memory");
        return NULL;
    }
    w->id = cfg->id;
    w->ops = ops;
    atomic_init(&w->stop, false);
    w->clock = cfg->clock ? cfg->clock : &im_clock_default;
    read_clock(w);
    w->next_tick_ms = w->now_ms + DP_TICK_MS;
    w->rbuf = malloc(DP_RBUF_SIZE);
    w->tbuf = malloc(DP_TBUF_SIZE);
    if (!w->rbuf || !w->tbuf) {
        snprintf(why, whysz, "out of memory");
        goto fail;
    }
    if (dp_tls_ctx_new(w, cfg, why, whysz) < 0)
        goto fail;
    if (ops->init(w, why, whysz) < 0) {
        w->ops = NULL;
        goto fail;
    }
    return w;
fail:
    dp_worker_free(w);
    return NULL;
}

static void free_dead_listeners(struct dp_worker *w, bool all)
{
    for (struct dp_listener **pl = &w->listeners; *pl;) {
        struct dp_listener *l = *pl;
        if (l->dead || all) {
            if (!l->dead)
                w->ops->unlisten(l);
            *pl = l->next;
            free(l);
        } else {
            pl = &l->next;
        }
    }
}

void dp_worker_free(struct dp_worker *w)
{
    if (!w)
        return;
    if (w->ops) {
        free_dead_listeners(w, true);
        dp_conn_shutdown_all(w);
        w->ops->fini(w);
    }
    dp_tls_ctx_free(w);
    free(w->rbuf);
    free(w->tbuf);
    free(w);
}

void dp_worker_set_hooks(struct dp_worker *w, dp_poll_fn *poll, dp_tick_fn *tick, void *ud)
{
    w->poll_hook = poll;
    w->tick_hook = tick;
    w->hook_ud = ud;
}

void dp_worker_wake(struct dp_worker *w)
{
    w->ops->wake(w);
}

int dp_worker_run_once(struct dp_worker *w, int max_wait_ms)
{
    uint64_t now = w->clock->mono_ms(w->clock->ud);
    int timeout = max_wait_ms;
    if (w->pend_head)
        timeout = 0;
    if (w->tick_hook) {
        uint64_t left = w->next_tick_ms > now ? w->next_tick_ms - now : 0;
        if (timeout < 0 || (uint64_t)timeout > left)
            timeout = (int)left;
    }
    if (timeout < 0 || timeout > DP_TICK_MS)
        timeout = DP_TICK_MS;
    w->ops->poll(w, timeout);
    read_clock(w);
    dp_conn_run_pending(w);
    free_dead_listeners(w, false);
    if (w->poll_hook)
        w->poll_hook(w->hook_ud);
    if (w->now_ms >= w->next_tick_ms) {
        w->next_tick_ms = w->now_ms + DP_TICK_MS;
        if (w->tick_hook)
            w->tick_hook(w->hook_ud, w->now_ms);
    }
    return 0;
}

int dp_worker_run(struct dp_worker *w)
{
    while (!atomic_load_explicit(&w->stop, memory_order_acquire))
        dp_worker_run_once(w, DP_TICK_MS);
    atomic_store_explicit(&w->stop, false, memory_order_relaxed);
    return 0;
}

void dp_worker_stop(struct dp_worker *w)
{
    atomic_store_explicit(&w->stop, true, memory_order_release);
    w->ops->wake(w);
}

uint64_t dp_worker_now(const struct dp_worker *w)
{
    return w->now_ms;
}

struct im_time dp_worker_time(const struct dp_worker *w)
{
    return im_clock_read(w->clock);
}

unsigned dp_worker_id(const struct dp_worker *w)
{
    return w->id;
}

void dp_worker_stats(const struct dp_worker *w, struct dp_stats *out)
{
    const struct dp_stats_live *s = &w->stats;
#define DP_LOAD(f) out->f = atomic_load_explicit(&((struct dp_stats_live *)(uintptr_t)s)->f, \
                                                 memory_order_relaxed)
    DP_LOAD(conn_opened);
    DP_LOAD(conn_closed);
    DP_LOAD(connect_failed);
    DP_LOAD(bytes_in);
    DP_LOAD(bytes_out);
    DP_LOAD(tls_ok);
    DP_LOAD(tls_failed);
    DP_LOAD(accept_paused);
    DP_LOAD(io_pkts_in);
    DP_LOAD(io_pkts_out);
    DP_LOAD(io_bytes_in);
    DP_LOAD(io_bytes_out);
    DP_LOAD(io_drop_bad);
    DP_LOAD(io_drop_tx);
    DP_LOAD(io_drop_nombuf);
    DP_LOAD(io_nic_missed);
    DP_LOAD(io_nic_errors);
    DP_LOAD(io_nic_nombuf);
    DP_LOAD(io_sleeps);
    DP_LOAD(io_busy_cycles);
    DP_LOAD(io_busy_turns);
    DP_LOAD(tcp_open);
    DP_LOAD(tcp_retransmits);
    DP_LOAD(tcp_refused);
    DP_LOAD(tcp_drops);
#undef DP_LOAD
}

void dp_stats_add(struct dp_stats *a, const struct dp_stats *b)
{
    a->conn_opened += b->conn_opened;
    a->conn_closed += b->conn_closed;
    a->connect_failed += b->connect_failed;
    a->bytes_in += b->bytes_in;
    a->bytes_out += b->bytes_out;
    a->tls_ok += b->tls_ok;
    a->tls_failed += b->tls_failed;
    a->accept_paused += b->accept_paused;
    a->io_pkts_in += b->io_pkts_in;
    a->io_pkts_out += b->io_pkts_out;
    a->io_bytes_in += b->io_bytes_in;
    a->io_bytes_out += b->io_bytes_out;
    a->io_drop_bad += b->io_drop_bad;
    a->io_drop_tx += b->io_drop_tx;
    a->io_drop_nombuf += b->io_drop_nombuf;
    a->io_nic_missed += b->io_nic_missed;
    a->io_nic_errors += b->io_nic_errors;
    a->io_nic_nombuf += b->io_nic_nombuf;
    a->io_sleeps += b->io_sleeps;
    a->io_busy_cycles += b->io_busy_cycles;
    a->io_busy_turns += b->io_busy_turns;
    a->tcp_open += b->tcp_open;
    a->tcp_retransmits += b->tcp_retransmits;
    a->tcp_refused += b->tcp_refused;
    a->tcp_drops += b->tcp_drops;
}

/* ---- listeners ------------------------------------------------------------ */

struct dp_listener *dp_listen(struct dp_worker *w, const char *host, uint16_t port, bool tls,
                              dp_accept_fn *on_accept, void *ud, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    if (!w || !host || !on_accept) {
        *err = -EINVAL;
        return NULL;
    }
    if (tls && !dp_tls_have_server(w)) {
        *err = -EINVAL;
        return NULL;
    }
    struct dp_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        *err = -ENOMEM;
        return NULL;
    }
    l->io.kind = DP_IO_LISTENER;
    l->io.fd = -1;
    l->w = w;
    l->tls = tls;
    l->on_accept = on_accept;
    l->ud = ud;
    int rc = w->ops->listen(l, host, port);
    if (rc < 0) {
        free(l);
        *err = rc;
        return NULL;
    }
    l->next = w->listeners;
    w->listeners = l;
    return l;
}

void dp_listener_close(struct dp_listener *l)
{
    if (!l || l->dead)
        return;
    l->w->ops->unlisten(l);
    l->dead = true;     /* freed by the loop: this may run inside its own on_accept */
}

uint16_t dp_listener_port(const struct dp_listener *l)
{
    return l->port;
}
