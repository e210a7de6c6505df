/*
 * dp_io_dpdk.c - the DPDK side of the dpdk I/O backend: EAL and the port
 * (once per process), the mbuf pool, the receive and transmit bursts, the
 * idle policy and the per-lcore counters.  TCP is lwIP's (dp_lwip.c, behind
 * the neutral dp_lwip.h): this file never sees an lwIP type.
 *
 * One loop turn (dio_poll):
 *   rte_eth_tx_burst of what the last turn queued (writes made after poll)
 *   rte_eth_rx_burst -> dp_lwip_input per frame (lwIP's callbacks only queue)
 *   sys_check_timeouts (dp_lwip_timers)
 *   the queued events -> dp_conn_io_* (dp_lwip_dispatch)
 *   rte_eth_tx_burst of what that produced
 * then, when nothing happened and the caller may wait: spin (dpdk-idle spin),
 * or spin a few turns and sleep on the wake eventfd and the queue's Rx
 * interrupt (where the PMD has one; else in naps of at most 1 ms), never past
 * lwIP's next timer.
 *
 * Memory: mbufs come from one pool made at set-up; each carries the pbuf
 * that lwIP sees in its private area, so receiving allocates nothing.
 */
#include <errno.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>

#include "dp_dpdk.h"
#include "dp_int.h"
#include "dp_lwip.h"
#include "im_common.h"

#define DIO_BURST        32
#define DIO_RX_DESC      1024
#define DIO_TX_DESC      1024
#define DIO_MBUF_CACHE   256
#define DIO_IDLE_SPINS   200     /* empty turns before an adaptive sleep */
#define DIO_NAP_MS       1       /* sleep slice without an Rx interrupt */
#define DIO_NIC_STATS_MS 1000

/* Process-wide: EAL and the port are set up once (dp_dpdk_setup). */
static struct {
    bool eal_up, port_up;
    struct dp_dpdk_cfg cfg;
    char *eal_copy, *port_copy;
    uint16_t port;
    struct rte_mempool *pool;
    struct rte_ether_addr mac;
    uint16_t mtu;
    bool rx_csum_hw, tx_csum_hw;
    bool rx_intr;               /* the port was configured with Rx interrupts */
    char iface[IF_NAMESIZE];
    char driver[64];
} G;

/* Per worker (w->io). */
struct dio {
    struct dp_worker *w;
    int wake_fd, ep_fd, intr_fd;
    bool registered;            /* the worker's thread is an lcore */
    unsigned idle_turns;
    struct rte_mbuf *tx[DIO_BURST];
    unsigned n_tx;
    uint64_t turn_start;        /* TSC at the start of the current turn's work */
    bool turn_busy;             /* the current turn's poll moved frames */
    uint64_t nic_stats_at;
    uint64_t nic_base_missed, nic_base_errors, nic_base_nombuf;
    int link;                   /* the port's link as last seen: 1 up, 0 down, -1 not yet */
};

/* The worker the lwIP side's calls refer to (one lwIP instance per process). */
static struct dio *cur;

/* ---- set-up --------------------------------------------------------------------------- */

static int split_args(char *s, char **argv, int max)
{
    int n = 0;
    for (char *tok = strtok(s, " \t\n"); tok; tok = strtok(NULL, " \t\n")) {
        if (n >= max)
            return -1;
        argv[n++] = tok;
    }
    return n;
}

/* "(0,1,3)": the CPUs this process may run on. */
static void cpu_list(char *out, size_t sz)
{
    cpu_set_t set;
    size_t o = 0;
    out[0] = '\0';
    if (sched_getaffinity(0, sizeof(set), &set) < 0) {
        snprintf(out, sz, "(0)");
        return;
    }
    o += (size_t)snprintf(out + o, sz - o, "(");
    bool first = true;
    for (int i = 0; i < CPU_SETSIZE && o + 8 < sz; i++) {
        if (!CPU_ISSET(i, &set))
            continue;
        o += (size_t)snprintf(out + o, sz - o, "%s%d", first ? "" : ",", i);
        first = false;
    }
    snprintf(out + o, sz - o, ")");
}

