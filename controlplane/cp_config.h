/*
 * cp_config.h - the daemon's settings: command-line flags and the config
 * file (DESIGN 9).  One `key = value` per line, `#` comments, keys are the
 * long flag names without the dashes; flags override the file.
 */
#ifndef CP_CONFIG_H
#define CP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cp_config {
    char *config;               /* --config FILE */
    char *data;                 /* --data DIR (default ./var) */
    char *listen;               /* --listen HOST:PORT (default 127.0.0.1:7700), "" = none */
    char *listen_tls;           /* --listen-tls HOST:PORT */
    char *tls_cert, *tls_key;   /* for the TLS listener */
    char *control;              /* --control PATH (default DATA/imfused.sock) */
    char *ca_file;              /* --ca-file FILE */
    char *io;                   /* --io kernel|dpdk */
    unsigned workers;           /* --workers N */
    uint64_t store_map_size;    /* --store-map-size SIZE (bytes; 0 = the store's default) */
    bool open_registration;     /* --open-registration */
    char *log_level;            /* --log-level LEVEL */
    bool listen_default;        /* listen not given: with io dpdk, cp_main puts the dpdk address in */

    /* client connections (docs/OPERATIONS.md, "Client connections") */
    unsigned max_conns;         /* --max-conns N: client connections at once (default 10000) */
    unsigned max_conns_per_address; /* --max-conns-per-address N (default 100; IPv6: per /64) */
    unsigned prelogin_timeout;  /* --prelogin-timeout S: log in within (default 30) */
    uint64_t prelogin_memory;   /* --prelogin-memory SIZE: their receive buffers (default 32M) */
    unsigned tcp_keepalive;     /* --tcp-keepalive S: silence before probing (default 60, 0 = off) */
    unsigned idle_timeout;      /* --idle-timeout S: close a silent logged-in client (default 0 = off) */

    /* io dpdk (DESIGN 9); the text as given, then checked and parsed below */
    char *dpdk_eal;             /* --dpdk-eal "ARGS": EAL arguments, passed as given */
    char *dpdk_port;            /* --dpdk-port PCI|NAME|INDEX */
    char *dpdk_address;         /* --dpdk-address ADDR/PREFIX (net_af_packet: default the iface's) */
    char *dpdk_gateway;         /* --dpdk-gateway IP|auto */
    unsigned dpdk_mtu;          /* --dpdk-mtu N (68-9000, default 1500) */
    unsigned dpdk_mbufs;        /* --dpdk-mbufs N (1023-1048575, default 8191) */
    char *dpdk_idle;            /* --dpdk-idle spin|adaptive (default adaptive) */
    unsigned dpdk_max_conns;    /* --dpdk-max-conns N (1-1000000, default 10000) */
    char *dpdk_local_ports;     /* --dpdk-local-ports LO-HI (default 32768-65535) */
    char *dpdk_tap_kernel;      /* --dpdk-tap-kernel ADDR/PREFIX: the TAP's kernel side */
    /* parsed (network byte order) */
    uint32_t dpdk_addr, dpdk_gw, dpdk_tap_addr;
    uint8_t dpdk_prefix, dpdk_tap_prefix;
    bool dpdk_gw_auto, dpdk_spin;
    uint16_t dpdk_lport_lo, dpdk_lport_hi;
};

/*
 * Parse argv (then the config file it names, flags winning).  Returns 0, 1
 * when --help or --version was printed (exit 0), or negative with the exact
 * reason in why ("line 3: unknown key \"foo\"").  Unless it returns 0, nothing
 * is left in c to free.
 */
int cp_config_parse(struct cp_config *c, int argc, char **argv, char *why, size_t whysz);
void cp_config_free(struct cp_config *c);

#endif
