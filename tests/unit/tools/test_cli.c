/*
 * test_cli.c - the shared code of imfuse and imfusectl: argument and target
 * parsing, table formatting, JSON output, and the request/reply connection
 * against a scripted peer on a socketpair (interleaved events, partial
 * reads, oversize frames, timeouts, a closed peer).
 */
#include "t.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The tools are programs, not a library: compile their shared code in. */
#include "../../../tools/cli_common.c"

/* ---- helpers ------------------------------------------------------------- */

/* Decode the frame finished in e into m (the caller frees m). */
static void
decode_enc(struct cl_enc *e, struct cl_msg *m)
{
    size_t len;
    const uint8_t *p = cl_enc_finish(e, &len);
    if (!p || cl_msg_decode(m, p + 4, (uint32_t)(len - 4)))
        abort();
}

/* Build a map object from JSON text (through cl_json_parse). */
static void
json_msg(const char *json, struct cl_msg *m)
{
    struct cl_enc e;
    cl_enc_init(&e);
    if (cl_json_parse(json, strlen(json), &e))
        abort();
    decode_enc(&e, m);
    cl_enc_free(&e);
}

/* The finished frame bytes for a JSON object. */
static uint8_t *
json_frame(const char *json, size_t *len)
{
    struct cl_enc e;
    cl_enc_init(&e);
    if (cl_json_parse(json, strlen(json), &e))
        abort();
    uint8_t *p = cl_enc_release(&e, len);
    cl_enc_free(&e);
    return p;
}

static void
put(int fd, const char *json)
{
    size_t len;
    uint8_t *p = json_frame(json, &len);
    if (write(fd, p, len) != (ssize_t)len)
        abort();
    free(p);
}

static void
pair(struct cli_conn *c, int *peer)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        abort();
    cli_conn_init(c);
    c->fd = sv[0];
    set_nonblock(sv[0]);
    *peer = sv[1];
}

static struct cl_enc *
request(struct cli_conn *c, struct cl_enc *e, const char *op, uint64_t *id)
{
    *id = cli_next_id(c);
    cl_enc_init(e);
    msgpack_pack_map(&e->pk, 2);
    cl_pack_kstr(e, "op", op);
    cl_pack_kuint(e, "id", *id);
    return e;
}

static char *
json_of(const msgpack_object *o)
{
    char *out = NULL;
    size_t len;
    if (cl_json_write(o, &out, &len))
        return NULL;
    return out;
}

/* ---- argument parsing ---------------------------------------------------- */

static const struct cli_optspec t_global[] = {
    { "-u", true }, { "--json", false }, { NULL, false },
};
static const struct cli_optspec t_link[] = {
    { "--tls", true }, { "--option", true }, { "--wait", true }, { NULL, false },
};

static const struct cli_optspec *
t_cmdopts(const char *cmd)
{
    return strcmp(cmd, "link") ? NULL : t_link;
}

T_TEST(args_global_and_command_options)
{
    char *argv[] = { "imfuse", "-u", "alice", "link", "xmpp", "--tls=tls", "a@b", "--json",
                     "--option", "k=v", "--option", "x=y", "127.0.0.1:5222", NULL };
    struct cli_args a;
    char why[128];
    int it = 0;

    T_EQ_INT(cli_args_parse(&a, 13, argv, t_global, t_cmdopts, why, sizeof(why)), 0);
    T_EQ_INT(a.npos, 4);
    T_EQ_STR(a.pos[0], "link");
    T_EQ_STR(a.pos[2], "a@b");
    T_EQ_STR(a.pos[3], "127.0.0.1:5222");
    T_EQ_STR(cli_opt(&a, "-u"), "alice");
    T_EQ_STR(cli_opt(&a, "--json"), "");
    T_EQ_STR(cli_opt(&a, "--tls"), "tls");
    T_ASSERT(cli_opt(&a, "--wait") == NULL);
    T_EQ_STR(cli_opt_next(&a, "--option", &it), "k=v");
    T_EQ_STR(cli_opt_next(&a, "--option", &it), "x=y");
    T_ASSERT(cli_opt_next(&a, "--option", &it) == NULL);
    cli_args_free(&a);
}

