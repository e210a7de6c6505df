/*
 * cl_ctl.h - the one table of operator commands on the control socket
 * (STYLE 11).  The daemon (controlplane/cp_rpc.c) serves them by id, and
 * imfusectl (tools/imfusectl.c) parses its command line, prints its usage
 * and builds requests from the same rows, so the two cannot drift; the man
 * page and `imfusectl help` read it too.
 *
 * A request is {op, id, ARG...} in the client protocol's framing, one key
 * per argument the row lists (cl_ctl_arg.key); the reply is {op:"ok", id,
 * ...} or an error, as on the client port.
 */
#ifndef CL_CTL_H
#define CL_CTL_H

#include <stdint.h>

#include "../im_proto.h"

enum cl_ctl_id {
    CL_CTL_USER_ADD = 0,
    CL_CTL_USER_DEL,
    CL_CTL_USER_PASSWD,
    CL_CTL_USER_LIST,
    CL_CTL_ACCOUNTS,
    CL_CTL_SESSIONS,
    CL_CTL_STATS,
    CL_CTL_TOP,
    CL_CTL_KICK,
    CL_CTL_DRAIN,
    CL_CTL_CONFIG,
    CL_CTL_RELOAD,
    CL_CTL_LOG_LEVEL,
    CL_CTL_BACKUP,
    CL_CTL_HELP,
    CL_CTL__COUNT
};

/* cl_ctl_arg.flags */
#define CL_CTL_A_OPTION   0x1u  /* --KEY VALUE anywhere after the command words (else positional, in order) */
#define CL_CTL_A_FLAG     0x2u  /* --KEY alone, sent as true (with CL_CTL_A_OPTION) */
#define CL_CTL_A_OPTIONAL 0x4u  /* may be left out (then not sent) */
#define CL_CTL_A_UINT     0x8u  /* digits, sent as an unsigned integer (else a string) */
#define CL_CTL_A_SECONDS  0x10u /* seconds, "N" or "N.M" (CL_CTL_LOCAL commands only) */
#define CL_CTL_A_OUTFILE  0x20u /* a file imfusectl creates: its descriptor travels with the
                                 * request (SCM_RIGHTS), its name as the value */

/* One argument of a command. */
struct cl_ctl_arg {
    const char *key;            /* the request's key, and the option's name (--state); NULL: none */
    const char *meta;           /* its value in usage texts ("NAME", "S") */
    unsigned flags;             /* CL_CTL_A_* */
    const char *choices;        /* "a|b|c": the values allowed, checked by both sides; NULL: any */
};

#define CL_CTL_ARGS_MAX 3

/* cl_ctl_cmd.flags */
#define CL_CTL_PASSWORD 0x1u    /* a password, first line of standard input, sent as {password} */
#define CL_CTL_WRITES   0x2u    /* changes the store: answered after the commit */
#define CL_CTL_LOCAL    0x4u    /* done by imfusectl itself with other requests (top): not an op */
#define CL_CTL_SLOW     0x8u    /* the reply may take long (backup): no 10 s limit */

struct cl_ctl_cmd {
    enum cl_ctl_id id;
    const char *op;             /* the request op on the socket ("user_add"); LOCAL: NULL */
    const char *words;          /* imfusectl's words ("user add") */
    unsigned flags;
    const char *help;           /* one line: what it does and what it answers */
    struct cl_ctl_arg args[CL_CTL_ARGS_MAX];    /* in usage order; unused ones have key NULL */
};

/* Indexed by enum cl_ctl_id. */
extern const struct cl_ctl_cmd cl_ctl_cmds[CL_CTL__COUNT];

/* The row of a request op, or NULL (LOCAL rows are no ops). */
const struct cl_ctl_cmd *cl_ctl_find(struct im_str op);

/* Whether v is one of a "a|b|c" choices list (NULL allows anything). */
bool cl_ctl_choice_ok(const char *choices, const char *v, size_t len);

/* The command's synopsis: "user add NAME", "accounts [NAME] [--state S]".
 * Returns what snprintf returns. */
int cl_ctl_synopsis(const struct cl_ctl_cmd *cmd, char *buf, size_t sz);

#endif
