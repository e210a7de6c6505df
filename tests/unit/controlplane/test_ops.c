/*
 * test_ops.c - the op table (protocols/client/cl_ops.c) against the two
 * planes that dispatch from it, the control command table against the
 * daemon, and the plane messages' payload helpers (dataplane/dp_msg.c).
 */
#include "t.h"

#include "client/cl_ctl.h"
#include "client/cl_frame.h"
#include "client/cl_ops.h"
#include "dp_msg.h"
#include "dp_relay_int.h"
#include "cp_int.h"

/* Every op is named, found by its name, and served by exactly the plane the
 * table gives it. */
T_TEST(op_table_matches_planes)
{
    for (unsigned i = 1; i < CL_OP__COUNT; i++) {
        const struct cl_op *op = &cl_ops[i];
        T_EQ_UINT(op->id, i);
        T_ASSERT(op->name && *op->name);
        T_ASSERT(op->path && *op->path);
        T_ASSERT(cl_op_find((struct im_str){ op->name, (uint32_t)strlen(op->name) }) == op);
        T_ASSERT(cl_op_get(i) == op);
        bool dp = dp_client_serves(op->id), cp = cp_client_serves(op->id);
        if (op->plane == CL_PLANE_DATA)
            T_ASSERT(dp && !cp);
        else
            T_ASSERT(cp && !dp);
    }
    T_ASSERT(!cl_op_find(IM_STR("nope")));
    T_ASSERT(!cl_op_find(IM_STR("pin")));
    T_ASSERT(!cl_op_find(IM_STR("pingg")));
    T_ASSERT(!cl_op_get(0));
    T_ASSERT(!cl_op_get(CL_OP__COUNT));
}

/* The rules the planes rely on. */
T_TEST(op_rules)
{
    T_EQ_INT(cl_op_find(IM_STR("ping"))->login, CL_LOGIN_ANY);
    T_EQ_INT(cl_op_find(IM_STR("login"))->login, CL_LOGIN_FORBIDDEN);
    T_EQ_INT(cl_op_find(IM_STR("register"))->login, CL_LOGIN_FORBIDDEN);
    T_ASSERT(cl_op_find(IM_STR("login"))->secret);
    T_ASSERT(cl_op_find(IM_STR("link"))->secret);
    T_ASSERT(!cl_op_find(IM_STR("send"))->secret);
    for (unsigned i = 1; i < CL_OP__COUNT; i++)
        T_EQ_INT(cl_ops[i].one_at_a_time, cl_ops[i].id == CL_OP_LOGIN || cl_ops[i].id == CL_OP_REGISTER);
    for (unsigned i = 1; i < CL_OP__COUNT; i++)
        if (cl_ops[i].id != CL_OP_PING && cl_ops[i].id != CL_OP_LOGIN && cl_ops[i].id != CL_OP_REGISTER)
            T_EQ_INT(cl_ops[i].login, CL_LOGIN_REQUIRED);
}

/* Every row the daemon serves has a handler, a LOCAL row is no op; the
 * argument lists are well formed (required positionals first, flags are
 * options, choices only on values), and the synopsis spells them. */
T_TEST(ctl_table)
{
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const struct cl_ctl_cmd *cmd = &cl_ctl_cmds[i];
        T_EQ_UINT(cmd->id, i);
        T_ASSERT(cmd->words && cmd->help);
        if (cmd->flags & CL_CTL_LOCAL) {
            T_ASSERT(!cmd->op);
            T_ASSERT(!cp_rpc_serves(cmd->id));
            continue;
        }
        T_ASSERT(cmd->op);
        T_ASSERT(cp_rpc_serves(cmd->id));
        T_ASSERT(cl_ctl_find((struct im_str){ cmd->op, (uint32_t)strlen(cmd->op) }) == cmd);
        bool optional_seen = false;
        for (unsigned k = 0; k < CL_CTL_ARGS_MAX && cmd->args[k].key; k++) {
            const struct cl_ctl_arg *a = &cmd->args[k];
            if (a->flags & CL_CTL_A_FLAG)
                T_ASSERT((a->flags & CL_CTL_A_OPTION) && !a->choices && !a->meta);
            else
                T_ASSERT(a->meta && *a->meta);
            if (!(a->flags & CL_CTL_A_OPTION)) {
                /* a required positional never follows an optional one */
                T_ASSERT(!optional_seen || (a->flags & CL_CTL_A_OPTIONAL));
                optional_seen |= (a->flags & CL_CTL_A_OPTIONAL) != 0;
            }
        }
        if (cmd->flags & CL_CTL_PASSWORD)
            T_ASSERT(cmd->args[0].key && !strcmp(cmd->args[0].key, "name"));
    }
    T_ASSERT(!cl_ctl_find(IM_STR("user")));
    T_ASSERT(!cl_ctl_find(IM_STR("top")));

    char syn[128];
    cl_ctl_synopsis(&cl_ctl_cmds[CL_CTL_ACCOUNTS], syn, sizeof(syn));
    T_EQ_STR(syn, "accounts [NAME] [--state S]");
    cl_ctl_synopsis(&cl_ctl_cmds[CL_CTL_TOP], syn, sizeof(syn));
    T_EQ_STR(syn, "top [--once] [--interval SECONDS]");
    cl_ctl_synopsis(&cl_ctl_cmds[CL_CTL_USER_ADD], syn, sizeof(syn));
    T_EQ_STR(syn, "user add NAME");
    T_ASSERT(cl_ctl_synopsis(&cl_ctl_cmds[CL_CTL_ACCOUNTS], syn, 10) > 10);   /* cut, NUL-terminated */
    T_EQ_STR(syn, "accounts ");

    const char *states = cl_ctl_cmds[CL_CTL_ACCOUNTS].args[1].choices;
    T_ASSERT(cl_ctl_choice_ok(states, "auth_failed", 11));
    T_ASSERT(cl_ctl_choice_ok(states, "online", 6));
    T_ASSERT(cl_ctl_choice_ok(states, "error", 5));
    T_ASSERT(!cl_ctl_choice_ok(states, "onlin", 5));
    T_ASSERT(!cl_ctl_choice_ok(states, "auth", 4));
    T_ASSERT(!cl_ctl_choice_ok(states, "", 0));
    T_ASSERT(cl_ctl_choice_ok(NULL, "anything", 8));
}