T_TEST(args_errors)
{
    char *before[] = { "imfuse", "--tls", "tls", "link", NULL };   /* command option too early */
    char *missing[] = { "imfuse", "link", "--wait", NULL };
    char *flagval[] = { "imfuse", "--json=1", "link", NULL };
    struct cli_args a;
    char why[128];

    T_EQ_INT(cli_args_parse(&a, 4, before, t_global, t_cmdopts, why, sizeof(why)), -IM_EINVAL);
    T_EQ_STR(why, "unknown option --tls");
    T_EQ_INT(cli_args_parse(&a, 3, missing, t_global, t_cmdopts, why, sizeof(why)), -IM_EINVAL);
    T_EQ_STR(why, "option --wait needs a value");
    T_EQ_INT(cli_args_parse(&a, 3, flagval, t_global, t_cmdopts, why, sizeof(why)), -IM_EINVAL);
    T_EQ_STR(why, "option --json takes no value");
}

T_TEST(args_double_dash_and_dash)
{
    char *argv[] = { "imfuse", "send", "3", "--", "--json", "-", "-u", NULL };
    struct cli_args a;
    char why[128];

    T_EQ_INT(cli_args_parse(&a, 7, argv, t_global, t_cmdopts, why, sizeof(why)), 0);
    T_EQ_INT(a.npos, 5);
    T_EQ_STR(a.pos[2], "--json");
    T_EQ_STR(a.pos[3], "-");
    T_EQ_STR(a.pos[4], "-u");
    T_ASSERT(cli_opt(&a, "--json") == NULL);
    cli_args_free(&a);
}

T_TEST(numbers)
{
    uint64_t v;
    int ms;

    T_EQ_INT(cli_parse_uint("0", &v), 0);
    T_EQ_UINT(v, 0);
    T_EQ_INT(cli_parse_uint("18446744073709551615", &v), 0);
    T_EQ_UINT(v, UINT64_MAX);
    T_EQ_INT(cli_parse_uint("18446744073709551616", &v), -IM_EINVAL);
    T_EQ_INT(cli_parse_uint("", &v), -IM_EINVAL);
    T_EQ_INT(cli_parse_uint("-1", &v), -IM_EINVAL);
    T_EQ_INT(cli_parse_uint("12a", &v), -IM_EINVAL);

    T_EQ_INT(cli_parse_seconds("15", &ms), 0);
    T_EQ_INT(ms, 15000);
    T_EQ_INT(cli_parse_seconds("0.25", &ms), 0);
    T_EQ_INT(ms, 250);
    T_EQ_INT(cli_parse_seconds("1.0005", &ms), 0);
    T_EQ_INT(ms, 1000);
    T_EQ_INT(cli_parse_seconds("0", &ms), -IM_EINVAL);
    T_EQ_INT(cli_parse_seconds("1.", &ms), -IM_EINVAL);
    T_EQ_INT(cli_parse_seconds(".5", &ms), -IM_EINVAL);
    T_EQ_INT(cli_parse_seconds("86401", &ms), -IM_EINVAL);
    T_EQ_INT(cli_parse_seconds("5s", &ms), -IM_EINVAL);
}

T_TEST(members_options_hostport)
{
    uint64_t acc;
    const char *addr, *val;
    size_t kl;

    T_EQ_INT(cli_parse_member("3:sip:alice@sip.test", &acc, &addr), 0);
    T_EQ_UINT(acc, 3);
    T_EQ_STR(addr, "sip:alice@sip.test");
    T_EQ_INT(cli_parse_member("3:", &acc, &addr), -IM_EINVAL);
    T_EQ_INT(cli_parse_member(":bob", &acc, &addr), -IM_EINVAL);
    T_EQ_INT(cli_parse_member("x:bob", &acc, &addr), -IM_EINVAL);
    T_EQ_INT(cli_parse_member("bob", &acc, &addr), -IM_EINVAL);

    T_EQ_INT(cli_parse_kv("tls_name=a.test=x", &kl, &val), 0);
    T_EQ_INT(kl, 8);
    T_EQ_STR(val, "a.test=x");
    T_EQ_INT(cli_parse_kv("k=", &kl, &val), 0);
    T_EQ_STR(val, "");
    T_EQ_INT(cli_parse_kv("=v", &kl, &val), -IM_EINVAL);
    T_EQ_INT(cli_parse_kv("novalue", &kl, &val), -IM_EINVAL);

    /* Server addresses go through the kit's one parser (im_parse_hostport,
     * tested in tests/unit/common): refused before any lookup. */
    struct cli_conn c;
    char why[128];
    cli_conn_init(&c);
    T_EQ_INT(cli_connect_tcp(&c, "::1:7700", 100, why, sizeof(why)), -IM_EINVAL);
    T_EQ_STR(why, "bad server address ::1:7700 (want HOST:PORT)");
    T_EQ_INT(cli_connect_tcp(&c, "host:65536", 100, why, sizeof(why)), -IM_EINVAL);
    T_EQ_INT(cli_connect_tcp(&c, "host:", 100, why, sizeof(why)), -IM_EINVAL);
    cli_conn_close(&c);
}

