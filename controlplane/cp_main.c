/*
 * cp_main.c - imfused: start-up order, the two planes' threads, shutdown
 * (DESIGN 9).  Runs in the foreground; never daemonizes.
 */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include <arpa/inet.h>

#include "dp_chan.h"
#include "dp_dpdk.h"
#include "dp_relay.h"
#include "dp_worker.h"
#include "cp_int.h"
#include "cp_netlink.h"
#include "cp_sd.h"
#include "im_clock.h"

static void *
dp_thread(void *arg)
{
    dp_worker_run(arg);
    return NULL;
}

static int
mkdir_p(const char *path)
{
    char buf[4096];
    im_strlcpy(buf, path, sizeof(buf));
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

static int
listen_on(struct dp_relay *relay, const char *hostport, bool tls)
{
    char *host, why[256];
    unsigned port;
    if (im_split_hostport(hostport, &host, &port) < 0)
        return -IM_EINVAL;
    int rc = dp_relay_listen(relay, host, (uint16_t)port, tls, why, sizeof(why));
    if (rc < 0)
        IM_LOG(IM_LOG_ERROR, "imfused", "%s", why);
    else
        IM_LOG(IM_LOG_INFO, "imfused", "client listener%s on %s", tls ? " (TLS)" : "", hostport);
    free(host);
    return rc;
}

/*
 * The limits on client connections from the config.  With io kernel every
 * connection is a file: the soft file limit is raised to the hard one, and
 * max-conns kept to three quarters of it (at least 64 files stay for the
 * emulated sessions, the store, the control socket), so a flood of clients
 * cannot starve the rest.
 */
static void
client_limits(const struct cp_config *cfg, struct dp_client_limits *l)
{
    *l = (struct dp_client_limits)DP_CLIENT_LIMITS_DEFAULT;
    l->max_conns = cfg->max_conns;
    l->max_conns_per_addr = cfg->max_conns_per_address;
    l->prelogin_timeout_ms = cfg->prelogin_timeout * 1000u;
    l->prelogin_memory = cfg->prelogin_memory;
    l->keepalive_idle_s = cfg->tcp_keepalive;
    l->keepalive_intvl_s = cfg->tcp_keepalive < 10 ? cfg->tcp_keepalive : 10;
    l->keepalive_cnt = 4;
    l->idle_timeout_ms = cfg->idle_timeout * 1000u;
    if (strcmp(cfg->io, "kernel"))
        return;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl.rlim_cur = rl.rlim_max;
    }
    if (rl.rlim_cur == RLIM_INFINITY)
        return;
    rlim_t keep = rl.rlim_cur / 4 > 64 ? rl.rlim_cur / 4 : 64;
    rlim_t room = rl.rlim_cur > keep ? rl.rlim_cur - keep : 1;
    if (l->max_conns > room) {
        IM_LOG(IM_LOG_WARN, "imfused", "max-conns %u lowered to %llu: the file limit is %llu "
               "(a quarter kept for sessions and the store; raise it with ulimit -n or LimitNOFILE=)",
               l->max_conns, (unsigned long long)room, (unsigned long long)rl.rlim_cur);
        l->max_conns = (uint32_t)room;
    }
}

/* a inside addr/prefix's subnet? (network byte order) */
static bool
same_subnet(uint32_t a, uint32_t addr, uint8_t prefix)
{
    uint32_t m = prefix ? htonl(~0u << (32 - prefix)) : 0;
    return ((a ^ addr) & m) == 0;
}

/*
 * io dpdk: EAL and the port (dp_dpdk_setup), then the port's kernel side
 * with netlink: a TAP's kernel address (dpdk-tap-kernel); for
 * net_af_packet, the appliance's address and gateway taken from the
 * interface when not given, and the kernel's copy of that address removed
 * (else the kernel answers lwIP's peers with resets).  dpdk-gateway auto is
 * the kernel's default gateway, which must lie in the dpdk subnet.
 */
