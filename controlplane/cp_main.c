/*
 * cp_main.c - imfused: start-up order, the two planes' threads, shutdown
 * (DESIGN 9).  Runs in the foreground; never daemonizes.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>

#include "dp_chan.h"
#include "dp_relay.h"
#include "dp_worker.h"
#include "cp_int.h"
#include "cp_sd.h"

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
    bool dp_running = false;
    sigset_t sigs;
    int sigfd = -1;

    memset(&core, 0, sizeof(core));
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
    core.auth = cp_auth_new(2);
    core.rl_user = cp_ratelim_new(5, 30 * 1000);
    core.rl_addr = cp_ratelim_new(20, 60 * 1000);
    core.ch = dp_chan_new(65536);
    if (!core.auth || !core.rl_user || !core.rl_addr || !core.ch) {
        IM_LOG(IM_LOG_ERROR, "imfused", "out of memory");
        goto out;
    }

    /* 5. the dataplane and its client listeners */
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
    if (*cfg.listen && listen_on(relay, cfg.listen, false) < 0)
        goto out;
    if (cfg.listen_tls && listen_on(relay, cfg.listen_tls, true) < 0)
        goto out;
    if (pthread_create(&dp_tid, NULL, dp_thread, w)) {
        IM_LOG(IM_LOG_ERROR, "imfused", "cannot start the dataplane thread");
        goto out;
    }
    dp_running = true;

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
    if (core.rpc)
        cp_rpc_close(core.rpc);
    cp_core_free(&core);
    dp_relay_free(relay);
    dp_worker_free(w);
    cp_auth_free(core.auth);
    cp_ratelim_free(core.rl_user);
    cp_ratelim_free(core.rl_addr);
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
