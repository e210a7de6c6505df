/*
 * im_proto.h - the neutral model shared by every IM network adapter.
 *
 * An adapter is sans-I/O: it consumes bytes received from the IM server,
 * produces bytes to send to it, and reports what happened as struct
 * im_event values through the narrow callback API in struct im_io.  It never
 * touches a socket, a clock (the time is passed in) or a global, so it runs
 * unchanged on the kernel and the DPDK backends and can be fuzzed.
 *
 * Every adapter is one const struct im_proto_ops listed in im_proto_registry
 * (protocols/im_registry.c).  The relay core never names a protocol.
 *
 * Strings handed to callbacks are counted views (struct im_str) valid only
 * for the duration of the callback: copy what you keep.
 */
#ifndef IM_PROTO_H
#define IM_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "im_common.h"

/* A counted string view; not NUL-terminated unless stated. */
struct im_str {
    const char *p;
    uint32_t len;
};

#define IM_STR(lit) ((struct im_str){ (lit), (uint32_t)(sizeof(lit) - 1) })

enum im_tls {
    IM_TLS_NONE = 0,        /* plain TCP */
    IM_TLS_STARTTLS,        /* plain TCP upgraded in-band; refusal is an error */
    IM_TLS_DIRECT,          /* TLS from the first byte */
};

enum im_account_state {
    IM_ACC_CONNECTING = 0,
    IM_ACC_ONLINE,
    IM_ACC_OFFLINE,
    IM_ACC_AUTH_FAILED,
    IM_ACC_ERROR,
};

enum im_presence {
    IM_PRES_UNKNOWN = 0,
    IM_PRES_AVAILABLE,
    IM_PRES_AWAY,
    IM_PRES_OFFLINE,
};

/* One key = value pair of a link's `options` map (both NUL-terminated). */
struct im_option {
    const char *key;
    const char *value;
};

/*
 * What an adapter needs to log in.  All strings are NUL-terminated and owned
 * by the caller; they stay valid until ops->destroy() returns.
 */
struct im_account_cfg {
    uint64_t account;           /* appliance-wide account id */
    const char *login;          /* normalised login (bare JID, nick, sip URI) */
    const char *password;       /* "" when none */
    const char *host;           /* server host (IP address or name) */
    uint16_t port;
    enum im_tls tls;
    const char *tls_name;       /* name the certificate is checked against */
    const struct im_option *options;
    uint32_t n_options;
};

/* One roster / watch-list entry. */
struct im_contact {
    struct im_str address;      /* normalised (XMPP: lower-cased bare JID) */
    struct im_str name;         /* len 0 when unknown */
    const struct im_str *groups;
    uint32_t n_groups;
    enum im_presence presence;
};

enum im_event_type {
    /*
     * The account's login state changed.  ONLINE once the session is fully
     * usable (authenticated, bound, roster requested).  AUTH_FAILED and
     * ERROR are final for this connection: the glue closes it.  `detail`
     * says why in words a user can act on (never a secret).  CONNECTING and
     * OFFLINE are the glue's to report, never the adapter's.
     */
    IM_EV_STATE = 1,
    /*
     * The adapter wants TLS on the connection now (STARTTLS accepted by the
     * server).  The glue starts a TLS client handshake checked against
     * cfg->tls_name and calls ops->tls_ready() with the outcome.  Bytes
     * already passed to ops->input() after the ones that triggered this event
     * must not exist (the server waits for the handshake).
     */
    IM_EV_STARTTLS,
    /* The account's full contact list (after login and after every change). */
    IM_EV_CONTACTS,
    /* One contact's presence changed. */
    IM_EV_PRESENCE,
    /* A chat message arrived. */
    IM_EV_MESSAGE,
    /*
     * An outgoing message (by its msg id) has been handed to the network as
     * far as the network lets us know: written, or acknowledged by the
     * server where the protocol acknowledges (XEP-0198).
     */
    IM_EV_SENT,
    /* An add/remove contact request finished (status 0 or a negative code). */
    IM_EV_CONTACT_DONE,
    /*
     * Something the user should read about the account, not a chat message:
     * a NOTICE from services, "nick alice is in use, now alice_", a server
     * announcement.  Shown as the account's detail (`account` event).
     */
    IM_EV_NOTICE,
};

struct im_event {
    enum im_event_type type;
    union {
        struct {
            enum im_account_state state;
            struct im_str detail;
        } state;
        struct {
            const struct im_contact *list;
            uint32_t n;
        } contacts;
        struct {
            struct im_str address;
            enum im_presence presence;
        } presence;
        struct {
            struct im_str from;         /* normalised address */
            struct im_str resource;     /* len 0 when none */
            struct im_str body;         /* valid UTF-8 */
            uint64_t ts;                /* ms since epoch (delay stamp or now) */
            /*
             * Opaque token: when non-zero, the adapter has withheld the
             * network-level acknowledgement for this message.  The glue calls
             * ops->committed(token) once the message is durably stored.
             */
            uint64_t token;
        } message;
        struct {
            uint64_t msg;
        } sent;
        struct {
            uint64_t req;
            int status;
            struct im_str detail;
        } contact_done;
        struct {
            struct im_str text;         /* valid UTF-8, control codes removed */
        } notice;
    } u;
};

