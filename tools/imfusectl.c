/*
 * imfusectl - the operator's command-line tool.  Sends one request on the
 * daemon's control socket (client protocol framing, DESIGN.md §4 and §6) and
 * prints the reply as text or, with --json, as one JSON object.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include "cli_common.h"
#include "client/cl_ctl.h"
#include "client/cl_json.h"

#define CTL_DEFAULT_SOCKET  "./var/imfused.sock"     /* make run */
#define CTL_SYSTEM_SOCKET   "/run/imfuse/imfused.sock"  /* the packaged unit */
#define CTL_TIMEOUT_MS      10000
#define CTL_PASSWORD_MAX    1024

static const char *prog = "imfusectl";

static const struct cli_optspec ctl_opts[] = {
    { "-s", true }, { "--socket", true }, { "--json", false },
    { "-h", false }, { "--help", false }, { NULL, false },
};

struct ctl {
    struct cli_conn conn;
    const char *sock;
    bool json;
};

typedef void ctl_print_fn(const char *arg, const msgpack_object *reply);

/* How an ok reply of a command is shown (the commands themselves are the
 * rows of protocols/client/cl_ctl.c, shared with the daemon). */
struct ctl_show {
    ctl_print_fn *print;
    const char *done_pre;       /* simple commands print done_pre NAME done_post */
    const char *done_post;
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: imfusectl [-s SOCKET] [--json] COMMAND\ncommands:\n");
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *cmd = &cl_ctl_cmds[i];
        char syn[128];
        cl_ctl_synopsis(cmd, syn, sizeof(syn));
        fprintf(f, "  %-28s %s\n", syn, cmd->help);
        for (unsigned k = 0; k < CL_CTL_ARGS_MAX && cmd->args[k].key; k++)
            if (cmd->args[k].choices)
                fprintf(f, "  %-28s   %s: %s\n", "", cmd->args[k].meta, cmd->args[k].choices);
    }
    fprintf(f,
        "  %-28s %s\n"
        "The socket is -s SOCKET, else $IMFUSE_CONTROL, else " CTL_DEFAULT_SOCKET " when it exists,\n"
        "else " CTL_SYSTEM_SOCKET " when /run/imfuse exists (the systemd unit's).\n"
        "--json prints every command's result as one JSON object.\n"
        "Exit: 0 done, 1 error reply, 2 no connection or no reply in 10 s, 64 usage.\n",
        "raw JSON", "send any request (id added when absent), print the reply");
}

static int
usage_error(const char *what)
{
    fprintf(stderr, "%s: %s\n", prog, what);
    usage(stderr);
    return CLI_EXIT_USAGE;
}

static void
print_table(const msgpack_object *reply, const char *key, const struct cli_col *cols, size_t n)
{
    const msgpack_object *rows = cli_map_get(reply, key);
    char *t = cli_table_format(rows, cols, n);

    if (!t) {
        fprintf(stderr, "%s: reply has no list \"%s\"\n", prog, key);
        return;
    }
    fputs(t, stdout);
    free(t);
}

static void
print_users(const char *arg, const msgpack_object *r)
{
    static const struct cli_col cols[] = {
        { "name", "NAME", CLI_COL_TEXT }, { "uid", "UID", CLI_COL_TEXT },
        { "accounts", "ACCOUNTS", CLI_COL_TEXT }, { "queued", "QUEUED", CLI_COL_TEXT },
        { "sessions", "SESSIONS", CLI_COL_TEXT },
    };
    print_table(r, "users", cols, IM_ARRAY_SIZE(cols));
}

/* One user's accounts (NAME given), or every user's with a USER column. */
static void
print_accounts(const char *arg, const msgpack_object *r)
{
    static const struct cli_col cols[] = {
        { "user", "USER", CLI_COL_TEXT },
        { "account", "ACCOUNT", CLI_COL_TEXT }, { "network", "NETWORK", CLI_COL_TEXT },
        { "login", "LOGIN", CLI_COL_TEXT }, { "server", "SERVER", CLI_COL_TEXT },
        { "tls", "TLS", CLI_COL_TEXT }, { "name", "NAME", CLI_COL_TEXT },
        { "state", "STATE", CLI_COL_TEXT }, { "detail", "DETAIL", CLI_COL_TEXT },
    };
    bool one_user = arg && *arg;
    print_table(r, "accounts", cols + one_user, IM_ARRAY_SIZE(cols) - one_user);
}

