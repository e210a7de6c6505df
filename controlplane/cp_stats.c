/*
 * cp_stats.c - one collection of the appliance's counters (cp_stats.h).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "im_clock.h"
#include "dp_relay.h"
#include "cp_int.h"
#include "cp_stats.h"

static void
put(struct cp_stats *o, const char *name, uint64_t v, bool gauge)
{
    BUG_ON(o->n >= CP_STATS_MAX);
    struct cp_stat *s = &o->s[o->n++];
    im_strlcpy(s->name, name, sizeof(s->name));
    s->v = v;
    s->gauge = gauge;
}

#define C(name, v) put(out, name, (v), false)
#define G(name, v) put(out, name, (v), true)

/* Accounts by network and state, from the controlplane's account cache. */
static void
accounts_by_state(struct cp_core *c, struct cp_stats *out)
{
    enum { NSTATES = IM_ACC_ERROR + 1, NNETS = 16 };
    size_t nnet = 0;
    while (im_proto_builtin[nnet] && nnet < NNETS - 1)
        nnet++;
    uint64_t count[NNETS][NSTATES];     /* [nnet]: a network no longer built in */
    memset(count, 0, sizeof(count));
    uint64_t online = 0;
    for (unsigned b = 0; b < CP_STATE_BUCKETS; b++)
        for (const struct cp_acct_state *s = c->states[b]; s; s = s->next) {
            size_t k = 0;
            while (k < nnet && strcmp(im_proto_builtin[k]->name, s->network))
                k++;
            if (s->state >= 0 && s->state < NSTATES)
                count[k][s->state]++;
            online += s->state == IM_ACC_ONLINE;
        }
    G("accounts_online", online);
    C("accounts_left_online", c->acct_left_online);
    for (size_t k = 0; k < nnet; k++)
        for (int st = 0; st < NSTATES; st++) {
            char name[CP_STAT_NAME];
            snprintf(name, sizeof(name), "accounts_%s_%s", im_proto_builtin[k]->name,
                     im_account_state_name((enum im_account_state)st));
            G(name, count[k][st]);
        }
}

/* The limits (docs/OPERATIONS.md "Limits"): each one's value (a gauge) and
 * how often it refused something. */
static void
limits(struct cp_core *c, const struct dp_relay_stats *st, struct cp_stats *out)
{
    const struct cp_config *g = c->cfg;
    uint64_t queue_full_users = 0, kdf_hits, kdf_derived, kdf_entries;
    cp_quota_stats(c, &queue_full_users);
    cp_kdf_stats(c, &kdf_hits, &kdf_derived, &kdf_entries);
    G("max_accounts_per_user", g->max_accounts_per_user);
    C("limit_accounts", c->lim.accounts);
    G("max_sessions", g->max_sessions);
    C("limit_sessions", c->lim.sessions);
    G("max_contacts_per_account", g->max_contacts_per_account);
    C("limit_contacts", st->limit_contacts);
    G("max_unified_members", g->max_unified_members);
    C("limit_unified", c->lim.unified);
    G("max_queued_per_user", g->max_queued_per_user);
    G("max_queued_bytes_per_user", g->max_queued_bytes_per_user);
    C("limit_queue_full", c->lim.queue_full);
    G("queue_full_users", queue_full_users);
    G("accounts_paused", st->accounts_paused);
    G("login_failures_per_address", g->login_failures_per_address);
    C("limit_lockout", c->lim.lockout);
    G("auth_pending_per_address", g->auth_pending_per_address);
    C("limit_auth_address", c->lim.auth_source);
    G("auth_pending_max", g->auth_pending_max);
    C("limit_auth_total", c->lim.auth_total);
    G("register_per_address", g->register_per_address);
    C("limit_register", c->lim.register_rate);
    C("limit_auth_busy", st->limit_auth_busy);
    C("kdf_requests", st->kdf_requests);
    C("kdf_derived", kdf_derived);
    C("kdf_cache_hits", kdf_hits);
    G("kdf_cache_entries", kdf_entries);
    G("ratelimit_entries", cp_ratelim_entries(c->rl_user) + cp_ratelim_entries(c->rl_user_src) +
                           cp_ratelim_entries(c->rl_addr) + cp_ratelim_entries(c->rl_register));
}

/*
 * Bytes the calling thread has passed to write calls ("wchar" in
 * /proc/thread-self/io), 0 if unreadable.  Stats are collected on the
 * controlplane thread, which makes every commit (backups run on a thread of
 * their own): what it writes is LMDB's pages and meta page, and a few bytes
 * besides (eventfd wake-ups, control replies).  The kernel's own count
 * (write_bytes, getrusage's blocks) also charges the file system's own
 * blocks that a commit dirties (metadata such as the inode): three to eight
 * times LMDB's pages on this machine's ext4.  Read at stats time, not around each
 * commit: no system call on the commit path.
 */
