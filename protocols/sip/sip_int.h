/*
 * sip_int.h - internals of the SIP/SIMPLE adapter shared between its files
 * and its tests.  Not part of any contract.
 *
 *   sip_frame.c   resumable message framer for SIP over a byte stream (TCP)
 *   sip_msg.c     parser of one framed message into header views
 *   sip_digest.c  HTTP digest authentication (RFC 2617 / RFC 7616) for SIP
 *   sip_pidf.c    PIDF presence documents (RFC 3863, RPID RFC 4480) with expat
 *   sip.c         the adapter (struct im_proto_ops sip_ops)
 */
#ifndef SIP_INT_H
#define SIP_INT_H

#include "im_buf.h"
#include "im_proto.h"

extern const struct im_proto_ops sip_ops;

/* Limits. */
#define SIP_MAX_HEADER_BYTES    (64u * 1024u)   /* start line + headers + blank line */
#define SIP_MAX_BODY            (1024u * 1024u)
#define SIP_MAX_HDRS            128             /* header fields in one message */
#define SIP_ADDR_MAX            255             /* normalised address of record */
#define SIP_MAX_PENDING_TX      65536           /* outgoing MESSAGEs awaiting a final answer */
#define SIP_MAX_UNCOMMITTED     4096            /* incoming MESSAGEs awaiting ops->committed() */
#define SIP_DEFAULT_EXPIRES     600             /* seconds asked for in REGISTER */
#define SIP_TX_TIMEOUT_MS       40000           /* a MESSAGE without a final answer (Timer F + margin) */
#define SIP_REG_TIMEOUT_MS      30000           /* a REGISTER without a final answer */
#define SIP_KEEPALIVE_MS        30000           /* our CRLFCRLF ping (RFC 5626 4.4.1) */
#define SIP_PONG_TIMEOUT_MS     15000           /* nothing at all received after a ping */
#define SIP_MAX_WATCH           4096            /* watched addresses (presence subscriptions) */
#define SIP_SUB_WINDOW          16              /* SUBSCRIBEs awaiting an answer at once */
#define SIP_SUB_TIMEOUT_MS      32000           /* SUBSCRIBE / PUBLISH without a final answer (Timer F) */
#define SIP_RETRY_MIN_MS        30000           /* first retry of a failed SUBSCRIBE / PUBLISH */
#define SIP_RETRY_MAX_MS        (30u * 60000u)  /* retries back off (doubling) up to this */
#define SIP_PIDF_MAX            (64u * 1024u)   /* a NOTIFY body we parse */
#define SIP_PIDF_DEPTH          32              /* XML nesting in it */
#define SIP_DLG_URI_MAX         512             /* remote target or one route of a dialog */
#define SIP_DLG_ROUTES_MAX      8               /* routes in a dialog's route set */
#define SIP_MAX_OUT             (1u << 20)      /* one message we write (a 64 KiB body, headers) */
#define SIP_FEED_STEP           (64u * 1024u)   /* bytes input() gives the framer at once */
#define SIP_FRAMER_MAX          (SIP_MAX_HEADER_BYTES + SIP_MAX_BODY + SIP_FEED_STEP)
                                                /* bytes the framer holds: an unfinished unit + a step */

/* ---- framer ------------------------------------------------------------ */

/*
 * Splits a byte stream into SIP messages: a start line and headers ending
 * with CRLFCRLF, then Content-Length bytes of body (header `Content-Length`
 * or its compact form `l`; missing means 0).  CRLFs between messages are
 * keepalives: a CRLFCRLF is reported as a ping, a lone CRLF (a pong) is
 * skipped.  Owns its buffer.  A zero-filled framer is ready for use.
 */
struct sip_framer {
    struct im_buf buf;  /* unconsumed bytes, at most SIP_FRAMER_MAX */
    size_t taken;       /* bytes of the unit last returned, dropped at the next call */
    size_t scan;        /* where the CRLFCRLF search resumes, from the first unconsumed byte */
    size_t hdr_len;     /* 0 until the end of the headers was found */
    size_t body_len;
};

enum {
    SIP_FRAME_MSG = 1,  /* a message: *p, hdr_len (including CRLFCRLF), body_len */
    SIP_FRAME_PING = 2, /* a CRLFCRLF keepalive ping */
};

/* Append bytes.  0, -ENOMEM or -IM_ETOOBIG (over SIP_FRAMER_MAX: more than
 * SIP_FEED_STEP bytes pushed without draining).  Views returned by
 * sip_framer_next() end here. */
int sip_framer_push(struct sip_framer *f, const uint8_t *p, size_t n);
/*
 * Next complete unit: SIP_FRAME_MSG (with *p, *hdr_len, *body_len set; the
 * view is valid until the next push or next), SIP_FRAME_PING, -EAGAIN when more
 * bytes are needed, -IM_ETOOBIG (headers over 64 KiB, body over 1 MiB) or
 * -IM_EPROTO (bad Content-Length).  Errors are final.
 */
int sip_framer_next(struct sip_framer *f, const uint8_t **p, size_t *hdr_len, size_t *body_len);
void sip_framer_free(struct sip_framer *f);

