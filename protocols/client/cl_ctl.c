/*
 * cl_ctl.c - the operator commands (cl_ctl.h).
 */
#include <string.h>

#include "cl_ctl.h"

#define NAME    CL_CTL_ARG_NAME
#define PASS    CL_CTL_ARG_PASSWORD
#define WRITES  CL_CTL_WRITES

const struct cl_ctl_cmd cl_ctl_cmds[CL_CTL__COUNT] = {
    [CL_CTL_USER_ADD] = { CL_CTL_USER_ADD, "user_add", "user add", NAME | PASS | WRITES,
        "add a user (password: first line of standard input)" },
    [CL_CTL_USER_DEL] = { CL_CTL_USER_DEL, "user_del", "user del", NAME | WRITES,
        "delete a user and everything it owns" },
    [CL_CTL_USER_PASSWD] = { CL_CTL_USER_PASSWD, "user_passwd", "user passwd", NAME | PASS | WRITES,
        "set a user's password (standard input)" },
    [CL_CTL_USER_LIST] = { CL_CTL_USER_LIST, "user_list", "user list", 0,
        "list the users with their accounts, queued messages and sessions" },
    [CL_CTL_ACCOUNTS] = { CL_CTL_ACCOUNTS, "accounts", "accounts", NAME,
        "the linked IM accounts of a user and their state" },
    [CL_CTL_SESSIONS] = { CL_CTL_SESSIONS, "sessions", "sessions", 0,
        "the client sessions logged in now" },
    [CL_CTL_STATS] = { CL_CTL_STATS, "stats", "stats", 0,
        "the appliance's counters, one per line" },
    [CL_CTL_KICK] = { CL_CTL_KICK, "kick", "kick", NAME,
        "close every session of a user (answers how many)" },
    [CL_CTL_DRAIN] = { CL_CTL_DRAIN, "drain", "drain", 0,
        "stop accepting new client connections (existing ones stay)" },
    [CL_CTL_HELP] = { CL_CTL_HELP, "help", "help", 0,
        "the commands the daemon serves" },
};

const struct cl_ctl_cmd *
cl_ctl_find(struct im_str op)
{
    for (unsigned i = 0; i < CL_CTL__COUNT; i++)
        if (op.len == strlen(cl_ctl_cmds[i].op) && !memcmp(op.p, cl_ctl_cmds[i].op, op.len))
            return &cl_ctl_cmds[i];
    return NULL;
}
