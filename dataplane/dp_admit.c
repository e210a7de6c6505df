/*
 * dp_admit.c - admission of client connections, the policy both I/O
 * backends share (the backends only carry it out: keepalive, watermarks):
 *
 *   max-conns              client connections at once
 *   max-conns-per-address  from one address (IPv6: one /64)
 *   prelogin-timeout       a connection not logged in by then is closed
 *   prelogin-memory        the receive buffers of all connections not
 *                          logged in; past it the largest partial frame's
 *                          connection is closed
 *   idle-timeout           a logged-in connection silent that long is closed
 *                          (off by default: keepalive finds dead peers)
 *
 * Every refusal and close for a limit sends {op: error, code: limit} without
 * id (dp_client_limit_close), is counted (dp_relay.h) and logged, at most
 * once per DP_LOG_EVERY_MS per limit.  Clients not logged in are kept on a
 * list in deadline order (one timeout for all: appending keeps it sorted),
 * so the tick looks only at those due.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_worker.h"
#include "dp_relay_int.h"

#define DP_SWEEP_MS         1000        /* idle and closing clients are looked at this often */

/* The connections of one address. */
struct dp_addr {
    struct dp_addr *next;
    uint8_t key[16];
    uint32_t n;
};

/* The peer's address as a key: IPv4 as v4-mapped, IPv6 by its /64. */
static void
addr_key(const char *peer, uint8_t key[16])
{
    char buf[64];
    const char *p = peer, *end;
    size_t n;
    struct in6_addr a6;
    struct in_addr a4;

    memset(key, 0, 16);
    if (*p == '[') {
        p++;
        end = strchr(p, ']');
    } else {
        end = strrchr(p, ':');
    }
    n = end ? (size_t)(end - p) : strlen(p);
    if (n >= sizeof(buf))
        n = sizeof(buf) - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    if (inet_pton(AF_INET, buf, &a4) == 1) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &a4, 4);
    } else if (inet_pton(AF_INET6, buf, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6)) {
            memcpy(key, &a6, 16);
        } else {
            memcpy(key, &a6, 8);
            key[15] = 6;                /* not a v4-mapped key */
        }
    } else {
        /* not an address (cannot happen with the backends): the text's hash */
        uint64_t h = 1469598103934665603ULL;
        for (size_t i = 0; i < n; i++)
            h = (h ^ (uint8_t)buf[i]) * 1099511628211ULL;
        memcpy(key, &h, 8);
        key[15] = 0xee;
    }
}

static unsigned
addr_hash(const uint8_t key[16])
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 1099511628211ULL;
    return (unsigned)(h & (DP_HASH_BUCKETS - 1));
}

static struct dp_addr *
addr_get(struct dp_relay *r, const uint8_t key[16])
{
    unsigned h = addr_hash(key);
    for (struct dp_addr *a = r->addrs[h]; a; a = a->next)
        if (!memcmp(a->key, key, 16))
            return a;
    struct dp_addr *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    memcpy(a->key, key, 16);
    a->next = r->addrs[h];
    r->addrs[h] = a;
    return a;
}

static void
addr_put(struct dp_relay *r, struct dp_addr *a)
{
    if (--a->n > 0)
        return;
    struct dp_addr **pp = &r->addrs[addr_hash(a->key)];
    while (*pp != a)
        pp = &(*pp)->next;
    *pp = a->next;
    free(a);
}

/* A log line for limit k, at most once per DP_LOG_EVERY_MS. */
static void __attribute__((format(printf, 4, 5)))
admit_log(struct dp_relay *r, enum dp_admit_log k, int level, const char *fmt, ...)
{
    uint64_t now = dp_worker_now(r->w);
    if (r->log_at[k] && now - r->log_at[k] < DP_LOG_EVERY_MS)
        return;
    r->log_at[k] = now;
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    DP_LOG(level, "%s", line);
}

#define STAT_SET(r, f, v) atomic_store_explicit(&(r)->st.f, (uint64_t)(v), memory_order_relaxed)

/* ---- the pre-login list and budget ------------------------------------------ */