static void
print_sessions(const char *arg, const msgpack_object *r)
{
    static const struct cli_col cols[] = {
        { "user", "USER", CLI_COL_TEXT }, { "peer", "PEER", CLI_COL_TEXT },
        { "device", "DEVICE", CLI_COL_TEXT }, { "since", "SINCE", CLI_COL_TIME_MS },
    };
    print_table(r, "sessions", cols, IM_ARRAY_SIZE(cols));
}

static int
kv_cmp(const void *a, const void *b)
{
    const msgpack_object *ka = &((const msgpack_object_kv *)a)->key;
    const msgpack_object *kb = &((const msgpack_object_kv *)b)->key;
    uint32_t la = ka->type == MSGPACK_OBJECT_STR ? ka->via.str.size : 0;
    uint32_t lb = kb->type == MSGPACK_OBJECT_STR ? kb->via.str.size : 0;
    int c = memcmp(la ? ka->via.str.ptr : "", lb ? kb->via.str.ptr : "", la < lb ? la : lb);
    return c ? c : (la > lb) - (la < lb);
}

static void
print_stats(const char *arg, const msgpack_object *r)
{
    const msgpack_object *st = cli_map_get(r, "stats");

    if (!st || st->type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "%s: reply has no map \"stats\"\n", prog);
        return;
    }
    /* The reply's zone is ours until the frame is freed: sort it in place. */
    qsort(st->via.map.ptr, st->via.map.size, sizeof(*st->via.map.ptr), kv_cmp);
    for (uint32_t i = 0; i < st->via.map.size; i++) {
        char *k = cli_obj_text(&st->via.map.ptr[i].key);
        char *v = cli_obj_text(&st->via.map.ptr[i].val);
        if (k && v)
            printf("%s %s\n", k, v);
        free(k);
        free(v);
    }
}

static void
print_help(const char *arg, const msgpack_object *r)
{
    static const struct cli_col cols[] = {
        { "name", "COMMAND", CLI_COL_TEXT }, { "help", "HELP", CLI_COL_TEXT },
    };
    print_table(r, "commands", cols, IM_ARRAY_SIZE(cols));
}

