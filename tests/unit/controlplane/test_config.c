/* Flags and config file of imfused (cp_config.c). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "t.h"
#include "im_common.h"
#include "cp_config.h"

static int
parse(struct cp_config *c, char *why, int argc, char **argv)
{
    return cp_config_parse(c, argc, argv, why, 512);
}

static char *
write_conf(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/imfuse-conf-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
        abort();
    close(fd);
    return path;
}

T_TEST(defaults)
{
    struct cp_config c;
    char why[512];
    char *argv[] = { "imfused", NULL };
    T_EQ_INT(parse(&c, why, 1, argv), 0);
    T_EQ_STR(c.data, "./var");
    T_EQ_STR(c.listen, "127.0.0.1:7700");
    T_EQ_STR(c.control, "./var/imfused.sock");
    T_EQ_STR(c.io, "kernel");
    T_EQ_INT(c.workers, 1);
    T_ASSERT(!c.open_registration);
    cp_config_free(&c);
}

T_TEST(flags)
{
    struct cp_config c;
    char why[512];
    char *argv[] = { "imfused", "--data", "/tmp/d", "--listen", "[::1]:7701", "--workers", "1",
                     "--open-registration", "--log-level", "debug", NULL };
    T_EQ_INT(parse(&c, why, 10, argv), 0);
    T_EQ_STR(c.data, "/tmp/d");
    T_EQ_STR(c.control, "/tmp/d/imfused.sock");
    T_EQ_STR(c.listen, "[::1]:7701");
    T_ASSERT(c.open_registration);
    T_EQ_STR(c.log_level, "debug");
    cp_config_free(&c);
}

T_TEST(file_and_override)
{
    struct cp_config c;
    char why[512];
    char *path = write_conf("# a comment\n\ndata = /srv/imfuse   # trailing\nlisten=0.0.0.0:7000\n"
                            "open-registration = yes\nca-file = /etc/ca.pem\n");
    char *argv[] = { "imfused", "--config", path, "--listen", "127.0.0.1:9", NULL };
    T_EQ_INT(parse(&c, why, 5, argv), 0);
    T_EQ_STR(c.data, "/srv/imfuse");
    T_EQ_STR(c.listen, "127.0.0.1:9");        /* the flag wins */
    T_EQ_STR(c.ca_file, "/etc/ca.pem");
    T_ASSERT(c.open_registration);
    cp_config_free(&c);
    unlink(path);
}

T_TEST(file_errors_name_the_line)
{
    struct cp_config c;
    char why[512];
    char *path = write_conf("data = /x\nbogus = 1\n");
    char *argv[] = { "imfused", "--config", path, NULL };
    T_ASSERT(parse(&c, why, 3, argv) < 0);
    T_ASSERT(strstr(why, "line 2") && strstr(why, "unknown key \"bogus\""));
    cp_config_free(&c);
    unlink(path);

    path = write_conf("workers = many\n");
    char *argv2[] = { "imfused", "--config", path, NULL };
    T_ASSERT(parse(&c, why, 3, argv2) < 0);
    T_ASSERT(strstr(why, "line 1") && strstr(why, "workers"));
    cp_config_free(&c);
    unlink(path);

    path = write_conf("just words\n");
    char *argv3[] = { "imfused", "--config", path, NULL };
    T_ASSERT(parse(&c, why, 3, argv3) < 0);
    T_ASSERT(strstr(why, "line 1"));
    cp_config_free(&c);
    unlink(path);
}

/* A line longer than the reader's buffer is an error, never a silent cut
 * (the rest would have been read as a line of its own). */
T_TEST(file_long_line)
{
    struct cp_config c;
    char why[512];
    char *text = malloc(6000);
    T_ASSERT(text != NULL);
    int n = snprintf(text, 6000, "data = /x\nca-file = /");
    memset(text + n, 'a', 5000);
    strcpy(text + n + 5000, "\n");
    char *path = write_conf(text);
    char *argv[] = { "imfused", "--config", path, NULL };
    T_ASSERT(parse(&c, why, 3, argv) < 0);
    T_ASSERT(strstr(why, "line 2") && strstr(why, "longer than 4095 bytes"));
    cp_config_free(&c);
    unlink(path);
    /* a last line without a newline is fine */
    path = write_conf("data = /x\nlisten = 127.0.0.1:9");
    char *argv2[] = { "imfused", "--config", path, NULL };
    T_EQ_INT(parse(&c, why, 3, argv2), 0);
    T_EQ_STR(c.listen, "127.0.0.1:9");
    cp_config_free(&c);
    unlink(path);
    free(text);
}

