/*
 * cp_ops.c - operations that outlive a request or a loop turn (cp_int.h):
 * the online backup on a thread of its own, the SNMP snapshot, and the
 * alarms checked once a second (store nearly full, account storm, port
 * down), each logged and, with SNMP on, sent as a notification.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "im_clock.h"
#include "dp_relay.h"
#include "cp_int.h"
#include "cp_snmp.h"
#include "cp_stats.h"

#define OPS_ALARM_MS        1000    /* the alarms are checked this often */
#define OPS_STORE_FULL_PCT  90      /* store nearly full at this share of the map */
#define OPS_STORE_OK_PCT    85      /* ... and no longer below this one */
#define OPS_STORM_MS        60000   /* an account storm is counted over this window */
#define OPS_SAMPLES         128     /* samples kept (one per check: more than the window holds) */

struct cp_ops {
    int fd;                         /* eventfd: the backup thread and the SNMP thread wake the loop */
    struct cp_snmp *snmp;           /* NULL: SNMP off */

    /* the backup in progress */
    bool backup_on;
    _Atomic bool backup_done;
    pthread_t backup_tid;
    struct cp_store *store;
    int backup_fd;
    char backup_name[256];
    struct cp_rpc_who backup_who;
    int backup_rc;
    uint64_t backup_start;

    /* alarms */
    uint64_t alarm_at;              /* mono ms of the next check */
    bool store_full, storm;
    bool port_down[CP_WORKERS_MAX];
    struct {
        uint64_t at, left;          /* mono ms, c->acct_left_online then */
    } samples[OPS_SAMPLES];
    unsigned sample_i;
};

struct cp_ops *
cp_ops_new(struct cp_core *c, char *why, size_t whysz)
{
    struct cp_ops *o = calloc(1, sizeof(*o));
    if (!o) {
        snprintf(why, whysz, "out of memory");
        return NULL;
    }
    o->backup_fd = -1;
    o->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (o->fd < 0) {
        snprintf(why, whysz, "eventfd: %s", strerror(errno));
        free(o);
        return NULL;
    }
    if (c->cfg->snmp_agentx && !(o->snmp = cp_snmp_start(c->cfg, o->fd, why, whysz))) {
        close(o->fd);
        free(o);
        return NULL;
    }
    return o;
}

void
cp_ops_free(struct cp_ops *o)
{
    if (!o)
        return;
    cp_snmp_stop(o->snmp);
    if (o->backup_on) {
        /* the copy reads the store: it must end before the store closes */
        IM_LOG(IM_LOG_INFO, "cp", "waiting for the backup to %s to finish", o->backup_name);
        pthread_join(o->backup_tid, NULL);
        close(o->backup_fd);
    }
    close(o->fd);
    free(o);
}

int
cp_ops_fd(const struct cp_ops *o)
{
    return o->fd;
}

/* ---- backup ---------------------------------------------------------------- */

static void *
backup_thread(void *arg)
{
    struct cp_ops *o = arg;
    o->backup_rc = cp_store_copy_fd(o->store, o->backup_fd);
    atomic_store(&o->backup_done, true);
    uint64_t one = 1;
    if (write(o->fd, &one, sizeof(one)) < 0) {
        /* the counter is full: the loop is awake anyway */
    }
    return NULL;
}

void
cp_ops_backup(struct cp_core *c, const struct cp_rpc_who *w, int fd, const char *name)
{
    struct cp_ops *o = c->ops;
    struct stat st;
    if (!o) {
        cp_rpc_answer_error(c->rpc, w, CL_ERR_INTERNAL, "backups are not available in this process");
        close(fd);
        return;
    }
    if (o->backup_on) {
        cp_rpc_answer_error(c->rpc, w, CL_ERR_LIMIT, "a backup is running already: wait for it to finish");
        close(fd);
        return;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != 0) {
        cp_rpc_answer_error(c->rpc, w, CL_ERR_BAD_REQUEST,
                            "the descriptor must be a new, empty regular file (imfusectl backup FILE makes one)");
        close(fd);
        return;
    }
    o->store = c->store;
    o->backup_fd = fd;
    o->backup_who = *w;
    o->backup_start = im_mono_ms();
    im_strlcpy(o->backup_name, *name ? name : "(a file of imfusectl)", sizeof(o->backup_name));
    atomic_store(&o->backup_done, false);
    if (pthread_create(&o->backup_tid, NULL, backup_thread, o)) {
        cp_rpc_answer_error(c->rpc, w, CL_ERR_INTERNAL, "cannot start the backup thread; try again");
        close(fd);
        o->backup_fd = -1;
        return;
    }
    o->backup_on = true;
    IM_LOG(IM_LOG_INFO, "cp", "operator: backup to %s started", o->backup_name);
}