static int find_port(const char *name, uint16_t *port, char *why, size_t whysz)
{
    char *end;
    unsigned long idx = strtoul(name, &end, 10);
    if (*name && !*end) {
        if (idx >= RTE_MAX_ETHPORTS || !rte_eth_dev_is_valid_port((uint16_t)idx))
            goto none;
        *port = (uint16_t)idx;
        return 0;
    }
    if (rte_eth_dev_get_port_by_name(name, port) == 0)
        return 0;
none:;
    char list[256] = "";
    size_t o = 0;
    uint16_t p;
    RTE_ETH_FOREACH_DEV(p) {
        char n[RTE_ETH_NAME_MAX_LEN];
        if (rte_eth_dev_get_name_by_port(p, n) == 0 && o + strlen(n) + 8 < sizeof(list))
            o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%u=%s", o ? ", " : "", p, n);
    }
    snprintf(why, whysz, "dpdk-port: no port \"%s\" (ports: %s)", name, o ? list : "none; check dpdk-eal");
    return -ENODEV;
}

static int port_setup(char *why, size_t whysz)
{
    struct rte_eth_dev_info info;
    uint16_t port = G.port;
    int rc = rte_eth_dev_info_get(port, &info);
    if (rc < 0) {
        snprintf(why, whysz, "dpdk-port: cannot read the device: %s", rte_strerror(-rc));
        return rc;
    }
    snprintf(G.driver, sizeof(G.driver), "%s", info.driver_name ? info.driver_name : "?");
    if (info.if_index && !if_indextoname(info.if_index, G.iface))
        G.iface[0] = '\0';
    if (G.mtu < info.min_mtu || G.mtu > info.max_mtu) {
        snprintf(why, whysz, "dpdk-mtu: %u is outside what %s allows (%u-%u)", G.mtu, G.driver,
                 info.min_mtu, info.max_mtu);
        return -EINVAL;
    }
    uint32_t frame = G.mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN;
    uint32_t room = RTE_PKTMBUF_HEADROOM + (frame > 2048 ? frame : 2048);
    if (room > UINT16_MAX) {
        snprintf(why, whysz, "dpdk-mtu: %u too large for one mbuf", G.mtu);
        return -EINVAL;
    }
    G.pool = rte_pktmbuf_pool_create("imfuse_mbufs", G.cfg.mbufs, DIO_MBUF_CACHE,
                                     RTE_ALIGN(DP_LWIP_MBUF_PRIV, RTE_MBUF_PRIV_ALIGN),
                                     (uint16_t)room, (int)rte_socket_id());
    if (!G.pool) {
        snprintf(why, whysz, "dpdk-mbufs: cannot make a pool of %u mbufs: %s (memory: see -m or hugepages in dpdk-eal)",
                 G.cfg.mbufs, rte_strerror(rte_errno));
        return -ENOMEM;
    }
    struct rte_eth_conf conf;
    memset(&conf, 0, sizeof(conf));
    conf.rxmode.mtu = G.mtu;
    uint64_t want_rx = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_TCP_CKSUM;
    if ((info.rx_offload_capa & want_rx) == want_rx) {
        conf.rxmode.offloads |= want_rx;
        G.rx_csum_hw = true;
    }
    uint64_t want_tx = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_TCP_CKSUM;
    if ((info.tx_offload_capa & want_tx) == want_tx) {
        conf.txmode.offloads |= want_tx;
        G.tx_csum_hw = true;
    }
    conf.intr_conf.rxq = G.cfg.idle == DP_DPDK_IDLE_ADAPTIVE;
    rc = rte_eth_dev_configure(port, 1, 1, &conf);
    if (rc < 0 && conf.intr_conf.rxq) {
        conf.intr_conf.rxq = 0;     /* the PMD has no Rx interrupt: nap instead */
        rc = rte_eth_dev_configure(port, 1, 1, &conf);
    }
    if (rc < 0) {
        snprintf(why, whysz, "dpdk-port %s: configure failed: %s", G.cfg.port, rte_strerror(-rc));
        return rc;
    }
    G.rx_intr = conf.intr_conf.rxq;
    uint16_t nrx = DIO_RX_DESC, ntx = DIO_TX_DESC;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
    int sock = rte_eth_dev_socket_id(port);
    if (sock < 0)
        sock = (int)rte_socket_id();
    if ((rc = rte_eth_rx_queue_setup(port, 0, nrx, (unsigned)sock, NULL, G.pool)) < 0 ||
        (rc = rte_eth_tx_queue_setup(port, 0, ntx, (unsigned)sock, NULL)) < 0) {
        snprintf(why, whysz, "dpdk-port %s: queue set-up failed: %s", G.cfg.port, rte_strerror(-rc));
        return rc;
    }
    if ((rc = rte_eth_dev_start(port)) < 0) {
        snprintf(why, whysz, "dpdk-port %s: start failed: %s", G.cfg.port, rte_strerror(-rc));
        return rc;
    }
    G.port_up = true;
    rte_eth_macaddr_get(port, &G.mac);
    /* Configured with Rx interrupts is not having them: the queue must give a file to wait on. */
    if (G.rx_intr && rte_eth_dev_rx_intr_ctl_q_get_fd(port, 0) < 0)
        G.rx_intr = false;
    return 0;
}

