/*
 * test_dpdk.c - the dpdk backend (dp_io_dpdk.c + dp_lwip.c) on a real DPDK
 * port: net_tap in a private network namespace, lwIP at 198.18.0.2, the
 * kernel on the TAP's other side at 198.18.0.1 playing the servers and
 * clients with ordinary sockets (threads of this process).
 *
 *  - echo both ways (outbound connect, inbound accept), 2 MiB each way, in
 *    pieces, with the receiver paused midway (the window closes, nothing lost)
 *  - graceful close with unread input: the peer sees FIN, never a reset
 *  - connects to loopback, ::1, the own address, a host name: refused with
 *    words, no crash
 *  - the packet glue: malformed frames (short, truncated IP and TCP, bad
 *    lengths and checksums, oversize, random bytes) dropped and counted, ARP
 *    answered, and the stack still works afterwards
 *  - 2,000 connections opened and closed: nothing left (connections, PCBs,
 *    and under ASan nothing leaked; rte_eal_cleanup at exit)
 *
 * Needs root (unshare -n, a TAP device): skipped (77) otherwise.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wclobbered"
#include "t.h"
#include "dp_dpdk.h"
#include "dp_int.h"
#include "dp_stats.h"
#include "cp_netlink.h"
#include "dp_lwip.h"

#define IFACE   "imft0"
#define KADDR   "198.18.0.1"
#define DADDR   "198.18.0.2"

static struct dp_worker *W;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#define RUN_UNTIL(cond, ms) do { \
    uint64_t t_dl_ = now_ms() + (ms); \
    while (!(cond) && now_ms() < t_dl_) dp_worker_run_once(W, 5); \
    if (!(cond)) T_FAIL("timed out waiting for %s", #cond); } while (0)

static void run_for(int ms)
{
    uint64_t dl = now_ms() + (uint64_t)ms;
    while (now_ms() < dl)
        dp_worker_run_once(W, 5);
}

static uint8_t pat(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static void teardown(void)
{
    dp_worker_free(W);
    W = NULL;
    dp_dpdk_cleanup();
}

static void setup(void)
{
    if (W)
        return;
    char why[512];
    struct dp_dpdk_cfg cfg = {
        .eal = "--no-pci --no-huge -m 256 --no-shconf --no-telemetry --log-level=lib.eal:error "
               "--vdev=net_tap0,iface=" IFACE,
        .port = "net_tap0",
        .prefix = 24,
        .mtu = 1500,
        .mbufs = 4095,
        .max_conns = 3000,
        .lport_lo = 20000,
        .lport_hi = 60000,
    };
    inet_pton(AF_INET, DADDR, &cfg.addr);
    if (dp_dpdk_setup(&cfg, why, sizeof(why)) < 0) {
        fprintf(stderr, "dp_dpdk_setup: %s\n", why);
        exit(1);
    }
    if (strcmp(dp_dpdk_kernel_iface(), IFACE)) {
        fprintf(stderr, "kernel iface \"%s\", expected " IFACE "\n", dp_dpdk_kernel_iface());
        exit(1);
    }
    /* The kernel side of the TAP, by libnl (the controlplane's code). */
    struct cp_nl_addr ka;
    if (cp_nl_parse_prefix(KADDR "/24", &ka, why, sizeof(why)) < 0 ||
        cp_nl_iface_up(IFACE, &ka, why, sizeof(why)) < 0) {
        fprintf(stderr, "kernel side: %s\n", why);
        exit(1);
    }
    struct dp_worker_cfg wc = { .id = 0, .io = "dpdk" };
    W = dp_worker_new(&wc, why, sizeof(why));
    if (!W) {
        fprintf(stderr, "dp_worker_new: %s\n", why);
        exit(1);
    }
    atexit(teardown);
}

static struct dp_stats stats(void)
{
    struct dp_stats s;
    dp_worker_stats(W, &s);
    return s;
}

/* ---- the kernel side: a server thread ------------------------------------------ */

enum kmode { K_ECHO, K_SINK, K_SEND_THEN_READ };

struct kserver {
    int lfd;
    uint16_t port;
    enum kmode mode;
    pthread_t tid;
    atomic_bool stop;
    atomic_int accepted, closed, resets;
    atomic_size_t bytes;
    size_t send_total;          /* K_SEND_THEN_READ: bytes to send first */
};