static void
pre_add(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    uint64_t now = dp_worker_now(r->w);
    cl->deadline = r->lim.prelogin_timeout_ms ? now + r->lim.prelogin_timeout_ms : UINT64_MAX;
    cl->pnext = NULL;
    cl->pprev = r->pre_tail;
    if (r->pre_tail)
        r->pre_tail->pnext = cl;
    else
        r->pre_head = cl;
    r->pre_tail = cl;
    cl->prelogin = true;
    cl->rx_counted = cl->rx_cap;
    r->pre_bytes += cl->rx_counted;
    STAT_SET(r, prelogin_bytes, r->pre_bytes);
    STAT_ADD(r, clients_prelogin, 1);
    /* Little unread output before login: reading stops early. */
    dp_conn_set_watermarks(cl->c, DP_PRELOGIN_HIWAT, DP_PRELOGIN_LOWAT);
}

static void
pre_del(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    if (!cl->prelogin)
        return;
    if (cl->pprev)
        cl->pprev->pnext = cl->pnext;
    else
        r->pre_head = cl->pnext;
    if (cl->pnext)
        cl->pnext->pprev = cl->pprev;
    else
        r->pre_tail = cl->pprev;
    cl->pnext = cl->pprev = NULL;
    cl->prelogin = false;
    r->pre_bytes -= cl->rx_counted;
    cl->rx_counted = 0;
    STAT_SET(r, prelogin_bytes, r->pre_bytes);
    STAT_SUB(r, clients_prelogin, 1);
}

bool
dp_admit_accept(struct dp_client *cl, const char **why)
{
    struct dp_relay *r = cl->r;
    const struct dp_client_limits *l = &r->lim;
    const char *peer = dp_conn_peer(cl->c);
    uint8_t key[16];

    if (l->max_conns && r->n_clients >= l->max_conns) {
        STAT_ADD(r, refused_max_conns, 1);
        admit_log(r, DP_ALOG_MAX_CONNS, IM_LOG_WARN,
                  "client connections: max-conns (%u) reached, refusing new ones (%s first)",
                  l->max_conns, peer);
        *why = "too many connections to this appliance (max-conns): try again later";
        return false;
    }
    addr_key(peer, key);
    struct dp_addr *a = addr_get(r, key);
    if (!a) {
        dp_relay_oom(r, "connection count");
        *why = "out of memory: try again later";
        return false;
    }
    if (l->max_conns_per_addr && a->n >= l->max_conns_per_addr) {
        a->n++;
        addr_put(r, a);                 /* frees it if it was new */
        STAT_ADD(r, refused_per_address, 1);
        admit_log(r, DP_ALOG_PER_ADDR, IM_LOG_WARN,
                  "client connections: max-conns-per-address (%u) reached by %s, refusing more",
                  l->max_conns_per_addr, peer);
        *why = "too many connections from your address (max-conns-per-address)";
        return false;
    }
    a->n++;
    cl->addr = a;
    r->n_clients++;
    cl->last_in = dp_worker_now(r->w);
    pre_add(cl);
    if (l->keepalive_idle_s)
        (void)dp_conn_keepalive(cl->c, l->keepalive_idle_s, l->keepalive_intvl_s, l->keepalive_cnt);
    return true;
}

void
dp_admit_release(struct dp_client *cl)
{
    struct dp_relay *r = cl->r;
    pre_del(cl);
    if (cl->addr) {
        addr_put(r, cl->addr);
        cl->addr = NULL;
        r->n_clients--;
    }
}

void
dp_admit_login(struct dp_client *cl)
{
    pre_del(cl);
    dp_conn_set_watermarks(cl->c, DP_CONN_HIWAT, DP_CONN_LOWAT);
}

void
dp_admit_logout(struct dp_client *cl)
{
    if (!cl->prelogin && cl->addr)
        pre_add(cl);
}