int dp_dpdk_setup(const struct dp_dpdk_cfg *cfg, char *why, size_t whysz)
{
    char *argv[128], lcores[600], cpus[512];
    int argc = 0, rc;
    if (G.eal_up) {
        snprintf(why, whysz, "dpdk is already set up in this process");
        return -EALREADY;
    }
    G.cfg = *cfg;
    G.cfg.eal = G.cfg.port = NULL;
    if (!G.cfg.mtu)
        G.cfg.mtu = DP_DPDK_DEF_MTU;
    if (!G.cfg.mbufs)
        G.cfg.mbufs = DP_DPDK_DEF_MBUFS;
    if (!G.cfg.max_conns)
        G.cfg.max_conns = DP_DPDK_DEF_MAX_CONNS;
    if (!G.cfg.lport_lo) {
        G.cfg.lport_lo = DP_DPDK_DEF_LPORT_LO;
        G.cfg.lport_hi = DP_DPDK_DEF_LPORT_HI;
    }
    G.mtu = (uint16_t)G.cfg.mtu;
    G.eal_copy = strdup(cfg->eal ? cfg->eal : "");
    G.port_copy = strdup(cfg->port ? cfg->port : "");
    G.cfg.port = G.port_copy;
    G.cfg.eal = cfg->eal;
    if (!G.eal_copy || !G.port_copy) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    if (!*G.port_copy) {
        snprintf(why, whysz, "dpdk-port is required with io dpdk");
        return -EINVAL;
    }
    argv[argc++] = (char *)"imfused";
    rc = split_args(G.eal_copy, argv + argc, 120);
    if (rc < 0) {
        snprintf(why, whysz, "dpdk-eal: more than 120 arguments");
        return -E2BIG;
    }
    for (int i = 1; i <= rc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-l") || !strcmp(a, "-c") || !strncmp(a, "--lcores", 8) ||
            !strncmp(a, "--main-lcore", 12) || !strncmp(a, "-l", 2) || !strncmp(a, "-c", 2)) {
            snprintf(why, whysz, "dpdk-eal: \"%s\": the daemon sets the lcore list itself "
                     "(controlplane on lcore 0, the dataplane worker registers as an lcore)", a);
            return -EINVAL;
        }
    }
    argc += rc;
    cpu_list(cpus, sizeof(cpus));
    snprintf(lcores, sizeof(lcores), "--lcores=0@%s", cpus);
    argv[argc++] = lcores;
    argv[argc] = NULL;
    rc = rte_eal_init(argc, argv);
    if (rc < 0) {
        snprintf(why, whysz, "dpdk-eal: EAL initialisation failed: %s", rte_strerror(rte_errno));
        return -EINVAL;
    }
    G.eal_up = true;
    if ((rc = find_port(G.port_copy, &G.port, why, whysz)) < 0)
        return rc;
    return port_setup(why, whysz);
}

