/*
 * cl_ops.h - the one table of client-protocol requests (docs/CLIENT-PROTOCOL.md).
 *
 * Every request op is listed once, in cl_ops.c, with the plane that serves
 * it and its rules.  The dataplane's client sessions (dataplane/dp_client.c)
 * and the controlplane (controlplane/cp_client.c) both dispatch from it:
 * each keeps an array of handlers indexed by enum cl_op_id and serves
 * exactly the ops the table gives its plane (tests/unit/controlplane/
 * test_ops.c checks both against the table).  Rules that apply to every
 * op of a kind (login required, at most one outstanding...) live here, not
 * in if-chains of the planes.
 */
#ifndef CL_OPS_H
#define CL_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "../im_proto.h"

enum cl_op_id {
    CL_OP_NONE = 0,
    CL_OP_PING,
    CL_OP_REGISTER,
    CL_OP_LOGIN,
    CL_OP_LOGOUT,
    CL_OP_LINK,
    CL_OP_UPDATE_ACCOUNT,
    CL_OP_UNLINK,
    CL_OP_ACCOUNTS,
    CL_OP_CONTACTS,
    CL_OP_ADD_CONTACT,
    CL_OP_REMOVE_CONTACT,
    CL_OP_SET_UNIFIED,
    CL_OP_UNIFIED,
    CL_OP_SEND,
    CL_OP_ACK,
    CL_OP__COUNT
};

/* Where a request is served. */
enum cl_plane {
    CL_PLANE_DATA = 1,          /* answered by the dataplane's client session */
    CL_PLANE_CONTROL,           /* forwarded as CPM_CLIENT_REQ, answered by the controlplane */
};

/* What the session's login state must be. */
enum cl_login_rule {
    CL_LOGIN_ANY = 0,           /* before or after login */
    CL_LOGIN_REQUIRED,          /* else not_logged_in */
    CL_LOGIN_FORBIDDEN,         /* else bad_request "already logged in" */
};

struct cl_op {
    enum cl_op_id id;
    const char *name;           /* the op string on the wire */
    enum cl_plane plane;
    enum cl_login_rule login;
    bool secret;                /* carries a password: every copy of the frame is wiped */
    bool one_at_a_time;         /* at most one outstanding per connection: another one
                                 * before its answer gets `limit` (login, register) */
    const char *path;           /* where it goes, for readers: handler and plane messages */
};

/* The table, indexed by enum cl_op_id (entry 0 is CL_OP_NONE, unnamed). */
extern const struct cl_op cl_ops[CL_OP__COUNT];

/* The entry of an op string, or NULL when unknown. */
const struct cl_op *cl_op_find(struct im_str name);
/* The entry of an id (NULL when out of range or CL_OP_NONE). */
const struct cl_op *cl_op_get(uint32_t id);

#endif