/* The default config that the package installs (images/imfused.conf):
 * data in the unit's StateDirectory, the control socket in its
 * RuntimeDirectory, clients on loopback only. */
T_TEST(shipped_config)
{
    struct cp_config c;
    char why[512];
    char *argv[] = { "imfused", "--config", "images/imfused.conf", NULL };
    T_EQ_INT(parse(&c, why, 3, argv), 0);
    T_EQ_STR(c.data, "/var/lib/imfuse");
    T_EQ_STR(c.control, "/run/imfuse/imfused.sock");
    T_EQ_STR(c.listen, "127.0.0.1:7700");
    T_ASSERT(c.listen_tls == NULL);
    T_ASSERT(!c.open_registration);
    T_EQ_STR(c.io, "kernel");
    cp_config_free(&c);
}

T_TEST(store_map_size)
{
    struct cp_config c;
    char why[512];
    char *argv0[] = { "imfused", NULL };
    T_EQ_INT(parse(&c, why, 1, argv0), 0);
    T_EQ_INT(c.store_map_size, 0);                  /* the store's own default */
    cp_config_free(&c);

    static const struct { const char *v; uint64_t want; } ok[] = {
        { "4G", 4ull << 30 }, { "64m", 64ull << 20 }, { "1M", 1ull << 20 }, { "16T", 16ull << 40 },
        { "1048576", 1ull << 20 }, { "2048K", 2ull << 20 },
    };
    for (size_t i = 0; i < IM_ARRAY_SIZE(ok); i++) {
        char *argv[] = { "imfused", "--store-map-size", (char *)ok[i].v, NULL };
        T_EQ_INT(parse(&c, why, 3, argv), 0);
        T_EQ_INT(c.store_map_size, ok[i].want);
        cp_config_free(&c);
    }
    static const char *bad[] = { "", "G", "1023K", "17T", "-1G", "4GB", "4 G", "99999999999999999999",
                                 "18446744073709551615K" };
    for (size_t i = 0; i < IM_ARRAY_SIZE(bad); i++) {
        char *argv[] = { "imfused", "--store-map-size", (char *)bad[i], NULL };
        T_ASSERT(parse(&c, why, 3, argv) < 0);
        T_ASSERT(strstr(why, "store-map-size") && strstr(why, "1M to 16T"));
        cp_config_free(&c);
    }
    char *path = write_conf("store-map-size = 8G\n");
    char *argv[] = { "imfused", "--config", path, NULL };
    T_EQ_INT(parse(&c, why, 3, argv), 0);
    T_EQ_INT(c.store_map_size, 8ull << 30);
    cp_config_free(&c);
    unlink(path);
}

T_TEST(bad_flags)
{
    struct cp_config c;
    char why[512];
    char *a1[] = { "imfused", "--nope", NULL };
    T_ASSERT(parse(&c, why, 2, a1) < 0);
    T_ASSERT(strstr(why, "--nope"));
    cp_config_free(&c);
    char *a2[] = { "imfused", "--listen", "localhost", NULL };
    T_ASSERT(parse(&c, why, 3, a2) < 0);
    T_ASSERT(strstr(why, "listen"));
    cp_config_free(&c);
    char *a3[] = { "imfused", "--io", "magic", NULL };
    T_ASSERT(parse(&c, why, 3, a3) < 0);
    cp_config_free(&c);
    char *a4[] = { "imfused", "--listen-tls", "127.0.0.1:7443", NULL };
    T_ASSERT(parse(&c, why, 3, a4) < 0);
    T_ASSERT(strstr(why, "tls-cert"));
    cp_config_free(&c);
    char *a5[] = { "imfused", "--log-level", "loud", NULL };
    T_ASSERT(parse(&c, why, 3, a5) < 0);
    cp_config_free(&c);
}

T_TEST(hostport)
{
    char *h;
    unsigned p;
    T_EQ_INT(im_split_hostport("127.0.0.1:5222", &h, &p), 0);
    T_EQ_STR(h, "127.0.0.1");
    T_EQ_INT(p, 5222);
    free(h);
    T_EQ_INT(im_split_hostport("[::1]:1", &h, &p), 0);
    T_EQ_STR(h, "::1");
    free(h);
    T_ASSERT(im_split_hostport("::1:5222", &h, &p) < 0);
    T_ASSERT(im_split_hostport("a:0", &h, &p) < 0);
    T_ASSERT(im_split_hostport("a:65536", &h, &p) < 0);
    T_ASSERT(im_split_hostport(":5", &h, &p) < 0);
    T_ASSERT(im_split_hostport("a:", &h, &p) < 0);
    T_ASSERT(im_split_hostport("a:5x", &h, &p) < 0);
}