static void *kserver_main(void *arg)
{
    struct kserver *k = arg;
    struct pollfd pf[512];
    int n = 1;
    pf[0].fd = k->lfd;
    pf[0].events = POLLIN;
    static uint8_t buf[65536];
    while (!atomic_load(&k->stop)) {
        if (poll(pf, (nfds_t)n, 20) <= 0)
            continue;
        if (pf[0].revents & POLLIN) {
            for (;;) {
                int fd = accept4(k->lfd, NULL, NULL, SOCK_NONBLOCK);
                if (fd < 0)
                    break;
                atomic_fetch_add(&k->accepted, 1);
                if (k->mode == K_SEND_THEN_READ) {
                    int fl = 0;
                    ioctl(fd, FIONBIO, &fl);
                    uint8_t *b = malloc(k->send_total);
                    for (size_t i = 0; i < k->send_total; i++)
                        b[i] = pat(i);
                    size_t off = 0;
                    while (off < k->send_total) {
                        ssize_t w = write(fd, b + off, k->send_total - off);
                        if (w <= 0)
                            break;
                        off += (size_t)w;
                    }
                    free(b);
                    fl = 1;
                    ioctl(fd, FIONBIO, &fl);
                }
                if (n < 512) {
                    pf[n].fd = fd;
                    pf[n].events = POLLIN;
                    pf[n].revents = 0;
                    n++;
                } else {
                    close(fd);
                }
            }
        }
        for (int i = 1; i < n; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(pf[i].fd, buf, sizeof(buf));
            if (r > 0) {
                atomic_fetch_add(&k->bytes, (size_t)r);
                if (k->mode == K_ECHO) {
                    int fl = 0;
                    ioctl(pf[i].fd, FIONBIO, &fl);
                    for (ssize_t off = 0; off < r;) {
                        ssize_t w = write(pf[i].fd, buf + off, (size_t)(r - off));
                        if (w <= 0)
                            break;
                        off += w;
                    }
                    fl = 1;
                    ioctl(pf[i].fd, FIONBIO, &fl);
                }
                continue;
            }
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r < 0 && errno == ECONNRESET)
                atomic_fetch_add(&k->resets, 1);
            close(pf[i].fd);
            atomic_fetch_add(&k->closed, 1);
            pf[i] = pf[--n];
            i--;
        }
    }
    for (int i = 1; i < n; i++)
        close(pf[i].fd);
    return NULL;
}

static void kserver_start(struct kserver *k, uint16_t port, enum kmode mode)
{
    memset(k, 0, sizeof(*k));
    k->port = port;
    k->mode = mode;
    k->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(k->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, KADDR, &a.sin_addr);
    T_ASSERT(bind(k->lfd, (struct sockaddr *)&a, sizeof(a)) == 0);
    T_ASSERT(listen(k->lfd, 4096) == 0);
    pthread_create(&k->tid, NULL, kserver_main, k);
}

static void kserver_stop(struct kserver *k)
{
    atomic_store(&k->stop, true);
    pthread_join(k->tid, NULL);
    close(k->lfd);
}

/* ---- the dpdk side: connections ------------------------------------------------- */

struct side {
    struct dp_conn *c;
    size_t rxlen, rx_bad;
    int opens, open_status, closes, close_reason;
    char detail[320];
    size_t tx_total, tx_done;
    unsigned seed;
    bool close_when_sent, echo;
};

static void pump(struct side *s)
{
    static uint8_t buf[9000];
    while (s->c && s->tx_done < s->tx_total) {
        s->seed = s->seed * 1103515245u + 12345u;
        size_t n = 1 + (s->seed >> 8) % sizeof(buf);
        if (n > s->tx_total - s->tx_done)
            n = s->tx_total - s->tx_done;
        for (size_t i = 0; i < n; i++)
            buf[i] = pat(s->tx_done + i);
        int rc = dp_conn_write(s->c, buf, n);
        if (rc < 0)
            return;
        s->tx_done += n;
        if (rc == 1)
            return;
    }
    if (s->c && s->close_when_sent && s->tx_done == s->tx_total)
        dp_conn_close(s->c);
}

