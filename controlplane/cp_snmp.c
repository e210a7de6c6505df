/*
 * cp_snmp.c - the AgentX subagent (cp_snmp.h): IMFUSE-MIB served from the
 * controlplane's published snapshot, notifications sent from a queue, all
 * net-snmp calls on one thread of its own.
 *
 * The objects are listed once (obj_defs[]), in OID order; tables are listed
 * column by column with one instance per row, so the instances of a snapshot
 * come out sorted and GETNEXT is "the first instance after the OID asked".
 * The one handler is registered on imfuseObjects; GETBULK reaches it as
 * repeated GETNEXT (the registration does not claim GETBULK).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include <net-snmp/net-snmp-config.h>
#include <net-snmp/net-snmp-includes.h>
#include <net-snmp/agent/net-snmp-agent-includes.h>
#include <net-snmp/agent/agent_callbacks.h>

#include "im_clock.h"
#include "cp_config.h"
#include "cp_snmp.h"
#include "im_proto.h"

#define SLOG(lvl, ...) IM_LOG(lvl, "snmp", __VA_ARGS__)

#define SNMP_FRESH_MS       200     /* a snapshot this young is used as it is */
#define SNMP_WAIT_MS        300     /* the longest a request waits for a fresh one */
#define SNMP_PING_S         2       /* the subagent pings the master this often (and reconnects) */
#define SNMP_NOTICES        16
#define SNMP_VARS_MAX       512

/* imfuseMIB: netSnmpPlaypen.1 */
static const oid mib_root[] = { 1, 3, 6, 1, 4, 1, 8072, 9999, 9999, 1 };
#define ROOT_LEN IM_ARRAY_SIZE(mib_root)
static const oid snmptrap_oid[] = { 1, 3, 6, 1, 6, 3, 1, 1, 4, 1, 0 };

/* How an object's value is made from the snapshot. */
enum obj_src {
    SRC_STAT,           /* the stat named by key */
    SRC_VERSION,        /* IM_VERSION */
    SRC_UPTIME,         /* uptime_s, in centiseconds */
    SRC_IO,             /* kernel(1), dpdk(2) */
    SRC_WORKERS,        /* how many workers */
    SRC_STORM,          /* the account-storm threshold */
    SRC_USED_PCT,       /* pages used * page size * 100 / map size */
    SRC_NET_NAME,       /* account table: the network's name */
    SRC_NET_STATE,      /* account table: accounts_NET_<key> */
    SRC_WORKER,         /* worker table: the worker's own counter (key) */
};

struct obj_def {
    oid sub[3];         /* under imfuseObjects: group, object (scalars: .0 follows) */
    unsigned sublen;    /* 2: a scalar; 3: a table column (group, entry 1, column) */
    u_char type;        /* ASN_* */
    enum obj_src src;
    const char *key;
};

#define SCALAR(g, o, t, s, k)   { { g, o, 0 }, 2, t, s, k }
#define COLUMN(g, c, t, s, k)   { { g, 1, c }, 3, t, s, k }