/* io dpdk: every key from a file, parsed; listen defaults to the dpdk address. */
T_TEST(dpdk_keys)
{
    struct cp_config c;
    char why[512];
    char *path = write_conf(
        "io = dpdk\n"
        "dpdk-eal = --no-pci --no-huge -m 512 --vdev=net_tap0,iface=imf0\n"
        "dpdk-port = net_tap0\n"
        "dpdk-address = 198.18.0.2/24\n"
        "dpdk-gateway = 198.18.0.1\n"
        "dpdk-mtu = 9000\n"
        "dpdk-mbufs = 16383\n"
        "dpdk-idle = spin\n"
        "dpdk-max-conns = 20000\n"
        "dpdk-local-ports = 20000-29999\n"
        "dpdk-tap-kernel = 198.18.0.1/24\n");
    char *argv[] = { "imfused", "--config", path, NULL };
    T_EQ_INT(parse(&c, why, 3, argv), 0);
    T_EQ_STR(c.dpdk_eal, "--no-pci --no-huge -m 512 --vdev=net_tap0,iface=imf0");
    T_EQ_STR(c.dpdk_port, "net_tap0");
    T_EQ_UINT(c.dpdk_addr, htonl(0xc6120002));
    T_EQ_INT(c.dpdk_prefix, 24);
    T_EQ_UINT(c.dpdk_gw, htonl(0xc6120001));
    T_ASSERT(!c.dpdk_gw_auto);
    T_EQ_INT(c.dpdk_mtu, 9000);
    T_EQ_INT(c.dpdk_mbufs, 16383);
    T_ASSERT(c.dpdk_spin);
    T_EQ_INT(c.dpdk_max_conns, 20000);
    T_EQ_INT(c.dpdk_lport_lo, 20000);
    T_EQ_INT(c.dpdk_lport_hi, 29999);
    T_EQ_UINT(c.dpdk_tap_addr, htonl(0xc6120001));
    T_EQ_STR(c.listen, "198.18.0.2:7700");
    T_ASSERT(c.listen_default);
    cp_config_free(&c);
    /* A flag wins over the file; gateway auto; adaptive by default. */
    char *path2 = write_conf("io = dpdk\ndpdk-port = 0\ndpdk-gateway = auto\n");
    char *argv2[] = { "imfused", "--config", path2, "--dpdk-port", "net_af_packet0", "--listen", "0.0.0.0:7800",
                      NULL };
    T_EQ_INT(parse(&c, why, 7, argv2), 0);
    T_EQ_STR(c.dpdk_port, "net_af_packet0");
    T_ASSERT(c.dpdk_gw_auto && !c.dpdk_spin && !c.listen_default);
    T_EQ_STR(c.listen, "0.0.0.0:7800");
    T_EQ_UINT(c.dpdk_addr, 0);      /* net_af_packet: taken from the interface at start-up */
    cp_config_free(&c);
    unlink(path);
    unlink(path2);
}