int dp_dpdk_set_ip(uint32_t addr, uint8_t prefix, uint32_t gateway, char *why, size_t whysz)
{
    if (!addr || prefix < 1 || prefix > 32) {
        snprintf(why, whysz, "the dpdk port needs an address and a prefix of 1-32");
        return -EINVAL;
    }
    G.cfg.addr = addr;
    G.cfg.prefix = prefix;
    G.cfg.gateway = gateway;
    return 0;
}

const char *dp_dpdk_kernel_iface(void)
{
    return G.iface;
}

const char *dp_dpdk_driver(void)
{
    return G.driver;
}

bool dp_dpdk_rx_interrupt(void)
{
    return G.rx_intr;
}

void dp_dpdk_csum_offload(bool *rx, bool *tx)
{
    *rx = G.rx_csum_hw;
    *tx = G.tx_csum_hw;
}

void dp_dpdk_cleanup(void)
{
    if (G.port_up) {
        rte_eth_dev_stop(G.port);
        rte_eth_dev_close(G.port);
        G.port_up = false;
    }
    if (G.pool) {
        rte_mempool_free(G.pool);
        G.pool = NULL;
    }
    if (G.eal_up) {
        rte_eal_cleanup();
        G.eal_up = false;
    }
    free(G.eal_copy);
    free(G.port_copy);
    G.eal_copy = G.port_copy = NULL;
}

/* ---- frames: the lwIP side's calls ----------------------------------------------- */

void dp_pkt_free(void *m)
{
    rte_pktmbuf_free(m);
}

void *dp_pkt_tx_alloc(uint16_t len, uint8_t **data)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(G.pool);
    if (!m) {
        DP_STAT_ADD(cur->w, io_drop_nombuf, 1);
        return NULL;
    }
    char *p = rte_pktmbuf_append(m, len);
    if (!p) {
        rte_pktmbuf_free(m);
        DP_STAT_ADD(cur->w, io_drop_tx, 1);
        return NULL;
    }
    *data = (uint8_t *)p;
    return m;
}

static void tx_flush(struct dio *d)
{
    unsigned sent = 0;
    /* A few tries: the queue may be momentarily full; then the rest are dropped (TCP retransmits). */
    for (int tries = 0; sent < d->n_tx && tries < 4; tries++)
        sent += rte_eth_tx_burst(G.port, 0, d->tx + sent, (uint16_t)(d->n_tx - sent));
    if (sent < d->n_tx) {
        DP_STAT_ADD(d->w, io_drop_tx, d->n_tx - sent);
        rte_pktmbuf_free_bulk(d->tx + sent, d->n_tx - sent);
    }
    if (sent) {
        DP_STAT_ADD(d->w, io_pkts_out, sent);   /* bytes are counted at queue time */
        d->turn_busy = true;
    }
    d->n_tx = 0;
}