static const struct obj_def obj_defs[] = {
    SCALAR(1, 1, ASN_OCTET_STR, SRC_VERSION, NULL),
    SCALAR(1, 2, ASN_TIMETICKS, SRC_UPTIME, "uptime_s"),
    SCALAR(1, 3, ASN_INTEGER, SRC_IO, NULL),
    SCALAR(1, 4, ASN_UNSIGNED, SRC_WORKERS, NULL),
    SCALAR(1, 5, ASN_UNSIGNED, SRC_STORM, NULL),
    SCALAR(2, 1, ASN_GAUGE, SRC_STAT, "store_users"),
    SCALAR(2, 2, ASN_GAUGE, SRC_STAT, "sessions"),
    SCALAR(2, 3, ASN_GAUGE, SRC_STAT, "clients_open"),
    COLUMN(3, 2, ASN_OCTET_STR, SRC_NET_NAME, NULL),
    COLUMN(3, 3, ASN_GAUGE, SRC_NET_STATE, "online"),
    COLUMN(3, 4, ASN_GAUGE, SRC_NET_STATE, "connecting"),
    COLUMN(3, 5, ASN_GAUGE, SRC_NET_STATE, "offline"),
    COLUMN(3, 6, ASN_GAUGE, SRC_NET_STATE, "auth_failed"),
    COLUMN(3, 7, ASN_GAUGE, SRC_NET_STATE, "error"),
    SCALAR(4, 1, ASN_COUNTER64, SRC_STAT, "msgs_in"),
    SCALAR(4, 2, ASN_COUNTER64, SRC_STAT, "msgs_out"),
    SCALAR(4, 3, ASN_COUNTER64, SRC_STAT, "msgs_delivered"),
    SCALAR(4, 4, ASN_COUNTER64, SRC_STAT, "store_queued"),
    SCALAR(4, 5, ASN_COUNTER64, SRC_STAT, "msgs_committed"),
    SCALAR(5, 1, ASN_COUNTER64, SRC_STAT, "store_commits"),
    SCALAR(5, 2, ASN_COUNTER64, SRC_STAT, "store_commit_failures"),
    SCALAR(5, 3, ASN_COUNTER64, SRC_STAT, "store_pages_used"),
    SCALAR(5, 4, ASN_UNSIGNED, SRC_STAT, "store_page_size"),
    SCALAR(5, 5, ASN_COUNTER64, SRC_STAT, "store_map_size"),
    SCALAR(5, 6, ASN_UNSIGNED, SRC_USED_PCT, NULL),
    COLUMN(6, 2, ASN_GAUGE, SRC_WORKER, "conns_open"),
    COLUMN(6, 3, ASN_COUNTER64, SRC_WORKER, "conn_opened"),
    COLUMN(6, 4, ASN_COUNTER64, SRC_WORKER, "conn_closed"),
    COLUMN(6, 5, ASN_COUNTER64, SRC_WORKER, "bytes_in"),
    COLUMN(6, 6, ASN_COUNTER64, SRC_WORKER, "bytes_out"),
    COLUMN(6, 7, ASN_COUNTER64, SRC_WORKER, "io_rx_packets"),
    COLUMN(6, 8, ASN_COUNTER64, SRC_WORKER, "io_tx_packets"),
    COLUMN(6, 9, ASN_COUNTER64, SRC_WORKER, "io_rx_drops"),
    COLUMN(6, 10, ASN_COUNTER64, SRC_WORKER, "io_tx_drops"),
    COLUMN(6, 11, ASN_COUNTER64, SRC_WORKER, "io_nombuf_drops"),
    COLUMN(6, 12, ASN_INTEGER, SRC_WORKER, "port_status"),
    COLUMN(6, 13, ASN_COUNTER64, SRC_WORKER, "io_port_downs"),
    SCALAR(7, 1, ASN_COUNTER64, SRC_STAT, "logins_ok"),
    SCALAR(7, 2, ASN_COUNTER64, SRC_STAT, "logins_failed"),
    SCALAR(7, 3, ASN_COUNTER64, SRC_STAT, "logins_locked"),
};

/* One instance of the tree, as a request sees it. */
struct var {
    oid name[MAX_OID_LEN];
    size_t len;
    u_char type;
    uint64_t u;
    char s[64];
};

struct notice {
    enum cp_snmp_notice kind;
    uint64_t v[3];
};

struct cp_snmp {
    pthread_t tid;
    char *socket;               /* the master's AgentX socket */
    bool dpdk;
    unsigned workers;
    int cp_wake;                /* the controlplane's eventfd: asks for a snapshot */
    int wake;                   /* ours: stop, or notifications waiting */
    _Atomic bool stop;
    _Atomic bool want;          /* a fresh snapshot is asked for */

    pthread_mutex_t mu;         /* guards what follows */
    pthread_cond_t cond;
    struct cp_stats snap;       /* the last published */
    unsigned storm;             /* the account-storm threshold then */
    uint64_t snap_seq, snap_at; /* published how often, when (mono ms) */
    struct notice notices[SNMP_NOTICES];
    unsigned n_notices;

    /* the subagent thread's own */
    netsnmp_handler_registration *reg;  /* imfuseObjects, registered anew after each connection */
    bool connected;             /* set by on_connected, inside net-snmp: acted on in the loop */
    struct cp_stats view;
    unsigned view_storm;
    struct var vars[SNMP_VARS_MAX];
    unsigned n_vars;
};

