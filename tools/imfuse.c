/*
 * imfuse - the user's command-line client.  Each run connects to the
 * appliance, logs in (client protocol v1, DESIGN.md §4), performs one
 * command and exits.  Text output by default, JSON with --json.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "client/cl_json.h"

#define IMF_DEFAULT_SERVER  "127.0.0.1:7700"
#define IMF_TIMEOUT_MS      15000
#define IMF_PASSWORD_MAX    1024
#define IMF_DEVICE          "imfuse-cli"

static const char *prog = "imfuse";

struct imf {
    struct cli_conn conn;
    struct cli_args a;
    const char *server;
    const char *user;
    bool json;
    bool events;                /* print every event as a JSON line */
    char password[IMF_PASSWORD_MAX];
    char link_password[IMF_PASSWORD_MAX];
};

struct imf_cmd {
    const char *name;
    int min_args, max_args;     /* positionals after the command word; -1 = any */
    bool login;                 /* log in first */
    int (*run)(struct imf *c);
    const char *usage;
};

static const struct cli_optspec global_opts[] = {
    { "-S", true }, { "-u", true }, { "--user", true }, { "--json", false },
    { "--events", false }, { "-h", false }, { "--help", false }, { NULL, false },
};
static const struct cli_optspec link_opts[] = {
    { "--tls", true }, { "--name", true }, { "--option", true }, { "--wait", true }, { NULL, false },
};
static const struct cli_optspec update_opts[] = {
    { "--password", false }, { "--server", true }, { "--tls", true }, { "--option", true },
    { NULL, false },
};
static const struct cli_optspec merge_opts[] = {
    { "--prefer", true }, { "--id", true }, { NULL, false },
};
static const struct cli_optspec send_opts[] = { { "--cid", true }, { NULL, false } };
static const struct cli_optspec listen_opts[] = {
    { "--count", true }, { "--timeout", true }, { "--no-ack", false }, { NULL, false },
};

static const struct cli_optspec *
cmd_opts(const char *cmd)
{
    if (!strcmp(cmd, "link"))
        return link_opts;
    if (!strcmp(cmd, "update"))
        return update_opts;
    if (!strcmp(cmd, "merge"))
        return merge_opts;
    if (!strcmp(cmd, "send"))
        return send_opts;
    if (!strcmp(cmd, "listen"))
        return listen_opts;
    return NULL;
}

static void
usage(FILE *f)
{
    fprintf(f,
        "usage: imfuse [-S HOST:PORT] -u USER [--json] [--events] COMMAND ...\n"
        "commands:\n"
        "  register                            create the user (open registration)\n"
        "  link NETWORK LOGIN SERVER [--tls starttls|tls|none] [--name NAME]\n"
        "       [--option KEY=VALUE]... [--wait SECONDS]   link an IM account\n"
        "  unlink ACCOUNT\n"
        "  update ACCOUNT [--password] [--server HOST:PORT] [--tls T] [--option KEY=VALUE]...\n"
        "  accounts                            linked accounts and their state\n"
        "  contacts                            every account's contacts\n"
        "  add-contact ACCOUNT ADDRESS [NAME]\n"
        "  remove-contact ACCOUNT ADDRESS\n"
        "  unified                             the unified contact list\n"
        "  merge NAME ACCOUNT:ADDRESS... [--prefer ACCOUNT] [--id ID]\n"
        "  unmerge ID\n"
        "  send TARGET BODY... [--cid CID]     TARGET: unified id, unified name or ACCOUNT:ADDRESS\n"
        "  listen [--count N] [--timeout SECONDS] [--no-ack] [--events]\n"
        "  raw JSON                            send one request, print the reply\n"
        "Server: -S, else $IMFUSE_SERVER, else " IMF_DEFAULT_SERVER ".  Password: $IMFUSE_PASSWORD\n"
        "or a prompt; linked account password: $IMFUSE_LINK_PASSWORD or a prompt.\n"
        "Exit: 0 done, 1 error reply, 2 connection failure or timeout, 3 wait ran out, 64 usage.\n");
}

static int
usage_error(const char *what)
{
    fprintf(stderr, "%s: %s\n", prog, what);
    fprintf(stderr, "(imfuse --help lists the commands)\n");
    return CLI_EXIT_USAGE;
}

/* Print why a local check failed; exit code 1. */
static int
fail(const char *code, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, code, what);
    return CLI_EXIT_ERROR;
}

/* ---- requests ------------------------------------------------------------ */

/* Start a request map with nfields fields besides op and id; returns the id. */
static uint64_t
req_begin(struct imf *c, struct cl_enc *e, const char *op, uint32_t nfields)
{
    uint64_t id = cli_next_id(&c->conn);

    cl_enc_init(e);
    msgpack_pack_map(&e->pk, nfields + 2);
    cl_pack_kstr(e, "op", op);
    cl_pack_kuint(e, "id", id);
    return id;
}

/*
 * Send e and wait for its reply (e is freed).  Returns 0 with *reply an ok,
 * or an exit code after printing the error (the error reply or the I/O failure).
 */
static int
req_call(struct imf *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply)
{
    struct cli_frame *r = NULL;
    int rc = cli_call(&c->conn, e, id, &r, IMF_TIMEOUT_MS);

    cl_enc_free(e);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", prog, c->server, cli_io_strerror(rc));
        return CLI_EXIT_CONN;
    }
    if (!cli_is_ok(&r->msg)) {
        cli_print_error(stderr, prog, &r->msg);
        cli_frame_free(r);
        return CLI_EXIT_ERROR;
    }
    *reply = r;
    return 0;
}

