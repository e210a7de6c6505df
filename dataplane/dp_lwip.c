/*
 * dp_lwip.c - the lwIP side of the dpdk backend: the interface over the
 * DPDK port, and TCP connections and listeners behind struct dp_io_ops.
 *
 * lwIP's callbacks only queue events: they record what happened in the
 * connection's struct dlw and put it on the event queue; they never call a
 * tcp_* function or anything of dp_conn (a tcp_abort inside a receive
 * callback is a use-after-free, and tcp_err runs after lwIP freed the PCB).
 * dp_lwip_dispatch(), called by the loop after lwIP returned, turns the
 * events into dp_conn_io_* calls.  The only lwIP calls made from a callback
 * are the field setters (tcp_arg, tcp_recv ...) on a PCB being accepted, so
 * that data arriving with the handshake's last ACK is not lost.
 *
 * Receive back-pressure is TCP's window: data is acknowledged to lwIP
 * (tcp_recved) only once delivered, so a paused connection keeps its pbufs
 * and its window closes.  A paused connection's pbufs are copied out of
 * their mbufs into one heap pbuf so that a stalled reader never pins the
 * receive pool.
 *
 * Graceful close keeps the kernel backend's linger semantics: FIN, then
 * whatever the peer still sends is read and dropped (so lwIP never resets
 * the connection for unread input) until its FIN or DP_LINGER_MS.
 *
 * Errors upward are -errno, never lwIP's err_t.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lwip/init.h"
#include "lwip/etharp.h"
#include "lwip/ip4.h"
#include "lwip/ip4_addr.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/stats.h"
#include "lwip/sys.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"
#include "netif/ethernet.h"
#include "dp_lwip_hooks.h"

#include "dp_int.h"
#include "dp_lwip.h"

/* dlw.ev */
#define EV_ACCEPT    0x01u  /* accepted by lwIP, no dp_conn yet */
#define EV_CONNECTED 0x02u
#define EV_RX        0x04u  /* data or FIN */
#define EV_SENT      0x08u  /* send buffer space freed */
#define EV_ERR       0x10u  /* lwIP freed the PCB (err) */

#define DLW_RXQ_MIN  8

struct dlw_listen;

/* One TCP connection as lwIP sees it; c->io.priv points here. */
struct dlw {
    struct dp_conn *c;          /* NULL until the accept is dispatched, and after close */
    struct tcp_pcb *pcb;        /* NULL once released (closed, aborted, or freed by lwIP) */
    struct dlw_listen *lsn;     /* EV_ACCEPT: the listener (NULL once it closed) */
    struct pbuf **rxq;          /* received chains, in order, not yet delivered */
    unsigned rx_head, rx_n, rx_cap;
    uint32_t ev;
    int err;                    /* -errno of EV_ERR */
    uint16_t lport;             /* local port taken from the outbound range (0: none) */
    bool queued, fin, want_read, want_write, connecting, lingering, dead;
    uint64_t linger_until;
    struct dlw *qnext;          /* event queue */
    struct dlw *gnext, *gprev;  /* lingering or dead list */
};

struct dlw_listen {
    struct dp_listener *l;
    struct tcp_pcb *pcb;
    unsigned refs;              /* accepted connections not yet dispatched */
    bool closed;                /* unlistened: freed when refs reaches 0 */
};

static struct {
    bool lwip_inited;           /* lwip_init() ran (once per process) */
    bool up;                    /* an instance is live */
    struct dp_worker *w;
    struct netif nif;
    struct dlw *q_head, *q_tail;
    struct dlw *lingers;        /* closed gracefully, reading until FIN or deadline */
    struct dlw *dead;           /* to free at the end of a dispatch */
    unsigned n_conns, max_conns;
    uint16_t lport_lo, lport_hi;
    uint8_t *lport_used;        /* bitmap of the outbound range */
    bool rx_csum_hw;
    uint16_t csum_gen;          /* NETIF_CHECKSUM_GEN_* lwIP computes itself */
    uint64_t accept_refused;
} S;

/* ---- helpers ------------------------------------------------------------------------ */