/* lwIP left the IPv4 and TCP checksums to the port: mark the mbuf for it. */
static void tx_offload(struct rte_mbuf *m)
{
    uint32_t len = rte_pktmbuf_data_len(m);
    struct rte_ether_hdr *eh = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
    if (len < sizeof(*eh) + sizeof(struct rte_ipv4_hdr) || eh->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
        return;
    struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(eh + 1);
    uint32_t ihl = (uint32_t)(ip->version_ihl & 0x0f) * 4;
    m->l2_len = sizeof(*eh);
    m->l3_len = ihl;
    m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
    ip->hdr_checksum = 0;
    if (ip->next_proto_id == IPPROTO_TCP && len >= sizeof(*eh) + ihl + sizeof(struct rte_tcp_hdr)) {
        struct rte_tcp_hdr *th = (struct rte_tcp_hdr *)((uint8_t *)ip + ihl);
        m->ol_flags |= RTE_MBUF_F_TX_TCP_CKSUM;
        th->cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
    }
}

void dp_pkt_tx_queue(void *m)
{
    struct dio *d = cur;
    struct rte_mbuf *mb = m;
    if (G.tx_csum_hw)
        tx_offload(mb);
    DP_STAT_ADD(d->w, io_bytes_out, rte_pktmbuf_pkt_len(mb));
    d->tx[d->n_tx++] = mb;
    if (d->n_tx == DIO_BURST)
        tx_flush(d);
}

/* ---- the loop --------------------------------------------------------------------------- */

static unsigned csum_verdict(const struct rte_mbuf *m)
{
    unsigned v = 0;
    uint64_t ip = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
    uint64_t l4 = m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK;
    if (ip == RTE_MBUF_F_RX_IP_CKSUM_GOOD)
        v |= DP_LWIP_CSUM_IP_GOOD;
    if (l4 == RTE_MBUF_F_RX_L4_CKSUM_GOOD)
        v |= DP_LWIP_CSUM_L4_GOOD;
    if (ip == RTE_MBUF_F_RX_IP_CKSUM_BAD || l4 == RTE_MBUF_F_RX_L4_CKSUM_BAD)
        v |= DP_LWIP_CSUM_BAD;
    return v;
}

/* One rx burst into lwIP; returns frames received. */
static unsigned rx_turn(struct dio *d)
{
    struct rte_mbuf *pkts[DIO_BURST];
    uint16_t n = rte_eth_rx_burst(G.port, 0, pkts, DIO_BURST);
    if (!n)
        return 0;
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < n; i++) {
        struct rte_mbuf *m = pkts[i];
        uint32_t len = rte_pktmbuf_pkt_len(m);
        bytes += len;
        /* The glue's own checks: one segment, at least an Ethernet header, at most
         * one MTU of payload.  Everything past the Ethernet header is lwIP's to check. */
        if (m->nb_segs != 1 || len < RTE_ETHER_HDR_LEN ||
            len > (uint32_t)G.mtu + RTE_ETHER_HDR_LEN + 4u) {
            DP_STAT_ADD(d->w, io_drop_bad, 1);
            rte_pktmbuf_free(m);
            continue;
        }
        unsigned v = G.rx_csum_hw ? csum_verdict(m) : 0;
        if (v & DP_LWIP_CSUM_BAD) {
            DP_STAT_ADD(d->w, io_drop_bad, 1);
            rte_pktmbuf_free(m);
            continue;
        }
        dp_lwip_input(m, rte_mbuf_to_priv(m), rte_pktmbuf_mtod(m, void *), (uint16_t)len, v);
    }
    DP_STAT_ADD(d->w, io_pkts_in, n);
    DP_STAT_ADD(d->w, io_bytes_in, bytes);
    return n;
}

/* Refresh what only the NIC counts (missed frames, errors, no mbuf on receive). */
static void nic_stats(struct dio *d, uint64_t now_ms)
{
    if (now_ms < d->nic_stats_at)
        return;
    d->nic_stats_at = now_ms + DIO_NIC_STATS_MS;
    struct rte_eth_stats st;
    if (rte_eth_stats_get(G.port, &st) < 0)
        return;
    DP_STAT_SET(d->w, io_nic_missed, st.imissed);
    DP_STAT_SET(d->w, io_nic_errors, st.ierrors + st.oerrors);
    DP_STAT_SET(d->w, io_nic_nombuf, st.rx_nombuf);

    /* The link (net_tap: its kernel side's IFF_UP and IFF_RUNNING). */
    struct rte_eth_link link;
    if (rte_eth_link_get_nowait(G.port, &link) < 0)
        return;
    int up = link.link_status == RTE_ETH_LINK_UP;
    DP_STAT_SET(d->w, io_port_down, !up);
    if (d->link == 1 && !up)
        DP_STAT_ADD(d->w, io_port_downs, 1);
    if (d->link != up && d->link >= 0)
        IM_LOG(up ? IM_LOG_INFO : IM_LOG_WARN, "dp", "dpdk port %s: link %s", G.cfg.port, up ? "up" : "down");
    d->link = up;
}

