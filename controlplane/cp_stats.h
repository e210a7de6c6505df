/*
 * cp_stats.h - the appliance's counters, collected in one place for every
 * reader: `imfusectl stats` (cp_rpc.c), `imfusectl top` (through stats) and
 * the SNMP subagent's snapshot (cp_snmp.c), so that they cannot disagree.
 *
 * Collected on the controlplane thread only: it reads the controlplane's
 * own fields, the store's statistics and the dataplane's counters (relaxed
 * atomics, any thread may read them).
 */
#ifndef CP_STATS_H
#define CP_STATS_H

#include <stdbool.h>
#include <stdint.h>

#include "dp_stats.h"

struct cp_core;

#define CP_STATS_MAX    256         /* values at most (a build-time sized table) */
#define CP_STAT_NAME    40
#define CP_WORKERS_MAX  64

struct cp_stat {
    char name[CP_STAT_NAME];        /* "msgs_in", "accounts_xmpp_online" */
    uint64_t v;
    bool gauge;                     /* a level now; else a counter that only grows */
};

struct cp_stats {
    unsigned n;
    struct cp_stat s[CP_STATS_MAX];
    unsigned n_workers;             /* per dataplane worker (lcore): their counters */
    struct dp_stats workers[CP_WORKERS_MAX];
};

/* Fill out with every value `imfusectl stats` shows, in its order. */
void cp_stats_collect(struct cp_core *c, struct cp_stats *out);

/* The value of name; false when there is none. */
bool cp_stats_get(const struct cp_stats *s, const char *name, uint64_t *v);

#endif
