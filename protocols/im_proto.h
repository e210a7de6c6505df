/*
 * im_proto.h - the neutral model shared by every IM network adapter.
 *
 * An adapter is sans-I/O: it consumes bytes received from the IM server,
 * produces bytes to send to it, and reports what happened as struct
 * im_event values through the narrow callback API in struct im_io.  It never
 * touches a socket, a clock, a random source or a global: the time is
 * passed in (struct im_time: monotonic for timers, wall for message.ts),
 * randomness comes from io->rng, and slow key derivation may be handed to
 * the glue (io->kdf).  So it runs unchanged on the kernel and the DPDK
 * backends, and tests and fuzzers drive it byte by byte and millisecond by
 * millisecond.
 *
 * The adapter kit: this header, common/ (im_buf.h for output and input
 * buffers, im_rng.h, im_clock.h, im_kdf.h, im_common.h for codes, UTF-8
 * and the host:port parser) and protocols/im_proto.c (helpers to report
 * events).  A new network is one directory under protocols/ with its
 * module.mk, and one line in im_proto_builtin[] (protocols/im_registry.c);
 * the relay core never names a protocol.
 *
 * Strings handed to callbacks are counted views (struct im_str) valid only
 * for the duration of the callback: copy what you keep.
 */
#ifndef IM_PROTO_H
#define IM_PROTO_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "im_common.h"
#include "im_clock.h"
#include "im_kdf.h"
#include "im_rng.h"

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
            uint64_t ts;                /* ms since the epoch: the network's own
                                         * stamp when it gives one (XMPP delay),
                                         * else the wall time passed in */
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
 * The narrow API an adapter calls.  out and event may be called from inside
 * any ops hook.  From inside io->event the glue may call send_msg,
 * add_contact, remove_contact, committed and logout on the same session, but
 * never destroy(): the session is destroyed only from outside its hooks.
 */
struct im_io {
    /* Queue bytes for the server.  Returns 0 or a negative code (the glue
     * then tears the session down; the adapter need not handle it).
     * Mandatory. */
    int (*out)(void *ud, const void *p, size_t n);
    /* Report an event.  Views in *ev are valid only during the call.
     * Mandatory. */
    void (*event)(void *ud, const struct im_event *ev);
    /* The connection's own local address, "ip:port" ("[v6]:port" for IPv6),
     * or "" when not connected (SIP puts it in Contact).  May be NULL: the
     * adapter then does without. */
    const char *(*local_addr)(void *ud);
    /*
     * Asynchronous key derivation (SCRAM's PBKDF2), so that it runs off the
     * dataplane.  NULL: the adapter derives inline with im_kdf_pbkdf2().
     * Otherwise the adapter asks with a request number req of its own
     * choosing (unique within the session) and pauses; *p and everything it
     * points to are valid only during the call (copy the password and salt,
     * and wipe the copies after use).  Returns 0 when accepted: the glue
     * then calls ops->kdf_done(s, req, ...) exactly once, later, from
     * outside any hook (never from inside io->kdf), unless the session is
     * destroyed first; results for a destroyed session are dropped by the
     * glue, matched by (session, req) where session is the glue's own name
     * for it, not its address (a new session may get the address of a
     * destroyed one, and request numbers restart).  A negative return refuses the work
     * (e.g. the pool's queue is full) and kdf_done never follows; the
     * adapter fails the login (ERROR, retried by the glue).
     */
    int (*kdf)(void *ud, uint64_t req, const struct im_kdf_params *p);
    /* Randomness (nonces, Call-IDs, tags).  NULL: im_rng_default.  Must
     * outlive the session. */
    const struct im_rng *rng;
    void *ud;                   /* passed to every callback as is */
};

/* An outgoing chat message. */
struct im_msg {
    uint64_t msg;               /* appliance message id (reported in IM_EV_SENT) */
    struct im_str to;           /* normalised address */
    struct im_str body;         /* valid UTF-8 */
};

struct im_sess;                 /* adapter-private session state */