/* ---- the controlplane's side ------------------------------------------------ */

bool
cp_snmp_wanted(struct cp_snmp *s)
{
    return atomic_exchange(&s->want, false);
}

void
cp_snmp_publish(struct cp_snmp *s, const struct cp_stats *st, unsigned storm)
{
    pthread_mutex_lock(&s->mu);
    s->snap = *st;
    s->storm = storm;
    s->snap_seq++;
    s->snap_at = im_mono_ms();
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static void
poke(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof(one)) < 0) {
        /* the counter is full: the reader is due to wake anyway */
    }
}

void
cp_snmp_notify(struct cp_snmp *s, enum cp_snmp_notice kind, const uint64_t *vals, unsigned n)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_notices < SNMP_NOTICES) {
        struct notice *x = &s->notices[s->n_notices++];
        memset(x, 0, sizeof(*x));
        x->kind = kind;
        memcpy(x->v, vals, (n < 3 ? n : 3) * sizeof(*vals));
    } else {
        SLOG(IM_LOG_WARN, "notification %d dropped: %u wait already (is the master there?)", kind,
             SNMP_NOTICES);
    }
    pthread_mutex_unlock(&s->mu);
    poke(s->wake);
}

/* ---- the tree ------------------------------------------------------------------- */

static uint64_t
stat_of(const struct cp_stats *st, const char *name)
{
    uint64_t v = 0;
    (void)cp_stats_get(st, name, &v);
    return v;
}

static uint64_t
worker_value(const struct dp_stats *w, const char *key)
{
    if (!strcmp(key, "conns_open"))
        return w->conn_opened - w->conn_closed;
    if (!strcmp(key, "conn_opened"))
        return w->conn_opened;
    if (!strcmp(key, "conn_closed"))
        return w->conn_closed;
    if (!strcmp(key, "bytes_in"))
        return w->bytes_in;
    if (!strcmp(key, "bytes_out"))
        return w->bytes_out;
    if (!strcmp(key, "io_rx_packets"))
        return w->io_pkts_in;
    if (!strcmp(key, "io_tx_packets"))
        return w->io_pkts_out;
    if (!strcmp(key, "io_rx_drops"))        /* the sum stats shows as io_rx_drops */
        return w->io_drop_bad + w->io_nic_missed + w->io_nic_errors;
    if (!strcmp(key, "io_tx_drops"))
        return w->io_drop_tx;
    if (!strcmp(key, "io_nombuf_drops"))
        return w->io_drop_nombuf + w->io_nic_nombuf;
    if (!strcmp(key, "io_port_downs"))
        return w->io_port_downs;
    return 0;
}

static void
var_add(struct cp_snmp *s, const struct obj_def *d, oid index, uint64_t u, const char *str)
{
    if (s->n_vars == SNMP_VARS_MAX)
        return;
    struct var *v = &s->vars[s->n_vars++];
    memcpy(v->name, mib_root, sizeof(mib_root));
    v->len = ROOT_LEN;
    v->name[v->len++] = 1;                      /* imfuseObjects */
    for (unsigned i = 0; i < d->sublen; i++)
        v->name[v->len++] = d->sub[i];
    v->name[v->len++] = index;                  /* .0 for a scalar */
    v->type = d->type;
    v->u = u;
    im_strlcpy(v->s, str ? str : "", sizeof(v->s));
}