static int err_to_errno(err_t e, bool connecting)
{
    switch (e) {
    case ERR_OK: return 0;
    case ERR_MEM: case ERR_BUF: return -ENOBUFS;
    case ERR_TIMEOUT: return -ETIMEDOUT;
    case ERR_RTE: return -ENETUNREACH;
    case ERR_INPROGRESS: return -EINPROGRESS;
    case ERR_VAL: case ERR_ARG: return -EINVAL;
    case ERR_WOULDBLOCK: return -EAGAIN;
    case ERR_USE: return -EADDRINUSE;
    case ERR_ALREADY: return -EALREADY;
    case ERR_ISCONN: return -EISCONN;
    case ERR_CONN: return -ENOTCONN;
    case ERR_IF: return -ENETDOWN;
    /* lwIP aborts a connect whose SYNs went unanswered: a timeout. */
    case ERR_ABRT: return connecting ? -ETIMEDOUT : -ECONNABORTED;
    case ERR_RST: return connecting ? -ECONNREFUSED : -ECONNRESET;
    case ERR_CLSD: return -EPIPE;
    default: return -EIO;
    }
}

static void addr_text(const ip_addr_t *a, uint16_t port, char *out, size_t sz)
{
    char ip[IP4ADDR_STRLEN_MAX];
    if (!ip4addr_ntoa_r(ip_2_ip4(a), ip, sizeof(ip)))
        snprintf(ip, sizeof(ip), "?");
    snprintf(out, sz, "%s:%u", ip, port);
}

static void fill_names(struct dp_conn *c, const struct tcp_pcb *pcb)
{
    addr_text(&pcb->remote_ip, pcb->remote_port, c->peer, sizeof(c->peer));
    addr_text(&pcb->local_ip, pcb->local_port, c->local, sizeof(c->local));
}

/* Strict dotted quad ("198.18.0.1"); 0 and the address in network order, or -1. */
static int parse_ipv4(const char *s, uint32_t *out)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        unsigned v = 0, nd = 0;
        while (*s >= '0' && *s <= '9' && nd < 4) {
            v = v * 10 + (unsigned)(*s++ - '0');
            nd++;
        }
        if (nd == 0 || nd > 3 || v > 255)
            return -1;
        b[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.')
            return -1;
    }
    if (*s)
        return -1;
    memcpy(out, b, 4);
    return 0;
}

static void queue_ev(struct dlw *d, uint32_t ev)
{
    d->ev |= ev;
    if (d->queued)
        return;
    d->queued = true;
    d->qnext = NULL;
    if (S.q_tail)
        S.q_tail->qnext = d;
    else
        S.q_head = d;
    S.q_tail = d;
}

static void glist_add(struct dlw **head, struct dlw *d)
{
    d->gprev = NULL;
    d->gnext = *head;
    if (*head)
        (*head)->gprev = d;
    *head = d;
}

static void glist_del(struct dlw **head, struct dlw *d)
{
    if (d->gprev)
        d->gprev->gnext = d->gnext;
    else
        *head = d->gnext;
    if (d->gnext)
        d->gnext->gprev = d->gprev;
    d->gnext = d->gprev = NULL;
}

/* ---- the receive queue ---------------------------------------------------------------- */

static int rxq_push(struct dlw *d, struct pbuf *p)
{
    if (d->rx_n == d->rx_cap) {
        unsigned cap = d->rx_cap ? d->rx_cap * 2 : DLW_RXQ_MIN;
        struct pbuf **q = malloc(cap * sizeof(*q));
        if (!q)
            return -ENOMEM;
        for (unsigned i = 0; i < d->rx_n; i++)
            q[i] = d->rxq[(d->rx_head + i) % d->rx_cap];
        free(d->rxq);
        d->rxq = q;
        d->rx_cap = cap;
        d->rx_head = 0;
    }
    d->rxq[(d->rx_head + d->rx_n) % d->rx_cap] = p;
    d->rx_n++;
    return 0;
}

static struct pbuf *rxq_peek(struct dlw *d)
{
    return d->rx_n ? d->rxq[d->rx_head] : NULL;
}

static struct pbuf *rxq_pop(struct dlw *d)
{
    if (!d->rx_n)
        return NULL;
    struct pbuf *p = d->rxq[d->rx_head];
    d->rx_head = (d->rx_head + 1) % d->rx_cap;
    d->rx_n--;
    return p;
}

/* Drop everything held; returns the byte count (for tcp_recved). */
static size_t rxq_clear(struct dlw *d)
{
    size_t n = 0;
    struct pbuf *p;
    while ((p = rxq_pop(d))) {
        n += p->tot_len;
        pbuf_free(p);
    }
    return n;
}

/*
 * A paused connection's input: each chain still in mbufs is copied into one
 * heap pbuf (pbuf_clone), so a stalled reader never pins the receive pool.
 * Only new chains are copied; what was copied before stays as it is.
 */