static void
print_kick(const char *arg, const msgpack_object *r)
{
    const msgpack_object *n = cli_map_get(r, "kicked");     /* the daemon's count */

    if (!n)
        n = cli_map_get(r, "sessions");

    if (n && n->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        printf("kicked %s (%llu connections closed)\n", arg, (unsigned long long)n->via.u64);
    else
        printf("kicked %s\n", arg);
}

/* The text of a str object (NULL-safe, for printf's %.*s). */
static int
str_len(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_STR ? (int)o->via.str.size : 0;
}

static const char *
str_ptr(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : "";
}

/* config: "key = value  # source", the file's own syntax. */
static void
print_config(const char *arg, const msgpack_object *r)
{
    const msgpack_object *rows = cli_map_get(r, "config");
    if (!rows || rows->type != MSGPACK_OBJECT_ARRAY) {
        fprintf(stderr, "%s: reply has no list \"config\"\n", prog);
        return;
    }
    int w = 0;
    for (uint32_t i = 0; i < rows->via.array.size; i++) {
        int n = str_len(cli_map_get(&rows->via.array.ptr[i], "key"));
        w = n > w ? n : w;
    }
    for (uint32_t i = 0; i < rows->via.array.size; i++) {
        const msgpack_object *row = &rows->via.array.ptr[i];
        const msgpack_object *k = cli_map_get(row, "key"), *v = cli_map_get(row, "value");
        const msgpack_object *src = cli_map_get(row, "source");
        char line[4200];
        int n = snprintf(line, sizeof(line), "%-*.*s = %.*s", w, str_len(k), str_ptr(k), str_len(v), str_ptr(v));
        printf("%s%*s# %.*s\n", line, n < 60 ? 60 - n : 2, "", str_len(src), str_ptr(src));
    }
}

/* A list of sentences under key, one per line (reload). */
static void
print_lines(const msgpack_object *r, const char *key, const char *pre)
{
    const msgpack_object *l = cli_map_get(r, key);
    if (!l || l->type != MSGPACK_OBJECT_ARRAY)
        return;
    for (uint32_t i = 0; i < l->via.array.size; i++)
        printf("%s%.*s\n", pre, str_len(&l->via.array.ptr[i]), str_ptr(&l->via.array.ptr[i]));
}

static void
print_reload(const char *arg, const msgpack_object *r)
{
    const msgpack_object *c = cli_map_get(r, "changed"), *x = cli_map_get(r, "restart");
    bool none = (!c || c->type != MSGPACK_OBJECT_ARRAY || !c->via.array.size) &&
                (!x || x->type != MSGPACK_OBJECT_ARRAY || !x->via.array.size);
    print_lines(r, "changed", "changed: ");
    print_lines(r, "restart", "needs a restart: ");
    if (none)
        printf("reloaded: nothing changed\n");
}

static void
print_log_level(const char *arg, const msgpack_object *r)
{
    const msgpack_object *was = cli_map_get(r, "was"), *now = cli_map_get(r, "level");
    printf("log level %.*s (was %.*s)\n", str_len(now), str_ptr(now), str_len(was), str_ptr(was));
}

static void
print_backup(const char *arg, const msgpack_object *r)
{
    const msgpack_object *b = cli_map_get(r, "bytes"), *ms = cli_map_get(r, "ms");
    printf("backup written to %s: %llu bytes in %.1f s; keep the appliance key (appliance.key) "
           "with it\n", arg,
           b && b->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (unsigned long long)b->via.u64 : 0ULL,
           ms && ms->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (double)ms->via.u64 / 1000.0 : 0.0);
}

static const struct ctl_show ctl_show[CL_CTL__COUNT] = {
    [CL_CTL_USER_ADD] = { NULL, "user ", " added" },
    [CL_CTL_USER_DEL] = { NULL, "user ", " deleted" },
    [CL_CTL_USER_PASSWD] = { NULL, "password of user ", " changed" },
    [CL_CTL_USER_LIST] = { print_users, NULL, NULL },
    [CL_CTL_ACCOUNTS] = { print_accounts, NULL, NULL },
    [CL_CTL_SESSIONS] = { print_sessions, NULL, NULL },
    [CL_CTL_STATS] = { print_stats, NULL, NULL },
    [CL_CTL_KICK] = { print_kick, NULL, NULL },
    [CL_CTL_DRAIN] = { NULL, "draining: new client connections are refused", "" },
    [CL_CTL_CONFIG] = { print_config, NULL, NULL },
    [CL_CTL_RELOAD] = { print_reload, NULL, NULL },
    [CL_CTL_LOG_LEVEL] = { print_log_level, NULL, NULL },
    [CL_CTL_BACKUP] = { print_backup, NULL, NULL },
    [CL_CTL_HELP] = { print_help, NULL, NULL },
};

/* The new password: first line of standard input (a silent prompt when it
 * is a terminal).  0 or an exit code after printing why. */
static int
read_password(const char *user, char *buf, size_t sz)
{
    int n;

    if (isatty(STDIN_FILENO)) {
        char prompt[300];
        snprintf(prompt, sizeof(prompt), "Password for %s: ", user);
        n = cli_tty_password(prompt, buf, sz);
    } else {
        n = cli_read_line(STDIN_FILENO, buf, sz);
    }
    if (n < 0) {
        fprintf(stderr, "%s: cannot read the password: %s\n", prog,
                n == -IM_ETOOBIG ? "line too long" : strerror(-n));
        return CLI_EXIT_ERROR;
    }
    if (n == 0) {
        fprintf(stderr, "%s: empty password (give it as the first line of standard input)\n", prog);
        return CLI_EXIT_ERROR;
    }
    return 0;
}

static int
ctl_connect(struct ctl *c)
{
    if (c->conn.fd >= 0)
        return 0;
    int rc = cli_connect_unix(&c->conn, c->sock);

    if (rc) {
        fprintf(stderr, "%s: cannot connect to %s: %s (is imfused running? %s)\n", prog, c->sock,
                strerror(-rc), rc == -EACCES ? "the control socket is 0600: run as root or as the daemon's user" :
                "give its socket with -s SOCKET");
        return CLI_EXIT_CONN;
    }
    return 0;
}

/* Send e (request id) and wait for the reply; an exit code on failure. */
static int
ctl_call(struct ctl *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply, int timeout_ms)
{
    int rc = cli_call(&c->conn, e, id, reply, timeout_ms);

    cl_enc_free(e);
    if (rc) {
        fprintf(stderr, "%s: %s: %s%s\n", prog, c->sock, cli_io_strerror(rc),
                rc == -ETIMEDOUT ? " (the daemon is busy or hung: see its log, journalctl -u imfused)" : "");
        return CLI_EXIT_CONN;
    }
    return 0;
}

/* A command line matched to its row: the values of its arguments. */
struct ctl_req {
    const struct cl_ctl_cmd *cmd;
    const char *val[CL_CTL_ARGS_MAX];   /* NULL: not given */
};

/* What a command prints after its words ("accounts alice": "alice"). */
static const char *
first_positional(const struct ctl_req *rq)
{
    for (unsigned i = 0; i < CL_CTL_ARGS_MAX && rq->cmd->args[i].key; i++)
        if (!(rq->cmd->args[i].flags & CL_CTL_A_OPTION))
            return rq->val[i] ? rq->val[i] : "";
    return "";
}

/* FILE of a CL_CTL_A_OUTFILE argument: created as FILE.part (never
 * replacing anything), renamed to FILE once the daemon has written it. */
static int
outfile_open(const char *path, char *part, size_t sz)
{
    struct stat st;
    if (snprintf(part, sz, "%s.part", path) >= (int)sz) {
        fprintf(stderr, "%s: %s: name too long\n", prog, path);
        return -1;
    }
    if (lstat(path, &st) == 0) {
        fprintf(stderr, "%s: %s exists: give a new file name (a backup never replaces a file)\n", prog, path);
        return -1;
    }
    int fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        fprintf(stderr, "%s: cannot create %s: %s%s\n", prog, part, strerror(errno),
                errno == EEXIST ? " (left by an interrupted backup? remove it)" : "");
    return fd;
}

static int
outfile_finish(int fd, const char *part, const char *path)
{
    int rc = fsync(fd) < 0 ? -errno : 0;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    if (!rc && renameat2(AT_FDCWD, part, AT_FDCWD, path, RENAME_NOREPLACE) < 0)
        rc = -errno;
    if (rc) {
        fprintf(stderr, "%s: cannot finish %s: %s\n", prog, path, strerror(-rc));
        unlink(part);
    }
    return rc;
}

static int
run_cmd(struct ctl *c, const struct ctl_req *rq)
{
    const struct cl_ctl_cmd *cmd = rq->cmd;
    char password[CTL_PASSWORD_MAX], part[4200] = "";
    struct cli_frame *reply = NULL;
    const char *outpath = NULL;
    int outfd = -1;
    struct cl_enc e;
    uint64_t id;
    int rc;

    rc = ctl_connect(c);
    if (rc)
        return rc;
    bool takes_password = cmd->flags & CL_CTL_PASSWORD;
    if (takes_password && (rc = read_password(first_positional(rq), password, sizeof(password))))
        return rc;
    uint32_t n = 2 + takes_password;
    for (unsigned i = 0; i < CL_CTL_ARGS_MAX && cmd->args[i].key; i++) {
        if (!rq->val[i])
            continue;
        n++;
        if ((cmd->args[i].flags & CL_CTL_A_OUTFILE) && (outfd = outfile_open(outpath = rq->val[i], part,
                                                                           sizeof(part))) < 0)
            return CLI_EXIT_ERROR;
    }
    id = cli_next_id(&c->conn);
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, n);
    cl_pack_kstr(&e, "op", cmd->op);
    cl_pack_kuint(&e, "id", id);
    for (unsigned i = 0; i < CL_CTL_ARGS_MAX && cmd->args[i].key; i++) {
        const struct cl_ctl_arg *a = &cmd->args[i];
        uint64_t u;
        if (!rq->val[i])
            continue;
        if (a->flags & CL_CTL_A_FLAG) {
            cl_pack_key(&e, a->key);
            msgpack_pack_true(&e.pk);
        } else if ((a->flags & CL_CTL_A_UINT) && cli_parse_uint(rq->val[i], &u) == 0) {
            cl_pack_kuint(&e, a->key, u);
        } else {
            cl_pack_kstr(&e, a->key, rq->val[i]);
        }
    }
    if (takes_password) {
        cl_pack_kstr(&e, "password", password);
        im_wipe(password, sizeof(password));
    }
    c->conn.pass_fd = outfd;
    rc = ctl_call(c, &e, id, &reply, cmd->flags & CL_CTL_SLOW ? -1 : CTL_TIMEOUT_MS);
    if (rc)
        goto done;
    if (!cli_is_ok(&reply->msg)) {
        cli_print_error(stderr, prog, &reply->msg);
        rc = CLI_EXIT_ERROR;
    } else if (outfd >= 0 && outfile_finish(outfd, part, outpath) < 0) {
        outfd = -1;
        rc = CLI_EXIT_ERROR;
    } else {
        outfd = -1;
        if (c->json)
            cli_print_fields_json(stdout, &reply->msg.root);
        else if (ctl_show[cmd->id].print)
            ctl_show[cmd->id].print(first_positional(rq), &reply->msg.root);
        else if (ctl_show[cmd->id].done_pre)
            printf("%s%s%s\n", ctl_show[cmd->id].done_pre, first_positional(rq), ctl_show[cmd->id].done_post);
    }
done:
    if (outfd >= 0) {
        close(outfd);
        unlink(part);
    }
    cli_frame_free(reply);
    return rc;
}