/* Every instance of the view, in OID order. */
static void
build(struct cp_snmp *s)
{
    const struct cp_stats *st = &s->view;
    s->n_vars = 0;
    for (size_t i = 0; i < IM_ARRAY_SIZE(obj_defs); i++) {
        const struct obj_def *d = &obj_defs[i];
        switch (d->src) {
        case SRC_STAT:
            var_add(s, d, 0, stat_of(st, d->key), NULL);
            break;
        case SRC_VERSION:
            var_add(s, d, 0, 0, IM_VERSION);
            break;
        case SRC_UPTIME:
            var_add(s, d, 0, stat_of(st, d->key) * 100, NULL);
            break;
        case SRC_IO:
            var_add(s, d, 0, s->dpdk ? 2 : 1, NULL);
            break;
        case SRC_WORKERS:
            var_add(s, d, 0, s->workers, NULL);
            break;
        case SRC_STORM:
            var_add(s, d, 0, s->view_storm, NULL);
            break;
        case SRC_USED_PCT: {
            uint64_t map = stat_of(st, "store_map_size");
            var_add(s, d, 0, map ? stat_of(st, "store_pages_used") * stat_of(st, "store_page_size") * 100 / map : 0,
                    NULL);
            break;
        }
        case SRC_NET_NAME:
        case SRC_NET_STATE:
            for (size_t k = 0; im_proto_builtin[k] && k < 255; k++) {
                char name[CP_STAT_NAME];
                snprintf(name, sizeof(name), "accounts_%s_%s", im_proto_builtin[k]->name, d->key ? d->key : "");
                var_add(s, d, (oid)(k + 1), d->src == SRC_NET_STATE ? stat_of(st, name) : 0,
                        im_proto_builtin[k]->name);
            }
            break;
        case SRC_WORKER:
            for (unsigned w = 0; w < st->n_workers; w++) {
                uint64_t v = !strcmp(d->key, "port_status") ? (!s->dpdk ? 3 : st->workers[w].io_port_down ? 2 : 1) :
                             worker_value(&st->workers[w], d->key);
                var_add(s, d, w + 1, v, NULL);
            }
            break;
        }
    }
}

static void
set_value(netsnmp_variable_list *vb, const struct var *v)
{
    switch (v->type) {
    case ASN_OCTET_STR:
        snmp_set_var_typed_value(vb, ASN_OCTET_STR, v->s, strlen(v->s));
        break;
    case ASN_COUNTER64: {
        struct counter64 c = { .high = (u_long)(v->u >> 32), .low = (u_long)(v->u & 0xffffffffu) };
        snmp_set_var_typed_value(vb, ASN_COUNTER64, &c, sizeof(c));
        break;
    }
    case ASN_INTEGER:
        snmp_set_var_typed_integer(vb, ASN_INTEGER, (long)v->u);
        break;
    default:            /* Gauge32, Unsigned32, TimeTicks: 32 bits, held at the top */
        snmp_set_var_typed_integer(vb, v->type, (long)(v->u > 0xffffffffu ? 0xffffffffu : v->u));
        break;
    }
}

/* The view is the newest snapshot, asking the controlplane for a fresher one
 * when it is older than SNMP_FRESH_MS and waiting at most SNMP_WAIT_MS. */
static void
refresh(struct cp_snmp *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->snap_seq || im_mono_ms() - s->snap_at > SNMP_FRESH_MS) {
        uint64_t seq = s->snap_seq;
        atomic_store(&s->want, true);
        poke(s->cp_wake);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += SNMP_WAIT_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (s->snap_seq == seq)
            if (pthread_cond_timedwait(&s->cond, &s->mu, &until))
                break;
    }
    s->view = s->snap;
    s->view_storm = s->storm;
    pthread_mutex_unlock(&s->mu);
    build(s);
}

static int
handler(netsnmp_mib_handler *h, netsnmp_handler_registration *reg, netsnmp_agent_request_info *ri,
        netsnmp_request_info *reqs)
{
    struct cp_snmp *s = reg->my_reg_void;
    if (ri->mode != MODE_GET && ri->mode != MODE_GETNEXT)
        return SNMP_ERR_NOERROR;
    refresh(s);
    for (netsnmp_request_info *r = reqs; r; r = r->next) {
        netsnmp_variable_list *vb = r->requestvb;
        if (r->processed)
            continue;
        const struct var *hit = NULL;
        for (unsigned i = 0; i < s->n_vars && !hit; i++) {
            int c = snmp_oid_compare(s->vars[i].name, s->vars[i].len, vb->name, vb->name_length);
            if (ri->mode == MODE_GET ? c == 0 : c > 0)
                hit = &s->vars[i];
        }
        if (ri->mode == MODE_GET) {
            if (hit)
                set_value(vb, hit);
            else
                netsnmp_set_request_error(ri, r, SNMP_NOSUCHINSTANCE);
        } else if (hit) {
            snmp_set_var_objid(vb, hit->name, hit->len);
            set_value(vb, hit);
        }
        /* GETNEXT past the last instance: left for the next subtree */
    }
    return SNMP_ERR_NOERROR;
}