T_TEST(targets)
{
    struct cli_target t;

    T_EQ_INT(cli_parse_target("42", &t), 0);
    T_EQ_INT(t.kind, CLI_TARGET_ID);
    T_EQ_UINT(t.id, 42);
    T_EQ_INT(cli_parse_target("7:bob@b.test", &t), 0);
    T_EQ_INT(t.kind, CLI_TARGET_MEMBER);
    T_EQ_UINT(t.account, 7);
    T_EQ_STR(t.text, "bob@b.test");
    T_EQ_INT(cli_parse_target("Alice Liddell", &t), 0);
    T_EQ_INT(t.kind, CLI_TARGET_NAME);
    T_EQ_STR(t.text, "Alice Liddell");
    T_EQ_INT(cli_parse_target("bob:work", &t), 0);            /* not digits before ':' */
    T_EQ_INT(t.kind, CLI_TARGET_NAME);
    T_EQ_INT(cli_parse_target("7:", &t), -IM_EINVAL);
    T_EQ_INT(cli_parse_target("", &t), -IM_EINVAL);
    T_EQ_INT(cli_parse_target("99999999999999999999", &t), -IM_EINVAL);
}

/* ---- output -------------------------------------------------------------- */

T_TEST(table_format)
{
    static const struct cli_col cols[] = {
        { "account", "ACCOUNT", CLI_COL_TEXT }, { "address", "ADDRESS", CLI_COL_TEXT },
        { "groups", "GROUPS", CLI_COL_TEXT }, { "detail", "DETAIL", CLI_COL_TEXT },
    };
    struct cl_msg m;
    json_msg("{\"contacts\":[{\"account\":1,\"address\":\"bob@b.test\",\"groups\":[\"work\",\"ski\"]},"
             "{\"account\":12,\"address\":\"x\",\"groups\":[],\"detail\":\"tab\\there\"},"
             "{\"address\":\"zoë@z\"},7]}", &m);
    char *t = cli_table_format(cli_map_get(&m.root, "contacts"), cols, 4);
    T_ASSERT(t != NULL);
    T_EQ_STR(t,
        "ACCOUNT  ADDRESS     GROUPS    DETAIL\n"
        "1        bob@b.test  work,ski\n"
        "12       x                     tab here\n"
        "         zoë@z\n"
        "\n");
    free(t);
    T_ASSERT(cli_table_format(cli_map_get(&m.root, "nothing"), cols, 4) == NULL);
    cl_msg_free(&m);
}

T_TEST(table_members_and_time)
{
    static const struct cli_col cols[] = {
        { "id", "ID", CLI_COL_TEXT }, { "members", "MEMBERS", CLI_COL_MEMBERS },
        { "since", "SINCE", CLI_COL_TIME_MS },
    };
    char when[32], expect[200];
    struct cl_msg m;

    json_msg("{\"l\":[{\"id\":5,\"members\":[{\"account\":1,\"address\":\"a@x\"},"
             "{\"account\":2,\"address\":\"sip:a@y\"}],\"since\":1700000000123}]}", &m);
    cli_time_text(1700000000123ull, when, sizeof(when));
    T_EQ_INT(strlen(when), 19);
    snprintf(expect, sizeof(expect), "ID  MEMBERS           SINCE\n5   1:a@x, 2:sip:a@y  %s\n", when);
    char *t = cli_table_format(cli_map_get(&m.root, "l"), cols, 3);
    T_EQ_STR(t, expect);
    free(t);
    cl_msg_free(&m);
}

