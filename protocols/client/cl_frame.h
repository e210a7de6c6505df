/*
 * cl_frame.h - client protocol v1 framing and msgpack field access
 * (docs/CLIENT-PROTOCOL.md).  Used by the dataplane (client sessions), the
 * controlplane (requests it serves, control socket) and the tools.
 *
 * A frame is a 4-byte big-endian length L (1 <= L <= CL_FRAME_MAX) followed
 * by exactly one msgpack map whose keys are strings.
 *
 * Decoding: cl_frame_split() finds one frame in a byte stream; cl_msg_decode()
 * unpacks it into a struct cl_msg (a msgpack zone owned by the cl_msg), whose
 * fields are read with the typed getters below.  Views returned by getters are
 * valid until cl_msg_free().
 *
 * Encoding: struct cl_enc wraps a msgpack packer over a growable buffer that
 * starts with the 4-byte length, filled in by cl_enc_finish().
 */
#ifndef CL_FRAME_H
#define CL_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <msgpack.h>

#include "../im_proto.h"

#define CL_FRAME_MAX    (1u << 20)      /* 1 MiB */
#define CL_CID_MAX      64

/*
 * Look for one complete frame at the start of [p, p+n).
 * Returns the total size (4 + L) and sets *body and *body_len to the payload, or
 * -EAGAIN when more bytes are needed, or -IM_ETOOBIG / -IM_EINVAL when the
 * length prefix is out of range (the connection must then be closed).
 */
long cl_frame_split(const uint8_t *p, size_t n, const uint8_t **body, uint32_t *body_len);

/* A decoded frame. */
struct cl_msg {
    msgpack_zone zone;
    msgpack_object root;        /* always a map once decoded */
    char *raw;                  /* the copy of the payload the views point into */
    uint32_t raw_len;
    struct im_str op;           /* "op" (len 0 when absent or not a str) */
    bool has_id;                /* "id" present and an unsigned integer */
    uint64_t id;
};

/*
 * Decode one frame payload.  Returns 0, or -IM_EINVAL when it is not exactly
 * one msgpack map with unique UTF-8 string keys (trailing bytes, nesting
 * deeper than 32 and containers claiming more elements than bytes left
 * included), or -ENOMEM.  On success the caller owns *m and calls
 * cl_msg_free(); on failure nothing is held.  The payload is copied: views
 * stay valid after the input buffer is reused.
 */
int cl_msg_decode(struct cl_msg *m, const uint8_t *body, uint32_t len);
/* Free m; the decoded copy of the payload is wiped first (a request may carry
 * a password), since the zone's memory is reused. */
void cl_msg_free(struct cl_msg *m);
/* Wipe the decoded payload now (views are garbage afterwards). */
void cl_msg_wipe(struct cl_msg *m);
/*
 * Decode a complete frame held in [p, p+n): the 4-byte length must equal
 * n - 4, then as cl_msg_decode().  For frames kept whole (stored records,
 * plane message payloads).
 */
int cl_frame_decode(struct cl_msg *m, const uint8_t *p, size_t n);

/*
 * Typed getters on a map object (the root or a nested map).  Each returns
 * 0 when the key is present with the right type and within the limits,
 * -IM_ENOTFOUND when absent, -IM_EINVAL when present but mistyped, invalid
 * UTF-8 or out of limits (a present nil is mistyped), -ENOMEM.  *why is set
 * to a static phrase naming the problem ("must be a string", "longer than 64
 * bytes", ...) on -IM_EINVAL.  An empty string's view is "" (never NULL).
 */
int cl_get_str(const msgpack_object *map, const char *key, uint32_t minlen, uint32_t maxlen,
               struct im_str *out, const char **why);
int cl_get_uint(const msgpack_object *map, const char *key, uint64_t *out, const char **why);
int cl_get_bool(const msgpack_object *map, const char *key, bool *out, const char **why);
int cl_get_map(const msgpack_object *map, const char *key, const msgpack_object **out, const char **why);
int cl_get_array(const msgpack_object *map, const char *key, const msgpack_object **out, const char **why);

/* Copy a view into a NUL-terminated malloc'd string (NULL on OOM). */
char *cl_strdup(struct im_str s);

/* ---- encoding -------------------------------------------------------- */

struct cl_enc {
    msgpack_sbuffer buf;        /* starts with 4 reserved length bytes */
    msgpack_packer pk;          /* writes through e (not &e->buf) */
    bool failed;                /* out of memory or over CL_FRAME_MAX: finish fails */
    bool too_big;               /* ... and it was the frame limit */
};

/* Start a frame.  Never fails by itself: running out of memory or past the
 * frame limit later makes cl_enc_finish() return NULL. */
void cl_enc_init(struct cl_enc *e);
/* Append bytes that already are msgpack (a stored array, a map's pairs). */
void cl_enc_raw(struct cl_enc *e, const void *p, size_t n);
/*
 * Write the length prefix.  Returns the frame (prefix included) and its size;
 * the buffer stays owned by *e until cl_enc_free() or cl_enc_release().
 * Returns NULL if the payload exceeds CL_FRAME_MAX or memory ran out.
 */
const uint8_t *cl_enc_finish(struct cl_enc *e, size_t *len);
/* Payload bytes packed so far (without the length prefix). */
size_t cl_enc_len(const struct cl_enc *e);
/* Drop what was packed after the first len payload bytes (len <= cl_enc_len);
 * an encoder that failed only for the frame limit works again. */
void cl_enc_cut(struct cl_enc *e, size_t len);
/* Hand the finished frame's malloc'd buffer to the caller (free() it). */
uint8_t *cl_enc_release(struct cl_enc *e, size_t *len);
void cl_enc_free(struct cl_enc *e);

/* Helpers over e->pk; keys and values are written as msgpack str. */
void cl_pack_str(struct cl_enc *e, const char *s);
void cl_pack_strn(struct cl_enc *e, const char *s, size_t n);
void cl_pack_kstr(struct cl_enc *e, const char *key, const char *val);
void cl_pack_kstrn(struct cl_enc *e, const char *key, const char *val, size_t n);
void cl_pack_kuint(struct cl_enc *e, const char *key, uint64_t val);
void cl_pack_kbool(struct cl_enc *e, const char *key, bool val);
void cl_pack_key(struct cl_enc *e, const char *key);   /* value packed next by the caller */

/* Ready-made frames.  Return a malloc'd frame in *out and *len (0) or -ENOMEM. */
/* {"op":"ok","id":id} with no other fields */
int cl_build_ok(uint64_t id, uint8_t **out, size_t *len);
/* {"op":"error","id":id,"code":code,"message":msg}; has_id false omits "id" */
int cl_build_error(bool has_id, uint64_t id, const char *code, const char *msg,
                   uint8_t **out, size_t *len);

/* The error codes of the protocol, as strings. */
#define CL_ERR_BAD_REQUEST      "bad_request"
#define CL_ERR_AUTH_FAILED      "auth_failed"
#define CL_ERR_NOT_LOGGED_IN    "not_logged_in"
#define CL_ERR_EXISTS           "exists"
#define CL_ERR_NOT_FOUND        "not_found"
#define CL_ERR_UNSUPPORTED      "unsupported"
#define CL_ERR_ACCOUNT_OFFLINE  "account_offline"
#define CL_ERR_LIMIT            "limit"
#define CL_ERR_INTERNAL         "internal"

/* Does a str object equal the C string s? */
bool cl_str_eq(const msgpack_object *o, const char *s);
bool cl_view_eq(struct im_str v, const char *s);

#endif
