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

#define CP_CONFIG_KEYS 96       /* keys at most (checked at build time) */

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

    /* Authentication limits and quotas (docs/OPERATIONS.md "Limits"); a key
     * not given gets its default (cp_config.c, the limits block). */
    unsigned login_failures_per_address;    /* failed logins from a source before its lockout */
    unsigned auth_pending_per_address;      /* password checks waiting or running per source */
    unsigned auth_pending_max;              /* ... in total */
    unsigned register_per_address;          /* registrations per source and hour */
    unsigned max_accounts_per_user;
    unsigned max_contacts_per_account;      /* every network; at most CP_MAX_CONTACTS_CAP */
    unsigned max_unified_members;           /* members of a user's unified list, all contacts */
    unsigned max_queued_per_user;           /* messages waiting for the user's ack */
    uint64_t max_queued_bytes_per_user;     /* ... and their bytes */
    unsigned max_sessions;                  /* emulated sessions (linked accounts) in total */

    /* operations (SNMP, alarms; cp_snmp.c, cp_ops.c) */
    char *snmp_agentx;          /* --snmp-agentx SOCKET: the AgentX master's socket; NULL: off */
    unsigned account_storm;     /* --account-storm N: more than N accounts leaving online in a
                                 * minute is a storm (default 50) */

    /* where each key's value comes from (enum cp_config_origin), by key */
    unsigned char origin[CP_CONFIG_KEYS];
    unsigned origin_line[CP_CONFIG_KEYS];   /* CP_CFG_FILE: its line */
    int argc;                   /* the command line, kept for cp_config_reread() */
    char **argv;
};

enum cp_config_origin {
    CP_CFG_DEFAULT = 0,
    CP_CFG_FLAG,                /* the command line */
    CP_CFG_FILE,                /* the config file */
    CP_CFG_RUNTIME,             /* set while running (imfusectl log-level) */
};

/* The largest max-contacts-per-account: a full `contacts` list of that many
 * entries of the largest size the relay keeps (dataplane/dp_relay.h) fits in
 * one frame, with the rest of an account's configuration. */
#define CP_MAX_CONTACTS_CAP     1000
/* The largest max-accounts-per-user (`accounts` is read in pages past a frame). */
#define CP_MAX_ACCOUNTS_CAP     10000

/*
 * Parse argv (then the config file it names, flags winning).  Returns 0, 1
 * when --help or --version was printed (exit 0), or negative with the exact
 * reason in why ("line 3: unknown key \"foo\"").  Unless it returns 0, nothing
 * is left in c to free.
 */
int cp_config_parse(struct cp_config *c, int argc, char **argv, char *why, size_t whysz);
void cp_config_free(struct cp_config *c);

/*
 * Parse the command line cur was made from and the config file again into
 * out (for a reload).  Returns 0, or negative with the reason in why;
 * unless it returns 0, nothing is left in out to free.
 */
int cp_config_reread(const struct cp_config *cur, struct cp_config *out, char *why, size_t whysz);

/*
 * Call fn for every key in the order of --help: its effective value as the
 * config file would spell it ("" when unset), and where it comes from
 * ("default", "command line", "FILE line N").  Keys marked secret give
 * "(secret)" instead of their value.
 */
typedef void cp_config_each_fn(void *ud, const char *key, const char *value, const char *origin);
void cp_config_each(const struct cp_config *c, cp_config_each_fn *fn, void *ud);

/* Set key to value while running (origin CP_CFG_RUNTIME).  0, or negative
 * with the reason in why. */
int cp_config_set(struct cp_config *c, const char *key, const char *value, char *why, size_t whysz);
/* Take key's value and origin from src (a reread config) into c; src keeps
 * a value it may free. */
void cp_config_take(struct cp_config *c, struct cp_config *src, const char *key);

/* The value of one key as cp_config_each() gives it; false for an unknown key. */
bool cp_config_value(const struct cp_config *c, const char *key, char *buf, size_t sz);

#endif