static void rxq_unpin(struct dlw *d)
{
    for (unsigned i = 0; i < d->rx_n; i++) {
        struct pbuf **slot = &d->rxq[(d->rx_head + i) % d->rx_cap], *q;
        for (q = *slot; q && !(q->flags & PBUF_FLAG_IS_CUSTOM); q = q->next)
            ;
        if (!q)
            continue;
        struct pbuf *copy = pbuf_clone(PBUF_RAW, PBUF_RAM, *slot);
        if (!copy)
            return;     /* keep the mbufs: correct, only less frugal */
        pbuf_free(*slot);
        *slot = copy;
    }
}

/* ---- objects ------------------------------------------------------------------------- */

static struct dlw *dlw_new(void)
{
    struct dlw *d = calloc(1, sizeof(*d));
    if (d)
        S.n_conns++;
    return d;
}

static void lport_put(struct dlw *d)
{
    if (d->lport) {
        unsigned i = d->lport - S.lport_lo;
        S.lport_used[i / 8] &= (uint8_t)~(1u << (i % 8));
        d->lport = 0;
    }
}

/* Detach d from its PCB so lwIP calls nothing of ours any more. */
static void pcb_detach(struct tcp_pcb *pcb)
{
    tcp_arg(pcb, NULL);
    tcp_recv(pcb, NULL);
    tcp_sent(pcb, NULL);
    tcp_err(pcb, NULL);
}

/* d is finished with: freed at the end of the dispatch (pointers to it stay valid until then). */
static void dlw_retire(struct dlw *d)
{
    if (d->dead)
        return;
    if (d->lingering) {
        glist_del(&S.lingers, d);
        d->lingering = false;
    }
    d->dead = true;
    d->c = NULL;
    rxq_clear(d);
    lport_put(d);
    glist_add(&S.dead, d);
}

static void free_dead(void)
{
    for (struct dlw *d = S.dead, *nx; d; d = nx) {
        nx = d->gnext;
        if (d->queued)
            continue;   /* still on the event queue: freed once it leaves it */
        glist_del(&S.dead, d);
        free(d->rxq);
        free(d);
        S.n_conns--;
    }
}

/* Abort d's PCB (RST) and retire d. */
static void dlw_abort(struct dlw *d)
{
    if (d->pcb) {
        struct tcp_pcb *pcb = d->pcb;
        d->pcb = NULL;
        pcb_detach(pcb);
        tcp_abort(pcb);
    }
    dlw_retire(d);
}

/* End a linger: everything was read, so tcp_close sends no RST. */
static void linger_end(struct dlw *d)
{
    if (d->pcb) {
        struct tcp_pcb *pcb = d->pcb;
        d->pcb = NULL;
        pcb_detach(pcb);
        if (tcp_close(pcb) != ERR_OK)
            tcp_abort(pcb);
    }
    dlw_retire(d);
}

/* ---- lwIP callbacks: record and queue, nothing else ---------------------------------- */

static err_t cb_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
    struct dlw *d = arg;
    if (!p) {
        d->fin = true;
    } else if (rxq_push(d, p) < 0) {
        return ERR_MEM;     /* lwIP keeps it as refused data and offers it again */
    }
    queue_ev(d, EV_RX);
    return ERR_OK;
}

static err_t cb_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
    queue_ev(arg, EV_SENT);
    return ERR_OK;
}

static void cb_err(void *arg, err_t err)
{
    struct dlw *d = arg;
    d->pcb = NULL;          /* already freed by lwIP */
    d->err = err_to_errno(err, d->connecting);
    queue_ev(d, EV_ERR);
}

static err_t cb_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
    queue_ev(arg, EV_CONNECTED);
    return ERR_OK;
}

static err_t cb_accept(void *arg, struct tcp_pcb *npcb, err_t err)
{
    struct dlw_listen *ls = arg;
    if (err != ERR_OK || !npcb || !ls)
        return ERR_VAL;
    /* Refusing with an error makes lwIP abort the PCB itself (RST). */
    if (S.n_conns >= S.max_conns) {
        S.accept_refused++;
        return ERR_MEM;
    }
    struct dlw *d = dlw_new();
    if (!d) {
        S.accept_refused++;
        return ERR_MEM;
    }
    d->pcb = npcb;
    d->lsn = ls;
    ls->refs++;
    tcp_arg(npcb, d);
    tcp_recv(npcb, cb_recv);
    tcp_sent(npcb, cb_sent);
    tcp_err(npcb, cb_err);
    tcp_nagle_disable(npcb);
    queue_ev(d, EV_ACCEPT);
    return ERR_OK;
}

/* ---- dispatch: events to dp_conn, outside lwIP ------------------------------------- */