static uint64_t
cp_thread_bytes_written(void)
{
    char buf[512];
    int fd = open("/proc/thread-self/io", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *w = strstr(buf, "wchar:");
    return w ? strtoull(w + 6, NULL, 10) : 0;
}

void
cp_stats_collect(struct cp_core *c, struct cp_stats *out)
{
    struct dp_relay_stats st;
    struct dp_stats ws;
    struct cp_store_stats ss;
    memset(&st, 0, sizeof(st));
    memset(&ws, 0, sizeof(ws));
    memset(&ss, 0, sizeof(ss));
    out->n = 0;
    out->n_workers = 0;
    if (c->relay) {
        dp_relay_stats_read(c->relay, &st);
        /* one worker (lcore) today: its counters are the sums */
        dp_worker_stats(dp_relay_worker(c->relay), &ws);
        out->workers[out->n_workers++] = ws;
    }
    (void)cp_store_stats(c->store, &ss);
    struct cp_resolve_stats rs = { 0 };
    if (c->resolver)
        cp_resolver_stats(c->resolver, &rs);
    unsigned n_sessions = 0;
    for (struct cp_session *s = c->sessions; s; s = s->next)
        n_sessions++;

    G("uptime_s", (im_mono_ms() - c->start_ms) / 1000);
    C("clients_accepted", st.clients_accepted);
    G("clients_open", st.clients_open);
    C("clients_dropped", st.clients_dropped);
    C("logins_ok", st.logins_ok);
    C("logins_failed", c->logins_failed);
    C("logins_locked", c->lim.lockout);     /* = limit_lockout, the MIB's name */
    G("sessions", n_sessions);
    C("frames_in", st.frames_in);
    C("frames_bad", st.frames_bad);
    C("events_out", st.events_out);
    C("msgs_in", st.msgs_in);
    C("msgs_out", st.msgs_out);
    C("msgs_delivered", st.msgs_delivered);
    C("msgs_committed", c->msgs_committed);
    C("outbox_added", c->outbox_added);
    C("outbox_deleted", c->outbox_deleted);
    G("outbox_pending_deletes", c->n_done);
    G("send_queue_len", st.send_queue_len);
    C("account_connects", st.acct_connects);
    C("account_online", st.acct_online);
    C("account_failures", st.acct_failures);
    accounts_by_state(c, out);
    C("store_commits", c->commits);
    C("store_commit_failures", c->commit_failures);
    G("store_map_size", ss.map_size);
    G("store_pages_used", ss.last_pgno + 1);
    G("store_page_size", ss.page_size);
    C("store_bytes_written", cp_thread_bytes_written());
    C("store_commit_cpu_us", ss.commit_cpu_us);
    G("store_users", ss.users);
    G("store_accounts", ss.accounts);
    G("store_queued", ss.queued);
    G("auth_pending", cp_auth_pending(c->auth));
    C("auth_jobs", cp_auth_submitted(c->auth));
    C("dp_oom", st.oom);
    C("dp_up_dropped", st.up_dropped);
    /* client connections and their limits */
    G("clients_prelogin", st.clients_prelogin);
    G("prelogin_bytes", st.prelogin_bytes);
    C("prelogin_timeouts", st.prelogin_timeouts);
    C("prelogin_evicted", st.prelogin_evicted);
    C("refused_max_conns", st.refused_max_conns);
    C("refused_per_address", st.refused_per_address);
    C("accept_paused", ws.accept_paused);
    C("clients_read_paused", st.clients_read_paused);
    C("clients_timed_out", st.clients_timed_out);
    C("idle_timeouts", st.idle_timeouts);
    C("replays_paced", st.replays_paced);
    C("replies_limit", st.replies_limit);
    C("events_too_big", st.events_too_big);
    C("contacts_cut", st.contacts_cut);
    C("plane_oversize", c->plane_oversize);
    C("resolver_lookups", rs.lookups);
    C("resolver_cache_hits", rs.cache_hits);
    C("resolver_failures", rs.failures);
    G("resolver_pending", rs.pending);
    C("conn_opened", ws.conn_opened);
    C("conn_closed", ws.conn_closed);
    C("connect_failed", ws.connect_failed);
    C("bytes_in", ws.bytes_in);
    C("bytes_out", ws.bytes_out);
    C("tls_ok", ws.tls_ok);
    C("tls_failed", ws.tls_failed);
    /* the dpdk backend's per-lcore counters (0 with io kernel) */
    C("io_rx_packets", ws.io_pkts_in);
    C("io_tx_packets", ws.io_pkts_out);
    C("io_rx_bytes", ws.io_bytes_in);
    C("io_tx_bytes", ws.io_bytes_out);
    C("io_rx_drops", ws.io_drop_bad + ws.io_nic_missed + ws.io_nic_errors);
    C("io_tx_drops", ws.io_drop_tx);
    C("io_nombuf_drops", ws.io_drop_nombuf + ws.io_nic_nombuf);
    C("io_busy_cycles", ws.io_busy_cycles);
    C("io_busy_turns", ws.io_busy_turns);
    C("io_sleeps", ws.io_sleeps);
    G("io_port_down", ws.io_port_down);
    C("io_port_downs", ws.io_port_downs);
    G("tcp_open", ws.tcp_open);
    C("tcp_retransmits", ws.tcp_retransmits);
    C("tcp_refused", ws.tcp_refused);
    C("tcp_drops", ws.tcp_drops);
    limits(c, &st, out);
}

bool
cp_stats_get(const struct cp_stats *s, const char *name, uint64_t *v)
{
    for (unsigned i = 0; i < s->n; i++)
        if (!strcmp(s->s[i].name, name)) {
            *v = s->s[i].v;
            return true;
        }
    return false;
}