/* Each bad value of a dpdk key: refused at start-up with words naming the key. */
T_TEST(dpdk_bad_values)
{
    static const struct { const char *key, *val, *words; } bad[] = {
        { "dpdk-address", "198.18.0.2", "ADDRESS/PREFIX" },
        { "dpdk-address", "198.18.0.2/33", "prefix of 1-32" },
        { "dpdk-address", "198.18.0.2/0", "prefix of 1-32" },
        { "dpdk-address", "host.test/24", "IPv4" },
        { "dpdk-address", "127.0.0.2/8", "not a usable unicast" },
        { "dpdk-address", "224.0.0.1/4", "not a usable unicast" },
        { "dpdk-gateway", "router", "IPv4 address or auto" },
        { "dpdk-gateway", "198.19.0.1", "not in 198.18.0.2/24" },
        { "dpdk-mtu", "67", "68 to 9000" },
        { "dpdk-mtu", "9001", "68 to 9000" },
        { "dpdk-mtu", "15OO", "68 to 9000" },
        { "dpdk-mbufs", "100", "1023 to 1048575" },
        { "dpdk-max-conns", "0", "1 to 1000000" },
        { "dpdk-max-conns", "-5", "1 to 1000000" },
        { "dpdk-idle", "sometimes", "spin or adaptive" },
        { "dpdk-local-ports", "2000-1000", "LO-HI" },
        { "dpdk-local-ports", "0-1000", "LO-HI" },
        { "dpdk-local-ports", "1000-70000", "LO-HI" },
        { "dpdk-local-ports", "1000", "LO-HI" },
        { "dpdk-tap-kernel", "198.18.0.1", "ADDRESS/PREFIX" },
        { "dpdk-tap-kernel", "198.18.0.2/24", "own dpdk-address" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cp_config c;
        char why[512] = "", flag[64];
        snprintf(flag, sizeof(flag), "--%s", bad[i].key);
        /* The bad key last, after a good address (unless the address is what is bad). */
        bool addr = !strcmp(bad[i].key, "dpdk-address");
        char *argv[] = { "imfused", "--io", "dpdk", "--dpdk-port", "net_tap0",
                         addr ? flag : (char *)"--dpdk-address", addr ? (char *)bad[i].val : (char *)"198.18.0.2/24",
                         addr ? NULL : flag, (char *)bad[i].val, NULL };
        if (parse(&c, why, addr ? 7 : 9, argv) == 0)
            T_FAIL("%s = %s was accepted", bad[i].key, bad[i].val);
        if (!strstr(why, bad[i].key) || !strstr(why, bad[i].words))
            T_FAIL("%s = %s: \"%s\" lacks \"%s\"", bad[i].key, bad[i].val, why, bad[i].words);
    }
    /* No port at all. */
    struct cp_config c;
    char why[512];
    char *argv[] = { "imfused", "--io", "dpdk", NULL };
    T_ASSERT(parse(&c, why, 3, argv) < 0);
    T_ASSERT(strstr(why, "dpdk-port"));
}

/* The client connection limits: defaults, 0 where it means off, the file, bounds. */
T_TEST(client_limits)
{
    struct cp_config c;
    char why[512];
    char *argv0[] = { "imfused", NULL };
    T_EQ_INT(parse(&c, why, 1, argv0), 0);
    T_EQ_INT(c.max_conns, 10000);
    T_EQ_INT(c.max_conns_per_address, 100);
    T_EQ_INT(c.prelogin_timeout, 30);
    T_ASSERT(c.prelogin_memory == 32u << 20);
    T_EQ_INT(c.tcp_keepalive, 60);
    T_EQ_INT(c.idle_timeout, 0);
    cp_config_free(&c);

    char *path = write_conf("max-conns = 500\nmax-conns-per-address = 5\nprelogin-timeout = 10\n"
                            "prelogin-memory = 8M\ntcp-keepalive = 0\nidle-timeout = 600\n");
    char *argv1[] = { "imfused", "--config", path, "--max-conns", "700", NULL };
    T_EQ_INT(parse(&c, why, 5, argv1), 0);
    T_EQ_INT(c.max_conns, 700);             /* the flag wins */
    T_EQ_INT(c.max_conns_per_address, 5);
    T_EQ_INT(c.prelogin_timeout, 10);
    T_ASSERT(c.prelogin_memory == 8u << 20);
    T_EQ_INT(c.tcp_keepalive, 0);           /* 0: off, not the default */
    T_EQ_INT(c.idle_timeout, 600);
    cp_config_free(&c);
    unlink(path);

    static const struct { const char *key, *val, *words; } bad[] = {
        { "max-conns", "0", "1 to 1000000" },
        { "max-conns-per-address", "0", "1 to 1000000" },
        { "prelogin-timeout", "0", "1 to 3600" },
        { "prelogin-timeout", "3601", "1 to 3600" },
        { "prelogin-memory", "100K", "1M to 16T" },
        { "tcp-keepalive", "-1", "0 to 86400" },
        { "idle-timeout", "forever", "0 to 2592000" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s", bad[i].key);
        char *argv[] = { "imfused", flag, (char *)bad[i].val, NULL };
        why[0] = '\0';
        if (parse(&c, why, 3, argv) == 0)
            T_FAIL("%s = %s was accepted", bad[i].key, bad[i].val);
        if (!strstr(why, bad[i].key) || !strstr(why, bad[i].words))
            T_FAIL("%s = %s: \"%s\" lacks \"%s\"", bad[i].key, bad[i].val, why, bad[i].words);
    }
}

T_MAIN(T_RUN(defaults), T_RUN(flags), T_RUN(file_and_override), T_RUN(file_errors_name_the_line), T_RUN(file_long_line),
       T_RUN(shipped_config), T_RUN(store_map_size),
       T_RUN(bad_flags), T_RUN(hostport), T_RUN(dpdk_keys), T_RUN(dpdk_bad_values), T_RUN(client_limits))