/* Call, and on ok print the reply's fields as JSON when --json; the human
 * text is the caller's (done_pre ARG done_post when given). */
static int
req_simple(struct imf *c, struct cl_enc *e, uint64_t id, const char *text)
{
    struct cli_frame *r;
    int rc = req_call(c, e, id, &r);

    if (rc)
        return rc;
    if (c->json)
        cli_print_fields_json(stdout, &r->msg.root);
    else if (text)
        printf("%s\n", text);
    cli_frame_free(r);
    return 0;
}

static void
print_event(struct imf *c, const struct cli_frame *ev)
{
    cli_print_json(stdout, &ev->msg.root);
}

/* With --events, print the events that arrived while the command ran. */
static void
flush_events(struct imf *c)
{
    struct cli_frame *ev;

    if (!c->events)
        return;
    while (c->conn.ev_head && cli_event(&c->conn, &ev, 0) == 0) {
        print_event(c, ev);
        cli_frame_free(ev);
    }
}

static int
get_uint_arg(const char *s, const char *what, uint64_t *v)
{
    char why[128];

    if (cli_parse_uint(s, v) == 0)
        return 0;
    snprintf(why, sizeof(why), "%s must be a number, not \"%s\"", what, s);
    return usage_error(why);
}

/* Pack --option KEY=VALUE... as an "options" map (caller counted the field). */
static void
pack_options(struct imf *c, struct cl_enc *e, uint32_t n)
{
    const char *v;
    int it = 0;

    cl_pack_key(e, "options");
    msgpack_pack_map(&e->pk, n);
    while ((v = cli_opt_next(&c->a, "--option", &it))) {
        size_t kl;
        const char *val;
        cli_parse_kv(v, &kl, &val);         /* checked by count_options() */
        cl_pack_strn(e, v, kl);
        cl_pack_str(e, val);
    }
}

/* Count and check the --option values; -1 after a usage message. */
static int
count_options(struct imf *c, uint32_t *n)
{
    const char *v;
    int it = 0;

    *n = 0;
    while ((v = cli_opt_next(&c->a, "--option", &it))) {
        size_t kl;
        const char *val;
        if (cli_parse_kv(v, &kl, &val)) {
            char why[160];
            snprintf(why, sizeof(why), "--option wants KEY=VALUE, not \"%s\"", v);
            usage_error(why);
            return -1;
        }
        (*n)++;
    }
    return 0;
}

static bool
valid_tls(const char *t)
{
    return !strcmp(t, "starttls") || !strcmp(t, "tls") || !strcmp(t, "none");
}

/* ---- commands ------------------------------------------------------------ */

static int
cmd_register(struct imf *c)
{
    struct cl_enc e;
    uint64_t id = req_begin(c, &e, "register", 2);
    char text[300];

    cl_pack_kstr(&e, "user", c->user);
    cl_pack_kstr(&e, "password", c->password);
    snprintf(text, sizeof(text), "user %s registered", c->user);
    return req_simple(c, &e, id, text);
}

/* link --wait: follow the account's events until a final state. */
static int
wait_online(struct imf *c, uint64_t account, int wait_ms)
{
    int64_t deadline = cli_mono_ms() + wait_ms;
    char last[64] = "none";

    for (;;) {
        int64_t left = deadline - cli_mono_ms();
        struct cli_frame *ev;
        int rc = cli_event(&c->conn, &ev, left > 0 ? (int)left : 0);
        if (rc == -ETIMEDOUT) {
            fprintf(stderr, "%s: account %llu not online after %d s (last state: %s)\n", prog,
                    (unsigned long long)account, wait_ms / 1000, last);
            return CLI_EXIT_WAIT;
        }
        if (rc) {
            fprintf(stderr, "%s: %s: %s\n", prog, c->server, cli_io_strerror(rc));
            return CLI_EXIT_CONN;
        }
        const msgpack_object *root = &ev->msg.root;
        uint64_t acc;
        struct im_str state = { "", 0 }, detail = { "", 0 };
        const char *why;
        bool mine = cl_view_eq(ev->msg.op, "account") &&
                    cl_get_uint(root, "account", &acc, &why) == 0 && acc == account &&
                    cl_get_str(root, "state", 1, 64, &state, &why) == 0;
        if (c->events || (mine && c->json))
            print_event(c, ev);
        if (!mine) {
            cli_frame_free(ev);
            continue;
        }
        cl_get_str(root, "detail", 0, UINT32_MAX, &detail, &why);
        snprintf(last, sizeof(last), "%.*s", (int)state.len, state.p);
        if (!c->json)
            fprintf(stderr, "account %llu: %s%s%.*s\n", (unsigned long long)account, last,
                    detail.len ? ": " : "", (int)detail.len, detail.p);
        rc = -1;
        if (cl_view_eq(state, "online"))
            rc = CLI_EXIT_OK;
        else if (cl_view_eq(state, "auth_failed") || cl_view_eq(state, "error")) {
            fprintf(stderr, "%s: account %llu %s%s%.*s\n", prog, (unsigned long long)account, last,
                    detail.len ? ": " : "", (int)detail.len, detail.p);
            rc = CLI_EXIT_ERROR;
        }
        cli_frame_free(ev);
        if (rc >= 0)
            return rc;
    }
}

