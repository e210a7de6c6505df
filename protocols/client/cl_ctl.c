/*
 * cl_ctl.c - the operator commands (cl_ctl.h).
 */
#include <stdio.h>
#include <string.h>

#include "cl_ctl.h"

#define PASS    CL_CTL_PASSWORD
#define WRITES  CL_CTL_WRITES

#define ARG_NAME        { "name", "NAME", 0, NULL }
#define ACC_STATES      "online|connecting|offline|auth_failed|error"
#define LOG_LEVELS      "error|warn|info|debug"

const struct cl_ctl_cmd cl_ctl_cmds[CL_CTL__COUNT] = {
    [CL_CTL_USER_ADD] = { CL_CTL_USER_ADD, "user_add", "user add", PASS | WRITES,
        "add a user (password: first line of standard input)", { ARG_NAME } },
    [CL_CTL_USER_DEL] = { CL_CTL_USER_DEL, "user_del", "user del", WRITES,
        "delete a user and everything it owns", { ARG_NAME } },
    [CL_CTL_USER_PASSWD] = { CL_CTL_USER_PASSWD, "user_passwd", "user passwd", PASS | WRITES,
        "set a user's password (standard input)", { ARG_NAME } },
    [CL_CTL_USER_LIST] = { CL_CTL_USER_LIST, "user_list", "user list", 0,
        "list the users with their accounts, queued messages and sessions", { { 0 } } },
    [CL_CTL_ACCOUNTS] = { CL_CTL_ACCOUNTS, "accounts", "accounts", 0,
        "the linked IM accounts of a user, or of every user, and their state; "
        "--state keeps those in state S", {
            { "name", "NAME", CL_CTL_A_OPTIONAL, NULL },
            { "state", "S", CL_CTL_A_OPTION | CL_CTL_A_OPTIONAL, ACC_STATES } } },
    [CL_CTL_SESSIONS] = { CL_CTL_SESSIONS, "sessions", "sessions", 0,
        "the client sessions logged in now", { { 0 } } },
    [CL_CTL_STATS] = { CL_CTL_STATS, "stats", "stats", 0,
        "the appliance's counters, one per line", { { 0 } } },
    [CL_CTL_TOP] = { CL_CTL_TOP, NULL, "top", CL_CTL_LOCAL,
        "live rates per second from stats, refreshed every interval (default 2 s); "
        "--once: one sample over one interval", {
            { "once", NULL, CL_CTL_A_OPTION | CL_CTL_A_FLAG | CL_CTL_A_OPTIONAL, NULL },
            { "interval", "SECONDS", CL_CTL_A_OPTION | CL_CTL_A_OPTIONAL | CL_CTL_A_SECONDS, NULL } } },
    [CL_CTL_KICK] = { CL_CTL_KICK, "kick", "kick", 0,
        "close every session of a user (answers how many)", { ARG_NAME } },
    [CL_CTL_DRAIN] = { CL_CTL_DRAIN, "drain", "drain", 0,
        "stop accepting new client connections (existing ones stay)", { { 0 } } },
    [CL_CTL_CONFIG] = { CL_CTL_CONFIG, "config", "config", 0,
        "the effective configuration, one key = value per line, with where each value "
        "comes from (secrets elided)", { { 0 } } },
    [CL_CTL_RELOAD] = { CL_CTL_RELOAD, "reload", "reload", 0,
        "read the config file again and apply what can change at run time (log level, "
        "TLS certificate and key, CA file, open registration, account-storm), like SIGHUP; "
        "answers what changed", { { 0 } } },
    [CL_CTL_LOG_LEVEL] = { CL_CTL_LOG_LEVEL, "log_level", "log-level", 0,
        "set the log level now (until the next reload or restart)", {
            { "level", "LEVEL", 0, LOG_LEVELS } } },
    [CL_CTL_BACKUP] = { CL_CTL_BACKUP, "backup", "backup", CL_CTL_SLOW,
        "write a compacted copy of the store to FILE while the appliance serves "
        "(FILE must not exist; keep appliance.key with it)", {
            { "file", "FILE", CL_CTL_A_OUTFILE, NULL } } },
    [CL_CTL_HELP] = { CL_CTL_HELP, "help", "help", 0,
        "the commands the daemon serves", { { 0 } } },
};

const struct cl_ctl_cmd *
cl_ctl_find(struct im_str op)
{
    for (unsigned i = 0; i < CL_CTL__COUNT; i++) {
        const char *o = cl_ctl_cmds[i].op;
        if (o && op.len == strlen(o) && !memcmp(op.p, o, op.len))
            return &cl_ctl_cmds[i];
    }
    return NULL;
}

bool
cl_ctl_choice_ok(const char *choices, const char *v, size_t len)
{
    if (!choices)
        return true;
    for (const char *c = choices; *c;) {
        size_t n = strcspn(c, "|");
        if (n == len && !memcmp(c, v, len))
            return true;
        c += n;
        if (*c == '|')
            c++;
    }
    return false;
}

int
cl_ctl_synopsis(const struct cl_ctl_cmd *cmd, char *buf, size_t sz)
{
    size_t off = 0;
    int n = snprintf(buf, sz, "%s", cmd->words);
    for (unsigned i = 0; n >= 0 && i < CL_CTL_ARGS_MAX && cmd->args[i].key; i++) {
        const struct cl_ctl_arg *a = &cmd->args[i];
        bool opt = a->flags & CL_CTL_A_OPTIONAL;
        off = (size_t)n < sz ? (size_t)n : sz;
        int m;
        if (!(a->flags & CL_CTL_A_OPTION))
            m = snprintf(buf + off, sz - off, opt ? " [%s]" : " %s", a->meta);
        else if (a->flags & CL_CTL_A_FLAG)
            m = snprintf(buf + off, sz - off, opt ? " [--%s]" : " --%s", a->key);
        else
            m = snprintf(buf + off, sz - off, opt ? " [--%s %s]" : " --%s %s", a->key, a->meta);
        n = m < 0 ? m : n + m;
    }
    return n;
}
