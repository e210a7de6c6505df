/*
 * lwipopts.h - imfuse's configuration of lwIP 2.1 (the DPDK dataplane's TCP
 * stack), compiled from Debian's source package by dataplane/dpdk.mk.
 *
 * What this closes compared with Debian's prebuilt liblwip (see
 * docs/ARCHITECTURE.md, "lwIP"):
 *  - NO_SYS=1: one polling thread drives lwIP (rx -> tcp_input, then
 *    sys_check_timeouts); no tcpip thread, no mailboxes, no core lock, and no
 *    loopback path that could abort the process.
 *  - Initial sequence numbers from LWIP_HOOK_TCP_ISN (RFC 6528, keyed from
 *    getrandom; dp_lwip_port.c), local ports and other randomness from
 *    getrandom (LWIP_RAND).
 *  - TCP_MSS is only an upper bound (jumbo frames): the MSS advertised and
 *    used is derived from the interface MTU (TCP_CALCULATE_EFF_SEND_MSS).
 *  - Window scaling on, a 256 KiB receive window, a SYN backlog per listener.
 *  - Memory from the C allocator (MEM_LIBC_MALLOC, MEMP_MEM_MALLOC), sized by
 *    these very options: no pool compiled for another TCP_MSS.  Received
 *    frames are custom pbufs over DPDK mbufs (LWIP_SUPPORT_CUSTOM_PBUF).
 *  - Checksums can be left to the NIC per interface (LWIP_CHECKSUM_CTRL_PER_NETIF).
 * IPv4 only; no UDP, DHCP, DNS, IGMP or IP fragments (TCP never needs them).
 */
#ifndef IMFUSE_LWIPOPTS_H
#define IMFUSE_LWIPOPTS_H

/* ---- system ------------------------------------------------------------- */
#define NO_SYS                          1
#define SYS_LIGHTWEIGHT_PROT            0
#define LWIP_TIMERS                     1
#define LWIP_SOCKET                     0
#define LWIP_NETCONN                    0
#define LWIP_NETIF_API                  0
#define LWIP_SINGLE_NETIF               1
#define LWIP_NETIF_LOOPBACK             0
#define LWIP_HAVE_LOOPIF                0
#define LWIP_NETIF_STATUS_CALLBACK      0
#define LWIP_NETIF_LINK_CALLBACK        0

/* ---- memory ------------------------------------------------------------- */
#define MEM_LIBC_MALLOC                 1
#define MEMP_MEM_MALLOC                 1
#define MEM_ALIGNMENT                   8
#define LWIP_SUPPORT_CUSTOM_PBUF        1
#define PBUF_LINK_ENCAPSULATION_HLEN    0
#define ETH_PAD_SIZE                    0

/* ---- protocols ---------------------------------------------------------- */
#define LWIP_IPV4                       1
#define LWIP_IPV6                       0
#define LWIP_ARP                        1
#define LWIP_ETHERNET                   1
#define ARP_TABLE_SIZE                  64
#define ARP_QUEUEING                    1
#define ARP_QUEUE_LEN                   16
#define ETHARP_SUPPORT_STATIC_ENTRIES   1
#define LWIP_ICMP                       1
#define LWIP_RAW                        0
#define LWIP_UDP                        0
#define LWIP_DHCP                       0
#define LWIP_AUTOIP                     0
#define LWIP_IGMP                       0
#define LWIP_DNS                        0
#define IP_REASSEMBLY                   0
#define IP_FRAG                         0
#define IP_FORWARD                      0
#define IP_DEFAULT_TTL                  64

/* ---- TCP ---------------------------------------------------------------- */
#define LWIP_TCP                        1
#define TCP_TTL                         64
/* An upper bound only: the effective MSS is the interface MTU - 40. */
#define TCP_MSS                         8960
#define TCP_CALCULATE_EFF_SEND_MSS      1
#define LWIP_WND_SCALE                  1
#define TCP_RCV_SCALE                   3
#define TCP_WND                         (256 * 1024)
#define TCP_SND_BUF                     (256 * 1024)
#define TCP_SND_QUEUELEN                1024
#define TCP_SNDQUEUELOWAT               512
#define TCP_SNDLOWAT                    (16 * 1024)
#define TCP_QUEUE_OOSEQ                 1
#define TCP_OOSEQ_MAX_PBUFS             32
#define TCP_OOSEQ_MAX_BYTES             (64 * 1024)
#define TCP_LISTEN_BACKLOG              1
#define TCP_DEFAULT_LISTEN_BACKLOG      255     /* lwIP keeps it in a u8_t */
#define SO_REUSE                        1
#define LWIP_TCP_KEEPALIVE              1
#define LWIP_TCP_TIMESTAMPS             0
#define LWIP_CALLBACK_API               1
#define LWIP_EVENT_API                  0
#define LWIP_CHECKSUM_CTRL_PER_NETIF    1

/* ---- statistics (retransmits and drops for the per-lcore counters) ------ */
#define LWIP_STATS                      1
#define LWIP_STATS_DISPLAY              0
#define LINK_STATS                      0
#define ETHARP_STATS                    1
#define IP_STATS                        1
#define ICMP_STATS                      0
#define TCP_STATS                       1
#define MEM_STATS                       0
#define MEMP_STATS                      0
#define SYS_STATS                       0
#define MIB2_STATS                      1       /* tcpretranssegs */

/* ---- hooks (dataplane/lwip/dp_lwip_hooks.h, dataplane/dp_lwip_port.c) --- */
#define LWIP_HOOK_FILENAME              "dp_lwip_hooks.h"
#define LWIP_HOOK_TCP_ISN(local_ip, local_port, remote_ip, remote_port) \
    dp_lwip_isn((local_ip), (local_port), (remote_ip), (remote_port))
#define LWIP_RAND()                     dp_lwip_rand()

#endif