static int
cmd_link(struct imf *c)
{
    const char *network = c->a.pos[1], *login = c->a.pos[2], *server = c->a.pos[3];
    const char *tls = cli_opt(&c->a, "--tls");
    const char *name = cli_opt(&c->a, "--name");
    const char *wait = cli_opt(&c->a, "--wait");
    struct cli_frame *r;
    struct cl_enc e;
    uint32_t nopt;
    uint64_t id, account;
    int wait_ms = 0, rc;

    if (!tls)
        tls = strcmp(network, "xmpp") ? "none" : "starttls";
    if (!valid_tls(tls))
        return usage_error("--tls must be starttls, tls or none");
    if (wait && cli_parse_seconds(wait, &wait_ms))
        return usage_error("--wait wants SECONDS (up to one day)");
    if (count_options(c, &nopt))
        return CLI_EXIT_USAGE;
    id = req_begin(c, &e, "link", 5 + (name != NULL) + (nopt > 0));
    cl_pack_kstr(&e, "network", network);
    cl_pack_kstr(&e, "login", login);
    cl_pack_kstr(&e, "password", c->link_password);
    cl_pack_kstr(&e, "server", server);
    cl_pack_kstr(&e, "tls", tls);
    if (name)
        cl_pack_kstr(&e, "name", name);
    if (nopt)
        pack_options(c, &e, nopt);
    im_wipe(c->link_password, sizeof(c->link_password));
    rc = req_call(c, &e, id, &r);
    if (rc)
        return rc;
    const char *why;
    if (cl_get_uint(&r->msg.root, "account", &account, &why)) {
        cli_frame_free(r);
        return fail("internal", "the link reply carries no account id");
    }
    if (c->json)
        cli_print_fields_json(stdout, &r->msg.root);
    else
        printf("%llu\n", (unsigned long long)account);
    fflush(stdout);
    cli_frame_free(r);
    return wait ? wait_online(c, account, wait_ms) : 0;
}

static int
cmd_unlink(struct imf *c)
{
    struct cl_enc e;
    uint64_t account, id;
    char text[64];
    int rc = get_uint_arg(c->a.pos[1], "ACCOUNT", &account);

    if (rc)
        return rc;
    id = req_begin(c, &e, "unlink", 1);
    cl_pack_kuint(&e, "account", account);
    snprintf(text, sizeof(text), "account %llu unlinked", (unsigned long long)account);
    return req_simple(c, &e, id, text);
}

static int
cmd_update(struct imf *c)
{
    const char *server = cli_opt(&c->a, "--server"), *tls = cli_opt(&c->a, "--tls");
    bool pw = cli_opt(&c->a, "--password") != NULL;
    struct cl_enc e;
    uint64_t account, id;
    uint32_t nopt;
    char text[64];
    int rc = get_uint_arg(c->a.pos[1], "ACCOUNT", &account);

    if (rc)
        return rc;
    if (tls && !valid_tls(tls))
        return usage_error("--tls must be starttls, tls or none");
    if (count_options(c, &nopt))
        return CLI_EXIT_USAGE;
    id = req_begin(c, &e, "update_account", 1 + pw + (server != NULL) + (tls != NULL) + (nopt > 0));
    cl_pack_kuint(&e, "account", account);
    if (pw)
        cl_pack_kstr(&e, "password", c->link_password);
    if (server)
        cl_pack_kstr(&e, "server", server);
    if (tls)
        cl_pack_kstr(&e, "tls", tls);
    if (nopt)
        pack_options(c, &e, nopt);
    im_wipe(c->link_password, sizeof(c->link_password));
    snprintf(text, sizeof(text), "account %llu updated", (unsigned long long)account);
    return req_simple(c, &e, id, text);
}

/* A request without fields whose ok carries the list `key`, shown as a table. */
static int
list_cmd(struct imf *c, const char *op, const char *key, const struct cli_col *cols, size_t n)
{
    struct cli_frame *r;
    struct cl_enc e;
    uint64_t id = req_begin(c, &e, op, 0);
    int rc = req_call(c, &e, id, &r);

    if (rc)
        return rc;
    if (c->json) {
        cli_print_fields_json(stdout, &r->msg.root);
    } else {
        char *t = cli_table_format(cli_map_get(&r->msg.root, key), cols, n);
        if (t)
            fputs(t, stdout);
        else
            rc = fail("internal", "the reply carries no list");
        free(t);
    }
    cli_frame_free(r);
    return rc;
}

static int
cmd_accounts(struct imf *c)
{
    static const struct cli_col cols[] = {
        { "account", "ACCOUNT", CLI_COL_TEXT }, { "network", "NETWORK", CLI_COL_TEXT },
        { "login", "LOGIN", CLI_COL_TEXT }, { "server", "SERVER", CLI_COL_TEXT },
        { "tls", "TLS", CLI_COL_TEXT }, { "name", "NAME", CLI_COL_TEXT },
        { "state", "STATE", CLI_COL_TEXT }, { "detail", "DETAIL", CLI_COL_TEXT },
    };
    return list_cmd(c, "accounts", "accounts", cols, IM_ARRAY_SIZE(cols));
}