/* Deliver held input while c reads; then EOF once everything went up. */
static void deliver(struct dlw *d, struct dp_conn *c)
{
    struct pbuf *p;
    while (d->c == c && d->want_read && (p = rxq_peek(d))) {
        /* Hand up the chain's first pbuf, then keep the rest queued in its place. */
        struct pbuf *rest = p->next;
        if (rest) {
            p->next = NULL;             /* the chain's reference to rest becomes the queue's */
            p->tot_len = p->len;
            d->rxq[d->rx_head] = rest;
        } else {
            rxq_pop(d);
        }
        /* Consumed as far as TCP is concerned (the window reopens); acknowledged
         * before the callback, which may close the connection. */
        if (d->pcb)
            tcp_recved(d->pcb, p->len);
        dp_conn_io_data(c, p->payload, p->len);
        pbuf_free(p);
        /* d outlives c's close (retired, freed after the dispatch), so this loop is safe. */
    }
    if (d->c == c && d->want_read && d->fin && !d->rx_n)
        dp_conn_io_eof(c, 0);
    if (d->c == c && !d->want_read && d->rx_n)
        rxq_unpin(d);
}

static void dispatch_accept(struct dlw *d)
{
    struct dlw_listen *ls = d->lsn;
    d->lsn = NULL;
    bool closed = ls->closed;
    if (--ls->refs == 0 && closed)
        free(ls);
    if (closed || !d->pcb) {
        dlw_abort(d);
        return;
    }
    struct dp_conn *c = dp_conn_alloc(S.w);
    if (!c) {
        dlw_abort(d);
        return;
    }
    c->io.priv = d;
    d->c = c;
    fill_names(c, d->pcb);
    dp_listener_io_accept(ls->l, c);   /* sets want_read through update_read */
}

static void dispatch_linger(struct dlw *d, uint32_t ev)
{
    if (ev & EV_ERR) {
        dlw_retire(d);
        return;
    }
    size_t n = rxq_clear(d);
    while (n > 0 && d->pcb) {
        u16_t k = (u16_t)(n > 0xffff ? 0xffff : n);
        tcp_recved(d->pcb, k);
        n -= k;
    }
    if (d->fin)
        linger_end(d);
}

static void dispatch_one(struct dlw *d)
{
    uint32_t ev = d->ev;
    d->ev = 0;
    if (d->dead)
        return;
    if (d->lingering) {
        dispatch_linger(d, ev);
        return;
    }
    if (ev & EV_ACCEPT)
        dispatch_accept(d);
    struct dp_conn *c = d->c;
    if (!c)
        return;
    if (ev & EV_CONNECTED) {
        d->connecting = false;
        if (d->pcb)
            fill_names(c, d->pcb);
        dp_conn_io_connected(c, 0, NULL);
        if (d->c != c)
            return;
    }
    if (ev & EV_ERR) {
        /* The PCB is gone.  Input received before the reset still goes up. */
        if (!d->connecting)
            deliver(d, c);
        if (d->c != c)
            return;
        if (d->connecting) {
            char detail[160];
            snprintf(detail, sizeof(detail), "connect to %s: %s", c->peer,
                     strerror_r(-d->err, (char[96]){0}, 96));
            dp_conn_io_connected(c, d->err, detail);
        } else {
            dp_conn_io_eof(c, d->err);
        }
        return;
    }
    if (ev & (EV_RX | EV_ACCEPT | EV_CONNECTED)) {
        deliver(d, c);
        if (d->c != c)
            return;
    }
    if ((ev & EV_SENT) && d->want_write && c->state == DP_CS_OPEN)
        dp_conn_io_writable(c);
}

int dp_lwip_dispatch(void)
{
    int n = 0;
    /* Events queued while dispatching wait for the next turn (bounded work). */
    struct dlw *d = S.q_head;
    S.q_head = S.q_tail = NULL;
    while (d) {
        struct dlw *next = d->qnext;
        d->queued = false;
        d->qnext = NULL;
        dispatch_one(d);
        n++;
        d = next;
    }
    if (S.lingers) {
        uint64_t now = sys_now();
        for (struct dlw *g = S.lingers, *nx; g; g = nx) {
            nx = g->gnext;
            if ((int32_t)((uint32_t)now - (uint32_t)g->linger_until) >= 0)
                linger_end(g);
        }
    }
    free_dead();
    return n;
}

bool dp_lwip_pending(void)
{
    return S.q_head != NULL;
}

/* ---- the interface ------------------------------------------------------------------- */

/* A custom pbuf over a received mbuf, kept in the mbuf's private area. */
struct dlw_rxbuf {
    struct pbuf_custom pc;
    void *mbuf;
};
_Static_assert(sizeof(struct dlw_rxbuf) <= DP_LWIP_MBUF_PRIV, "DP_LWIP_MBUF_PRIV too small");