/* ---- notifications ----------------------------------------------------------- */

static void
add_var(netsnmp_variable_list **vars, const oid *group, size_t glen, oid index, u_char type, uint64_t v)
{
    oid name[MAX_OID_LEN];
    memcpy(name, mib_root, sizeof(mib_root));
    size_t len = ROOT_LEN;
    name[len++] = 1;
    for (size_t i = 0; i < glen; i++)
        name[len++] = group[i];
    name[len++] = index;
    if (type == ASN_COUNTER64) {
        struct counter64 c = { .high = (u_long)(v >> 32), .low = (u_long)(v & 0xffffffffu) };
        snmp_varlist_add_variable(vars, name, len, type, &c, sizeof(c));
    } else {
        long l = (long)(v > 0xffffffffu ? 0xffffffffu : v);
        snmp_varlist_add_variable(vars, name, len, type, &l, sizeof(l));
    }
}

static void
send_notice(const struct notice *x)
{
    static const char *const names[] = { "", "imfuseStoreNearlyFull", "imfuseAccountStorm", "imfusePortDown" };
    netsnmp_variable_list *vars = NULL;
    oid trap[ROOT_LEN + 2];
    memcpy(trap, mib_root, sizeof(mib_root));
    trap[ROOT_LEN] = 0;                         /* imfuseNotifications */
    trap[ROOT_LEN + 1] = (oid)x->kind;
    snmp_varlist_add_variable(&vars, snmptrap_oid, IM_ARRAY_SIZE(snmptrap_oid), ASN_OBJECT_ID,
                              trap, sizeof(trap));
    switch (x->kind) {
    case CP_SNMP_STORE_FULL: {
        static const oid pct[] = { 5, 6 }, pages[] = { 5, 3 }, map[] = { 5, 5 };
        add_var(&vars, pct, 2, 0, ASN_UNSIGNED, x->v[0]);
        add_var(&vars, pages, 2, 0, ASN_COUNTER64, x->v[1]);
        add_var(&vars, map, 2, 0, ASN_COUNTER64, x->v[2]);
        break;
    }
    case CP_SNMP_ACCOUNT_STORM: {
        static const oid n[] = { 8, 1 }, thr[] = { 1, 5 };
        add_var(&vars, n, 2, 0, ASN_UNSIGNED, x->v[0]);
        add_var(&vars, thr, 2, 0, ASN_UNSIGNED, x->v[1]);
        break;
    }
    case CP_SNMP_PORT_DOWN: {
        static const oid status[] = { 6, 1, 12 }, downs[] = { 6, 1, 13 };
        add_var(&vars, status, 3, x->v[0] + 1, ASN_INTEGER, 2);     /* down(2) */
        add_var(&vars, downs, 3, x->v[0] + 1, ASN_COUNTER64, x->v[1]);
        break;
    }
    }
    send_v2trap(vars);
    snmp_free_varbind(vars);
    SLOG(IM_LOG_INFO, "notification %s sent", names[x->kind]);
}

/* Our eventfd: stop, or notifications to send. */
static void
on_wake(int fd, void *arg)
{
    struct cp_snmp *s = arg;
    uint64_t n;
    struct notice q[SNMP_NOTICES];
    if (read(fd, &n, sizeof(n)) < 0) {
        /* EAGAIN: a spurious wake */
    }
    pthread_mutex_lock(&s->mu);
    unsigned k = s->n_notices;
    memcpy(q, s->notices, k * sizeof(*q));
    s->n_notices = 0;
    pthread_mutex_unlock(&s->mu);
    for (unsigned i = 0; i < k && !atomic_load(&s->stop); i++)
        send_notice(&q[i]);
}

/* ---- the thread ------------------------------------------------------------------- */