static void on_open(struct dp_conn *c, int status, const char *detail)
{
    struct side *s = dp_conn_ud(c);
    s->opens++;
    s->open_status = status;
    snprintf(s->detail, sizeof(s->detail), "%s", detail ? detail : "");
    if (status == 0)
        pump(s);
}

static void on_data(struct dp_conn *c, const uint8_t *p, size_t n)
{
    struct side *s = dp_conn_ud(c);
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(s->rxlen + i))
            s->rx_bad++;
    s->rxlen += n;
    if (s->echo && dp_conn_write(c, p, n) == 1)
        dp_conn_pause(c, true);
}

static void on_drain(struct dp_conn *c)
{
    struct side *s = dp_conn_ud(c);
    if (s->echo)
        dp_conn_pause(c, false);
    pump(s);
}

static void on_close(struct dp_conn *c, int reason)
{
    struct side *s = dp_conn_ud(c);
    s->closes++;
    s->close_reason = reason;
    s->c = NULL;
}

static const struct dp_conn_cb side_cb = {
    .on_open = on_open, .on_data = on_data, .on_drain = on_drain, .on_close = on_close,
};

static struct side *accept_into;

static void on_accept(void *ud, struct dp_conn *c)
{
    struct side *s = accept_into;
    T_ASSERT(s != NULL);
    accept_into = NULL;
    s->c = c;
    dp_conn_set_cb(c, &side_cb, s);
}

/* ---- tests ----------------------------------------------------------------------- */

/* Outbound: lwIP connects to the kernel's echo server, 2 MiB there and back. */
T_TEST(echo_outbound_with_pause)
{
    setup();
    struct kserver k;
    kserver_start(&k, 5301, K_ECHO);
    struct side s = { .tx_total = 2u << 20, .seed = 7 };
    int err = 0;
    s.c = dp_conn_connect(W, KADDR, 5301, NULL, &side_cb, &s, &err);
    T_ASSERT(s.c);
    RUN_UNTIL(s.opens == 1, 5000);
    T_EQ_INT(s.open_status, 0);
    T_ASSERT(!strncmp(dp_conn_peer(s.c), KADDR ":5301", 20));
    T_ASSERT(!strncmp(dp_conn_local(s.c), DADDR ":", 11));
    RUN_UNTIL(s.rxlen >= 256 * 1024, 10000);
    /* Paused: the window closes, the echo server blocks, nothing is lost. */
    dp_conn_pause(s.c, true);
    run_for(300);
    size_t held = s.rxlen;
    run_for(200);
    T_EQ_UINT(s.rxlen, held);
    dp_conn_pause(s.c, false);
    RUN_UNTIL(s.rxlen == s.tx_total, 20000);
    T_EQ_UINT(s.rx_bad, 0);
    dp_conn_close(s.c);
    RUN_UNTIL(s.closes == 1, 5000);
    T_EQ_INT(s.close_reason, 0);
    kserver_stop(&k);
    T_EQ_INT(atomic_load(&k.resets), 0);
}

/* Inbound: the kernel connects to lwIP's listener and sends 2 MiB; lwIP echoes. */
struct kclient {
    uint16_t port;
    size_t total, got, bad;
    int rc;
    bool reset, eof;
    const char *why;
};

static void *kclient_echo(void *arg)
{
    struct kclient *kc = arg;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(kc->port) };
    inet_pton(AF_INET, DADDR, &a.sin_addr);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        kc->rc = -errno;
        close(fd);
        return NULL;
    }
    static uint8_t out[65536], in[65536];
    size_t sent = 0;
    while (kc->got < kc->total) {
        if (sent < kc->total) {
            size_t n = kc->total - sent < sizeof(out) ? kc->total - sent : sizeof(out);
            for (size_t i = 0; i < n; i++)
                out[i] = pat(sent + i);
            ssize_t w = send(fd, out, n, MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
        }
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        int pr = poll(&pf, 1, sent < kc->total ? 1 : 10000);
        if (pr < 0 && errno != EINTR) {
            kc->why = strerror(errno);
            break;
        }
        if (pr == 0 && sent >= kc->total) {
            kc->why = "echo stalled for 10 s";
            break;
        }
        ssize_t r = recv(fd, in, sizeof(in), MSG_DONTWAIT);
        if (r == 0) {
            kc->why = "early EOF";
            break;
        }
        if (r < 0 && errno != EAGAIN) {
            kc->why = strerror(errno);
            break;
        }
        for (ssize_t i = 0; i < r; i++)
            if (in[i] != pat(kc->got + (size_t)i))
                kc->bad++;
        if (r > 0)
            kc->got += (size_t)r;
    }
    shutdown(fd, SHUT_WR);
    for (;;) {
        ssize_t r = recv(fd, in, sizeof(in), 0);
        if (r == 0) {
            kc->eof = true;
            break;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            kc->reset = errno == ECONNRESET;
            break;
        }
    }
    close(fd);
    return NULL;
}