static void rxbuf_free(struct pbuf *p)
{
    struct dlw_rxbuf *rb = (struct dlw_rxbuf *)(void *)p;
    dp_pkt_free(rb->mbuf);
}

void dp_lwip_input(void *m, void *priv, void *data, uint16_t len, unsigned csum)
{
    struct dlw_rxbuf *rb = priv;
    if ((csum & DP_LWIP_CSUM_BAD) || !S.up) {
        dp_pkt_free(m);
        return;
    }
    rb->mbuf = m;
    rb->pc.custom_free_function = rxbuf_free;
    struct pbuf *p = pbuf_alloced_custom(PBUF_RAW, len, PBUF_REF, &rb->pc, data, len);
    if (!p) {
        dp_pkt_free(m);
        return;
    }
    if (S.rx_csum_hw) {
        /* Verify in software only what the port did not vouch for. */
        uint16_t flags = S.csum_gen | NETIF_CHECKSUM_CHECK_ICMP;
        if (!(csum & DP_LWIP_CSUM_IP_GOOD))
            flags |= NETIF_CHECKSUM_CHECK_IP;
        if (!(csum & DP_LWIP_CSUM_L4_GOOD))
            flags |= NETIF_CHECKSUM_CHECK_TCP;
        NETIF_SET_CHECKSUM_CTRL(&S.nif, flags);
    }
    if (S.nif.input(p, &S.nif) != ERR_OK)
        pbuf_free(p);
}

static err_t nif_linkoutput(struct netif *nif, struct pbuf *p)
{
    uint8_t *data;
    if (p->tot_len > nif->mtu + 14u)
        return ERR_BUF;
    void *m = dp_pkt_tx_alloc(p->tot_len, &data);
    if (!m)
        return ERR_MEM;     /* counted by the DPDK side; TCP retransmits */
    pbuf_copy_partial(p, data, p->tot_len, 0);
    dp_pkt_tx_queue(m);
    return ERR_OK;
}

static const struct dp_lwip_cfg *init_cfg;

static err_t nif_init(struct netif *nif)
{
    nif->name[0] = 'd';
    nif->name[1] = 'p';
    nif->output = etharp_output;
    nif->linkoutput = nif_linkoutput;
    nif->mtu = init_cfg->mtu;
    nif->hwaddr_len = ETH_HWADDR_LEN;
    memcpy(nif->hwaddr, init_cfg->mac, ETH_HWADDR_LEN);
    nif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET;
    return ERR_OK;
}

int dp_lwip_init(struct dp_worker *w, const struct dp_lwip_cfg *cfg, char *why, size_t whysz)
{
    if (S.up) {
        snprintf(why, whysz, "lwIP runs one instance per process, and one is live");
        return -EBUSY;
    }
    if (cfg->lport_lo == 0 || cfg->lport_hi < cfg->lport_lo) {
        snprintf(why, whysz, "bad local port range %u-%u", cfg->lport_lo, cfg->lport_hi);
        return -EINVAL;
    }
    size_t nports = (size_t)cfg->lport_hi - cfg->lport_lo + 1;
    uint8_t *used = calloc((nports + 7) / 8, 1);
    if (!used) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    if (!S.lwip_inited) {
        lwip_init();
        S.lwip_inited = true;
    }
    S.w = w;
    S.max_conns = cfg->max_conns;
    S.lport_lo = cfg->lport_lo;
    S.lport_hi = cfg->lport_hi;
    S.lport_used = used;
    S.rx_csum_hw = cfg->rx_csum_hw;
    S.accept_refused = 0;
    ip4_addr_t ip, mask, gw;
    ip4_addr_set_u32(&ip, cfg->addr);
    ip4_addr_set_u32(&mask, cfg->mask);
    ip4_addr_set_u32(&gw, cfg->gateway);
    init_cfg = cfg;
    if (!netif_add(&S.nif, &ip, &mask, &gw, NULL, nif_init, ethernet_input)) {
        free(used);
        S.lport_used = NULL;
        snprintf(why, whysz, "lwIP refused the interface");
        return -EINVAL;
    }
    init_cfg = NULL;
    /* The port fills IPv4 and TCP checksums when it can (ICMP stays lwIP's). */
    S.csum_gen = NETIF_CHECKSUM_GEN_ICMP;
    if (!cfg->tx_csum_hw)
        S.csum_gen |= NETIF_CHECKSUM_GEN_IP | NETIF_CHECKSUM_GEN_TCP;
    NETIF_SET_CHECKSUM_CTRL(&S.nif, S.csum_gen | (NETIF_CHECKSUM_ENABLE_ALL & ~(NETIF_CHECKSUM_GEN_IP |
                            NETIF_CHECKSUM_GEN_TCP | NETIF_CHECKSUM_GEN_ICMP | NETIF_CHECKSUM_GEN_UDP |
                            NETIF_CHECKSUM_GEN_ICMP6)));
    netif_set_default(&S.nif);
    netif_set_link_up(&S.nif);
    netif_set_up(&S.nif);
    S.up = true;
    /* Tell the segment who we are (and learn nothing stale). */
    etharp_gratuitous(&S.nif);
    return 0;
}