/*
 * net-snmp's log lines, into ours (they end with a newline).  While the
 * master is away the library says the same every ping interval: a line
 * equal to the last one goes to debug.  "attempted to be re-opened" is the
 * library's second reconnect timer finding the session open (it keeps one
 * from the ping and one from the disconnect): debug too.
 */
static int
log_cb(int major, int minor, void *server_arg, void *client_arg)
{
    static char last[256];      /* the subagent thread's alone */
    const struct snmp_log_message *m = server_arg;
    int lvl = m->priority <= LOG_ERR ? IM_LOG_ERROR : m->priority == LOG_WARNING ? IM_LOG_WARN :
              m->priority <= LOG_INFO ? IM_LOG_INFO : IM_LOG_DEBUG;
    size_t n = strlen(m->msg);
    while (n && (m->msg[n - 1] == '\n' || m->msg[n - 1] == '\r' || m->msg[n - 1] == ' '))
        n--;
    if (!n)
        return 0;
    /* The library also tries to make SNMPv1 copies of every notification
     * (for v1 trap sinks, of which a subagent has none) and says that
     * Counter64 values cannot go into one: noise as well. */
    if (strstr(m->msg, "attempted to be re-opened") || strstr(m->msg, "v1 traps can't carry Counter64") ||
        strstr(m->msg, "failed to convert v2->v1") ||
        (n < sizeof(last) && !strncmp(last, m->msg, n) && !last[n]))
        lvl = IM_LOG_DEBUG;
    else if (n < sizeof(last))
        snprintf(last, sizeof(last), "%.*s", (int)n, m->msg);
    SLOG(lvl, "net-snmp: %.*s", (int)n, m->msg);
    return 0;
}

/* imfuseObjects' registration: created and registered (with the master
 * too when a session is open); the old one, if any, is unregistered first. */
static void
register_objects(struct cp_snmp *s)
{
    if (s->reg) {
        netsnmp_unregister_handler(s->reg);     /* frees it */
        s->reg = NULL;
    }
    oid objects[ROOT_LEN + 1];
    memcpy(objects, mib_root, sizeof(mib_root));
    objects[ROOT_LEN] = 1;
    netsnmp_handler_registration *reg = netsnmp_create_handler_registration(
        "imfuseObjects", handler, objects, IM_ARRAY_SIZE(objects), HANDLER_CAN_RONLY);
    if (!reg) {
        SLOG(IM_LOG_ERROR, "cannot register IMFUSE-MIB's objects: out of memory");
        return;
    }
    reg->my_reg_void = s;
    if (netsnmp_register_handler(reg) != MIB_REGISTERED_OK) {
        SLOG(IM_LOG_ERROR, "cannot register IMFUSE-MIB's objects");     /* it freed reg */
        return;
    }
    s->reg = reg;
}

/*
 * A session to the master was opened (the library's INDEX_START, at the end
 * of each connection).  The library then registers again what it had
 * registered, but not always: when the master goes away while the library
 * is registering (a frozen master let go and killed at once answers the
 * Open its backlog held, then the Register fails), its disconnect handling
 * runs nested in the registration's callbacks and cannot unregister them
 * ("lock in _callback_lock sleeps more than 100 milliseconds"), and from
 * then on (net-snmp 5.9.3, seen with its agentx/subagent debug output) a
 * new connection sends no Register at all: the master answers noSuchObject
 * although the session is up and answers pings.  So imfused registers
 * imfuseObjects again itself after each connection, from its own loop,
 * outside the library's callbacks (where the library did it too, the
 * master gets an Unregister and a Register more: harmless).
 */
static int
on_connected(int major, int minor, void *server_arg, void *client_arg)
{
    struct cp_snmp *s = client_arg;
    s->connected = true;
    return 0;
}