static int
cmd_contacts(struct imf *c)
{
    static const struct cli_col cols[] = {
        { "account", "ACCOUNT", CLI_COL_TEXT }, { "network", "NETWORK", CLI_COL_TEXT },
        { "address", "ADDRESS", CLI_COL_TEXT }, { "name", "NAME", CLI_COL_TEXT },
        { "presence", "PRESENCE", CLI_COL_TEXT }, { "groups", "GROUPS", CLI_COL_TEXT },
    };
    return list_cmd(c, "contacts", "contacts", cols, IM_ARRAY_SIZE(cols));
}

static int
cmd_unified(struct imf *c)
{
    static const struct cli_col cols[] = {
        { "id", "ID", CLI_COL_TEXT }, { "name", "NAME", CLI_COL_TEXT },
        { "prefer", "PREFER", CLI_COL_TEXT }, { "members", "MEMBERS", CLI_COL_MEMBERS },
    };
    return list_cmd(c, "unified", "contacts", cols, IM_ARRAY_SIZE(cols));
}

static int
contact_cmd(struct imf *c, const char *op, bool add)
{
    const char *address = c->a.pos[2];
    const char *name = add && c->a.npos > 3 ? c->a.pos[3] : NULL;
    struct cl_enc e;
    uint64_t account, id;
    char text[600];
    int rc = get_uint_arg(c->a.pos[1], "ACCOUNT", &account);

    if (rc)
        return rc;
    id = req_begin(c, &e, op, 2 + (name != NULL));
    cl_pack_kuint(&e, "account", account);
    cl_pack_kstr(&e, "address", address);
    if (name)
        cl_pack_kstr(&e, "name", name);
    snprintf(text, sizeof(text), "contact %s %s account %llu", address, add ? "added to" : "removed from",
             (unsigned long long)account);
    return req_simple(c, &e, id, text);
}

static int
cmd_add_contact(struct imf *c)
{
    return contact_cmd(c, "add_contact", true);
}

static int
cmd_remove_contact(struct imf *c)
{
    return contact_cmd(c, "remove_contact", false);
}

/* ---- unified list editing ------------------------------------------------ */

struct imf_member {
    uint64_t account;
    const char *address;
};

/* Fetch the stored unified list: *reply owns it, *list is its contacts array. */
static int
fetch_unified(struct imf *c, struct cli_frame **reply, const msgpack_object **list)
{
    struct cl_enc e;
    uint64_t id = req_begin(c, &e, "unified", 0);
    int rc = req_call(c, &e, id, reply);

    if (rc)
        return rc;
    *list = cli_map_get(&(*reply)->msg.root, "contacts");
    if (!*list || (*list)->type != MSGPACK_OBJECT_ARRAY) {
        cli_frame_free(*reply);
        return fail("internal", "the unified reply carries no contact list");
    }
    return 0;
}

static bool
obj_uint(const msgpack_object *o, uint64_t *v)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *v = o->via.u64;
    return true;
}

static bool
obj_str_eq(const msgpack_object *o, const char *s)
{
    return o && cl_str_eq(o, s);
}

/* Is the {account, address} member object one of set[0..n)? */
static bool
member_in(const msgpack_object *m, const struct imf_member *set, size_t n)
{
    uint64_t acc;

    if (!obj_uint(cli_map_get(m, "account"), &acc))
        return false;
    for (size_t i = 0; i < n; i++)
        if (set[i].account == acc && obj_str_eq(cli_map_get(m, "address"), set[i].address))
            return true;
    return false;
}

/* Members of contact k that are not in set (its own remaining members). */
static uint32_t
kept_members(const msgpack_object *k, const struct imf_member *set, size_t n)
{
    const msgpack_object *ms = cli_map_get(k, "members");
    uint32_t kept = 0;

    if (!ms || ms->type != MSGPACK_OBJECT_ARRAY)
        return 0;
    for (uint32_t i = 0; i < ms->via.array.size; i++)
        if (!member_in(&ms->via.array.ptr[i], set, n))
            kept++;
    return kept;
}

/* Does contact k keep a member of account acc once set is taken out? */
static bool
keeps_account(const msgpack_object *k, uint64_t acc, const struct imf_member *set, size_t n)
{
    const msgpack_object *ms = cli_map_get(k, "members");
    uint64_t a;

    for (uint32_t i = 0; ms && ms->type == MSGPACK_OBJECT_ARRAY && i < ms->via.array.size; i++)
        if (!member_in(&ms->via.array.ptr[i], set, n) &&
            obj_uint(cli_map_get(&ms->via.array.ptr[i], "account"), &a) && a == acc)
            return true;
    return false;
}

/*
 * Pack an existing unified contact with the members in set taken out (they
 * move to another contact); its prefer is dropped when it no longer names a
 * remaining member.  Other fields are copied as stored.
 */
static void
pack_contact_without(struct cl_enc *e, const msgpack_object *k, const struct imf_member *set,
                     size_t n)
{
    uint64_t prefer;
    bool drop_prefer = obj_uint(cli_map_get(k, "prefer"), &prefer) &&
                       !keeps_account(k, prefer, set, n);
    uint32_t fields = k->via.map.size - drop_prefer;

    msgpack_pack_map(&e->pk, fields);
    for (uint32_t i = 0; i < k->via.map.size; i++) {
        const msgpack_object_kv *kv = &k->via.map.ptr[i];
        if (cl_str_eq(&kv->key, "prefer") && drop_prefer)
            continue;
        msgpack_pack_object(&e->pk, kv->key);
        if (cl_str_eq(&kv->key, "members") && kv->val.type == MSGPACK_OBJECT_ARRAY) {
            msgpack_pack_array(&e->pk, kept_members(k, set, n));
            for (uint32_t j = 0; j < kv->val.via.array.size; j++)
                if (!member_in(&kv->val.via.array.ptr[j], set, n))
                    msgpack_pack_object(&e->pk, kv->val.via.array.ptr[j]);
        } else {
            msgpack_pack_object(&e->pk, kv->val);
        }
    }
}