void dp_lwip_fini(struct dp_worker *w)
{
    if (!S.up || S.w != w)
        return;
    /* Connections are gone by now (dp_conn_shutdown_all); drop what lingers or waits. */
    while (S.lingers)
        dlw_abort(S.lingers);
    for (struct dlw *d = S.q_head; d; d = d->qnext) {
        if (d->lsn) {
            struct dlw_listen *ls = d->lsn;
            d->lsn = NULL;
            if (--ls->refs == 0 && ls->closed)
                free(ls);
        }
        if (!d->dead && !d->c)
            dlw_abort(d);
    }
    for (struct dlw *d = S.q_head, *nx; d; d = nx) {
        nx = d->qnext;
        d->queued = false;
        d->qnext = NULL;
    }
    S.q_head = S.q_tail = NULL;
    free_dead();
    /* PCBs lwIP still keeps (TIME_WAIT, FIN_WAIT after close): nothing of ours refers to them. */
    while (tcp_active_pcbs)
        tcp_abort(tcp_active_pcbs);
    while (tcp_tw_pcbs)
        tcp_abort(tcp_tw_pcbs);
    etharp_cleanup_netif(&S.nif);
    netif_set_down(&S.nif);
    netif_remove(&S.nif);
    free(S.lport_used);
    S.lport_used = NULL;
    S.up = false;
    S.w = NULL;
}

void dp_lwip_timers(void)
{
    sys_check_timeouts();
}

uint32_t dp_lwip_sleep_ms(uint32_t max_ms)
{
    u32_t t = sys_timeouts_sleeptime();
    return t < max_ms ? t : max_ms;
}

void dp_lwip_counters(struct dp_lwip_counters *out)
{
    out->tcp_open = S.n_conns;
    out->retransmits = lwip_stats.mib2.tcpretranssegs + dp_lwip_rto_events;
    out->accept_refused = S.accept_refused;
    out->tcp_drops = lwip_stats.tcp.drop + lwip_stats.tcp.chkerr + lwip_stats.ip.drop;
}

void dp_lwip_set_max_conns(unsigned n)
{
    S.max_conns = n;
}

/* ---- listeners ------------------------------------------------------------------------- */

/* Our own address, or any ("0.0.0.0", "*", ""). */
static int local_host(const char *host, ip4_addr_t *out)
{
    uint32_t a;
    if (!*host || !strcmp(host, "*") || !strcmp(host, "0.0.0.0")) {
        ip4_addr_set_any(out);
        return 0;
    }
    if (parse_ipv4(host, &a) < 0 || a != ip4_addr_get_u32(netif_ip4_addr(&S.nif)))
        return -EADDRNOTAVAIL;
    ip4_addr_set_u32(out, a);
    return 0;
}

int dp_lwip_listen(struct dp_listener *l, const char *host, uint16_t port)
{
    ip4_addr_t a;
    if (!S.up)
        return -ENETDOWN;
    if (local_host(host, &a) < 0)
        return -EADDRNOTAVAIL;
    struct dlw_listen *ls = calloc(1, sizeof(*ls));
    struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
    if (!ls || !pcb) {
        free(ls);
        if (pcb)
            tcp_close(pcb);
        return -ENOMEM;
    }
    err_t e = tcp_bind(pcb, &a, port);
    if (e != ERR_OK) {
        tcp_close(pcb);
        free(ls);
        return err_to_errno(e, false);
    }
    struct tcp_pcb *lp = tcp_listen_with_backlog_and_err(pcb, TCP_DEFAULT_LISTEN_BACKLOG, &e);
    if (!lp) {
        tcp_close(pcb);
        free(ls);
        return err_to_errno(e, false);
    }
    ls->l = l;
    ls->pcb = lp;
    tcp_arg(lp, ls);
    tcp_accept(lp, cb_accept);
    l->port = lp->local_port;
    l->io.priv = ls;
    return 0;
}