/* ---- top ----------------------------------------------------------------- */

#define TOP_MAX 512

/* One stats sample: names, values, and which are gauges (the rest count up). */
struct top_sample {
    int64_t at_ms;
    unsigned n;
    char *name[TOP_MAX];
    uint64_t v[TOP_MAX];
    bool gauge[TOP_MAX];
};

static void
top_free(struct top_sample *s)
{
    for (unsigned i = 0; i < s->n; i++)
        free(s->name[i]);
    s->n = 0;
}

static bool
in_list(const msgpack_object *l, const char *k, uint32_t klen)
{
    if (!l || l->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < l->via.array.size; i++) {
        const msgpack_object *o = &l->via.array.ptr[i];
        if (o->type == MSGPACK_OBJECT_STR && o->via.str.size == klen && !memcmp(o->via.str.ptr, k, klen))
            return true;
    }
    return false;
}

static int
top_sample(struct ctl *c, struct top_sample *s)
{
    struct cli_frame *reply = NULL;
    struct cl_enc e;
    int rc = ctl_connect(c);
    if (rc)
        return rc;
    uint64_t id = cli_next_id(&c->conn);
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2);
    cl_pack_kstr(&e, "op", "stats");
    cl_pack_kuint(&e, "id", id);
    if ((rc = ctl_call(c, &e, id, &reply, CTL_TIMEOUT_MS)))
        return rc;
    if (!cli_is_ok(&reply->msg)) {
        cli_print_error(stderr, prog, &reply->msg);
        cli_frame_free(reply);
        return CLI_EXIT_ERROR;
    }
    const msgpack_object *st = cli_map_get(&reply->msg.root, "stats");
    const msgpack_object *gauges = cli_map_get(&reply->msg.root, "gauges");
    top_free(s);
    s->at_ms = cli_mono_ms();
    for (uint32_t i = 0; st && st->type == MSGPACK_OBJECT_MAP && i < st->via.map.size && s->n < TOP_MAX; i++) {
        const msgpack_object_kv *kv = &st->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        if (!(s->name[s->n] = strndup(kv->key.via.str.ptr, kv->key.via.str.size)))
            break;
        s->v[s->n] = kv->val.via.u64;
        s->gauge[s->n] = in_list(gauges, kv->key.via.str.ptr, kv->key.via.str.size);
        s->n++;
    }
    cli_frame_free(reply);
    return 0;
}

