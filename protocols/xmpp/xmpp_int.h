/*
 * xmpp_int.h - internals of the XMPP adapter shared between its files and
 * its tests.  Not part of any contract.
 */
#ifndef XMPP_INT_H
#define XMPP_INT_H

#include "im_proto.h"
#include "xmpp_scram.h"

extern const struct im_proto_ops xmpp_ops;

/* Limits (documented in xmpp.c). */
#define XMPP_MAX_STANZA         (256u * 1024u)  /* bytes of one top-level element */
#define XMPP_MAX_ARENA          (4u << 20)      /* parsed-tree memory of one stanza */
#define XMPP_MAX_DEPTH          32              /* element nesting, stream included */
#define XMPP_MAX_CONTACTS       20000
#define XMPP_MAX_RESOURCES      16              /* tracked per contact */
#define XMPP_MAX_UNCOMMITTED    65536           /* messages awaiting ops->committed() */
#define XMPP_MAX_UNACKED        65536           /* sent messages awaiting <a h/> */
#define XMPP_LOGIN_TIMEOUT_MS   30000
#define XMPP_PING_IDLE_MS       60000
#define XMPP_PING_TIMEOUT_MS    30000
#define XMPP_JID_MAX            255             /* our limit on a bare JID */
#define XMPP_MAX_OUT            (1u << 20)      /* one stanza we write (a 64 KiB body escaped, with room) */

/*
 * Parse an XEP-0082 date-time ("1970-01-01T00:00:00[.sss](Z|+hh:mm)") into ms
 * since the epoch.  Returns 0 or -IM_EINVAL.
 */
int xmpp_parse_stamp(const char *s, uint64_t *ms);

#endif