static int
dpdk_up(struct cp_config *cfg, char *why, size_t whysz)
{
    char msg[256], ip[INET_ADDRSTRLEN];
    struct dp_dpdk_cfg dc = {
        .eal = cfg->dpdk_eal, .port = cfg->dpdk_port, .addr = cfg->dpdk_addr, .prefix = cfg->dpdk_prefix,
        .gateway = cfg->dpdk_gw, .mtu = cfg->dpdk_mtu, .mbufs = cfg->dpdk_mbufs,
        .max_conns = cfg->dpdk_max_conns, .lport_lo = cfg->dpdk_lport_lo, .lport_hi = cfg->dpdk_lport_hi,
        .idle = cfg->dpdk_spin ? DP_DPDK_IDLE_SPIN : DP_DPDK_IDLE_ADAPTIVE,
    };
    int rc = dp_dpdk_setup(&dc, why, whysz);
    if (rc < 0)
        return rc;
    const char *ifn = dp_dpdk_kernel_iface(), *drv = dp_dpdk_driver();
    uint32_t addr = cfg->dpdk_addr, gw = cfg->dpdk_gw;
    uint8_t prefix = cfg->dpdk_prefix;
    IM_LOG(IM_LOG_INFO, "imfused", "dpdk port %s: driver %s, kernel interface %s, idle %s", cfg->dpdk_port, drv,
           *ifn ? ifn : "none", cfg->dpdk_spin ? "spin" : dp_dpdk_rx_interrupt() ?
           "adaptive (sleeps on the Rx interrupt)" : "adaptive (no Rx interrupt: naps of 1 ms)");
    bool crx, ctx;
    dp_dpdk_csum_offload(&crx, &ctx);
    IM_LOG(IM_LOG_INFO, "imfused", "dpdk checksums: received %s, sent %s", crx ? "checked by the port" :
           "checked by lwIP", ctx ? "filled by the port" : "filled by lwIP");
    if (cfg->dpdk_tap_kernel) {
        struct cp_nl_addr ka = { cfg->dpdk_tap_addr, cfg->dpdk_tap_prefix };
        if (strcmp(drv, "net_tap") || !*ifn) {
            snprintf(why, whysz, "dpdk-tap-kernel: port %s is not a TAP (driver %s)", cfg->dpdk_port, drv);
            return -EINVAL;
        }
        if ((rc = cp_nl_iface_up(ifn, &ka, msg, sizeof(msg))) < 0) {
            snprintf(why, whysz, "dpdk-tap-kernel: %s: %s", ifn, msg);
            return rc;
        }
        IM_LOG(IM_LOG_INFO, "imfused", "TAP kernel side %s: %s, up", ifn, cfg->dpdk_tap_kernel);
    }
    if (!strcmp(drv, "net_af_packet") && *ifn) {
        struct cp_nl_addr ka;
        uint32_t kgw = 0;
        rc = cp_nl_iface_ipv4(ifn, &ka, &kgw, msg, sizeof(msg));
        if (rc < 0 && rc != -ENOENT) {
            snprintf(why, whysz, "dpdk-port %s: %s", cfg->dpdk_port, msg);
            return rc;
        }
        if (rc == 0) {
            if (!addr) {
                addr = ka.addr;
                prefix = ka.prefix;
                IM_LOG(IM_LOG_INFO, "imfused", "dpdk-address taken from %s: %s/%u", ifn,
                       inet_ntop(AF_INET, &addr, ip, sizeof(ip)), prefix);
            }
            if (cfg->dpdk_gw_auto && !gw && kgw && same_subnet(kgw, addr, prefix))
                gw = kgw;
            if (ka.addr == addr) {
                if ((rc = cp_nl_addr_del(ifn, &ka, msg, sizeof(msg))) < 0) {
                    snprintf(why, whysz, "dpdk-port %s: %s", cfg->dpdk_port, msg);
                    return rc;
                }
                IM_LOG(IM_LOG_INFO, "imfused", "removed %s from the kernel's %s (lwIP owns it now)",
                       inet_ntop(AF_INET, &addr, ip, sizeof(ip)), ifn);
            }
        }
        if ((rc = cp_nl_iface_up(ifn, NULL, msg, sizeof(msg))) < 0) {
            snprintf(why, whysz, "dpdk-port %s: %s", cfg->dpdk_port, msg);
            return rc;
        }
    }
    if (!addr) {
        snprintf(why, whysz, "dpdk-address is required (only a net_af_packet port with an address can lend its own)");
        return -EINVAL;
    }
    if (cfg->dpdk_gw_auto && !gw) {
        uint32_t any = 0;
        if ((rc = cp_nl_route_get(any, &gw, NULL, 0, msg, sizeof(msg))) < 0 || !gw) {
            snprintf(why, whysz, "dpdk-gateway auto: the kernel has no default gateway (%s); set dpdk-gateway",
                     rc < 0 ? msg : "the default route has none");
            return -EINVAL;
        }
        if (!same_subnet(gw, addr, prefix)) {
            snprintf(why, whysz, "dpdk-gateway auto: the kernel's default gateway %s is outside the dpdk subnet; "
                     "set dpdk-gateway", inet_ntop(AF_INET, &gw, ip, sizeof(ip)));
            return -EINVAL;
        }
    }
    if (gw)
        IM_LOG(IM_LOG_INFO, "imfused", "dpdk gateway %s", inet_ntop(AF_INET, &gw, ip, sizeof(ip)));
    if ((rc = dp_dpdk_set_ip(addr, prefix, gw, why, whysz)) < 0)
        return rc;
    cfg->dpdk_addr = addr;
    cfg->dpdk_prefix = prefix;
    if (cfg->listen_default) {
        char *l = malloc(INET_ADDRSTRLEN + 6);
        if (!l)
            return -ENOMEM;
        sprintf(l, "%s:7700", inet_ntop(AF_INET, &addr, ip, sizeof(ip)));
        free(cfg->listen);
        cfg->listen = l;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct cp_config cfg;
    struct cp_core core;
    char why[512];
    int rc, exit_code = 1;
    struct dp_worker *w = NULL;
    struct dp_relay *relay = NULL;
    pthread_t dp_tid;
    bool dp_running = false, dpdk_on = false;
    sigset_t sigs;
    int sigfd = -1;

    memset(&core, 0, sizeof(core));
    core.start_ms = im_mono_ms();
    /* glibc gives freed memory back at every turn (trim, madvise: a TLB
     * shoot-down across cores each time).  The appliance's working set is
     * steady: keep it.  Large blocks still come from mmap and go back. */
    mallopt(M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    mallopt(M_TOP_PAD, 16 * 1024 * 1024);
    mallopt(M_MMAP_THRESHOLD, 2 * 1024 * 1024);
    rc = cp_config_parse(&cfg, argc, argv, why, sizeof(why));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "imfused: %s\n", why);
        return 64;
    }
    im_log_level = im_log_parse_level(cfg.log_level);
    core.cfg = &cfg;
    if (cfg.workers != 1) {
        fprintf(stderr, "imfused: workers: this version runs one dataplane worker (got %u)\n", cfg.workers);
        goto out;
    }

    /* signals first, so that nothing started below can be killed half-way */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);

    /* 1. data directory, 2. store, 3. appliance key */
    if ((rc = mkdir_p(cfg.data)) < 0) {
        IM_LOG(IM_LOG_ERROR, "imfused", "cannot create data directory %s: %s", cfg.data, strerror(-rc));
        goto out;
    }
    if ((rc = cp_store_open(&core.store, cfg.data, (size_t)cfg.store_map_size, why, sizeof(why))) < 0) {
        IM_LOG(IM_LOG_ERROR, "imfused", "cannot open the store in %s: %s", cfg.data, why);
        goto out;
    }
    if ((rc = cp_key_load_or_create(cfg.data, &core.key, why, sizeof(why))) < 0) {
        IM_LOG(IM_LOG_ERROR, "imfused", "appliance key: %s", why);
        goto out;
    }
    /* 4. control socket */
    if (!(core.rpc = cp_rpc_open(&core, cfg.control, why, sizeof(why)))) {
        IM_LOG(IM_LOG_ERROR, "imfused", "%s", why);
        goto out;
    }
    struct cp_auth_caps caps = { .per_source = cfg.auth_pending_per_address, .total = cfg.auth_pending_max };
    core.auth = cp_auth_new(2, &caps);
    core.resolver = cp_resolver_new();
    core.rl_user = cp_ratelim_new(CP_LOCK_USER_FAILURES, CP_LOCK_USER_MS, CP_RATELIM_ENTRIES);
    core.rl_user_src = cp_ratelim_new(CP_LOCK_USER_FAILURES, CP_LOCK_USER_MS, CP_RATELIM_ENTRIES);
    core.rl_addr = cp_ratelim_new(cfg.login_failures_per_address, CP_LOCK_ADDR_MS, CP_RATELIM_ENTRIES);
    core.rl_register = cp_ratelim_new_rate(cfg.register_per_address,
                                           3600 * 1000 / cfg.register_per_address, CP_RATELIM_ENTRIES);
    core.quota = cp_quota_new(&cfg);
    core.kdf = cp_kdf_new();
    core.ch = dp_chan_new(16384);       /* 4 MiB of 256-byte slots each way; overflow beyond */
    if (!core.auth || !core.resolver || !core.rl_user || !core.rl_user_src || !core.rl_addr ||
        !core.rl_register || !core.quota || !core.kdf || !core.ch) {
        IM_LOG(IM_LOG_ERROR, "imfused", "out of memory");
        goto out;
    }

    /* 5. the dataplane and its client listeners (io dpdk: EAL and the port first) */
    if (!strcmp(cfg.io, "dpdk")) {
        dpdk_on = true;
        if (dpdk_up(&cfg, why, sizeof(why)) < 0) {
            IM_LOG(IM_LOG_ERROR, "imfused", "%s", why);
            goto out;
        }
    }
    struct dp_worker_cfg wc = { .id = 0, .io = cfg.io, .ca_file = cfg.ca_file,
                                .tls_cert = cfg.tls_cert, .tls_key = cfg.tls_key };
    if (!(w = dp_worker_new(&wc, why, sizeof(why)))) {
        IM_LOG(IM_LOG_ERROR, "imfused", "dataplane: %s", why);
        goto out;
    }
    dp_chan_set_worker(core.ch, w);
    relay = dp_relay_new(w, core.ch);
    core.relay = relay;
    if (!relay)
        goto out;
    struct dp_client_limits lim;
    client_limits(&cfg, &lim);
    dp_relay_set_limits(relay, &lim);
    IM_LOG(IM_LOG_INFO, "imfused", "clients: max-conns %u, %u per address, prelogin-timeout %u s, "
           "prelogin-memory %llu bytes, tcp-keepalive %u s, idle-timeout %u s", lim.max_conns,
           lim.max_conns_per_addr, lim.prelogin_timeout_ms / 1000, (unsigned long long)lim.prelogin_memory,
           lim.keepalive_idle_s, lim.idle_timeout_ms / 1000);
    dp_relay_set_quotas(relay, &(struct dp_relay_quotas){ .max_contacts = cfg.max_contacts_per_account });
    if (*cfg.listen && listen_on(relay, cfg.listen, false) < 0)
        goto out;
    if (cfg.listen_tls && listen_on(relay, cfg.listen_tls, true) < 0)
        goto out;
    if (pthread_create(&dp_tid, NULL, dp_thread, w)) {
        IM_LOG(IM_LOG_ERROR, "imfused", "cannot start the dataplane thread");
        goto out;
    }
    /* Named, so that top -H and the bench can tell the dataplane's CPU time apart. */
    pthread_setname_np(dp_tid, "imfused-dp0");
    dp_running = true;

    /* operations: reload's view of the TLS files, the alarms, SNMP (its own thread) */
    cp_reload_init(&core);
    if (!(core.ops = cp_ops_new(&core, why, sizeof(why)))) {
        IM_LOG(IM_LOG_ERROR, "imfused", "%s", why);
        goto out;
    }

    /* 6. the emulated logins */
    if ((rc = cp_core_start(&core)) < 0) {
        IM_LOG(IM_LOG_ERROR, "imfused", "cannot load accounts: %s", cp_store_strerror(rc));
        goto out;
    }
    IM_LOG(IM_LOG_INFO, "imfused", "ready: data %s, control %s, io %s", cfg.data, cfg.control, cfg.io);
    snprintf(why, sizeof(why), "serving clients on %s%s%s, control %s", *cfg.listen ? cfg.listen : "-",
             cfg.listen_tls ? " and TLS " : "", cfg.listen_tls ? cfg.listen_tls : "", cfg.control);
    cp_sd_ready(why);
    cp_core_run(&core, sigfd);
    cp_sd_stopping();
    exit_code = 0;