void dp_lwip_unlisten(struct dp_listener *l)
{
    struct dlw_listen *ls = l->io.priv;
    if (!ls)
        return;
    l->io.priv = NULL;
    tcp_arg(ls->pcb, NULL);
    tcp_accept(ls->pcb, NULL);
    tcp_close(ls->pcb);     /* a listening PCB closes at once */
    ls->pcb = NULL;
    /* Accepted connections not yet handed up are refused (aborted at dispatch). */
    ls->closed = true;
    if (ls->refs == 0)
        free(ls);
}

/* ---- connections ---------------------------------------------------------------------- */

/* Why host:port may not be connected to from here, or NULL. */
static const char *unreachable(uint32_t a_net)
{
    uint32_t a = lwip_ntohl(a_net);
    if ((a >> 24) == 127)
        return "loopback is not reachable through the dpdk port";
    if (a_net == ip4_addr_get_u32(netif_ip4_addr(&S.nif)))
        return "that is the appliance's own dpdk address";
    if ((a >> 24) == 0 || a == 0xffffffffu || (a >> 28) == 0xe || (a >> 28) == 0xf)
        return "not a unicast address";
    uint32_t mask = ip4_addr_get_u32(netif_ip4_netmask(&S.nif));
    if (mask != 0xffffffffu && (a_net & ~mask) == ~mask &&
        (a_net & mask) == (ip4_addr_get_u32(netif_ip4_addr(&S.nif)) & mask))
        return "that is the dpdk subnet's broadcast address";
    return NULL;
}

/* A free local port of the outbound range, marked used; 0 when all are taken. */
static uint16_t lport_get(void)
{
    unsigned n = (unsigned)S.lport_hi - S.lport_lo + 1;
    unsigned start = LWIP_RAND() % n;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = (start + k) % n;
        if (!(S.lport_used[i / 8] & (1u << (i % 8)))) {
            S.lport_used[i / 8] |= (uint8_t)(1u << (i % 8));
            return (uint16_t)(S.lport_lo + i);
        }
    }
    return 0;
}

int dp_lwip_connect(struct dp_conn *c, const char *host, uint16_t port)
{
    uint32_t a;
    snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
    if (!S.up) {
        snprintf(c->detail, sizeof(c->detail), "connect to %s: the dpdk port is down", c->peer);
        return -ENETDOWN;
    }
    if (parse_ipv4(host, &a) < 0) {
        if (!strcmp(host, "::1") || !strcmp(host, "[::1]") || !strcmp(host, "localhost")) {
            snprintf(c->detail, sizeof(c->detail),
                     "connect to %s refused: loopback is not reachable through the dpdk port", host);
            return -EADDRNOTAVAIL;
        }
        if (strchr(host, ':')) {
            snprintf(c->detail, sizeof(c->detail),
                     "connect to %s: IPv6 is not supported by the dpdk backend", host);
            return -EAFNOSUPPORT;
        }
        snprintf(c->detail, sizeof(c->detail),
                 "connect to %s: not an IP address (names are resolved on the controlplane)", host);
        return -EINVAL;
    }
    const char *why = unreachable(a);
    if (why) {
        snprintf(c->detail, sizeof(c->detail), "connect to %s refused: %s", c->peer, why);
        return -EADDRNOTAVAIL;
    }
    if (S.n_conns >= S.max_conns) {
        snprintf(c->detail, sizeof(c->detail), "connect to %s: dpdk-max-conns (%u) reached",
                 c->peer, S.max_conns);
        return -EMFILE;
    }
    struct dlw *d = dlw_new();
    if (!d) {
        snprintf(c->detail, sizeof(c->detail), "connect to %s: out of memory", c->peer);
        return -ENOMEM;
    }
    ip4_addr_t ra;
    ip4_addr_set_u32(&ra, a);
    err_t e = ERR_USE;
    /* A port whose earlier connection to this peer is still in TIME_WAIT is
     * refused by tcp_connect (ERR_USE): try others. */
    for (int tries = 0; tries < 32 && e == ERR_USE; tries++) {
        uint16_t lp = lport_get();
        if (!lp)
            break;
        struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
        if (!pcb) {
            S.lport_used[(lp - S.lport_lo) / 8] &= (uint8_t)~(1u << ((lp - S.lport_lo) % 8));
            e = ERR_MEM;
            break;
        }
        ip_set_option(pcb, SOF_REUSEADDR);
        e = tcp_bind(pcb, IP4_ADDR_ANY4, lp);
        if (e == ERR_OK) {
            tcp_arg(pcb, d);
            tcp_recv(pcb, cb_recv);
            tcp_sent(pcb, cb_sent);
            tcp_err(pcb, cb_err);
            tcp_nagle_disable(pcb);
            d->connecting = true;
            d->pcb = pcb;
            e = tcp_connect(pcb, &ra, port, cb_connected);
        }
        if (e == ERR_OK) {
            d->lport = lp;
            break;
        }
        S.lport_used[(lp - S.lport_lo) / 8] &= (uint8_t)~(1u << ((lp - S.lport_lo) % 8));
        d->pcb = NULL;
        pcb_detach(pcb);
        tcp_abort(pcb);
    }
    if (e != ERR_OK) {
        int rc = e == ERR_USE ? -EADDRNOTAVAIL : err_to_errno(e, true);
        if (e == ERR_USE)
            snprintf(c->detail, sizeof(c->detail), "connect to %s: no free local port in dpdk-local-ports",
                     c->peer);
        else if (e == ERR_RTE)
            snprintf(c->detail, sizeof(c->detail), "connect to %s: no route (set dpdk-gateway)", c->peer);
        else
            snprintf(c->detail, sizeof(c->detail), "connect to %s: %s", c->peer,
                     strerror_r(-rc, (char[96]){0}, 96));
        dlw_retire(d);
        free_dead();
        return rc;
    }
    d->c = c;
    c->io.priv = d;
    return 0;
}

