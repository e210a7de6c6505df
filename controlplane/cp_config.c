/*
 * cp_config.c - flags and config file.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>

#include <arpa/inet.h>

#include "im_common.h"
#include "cp_config.h"
#include "cp_netlink.h"

enum opt_kind { OPT_STR, OPT_UINT, OPT_BOOL, OPT_SIZE };

struct opt_def {
    const char *name;
    enum opt_kind kind;
    size_t off;
    const char *help;
    unsigned long min, max;     /* OPT_UINT (0, 0: 1-64) */
};

#define OFF(f) offsetof(struct cp_config, f)
static const struct opt_def opts[] = {
    { "config",            OPT_STR,  OFF(config),   "FILE  read settings from FILE (key = value)", 0, 0 },
    { "data",              OPT_STR,  OFF(data),     "DIR   data directory (default ./var)", 0, 0 },
    { "listen",            OPT_STR,  OFF(listen),   "HOST:PORT  plain client listener (default 127.0.0.1:7700)", 0, 0 },
    { "listen-tls",        OPT_STR,  OFF(listen_tls), "HOST:PORT  TLS client listener (needs --tls-cert, --tls-key)", 0, 0 },
    { "tls-cert",          OPT_STR,  OFF(tls_cert), "FILE  certificate chain (PEM) of the TLS listener", 0, 0 },
    { "tls-key",           OPT_STR,  OFF(tls_key),  "FILE  private key (PEM) of the TLS listener", 0, 0 },
    { "control",           OPT_STR,  OFF(control),  "PATH  control socket (default DATA/imfused.sock)", 0, 0 },
    { "ca-file",           OPT_STR,  OFF(ca_file),  "FILE  CA bundle for IM server certificates (default: system)", 0, 0 },
    { "io",                OPT_STR,  OFF(io),       "kernel|dpdk  I/O backend (default kernel)", 0, 0 },
    { "workers",           OPT_UINT, OFF(workers),  "N     dataplane workers (default 1)", 0, 0 },
    { "store-map-size",    OPT_SIZE, OFF(store_map_size), "SIZE  LMDB map size, e.g. 4G (K, M, G, T; default 1G, 1M-16T)", 0, 0 },
    { "open-registration", OPT_BOOL, OFF(open_registration), "   let clients register users themselves", 0, 0 },
    { "log-level",         OPT_STR,  OFF(log_level), "LEVEL error|warn|info|debug (default info)", 0, 0 },
    /* client connections: defaults in set_defaults() */
    { "max-conns",         OPT_UINT, OFF(max_conns), "N    client connections at once, 1-1000000 (default 10000; "
                                                     "io kernel: kept below the file limit)", 1, 1000000 },
    { "max-conns-per-address", OPT_UINT, OFF(max_conns_per_address), "N    client connections from one address "
                                                     "(IPv6: one /64), 1-1000000 (default 100)", 1, 1000000 },
    { "prelogin-timeout",  OPT_UINT, OFF(prelogin_timeout), "S    close a connection not logged in within S "
                                                     "seconds, 1-3600 (default 30)", 1, 3600 },
    { "prelogin-memory",   OPT_SIZE, OFF(prelogin_memory), "SIZE receive buffers of all connections not logged "
                                                     "in, e.g. 32M (default 32M, 1M-16T)", 0, 0 },
    { "tcp-keepalive",     OPT_UINT, OFF(tcp_keepalive), "S    probe a client silent for S seconds, close it "
                                                     "when 4 probes go unanswered; 0 = off (default 60)", 0, 86400 },
    { "idle-timeout",      OPT_UINT, OFF(idle_timeout), "S    close a logged-in client silent for S seconds; "
                                                     "0 = never (default 0)", 0, 2592000 },
    { "dpdk-eal",          OPT_STR,  OFF(dpdk_eal), "\"ARGS\" io dpdk: EAL arguments, as given (the lcore list is the daemon's)", 0, 0 },
    { "dpdk-port",         OPT_STR,  OFF(dpdk_port), "PORT io dpdk: PCI address, device name (net_tap0) or index", 0, 0 },
    { "dpdk-address",      OPT_STR,  OFF(dpdk_address), "A/N io dpdk: the appliance's address/prefix (net_af_packet: the iface's)", 0, 0 },
    { "dpdk-gateway",      OPT_STR,  OFF(dpdk_gateway), "IP|auto io dpdk: the next hop beyond the subnet (auto: the kernel's)", 0, 0 },
    { "dpdk-mtu",          OPT_UINT, OFF(dpdk_mtu), "N    io dpdk: IP MTU, 68-9000 (default 1500)", 68, 9000 },
    { "dpdk-mbufs",        OPT_UINT, OFF(dpdk_mbufs), "N    io dpdk: packet buffers, 1023-1048575 (default 8191)", 1023, 1048575 },
    { "dpdk-idle",         OPT_STR,  OFF(dpdk_idle), "spin|adaptive io dpdk: spin on a dedicated core, or sleep when idle (default)", 0, 0 },
    { "dpdk-max-conns",    OPT_UINT, OFF(dpdk_max_conns), "N    io dpdk: TCP connections at most, 1-1000000 (default 10000)", 1, 1000000 },
    { "dpdk-local-ports",  OPT_STR,  OFF(dpdk_local_ports), "LO-HI io dpdk: local ports of outbound connections (default 32768-65535)", 0, 0 },
    { "dpdk-tap-kernel",   OPT_STR,  OFF(dpdk_tap_kernel), "A/N  io dpdk: address/prefix of a TAP port's kernel side (set with netlink)", 0, 0 },
};