/*
 * One network.  Each hook says whether it may be NULL; the glue
 * (dataplane/dp_relay.c, controlplane/cp_client.c) checks exactly those
 * before calling, and im_proto_ops_check() enforces the rest.  Hooks that
 * take a struct im_time get both clocks read at one moment: an adapter uses
 * now.mono_ms for every timer, timeout and pacing decision and now.wall_ms
 * only for message.ts.
 */
struct im_proto_ops {
    const char *name;           /* "xmpp", as in the client protocol.  Mandatory. */
    uint16_t default_port;
    uint16_t default_tls_port;
    bool has_starttls;          /* the network can upgrade in-band (tls "starttls") */

    /*
     * Validate and normalise a login as given by the user into out (NUL
     * terminated).  Returns 0, or -IM_EINVAL with *why set to a static
     * explanation.  Mandatory.
     */
    int (*normalize_login)(const char *in, char *out, size_t outsz, const char **why);
    /* Same for a contact address.  Mandatory. */
    int (*normalize_address)(const char *in, char *out, size_t outsz, const char **why);
    /*
     * The default name the server certificate is checked against for a
     * normalised login (XMPP and SIP: the domain).  Writes "" when the
     * server host should be used.  NULL: the server host is always used.
     */
    void (*default_tls_name)(const char *login, char *out, size_t outsz);

    /*
     * Create a session for one connection attempt.  Nothing is sent until
     * ops->start().  Returns NULL on allocation failure.  cfg and io (and
     * io->rng) must outlive the session.  Mandatory.
     */
    struct im_sess *(*create)(const struct im_account_cfg *cfg, const struct im_io *io);
    /* Free the session, wiping secrets.  Never called from inside an im_io
     * callback.  A key derivation still pending is abandoned: the glue drops
     * its result.  Mandatory. */
    void (*destroy)(struct im_sess *s);

    /* The TCP connection (and TLS, for IM_TLS_DIRECT) is up: begin the login.
     * Returns as input() does.  Mandatory. */
    int (*start)(struct im_sess *s, struct im_time now);
    /*
     * Bytes from the server, in arbitrary pieces.  Returns 0, or a negative
     * code after having reported IM_EV_STATE (ERROR or AUTH_FAILED) saying
     * why; the glue then closes the connection.  Mandatory.
     */
    int (*input)(struct im_sess *s, const uint8_t *p, size_t n, struct im_time now);
    /* Outcome of the handshake requested by IM_EV_STARTTLS (0 or negative).
     * Returns as input() does.  Bytes received between the STARTTLS trigger
     * and the handshake are a protocol error (an injection attempt).
     * Mandatory when has_starttls; else NULL is allowed (never called). */
    int (*tls_ready)(struct im_sess *s, int status, struct im_time now);
    /*
     * Called about every 100 ms (at least once a second) while the connection
     * is up, except while a TLS handshake is under way: keepalives, login
     * timeouts, pacing of queued lines.  Returns 0 or negative as input()
     * does.  Mandatory.
     */
    int (*tick)(struct im_sess *s, struct im_time now);

    /*
     * Send a chat message; only while ONLINE.  Returns 0 once the bytes are
     * queued with io->out; IM_EV_SENT follows (at once for networks without
     * acknowledgements).  Mandatory.
     */
    int (*send_msg)(struct im_sess *s, const struct im_msg *m);
    /* Add (or rename) / remove a contact on the server side; IM_EV_CONTACT_DONE
     * with the same req follows.  Both NULL for networks whose list imfuse
     * keeps (the glue then edits its own list and calls set_watch); both set
     * or both NULL. */
    int (*add_contact)(struct im_sess *s, uint64_t req, struct im_str address, struct im_str name);
    int (*remove_contact)(struct im_sess *s, uint64_t req, struct im_str address);
    /*
     * Networks whose contact list imfuse keeps: the account's full list,
     * called after ONLINE and after every change.  The adapter follows the
     * presence of these addresses where the network can (IRC: MONITOR, else
     * ISON polled at least every 30 s) and reports IM_EV_PRESENCE.  Returns 0
     * or negative as input() does.  NULL where the server keeps the list
     * (or the network has no presence to follow): never called.
     */
    int (*set_watch)(struct im_sess *s, const struct im_str *addresses, uint32_t n, struct im_time now);
    /* A message reported with a token has been committed durably.  NULL for
     * adapters that never report a token. */
    void (*committed)(struct im_sess *s, uint64_t token);
    /* Polite goodbye (e.g. </stream:stream>) before the glue closes; called
     * only while ONLINE.  NULL: the glue just closes. */
    void (*logout)(struct im_sess *s);
    /*
     * The answer to an accepted io->kdf request: status 0 with the derived
     * key (keylen bytes, valid only during the call: the adapter copies what
     * it needs and wipes its copies), or a negative code (no key).  A req the
     * session is not waiting for (a late answer) is ignored.  Returns as
     * input() does.  NULL for adapters that never call io->kdf.
     */
    int (*kdf_done)(struct im_sess *s, uint64_t req, int status, const uint8_t *key, size_t keylen,
                    struct im_time now);
};

