/*
 * test_lwip.c - the lwIP that imfuse builds (dataplane/dpdk.mk with
 * dataplane/lwip/lwipopts.h) closes the traps of Debian's prebuilt one.
 * lwIP runs here as it does in the dataplane (NO_SYS=1, raw API) over an
 * IP-level test interface that records every packet lwIP sends; SYNs are
 * injected as real packets with real checksums.
 *
 *  - initial sequence numbers: distinct, not sequential, balanced bits, for
 *    active and passive opens; the same tuple later advances with the
 *    4-microsecond clock (RFC 6528)
 *  - the MSS advertised follows the interface MTU; window scaling offered
 *  - the SYN backlog of a listener is a limit
 *  - PBUF_POOL pbufs hold full jumbo frames (ASan checks every byte)
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wclobbered"
#include "t.h"

#include "lwip/init.h"
#include "lwip/inet_chksum.h"
#include "lwip/ip.h"
#include "lwip/ip4.h"
#include "lwip/netif.h"
#include "lwip/pbuf.h"
#include "lwip/priv/tcp_priv.h"
#include "lwip/tcp.h"
#include "lwip/timeouts.h"

/* ---- a test interface that records what lwIP sends ---------------------- */

#define MAXPKT 2048
struct pkt {
    uint8_t b[256];         /* headers are enough */
    size_t len;
};
static struct pkt sent[MAXPKT];
static size_t n_sent;
static struct netif nif;

static err_t rec_output(struct netif *n, struct pbuf *p, const ip4_addr_t *dst)
{
    (void)n;
    (void)dst;
    if (n_sent < MAXPKT) {
        struct pkt *k = &sent[n_sent++];
        k->len = pbuf_copy_partial(p, k->b, sizeof(k->b), 0);
    }
    return ERR_OK;
}

static err_t rec_init(struct netif *n)
{
    n->output = rec_output;
    n->mtu = 1500;
    n->flags = NETIF_FLAG_UP | NETIF_FLAG_LINK_UP;
    n->name[0] = 't';
    n->name[1] = '0';
    return ERR_OK;
}

static void setup(void)
{
    static bool done;
    n_sent = 0;
    if (done)
        return;
    done = true;
    lwip_init();
    ip4_addr_t ip, mask, gw;
    IP4_ADDR(&ip, 198, 18, 0, 2);
    IP4_ADDR(&mask, 255, 255, 255, 0);
    IP4_ADDR(&gw, 198, 18, 0, 1);
    netif_add(&nif, &ip, &mask, &gw, NULL, rec_init, ip4_input);
    netif_set_default(&nif);
    netif_set_up(&nif);
    netif_set_link_up(&nif);
}

/* Fields of a recorded IPv4/TCP packet. */
static const uint8_t *tcph(const struct pkt *k)
{
    return k->b + (k->b[0] & 0x0f) * 4;
}
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint8_t tcp_flags_of(const struct pkt *k)
{
    return tcph(k)[13];
}
/* Value of TCP option kind (MSS: 16 bits, window scale: 8 bits), or -1. */
static long tcp_option(const struct pkt *k, uint8_t kind)
{
    const uint8_t *t = tcph(k);
    size_t hl = (size_t)(t[12] >> 4) * 4;
    for (size_t i = 20; i < hl;) {
        uint8_t o = t[i];
        if (o == 0)
            break;
        if (o == 1) {
            i++;
            continue;
        }
        uint8_t l = t[i + 1];
        if (l < 2 || i + l > hl)
            break;
        if (o == kind)
            return l == 4 ? (long)(t[i + 2] << 8 | t[i + 3]) : (long)t[i + 2];
        i += l;
    }
    return -1;
}