T_TEST(obj_text)
{
    struct cl_msg m;
    json_msg("{\"a\":-5,\"b\":true,\"c\":null,\"d\":{\"x\":1},\"e\":[1,\"two\",[3]],\"f\":1.5}", &m);
    const char *keys[] = { "a", "b", "c", "d", "e", "f" };
    const char *want[] = { "-5", "true", "", "{\"x\":1}", "1,two,3", "1.5" };
    for (size_t i = 0; i < 6; i++) {
        char *s = cli_obj_text(cli_map_get(&m.root, keys[i]));
        T_EQ_STR(s, want[i]);
        free(s);
    }
    char *s = cli_obj_text(NULL);
    T_EQ_STR(s, "");
    free(s);
    cl_msg_free(&m);
}

T_TEST(fields_json_and_error_line)
{
    struct cl_msg m;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    json_msg("{\"op\":\"ok\",\"id\":4,\"users\":[{\"name\":\"al\"}],\"n\":1}", &m);
    T_EQ_INT(cli_print_fields_json(f, &m.root), 0);
    cl_msg_free(&m);
    json_msg("{\"op\":\"ok\",\"id\":4}", &m);
    T_EQ_INT(cli_print_fields_json(f, &m.root), 0);
    cl_msg_free(&m);
    json_msg("{\"op\":\"error\",\"id\":4,\"code\":\"not_found\",\"message\":\"no user bob\"}", &m);
    T_ASSERT(!cli_is_ok(&m));
    cli_print_error(f, "imfusectl", &m);
    cl_msg_free(&m);
    fclose(f);
    T_EQ_STR(buf, "{\"users\":[{\"name\":\"al\"}],\"n\":1}\n{}\nimfusectl: not_found: no user bob\n");
    free(buf);
}

/* ---- connection ---------------------------------------------------------- */

T_TEST(call_keeps_events_and_skips_other_replies)
{
    struct cli_conn c;
    struct cli_frame *r = NULL, *ev = NULL;
    struct cl_enc e;
    uint64_t id;
    int peer;

    pair(&c, &peer);
    request(&c, &e, "ping", &id);
    put(peer, "{\"op\":\"message\",\"seq\":1,\"body\":\"hi\"}");
    put(peer, "{\"op\":\"ok\",\"id\":99}");
    put(peer, "{\"op\":\"presence\",\"account\":1}");
    put(peer, "{\"op\":\"ok\",\"id\":1,\"user\":\"alice\"}");
    put(peer, "{\"op\":\"account\",\"account\":1,\"state\":\"online\"}");
    T_EQ_INT(cli_call(&c, &e, id, &r, 1000), 0);
    cl_enc_free(&e);
    T_ASSERT(cli_is_ok(&r->msg));
    T_EQ_UINT(r->msg.id, 1);
    cli_frame_free(r);

    /* The request went out whole. */
    uint8_t got[64];
    ssize_t n = read(peer, got, sizeof(got));
    T_ASSERT(n > 4);
    T_EQ_INT(((uint32_t)got[0] << 24 | got[1] << 16 | got[2] << 8 | got[3]), n - 4);

    const char *want[] = { "message", "presence", "account" };
    for (int i = 0; i < 3; i++) {
        T_EQ_INT(cli_event(&c, &ev, 1000), 0);
        T_ASSERT(cl_view_eq(ev->msg.op, want[i]));
        cli_frame_free(ev);
    }
    T_EQ_INT(cli_event(&c, &ev, 30), -ETIMEDOUT);
    close(peer);
    T_EQ_INT(cli_event(&c, &ev, 1000), -ECONNRESET);
    cli_conn_close(&c);
}

T_TEST(call_returns_fatal_error_without_id)
{
    struct cli_conn c;
    struct cli_frame *r = NULL;
    struct cl_enc e;
    uint64_t id;
    int peer;

    pair(&c, &peer);
    request(&c, &e, "login", &id);
    put(peer, "{\"op\":\"error\",\"code\":\"bad_request\",\"message\":\"bad frame\"}");
    T_EQ_INT(cli_call(&c, &e, id, &r, 1000), 0);
    cl_enc_free(&e);
    T_ASSERT(!cli_is_ok(&r->msg));
    T_ASSERT(!r->msg.has_id);
    char *j = json_of(&r->msg.root);
    T_EQ_STR(j, "{\"op\":\"error\",\"code\":\"bad_request\",\"message\":\"bad frame\"}");
    free(j);
    cli_frame_free(r);
    close(peer);
    cli_conn_close(&c);
}

