/*
 * dp_lwip.h - the neutral seam between the DPDK side (dp_io_dpdk.c) and the
 * lwIP side (dp_lwip.c) of the dpdk backend.  Only C types cross it: their
 * headers cannot meet in one translation unit.
 *
 * Memory: a received frame stays in its mbuf; lwIP sees it as a custom pbuf
 * living in the mbuf's private area (DP_LWIP_MBUF_PRIV bytes) and gives the
 * mbuf back through dp_pkt_free() when the last pbuf reference goes.  Frames
 * lwIP sends are copied from its pbufs into fresh mbufs (dp_pkt_tx_alloc).
 *
 * Threading: everything here runs on the worker's thread, except that
 * dp_lwip_init() may run on the thread that creates the worker.
 */
#ifndef DP_LWIP_H
#define DP_LWIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

struct dp_worker;
struct dp_conn;
struct dp_listener;

/* Private bytes each mbuf needs for its pbuf (checked at init against lwIP's struct). */
#define DP_LWIP_MBUF_PRIV 64

struct dp_lwip_cfg {
    uint32_t addr, mask, gateway;   /* network byte order; gateway 0: none */
    uint16_t mtu;
    uint8_t mac[6];
    unsigned max_conns;
    uint16_t lport_lo, lport_hi;
    bool rx_csum_hw;                /* the port validates IPv4/TCP checksums (mbuf flags) */
    bool tx_csum_hw;                /* the port fills IPv4/TCP checksums (dp_pkt_tx_queue marks the mbuf) */
};

/* Receive checksum verdicts of one frame (from the mbuf's offload flags). */
#define DP_LWIP_CSUM_IP_GOOD  0x1u
#define DP_LWIP_CSUM_L4_GOOD  0x2u
#define DP_LWIP_CSUM_BAD      0x4u

/*
 * Bring lwIP up on the port for worker w (one instance per process: a second
 * live one is refused).  0, or negative with why filled.
 */
int dp_lwip_init(struct dp_worker *w, const struct dp_lwip_cfg *cfg, char *why, size_t whysz);
/* Abort every connection and take the interface down. */
void dp_lwip_fini(struct dp_worker *w);

/*
 * One received Ethernet frame of len bytes at data, in mbuf m whose private
 * area is priv.  The frame belongs to lwIP from here on (dp_pkt_free(m) when
 * done, maybe at once).  May queue connection events.
 */
void dp_lwip_input(void *m, void *priv, void *data, uint16_t len, unsigned csum);
/* Run lwIP's due timers (retransmissions, delayed ACKs, ARP ...). */
void dp_lwip_timers(void);
/* Milliseconds until lwIP's next timer (never more than max_ms). */
uint32_t dp_lwip_sleep_ms(uint32_t max_ms);
/* Hand the events lwIP queued to dp_conn_io_*; returns how many.  Never inside lwIP. */
int dp_lwip_dispatch(void);
/* True when events wait for dp_lwip_dispatch(). */
bool dp_lwip_pending(void);

/* struct dp_io_ops hooks (see dp_int.h). */
int dp_lwip_listen(struct dp_listener *l, const char *host, uint16_t port);
void dp_lwip_unlisten(struct dp_listener *l);
int dp_lwip_connect(struct dp_conn *c, const char *host, uint16_t port);
ssize_t dp_lwip_write(struct dp_conn *c, const struct iovec *iov, int iovcnt);
void dp_lwip_want_write(struct dp_conn *c, bool on);
void dp_lwip_want_read(struct dp_conn *c, bool on);
void dp_lwip_close(struct dp_conn *c, bool graceful);
int dp_lwip_keepalive(struct dp_conn *c, unsigned idle_s, unsigned intvl_s, unsigned cnt);

/* lwIP's counters for the per-lcore set. */
struct dp_lwip_counters {
    uint64_t tcp_open;              /* connections held now (lingering ones included) */
    uint64_t retransmits;           /* TCP segments retransmitted */
    uint64_t accept_refused;        /* SYNs turned away: dpdk-max-conns, or no memory */
    uint64_t tcp_drops;             /* segments lwIP dropped (checksum, malformed, no PCB...) */
};
void dp_lwip_counters(struct dp_lwip_counters *out);
/* Change dpdk-max-conns of the live instance (tests). */
void dp_lwip_set_max_conns(unsigned n);

/* ---- provided by the DPDK side ------------------------------------------------ */

/* A fresh mbuf for a frame of len bytes; *data points at its bytes.  NULL: pool empty (counted). */
void *dp_pkt_tx_alloc(uint16_t len, uint8_t **data);
/* Queue a frame made by dp_pkt_tx_alloc for sending (burst at the end of the loop turn). */
void dp_pkt_tx_queue(void *m);
/* Give a received mbuf back to its pool. */
void dp_pkt_free(void *m);

#endif