/*
 * The narrow API an adapter calls.  Both callbacks may be called from inside
 * any ops hook.  From inside io->event the glue may call send_msg,
 * add_contact, remove_contact, committed and logout on the same session, but
 * never destroy(): the session is destroyed only from outside its hooks.
 */
struct im_io {
    /* Queue bytes for the server.  Returns 0 or a negative code (the glue
     * then tears the session down; the adapter need not handle it). */
    int (*out)(void *ud, const void *p, size_t n);
    /* Report an event.  Views in *ev are valid only during the call. */
    void (*event)(void *ud, const struct im_event *ev);
    /* The connection's own local address, "ip:port" ("[v6]:port" for IPv6),
     * or "" when not connected (SIP puts it in Contact). */
    const char *(*local_addr)(void *ud);
    void *ud;
};

/* An outgoing chat message. */
struct im_msg {
    uint64_t msg;               /* appliance message id (reported in IM_EV_SENT) */
    struct im_str to;           /* normalised address */
    struct im_str body;         /* valid UTF-8 */
};

struct im_sess;                 /* adapter-private session state */

struct im_proto_ops {
    const char *name;           /* "xmpp", as in the client protocol */
    uint16_t default_port;
    uint16_t default_tls_port;
    bool has_starttls;          /* the network can upgrade in-band (tls "starttls") */

    /*
     * Validate and normalise a login as given by the user into out (NUL
     * terminated).  Returns 0, or -IM_EINVAL with *why set to a static
     * explanation.
     */
    int (*normalize_login)(const char *in, char *out, size_t outsz, const char **why);
    /* Same for a contact address. */
    int (*normalize_address)(const char *in, char *out, size_t outsz, const char **why);
    /*
     * The default name the server certificate is checked against for a
     * normalised login (XMPP and SIP: the domain).  Writes "" when the
     * server host should be used.
     */
    void (*default_tls_name)(const char *login, char *out, size_t outsz);

    /*
     * Create a session for one connection attempt.  Nothing is sent until
     * ops->start().  Returns NULL on allocation failure.  cfg and io must
     * outlive the session.
     */
    struct im_sess *(*create)(const struct im_account_cfg *cfg, const struct im_io *io);
    /* Free the session.  Never called from inside an im_io callback. */
    void (*destroy)(struct im_sess *s);

    /* The TCP connection (and TLS, for IM_TLS_DIRECT) is up: begin the login. */
    int (*start)(struct im_sess *s, uint64_t now_ms);
    /*
     * Bytes from the server, in arbitrary pieces.  Returns 0, or a negative
     * code after having reported IM_EV_STATE (ERROR or AUTH_FAILED) saying
     * why; the glue then closes the connection.
     */
    int (*input)(struct im_sess *s, const uint8_t *p, size_t n, uint64_t now_ms);
    /* Outcome of the handshake requested by IM_EV_STARTTLS (0 or negative).
     * Returns as input() does.  Bytes received between the STARTTLS trigger
     * and the handshake are a protocol error (an injection attempt). */
    int (*tls_ready)(struct im_sess *s, int status, uint64_t now_ms);
    /*
     * Called about every 100 ms (at least once a second) while the connection
     * is up: keepalives, login timeouts, pacing of queued lines.  Returns 0
     * or negative as input() does.
     */
    int (*tick)(struct im_sess *s, uint64_t now_ms);

    /*
     * Send a chat message; only while ONLINE.  Returns 0 once the bytes are
     * queued with io->out; IM_EV_SENT follows (at once for networks without
     * acknowledgements).
     */
    int (*send_msg)(struct im_sess *s, const struct im_msg *m);
    /* Add (or rename) / remove a contact on the server side; IM_EV_CONTACT_DONE
     * with the same req follows.  NULL for networks whose list imfuse keeps. */
    int (*add_contact)(struct im_sess *s, uint64_t req, struct im_str address, struct im_str name);
    int (*remove_contact)(struct im_sess *s, uint64_t req, struct im_str address);
    /*
     * Networks whose contact list imfuse keeps (NULL where the server keeps
     * it): the account's full list, called after ONLINE and after every
     * change.  The adapter follows the presence of these addresses where the
     * network can (IRC: MONITOR, else ISON polled at least every 30 s) and
     * reports IM_EV_PRESENCE.  Returns 0 or negative as input() does.
     */
    int (*set_watch)(struct im_sess *s, const struct im_str *addresses, uint32_t n, uint64_t now_ms);
    /* A message reported with a token has been committed durably. */
    void (*committed)(struct im_sess *s, uint64_t token);
    /* Polite goodbye (e.g. </stream:stream>) before the glue closes. */
    void (*logout)(struct im_sess *s);
};

/* The registry of adapters, NULL-terminated. */
extern const struct im_proto_ops *const im_proto_registry[];

/* Look an adapter up by network name; NULL if unknown. */
const struct im_proto_ops *im_proto_find(const char *name);

const char *im_account_state_name(enum im_account_state s);
const char *im_presence_name(enum im_presence p);

#endif
