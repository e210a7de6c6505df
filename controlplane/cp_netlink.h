/*
 * cp_netlink.h - the kernel side of the dpdk port's interfaces, through
 * libnl-route-3 (no `ip` commands): bring a TAP's kernel side up with its
 * address, look routes up (dpdk-gateway = auto), read and remove the
 * address of an interface given to net_af_packet.
 *
 * Every function opens its own netlink socket, is silent, and returns 0 or
 * a negative -errno with the reason in why.  Addresses are IPv4 in network
 * byte order.
 */
#ifndef CP_NETLINK_H
#define CP_NETLINK_H

#include <stddef.h>
#include <stdint.h>

struct cp_nl_addr {
    uint32_t addr;
    uint8_t prefix;             /* 0-32 */
};

/* Parse "198.18.0.1/24" (the prefix is required). */
int cp_nl_parse_prefix(const char *s, struct cp_nl_addr *out, char *why, size_t whysz);

/* Set ifname up; add addr when addr->addr != 0 (an existing equal address is fine). */
int cp_nl_iface_up(const char *ifname, const struct cp_nl_addr *addr, char *why, size_t whysz);
/* Set ifname's MTU. */
int cp_nl_set_mtu(const char *ifname, unsigned mtu, char *why, size_t whysz);

/*
 * The kernel's route to dst (like `ip route get`, rtnl_route_lookup): *gw the
 * next hop's gateway, or 0 when dst is on-link; ifname (may be NULL) the
 * outgoing interface.
 */
int cp_nl_route_get(uint32_t dst, uint32_t *gw, char *ifname, size_t ifsz, char *why, size_t whysz);

/*
 * ifname's first IPv4 address and prefix, and the gateway of a default
 * route through ifname (0 when none).  -ENOENT when it has no IPv4 address.
 */
int cp_nl_iface_ipv4(const char *ifname, struct cp_nl_addr *out, uint32_t *gw, char *why, size_t whysz);

/* Remove addr from ifname (so the kernel stops answering for it). */
int cp_nl_addr_del(const char *ifname, const struct cp_nl_addr *addr, char *why, size_t whysz);

#endif