static void
backup_finish(struct cp_core *c, struct cp_ops *o)
{
    struct stat st;
    pthread_join(o->backup_tid, NULL);
    o->backup_on = false;
    uint64_t ms = im_mono_ms() - o->backup_start;
    uint64_t bytes = fstat(o->backup_fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    close(o->backup_fd);
    o->backup_fd = -1;
    if (o->backup_rc < 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "the copy failed: %s (is there room where the file is?)",
                 cp_store_strerror(o->backup_rc));
        IM_LOG(IM_LOG_ERROR, "cp", "backup to %s: %s", o->backup_name, msg);
        if (c->rpc)
            cp_rpc_answer_error(c->rpc, &o->backup_who, CL_ERR_INTERNAL, msg);
        return;
    }
    IM_LOG(IM_LOG_INFO, "cp", "backup to %s: %llu bytes in %llu ms", o->backup_name,
           (unsigned long long)bytes, (unsigned long long)ms);
    if (!c->rpc)
        return;
    struct cl_enc e;
    cp_rpc_ok_head(&e, o->backup_who.id, 2);
    cl_pack_kuint(&e, "bytes", bytes);
    cl_pack_kuint(&e, "ms", ms);
    cp_rpc_answer(c->rpc, &o->backup_who, &e);
}

/* ---- alarms ------------------------------------------------------------------ */

static void
alarms(struct cp_core *c, struct cp_ops *o)
{
    struct cp_store_stats ss;
    if (cp_store_stats(c->store, &ss) == 0 && ss.map_size) {
        uint64_t pages = ss.last_pgno + 1;
        uint64_t pct = pages * ss.page_size * 100 / ss.map_size;
        if (!o->store_full && pct >= OPS_STORE_FULL_PCT) {
            o->store_full = true;
            IM_LOG(IM_LOG_WARN, "cp", "the store is nearly full: %llu %% of the map (%llu of %llu bytes); "
                   "raise store-map-size and restart, or delete users", (unsigned long long)pct,
                   (unsigned long long)(pages * ss.page_size), (unsigned long long)ss.map_size);
            uint64_t v[3] = { pct, pages, ss.map_size };
            if (o->snmp)
                cp_snmp_notify(o->snmp, CP_SNMP_STORE_FULL, v, 3);
        } else if (o->store_full && pct < OPS_STORE_OK_PCT) {
            o->store_full = false;
            IM_LOG(IM_LOG_INFO, "cp", "the store is below %u %% of the map again", OPS_STORE_OK_PCT);
        }
    }

    /* accounts that left online within the window: now against the oldest
     * sample inside it (a sample per check) */
    uint64_t now = im_mono_ms(), base = c->acct_left_online;
    for (unsigned i = 0; i < OPS_SAMPLES; i++)
        if (o->samples[i].at && now - o->samples[i].at <= OPS_STORM_MS && o->samples[i].left < base)
            base = o->samples[i].left;
    o->samples[o->sample_i].at = now;
    o->samples[o->sample_i].left = c->acct_left_online;
    o->sample_i = (o->sample_i + 1) % OPS_SAMPLES;
    uint64_t left = c->acct_left_online - base;
    if (!o->storm && left > c->cfg->account_storm) {
        o->storm = true;
        IM_LOG(IM_LOG_WARN, "cp", "account storm: %llu accounts left online within a minute (more than %u): "
               "an IM server or the network may be down; imfusectl accounts --state offline lists them",
               (unsigned long long)left, c->cfg->account_storm);
        uint64_t v[2] = { left, c->cfg->account_storm };
        if (o->snmp)
            cp_snmp_notify(o->snmp, CP_SNMP_ACCOUNT_STORM, v, 2);
    } else if (o->storm && left <= c->cfg->account_storm) {
        o->storm = false;
        IM_LOG(IM_LOG_INFO, "cp", "the account storm is over (%llu left online in the last minute)",
               (unsigned long long)left);
    }

    /* the dataplane's port (one worker today) */
    if (c->relay) {
        struct dp_stats ws;
        dp_worker_stats(dp_relay_worker(c->relay), &ws);
        bool down = ws.io_port_down != 0;
        if (down && !o->port_down[0]) {
            uint64_t v[2] = { 0, ws.io_port_downs };
            if (o->snmp)
                cp_snmp_notify(o->snmp, CP_SNMP_PORT_DOWN, v, 2);
        }
        o->port_down[0] = down;
    }
}

void
cp_ops_turn(struct cp_core *c)
{
    struct cp_ops *o = c->ops;
    uint64_t n;
    if (read(o->fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: nobody woke us; the checks below run anyway */
    }
    if (o->backup_on && atomic_load(&o->backup_done))
        backup_finish(c, o);
    uint64_t now = im_mono_ms();
    if (now >= o->alarm_at) {
        o->alarm_at = now + OPS_ALARM_MS;
        alarms(c, o);
    }
    if (o->snmp && cp_snmp_wanted(o->snmp)) {
        static struct cp_stats st;      /* the controlplane thread's alone */
        cp_stats_collect(c, &st);
        cp_snmp_publish(o->snmp, &st, c->cfg->account_storm);
    }
}