static void
frame_msg(struct dp_msg *m, size_t body)
{
    struct cl_enc e;
    char *text = calloc(1, body + 1);
    memset(text, 'x', body);
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, 1);
    cl_pack_kstr(&e, "detail", text);
    free(text);
    T_EQ_INT(dp_msg_set_frame(m, &e), 0);
}

/* Payloads are decoded in one place, which checks their layout; small ones
 * travel inline, larger ones on the heap, and secret ones are wiped. */
T_TEST(msg_payloads)
{
    for (int big = 0; big < 2; big++) {
        struct dp_msg m = { .type = DPM_ACCOUNT_UP };       /* carries a password: wiped */
        struct cl_msg pm;
        frame_msg(&m, big ? 1000 : 10);
        T_ASSERT(big ? m.data != NULL : m.data == NULL);
        T_ASSERT(dp_msg_bytes(&m) != NULL);
        T_ASSERT(dp_msg_has_frame(&m));
        T_EQ_INT(dp_msg_decode(&m, &pm), 0);
        cl_msg_free(&pm);

        /* a length prefix that disagrees with the payload size */
        uint8_t *b = (uint8_t *)dp_msg_bytes(&m);
        b[3]++;
        T_ASSERT(!dp_msg_has_frame(&m));
        T_EQ_INT(dp_msg_decode(&m, &pm), -IM_EINVAL);
        b[3]--;

        /* moved: the copy owns it, the source is empty and wiped */
        struct dp_msg c;
        uint32_t len = m.len;
        dp_msg_move(&c, &m);
        T_ASSERT(!m.len && !m.data);
        T_EQ_UINT(c.len, len);
        if (!big)
            for (unsigned i = 0; i < len; i++)
                T_EQ_UINT(m.inl[i], 0);
        T_ASSERT(dp_msg_has_frame(&c));
        dp_msg_release(&c);
        T_ASSERT(!c.data && !c.len);
        T_EQ_INT(dp_msg_decode(&c, &pm), -IM_EINVAL);
    }

    /* REQ: map, then the NUL-terminated peer */
    static const uint8_t req[] = { 0x81, 0xa2, 'o', 'p', 0xa4, 'p', 'i', 'n', 'g',
                                   '1', ':', '2', '\0' };
    struct dp_msg r = { .type = CPM_CLIENT_REQ };
    r.u.client_req.len = 9;
    T_EQ_INT(dp_msg_copy(&r, req, sizeof(req)), 0);
    const uint8_t *body;
    uint32_t len;
    const char *peer;
    T_EQ_INT(dp_msg_client_req(&r, &body, &len, &peer), 0);
    T_EQ_UINT(len, 9);
    T_EQ_STR(peer, "1:2");
    r.u.client_req.len = sizeof(req);          /* no room for the peer */
    T_EQ_INT(dp_msg_client_req(&r, &body, &len, &peer), -IM_EINVAL);
    r.u.client_req.len = 0;
    T_EQ_INT(dp_msg_client_req(&r, &body, &len, &peer), -IM_EINVAL);
    r.u.client_req.len = 9;
    r.inl[sizeof(req) - 1] = 'x';              /* peer not terminated */
    T_EQ_INT(dp_msg_client_req(&r, &body, &len, &peer), -IM_EINVAL);
    dp_msg_release(&r);
    for (unsigned i = 0; i < sizeof(req); i++)
        T_EQ_UINT(r.inl[i], 0);                /* it held a request: wiped */

    T_ASSERT(!dp_msg_alloc(&r, DP_MSG_MAX + 1));
    T_EQ_INT(dp_msg_copy(&r, req, DP_MSG_MAX + 1), -IM_ETOOBIG);
    T_EQ_UINT(sizeof(struct dp_msg), 256);

    /* which messages are secret */
    struct dp_msg k = { .type = CPM_CLIENT_REQ };
    k.u.client_req.op = CL_OP_LOGIN;
    T_ASSERT(dp_msg_secret(&k));
    k.u.client_req.op = CL_OP_SET_UNIFIED;
    T_ASSERT(!dp_msg_secret(&k));
    k.type = DPM_ACCOUNT_UP;
    T_ASSERT(dp_msg_secret(&k));
    k.type = CPM_MSG_IN;
    T_ASSERT(!dp_msg_secret(&k));
}

T_MAIN(T_RUN(op_table_matches_planes), T_RUN(op_rules), T_RUN(ctl_table), T_RUN(msg_payloads))
