/*
 * cp_snmp.h - the AgentX subagent serving IMFUSE-MIB (mibs/IMFUSE-MIB.txt)
 * with net-snmp's agent library, on a thread of its own.
 *
 * The controlplane never waits for it and it never touches the
 * controlplane's structures or the store: the controlplane publishes a
 * snapshot of its counters (struct cp_stats, the very values of `imfusectl
 * stats`) when the subagent asks for a fresh one (it writes the
 * controlplane's wake fd and waits at most a fraction of a second, else
 * answers from the last one), and queues notifications, which the thread
 * sends as AgentX notifications.  A slow or dead master blocks only this
 * thread; the subagent pings the master and reconnects by itself.
 */
#ifndef CP_SNMP_H
#define CP_SNMP_H

#include <stdint.h>

#include "cp_stats.h"

struct cp_snmp;
struct cp_config;

enum cp_snmp_notice {
    CP_SNMP_STORE_FULL = 1,     /* vals: percent used, pages used, map size */
    CP_SNMP_ACCOUNT_STORM,      /* vals: accounts that left online in the last minute, threshold */
    CP_SNMP_PORT_DOWN,          /* vals: worker index (0-based), times its port went down */
};

/*
 * Start the subagent thread for cfg->snmp_agentx (the master's socket).
 * wake_fd: an eventfd of the controlplane's loop, written to ask for a
 * snapshot.  NULL with why on failure (thread or memory); a master that is
 * not there is no failure: the subagent keeps trying.
 */
struct cp_snmp *cp_snmp_start(const struct cp_config *cfg, int wake_fd, char *why, size_t whysz);
/* Stop and join the thread (within about a second), free everything. */
void cp_snmp_stop(struct cp_snmp *s);

/* Controlplane side: whether a fresh snapshot is asked for (clears the ask). */
bool cp_snmp_wanted(struct cp_snmp *s);
/* Publish st (copied) and the account-storm threshold in force. */
void cp_snmp_publish(struct cp_snmp *s, const struct cp_stats *st, unsigned storm);
/* Queue a notification with its values (at most 3); dropped when 16 wait. */
void cp_snmp_notify(struct cp_snmp *s, enum cp_snmp_notice kind, const uint64_t *vals, unsigned n);

#endif
