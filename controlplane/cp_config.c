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
    /* ---- authentication limits and quotas (defaults in limit_defaults()) ---- */
    { "login-failures-per-address", OPT_UINT, OFF(login_failures_per_address),
      "N  failed logins from one address (IPv6: /64) before it is locked out (default 20)", 1, 1000000 },
    { "auth-pending-per-address", OPT_UINT, OFF(auth_pending_per_address),
      "N  logins and registrations being checked at once per address (default 16)", 1, 1000000 },
    { "auth-pending-max", OPT_UINT, OFF(auth_pending_max),
      "N  logins and registrations being checked at once in total (default 256)", 1, 1000000 },
    { "register-per-address", OPT_UINT, OFF(register_per_address),
      "N  registrations per address and hour (default 10)", 1, 1000000 },
    { "max-accounts-per-user", OPT_UINT, OFF(max_accounts_per_user),
      "N  linked accounts per user, 1-10000 (default 32)", 1, CP_MAX_ACCOUNTS_CAP },
    { "max-contacts-per-account", OPT_UINT, OFF(max_contacts_per_account),
      "N  contacts per account on every network, 1-1000 (default 1000)", 1, CP_MAX_CONTACTS_CAP },
    { "max-unified-members", OPT_UINT, OFF(max_unified_members),
      "N  members in a user's unified list, all contacts together (default 10000)", 1, 640000 },
    { "max-queued-per-user", OPT_UINT, OFF(max_queued_per_user),
      "N  received messages waiting for a user's ack (default 10000)", 1, 100000000 },
    { "max-queued-bytes-per-user", OPT_SIZE, OFF(max_queued_bytes_per_user),
      "SIZE  their bytes, e.g. 64M (default 64M, 64K-64G)", 64ul << 10, 64ul << 30 },
    { "max-sessions", OPT_UINT, OFF(max_sessions),
      "N  linked accounts (emulated sessions) in total (default 10000)", 1, 10000000 },
    /* operations: SNMP and alarms (cp_snmp.c, cp_ops.c) */
    { "snmp-agentx",       OPT_STR,  OFF(snmp_agentx), "SOCKET the AgentX master's socket (snmpd's agentXSocket): serve IMFUSE-MIB (default off)", 0, 0 },
    { "account-storm",     OPT_UINT, OFF(account_storm), "N    more than N accounts leaving online within a minute is a storm (warning, SNMP notification; default 50)", 1, 1000000 },
};

_Static_assert(IM_ARRAY_SIZE(opts) <= CP_CONFIG_KEYS, "raise CP_CONFIG_KEYS");

/* Keys whose values are secrets: `imfusectl config` shows "(secret)" for
 * them.  None of today's keys holds one (paths to secrets are no secrets);
 * a key for a password or an SNMP community belongs here. */
static const char *const secret_keys[] = { NULL };

static bool
is_secret(const char *key)
{
    for (size_t i = 0; secret_keys[i]; i++)
        if (!strcmp(secret_keys[i], key))
            return true;
    return false;
}

/* The defaults of the limits block (a key not given is 0 here). */
static void
limit_defaults(struct cp_config *c)
{
    if (!c->login_failures_per_address)
        c->login_failures_per_address = 20;
    if (!c->auth_pending_per_address)
        c->auth_pending_per_address = 16;
    if (!c->auth_pending_max)
        c->auth_pending_max = 256;
    if (!c->register_per_address)
        c->register_per_address = 10;
    if (!c->max_accounts_per_user)
        c->max_accounts_per_user = 32;
    if (!c->max_contacts_per_account)
        c->max_contacts_per_account = CP_MAX_CONTACTS_CAP;
    if (!c->max_unified_members)
        c->max_unified_members = 10000;
    if (!c->max_queued_per_user)
        c->max_queued_per_user = 10000;
    if (!c->max_queued_bytes_per_user)
        c->max_queued_bytes_per_user = 64ull << 20;
    if (!c->max_sessions)
        c->max_sessions = 10000;
}

static const struct opt_def *
opt_find(const char *name)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++)
        if (!strcmp(opts[i].name, name))
            return &opts[i];
    return NULL;
}