static void
pack_new_contact(struct cl_enc *e, bool has_id, uint64_t id, const char *name,
                 const struct imf_member *set, size_t n, bool has_prefer, uint64_t prefer)
{
    msgpack_pack_map(&e->pk, 2 + has_id + has_prefer);
    if (has_id)
        cl_pack_kuint(e, "id", id);
    cl_pack_kstr(e, "name", name);
    cl_pack_key(e, "members");
    msgpack_pack_array(&e->pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_map(&e->pk, 2);
        cl_pack_kuint(e, "account", set[i].account);
        cl_pack_kstr(e, "address", set[i].address);
    }
    if (has_prefer)
        cl_pack_kuint(e, "prefer", prefer);
}

/* set_unified with what the caller packed into e; *reply owns the ok. */
static int
store_unified(struct imf *c, struct cl_enc *e, uint64_t id, struct cli_frame **reply)
{
    return req_call(c, e, id, reply);
}

static int
cmd_merge(struct imf *c)
{
    const char *name = c->a.pos[1];
    const char *s_prefer = cli_opt(&c->a, "--prefer"), *s_id = cli_opt(&c->a, "--id");
    size_t n = (size_t)c->a.npos - 2;
    struct imf_member *set = calloc(n, sizeof(*set));
    struct cli_frame *cur = NULL, *r = NULL;
    const msgpack_object *list;
    uint64_t prefer = 0, want_id = 0, id, new_id;
    struct cl_enc e;
    int rc = CLI_EXIT_USAGE;

    if (!set)
        return fail("internal", "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (cli_parse_member(c->a.pos[2 + i], &set[i].account, &set[i].address)) {
            char why[300];
            snprintf(why, sizeof(why), "member \"%s\" is not ACCOUNT:ADDRESS", c->a.pos[2 + i]);
            rc = usage_error(why);
            goto done;
        }
    }
    if (s_prefer) {
        bool found = false;
        if ((rc = get_uint_arg(s_prefer, "--prefer", &prefer)))
            goto done;
        for (size_t i = 0; i < n; i++)
            found |= set[i].account == prefer;
        if (!found) {
            rc = usage_error("--prefer must be the ACCOUNT of one of the members");
            goto done;
        }
    }
    if (s_id && (rc = get_uint_arg(s_id, "--id", &want_id)))
        goto done;
    rc = fetch_unified(c, &cur, &list);
    if (rc)
        goto done;

    /* Which stored contact this replaces: the one with --id, else the same name. */
    uint32_t nk = list->via.array.size, target = UINT32_MAX, kept = 0, pos = 0;
    for (uint32_t i = 0; i < nk && target == UINT32_MAX; i++) {
        const msgpack_object *k = &list->via.array.ptr[i];
        uint64_t kid;
        if (s_id ? obj_uint(cli_map_get(k, "id"), &kid) && kid == want_id
                 : obj_str_eq(cli_map_get(k, "name"), name))
            target = i;
    }
    /* Other contacts that lose every member to this one are dropped. */
    bool *drop = calloc(nk ? nk : 1, sizeof(*drop));
    if (!drop) {
        rc = fail("internal", "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < nk; i++) {
        const msgpack_object *k = &list->via.array.ptr[i];
        const msgpack_object *ms = cli_map_get(k, "members");
        uint32_t had = ms && ms->type == MSGPACK_OBJECT_ARRAY ? ms->via.array.size : 0;
        if (i != target && had > 0 && kept_members(k, set, n) == 0) {
            char *kn = cli_obj_text(cli_map_get(k, "name"));
            char *ki = cli_obj_text(cli_map_get(k, "id"));
            drop[i] = true;
            fprintf(stderr, "%s: note: unified contact %s (%s) loses its last member and is removed\n",
                    prog, ki ? ki : "?", kn ? kn : "?");
            free(kn);
            free(ki);
        }
        kept += !drop[i];
    }
    if (target == UINT32_MAX)
        kept++;
    id = req_begin(c, &e, "set_unified", 1);
    cl_pack_key(&e, "contacts");
    msgpack_pack_array(&e.pk, kept);
    for (uint32_t i = 0, out = 0; i < nk; i++) {
        const msgpack_object *k = &list->via.array.ptr[i];
        if (drop[i])
            continue;
        if (i == target) {
            uint64_t kid = 0;
            bool has = obj_uint(cli_map_get(k, "id"), &kid);
            pack_new_contact(&e, has, kid, name, set, n, s_prefer != NULL, prefer);
            pos = out;
        } else {
            pack_contact_without(&e, k, set, n);
        }
        out++;
    }
    if (target == UINT32_MAX) {
        pack_new_contact(&e, s_id != NULL, want_id, name, set, n, s_prefer != NULL, prefer);
        pos = kept - 1;
    }
    free(drop);
    rc = store_unified(c, &e, id, &r);
    if (rc)
        goto done;
    list = cli_map_get(&r->msg.root, "contacts");
    if (!list || list->type != MSGPACK_OBJECT_ARRAY || pos >= list->via.array.size ||
        !obj_uint(cli_map_get(&list->via.array.ptr[pos], "id"), &new_id)) {
        rc = fail("internal", "the set_unified reply does not list the contact");
        goto done;
    }
    if (c->json)
        printf("{\"id\":%llu}\n", (unsigned long long)new_id);
    else
        printf("%llu\n", (unsigned long long)new_id);
done:
    cli_frame_free(cur);
    cli_frame_free(r);
    free(set);
    return rc;
}