/* The built-in adapters, NULL-terminated: one line per network. */
extern const struct im_proto_ops *const im_proto_builtin[];

/* Look an adapter up by network name, built-in or registered; NULL if unknown. */
const struct im_proto_ops *im_proto_find(const char *name);

#define IM_PROTO_MAX_PLUGGED 8  /* adapters im_proto_register() takes */

/*
 * Plug in an adapter beside the built-in ones (a fake network for the
 * relay's tests).  ops must stay valid while registered (a static const).
 * Returns 0, -IM_EINVAL with *why set (a mandatory hook is NULL, see
 * im_proto_ops_check()), -IM_EEXIST (the name is taken, built-in or
 * plugged) or -IM_ELIMIT (IM_PROTO_MAX_PLUGGED are plugged already).  Not
 * thread-safe: register before the worker and the controlplane start.
 */
int im_proto_register(const struct im_proto_ops *ops, const char **why);
/* Unplug an adapter im_proto_register() took.  0 or -IM_ENOTFOUND. */
int im_proto_unregister(const struct im_proto_ops *ops);

/* 0 when ops has a name and every hook this header calls mandatory, else
 * -IM_EINVAL with *why naming what is missing. */
int im_proto_ops_check(const struct im_proto_ops *ops, const char **why);

/* ---- helpers for adapters (protocols/im_proto.c) ------------------------ */

#define IM_DETAIL_MAX 240       /* bytes of a state detail or a notice */

/* A network's own cleaning of text it reports, in place: returns the new
 * length (<= n).  E.g. IRC removes its formatting codes. */
typedef size_t im_text_clean_fn(char *p, size_t n);

/*
 * Report IM_EV_STATE st through io with a detail formatted from fmt: at most
 * IM_DETAIL_MAX bytes, cut on a UTF-8 character boundary, then passed
 * through clean (NULL: none), and reported as "" if it is still not valid
 * UTF-8.  For an adapter's final state (ERROR, AUTH_FAILED) and ONLINE.
 */
void im_io_state(const struct im_io *io, enum im_account_state st, im_text_clean_fn *clean,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void im_io_vstate(const struct im_io *io, enum im_account_state st, im_text_clean_fn *clean,
                  const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

/*
 * An adapter's end, reported once: when *final is 0, set it to rc (< 0)
 * and report the final state st (ERROR or AUTH_FAILED) as im_io_state()
 * does; when it is already set (the session ended before), report nothing.
 * Returns *final, so that a hook can `return fail(...)`.
 */
int im_io_fail(const struct im_io *io, int *final, enum im_account_state st, int rc,
               im_text_clean_fn *clean, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
int im_io_vfail(const struct im_io *io, int *final, enum im_account_state st, int rc,
                im_text_clean_fn *clean, const char *fmt, va_list ap) __attribute__((format(printf, 6, 0)));

/* Report IM_EV_NOTICE, the text made as for im_io_state(); nothing is
 * reported when it comes out empty. */
void im_io_notice(const struct im_io *io, im_text_clean_fn *clean, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void im_io_vnotice(const struct im_io *io, im_text_clean_fn *clean, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Report IM_EV_SENT for message msg. */
void im_io_sent(const struct im_io *io, uint64_t msg);

const char *im_account_state_name(enum im_account_state s);
const char *im_presence_name(enum im_presence p);

#endif
