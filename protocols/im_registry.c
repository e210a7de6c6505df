/*
 * im_registry.c - the table of IM network adapters.  Adding a network means
 * adding its ops to im_proto_builtin[]; nothing else in the core names a
 * protocol.  Tests plug fake networks in beside them (im_proto_register()).
 */
#include <string.h>

#include "im_proto.h"

extern const struct im_proto_ops xmpp_ops;
extern const struct im_proto_ops irc_ops;
extern const struct im_proto_ops sip_ops;

const struct im_proto_ops *const im_proto_builtin[] = {
    &xmpp_ops,
    &irc_ops,
    &sip_ops,
    NULL,
};

/* Adapters plugged in at run time; empty slots are NULL. */
static const struct im_proto_ops *plugged[IM_PROTO_MAX_PLUGGED];

const struct im_proto_ops *
im_proto_find(const char *name)
{
    for (size_t i = 0; im_proto_builtin[i]; i++)
        if (!strcmp(im_proto_builtin[i]->name, name))
            return im_proto_builtin[i];
    for (size_t i = 0; i < IM_ARRAY_SIZE(plugged); i++)
        if (plugged[i] && !strcmp(plugged[i]->name, name))
            return plugged[i];
    return NULL;
}

int
im_proto_ops_check(const struct im_proto_ops *ops, const char **why)
{
    const char *w = NULL;

    if (!ops || !ops->name || !*ops->name)
        w = "no name";
    else if (!ops->normalize_login || !ops->normalize_address)
        w = "normalize_login and normalize_address are mandatory";
    else if (!ops->create || !ops->destroy || !ops->start || !ops->input || !ops->tick ||
             !ops->send_msg)
        w = "create, destroy, start, input, tick and send_msg are mandatory";
    else if (ops->has_starttls && !ops->tls_ready)
        w = "has_starttls needs tls_ready";
    else if (!ops->add_contact != !ops->remove_contact)
        w = "add_contact and remove_contact go together";
    if (why)
        *why = w;
    return w ? -IM_EINVAL : 0;
}

int
im_proto_register(const struct im_proto_ops *ops, const char **why)
{
    size_t free_slot = IM_ARRAY_SIZE(plugged);
    int rc = im_proto_ops_check(ops, why);

    if (rc)
        return rc;
    if (im_proto_find(ops->name)) {
        if (why)
            *why = "a network of that name exists";
        return -IM_EEXIST;
    }
    for (size_t i = 0; i < IM_ARRAY_SIZE(plugged) && free_slot == IM_ARRAY_SIZE(plugged); i++)
        if (!plugged[i])
            free_slot = i;
    if (free_slot == IM_ARRAY_SIZE(plugged)) {
        if (why)
            *why = "too many plugged networks (IM_PROTO_MAX_PLUGGED)";
        return -IM_ELIMIT;
    }
    plugged[free_slot] = ops;
    return 0;
}

int
im_proto_unregister(const struct im_proto_ops *ops)
{
    for (size_t i = 0; i < IM_ARRAY_SIZE(plugged); i++)
        if (plugged[i] && plugged[i] == ops) {
            plugged[i] = NULL;
            return 0;
        }
    return -IM_ENOTFOUND;
}

const char *
im_account_state_name(enum im_account_state s)
{
    switch (s) {
    case IM_ACC_CONNECTING:     return "connecting";
    case IM_ACC_ONLINE:         return "online";
    case IM_ACC_OFFLINE:        return "offline";
    case IM_ACC_AUTH_FAILED:    return "auth_failed";
    case IM_ACC_ERROR:          return "error";
    }
    return "error";
}

const char *
im_presence_name(enum im_presence p)
{
    switch (p) {
    case IM_PRES_AVAILABLE:     return "available";
    case IM_PRES_AWAY:          return "away";
    case IM_PRES_OFFLINE:       return "offline";
    case IM_PRES_UNKNOWN:       return "unknown";
    }
    return "unknown";
}