/* "64K", "1M", "16T": a size as the config would spell it (the largest exact suffix). */
static const char *
size_text(uint64_t v, char *buf, size_t n)
{
    static const char units[] = "KMGT";
    int u = -1;
    while (u < 3 && v >= 1024 && v % 1024 == 0) {
        v /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(buf, n, "%llu", (unsigned long long)v);
    else
        snprintf(buf, n, "%llu%c", (unsigned long long)v, units[u]);
    return buf;
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
        uint64_t lo = o->max ? o->min : 1ull << 20, hi = o->max ? o->max : 16ull << 40;
        char los[24], his[24];
        errno = 0;
        unsigned long long v = strtoull(val, &end, 10);
        unsigned shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        }
        if (!*val || *val == '-' || *end || errno || v > hi >> shift || (v << shift) < lo ||
            (v << shift) > hi) {
            snprintf(why, whysz, "%s: expected a size from %s to %s (bytes, or with K, M, G or T), got \"%s\"",
                     o->name, size_text(lo, los, sizeof(los)), size_text(hi, his, sizeof(his)), val);
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
        c->origin[o - opts] = CP_CFG_FILE;
        c->origin_line[o - opts] = lineno;
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

/* "FILE: line N: " when key's value came from the config file, else "". */
static const char *
where(const struct cp_config *c, const char *key, char *buf, size_t sz)
{
    const struct opt_def *o = opt_find(key);
    buf[0] = '\0';
    if (o && c->origin[o - opts] == CP_CFG_FILE)
        snprintf(buf, sz, "%s: line %u: ", c->config, c->origin_line[o - opts]);
    return buf;
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
    c->argc = argc;
    c->argv = argv;
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
            printf("imfused %s\n", IM_VERSION);
            return 1;
        }
        if (ch == '?' || ch == ':') {
            snprintf(why, whysz, ch == ':' ? "option %s needs a value" : "unknown option %s (see --help)",
                     argv[optind - 1]);
            return -IM_EINVAL;
        }
        const struct opt_def *o = &opts[ch - 256];
        given[ch - 256] = true;
        c->origin[ch - 256] = CP_CFG_FLAG;
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
    if (!c->account_storm)
        c->account_storm = 50;
    limit_defaults(c);
    if (!c->control) {
        size_t n = strlen(c->data) + sizeof("/imfused.sock");
        if (!(c->control = malloc(n)))
            return -ENOMEM;
        snprintf(c->control, n, "%s/imfused.sock", c->data);
    }

    /* checks */
    char at[300];
    if (im_log_parse_level(c->log_level) < 0) {
        snprintf(why, whysz, "%slog-level: expected error, warn, info or debug, got \"%s\"",
                 where(c, "log-level", at, sizeof(at)), c->log_level);
        return -IM_EINVAL;
    }
    if (strcmp(c->io, "kernel") && strcmp(c->io, "dpdk")) {
        snprintf(why, whysz, "%sio: expected kernel or dpdk, got \"%s\"", where(c, "io", at, sizeof(at)), c->io);
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

int
cp_config_reread(const struct cp_config *cur, struct cp_config *out, char *why, size_t whysz)
{
    return cp_config_parse(out, cur->argc, cur->argv, why, whysz);
}

static void
value_text(const struct cp_config *c, const struct opt_def *o, char *buf, size_t sz)
{
    const void *field = (const char *)c + o->off;
    switch (o->kind) {
    case OPT_STR: {
        const char *v = *(char *const *)field;
        snprintf(buf, sz, "%s", v ? v : "");
        break;
    }
    case OPT_UINT:
        snprintf(buf, sz, "%u", *(const unsigned *)field);
        break;
    case OPT_SIZE: {
        uint64_t v = *(const uint64_t *)field;
        if (!v && !strcmp(o->name, "store-map-size"))
            v = (uint64_t)1 << 30;                          /* 0: the store's default, 1G */
        size_text(v, buf, sz);
        break;
    }
    case OPT_BOOL:
        snprintf(buf, sz, "%s", *(const bool *)field ? "true" : "false");
        break;
    }
    if (is_secret(o->name) && *buf)
        snprintf(buf, sz, "(secret)");
}

void
cp_config_each(const struct cp_config *c, cp_config_each_fn *fn, void *ud)
{
    char val[4200], origin[600];
    for (size_t i = 0; i < IM_ARRAY_SIZE(opts); i++) {
        if (!strcmp(opts[i].name, "config"))
            snprintf(val, sizeof(val), "%s", c->config ? c->config : "");
        else
            value_text(c, &opts[i], val, sizeof(val));
        switch (c->origin[i]) {
        case CP_CFG_FLAG:
            snprintf(origin, sizeof(origin), "command line");
            break;
        case CP_CFG_FILE:
            snprintf(origin, sizeof(origin), "%s line %u", c->config, c->origin_line[i]);
            break;
        case CP_CFG_RUNTIME:
            snprintf(origin, sizeof(origin), "set while running (imfusectl)");
            break;
        default:
            snprintf(origin, sizeof(origin), "%s", *val ? "default" : "default: not set");
            break;
        }
        fn(ud, opts[i].name, val, origin);
    }
}

bool
cp_config_value(const struct cp_config *c, const char *key, char *buf, size_t sz)
{
    const struct opt_def *o = opt_find(key);
    if (!o)
        return false;
    value_text(c, o, buf, sz);
    return true;
}

int
cp_config_set(struct cp_config *c, const char *key, const char *value, char *why, size_t whysz)
{
    const struct opt_def *o = opt_find(key);
    if (!o) {
        snprintf(why, whysz, "unknown key \"%s\"", key);
        return -IM_EINVAL;
    }
    int rc = opt_set(c, o, value, why, whysz);
    if (rc == 0)
        c->origin[o - opts] = CP_CFG_RUNTIME;
    return rc;
}

void
cp_config_take(struct cp_config *c, struct cp_config *src, const char *key)
{
    const struct opt_def *o = opt_find(key);
    if (!o)
        return;
    void *dst = (char *)c + o->off, *from = (char *)src + o->off;
    switch (o->kind) {
    case OPT_STR: {
        char *t = *(char **)dst;            /* swapped: src frees the old one */
        *(char **)dst = *(char **)from;
        *(char **)from = t;
        break;
    }
    case OPT_UINT:
        *(unsigned *)dst = *(unsigned *)from;
        break;
    case OPT_SIZE:
        *(uint64_t *)dst = *(uint64_t *)from;
        break;
    case OPT_BOOL:
        *(bool *)dst = *(bool *)from;
        break;
    }
    c->origin[o - opts] = src->origin[o - opts];
    c->origin_line[o - opts] = src->origin_line[o - opts];
}
