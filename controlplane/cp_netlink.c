/*
 * cp_netlink.c - libnl-route-3 calls for the dpdk port's kernel side
 * (cp_netlink.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <netlink/route/route.h>
#include <netlink/route/nexthop.h>

#include "cp_netlink.h"

/* libnl's error as -errno, the words into why. */
static int nl_fail(int nlerr, const char *what, char *why, size_t whysz)
{
    snprintf(why, whysz, "%s: %s", what, nl_geterror(nlerr));
    switch (-nlerr) {
    case NLE_NOMEM: return -ENOMEM;
    case NLE_EXIST: return -EEXIST;
    case NLE_OBJ_NOTFOUND: case NLE_NODEV: return -ENODEV;
    case NLE_PERM: return -EPERM;
    case NLE_NOADDR: return -EADDRNOTAVAIL;
    case NLE_INVAL: return -EINVAL;
    default: return -EIO;
    }
}

static struct nl_sock *nl_open(char *why, size_t whysz)
{
    struct nl_sock *sk = nl_socket_alloc();
    if (!sk) {
        snprintf(why, whysz, "netlink: out of memory");
        return NULL;
    }
    int rc = nl_connect(sk, NETLINK_ROUTE);
    if (rc < 0) {
        nl_fail(rc, "netlink", why, whysz);
        nl_socket_free(sk);
        return NULL;
    }
    return sk;
}

int cp_nl_parse_prefix(const char *s, struct cp_nl_addr *out, char *why, size_t whysz)
{
    char buf[32];
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= sizeof(buf)) {
        snprintf(why, whysz, "expected ADDRESS/PREFIX (e.g. 198.18.0.2/24), got \"%s\"", s);
        return -EINVAL;
    }
    memcpy(buf, s, (size_t)(slash - s));
    buf[slash - s] = '\0';
    char *end;
    unsigned long p = strtoul(slash + 1, &end, 10);
    if (inet_pton(AF_INET, buf, &out->addr) != 1 || !slash[1] || *end || p > 32 || p == 0) {
        snprintf(why, whysz, "expected an IPv4 ADDRESS/PREFIX with a prefix of 1-32, got \"%s\"", s);
        return -EINVAL;
    }
    out->prefix = (uint8_t)p;
    return 0;
}

static int link_get(struct nl_sock *sk, const char *ifname, struct rtnl_link **l, char *why, size_t whysz)
{
    int rc = rtnl_link_get_kernel(sk, 0, ifname, l);
    if (rc < 0) {
        char what[64];
        snprintf(what, sizeof(what), "interface %s", ifname);
        return nl_fail(rc, what, why, whysz);
    }
    return 0;
}

int cp_nl_iface_up(const char *ifname, const struct cp_nl_addr *addr, char *why, size_t whysz)
{
    struct nl_sock *sk = nl_open(why, whysz);
    struct rtnl_link *l = NULL, *chg = NULL;
    struct rtnl_addr *ra = NULL;
    struct nl_addr *local = NULL;
    int rc;
    if (!sk)
        return -EIO;
    if ((rc = link_get(sk, ifname, &l, why, whysz)) < 0)
        goto out;
    chg = rtnl_link_alloc();
    if (!chg) {
        rc = -ENOMEM;
        snprintf(why, whysz, "out of memory");
        goto out;
    }
    rtnl_link_set_flags(chg, IFF_UP);
    if ((rc = rtnl_link_change(sk, l, chg, 0)) < 0) {
        rc = nl_fail(rc, "setting the interface up", why, whysz);
        goto out;
    }
    if (addr && addr->addr) {
        ra = rtnl_addr_alloc();
        local = nl_addr_build(AF_INET, &addr->addr, 4);
        if (!ra || !local) {
            rc = -ENOMEM;
            snprintf(why, whysz, "out of memory");
            goto out;
        }
        nl_addr_set_prefixlen(local, addr->prefix);
        rtnl_addr_set_ifindex(ra, rtnl_link_get_ifindex(l));
        rtnl_addr_set_local(ra, local);
        rtnl_addr_set_prefixlen(ra, addr->prefix);
        rc = rtnl_addr_add(sk, ra, 0);
        if (rc == -NLE_EXIST)
            rc = 0;
        if (rc < 0) {
            rc = nl_fail(rc, "adding the address", why, whysz);
            goto out;
        }
    }
    rc = 0;
out:
    if (local)
        nl_addr_put(local);
    if (ra)
        rtnl_addr_put(ra);
    if (chg)
        rtnl_link_put(chg);
    if (l)
        rtnl_link_put(l);
    nl_socket_free(sk);
    return rc;
}

int cp_nl_set_mtu(const char *ifname, unsigned mtu, char *why, size_t whysz)
{
    struct nl_sock *sk = nl_open(why, whysz);
    struct rtnl_link *l = NULL, *chg = NULL;
    int rc;
    if (!sk)
        return -EIO;
    if ((rc = link_get(sk, ifname, &l, why, whysz)) < 0)
        goto out;
    if (!(chg = rtnl_link_alloc())) {
        rc = -ENOMEM;
        snprintf(why, whysz, "out of memory");
        goto out;
    }
    rtnl_link_set_mtu(chg, mtu);
    rc = rtnl_link_change(sk, l, chg, 0);
    if (rc < 0)
        rc = nl_fail(rc, "setting the MTU", why, whysz);
out:
    if (chg)
        rtnl_link_put(chg);
    if (l)
        rtnl_link_put(l);
    nl_socket_free(sk);
    return rc < 0 ? rc : 0;
}