static int
cmd_unmerge(struct imf *c)
{
    struct cli_frame *cur = NULL, *r = NULL;
    const msgpack_object *list;
    uint64_t want, id, kid;
    struct cl_enc e;
    uint32_t found = UINT32_MAX;
    char text[80];
    int rc = get_uint_arg(c->a.pos[1], "ID", &want);

    if (rc)
        return rc;
    rc = fetch_unified(c, &cur, &list);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < list->via.array.size; i++)
        if (obj_uint(cli_map_get(&list->via.array.ptr[i], "id"), &kid) && kid == want)
            found = i;
    if (found == UINT32_MAX) {
        snprintf(text, sizeof(text), "no unified contact %llu", (unsigned long long)want);
        rc = fail("not_found", text);
        goto done;
    }
    id = req_begin(c, &e, "set_unified", 1);
    cl_pack_key(&e, "contacts");
    msgpack_pack_array(&e.pk, list->via.array.size - 1);
    for (uint32_t i = 0; i < list->via.array.size; i++)
        if (i != found)
            msgpack_pack_object(&e.pk, list->via.array.ptr[i]);
    rc = store_unified(c, &e, id, &r);
    if (rc)
        goto done;
    if (c->json)
        cli_print_fields_json(stdout, &r->msg.root);
    else
        printf("unified contact %llu removed\n", (unsigned long long)want);
done:
    cli_frame_free(cur);
    cli_frame_free(r);
    return rc;
}

/* ---- send and listen ----------------------------------------------------- */

static int
cmd_send(struct imf *c)
{
    const char *cid = cli_opt(&c->a, "--cid");
    struct cli_target t;
    struct cli_frame *r = NULL;
    char *body = NULL;
    size_t blen = 0;
    struct cl_enc e;
    uint64_t id;
    int rc;

    if (cli_parse_target(c->a.pos[1], &t))
        return usage_error("TARGET is a unified contact id, a unified contact name or ACCOUNT:ADDRESS");
    if (cid && (!*cid || strlen(cid) > CL_CID_MAX))
        return usage_error("--cid must be 1 to 64 bytes");
    FILE *m = open_memstream(&body, &blen);
    if (!m)
        return fail("internal", "out of memory");
    for (int i = 2; i < c->a.npos; i++)
        fprintf(m, "%s%s", i > 2 ? " " : "", c->a.pos[i]);
    if (fclose(m))
        return fail("internal", "out of memory");

    if (t.kind == CLI_TARGET_NAME) {
        struct cli_frame *cur;
        const msgpack_object *list;
        bool found = false;
        rc = fetch_unified(c, &cur, &list);
        if (rc)
            goto done;
        for (uint32_t i = 0; i < list->via.array.size && !found; i++)
            if (obj_str_eq(cli_map_get(&list->via.array.ptr[i], "name"), t.text))
                found = obj_uint(cli_map_get(&list->via.array.ptr[i], "id"), &t.id);
        cli_frame_free(cur);
        if (!found) {
            char why[300];
            snprintf(why, sizeof(why), "no unified contact named \"%s\"", t.text);
            rc = fail("not_found", why);
            goto done;
        }
        t.kind = CLI_TARGET_ID;
    }
    id = req_begin(c, &e, "send", 2 + (cid != NULL));
    cl_pack_key(&e, "to");
    if (t.kind == CLI_TARGET_ID) {
        msgpack_pack_map(&e.pk, 1);
        cl_pack_kuint(&e, "contact", t.id);
    } else {
        msgpack_pack_map(&e.pk, 2);
        cl_pack_kuint(&e, "account", t.account);
        cl_pack_kstr(&e, "address", t.text);
    }
    cl_pack_kstrn(&e, "body", body, blen);
    if (cid)
        cl_pack_kstr(&e, "cid", cid);
    rc = req_call(c, &e, id, &r);
    if (rc)
        goto done;
    if (c->json) {
        cli_print_fields_json(stdout, &r->msg.root);
    } else {
        char *msg = cli_obj_text(cli_map_get(&r->msg.root, "msg"));
        char *acc = cli_obj_text(cli_map_get(&r->msg.root, "account"));
        char *net = cli_obj_text(cli_map_get(&r->msg.root, "network"));
        char *addr = cli_obj_text(cli_map_get(&r->msg.root, "address"));
        printf("sent msg %s via %s (%s) to %s\n", msg ? msg : "?", acc ? acc : "?",
               net ? net : "?", addr ? addr : "?");
        free(msg);
        free(acc);
        free(net);
        free(addr);
    }
done:
    cli_frame_free(r);
    free(body);
    return rc;
}

static int
ack(struct imf *c, uint64_t seq)
{
    struct cli_frame *r;
    struct cl_enc e;
    uint64_t id = req_begin(c, &e, "ack", 1);
    int rc;

    cl_pack_kuint(&e, "seq", seq);
    rc = req_call(c, &e, id, &r);
    if (rc == 0)
        cli_frame_free(r);
    return rc;
}