static bool
top_get(const struct top_sample *s, const char *k, uint64_t *v, bool *gauge)
{
    for (unsigned i = 0; i < s->n; i++)
        if (!strcmp(s->name[i], k)) {
            *v = s->v[i];
            if (gauge)
                *gauge = s->gauge[i];
            return true;
        }
    return false;
}

/* Per second between two samples (a counter that went back, e.g. after a
 * restart of the daemon, counts from 0). */
static double
top_rate(const struct top_sample *a, const struct top_sample *b, const char *k)
{
    uint64_t x = 0, y = 0;
    double dt = (double)(b->at_ms - a->at_ms) / 1000.0;
    if (!top_get(b, k, &y, NULL) || dt <= 0)
        return 0;
    if (!top_get(a, k, &x, NULL) || y < x)
        x = 0;
    return (double)(y - x) / dt;
}

/* The screen: what an operator of a relay watches, by area. */
static const struct {
    const char *area, *label, *key;
    bool rate;
} top_rows[] = {
    { "clients", "open", "clients_open", false }, { "clients", "sessions", "sessions", false },
    { "clients", "accepted/s", "clients_accepted", true }, { "clients", "logins/s", "logins_ok", true },
    { "clients", "failed logins/s", "logins_failed", true },
    { "messages", "in/s", "msgs_in", true }, { "messages", "out/s", "msgs_out", true },
    { "messages", "delivered/s", "msgs_delivered", true }, { "messages", "committed/s", "msgs_committed", true },
    { "messages", "send queue", "send_queue_len", false }, { "messages", "queued", "store_queued", false },
    { "accounts", "online", "account_online", false }, { "accounts", "connects/s", "account_connects", true },
    { "accounts", "failures/s", "account_failures", true },
    { "accounts", "left online/s", "accounts_left_online", true },
    { "store", "commits/s", "store_commits", true }, { "store", "failures/s", "store_commit_failures", true },
    { "store", "pages used", "store_pages_used", false },
    { "traffic", "bytes in/s", "bytes_in", true }, { "traffic", "bytes out/s", "bytes_out", true },
    { "traffic", "packets in/s", "io_rx_packets", true }, { "traffic", "packets out/s", "io_tx_packets", true },
    { "traffic", "drops/s", "io_rx_drops", true },
};