/* ---- message ------------------------------------------------------------ */

enum sip_hid {
    SH_OTHER = 0,
    SH_VIA,
    SH_FROM,
    SH_TO,
    SH_CALL_ID,
    SH_CSEQ,
    SH_CONTACT,
    SH_CTYPE,
    SH_CLEN,
    SH_EXPIRES,
    SH_MIN_EXPIRES,
    SH_WWW_AUTH,
    SH_PROXY_AUTH,
    SH_EVENT,
    SH_SUB_STATE,
    SH_RECORD_ROUTE,
    SH_SIP_ETAG,
    SH_RETRY_AFTER,
};

struct sip_hdr {
    enum sip_hid id;
    struct im_str name;
    struct im_str value;    /* trimmed; may contain folded CRLF + whitespace */
};

/* One parsed message; every view points into the framer's bytes. */
struct sip_msg {
    bool is_req;
    struct im_str method;   /* requests */
    struct im_str ruri;
    int status;             /* responses: 100..699 */
    struct im_str reason;
    struct sip_hdr hdr[SIP_MAX_HDRS];
    uint32_t n_hdr;
    struct im_str body;
    /* First occurrence of the headers every transaction needs (len 0 if absent). */
    struct im_str call_id, from, to, ctype;
    struct im_str cseq_method;
    uint32_t cseq;
    bool has_cseq;
};

/* Parse hdr_len bytes of start line + headers and body_len bytes of body.
 * 0 or -IM_EPROTO (malformed) / -IM_ETOOBIG (too many headers). */
int sip_msg_parse(struct sip_msg *m, const char *p, size_t hdr_len, size_t body_len);

/* First header with this id, or NULL; `after` continues a search (NULL = from the start). */
const struct sip_hdr *sip_msg_find(const struct sip_msg *m, enum sip_hid id, const struct sip_hdr *after);

/* Value of parameter `name` in a header ";name=value" list (case-insensitive
 * name, quotes removed from the view); len 0 and false when absent. */
bool sip_param(struct im_str v, const char *name, struct im_str *out);

/* ---- digest -------------------------------------------------------------- */

enum sip_digest_alg {
    SIP_ALG_MD5 = 0,
    SIP_ALG_MD5_SESS,
    SIP_ALG_SHA256,
    SIP_ALG_SHA256_SESS,
};

/* A challenge (WWW-Authenticate or Proxy-Authenticate) as remembered for reuse. */
struct sip_chal {
    bool valid;
    bool proxy;             /* 407 / Proxy-Authorization */
    enum sip_digest_alg alg;
    bool qop_auth;          /* server offered qop=auth */
    bool qop_auth_int;      /* server offered qop=auth-int */
    bool stale;
    char realm[128];
    char nonce[256];
    char opaque[256];
    uint32_t nc;            /* last nonce count used with this nonce */
};

/* Parse one "Digest ..." challenge.  0, or -IM_EINVAL when it is not a
 * digest challenge we can answer (other scheme, unknown algorithm, no nonce). */
int sip_digest_parse(struct im_str v, struct sip_chal *c);

/* true when a is a stronger choice than b (SHA-256 over MD5). */
bool sip_digest_better(const struct sip_chal *a, const struct sip_chal *b);

/*
 * The response hash, lower-case hex, NUL-terminated into out (65 bytes).
 * qop is NULL (RFC 2069 compatibility), "auth" or "auth-int" (body hashed).
 * Returns 0 or a negative mbedTLS-mapped code.
 */
int sip_digest_response(enum sip_digest_alg alg, const char *user, const char *realm, const char *password,
                        const char *nonce, const char *cnonce, const char *nc8, const char *qop,
                        const char *method, const char *uri, const void *body, size_t body_len,
                        char out[65]);

/* Name of an algorithm as written in Authorization ("MD5", "SHA-256-sess"...). */
const char *sip_digest_alg_name(enum sip_digest_alg alg);

/* ---- presence documents -------------------------------------------------- */

/*
 * The presence a PIDF document (RFC 3863) of n bytes gives its presentity:
 * AVAILABLE when a tuple's basic status is open (AWAY when an RPID activity
 * such as away, busy or steppedOut, or a note that is just "away", says so),
 * OFFLINE when there are tuples and all are closed.  Returns 0 with *out
 * set; -IM_ENOTFOUND for a valid document without any basic status;
 * -IM_EPROTO when it is not well-formed, not PIDF, has a DOCTYPE (so no
 * entity can be declared) or a basic other than open/closed; -IM_ETOOBIG
 * over SIP_PIDF_MAX bytes or SIP_PIDF_DEPTH levels; -ENOMEM.  *out is left
 * alone on error.
 */
int sip_pidf_parse(const char *p, size_t n, enum im_presence *out);

/* ---- addresses -------------------------------------------------------------- */

/* Normalise a SIP address of record ("sip:user@host[:port]" or "user@host")
 * into out.  0 or -IM_EINVAL with *why. */
int sip_normalize(const char *in, size_t n, char *out, size_t outsz, const char **why);

#endif