ssize_t dp_lwip_write(struct dp_conn *c, const struct iovec *iov, int iovcnt)
{
    struct dlw *d = c->io.priv;
    if (!d || !d->pcb)
        return -ENOTCONN;
    struct tcp_pcb *pcb = d->pcb;
    size_t done = 0;
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t room = pcb->snd_buf;
            if (room == 0 || tcp_sndqueuelen(pcb) >= TCP_SND_QUEUELEN - 4)
                goto out;
            u16_t n = (u16_t)LWIP_MIN(LWIP_MIN(left, room), 0xffffu);
            u8_t fl = TCP_WRITE_FLAG_COPY;
            if (n < left || i + 1 < iovcnt)
                fl |= TCP_WRITE_FLAG_MORE;
            err_t e = tcp_write(pcb, p, n, fl);
            if (e == ERR_MEM)
                goto out;
            if (e != ERR_OK)
                return done ? (ssize_t)done : err_to_errno(e, false);
            p += n;
            left -= n;
            done += n;
        }
    }
out:
    if (done)
        tcp_output(pcb);
    return done ? (ssize_t)done : -EAGAIN;
}

void dp_lwip_want_write(struct dp_conn *c, bool on)
{
    struct dlw *d = c->io.priv;
    if (!d)
        return;
    d->want_write = on;
    /* Like epoll's level trigger: room already there is reported at once. */
    if (on && d->pcb && d->pcb->snd_buf > 0 && tcp_sndqueuelen(d->pcb) < TCP_SND_QUEUELEN - 4)
        queue_ev(d, EV_SENT);
}

void dp_lwip_want_read(struct dp_conn *c, bool on)
{
    struct dlw *d = c->io.priv;
    if (!d)
        return;
    d->want_read = on;
    if (on && (d->rx_n || d->fin))
        queue_ev(d, EV_RX);
}

int dp_lwip_keepalive(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt)
{
    struct dlw *d = c->io.priv;
    if (!d || !d->pcb)
        return -ENOTCONN;
    if (!idle_s) {
        ip_reset_option(d->pcb, SOF_KEEPALIVE);
        return 0;
    }
    /* lwIP's slow timer probes and aborts (ERR_ABRT) on its own. */
    d->pcb->keep_idle = idle_s * 1000u;
    d->pcb->keep_intvl = intvl_s * 1000u;
    d->pcb->keep_cnt = cnt;
    ip_set_option(d->pcb, SOF_KEEPALIVE);
    return 0;
}

void dp_lwip_close(struct dp_conn *c, bool graceful)
{
    struct dlw *d = c->io.priv;
    if (!d)
        return;
    c->io.priv = NULL;
    d->c = NULL;
    if (!d->pcb || !graceful || d->connecting) {
        dlw_abort(d);
        return;
    }
    /* Everything held counts as read: closing with unread input would reset. */
    size_t n = rxq_clear(d);
    while (n > 0) {
        u16_t k = (u16_t)(n > 0xffff ? 0xffff : n);
        tcp_recved(d->pcb, k);
        n -= k;
    }
    if (tcp_shutdown(d->pcb, 0, 1) != ERR_OK) {
        dlw_abort(d);
        return;
    }
    if (d->fin) {
        linger_end(d);
        return;
    }
    d->lingering = true;
    d->linger_until = (uint64_t)sys_now() + DP_LINGER_MS;
    glist_add(&S.lingers, d);
}