static void lwip_counters(struct dio *d)
{
    struct dp_lwip_counters lc;
    dp_lwip_counters(&lc);
    DP_STAT_SET(d->w, tcp_open, lc.tcp_open);
    DP_STAT_SET(d->w, tcp_retransmits, lc.retransmits);
    DP_STAT_SET(d->w, tcp_refused, lc.accept_refused);
    DP_STAT_SET(d->w, tcp_drops, lc.tcp_drops);
}

/* The work of one turn: returns events seen (frames + connection events). */
static int turn(struct dio *d)
{
    int n = 0;
    tx_flush(d);                    /* writes the rest of the last turn made */
    n += (int)rx_turn(d);
    dp_lwip_timers();
    n += dp_lwip_dispatch();
    tx_flush(d);
    return n;
}

/* Sleep until a frame, a wake-up or timeout_ms. */
static void idle_sleep(struct dio *d, uint32_t timeout_ms)
{
    struct epoll_event ev[4];
    if (G.rx_intr && d->intr_fd >= 0) {
        rte_eth_dev_rx_intr_enable(G.port, 0);
        /* A frame that came before the interrupt was armed would not wake us. */
        if (rte_eth_rx_queue_count(G.port, 0) > 0) {
            rte_eth_dev_rx_intr_disable(G.port, 0);
            return;
        }
        epoll_wait(d->ep_fd, ev, 4, (int)timeout_ms);
        rte_eth_dev_rx_intr_disable(G.port, 0);
    } else {
        epoll_wait(d->ep_fd, ev, 4, (int)(timeout_ms < DIO_NAP_MS ? timeout_ms : DIO_NAP_MS));
    }
    uint64_t v;
    ssize_t r = read(d->wake_fd, &v, sizeof(v));
    (void)r;
    DP_STAT_ADD(d->w, io_sleeps, 1);
}

static int dio_poll(struct dp_worker *w, int timeout_ms)
{
    struct dio *d = w->io;
    cur = d;
    if (!d->registered) {
        /* The worker's thread becomes an lcore (mempool caches, per-lcore state). */
        if (rte_lcore_id() == LCORE_ID_ANY && rte_thread_register() < 0)
            return -EINVAL;
        d->registered = true;
    }
    /* Close the previous turn: its work ran after poll returned (pending, ring).
     * It did work if its poll moved frames, or if what ran after the poll
     * (flushes, the controlplane's messages) queued frames for this turn. */
    uint64_t now = rte_rdtsc();
    if (d->turn_busy || d->n_tx) {
        DP_STAT_ADD(w, io_busy_cycles, now - d->turn_start);
        DP_STAT_ADD(w, io_busy_turns, 1);
    }
    d->turn_start = now;
    d->turn_busy = false;
    int n = turn(d);
    if (n > 0)
        d->turn_busy = true;
    nic_stats(d, w->now_ms);
    lwip_counters(d);
    if (n > 0 || timeout_ms == 0 || dp_lwip_pending()) {
        d->idle_turns = 0;
        return n;
    }
    if (G.cfg.idle == DP_DPDK_IDLE_SPIN || ++d->idle_turns < DIO_IDLE_SPINS) {
        rte_pause();
        return 0;
    }
    idle_sleep(d, dp_lwip_sleep_ms((uint32_t)timeout_ms));
    d->turn_start = rte_rdtsc();
    n = turn(d);
    if (n > 0) {
        d->turn_busy = true;
        d->idle_turns = 0;
    }
    return n;
}