static void
top_print_text(const struct top_sample *a, const struct top_sample *b, double interval, bool clear)
{
    char now[32];
    cli_time_text((uint64_t)time(NULL) * 1000, now, sizeof(now));
    if (clear)
        fputs("\033[H\033[2J", stdout);
    printf("imfuse top - %s - rates over %.1f s\n", now, (double)(b->at_ms - a->at_ms) / 1000.0);
    const char *area = "";
    for (size_t i = 0; i < IM_ARRAY_SIZE(top_rows); i++) {
        uint64_t v;
        if (!top_get(b, top_rows[i].key, &v, NULL))
            continue;
        if (strcmp(area, top_rows[i].area)) {
            printf("%s%-9s", *area ? "\n" : "", top_rows[i].area);
            area = top_rows[i].area;
        }
        if (top_rows[i].rate)
            printf("  %s %.1f", top_rows[i].label, top_rate(a, b, top_rows[i].key));
        else
            printf("  %s %llu", top_rows[i].label, (unsigned long long)v);
        uint64_t psz = 0, map = 0;
        if (!strcmp(top_rows[i].key, "store_pages_used") && top_get(b, "store_page_size", &psz, NULL) &&
            top_get(b, "store_map_size", &map, NULL) && map)
            printf(" (%.1f %% of the map)", 100.0 * (double)v * (double)psz / (double)map);
    }
    printf("\n");
    (void)interval;
    fflush(stdout);
}

/* --json: the rate of every counter and the value of every gauge. */
static void
top_print_json(const struct top_sample *a, const struct top_sample *b)
{
    printf("{\"interval_s\":%.3f,\"rates\":{", (double)(b->at_ms - a->at_ms) / 1000.0);
    unsigned k = 0;
    for (unsigned i = 0; i < b->n; i++)
        if (!b->gauge[i])
            printf("%s\"%s\":%.3f", k++ ? "," : "", b->name[i], top_rate(a, b, b->name[i]));
    printf("},\"gauges\":{");
    k = 0;
    for (unsigned i = 0; i < b->n; i++)
        if (b->gauge[i])
            printf("%s\"%s\":%llu", k++ ? "," : "", b->name[i], (unsigned long long)b->v[i]);
    printf("}}\n");
    fflush(stdout);
}

/* The signal that asked top to end (SIGINT or SIGTERM), 0 while none did. */
static volatile sig_atomic_t top_stop;

static void
top_on_signal(int sig)
{
    top_stop = sig;
}

/*
 * top ends on SIGINT (Ctrl-C) or SIGTERM whatever it inherited: a shell
 * starts a background job's commands with SIGINT ignored, and a parent may
 * have left either signal blocked.  Both stay blocked while top samples and
 * prints (a screen is never cut in half) and are let in only while it waits
 * for the next sample, in ppoll, which returns at once on them.
 */
