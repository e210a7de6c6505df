/*
 * imfusectl - the operator's command-line tool.  Sends one request on the
 * daemon's control socket (client protocol framing, DESIGN.md §4 and §6) and
 * prints the reply as text or, with --json, as one JSON object.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
        char words[64];
        snprintf(words, sizeof(words), "%s%s", cmd->words, cmd->flags & CL_CTL_ARG_NAME ? " NAME" : "");
        fprintf(f, "  %-20s %s\n", words, cmd->help);
    }
    fprintf(f,
        "  %-20s %s\n"
        "The socket is -s SOCKET, else $IMFUSE_CONTROL, else " CTL_DEFAULT_SOCKET " when it exists,\n"
        "else " CTL_SYSTEM_SOCKET " when /run/imfuse exists (the systemd unit's).\n"
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

static void
print_accounts(const char *arg, const msgpack_object *r)
{
    static const struct cli_col cols[] = {
        { "account", "ACCOUNT", CLI_COL_TEXT }, { "network", "NETWORK", CLI_COL_TEXT },
        { "login", "LOGIN", CLI_COL_TEXT }, { "server", "SERVER", CLI_COL_TEXT },
        { "tls", "TLS", CLI_COL_TEXT }, { "name", "NAME", CLI_COL_TEXT },
        { "state", "STATE", CLI_COL_TEXT }, { "detail", "DETAIL", CLI_COL_TEXT },
    };
    print_table(r, "accounts", cols, IM_ARRAY_SIZE(cols));
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
    int rc = cli_connect_unix(&c->conn, c->sock);

    if (rc) {
        fprintf(stderr, "%s: cannot connect to %s: %s (is imfused running?)\n", prog, c->sock,
                strerror(-rc));
        return CLI_EXIT_CONN;
    }
    return 0;
}

/* Send e (request id) and wait for the reply; an exit code on failure. */
static int
ctl_call(struct ctl *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply)
{
    int rc = cli_call(&c->conn, e, id, reply, CTL_TIMEOUT_MS);

    cl_enc_free(e);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", prog, c->sock, cli_io_strerror(rc));
        return CLI_EXIT_CONN;
    }
    return 0;
}

static int
run_cmd(struct ctl *c, const struct cl_ctl_cmd *cmd, const char *name)
{
    char password[CTL_PASSWORD_MAX];
    struct cli_frame *reply = NULL;
    struct cl_enc e;
    uint64_t id;
    int rc;

    rc = ctl_connect(c);
    if (rc)
        return rc;
    bool takes_name = cmd->flags & CL_CTL_ARG_NAME, takes_password = cmd->flags & CL_CTL_ARG_PASSWORD;
    if (takes_password && (rc = read_password(name, password, sizeof(password))))
        return rc;
    id = cli_next_id(&c->conn);
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 2 + takes_name + takes_password);
    cl_pack_kstr(&e, "op", cmd->op);
    cl_pack_kuint(&e, "id", id);
    if (takes_name)
        cl_pack_kstr(&e, "name", name);
    if (takes_password) {
        cl_pack_kstr(&e, "password", password);
        im_wipe(password, sizeof(password));
    }
    rc = ctl_call(c, &e, id, &reply);
    if (rc)
        return rc;
    if (!cli_is_ok(&reply->msg)) {
        cli_print_error(stderr, prog, &reply->msg);
        rc = CLI_EXIT_ERROR;
    } else if (c->json) {
        cli_print_fields_json(stdout, &reply->msg.root);
    } else if (ctl_show[cmd->id].print) {
        ctl_show[cmd->id].print(name, &reply->msg.root);
    } else if (ctl_show[cmd->id].done_pre) {
        printf("%s%s%s\n", ctl_show[cmd->id].done_pre, name, ctl_show[cmd->id].done_post);
    }
    cli_frame_free(reply);
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
    rc = ctl_call(c, &e, id, &reply);
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

int
main(int argc, char **argv)
{
    struct ctl c = { .json = false };
    struct cli_args a;
    char why[256];
    int rc;

    cli_conn_init(&c.conn);
    if (cli_args_parse(&a, argc, argv, ctl_opts, NULL, why, sizeof(why)))
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
    rc = -1;
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *cmd = &cl_ctl_cmds[i];
        int words = match_words(cmd->words, &a);
        if (!words)
            continue;
        bool takes_name = cmd->flags & CL_CTL_ARG_NAME;
        if (a.npos != words + takes_name) {
            snprintf(why, sizeof(why), "usage: %s%s", cmd->words, takes_name ? " NAME" : "");
            rc = usage_error(why);
            goto out;
        }
        rc = run_cmd(&c, cmd, takes_name ? a.pos[words] : "");
        goto out;
    }
    if (!strcmp(a.pos[0], "user"))
        snprintf(why, sizeof(why), "usage: user add|del|passwd NAME, user list");
    else
        snprintf(why, sizeof(why), "unknown command %s", a.pos[0]);
    rc = usage_error(why);
out:
    cli_conn_close(&c.conn);
    cli_args_free(&a);
    return rc;
}