bool
dp_admit_rx_grow(struct dp_client *cl, size_t cap)
{
    struct dp_relay *r = cl->r;
    uint64_t budget = r->lim.prelogin_memory;

    if (!cl->prelogin)
        return true;
    while (budget && r->pre_bytes - cl->rx_counted + cap > budget) {
        /* the largest partial frame, this connection's next size included */
        struct dp_client *big = cl;
        size_t big_sz = cap;
        for (struct dp_client *p = r->pre_head; p; p = p->pnext)
            if (p != cl && !p->closing && p->rx_counted > big_sz) {
                big = p;
                big_sz = p->rx_counted;
            }
        STAT_ADD(r, prelogin_evicted, 1);
        admit_log(r, DP_ALOG_PRELOGIN_MEM, IM_LOG_WARN,
                  "client connections: prelogin-memory (%llu bytes) reached: closing %s, which "
                  "holds the largest partial frame (%zu bytes) without having logged in",
                  (unsigned long long)budget, dp_conn_peer(big->c), big_sz);
        if (big == cl)
            return false;
        dp_client_limit_close(big, "too much memory held by connections that are not logged in "
                                   "(prelogin-memory): yours holds the largest partial frame");
    }
    dp_admit_rx_set(cl, cap);
    return true;
}

void
dp_admit_rx_set(struct dp_client *cl, size_t cap)
{
    struct dp_relay *r = cl->r;
    if (!cl->prelogin)
        return;
    r->pre_bytes = r->pre_bytes - cl->rx_counted + cap;
    cl->rx_counted = cap;
    STAT_SET(r, prelogin_bytes, r->pre_bytes);
}

/* ---- deadlines ------------------------------------------------------------------ */

static void
sweep(struct dp_relay *r, uint64_t now)
{
    uint32_t idle = r->lim.idle_timeout_ms;
    char why[96];
    for (uint32_t i = 1; i < r->n_slots; i++) {
        struct dp_client *cl = r->slots[i];
        if (!cl)
            continue;
        if (cl->closing) {
            /* A peer that reads nothing keeps a close-after-flush open: end it. */
            if (cl->close_by && now >= cl->close_by) {
                cl->close_by = 0;
                dp_conn_abort(cl->c, -ETIMEDOUT);
            }
            continue;
        }
        if (idle && cl->user && now - cl->last_in >= idle) {
            STAT_ADD(r, idle_timeouts, 1);
            DP_LOG(IM_LOG_INFO, "client %s (%s): no input for %u s (idle-timeout): closing",
                   dp_conn_peer(cl->c), cl->user->name, idle / 1000);
            snprintf(why, sizeof(why), "no input for %u s (idle-timeout)", idle / 1000);
            dp_client_limit_close(cl, why);
        }
    }
}

void
dp_admit_tick(struct dp_relay *r, uint64_t now)
{
    char why[96];
    while (r->pre_head && r->pre_head->deadline <= now) {
        struct dp_client *cl = r->pre_head;
        pre_del(cl);
        if (cl->closing)
            continue;
        STAT_ADD(r, prelogin_timeouts, 1);
        DP_LOG(IM_LOG_DEBUG, "client %s: not logged in within %u ms (prelogin-timeout): closing",
               dp_conn_peer(cl->c), r->lim.prelogin_timeout_ms);
        snprintf(why, sizeof(why), "not logged in within %u s (prelogin-timeout)",
                 (r->lim.prelogin_timeout_ms + 999) / 1000);
        dp_client_limit_close(cl, why);
    }
    if (now >= r->next_idle_check) {
        r->next_idle_check = now + DP_SWEEP_MS;
        sweep(r, now);
        struct dp_stats ws;
        dp_worker_stats(r->w, &ws);
        uint64_t n = ws.accept_paused - r->accept_paused_seen;
        if (n && (!r->log_at[DP_ALOG_ACCEPT] || now - r->log_at[DP_ALOG_ACCEPT] >= DP_LOG_EVERY_MS)) {
            r->accept_paused_seen = ws.accept_paused;
            admit_log(r, DP_ALOG_ACCEPT, IM_LOG_WARN,
                      "accepting clients paused %llu times: out of file descriptors or kernel "
                      "memory; raise the file limit (ulimit -n) or lower max-conns",
                      (unsigned long long)n);
        }
    }
}

void
dp_admit_free(struct dp_relay *r)
{
    for (unsigned i = 0; i < DP_HASH_BUCKETS; i++)
        while (r->addrs[i]) {
            struct dp_addr *a = r->addrs[i];
            r->addrs[i] = a->next;
            free(a);
        }
}