static int
run_top(struct ctl *c, const struct ctl_req *rq)
{
    bool once = rq->val[0] != NULL;
    int interval_ms = 2000;
    if (rq->val[1])
        (void)cli_parse_seconds(rq->val[1], &interval_ms);
    static struct top_sample s[2];
    struct sigaction sa = { .sa_handler = top_on_signal }, old_int, old_term;
    sigset_t stops, old_mask, wait_mask;
    sigemptyset(&sa.sa_mask);
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigprocmask(SIG_BLOCK, &stops, &old_mask);
    wait_mask = old_mask;
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGTERM);
    top_stop = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    int cur = 0, rc = top_sample(c, &s[0]);
    bool clear = !c->json && !once && isatty(STDOUT_FILENO);
    while (rc == 0 && !top_stop) {
        int64_t due = s[cur].at_ms + interval_ms;
        for (int64_t left; !top_stop && (left = due - cli_mono_ms()) > 0;) {
            struct timespec ts = { .tv_sec = left / 1000, .tv_nsec = (long)(left % 1000) * 1000000L };
            (void)ppoll(NULL, 0, &ts, &wait_mask);     /* EINTR: a stop signal came */
        }
        if (top_stop || (rc = top_sample(c, &s[!cur])))
            break;
        if (c->json)
            top_print_json(&s[cur], &s[!cur]);
        else
            top_print_text(&s[cur], &s[!cur], interval_ms / 1000.0, clear);
        cur = !cur;
        if (once)
            break;
        if (!c->json && !clear)
            printf("\n");
    }
    /* Asked to stop: a normal end (exit status 0), the last screen left
     * whole, the terminal's "^C" on a line of its own. */
    if (top_stop && clear)
        printf("\n");
    fflush(stdout);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    sigprocmask(SIG_SETMASK, &old_mask, NULL);
    top_free(&s[0]);
    top_free(&s[1]);
    return rc;
}

/* raw JSON: the request as given (an id added when absent), the whole reply as JSON. */
static int
run_raw(struct ctl *c, const char *json)
{
    struct cli_frame *reply = NULL;
    struct cl_enc in, e;
    msgpack_zone zone;
    msgpack_object req;
    size_t off = 0;
    uint64_t id;
    int rc;

    cl_enc_init(&in);
    if (cl_json_parse(json, strlen(json), &in)) {
        cl_enc_free(&in);
        fprintf(stderr, "%s: raw: not valid JSON\n", prog);
        return CLI_EXIT_USAGE;
    }
    msgpack_zone_init(&zone, 4096);
    if (msgpack_unpack(in.buf.data + 4, in.buf.size - 4, &off, &zone, &req) !=
            MSGPACK_UNPACK_SUCCESS || req.type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "%s: raw: the request must be a JSON object\n", prog);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    rc = ctl_connect(c);
    if (rc)
        goto done;
    id = cli_next_id(&c->conn);
    const msgpack_object *given = cli_map_get(&req, "id");
    if (given && given->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        id = given->via.u64;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, req.via.map.size + (given ? 0 : 1));
    if (!given)
        cl_pack_kuint(&e, "id", id);
    for (uint32_t i = 0; i < req.via.map.size; i++) {
        msgpack_pack_object(&e.pk, req.via.map.ptr[i].key);
        msgpack_pack_object(&e.pk, req.via.map.ptr[i].val);
    }
    rc = ctl_call(c, &e, id, &reply, CTL_TIMEOUT_MS);
    if (rc)
        goto done;
    cli_print_json(stdout, &reply->msg.root);
    rc = cli_is_ok(&reply->msg) ? CLI_EXIT_OK : CLI_EXIT_ERROR;
    cli_frame_free(reply);
done:
    msgpack_zone_destroy(&zone);
    cl_enc_free(&in);
    return rc;
}

/* How many leading positional arguments spell words ("user add"); 0 when they do not. */
static int
match_words(const char *words, const struct cli_args *a)
{
    int n = 0;
    const char *w = words;
    while (*w) {
        size_t len = strcspn(w, " ");
        if (n >= a->npos || strlen(a->pos[n]) != len || memcmp(a->pos[n], w, len))
            return 0;
        n++;
        w += len;
        while (*w == ' ')
            w++;
    }
    return n;
}

/*
 * The options of the commands whose first word is cmd ("--state" of
 * accounts), from their rows: "--KEY", taking a value unless a flag.
 */
static const struct cli_optspec *
cmd_opts(const char *cmd)
{
    static struct cli_optspec specs[CL_CTL__COUNT * CL_CTL_ARGS_MAX + 1];
    static char names[CL_CTL__COUNT * CL_CTL_ARGS_MAX][40];
    unsigned n = 0;
    size_t clen = strlen(cmd);
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *row = &cl_ctl_cmds[i];
        if (strncmp(row->words, cmd, clen) || (row->words[clen] && row->words[clen] != ' '))
            continue;
        for (unsigned k = 0; k < CL_CTL_ARGS_MAX && row->args[k].key; k++) {
            if (!(row->args[k].flags & CL_CTL_A_OPTION))
                continue;
            snprintf(names[n], sizeof(names[n]), "--%s", row->args[k].key);
            specs[n] = (struct cli_optspec){ names[n], !(row->args[k].flags & CL_CTL_A_FLAG) };
            n++;
        }
    }
    specs[n] = (struct cli_optspec){ NULL, false };
    return n ? specs : NULL;
}

