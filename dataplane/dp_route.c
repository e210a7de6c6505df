/*
 * dp_route.c - unified contacts and the routing rule (DESIGN 4, "Sending"):
 * a `send` to a unified contact goes to its preferred member if that
 * account is online and the member is not known to be offline, else to the
 * first member, in list order, whose account is online.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp_relay_int.h"

void
dp_unified_free(struct dp_user *u)
{
    for (uint32_t i = 0; i < u->n_unified; i++) {
        for (uint32_t j = 0; j < u->unified[i].n; j++)
            free(u->unified[i].m[j].address);
        free(u->unified[i].m);
    }
    free(u->unified);
    free(u->unified_raw);
    u->unified = NULL;
    u->unified_raw = NULL;
    u->n_unified = 0;
    u->unified_raw_len = 0;
}

/* Parse one stored unified contact into du; false on ENOMEM. */
static bool
unified_parse(struct dp_relay *r, struct dp_unified *du, const msgpack_object *c)
{
    const msgpack_object *members;
    const char *why;
    if (c->type != MSGPACK_OBJECT_MAP || cl_get_uint(c, "id", &du->id, &why) ||
        cl_get_array(c, "members", &members, &why))
        return true;                    /* skipped: the controlplane stored it checked */
    if (cl_get_uint(c, "prefer", &du->prefer, &why))
        du->prefer = 0;
    du->m = calloc(members->via.array.size + 1, sizeof(*du->m));
    if (!du->m)
        return false;
    for (uint32_t j = 0; j < members->via.array.size; j++) {
        const msgpack_object *mo = &members->via.array.ptr[j];
        struct im_str addr;
        if (mo->type != MSGPACK_OBJECT_MAP ||
            cl_get_uint(mo, "account", &du->m[du->n].account, &why) ||
            cl_get_str(mo, "address", 1, DP_ADDR_MAX, &addr, &why))
            continue;
        if (!(du->m[du->n].address = dp_strdup(r, addr)))
            return false;
        du->n++;
    }
    return true;
}

void
dp_unified_set(struct dp_relay *r, struct dp_user *u, const msgpack_object *arr)
{
    dp_unified_free(u);
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY)
        return;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *arr);
    uint32_t n = arr->via.array.size;
    u->unified = calloc(n ? n : 1, sizeof(*u->unified));
    if (!sb.data || !u->unified)
        goto oom;
    u->unified_raw = (uint8_t *)sb.data;
    u->unified_raw_len = sb.size;
    for (uint32_t i = 0; i < n; i++) {
        struct dp_unified *du = &u->unified[u->n_unified];
        bool ok = unified_parse(r, du, &arr->via.array.ptr[i]);
        if (du->m)
            u->n_unified++;
        if (!ok)
            goto oom_parsed;
    }
    return;
oom:
    msgpack_sbuffer_destroy(&sb);
oom_parsed:
    /* Routing by unified contact needs the whole list: keep none rather
     * than a part (sends to (account, address) still work). */
    dp_unified_free(u);
    dp_relay_oom(r, "unified list");
}

uint64_t
dp_unified_of(const struct dp_user *u, uint64_t account, const char *address)
{
    for (uint32_t i = 0; i < u->n_unified; i++)
        for (uint32_t j = 0; j < u->unified[i].n; j++)
            if (u->unified[i].m[j].account == account &&
                !strcmp(u->unified[i].m[j].address, address))
                return u->unified[i].id;
    return 0;
}

static bool
account_usable(const struct dp_account *a)
{
    return a->online;
}

/* The member of uc the routing rule picks, or NULL when none is online. */
static const struct dp_member *
route_pick(struct dp_user *u, const struct dp_unified *uc)
{
    for (uint32_t i = 0; i < uc->n && uc->prefer; i++) {
        struct dp_account *ma = dp_user_account(u, uc->m[i].account);
        if (uc->m[i].account != uc->prefer || !ma || !account_usable(ma))
            continue;
        struct dp_contact *c = dp_contact_find(ma, uc->m[i].address);
        if (!c || c->presence != IM_PRES_OFFLINE)
            return &uc->m[i];
    }
    for (uint32_t i = 0; i < uc->n; i++) {
        struct dp_account *ma = dp_user_account(u, uc->m[i].account);
        if (ma && account_usable(ma))
            return &uc->m[i];
    }
    return NULL;
}