T_TEST(echo_inbound)
{
    setup();
    int err = 0;
    struct dp_listener *l = dp_listen(W, DADDR, 7001, false, on_accept, NULL, &err);
    T_ASSERT(l);
    struct side s = { .echo = true };
    accept_into = &s;
    struct kclient kc = { .port = 7001, .total = 2u << 20 };
    pthread_t t;
    pthread_create(&t, NULL, kclient_echo, &kc);
    RUN_UNTIL(s.c != NULL, 5000);
    T_ASSERT(!strncmp(dp_conn_peer(s.c), KADDR ":", 11));
    T_EQ_STR(dp_conn_local(s.c), DADDR ":7001");
    RUN_UNTIL(s.closes == 1, 30000);     /* the client's FIN: close after flush */
    pthread_join(t, NULL);
    if (kc.got != kc.total) {
        struct dp_stats st = stats();
        fprintf(stderr, "  client: %s\n", kc.why ? kc.why : "-");
        fprintf(stderr, "  client: got %zu eof %d reset %d; dp side: rx %zu close %d; drops bad %" PRIu64
                " tx %" PRIu64 " nombuf %" PRIu64 " tcp_drops %" PRIu64 " rexmit %" PRIu64 "\n",
                kc.got, kc.eof, kc.reset, s.rxlen, s.close_reason, st.io_drop_bad, st.io_drop_tx,
                st.io_drop_nombuf, st.tcp_drops, st.tcp_retransmits);
    }
    T_EQ_INT(kc.rc, 0);
    T_EQ_UINT(kc.got, kc.total);
    T_EQ_UINT(kc.bad, 0);
    T_EQ_UINT(s.rx_bad, 0);
    T_ASSERT(kc.eof && !kc.reset);
    dp_listener_close(l);
    run_for(20);
}

/*
 * Graceful close with unread input: the kernel peer sends 1 MiB and then
 * reads; lwIP writes a greeting and closes without reading anything.  The
 * peer must get the greeting and a FIN, never a reset.
 */
T_TEST(close_with_unread_input_is_not_a_reset)
{
    setup();
    struct kserver k;
    kserver_start(&k, 5302, K_SEND_THEN_READ);
    k.send_total = 1u << 20;
    struct side s = { .tx_total = 5000, .seed = 3, .close_when_sent = true };
    int err = 0;
    s.c = dp_conn_connect(W, KADDR, 5302, NULL, &side_cb, &s, &err);
    T_ASSERT(s.c);
    RUN_UNTIL(s.closes == 1, 10000);
    T_EQ_INT(s.close_reason, 0);
    RUN_UNTIL(atomic_load(&k.closed) == 1, 10000);
    kserver_stop(&k);
    T_EQ_INT(atomic_load(&k.resets), 0);
    T_EQ_UINT(atomic_load(&k.bytes), 5000);
}

static void refused(const char *host, uint16_t port, int want, const char *words)
{
    struct side s = { 0 };
    int err = 0;
    s.c = dp_conn_connect(W, host, port, NULL, &side_cb, &s, &err);
    T_ASSERT(s.c);
    RUN_UNTIL(s.closes == 1, 2000);
    T_EQ_INT(s.opens, 1);
    T_EQ_INT(s.open_status, want);
    if (!strstr(s.detail, words))
        T_FAIL("%s: detail \"%s\" lacks \"%s\"", host, s.detail, words);
}

