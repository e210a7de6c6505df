/*
 * dp_lwip_hooks.h - the functions lwIP's hooks call (LWIP_HOOK_FILENAME,
 * lwipopts.h).  Implemented in dataplane/dp_lwip_port.c.
 */
#ifndef IMFUSE_DP_LWIP_HOOKS_H
#define IMFUSE_DP_LWIP_HOOKS_H

#include <stdint.h>

struct ip4_addr;

/*
 * RFC 6528 initial sequence number: a 4-microsecond clock plus a keyed hash
 * (SHA-256 under a 256-bit key from getrandom, drawn once per process) of
 * the connection's addresses and ports.  Ports in host byte order.
 */
uint32_t dp_lwip_isn(const struct ip4_addr *local_ip, uint16_t local_port,
                     const struct ip4_addr *remote_ip, uint16_t remote_port);

/* A random 32-bit value from getrandom (buffered). */
uint32_t dp_lwip_rand(void);

/*
 * Retransmission timeouts.  lwIP counts fast retransmits (MIB2
 * tcpretranssegs) but not RTO retransmissions; dataplane/dpdk.mk compiles
 * core/tcp.c with DP_LWIP_IN_TCP_C so that its one call of
 * tcp_rexmit_rto_commit() (tcp_slowtmr) is counted here.
 */
extern unsigned long dp_lwip_rto_events;
#ifdef DP_LWIP_IN_TCP_C
#define tcp_rexmit_rto_commit(pcb) (dp_lwip_rto_events++, tcp_rexmit_rto_commit(pcb))
#endif

#endif