/* Fill rq from the command line after the row's words; 0 or a usage exit. */
static int
bind_args(const struct cl_ctl_cmd *cmd, const struct cli_args *a, int words, struct ctl_req *rq)
{
    char syn[128], why[300];
    int next = words;
    cl_ctl_synopsis(cmd, syn, sizeof(syn));
    memset(rq, 0, sizeof(*rq));
    rq->cmd = cmd;
    for (unsigned i = 0; i < CL_CTL_ARGS_MAX && cmd->args[i].key; i++) {
        const struct cl_ctl_arg *ar = &cmd->args[i];
        char opt[48];
        if (ar->flags & CL_CTL_A_OPTION) {
            snprintf(opt, sizeof(opt), "--%s", ar->key);
            rq->val[i] = cli_opt(a, opt);
        } else if (next < a->npos) {
            rq->val[i] = a->pos[next++];
        }
        const char *v = rq->val[i];
        if (!v && !(ar->flags & CL_CTL_A_OPTIONAL)) {
            snprintf(why, sizeof(why), "usage: %s", syn);
            return usage_error(why);
        }
        if (!v || (ar->flags & CL_CTL_A_FLAG))
            continue;
        uint64_t u;
        int ms;
        if (!cl_ctl_choice_ok(ar->choices, v, strlen(v)))
            snprintf(why, sizeof(why), "%s: expected %s, got \"%s\"", ar->meta, ar->choices, v);
        else if ((ar->flags & CL_CTL_A_UINT) && cli_parse_uint(v, &u))
            snprintf(why, sizeof(why), "%s: expected a number, got \"%s\"", ar->meta, v);
        else if ((ar->flags & CL_CTL_A_SECONDS) && cli_parse_seconds(v, &ms))
            snprintf(why, sizeof(why), "%s: expected seconds (e.g. 2 or 0.5), got \"%s\"", ar->meta, v);
        else if (!*v)
            snprintf(why, sizeof(why), "%s: empty", ar->meta);
        else
            continue;
        return usage_error(why);
    }
    if (next < a->npos) {
        snprintf(why, sizeof(why), "usage: %s (unexpected \"%s\")", syn, a->pos[next]);
        return usage_error(why);
    }
    return 0;
}

int
main(int argc, char **argv)
{
    struct ctl c = { .json = false };
    struct cli_args a;
    char why[256];
    int rc;

    cli_conn_init(&c.conn);
    if (cli_args_parse(&a, argc, argv, ctl_opts, cmd_opts, why, sizeof(why)))
        return usage_error(why);
    if (cli_opt(&a, "-h") || cli_opt(&a, "--help")) {
        usage(stdout);
        cli_args_free(&a);
        return 0;
    }
    c.json = cli_opt(&a, "--json") != NULL;
    c.sock = cli_opt(&a, "-s") ? cli_opt(&a, "-s") : cli_opt(&a, "--socket");
    if (!c.sock)
        c.sock = getenv("IMFUSE_CONTROL");
    if (!c.sock || !*c.sock)
        c.sock = access(CTL_DEFAULT_SOCKET, F_OK) != 0 && access("/run/imfuse", F_OK) == 0 ?
                 CTL_SYSTEM_SOCKET : CTL_DEFAULT_SOCKET;
    if (a.npos == 0) {
        rc = usage_error("no command given");
        goto out;
    }
    if (!strcmp(a.pos[0], "raw")) {
        rc = a.npos == 2 ? run_raw(&c, a.pos[1]) : usage_error("usage: raw JSON");
        goto out;
    }
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *cmd = &cl_ctl_cmds[i];
        int words = match_words(cmd->words, &a);
        if (!words)
            continue;
        struct ctl_req rq;
        if ((rc = bind_args(cmd, &a, words, &rq)))
            goto out;
        rc = cmd->flags & CL_CTL_LOCAL ? run_top(&c, &rq) : run_cmd(&c, &rq);
        goto out;
    }
    if (!strcmp(a.pos[0], "user"))
        snprintf(why, sizeof(why), "usage: user add|del|passwd NAME, user list");
    else
        snprintf(why, sizeof(why), "unknown command %s (imfusectl --help lists them)", a.pos[0]);
    rc = usage_error(why);
out:
    cli_conn_close(&c.conn);
    cli_args_free(&a);
    return rc;
}
