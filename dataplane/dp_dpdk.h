/*
 * dp_dpdk.h - the DPDK + lwIP I/O backend ("--io dpdk"), as the
 * controlplane sees it: set-up once per process, the settings, clean-up.
 * No DPDK or lwIP type appears here (their headers clash; DESIGN 3).
 *
 * Order (cp_main.c): dp_dpdk_setup() on the main thread (EAL, then the port
 * configured and started: a TAP's kernel side exists from here on), then the
 * kernel side configured with libnl (cp_netlink.c), then dp_worker_new()
 * with io "dpdk" and dp_worker_cfg.dpdk, whose init brings lwIP up on the
 * port.  The worker's thread registers itself as an lcore when it first
 * polls.  At exit, after the worker is freed: dp_dpdk_cleanup().
 */
#ifndef DP_DPDK_H
#define DP_DPDK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dp_dpdk_idle {
    DP_DPDK_IDLE_ADAPTIVE = 0,  /* spin a little, then sleep on the wake eventfd and the Rx interrupt */
    DP_DPDK_IDLE_SPIN,          /* never sleep (a dedicated core) */
};

struct dp_dpdk_cfg {
    const char *eal;            /* EAL arguments, split on blanks, passed as given */
    const char *port;           /* PCI address, device name (net_tap0) or port index */
    uint32_t addr;              /* our IPv4 address, network byte order (or dp_dpdk_set_ip) */
    uint8_t prefix;             /* its prefix length (1-32) */
    uint32_t gateway;           /* network byte order; 0: none (on-link peers only) */
    unsigned mtu;               /* IP MTU of the port (68-9000; 0: 1500) */
    unsigned mbufs;             /* mbufs in the pool (0: 8191) */
    unsigned max_conns;         /* TCP connections at most, listeners excluded (0: 10000) */
    uint16_t lport_lo, lport_hi; /* local ports of outbound connections (0, 0: 32768-65535) */
    enum dp_dpdk_idle idle;
};

/* Defaults of the zero fields above. */
#define DP_DPDK_DEF_MTU         1500u
#define DP_DPDK_DEF_MBUFS       8191u
#define DP_DPDK_DEF_MAX_CONNS   10000u
#define DP_DPDK_DEF_LPORT_LO    32768u
#define DP_DPDK_DEF_LPORT_HI    65535u

/*
 * Once per process, on the thread that will be the main lcore: rte_eal_init
 * with cfg->eal plus the lcore list the daemon adds (lcore 0 floating over
 * the process's CPUs; EAL options naming lcores are refused), then the port
 * found, configured with one queue pair and started.  Returns 0, or negative
 * with the reason in why.  cfg is copied.
 */
int dp_dpdk_setup(const struct dp_dpdk_cfg *cfg, char *why, size_t whysz);

/*
 * The appliance's address on the port (network byte order), known after
 * dp_dpdk_setup() for net_af_packet (read from its interface).  Before the
 * worker is created.  0, or -EINVAL with why filled.
 */
int dp_dpdk_set_ip(uint32_t addr, uint8_t prefix, uint32_t gateway, char *why, size_t whysz);

/* The kernel name of the port's interface (net_tap: its iface; net_af_packet: the iface
 * it is bound to), "" when it has none.  Valid after dp_dpdk_setup(). */
const char *dp_dpdk_kernel_iface(void);
/* The port's driver name ("net_tap", "net_af_packet", ...). */
const char *dp_dpdk_driver(void);
/* Whether the adaptive idle sleeps on the queue's Rx interrupt (else it naps 1 ms at a time). */
bool dp_dpdk_rx_interrupt(void);
/* Whether the port checks received IPv4/TCP checksums (*rx) and fills sent ones (*tx) for lwIP. */
void dp_dpdk_csum_offload(bool *rx, bool *tx);

/* Stop and close the port, then rte_eal_cleanup() (so LeakSanitizer sees only
 * real leaks).  After every worker is freed.  Idempotent. */
void dp_dpdk_cleanup(void);

#endif