T_TEST(partial_reads)
{
    struct cli_conn c;
    struct cli_frame *ev = NULL;
    int peer;

    pair(&c, &peer);
    pid_t pid = fork();
    T_ASSERT(pid >= 0);
    if (pid == 0) {
        size_t len;
        uint8_t *p = json_frame("{\"op\":\"message\",\"seq\":77,\"body\":\"split across reads\"}", &len);
        for (size_t i = 0; i < len; i++) {
            if (write(peer, p + i, 1) != 1)
                _exit(1);
            usleep(2000);
        }
        _exit(0);
    }
    T_EQ_INT(cli_event(&c, &ev, 5000), 0);
    uint64_t seq = 0;
    const char *why;
    T_EQ_INT(cl_get_uint(&ev->msg.root, "seq", &seq, &why), 0);
    T_EQ_UINT(seq, 77);
    cli_frame_free(ev);
    int st;
    waitpid(pid, &st, 0);
    T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(peer);
    cli_conn_close(&c);
}

T_TEST(oversize_and_garbage_frames)
{
    struct cli_conn c;
    struct cli_frame *ev = NULL;
    int peer;
    uint8_t big[4] = { 0x00, 0x10, 0x00, 0x01 };                 /* 1 MiB + 1 */
    uint8_t zero[4] = { 0, 0, 0, 0 };
    uint8_t notmap[5] = { 0, 0, 0, 1, 0x01 };                     /* the integer 1 */

    pair(&c, &peer);
    T_ASSERT(write(peer, big, 4) == 4);
    T_EQ_INT(cli_event(&c, &ev, 1000), -IM_ETOOBIG);
    close(peer);
    cli_conn_close(&c);

    pair(&c, &peer);
    T_ASSERT(write(peer, zero, 4) == 4);
    T_ASSERT(cli_event(&c, &ev, 1000) < 0);
    close(peer);
    cli_conn_close(&c);

    pair(&c, &peer);
    T_ASSERT(write(peer, notmap, 5) == 5);
    T_EQ_INT(cli_event(&c, &ev, 1000), -IM_EINVAL);
    close(peer);
    cli_conn_close(&c);
}

T_TEST(send_to_closed_peer)
{
    struct cli_conn c;
    struct cl_enc e;
    uint64_t id;
    int peer;

    pair(&c, &peer);
    close(peer);
    request(&c, &e, "ping", &id);
    T_EQ_INT(cli_send(&c, &e, 1000), -EPIPE);
    cl_enc_free(&e);
    cli_conn_close(&c);
}

T_TEST(unix_connect_refused)
{
    struct cli_conn c;
    cli_conn_init(&c);
    T_EQ_INT(cli_connect_unix(&c, "/nonexistent/imfuse-test.sock"), -ENOENT);
    char why[128];
    T_EQ_INT(cli_connect_tcp(&c, "localhost", 100, why, sizeof(why)), -IM_EINVAL);
}

T_TEST(read_line)
{
    int fds[2];
    char buf[8];

    T_ASSERT(pipe(fds) == 0);
    T_ASSERT(write(fds[1], "s3cret\r\nnext\n", 13) == 13);
    T_EQ_INT(cli_read_line(fds[0], buf, sizeof(buf)), 6);
    T_EQ_STR(buf, "s3cret");
    T_EQ_INT(cli_read_line(fds[0], buf, sizeof(buf)), 4);      /* the rest stays unread */
    T_EQ_STR(buf, "next");
    T_ASSERT(write(fds[1], "12345678\n", 9) == 9);
    T_EQ_INT(cli_read_line(fds[0], buf, sizeof(buf)), -IM_ETOOBIG);
    close(fds[1]);
    T_EQ_INT(cli_read_line(fds[0], buf, sizeof(buf)), 0);      /* EOF: empty */
    close(fds[0]);
}

T_MAIN(T_RUN(args_global_and_command_options), T_RUN(args_errors), T_RUN(args_double_dash_and_dash),
       T_RUN(numbers), T_RUN(members_options_hostport), T_RUN(targets), T_RUN(table_format),
       T_RUN(table_members_and_time), T_RUN(obj_text), T_RUN(fields_json_and_error_line),
       T_RUN(call_keeps_events_and_skips_other_replies), T_RUN(call_returns_fatal_error_without_id),
       T_RUN(partial_reads), T_RUN(oversize_and_garbage_frames), T_RUN(send_to_closed_peer),
       T_RUN(unix_connect_refused), T_RUN(read_line))