out:
    if (dp_running) {
        /* stop accepting, say goodbye to servers and clients, let it flush */
        struct dp_msg m = { .type = DPM_SHUTDOWN };
        dp_chan_send_down(core.ch, &m);
        dp_chan_flush_down(core.ch);
        usleep(300 * 1000);
        dp_worker_stop(w);
        pthread_join(dp_tid, NULL);
        /* commit whatever the dataplane handed up meanwhile */
        cp_core_drain(&core);
    }
    cp_ops_free(core.ops);      /* the SNMP thread and a backup in progress end here */
    cp_reload_free(&core);
    if (core.rpc)
        cp_rpc_close(core.rpc);
    cp_core_free(&core);
    dp_relay_free(relay);
    dp_worker_free(w);
    if (dpdk_on)
        dp_dpdk_cleanup();     /* after the worker: port, pool, rte_eal_cleanup */
    cp_auth_free(core.auth);
    cp_resolver_free(core.resolver);
    cp_ratelim_free(core.rl_user);
    cp_ratelim_free(core.rl_user_src);
    cp_ratelim_free(core.rl_addr);
    cp_ratelim_free(core.rl_register);
    cp_quota_free(core.quota);
    cp_kdf_free(core.kdf);
    dp_chan_free(core.ch);
    if (core.store)
        cp_store_close(core.store);
    im_wipe(&core.key, sizeof(core.key));
    if (sigfd >= 0)
        close(sigfd);
    IM_LOG(IM_LOG_INFO, "imfused", "stopped");
    cp_config_free(&cfg);
    return exit_code;
}