static const struct opt_def *
opt_find(const char *name)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++)
        if (!strcmp(opts[i].name, name))
            return &opts[i];
    return NULL;
}

/* Set one option from text; set[] records what the command line gave. */
static int
opt_set(struct cp_config *c, const struct opt_def *o, const char *val, char *why, size_t whysz)
{
    void *field = (char *)c + o->off;
    switch (o->kind) {
    case OPT_STR: {
        char **s = field;
        free(*s);
        *s = strdup(val);
        return *s ? 0 : -ENOMEM;
    }
    case OPT_UINT: {
        char *end;
        unsigned long lo = o->max ? o->min : 1, hi = o->max ? o->max : 64;
        errno = 0;
        unsigned long v = strtoul(val, &end, 10);
        if (!*val || *val == '-' || *end || errno || v < lo || v > hi) {
            snprintf(why, whysz, "%s: expected a number from %lu to %lu, got \"%s\"", o->name, lo, hi, val);
            return -IM_EINVAL;
        }
        *(unsigned *)field = (unsigned)v;
        return 0;
    }
    case OPT_SIZE: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        unsigned shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        }
        if (!*val || *val == '-' || *end || errno || v > (16ull << 40) >> shift ||
            (v << shift) < (1ull << 20) || (v << shift) > (16ull << 40)) {
            snprintf(why, whysz, "%s: expected a size from 1M to 16T (bytes, or with K, M, G or T), got \"%s\"",
                     o->name, val);
            return -IM_EINVAL;
        }
        *(uint64_t *)field = (uint64_t)v << shift;
        return 0;
    }
    case OPT_BOOL:
        if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "1") || !*val) {
            *(bool *)field = true;
        } else if (!strcmp(val, "false") || !strcmp(val, "no") || !strcmp(val, "0")) {
            *(bool *)field = false;
        } else {
            snprintf(why, whysz, "%s: expected true or false, got \"%s\"", o->name, val);
            return -IM_EINVAL;
        }
        return 0;
    }
    return -IM_EINVAL;
}

static char *
trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int
read_file(struct cp_config *c, const char *path, const bool *given, char *why, size_t whysz)
{
    FILE *f = fopen(path, "r");
    char line[4096], msg[512];
    unsigned lineno = 0;
    int rc = 0;

    if (!f) {
        snprintf(why, whysz, "cannot open config file %s: %s", path, strerror(errno));
        return -errno;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(why, whysz, "%s: line %u: longer than %zu bytes", path, lineno, sizeof(line) - 1);
            rc = -IM_EINVAL;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(why, whysz, "%s: line %u: expected \"key = value\"", path, lineno);
            rc = -IM_EINVAL;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *val = trim(eq + 1);
        const struct opt_def *o = opt_find(key);
        if (!o || !strcmp(key, "config")) {
            snprintf(why, whysz, "%s: line %u: unknown key \"%s\"", path, lineno, key);
            rc = -IM_EINVAL;
            break;
        }
        if (given[o - opts])
            continue;           /* the command line wins */
        if ((rc = opt_set(c, o, val, msg, sizeof(msg))) < 0) {
            snprintf(why, whysz, "%s: line %u: %s", path, lineno, msg);
            break;
        }
    }
    fclose(f);
    return rc;
}

/* "LO-HI" ports, 1 <= LO <= HI <= 65535. */
static int
parse_range(const char *s, uint16_t *lo, uint16_t *hi)
{
    char *end;
    unsigned long a = strtoul(s, &end, 10);
    if (end == s || *end != '-')
        return -1;
    const char *b_s = end + 1;
    unsigned long b = strtoul(b_s, &end, 10);
    if (end == b_s || *end || a < 1 || b > 65535 || a > b || *s == '-' || *b_s == '-')
        return -1;
    *lo = (uint16_t)a;
    *hi = (uint16_t)b;
    return 0;
}