T_TEST(loopback_and_self_connect_refused)
{
    setup();
    int err = 0;
    struct dp_listener *l = dp_listen(W, "0.0.0.0", 7002, false, on_accept, NULL, &err);
    T_ASSERT(l);
    refused("127.0.0.1", 5222, -EADDRNOTAVAIL, "loopback");
    refused("127.9.9.9", 5222, -EADDRNOTAVAIL, "loopback");
    refused("::1", 5222, -EADDRNOTAVAIL, "loopback");
    refused("localhost", 5222, -EADDRNOTAVAIL, "loopback");
    refused(DADDR, 7002, -EADDRNOTAVAIL, "own");
    refused("198.18.0.255", 5222, -EADDRNOTAVAIL, "broadcast");
    refused("224.0.0.1", 5222, -EADDRNOTAVAIL, "unicast");
    refused("xmpp.a.test", 5222, -EINVAL, "not an IP address");
    refused("2001:db8::1", 5222, -EAFNOSUPPORT, "IPv6");
    /* A refused connection on the kernel side is reported in words. */
    refused(KADDR, 1, -ECONNREFUSED, "connect to " KADDR ":1");
    /* Listening on an address that is not ours, or loopback, is refused. */
    T_ASSERT(!dp_listen(W, "127.0.0.1", 7003, false, on_accept, NULL, &err));
    T_EQ_INT(err, -EADDRNOTAVAIL);
    dp_listener_close(l);
    run_for(20);
}

/* ---- the packet glue ---------------------------------------------------------------- */

static int pkt_fd = -1;
static int pkt_ifindex;
static uint8_t kmac[6], dmac[6];

static void pkt_open(void)
{
    if (pkt_fd >= 0)
        return;
    pkt_fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    T_ASSERT(pkt_fd >= 0);
    pkt_ifindex = (int)if_nametoindex(IFACE);
    struct sockaddr_ll sl = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                              .sll_ifindex = pkt_ifindex };
    T_ASSERT(bind(pkt_fd, (struct sockaddr *)&sl, sizeof(sl)) == 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), IFACE);
    T_ASSERT(ioctl(pkt_fd, SIOCGIFHWADDR, &ifr) == 0);
    memcpy(kmac, ifr.ifr_hwaddr.sa_data, 6);
}

static void pkt_send(const void *frame, size_t len)
{
    struct sockaddr_ll sl = { .sll_family = AF_PACKET, .sll_ifindex = pkt_ifindex, .sll_halen = 6 };
    memcpy(sl.sll_addr, dmac, 6);
    ssize_t n = sendto(pkt_fd, frame, len, 0, (struct sockaddr *)&sl, sizeof(sl));
    if (n != (ssize_t)len)
        T_FAIL("sendto of a %zu-byte frame: %s", len, strerror(errno));
}

static size_t eth_hdr(uint8_t *f, uint16_t type)
{
    memcpy(f, dmac, 6);
    memcpy(f + 6, kmac, 6);
    f[12] = (uint8_t)(type >> 8);
    f[13] = (uint8_t)type;
    return 14;
}

