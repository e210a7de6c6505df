/*
 * cl_ops.c - the table of client requests (cl_ops.h).  Read a row to find
 * an op's whole path through the appliance.
 */
#include <string.h>

#include "cl_ops.h"

#define DATA        CL_PLANE_DATA
#define CONTROL     CL_PLANE_CONTROL
#define ANY         CL_LOGIN_ANY
#define LOGGED_IN   CL_LOGIN_REQUIRED
#define LOGGED_OUT  CL_LOGIN_FORBIDDEN

const struct cl_op cl_ops[CL_OP__COUNT] = {
    [CL_OP_PING] = { CL_OP_PING, "ping", DATA, ANY, false,
        "dp_client.c op_ping: ok at once" },
    [CL_OP_REGISTER] = { CL_OP_REGISTER, "register", CONTROL, LOGGED_OUT, true,
        "CPM_CLIENT_REQ -> cp_client.c op_register -> auth pool (Argon2id) -> register_done "
        "-> commit -> ok" },
    [CL_OP_LOGIN] = { CL_OP_LOGIN, "login", CONTROL, LOGGED_OUT, true,
        "CPM_CLIENT_REQ -> cp_client.c op_login (lockout) -> auth pool -> login_done -> "
        "DPM_LOGIN_OK (dp_client.c answers ok) + the queue replayed in batches paced by on_drain "
        "(DPM_DELIVER..., DPM_REPLAY_END; CPM_REPLAY_NEXT -> cp_client_replay_next)" },
    [CL_OP_LOGOUT] = { CL_OP_LOGOUT, "logout", DATA, LOGGED_IN, false,
        "dp_client.c op_logout -> CPM_CONN_LOGOUT; ok at once" },
    [CL_OP_LINK] = { CL_OP_LINK, "link", CONTROL, LOGGED_IN, true,
        "CPM_CLIENT_REQ -> cp_client.c op_link (seal, store) -> commit -> ok + DPM_ACCOUNT_UP "
        "-> dp_account.c connects" },
    [CL_OP_UPDATE_ACCOUNT] = { CL_OP_UPDATE_ACCOUNT, "update_account", CONTROL, LOGGED_IN, true,
        "CPM_CLIENT_REQ -> cp_client.c op_update_account -> commit -> ok + DPM_ACCOUNT_UP "
        "(reconnect)" },
    [CL_OP_UNLINK] = { CL_OP_UNLINK, "unlink", CONTROL, LOGGED_IN, false,
        "CPM_CLIENT_REQ -> cp_client.c op_unlink (account, contacts, outbox) -> commit -> ok + "
        "DPM_ACCOUNT_DOWN" },
    [CL_OP_ACCOUNTS] = { CL_OP_ACCOUNTS, "accounts", DATA, LOGGED_IN, false,
        "dp_client.c op_accounts: from the dataplane's accounts" },
    [CL_OP_CONTACTS] = { CL_OP_CONTACTS, "contacts", DATA, LOGGED_IN, false,
        "dp_client.c op_contacts: from the dataplane's lists" },
    [CL_OP_ADD_CONTACT] = { CL_OP_ADD_CONTACT, "add_contact", DATA, LOGGED_IN, false,
        "dp_account.c dp_op_contact: adapter roster set, or the kept list -> CPM_CONTACTS" },
    [CL_OP_REMOVE_CONTACT] = { CL_OP_REMOVE_CONTACT, "remove_contact", DATA, LOGGED_IN, false,
        "dp_account.c dp_op_contact: adapter roster remove, or the kept list -> CPM_CONTACTS" },
    [CL_OP_SET_UNIFIED] = { CL_OP_SET_UNIFIED, "set_unified", CONTROL, LOGGED_IN, false,
        "CPM_CLIENT_REQ -> cp_client.c op_set_unified -> commit -> ok + DPM_UNIFIED" },
    [CL_OP_UNIFIED] = { CL_OP_UNIFIED, "unified", DATA, LOGGED_IN, false,
        "dp_client.c op_unified: the stored bytes the dataplane keeps" },
    [CL_OP_SEND] = { CL_OP_SEND, "send", DATA, LOGGED_IN, false,
        "dp_route.c dp_op_send (routing) -> CPM_OUT_REQ -> cp_core.c handle_out_req (cid, "
        "outbox) -> commit -> ok + DPM_OUT_ACCEPTED -> dp_account.c send queue -> adapter" },
    [CL_OP_ACK] = { CL_OP_ACK, "ack", CONTROL, LOGGED_IN, false,
        "CPM_CLIENT_REQ -> cp_client.c op_ack (queue delete) -> commit -> ok" },
};

const struct cl_op *
cl_op_find(struct im_str name)
{
    for (unsigned i = 1; i < CL_OP__COUNT; i++)
        if (name.len == strlen(cl_ops[i].name) && !memcmp(name.p, cl_ops[i].name, name.len))
            return &cl_ops[i];
    return NULL;
}

const struct cl_op *
cl_op_get(uint32_t id)
{
    return id > CL_OP_NONE && id < CL_OP__COUNT ? &cl_ops[id] : NULL;
}