/* The io dpdk keys: checked and parsed, every bad value with its reason. */
static int
check_dpdk(struct cp_config *c, char *why, size_t whysz)
{
    char msg[256];
    struct cp_nl_addr a;
    if (!c->dpdk_port || !*c->dpdk_port) {
        snprintf(why, whysz, "io dpdk needs dpdk-port (a PCI address, a device name such as net_tap0, or an index)");
        return -IM_EINVAL;
    }
    if (c->dpdk_address) {
        if (cp_nl_parse_prefix(c->dpdk_address, &a, msg, sizeof(msg)) < 0) {
            snprintf(why, whysz, "dpdk-address: %s", msg);
            return -IM_EINVAL;
        }
        uint32_t h = ntohl(a.addr);
        if ((h >> 24) == 0 || (h >> 24) == 127 || (h >> 28) >= 0xe) {
            snprintf(why, whysz, "dpdk-address: %s is not a usable unicast address", c->dpdk_address);
            return -IM_EINVAL;
        }
        c->dpdk_addr = a.addr;
        c->dpdk_prefix = a.prefix;
    }
    if (c->dpdk_gateway) {
        if (!strcmp(c->dpdk_gateway, "auto")) {
            c->dpdk_gw_auto = true;
        } else if (inet_pton(AF_INET, c->dpdk_gateway, &c->dpdk_gw) != 1) {
            snprintf(why, whysz, "dpdk-gateway: expected an IPv4 address or auto, got \"%s\"", c->dpdk_gateway);
            return -IM_EINVAL;
        } else if (c->dpdk_address && c->dpdk_prefix < 32 &&
                   ((c->dpdk_gw ^ c->dpdk_addr) & htonl(~0u << (32 - c->dpdk_prefix)))) {
            snprintf(why, whysz, "dpdk-gateway: %s is not in %s", c->dpdk_gateway, c->dpdk_address);
            return -IM_EINVAL;
        }
    }
    if (c->dpdk_idle && strcmp(c->dpdk_idle, "spin") && strcmp(c->dpdk_idle, "adaptive")) {
        snprintf(why, whysz, "dpdk-idle: expected spin or adaptive, got \"%s\"", c->dpdk_idle);
        return -IM_EINVAL;
    }
    c->dpdk_spin = c->dpdk_idle && !strcmp(c->dpdk_idle, "spin");
    if (c->dpdk_local_ports) {
        if (parse_range(c->dpdk_local_ports, &c->dpdk_lport_lo, &c->dpdk_lport_hi) < 0) {
            snprintf(why, whysz, "dpdk-local-ports: expected LO-HI with 1 <= LO <= HI <= 65535, got \"%s\"",
                     c->dpdk_local_ports);
            return -IM_EINVAL;
        }
    }
    if (c->dpdk_tap_kernel) {
        if (cp_nl_parse_prefix(c->dpdk_tap_kernel, &a, msg, sizeof(msg)) < 0) {
            snprintf(why, whysz, "dpdk-tap-kernel: %s", msg);
            return -IM_EINVAL;
        }
        if (c->dpdk_address && a.addr == c->dpdk_addr) {
            snprintf(why, whysz, "dpdk-tap-kernel: %s is the appliance's own dpdk-address", c->dpdk_tap_kernel);
            return -IM_EINVAL;
        }
        c->dpdk_tap_addr = a.addr;
        c->dpdk_tap_prefix = a.prefix;
    }
    return 0;
}

static void
usage(FILE *out)
{
    fprintf(out, "usage: imfused [OPTIONS]\n\nThe imfuse appliance (runs in the foreground).\n\n");
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++)
        fprintf(out, "  --%-18s %s\n", opts[i].name, opts[i].help);
    fprintf(out, "  --%-18s %s\n  --%-18s %s\n", "help", "   this text", "version", "   print the version");
}

/* Numeric defaults where 0 means something (off), set before flags and file. */
static void
set_defaults(struct cp_config *c)
{
    c->max_conns = 10000;
    c->max_conns_per_address = 100;
    c->prelogin_timeout = 30;
    c->prelogin_memory = 32u << 20;
    c->tcp_keepalive = 60;
    c->idle_timeout = 0;
}

