/*
 * cl_ctl.h - the one table of operator commands on the control socket
 * (STYLE 11).  The daemon (controlplane/cp_rpc.c) serves them by id, and
 * imfusectl (tools/imfusectl.c) parses its command line, prints its usage
 * and builds requests from the same rows, so the two cannot drift; the man
 * page and `imfusectl help` read it too.
 *
 * A request is {op, id, name?, password?} in the client protocol's framing;
 * the reply is {op:"ok", id, ...} or an error, as on the client port.
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
    CL_CTL_KICK,
    CL_CTL_DRAIN,
    CL_CTL_HELP,
    CL_CTL__COUNT
};

/* cl_ctl_cmd.flags */
#define CL_CTL_ARG_NAME     0x1u    /* one positional NAME, sent as {name} */
#define CL_CTL_ARG_PASSWORD 0x2u    /* a password, first line of standard input, sent as {password} */
#define CL_CTL_WRITES       0x4u    /* changes the store: answered after the commit */

struct cl_ctl_cmd {
    enum cl_ctl_id id;
    const char *op;             /* the request op on the socket ("user_add") */
    const char *words;          /* imfusectl's words ("user add") */
    unsigned flags;
    const char *help;           /* one line: what it does and what it answers */
};

/* Indexed by enum cl_ctl_id. */
extern const struct cl_ctl_cmd cl_ctl_cmds[CL_CTL__COUNT];

/* The row of a request op, or NULL. */
const struct cl_ctl_cmd *cl_ctl_find(struct im_str op);

#endif