static int
cmd_listen(struct imf *c)
{
    const char *s_count = cli_opt(&c->a, "--count"), *s_timeout = cli_opt(&c->a, "--timeout");
    bool no_ack = cli_opt(&c->a, "--no-ack") != NULL;
    uint64_t count = 0, got = 0;
    int timeout_ms = -1, rc;

    if (s_count && (cli_parse_uint(s_count, &count) || count == 0))
        return usage_error("--count wants a number above 0");
    if (s_timeout && cli_parse_seconds(s_timeout, &timeout_ms))
        return usage_error("--timeout wants SECONDS (up to one day)");
    int64_t deadline = timeout_ms < 0 ? -1 : cli_mono_ms() + timeout_ms;
    while (!s_count || got < count) {
        int left = -1;
        if (deadline >= 0) {
            int64_t d = deadline - cli_mono_ms();
            left = d > 0 ? (int)d : 0;
        }
        struct cli_frame *ev;
        rc = cli_event(&c->conn, &ev, left);
        if (rc == -ETIMEDOUT)
            return s_count ? CLI_EXIT_WAIT : CLI_EXIT_OK;
        if (rc) {
            fprintf(stderr, "%s: %s: %s\n", prog, c->server, cli_io_strerror(rc));
            return CLI_EXIT_CONN;
        }
        bool msg = cl_view_eq(ev->msg.op, "message");
        if (msg || c->events)
            print_event(c, ev);
        if (msg) {
            uint64_t seq;
            const char *why;
            if (cl_get_uint(&ev->msg.root, "seq", &seq, &why)) {
                cli_frame_free(ev);
                return fail("internal", "a message event without seq");
            }
            if (!no_ack && (rc = ack(c, seq))) {
                cli_frame_free(ev);
                return rc;
            }
            got++;
        }
        cli_frame_free(ev);
    }
    return CLI_EXIT_OK;
}

/* raw JSON: the request as given (id added when absent), the reply as JSON. */
static int
cmd_raw(struct imf *c)
{
    const char *json = c->a.pos[1];
    struct cli_frame *r = NULL;
    struct cl_enc in, e;
    msgpack_zone zone;
    msgpack_object req;
    size_t off = 0;
    uint64_t id;
    int rc;

    cl_enc_init(&in);
    if (cl_json_parse(json, strlen(json), &in)) {
        cl_enc_free(&in);
        return usage_error("raw: not valid JSON");
    }
    msgpack_zone_init(&zone, 4096);
    if (msgpack_unpack(in.buf.data + 4, in.buf.size - 4, &off, &zone, &req) !=
            MSGPACK_UNPACK_SUCCESS || req.type != MSGPACK_OBJECT_MAP) {
        rc = usage_error("raw: the request must be a JSON object");
        goto done;
    }
    const msgpack_object *given = cli_map_get(&req, "id");
    id = cli_next_id(&c->conn);
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
    rc = cli_call(&c->conn, &e, id, &r, IMF_TIMEOUT_MS);
    cl_enc_free(&e);
    if (rc) {
        fprintf(stderr, "%s: %s: %s\n", prog, c->server, cli_io_strerror(rc));
        rc = CLI_EXIT_CONN;
        goto done;
    }
    cli_print_json(stdout, &r->msg.root);
    rc = cli_is_ok(&r->msg) ? CLI_EXIT_OK : CLI_EXIT_ERROR;
    cli_frame_free(r);
done:
    msgpack_zone_destroy(&zone);
    cl_enc_free(&in);
    return rc;
}

/* Does the raw request log in by itself (so no automatic login)? */
static bool
raw_logs_in(const char *json)
{
    struct cl_enc in;
    msgpack_zone zone;
    msgpack_object req;
    size_t off = 0;
    bool yes = false;

    cl_enc_init(&in);
    if (cl_json_parse(json, strlen(json), &in) == 0) {
        msgpack_zone_init(&zone, 1024);
        if (msgpack_unpack(in.buf.data + 4, in.buf.size - 4, &off, &zone, &req) ==
                MSGPACK_UNPACK_SUCCESS) {
            const msgpack_object *op = cli_map_get(&req, "op");
            yes = op && (cl_str_eq(op, "login") || cl_str_eq(op, "register"));
        }
        msgpack_zone_destroy(&zone);
    }
    cl_enc_free(&in);
    return yes;
}

static const struct imf_cmd imf_cmds[] = {
    { "register", 0, 0, false, cmd_register, "register" },
    { "link", 3, 3, true, cmd_link, "link NETWORK LOGIN SERVER [--tls T] [--name N] "
                                    "[--option K=V]... [--wait SECONDS]" },
    { "unlink", 1, 1, true, cmd_unlink, "unlink ACCOUNT" },
    { "update", 1, 1, true, cmd_update, "update ACCOUNT [--password] [--server S] [--tls T] "
                                        "[--option K=V]..." },
    { "accounts", 0, 0, true, cmd_accounts, "accounts" },
    { "contacts", 0, 0, true, cmd_contacts, "contacts" },
    { "add-contact", 2, 3, true, cmd_add_contact, "add-contact ACCOUNT ADDRESS [NAME]" },
    { "remove-contact", 2, 2, true, cmd_remove_contact, "remove-contact ACCOUNT ADDRESS" },
    { "unified", 0, 0, true, cmd_unified, "unified" },
    { "merge", 2, -1, true, cmd_merge, "merge NAME ACCOUNT:ADDRESS... [--prefer ACCOUNT] [--id ID]" },
    { "unmerge", 1, 1, true, cmd_unmerge, "unmerge ID" },
    { "send", 2, -1, true, cmd_send, "send TARGET BODY... [--cid CID]" },
    { "listen", 0, 0, true, cmd_listen, "listen [--count N] [--timeout SECONDS] [--no-ack] [--events]" },
    { "raw", 1, 1, true, cmd_raw, "raw JSON" },
};