/* Feed lwIP a SYN from 198.18.0.1:sport to 198.18.0.2:dport, checksums right. */
static void inject_syn(uint16_t sport, uint16_t dport, uint32_t seq)
{
    uint8_t b[44] = { 0 };
    b[0] = 0x45;
    b[3] = sizeof(b);
    b[8] = 64;
    b[9] = 6;
    uint8_t src[4] = { 198, 18, 0, 1 }, dst[4] = { 198, 18, 0, 2 };
    memcpy(b + 12, src, 4);
    memcpy(b + 16, dst, 4);
    uint16_t ck = inet_chksum(b, 20);
    memcpy(b + 10, &ck, 2);
    uint8_t *t = b + 20;
    t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport;
    t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
    t[4] = (uint8_t)(seq >> 24); t[5] = (uint8_t)(seq >> 16); t[6] = (uint8_t)(seq >> 8); t[7] = (uint8_t)seq;
    t[12] = 6 << 4;             /* 24-byte header: MSS option */
    t[13] = 0x02;               /* SYN */
    t[14] = 0xff; t[15] = 0xff;
    t[20] = 2; t[21] = 4; t[22] = 0x05; t[23] = 0xb4;
    struct pbuf *p = pbuf_alloc(PBUF_RAW, 24, PBUF_RAM);
    pbuf_take(p, t, 24);
    ip4_addr_t s4, d4;
    IP4_ADDR(&s4, 198, 18, 0, 1);
    IP4_ADDR(&d4, 198, 18, 0, 2);
    ck = ip_chksum_pseudo(p, IP_PROTO_TCP, 24, (ip_addr_t *)&s4, (ip_addr_t *)&d4);
    pbuf_free(p);
    memcpy(t + 16, &ck, 2);
    p = pbuf_alloc(PBUF_RAW, sizeof(b), PBUF_RAM);
    pbuf_take(p, b, sizeof(b));
    nif.input(p, &nif);
}

static err_t on_connected(void *arg, struct tcp_pcb *pcb, err_t err)
{
    (void)arg; (void)pcb; (void)err;
    return ERR_OK;
}

/* An active open from local port lport to 198.18.0.1:5222; returns the SYN's ISN. */
static uint32_t syn_isn(uint16_t lport, struct tcp_pcb **keep)
{
    size_t before = n_sent;
    struct tcp_pcb *pcb = tcp_new();
    T_ASSERT(pcb);
    ip_set_option(pcb, SOF_REUSEADDR);
    T_EQ_INT(tcp_bind(pcb, IP4_ADDR_ANY, lport), ERR_OK);
    ip4_addr_t r;
    IP4_ADDR(&r, 198, 18, 0, 1);
    T_EQ_INT(tcp_connect(pcb, &r, 5222, on_connected), ERR_OK);
    T_EQ_UINT(n_sent, before + 1);
    T_EQ_UINT(tcp_flags_of(&sent[before]), 0x02);
    if (keep)
        *keep = pcb;
    else
        tcp_abort(pcb);
    return be32(tcph(&sent[before]) + 4);
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Distinct, far apart in sequence, half the bits set on average. */
static void check_unpredictable(const uint32_t *v, size_t n)
{
    unsigned long bits = 0;
    for (size_t i = 0; i < n; i++) {
        bits += (unsigned long)__builtin_popcount(v[i]);
        for (size_t j = 0; j < i; j++)
            if (v[i] == v[j])
                T_FAIL("ISN %zu equals ISN %zu (%" PRIu32 ")", i, j, v[i]);
        if (i > 0) {
            uint32_t d = v[i] - v[i - 1];
            /* Sequential ISNs (6510, 6510, 6511... in Debian's build) are
             * within a few counts; random ones are that close with p ~ 2^-21. */
            if (d < 1024 || d > 0u - 1024)
                T_FAIL("ISN %zu is %" PRIu32 " after ISN %zu: sequential", i, d, i - 1);
        }
    }
    double mean = (double)bits / (double)n;
    if (mean < 14.0 || mean > 18.0)
        T_FAIL("mean popcount %.2f of %zu ISNs (want ~16)", mean, n);
}

T_TEST(isn_active_unpredictable)
{
    setup();
    uint32_t v[64];
    for (size_t i = 0; i < 64; i++)
        v[i] = syn_isn((uint16_t)(30000 + i), NULL);
    check_unpredictable(v, 64);
}

T_TEST(isn_passive_unpredictable)
{
    setup();
    struct tcp_pcb *l = tcp_new();
    T_EQ_INT(tcp_bind(l, IP4_ADDR_ANY, 7000), ERR_OK);
    l = tcp_listen_with_backlog(l, 255);
    T_ASSERT(l);
    uint32_t v[64];
    for (size_t i = 0; i < 64; i++) {
        size_t before = n_sent;
        inject_syn((uint16_t)(41000 + i), 7000, 1000);
        T_EQ_UINT(n_sent, before + 1);
        T_EQ_UINT(tcp_flags_of(&sent[before]), 0x12);     /* SYN-ACK */
        T_EQ_UINT(be32(tcph(&sent[before]) + 8), 1001);   /* acks our SYN */
        v[i] = be32(tcph(&sent[before]) + 4);
    }
    check_unpredictable(v, 64);
    /* Drop the half-open connections and the listener. */
    while (tcp_active_pcbs)
        tcp_abort(tcp_active_pcbs);
    tcp_close(l);
}

/* RFC 6528's clock: the same tuple, later, starts higher by about dt / 4 us. */
T_TEST(isn_same_tuple_follows_clock)
{
    setup();
    uint64_t t0 = mono_us();
    uint32_t a = syn_isn(30500, NULL);
    uint64_t t1 = mono_us();
    usleep(20000);
    uint64_t t2 = mono_us();
    uint32_t b = syn_isn(30500, NULL);
    uint64_t t3 = mono_us();
    uint32_t d = b - a;
    uint64_t lo = (t2 - t1) / 4, hi = (t3 - t0) / 4 + 1;
    if (d < lo || d > hi)
        T_FAIL("same tuple: ISN advanced by %" PRIu32 ", expected %" PRIu64 "..%" PRIu64, d, lo, hi);
}

T_TEST(mss_follows_mtu_and_window_scaling)
{
    setup();
    static const struct { uint16_t mtu, mss; } cases[] = { { 1500, 1460 }, { 9000, 8960 }, { 1280, 1240 } };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        nif.mtu = cases[i].mtu;
        struct tcp_pcb *pcb;
        size_t before = n_sent;
        syn_isn((uint16_t)(31000 + i), &pcb);
        T_EQ_INT(tcp_option(&sent[before], 2), cases[i].mss);
        T_EQ_INT(tcp_option(&sent[before], 3), TCP_RCV_SCALE);
        tcp_abort(pcb);
    }
    nif.mtu = 1500;
}