static void dio_wake(struct dp_worker *w)
{
    struct dio *d = w->io;
    uint64_t one = 1;
    ssize_t r = write(d->wake_fd, &one, sizeof(one));
    (void)r;    /* EAGAIN: a wake-up is pending already */
}

static int dio_init(struct dp_worker *w, char *why, size_t whysz)
{
    if (!G.port_up) {
        snprintf(why, whysz, "the dpdk port is not set up (dp_dpdk_setup first)");
        return -ENODEV;
    }
    if (!G.cfg.addr) {
        snprintf(why, whysz, "the dpdk port has no address (dpdk-address)");
        return -EINVAL;
    }
    struct dio *d = calloc(1, sizeof(*d));
    if (!d) {
        snprintf(why, whysz, "out of memory");
        return -ENOMEM;
    }
    d->w = w;
    d->link = -1;
    d->intr_fd = -1;
    d->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    d->ep_fd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN };
    if (d->wake_fd < 0 || d->ep_fd < 0 || epoll_ctl(d->ep_fd, EPOLL_CTL_ADD, d->wake_fd, &ev) < 0) {
        snprintf(why, whysz, "eventfd/epoll: %s", strerror(errno));
        goto fail;
    }
    if (G.rx_intr) {
        d->intr_fd = rte_eth_dev_rx_intr_ctl_q_get_fd(G.port, 0);
        struct epoll_event iev = { .events = EPOLLIN | EPOLLET };
        if (d->intr_fd < 0 || epoll_ctl(d->ep_fd, EPOLL_CTL_ADD, d->intr_fd, &iev) < 0)
            d->intr_fd = -1;    /* nap instead */
    }
    struct dp_lwip_cfg lc = {
        .addr = G.cfg.addr,
        .mask = G.cfg.prefix ? rte_cpu_to_be_32(~0u << (32 - G.cfg.prefix)) : 0,
        .gateway = G.cfg.gateway,
        .mtu = G.mtu,
        .max_conns = G.cfg.max_conns,
        .lport_lo = G.cfg.lport_lo,
        .lport_hi = G.cfg.lport_hi,
        .rx_csum_hw = G.rx_csum_hw,
        .tx_csum_hw = G.tx_csum_hw,
    };
    memcpy(lc.mac, G.mac.addr_bytes, 6);
    w->io = d;
    cur = d;
    if (dp_lwip_init(w, &lc, why, whysz) < 0) {
        w->io = NULL;
        goto fail;
    }
    return 0;
fail:
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    if (d->ep_fd >= 0)
        close(d->ep_fd);
    free(d);
    return -EINVAL;
}

static void dio_fini(struct dp_worker *w)
{
    struct dio *d = w->io;
    if (!d)
        return;
    cur = d;
    dp_lwip_fini(w);
    tx_flush(d);
    close(d->wake_fd);
    close(d->ep_fd);
    free(d);
    w->io = NULL;
    if (cur == d)
        cur = NULL;
}

static int dio_listen(struct dp_listener *l, const char *host, uint16_t port)
{
    cur = l->w->io;
    return dp_lwip_listen(l, host, port);
}

static int dio_connect(struct dp_conn *c, const char *host, uint16_t port)
{
    cur = c->w->io;
    return dp_lwip_connect(c, host, port);
}

const struct dp_io_ops dp_io_dpdk_ops = {
    .name = "dpdk",
    .init = dio_init,
    .fini = dio_fini,
    .poll = dio_poll,
    .wake = dio_wake,
    .listen = dio_listen,
    .unlisten = dp_lwip_unlisten,
    .connect = dio_connect,
    .write = dp_lwip_write,
    .want_write = dp_lwip_want_write,
    .want_read = dp_lwip_want_read,
    .close = dp_lwip_close,
    .keepalive = dp_lwip_keepalive,
};