static uint16_t csum(const void *p, size_t n, uint32_t sum)
{
    const uint8_t *b = p;
    for (size_t i = 0; i + 1 < n; i += 2)
        sum += (uint32_t)(b[i] << 8 | b[i + 1]);
    if (n & 1)
        sum += (uint32_t)b[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* An IPv4 header at f (20 bytes) with total length tot and protocol proto. */
static void ip_hdr(uint8_t *f, uint16_t tot, uint8_t proto, bool good_csum)
{
    memset(f, 0, 20);
    f[0] = 0x45;
    f[2] = (uint8_t)(tot >> 8);
    f[3] = (uint8_t)tot;
    f[8] = 64;
    f[9] = proto;
    inet_pton(AF_INET, KADDR, f + 12);
    inet_pton(AF_INET, DADDR, f + 16);
    uint16_t c = csum(f, 20, 0);
    if (!good_csum)
        c ^= 0x5a5a;
    f[10] = (uint8_t)(c >> 8);
    f[11] = (uint8_t)c;
}

/* Ask for 198.18.0.2 with ARP and wait for lwIP's reply on the wire; fills dmac. */
static bool arp_resolve(void)
{
    uint8_t f[64] = { 0 }, r[4096];
    while (recv(pkt_fd, r, sizeof(r), MSG_DONTWAIT) > 0)
        ;   /* stale frames */
    memset(dmac, 0xff, 6);
    size_t o = eth_hdr(f, ETH_P_ARP);
    uint8_t arp[28] = { 0, 1, 8, 0, 6, 4, 0, 1 };
    memcpy(arp + 8, kmac, 6);
    inet_pton(AF_INET, KADDR, arp + 14);
    inet_pton(AF_INET, DADDR, arp + 24);
    memcpy(f + o, arp, sizeof(arp));
    pkt_send(f, 60);
    uint64_t dl = now_ms() + 3000;
    while (now_ms() < dl) {
        dp_worker_run_once(W, 2);
        ssize_t n;
        while ((n = recv(pkt_fd, r, sizeof(r), MSG_DONTWAIT)) > 0) {
            if (n >= 42 && r[12] == 0x08 && r[13] == 0x06 && r[20] == 0 && r[21] == 2 &&
                !memcmp(r + 28, arp + 24, 4) && !memcmp(r + 38, arp + 14, 4)) {
                memcpy(dmac, r + 22, 6);
                return true;
            }
        }
    }
    return false;
}

T_TEST(packet_glue_survives_malformed_frames)
{
    setup();
    pkt_open();
    T_ASSERT(arp_resolve());
    struct dp_stats before = stats();
    uint8_t f[2100];
    size_t o;

    /* 1. an Ethernet header alone (the kernel sends nothing shorter) */
    eth_hdr(f, ETH_P_IP);
    pkt_send(f, 14);
    eth_hdr(f, ETH_P_ARP);
    pkt_send(f, 14);
    /* 2. IPv4 with a truncated header, and with a header length past the frame */
    o = eth_hdr(f, ETH_P_IP);
    ip_hdr(f + o, 40, 6, true);
    pkt_send(f, o + 12);
    f[o] = 0x4f;    /* IHL 60 bytes */
    pkt_send(f, o + 20);
    /* 3. total length larger than the frame; smaller than the header */
    ip_hdr(f + o, 1400, 6, true);
    pkt_send(f, o + 40);
    ip_hdr(f + o, 8, 6, true);
    pkt_send(f, o + 40);
    /* 4. bad IP checksum */
    ip_hdr(f + o, 40, 6, false);
    memset(f + o + 20, 0, 20);
    pkt_send(f, o + 40);
    /* 5. TCP truncated (8 bytes), and with a data offset past the segment */
    ip_hdr(f + o, 28, 6, true);
    memset(f + o + 20, 0x11, 8);
    pkt_send(f, o + 28);
    ip_hdr(f + o, 40, 6, true);
    memset(f + o + 20, 0, 20);
    f[o + 20 + 2] = 0x1b;           /* port 7000 */
    f[o + 20 + 3] = 0x58;
    f[o + 20 + 12] = 0xf0;          /* 60-byte header in a 20-byte segment */
    f[o + 20 + 13] = 0x02;
    pkt_send(f, o + 40);
    /* 6. TCP with a bad checksum */
    f[o + 20 + 12] = 0x50;
    pkt_send(f, o + 40);
    /* 7. unknown ethertypes, IPv6, a VLAN tag, UDP, fragments, IP options garbage */
    o = eth_hdr(f, 0x86dd);
    pkt_send(f, 60);
    o = eth_hdr(f, 0x8100);
    pkt_send(f, 60);
    o = eth_hdr(f, ETH_P_IP);
    ip_hdr(f + o, 28, 17, true);
    pkt_send(f, o + 28);
    ip_hdr(f + o, 40, 6, true);
    f[o + 6] = 0x20;                /* more fragments */
    pkt_send(f, o + 40);
    /* 8. ARP that is malformed (short) or for someone else */
    o = eth_hdr(f, ETH_P_ARP);
    memset(f + o, 0, 46);
    f[o + 1] = 1;
    pkt_send(f, o + 10);
    /* 9. random bytes, random lengths, with our MAC in front */
    unsigned seed = 99;
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t len = 14 + (seed >> 8) % 1500;
        eth_hdr(f, (i & 1) ? ETH_P_IP : ETH_P_ARP);
        for (size_t j = 14; j < len; j++) {
            seed = seed * 1103515245u + 12345u;
            f[j] = (uint8_t)(seed >> 16);
        }
        if (i & 2)
            f[14] = 0x45;           /* looks like IPv4 */
        pkt_send(f, len);
        if (i % 16 == 0)
            dp_worker_run_once(W, 0);
    }
    run_for(300);
    struct dp_stats after = stats();
    if (after.io_pkts_in - before.io_pkts_in < 2000)
        T_FAIL("only %" PRIu64 " frames arrived", after.io_pkts_in - before.io_pkts_in);
    /* Within the MTU, so past the glue: lwIP's checks drop them (counted). */
    T_ASSERT(after.tcp_drops > before.tcp_drops);
    /* Still works. */
    T_ASSERT(arp_resolve());
    struct kserver k;
    kserver_start(&k, 5303, K_ECHO);
    struct side s = { .tx_total = 100000, .seed = 5 };
    int err = 0;
    s.c = dp_conn_connect(W, KADDR, 5303, NULL, &side_cb, &s, &err);
    RUN_UNTIL(s.rxlen == s.tx_total, 10000);
    T_EQ_UINT(s.rx_bad, 0);
    dp_conn_close(s.c);
    RUN_UNTIL(s.closes == 1, 5000);
    kserver_stop(&k);
}

/*
 * Oversize frames (the kernel side's MTU raised above the port's): one that
 * still fits an mbuf is the glue's drop, a larger one the PMD's (counted as
 * a NIC error).  Neither reaches lwIP.
 */
T_TEST(packet_glue_drops_oversize)
{
    setup();
    pkt_open();
    T_ASSERT(arp_resolve());
    char why[256];
    T_ASSERT(cp_nl_set_mtu(IFACE, 4000, why, sizeof(why)) == 0);
    struct dp_stats before = stats();
    uint8_t f[3000];
    size_t o = eth_hdr(f, ETH_P_IP);
    ip_hdr(f + o, (uint16_t)(1600 - o), 6, true);
    memset(f + o + 20, 0, sizeof(f) - o - 20);
    pkt_send(f, 1600);
    ip_hdr(f + o, (uint16_t)(sizeof(f) - o), 6, true);
    pkt_send(f, sizeof(f));
    run_for(1200);          /* the NIC's counters are read once a second */
    struct dp_stats after = stats();
    T_ASSERT(cp_nl_set_mtu(IFACE, 1500, why, sizeof(why)) == 0);
    T_EQ_UINT(after.io_drop_bad - before.io_drop_bad, 1);
    T_EQ_UINT(after.io_nic_errors - before.io_nic_errors, 1);
    T_EQ_UINT(after.tcp_drops, before.tcp_drops);
}

/* dpdk-max-conns: the next connect fails in words, the next SYN is refused and counted. */
T_TEST(max_conns_is_a_limit)
{
    setup();
    struct kserver k;
    kserver_start(&k, 5305, K_SINK);
    int err = 0;
    struct dp_listener *l = dp_listen(W, DADDR, 7005, false, on_accept, NULL, &err);
    T_ASSERT(l);
    RUN_UNTIL(stats().tcp_open == 0, 10000);
    dp_lwip_set_max_conns(4);
    struct side ss[5];
    memset(ss, 0, sizeof(ss));
    for (int i = 0; i < 4; i++) {
        ss[i].c = dp_conn_connect(W, KADDR, 5305, NULL, &side_cb, &ss[i], &err);
        T_ASSERT(ss[i].c);
    }
    RUN_UNTIL(ss[0].opens && ss[1].opens && ss[2].opens && ss[3].opens, 5000);
    ss[4].c = dp_conn_connect(W, KADDR, 5305, NULL, &side_cb, &ss[4], &err);
    RUN_UNTIL(ss[4].closes == 1, 2000);
    T_EQ_INT(ss[4].open_status, -EMFILE);
    T_ASSERT(strstr(ss[4].detail, "dpdk-max-conns (4) reached"));
    /* Inbound: refused with a reset, counted. */
    uint64_t refused = stats().tcp_refused;
    struct kclient kc = { .port = 7005, .total = 1 };
    pthread_t t;
    pthread_create(&t, NULL, kclient_echo, &kc);
    RUN_UNTIL(stats().tcp_refused == refused + 1, 5000);
    run_for(100);
    pthread_join(t, NULL);
    T_ASSERT(kc.rc == -ECONNREFUSED || kc.rc == -ECONNRESET || kc.reset || kc.got == 0);
    T_ASSERT(accept_into == NULL || accept_into->c == NULL);
    dp_lwip_set_max_conns(3000);
    for (int i = 0; i < 4; i++)
        dp_conn_close(ss[i].c);
    RUN_UNTIL(ss[0].closes && ss[1].closes && ss[2].closes && ss[3].closes, 5000);
    dp_listener_close(l);
    RUN_UNTIL(stats().tcp_open == 0, 10000);
    kserver_stop(&k);
}

/* 2,000 connections opened and closed, 200 at a time: nothing left behind. */
T_TEST(two_thousand_connections_no_leak)
{
    setup();
    struct kserver k;
    kserver_start(&k, 5304, K_SINK);
    struct dp_stats before = stats();
    static struct side ss[200];
    int done = 0;
    uint64_t dl = now_ms() + 120000;
    while (done < 2000 && now_ms() < dl) {
        for (int i = 0; i < 200; i++) {
            memset(&ss[i], 0, sizeof(ss[i]));
            ss[i].tx_total = 100;
            ss[i].seed = (unsigned)i;
            ss[i].close_when_sent = true;
            int err = 0;
            ss[i].c = dp_conn_connect(W, KADDR, 5304, NULL, &side_cb, &ss[i], &err);
            T_ASSERT(ss[i].c);
        }
        uint64_t bdl = now_ms() + 20000;
        for (;;) {
            int closed = 0;
            for (int i = 0; i < 200; i++)
                closed += ss[i].closes;
            if (closed == 200 || now_ms() > bdl)
                break;
            dp_worker_run_once(W, 5);
        }
        for (int i = 0; i < 200; i++) {
            if (ss[i].closes != 1 || ss[i].open_status != 0 || ss[i].close_reason != 0)
                T_FAIL("connection %d of batch %d: opens %d status %d closes %d reason %d (%s)",
                       i, done / 200, ss[i].opens, ss[i].open_status, ss[i].closes,
                       ss[i].close_reason, ss[i].detail);
        }
        done += 200;
    }
    T_EQ_INT(done, 2000);
    /* Lingering closes end with the peer's FIN. */
    RUN_UNTIL(stats().tcp_open == 0, 10000);
    RUN_UNTIL(atomic_load(&k.closed) == 2000, 10000);
    struct dp_stats after = stats();
    T_EQ_UINT(after.conn_opened - before.conn_opened, 2000);
    T_EQ_UINT(after.conn_closed - before.conn_closed, 2000);
    T_EQ_UINT(atomic_load(&k.bytes), 2000 * 100);
    T_EQ_INT(atomic_load(&k.resets), 0);
    kserver_stop(&k);
}

int main(int argc, char **argv)
{
    if (geteuid() != 0) {
        fprintf(stderr, "skipped: needs root (a private network namespace and a TAP device)\n");
        return 77;
    }
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "skipped: unshare(CLONE_NEWNET): %s\n", strerror(errno));
        return 77;
    }
    static const struct t_case cases[] = {
        T_RUN(echo_outbound_with_pause), T_RUN(echo_inbound),
        T_RUN(close_with_unread_input_is_not_a_reset), T_RUN(loopback_and_self_connect_refused),
        T_RUN(packet_glue_survives_malformed_frames), T_RUN(packet_glue_drops_oversize),
        T_RUN(max_conns_is_a_limit), T_RUN(two_thousand_connections_no_leak),
    };
    int failed = 0, passed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name))
            continue;
        t_current = cases[i].name;
        t_fn = cases[i].fn;
        if (t_call()) {
            failed++;
            printf("  FAIL %s\n", cases[i].name);
        } else {
            passed++;
            printf("  ok   %s\n", cases[i].name);
        }
        fflush(stdout);
    }
    printf("%d cases passed, %d failed\n", passed, failed);
    if (pkt_fd >= 0)
        close(pkt_fd);
    return failed ? 1 : 0;
}