static void *
agent_thread(void *arg)
{
    struct cp_snmp *s = arg;

    /* net-snmp reads no config file and keeps no state on disk here: the
     * daemon runs confined (its file system is read-only but for its own
     * directories) and is configured only by imfused's flags. */
    snmp_disable_log();
    snmp_register_callback(SNMP_CALLBACK_LIBRARY, SNMP_CALLBACK_LOGGING, log_cb, NULL);
    netsnmp_register_loghandler(NETSNMP_LOGHANDLER_CALLBACK, LOG_DEBUG);
    netsnmp_ds_set_boolean(NETSNMP_DS_LIBRARY_ID, NETSNMP_DS_LIB_DONT_READ_CONFIGS, 1);
    netsnmp_ds_set_boolean(NETSNMP_DS_LIBRARY_ID, NETSNMP_DS_LIB_DONT_PERSIST_STATE, 1);
    netsnmp_ds_set_boolean(NETSNMP_DS_LIBRARY_ID, NETSNMP_DS_LIB_DISABLE_PERSISTENT_LOAD, 1);
    netsnmp_ds_set_boolean(NETSNMP_DS_LIBRARY_ID, NETSNMP_DS_LIB_DISABLE_PERSISTENT_SAVE, 1);
    /* A subagent needs no MIB modules: load none (else net-snmp reads
     * every file of its MIB path and logs each import it cannot find). */
    char mibs_none[] = "mibs :";
    netsnmp_config_remember(mibs_none);
    netsnmp_ds_set_boolean(NETSNMP_DS_APPLICATION_ID, NETSNMP_DS_AGENT_ROLE, 1);
    netsnmp_ds_set_string(NETSNMP_DS_APPLICATION_ID, NETSNMP_DS_AGENT_X_SOCKET, s->socket);
    init_agent("imfused");
    netsnmp_ds_set_int(NETSNMP_DS_APPLICATION_ID, NETSNMP_DS_AGENT_AGENTX_PING_INTERVAL, SNMP_PING_S);
    netsnmp_ds_set_int(NETSNMP_DS_APPLICATION_ID, NETSNMP_DS_AGENT_AGENTX_TIMEOUT, 2);
    netsnmp_ds_set_int(NETSNMP_DS_APPLICATION_ID, NETSNMP_DS_AGENT_AGENTX_RETRIES, 1);

    register_objects(s);
    snmp_register_callback(SNMP_CALLBACK_APPLICATION, SNMPD_CALLBACK_INDEX_START, on_connected, s);
    init_snmp("imfused");
    s->connected = false;               /* the first session registered what was there */
    register_readfd(s->wake, on_wake, s);
    SLOG(IM_LOG_INFO, "AgentX subagent for IMFUSE-MIB (1.3.6.1.4.1.8072.9999.9999.1), master at %s", s->socket);

    while (!atomic_load(&s->stop)) {
        agent_check_and_process(1);     /* returns at least every ping interval (an alarm) */
        if (s->connected) {
            s->connected = false;
            register_objects(s);
            SLOG(IM_LOG_INFO, "new AgentX session: IMFUSE-MIB's objects registered again");
        }
    }

    unregister_readfd(s->wake);
    /* before snmp_shutdown, which would free s as the callback's argument */
    snmp_unregister_callback(SNMP_CALLBACK_APPLICATION, SNMPD_CALLBACK_INDEX_START, on_connected, s, 1);
    snmp_shutdown("imfused");
    return NULL;
}

struct cp_snmp *
cp_snmp_start(const struct cp_config *cfg, int wake_fd, char *why, size_t whysz)
{
    struct cp_snmp *s = calloc(1, sizeof(*s));
    if (!s || !(s->socket = strdup(cfg->snmp_agentx))) {
        free(s);
        snprintf(why, whysz, "out of memory");
        return NULL;
    }
    s->dpdk = !strcmp(cfg->io, "dpdk");
    s->workers = cfg->workers;
    s->storm = cfg->account_storm;
    s->cp_wake = wake_fd;
    s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->mu, NULL);
    if (s->wake < 0 || pthread_create(&s->tid, NULL, agent_thread, s)) {
        snprintf(why, whysz, "snmp-agentx: cannot start the subagent thread: %s", strerror(errno));
        if (s->wake >= 0)
            close(s->wake);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
        free(s->socket);
        free(s);
        return NULL;
    }
    return s;
}

void
cp_snmp_stop(struct cp_snmp *s)
{
    if (!s)
        return;
    atomic_store(&s->stop, true);
    poke(s->wake);
    pthread_join(s->tid, NULL);
    close(s->wake);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cond);
    free(s->socket);
    free(s);
}