/* Gateway of route r's first next hop in *gw (0 if none), its interface index. */
static int route_nh(struct rtnl_route *r, uint32_t *gw)
{
    *gw = 0;
    if (rtnl_route_get_nnexthops(r) < 1)
        return 0;
    struct rtnl_nexthop *nh = rtnl_route_nexthop_n(r, 0);
    struct nl_addr *g = rtnl_route_nh_get_gateway(nh);
    if (g && nl_addr_get_family(g) == AF_INET && nl_addr_get_len(g) == 4)
        memcpy(gw, nl_addr_get_binary_addr(g), 4);
    return rtnl_route_nh_get_ifindex(nh);
}

int cp_nl_route_get(uint32_t dst, uint32_t *gw, char *ifname, size_t ifsz, char *why, size_t whysz)
{
    struct nl_sock *sk = nl_open(why, whysz);
    struct nl_addr *a = NULL;
    struct rtnl_route *r = NULL;
    int rc;
    if (!sk)
        return -EIO;
    a = nl_addr_build(AF_INET, &dst, 4);
    if (!a) {
        rc = -ENOMEM;
        snprintf(why, whysz, "out of memory");
        goto out;
    }
    rc = rtnl_route_lookup(sk, a, &r);
    if (rc < 0) {
        char ip[INET_ADDRSTRLEN], what[64];
        inet_ntop(AF_INET, &dst, ip, sizeof(ip));
        snprintf(what, sizeof(what), "route to %s", ip);
        rc = nl_fail(rc, what, why, whysz);
        goto out;
    }
    int ifi = route_nh(r, gw);
    if (ifname && ifsz) {
        char n[IF_NAMESIZE] = "";
        if (ifi <= 0 || !if_indextoname((unsigned)ifi, n))
            n[0] = '\0';
        snprintf(ifname, ifsz, "%s", n);
    }
    rc = 0;
out:
    if (r)
        rtnl_route_put(r);
    if (a)
        nl_addr_put(a);
    nl_socket_free(sk);
    return rc;
}

int cp_nl_iface_ipv4(const char *ifname, struct cp_nl_addr *out, uint32_t *gw, char *why, size_t whysz)
{
    struct nl_sock *sk = nl_open(why, whysz);
    struct nl_cache *addrs = NULL, *routes = NULL;
    int rc, ifi = (int)if_nametoindex(ifname);
    if (!sk)
        return -EIO;
    if (ifi <= 0) {
        rc = -ENODEV;
        snprintf(why, whysz, "interface %s: not found", ifname);
        goto out;
    }
    if ((rc = rtnl_addr_alloc_cache(sk, &addrs)) < 0) {
        rc = nl_fail(rc, "reading addresses", why, whysz);
        goto out;
    }
    rc = -ENOENT;
    snprintf(why, whysz, "interface %s has no IPv4 address", ifname);
    for (struct nl_object *o = nl_cache_get_first(addrs); o; o = nl_cache_get_next(o)) {
        struct rtnl_addr *ra = (struct rtnl_addr *)o;
        struct nl_addr *l = rtnl_addr_get_local(ra);
        if (rtnl_addr_get_ifindex(ra) != ifi || rtnl_addr_get_family(ra) != AF_INET || !l ||
            nl_addr_get_len(l) != 4)
            continue;
        memcpy(&out->addr, nl_addr_get_binary_addr(l), 4);
        out->prefix = (uint8_t)rtnl_addr_get_prefixlen(ra);
        rc = 0;
        break;
    }
    if (rc < 0)
        goto out;
    *gw = 0;
    if ((rc = rtnl_route_alloc_cache(sk, AF_INET, 0, &routes)) < 0) {
        rc = nl_fail(rc, "reading routes", why, whysz);
        goto out;
    }
    for (struct nl_object *o = nl_cache_get_first(routes); o; o = nl_cache_get_next(o)) {
        struct rtnl_route *r = (struct rtnl_route *)o;
        struct nl_addr *d = rtnl_route_get_dst(r);
        uint32_t g;
        if (rtnl_route_get_table(r) != RT_TABLE_MAIN || (d && nl_addr_get_prefixlen(d) != 0))
            continue;
        if (route_nh(r, &g) == ifi && g) {
            *gw = g;
            break;
        }
    }
    rc = 0;
out:
    if (routes)
        nl_cache_free(routes);
    if (addrs)
        nl_cache_free(addrs);
    nl_socket_free(sk);
    return rc;
}

int cp_nl_addr_del(const char *ifname, const struct cp_nl_addr *addr, char *why, size_t whysz)
{
    struct nl_sock *sk = nl_open(why, whysz);
    struct rtnl_addr *ra = NULL;
    struct nl_addr *local = NULL;
    int rc, ifi = (int)if_nametoindex(ifname);
    if (!sk)
        return -EIO;
    if (ifi <= 0) {
        rc = -ENODEV;
        snprintf(why, whysz, "interface %s: not found", ifname);
        goto out;
    }
    ra = rtnl_addr_alloc();
    local = nl_addr_build(AF_INET, &addr->addr, 4);
    if (!ra || !local) {
        rc = -ENOMEM;
        snprintf(why, whysz, "out of memory");
        goto out;
    }
    nl_addr_set_prefixlen(local, addr->prefix);
    rtnl_addr_set_ifindex(ra, ifi);
    rtnl_addr_set_local(ra, local);
    rtnl_addr_set_prefixlen(ra, addr->prefix);
    rc = rtnl_addr_delete(sk, ra, 0);
    if (rc < 0)
        rc = nl_fail(rc, "removing the kernel's address", why, whysz);
out:
    if (local)
        nl_addr_put(local);
    if (ra)
        rtnl_addr_put(ra);
    nl_socket_free(sk);
    return rc < 0 ? rc : 0;
}