void
dp_op_send(struct dp_client *cl, const struct cl_msg *req)
{
    struct dp_relay *r = cl->r;
    struct dp_user *u = cl->user;
    const msgpack_object *to;
    struct im_str body, cid;
    const char *why;
    bool has_cid;
    int rc;

    if ((rc = cl_get_map(&req->root, "to", &to, &why)) != 0) {
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST,
                        rc == -IM_ENOTFOUND ? "to is required" : "to must be a map");
        return;
    }
    if ((rc = cl_get_text(&req->root, "body", 1, 65536, &body, &why)) != 0) {
        char msg[128];
        snprintf(msg, sizeof(msg), "body: %s", rc == -IM_ENOTFOUND ? "is required" : why);
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    rc = cl_get_str(&req->root, "cid", 1, CL_CID_MAX, &cid, &why);
    if (rc == -IM_EINVAL) {
        char msg[128];
        snprintf(msg, sizeof(msg), "cid: %s", why);
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
        return;
    }
    has_cid = rc == 0;

    struct dp_account *a = NULL;
    char address[DP_ADDR_MAX];
    uint64_t contact, account;
    struct im_str addr;
    if ((rc = cl_get_uint(to, "contact", &contact, &why)) == 0) {
        struct dp_unified *uc = NULL;
        for (uint32_t i = 0; i < u->n_unified && !uc; i++)
            if (u->unified[i].id == contact)
                uc = &u->unified[i];
        if (!uc) {
            dp_client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such unified contact");
            return;
        }
        const struct dp_member *pick = route_pick(u, uc);
        if (!pick) {
            dp_client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "no account of this contact is online");
            return;
        }
        a = dp_user_account(u, pick->account);
        im_strlcpy(address, pick->address, sizeof(address));
    } else if (rc == -IM_ENOTFOUND && cl_get_uint(to, "account", &account, &why) == 0 &&
               (rc = cl_get_text(to, "address", 1, 255, &addr, &why)) != -IM_ENOTFOUND) {
        if (rc < 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "to.address: %s", why);
            dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
            return;
        }
        a = dp_user_account(u, account);
        if (!a) {
            dp_client_error(cl, true, req->id, CL_ERR_NOT_FOUND, "no such account");
            return;
        }
        char in[256];
        snprintf(in, sizeof(in), "%.*s", (int)addr.len, addr.p);
        if (!a->ops || a->ops->normalize_address(in, address, sizeof(address), &why) < 0) {
            char msg[160];
            snprintf(msg, sizeof(msg), "to.address: %s", a->ops ? why : "unsupported network");
            dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST, msg);
            return;
        }
        if (!account_usable(a)) {
            dp_client_error(cl, true, req->id, CL_ERR_ACCOUNT_OFFLINE, "the account is not online");
            return;
        }
    } else {
        dp_client_error(cl, true, req->id, CL_ERR_BAD_REQUEST,
                        "to must be {contact: id} or {account: id, address: str}");
        return;
    }

    struct cl_enc e;
    cl_enc_init(&e);
    msgpack_pack_map(&e.pk, has_cid ? 4 : 3);
    cl_pack_kstr(&e, "address", address);
    cl_pack_kstrn(&e, "body", body.p, body.len);
    cl_pack_kstr(&e, "network", a->network);
    if (has_cid)
        cl_pack_kstrn(&e, "cid", cid.p, cid.len);
    struct dp_msg m = { .type = CPM_OUT_REQ, .conn = cl->slot, .gen = cl->gen, .uid = u->uid,
                        .account = a->id };
    m.u.out_req.req = req->id;
    if (dp_up(r, &m, &e) < 0) {
        dp_client_error(cl, true, req->id, CL_ERR_INTERNAL, "out of memory, try again");
        return;
    }

    /* Back-pressure: a full queue stops reading this client. */
    if (a->q_len >= DP_QUEUE_PAUSE)
        dp_account_pause_client(a, cl);
}