static int
parse(struct cp_config *c, int argc, char **argv, char *why, size_t whysz)
{
    struct option lo[IM_ARRAY_SIZE(opts) + 3];
    bool given[IM_ARRAY_SIZE(opts)] = { false };
    int rc;

    memset(c, 0, sizeof(*c));
    set_defaults(c);
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++)
        lo[i] = (struct option){ opts[i].name, opts[i].kind == OPT_BOOL ? no_argument : required_argument,
                                 NULL, (int)(i + 256) };
    lo[IM_ARRAY_SIZE(opts)] = (struct option){ "help", no_argument, NULL, 'h' };
    lo[IM_ARRAY_SIZE(opts) + 1] = (struct option){ "version", no_argument, NULL, 'V' };
    lo[IM_ARRAY_SIZE(opts) + 2] = (struct option){ NULL, 0, NULL, 0 };

    optind = 1;
    opterr = 0;
    for (;;) {
        int ch = getopt_long(argc, argv, ":hV", lo, NULL);
        if (ch == -1)
            break;
        if (ch == 'h') {
            usage(stdout);
            return 1;
        }
        if (ch == 'V') {
            printf("imfused 0.1.0\n");
            return 1;
        }
        if (ch == '?' || ch == ':') {
            snprintf(why, whysz, ch == ':' ? "option %s needs a value" : "unknown option %s (see --help)",
                     argv[optind - 1]);
            return -IM_EINVAL;
        }
        const struct opt_def *o = &opts[ch - 256];
        given[ch - 256] = true;
        if ((rc = opt_set(c, o, o->kind == OPT_BOOL ? "true" : optarg, why, whysz)) < 0)
            return rc;
    }
    if (optind < argc) {
        snprintf(why, whysz, "unexpected argument \"%s\" (see --help)", argv[optind]);
        return -IM_EINVAL;
    }
    if (c->config && (rc = read_file(c, c->config, given, why, whysz)) < 0)
        return rc;

    /* defaults */
    if (!c->data && !(c->data = strdup("./var")))
        return -ENOMEM;
    if (!c->io && !(c->io = strdup("kernel")))
        return -ENOMEM;
    if (!strcmp(c->io, "dpdk") && (rc = check_dpdk(c, why, whysz)) < 0)
        return rc;
    if (!c->listen) {
        c->listen_default = true;
        char buf[32] = "127.0.0.1";
        if (!strcmp(c->io, "dpdk"))
            inet_ntop(AF_INET, &c->dpdk_addr, buf, sizeof(buf));   /* 0.0.0.0 until known */
        if (!(c->listen = malloc(strlen(buf) + 6)))
            return -ENOMEM;
        sprintf(c->listen, "%s:7700", buf);
    }
    if (!c->log_level && !(c->log_level = strdup("info")))
        return -ENOMEM;
    if (!c->workers)
        c->workers = 1;
    if (!c->control) {
        size_t n = strlen(c->data) + sizeof("/imfused.sock");
        if (!(c->control = malloc(n)))
            return -ENOMEM;
        snprintf(c->control, n, "%s/imfused.sock", c->data);
    }

    /* checks */
    if (im_log_parse_level(c->log_level) < 0) {
        snprintf(why, whysz, "log-level: expected error, warn, info or debug, got \"%s\"", c->log_level);
        return -IM_EINVAL;
    }
    if (strcmp(c->io, "kernel") && strcmp(c->io, "dpdk")) {
        snprintf(why, whysz, "io: expected kernel or dpdk, got \"%s\"", c->io);
        return -IM_EINVAL;
    }
    char *host;
    unsigned port;
    if (*c->listen) {
        if (im_split_hostport(c->listen, &host, &port) < 0) {
            snprintf(why, whysz, "listen: expected HOST:PORT, got \"%s\"", c->listen);
            return -IM_EINVAL;
        }
        free(host);
    }
    if (c->listen_tls) {
        if (im_split_hostport(c->listen_tls, &host, &port) < 0) {
            snprintf(why, whysz, "listen-tls: expected HOST:PORT, got \"%s\"", c->listen_tls);
            return -IM_EINVAL;
        }
        free(host);
        if (!c->tls_cert || !c->tls_key) {
            snprintf(why, whysz, "listen-tls needs tls-cert and tls-key");
            return -IM_EINVAL;
        }
    }
    if (strlen(c->control) >= 108) {
        snprintf(why, whysz, "control: path longer than 107 bytes");
        return -IM_EINVAL;
    }
    return 0;
}

int
cp_config_parse(struct cp_config *c, int argc, char **argv, char *why, size_t whysz)
{
    int rc = parse(c, argc, argv, why, whysz);
    if (rc != 0)
        cp_config_free(c);
    return rc;
}

void
cp_config_free(struct cp_config *c)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++)
        if (opts[i].kind == OPT_STR) {
            char **s = (char **)((char *)c + opts[i].off);
            free(*s);
            *s = NULL;
        }
}
