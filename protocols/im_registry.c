/*
 * im_registry.c - the table of IM network adapters.  Adding a network means
 * adding its ops here; nothing else in the core names a protocol.
 */
#include <string.h>

#include "im_proto.h"

extern const struct im_proto_ops xmpp_ops;
extern const struct im_proto_ops irc_ops;
extern const struct im_proto_ops sip_ops;

const struct im_proto_ops *const im_proto_registry[] = {
    &xmpp_ops,
    &irc_ops,
    &sip_ops,
    NULL,
};

const struct im_proto_ops *
im_proto_find(const char *name)
{
    for (size_t i = 0; im_proto_registry[i]; i++)
        if (!strcmp(im_proto_registry[i]->name, name))
            return im_proto_registry[i];
    return NULL;
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