/* The user's password: $IMFUSE_PASSWORD or a prompt.  0 or an exit code. */
static int
get_password(const char *env, const char *who, char *buf, size_t sz)
{
    const char *v = getenv(env);
    char prompt[300];
    int n;

    if (v) {
        if (strlen(v) >= sz)
            return fail("bad_request", "password too long");
        strcpy(buf, v);
        return 0;
    }
    snprintf(prompt, sizeof(prompt), "Password for %s: ", who);
    n = cli_tty_password(prompt, buf, sz);
    if (n == -ENXIO) {
        fprintf(stderr, "%s: no terminal to ask for the password of %s: set %s\n", prog, who, env);
        return CLI_EXIT_USAGE;
    }
    if (n < 0) {
        fprintf(stderr, "%s: cannot read the password: %s\n", prog,
                n == -IM_ETOOBIG ? "too long" : strerror(-n));
        return CLI_EXIT_ERROR;
    }
    return 0;
}

static int
do_login(struct imf *c)
{
    struct cli_frame *r;
    struct cl_enc e;
    uint64_t id = req_begin(c, &e, "login", 3);
    int rc;

    cl_pack_kstr(&e, "user", c->user);
    cl_pack_kstr(&e, "password", c->password);
    cl_pack_kstr(&e, "device", IMF_DEVICE);
    rc = req_call(c, &e, id, &r);
    if (rc == 0)
        cli_frame_free(r);
    return rc;
}

int
main(int argc, char **argv)
{
    static struct imf c;        /* static: the password buffers stay off the stack */
    const struct imf_cmd *cmd = NULL;
    char why[300];
    int rc;

    cli_conn_init(&c.conn);
    if (cli_args_parse(&c.a, argc, argv, global_opts, cmd_opts, why, sizeof(why)))
        return usage_error(why);
    if (cli_opt(&c.a, "-h") || cli_opt(&c.a, "--help")) {
        usage(stdout);
        rc = 0;
        goto out;
    }
    c.json = cli_opt(&c.a, "--json") != NULL;
    c.events = cli_opt(&c.a, "--events") != NULL;
    c.user = cli_opt(&c.a, "-u") ? cli_opt(&c.a, "-u") : cli_opt(&c.a, "--user");
    c.server = cli_opt(&c.a, "-S");
    if (!c.server)
        c.server = getenv("IMFUSE_SERVER");
    if (!c.server || !*c.server)
        c.server = IMF_DEFAULT_SERVER;
    if (c.a.npos == 0) {
        rc = usage_error("no command given");
        goto out;
    }
    for (size_t i = 0; i < IM_ARRAY_SIZE(imf_cmds); i++)
        if (!strcmp(imf_cmds[i].name, c.a.pos[0]))
            cmd = &imf_cmds[i];
    if (!cmd) {
        snprintf(why, sizeof(why), "unknown command %s", c.a.pos[0]);
        rc = usage_error(why);
        goto out;
    }
    int nargs = c.a.npos - 1;
    if (nargs < cmd->min_args || (cmd->max_args >= 0 && nargs > cmd->max_args)) {
        snprintf(why, sizeof(why), "usage: imfuse %s", cmd->usage);
        rc = usage_error(why);
        goto out;
    }
    bool login = cmd->login;
    if (cmd->run == cmd_raw && (raw_logs_in(c.a.pos[1]) || !c.user))
        login = false;
    if ((login || cmd->run == cmd_register) && (!c.user || !*c.user)) {
        rc = usage_error("-u USER is required");
        goto out;
    }
    /* Every password is read before connecting: prompts do not eat timeouts. */
    if ((login || cmd->run == cmd_register) &&
        (rc = get_password("IMFUSE_PASSWORD", c.user, c.password, sizeof(c.password))))
        goto out;
    if (cmd->run == cmd_link || (cmd->run == cmd_update && cli_opt(&c.a, "--password"))) {
        char who[64];
        if (cmd->run == cmd_link)
            snprintf(who, sizeof(who), "%.60s", c.a.pos[2]);
        else
            snprintf(who, sizeof(who), "account %.40s", c.a.pos[1]);
        if ((rc = get_password("IMFUSE_LINK_PASSWORD", who, c.link_password,
                               sizeof(c.link_password))))
            goto out;
    }
    rc = cli_connect_tcp(&c.conn, c.server, IMF_TIMEOUT_MS, why, sizeof(why));
    if (rc) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, c.server, why);
        rc = CLI_EXIT_CONN;
        goto out;
    }
    if (login) {
        rc = do_login(&c);
        im_wipe(c.password, sizeof(c.password));
        if (rc)
            goto out;
    }
    rc = cmd->run(&c);
    if (cmd->run != cmd_listen)
        flush_events(&c);
out:
    im_wipe(c.password, sizeof(c.password));
    im_wipe(c.link_password, sizeof(c.link_password));
    fflush(stdout);
    cli_conn_close(&c.conn);
    cli_args_free(&c.a);
    return rc;
}