T_TEST(syn_backlog_is_a_limit)
{
    setup();
    struct tcp_pcb *l = tcp_new();
    T_EQ_INT(tcp_bind(l, IP4_ADDR_ANY, 7001), ERR_OK);
    l = tcp_listen_with_backlog(l, 4);
    T_ASSERT(l);
    for (uint16_t i = 0; i < 10; i++)
        inject_syn((uint16_t)(42000 + i), 7001, 5000);
    size_t synacks = 0;
    for (size_t i = 0; i < n_sent; i++)
        synacks += tcp_flags_of(&sent[i]) == 0x12;
    T_EQ_UINT(synacks, 4);
    while (tcp_active_pcbs)
        tcp_abort(tcp_active_pcbs);
    tcp_close(l);
}

T_TEST(pbuf_pool_holds_full_frames)
{
    setup();
    static uint8_t frame[9018];
    for (size_t i = 0; i < sizeof(frame); i++)
        frame[i] = (uint8_t)i;
    for (size_t len = 60; len <= sizeof(frame); len += 1193) {
        struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)len, PBUF_POOL);
        T_ASSERT(p);
        T_EQ_INT(pbuf_take(p, frame, (u16_t)len), ERR_OK);
        uint8_t back[sizeof(frame)];
        T_EQ_UINT(pbuf_copy_partial(p, back, (u16_t)len, 0), len);
        T_EQ_MEM(back, frame, len);
        pbuf_free(p);
    }
}

T_MAIN(T_RUN(isn_active_unpredictable), T_RUN(isn_passive_unpredictable),
       T_RUN(isn_same_tuple_follows_clock), T_RUN(mss_follows_mtu_and_window_scaling),
       T_RUN(syn_backlog_is_a_limit), T_RUN(pbuf_pool_holds_full_frames))
